//! Benchmarks run by the agent on the host's orders (protocol version 4).
//!
//! # Primer
//!
//! - A guest booted with `vmbench.bench=1` on its kernel command line does
//!   not power off after its report: once `Ready` (and a systemd guest's
//!   `Systemd` report) is sent it waits, without the usual bounded wait, for
//!   the host's orders on the same connection.
//! - [`HostMessage::RunBench`](crate::HostMessage::RunBench) asks for one
//!   benchmark by name ([`BenchRequest`]); the agent runs it and answers with
//!   one [`GuestMessage::Bench`](crate::GuestMessage::Bench) carrying the same
//!   name. Requests are answered one at a time, in order.
//!   [`HostMessage::Ack`](crate::HostMessage::Ack) ends the conversation: the
//!   guest powers off.
//! - A benchmark's outcome is [`BenchOutcome::Done`] with its samples,
//!   [`BenchOutcome::Unavailable`] when it cannot run in this guest (an
//!   unknown name, a device the VM lacks, an instruction that traps), or
//!   [`BenchOutcome::Failed`] when it broke (it panicked, crashed, hung, or
//!   an operation it times went wrong). Either way the agent lives on and
//!   takes the next request.
//! - The agent gives a benchmark its budget plus [`HANG_GRACE_MS`] (set-up,
//!   calibration, the last sample) before it kills it and answers `Failed`;
//!   a host waits longer than that before it gives up on the guest.
//! - A sample is one timed run of `iterations` operations; its value is the
//!   cost of one operation in thousandths of the unit (unit `ns`: picoseconds),
//!   the loop's own overhead already subtracted. Every value is a time, so
//!   smaller is better; a bandwidth benchmark times a block of fixed size
//!   (named in `extra`).
//! - Exit attribution: right before its first measured sample the agent
//!   writes [`MARKER_WINDOW_START`](crate::MARKER_WINDOW_START) and the two
//!   bytes of the request's `window` id (low byte first) to the boot-marker
//!   port, and after its last [`MARKER_WINDOW_END`](crate::MARKER_WINDOW_END)
//!   and the same two bytes; the VMM charges the exits in between to the
//!   window. `ops_in_window` says how many operations that was.

use serde::{Deserialize, Serialize};

/// The samples a guest may return for one benchmark, at most: with
/// varint-encoded values this keeps a result well inside one frame.
pub const MAX_SAMPLES_LIMIT: u32 = 50_000;

/// Samples per benchmark when the request says 0.
pub const DEFAULT_MAX_SAMPLES: u32 = 1000;

/// A benchmark's time budget when the request says 0.
pub const DEFAULT_BUDGET_MS: u32 = 10_000;

/// How long past its budget the agent lets a benchmark run (its set-up,
/// calibration and last sample) before it kills it as hung.
pub const HANG_GRACE_MS: u32 = 60_000;

/// Host to guest: run one benchmark.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BenchRequest {
    /// One of [`MICRO_BENCHES`]; any other name is answered `Unavailable`.
    pub name: String,
    /// Stop once any one peak of the distribution holds 10 samples, rather
    /// than every peak.
    pub rough: bool,
    /// Stop after this many samples (0: [`DEFAULT_MAX_SAMPLES`]; at most
    /// [`MAX_SAMPLES_LIMIT`]).
    pub max_samples: u32,
    /// Stop sampling once this much time is spent (0: [`DEFAULT_BUDGET_MS`]).
    pub budget_ms: u32,
    /// The id the agent marks its measured window with.
    pub window: u16,
}

/// Guest to host: what became of one [`BenchRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BenchResult {
    /// The request's name.
    pub name: String,
    pub outcome: BenchOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BenchOutcome {
    /// The benchmark ran; here are its samples.
    Done(Samples),
    /// It cannot run in this guest, and why (e.g. "VMCALL raises #UD: no
    /// hypervisor answers it").
    Unavailable { why: String },
    /// It broke, and how (a panic, a signal, a hang, a failed operation).
    Failed { why: String },
}

/// One benchmark's measurements.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Samples {
    /// `ns` (the agent) or `cycles` (the freestanding vmexit guest).
    pub unit: String,
    /// The clock and, after a slash, the kernel's clocksource under it:
    /// `CLOCK_MONOTONIC_RAW/tsc`.
    pub clock: String,
    /// Operations per sample, from calibration.
    pub iterations: u64,
    /// The empty loop's cost per operation, in thousandths of the unit,
    /// already subtracted from every value.
    pub overhead_milli: u64,
    /// Timed runs calibration took.
    pub calibration_runs: u32,
    /// Per sample, the cost of one operation in thousandths of the unit.
    pub values: Vec<u64>,
    /// Why sampling stopped: `peaks`, `max_samples` or `budget`.
    pub stop: String,
    /// The request's window id, as marked.
    pub window: u16,
    /// Operations between the window's marks: `iterations` × samples.
    pub ops_in_window: u64,
    /// The benchmark's own figures, e.g. `("block_bytes", 65536)`.
    pub extra: Vec<(String, u64)>,
}

