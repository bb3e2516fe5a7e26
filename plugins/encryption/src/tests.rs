use crate::policy::{
    encode, is_reader, parse, Config, Policy, Stored, PREFIX, SQLSTATE_CORRUPT, SQLSTATE_KEY,
    SQLSTATE_TYPE,
};
use crate::{base64, Encryption};
use core::cell::Cell;
use tidegate_plugin_sdk::crypto::Crypto;
use tidegate_plugin_sdk::prelude::*;
use tidegate_plugin_sdk::testing::principal;
use tidegate_plugin_sdk::{
    parse_config, BoundValue, Column, CryptoError, Hooks, Plugin, TableRef, Value,
};

/// A stand-in for the host's AES-GCM: `key|nonce|aad-length|aad|plaintext xor 0x5a`. Not
/// secret, but it names its key, authenticates the aad and differs on every call.
struct FakeCrypto {
    nonce: Cell<u8>,
}

impl FakeCrypto {
    fn new() -> Self {
        FakeCrypto {
            nonce: Cell::new(0),
        }
    }
}

impl Crypto for FakeCrypto {
    fn encrypt(&self, key: &str, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if !["pii", "fin"].contains(&key) {
            return Err(CryptoError::UnknownKey(key.to_owned()));
        }
        self.nonce.set(self.nonce.get().wrapping_add(1));
        let mut out = key.as_bytes().to_vec();
        out.push(b'|');
        out.push(self.nonce.get());
        out.push(aad.len() as u8);
        out.extend_from_slice(aad);
        out.extend(plaintext.iter().map(|b| b ^ 0x5a));
        Ok(out)
    }

    fn decrypt(&self, ciphertext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let invalid = || CryptoError::Invalid("does not authenticate".to_owned());
        let bar = ciphertext
            .iter()
            .position(|&b| b == b'|')
            .ok_or_else(invalid)?;
        let key = core::str::from_utf8(&ciphertext[..bar]).map_err(|_| invalid())?;
        if !["pii", "fin"].contains(&key) {
            return Err(CryptoError::UnknownKey(key.to_owned()));
        }
        let rest = ciphertext.get(bar + 2..).ok_or_else(invalid)?;
        let (&len, rest) = rest.split_first().ok_or_else(invalid)?;
        let len = usize::from(len);
        if rest.get(..len) != Some(aad) {
            return Err(invalid());
        }
        Ok(rest[len..].iter().map(|b| b ^ 0x5a).collect())
    }

    fn hmac(&self, _: &str, _: &[u8]) -> Result<Vec<u8>, CryptoError> {
        unimplemented!()
    }
}

const CONFIG: &str = r#"{
    "columns": {
        "public.patients.ssn": {"key": "pii", "readers": ["doctor"]},
        "patients.diagnosis": {"key": "pii", "readers": ["doctor", "nurse"]},
        "billing.cards.number": {"key": "fin", "readers": ["billing"]},
        "public.legacy.secret": {"key": "gone", "readers": ["doctor"]}
    },
    "mask": "****"
}"#;

fn policy(json: &str) -> Policy {
    Policy::new(parse_config::<Config>(json).unwrap()).unwrap()
}

fn col(table: &str, name: &str) -> Column {
    Column::new(Some(TableRef::parse(table)), name, "text")
}

fn bound(table: &str, name: &str, value: Option<&str>) -> BoundValue {
    BoundValue {
        column: col(table, name),
        value: value.map(|v| v.as_bytes().to_vec()),
    }
}

fn text(v: &Value) -> Option<&str> {
    v.as_deref().map(|b| core::str::from_utf8(b).unwrap())
}

#[test]
fn writes_encrypt_sensitive_values_only() {
    let p = policy(CONFIG);
    let crypto = FakeCrypto::new();
    let out = p
        .write_values(
            vec![
                bound("public.patients", "ssn", Some("123-45-6789")),
                bound("public.patients", "name", Some("Ann")),
                bound("patients", "ssn", Some("987")), // unqualified: still sensitive
                bound("public.patients", "ssn", None),
                bound("other.patients", "diagnosis", Some("flu")), // bare entry: any schema
                bound("other.patients", "ssn", Some("x")),         // another schema
                bound("public.patients", "ssn", Some("")),
            ],
            &crypto,
        )
        .unwrap();
    assert_eq!(out.len(), 7);
    for i in [0, 2, 4, 6] {
        let v = text(&out[i]).unwrap();
        assert!(v.starts_with(PREFIX), "{i}: {v}");
        assert!(v[PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)));
    }
    assert_eq!(text(&out[1]), Some("Ann"));
    assert_eq!(out[3], None, "NULL stays NULL");
    assert_eq!(text(&out[5]), Some("x"));
    // the aad is table.column, whatever the schema
    match parse(out[0].as_deref().unwrap()) {
        Stored::Encrypted(ct) => {
            assert_eq!(
                crypto.decrypt(&ct, b"patients.ssn").unwrap(),
                b"123-45-6789"
            );
            assert!(crypto.decrypt(&ct, b"patients.name").is_err());
        }
        other => panic!("{other:?}"),
    }
    // a fresh nonce each time
    let again = p
        .write_values(
            vec![bound("public.patients", "ssn", Some("123-45-6789"))],
            &crypto,
        )
        .unwrap();
    assert_ne!(again[0], out[0]);
}

