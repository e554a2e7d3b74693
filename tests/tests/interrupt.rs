//! End to end: a run stopped by a signal in the middle keeps what it had.
//!
//! `vmbench boot` is interrupted while its VMs run — SIGINT under QEMU
//! (after the first VM ended, from overlays of a root disk), SIGTERM twice
//! under the kvm backend — and then: the exit status is the signal's
//! (130, 143), results.json is final (`finished`, `interrupted`, every VM
//! ended or `interrupted`, the aggregate of those that finished), the
//! overlays and sockets are gone, and no VMM, QEMU or vhost-device-vsock is
//! left running.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vmbench_e2e::boot::BootTest;
use vmbench_e2e::{agent_bin, dump, plain_base, results, test_store, vmbench, vmbench_bin};

/// Longer than any of these runs' VMs take to get where the test waits:
/// only a hang gets this far.
const HANG: Duration = Duration::from_secs(180);

/// `vmbench boot ARGS --out OUT`, its stderr lines sent to the returned channel.
fn start(args: &[&str], out: &Path) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(vmbench_bin())
        .arg("boot")
        .args(args)
        .arg("--out")
        .arg(out)
        .env("VMBENCH_AGENT", agent_bin())
        .env("VMBENCH_STORE", test_store())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vmbench");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// Waits for a stderr line that `wanted` accepts; the lines seen so far.
fn wait_for_line(lines: &mpsc::Receiver<String>, wanted: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + HANG;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let found = wanted(&line);
                seen.push(line);
                if found {
                    return seen;
                }
            }
            Err(_) => panic!(
                "the awaited line never came; stderr so far:\n{}",
                seen.join("\n")
            ),
        }
    }
}

fn signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) on our own child, not yet reaped.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
}

/// Every stderr line still to come, up to its end (vmbench's exit closes it).
fn rest_of(lines: &mpsc::Receiver<String>) -> Vec<String> {
    let deadline = Instant::now() + HANG;
    let mut rest = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => rest.push(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => return rest,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("stderr stayed open: {rest:?}"),
        }
    }
}

/// The child's exit, or a panic if it hangs.
fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + HANG;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("vmbench did not exit after the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Processes (other than this test) whose command line names `out`: the
/// VMMs, QEMUs and vhost-device-vsocks of the run all do.
fn processes_naming(out: &Path) -> Vec<String> {
    let needle = out.to_str().unwrap().as_bytes();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline.windows(needle.len()).any(|w| w == needle) {
            found.push(String::from_utf8_lossy(&cmdline).replace('\0', " "));
        }
    }
    found
}

/// What every interrupted run must leave: a final results.json whose VMs
/// ended or were interrupted, the aggregate of those that ended ok, no
/// overlay, no socket, no process. Returns the statuses.
fn assert_final(out: &Path, by: &str) -> Vec<String> {
    let r = results(out);
    assert_eq!(r["finished"], true, "results.json is final");
    assert_eq!(r["interrupted"], true);
    assert_eq!(r["interrupted_by"], by);
    let vms = r["vms"].as_array().unwrap();
    let statuses: Vec<String> = vms
        .iter()
        .map(|v| v["status"].as_str().unwrap().to_string())
        .collect();
    for (vm, status) in vms.iter().zip(&statuses) {
        assert_ne!(status, "running", "vm {} left running: {vm}", vm["id"]);
        if status == "interrupted" {
            let error = vm["error"].as_str().unwrap();
            assert!(error.contains(&format!("interrupted by {by}")), "{error}");
        }
        let dir = Path::new(vm["dir"].as_str().unwrap());
        for leftover in ["rootfs.qcow2", "vsock.sock", "marker.sock"] {
            assert!(
                !dir.join(leftover).exists(),
                "{} left behind",
                dir.join(leftover).display()
            );
        }
        if let Some(overlay) = vm.get("overlay").filter(|o| !o.is_null()) {
            assert_eq!(overlay["kept"], false, "{overlay}");
        }
    }
    assert!(statuses.iter().any(|s| s == "interrupted"), "{statuses:?}");
    let ok = statuses.iter().filter(|s| *s == "ok").count();
    assert_eq!(
        r["aggregate"]["ok"], ok as u64,
        "the aggregate is of the VMs that ended ok"
    );
    let left = processes_naming(out);
    assert!(left.is_empty(), "left running: {left:#?}");
    statuses
}

