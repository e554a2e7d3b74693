//! The store's behaviour through its API, each test against SQLite and
//! against a real PostgreSQL server (`common::pg_server`).

mod common;

use std::time::{Duration, Instant};

use common::fixtures::{self, Shape};
use common::{raw_execute, raw_int, Driver, TestStore};
use vmbench_store::{
    Direction, Error, Location, MetricDef, RunQuery, RunRecord, Store, SCHEMA_VERSION,
};

crate::both_drivers!(
    a_run_comes_back_as_it_was_recorded,
    shared_rows_are_stored_once,
    queries_select_by_tag_kind_and_last,
    a_duplicate_run_id_is_refused,
    a_run_that_contradicts_itself_is_refused,
    an_empty_database_is_migrated,
    a_newer_schema_is_refused,
    a_redefined_metric_is_refused,
    alias_groups_are_filled_in_but_never_changed,
    write_cost,
);

/// Spoils a good run.
type Spoil = fn(&mut RunRecord);
/// Changes a metric's definition.
type Change = fn(&mut MetricDef);

fn store_for(driver: Driver, test: &str) -> Option<TestStore> {
    let name = format!(
        "{test}_{}",
        match driver {
            Driver::Sqlite => "sqlite",
            Driver::Postgres => "postgres",
        }
    );
    TestStore::new(driver, &name)
}

fn a_run_comes_back_as_it_was_recorded(driver: Driver) {
    let Some(t) = store_for(driver, "round_trip") else {
        return;
    };
    let mut store = t.open();
    let run = fixtures::run(7, &Shape::ab());
    assert_eq!(run.samples.len(), 2 * 3 * 2 * 16);
    store.record(&run).unwrap();

    assert_eq!(store.run(&run.id).unwrap().as_ref(), Some(&run));
    assert_eq!(store.run(&fixtures::id_of(8)).unwrap(), None);

    // And from a new connection, as another process would see it.
    drop(store);
    let mut store = t.open();
    assert_eq!(store.run(&run.id).unwrap().as_ref(), Some(&run));
    let listed = store.runs(&RunQuery::default()).unwrap();
    assert_eq!(listed.len(), 1);
    let summary = &listed[0];
    assert_eq!(summary.id, run.id);
    assert_eq!(summary.started_at, run.started_at);
    assert_eq!(summary.kind, "ab");
    assert_eq!(summary.command, run.command);
    assert_eq!(summary.vmbench_version, run.vmbench_version);
    assert_eq!(summary.tags, run.tags);
    assert_eq!(summary.host_cpu, run.environment.cpu_model_name);
    assert_eq!(summary.accel, "kvm-native");
    assert_eq!(summary.backend, "kvm");
    assert_eq!(summary.sample_count, run.samples.len() as u64);
}

