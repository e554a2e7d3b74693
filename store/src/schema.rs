//! The schema and its migrations. `MIGRATIONS[n - 1]` takes a store from
//! version `n - 1` to `n`; `schema_version` holds one row per version
//! applied. A store is migrated in one write transaction when it is opened
//! (PostgreSQL: under an advisory lock, so that processes opening a new
//! database at once take turns); a store of a newer version than
//! [`SCHEMA_VERSION`] is refused before anything is read from or written to
//! it.
//!
//! The tables are described column by column in the crate's documentation;
//! keep the two in step. Type placeholders are spelt by
//! [`Dialect::ddl`](crate::driver::Dialect::ddl).

use crate::driver::{Connection, Dialect, Mode, Param, Tx};
use crate::error::{DatabaseError, Error, Fail};

/// The schema this code reads and writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Arbitrary key of the PostgreSQL advisory lock held while migrating.
const MIGRATION_LOCK: i64 = 0x766d_6265_6e63_6801;

const MIGRATIONS: &[&str] = &[
    // 1: everything.
    "
    CREATE TABLE schema_version (
        version {int} PRIMARY KEY
    );
    CREATE TABLE environments (
        id {id},
        key_sha256 TEXT NOT NULL UNIQUE,
        cpu_vendor TEXT NOT NULL,
        cpu_family TEXT NOT NULL,
        cpu_model TEXT NOT NULL,
        cpu_model_name TEXT NOT NULL,
        microarchitecture TEXT NOT NULL,
        logical_cpus {int} NOT NULL,
        host_kernel TEXT NOT NULL,
        accel TEXT NOT NULL,
        kvm TEXT NOT NULL,
        backend TEXT NOT NULL,
        vmm_version TEXT NOT NULL
    );
    CREATE TABLE runs (
        id {id},
        uuid TEXT NOT NULL UNIQUE,
        started_at TEXT NOT NULL,
        kind TEXT NOT NULL,
        command TEXT NOT NULL,
        vmbench_version TEXT NOT NULL,
        environment_id {int} NOT NULL REFERENCES environments (id),
        kvm_detail TEXT NOT NULL,
        sample_count {int} NOT NULL
    );
    CREATE INDEX runs_by_time ON runs (started_at);
    CREATE INDEX runs_by_kind ON runs (kind, started_at);
    CREATE TABLE tags (
        run_id {int} NOT NULL REFERENCES runs (id),
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (run_id, key)
    );
    CREATE INDEX tags_by_value ON tags (key, value);
    CREATE TABLE tool_versions (
        run_id {int} NOT NULL REFERENCES runs (id),
        tool TEXT NOT NULL,
        version TEXT NOT NULL,
        PRIMARY KEY (run_id, tool)
    );
    CREATE TABLE variants (
        id {id},
        run_id {int} NOT NULL REFERENCES runs (id),
        position {int} NOT NULL,
        name TEXT NOT NULL,
        description TEXT NOT NULL,
        UNIQUE (run_id, name)
    );
    CREATE TABLE inputs (
        id {id},
        key_sha256 TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL,
        path TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX inputs_by_sha256 ON inputs (sha256);
    CREATE TABLE variant_inputs (
        variant_id {int} NOT NULL REFERENCES variants (id),
        position {int} NOT NULL,
        input_id {int} NOT NULL REFERENCES inputs (id),
        PRIMARY KEY (variant_id, position)
    );
    CREATE TABLE metrics (
        id {id},
        name TEXT NOT NULL UNIQUE,
        unit TEXT NOT NULL,
        clock TEXT NOT NULL,
        direction TEXT NOT NULL,
        alias_group TEXT
    );
    CREATE INDEX metrics_by_alias_group ON metrics (alias_group);
    CREATE TABLE run_metrics (
        run_id {int} NOT NULL REFERENCES runs (id),
        position {int} NOT NULL,
        metric_id {int} NOT NULL REFERENCES metrics (id),
        PRIMARY KEY (run_id, position)
    );
    CREATE TABLE samples (
        run_id {int} NOT NULL REFERENCES runs (id),
        position {int} NOT NULL,
        variant_id {int} NOT NULL REFERENCES variants (id),
        metric_id {int} NOT NULL REFERENCES metrics (id),
        round {int} NOT NULL,
        vm {int} NOT NULL,
        value {real} NOT NULL,
        warmup {int} NOT NULL,
        PRIMARY KEY (run_id, position)
    );
    CREATE INDEX samples_by_metric ON samples (metric_id, run_id);
    CREATE TABLE attachments (
        sha256 TEXT PRIMARY KEY,
        size_bytes {int} NOT NULL,
        encoding TEXT NOT NULL,
        data {blob} NOT NULL
    );
    CREATE TABLE run_attachments (
        run_id {int} NOT NULL REFERENCES runs (id),
        position {int} NOT NULL,
        variant_id {int} NOT NULL REFERENCES variants (id),
        vm {int},
        name TEXT NOT NULL,
        sha256 TEXT NOT NULL REFERENCES attachments (sha256),
        PRIMARY KEY (run_id, position)
    );
    CREATE INDEX run_attachments_by_sha256 ON run_attachments (sha256);
    ",
];

/// Brings the store to [`SCHEMA_VERSION`], or refuses a newer one.
/// `location` is the store as messages name it.
pub(crate) fn migrate(conn: &mut Connection, location: &str) -> Result<(), Error> {
    let found = conn
        .transaction(Mode::Read, |tx| Ok(version(tx)?))
        .map_err(|f| f.into_error(location, || "read the schema version".into()))?;
    check_not_newer(found, location)?;
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    conn.transaction(Mode::Write, |tx| {
        if tx.dialect() == Dialect::Postgres {
            tx.batch(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))?;
        }
        // Another process may have migrated since the check above.
        let found = version(tx)?;
        check_not_newer(found, location).map_err(Fail::Store)?;
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let to = i as i64 + 1;
            tx.batch(&tx.dialect().ddl(migration))?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES ($1)",
                &[Param::Int(to)],
            )?;
        }
        Ok(())
    })
    .map_err(|f| {
        f.into_error(location, || {
            format!("migrate the schema to version {SCHEMA_VERSION}")
        })
    })
}

/// The store's schema version: 0 for a database without the store's tables.
fn version(tx: &mut dyn Tx) -> Result<i64, DatabaseError> {
    let exists = tx
        .query_one(
            tx.dialect().table_exists_sql(),
            &[Param::Text("schema_version")],
        )?
        .int(0)?;
    if exists == 0 {
        return Ok(0);
    }
    Ok(tx
        .query_one("SELECT MAX(version) FROM schema_version", &[])?
        .opt_int(0)?
        .unwrap_or(0))
}

fn check_not_newer(found: i64, location: &str) -> Result<(), Error> {
    if found > SCHEMA_VERSION {
        return Err(Error::NewerSchema {
            location: location.to_string(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}
