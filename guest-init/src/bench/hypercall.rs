//! `hypercall`: VMCALL (Intel) or VMMCALL (AMD), chosen by the CPU vendor,
//! from userspace. KVM answers a hypercall from CPL 3 with an error
//! (`-KVM_EPERM` in rax) and resumes the guest after the instruction: the
//! round trip is the cost of the exit. Where nothing answers it (TCG, bare
//! metal, a hypervisor that injects #UD) it raises #UD or #GP, which arrives
//! here as SIGILL or SIGSEGV.
//!
//! A signal handler steps over the instruction when that happens, so a
//! probe can count traps: if every probe traps the benchmark is unavailable
//! (and why), if none does it is timed. The handler touches only what
//! trapped at one of the two instructions; anything else gets the default
//! action (the runner dies, and the benchmark is `Failed`).

use std::hint::black_box;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

use super::exits::vendor;
use super::timing::time_loop;
use super::{require_vm, Env, SetupError, Workload};

const VMCALL: [u8; 3] = [0x0f, 0x01, 0xc1];
const VMMCALL: [u8; 3] = [0x0f, 0x01, 0xd9];

/// Probes before deciding whether the instruction traps.
const PROBES: u32 = 16;

/// KVM's harmless hypercall number (KVM_HC_VAPIC_POLL_IRQ); from CPL 3 KVM
/// refuses every number alike.
const HYPERCALL_NR: u64 = 1;

static TRAPS: AtomicU32 = AtomicU32::new(0);
static LAST_SIGNAL: AtomicI32 = AtomicI32::new(0);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Instruction {
    Vmcall,
    Vmmcall,
}

impl Instruction {
    fn name(self) -> &'static str {
        match self {
            Instruction::Vmcall => "VMCALL",
            Instruction::Vmmcall => "VMMCALL",
        }
    }

    /// One hypercall; rax after it.
    #[inline(always)]
    fn call(self) -> u64 {
        let mut rax = HYPERCALL_NR;
        match self {
            // SAFETY: a hypercall changes at most rax in this process (KVM
            // writes its answer there); if it traps, the handler steps over
            // it with every register restored.
            Instruction::Vmcall => unsafe {
                std::arch::asm!("vmcall", inout("rax") rax, options(nostack));
            },
            // SAFETY: as for VMCALL.
            Instruction::Vmmcall => unsafe {
                std::arch::asm!("vmmcall", inout("rax") rax, options(nostack));
            },
        }
        rax
    }
}

/// The instruction this CPU's vendor has, if either.
fn instruction_for(vendor: &str) -> Option<Instruction> {
    match vendor {
        "GenuineIntel" | "CentaurHauls" | "  Shanghai  " => Some(Instruction::Vmcall),
        "AuthenticAMD" | "HygonGenuine" => Some(Instruction::Vmmcall),
        _ => None,
    }
}

/// Steps over a VMCALL or VMMCALL that trapped; anything else gets the
/// default action when the handler returns.
extern "C" fn on_trap(
    signal: libc::c_int,
    _info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    let context = context.cast::<libc::ucontext_t>();
    // SAFETY: the kernel passes the interrupted context, valid and ours
    // until the handler returns.
    let rip = unsafe { (*context).uc_mcontext.gregs[libc::REG_RIP as usize] };
    // SAFETY: rip is where this process was executing, so its code is
    // mapped there and readable.
    let bytes = unsafe { std::ptr::read_unaligned(rip as *const [u8; 3]) };
    if bytes == VMCALL || bytes == VMMCALL {
        // SAFETY: as above; moving rip past the 3-byte instruction resumes
        // right after it.
        unsafe { (*context).uc_mcontext.gregs[libc::REG_RIP as usize] = rip + 3 };
        TRAPS.fetch_add(1, Ordering::Relaxed);
        LAST_SIGNAL.store(signal, Ordering::Relaxed);
    } else {
        // SAFETY: signal() is async-signal-safe; the faulting instruction
        // runs again and the default action ends the process.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
    }
}

fn install_handler() -> Result<(), SetupError> {
    for signal in [libc::SIGILL, libc::SIGSEGV] {
        // SAFETY: an all-zero sigaction is valid (empty mask, no flags).
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_trap as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO;
        // SAFETY: installs a handler in this (runner) process only; the
        // handler is async-signal-safe (atomics and signal()).
        if unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) } != 0 {
            return Err(SetupError::Failed(format!(
                "sigaction: {}",
                std::io::Error::last_os_error()
            )));
        }
    }
    Ok(())
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGILL => "SIGILL (#UD)",
        libc::SIGSEGV => "SIGSEGV (#GP)",
        _ => "a signal",
    }
}

pub fn hypercall(env: &Env) -> Result<Box<dyn Workload>, SetupError> {
    require_vm(env, "a hypercall needs a hypervisor to answer it")?;
    let vendor = vendor();
    let instruction = instruction_for(&vendor).ok_or_else(|| {
        SetupError::Unavailable(format!(
            "CPU vendor {vendor:?} has neither VMCALL nor VMMCALL"
        ))
    })?;
    install_handler()?;
    let mut rax = 0;
    for _ in 0..PROBES {
        rax = instruction.call();
    }
    let traps = TRAPS.load(Ordering::Relaxed);
    let signal = signal_name(LAST_SIGNAL.load(Ordering::Relaxed));
    match traps {
        0 => Ok(Box::new(Hypercall { instruction, rax })),
        PROBES => Err(SetupError::Unavailable(format!(
            "{} from userspace raised {signal} each of {PROBES} times: no hypervisor answers it here (under TCG it is an undefined instruction)",
            instruction.name()
        ))),
        some => Err(SetupError::Failed(format!(
            "{} from userspace raised {signal} {some} of {PROBES} times",
            instruction.name()
        ))),
    }
}

struct Hypercall {
    instruction: Instruction,
    /// rax after a probe: KVM's answer (-KVM_EPERM from CPL 3).
    rax: u64,
}

impl Workload for Hypercall {
    fn run(&mut self, iterations: u64) -> Result<u64, String> {
        let instruction = self.instruction;
        let before = TRAPS.load(Ordering::Relaxed);
        let ns = time_loop(iterations, || {
            black_box(instruction.call());
        });
        match TRAPS.load(Ordering::Relaxed) - before {
            0 => Ok(ns),
            traps => Err(format!(
                "{} trapped {traps} times while timed, after probes that did not",
                instruction.name()
            )),
        }
    }

    fn extra(&self) -> Vec<(String, u64)> {
        vec![
            (
                "vmmcall".to_string(),
                u64::from(self.instruction == Instruction::Vmmcall),
            ),
            ("rax".to_string(), self.rax),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vendor_picks_the_instruction() {
        assert_eq!(instruction_for("GenuineIntel"), Some(Instruction::Vmcall));
        assert_eq!(instruction_for("AuthenticAMD"), Some(Instruction::Vmmcall));
        assert_eq!(instruction_for("HygonGenuine"), Some(Instruction::Vmmcall));
        assert_eq!(instruction_for("TCGTCGTCGTCG"), None);
    }
}
