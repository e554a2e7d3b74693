//! End to end: the vmexit suite's freestanding guest (vmexit-guest/) on
//! both backends here:
//!
//! - vmbench's own VMM with 2 vCPUs (`vmbench vmm --vcpus 2`), which on
//!   this kind of host runs on a KVM that emulates every guest instruction;
//! - QEMU microvm under TCG with `-smp 2`.
//!
//! Each run's report is read strictly (`vmbench_e2e::vmexit`): a hello, one
//! line per benchmark asked for, `done`; an `ok` line with a sane
//! calibration; anything else with a reason. On both, cpuid, the two port
//! reads, the MMIO read and the cross-vCPU IPI must measure. On our VMM the
//! account (vmm.json) must hold each benchmark's window, with the port read
//! going to userspace once per operation and the in-kernel port read never
//! reaching it. A fault or a hang fails its benchmark, its window is closed,
//! and the suite goes on.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vmbench_e2e::elf::{assert_no_sse, assert_static_at_1_mib_with_both_entries};
use vmbench_e2e::vmexit::{built_vmexit_guest, check_suite, parse, Report, BENCHMARKS};
use vmbench_e2e::vmm::{vmm_command, vmm_json};
use vmbench_e2e::vsock::{find_program, KillOnDrop};
use vmbench_e2e::{have_kvm, skip_unless_ci};

/// The whole suite with a short budget takes seconds on either backend;
/// this only catches a hang.
const VM_TIMEOUT: Duration = Duration::from_secs(240);
/// Short budgets: the tests check the report, not the figures.
const QUICK: &str = "vmexit.budget_ms=300";
/// What both backends must measure here.
const MUST_MEASURE: [&str; 5] = [
    "cpuid",
    "inl_from_vmm",
    "inl_from_kernel",
    "mmio_read",
    "ipi_cross",
];
/// The ELCR (0x4D0), as vmm.json names ports.
const ELCR_PORT: &str = "1232";

/// A run's serial log, the VMM's log and how long it took.
struct Run {
    serial: String,
    log: String,
    wall: Duration,
}

impl Run {
    fn report(&self) -> Report {
        parse(&self.serial).unwrap_or_else(|e| panic!("{e}\n{}", self.logs()))
    }

    fn logs(&self) -> String {
        format!("--- serial.log\n{}\n--- vmm log\n{}", self.serial, self.log)
    }

    fn check(&self, result: Result<(), String>) {
        if let Err(e) = result {
            panic!("{e}\n{}", self.logs());
        }
    }
}

/// Runs `command`, whose serial log goes to `dir/serial.log`, to its end.
fn run(name: &str, mut command: Command, dir: &Path) -> Run {
    let log_path = dir.join("vm.log");
    let log = std::fs::File::create(&log_path).unwrap();
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let started = Instant::now();
    let mut vm = KillOnDrop::spawn(name, &mut command).unwrap();
    let status = vm.wait_timeout(VM_TIMEOUT);
    let run = Run {
        serial: std::fs::read_to_string(dir.join("serial.log")).unwrap_or_default(),
        log: std::fs::read_to_string(&log_path).unwrap_or_default(),
        wall: started.elapsed(),
    };
    match status {
        Ok(status) if status.success() => run,
        Ok(status) => panic!("{name} ended with {status}\n{}", run.logs()),
        Err(e) => panic!("{e}\n{}", run.logs()),
    }
}

/// `vmbench vmm` with `vcpus` vCPUs, a virtio-vsock device (the MMIO
/// benchmark's device) when `device`, entered at `entry`.
fn under_vmbench_vmm(
    test: &str,
    dir: &Path,
    cmdline: &str,
    vcpus: u32,
    device: bool,
    entry: &str,
) -> Option<Run> {
    let guest = built_vmexit_guest(test)?;
    if !have_kvm(test) {
        return None;
    }
    let mut command = vmm_command(&guest, dir);
    command.args(["--mem-mib", "64", "--entry", entry, "--cmdline", cmdline]);
    command.args(["--vcpus", &vcpus.to_string()]);
    if device {
        command.args(["--vsock-cid", "3"]);
    }
    Some(run("vmbench vmm", command, dir))
}

