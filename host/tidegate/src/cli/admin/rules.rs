//! What an access-control rule means in PostgreSQL privileges. The rules themselves — kinds,
//! table patterns, `KIND[,KIND]:PATTERN[,PATTERN]` — are the `tidegate-rbac` crate's grammar,
//! the one the access-control plugin's `init` checks with; it is re-exported here.

use std::collections::BTreeSet;

pub use tidegate_rbac::{parse_kinds, Kind, Pattern, Rule, RuleError};

/// The plugin host's kind for a rule's kind.
pub fn statement_kind(kind: Kind) -> tidegate_plugins::StatementKind {
    use tidegate_plugins::StatementKind as S;
    match kind {
        Kind::Read => S::Read,
        Kind::Write => S::Write,
        Kind::Ddl => S::Ddl,
        Kind::Utility => S::Utility,
        Kind::Transaction => S::Transaction,
    }
}

/// The schema PostgreSQL grants on for `pattern`: an unqualified pattern means `public`.
fn schema_of(pattern: &Pattern) -> &str {
    match pattern {
        Pattern::Schema(s) | Pattern::Qualified(s, _) => s,
        Pattern::Any | Pattern::Bare(_) => "public",
    }
}

/// The table objects PostgreSQL grants on for `pattern`.
fn tables_of(pattern: &Pattern) -> Object {
    match pattern {
        Pattern::Any => Object::AllTablesIn("public".into()),
        Pattern::Schema(s) => Object::AllTablesIn(s.clone()),
        Pattern::Qualified(s, t) => Object::Table(s.clone(), t.clone()),
        Pattern::Bare(t) => Object::Table("public".into(), t.clone()),
    }
}

/// Why `tidegate role create` refuses its arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    /// A rule that does not parse.
    #[error(transparent)]
    Rule(#[from] RuleError),
    /// A role name that PostgreSQL or the configuration cannot hold.
    #[error("invalid role name {0:?}: {1}")]
    BadRoleName(String, &'static str),
    /// `role create` without `--allow`.
    #[error("a role needs at least one --allow rule")]
    NoRules,
}

/// What a rule means in PostgreSQL privileges.
pub trait Grants {
    /// The PostgreSQL privileges it means (see [`Grant`]).
    fn grants(&self) -> BTreeSet<Grant>;
}

impl Grants for Rule {
    fn grants(&self) -> BTreeSet<Grant> {
        let mut out = BTreeSet::new();
        for kind in &self.kinds {
            let privileges: &[Privilege] = match kind {
                Kind::Read => &[Privilege::Select],
                Kind::Write => &[
                    Privilege::Insert,
                    Privilege::Update,
                    Privilege::Delete,
                    Privilege::Truncate,
                ],
                Kind::Ddl => &[Privilege::Create],
                // Nothing in PostgreSQL's privilege system corresponds to these.
                Kind::Utility | Kind::Transaction => &[],
            };
            for table in &self.tables {
                if privileges.is_empty() {
                    continue;
                }
                // Tables in a schema other than public are unreachable without USAGE on it.
                out.insert(Grant {
                    privilege: Privilege::Usage,
                    on: Object::Schema(schema_of(table).to_owned()),
                });
                for &privilege in privileges {
                    let on = if privilege == Privilege::Create {
                        Object::Schema(schema_of(table).to_owned())
                    } else {
                        tables_of(table)
                    };
                    out.insert(Grant { privilege, on });
                }
            }
        }
        out
    }
}

/// Checks a name that becomes both an access-control role and a PostgreSQL role.
pub fn check_role_name(name: &str) -> Result<(), RoleError> {
    let bad = |why| Err(RoleError::BadRoleName(name.to_owned(), why));
    if name.is_empty() || name.len() > 63 {
        return bad("must be 1 to 63 bytes (PostgreSQL truncates longer names)");
    }
    if name.contains('\0') {
        return bad("must not contain NUL");
    }
    if name.starts_with("pg_") {
        return bad("names starting with pg_ are reserved by PostgreSQL");
    }
    let reserved = [
        "public",
        "none",
        "current_user",
        "session_user",
        "current_role",
    ];
    if reserved.contains(&name.to_ascii_lowercase().as_str()) {
        return bad("reserved by PostgreSQL");
    }
    Ok(())
}

/// A PostgreSQL privilege.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Privilege {
    /// USAGE on a schema.
    Usage,
    /// CREATE on a schema.
    Create,
    /// SELECT on tables.
    Select,
    /// INSERT on tables.
    Insert,
    /// UPDATE on tables.
    Update,
    /// DELETE on tables.
    Delete,
    /// TRUNCATE on tables (TideGate classifies TRUNCATE as a write).
    Truncate,
}

