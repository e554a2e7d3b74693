//! vmbench's results store: every run vmbench makes (`vmbench boot`,
//! `vmbench ab`, imports), with its raw samples, so that runs can be
//! compared over time, across hosts and by CI. One API and one schema over
//! two databases:
//!
//! - **SQLite** (the default): a file, created with its directory on first
//!   use. vmbench keeps it at `$XDG_DATA_HOME/vmbench/results.db`
//!   (`~/.local/share/vmbench/results.db`). It is in WAL mode with a busy
//!   timeout, and writers take its lock at `BEGIN IMMEDIATE`, so several
//!   vmbench processes on one host share it without "database is locked".
//! - **PostgreSQL**, for fleets (many CI runners, one database): a
//!   `postgres://user:password@host:port/database` URL (or `postgresql://`).
//!   The database must exist; the store creates its tables in the
//!   connection's schema. TLS is not built in: use a Unix socket, a trusted
//!   network or a tunnel.
//!
//! ```no_run
//! use vmbench_store::{Location, RunQuery, Store};
//! # fn main() -> vmbench_store::Result<()> {
//! let mut store = Store::open(&Location::parse("/tmp/results.db"))?;
//! for run in store.runs(&RunQuery { last: Some(10), ..Default::default() })? {
//!     println!("{} {} {} samples", run.started_at, run.command, run.sample_count);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # What a run is
//! A [`RunRecord`]: when and how it was run (command line, vmbench version,
//! `--tag`s), the host ([`EnvironmentRecord`]) and tool versions, its
//! variants (one named `""` for a plain run, `A` and `B` for an A/B run)
//! with the inputs each booted, the metrics it measured ([`MetricDef`]: unit,
//! clock, which direction is better, and an alias group tying two names for
//! one quantity together, as the host's and systemd's userspace phase), every
//! sample (variant, round, VM, metric, value, whether it was warm-up), and
//! attachments (serial logs, `vmm.json`, kernel configs).
//!
//! # Guarantees
//! - [`Store::record`] is one transaction: a run is stored whole or not at
//!   all, a writer killed half-way included. It refuses (with nothing
//!   written) a run id the store has, a record that contradicts itself (a
//!   sample of an undefined metric or variant, a duplicate sample, a value
//!   that is not finite), and a metric the store defines with another unit,
//!   clock or direction: a metric's name means one thing in every run.
//! - Concurrent writers (processes on one SQLite file, connections to one
//!   PostgreSQL database) lose nothing: a transaction that another writer
//!   got in the way of is retried for up to two minutes.
//! - Environments, inputs, metrics and attachment contents are stored once,
//!   however many runs share them; attachments are kept by the SHA-256 of
//!   their contents, compressed, and checked against it when read.
//! - The schema is versioned ([`SCHEMA_VERSION`]). Opening a store migrates
//!   it; a store written by a newer vmbench is refused with an error saying
//!   so, never read or written.
//! - Errors are one line naming the store (a URL's password hidden) and
//!   what failed; the database's own message is their source.
//!
//! # Costs
//! Measured by the tests `write_cost` and `parallel_writers_lose_nothing`
//! (`cargo test --release -p vmbench-store -- --show-output`) on a 2-CPU
//! VM with an ext4 virtio disk, other builds running, PostgreSQL 15 on
//! localhost. A run of 10 VMs × 1 round × 16 metrics with a 100 KiB serial
//! log:
//! - recording it takes 1.2–4 ms in SQLite (most of it the commit's fsync)
//!   and 5–8 ms in PostgreSQL (about 30 statements, one round trip each);
//!   reading it back 0.6 ms and 2–3.5 ms;
//! - a SQLite store grows by about 21 KiB per run: 9.5 KiB of it the log,
//!   compressed, the rest samples and their indexes;
//! - four writer processes at once record 100 such runs in 0.2–0.25 s on
//!   one SQLite file (400–490 runs/s) and 0.3 s on PostgreSQL (320–340
//!   runs/s).
//!
//! # Schema (version 1)
//! Integers are `INTEGER` in SQLite and `BIGINT` in PostgreSQL, reals
//! `REAL`/`DOUBLE PRECISION`, bytes `BLOB`/`BYTEA`; `id` columns are
//! auto-numbered. Times are RFC 3339 UTC text.
//!
//! | table | column | meaning |
//! | --- | --- | --- |
//! | `schema_version` | `version` | A migration applied (one row each); the store's version is the largest. |
//! | `environments` | `id` | The environment's number. |
//! |  | `key_sha256` | SHA-256 of the columns below: an environment is stored once (unique). |
//! |  | `cpu_vendor` | The host CPU's `vendor_id`. |
//! |  | `cpu_family` | Its `cpu family`. |
//! |  | `cpu_model` | Its `model`. |
//! |  | `cpu_model_name` | Its `model name`. |
//! |  | `microarchitecture` | Its microarchitecture as vmbench names it (may be empty). |
//! |  | `logical_cpus` | The host's logical CPUs. |
//! |  | `host_kernel` | `uname -r` and `uname -v`. |
//! |  | `accel` | Each backend's accelerator (`tcg`, `kvm-native`, `kvm-emulated`). |
//! |  | `kvm` | The KVM calibration's verdict (`absent`, `emulated`, `native`). |
//! |  | `backend` | The backends (`kvm`, `qemu`, `kvm,qemu`). |
//! |  | `vmm_version` | Each backend's VMM and version. |
//! | `runs` | `id` | The run's number in this store (other tables refer to it). |
//! |  | `uuid` | The run's id, [`RunRecord::id`] (unique). |
//! |  | `started_at` | When it was set up, RFC 3339 UTC (indexed, and with `kind`). |
//! |  | `kind` | `boot`, `ab`, `import`, … |
//! |  | `command` | The command line as typed. |
//! |  | `vmbench_version` | The vmbench that ran it. |
//! |  | `environment_id` | → `environments`. |
//! |  | `kvm_detail` | The KVM calibration's measurement, which varies from run to run. |
//! |  | `sample_count` | Its rows in `samples`. |
//! | `tags` | `run_id` | → `runs` (one row per key and run). |
//! |  | `key` | `--tag key=value`'s key (indexed with `value`). |
//! |  | `value` | Its value. |
//! | `tool_versions` | `run_id` | → `runs` (one row per tool and run). |
//! |  | `tool` | `qemu`, `vhost-device-vsock`, `vmbench vmm`, … |
//! |  | `version` | Its version. |
//! | `variants` | `id` | The variant's number. |
//! |  | `run_id` | → `runs`. |
//! |  | `position` | Its place in the run's variants. |
//! |  | `name` | `""`, `A`, `B` (unique in a run). |
//! |  | `description` | What sets it apart (`--kernel new/vmlinux`). |
//! | `inputs` | `id` | The input's number. |
//! |  | `key_sha256` | SHA-256 of the four columns below: an input is stored once (unique). |
//! |  | `role` | `kernel`, `initramfs`, `agent`, `rootfs`, … |
//! |  | `path` | The file. |
//! |  | `sha256` | Its SHA-256 (indexed). |
//! |  | `detail` | What else is known of it, JSON. |
//! | `variant_inputs` | `variant_id` | → `variants`. |
//! |  | `position` | The input's place in the variant's inputs. |
//! |  | `input_id` | → `inputs`. |
//! | `metrics` | `id` | The metric's number. |
//! |  | `name` | `phase.total`, … (unique: a metric is stored once). |
//! |  | `unit` | `ms`, `KiB`, `count`, … |
//! |  | `clock` | `host`, `guest`, or empty. |
//! |  | `direction` | `lower_is_better` or `higher_is_better`. |
//! |  | `alias_group` | Null, or the group of names for one quantity (indexed). |
//! | `run_metrics` | `run_id` | → `runs`. |
//! |  | `position` | The metric's place in the run's metrics. |
//! |  | `metric_id` | → `metrics`. |
//! | `samples` | `run_id` | → `runs`. |
//! |  | `position` | The sample's place in the run. |
//! |  | `variant_id` | → `variants`. |
//! |  | `metric_id` | → `metrics` (indexed, for a metric across runs). |
//! |  | `round` | The repetition, from 0. |
//! |  | `vm` | The VM's id in its round. |
//! |  | `value` | The value, in the metric's unit. |
//! |  | `warmup` | 1 for a warm-up sample, else 0. |
//! | `attachments` | `sha256` | SHA-256 of the contents (primary key: contents are stored once). |
//! |  | `size_bytes` | The contents' size. |
//! |  | `encoding` | `identity` or `zlib`. |
//! |  | `data` | The contents so encoded. |
//! | `run_attachments` | `run_id` | → `runs`. |
//! |  | `position` | The attachment's place in the run. |
//! |  | `variant_id` | → `variants`. |
//! |  | `vm` | The VM it belongs to; null: the whole variant. |
//! |  | `name` | `serial.log`, `vmm.json`, `kernel.config`, … |
//! |  | `sha256` | → `attachments` (indexed: which runs keep a file). |
//!
//! Primary keys: `id` where a table has one, `attachments.sha256`, and
//! otherwise `run_id, position` (`variant_inputs`: `variant_id, position`;
//! `tags`: `run_id, key`; `tool_versions`: `run_id, tool`).
//!
//! # Layout
//! `record.rs` holds the logical types; `write.rs` checks and
//! writes a run, `read.rs` reads runs back, `attachment.rs` encodes
//! contents, `schema.rs` holds the migrations, and `driver/` the two
//! databases behind one transaction interface (the few SQL differences are
//! there).

