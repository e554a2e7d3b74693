//! SQLite through rusqlite (SQLite itself is compiled in). The file is in
//! WAL mode, so readers never wait for a writer and a writer's commit is one
//! append to the log; writers take the write lock at `BEGIN IMMEDIATE`,
//! waiting up to [`BUSY_TIMEOUT`] for one another.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{ErrorCode, TransactionBehavior};

use super::{Cell, Dialect, Mode, Param, Row, Tx, RETRY_FOR};
use crate::error::{DatabaseError, Fail};

/// How long one statement waits for another connection's lock before
/// SQLite reports the database busy (and the transaction is retried).
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct SqliteConnection {
    conn: rusqlite::Connection,
}

impl SqliteConnection {
    /// Opens (creating) the file and sets the connection up: busy timeout,
    /// WAL (kept in the file once set), foreign keys enforced.
    pub(crate) fn open(path: &Path) -> Result<SqliteConnection, DatabaseError> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Switching to WAL needs the database to itself and does not wait
        // through the busy handler, so it is retried by hand: several
        // processes may open a new file at once.
        let started = Instant::now();
        loop {
            match conn
                .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))
            {
                Ok(_) => break,
                Err(e)
                    if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy)
                        && started.elapsed() < RETRY_FOR =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(e.into()),
            }
        }
        // FULL: a commit is on disk when `record` returns, power loss
        // included (NORMAL would only keep the file consistent).
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        Ok(SqliteConnection { conn })
    }

    pub(crate) fn transaction<T>(
        &mut self,
        mode: Mode,
        body: &mut dyn FnMut(&mut dyn Tx) -> Result<T, Fail>,
    ) -> Result<T, Fail> {
        let behavior = match mode {
            Mode::Read => TransactionBehavior::Deferred,
            Mode::Write => TransactionBehavior::Immediate,
        };
        let tx = self.conn.transaction_with_behavior(behavior)?;
        let out = body(&mut SqliteTx { conn: &tx })?;
        tx.commit()?;
        Ok(out)
    }
}

struct SqliteTx<'c> {
    conn: &'c rusqlite::Connection,
}

/// `$1` → `?1`: the store's SQL has no other `$`.
fn placeholders(sql: &str) -> String {
    sql.replace('$', "?")
}

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            Param::Int(v) | Param::OptInt(Some(v)) => ValueRef::Integer(v),
            Param::OptInt(None) | Param::OptText(None) => ValueRef::Null,
            Param::Real(v) => ValueRef::Real(v),
            Param::Text(s) | Param::OptText(Some(s)) => ValueRef::Text(s.as_bytes()),
            Param::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

impl Tx for SqliteTx<'_> {
    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, DatabaseError> {
        let mut stmt = self.conn.prepare_cached(&placeholders(sql))?;
        Ok(stmt.execute(rusqlite::params_from_iter(params.iter()))? as u64)
    }

    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, DatabaseError> {
        let mut stmt = self.conn.prepare_cached(&placeholders(sql))?;
        let columns = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let mut cells = Vec::with_capacity(columns);
            for i in 0..columns {
                cells.push(match row.get_ref(i)? {
                    ValueRef::Null => Cell::Null,
                    ValueRef::Integer(v) => Cell::Int(v),
                    ValueRef::Real(v) => Cell::Real(v),
                    ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Cell::Blob(b.to_vec()),
                });
            }
            out.push(Row(cells));
        }
        Ok(out)
    }

    fn batch(&mut self, sql: &str) -> Result<(), DatabaseError> {
        Ok(self.conn.execute_batch(sql)?)
    }

    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_question_marks() {
        assert_eq!(
            placeholders("SELECT a FROM t WHERE b = $1 AND c = $12"),
            "SELECT a FROM t WHERE b = ?1 AND c = ?12"
        );
    }
}
