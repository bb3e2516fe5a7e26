//! Cache keys: a digest of everything that decides a reply's bytes. Two requests share a key
//! only if the statement text, the bound parameter values and formats, the result formats, the
//! protocol, the database, the login role and the session's settings are all equal.

use crate::wire::kind::ClientMsg;
use sha2::{Digest, Sha256};

/// A cache key: the first 16 bytes of a SHA-256 over [`KeyInput`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(pub [u8; 16]);

impl Key {
    /// The key's name in Redis.
    pub fn redis_name(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(5 + 32);
        s.push_str("tg:c:");
        for b in self.0 {
            s.push(HEX[usize::from(b >> 4)] as char);
            s.push(HEX[usize::from(b & 15)] as char);
        }
        s
    }
}

/// Everything a cached reply depends on besides the data itself.
#[derive(Debug, Clone, Copy)]
pub struct KeyInput<'a> {
    /// Query for a simple query, Execute for Bind/Execute, Describe for Bind/Describe/Execute
    /// (the replies differ).
    pub protocol: ClientMsg,
    /// The database the client is connected to.
    pub database: &'a str,
    /// The broker user the client logged in as …
    pub user: &'a str,
    /// … and the PostgreSQL role its statements run as.
    pub role: &'a str,
    /// Digest of the session's settings: startup parameters and every statement that changed
    /// session state (`SET ROLE`, `SET search_path`, `SET TimeZone`…), in order.
    pub scope: &'a [u8; 32],
    /// The statement text as sent (after any policy rewrite).
    pub sql: &'a [u8],
    /// Bound parameter values (`None` = NULL).
    pub params: &'a [Option<&'a [u8]>],
    /// Parameter format codes.
    pub param_formats: &'a [i16],
    /// Result format codes.
    pub result_formats: &'a [i16],
}

impl KeyInput<'_> {
    /// The key. Every field is length-prefixed, so no two different inputs feed the same
    /// bytes to the digest.
    pub fn key(&self) -> Key {
        let mut h = Sha256::new();
        h.update(b"tidegate-cache-v1");
        h.update([self.protocol.byte()]);
        field(&mut h, self.database.as_bytes());
        field(&mut h, self.user.as_bytes());
        field(&mut h, self.role.as_bytes());
        h.update(self.scope);
        field(&mut h, self.sql);
        h.update((self.params.len() as u64).to_le_bytes());
        for p in self.params {
            match p {
                None => h.update([0]),
                Some(v) => {
                    h.update([1]);
                    field(&mut h, v);
                }
            }
        }
        for formats in [self.param_formats, self.result_formats] {
            h.update((formats.len() as u64).to_le_bytes());
            for f in formats {
                h.update(f.to_le_bytes());
            }
        }
        let d = h.finalize();
        let mut k = [0; 16];
        k.copy_from_slice(&d[..16]);
        Key(k)
    }
}

fn field(h: &mut Sha256, v: &[u8]) {
    h.update((v.len() as u64).to_le_bytes());
    h.update(v);
}

/// The settings digest of a new session: its startup parameters, sorted, except those that
/// cannot change a result (`application_name`).
pub fn initial_scope(startup: &[(String, String)]) -> [u8; 32] {
    let mut params: Vec<(String, &str)> = startup
        .iter()
        .filter(|(k, _)| {
            !k.eq_ignore_ascii_case("application_name")
                && !k.eq_ignore_ascii_case("fallback_application_name")
        })
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
        .collect();
    params.sort();
    let mut h = Sha256::new();
    h.update(b"tidegate-scope-v1");
    for (k, v) in params {
        field(&mut h, k.as_bytes());
        field(&mut h, v.as_bytes());
    }
    h.finalize().into()
}

