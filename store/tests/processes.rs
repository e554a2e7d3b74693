//! Several processes on one store, and a process killed while it records:
//! the children are this test binary run again (`child`, selected by
//! `--exact child --ignored` and told what to do through the environment).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::fixtures::{self, Shape};
use common::{raw_int, Driver, TestStore};
use vmbench_store::{Location, RunQuery, Store};

crate::both_drivers!(
    parallel_writers_lose_nothing,
    a_killed_writer_leaves_no_trace
);

/// What a child does: `writer` or `big` (see [`child`]).
const ROLE: &str = "VMBENCH_STORE_TEST_ROLE";
const LOCATION: &str = "VMBENCH_STORE_TEST_LOCATION";
const WRITER: &str = "VMBENCH_STORE_TEST_WRITER";
/// A file whose appearance starts the writers all at once.
const GO: &str = "VMBENCH_STORE_TEST_GO";

const WRITERS: u64 = 4;
const RUNS_PER_WRITER: u64 = 25;

/// The seed of a writer's `i`th run.
fn seed(writer: u64, i: u64) -> u64 {
    1000 * (writer + 1) + i
}

/// A boot of 10 VMs with a 100 KiB serial log, and files every run shares
/// (so that writers insert the same attachment at the same time).
fn parallel_shape() -> Shape {
    Shape {
        shared_files: true,
        ..Shape::boot_of_ten()
    }
}

/// Far more than a boot: long enough to be killed in the middle of.
fn big_shape() -> Shape {
    Shape {
        variants: vec!["A", "B"],
        vms: 100,
        rounds: 5,
        metrics: 40,
        serial_log_bytes: 64 * 1024,
        one_serial_log: false,
        shared_files: true,
    }
}

const BIG_SEED: u64 = 99;

#[test]
#[ignore = "a child process of the multi-process tests, not a test of its own"]
fn child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let location = Location::parse(&std::env::var(LOCATION).unwrap());
    let mut store = Store::open(&location).unwrap_or_else(|e| panic!("{e:#?}"));
    match role.as_str() {
        "writer" => {
            let writer: u64 = std::env::var(WRITER).unwrap().parse().unwrap();
            let runs: Vec<_> = (0..RUNS_PER_WRITER)
                .map(|i| {
                    let mut run = fixtures::run(seed(writer, i), &parallel_shape());
                    run.tags.insert("writer".into(), writer.to_string());
                    run
                })
                .collect();
            println!("ready");
            let go = std::env::var(GO).unwrap();
            let waiting = Instant::now();
            while !Path::new(&go).exists() {
                assert!(waiting.elapsed() < Duration::from_secs(60), "no go");
                std::thread::sleep(Duration::from_millis(1));
            }
            let started = Instant::now();
            for run in &runs {
                store.record(run).unwrap_or_else(|e| panic!("{e}: {e:?}"));
            }
            println!(
                "writer {writer}: {RUNS_PER_WRITER} runs in {} ms",
                started.elapsed().as_millis()
            );
        }
        "big" => {
            let run = fixtures::run(BIG_SEED, &big_shape());
            println!("recording");
            store.record(&run).unwrap();
            println!("recorded");
        }
        other => panic!("unknown role {other}"),
    }
}

/// This binary run again as `child` with `role`.
fn spawn_child(location: &Location, role: &str, env: &[(&str, String)]) -> Child {
    let location = match location {
        Location::Sqlite(p) => p.display().to_string(),
        Location::Postgres(url) => url.clone(),
    };
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, role)
        .env(LOCATION, location)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the test binary again")
}

/// Reads the child's output until the line `line`.
fn wait_for_line(child: &mut Child, stdout: &mut BufReader<ChildStdout>, line: &str) {
    let mut text = String::new();
    loop {
        text.clear();
        let n = stdout.read_line(&mut text).unwrap();
        if n == 0 {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("the child ended before saying {line:?}: {err}");
        }
        // libtest may have begun the line with `test child ... `.
        if text.trim_end().ends_with(line) {
            return;
        }
    }
}

fn finish(
    mut child: Child,
    mut stdout: BufReader<ChildStdout>,
) -> (String, std::process::ExitStatus) {
    let mut out = String::new();
    stdout.read_to_string(&mut out).unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    (format!("{out}{err}"), status)
}

