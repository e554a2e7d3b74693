//! Each benchmark's operation, the loop that repeats it, and what it needs
//! from the CPU. As in kvm-unit-tests, the loop's own instructions (a
//! decrement and a branch) count in each operation's cost; the sampler
//! subtracts only a timed run's fixed overhead (the TSC reads, the call).

use alloc::format;
use alloc::string::String;
use core::arch::asm;
use core::sync::atomic::Ordering;

use freestanding::clock::{tsc_ticks, Deadline};
use vmexit_guest::cpuid::Hypercall;
use vmexit_guest::{BENCHMARKS, BENCH_PORT, ELCR_PORT, VIRTIO_MMIO_MAGIC};

use crate::apic::{self, MSR_TSC_DEADLINE};
use crate::traps::{self, Fault, BENCH_IRQS, BENCH_VECTOR};
use crate::x86::{rdmsr, read_cr0, read_cr4, wrmsr};
use crate::Machine;

const MSR_TSC_ADJUST: u32 = 0x3b;
const CR0_WP: u64 = 1 << 16;
const CR4_PGE: u64 = 1 << 7;
/// kvm-unit-tests' armed deadline: 3000 cycles ahead.
const DEADLINE_AHEAD_TICKS: u64 = 3000;
/// How long one operation may wait for its interrupt: about a second.
const IRQ_WAIT_TICKS: u64 = 3_000_000_000;
/// Spins between two looks at the TSC while waiting for an interrupt.
const SPINS_PER_CHECK: u32 = 256;

/// A benchmark ready to run: its operation and what it works on.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    Cpuid,
    Hypercall(Hypercall),
    InlFromVmm,
    InlFromKernel,
    MmioRead(u64),
    MovToCr8,
    MovDr,
    Rdmsr,
    Wrmsr(u64),
    TscDeadlineImmediate,
    TscDeadline,
    SelfIpi,
    IpiCross,
    Wbinvd,
    ToggleCr0Wp,
    ToggleCr4Pge,
}

/// Benchmark `index` of `BENCHMARKS` on this machine, or why it cannot run.
pub fn prepare(index: usize, machine: &Machine) -> Result<Body, String> {
    let apic_needed = |body: Body| match apic::mode() {
        apic::Mode::None => Err(String::from(
            "this CPU has no local APIC (CPUID 1 EDX bit 9)",
        )),
        _ => Ok(body),
    };
    let deadline_needed = |body: Body| {
        if !machine.features.tsc_deadline {
            return Err(String::from(
                "the local APIC has no TSC-deadline mode here (CPUID 1 ECX bit 24 clear)",
            ));
        }
        apic_needed(body)
    };
    let name = BENCHMARKS.get(index).map_or("", |b| b.name);
    match name {
        "cpuid" => Ok(Body::Cpuid),
        "vmcall" => Ok(Body::Hypercall(machine.hypercall)),
        "inl_from_vmm" => Ok(Body::InlFromVmm),
        "inl_from_kernel" => Ok(Body::InlFromKernel),
        "mmio_read" => match machine.mmio_base {
            Some(base) if base % 4 == 0 && base < freestanding::boot::MAPPED_BYTES - 4 => {
                Ok(Body::MmioRead(base))
            }
            Some(base) => Err(format!(
                "the first virtio_mmio.device= is at {base:#x}, outside the guest's identity map"
            )),
            None => Err(String::from(
                "no virtio_mmio.device= on the command line: the VM has no virtio-mmio device",
            )),
        },
        "mov_to_cr8" => Ok(Body::MovToCr8),
        "mov_dr" => Ok(Body::MovDr),
        "rdmsr" => Ok(Body::Rdmsr),
        "wrmsr" => Ok(Body::Wrmsr(0)),
        "tscdeadline_immed" => deadline_needed(Body::TscDeadlineImmediate),
        "tscdeadline" => deadline_needed(Body::TscDeadline),
        "self_ipi" => apic_needed(Body::SelfIpi),
        "ipi_cross" => match (apic::mode(), machine.cpus) {
            (apic::Mode::None, _) => apic_needed(Body::IpiCross),
            (_, 2) => Ok(Body::IpiCross),
            _ => Err(String::from(
                "vCPU 1 (APIC ID 1) did not answer INIT-SIPI-SIPI: the VM has one vCPU",
            )),
        },
        "wbinvd" => Ok(Body::Wbinvd),
        "toggle_cr0_wp" => Ok(Body::ToggleCr0Wp),
        "toggle_cr4_pge" if !machine.pge => Err(String::from(
            "this CPU has no global pages (CPUID 1 EDX bit 13 clear)",
        )),
        "toggle_cr4_pge" => Ok(Body::ToggleCr4Pge),
        _ => Err(format!("no benchmark {index}")),
    }
}

