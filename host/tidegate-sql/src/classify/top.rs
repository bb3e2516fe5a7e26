//! The top level of one statement: its kind, whether its type can be read-only, transaction
//! control, and the relations its own clauses name (those nested in queries and expressions
//! are found by the classifier's walker).

use super::{ident_text, table_name, Kind, TableName, TxControl};
use sqlparser::ast::{
    CascadeOption, CopySource, CopyTarget, ObjectName, ObjectType, Reset, ResetStatement,
    Statement, TransactionAccessMode, TransactionMode, Truncate,
};

/// What a statement's top level says: its kind, whether its type can be read-only (and why
/// not), transaction control, and the relations its own clauses name (those nested in
/// queries and expressions are found by the [`Walker`]).
pub(super) struct Top {
    pub(super) kind: Kind,
    pub(super) read_only: bool,
    pub(super) why: Option<&'static str>,
    pub(super) tx: Option<TxControl>,
    pub(super) tables: Vec<TableName>,
    pub(super) every_table: bool,
    pub(super) refused: Option<&'static str>,
}

impl Top {
    fn new(kind: Kind, why: Option<&'static str>) -> Top {
        Top {
            kind,
            read_only: why.is_none(),
            why,
            tx: None,
            tables: Vec::new(),
            every_table: false,
            refused: None,
        }
    }

    fn tx(kind: Kind, tx: TxControl) -> Top {
        Top {
            tx: Some(tx),
            ..Top::new(kind, Some("transaction control"))
        }
    }

    /// Relations that could not be established: any table.
    fn unknown(why: &'static str) -> Top {
        Top {
            every_table: true,
            ..Top::new(Kind::Unknown, Some(why))
        }
    }

    fn on(mut self, names: impl IntoIterator<Item = TableName>) -> Top {
        self.tables.extend(names);
        self
    }

    fn every_table(mut self) -> Top {
        self.every_table = true;
        self
    }
}

/// The top-level verdict of one statement.
pub(super) fn top_level(stmt: &Statement) -> Top {
    use Statement as S;
    match stmt {
        S::Query(_) => Top::new(Kind::Read, None),
        S::Explain {
            analyze, statement, ..
        } => explain(*analyze, statement),
        S::ShowVariable { .. }
        | S::ShowVariables { .. }
        | S::ShowTables { .. }
        | S::ShowColumns { .. } => Top::new(Kind::Read, None),
        S::Copy {
            source, to, target, ..
        } => copy(source, *to, target),
        S::Insert(_) | S::Update(_) | S::Delete(_) | S::Merge(_) => {
            Top::new(Kind::Write, Some("writes"))
        }
        S::Truncate(t) => truncate(t),
        S::StartTransaction { modes, .. } => begin(modes),
        S::Commit { .. } => Top::tx(Kind::Transaction, TxControl::Commit),
        S::Rollback { .. } => Top::tx(Kind::Transaction, TxControl::Rollback),
        S::Savepoint { .. } | S::ReleaseSavepoint { .. } => {
            Top::new(Kind::Transaction, Some("transaction control"))
        }
        S::Set(set) => set_statement(set),
        S::Prepare { statement, .. } => prepare(statement),
        S::Execute { .. } => Top::unknown("EXECUTE of an SQL-level prepared statement"),
        S::Call(_) => Top::unknown("CALL"),
        S::Load { .. } => Top::unknown("LOAD"),
        S::Declare { .. } => Top::new(Kind::Session, Some("session state")),
        S::Reset(r) => reset(r),
        S::Discard { .. }
        | S::Deallocate { .. }
        | S::LISTEN { .. }
        | S::UNLISTEN { .. }
        | S::Fetch { .. }
        | S::Close { .. }
        | S::Use(_) => Top::new(Kind::Session, Some("session state")),
        S::NOTIFY { .. } => Top::new(Kind::Write, Some("NOTIFY")),
        S::Lock(_) | S::LockTables { .. } => Top::new(Kind::Write, Some("LOCK")),
        S::Grant { .. }
        | S::Revoke { .. }
        | S::GrantRole { .. }
        | S::RevokeRole { .. }
        | S::AlterDefaultPrivileges { .. } => Top::new(Kind::Ddl, Some("privileges")).every_table(),
        S::Vacuum(v) => match &v.table_name {
            Some(t) => Top::new(Kind::Utility, Some("maintenance")).on([table_name(t)]),
            None => Top::new(Kind::Utility, Some("maintenance")).every_table(),
        },
        S::Analyze(a) => {
            let top = Top::new(Kind::Utility, Some("maintenance"));
            if a.table_name.is_some() {
                top
            } else {
                top.every_table()
            }
        }
        S::RefreshMaterializedView { .. } => Top::new(Kind::Utility, Some("maintenance")),
        S::Drop {
            object_type, names, ..
        } => drop_objects(object_type, names),
        S::CreateTable(_)
        | S::CreateView(_)
        | S::CreateIndex(_)
        | S::AlterTable(_)
        | S::AlterIndex { .. }
        | S::AlterView { .. } => Top::new(Kind::Ddl, Some("DDL")),
        other => other_statement(other),
    }
}

