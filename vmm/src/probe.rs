//! Is KVM here native, emulated, or absent?
//!
//! `/dev/kvm` existing is not enough to trust KVM timings: under nested
//! virtualisation without hardware support, KVM's instruction emulator runs
//! guest code in software. Tiny guests work there; Linux does not (the
//! emulator lacks instructions such as XRSTOR), and every timing is the
//! emulator's, not the CPU's. So the probe runs a real-mode guest that counts
//! down a register in a `dec`/`jnz` loop and times it: a CPU executes an
//! iteration in about a nanosecond, an emulator in hundreds.

use std::time::Instant;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuExit};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

#[derive(Debug, Clone, PartialEq)]
pub enum KvmVerdict {
    Absent { reason: String },
    Emulated { ns_per_iteration: f64 },
    Native { ns_per_iteration: f64 },
}

impl KvmVerdict {
    pub fn label(&self) -> &'static str {
        match self {
            KvmVerdict::Absent { .. } => "absent",
            KvmVerdict::Emulated { .. } => "emulated",
            KvmVerdict::Native { .. } => "native",
        }
    }

    pub fn is_native(&self) -> bool {
        matches!(self, KvmVerdict::Native { .. })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    pub verdict: KvmVerdict,
    /// Loop iterations of the timed run.
    pub iterations: u64,
    /// Wall time of the timed run's KVM_RUN.
    pub loop_ns: u64,
    /// Wall time of a run with no iterations: entry, `hlt`, exit.
    pub baseline_ns: u64,
}

/// Below this many ns per iteration the CPU runs guest code itself.
pub const NATIVE_NS_PER_ITERATION: f64 = 50.0;

/// Iterations of the first timed run: ~0.3 ms native, ~130 ms emulated.
const ITERATIONS: u32 = 100_000;

/// The verdict for measured figures.
pub fn classify(iterations: u64, loop_ns: u64, baseline_ns: u64) -> KvmVerdict {
    let ns_per_iteration = loop_ns.saturating_sub(baseline_ns) as f64 / iterations.max(1) as f64;
    if ns_per_iteration < NATIVE_NS_PER_ITERATION {
        KvmVerdict::Native { ns_per_iteration }
    } else {
        KvmVerdict::Emulated { ns_per_iteration }
    }
}

const GUEST_MEM_BYTES: usize = 0x10000;
const CODE_ADDR: u64 = 0x1000;

/// `mov ecx, N; l: dec ecx; jnz l; hlt` in 16-bit real mode.
fn guest_code(iterations: u32) -> Vec<u8> {
    let mut code = vec![0x66, 0xb9];
    code.extend_from_slice(&iterations.to_le_bytes());
    // With ecx = 0, `dec` wraps to 2^32 - 1: start at 1 and skip the loop's
    // first decrement instead, so N = 0 runs the loop body once.
    code.extend_from_slice(&[0x66, 0x49, 0x75, 0xfc, 0xf4]);
    code
}

/// Runs the guest once with `iterations` and returns the KVM_RUN wall time.
fn timed_run(kvm: &Kvm, iterations: u32) -> Result<u64, String> {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), GUEST_MEM_BYTES)])
        .map_err(|e| format!("guest memory: {e}"))?;
    mem.write_slice(&guest_code(iterations.max(1)), GuestAddress(CODE_ADDR))
        .map_err(|e| format!("writing guest code: {e}"))?;
    let vm = kvm
        .create_vm()
        .map_err(|e| format!("KVM_CREATE_VM failed: {e}"))?;
    let host_addr = mem
        .get_host_address(GuestAddress(0))
        .map_err(|e| format!("guest memory: {e}"))?;
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: GUEST_MEM_BYTES as u64,
        userspace_addr: host_addr as u64,
    };
    // SAFETY: the region is `mem`'s own mapping, GUEST_MEM_BYTES long, and `mem`
    // is declared before `vm`, so it is unmapped only after the VM is gone.
    unsafe { vm.set_user_memory_region(region) }
        .map_err(|e| format!("KVM_SET_USER_MEMORY_REGION failed: {e}"))?;
    let mut vcpu = vm
        .create_vcpu(0)
        .map_err(|e| format!("KVM_CREATE_VCPU failed: {e}"))?;
    let mut sregs = vcpu
        .get_sregs()
        .map_err(|e| format!("KVM_GET_SREGS failed: {e}"))?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs)
        .map_err(|e| format!("KVM_SET_SREGS failed: {e}"))?;
    let regs = kvm_bindings::kvm_regs {
        rip: CODE_ADDR,
        rflags: 2,
        ..Default::default()
    };
    vcpu.set_regs(&regs)
        .map_err(|e| format!("KVM_SET_REGS failed: {e}"))?;
    let start = Instant::now();
    let exit = vcpu.run();
    let elapsed_ns = start.elapsed().as_nanos() as u64;
    match exit {
        Ok(VcpuExit::Hlt) => Ok(elapsed_ns),
        Ok(other) => Err(format!(
            "the calibration guest ended with {other:?} instead of hlt"
        )),
        Err(e) => Err(format!("KVM_RUN failed: {e}")),
    }
}

