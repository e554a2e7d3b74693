//! Entering the kernel and not: `syscall` (the `syscall` instruction, on
//! x86-64 what virtbench's i386 `int 0x80` measured) and `vdso_call` (the
//! call that avoids it).

use std::hint::black_box;

use super::timing::time_loop;
use super::{Env, SetupError, Workload};

/// `syscall`: getppid through the `syscall` instruction itself, not libc
/// (which could cache it).
pub fn syscall(_env: &Env) -> Result<Box<dyn Workload>, SetupError> {
    Ok(Box::new(Syscall))
}

struct Syscall;

#[inline(always)]
fn getppid_raw() -> u64 {
    let mut rax = libc::SYS_getppid as u64;
    // SAFETY: getppid takes no arguments and touches no memory; the
    // instruction clobbers rcx and r11 (declared) and nothing else.
    unsafe {
        std::arch::asm!(
            "syscall",
            inout("rax") rax,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack)
        );
    }
    rax
}

impl Workload for Syscall {
    fn run(&mut self, iterations: u64) -> Result<u64, String> {
        Ok(time_loop(iterations, || {
            black_box(getppid_raw());
        }))
    }
}

/// `vdso_call`: clock_gettime(CLOCK_MONOTONIC) through the vDSO. (When the
/// clocksource cannot be read from userspace the vDSO itself falls back to
/// the system call, and this costs as much as one.)
pub fn vdso_call(_env: &Env) -> Result<Box<dyn Workload>, SetupError> {
    Ok(Box::new(VdsoCall))
}

struct VdsoCall;

impl Workload for VdsoCall {
    fn run(&mut self, iterations: u64) -> Result<u64, String> {
        Ok(time_loop(iterations, || {
            black_box(rustix::time::clock_gettime(
                rustix::time::ClockId::Monotonic,
            ));
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_raw_syscall_is_getppid() {
        assert_eq!(getppid_raw(), std::os::unix::process::parent_id() as u64);
    }
}