fn parallel_writers_lose_nothing(driver: Driver) {
    let name = format!("parallel_writers_{driver:?}").to_lowercase();
    let Some(t) = TestStore::new(driver, &name) else {
        return;
    };
    // The store is not even created yet: the writers race to create it.
    let go = tempfile::tempdir().unwrap();
    let go_file = go.path().join("go");
    let mut children: Vec<_> = (0..WRITERS)
        .map(|w| {
            let mut child = spawn_child(
                &t.location,
                "writer",
                &[(WRITER, w.to_string()), (GO, go_file.display().to_string())],
            );
            let stdout = BufReader::new(child.stdout.take().unwrap());
            (child, stdout)
        })
        .collect();
    for (child, stdout) in &mut children {
        wait_for_line(child, stdout, "ready");
    }
    std::fs::write(&go_file, b"").unwrap();
    let started = Instant::now();
    for (child, stdout) in children {
        let (output, status) = finish(child, stdout);
        assert!(status.success(), "a writer failed ({status}):\n{output}");
        for line in output.lines().filter(|l| l.starts_with("writer ")) {
            println!("{line}");
        }
    }
    let elapsed = started.elapsed();
    let total = WRITERS * RUNS_PER_WRITER;
    println!(
        "{driver:?}: {WRITERS} writer processes recorded {total} runs (10 VMs x 16 metrics + a 100 KiB \
         serial log each) in {} ms: {:.0} runs/s",
        elapsed.as_millis(),
        total as f64 / elapsed.as_secs_f64()
    );

    let mut store = t.open();
    assert_eq!(
        store.runs(&RunQuery::default()).unwrap().len(),
        total as usize
    );
    for w in 0..WRITERS {
        let mine = store
            .runs(&RunQuery {
                tags: vec![("writer".into(), w.to_string())],
                ..Default::default()
            })
            .unwrap();
        assert_eq!(mine.len(), RUNS_PER_WRITER as usize, "writer {w}");
        for i in 0..RUNS_PER_WRITER {
            let mut expected = fixtures::run(seed(w, i), &parallel_shape());
            expected.tags.insert("writer".into(), w.to_string());
            assert_eq!(store.run(&expected.id).unwrap().as_ref(), Some(&expected));
        }
    }
    assert_eq!(raw_int(&t.location, "SELECT COUNT(*) FROM environments"), 1);
    assert_eq!(raw_int(&t.location, "SELECT COUNT(*) FROM metrics"), 16);
    assert_eq!(
        raw_int(
            &t.location,
            "SELECT COUNT(*) FROM attachments WHERE size_bytes <> 102400"
        ),
        raw_int(
            &t.location,
            "SELECT COUNT(DISTINCT sha256) FROM run_attachments WHERE name <> 'serial.log'"
        ),
    );
    assert_eq!(common::inconsistencies(&t.location), []);
}

fn a_killed_writer_leaves_no_trace(driver: Driver) {
    let name = format!("killed_writer_{driver:?}").to_lowercase();
    let Some(t) = TestStore::new(driver, &name) else {
        return;
    };
    let before = fixtures::run(1, &Shape::small());
    let mut store = t.open();
    store.record(&before).unwrap();
    // Closing the last SQLite connection empties the WAL: what is in it
    // after this is the child's.
    drop(store);

    let mut child = spawn_child(&t.location, "big", &[]);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    wait_for_line(&mut child, &mut stdout, "recording");
    let waiting = Instant::now();
    while !writing_a_run(&t) {
        assert!(
            waiting.elapsed() < Duration::from_secs(120),
            "the child never got to writing its run"
        );
        if let Some(status) = child.try_wait().unwrap() {
            let (output, _) = finish(child, stdout);
            panic!("the child ended ({status}) before it was seen writing:\n{output}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    let (output, status) = finish(child, stdout);
    assert_eq!(status.signal(), Some(9), "{output}");
    assert!(!output.contains("recorded"), "{output}");

    let mut store = t.open();
    let big = fixtures::run(BIG_SEED, &big_shape());
    match store.run(&big.id).unwrap() {
        None => {
            println!("{driver:?}: killed in the middle of its transaction: the run is not there")
        }
        Some(run) => {
            println!("{driver:?}: killed as it committed: the run is there whole");
            assert_eq!(run, big);
        }
    }
    assert_eq!(store.run(&before.id).unwrap().as_ref(), Some(&before));
    assert_eq!(common::inconsistencies(&t.location), []);
    let after = fixtures::run(2, &Shape::small());
    store.record(&after).unwrap();
    assert_eq!(store.run(&after.id).unwrap().as_ref(), Some(&after));
}

/// Whether the child is in the middle of writing its run: it holds
/// SQLite's write lock and its uncommitted pages have reached the WAL
/// (more than 1 MiB of them), or it has inserted samples in a PostgreSQL
/// transaction that is still open.
fn writing_a_run(t: &TestStore) -> bool {
    match &t.location {
        Location::Sqlite(path) => {
            let wal = std::fs::metadata(path.with_extension("db-wal")).map_or(0, |m| m.len());
            if wal < 1024 * 1024 {
                return false;
            }
            let probe = rusqlite::Connection::open(path).unwrap();
            probe.busy_timeout(Duration::ZERO).unwrap();
            match probe.execute_batch("BEGIN IMMEDIATE; ROLLBACK;") {
                Ok(()) => false,
                Err(e) => {
                    assert_eq!(
                        e.sqlite_error_code(),
                        Some(rusqlite::ErrorCode::DatabaseBusy),
                        "{e}"
                    );
                    true
                }
            }
        }
        Location::Postgres(_) => {
            raw_int(
                &t.location,
                "SELECT COUNT(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
                 WHERE c.relname = 'samples' AND l.mode = 'RowExclusiveLock' \
                 AND l.pid <> pg_backend_pid()",
            ) > 0
        }
    }
}
