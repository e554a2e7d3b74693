//! End to end: `vmbench bench` through the real binary — the vmexit suite
//! on our VMM (on this host's KVM, which emulates guest code) and under
//! QEMU/TCG, the micro and inter suites under QEMU/TCG, a benchmark that
//! hangs its guest, the exits attributed to each benchmark, `--list`,
//! `--csv`, results.json against its document, and the store's verdicts.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use vmbench_e2e::boot::BootTest;
use vmbench_e2e::{
    assert_follows_its_document, dump, one_line_error, results, skip_unless_ci, vmbench_bin,
    workspace,
};

/// The vmexit guest scripts/build-vmexit-guest.sh builds.
fn vmexit_guest() -> PathBuf {
    workspace().join("target/vmexit-guest/release/vmexit-guest")
}

/// Whether the vmexit guest is built; says why not (or fails under CI).
fn have_vmexit_guest(test: &str) -> bool {
    if vmexit_guest().is_file() {
        return true;
    }
    skip_unless_ci(
        test,
        &format!(
            "{} is not built (scripts/build-vmexit-guest.sh)",
            vmexit_guest().display()
        ),
    );
    false
}

/// `vmbench bench ARGS --out OUT` with the test's store.
fn bench(store: &Path, out: &Path, args: &[&str]) -> Output {
    Command::new(vmbench_bin())
        .arg("bench")
        .args(args)
        .args(["--out", out.to_str().unwrap()])
        .env("VMBENCH_STORE", store)
        .env("VMBENCH_AGENT", vmbench_e2e::agent_bin())
        .env("VMBENCH_VMEXIT_GUEST", vmexit_guest())
        .output()
        .expect("run vmbench bench")
}

fn vmbench(store: &Path, args: &[&str]) -> Output {
    Command::new(vmbench_bin())
        .args(args)
        .env("VMBENCH_STORE", store)
        .output()
        .expect("run vmbench")
}

/// The VMs of `suite` on `backend`.
fn vms<'a>(r: &'a Value, suite: &str, backend: &str) -> Vec<&'a Value> {
    r["vms"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["suite"] == suite && v["backend"] == backend)
        .collect()
}

/// A VM's benchmark called `name`.
fn benchmark<'a>(vm: &'a Value, name: &str) -> &'a Value {
    vm["benchmarks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {vm}"))
}