/// QEMU microvm under TCG, `-smp smp`, with a virtio-mmio device (an entropy
/// source, which needs no backend) when `device`; QEMU puts it on the guest's
/// command line (`virtio_mmio.device=`).
fn under_qemu(test: &str, dir: &Path, cmdline: &str, smp: u32, device: bool) -> Option<Run> {
    let guest = built_vmexit_guest(test)?;
    let Some(qemu) = find_program("qemu-system-x86_64") else {
        skip_unless_ci(
            test,
            "qemu-system-x86_64 is not installed (scripts/setup.sh)",
        );
        return None;
    };
    let mut command = Command::new(qemu);
    command
        .args(["-M", "microvm,acpi=off", "-accel", "tcg", "-m", "64"])
        .args(["-smp", &smp.to_string()])
        .args(["-nographic", "-no-reboot", "-nodefaults"])
        .arg("-serial")
        .arg(format!("file:{}", dir.join("serial.log").display()));
    if device {
        command.args(["-device", "virtio-rng-device"]);
    }
    command.arg("-kernel").arg(guest).args(["-append", cmdline]);
    Some(run("qemu", command, dir))
}

/// Checks the benchmarks every backend here must measure did.
fn check_measured(run: &Run, report: &Report) {
    for name in MUST_MEASURE {
        let bench = report.bench(name).unwrap();
        if bench.status != "ok" {
            panic!("{name} did not measure: {bench:?}\n{}", run.logs());
        }
    }
}

