//! End to end: the agent's micro suite in a Linux guest under QEMU/TCG,
//! driven over the protocol as `vmbench bench` will (`vmbench_e2e::micro`).
//!
//! Every micro benchmark comes back `Done` under TCG, except the hypercall,
//! which TCG does not answer (unavailable, and why); each measured window
//! is marked on the boot-marker port around its samples; the orderings the
//! issue names hold. Without a scratch disk the block benchmarks say so, an
//! unknown name is unavailable, and the guest still powers off on `Ack`.

use vmbench_e2e::boot::BootTest;
use vmbench_e2e::micro::{windows, Inputs, MicroGuest};
use vmbench_proto::{BenchOutcome, BenchRequest, BenchResult, Samples, MICRO_BENCHES};

/// Window ids start here: any value would do, one that is not a boot mark
/// in either byte shows the parser reads both.
const FIRST_WINDOW: u16 = 0x0201;

fn request(name: &str, window: u16) -> BenchRequest {
    BenchRequest {
        name: name.to_string(),
        rough: true,
        max_samples: 0,
        budget_ms: 2_000,
        window,
    }
}

fn median_ns(samples: &Samples) -> f64 {
    vmbench_sampling::summary(&samples.values).unwrap().median as f64 / 1000.0
}

fn start(test: &str) -> Option<(BootTest, Inputs)> {
    let boot = BootTest::start(test)?;
    let inputs = Inputs::find(test)?;
    Some((boot, inputs))
}

#[test]
fn every_micro_benchmark_runs_in_a_guest_under_tcg() {
    let Some((test, inputs)) = start("every_micro_benchmark_runs_in_a_guest_under_tcg") else {
        return;
    };
    let mut guest = MicroGuest::boot(&inputs, test.dir(), true).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(guest.hello.proto_version, vmbench_proto::PROTO_VERSION);
    let mut results: Vec<(u16, BenchResult)> = Vec::new();
    for (i, bench) in MICRO_BENCHES.iter().enumerate() {
        let window = FIRST_WINDOW + i as u16;
        let result = guest
            .run(request(bench.name, window))
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", bench.name, guest.logs()));
        results.push((window, result));
    }
    let logs = guest.logs();
    let end = guest.finish().unwrap_or_else(|e| panic!("{e}\n{logs}"));

    let marked = windows(&end.markers);
    let mut medians = std::collections::BTreeMap::new();
    for (window, result) in &results {
        let samples = match &result.outcome {
            BenchOutcome::Done(samples) => samples,
            // TCG has no VMX or SVM: the instruction is undefined.
            BenchOutcome::Unavailable { why } if result.name == "hypercall" => {
                assert!(why.contains("SIGILL"), "{why}");
                println!("{:>16}  unavailable: {why}", result.name);
                continue;
            }
            other => panic!("{}: {other:?}\n{}", result.name, end.serial),
        };
        assert_eq!(samples.unit, "ns");
        assert!(
            samples.clock.starts_with("CLOCK_MONOTONIC_RAW/"),
            "{}",
            samples.clock
        );
        assert!(samples.values.len() >= 10, "{}: {samples:?}", result.name);
        assert_eq!(samples.window, *window);
        assert_eq!(
            samples.ops_in_window,
            samples.iterations * samples.values.len() as u64
        );
        // The window is marked once, start then end, around the samples.
        let marks: Vec<char> = marked
            .iter()
            .filter(|(_, id)| id == window)
            .map(|(kind, _)| *kind)
            .collect();
        assert_eq!(marks, ['s', 'e'], "{}: marks {marked:?}", result.name);
        let extra = |key: &str| {
            samples
                .extra
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| *v)
        };
        match result.name.as_str() {
            "blk_read_bw" => assert_eq!(extra("block_bytes"), Some(1 << 20)),
            "blk_read_lat" => assert_eq!(extra("block_bytes"), Some(4096)),
            "vsock_bw" => {
                assert_eq!(extra("block_bytes"), Some(64 * 1024));
                // The host's sink counted every byte the guest wrote.
                assert!(
                    end.peer
                        .connections
                        .contains(&(b's', extra("sent_bytes").unwrap())),
                    "{:?} vs {:?}",
                    end.peer.connections,
                    samples.extra
                );
            }
            "mmio_user" => assert!(extra("address").is_some()),
            _ => {}
        }
        let median = median_ns(samples);
        println!(
            "{:>16}  {median:>14.3} ns per op  ({} samples of {} ops, stop {}, {})",
            result.name,
            samples.values.len(),
            samples.iterations,
            samples.stop,
            samples.clock
        );
        medians.insert(result.name.clone(), median);
    }
    assert!(end
        .peer
        .connections
        .iter()
        .any(|(mode, n)| *mode == b'e' && *n > 0));
    // Orders of magnitude apart, even under TCG.
    assert!(
        medians["syscall"] < medians["fork"] && medians["fork"] < medians["exec"],
        "{medians:?}"
    );
    assert!(medians["mem_linear"] < medians["mem_random"], "{medians:?}");
    assert!(end.serial.contains("event=bench_mode"), "{}", end.serial);
}

#[test]
fn without_a_scratch_disk_the_block_benchmarks_say_why() {
    let Some((test, inputs)) = start("without_a_scratch_disk_the_block_benchmarks_say_why") else {
        return;
    };
    let mut guest = MicroGuest::boot(&inputs, test.dir(), false).unwrap_or_else(|e| panic!("{e}"));
    for name in ["blk_read_lat", "no_such_bench", "syscall"] {
        let result = guest
            .run(request(name, 7))
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", guest.logs()));
        match (name, &result.outcome) {
            ("blk_read_lat", BenchOutcome::Unavailable { why }) => {
                assert!(why.contains("no scratch disk"), "{why}")
            }
            ("no_such_bench", BenchOutcome::Unavailable { why }) => {
                assert!(why.contains("no_such_bench"), "{why}")
            }
            ("syscall", BenchOutcome::Done(_)) => {}
            (_, other) => panic!("{name}: {other:?}"),
        }
    }
    let logs = guest.logs();
    let end = guest.finish().unwrap_or_else(|e| panic!("{e}\n{logs}"));
    assert!(end.serial.contains("event=reported"), "{}", end.serial);
}