use std::path::Path;

mod attachment;
mod driver;
mod error;
mod location;
mod read;
mod record;
mod schema;
mod write;

pub use error::{DatabaseError, Error, MetricConflict, Result};
pub use location::Location;
pub use record::{
    AttachmentRecord, Direction, EnvironmentRecord, InputRecord, MetricDef, RunQuery, RunRecord,
    RunSummary, SampleRecord, VariantRecord,
};
pub use schema::SCHEMA_VERSION;

use driver::{Connection, Mode};

/// An open results store.
pub struct Store {
    location: Location,
    /// The location as messages name it.
    shown: String,
    conn: Connection,
}

impl Store {
    /// Opens the store at `location`, creating it (a SQLite file and its
    /// directory) and migrating its schema as needed. A store written by a
    /// newer vmbench is refused ([`Error::NewerSchema`]).
    pub fn open(location: &Location) -> Result<Store> {
        let shown = location.to_string();
        let open_error = |source| Error::Open {
            location: shown.clone(),
            source,
        };
        let mut conn = match location {
            Location::Sqlite(path) => {
                create_parent(path).map_err(|source| Error::CreateDir {
                    location: shown.clone(),
                    source,
                })?;
                Connection::Sqlite(
                    driver::sqlite::SqliteConnection::open(path).map_err(open_error)?,
                )
            }
            Location::Postgres(url) => Connection::Postgres(Box::new(
                driver::postgres::PgConnection::open(url).map_err(open_error)?,
            )),
        };
        schema::migrate(&mut conn, &shown)?;
        Ok(Store {
            location: location.clone(),
            shown,
            conn,
        })
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Records `run` in one transaction: all of it, or (on any error)
    /// nothing. Refuses an id the store has ([`Error::DuplicateRun`]), a
    /// record that contradicts itself ([`Error::InvalidRun`]) and a metric
    /// defined otherwise in the store ([`Error::MetricRedefined`]).
    pub fn record(&mut self, run: &RunRecord) -> Result<()> {
        let plan = write::plan(run, &self.shown)?;
        let shown = &self.shown;
        self.conn
            .transaction(Mode::Write, |tx| write::write(tx, &plan, shown))
            .map_err(|f| f.into_error(shown, || format!("record run {}", run.id)))
    }

    /// The runs `query` selects, newest first (by `started_at`).
    pub fn runs(&mut self, query: &RunQuery) -> Result<Vec<RunSummary>> {
        self.conn
            .transaction(Mode::Read, |tx| Ok(read::runs(tx, query)?))
            .map_err(|f| f.into_error(&self.shown, || "list runs".into()))
    }

    /// Run `id` as it was recorded (samples and attachments in their
    /// order), or `None` if the store does not have it. Its metrics are as
    /// the store defines them, so an alias group set since is there.
    pub fn run(&mut self, id: &str) -> Result<Option<RunRecord>> {
        let shown = &self.shown;
        self.conn
            .transaction(Mode::Read, |tx| read::run(tx, id, shown))
            .map_err(|f| f.into_error(shown, || format!("read run {id}")))
    }

    /// The contents of the attachment with this (hex) SHA-256, or `None`.
    pub fn attachment(&mut self, sha256: &str) -> Result<Option<Vec<u8>>> {
        let sha256 = sha256.to_ascii_lowercase();
        let shown = &self.shown;
        self.conn
            .transaction(Mode::Read, |tx| read::attachment(tx, &sha256, shown))
            .map_err(|f| f.into_error(shown, || format!("read attachment {sha256}")))
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("location", &self.shown)
            .finish()
    }
}

fn create_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_can_move_to_another_thread_and_errors_into_anyhow() {
        fn send<T: Send>() {}
        fn send_sync<T: Send + Sync + 'static>() {}
        send::<Store>();
        send_sync::<Error>();
    }
}