fn shared_rows_are_stored_once(driver: Driver) {
    let Some(t) = store_for(driver, "shared_rows") else {
        return;
    };
    let mut store = t.open();
    let first = fixtures::run(1, &Shape::ab());
    let mut second = fixtures::run(2, &Shape::ab());
    // The same serial log twice in the second run, and once in the first.
    let log = first
        .attachments
        .iter()
        .find(|a| a.name == "serial.log")
        .unwrap();
    for i in [1, 3] {
        assert_eq!(second.attachments[i].name, "serial.log");
        second.attachments[i].bytes = log.bytes.clone();
    }
    store.record(&first).unwrap();
    store.record(&second).unwrap();

    let distinct = |runs: &[&RunRecord]| {
        let mut shas: Vec<String> = runs
            .iter()
            .flat_map(|r| r.attachments.iter().map(|a| a.sha256()))
            .collect();
        shas.sort();
        shas.dedup();
        shas.len() as i64
    };
    let l = &t.location;
    assert_eq!(
        raw_int(l, "SELECT COUNT(*) FROM attachments"),
        distinct(&[&first, &second])
    );
    assert!(
        distinct(&[&first, &second]) < (first.attachments.len() + second.attachments.len()) as i64
    );
    assert_eq!(
        raw_int(l, "SELECT COUNT(*) FROM run_attachments"),
        (first.attachments.len() + second.attachments.len()) as i64
    );
    assert_eq!(raw_int(l, "SELECT COUNT(*) FROM environments"), 1);
    assert_eq!(raw_int(l, "SELECT COUNT(*) FROM metrics"), 16);
    // kernel A, kernel B, the initramfs and the root disk.
    assert_eq!(raw_int(l, "SELECT COUNT(*) FROM inputs"), 4);

    assert_eq!(
        store.attachment(&log.sha256()).unwrap(),
        Some(log.bytes.clone())
    );
    assert_eq!(
        store.attachment(&log.sha256().to_uppercase()).unwrap(),
        Some(log.bytes.clone())
    );
    assert_eq!(store.attachment(&"0".repeat(64)).unwrap(), None);
    assert_eq!(store.run(&second.id).unwrap().as_ref(), Some(&second));

    // Attachments are compressed: these runs' text is far smaller stored.
    let stored = raw_int(l, "SELECT SUM(LENGTH(data)) FROM attachments");
    let original = raw_int(l, "SELECT SUM(size_bytes) FROM attachments");
    assert!(
        stored * 3 < original,
        "{stored} bytes stored for {original}"
    );
}

fn queries_select_by_tag_kind_and_last(driver: Driver) {
    let Some(t) = store_for(driver, "queries") else {
        return;
    };
    let mut store = t.open();
    // Recorded out of time order: listings are by started_at.
    let mut runs = Vec::new();
    for seed in [30, 10, 50, 20, 60, 40] {
        let mut run = fixtures::run(seed, &Shape::small());
        run.tags
            .insert("parity".into(), (seed / 10 % 2).to_string());
        if seed >= 40 {
            run.tags.insert("kernel".into(), "6.12.1".into());
        }
        if seed == 60 {
            run.kind = "import".into();
        }
        store.record(&run).unwrap();
        runs.push(run);
    }
    let mut seeds = |q: RunQuery| -> Vec<u64> {
        store
            .runs(&q)
            .unwrap()
            .iter()
            .map(|s| s.tags["seed"].parse().unwrap())
            .collect()
    };
    let tags = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(seeds(RunQuery::default()), [60, 50, 40, 30, 20, 10]);
    assert_eq!(
        seeds(RunQuery {
            last: Some(2),
            ..Default::default()
        }),
        [60, 50]
    );
    assert_eq!(
        seeds(RunQuery {
            tags: tags(&[("kernel", "6.12.1")]),
            ..Default::default()
        }),
        [60, 50, 40]
    );
    assert_eq!(
        seeds(RunQuery {
            tags: tags(&[("kernel", "6.12.1"), ("parity", "1")]),
            ..Default::default()
        }),
        [50]
    );
    assert_eq!(
        seeds(RunQuery {
            tags: tags(&[("kernel", "6.1.119")]),
            kind: Some("boot".into()),
            last: Some(2),
        }),
        [30, 20]
    );
    assert_eq!(
        seeds(RunQuery {
            kind: Some("import".into()),
            ..Default::default()
        }),
        [60]
    );
    assert_eq!(
        seeds(RunQuery {
            tags: tags(&[("kernel", "none")]),
            ..Default::default()
        }),
        Vec::<u64>::new()
    );
    assert_eq!(
        seeds(RunQuery {
            last: Some(0),
            ..Default::default()
        }),
        Vec::<u64>::new()
    );
}

