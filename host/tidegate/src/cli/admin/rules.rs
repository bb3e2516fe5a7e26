//! The access-control plugin's rule syntax as the CLI reads it (`KIND[,KIND]:PATTERN[,PATTERN]`),
//! checked exactly as the plugin's `init` checks it (plugins/access-control/src/rbac.rs), and
//! what a rule means in PostgreSQL privileges.

use std::collections::BTreeSet;
use std::fmt;

/// A statement kind, as the plugin names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `read`
    Read,
    /// `write`
    Write,
    /// `ddl`
    Ddl,
    /// `utility`
    Utility,
    /// `transaction`
    Transaction,
}

impl Kind {
    /// Every kind, in the plugin's order.
    pub const ALL: [Kind; 5] = [
        Kind::Read,
        Kind::Write,
        Kind::Ddl,
        Kind::Utility,
        Kind::Transaction,
    ];

    /// The plugin's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Read => "read",
            Kind::Write => "write",
            Kind::Ddl => "ddl",
            Kind::Utility => "utility",
            Kind::Transaction => "transaction",
        }
    }

    /// Reads one kind name (not `*`).
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The plugin host's kind.
    pub fn statement_kind(self) -> tidegate_plugins::StatementKind {
        use tidegate_plugins::StatementKind as S;
        match self {
            Kind::Read => S::Read,
            Kind::Write => S::Write,
            Kind::Ddl => S::Ddl,
            Kind::Utility => S::Utility,
            Kind::Transaction => S::Transaction,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A table pattern: `*`, `schema.*`, `schema.table` or `table`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pattern {
    /// `*`
    Any,
    /// `schema.*`
    Schema(String),
    /// `schema.table`
    Qualified(String, String),
    /// `table`
    Bare(String),
}

impl Pattern {
    /// Reads a pattern with the plugin's rules.
    pub fn parse(text: &str) -> Result<Pattern, RuleError> {
        let ok = |s: &str| !s.is_empty() && !s.contains('*') && !s.contains('.');
        if text == "*" {
            return Ok(Pattern::Any);
        }
        match text.split_once('.') {
            Some((schema, "*")) if ok(schema) => Ok(Pattern::Schema(schema.to_owned())),
            Some((schema, table)) if ok(schema) && ok(table) => {
                Ok(Pattern::Qualified(schema.to_owned(), table.to_owned()))
            }
            None if ok(text) => Ok(Pattern::Bare(text.to_owned())),
            _ => Err(RuleError::BadPattern(text.to_owned())),
        }
    }

    /// The schema PostgreSQL grants on: an unqualified pattern means `public`.
    fn schema(&self) -> &str {
        match self {
            Pattern::Schema(s) | Pattern::Qualified(s, _) => s,
            Pattern::Any | Pattern::Bare(_) => "public",
        }
    }

    /// The table objects PostgreSQL grants on.
    fn tables(&self) -> Object {
        match self {
            Pattern::Any => Object::AllTablesIn("public".into()),
            Pattern::Schema(s) => Object::AllTablesIn(s.clone()),
            Pattern::Qualified(s, t) => Object::Table(s.clone(), t.clone()),
            Pattern::Bare(t) => Object::Table("public".into(), t.clone()),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Any => f.write_str("*"),
            Pattern::Schema(s) => write!(f, "{s}.*"),
            Pattern::Qualified(s, t) => write!(f, "{s}.{t}"),
            Pattern::Bare(t) => f.write_str(t),
        }
    }
}

/// One rule: kinds permitted on tables. `kinds` keeps what was written (`*` stays `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The kind names as written (`read`, …, or `*`).
    pub kind_names: Vec<String>,
    /// The kinds they mean.
    pub kinds: Vec<Kind>,
    /// The table patterns.
    pub tables: Vec<Pattern>,
}

/// Why a rule or name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// No `:` between kinds and patterns.
    #[error("rule {0:?} is not KIND[,KIND]:PATTERN[,PATTERN] (e.g. read,write:public.*)")]
    Syntax(String),
    /// A kind the plugin does not know.
    #[error("unknown statement kind {0:?} (read, write, ddl, utility, transaction, *)")]
    UnknownKind(String),
    /// A malformed table pattern.
    #[error("invalid table pattern {0:?} (expected *, schema.*, schema.table or table)")]
    BadPattern(String),
    /// A rule with no kind or no pattern.
    #[error("rule {0:?} needs at least one kind and one table pattern")]
    Empty(String),
    /// A role name that PostgreSQL or the configuration cannot hold.
    #[error("invalid role name {0:?}: {1}")]
    BadRoleName(String, &'static str),
    /// `role create` without `--allow`.
    #[error("a role needs at least one --allow rule")]
    NoRules,
}

/// Kind names as configured: each known, `*` meaning all.
pub fn parse_kinds(names: &[String]) -> Result<Vec<Kind>, RuleError> {
    let mut out = Vec::new();
    for name in names {
        if name == "*" {
            return Ok(Kind::ALL.to_vec());
        }
        let k = Kind::parse(name).ok_or_else(|| RuleError::UnknownKind(name.clone()))?;
        if !out.contains(&k) {
            out.push(k);
        }
    }
    Ok(out)
}

impl Rule {
    /// Reads `KIND[,KIND]:PATTERN[,PATTERN]`.
    pub fn parse_arg(arg: &str) -> Result<Rule, RuleError> {
        let (kinds, tables) = arg
            .split_once(':')
            .ok_or_else(|| RuleError::Syntax(arg.to_owned()))?;
        let split = |s: &str| -> Vec<String> {
            s.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect()
        };
        Rule::new(split(kinds), split(tables)).map_err(|e| match e {
            RuleError::Empty(_) => RuleError::Empty(arg.to_owned()),
            e => e,
        })
    }

    /// Checks configured kind names and patterns.
    pub fn new(kind_names: Vec<String>, tables: Vec<String>) -> Result<Rule, RuleError> {
        let kinds = parse_kinds(&kind_names)?;
        let tables = tables
            .iter()
            .map(|t| Pattern::parse(t))
            .collect::<Result<Vec<_>, _>>()?;
        if kinds.is_empty() || tables.is_empty() {
            return Err(RuleError::Empty(format!(
                "{}:{}",
                kind_names.join(","),
                tables
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            )));
        }
        Ok(Rule {
            kind_names,
            kinds,
            tables,
        })
    }

    /// The PostgreSQL privileges this rule means (see [`Grant`]).
    pub fn grants(&self) -> BTreeSet<Grant> {
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
                    on: Object::Schema(table.schema().to_owned()),
                });
                for &privilege in privileges {
                    let on = if privilege == Privilege::Create {
                        Object::Schema(table.schema().to_owned())
                    } else {
                        table.tables()
                    };
                    out.insert(Grant { privilege, on });
                }
            }
        }
        out
    }
}

/// Checks a name that becomes both an access-control role and a PostgreSQL role.
pub fn check_role_name(name: &str) -> Result<(), RuleError> {
    let bad = |why| Err(RuleError::BadRoleName(name.to_owned(), why));
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
    fn rules_parse_like_the_plugin() {
        let r = Rule::parse_arg("read,write:public.*,metrics").expect("valid");
        assert_eq!(r.kinds, vec![Kind::Read, Kind::Write]);
        assert_eq!(
            r.tables,
            vec![
                Pattern::Schema("public".into()),
                Pattern::Bare("metrics".into())
            ]
        );
        assert_eq!(Rule::parse_arg("*:*").expect("valid").kinds, Kind::ALL);
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
        assert!(matches!(Rule::parse_arg("read"), Err(RuleError::Syntax(_))));
        assert!(matches!(Rule::parse_arg("read:"), Err(RuleError::Empty(_))));
        assert!(matches!(Rule::parse_arg(":*"), Err(RuleError::Empty(_))));
    }

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