impl Privilege {
    /// Its SQL keyword.
    pub fn as_sql(self) -> &'static str {
        match self {
            Privilege::Usage => "USAGE",
            Privilege::Create => "CREATE",
            Privilege::Select => "SELECT",
            Privilege::Insert => "INSERT",
            Privilege::Update => "UPDATE",
            Privilege::Delete => "DELETE",
            Privilege::Truncate => "TRUNCATE",
        }
    }
}

/// What a privilege is on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Object {
    /// A schema.
    Schema(String),
    /// Every table (existing now) of a schema.
    AllTablesIn(String),
    /// One table.
    Table(String, String),
}

impl Object {
    /// The object as SQL, every identifier quoted.
    pub fn to_sql(&self) -> String {
        match self {
            Object::Schema(s) => format!("SCHEMA {}", quote_ident(s)),
            Object::AllTablesIn(s) => format!("ALL TABLES IN SCHEMA {}", quote_ident(s)),
            Object::Table(s, t) => format!("TABLE {}.{}", quote_ident(s), quote_ident(t)),
        }
    }
}

/// One privilege on one object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    /// The privilege.
    pub privilege: Privilege,
    /// What it is on.
    pub on: Object,
}

/// `GRANT … TO role` (or, with `revoke`, `REVOKE … FROM role`) statements for `grants`, one per
/// object with its privileges combined, schemas first.
pub fn statements(grants: &BTreeSet<Grant>, role: &str, revoke: bool) -> Vec<(Object, String)> {
    let mut by_object: Vec<(Object, Vec<Privilege>)> = Vec::new();
    for g in grants {
        match by_object.iter_mut().find(|(o, _)| *o == g.on) {
            Some((_, ps)) => ps.push(g.privilege),
            None => by_object.push((g.on.clone(), vec![g.privilege])),
        }
    }
    // Schemas first (USAGE before what it makes reachable), then tables.
    by_object.sort_by_key(|(o, _)| !matches!(o, Object::Schema(_)));
    by_object
        .into_iter()
        .map(|(on, ps)| {
            let ps: Vec<&str> = ps.iter().map(|p| p.as_sql()).collect();
            let (verb, prep) = if revoke {
                ("REVOKE", "FROM")
            } else {
                ("GRANT", "TO")
            };
            let sql = format!(
                "{verb} {} ON {} {prep} {}",
                ps.join(", "),
                on.to_sql(),
                quote_ident(role)
            );
            (on, sql)
        })
        .collect()
}

pub use tidegate_sql::quote_ident;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_mean_quoted_grants() {
        let r = Rule::parse_arg("read,write:*,s.t,bare").expect("valid");
        let sql: Vec<String> = statements(&r.grants(), "ro\"le", false)
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        assert_eq!(
            sql,
            vec![
                "GRANT USAGE ON SCHEMA \"public\" TO \"ro\"\"le\"",
                "GRANT USAGE ON SCHEMA \"s\" TO \"ro\"\"le\"",
                "GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA \"public\" TO \"ro\"\"le\"",
                "GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON TABLE \"public\".\"bare\" TO \"ro\"\"le\"",
                "GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON TABLE \"s\".\"t\" TO \"ro\"\"le\"",
            ]
        );
        let ddl = Rule::parse_arg("ddl,utility:ops.*").expect("valid");
        let sql: Vec<String> = statements(&ddl.grants(), "ops", true)
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        assert_eq!(
            sql,
            vec!["REVOKE USAGE, CREATE ON SCHEMA \"ops\" FROM \"ops\""]
        );
        assert!(Rule::parse_arg("utility,transaction:*")
            .expect("valid")
            .grants()
            .is_empty());
    }

    #[test]
    fn role_names() {
        assert!(check_role_name("reader").is_ok());
        assert!(check_role_name("Mixed \"odd\" name").is_ok());
        for bad in ["", "pg_monitor", "public", "PUBLIC", "a\0b"] {
            assert!(check_role_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_role_name(&"x".repeat(64)).is_err());
    }
}