fn a_duplicate_run_id_is_refused(driver: Driver) {
    let Some(t) = store_for(driver, "duplicate") else {
        return;
    };
    let mut store = t.open();
    let run = fixtures::run(3, &Shape::small());
    store.record(&run).unwrap();
    let mut again = fixtures::run(4, &Shape::small());
    again.id = run.id.clone();
    let e = store.record(&again).unwrap_err();
    assert!(matches!(e, Error::DuplicateRun { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("Results store {} already has run {}", t.location, run.id)
    );
    assert_eq!(store.runs(&RunQuery::default()).unwrap().len(), 1);
    assert_eq!(store.run(&run.id).unwrap().as_ref(), Some(&run));
    assert!(common::inconsistencies(&t.location).is_empty());
}

fn a_run_that_contradicts_itself_is_refused(driver: Driver) {
    let Some(t) = store_for(driver, "invalid") else {
        return;
    };
    let mut store = t.open();
    let good = fixtures::run(5, &Shape::small());
    let cases: Vec<(&str, Spoil)> = vec![
        ("is not a UUID", |r| r.id = "run-5".into()),
        ("is not a UUID", |r| r.id = r.id.to_uppercase()),
        ("is not an RFC 3339 time in UTC", |r| {
            r.started_at = "2026-11-01 00:00".into()
        }),
        ("which the run does not define", |r| {
            r.samples[3].metric = "phase.none".into()
        }),
        ("which the run does not have", |r| {
            r.samples[0].variant = "B".into()
        }),
        ("which the run does not have", |r| {
            r.attachments[0].variant = "B".into()
        }),
        ("is NaN", |r| r.samples[0].value = f64::NAN),
        ("is inf", |r| r.samples[1].value = f64::INFINITY),
        ("is there twice", |r| r.samples[1] = r.samples[0].clone()),
        ("is defined twice", |r| r.metrics.push(r.metrics[0].clone())),
        ("is there twice", |r| {
            r.attachments.push(r.attachments[0].clone())
        }),
        ("has no variant", |r| {
            r.variants.clear();
            r.samples.clear();
            r.attachments.clear();
        }),
    ];
    for (problem, spoil) in cases {
        let mut run = good.clone();
        spoil(&mut run);
        let e = store.record(&run).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, Error::InvalidRun { .. }), "{e:?}");
        assert!(text.contains(problem), "{text}");
        assert!(
            text.starts_with(&format!(
                "Run {} cannot be recorded in results store {}: ",
                run.id, t.location
            )),
            "{text}"
        );
        assert!(!text.contains('\n'));
    }
    assert_eq!(raw_int(&t.location, "SELECT COUNT(*) FROM runs"), 0);
    assert_eq!(raw_int(&t.location, "SELECT COUNT(*) FROM metrics"), 0);
    store.record(&good).unwrap();
}

const TABLES: &[&str] = &[
    "schema_version",
    "environments",
    "runs",
    "tags",
    "tool_versions",
    "variants",
    "inputs",
    "variant_inputs",
    "metrics",
    "run_metrics",
    "samples",
    "attachments",
    "run_attachments",
];

fn an_empty_database_is_migrated(driver: Driver) {
    let Some(t) = store_for(driver, "migrations") else {
        return;
    };
    if let Some(path) = t.sqlite_path() {
        // An existing empty file is an empty database, not an error.
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"").unwrap();
    }
    drop(t.open());
    let l = &t.location;
    assert_eq!(
        raw_int(l, "SELECT MAX(version) FROM schema_version"),
        SCHEMA_VERSION
    );
    assert_eq!(
        raw_int(l, "SELECT COUNT(*) FROM schema_version"),
        SCHEMA_VERSION
    );
    for table in TABLES {
        let rows = if *table == "schema_version" {
            SCHEMA_VERSION
        } else {
            0
        };
        assert_eq!(
            raw_int(l, &format!("SELECT COUNT(*) FROM {table}")),
            rows,
            "{table}"
        );
    }
    // Opening again migrates nothing more.
    let mut store = t.open();
    assert_eq!(
        raw_int(l, "SELECT COUNT(*) FROM schema_version"),
        SCHEMA_VERSION
    );
    store.record(&fixtures::run(1, &Shape::small())).unwrap();
    if driver == Driver::Sqlite {
        assert_eq!(
            raw_text_sqlite(l, "PRAGMA journal_mode"),
            "wal",
            "a SQLite store is in WAL mode"
        );
    }
}

