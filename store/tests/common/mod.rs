//! What the store's tests share: a store of either driver for one test
//! ([`TestStore`]), the driver-parameterised test macro ([`both_drivers`]),
//! raw SQL for checks below the API, and realistic runs ([`fixtures`]).

#![allow(dead_code)] // Each test binary uses a part.

pub mod fixtures;
pub mod pg_server;

use std::path::PathBuf;

use vmbench_store::Location;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Sqlite,
    Postgres,
}

/// Defines, for each named function `fn name(driver: Driver)`, a module
/// `name` with the tests `sqlite` and `postgres` that call it.
#[macro_export]
macro_rules! both_drivers {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name($crate::common::Driver::Sqlite)
            }
            #[test]
            fn postgres() {
                super::$name($crate::common::Driver::Postgres)
            }
        }
    )*};
}

pub fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true" | "1"))
}

/// An empty store for one test: a SQLite file in a temporary directory, or
/// a new database on the test PostgreSQL server.
pub struct TestStore {
    pub location: Location,
    pub driver: Driver,
    _dir: Option<tempfile::TempDir>,
}

impl TestStore {
    /// `None` (having printed `SKIPPED:`) when the driver's database cannot
    /// be had here. `name` must be unique within the test binary.
    pub fn new(driver: Driver, name: &str) -> Option<TestStore> {
        match driver {
            Driver::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary directory");
                Some(TestStore {
                    location: Location::Sqlite(dir.path().join("store").join("results.db")),
                    driver,
                    _dir: Some(dir),
                })
            }
            Driver::Postgres => Some(TestStore {
                location: Location::Postgres(pg_server::database(name)?),
                driver,
                _dir: None,
            }),
        }
    }

    pub fn open(&self) -> vmbench_store::Store {
        vmbench_store::Store::open(&self.location)
            .unwrap_or_else(|e| panic!("open {}: {e:#?}", self.location))
    }

    pub fn sqlite_path(&self) -> Option<PathBuf> {
        match &self.location {
            Location::Sqlite(p) => Some(p.clone()),
            Location::Postgres(_) => None,
        }
    }
}

/// Runs `sql` (no result) on the store's database, below the store's API.
pub fn raw_execute(location: &Location, sql: &str) {
    match location {
        Location::Sqlite(path) => rusqlite::Connection::open(path)
            .and_then(|c| c.execute_batch(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e}")),
        Location::Postgres(url) => postgres::Client::connect(url, postgres::NoTls)
            .and_then(|mut c| c.batch_execute(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e}")),
    }
}

/// The one integer `sql` yields (a `COUNT(*)`, a `MAX()`).
pub fn raw_int(location: &Location, sql: &str) -> i64 {
    match location {
        Location::Sqlite(path) => rusqlite::Connection::open(path)
            .and_then(|c| c.query_row(sql, [], |r| r.get::<_, Option<i64>>(0)))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .unwrap_or(0),
        // SUM() of a BIGINT is a NUMERIC in PostgreSQL.
        Location::Postgres(url) => postgres::Client::connect(url, postgres::NoTls)
            .and_then(|mut c| c.query_one(&format!("SELECT CAST(({sql}) AS BIGINT)"), &[]))
            .map(|r| r.get::<_, Option<i64>>(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .unwrap_or(0),
    }
}

/// The store's rows that no run owns, or that a run's `sample_count` does
/// not account for: all must be 0 in a consistent store.
pub fn inconsistencies(location: &Location) -> Vec<(&'static str, i64)> {
    let checks: [(&str, &str); 6] = [
        (
            "samples not counted by their run",
            "SELECT (SELECT COUNT(*) FROM samples) - (SELECT COALESCE(SUM(sample_count), 0) FROM runs)",
        ),
        (
            "samples of a missing run",
            "SELECT COUNT(*) FROM samples s WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.id = s.run_id)",
        ),
        (
            "variants of a missing run",
            "SELECT COUNT(*) FROM variants v WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.id = v.run_id)",
        ),
        (
            "runs without a variant",
            "SELECT COUNT(*) FROM runs r WHERE NOT EXISTS (SELECT 1 FROM variants v WHERE v.run_id = r.id)",
        ),
        (
            "attachment contents no run refers to",
            "SELECT COUNT(*) FROM attachments a WHERE NOT EXISTS \
             (SELECT 1 FROM run_attachments ra WHERE ra.sha256 = a.sha256)",
        ),
        (
            "attachments of a missing run",
            "SELECT COUNT(*) FROM run_attachments ra WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.id = ra.run_id)",
        ),
    ];
    checks
        .iter()
        .map(|(what, sql)| (*what, raw_int(location, sql)))
        .filter(|(_, n)| *n != 0)
        .collect()
}
