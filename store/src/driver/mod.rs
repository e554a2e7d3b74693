//! The two databases behind one small interface: a connection runs a
//! closure in a transaction, and the closure executes SQL through [`Tx`].
//!
//! The store's SQL is written once. Its few differences between the two are
//! settled here:
//! - placeholders are written `$1`, `$2`, … (PostgreSQL's form); SQLite gets
//!   them as `?1`, `?2`, …;
//! - column types in the schema are written `{id}` (an auto-numbered integer
//!   primary key), `{int}`, `{real}` and `{blob}`, and [`Dialect::ddl`]
//!   spells them for each database;
//! - whether a table exists is asked of each one's catalogue
//!   ([`Dialect::table_exists_sql`]).
//!
//! Everything else (`INSERT … ON CONFLICT DO NOTHING`, `RETURNING`) both
//! understand alike.
//!
//! Writers serialise differently: SQLite takes the database's write lock at
//! `BEGIN IMMEDIATE` (waiting up to the busy timeout for another writer),
//! PostgreSQL locks rows as they are inserted. A transaction that fails
//! because another writer was in the way (SQLite still busy after the
//! timeout, a PostgreSQL deadlock or serialisation victim) is run again
//! from the start, for up to [`RETRY_FOR`].

use std::time::{Duration, Instant};

use crate::error::{DatabaseError, Fail};

pub(crate) mod postgres;
pub(crate) mod sqlite;

/// How long a transaction is retried while other writers are in its way.
pub(crate) const RETRY_FOR: Duration = Duration::from_secs(120);

/// A value bound to a placeholder. Nulls carry their type: PostgreSQL
/// checks each parameter's type against the statement's.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Param<'a> {
    Int(i64),
    OptInt(Option<i64>),
    Real(f64),
    Text(&'a str),
    OptText(Option<&'a str>),
    Blob(&'a [u8]),
}

/// A value read from a row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// A row of a result, its cells in the order of the `SELECT`. Reading a
/// cell takes it out of the row (no copy of a blob), so each is read once.
#[derive(Debug)]
pub(crate) struct Row(pub(crate) Vec<Cell>);

impl Row {
    fn cell(&mut self, i: usize) -> Result<Cell, DatabaseError> {
        let n = self.0.len();
        self.0
            .get_mut(i)
            .map(|cell| std::mem::replace(cell, Cell::Null))
            .ok_or_else(|| DatabaseError::Decode(format!("no column {i} in a row of {n}")))
    }

    pub(crate) fn int(&mut self, i: usize) -> Result<i64, DatabaseError> {
        match self.cell(i)? {
            Cell::Int(v) => Ok(v),
            other => Err(unexpected(i, "an integer", &other)),
        }
    }

    pub(crate) fn opt_int(&mut self, i: usize) -> Result<Option<i64>, DatabaseError> {
        match self.cell(i)? {
            Cell::Null => Ok(None),
            Cell::Int(v) => Ok(Some(v)),
            other => Err(unexpected(i, "an integer or null", &other)),
        }
    }

    pub(crate) fn real(&mut self, i: usize) -> Result<f64, DatabaseError> {
        match self.cell(i)? {
            Cell::Real(v) => Ok(v),
            // Only a row written by something else than the store (by hand,
            // say) can hold an integer here; it is still a number.
            Cell::Int(v) => Ok(v as f64),
            other => Err(unexpected(i, "a number", &other)),
        }
    }

    pub(crate) fn text(&mut self, i: usize) -> Result<String, DatabaseError> {
        match self.cell(i)? {
            Cell::Text(v) => Ok(v),
            other => Err(unexpected(i, "text", &other)),
        }
    }

    pub(crate) fn opt_text(&mut self, i: usize) -> Result<Option<String>, DatabaseError> {
        match self.cell(i)? {
            Cell::Null => Ok(None),
            Cell::Text(v) => Ok(Some(v)),
            other => Err(unexpected(i, "text or null", &other)),
        }
    }

    pub(crate) fn blob(&mut self, i: usize) -> Result<Vec<u8>, DatabaseError> {
        match self.cell(i)? {
            Cell::Blob(v) => Ok(v),
            other => Err(unexpected(i, "bytes", &other)),
        }
    }
}

fn unexpected(i: usize, wanted: &str, got: &Cell) -> DatabaseError {
    let got = match got {
        Cell::Null => "null",
        Cell::Int(_) => "an integer",
        Cell::Real(_) => "a real number",
        Cell::Text(_) => "text",
        Cell::Blob(_) => "bytes",
    };
    DatabaseError::Decode(format!(
        "column {i} holds {got} where {wanted} was expected"
    ))
}

/// SQL run inside a transaction.
pub(crate) trait Tx {
    /// Runs a statement; the number of rows it changed.
    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, DatabaseError>;
    /// Runs a query; all its rows.
    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, DatabaseError>;
    /// Runs several statements without parameters (the schema).
    fn batch(&mut self, sql: &str) -> Result<(), DatabaseError>;
    fn dialect(&self) -> Dialect;

    /// The query's only row, if any.
    fn query_opt(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Option<Row>, DatabaseError> {
        let mut rows = self.query(sql, params)?;
        match rows.len() {
            0 | 1 => Ok(rows.pop()),
            n => Err(DatabaseError::Decode(format!(
                "{n} rows where at most one was expected"
            ))),
        }
    }

    /// The query's one row.
    fn query_one(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Row, DatabaseError> {
        self.query_opt(sql, params)?
            .ok_or_else(|| DatabaseError::Decode("no row where one was expected".into()))
    }
}

/// Which SQL a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// A schema statement with its type placeholders spelt for this database.
    pub(crate) fn ddl(self, sql: &str) -> String {
        let types: [(&str, &str); 4] = match self {
            Dialect::Sqlite => [
                ("{id}", "INTEGER PRIMARY KEY"),
                ("{int}", "INTEGER"),
                ("{real}", "REAL"),
                ("{blob}", "BLOB"),
            ],
            Dialect::Postgres => [
                (
                    "{id}",
                    "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
                ),
                ("{int}", "BIGINT"),
                ("{real}", "DOUBLE PRECISION"),
                ("{blob}", "BYTEA"),
            ],
        };
        types
            .iter()
            .fold(sql.to_string(), |s, (token, ty)| s.replace(token, ty))
    }

    /// A query with one parameter, the table's name, that counts the tables
    /// of that name (0 or 1) in the database (PostgreSQL: in the schema the
    /// connection uses).
    pub(crate) fn table_exists_sql(self) -> &'static str {
        match self {
            Dialect::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1"
            }
            Dialect::Postgres => {
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = $1"
            }
        }
    }
}

/// Whether a transaction only reads or also writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A consistent snapshot of the store.
    Read,
    /// Serialised with other writers (SQLite: the write lock from the start).
    Write,
}