#[test]
fn the_whole_suite_under_vmbench_vmm_with_2_vcpus() {
    let test = "the_whole_suite_under_vmbench_vmm_with_2_vcpus";
    let dir = tempfile::tempdir().unwrap();
    let Some(run) = under_vmbench_vmm(test, dir.path(), QUICK, 2, true, "pvh") else {
        return;
    };
    let report = run.report();
    run.check(check_suite(&report, &BENCHMARKS));
    check_measured(&run, &report);
    assert_eq!(report.hello_number("cpus"), Ok(2), "{}", run.logs());
    println!(
        "vmbench vmm: the suite took {:.1} s; median cycles: {}",
        run.wall.as_secs_f64(),
        medians(&report)
    );

    // The account: every benchmark that measured has its window, ended;
    // in it, each port read of inl_from_vmm and each MMIO read went to the
    // VMM's userspace once, and cpuid and the ELCR read never did (nor did
    // the ELCR anywhere in the run).
    let account = vmm_json(dir.path());
    assert_eq!(account["end"]["kind"], "reset", "{account}");
    for bench in report.benches.iter().filter(|b| b.status == "ok") {
        let exits = window_exits(&account, bench.number("window").unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}\n{account}", bench.name));
        let ops = bench.number("ops_in_window").unwrap();
        let count = |kind: &str| exits[kind]["count"].as_u64().unwrap_or(0);
        match bench.name.as_str() {
            "inl_from_vmm" => assert_eq!(count("io_in"), ops, "{exits}"),
            "mmio_read" => assert_eq!(count("mmio_read"), ops, "{exits}"),
            "cpuid" | "inl_from_kernel" => assert_eq!(exits, &serde_json::json!({})),
            _ => {}
        }
    }
    let elcr_exits: u64 = account["vcpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            v["exits"]["by_port"][ELCR_PORT]["count"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(elcr_exits, 0, "{}", account["vcpus"]);
}

/// The userspace exits of window `id` in a vmm.json, which must hold it
/// once, ended.
fn window_exits(account: &serde_json::Value, id: u64) -> Result<&serde_json::Value, String> {
    let windows: Vec<_> = account["windows"]
        .as_array()
        .ok_or("no windows in vmm.json")?
        .iter()
        .filter(|w| w["id"] == id)
        .collect();
    match windows[..] {
        [window] if !window["end_ns"].is_null() => Ok(&window["exits"]),
        [_] => Err(format!("window {id} never ended")),
        _ => Err(format!("{} windows with id {id}", windows.len())),
    }
}

#[test]
fn the_whole_suite_under_qemu_with_2_vcpus() {
    let test = "the_whole_suite_under_qemu_with_2_vcpus";
    let dir = tempfile::tempdir().unwrap();
    let Some(run) = under_qemu(test, dir.path(), QUICK, 2, true) else {
        return;
    };
    let report = run.report();
    run.check(check_suite(&report, &BENCHMARKS));
    check_measured(&run, &report);
    assert_eq!(report.hello_number("cpus"), Ok(2), "{}", run.logs());
    // TCG has no hypervisor to call: the instruction raises #UD.
    let hypercall = report.bench("vmcall").unwrap();
    assert_eq!(hypercall.status, "unavailable", "{}", run.logs());
    assert!(hypercall.why().contains("#UD"), "{}", run.logs());
    println!(
        "QEMU/TCG: the suite took {:.1} s; median cycles: {}",
        run.wall.as_secs_f64(),
        medians(&report)
    );
}

/// `name=median` of every benchmark that measured, for the test's output.
fn medians(report: &Report) -> String {
    report
        .benches
        .iter()
        .filter(|b| b.status == "ok")
        .map(|b| format!("{}={:.0}", b.name, b.median_cycles()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The test aids make cpuid spin for ever and wbinvd touch unmapped memory
/// once their windows are open: the watchdog ends the first, the IDT
/// catches the second, both are `failed` with what happened, and the
/// benchmarks around them still run.
fn check_faults_are_caught(run: &Run) {
    let report = run.report();
    let selected = ["cpuid", "inl_from_kernel", "wbinvd", "toggle_cr0_wp"];
    run.check(check_suite(&report, &selected));
    let status = |name: &str| report.bench(name).unwrap().clone();
    let (hung, faulted) = (status("cpuid"), status("wbinvd"));
    assert_eq!(hung.status, "failed", "{}", run.logs());
    assert!(hung.why().contains("watchdog"), "{}", run.logs());
    assert_eq!(faulted.status, "failed", "{}", run.logs());
    assert!(faulted.why().contains("#PF (vector 14"), "{}", run.logs());
    for name in ["inl_from_kernel", "toggle_cr0_wp"] {
        assert_eq!(status(name).status, "ok", "{}", run.logs());
    }
}

const FAULTS: &str = "vmexit.bench=cpuid,inl_from_kernel,wbinvd,toggle_cr0_wp \
                      vmexit.test_hang=cpuid vmexit.test_fault=wbinvd vmexit.budget_ms=200";

#[test]
fn a_hang_and_a_fault_fail_their_benchmarks_only_under_vmbench_vmm() {
    let test = "a_hang_and_a_fault_fail_their_benchmarks_only_under_vmbench_vmm";
    let dir = tempfile::tempdir().unwrap();
    if let Some(run) = under_vmbench_vmm(test, dir.path(), FAULTS, 2, false, "pvh") {
        check_faults_are_caught(&run);
        // The failed benchmarks' windows were closed all the same.
        let account = vmm_json(dir.path());
        for (name, id) in [("cpuid", 0), ("wbinvd", 13)] {
            if let Err(e) = window_exits(&account, id) {
                panic!("{name}: {e}\n{account}");
            }
        }
    }
}

#[test]
fn a_hang_and_a_fault_fail_their_benchmarks_only_under_qemu() {
    let test = "a_hang_and_a_fault_fail_their_benchmarks_only_under_qemu";
    let dir = tempfile::tempdir().unwrap();
    if let Some(run) = under_qemu(test, dir.path(), FAULTS, 2, false) {
        check_faults_are_caught(&run);
    }
}

/// One vCPU and no virtio device, entered through the 64-bit Linux entry:
/// the cross-vCPU IPI and the MMIO read cannot run and say why.
#[test]
fn one_vcpu_and_no_device_make_two_benchmarks_unavailable_under_vmbench_vmm() {
    let test = "one_vcpu_and_no_device_make_two_benchmarks_unavailable_under_vmbench_vmm";
    let dir = tempfile::tempdir().unwrap();
    let cmdline = "vmexit.bench=mmio_read,ipi_cross";
    let Some(run) = under_vmbench_vmm(test, dir.path(), cmdline, 1, false, "linux64") else {
        return;
    };
    let report = run.report();
    run.check(check_suite(&report, &["mmio_read", "ipi_cross"]));
    assert_eq!(report.hello_number("cpus"), Ok(1), "{}", run.logs());
    for (name, why) in [
        ("mmio_read", "virtio_mmio.device="),
        ("ipi_cross", "INIT-SIPI-SIPI"),
    ] {
        let bench = report.bench(name).unwrap();
        assert_eq!(bench.status, "unavailable", "{}", run.logs());
        assert!(bench.why().contains(why), "{}", run.logs());
    }
}

/// A name that is no benchmark: one error line naming it, no suite.
#[test]
fn an_unknown_benchmark_is_one_error_line_under_qemu() {
    let test = "an_unknown_benchmark_is_one_error_line_under_qemu";
    let dir = tempfile::tempdir().unwrap();
    let Some(run) = under_qemu(test, dir.path(), "vmexit.bench=cpuid,cpuid2", 1, false) else {
        return;
    };
    let report = run.report();
    assert_eq!(
        report.error.as_deref(),
        Some("vmexit.bench names no benchmark cpuid2"),
        "{}",
        run.logs()
    );
    assert!(report.hello.is_none() && report.benches.is_empty() && !report.done);
}

#[test]
fn guest_elf_is_one_static_segment_at_1_mib_with_both_entries() {
    let test = "guest_elf_is_one_static_segment_at_1_mib_with_both_entries";
    if let Some(guest) = built_vmexit_guest(test) {
        assert_static_at_1_mib_with_both_entries(&guest);
    }
}

#[test]
fn guest_code_uses_no_sse_registers() {
    let test = "guest_code_uses_no_sse_registers";
    if let Some(guest) = built_vmexit_guest(test) {
        assert_no_sse(test, &guest);
    }
}