/// The settings digest after `statement` (which changed session state) ran.
pub fn next_scope(scope: &[u8; 32], statement: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(scope);
    field(&mut h, statement);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone, PartialEq)]
    struct Owned {
        protocol: ClientMsg,
        database: String,
        role: String,
        settings: Vec<String>,
        sql: Vec<u8>,
        params: Vec<Option<Vec<u8>>>,
        param_formats: Vec<i16>,
        result_formats: Vec<i16>,
    }

    impl Owned {
        fn key(&self) -> Key {
            let mut scope = initial_scope(&[]);
            for s in &self.settings {
                scope = next_scope(&scope, s.as_bytes());
            }
            let params: Vec<Option<&[u8]>> = self.params.iter().map(|p| p.as_deref()).collect();
            KeyInput {
                protocol: self.protocol,
                database: &self.database,
                user: "u",
                role: &self.role,
                scope: &scope,
                sql: &self.sql,
                params: &params,
                param_formats: &self.param_formats,
                result_formats: &self.result_formats,
            }
            .key()
        }
    }

    // Small alphabets so that random pairs are often equal or differ in a single field.
    fn owned() -> impl Strategy<Value = Owned> {
        let word = || prop::sample::select(vec!["", "a", "ab", "b", "public", "UTC"]);
        (
            prop::sample::select(vec![ClientMsg::Query, ClientMsg::Execute]),
            word(),
            word(),
            prop::collection::vec(
                prop::sample::select(vec![
                    "SET ROLE bob",
                    "SET search_path = s",
                    "SET TimeZone = 'UTC'",
                ]),
                0..3,
            ),
            prop::collection::vec(prop::sample::select(b"ab '".to_vec()), 0..4),
            prop::collection::vec(
                prop::option::of(prop::collection::vec(
                    prop::sample::select(b"\0\x01a".to_vec()),
                    0..3,
                )),
                0..3,
            ),
            prop::collection::vec(0i16..2, 0..2),
            prop::collection::vec(0i16..2, 0..2),
        )
            .prop_map(
                |(protocol, db, role, settings, sql, params, pf, rf)| Owned {
                    protocol,
                    database: db.into(),
                    role: role.into(),
                    settings: settings.into_iter().map(String::from).collect(),
                    sql,
                    params,
                    param_formats: pf,
                    result_formats: rf,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Two requests share a key exactly when every input is equal.
        #[test]
        fn keys_are_equal_only_for_equal_inputs(a in owned(), b in owned()) {
            prop_assert_eq!(a == b, a.key() == b.key(), "{:?} vs {:?}", a, b);
        }

        /// Moving bytes between adjacent fields changes the key.
        #[test]
        fn field_boundaries_matter(s in "[a-c]{0,6}", cut in 0usize..7) {
            let cut = cut.min(s.len());
            let (x, y) = s.split_at(cut);
            let a = Owned { protocol: ClientMsg::Query, database: x.into(), role: y.into(), settings: vec![], sql: vec![], params: vec![], param_formats: vec![], result_formats: vec![] };
            let b = Owned { database: s.clone(), role: String::new(), ..a.clone() };
            prop_assert_eq!(a == b, a.key() == b.key());
        }
    }

    #[test]
    fn redis_names_are_lower_hex() {
        let mut k = [0u8; 16];
        k[0] = 0xab;
        k[15] = 0x0f;
        assert_eq!(Key(k).redis_name(), format!("tg:c:ab{}0f", "00".repeat(14)));
    }

    #[test]
    fn application_name_does_not_matter_but_timezone_does() {
        let base = [("user".to_owned(), "u".to_owned())];
        let with_app = [
            ("user".to_owned(), "u".to_owned()),
            ("application_name".to_owned(), "psql".to_owned()),
        ];
        let with_tz = [
            ("user".to_owned(), "u".to_owned()),
            ("TimeZone".to_owned(), "UTC".to_owned()),
        ];
        assert_eq!(initial_scope(&base), initial_scope(&with_app));
        assert_ne!(initial_scope(&base), initial_scope(&with_tz));
    }
}
