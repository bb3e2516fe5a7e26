use crate::policy::{pseudonym, Config, Policy, REDACTED};
use tidegate_plugin_sdk::crypto::Crypto;
use tidegate_plugin_sdk::prelude::*;
use tidegate_plugin_sdk::testing::{audit_event, principal};
use tidegate_plugin_sdk::{parse_config, AuditEvent, CryptoError, StatementKind, TableRef};

/// HMAC stand-in: the key's and data's bytes, xor-folded into 32 bytes.
struct FakeCrypto;

impl Crypto for FakeCrypto {
    fn encrypt(&self, _: &str, _: &[u8], _: &[u8]) -> Result<Vec<u8>, CryptoError> {
        unimplemented!()
    }
    fn decrypt(&self, _: &[u8], _: &[u8]) -> Result<Vec<u8>, CryptoError> {
        unimplemented!()
    }
    fn hmac(&self, key: &str, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if key != "audit" {
            return Err(CryptoError::UnknownKey(key.to_owned()));
        }
        let mut out = vec![0u8; 32];
        for (i, b) in key.bytes().chain(data.iter().copied()).enumerate() {
            out[i % 32] ^= b.wrapping_add(i as u8);
        }
        Ok(out)
    }
}

fn policy(json: &str) -> Policy {
    Policy::new(parse_config::<Config>(json).unwrap()).unwrap()
}

fn event(user: &str, kind: StatementKind, decision: &str, tables: &[&str]) -> AuditEvent {
    let mut e = audit_event(principal(user, &[]), kind);
    e.decision = decision.to_owned();
    e.tables = tables.iter().map(|t| TableRef::parse(t)).collect();
    e
}

fn labels(p: &Policy, e: AuditEvent) -> Option<Vec<(String, String)>> {
    p.record(e, &FakeCrypto).0.map(|r| r.labels)
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn empty_config_audits_everything_without_labels() {
    for json in ["", "null", "{}"] {
        let p = policy(json);
        for kind in StatementKind::ALL {
            let e = event("alice", kind, "allow", &[]);
            let (record, error) = p.record(e.clone(), &FakeCrypto);
            assert_eq!(error, None);
            let record = record.unwrap();
            assert_eq!(record.event, e, "the event passes through unchanged");
            assert!(record.labels.is_empty());
        }
    }
}

#[test]
fn labels_are_added_sorted() {
    let p = policy(r#"{"labels": {"env": "dev", "cluster": "eu-1"}}"#);
    assert_eq!(
        labels(&p, event("a", StatementKind::Read, "allow", &[])),
        Some(pairs(&[("cluster", "eu-1"), ("env", "dev")]))
    );
}

#[test]
fn skips_kinds_users_and_decisions() {
    let p = policy(
        r#"{"skip_kinds": ["transaction", "UTILITY"], "skip_users": ["monitor"],
            "only_decisions": ["deny", "rewrite"]}"#,
    );
    let cases = [
        ("alice", StatementKind::Read, "deny", true),
        ("alice", StatementKind::Write, "rewrite", true),
        ("alice", StatementKind::Read, "allow", false),
        ("alice", StatementKind::Transaction, "deny", false),
        ("alice", StatementKind::Utility, "deny", false),
        ("monitor", StatementKind::Read, "deny", false),
    ];
    for (user, kind, decision, audited) in cases {
        let e = event(user, kind, decision, &[]);
        assert_eq!(p.wants(&e), audited, "{user} {kind} {decision}");
        assert_eq!(labels(&p, e).is_some(), audited);
    }
}

#[test]
fn only_failures_keeps_errors_and_refusals() {
    let p = policy(r#"{"only_failures": true}"#);
    let ok = event("a", StatementKind::Read, "allow", &[]);
    let mut failed = ok.clone();
    failed.sqlstate = Some("23505".to_owned());
    let denied = event("a", StatementKind::Read, "deny", &[]);
    assert!(!p.wants(&ok));
    assert!(p.wants(&failed));
    assert!(p.wants(&denied));
}

#[test]
fn table_labels_match_qualified_and_bare_names() {
    let p = policy(
        r#"{"labels": {"env": "prod"},
            "table_labels": {"public.patients": {"classification": "pii"},
                             "audit_log": {"classification": "internal", "owner": "sec"}}}"#,
    );
    assert_eq!(
        labels(
            &p,
            event("a", StatementKind::Read, "allow", &["public.patients"])
        ),
        Some(pairs(&[("classification", "pii"), ("env", "prod")]))
    );
    assert_eq!(
        labels(&p, event("a", StatementKind::Read, "allow", &["patients"])),
        Some(pairs(&[("env", "prod")])),
        "an unqualified reference is not known to be public.patients"
    );
    assert_eq!(
        labels(
            &p,
            event("a", StatementKind::Read, "allow", &["ops.audit_log"])
        ),
        Some(pairs(&[
            ("classification", "internal"),
            ("env", "prod"),
            ("owner", "sec")
        ]))
    );
}

#[test]
fn pseudonymizes_user_and_role() {
    let p = policy(r#"{"pseudonymize_key": "audit"}"#);
    let (record, error) = p.record(
        event("alice", StatementKind::Read, "allow", &[]),
        &FakeCrypto,
    );
    assert_eq!(error, None);
    let principal = record.unwrap().event.principal;
    let want = pseudonym(&FakeCrypto, "audit", "alice").unwrap();
    assert_eq!(principal.user, want);
    assert_eq!(
        principal.role, want,
        "the test principal's role is its user"
    );
    assert!(want.starts_with("hmac:") && want.len() == 5 + 32);
    assert_ne!(want, pseudonym(&FakeCrypto, "audit", "bob").unwrap());
}

#[test]
fn a_failing_pseudonym_redacts_and_reports() {
    let p = policy(r#"{"pseudonymize_key": "missing"}"#);
    let (record, error) = p.record(
        event("alice", StatementKind::Read, "allow", &[]),
        &FakeCrypto,
    );
    assert_eq!(record.unwrap().event.principal.user, REDACTED);
    assert!(error.unwrap().contains("missing"));
}

#[test]
fn rejects_bad_configs() {
    for (json, needle) in [
        (r#"{"skip_kinds": ["select"]}"#, "skip_kinds"),
        (r#"{"only_decisions": ["maybe"]}"#, "only_decisions"),
        (r#"{"pseudonymize_key": ""}"#, "pseudonymize_key"),
        (r#"{"label": {}}"#, "unknown field"),
        (r#"{"labels": ["env"]}"#, "invalid"),
    ] {
        let err = parse_config::<Config>(json)
            .and_then(Policy::new)
            .unwrap_err();
        assert!(err.contains(needle), "{json}: {err}");
    }
}
