//! vmbench's vmexit suite: a freestanding x86-64 guest that runs at CPL0 on
//! vmbench's own VMM (KVM) and under QEMU (TCG or KVM) and times, in TSC
//! cycles per operation, the exits of kvm-unit-tests' `x86/vmexit.c`: see
//! [`BENCHMARKS`]. It reports on COM1, one line per benchmark
//! ([`report`]), and powers off.
//!
//! What the guest does, in order (the binary, `main.rs` and its modules):
//!
//! 1. enters through `freestanding::entry_points!`, reads its command line
//!    ([`config`]), loads its own GDT with a TSS per CPU and an IDT whose
//!    every gate runs on an interrupt stack (the code is built with the red
//!    zone, which an interrupt on the same stack would overwrite);
//! 2. finds the CPU's vendor, features and TSC rate ([`cpuid`], [`pit`]),
//!    enables the local APIC (x2APIC where CPUID has it, else xAPIC), and
//!    starts vCPU 1 with INIT-SIPI-SIPI through a real-mode trampoline below
//!    1 MiB; vCPU 1 then halts with interrupts on and answers IPIs;
//! 3. for each benchmark: checks that this CPU and backend can run it (else
//!    `unavailable` and why), calibrates its loop and takes samples with
//!    `vmbench-sampling` (the agent's micro suite's rule too), writing the
//!    window marks around the samples ([`WINDOW_START`], [`WINDOW_END`] to
//!    port 0x80); an exception, a panic or a bounded wait that runs out
//!    ends that benchmark as `failed` and the suite goes on with the next;
//! 4. prints `done` and ends the VM (i8042 reset, then a triple fault).
//!
//! This library holds what can be tested on the host: the command line,
//! the report's lines, CPUID decoding, descriptor encodings, the PIT
//! arithmetic, the heap and the benchmark list.

#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod config;
pub mod cpuid;
pub mod descriptors;
pub mod heap;
pub mod pit;
pub mod report;

/// The report's version (`hello version=`): bumped when a line changes.
pub const REPORT_VERSION: u32 = 1;

/// The boot-marker port, where the benchmark windows are marked.
pub const MARKER_PORT: u16 = 0x80;
/// Window start: this byte, then the window id's low and high bytes.
pub const WINDOW_START: u8 = 0xb0;
/// Window end: this byte, then the same two id bytes.
pub const WINDOW_END: u8 = 0xb1;

/// The port our VMM handles in its userspace (`layout::BENCH_PORT`).
pub const BENCH_PORT: u16 = 0x0ee0;
/// The PIC's edge/level control register: KVM's in-kernel irqchip.
pub const ELCR_PORT: u16 = 0x04d0;
/// virtio-mmio's MagicValue ("virt", little-endian) at offset 0.
pub const VIRTIO_MMIO_MAGIC: u32 = 0x7472_6976;

/// One benchmark: its name (the window id is its index in
/// [`BENCHMARKS`]) and, in a few words, what one operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Benchmark {
    pub name: &'static str,
    pub operation: &'static str,
}

/// kvm-unit-tests' x86/vmexit.c set, in `vmbench bench --list` order.
pub const BENCHMARKS: [Benchmark; 16] = [
    Benchmark {
        name: "cpuid",
        operation: "CPUID leaf 0: an exit the hypervisor answers in the kernel",
    },
    Benchmark {
        name: "vmcall",
        operation: "VMCALL (Intel) or VMMCALL (AMD) with an unknown hypercall number",
    },
    Benchmark {
        name: "inl_from_vmm",
        operation: "inl from port 0x0EE0, handled in the VMM's userspace",
    },
    Benchmark {
        name: "inl_from_kernel",
        operation: "inb from port 0x4D0 (the PIC's ELCR), handled in the kernel's irqchip",
    },
    Benchmark {
        name: "mmio_read",
        operation: "a 32-bit read of the first virtio-mmio device's MagicValue",
    },
    Benchmark {
        name: "mov_to_cr8",
        operation: "MOV to CR8 (the task priority) of 0",
    },
    Benchmark {
        name: "mov_dr",
        operation: "MOV to DR7 of 0x400 (its reset value)",
    },
    Benchmark {
        name: "rdmsr",
        operation: "RDMSR of IA32_TSC_ADJUST (0x3b)",
    },
    Benchmark {
        name: "wrmsr",
        operation: "WRMSR of IA32_TSC_ADJUST (0x3b) with its own value",
    },
    Benchmark {
        name: "tscdeadline_immed",
        operation: "arming the TSC-deadline timer in the past: its interrupt at once",
    },
    Benchmark {
        name: "tscdeadline",
        operation: "arming the TSC-deadline timer 3000 cycles ahead and waiting for it",
    },
    Benchmark {
        name: "self_ipi",
        operation: "an IPI to this vCPU, taken with interrupts on",
    },
    Benchmark {
        name: "ipi_cross",
        operation: "an IPI to the other vCPU, halted, until its handler has run",
    },
    Benchmark {
        name: "wbinvd",
        operation: "WBINVD",
    },
    Benchmark {
        name: "toggle_cr0_wp",
        operation: "CR0.WP flipped and restored: two MOVs to CR0",
    },
    Benchmark {
        name: "toggle_cr4_pge",
        operation: "CR4.PGE flipped and restored: two MOVs to CR4 (TLB flushes)",
    },
];

/// The index of benchmark `name` in [`BENCHMARKS`] (its window id).
pub fn benchmark_index(name: &[u8]) -> Option<usize> {
    BENCHMARKS.iter().position(|b| b.name.as_bytes() == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_lowercase_identifiers() {
        for (i, b) in BENCHMARKS.iter().enumerate() {
            assert_eq!(benchmark_index(b.name.as_bytes()), Some(i));
            assert!(b
                .name
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_'));
            assert!(!b.operation.is_empty());
        }
        assert_eq!(benchmark_index(b"cpu"), None);
    }

    #[test]
    fn the_design_files_order() {
        let names: Vec<&str> = BENCHMARKS.iter().map(|b| b.name).collect();
        assert_eq!(
            names,
            [
                "cpuid",
                "vmcall",
                "inl_from_vmm",
                "inl_from_kernel",
                "mmio_read",
                "mov_to_cr8",
                "mov_dr",
                "rdmsr",
                "wrmsr",
                "tscdeadline_immed",
                "tscdeadline",
                "self_ipi",
                "ipi_cross",
                "wbinvd",
                "toggle_cr0_wp",
                "toggle_cr4_pge"
            ]
        );
    }
}
