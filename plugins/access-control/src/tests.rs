use crate::rbac::{
    check_user_privileges, Config, MatchesTable, Pattern, Policy, Privileges, SQLSTATE,
};
use crate::AccessControl;
use tidegate_plugin_sdk::prelude::*;
use tidegate_plugin_sdk::testing::{principal, statement};
use tidegate_plugin_sdk::{parse_config, Decision, Plugin, StatementKind, TableRef};

use StatementKind::{Ddl, Read, Transaction, Utility, Write};

const BRIEF: &str = r#"{
    "deny_by_default": true,
    "roles": {
        "reader": [{"kinds": ["read"], "tables": ["*"]}],
        "writer": [{"kinds": ["read", "write"], "tables": ["public.*", "metrics"]}],
        "admin": [{"kinds": ["*"], "tables": ["*"]}],
        "ops": [{"kinds": ["utility"]}, {"kinds": ["ddl"], "tables": ["ops.jobs"]}]
    },
    "users": {"alice": ["writer"], "root": ["admin"], "olga": ["ops"]}
}"#;

fn policy(json: &str) -> Policy {
    Policy::new(parse_config::<Config>(json).unwrap()).unwrap()
}

fn roles(list: &[&str]) -> Vec<String> {
    list.iter().map(|r| (*r).to_owned()).collect()
}

fn tables(list: &[&str]) -> Vec<TableRef> {
    list.iter().map(|t| TableRef::parse(t)).collect()
}

/// `None` for allow, else the denial's reason.
fn decide(
    p: &Policy,
    user: &str,
    broker: &[&str],
    kind: StatementKind,
    t: &[&str],
) -> Option<String> {
    match p.decide(user, &roles(broker), kind, &tables(t)) {
        Decision::Allow => None,
        Decision::Deny(d) => {
            assert_eq!(d.sqlstate, SQLSTATE);
            assert!(d.hint.is_some());
            Some(d.reason)
        }
        Decision::Rewrite(sql) => panic!("access control never rewrites: {sql}"),
    }
}

/// (user, broker roles, kind, tables, allowed)
type Case = (
    &'static str,
    &'static [&'static str],
    StatementKind,
    &'static [&'static str],
    bool,
);

