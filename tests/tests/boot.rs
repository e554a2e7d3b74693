//! End to end: the real `vmbench` binary boots real guests under QEMU (TCG on
//! machines without native KVM) and its results.json says what happened.

use vmbench_e2e::boot::{self, BootTest};
use vmbench_e2e::{assert_follows_its_document, dump, kvm_verdict, one_line_error, results};

#[test]
fn two_vms_boot_ok_with_plausible_timelines() {
    let Some(test) = BootTest::start("two_vms_boot_ok_with_plausible_timelines") else {
        return;
    };
    let out_dir = test.out_dir();
    let out = boot::run("qemu", &out_dir, &["--vms", "2", "--timeout-s", "120"]);
    assert!(out.status.success(), "{}", dump(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("2/2 VMs ok"), "{}", dump(&out));

    let r = results(&out_dir);
    assert_eq!(r["finished"], true);
    let env = &r["environment"];
    assert_eq!(env["backend"], "qemu");
    // --accel auto: KVM where it runs guest code natively, else TCG (QEMU
    // on a KVM that emulates guest code would be slower than TCG).
    let (native, verdict) = kvm_verdict();
    let accel = if native { "kvm-native" } else { "tcg" };
    assert_eq!(env["accel"], accel, "{verdict}");
    for key in [
        "host_cpu",
        "host_kernel",
        "guest_kernel_sha256",
        "initramfs_sha256",
        "vmbench_version",
    ] {
        assert!(
            !env[key].as_str().unwrap_or("").is_empty(),
            "environment.{key} is empty"
        );
    }
    assert_eq!(env["guest_kernel_sha256"].as_str().unwrap().len(), 64);

    let vms = r["vms"].as_array().unwrap();
    assert_eq!(vms.len(), 2);
    for (i, vm) in vms.iter().enumerate() {
        assert_eq!(vm["id"], i as u64);
        assert_eq!(vm["status"], "ok", "vm {i}: {vm}");
        assert!(vm.get("error").is_none());
        let p = &vm["phases_ms"];
        let total = p["total"].as_f64().unwrap();
        let kernel = p["guest_kernel"].as_f64().unwrap();
        let userspace = p["userspace"]
            .as_f64()
            .or(p["guest_userspace"].as_f64())
            .unwrap();
        let shutdown = p["shutdown"].as_f64().unwrap();
        // Plausible: every phase positive, the parts within the whole (the
        // whole is under the timeout: the VM is ok).
        assert!(
            kernel > 0.0 && userspace > 0.0 && shutdown >= 0.0,
            "vm {i}: {p}"
        );
        assert!(
            kernel + userspace <= total,
            "vm {i}: guest phases exceed the host's total: {p}"
        );
        let h = &vm["host_ns"];
        let spawn = h["spawn"].as_u64().unwrap();
        let ready = h["ready"].as_u64().unwrap();
        let exit = h["exit"].as_u64().unwrap();
        assert!(spawn < ready && ready <= exit, "vm {i}: {h}");
        assert!(
            vm["guest"]["kernel_release"]
                .as_str()
                .unwrap()
                .starts_with("6.1"),
            "{vm}"
        );
        let dir = std::path::Path::new(vm["dir"].as_str().unwrap());
        let serial = std::fs::read_to_string(dir.join("serial.log")).unwrap();
        assert!(
            serial.contains("Linux version"),
            "vm {i} serial.log: {serial}"
        );
        assert!(
            serial.contains("vmbench-init: event=reported"),
            "vm {i} serial.log: {serial}"
        );
    }
    let agg = &r["aggregate"];
    assert_eq!(agg["ok"], 2);
    assert_eq!(agg["total_ms"]["n"], 2);
    assert!(agg["all_ready_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn results_json_is_what_its_document_says() {
    let Some(test) = BootTest::start("results_json_is_what_its_document_says") else {
        return;
    };
    let out_dir = test.out_dir();
    let out = boot::run("qemu", &out_dir, &["--vms", "2", "--json"]);
    assert!(out.status.success(), "{}", dump(&out));
    let r = results(&out_dir);
    assert_follows_its_document(&r, "results-json.md");
    // --json prints the file itself.
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, r);
}

/// Guests keep a precise clock: under TCG the kernel gets the host's TSC
/// frequency and keeps the TSC even on a loaded host (four VMs on this
/// host's cores), instead of falling back to jiffies and 4 ms steps.
#[test]
fn guests_keep_a_precise_clock() {
    let Some(test) = BootTest::start("guests_keep_a_precise_clock") else {
        return;
    };
    let out_dir = test.out_dir();
    let out = boot::run("qemu", &out_dir, &["--vms", "4", "--timeout-s", "120"]);
    assert!(out.status.success(), "{}", dump(&out));
    let r = results(&out_dir);
    let env = &r["environment"];
    if env["accel"] == "tcg" {
        let khz = env["host_tsc_khz"].as_u64().unwrap();
        let cmdline = env["kernel_cmdline"].as_str().unwrap();
        assert!(
            cmdline.contains(&format!("tsc_early_khz={khz} tsc=reliable")),
            "{cmdline}"
        );
    }
    let mut guest_ms = Vec::new();
    for vm in r["vms"].as_array().unwrap() {
        let clock = vm["guest_ns"]["clocksource"].as_str().unwrap();
        assert!(
            !clock.is_empty() && !clock.contains("jiffies"),
            "vm-{} kept {clock:?}: {vm}",
            vm["id"]
        );
        let warnings = vm["warnings"].to_string();
        assert!(!warnings.contains("clocksource"), "{warnings}");
        for phase in ["guest_kernel", "guest_userspace"] {
            guest_ms.push(vm["phases_ms"][phase].as_f64().unwrap());
        }
    }
    // A jiffies clock moves in steps of a jiffy (4.000 25 ms here): every
    // guest time then lies within a few µs of a multiple of 4 ms, a TSC's
    // anywhere.
    let off_the_jiffy = |ms: &f64| (ms - 4.0 * (ms / 4.0).round()).abs() > 0.05;
    assert!(guest_ms.iter().any(off_the_jiffy), "{guest_ms:?}");
}

#[test]
fn rounds_are_samples_and_warm_up_rounds_stay_out_of_the_statistics() {
    let Some(test) =
        BootTest::start("rounds_are_samples_and_warm_up_rounds_stay_out_of_the_statistics")
    else {
        return;
    };
    let out_dir = test.out_dir();
    let out = boot::run("qemu", &out_dir, &["--runs", "2", "--warmup", "1"]);
    assert!(out.status.success(), "{}", dump(&out));
    let r = results(&out_dir);
    assert_follows_its_document(&r, "results-json.md");
    assert_eq!(
        (
            r["environment"]["runs"].as_u64(),
            r["environment"]["warmup"].as_u64()
        ),
        (Some(2), Some(1))
    );
    let vms = r["vms"].as_array().unwrap();
    let rounds: Vec<(u64, bool)> = vms
        .iter()
        .map(|v| (v["round"].as_u64().unwrap(), v["warmup"] == true))
        .collect();
    assert_eq!(rounds, [(0, true), (1, false), (2, false)]);
    // One VM at a time: each one's spawn after the previous one's exit.
    for pair in vms.windows(2) {
        assert!(pair[1]["host_ns"]["spawn"].as_u64() > pair[0]["host_ns"]["exit"].as_u64());
    }
    let agg = &r["aggregate"];
    assert_eq!(
        (agg["vms"].as_u64(), agg["total_ms"]["n"].as_u64()),
        (Some(2), Some(2)),
        "{agg}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("0 (warm-up)"), "{stdout}");
}

#[test]
fn guest_that_never_reports_is_a_timeout() {
    let Some(test) = BootTest::start("guest_that_never_reports_is_a_timeout") else {
        return;
    };
    let out_dir = test.out_dir();
    // The agent reports to a port nobody listens on, and keeps trying for
    // longer than the host waits.
    let out = boot::run(
        "qemu",
        &out_dir,
        &[
            "--vms",
            "1",
            "--timeout-s",
            "8",
            "--append",
            "vmbench.port=4321 vmbench.connect_timeout_ms=600000",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", dump(&out));
    let r = results(&out_dir);
    let vm = &r["vms"][0];
    assert_eq!(vm["status"], "timeout", "{vm}");
    let error = vm["error"].as_str().unwrap();
    assert!(
        error.contains("No report from the guest within 8 s"),
        "{error}"
    );
    // The tail of the serial log is in the error: here the kernel's own lines.
    assert!(
        error.contains("serial log ends:") && !error.contains("(serial log is empty)"),
        "{error}"
    );
    assert_follows_its_document(&r, "results-json.md");
    assert_eq!(r["aggregate"]["ok"], 0);
}

#[test]
fn a_guests_escape_sequences_never_reach_the_terminal() {
    let Some(test) = BootTest::start("a_guests_escape_sequences_never_reach_the_terminal") else {
        return;
    };
    // A root device named with escape sequences (clear screen, a colour, a
    // window title) and a right-to-left override: the agent's failure
    // quotes it, in its `Failed` message and on the console.
    let hostile = "/dev/vd\u{1b}[2J\u{1b}[31mred\u{1b}]0;owned\u{7}\u{202e}";
    let shown = "/dev/vd\\x1b[2J\\x1b[31mred\\x1b]0;owned\\x07\\u{202e} did not appear";
    let root = format!("vmbench.root={hostile} vmbench.root_wait_ms=100");
    // Reported through the agent's Failed message; then, with the host out
    // of reach, only on the console, whose last lines the error quotes.
    let unreachable = format!("{root} vmbench.port=4321 vmbench.connect_timeout_ms=300");
    for (run, append, via) in [
        ("reported", root.as_str(), "The guest agent failed"),
        ("console", unreachable.as_str(), "serial log ends"),
    ] {
        let out_dir = test.dir().join(run);
        let out = boot::run("qemu", &out_dir, &["--vms", "1", "--append", append]);
        assert_eq!(out.status.code(), Some(1), "{}", dump(&out));
        let printed = [&out.stdout[..], &out.stderr[..]].concat();
        let printed = String::from_utf8_lossy(&printed);
        assert!(
            !printed.contains(['\u{1b}', '\u{7}', '\u{202e}']),
            "{run}: a control character reached the terminal: {printed:?}"
        );
        let error_line = printed
            .lines()
            .find(|l| l.starts_with("vm-0 failed:"))
            .unwrap_or_else(|| panic!("{run}: no error line: {printed}"));
        assert!(
            error_line.contains(via) && error_line.contains(shown),
            "{run}: {error_line}"
        );
        // results.json keeps what the guest wrote, as it wrote it.
        let r = results(&out_dir);
        let error = r["vms"][0]["error"].as_str().unwrap();
        assert!(error.contains(hostile), "{run}: {error:?}");
    }
}

#[test]
fn corrupt_initramfs_is_a_clear_error() {
    let Some(test) = BootTest::start("corrupt_initramfs_is_a_clear_error") else {
        return;
    };
    let out_dir = test.out_dir();
    let bad = test.dir().join("bad.cpio.gz");
    // A valid gzip header followed by garbage, as a truncated download would be.
    std::fs::write(
        &bad,
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03garbage-garbage",
    )
    .unwrap();
    let out = boot::run("qemu", &out_dir, &["--initramfs", bad.to_str().unwrap()]);
    let stderr = one_line_error(&out, 2);
    assert!(stderr.starts_with("vmbench: error: Initramfs"), "{stderr}");
    assert!(
        stderr.contains("bad.cpio.gz") && stderr.contains("corrupt"),
        "{stderr}"
    );
    assert!(!out_dir.join("results.json").exists(), "no run was started");
}

#[test]
fn missing_kernel_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = boot::run("qemu", dir.path(), &["--kernel", "/nonexistent/vmlinux"]);
    // The kernel is checked before any backend is looked for: the one line
    // names the kernel, whatever else this host lacks.
    let stderr = one_line_error(&out, 2);
    assert!(
        stderr.starts_with("vmbench: error: ") && stderr.contains("/nonexistent/vmlinux"),
        "{stderr}"
    );
}

/// Every number out of its range is refused before anything starts: one
/// line naming the option and the range, exit 2, no panic (`--timeout-s
/// 1e20` panicked, `1e19` overflowed a deadline, and `--vms` × `--runs`
/// could wrap to a run of no VMs).
#[test]
fn out_of_range_options_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("run");
    for (args, expected) in [
        (
            &["--timeout-s", "1e20"][..],
            "'--timeout-s <TIMEOUT_S>': must be from 0.001 to 86400 seconds",
        ),
        (
            &["--timeout-s", "1e19"],
            "must be from 0.001 to 86400 seconds",
        ),
        (&["--vms", "0"], "'--vms <VMS>': 0 is not in 1..=1024"),
        (
            &["--vms", "65536", "--runs", "65536"],
            "65536 is not in 1..=1024",
        ),
        (
            &["--vms", "1024", "--runs", "10"],
            "is 10240 VMs in all, more than the 10000 a run may have",
        ),
        (
            &["--mem-mib", "4294967295"],
            "4294967295 is not in 64..=262144",
        ),
        (&["--vcpus=-1"], "'--vcpus <VCPUS>'"),
        (
            &["--port", "4294967295"],
            "4294967295 is not in 1..=4294967294",
        ),
    ] {
        let out = boot::run("qemu", &out_dir, args);
        let stderr = one_line_error(&out, 2);
        assert!(
            stderr.starts_with("vmbench: error: ") && stderr.contains(expected),
            "{args:?}: {stderr}"
        );
        assert!(
            !out_dir.join("results.json").exists(),
            "{args:?} started a run"
        );
    }
    let vmm = vmbench_e2e::vmbench(&["vmm", "--kernel", "/k", "--vsock-cid", "2"]);
    let stderr = one_line_error(&vmm, 2);
    assert!(stderr.contains("2 is not in 3..=4294967294"), "{stderr}");
}
