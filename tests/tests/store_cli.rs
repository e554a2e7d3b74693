//! End to end: runs go into the results store, and the store's commands
//! (`runs`, `runs show`, `compare`, `history`, `export`, `import`) read them
//! back, through the real binary under QEMU.

use std::path::Path;
use std::process::Output;

use vmbench_e2e::boot::BootTest;
use vmbench_e2e::{dump, vmbench_bin};

/// `vmbench ARGS` with the results store at `store`.
fn with_store(store: &Path, args: &[&str]) -> Output {
    std::process::Command::new(vmbench_bin())
        .args(args)
        .env("VMBENCH_STORE", store)
        .env("VMBENCH_AGENT", vmbench_e2e::agent_bin())
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "{}", dump(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_boot_is_stored_and_read_back_by_every_store_command() {
    let Some(test) = BootTest::start("a_boot_is_stored_and_read_back_by_every_store_command")
    else {
        return;
    };
    let store = test.dir().join("results.db");
    let out_dir = test.out_dir();
    let booted = with_store(
        &store,
        &[
            "boot",
            "--backend",
            "qemu",
            "--runs",
            "2",
            "--tag",
            "kernel=test",
            "--out",
            out_dir.to_str().unwrap(),
        ],
    );
    assert!(booted.status.success(), "{}", dump(&booted));
    let said = String::from_utf8_lossy(&booted.stderr);
    assert!(said.contains("stored as run"), "{said}");

    let listed = stdout(&with_store(&store, &["runs", "--where", "kernel=test"]));
    assert!(
        listed.contains("kernel=test") && listed.contains("1 run(s)"),
        "{listed}"
    );
    let id = listed
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let shown = stdout(&with_store(&store, &["runs", "show", &id]));
    assert!(
        shown.contains("phase.total") && shown.contains("serial.log"),
        "{shown}"
    );

    // Every raw sample: one line per (VM, metric), both rounds.
    let csv = stdout(&with_store(&store, &["export"]));
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert!(
        rows.iter().filter(|r| r.contains(",phase.total,")).count() == 2,
        "{csv}"
    );
    assert!(rows.iter().all(|r| r.ends_with("kernel=test")), "{csv}");

    // The same run imported again, then compared with its results.json: no metric moved.
    let results = out_dir.join("results.json");
    let imported = stdout(&with_store(
        &store,
        &["import", results.to_str().unwrap(), "--tag", "copy=yes"],
    ));
    let copy = imported.trim();
    let compared = stdout(&with_store(
        &store,
        &[
            "compare",
            results.to_str().unwrap(),
            copy,
            "--format",
            "json",
            "--fail-on",
            "regression",
        ],
    ));
    let verdicts: serde_json::Value = serde_json::from_str(&compared).unwrap();
    let rows = verdicts["rows"].as_array().unwrap();
    assert!(
        rows.iter().any(|r| r["name"] == "phase.total"),
        "{verdicts}"
    );
    assert!(
        rows.iter()
            .all(|r| r["ratio"] == 1.0 && r["verdict"] != "regression"),
        "{verdicts}"
    );

    let history = stdout(&with_store(&store, &["history", "phase.total"]));
    assert!(history.contains("phase.total: 2 run(s)"), "{history}");
    let unknown = with_store(&store, &["history", "no.such.metric"]);
    assert_eq!(unknown.status.code(), Some(2), "{}", dump(&unknown));
}

#[test]
fn a_store_that_fails_is_a_warning_not_a_failed_run() {
    let Some(test) = BootTest::start("a_store_that_fails_is_a_warning_not_a_failed_run") else {
        return;
    };
    let out_dir = test.out_dir();
    // A directory where the SQLite file should be: it cannot be opened.
    let store = test.dir().join("a-directory");
    std::fs::create_dir(&store).unwrap();
    let out = with_store(
        &store,
        &[
            "boot",
            "--backend",
            "qemu",
            "--out",
            out_dir.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", dump(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("warning: the run was not stored"), "{said}");
    assert_eq!(
        said.lines().filter(|l| l.contains("not stored")).count(),
        1,
        "{said}"
    );
    assert!(out_dir.join("results.json").is_file());
}
