//! Helpers for vmbench's end-to-end tests: find the real binaries, decide
//! whether a test can run here, and read results.json.
//!
//! A test that needs something this machine lacks prints `SKIPPED: <reason>`
//! and returns; under CI (`CI=true`) a missing package or kernel is a failure
//! instead, since the setup script installs them. Only native KVM may be
//! skipped there: no install step can provide it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `vmbench` binary of the same profile as this test.
pub fn vmbench_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("VMBENCH_BIN") {
        return PathBuf::from(path);
    }
    // target/<profile>/deps/<test> -> target/<profile>/vmbench
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join("vmbench");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first",
        bin.display()
    );
    bin
}

/// The static guest agent built by scripts/build-agent.sh.
pub fn agent_bin() -> PathBuf {
    workspace().join("target/x86_64-unknown-linux-gnu/release/vmbench-init")
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether `vmbench doctor` says guests can boot here. When they cannot, prints
/// `SKIPPED: <reason>` and returns false, or panics under CI.
pub fn can_boot_guests(test: &str) -> bool {
    let out = Command::new(vmbench_bin())
        .arg("doctor")
        .output()
        .expect("run vmbench doctor");
    if out.status.success() && agent_bin().is_file() {
        return true;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let missing: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("MISSING") || l.contains("fix:"))
        .collect();
    let reason = if agent_bin().is_file() {
        format!("vmbench doctor: {}", missing.join("; "))
    } else {
        format!(
            "the static agent {} is not built (scripts/build-agent.sh)",
            agent_bin().display()
        )
    };
    assert!(
        !in_ci(),
        "{test}: under CI every install step has run, yet: {reason}"
    );
    println!("SKIPPED: {test}: {reason}");
    false
}

/// Runs vmbench with `args`; returns its output.
pub fn vmbench(args: &[&str]) -> Output {
    Command::new(vmbench_bin())
        .args(args)
        .env("VMBENCH_AGENT", agent_bin())
        .output()
        .expect("run vmbench")
}

pub fn results(out_dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(out_dir.join("results.json")).expect("results.json exists");
    serde_json::from_str(&text).expect("results.json is JSON")
}

/// A readable dump of a command's output, for assertion messages.
pub fn dump(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
