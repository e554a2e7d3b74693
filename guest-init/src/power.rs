//! Ending the VM. Without ACPI a power-off only halts the CPU and the VMM keeps
//! running, so the agent reboots instead: with `reboot=t` on the kernel command
//! line that is a triple fault, which QEMU (`-no-reboot`) and vmbench's own VMM
//! turn into a VM exit.

use nix::sys::reboot::{reboot, RebootMode};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Reaps every child that has exited, so none lingers as a zombie under PID 1.
pub fn reap_children() {
    while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

/// Ends the VM. Never returns; if the reboot call itself fails, PID 1 exits,
/// which panics the kernel, and `panic=-1` reboots it all the same.
pub fn off() -> ! {
    reap_children();
    nix::unistd::sync();
    let err = reboot(RebootMode::RB_AUTOBOOT).unwrap_err();
    crate::console::line(&[("error", "reboot_failed"), ("detail", err.desc())]);
    std::process::exit(1)
}
