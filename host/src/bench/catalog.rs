//! Every benchmark `vmbench bench` knows: its suite, its unit, what it
//! measures and which exit it exercises — what `--list` prints and the
//! README's tables say (a test keeps them in step).

use serde::{Deserialize, Serialize};

/// A group of benchmarks run the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Suite {
    /// The freestanding vmexit guest at CPL0, cycles per operation.
    Vmexit,
    /// The agent in a Linux guest, one VM.
    Micro,
    /// The agents of two Linux guests, through the host's relay.
    Inter,
}

impl Suite {
    /// In the order a run takes them (and `--list` prints them).
    pub const ALL: [Suite; 3] = [Suite::Vmexit, Suite::Micro, Suite::Inter];

    pub fn name(self) -> &'static str {
        match self {
            Suite::Vmexit => "vmexit",
            Suite::Micro => "micro",
            Suite::Inter => "inter",
        }
    }

    pub fn from_name(name: &str) -> Option<Suite> {
        Suite::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether the suite's guests are Linux with the agent (they need guest
    /// userspace, which KVM that emulates guest code cannot run).
    pub fn runs_linux(self) -> bool {
        self != Suite::Vmexit
    }

    /// What the suite is, in a line.
    pub fn about(self) -> &'static str {
        match self {
            Suite::Vmexit => "a freestanding guest at CPL0 (2 vCPUs) times single instructions that exit, in TSC cycles per operation (kvm-unit-tests' x86/vmexit.c)",
            Suite::Micro => "the agent in a Linux guest times guest operations after it reports Ready, in ns per operation (virtbench's micro-benchmarks and more)",
            Suite::Inter => "two Linux guests talk over vsock through vmbench's relay on the host, which is part of what is measured (virtbench's inter-guest benchmarks)",
        }
    }
}

impl Suite {
    /// What the suite's figures mean on native KVM, on a KVM that emulates
    /// guest code and under TCG (the README says the same at length).
    pub fn meaning(self) -> [(&'static str, &'static str); 3] {
        match self {
            Suite::Vmexit => [
                ("native KVM", "each exit's real cost; inl_from_vmm − inl_from_kernel is the round trip to the VMM's userspace"),
                ("kvm-emulated", "KVM's instruction emulator's cost: only the trip to the VMM's userspace stands out"),
                ("tcg", "QEMU's translated code: nothing exits; for orderings and QEMU builds"),
            ],
            Suite::Micro => [
                ("native KVM", "guest operations at hardware speed, with their exits; port_io_user − port_io_kernel is the trip to the VMM"),
                ("kvm-emulated", "not run: Linux userspace cannot run there"),
                ("tcg", "QEMU's translated code: orderings (syscall < fork < exec), not exit costs"),
            ],
            Suite::Inter => [
                ("native KVM", "two guests' vsock paths with vmbench's relay between them"),
                ("kvm-emulated", "not run: Linux userspace cannot run there"),
                ("tcg", "QEMU's emulation of both guests and vhost-device-vsock, with the relay"),
            ],
        }
    }
}

/// One benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Benchmark {
    pub name: &'static str,
    pub suite: Suite,
    /// `ns` or `cycles`, per operation.
    pub unit: &'static str,
    /// What one operation is.
    pub measures: &'static str,
    /// The exit it exercises, and who handles it.
    pub exit: &'static str,
}

const fn vmexit(name: &'static str, measures: &'static str, exit: &'static str) -> Benchmark {
    Benchmark {
        name,
        suite: Suite::Vmexit,
        unit: "cycles",
        measures,
        exit,
    }
}

const fn inter(name: &'static str, measures: &'static str, exit: &'static str) -> Benchmark {
    Benchmark {
        name,
        suite: Suite::Inter,
        unit: "ns",
        measures,
        exit,
    }
}

/// The vmexit suite (kvm-unit-tests' set): `measures` is the guest's own
/// description of an operation (`vmexit-guest/src/lib.rs`, `BENCHMARKS`;
/// a test keeps the two in step).
pub const VMEXIT: [Benchmark; 16] = [
    vmexit(
        "cpuid",
        "CPUID leaf 0: an exit the hypervisor answers in the kernel",
        "CPUID, handled in KVM (no trip to the VMM)",
    ),
    vmexit(
        "vmcall",
        "VMCALL (Intel) or VMMCALL (AMD) with an unknown hypercall number",
        "VMCALL/VMMCALL, handled in KVM (it answers -KVM_ENOSYS)",
    ),
    vmexit(
        "inl_from_vmm",
        "inl from port 0x0EE0, handled in the VMM's userspace",
        "I/O instruction, to the VMM's userspace (kvm-unit-tests' inl_from_qemu)",
    ),
    vmexit(
        "inl_from_kernel",
        "inb from port 0x4D0 (the PIC's ELCR), handled in the kernel's irqchip",
        "I/O instruction, handled in KVM's in-kernel irqchip",
    ),
    vmexit(
        "mmio_read",
        "a 32-bit read of the first virtio-mmio device's MagicValue",
        "MMIO (EPT misconfiguration / NPT fault), to the VMM's userspace",
    ),
    vmexit(
        "mov_to_cr8",
        "MOV to CR8 (the task priority) of 0",
        "none with TPR shadowing, else a CR access handled in KVM",
    ),
    vmexit(
        "mov_dr",
        "MOV to DR7 of 0x400 (its reset value)",
        "debug-register access, handled in KVM",
    ),
    vmexit(
        "rdmsr",
        "RDMSR of IA32_TSC_ADJUST (0x3b)",
        "MSR read, handled in KVM",
    ),
    vmexit(
        "wrmsr",
        "WRMSR of IA32_TSC_ADJUST (0x3b) with its own value",
        "MSR write, handled in KVM",
    ),
    vmexit(
        "tscdeadline_immed",
        "arming the TSC-deadline timer in the past: its interrupt at once",
        "MSR write and a timer interrupt, in KVM's local APIC",
    ),
    vmexit(
        "tscdeadline",
        "arming the TSC-deadline timer 3000 cycles ahead and waiting for it",
        "MSR write, HLT and a timer interrupt, in KVM's local APIC",
    ),
    vmexit(
        "self_ipi",
        "an IPI to this vCPU, taken with interrupts on",
        "APIC ICR write and an interrupt, in KVM's local APIC",
    ),
    vmexit(
        "ipi_cross",
        "an IPI to the other vCPU, halted, until its handler has run",
        "APIC ICR writes, HLT wake-ups and interrupts on 2 vCPUs, in KVM",
    ),
    vmexit("wbinvd", "WBINVD", "WBINVD, handled in KVM"),
    vmexit(
        "toggle_cr0_wp",
        "CR0.WP flipped and restored: two MOVs to CR0",
        "CR access, handled in KVM",
    ),
    vmexit(
        "toggle_cr4_pge",
        "CR4.PGE flipped and restored: two MOVs to CR4 (TLB flushes)",
        "CR access, handled in KVM",
    ),
];