#[test]
fn ctrl_c_under_qemu_finalises_the_run_and_leaves_nothing_running() {
    let Some(test) =
        BootTest::start("ctrl_c_under_qemu_finalises_the_run_and_leaves_nothing_running")
    else {
        return;
    };
    let base = plain_base(test.dir());
    let out = test.out_dir();
    let args = [
        "--backend",
        "qemu",
        "--accel",
        "tcg",
        "--vms",
        "4",
        "--runs",
        "50",
    ];
    let mut args = args.to_vec();
    args.extend(["--rootfs", base.to_str().unwrap()]);
    let (mut child, lines) = start(&args, &out);
    // The first VM to end: the run is in its middle, with VMs still running.
    let seen = wait_for_line(&lines, |l| l.contains(" ok ["));
    signal(&child, libc::SIGINT);
    let status = wait_exit(&mut child);
    let rest = rest_of(&lines);
    assert_eq!(
        status.code(),
        Some(130),
        "{status}; stderr:\n{}\n{}",
        seen.join("\n"),
        rest.join("\n")
    );
    let said = rest.join("\n");
    assert!(said.contains("vmbench: interrupted by SIGINT"), "{said}");
    let statuses = assert_final(&out, "SIGINT");
    assert!(statuses.iter().any(|s| s == "ok"), "{statuses:?}");
    assert!(
        statuses.len() == 200,
        "every VM of every round is in results.json"
    );

    // Not stored by itself; imported on request, tagged as interrupted.
    let store = test.dir().join("results.db");
    let store_arg = ["--store", store.to_str().unwrap()];
    let results_json = out.join("results.json");
    let import = ["import", results_json.to_str().unwrap()];
    let imported = vmbench(&[&import[..], &store_arg].concat());
    assert!(imported.status.success(), "{}", dump(&imported));
    let id = String::from_utf8_lossy(&imported.stdout).trim().to_string();
    let runs = ["runs", "--where", "interrupted=SIGINT"];
    let listed = vmbench(&[&runs[..], &store_arg].concat());
    let listed_text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success()
            && listed_text.contains(&id[..8])
            && listed_text.contains("1 run(s)"),
        "{}",
        dump(&listed)
    );
}

#[test]
fn sigterm_twice_under_kvm_finalises_the_run_with_the_vmms_accounts() {
    let Some(test) = BootTest::start_with_kvm(
        "sigterm_twice_under_kvm_finalises_the_run_with_the_vmms_accounts",
    ) else {
        return;
    };
    let out = test.out_dir();
    let (mut child, lines) = start(&["--backend", "kvm", "--vms", "2", "--runs", "50"], &out);
    // Both VMs of the first round started (their progress lines come later
    // on a host whose KVM emulates guest code, where Linux takes seconds).
    let serial_log = |id: u32| out.join(format!("vm-{id}")).join("serial.log");
    let deadline = Instant::now() + HANG;
    while !(serial_log(0).exists() && serial_log(1).exists()) {
        assert!(Instant::now() < deadline, "the VMMs never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(&child, libc::SIGTERM);
    signal(&child, libc::SIGTERM);
    let status = wait_exit(&mut child);
    let said = rest_of(&lines);
    assert_eq!(
        status.code(),
        Some(143),
        "{status}; stderr:\n{}",
        said.join("\n")
    );
    assert_final(&out, "SIGTERM");
    let r = results(&out);
    for vm in r["vms"].as_array().unwrap() {
        // A VM that was running was stopped through the VMM's own SIGTERM
        // path, which writes its account; the others never started.
        if vm["host_ns"]["spawn"].is_null() {
            assert!(
                vm["error"].as_str().unwrap().starts_with("Not started"),
                "{vm}"
            );
            continue;
        }
        assert!(
            vm["exits"].is_object(),
            "vm {} has no VMM account: {}",
            vm["id"],
            vm["error"]
        );
    }
}
