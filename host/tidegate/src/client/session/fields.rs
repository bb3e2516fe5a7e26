//! The row and write hooks on the wire. Values written to declared columns — INSERT/UPDATE
//! string literals in a Query or Parse, and parameters bound to them — go through the
//! chain's `on-write-values` before PostgreSQL sees them; result columns that PostgreSQL
//! reports as declared columns (by table OID and attribute number in RowDescription) go
//! through `on-rows` before the client sees them. Both fail closed.

use super::{ClientRead, DirectWrite};
use super::{Result, Session};
use crate::policy::columns::{DbColumns, TableColumns};
use crate::wire::kind::{ClientMsg, ServerMsg};
use crate::wire::proto::{self, Reader};
use bytes::{BufMut, BytesMut};
use std::sync::Arc;
use tidegate_plugins::{
    BoundValue, Chain, Column, Denial, Principal, Statement, StatementKind, Value,
};
use tidegate_sql::{quote_literal, write_targets, TargetColumn, WriteTargets, Written};

/// Rows decoded and sent to `on-rows` in one call at most.
const ROW_BATCH: usize = 256;

/// Which fields of a result are declared columns.
#[derive(Debug)]
pub(super) struct RowPlan {
    indices: Vec<usize>,
    columns: Vec<Column>,
}

/// Parameters of a prepared statement bound for declared columns: (index, column).
pub(super) type ParamWrites = Arc<Vec<(usize, Column)>>;

fn refusal(reason: String, sqlstate: &str, hint: &str) -> Denial {
    Denial {
        reason,
        sqlstate: sqlstate.into(),
        hint: Some(hint.into()),
        plugin: "tidegate".into(),
    }
}

/// The refusal of a write that may store protected column `col` where no hook sees it.
fn blind_write(col: &str) -> Denial {
    refusal(
        format!(
            "statement refused: it may write protected column {col} in a way the broker cannot encrypt"
        ),
        "0A000",
        "write protected columns with one INSERT … VALUES or UPDATE … SET per statement, as literals or parameters",
    )
}

/// The first declared column (`schema.table.column`) of a table `stmt` names, else the
/// first declared column.
fn protected_column(declared: &[String], stmt: &Statement) -> String {
    declared
        .iter()
        .find(|c| {
            let table = c.rsplit('.').nth(1);
            stmt.tables.iter().any(|t| Some(t.name.as_str()) == table)
        })
        .or(declared.first())
        .cloned()
        .unwrap_or_else(|| "(a protected column)".to_owned())
}

/// What the data hooks make of a statement about to be sent.
pub(super) enum DataPlan {
    /// It touches no table with a declared column and is no DDL: nothing was done for it, and
    /// nothing would be for another statement of its shape.
    Untouched,
    /// The data hooks took part: send this text instead, or the original (`None`).
    Send(Option<String>),
}