impl Body {
    /// Before the first run (caught): checks what the operation needs and
    /// gets what the loop needs (the suite then runs the operation once).
    /// `Err(why)`: unavailable; a fault here goes to [`Body::unavailable_on`].
    pub fn probe(&mut self) -> Result<(), String> {
        match self {
            Body::MmioRead(base) => {
                // SAFETY: prepare() checked the address is identity-mapped;
                // MagicValue is read-only.
                let magic = unsafe { (*base as *const u32).read_volatile() };
                if magic != VIRTIO_MMIO_MAGIC {
                    return Err(format!(
                        "no virtio-mmio device at {base:#x}: MagicValue reads {magic:#x}"
                    ));
                }
            }
            Body::Wrmsr(value) => *value = rdmsr(MSR_TSC_ADJUST),
            Body::TscDeadlineImmediate | Body::TscDeadline => {
                apic::timer_tsc_deadline(Some(BENCH_VECTOR));
            }
            _ => {}
        }
        Ok(())
    }

    /// Why a fault in [`Body::probe`] means this CPU cannot run the
    /// benchmark (rather than that it failed).
    pub fn unavailable_on(&self, fault: &Fault) -> Option<String> {
        let Fault::Exception { vector, .. } = *fault else {
            return None;
        };
        match (self, vector) {
            (Body::Hypercall(call), 6) => Some(format!(
                "{} raised #UD: no hypervisor answers hypercalls here (as under QEMU's TCG)",
                call.name()
            )),
            (Body::Rdmsr | Body::Wrmsr(_), 13) => Some(String::from(
                "IA32_TSC_ADJUST (MSR 0x3b) raised #GP: this CPU has no such MSR",
            )),
            (Body::Wbinvd, 6 | 13) => Some(format!("WBINVD raised {fault}")),
            _ => None,
        }
    }

    /// Why the watchdog biting in [`Body::probe`] means this CPU cannot run
    /// the benchmark.
    pub fn unavailable_on_hang(&self, ms: u64) -> Option<String> {
        match self {
            Body::Hypercall(call) => Some(format!(
                "{} did not return within {ms} ms: a KVM that emulates every guest instruction \
                 (nested, without hardware virtualisation) patches the hypercall instruction in \
                 and re-executes it, for ever",
                call.name()
            )),
            _ => None,
        }
    }

    /// Whether the benchmark uses the APIC timer itself (the watchdog then
    /// stays off: the benchmark's own waits are bounded).
    pub fn uses_timer(&self) -> bool {
        matches!(self, Body::TscDeadlineImmediate | Body::TscDeadline)
    }

