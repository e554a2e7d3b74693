//! `vmbench-init`: vmbench's agent inside the guest, in one of two roles.
//!
//! **PID 1** (the initramfs's `/init`, or a plain root disk's `/sbin/init`):
//! read CLOCK_BOOTTIME (the kernel's boot time as the guest saw it); write
//! the userspace-start code to the boot-marker port so the VMM can timestamp
//! it on the host clock; mount the pseudo filesystems; read its settings from
//! the kernel command line. With `vmbench.root=<device>` it mounts that root
//! disk and switches to it (marker 0x62 ends the initrd phase): on a systemd
//! image it execs systemd, which starts the agent again as a service; on a
//! plain one it goes on itself. Then it connects to the host over vsock,
//! reports `Hello` and `Ready` (or `Failed`), waits for the host's `Ack` and
//! ends the VM.
//!
//! **systemd service** (`--systemd-service`, started by the unit `vmbench
//! rootfs` installs): marker 0x63, connect and say `Hello`, wait until
//! systemd says the boot is over, report `Ready` at once, then what systemd
//! says about the boot (its timestamps, every unit's, `systemd-analyze
//! time`), wait for `Ack`, and reboot (with `reboot=t` a triple fault, which
//! ends the VM).
//!
//! **Bench mode** (`vmbench.bench=1` on the kernel command line, either
//! role): after the report the agent waits for the host's orders instead of
//! its `Ack`, runs each benchmark asked for (`bench`) and answers with its
//! result, until the `Ack`.
//!
//! **Outside a VM** (`--bench NAME`): runs micro benchmarks and prints
//! their results, for testing; `--bench-exec-exit` exits at once (what the
//! `exec` benchmark runs).
//!
//! The agent must never panic (a dying PID 1 is a kernel panic) and must
//! always end the VM, so every step that can fail is reported on the console
//! as one `vmbench-init: key=value …` line and the agent goes on to power off.

mod bench;
mod clock;
mod console;
mod marker;
mod mounts;
mod power;
mod report;
mod root;
mod settings;
mod systemd;

use std::process::ExitCode;

use vmbench_proto::GuestMarks;

fn main() -> ExitCode {
    let first = std::env::args_os().nth(1);
    // Before anything else: the exec benchmark times this.
    if first.as_deref() == Some(std::ffi::OsStr::new(bench::EXEC_MARKER_ARG)) {
        return ExitCode::SUCCESS;
    }
    let start_ns = clock::boottime_ns();
    if first.as_deref() == Some(std::ffi::OsStr::new("--bench")) {
        let args: Vec<String> = std::env::args().skip(1).collect();
        return bench::cli::main(&args);
    }
    let service = first.as_deref() == Some(std::ffi::OsStr::new("--systemd-service"));
    if !service && std::process::id() != 1 {
        // Mounting over /proc and rebooting are only right for PID 1 of a guest.
        eprintln!("vmbench-init: error=not_pid1 pid={} (this is a guest's /init, or run it as a systemd service with --systemd-service; it does not run on a host)", std::process::id());
        return ExitCode::from(2);
    }
    marker::write(if service {
        vmbench_proto::MARKER_SERVICE_START
    } else {
        vmbench_proto::MARKER_USERSPACE_START
    });
    std::panic::set_hook(Box::new(|info| {
        console::line(&[("error", "panic"), ("detail", &info.to_string())]);
    }));
    // A panic is already reported by the hook; either way the VM must end.
    let _ = std::panic::catch_unwind(|| {
        if service {
            as_service(start_ns)
        } else {
            as_pid1(start_ns)
        }
    });
    power::off()
}

/// PID 1: the initramfs (or a plain root disk's init).
fn as_pid1(init_ns: u64) {
    mounts::mount_all();
    let mut marks = root::Marks {
        init_ns,
        mounts_done_ns: clock::boottime_ns(),
        ..root::Marks::default()
    };
    let settings = report::settings();
    let mut failure = None;
    if let Some(device) = settings.root.clone() {
        match root::switch(&settings, &device, marks) {
            Ok((switched, root::Next::Init(init))) => {
                // Returns only if the exec failed.
                failure = Some(root::exec_init(&init));
                marks = switched;
            }
            Ok((switched, root::Next::Agent)) => marks = switched,
            Err(e) => failure = Some(e),
        }
    }
    let guest_marks = GuestMarks {
        init_ns: marks.init_ns,
        mounts_done_ns: marks.mounts_done_ns,
        root_mounted_ns: marks.root_mounted_ns,
        switch_root_ns: marks.switch_root_ns,
        ..GuestMarks::default()
    };
    // On the console first: if the host cannot be reached either, this is
    // the only place the reason is said.
    if let Some(what) = &failure {
        console::line(&[("error", "root_disk"), ("detail", what)]);
    }
    let Some(mut conversation) = report::Conversation::open(&settings, guest_marks, init_ns) else {
        return;
    };
    match failure {
        Some(what) => conversation.failed(&what),
        None => {
            if !conversation.ready(false) {
                return;
            }
            if settings.bench {
                return bench::serve(&mut conversation, &settings);
            }
        }
    }
    conversation.wait_ack();
}

/// The systemd service on a root disk.
fn as_service(service_start_ns: u64) {
    let settings = report::settings();
    // The initramfs's marks, if the guest came through it.
    let handoff = std::fs::read_to_string(root::HANDOFF)
        .ok()
        .and_then(|text| root::parse_handoff(&text));
    let marks = GuestMarks {
        init_ns: handoff.map_or(0, |m| m.init_ns),
        mounts_done_ns: handoff.map_or(0, |m| m.mounts_done_ns),
        root_mounted_ns: handoff.map_or(0, |m| m.root_mounted_ns),
        switch_root_ns: handoff.map_or(0, |m| m.switch_root_ns),
        service_start_ns,
        ..GuestMarks::default()
    };
    // PID 1's start: the initramfs's, else systemd's own (CLOCK_MONOTONIC,
    // the same as BOOTTIME in a guest that never suspended).
    let init_ns = handoff
        .map(|m| m.init_ns)
        .or_else(systemd::userspace_start_ns)
        .unwrap_or(0);
    let Some(mut conversation) = report::Conversation::open(&settings, marks, init_ns) else {
        return;
    };
    let state = match systemd::wait_for_boot() {
        Ok(state) => {
            console::line(&[("event", "boot_finished"), ("state", &state)]);
            state
        }
        Err(e) => {
            conversation.failed(&format!("cannot tell when the boot finished: {e}"));
            conversation.wait_ack();
            return;
        }
    };
    if !conversation.ready(true) {
        return;
    }
    let mut report = systemd::gather();
    report.system_state = state;
    if !conversation.systemd(report) {
        return;
    }
    if settings.bench {
        bench::serve(&mut conversation, &settings);
    } else {
        conversation.wait_ack();
    }
}