impl<R, W> Session<R, W>
where
    R: ClientRead,
    W: DirectWrite,
{
    /// Whether `stmt` (sent as `sql`) touches a table with a column a row or write hook of
    /// this session's chain declared. Allocates nothing unless it is a COPY.
    fn touches_declared(&self, chain: &Chain, stmt: &Statement, sql: &str) -> bool {
        let db = &self.login.database;
        let mut words = sql.split_whitespace();
        let copy = words.next().is_some_and(|w| w.eq_ignore_ascii_case("copy"));
        // COPY's table is not among the classifier's tables: `COPY [schema.]table[(cols)] …`.
        let copy_table = words
            .next()
            .filter(|_| copy)
            .and_then(|w| w.split('(').next())
            .and_then(|w| w.rsplit('.').next())
            .map(|w| w.trim_matches('"').to_lowercase());
        copy_table
            .iter()
            .map(String::as_str)
            .chain(stmt.tables.iter().map(|t| t.name.as_str()))
            .any(|t| chain.declares_table(&self.user, db, t))
    }

    /// Before a Query or Parse of `stmt` (whose text to send is `sql`): finds the declared
    /// columns of the tables it touches, runs the write hooks on literals bound for them and
    /// notes which parameters are.
    pub(super) async fn prepare_data_hooks(
        &mut self,
        stmt: &Statement,
        sql: &str,
    ) -> std::result::Result<DataPlan, Denial> {
        self.parse_writes = None;
        let Some(chain) = self.topo.plugins.clone() else {
            return Ok(DataPlan::Untouched);
        };
        let db = &self.login.database;
        // A statement whose reach TideGate cannot establish, or a write through a function,
        // may store a protected column where no hook sees the value: refused, not passed.
        let class = self
            .catalog
            .classes
            .get(tidegate_sql::Fingerprint(stmt.fingerprint));
        let unknown = class
            .as_ref()
            .is_none_or(|c| c.kind == tidegate_sql::Kind::Unknown);
        if unknown
            || (stmt.kind == StatementKind::Write && super::policy::touches_every_table(stmt))
        {
            if let Some(col) = chain.data_columns(&self.user, db).first() {
                return Err(blind_write(col));
            }
        }
        if stmt.kind == StatementKind::Ddl {
            // The catalog is about to change: look the columns up again after it has.
            self.sh.columns.invalidate(&self.login.database);
            self.data_cols = None;
            return Ok(DataPlan::Send(None));
        }
        if !self.touches_declared(&chain, stmt, sql) {
            if stmt.kind != StatementKind::Write {
                return Ok(DataPlan::Untouched);
            }
            return self.write_elsewhere(&chain, stmt).await;
        }
        let db = self.login.database.clone();
        let declared = chain.data_columns(&self.user, &db);
        let config = self.topo.config.clone();
        let Some(cols) = self.sh.columns.get(&config, &db, &declared).await else {
            if stmt.kind == StatementKind::Write {
                return Err(columns_unknown());
            }
            return Ok(DataPlan::Send(None));
        };
        self.data_cols = Some(cols.clone());
        if stmt.kind != StatementKind::Write {
            return Ok(DataPlan::Send(None));
        }
        let Some(w) = write_targets(sql) else {
            // COPY FROM, MERGE, a data-modifying CTE…: values the broker cannot see to encrypt.
            let first = sql.split_whitespace().next().unwrap_or("");
            if first.eq_ignore_ascii_case("copy")
                || first.eq_ignore_ascii_case("merge")
                || tidegate_sql::stores_values(sql)
            {
                return Err(blind_write(&protected_column(&declared, stmt)));
            }
            return Ok(DataPlan::Send(None));
        };
        let Some(table) = cols.table(w.schema.as_deref(), &w.table) else {
            return Ok(DataPlan::Send(None));
        };
        let targets = bound_targets(&cols, table, &w)?;
        if !targets.params.is_empty() {
            self.parse_writes = Some(Arc::new(targets.params));
        }
        if targets.values.is_empty() {
            return Ok(DataPlan::Send(None));
        }
        let out = chain.on_write_values(stmt, targets.values).await?;
        Ok(DataPlan::Send(Some(replace_literals(
            sql,
            targets.slots,
            out,
        ))))
    }

    /// A write that touches no declared table by name: it passes unless it writes through a
    /// view over a protected table, which stores values no hook sees.
    async fn write_elsewhere(
        &mut self,
        chain: &Chain,
        stmt: &Statement,
    ) -> std::result::Result<DataPlan, Denial> {
        let declared = chain.data_columns(&self.user, &self.login.database);
        let config = self.topo.config.clone();
        let db = self.login.database.clone();
        match self.sh.columns.get(&config, &db, &declared).await {
            Some(c) if !stmt.tables.iter().any(|t| c.reaches_declared(&t.name)) => {
                Ok(DataPlan::Untouched)
            }
            Some(_) => Err(blind_write(&protected_column(&declared, stmt))),
            None => Err(columns_unknown()),
        }
    }

    /// A Bind of a statement with parameters bound for declared columns: those values go
    /// through the write hooks and the Bind is rebuilt with the results.
    pub(super) async fn bind_data_hooks(
        &mut self,
        msg: BytesMut,
    ) -> std::result::Result<BytesMut, Denial> {
        let body = &msg[proto::HEADER_LEN..];
        let mut r = Reader::new(body);
        let (Some(portal), Some(name)) = (r.cstr(), r.cstr()) else {
            return Ok(msg);
        };
        let stmt = if name.is_empty() {
            self.unnamed.as_ref()
        } else {
            self.stmts.get(name)
        };
        let Some((writes, sql)) = stmt.and_then(|s| {
            let sql = s.body.split(|b| *b == 0).next()?.to_vec();
            Some((s.writes.clone()?, sql))
        }) else {
            return Ok(msg);
        };
        let head = portal.len() + name.len() + 2;
        let Some(mut bind) = BindParams::decode(&body[head..]) else {
            return Ok(msg); // Malformed: the server reports it.
        };
        let Some(chain) = self.topo.plugins.clone() else {
            return Ok(msg);
        };
        let principal = self.principal();
        let stmt = self.describe(principal, &sql, true);
        let n = bind.values.len();
        let values: Vec<BoundValue> = writes
            .iter()
            .filter(|(i, _)| *i < n)
            .map(|(i, c)| BoundValue {
                column: c.clone(),
                value: bind.values[*i].clone(),
            })
            .collect();
        let out = chain.on_write_values(&stmt, values).await?;
        let targets = writes.iter().filter(|(i, _)| *i < n);
        for ((i, _), v) in targets.zip(out) {
            bind.values[*i] = v;
        }
        let mut m = BytesMut::with_capacity(msg.len() + 256);
        m.put_u8(ClientMsg::Bind.byte());
        m.put_i32(0);
        m.put_slice(&body[..head]);
        bind.encode(&mut m);
        let len = (m.len() - 1) as i32;
        m[1..5].copy_from_slice(&len.to_be_bytes());
        Ok(m)
    }

    /// The plan for a RowDescription: which fields are declared columns.
    pub(super) fn row_plan_of(&self, msg: &[u8]) -> Option<Arc<RowPlan>> {
        let cols = self.data_cols.as_ref()?;
        let mut r = Reader::new(&msg[proto::HEADER_LEN..]);
        let n = r.i16()?;
        let mut plan = RowPlan {
            indices: Vec::new(),
            columns: Vec::new(),
        };
        for i in 0..n.max(0) as usize {
            r.cstr()?;
            let oid = r.i32()? as u32;
            let attnum = r.i16()?;
            r.bytes(4 + 2 + 4 + 2)?;
            if oid != 0 {
                if let Some(c) = cols.result_column(oid, attnum) {
                    plan.indices.push(i);
                    plan.columns.push(c);
                }
            }
        }
        (!plan.indices.is_empty()).then(|| Arc::new(plan))
    }

    /// Runs the row hooks over the complete DataRows at the head of `rbuf` (a batch of
    /// them), appending the transformed rows to the client's buffer. Returns the bytes used.
    pub(super) async fn transform_rows(&mut self, rbuf: &[u8], plan: &RowPlan) -> Result<usize> {
        let mut used = 0;
        let (mut values, mut msgs): (Vec<Vec<Value>>, Vec<&[u8]>) = (Vec::new(), Vec::new());
        while msgs.len() < ROW_BATCH {
            let Ok(Some(h)) = proto::header(&rbuf[used..], usize::MAX) else {
                break;
            };
            if h.server() != ServerMsg::DataRow || rbuf.len() - used < h.total {
                break;
            }
            let msg = &rbuf[used..used + h.total];
            let Some(fields) = data_row_fields(msg) else {
                break;
            };
            values.push(
                plan.indices
                    .iter()
                    .map(|i| fields.get(*i).cloned().flatten().map(<[u8]>::to_vec))
                    .collect(),
            );
            msgs.push(msg);
            used += h.total;
        }
        if msgs.is_empty() {
            return Ok(0);
        }
        let Some(chain) = self.topo.plugins.clone() else {
            return Ok(0);
        };
        let stmt = self.row_statement();
        match chain.on_rows(&stmt, &plan.columns, values).await {
            Ok(out) => {
                for (msg, new) in msgs.iter().zip(out) {
                    rewrite_data_row(&mut self.out, msg, &plan.indices, &new);
                }
            }
            Err(d) => {
                tracing::warn!(user = %self.user, plugin = %d.plugin, sqlstate = %d.sqlstate, "result refused by a row hook");
                proto::error_with_hint(&mut self.out, &d.sqlstate, &d.reason, d.hint.as_deref());
                // The rest of this request's replies, up to ReadyForQuery, are not shown.
                self.rows_refused = true;
            }
        }
        self.client_touched = true;
        Ok(used)
    }

    fn row_statement(&mut self) -> Statement {
        let principal: Arc<Principal> = self.principal();
        Statement {
            principal,
            sql: String::new(),
            fingerprint: 0,
            kind: StatementKind::Read,
            read_only: true,
            tables: Vec::new(),
            prepared: false,
        }
    }
}