fn raw_text_sqlite(location: &Location, sql: &str) -> String {
    let Location::Sqlite(path) = location else {
        unreachable!()
    };
    rusqlite::Connection::open(path)
        .and_then(|c| c.query_row(sql, [], |r| r.get(0)))
        .unwrap()
}

fn a_newer_schema_is_refused(driver: Driver) {
    let Some(t) = store_for(driver, "newer_schema") else {
        return;
    };
    let mut store = t.open();
    store.record(&fixtures::run(1, &Shape::small())).unwrap();
    drop(store);
    let newer = SCHEMA_VERSION + 1;
    raw_execute(
        &t.location,
        &format!("INSERT INTO schema_version (version) VALUES ({newer})"),
    );
    let e = Store::open(&t.location).unwrap_err();
    assert!(matches!(e, Error::NewerSchema { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "Results store {} was written by a newer vmbench (schema {newer}, this one reads up to {SCHEMA_VERSION})",
            t.location
        )
    );
    // Nothing was touched.
    assert_eq!(
        raw_int(&t.location, "SELECT COUNT(*) FROM schema_version"),
        newer
    );
    assert_eq!(raw_int(&t.location, "SELECT COUNT(*) FROM runs"), 1);
}

fn a_redefined_metric_is_refused(driver: Driver) {
    let Some(t) = store_for(driver, "redefined_metric") else {
        return;
    };
    let mut store = t.open();
    store.record(&fixtures::run(1, &Shape::small())).unwrap();
    let changes: [(&str, Change, &str, &str); 3] = [
        ("unit", |m| m.unit = "s".into(), "\"ms\"", "\"s\""),
        (
            "clock",
            |m| m.clock = "guest".into(),
            "\"host\"",
            "\"guest\"",
        ),
        (
            "direction",
            |m| m.direction = Direction::HigherIsBetter,
            "\"lower_is_better\"",
            "\"higher_is_better\"",
        ),
    ];
    for (seed, (field, change, stored, given)) in (2..).zip(changes) {
        let mut run = fixtures::run(seed, &Shape::small());
        let m = run
            .metrics
            .iter_mut()
            .find(|m| m.name == "phase.total")
            .unwrap();
        change(m);
        let e = store.record(&run).unwrap_err();
        assert!(matches!(e, Error::MetricRedefined { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "Results store {} has metric phase.total with {field} {stored}, but run {} gives it {field} {given}",
                t.location, run.id
            )
        );
    }
    assert_eq!(store.runs(&RunQuery::default()).unwrap().len(), 1);
    assert!(common::inconsistencies(&t.location).is_empty());
}

fn alias_groups_are_filled_in_but_never_changed(driver: Driver) {
    let Some(t) = store_for(driver, "alias_groups") else {
        return;
    };
    let mut store = t.open();
    fn metric(run: &mut RunRecord) -> &mut MetricDef {
        run.metrics
            .iter_mut()
            .find(|m| m.name == "phase.total")
            .unwrap()
    }
    let mut first = fixtures::run(1, &Shape::small());
    assert_eq!(metric(&mut first).alias_group, None);
    store.record(&first).unwrap();
    let mut second = fixtures::run(2, &Shape::small());
    metric(&mut second).alias_group = Some("total".into());
    store.record(&second).unwrap();
    // The first run now reads with the group the store learnt since.
    let mut read = store.run(&first.id).unwrap().unwrap();
    assert_eq!(metric(&mut read).alias_group.as_deref(), Some("total"));
    // A run that gives none leaves it; one that gives another is refused.
    store.record(&fixtures::run(3, &Shape::small())).unwrap();
    let mut fourth = fixtures::run(4, &Shape::small());
    metric(&mut fourth).alias_group = Some("wall".into());
    let e = store.record(&fourth).unwrap_err();
    assert!(
        e.to_string()
            .contains("with alias group \"total\", but run"),
        "{e}"
    );
    let userspace = raw_int(
        &t.location,
        "SELECT COUNT(*) FROM metrics WHERE alias_group = 'userspace'",
    );
    assert_eq!(userspace, 2, "the host's and systemd's userspace phase");
}

/// Not a test of speed (nothing is asserted of it): prints what recording
/// a run costs, for the crate's documentation and the reviewers.
fn write_cost(driver: Driver) {
    let Some(t) = store_for(driver, "write_cost") else {
        return;
    };
    let mut store = t.open();
    const RUNS: u64 = 100;
    let runs: Vec<_> = (0..RUNS)
        .map(|s| fixtures::run(s, &Shape::boot_of_ten()))
        .collect();
    assert_eq!(runs[0].samples.len(), 160);
    let mut took = Vec::new();
    for run in &runs {
        let started = Instant::now();
        store.record(run).unwrap();
        took.push(started.elapsed());
    }
    took.sort();
    let total: Duration = took.iter().sum();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "write cost ({driver:?}): {RUNS} runs of 10 VMs x 1 round x 16 metrics + a 100 KiB serial log: \
         mean {:.2} ms, median {:.2} ms, max {:.2} ms per run",
        ms(total) / RUNS as f64,
        ms(took[took.len() / 2]),
        ms(took[took.len() - 1]),
    );
    let started = Instant::now();
    let read = store.run(&runs[50].id).unwrap().unwrap();
    println!(
        "read back one run ({driver:?}): {:.2} ms",
        ms(started.elapsed())
    );
    assert_eq!(read, runs[50]);
    drop(store);
    if let Some(path) = t.sqlite_path() {
        // The last connection closed: the WAL is checkpointed into the file.
        let wal = std::fs::metadata(path.with_extension("db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
        let size = std::fs::metadata(&path).unwrap().len();
        println!(
            "SQLite file for {RUNS} runs: {:.1} KiB ({:.1} KiB per run; WAL left: {wal} bytes)",
            size as f64 / 1024.0,
            size as f64 / 1024.0 / RUNS as f64
        );
    }
    assert_eq!(
        raw_int(&t.location, "SELECT COUNT(*) FROM runs"),
        RUNS as i64
    );
    if driver == Driver::Sqlite {
        let stored = raw_int(&t.location, "SELECT SUM(LENGTH(data)) FROM attachments");
        let original = raw_int(&t.location, "SELECT SUM(size_bytes) FROM attachments");
        println!(
            "of which attachments: {:.1} KiB per run (the 100 KiB logs as zlib)",
            stored as f64 / 1024.0 / RUNS as f64,
        );
        assert_eq!(original, 100 * 1024 * RUNS as i64);
    }
}

#[test]
fn open_errors_are_one_line_naming_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_db = dir.path().join("notes.txt");
    std::fs::write(&not_a_db, "not a database\n".repeat(100)).unwrap();
    let location = Location::Sqlite(not_a_db.clone());
    let e = Store::open(&location).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("Cannot open results store {}", not_a_db.display())
    );
    assert!(std::error::Error::source(&e).is_some());

    let blocked = dir.path().join("file").join("results.db");
    std::fs::write(dir.path().join("file"), b"").unwrap();
    let e = Store::open(&Location::Sqlite(blocked.clone())).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "Cannot create the directory of results store {}",
            blocked.display()
        )
    );

    // Port 9 (discard) on localhost: nothing listens there.
    let e = Store::open(&Location::parse(
        "postgres://ci:hunter2@127.0.0.1:9/vmbench?connect_timeout=2",
    ))
    .unwrap_err();
    let text = e.to_string();
    assert_eq!(
        text,
        "Cannot open results store postgres://ci:***@127.0.0.1:9/vmbench?connect_timeout=2"
    );
    assert!(!format!("{e:?}").contains("hunter2"));
}