#[test]
fn round_trip_for_readers_mask_for_others() {
    let p = policy(CONFIG);
    let crypto = FakeCrypto::new();
    let written = p
        .write_values(
            vec![
                bound("public.patients", "ssn", Some("123-45-6789")),
                bound("public.patients", "diagnosis", Some("flu")),
                bound("public.patients", "ssn", None),
            ],
            &crypto,
        )
        .unwrap();
    let columns = vec![
        col("public.patients", "id"),
        col("public.patients", "ssn"),
        col("public.patients", "diagnosis"),
    ];
    let rows = vec![
        vec![Some(b"1".to_vec()), written[0].clone(), written[1].clone()],
        vec![
            Some(b"2".to_vec()),
            written[2].clone(),
            Some(b"legacy plaintext".to_vec()),
        ],
    ];
    let read = |roles: &[&str]| {
        let (rows, failures) = p
            .rows(&principal("u", roles), &columns, rows.clone(), &crypto)
            .unwrap();
        assert!(failures.is_empty());
        rows.iter()
            .map(|r| r.iter().map(|v| text(v).map(str::to_owned)).collect())
            .collect::<Vec<Vec<Option<String>>>>()
    };
    let s = |v: &str| Some(v.to_owned());
    assert_eq!(
        read(&["doctor"]),
        vec![
            vec![s("1"), s("123-45-6789"), s("flu")],
            vec![s("2"), None, s("legacy plaintext")],
        ]
    );
    assert_eq!(
        read(&["nurse"]),
        vec![
            vec![s("1"), s("****"), s("flu")],
            vec![s("2"), None, s("legacy plaintext")],
        ]
    );
    assert_eq!(
        read(&[]),
        vec![
            vec![s("1"), s("****"), s("****")],
            vec![s("2"), None, s("****")],
        ]
    );
}

#[test]
fn readers_match_broker_roles_or_the_postgres_role() {
    let readers = vec!["doctor".to_owned()];
    assert!(is_reader(&principal("u", &["doctor"]), &readers));
    let mut pg = principal("u", &[]);
    pg.role = "doctor".to_owned();
    assert!(is_reader(&pg, &readers));
    assert!(!is_reader(&principal("doctor2", &["nurse"]), &readers));
    assert!(!is_reader(&principal("u", &["doctor"]), &[]));
}

#[test]
fn undecryptable_values_deny_or_mask() {
    let crypto = FakeCrypto::new();
    let columns = vec![col("public.patients", "ssn")];
    let doctor = principal("d", &["doctor"]);
    // encrypted for another column: the aad does not authenticate
    let moved = {
        let ct = crypto.encrypt("pii", b"123", b"patients.name").unwrap();
        Some(encode(&ct))
    };
    let malformed = Some(format!("{PREFIX}not base64!").into_bytes());
    let deny = policy(CONFIG);
    for (value, sqlstate) in [
        (moved.clone(), SQLSTATE_CORRUPT),
        (malformed.clone(), SQLSTATE_CORRUPT),
    ] {
        let err = deny
            .rows(&doctor, &columns, vec![vec![value]], &crypto)
            .unwrap_err();
        assert_eq!(err.sqlstate, sqlstate);
        assert!(err.reason.contains("public.patients.ssn"), "{}", err.reason);
    }
    let mask = policy(&CONFIG.replace(
        r#""mask": "****""#,
        r#""mask": "?", "on_decrypt_error": "mask""#,
    ));
    let (rows, failures) = mask
        .rows(
            &doctor,
            &columns,
            vec![vec![moved], vec![malformed]],
            &crypto,
        )
        .unwrap();
    assert_eq!(
        rows,
        vec![vec![Some(b"?".to_vec())], vec![Some(b"?".to_vec())]]
    );
    assert_eq!(failures.len(), 2);
    // non-readers never try to decrypt
    let (rows, _) = deny
        .rows(
            &principal("x", &[]),
            &columns,
            vec![vec![Some(b"tgenc:v1:!!".to_vec())]],
            &crypto,
        )
        .unwrap();
    assert_eq!(rows, vec![vec![Some(b"****".to_vec())]]);
}

