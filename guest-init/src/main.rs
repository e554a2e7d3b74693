//! `vmbench-init`: vmbench's PID 1 inside the guest.
//!
//! Its life, in order: read CLOCK_BOOTTIME (the kernel's boot time as the guest
//! saw it); write the userspace-start code to the boot-marker port so the VMM
//! can timestamp it on the host clock; mount the pseudo filesystems; read its
//! settings from the kernel command line; connect to the host over vsock and
//! report `Hello` then `Ready`; wait for the host's `Ack`; power the VM off.
//!
//! PID 1 must never panic (a dying init is a kernel panic) and must always end
//! the VM, so every step that can fail is reported on the console as one
//! `vmbench-init: key=value …` line and the agent goes on to power off.

mod clock;
mod console;
mod marker;
mod mounts;
mod power;
mod report;
mod settings;

use std::process::ExitCode;

fn main() -> ExitCode {
    let init_ns = clock::boottime_ns();
    if std::process::id() != 1 {
        // Mounting over /proc and rebooting are only right for PID 1 of a guest.
        eprintln!("vmbench-init: error=not_pid1 pid={} (this is a guest's /init; it does not run on a host)", std::process::id());
        return ExitCode::from(2);
    }
    marker::write(vmbench_proto::MARKER_USERSPACE_START);
    std::panic::set_hook(Box::new(|info| {
        console::line(&[("error", "panic"), ("detail", &info.to_string())]);
    }));
    // A panic is already reported by the hook; either way the VM must end.
    let _ = std::panic::catch_unwind(|| report::run(init_ns));
    power::off()
}
