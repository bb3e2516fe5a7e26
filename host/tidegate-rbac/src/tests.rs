//! The grammar's accept and reject cases: what both the plugin and the CLI accept.

use super::*;
use alloc::vec;
use std::format;

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn kinds_are_named_ignoring_ascii_case_and_star_means_all() {
    for k in Kind::ALL {
        assert_eq!(Kind::parse(k.as_str()), Some(k));
        assert_eq!(Kind::parse(&k.as_str().to_uppercase()), Some(k));
        assert_eq!(k.to_string(), k.as_str());
    }
    for bad in ["", "*", "reed", "select", " read", "read ", "reads"] {
        assert_eq!(Kind::parse(bad), None, "{bad:?}");
    }
    assert_eq!(parse_kinds(&strings(&["*"])), Ok(Kind::ALL.to_vec()));
    assert_eq!(
        parse_kinds(&strings(&["write", "Read", "write"])),
        Ok(vec![Kind::Write, Kind::Read])
    );
    // `*` ends the list: what follows it is not read.
    assert_eq!(
        parse_kinds(&strings(&["*", "nope"])),
        Ok(Kind::ALL.to_vec())
    );
    assert_eq!(
        parse_kinds(&strings(&["nope", "*"])),
        Err(RuleError::UnknownKind("nope".into()))
    );
    assert_eq!(parse_kinds(&[]), Ok(vec![]));
}

#[test]
fn patterns_parse_print_back_and_reject_malformed_names() {
    let good = [
        ("*", Pattern::Any),
        ("public.*", Pattern::Schema("public".into())),
        ("public.t", Pattern::Qualified("public".into(), "t".into())),
        ("t", Pattern::Bare("t".into())),
        ("T", Pattern::Bare("T".into())),
        ("a:b", Pattern::Bare("a:b".into())),
    ];
    for (text, want) in good {
        let got = Pattern::parse(text).expect("valid");
        assert_eq!(got, want);
        assert_eq!(got.to_string(), text);
    }
    for bad in [
        "", ".", "a.", ".t", "*.t", "*.*", "a.b.c", "a.b.*", "a*", "a.b*", "**", "s.t*",
    ] {
        assert_eq!(
            Pattern::parse(bad),
            Err(RuleError::BadPattern(bad.into())),
            "{bad:?}"
        );
    }
}

#[test]
fn patterns_cover_tables() {
    let q = Table {
        schema: Some("public"),
        name: "t",
    };
    let u = Table {
        schema: None,
        name: "t",
    };
    let cases = [
        ("*", q, true),
        ("*", u, true),
        ("public.*", q, true),
        ("public.*", u, false),
        ("other.*", q, false),
        ("public.t", q, true),
        ("public.t", u, false),
        ("public.u", q, false),
        ("t", q, true),
        ("t", u, true),
        ("u", u, false),
        ("T", u, false),
    ];
    for (pattern, table, want) in cases {
        let p = Pattern::parse(pattern).expect("valid");
        assert_eq!(p.covers(table, None), want, "{pattern} ~ {table:?}");
    }
    // An unqualified table is taken to be in `unqualified_schema`; a qualified one keeps its own.
    let public = Pattern::parse("public.*").expect("valid");
    assert!(public.covers(u, Some("public")));
    assert!(!public.covers(u, Some("other")));
    assert!(!public.covers(
        Table {
            schema: Some("other"),
            name: "t"
        },
        Some("public")
    ));
}

#[test]
fn rules_from_configured_lists() {
    let r = Rule::new(
        strings(&["read", "write"]),
        strings(&["public.*", "metrics"]),
    )
    .expect("valid");
    assert_eq!(r.kinds, vec![Kind::Read, Kind::Write]);
    assert_eq!(r.kind_names, strings(&["read", "write"]));
    assert!(r.permits(Kind::Write) && !r.permits(Kind::Ddl));
    // Kinds are checked before patterns; names are not trimmed.
    assert_eq!(
        Rule::new(strings(&["select"]), strings(&["a.b.c"])),
        Err(RuleError::UnknownKind("select".into()))
    );
    assert_eq!(
        Rule::new(strings(&[" read"]), strings(&["*"])),
        Err(RuleError::UnknownKind(" read".into()))
    );
    assert_eq!(
        Rule::new(strings(&["read"]), strings(&["a.b.c"])),
        Err(RuleError::BadPattern("a.b.c".into()))
    );
    assert_eq!(
        Rule::new(vec![], strings(&["*"])),
        Err(RuleError::Empty(":*".into()))
    );
    assert_eq!(
        Rule::new(strings(&["read"]), vec![]),
        Err(RuleError::Empty("read:".into()))
    );
}

#[test]
fn rules_from_allow_arguments() {
    let r = Rule::parse_arg("read, write:public.* ,metrics,").expect("valid");
    assert_eq!(r.kind_names, strings(&["read", "write"]));
    assert_eq!(
        r.tables,
        vec![
            Pattern::Schema("public".into()),
            Pattern::Bare("metrics".into())
        ]
    );
    assert_eq!(Rule::parse_arg("*:*").expect("valid").kinds, Kind::ALL);
    assert_eq!(
        Rule::parse_arg("READ:t").expect("valid").kind_names,
        strings(&["READ"])
    );
    assert_eq!(
        Rule::parse_arg("reed:*"),
        Err(RuleError::UnknownKind("reed".into()))
    );
    for bad in ["a.b.c", ".t", "s.", "*.t", "s.t*", "**"] {
        assert_eq!(
            Rule::parse_arg(&format!("read:{bad}")),
            Err(RuleError::BadPattern(bad.into())),
            "{bad}"
        );
    }
    assert_eq!(
        Rule::parse_arg("read"),
        Err(RuleError::Syntax("read".into()))
    );
    for empty in ["read:", ":*", ":", "read:,", " , :*"] {
        assert_eq!(
            Rule::parse_arg(empty),
            Err(RuleError::Empty(empty.into())),
            "{empty:?}"
        );
    }
    assert_eq!(
        RuleError::Empty("read:".into()).to_string(),
        "rule \"read:\" needs at least one kind and one table pattern"
    );
}