/// One benchmark as `vmbench bench --list` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BenchInfo {
    pub name: &'static str,
    /// What one operation is, in one line.
    pub measures: &'static str,
    /// The VM exit (or none) one operation exercises.
    pub exit: &'static str,
}

const fn info(name: &'static str, measures: &'static str, exit: &'static str) -> BenchInfo {
    BenchInfo {
        name,
        measures,
        exit,
    }
}

/// The micro suite, which the agent runs in a Linux guest, in `--list` order.
pub const MICRO_BENCHES: &[BenchInfo] = &[
    info(
        "context_switch",
        "1-byte ping-pong round trip between two processes on one CPU through pipes (two context switches)",
        "none (were the two on different vCPUs: wake-up IPIs and HLT)",
    ),
    info(
        "cow_fault",
        "copy-on-write fault: the first write to a page shared with a forked child",
        "none with EPT/NPT (an EPT/NPT fault where the copy lands on memory the host has not backed yet)",
    ),
    info(
        "exec",
        "fork, exec of the agent itself (which exits at once), wait",
        "none with EPT/NPT; page faults under shadow paging",
    ),
    info(
        "fork",
        "fork, child exits, parent waits",
        "none with EPT/NPT; page faults under shadow paging",
    ),
    info(
        "syscall",
        "the syscall instruction (getppid), kernel entry and return",
        "none",
    ),
    info(
        "vdso_call",
        "clock_gettime(CLOCK_MONOTONIC) through the vDSO",
        "none (RDTSC runs in the guest unless the hypervisor traps it)",
    ),
    info(
        "mem_linear",
        "one step of a pointer chase, one page after the next, through twice the largest cache (64 MiB to 1 GiB)",
        "none (EPT/NPT violations only on first touch, done before timing)",
    ),
    info(
        "mem_random",
        "one step of a pointer chase, pages in random order, through twice the largest cache (64 MiB to 1 GiB)",
        "none once the memory is backed; each TLB miss is a two-dimensional page walk",
    ),
    info(
        "port_io_user",
        "inl from port 0x0EE0, which the VMM handles in userspace",
        "I/O instruction, to the VMM's userspace",
    ),
    info(
        "port_io_kernel",
        "inb from port 0x4d0 (the PIC's ELCR), which KVM handles in the kernel",
        "I/O instruction, handled in KVM",
    ),
    info(
        "mmio_user",
        "32-bit read of the first virtio-mmio device's MagicValue through /dev/mem",
        "MMIO (EPT misconfiguration / NPT fault), to the VMM's userspace",
    ),
    info(
        "pte_update",
        "mremap moves one populated page to another address and back (PTE update, TLB flush)",
        "none with EPT/NPT; page-table writes and INVLPG under shadow paging",
    ),
    info(
        "blk_read_bw",
        "O_DIRECT sequential read of 1 MiB from the scratch virtio-blk disk",
        "MMIO queue notify, interrupts",
    ),
    info(
        "blk_read_lat",
        "O_DIRECT read of 4 KiB at a random offset of the scratch virtio-blk disk",
        "MMIO queue notify, interrupt",
    ),
    info(
        "hypercall",
        "VMCALL (Intel) or VMMCALL (AMD) from userspace; KVM answers with an error",
        "VMCALL/VMMCALL, handled in KVM",
    ),
    info(
        "cpuid_user",
        "CPUID leaf 0 from userspace",
        "CPUID (always exits), handled in KVM",
    ),
    info(
        "vsock_rtt",
        "1-byte ping-pong round trip over vsock with a host echo",
        "MMIO queue notify, interrupts; the VMM's vsock backend",
    ),
    info(
        "vsock_bw",
        "write of a 64 KiB block over vsock to a host sink",
        "MMIO queue notify, interrupts; the VMM's vsock backend",
    ),
];

/// The micro benchmark of that name.
pub fn micro_bench(name: &str) -> Option<&'static BenchInfo> {
    MICRO_BENCHES.iter().find(|b| b.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_names_are_unique_and_described() {
        for (i, bench) in MICRO_BENCHES.iter().enumerate() {
            assert!(
                MICRO_BENCHES[..i].iter().all(|b| b.name != bench.name),
                "{} twice",
                bench.name
            );
            assert!(!bench.measures.is_empty() && !bench.exit.is_empty());
            assert!(!bench.measures.contains('\n') && !bench.exit.contains('\n'));
        }
        assert_eq!(MICRO_BENCHES.len(), 18);
        assert_eq!(micro_bench("syscall").unwrap().name, "syscall");
        assert!(micro_bench("nope").is_none());
    }
}