/// Probes KVM. Never panics: every failure is `Absent` with the step that failed.
pub fn calibrate() -> Calibration {
    let absent = |reason: String| Calibration {
        verdict: KvmVerdict::Absent { reason },
        iterations: 0,
        loop_ns: 0,
        baseline_ns: 0,
    };
    let kvm = match Kvm::new() {
        Ok(kvm) => kvm,
        Err(e) => return absent(format!("cannot open /dev/kvm: {e}")),
    };
    // The baseline is the quickest of three: entry and exit costs vary.
    let mut baseline_ns = u64::MAX;
    for _ in 0..3 {
        match timed_run(&kvm, 1) {
            Ok(ns) => baseline_ns = baseline_ns.min(ns),
            Err(reason) => return absent(reason),
        }
    }
    let mut iterations = ITERATIONS;
    loop {
        let loop_ns = match timed_run(&kvm, iterations) {
            Ok(ns) => ns,
            Err(reason) => return absent(reason),
        };
        // On a native CPU 100k iterations take well under a millisecond, too
        // close to the run's own overhead: grow the loop until it dominates.
        if loop_ns < 2_000_000 && iterations < 100_000_000 {
            iterations *= 10;
            continue;
        }
        return Calibration {
            verdict: classify(u64::from(iterations), loop_ns, baseline_ns),
            iterations: u64::from(iterations),
            loop_ns,
            baseline_ns,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_by_cost_per_iteration() {
        assert!(
            matches!(classify(1_000_000, 1_200_000, 200_000), KvmVerdict::Native { ns_per_iteration } if ns_per_iteration == 1.0)
        );
        assert!(
            matches!(classify(100_000, 130_050_000, 50_000), KvmVerdict::Emulated { ns_per_iteration } if ns_per_iteration == 1300.0)
        );
        // A baseline above the loop (noise) is not a negative cost.
        assert!(
            matches!(classify(10, 5, 9), KvmVerdict::Native { ns_per_iteration } if ns_per_iteration == 0.0)
        );
    }

    #[test]
    fn guest_code_is_the_counting_loop() {
        assert_eq!(
            guest_code(0x0102_0304),
            [0x66, 0xb9, 4, 3, 2, 1, 0x66, 0x49, 0x75, 0xfc, 0xf4]
        );
    }

    #[test]
    fn calibration_runs_for_real_where_kvm_exists() {
        let start = Instant::now();
        let c = calibrate();
        if !std::path::Path::new("/dev/kvm").exists() {
            assert!(matches!(c.verdict, KvmVerdict::Absent { .. }));
            println!("SKIPPED: calibration_runs_for_real_where_kvm_exists: no /dev/kvm");
            return;
        }
        assert!(!matches!(c.verdict, KvmVerdict::Absent { .. }), "{c:?}");
        assert!(c.loop_ns > c.baseline_ns, "{c:?}");
        println!("kvm: {:?} in {:?}", c.verdict, start.elapsed());
    }
}