/// `EXPLAIN`: plain, it only plans the statement; with `ANALYZE` it runs it, and is what it
/// explains.
fn explain(analyze: bool, statement: &Statement) -> Top {
    if analyze {
        let inner = top_level(statement);
        if inner.kind != Kind::Read || !inner.read_only {
            return Top {
                why: inner.why.or(Some("EXPLAIN ANALYZE of a write")),
                read_only: false,
                ..inner
            };
        }
    }
    Top::new(Kind::Read, None)
}

/// `COPY`: a read (`TO`) or a write (`FROM`) of its table, or unknown with a program or a
/// server file.
fn copy(source: &CopySource, to: bool, target: &CopyTarget) -> Top {
    if matches!(target, CopyTarget::Program { .. } | CopyTarget::File { .. }) {
        // Runs a program or touches a server file: not a statement about tables.
        return Top::unknown("COPY with a program or a server file");
    }
    let table = match source {
        CopySource::Table { table_name: t, .. } => Some(table_name(t)),
        CopySource::Query(_) => None,
    };
    let top = if to {
        Top::new(Kind::Read, None)
    } else {
        Top::new(Kind::Write, Some("COPY FROM"))
    };
    top.on(table)
}

/// `TRUNCATE`: a write of its tables, and of every table with `CASCADE`.
fn truncate(t: &Truncate) -> Top {
    let top = Top::new(Kind::Write, Some("TRUNCATE"))
        .on(t.table_names.iter().map(|t| table_name(&t.name)));
    // CASCADE empties every table that references these, found only at run time.
    if t.cascade
        .as_ref()
        .is_some_and(|c| matches!(c, CascadeOption::Cascade))
    {
        top.every_table()
    } else {
        top
    }
}

/// `BEGIN` / `START TRANSACTION`, declared `READ ONLY` or not.
fn begin(modes: &[TransactionMode]) -> Top {
    let read_only = modes.iter().any(|m| {
        matches!(
            m,
            TransactionMode::AccessMode(TransactionAccessMode::ReadOnly)
        )
    });
    Top::tx(Kind::Transaction, TxControl::Begin { read_only })
}

/// `PREPARE` is judged as the statement it prepares: `EXECUTE` may run it later.
fn prepare(statement: &Statement) -> Top {
    let inner = top_level(statement);
    Top {
        read_only: false,
        why: inner.why.or(Some("session state")),
        kind: match inner.kind {
            Kind::Read => Kind::Session,
            k => k,
        },
        ..inner
    }
}

/// `RESET`: session state, or a change of role (`RESET ROLE`, `RESET SESSION AUTHORIZATION`).
fn reset(r: &ResetStatement) -> Top {
    let role = match &r.reset {
        Reset::SessionAuthorization => true,
        Reset::ConfigurationParameter(name) => name.0.last().is_some_and(|p| {
            matches!(
                ident_text(&p.to_string()).as_str(),
                "role" | "session_authorization"
            )
        }),
        Reset::ALL => false,
    };
    if role {
        Top::new(Kind::Ddl, Some("role change")).every_table()
    } else {
        Top::new(Kind::Session, Some("session state"))
    }
}