    /// `iterations` operations, with interrupts on (the suite turns them on
    /// for the watchdog; the timer and IPI benchmarks take theirs).
    pub fn run(&self, iterations: u64) {
        match *self {
            Body::Cpuid => repeat(iterations, || {
                // SAFETY: CPUID leaf 0 only reads; RBX (reserved by LLVM) is
                // kept in a scratch register around it.
                unsafe {
                    asm!("mov {keep}, rbx", "cpuid", "mov rbx, {keep}", keep = out(reg) _,
                         inout("eax") 0u32 => _, inout("ecx") 0u32 => _, out("edx") _,
                         options(nomem, nostack, preserves_flags));
                }
            }),
            Body::Hypercall(Hypercall::Vmcall) => repeat(iterations, || {
                // SAFETY: hypercall 0 is none: KVM answers -ENOSYS in RAX and
                // changes nothing else; RBX is kept as above.
                unsafe {
                    asm!("mov {keep}, rbx", "xor ebx, ebx", "vmcall", "mov rbx, {keep}",
                         keep = out(reg) _, inout("rax") 0u64 => _, inout("rcx") 0u64 => _,
                         inout("rdx") 0u64 => _, inout("rsi") 0u64 => _,
                         options(nomem, nostack));
                }
            }),
            Body::Hypercall(Hypercall::Vmmcall) => repeat(iterations, || {
                // SAFETY: as VMCALL.
                unsafe {
                    asm!("mov {keep}, rbx", "xor ebx, ebx", "vmmcall", "mov rbx, {keep}",
                         keep = out(reg) _, inout("rax") 0u64 => _, inout("rcx") 0u64 => _,
                         inout("rdx") 0u64 => _, inout("rsi") 0u64 => _,
                         options(nomem, nostack));
                }
            }),
            Body::InlFromVmm => repeat(iterations, || {
                // SAFETY: a read of the bench port, which nothing acts on.
                unsafe {
                    asm!("in eax, dx", in("dx") BENCH_PORT, out("eax") _,
                         options(nomem, nostack, preserves_flags));
                }
            }),
            Body::InlFromKernel => repeat(iterations, || {
                // SAFETY: a read of the ELCR, which changes nothing.
                unsafe {
                    asm!("in al, dx", in("dx") ELCR_PORT, out("al") _,
                         options(nomem, nostack, preserves_flags));
                }
            }),
            Body::MmioRead(base) => repeat(iterations, || {
                // SAFETY: a read of MagicValue (checked by probe), read-only.
                unsafe {
                    asm!("mov {v:e}, dword ptr [{a}]", a = in(reg) base, v = out(reg) _,
                         options(readonly, nostack, preserves_flags));
                }
            }),
            Body::MovToCr8 => repeat(iterations, || {
                // SAFETY: TPR 0, what it already is.
                unsafe {
                    asm!("mov cr8, {}", in(reg) 0u64, options(nomem, nostack, preserves_flags));
                }
            }),
            Body::MovDr => repeat(iterations, || {
                // SAFETY: DR7's reset value: no breakpoint enabled.
                unsafe {
                    asm!("mov dr7, {}", in(reg) 0x400u64, options(nomem, nostack, preserves_flags));
                }
            }),
            Body::Rdmsr => repeat(iterations, || {
                // SAFETY: reading TSC_ADJUST (probed) changes nothing.
                unsafe {
                    asm!("rdmsr", in("ecx") MSR_TSC_ADJUST, out("eax") _, out("edx") _,
                         options(nomem, nostack, preserves_flags));
                }
            }),
            Body::Wrmsr(value) => repeat(iterations, || {
                // SAFETY: TSC_ADJUST gets the value it had (probe read it):
                // the TSC does not move.
                unsafe {
                    asm!("wrmsr", in("ecx") MSR_TSC_ADJUST, in("eax") value as u32,
                         in("edx") (value >> 32) as u32, options(nomem, nostack, preserves_flags));
                }
            }),
            Body::TscDeadlineImmediate => repeat(iterations, || {
                let before = BENCH_IRQS[0].load(Ordering::SeqCst);
                // SAFETY: the timer is in TSC-deadline mode on the bench
                // vector (probe); a deadline now fires at once.
                unsafe { wrmsr(MSR_TSC_DEADLINE, tsc_ticks()) };
                wait_for_irq(0, before, "the TSC-deadline timer's interrupt");
            }),
            Body::TscDeadline => repeat(iterations, || {
                let before = BENCH_IRQS[0].load(Ordering::SeqCst);
                // SAFETY: as above, 3000 ticks ahead.
                unsafe { wrmsr(MSR_TSC_DEADLINE, tsc_ticks() + DEADLINE_AHEAD_TICKS) };
                wait_for_irq(0, before, "the TSC-deadline timer's interrupt");
            }),
            Body::SelfIpi => repeat(iterations, || {
                // kvm-unit-tests' self_ipi_sti_nop: sent with interrupts off,
                // taken once they are on again.
                let before = BENCH_IRQS[0].load(Ordering::SeqCst);
                crate::x86::cli();
                apic::self_ipi(BENCH_VECTOR);
                crate::x86::sti();
                wait_for_irq(0, before, "the self-IPI");
            }),
            Body::IpiCross => repeat(iterations, || {
                let before = BENCH_IRQS[1].load(Ordering::SeqCst);
                apic::send_fixed(1, BENCH_VECTOR);
                wait_for_irq(1, before, "vCPU 1 to take the IPI");
            }),
            Body::Wbinvd => repeat(iterations, || {
                // SAFETY: writes back and invalidates caches: slow, harmless.
                unsafe { asm!("wbinvd", options(nostack, preserves_flags)) };
            }),
            Body::ToggleCr0Wp => {
                let cr0 = read_cr0();
                repeat(iterations, || {
                    // SAFETY: write protection for CPL 0 flipped and back;
                    // the guest's pages are all writable either way.
                    unsafe {
                        asm!("mov cr0, {flipped}", "mov cr0, {cr0}", flipped = in(reg) cr0 ^ CR0_WP,
                             cr0 = in(reg) cr0, options(nostack, preserves_flags));
                    }
                })
            }
            Body::ToggleCr4Pge => {
                let cr4 = read_cr4();
                repeat(iterations, || {
                    // SAFETY: global pages flipped and back (each flushes the
                    // TLB); the mappings are the same either way.
                    unsafe {
                        asm!("mov cr4, {flipped}", "mov cr4, {cr4}", flipped = in(reg) cr4 ^ CR4_PGE,
                             cr4 = in(reg) cr4, options(nostack, preserves_flags));
                    }
                })
            }
        }
    }
}