/// The inter suite: between two guests through the host's relay.
pub const INTER: [Benchmark; 3] = [
    inter(
        "inter_vsock_rtt",
        "a 1-byte round trip to another guest, relayed by the host",
        "vsock on both guests and the host's relay",
    ),
    inter(
        "inter_vsock_bw",
        "64 KiB streamed to another guest, relayed by the host",
        "vsock on both guests and the host's relay",
    ),
    inter(
        "inter_sendfile",
        "64 KiB sent with sendfile(2) to another guest, relayed by the host",
        "vsock on both guests and the host's relay",
    ),
];

/// The micro suite: the agent's own table (`vmbench_proto::MICRO_BENCHES`),
/// every one timed in ns.
fn micro() -> impl Iterator<Item = Benchmark> {
    vmbench_proto::MICRO_BENCHES.iter().map(|b| Benchmark {
        name: b.name,
        suite: Suite::Micro,
        unit: "ns",
        measures: b.measures,
        exit: b.exit,
    })
}

/// Every benchmark, in `--list` order.
pub fn all() -> impl Iterator<Item = Benchmark> {
    VMEXIT
        .iter()
        .copied()
        .chain(micro())
        .chain(INTER.iter().copied())
}

/// The benchmark called `name`.
pub fn find(name: &str) -> Option<Benchmark> {
    all().find(|b| b.name == name)
}

/// A suite's benchmarks, in order.
pub fn of(suite: Suite) -> impl Iterator<Item = Benchmark> {
    all().filter(move |b| b.suite == suite)
}

/// `vmbench bench --list`: every benchmark with a line on what it measures
/// and which exit it exercises.
pub fn list() -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for suite in Suite::ALL {
        let _ = writeln!(out, "{} suite: {}", suite.name(), suite.about());
        let width = of(suite).map(|b| b.name.len()).max().unwrap_or(0);
        for b in of(suite) {
            let _ = writeln!(
                out,
                "  {:<width$}  {} per op: {}; exit: {}",
                b.name, b.unit, b.measures, b.exit
            );
        }
        let _ = writeln!(out, "  what the figures mean:");
        for (accel, meaning) in suite.meaning() {
            let _ = writeln!(out, "    {accel}: {meaning}");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_the_design_files_order() {
        let names: Vec<&str> = all().map(|b| b.name).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
        assert_eq!(names[0], "cpuid");
        assert_eq!(find("inter_sendfile").unwrap().suite, Suite::Inter);
        assert!(find("rdtsc").is_none());
        assert!(all().all(|b| b.unit == "ns" || b.unit == "cycles"));
    }

    /// The vmexit table says what the guest itself says: its names, in its
    /// order, with its descriptions (`vmexit-guest/src/lib.rs`,
    /// `BENCHMARKS`, read as text: the guest is a crate of its own workspace).
    #[test]
    fn the_vmexit_table_is_the_guests() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../vmexit-guest/src/lib.rs");
        let text = std::fs::read_to_string(&path).expect("the vmexit guest's source");
        let quoted = |line: &str, key: &str| -> Option<String> {
            let rest = line.trim().strip_prefix(key)?.trim().strip_prefix('"')?;
            Some(rest.strip_suffix("\",")?.to_string())
        };
        let names: Vec<String> = text.lines().filter_map(|l| quoted(l, "name:")).collect();
        let operations: Vec<String> = text
            .lines()
            .filter_map(|l| quoted(l, "operation:"))
            .collect();
        let ours: Vec<(String, String)> = VMEXIT
            .iter()
            .map(|b| (b.name.to_string(), b.measures.to_string()))
            .collect();
        let theirs: Vec<(String, String)> = names.into_iter().zip(operations).collect();
        assert_eq!(
            ours,
            theirs,
            "host/src/bench/catalog.rs VMEXIT against {}",
            path.display()
        );
    }

    #[test]
    fn the_list_has_a_line_per_benchmark() {
        let list = list();
        for b in all() {
            assert_eq!(
                list.lines()
                    .filter(|l| l.trim_start().starts_with(&format!("{} ", b.name)))
                    .count(),
                1,
                "{}",
                b.name
            );
        }
    }
}