/// Every benchmark of `vm` has a status, and a reason when it is not ok;
/// an ok one has samples whose summary lies within its values.
fn each_benchmark_accounted_for(vm: &Value) {
    for b in vm["benchmarks"].as_array().unwrap() {
        let status = b["status"].as_str().unwrap();
        assert!(
            ["ok", "unavailable", "failed", "not_run"].contains(&status),
            "{b}"
        );
        if status == "ok" {
            let s = &b["samples"];
            let values = s["values_milli"].as_array().unwrap();
            assert!(!values.is_empty(), "{b}");
            let (min, median, max) = (
                s["min"].as_f64().unwrap(),
                s["median"].as_f64().unwrap(),
                s["max"].as_f64().unwrap(),
            );
            assert!(min <= median && median <= max, "{b}");
            assert!(s["iterations"].as_u64().unwrap() >= 1, "{b}");
            let share: f64 = s["peaks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["share"].as_f64().unwrap())
                .sum();
            assert!(share > 0.0 && share <= 1.0 + 1e-9, "{b}");
        } else {
            assert!(
                !b["why"].as_str().unwrap_or("").is_empty(),
                "a benchmark not ok says why: {b}"
            );
        }
    }
}

#[test]
fn list_names_every_benchmark_with_what_it_measures_and_its_exit() {
    let out = Command::new(vmbench_bin())
        .args(["bench", "--list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", dump(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for suite in ["vmexit suite:", "micro suite:", "inter suite:"] {
        assert!(text.contains(suite), "{text}");
    }
    // A benchmark's line is indented two spaces; what the figures mean
    // comes after each suite's benchmarks, under its own heading.
    let is_bench = |l: &&str| {
        l.starts_with("  ") && !l.starts_with("   ") && !l.contains("what the figures mean")
    };
    let names: Vec<&str> = text
        .lines()
        .filter(is_bench)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names.len(), 16 + 18 + 3, "{text}");
    for must in [
        "cpuid",
        "inl_from_vmm",
        "mmio_read",
        "syscall",
        "vsock_bw",
        "inter_sendfile",
    ] {
        assert!(names.contains(&must), "{must}: {text}");
    }
    assert_eq!(
        text.matches("  what the figures mean:").count(),
        3,
        "{text}"
    );
    for accel in ["    native KVM: ", "    kvm-emulated: ", "    tcg: "] {
        assert_eq!(text.matches(accel).count(), 3, "{accel}: {text}");
    }
    for line in text.lines().filter(is_bench) {
        assert!(
            line.contains(" per op: ") && line.contains("; exit: "),
            "{line}"
        );
    }
    // The README's tables list the same benchmarks.
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    for name in names {
        assert!(
            readme
                .lines()
                .any(|l| l.starts_with("| ") && l.contains(&format!("`{name}`"))),
            "README has no table row for {name}"
        );
    }
}

#[test]
fn bad_bench_options_are_one_line_and_start_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("results.db");
    let out_dir = dir.path().join("run");
    for (args, said) in [
        (vec!["--bench", "rdtsc"], "--bench rdtsc: no such benchmark"),
        (
            vec!["--suite", "micro", "--bench", "cpuid"],
            "--bench cpuid: it is in the vmexit suite, not in --suite micro",
        ),
        (vec!["--budget-s", "0"], "must be from 0.1 to 600 seconds"),
        (vec!["--vms", "0"], "0 is not in 1..=1024"),
        (
            vec!["--port", "4294967294"],
            "4294967294 is not in 1..=4294967293",
        ),
        (
            vec!["--suite", "all", "--bench", ","],
            "--bench names no benchmark",
        ),
    ] {
        let out = bench(&store, &out_dir, &args);
        let line = one_line_error(&out, 2);
        assert!(line.contains(said), "{args:?}: {line}");
        assert!(!out_dir.exists(), "{args:?} started a run");
    }
}

/// The vmexit suite on both backends here: our VMM on this host's KVM
/// (`kvm-emulated`), QEMU under TCG; one line per benchmark as virtbench
/// prints it, both backends side by side, results.json as documented, and
/// every value in the CSV.
#[test]
fn the_vmexit_suite_runs_on_both_backends() {
    let test_name = "the_vmexit_suite_runs_on_both_backends";
    let Some(test) = BootTest::start_with_kvm(test_name) else {
        return;
    };
    if !have_vmexit_guest(test_name) {
        return;
    }
    let store = test.dir().join("results.db");
    let csv = test.dir().join("values.csv");
    let out_dir = test.out_dir();
    let out = bench(
        &store,
        &out_dir,
        &[
            "--suite",
            "vmexit",
            "--backend",
            "kvm,qemu",
            "--rough",
            "--budget-s",
            "0.3",
            "--distribution",
            "--csv",
            csv.to_str().unwrap(),
        ],
    );
    let r = results(&out_dir);
    assert_follows_its_document(&r, "results-json.md");
    assert_eq!(r["bench"]["suites"], serde_json::json!(["vmexit"]));
    let text = String::from_utf8_lossy(&out.stdout);
    for (backend, accel) in [("kvm", "kvm-emulated"), ("qemu", "tcg")] {
        let these = vms(&r, "vmexit", backend);
        assert_eq!(these.len(), 1, "{}", dump(&out));
        let vm = these[0];
        assert_eq!(vm["status"], "ok", "{backend}: {}", dump(&out));
        assert_eq!(vm["accel"], accel);
        assert_eq!(vm["vmexit_guest"]["cpus"], 2, "{vm}");
        assert_eq!(vm["benchmarks"].as_array().unwrap().len(), 16);
        each_benchmark_accounted_for(vm);
        // What a VMM developer cares most about runs everywhere.
        for name in ["cpuid", "inl_from_vmm", "inl_from_kernel", "mmio_read"] {
            let b = benchmark(vm, name);
            assert_eq!(b["status"], "ok", "{backend} {name}: {b}");
            assert_eq!(b["samples"]["unit"], "cycles");
            assert!(
                text.contains(&format!("  {name}: ")),
                "{name} has no virtbench line: {text}"
            );
        }
        assert!(text.contains(&format!("{backend} ({accel})")), "{text}");
    }
    // Under TCG no hypervisor answers VMCALL: unavailable, and why.
    let vmcall = benchmark(vms(&r, "vmexit", "qemu")[0], "vmcall");
    assert_eq!(vmcall["status"], "unavailable", "{vmcall}");
    assert!(text.contains("peaks: "), "--distribution: {text}");
    assert!(
        text.contains("—: qemu: QEMU does not attribute exits"),
        "{text}"
    );
    // Every ok benchmark's every value is a CSV row.
    let rows = std::fs::read_to_string(&csv).unwrap();
    let mut lines = rows.lines();
    assert_eq!(
        lines.next(),
        Some("run_id,started_at,backend,accel,vm,round,suite,benchmark,unit,sample,value")
    );
    let values: usize = r["vms"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|v| v["benchmarks"].as_array().unwrap())
        .filter_map(|b| b["samples"]["values_milli"].as_array())
        .map(Vec::len)
        .sum();
    assert_eq!(lines.clone().count(), values);
    assert!(lines.all(|l| l.split(',').count() == 11 && l.contains(",vmexit,")));
}

/// Two bench runs go to the store, and `vmbench compare` judges their
/// benchmarks, each a metric (one value per VM: its median) with the
/// benchmarks' 2 % noise band.
#[test]
fn bench_runs_are_stored_and_compared() {
    let test_name = "bench_runs_are_stored_and_compared";
    let Some(test) = BootTest::start(test_name) else {
        return;
    };
    if !have_vmexit_guest(test_name) {
        return;
    }
    let store = test.dir().join("results.db");
    let mut ids = Vec::new();
    for run in ["a", "b"] {
        let out_dir = test.dir().join(run);
        let out = bench(
            &store,
            &out_dir,
            &[
                "--suite",
                "vmexit",
                "--bench",
                "cpuid,wbinvd",
                "--backend",
                "qemu",
                "--runs",
                "3",
                "--rough",
                "--budget-s",
                "0.3",
                "--tag",
                &format!("run={run}"),
            ],
        );
        assert!(out.status.success(), "{}", dump(&out));
        let said = String::from_utf8_lossy(&out.stderr);
        let id = said
            .split("stored as run ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("not stored: {said}"))
            .to_string();
        ids.push(id);
    }
    let listed = vmbench(&store, &["runs", "--kind", "bench"]);
    assert!(listed.status.success(), "{}", dump(&listed));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("2 run(s)"));
    let compared = vmbench(&store, &["compare", &ids[0], &ids[1], "--format", "json"]);
    assert!(compared.status.success(), "{}", dump(&compared));
    let verdicts: Value = serde_json::from_slice(&compared.stdout).unwrap();
    for name in ["bench.cpuid", "bench.wbinvd"] {
        let row = verdicts["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no verdict on {name}: {verdicts}"));
        assert_eq!(row["unit"], "cycles");
        assert_eq!(row["noise_band"], 0.02, "{row}");
        assert_eq!(row["n_a"], 3, "one value per VM: {row}");
        assert_eq!(row["n_b"], 3, "{row}");
    }
    // Other metrics keep theirs.
    let cpu = verdicts["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "vmbench.cpu")
        .unwrap_or_else(|| panic!("{verdicts}"));
    assert_eq!(cpu["noise_band"], 0.05, "{cpu}");
}

/// Exit attribution on our VMM: each benchmark's window in the VMM's
/// account, per operation — a port the VMM answers costs one userspace
/// exit per read, CPUID and the in-kernel port none.
#[test]
fn exits_are_attributed_to_each_benchmark_on_our_vmm() {
    let test_name = "exits_are_attributed_to_each_benchmark_on_our_vmm";
    let Some(test) = BootTest::start_with_kvm(test_name) else {
        return;
    };
    if !have_vmexit_guest(test_name) {
        return;
    }
    let out_dir = test.out_dir();
    let out = bench(
        &test.dir().join("results.db"),
        &out_dir,
        &[
            "--suite",
            "vmexit",
            "--backend",
            "kvm",
            "--bench",
            "cpuid,inl_from_vmm,inl_from_kernel,mmio_read",
            "--rough",
            "--budget-s",
            "0.3",
        ],
    );
    assert!(out.status.success(), "{}", dump(&out));
    let r = results(&out_dir);
    let vm = vms(&r, "vmexit", "kvm")[0];
    let exits = |name: &str| {
        let b = benchmark(vm, name);
        assert_eq!(b["status"], "ok", "{b}");
        let e = b["exits"].clone();
        assert!(e.is_object(), "{name} has no exits: {b}");
        assert_eq!(e["ops"], b["samples"]["ops_in_window"], "{b}");
        e
    };
    for (name, kind) in [("inl_from_vmm", "io_in"), ("mmio_read", "mmio_read")] {
        let e = exits(name);
        let per_op = e["userspace"][kind]["per_op"].as_f64().unwrap();
        assert!(
            (0.99..=1.01).contains(&per_op),
            "{name}: {per_op} {kind} exits per operation: {e}"
        );
        assert!(e["vmm_mean_ns"].as_f64().unwrap() > 0.0, "{e}");
    }
    for name in ["cpuid", "inl_from_kernel"] {
        let e = exits(name);
        assert_eq!(e["userspace_per_op"], 0.0, "{name} left the kernel: {e}");
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let row: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("inl_from_vmm "))
        .unwrap_or_else(|| panic!("{text}"))
        .split_whitespace()
        .collect();
    assert_eq!(row[2], "1.00", "userspace exits/op: {text}");
}

/// Every micro benchmark under QEMU/TCG with `--rough`: done, or (the
/// hypercall, which TCG traps) unavailable and why; in the orders the
/// issue expects.
#[test]
fn the_micro_suite_runs_under_qemu() {
    let Some(test) = BootTest::start("the_micro_suite_runs_under_qemu") else {
        return;
    };
    let out_dir = test.out_dir();
    let csv = test.dir().join("micro.csv");
    let out = bench(
        &test.dir().join("results.db"),
        &out_dir,
        &[
            "--suite",
            "micro",
            "--backend",
            "qemu",
            "--rough",
            "--budget-s",
            "1",
            "--csv",
            csv.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", dump(&out));
    let r = results(&out_dir);
    assert_follows_its_document(&r, "results-json.md");
    let vm = vms(&r, "micro", "qemu")[0];
    assert_eq!(vm["status"], "ok", "{vm}");
    each_benchmark_accounted_for(vm);
    let benchmarks = vm["benchmarks"].as_array().unwrap();
    assert_eq!(benchmarks.len(), 18);
    for (i, b) in benchmarks.iter().enumerate() {
        if b["name"] == "hypercall" {
            assert_eq!(b["status"], "unavailable", "{b}");
            continue;
        }
        assert_eq!(b["status"], "ok", "{b}");
        assert_eq!(b["samples"]["unit"], "ns");
        assert_eq!(b["samples"]["window"], i as u64 + 1, "{b}");
        assert_eq!(
            b["exits_why_none"].as_str().unwrap(),
            "QEMU does not attribute exits to a guest's windows; only the kvm backend's VMM does"
        );
    }
    let median = |name: &str| benchmark(vm, name)["samples"]["median"].as_f64().unwrap();
    assert!(
        median("syscall") < median("fork") && median("fork") < median("exec"),
        "syscall {} < fork {} < exec {}",
        median("syscall"),
        median("fork"),
        median("exec")
    );
    assert!(
        median("mem_random") > median("mem_linear"),
        "random {} > linear {}",
        median("mem_random"),
        median("mem_linear")
    );
    // Every benchmark is a metric: one value per VM, its median.
    let metrics = r["aggregate"]["metrics"].as_array().unwrap();
    let syscall = metrics
        .iter()
        .find(|m| m["name"] == "bench.syscall")
        .unwrap_or_else(|| panic!("no bench.syscall metric"));
    assert_eq!(syscall["unit"], "ns");
    assert_eq!(
        syscall["summary"]["median"].as_f64().unwrap(),
        median("syscall")
    );
    let rows = std::fs::read_to_string(&csv).unwrap();
    assert!(rows.lines().skip(1).all(|l| l.contains(",micro,")));
    assert!(rows.lines().any(|l| l.contains(",vsock_rtt,ns,")), "{rows}");
}

/// The inter suite under QEMU/TCG: two VMs, the host's relay between
/// them, its own CPU time recorded and said to be part of the figures.
#[test]
fn the_inter_suite_runs_under_qemu_through_the_relay() {
    let Some(test) = BootTest::start("the_inter_suite_runs_under_qemu_through_the_relay") else {
        return;
    };
    let out_dir = test.out_dir();
    let out = bench(
        &test.dir().join("results.db"),
        &out_dir,
        &[
            "--suite",
            "inter",
            "--backend",
            "qemu",
            "--rough",
            "--budget-s",
            "1",
        ],
    );
    assert!(out.status.success(), "{}", dump(&out));
    let r = results(&out_dir);
    assert_follows_its_document(&r, "results-json.md");
    let pair = vms(&r, "inter", "qemu");
    assert_eq!(pair.len(), 2, "a pair");
    let (measures, peer) = if pair[0]["peer_of"].is_null() {
        (pair[0], pair[1])
    } else {
        (pair[1], pair[0])
    };
    assert_eq!(peer["peer_of"], measures["id"]);
    for name in ["inter_vsock_rtt", "inter_vsock_bw", "inter_sendfile"] {
        let b = benchmark(measures, name);
        assert_eq!(b["status"], "ok", "{b}");
        assert_eq!(b["peer_vm"], peer["id"], "both VMs' ids: {b}");
        let relay = &b["relay"];
        assert!(relay["cpu_ms"].as_f64().unwrap() > 0.0, "{b}");
        assert!(relay["bytes_to_peer"].as_u64().unwrap() > 0, "{b}");
        let served = benchmark(peer, &format!("{name}:peer"));
        assert_eq!(served["status"], "ok", "{served}");
    }
    // A round trip carries one byte each way per operation.
    let rtt = benchmark(measures, "inter_vsock_rtt");
    assert_eq!(
        rtt["relay"]["bytes_to_peer"],
        rtt["relay"]["bytes_from_peer"]
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("include vmbench's relay on the host"),
        "{text}"
    );
}

/// A benchmark that hangs its guest (`--hang-in`: the agent stops
/// answering) is that benchmark's failure: the VM is stopped, the
/// benchmarks after it are not run, the run ends as usual, exit 1.
#[test]
fn a_benchmark_that_hangs_its_guest_is_its_failure() {
    let Some(test) = BootTest::start("a_benchmark_that_hangs_its_guest_is_its_failure") else {
        return;
    };
    let out_dir = test.out_dir();
    let out = bench(
        &test.dir().join("results.db"),
        &out_dir,
        &[
            "--suite",
            "micro",
            "--bench",
            "exec,fork,syscall",
            "--backend",
            "qemu",
            "--rough",
            "--budget-s",
            "0.5",
            "--hang-in",
            "fork",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", dump(&out));
    let r = results(&out_dir);
    assert_eq!(r["finished"], true);
    let vm = vms(&r, "micro", "qemu")[0];
    assert_eq!(vm["status"], "ok", "the VM booted and served: {vm}");
    // In list order: exec, fork, syscall.
    assert_eq!(benchmark(vm, "exec")["status"], "ok");
    let fork = benchmark(vm, "fork");
    assert_eq!(fork["status"], "failed", "{fork}");
    assert!(
        fork["why"].as_str().unwrap().contains("hung the guest"),
        "{fork}"
    );
    let syscall = benchmark(vm, "syscall");
    assert_eq!(syscall["status"], "not_run", "{syscall}");
    assert!(
        syscall["why"]
            .as_str()
            .unwrap()
            .contains("fork hung the guest before it"),
        "{syscall}"
    );
    assert!(
        vm["vmm_exit"]
            .as_str()
            .unwrap()
            .contains("after benchmark fork hung"),
        "{vm}"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("  fork: failed ("), "{text}");
}

/// `vmbench ab` with benchmarks: both variants run them, interleaved, and
/// the verdicts judge them at the benchmarks' noise band; variants whose
/// batches differ are refused before anything starts.
#[test]
fn ab_judges_benchmarks_too() {
    let test_name = "ab_judges_benchmarks_too";
    let Some(test) = BootTest::start(test_name) else {
        return;
    };
    if !have_vmexit_guest(test_name) {
        return;
    }
    let store = test.dir().join("results.db");
    let ab = |out: &Path, b: &str| {
        Command::new(vmbench_bin())
            .args([
                "ab",
                "--suite",
                "vmexit",
                "--bench",
                "cpuid,wbinvd",
                "--backend",
                "qemu",
                "--runs",
                "2",
                "--rough",
                "--budget-s",
                "0.3",
                "--format",
                "json",
                "--no-store",
                "--b",
                b,
                "--out",
                out.to_str().unwrap(),
            ])
            .env("VMBENCH_STORE", &store)
            .env("VMBENCH_VMEXIT_GUEST", vmexit_guest())
            .output()
            .unwrap()
    };
    let out = ab(&test.dir().join("ab"), "--bench wbinvd,cpuid");
    assert!(out.status.success(), "{}", dump(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = &stdout[stdout.find('{').unwrap()..];
    let verdicts: Value = serde_json::from_str(json).unwrap();
    let cpuid = verdicts["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "bench.cpuid")
        .unwrap_or_else(|| panic!("{verdicts}"));
    assert_eq!(
        (cpuid["n_a"].as_u64(), cpuid["n_b"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(cpuid["noise_band"], 0.02);
    let b = results(&test.dir().join("ab").join("B"));
    assert_eq!(
        b["bench"]["benchmarks"],
        serde_json::json!(["cpuid", "wbinvd"])
    );
    // B runs a suite more than A: its rounds are not A's.
    let uneven_dir = test.dir().join("uneven");
    let uneven = ab(&uneven_dir, "--suite all --bench cpuid,syscall");
    let line = one_line_error(&uneven, 2);
    assert!(line.contains("must boot the same rounds"), "{line}");
    assert!(!uneven_dir.join("A/results.json").exists());
}