/// The fields of a DataRow (`None` = NULL).
fn data_row_fields(msg: &[u8]) -> Option<Vec<Option<&[u8]>>> {
    let mut r = Reader::new(&msg[proto::HEADER_LEN..]);
    let n = r.i16()?;
    let mut out = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n.max(0) {
        let len = r.i32()?;
        out.push(if len < 0 {
            None
        } else {
            Some(r.bytes(len as usize)?)
        });
    }
    Some(out)
}

/// Appends `msg` (a DataRow) with the fields at `indices` replaced by `values`.
fn rewrite_data_row(out: &mut BytesMut, msg: &[u8], indices: &[usize], values: &[Value]) {
    let Some(fields) = data_row_fields(msg) else {
        out.extend_from_slice(msg);
        return;
    };
    let start = out.len();
    out.put_u8(ServerMsg::DataRow.byte());
    out.put_i32(0);
    out.put_i16(fields.len() as i16);
    for (i, f) in fields.iter().enumerate() {
        let v: Option<&[u8]> = match indices.iter().position(|x| *x == i) {
            Some(k) => values.get(k).and_then(|v| v.as_deref()),
            None => *f,
        };
        match v {
            Some(b) => {
                out.put_i32(b.len() as i32);
                out.put_slice(b);
            }
            None => out.put_i32(-1),
        }
    }
    let len = (out.len() - start - 1) as i32;
    out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

/// A Bind's parameter section (after the portal and statement names).
struct BindParams<'a> {
    formats: &'a [u8],
    values: Vec<Value>,
    results: &'a [u8],
}