/// `DROP`: DDL on the relations it names, or on any table.
fn drop_objects(object_type: &ObjectType, names: &[ObjectName]) -> Top {
    let top = Top::new(Kind::Ddl, Some("DDL"));
    match object_type {
        ObjectType::Table
        | ObjectType::View
        | ObjectType::MaterializedView
        | ObjectType::Sequence => top.on(names.iter().map(table_name)),
        // An index's, a schema's or any other object's tables are not in the text.
        _ => top.every_table(),
    }
}

/// A statement no other branch names: DDL on any table when its variant says it creates,
/// alters, drops, comments on or renames something, else unknown.
fn other_statement(other: &Statement) -> Top {
    let name = format!("{other:?}");
    if name.starts_with("Create")
        || name.starts_with("Alter")
        || name.starts_with("Drop")
        || name.starts_with("Comment")
        || name.starts_with("RenameTable")
    {
        // Functions, schemas, roles, extensions, triggers, rules…: their reach is not
        // a table list.
        Top::new(Kind::Ddl, Some("DDL")).every_table()
    } else {
        Top::unknown("not a statement TideGate knows")
    }
}

/// `SET`: session state, transaction control, or a change of role (a privilege change).
fn set_statement(set: &sqlparser::ast::Set) -> Top {
    use sqlparser::ast::Set;
    match set {
        Set::SetRole { .. } | Set::SetSessionAuthorization(_) => {
            Top::new(Kind::Ddl, Some("role change")).every_table()
        }
        _ => {
            let text = set.to_string().to_ascii_uppercase();
            if text.starts_with("SET TRANSACTION") && text.contains("READ ONLY") {
                Top::tx(Kind::Transaction, TxControl::SetReadOnly)
            } else if scs_off(set) {
                Top {
                    refused: Some(
                        "standard_conforming_strings = off is not supported through TideGate",
                    ),
                    ..Top::unknown("standard_conforming_strings")
                }
            } else if settings_changed(set)
                .iter()
                .any(|name| matches!(name.as_str(), "role" | "session_authorization"))
            {
                Top::new(Kind::Ddl, Some("role change")).every_table()
            } else {
                Top::new(Kind::Session, Some("session state"))
            }
        }
    }
}

/// Whether a `SET` turns `standard_conforming_strings` anything but on.
fn scs_off(set: &sqlparser::ast::Set) -> bool {
    use sqlparser::ast::Set;
    let Set::SingleAssignment {
        variable, values, ..
    } = set
    else {
        return settings_changed(set)
            .iter()
            .any(|n| n == "standard_conforming_strings");
    };
    let name = variable.0.last().map(|p| ident_text(&p.to_string()));
    if name.as_deref() != Some("standard_conforming_strings") {
        return false;
    }
    let value = values
        .iter()
        .map(|v| v.to_string().trim_matches('\'').to_ascii_lowercase())
        .collect::<Vec<_>>();
    !matches!(
        value
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice(),
        ["on" | "true" | "yes" | "1" | "default"]
    )
}

/// The names of the settings a `SET` assigns, lower-cased.
fn settings_changed(set: &sqlparser::ast::Set) -> Vec<String> {
    use sqlparser::ast::Set;
    let last = |n: &ObjectName| {
        n.0.last()
            .map(|p| ident_text(&p.to_string()))
            .unwrap_or_default()
    };
    match set {
        Set::SingleAssignment { variable, .. } => vec![last(variable)],
        Set::ParenthesizedAssignments { variables, .. } => variables.iter().map(last).collect(),
        Set::MultipleAssignments { assignments } => {
            assignments.iter().map(|a| last(&a.name)).collect()
        }
        _ => Vec::new(),
    }
}