#[inline(always)]
fn repeat(iterations: u64, mut op: impl FnMut()) {
    for _ in 0..iterations {
        op();
    }
}

/// Waits until CPU `cpu` has taken another bench interrupt than the
/// `before`th; leaves the benchmark (a timeout) after about a second.
#[inline(always)]
fn wait_for_irq(cpu: usize, before: u64, what: &'static str) {
    let mut deadline = None;
    let mut spins = 0u32;
    while BENCH_IRQS[cpu].load(Ordering::SeqCst) == before {
        spins += 1;
        if spins % SPINS_PER_CHECK == 0 {
            let now = tsc_ticks();
            if deadline
                .get_or_insert_with(|| Deadline::after(now, IRQ_WAIT_TICKS))
                .passed(now)
            {
                let what = match traps::ap_fault() {
                    Some(_) if cpu == 1 => "vCPU 1, which faulted",
                    _ => what,
                };
                traps::escape(Fault::Timeout(what));
            }
        }
        core::hint::spin_loop();
    }
}

/// Puts back what a benchmark may have left changed, after it ended well
/// or not: interrupts off, TPR 0, DR7 at reset, the TSC-deadline timer
/// disarmed and masked, CR0 and CR4 as they were before.
pub fn restore(cr0: u64, cr4: u64) {
    crate::x86::cli();
    // SAFETY: the values the guest runs with outside benchmarks.
    unsafe {
        asm!("mov cr0, {}", "mov cr4, {}", "mov dr7, {}", in(reg) cr0, in(reg) cr4,
             in(reg) 0x400u64, options(nostack, preserves_flags));
    }
    if apic::mode() != apic::Mode::None {
        apic::set_tpr(0);
    }
}

/// Disarms the TSC-deadline timer and masks the timer (after a benchmark
/// that [uses it](Body::uses_timer)).
pub fn disarm_timer() {
    // SAFETY: a deadline of 0 disarms the timer.
    unsafe { wrmsr(MSR_TSC_DEADLINE, 0) };
    apic::timer_tsc_deadline(None);
}
