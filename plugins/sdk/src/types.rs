//! Conveniences on the generated types.

use crate::{Column, CryptoError, Denial, Hooks, PluginInfo, StatementKind, TableRef};
use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

impl TableRef {
    /// A table reference from an optional schema and a name.
    pub fn new(schema: Option<&str>, name: &str) -> Self {
        TableRef {
            schema: schema.map(str::to_owned),
            name: name.to_owned(),
        }
    }

    /// Reads `"schema.table"` or `"table"` (split at the first dot; no quoting).
    pub fn parse(qualified: &str) -> Self {
        match qualified.split_once('.') {
            Some((schema, name)) => TableRef::new(Some(schema), name),
            None => TableRef::new(None, qualified),
        }
    }

    /// `"schema.table"`, or `"table"` when the statement did not qualify it.
    pub fn qualified(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for TableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

impl Column {
    /// A column of `table` (if known) named `name`, of PostgreSQL type `type_name`.
    pub fn new(table: Option<TableRef>, name: &str, type_name: &str) -> Self {
        Column {
            table,
            name: name.to_owned(),
            type_name: type_name.to_owned(),
        }
    }

    /// Whether this column is the one `pattern` names, in [`PluginInfo::columns`]' format:
    /// `"schema.table.column"` or `"table.column"` (any schema).
    ///
    /// A column without a table (an expression) matches nothing. A column whose table has no
    /// schema (the statement did not qualify it and the host could not tell) matches a
    /// pattern with any schema: for data protection, a false match is safer than a miss.
    /// Names compare exactly, as PostgreSQL stores them (lower case unless quoted).
    pub fn matches(&self, pattern: &str) -> bool {
        let Some(table) = &self.table else {
            return false;
        };
        let mut parts = pattern.rsplitn(3, '.');
        let (Some(column), Some(name)) = (parts.next(), parts.next()) else {
            return false;
        };
        let schema = parts.next();
        column == self.name
            && name == table.name
            && match (schema, &table.schema) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            }
    }
}

impl Denial {
    /// A denial with SQLSTATE `sqlstate` (five characters, e.g. `"42501"`) and the message
    /// the client sees.
    pub fn new(sqlstate: &str, reason: impl Into<String>) -> Self {
        Denial {
            reason: reason.into(),
            sqlstate: sqlstate.to_owned(),
            hint: None,
        }
    }

    /// The same denial with a hint for the client.
    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl CryptoError {
    /// A message for logs and denials: `unknown key "pii"` or `invalid input: …`. (The
    /// generated `Display` prints the variant's debug form.)
    pub fn message(&self) -> String {
        match self {
            CryptoError::UnknownKey(key) => format!("unknown key {key:?}"),
            CryptoError::Invalid(why) => format!("invalid input: {why}"),
        }
    }
}

impl StatementKind {
    /// Every kind, weakest first.
    pub const ALL: [StatementKind; 5] = [
        StatementKind::Read,
        StatementKind::Write,
        StatementKind::Ddl,
        StatementKind::Transaction,
        StatementKind::Utility,
    ];

    /// The WIT name: `"read"`, `"write"`, `"ddl"`, `"transaction"` or `"utility"`.
    pub fn as_str(self) -> &'static str {
        match self {
            StatementKind::Read => "read",
            StatementKind::Write => "write",
            StatementKind::Ddl => "ddl",
            StatementKind::Transaction => "transaction",
            StatementKind::Utility => "utility",
        }
    }

    /// The kind a WIT name (see [`StatementKind::as_str`]) names, ignoring ASCII case.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for StatementKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PluginInfo {
    /// Info for a plugin implementing `hooks`: not deterministic, no columns. Chain
    /// [`PluginInfo::deterministic`] and [`PluginInfo::columns`] to change that.
    pub fn new(name: impl Into<String>, version: impl Into<String>, hooks: Hooks) -> Self {
        PluginInfo {
            name: name.into(),
            version: version.into(),
            hooks,
            deterministic: false,
            columns: Vec::new(),
        }
    }

    /// Declares whether `on_statement` depends only on the principal and the statement's
    /// shape (not its literals), so TideGate may cache its allow/deny decisions — and whether
    /// `on_audit` depends only on the event's principal, fingerprint, kind, tables, decision,
    /// decided-by and SQLSTATE (not rows, duration or time), so TideGate may reuse its answer
    /// for alike events (with their own rows, duration and time).
    #[must_use]
    pub fn deterministic(mut self, deterministic: bool) -> Self {
        self.deterministic = deterministic;
        self
    }

    /// Declares the columns (`"table.column"` or `"schema.table.column"`) `on_rows` and
    /// `on_write_values` care about; results and writes touching none of them skip the plugin.
    #[must_use]
    pub fn columns<I, S>(mut self, columns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.columns = columns.into_iter().map(Into::into).collect();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn table_refs_parse_and_print() {
        assert_eq!(
            TableRef::parse("public.t"),
            TableRef::new(Some("public"), "t")
        );
        assert_eq!(TableRef::parse("t"), TableRef::new(None, "t"));
        assert_eq!(TableRef::parse("public.t").to_string(), "public.t");
        assert_eq!(TableRef::new(None, "t").qualified(), "t");
    }

    #[test]
    fn columns_match_patterns() {
        let qualified = Column::new(Some(TableRef::parse("public.patients")), "ssn", "text");
        let bare = Column::new(Some(TableRef::parse("patients")), "ssn", "text");
        let expr = Column::new(None, "ssn", "text");
        let cases = [
            (&qualified, "public.patients.ssn", true),
            (&qualified, "patients.ssn", true),
            (&qualified, "other.patients.ssn", false),
            (&qualified, "public.patients.name", false),
            (&qualified, "public.doctors.ssn", false),
            (&qualified, "ssn", false),
            (&bare, "public.patients.ssn", true),
            (&bare, "patients.ssn", true),
            (&bare, "patients.name", false),
            (&expr, "patients.ssn", false),
        ];
        for (column, pattern, want) in cases {
            assert_eq!(column.matches(pattern), want, "{column:?} ~ {pattern}");
        }
    }

    #[test]
    fn crypto_errors_read_well() {
        assert_eq!(
            CryptoError::UnknownKey("pii".into()).message(),
            "unknown key \"pii\""
        );
        assert_eq!(
            CryptoError::Invalid("tag mismatch".into()).message(),
            "invalid input: tag mismatch"
        );
    }

    #[test]
    fn kinds_round_trip() {
        for kind in StatementKind::ALL {
            assert_eq!(StatementKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(StatementKind::parse("WRITE"), Some(StatementKind::Write));
        assert_eq!(StatementKind::parse("select"), None);
    }

    #[test]
    fn denials_and_info_build() {
        let d = Denial::new("42501", "no").with_hint("ask");
        assert_eq!((d.sqlstate.as_str(), d.reason.as_str()), ("42501", "no"));
        assert_eq!(d.hint.as_deref(), Some("ask"));
        let info = PluginInfo::new("p", "1", Hooks::ROWS)
            .deterministic(true)
            .columns(["t.c"]);
        assert!(info.deterministic);
        assert_eq!(info.columns, vec!["t.c".to_owned()]);
    }
}
