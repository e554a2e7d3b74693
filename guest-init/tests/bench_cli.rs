//! The micro benchmarks outside a VM (`vmbench-init --bench`), on this
//! host: each that can run here runs to completion with `--rough` and
//! sane numbers, the rest say why not, and the orderings that differ by an
//! order of magnitude or more hold (a syscall is cheaper than a fork, a
//! fork than an exec; touching pages in a random order costs more per page
//! than in order). No timing goals: only orderings and plausibility.

use std::collections::BTreeMap;
use std::process::Command;

use vmbench_proto::{BenchOutcome, BenchResult, Samples, MICRO_BENCHES};

/// Benchmarks that need a VM's devices.
const VM_ONLY: &[&str] = &[
    "port_io_user",
    "port_io_kernel",
    "mmio_user",
    "blk_read_bw",
    "blk_read_lat",
    "hypercall",
    "vsock_rtt",
    "vsock_bw",
];

/// Runs `vmbench-init --bench NAMES --rough --json` and parses its lines,
/// one run at a time: benchmarks timed side by side measure each other.
fn run_benches(names: &str) -> BTreeMap<String, BenchOutcome> {
    static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(env!("CARGO_BIN_EXE_vmbench-init"))
        .args(["--bench", names, "--rough", "--json", "--budget-ms", "3000"])
        .output()
        .expect("run vmbench-init");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "status {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|line| {
            let result: BenchResult =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            (result.name, result.outcome)
        })
        .collect()
}

fn median(samples: &Samples) -> u64 {
    vmbench_sampling::summary(&samples.values).unwrap().median
}

fn done<'a>(results: &'a BTreeMap<String, BenchOutcome>, name: &str) -> &'a Samples {
    match &results[name] {
        BenchOutcome::Done(samples) => samples,
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn every_benchmark_runs_or_says_why_not() {
    let results = run_benches("all");
    assert_eq!(results.len(), MICRO_BENCHES.len());
    for bench in MICRO_BENCHES {
        let outcome = &results[bench.name];
        if VM_ONLY.contains(&bench.name) {
            assert!(
                matches!(outcome, BenchOutcome::Unavailable { why } if why.contains("vmbench guest")),
                "{}: {outcome:?}",
                bench.name
            );
            continue;
        }
        let samples = done(&results, bench.name);
        assert_eq!(samples.unit, "ns");
        assert!(
            samples.clock.starts_with("CLOCK_MONOTONIC_RAW/"),
            "{}",
            samples.clock
        );
        assert!(samples.iterations >= 1);
        assert!(samples.values.len() >= 10, "{}: {samples:?}", bench.name);
        assert_eq!(
            samples.ops_in_window,
            samples.iterations * samples.values.len() as u64
        );
        assert!(
            ["peaks", "max_samples", "budget"].contains(&samples.stop.as_str()),
            "{}",
            samples.stop
        );
        // Sane: something per operation, and less than a second of it.
        let per_op_ps = median(samples);
        assert!(
            per_op_ps > 0 && per_op_ps < 1_000_000_000_000,
            "{}: {per_op_ps} ps",
            bench.name
        );
    }
}

#[test]
fn a_syscall_is_cheaper_than_a_fork_and_a_fork_than_an_exec() {
    let results = run_benches("syscall,fork,exec");
    let (syscall, fork, exec) = (
        median(done(&results, "syscall")),
        median(done(&results, "fork")),
        median(done(&results, "exec")),
    );
    assert!(
        syscall < fork && fork < exec,
        "syscall {syscall} ps, fork {fork} ps, exec {exec} ps"
    );
}

#[test]
fn random_pages_cost_more_than_pages_in_order() {
    let results = run_benches("mem_linear,mem_random");
    let (linear, random) = (
        median(done(&results, "mem_linear")),
        median(done(&results, "mem_random")),
    );
    assert!(
        linear < random,
        "linear {linear} ps, random {random} ps per page"
    );
}

#[test]
fn an_unknown_benchmark_is_unavailable_and_a_bad_line_refused() {
    let results = run_benches("warp_drive");
    assert!(
        matches!(&results["warp_drive"], BenchOutcome::Unavailable { why } if why.contains("no benchmark"))
    );
    let out = Command::new(env!("CARGO_BIN_EXE_vmbench-init"))
        .args(["--bench", "fork", "--budget-ms", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("soon"));
}
