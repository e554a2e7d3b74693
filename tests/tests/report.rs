//! End to end: `vmbench report` draws a real qemu run, and a real browser
//! (Debian's headless Chromium, which scripts/setup.sh installs) renders the
//! HTML page: one bar group per VM, the axis, no parse error; its screenshot
//! is kept under `target/` as an artefact. The trace holds every field the
//! trace-event format requires.

use std::path::{Path, PathBuf};
use std::process::Command;

use vmbench_e2e::boot::BootTest;
use vmbench_e2e::{dump, skip_unless_ci, vmbench, workspace};

/// Debian's `chromium`, or `None` (after printing why, or failing under CI).
fn chromium(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("chromium"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        skip_unless_ci(
            test,
            "chromium is not installed (scripts/setup.sh installs it: apt-get install chromium)",
        );
    }
    found
}

/// Runs headless Chromium on `page` with `args`, as a process of its own.
fn headless(chromium: &Path, profile: &Path, page: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(chromium);
    cmd.args(["--headless", "--disable-gpu", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()));
    // Chromium refuses to run as root inside its sandbox.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        cmd.arg("--no-sandbox");
    }
    cmd.output().expect("run chromium")
}

#[test]
fn the_html_report_of_a_real_run_renders_in_chromium() {
    let test = "the_html_report_of_a_real_run_renders_in_chromium";
    let Some(chromium) = chromium(test) else {
        return;
    };
    let Some(boot) = BootTest::start(test) else {
        return;
    };
    let out_dir = boot.out_dir();
    let out = vmbench(&[
        "boot",
        "--backend",
        "qemu",
        "--vms",
        "2",
        "--no-store",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", dump(&out));
    let html = boot.dir().join("report.html");
    let svg = boot.dir().join("timeline.svg");
    let trace = boot.dir().join("trace.json");
    let out = vmbench(&[
        "report",
        out_dir.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", dump(&out));

    // The trace: every event with name, ph, ts, pid, tid; dur on slices.
    let t: serde_json::Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    let events = t["traceEvents"].as_array().expect("traceEvents");
    for e in events {
        for field in ["name", "ph", "ts", "pid", "tid"] {
            assert!(e.get(field).is_some(), "{field} missing in {e}");
        }
        if e["ph"] == "X" {
            assert!(e["dur"].as_f64().is_some_and(|d| d >= 0.0), "{e}");
        }
    }
    let pids: std::collections::BTreeSet<u64> = events
        .iter()
        .filter(|e| e["ph"] == "X")
        .map(|e| e["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(pids.len(), 2, "one process per VM");

    // The page, as Chromium parsed and laid it out.
    let profile = tempfile::tempdir().unwrap();
    let dom = headless(&chromium, profile.path(), &html, &["--dump-dom"]);
    let text = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.status.success() && text.contains("</html>"),
        "{}",
        dump(&dom)
    );
    assert_eq!(
        text.matches(r#"<g class="vm""#).count(),
        2,
        "one bar group per VM: {text}"
    );
    assert_eq!(
        text.matches(r#"<g class="axis">"#).count(),
        1,
        "the timeline's axis"
    );
    assert!(
        text.contains(r#"data-phase="userspace""#),
        "a userspace bar"
    );
    assert!(
        !text.contains("parsererror") && !text.contains("<script"),
        "{text}"
    );
    for section in [
        "timeline",
        "systemd",
        "initcalls",
        "exit-rate",
        "benchmarks",
        "ab",
    ] {
        assert!(text.contains(&format!("id=\"{section}\"")), "{section}");
    }

    // The screenshot, kept as an artefact.
    let png = workspace().join("target/report-e2e.png");
    let _ = std::fs::remove_file(&png);
    let shot = headless(
        &chromium,
        profile.path(),
        &html,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1100,900",
        ],
    );
    assert!(shot.status.success(), "{}", dump(&shot));
    let bytes = std::fs::read(&png).expect("the screenshot");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 1000);
    println!("screenshot: {}", png.display());
}
