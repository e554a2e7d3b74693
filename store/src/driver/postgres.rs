//! PostgreSQL through the synchronous `postgres` client. Statements are
//! prepared once per connection and kept; writers run at READ COMMITTED
//! (the default), readers in a read-only REPEATABLE READ snapshot.
//!
//! The connection is plain TCP or a Unix socket: TLS is not built in (a URL
//! asking for `sslmode=require` is refused by the client).

use std::collections::HashMap;
use std::time::Duration;

use postgres::types::{ToSql, Type};
use postgres::{IsolationLevel, NoTls, Statement};

use super::{Cell, Dialect, Mode, Param, Row, Tx};
use crate::error::{DatabaseError, Fail};

/// How long connecting may take, unless the URL says (`connect_timeout=`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct PgConnection {
    client: postgres::Client,
    statements: HashMap<String, Statement>,
}

impl PgConnection {
    /// Connects; the session shows as `vmbench` in `pg_stat_activity`
    /// unless the URL names it otherwise.
    pub(crate) fn open(url: &str) -> Result<PgConnection, DatabaseError> {
        let mut config: postgres::Config = url.parse()?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("vmbench");
        }
        let client = config.connect(NoTls)?;
        Ok(PgConnection {
            client,
            statements: HashMap::new(),
        })
    }

    pub(crate) fn transaction<T>(
        &mut self,
        mode: Mode,
        body: &mut dyn FnMut(&mut dyn Tx) -> Result<T, Fail>,
    ) -> Result<T, Fail> {
        let mut tx = match mode {
            Mode::Read => self
                .client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?,
            Mode::Write => self.client.transaction()?,
        };
        let out = body(&mut PgTx {
            tx: &mut tx,
            statements: &mut self.statements,
        })?;
        tx.commit()?;
        Ok(out)
    }
}

struct PgTx<'t, 'c> {
    tx: &'t mut postgres::Transaction<'c>,
    statements: &'t mut HashMap<String, Statement>,
}

impl PgTx<'_, '_> {
    /// The prepared statement for `sql`: prepared statements outlive the
    /// transaction (they belong to the session), so each is prepared once.
    fn statement(&mut self, sql: &str) -> Result<Statement, DatabaseError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.tx.prepare(sql)?;
        self.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }
}

fn as_sql<'a>(p: &'a Param<'a>) -> &'a (dyn ToSql + Sync) {
    match p {
        Param::Int(v) => v,
        Param::OptInt(v) => v,
        Param::Real(v) => v,
        Param::Text(v) => v,
        Param::OptText(v) => v,
        Param::Blob(v) => v,
    }
}

impl Tx for PgTx<'_, '_> {
    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, DatabaseError> {
        let stmt = self.statement(sql)?;
        let params: Vec<_> = params.iter().map(as_sql).collect();
        Ok(self.tx.execute(&stmt, &params)?)
    }

    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, DatabaseError> {
        let stmt = self.statement(sql)?;
        let params: Vec<_> = params.iter().map(as_sql).collect();
        let rows = self.tx.query(&stmt, &params)?;
        rows.iter().map(decode).collect()
    }

    fn batch(&mut self, sql: &str) -> Result<(), DatabaseError> {
        Ok(self.tx.batch_execute(sql)?)
    }

    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }
}

/// A row's cells by their column types: the schema's `BIGINT`, `DOUBLE
/// PRECISION`, `TEXT` and `BYTEA`, and what catalogue queries return.
fn decode(row: &postgres::Row) -> Result<Row, DatabaseError> {
    let mut cells = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let ty = column.type_();
        let cell = if *ty == Type::INT8 {
            row.try_get::<_, Option<i64>>(i)?.map(Cell::Int)
        } else if *ty == Type::INT4 {
            row.try_get::<_, Option<i32>>(i)?
                .map(|v| Cell::Int(v.into()))
        } else if *ty == Type::INT2 {
            row.try_get::<_, Option<i16>>(i)?
                .map(|v| Cell::Int(v.into()))
        } else if *ty == Type::FLOAT8 {
            row.try_get::<_, Option<f64>>(i)?.map(Cell::Real)
        } else if [Type::TEXT, Type::VARCHAR, Type::NAME, Type::BPCHAR].contains(ty) {
            row.try_get::<_, Option<String>>(i)?.map(Cell::Text)
        } else if *ty == Type::BYTEA {
            row.try_get::<_, Option<Vec<u8>>>(i)?.map(Cell::Blob)
        } else {
            return Err(DatabaseError::Decode(format!(
                "column {} has type {ty}, which the store does not use",
                column.name()
            )));
        };
        cells.push(cell.unwrap_or(Cell::Null));
    }
    Ok(Row(cells))
}