impl<'a> BindParams<'a> {
    fn decode(mut b: &'a [u8]) -> Option<BindParams<'a>> {
        let take = |b: &mut &'a [u8], n: usize| -> Option<&'a [u8]> {
            if b.len() < n {
                return None;
            }
            let (h, t) = b.split_at(n);
            *b = t;
            Some(h)
        };
        let nf = i16::from_be_bytes(take(&mut b, 2)?.try_into().ok()?).max(0) as usize;
        let formats = take(&mut b, nf * 2)?;
        let np = i16::from_be_bytes(take(&mut b, 2)?.try_into().ok()?).max(0) as usize;
        let mut values = Vec::with_capacity(np);
        for _ in 0..np {
            let len = i32::from_be_bytes(take(&mut b, 4)?.try_into().ok()?);
            values.push(if len < 0 {
                None
            } else {
                Some(take(&mut b, len as usize)?.to_vec())
            });
        }
        Some(BindParams {
            formats,
            values,
            results: b,
        })
    }

    fn encode(&self, out: &mut BytesMut) {
        out.put_i16((self.formats.len() / 2) as i16);
        out.put_slice(self.formats);
        out.put_i16(self.values.len() as i16);
        for v in &self.values {
            match v {
                Some(b) => {
                    out.put_i32(b.len() as i32);
                    out.put_slice(b);
                }
                None => out.put_i32(-1),
            }
        }
        out.put_slice(self.results);
    }
}

/// The values a write binds for declared columns: literals (their text positions and
/// values, for the write hooks) and parameters (by number, for the Bind).
struct BoundTargets {
    slots: Vec<(usize, usize)>,
    values: Vec<BoundValue>,
    params: Vec<(usize, Column)>,
}

/// What the write `w` into `table` binds for declared columns; refused when a value bound for
/// one cannot be attributed (an opaque form) or is an expression.
fn bound_targets(
    cols: &DbColumns,
    table: &TableColumns,
    w: &WriteTargets,
) -> std::result::Result<BoundTargets, Denial> {
    if w.opaque
        && table
            .columns
            .iter()
            .any(|(_, n, _)| cols.is_declared(&table.schema, &table.table, n))
    {
        return Err(refusal(
            format!(
                "statement refused: {}.{} has protected columns and this statement's values cannot be attributed to them",
                table.schema, table.table
            ),
            "0A000",
            "write protected columns with INSERT … VALUES or UPDATE … SET, as literals or parameters",
        ));
    }
    let mut bound = BoundTargets {
        slots: Vec::new(),
        values: Vec::new(),
        params: Vec::new(),
    };
    for t in &w.targets {
        let (name, position) = match &t.column {
            TargetColumn::Named(n) => (Some(n.as_str()), 0),
            TargetColumn::Position(p) => (None, *p),
        };
        let Some(col) = cols.target(table, name, position) else {
            continue;
        };
        match &t.value {
            Written::Literal { start, end, value } => {
                bound.slots.push((*start, *end));
                bound.values.push(BoundValue {
                    column: col,
                    value: Some(value.clone().into_bytes()),
                });
            }
            Written::Param(n) => bound.params.push((*n, col)),
            Written::Nothing => {}
            Written::Other => {
                return Err(refusal(
                    format!(
                        "statement refused: the value written to protected column {}.{} is an expression",
                        table.table, col.name
                    ),
                    "0A000",
                    "write protected columns as string literals or parameters",
                ))
            }
        }
    }
    Ok(bound)
}

/// `sql` with the literals at `slots` replaced by the write hooks' values.
fn replace_literals(sql: &str, slots: Vec<(usize, usize)>, values: Vec<Value>) -> String {
    let mut text = sql.to_owned();
    for ((start, end), v) in slots.into_iter().zip(values).rev() {
        let lit = match v {
            Some(b) => quote_literal(&String::from_utf8_lossy(&b)),
            None => "NULL".to_owned(),
        };
        text.replace_range(start..end, &lit);
    }
    text
}

/// The refusal of a write when the declared columns could not be looked up.
fn columns_unknown() -> Denial {
    refusal(
        "statement refused: the columns the encryption policy covers could not be looked up".into(),
        "58000",
        "the broker could not read the catalog; try again",
    )
}
