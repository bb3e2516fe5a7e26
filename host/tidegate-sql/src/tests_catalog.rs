//! Function volatility from `pg_proc` rows and configured allow/deny lists.

use super::*;

fn catalog() -> CatalogLookup {
    CatalogLookup::from_pg_proc([
        ("public", "my_read", 's'),
        ("public", "pure", 'i'),
        ("public", "writer", 'v'),
        // Overloads: the worst wins.
        ("public", "over", 'i'),
        ("public", "over", 'v'),
        ("public", "over2", 's'),
        ("public", "over2", 'i'),
        // Same name in two schemas.
        ("a", "dup", 'i'),
        ("b", "dup", 's'),
        ("public", "odd", 'x'),
        ("Mixed", "CamelFn", 'i'),
    ])
}

/// (statement, replica-safe, cacheable)
const CATALOG_CASES: &[(&str, bool, bool)] = &[
    ("SELECT my_read(1)", true, false),
    ("SELECT public.my_read(1)", true, false),
    ("SELECT pure(1)", true, true),
    ("SELECT * FROM t WHERE a = pure(2)", true, true),
    ("SELECT writer()", false, false),
    ("SELECT over(1)", false, false),
    ("SELECT over2(1)", true, false),
    ("SELECT a.dup()", true, true),
    ("SELECT b.dup()", true, false),
    ("SELECT dup()", true, false),
    ("SELECT c.dup()", false, false),
    ("SELECT odd()", false, false),
    ("SELECT unknown_fn()", false, false),
    ("SELECT \"Mixed\".\"CamelFn\"()", true, true),
    ("SELECT mixed.camelfn()", false, false),
    ("SELECT * FROM pure(3)", true, true),
    // The built-in table still decides for what the catalog does not override.
    ("SELECT nextval('s'), pure(1)", false, false),
    ("SELECT lower('A'), pure(1)", true, true),
];

#[test]
fn catalog_volatility_routes_user_functions() {
    let lookup = catalog();
    assert_eq!(lookup.functions(), 9);
    for (sql, read_only, cacheable) in CATALOG_CASES {
        let c = classify(sql, &lookup);
        assert_eq!(
            (c.read_only, c.cacheable),
            (*read_only, *cacheable),
            "{sql}: {:?}",
            c.reason
        );
    }
}

#[test]
fn catalog_lookups_qualified_and_unqualified() {
    let l = catalog();
    use Volatility::*;
    let cases: &[(Option<&str>, &str, Option<Volatility>)] = &[
        (Some("public"), "over", Some(Writes)),
        (None, "over", Some(Writes)),
        (Some("public"), "over2", Some(Stable)),
        (Some("a"), "dup", Some(Immutable)),
        (Some("b"), "dup", Some(Stable)),
        (None, "dup", Some(Stable)),
        (Some("c"), "dup", None),
        (None, "nothing", None),
        (Some("public"), "odd", Some(Writes)),
        (Some("Mixed"), "CamelFn", Some(Immutable)),
        (Some("mixed"), "camelfn", None),
    ];
    for (schema, name, want) in cases {
        assert_eq!(l.volatility(*schema, name), *want, "{schema:?}.{name}");
        assert_eq!(l.override_volatility(*schema, name), None);
    }
    assert!(Immutable < Stable && Stable < VolatileReadOnly && VolatileReadOnly < Writes);
}

#[test]
fn allow_and_deny_lists_beat_the_catalog_and_the_builtin_table() {
    let lookup = catalog()
        .with_allow([
            "writer",
            "myschema.only_here",
            "\"Quoted\"",
            "pg_advisory_lock",
            "both",
            "s.both2",
        ])
        .and_then(|l| l.with_deny(["now", "pg_catalog.lower", "both", "both2", "pure"]))
        .expect("valid names");
    // (statement, replica-safe, cacheable)
    let cases: &[(&str, bool, bool)] = &[
        // Allowed: replica-safe, never cached, whatever the catalog or the built-in table says.
        ("SELECT writer()", true, false),
        ("SELECT public.writer()", true, false),
        ("SELECT pg_advisory_lock(1)", true, false),
        ("SELECT myschema.only_here()", true, false),
        ("SELECT only_here()", false, false),
        ("SELECT other.only_here()", false, false),
        ("SELECT \"Quoted\"()", true, false),
        ("SELECT quoted()", false, false),
        // Denied: the primary, even for built-in and catalog-immutable functions.
        ("SELECT now()", false, false),
        ("SELECT pg_catalog.now()", false, false),
        ("SELECT pure(1)", false, false),
        ("SELECT lower('a')", false, false),
        ("SELECT pg_catalog.lower('a')", false, false),
        ("SELECT upper('a')", true, true),
        // Deny beats allow.
        ("SELECT both()", false, false),
        ("SELECT s.both2()", false, false),
    ];
    for (sql, read_only, cacheable) in cases {
        let c = classify(sql, &lookup);
        assert_eq!(
            (c.read_only, c.cacheable),
            (*read_only, *cacheable),
            "{sql}: {:?}",
            c.reason
        );
    }
    // An empty lookup with only overrides.
    let mut only = CatalogLookup::new();
    only.allow("f").expect("valid");
    assert!(classify("SELECT f()", &only).read_only);
    assert!(!classify("SELECT g()", &only).read_only);
    only.deny("F").expect("valid");
    assert!(!classify("SELECT f()", &only).read_only);
}

#[test]
fn function_names_parse_like_sql_identifiers() {
    let ok: &[(&str, (Option<&str>, &str))] = &[
        ("f", (None, "f")),
        (" My_Fn ", (None, "my_fn")),
        ("S.F", (Some("s"), "f")),
        ("\"S\".\"F\"", (Some("S"), "F")),
        ("\"a.b\".c", (Some("a.b"), "c")),
        ("\"x\"\"y\"", (None, "x\"y")),
        ("fn$1", (None, "fn$1")),
    ];
    for (entry, (schema, name)) in ok {
        assert_eq!(
            parse_function_name(entry),
            Ok((schema.map(str::to_owned), (*name).to_owned())),
            "{entry}"
        );
    }
    for bad in [
        "", "a.b.c", "a b", "\"open", "a.", ".a", "f()", "a..b", "\"\"",
    ] {
        assert_eq!(
            parse_function_name(bad),
            Err(BadFunctionName(bad.to_owned())),
            "{bad:?}"
        );
    }
    assert!(CatalogLookup::new().with_deny(["ok", "not ok"]).is_err());
    let msg = BadFunctionName("x y".into()).to_string();
    assert!(msg.contains("x y"), "{msg}");
}

#[test]
fn clearing_the_cache_applies_a_new_lookup() {
    let cache = ClassCache::new(16);
    assert!(!cache.classify("SELECT my_read(1)", &NoLookup).read_only);
    // The cached verdict stays until the host clears it.
    assert!(!cache.classify("SELECT my_read(2)", &catalog()).read_only);
    cache.clear();
    assert!(cache.is_empty());
    assert!(cache.classify("SELECT my_read(3)", &catalog()).read_only);
    assert_eq!(cache.len(), 1);
}