#[test]
fn write_errors_deny_with_a_sqlstate() {
    let p = policy(CONFIG);
    let crypto = FakeCrypto::new();
    let err = p
        .write_values(vec![bound("public.legacy", "secret", Some("s"))], &crypto)
        .unwrap_err();
    assert_eq!(err.sqlstate, SQLSTATE_KEY);
    assert!(err.reason.contains("public.legacy.secret") && err.reason.contains("gone"));
    let mut wrong_type = bound("public.patients", "ssn", Some("1"));
    wrong_type.column.type_name = "int4".to_owned();
    let err = p.write_values(vec![wrong_type], &crypto).unwrap_err();
    assert_eq!(err.sqlstate, SQLSTATE_TYPE);
    // NULL needs no encryption, so no type or key check either
    let mut null = bound("public.legacy", "secret", None);
    null.column.type_name = "int4".to_owned();
    assert_eq!(p.write_values(vec![null], &crypto).unwrap(), vec![None]);
    for ty in ["text", "varchar", "character varying", "unknown", ""] {
        let mut ok = bound("public.patients", "ssn", Some("1"));
        ok.column.type_name = ty.to_owned();
        assert!(p.write_values(vec![ok], &crypto).is_ok(), "{ty}");
    }
}

#[test]
fn the_most_specific_entry_wins() {
    let p = policy(
        r#"{"columns": {"t.c": {"key": "pii", "readers": ["a"]},
                        "s.t.c": {"key": "fin", "readers": ["b"]}}}"#,
    );
    assert_eq!(p.sensitive(&col("s.t", "c")).unwrap().name, "s.t.c");
    assert_eq!(p.sensitive(&col("x.t", "c")).unwrap().name, "t.c");
    assert_eq!(p.sensitive(&col("t", "c")).unwrap().name, "s.t.c");
    assert!(p.sensitive(&col("s.t", "d")).is_none());
    assert!(p.sensitive(&Column::new(None, "c", "text")).is_none());
}

#[test]
fn stored_values_parse() {
    assert_eq!(parse(b"plain"), Stored::Plaintext);
    assert_eq!(parse(b"tgenc:v2:Zm9v"), Stored::Plaintext);
    assert_eq!(parse(b"tgenc:v1:Zm9v"), Stored::Encrypted(b"foo".to_vec()));
    assert_eq!(parse(b"tgenc:v1:"), Stored::Encrypted(Vec::new()));
    assert_eq!(parse(b"tgenc:v1:Zm9"), Stored::Malformed);
    assert_eq!(encode(b"foo"), b"tgenc:v1:Zm9v");
    assert_eq!(base64::encode(b"foo"), "Zm9v");
}

#[test]
fn rejects_bad_configs() {
    for (json, needle) in [
        (r#"{}"#, "missing field `columns`"),
        (
            r#"{"columns": {"ssn": {"key": "pii"}}}"#,
            "not \"schema.table.column\"",
        ),
        (
            r#"{"columns": {"a.b.c.d": {"key": "pii"}}}"#,
            "not \"schema.table.column\"",
        ),
        (
            r#"{"columns": {"a..c": {"key": "pii"}}}"#,
            "not \"schema.table.column\"",
        ),
        (r#"{"columns": {"t.c": {"key": ""}}}"#, "empty key name"),
        (
            r#"{"columns": {"t.c": {"readers": []}}}"#,
            "missing field `key`",
        ),
        (
            r#"{"columns": {}, "on_decrypt_error": "ignore"}"#,
            "unknown variant",
        ),
        (r#"{"columns": {}, "masks": "x"}"#, "unknown field"),
    ] {
        let err = parse_config::<Config>(json)
            .and_then(Policy::new)
            .unwrap_err();
        assert!(err.contains(needle), "{json}: {err}");
    }
}

#[test]
fn info_declares_hooks_and_columns() {
    let info = Encryption(policy(CONFIG)).info();
    assert_eq!(info.name, "encryption");
    assert_eq!(info.hooks, Hooks::ROWS | Hooks::WRITE_VALUES);
    assert!(info.deterministic);
    assert_eq!(
        info.columns,
        vec![
            "billing.cards.number",
            "patients.diagnosis",
            "public.legacy.secret",
            "public.patients.ssn",
        ]
    );
}

#[test]
fn base64_decode_never_panics() {
    let mut x: u64 = 0x1234_5678_9abc_def1;
    for _ in 0..50_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % 13) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|i| b"AZaz09+/=-_ \n\xff"[((x >> (i * 4)) % 14) as usize])
            .collect();
        if let Some(decoded) = base64::decode(&bytes) {
            assert_eq!(base64::encode(&decoded).as_bytes(), &bytes[..]);
        }
        let _ = parse(&bytes);
    }
}