/// An open connection to either database.
pub(crate) enum Connection {
    Sqlite(sqlite::SqliteConnection),
    /// Boxed: the client is several times the size of a SQLite handle.
    Postgres(Box<postgres::PgConnection>),
}

impl Connection {
    /// Runs `body` in a transaction and commits it; runs it again from the
    /// start while the failure is another writer's doing (see the module
    /// doc). `body` must therefore have no effect outside the transaction.
    pub(crate) fn transaction<T>(
        &mut self,
        mode: Mode,
        mut body: impl FnMut(&mut dyn Tx) -> Result<T, Fail>,
    ) -> Result<T, Fail> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(2);
        loop {
            let attempt = match self {
                Connection::Sqlite(c) => c.transaction(mode, &mut body),
                Connection::Postgres(c) => c.transaction(mode, &mut body),
            };
            match attempt {
                Err(Fail::Db(e)) if e.is_transient() && started.elapsed() < RETRY_FOR => {
                    // Jitter, so that writers that collided do not collide again.
                    let jitter_us = u64::from(started.elapsed().subsec_nanos() % 1000);
                    std::thread::sleep(backoff + Duration::from_micros(jitter_us * 5));
                    backoff = (backoff * 2).min(Duration::from_millis(200));
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_spells_types_per_database() {
        let sql = "CREATE TABLE t (id {id}, n {int}, x {real}, b {blob})";
        assert_eq!(
            Dialect::Sqlite.ddl(sql),
            "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, x REAL, b BLOB)"
        );
        assert_eq!(
            Dialect::Postgres.ddl(sql),
            "CREATE TABLE t (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, \
             n BIGINT, x DOUBLE PRECISION, b BYTEA)"
        );
    }

    #[test]
    fn rows_decode_by_type() {
        let mut row = Row(vec![
            Cell::Int(3),
            Cell::Null,
            Cell::Text("a".into()),
            Cell::Real(1.5),
        ]);
        assert_eq!(row.int(0).unwrap(), 3);
        assert_eq!(row.opt_text(1).unwrap(), None);
        assert_eq!(row.text(2).unwrap(), "a");
        assert_eq!(row.real(3).unwrap(), 1.5);
        assert!(matches!(row.text(0), Err(DatabaseError::Decode(_))));
        assert!(matches!(row.int(9), Err(DatabaseError::Decode(_))));
    }
}
