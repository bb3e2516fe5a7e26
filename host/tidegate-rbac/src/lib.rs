//! The access-control rule grammar, in one place: the statement kinds a rule names, the table
//! patterns it covers and how they match a table, and a rule's parse with its errors.
//!
//! Two programs read rules and must agree on every input: the access-control plugin
//! (`plugins/access-control`, compiled to wasm32 without `std`) checks its configuration with
//! [`Rule::new`] and decides with [`Pattern::covers`]; the `tidegate role` commands read
//! `--allow KIND[,KIND]:PATTERN[,PATTERN]` with [`Rule::parse_arg`] and the plugin's
//! configuration with [`Rule::new`]. What a rule means as PostgreSQL privileges is the host's
//! (`tidegate::cli::admin::rules`).
//!
//! `#![no_std]` with `alloc`, and no dependency that brings `std` in.

#![no_std]

extern crate alloc;
#[cfg(test)]
extern crate std;

use alloc::borrow::ToOwned;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

/// A statement kind, as rules name it.
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
    /// Every kind: what `*` means, in this order.
    pub const ALL: [Kind; 5] = [
        Kind::Read,
        Kind::Write,
        Kind::Ddl,
        Kind::Utility,
        Kind::Transaction,
    ];

    /// Its name in rules.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Read => "read",
            Kind::Write => "write",
            Kind::Ddl => "ddl",
            Kind::Utility => "utility",
            Kind::Transaction => "transaction",
        }
    }

    /// The kind one name (not `*`) names, ignoring ASCII case (`read`, `READ`).
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(name))
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
    /// `*`: every table.
    Any,
    /// `schema.*`: every table of a schema.
    Schema(String),
    /// `schema.table`.
    Qualified(String, String),
    /// `table`: a table of that name in any schema.
    Bare(String),
}

/// A table a statement names, as [`Pattern::covers`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table<'a> {
    /// Its schema, when the statement qualified it.
    pub schema: Option<&'a str>,
    /// Its name.
    pub name: &'a str,
}

impl Pattern {
    /// Reads a pattern. A schema or table name is non-empty, without `*` or `.`.
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

    /// Whether it covers `table`, whose schema is `table.schema` or else `unqualified_schema`
    /// (none: an unqualified table matches only `*` and bare patterns). Names compare exactly.
    pub fn covers(&self, table: Table<'_>, unqualified_schema: Option<&str>) -> bool {
        let schema = table.schema.or(unqualified_schema);
        match self {
            Pattern::Any => true,
            Pattern::Schema(s) => schema == Some(s.as_str()),
            Pattern::Qualified(s, t) => schema == Some(s.as_str()) && t == table.name,
            Pattern::Bare(t) => t == table.name,
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

/// Why a rule is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// No `:` between kinds and patterns (the `--allow` form).
    #[error("rule {0:?} is not KIND[,KIND]:PATTERN[,PATTERN] (e.g. read,write:public.*)")]
    Syntax(String),
    /// A kind name that is not a kind.
    #[error("unknown statement kind {0:?} (read, write, ddl, utility, transaction, *)")]
    UnknownKind(String),
    /// A malformed table pattern.
    #[error("invalid table pattern {0:?} (expected *, schema.*, schema.table or table)")]
    BadPattern(String),
    /// A rule with no kind or no pattern (as `KINDS:PATTERNS`).
    #[error("rule {0:?} needs at least one kind and one table pattern")]
    Empty(String),
}

/// Kind names as written, each known: `*` means [`Kind::ALL`] (the names after it are not
/// read), duplicates count once.
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

/// One rule: kinds permitted on tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The kind names as written (`read`, …, or `*`), for writing the rule back.
    pub kind_names: Vec<String>,
    /// The kinds they mean.
    pub kinds: Vec<Kind>,
    /// The table patterns.
    pub tables: Vec<Pattern>,
}

impl Rule {
    /// Checks a rule as configured: every kind known, every pattern valid (kinds first), and
    /// at least one of each.
    pub fn new(kind_names: Vec<String>, tables: Vec<String>) -> Result<Rule, RuleError> {
        let kinds = parse_kinds(&kind_names)?;
        let tables = tables
            .iter()
            .map(|t| Pattern::parse(t))
            .collect::<Result<Vec<_>, _>>()?;
        if kinds.is_empty() || tables.is_empty() {
            let tables: Vec<String> = tables.iter().map(ToString::to_string).collect();
            return Err(RuleError::Empty(
                [kind_names.join(","), tables.join(",")].join(":"),
            ));
        }
        Ok(Rule {
            kind_names,
            kinds,
            tables,
        })
    }

    /// Reads `KIND[,KIND]:PATTERN[,PATTERN]`: split at the first `:`, then at commas, each
    /// piece trimmed and empty pieces dropped.
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

    /// Whether it permits statements of `kind` (on the tables it covers).
    pub fn permits(&self, kind: Kind) -> bool {
        self.kinds.contains(&kind)
    }
}

#[cfg(test)]
mod tests;