#[test]
fn decisions_table() {
    let p = policy(BRIEF);
    let cases: &[Case] = &[
        // reader: reads anything, nothing else
        ("bob", &["reader"], Read, &["public.t"], true),
        ("bob", &["reader"], Read, &["secret.t", "t"], true),
        ("bob", &["reader"], Read, &[], true),
        ("bob", &["reader"], Write, &["public.t"], false),
        ("bob", &["reader"], Write, &[], false),
        ("bob", &["reader"], Ddl, &["public.t"], false),
        ("bob", &["reader"], Utility, &[], false),
        ("bob", &["reader"], Transaction, &[], true),
        // writer via the users map: public.* and metrics in any schema
        ("alice", &[], Read, &["public.t"], true),
        ("alice", &[], Write, &["public.t"], true),
        ("alice", &[], Write, &["public.t", "public.u"], true),
        ("alice", &[], Write, &["metrics"], true),
        ("alice", &[], Write, &["tsdb.metrics"], true),
        ("alice", &[], Write, &["secret.t"], false),
        ("alice", &[], Write, &["public.t", "secret.t"], false),
        ("alice", &[], Read, &["secret.t"], false),
        ("alice", &[], Write, &["t"], false), // unqualified: not known to be in public
        ("alice", &[], Ddl, &["public.t"], false),
        ("alice", &[], Write, &[], true), // some rule permits write
        ("alice", &[], Utility, &[], false),
        // merged roles: broker reader + map writer
        ("alice", &["reader"], Read, &["secret.t"], true),
        ("alice", &["reader"], Write, &["secret.t"], false),
        // one table covered by one role, another by another
        ("alice", &["reader"], Read, &["secret.t", "public.t"], true),
        // admin
        ("root", &[], Ddl, &["any.thing"], true),
        ("root", &[], Utility, &[], true),
        ("carol", &["admin"], Write, &["x"], true),
        // ops: utility anywhere, ddl only on ops.jobs
        ("olga", &[], Utility, &[], true),
        ("olga", &[], Utility, &["pg_catalog.pg_class"], true),
        ("olga", &[], Ddl, &["ops.jobs"], true),
        ("olga", &[], Ddl, &["ops.other"], false),
        ("olga", &[], Ddl, &[], true),
        ("olga", &[], Read, &["ops.jobs"], false),
        // no role: deny_by_default
        ("nobody", &[], Read, &["public.t"], false),
        ("nobody", &[], Read, &[], false),
        ("nobody", &[], Transaction, &[], true),
        // a role the configuration does not define grants nothing
        ("dave", &["ghost"], Read, &["public.t"], false),
        ("dave", &["ghost", "reader"], Read, &["public.t"], true),
    ];
    let mut wrong = Vec::new();
    for (user, broker, kind, t, allowed) in cases {
        let got = decide(&p, user, broker, *kind, t);
        if got.is_none() != *allowed {
            wrong.push(format!("{user} {broker:?} {kind} {t:?}: got {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn denial_messages_name_roles_kind_and_table() {
    let p = policy(BRIEF);
    assert_eq!(
        decide(&p, "bob", &["reader"], Write, &["public.t"]).unwrap(),
        "permission denied: role(s) reader may not write table public.t (tidegate access-control)"
    );
    assert_eq!(
        decide(&p, "alice", &["reader"], Write, &["public.a", "secret.b"]).unwrap(),
        "permission denied: role(s) reader, writer may not write table secret.b \
         (tidegate access-control)"
    );
    assert_eq!(
        decide(&p, "bob", &["reader"], Utility, &[]).unwrap(),
        "permission denied: role(s) reader may not run utility statements \
         (tidegate access-control)"
    );
    assert_eq!(
        decide(&p, "olga", &[], Ddl, &["ops.other"]).unwrap(),
        "permission denied: role(s) ops may not run DDL on table ops.other \
         (tidegate access-control)"
    );
    assert_eq!(
        decide(&p, "nobody", &[], Read, &["t"]).unwrap(),
        "permission denied: user nobody has no role (tidegate access-control)"
    );
    match p.decide("bob", &roles(&["reader"]), Write, &tables(&["public.t"])) {
        Decision::Deny(d) => assert_eq!(
            d.hint.as_deref(),
            Some("ask an administrator for a role with a rule allowing write on public.t")
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn deny_by_default_off_lets_roleless_users_do_anything() {
    let p = policy(r#"{"deny_by_default": false, "roles": {"reader": [{"kinds": ["read"]}]}}"#);
    assert_eq!(decide(&p, "nobody", &[], Ddl, &["x.y"]), None);
    assert_eq!(decide(&p, "nobody", &[], Utility, &[]), None);
    // but a user with a role is held to it
    assert!(decide(&p, "bob", &["reader"], Write, &["x.y"]).is_some());
}

#[test]
fn deny_by_default_is_on_by_default() {
    let p = policy("{}");
    assert!(decide(&p, "nobody", &[], Read, &["t"]).is_some());
    assert_eq!(decide(&p, "nobody", &[], Transaction, &[]), None);
}

#[test]
fn unqualified_schema_places_bare_names() {
    let p = policy(
        r#"{"unqualified_schema": "public",
            "roles": {"writer": [{"kinds": ["write"], "tables": ["public.*"]}],
                      "one": [{"kinds": ["read"], "tables": ["public.t"]}]}}"#,
    );
    assert_eq!(decide(&p, "a", &["writer"], Write, &["t"]), None);
    assert_eq!(decide(&p, "a", &["writer"], Write, &["public.t"]), None);
    assert!(decide(&p, "a", &["writer"], Write, &["other.t"]).is_some());
    assert_eq!(decide(&p, "a", &["one"], Read, &["t"]), None);
    assert!(decide(&p, "a", &["one"], Read, &["u"]).is_some());
}

#[test]
fn patterns_parse_and_match() {
    let good = [
        ("*", Pattern::Any),
        ("public.*", Pattern::Schema("public".into())),
        ("public.t", Pattern::Qualified("public".into(), "t".into())),
        ("t", Pattern::Bare("t".into())),
    ];
    for (text, want) in good {
        let got = Pattern::parse(text).unwrap();
        assert_eq!(got, want);
        assert_eq!(got.to_string(), text);
    }
    for bad in ["", ".", "a.", ".t", "*.t", "a.b.c", "a*", "a.b*", "**"] {
        assert!(Pattern::parse(bad).is_err(), "{bad:?}");
    }
    let q = TableRef::parse("public.t");
    let u = TableRef::parse("t");
    let cases = [
        ("*", &q, true),
        ("*", &u, true),
        ("public.*", &q, true),
        ("public.*", &u, false),
        ("other.*", &q, false),
        ("public.t", &q, true),
        ("public.t", &u, false),
        ("public.u", &q, false),
        ("t", &q, true),
        ("t", &u, true),
        ("u", &u, false),
        ("T", &u, false), // names compare exactly
    ];
    for (pattern, table, want) in cases {
        let p = Pattern::parse(pattern).unwrap();
        assert_eq!(p.matches(table, None), want, "{pattern} ~ {table}");
    }
    assert!(Pattern::parse("public.*")
        .unwrap()
        .matches(&u, Some("public")));
}

#[test]
fn rejects_bad_configs() {
    for (json, needle) in [
        (
            r#"{"roles": {"r": [{"kinds": ["select"]}]}}"#,
            "roles.r[0]: unknown statement kind",
        ),
        (r#"{"roles": {"r": [{"kinds": []}]}}"#, "at least one kind"),
        (
            r#"{"roles": {"r": [{"kinds": ["read"], "tables": []}]}}"#,
            "at least one kind",
        ),
        (
            r#"{"roles": {"r": [{"kinds": ["read"], "tables": ["a.b.c"]}]}}"#,
            "invalid table pattern",
        ),
        (
            r#"{"users": {"alice": ["writer"]}}"#,
            "users.alice: role \"writer\" is not defined",
        ),
        (r#"{"unqualified_schema": ""}"#, "unqualified_schema"),
        (r#"{"deny_by_defualt": true}"#, "unknown field"),
        (
            r#"{"roles": {"r": [{"kinds": ["read"], "table": ["t"]}]}}"#,
            "unknown field",
        ),
        (r#"{"roles": {"r": {"kinds": ["read"]}}}"#, "invalid"),
    ] {
        let err = parse_config::<Config>(json)
            .and_then(Policy::new)
            .unwrap_err();
        assert!(err.contains(needle), "{json}: {err}");
    }
}

#[test]
fn privileges_describe_what_a_user_may_do() {
    let p = policy(BRIEF);
    let alice = p.privileges("alice", &roles(&["reader", "ghost", "writer"]));
    assert_eq!(alice.roles, roles(&["reader", "ghost", "writer"]));
    assert_eq!(alice.undefined_roles, roles(&["ghost"]));
    assert!(!alice.unrestricted);
    assert_eq!(
        alice.describe(),
        vec![
            "reader: read on *",
            "writer: read, write on public.*, metrics",
            "ghost: not defined, grants nothing",
        ]
    );
    let nobody: Privileges = p.privileges("nobody", &[]);
    assert_eq!(
        nobody.describe(),
        vec!["no role: everything but transaction control is denied"]
    );
    let open = policy(r#"{"deny_by_default": false}"#).privileges("x", &[]);
    assert!(open.unrestricted);
    let olga = p.privileges("olga", &[]);
    assert_eq!(
        olga.describe(),
        vec!["ops: utility on *", "ops: ddl on ops.jobs"]
    );
}

#[test]
fn the_plugin_reads_the_principal() {
    let p = AccessControl(policy(BRIEF));
    let info = p.info();
    assert_eq!(info.name, "access-control");
    assert!(info.deterministic);
    assert_eq!(info.hooks, tidegate_plugin_sdk::Hooks::STATEMENT);
    let stmt = statement(
        principal("bob", &["reader"]),
        "delete from t",
        Write,
        &["public.t"],
    );
    assert!(matches!(p.on_statement(&stmt), Decision::Deny(_)));
    let stmt = statement(
        principal("alice", &[]),
        "delete from t",
        Write,
        &["public.t"],
    );
    assert_eq!(p.on_statement(&stmt), Decision::Allow);
}

#[test]
fn check_user_privileges_reads_the_config_text() {
    let p = check_user_privileges(BRIEF, "alice", &[]).unwrap();
    assert_eq!(
        p.describe(),
        vec!["writer: read, write on public.*, metrics"]
    );
    let err = check_user_privileges(r#"{"users": {"a": ["nope"]}}"#, "a", &[]).unwrap_err();
    assert!(err.contains("not defined"), "{err}");
}
