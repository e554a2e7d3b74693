//! From the initramfs to the root disk (`vmbench.root=/dev/vda`): wait for
//! the device node, mount it, move the pseudo filesystems into it, make it
//! the root (the mount-move and chroot of `switch_root`), and say what runs
//! next: systemd, when the image has the agent's unit (the agent then
//! reports again as a systemd service), or this same agent otherwise.
//!
//! The initramfs's marks reach the agent's service instance through
//! `/run/vmbench/initrd`: `/run` is a tmpfs mounted here and moved into the
//! new root, and systemd keeps an already-mounted `/run`.
//!
//! The initramfs's files are not deleted after the switch (as `switch_root`
//! does to free their memory): it holds only the agent, about a megabyte.

use std::ffi::CString;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;

use crate::clock::boottime_ns;
use crate::settings::Settings;

/// Where the root disk is mounted before it becomes `/`.
const NEW_ROOT: &str = "/newroot";
/// The agent's systemd unit in an image built by `vmbench rootfs` (from-raw, debian).
const AGENT_UNIT: &str = "etc/systemd/system/vmbench-agent.service";
/// The pseudo filesystems that move into the new root.
const MOVED: &[&str] = &["/dev", "/proc", "/sys", "/run"];
/// The handoff file, relative to the new root.
pub const HANDOFF: &str = "/run/vmbench/initrd";

/// What runs after the switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Exec this (the image's init: systemd) as PID 1.
    Init(String),
    /// This agent goes on as PID 1 on the new root.
    Agent,
}

/// The switch's marks, CLOCK_BOOTTIME ns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Marks {
    pub init_ns: u64,
    pub mounts_done_ns: u64,
    pub root_mounted_ns: u64,
    pub switch_root_ns: u64,
}

/// Mounts `settings.root` and makes it `/`; the error names the step that failed.
pub fn switch(
    settings: &Settings,
    device: &str,
    mut marks: Marks,
) -> Result<(Marks, Next), String> {
    wait_for(device, Duration::from_millis(settings.root_wait_ms))?;
    let _ = nix::unistd::mkdir(NEW_ROOT, Mode::from_bits_truncate(0o755));
    let flags = if settings.root_ro {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    mount(
        Some(device),
        NEW_ROOT,
        Some(settings.root_fstype.as_str()),
        flags,
        None::<&str>,
    )
    .map_err(|e| {
        format!(
            "cannot mount the root disk {device} ({}) on {NEW_ROOT}: {}",
            settings.root_fstype,
            e.desc()
        )
    })?;
    marks.root_mounted_ns = boottime_ns();
    let next = if Path::new(NEW_ROOT).join(AGENT_UNIT).exists() {
        Next::Init(settings.root_init.clone())
    } else {
        Next::Agent
    };
    // The initramfs's /tmp stays behind: the new root has its own.
    let _ = umount2("/tmp", MntFlags::MNT_DETACH);
    for dir in MOVED {
        let target = format!("{NEW_ROOT}{dir}");
        let _ = nix::unistd::mkdir(target.as_str(), Mode::from_bits_truncate(0o755));
        mount(
            Some(*dir),
            target.as_str(),
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .map_err(|e| format!("cannot move {dir} into the root disk: {}", e.desc()))?;
    }
    crate::marker::write(vmbench_proto::MARKER_SWITCH_ROOT);
    marks.switch_root_ns = boottime_ns();
    if let Next::Init(_) = next {
        write_handoff(&format!("{NEW_ROOT}{HANDOFF}"), &marks)?;
    }
    nix::unistd::chdir(NEW_ROOT).map_err(|e| format!("cannot enter {NEW_ROOT}: {}", e.desc()))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| format!("cannot move the root disk onto /: {}", e.desc()))?;
    nix::unistd::chroot(".")
        .map_err(|e| format!("cannot chroot into the root disk: {}", e.desc()))?;
    nix::unistd::chdir("/").map_err(|e| format!("cannot enter the new /: {}", e.desc()))?;
    Ok((marks, next))
}

/// Waits for the device node: devtmpfs creates it when the disk is probed,
/// which may come after PID 1 started.
fn wait_for(device: &str, limit: Duration) -> Result<(), String> {
    let start = Instant::now();
    while !Path::new(device).exists() {
        if start.elapsed() > limit {
            return Err(format!(
                "the root disk {device} did not appear within {} ms (is a virtio-blk disk attached?)",
                limit.as_millis()
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

fn write_handoff(path: &str, marks: &Marks) -> Result<(), String> {
    if let Some(dir) = Path::new(path).parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::write(path, format_handoff(marks)).map_err(|e| format!("cannot write {path}: {e}"))
}

pub fn format_handoff(marks: &Marks) -> String {
    format!(
        "init_ns={}\nmounts_done_ns={}\nroot_mounted_ns={}\nswitch_root_ns={}\n",
        marks.init_ns, marks.mounts_done_ns, marks.root_mounted_ns, marks.switch_root_ns
    )
}

/// The marks the initramfs left, if it did (a guest booted straight from
/// its disk has none); unknown lines are ignored.
pub fn parse_handoff(text: &str) -> Option<Marks> {
    let mut marks = Marks::default();
    for line in text.lines() {
        let (key, value) = line.split_once('=')?;
        let value: u64 = value.trim().parse().ok()?;
        match key.trim() {
            "init_ns" => marks.init_ns = value,
            "mounts_done_ns" => marks.mounts_done_ns = value,
            "root_mounted_ns" => marks.root_mounted_ns = value,
            "switch_root_ns" => marks.switch_root_ns = value,
            _ => {}
        }
    }
    (marks.init_ns > 0).then_some(marks)
}

/// Replaces this process with the image's init; returns only on failure.
pub fn exec_init(init: &str) -> String {
    let Ok(path) = CString::new(init) else {
        return format!("bad init path {init:?}");
    };
    match nix::unistd::execv(&path, std::slice::from_ref(&path)) {
        Err(e) => format!("cannot exec the root disk's init {init}: {}", e.desc()),
        Ok(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handoff_round_trips() {
        let marks = Marks {
            init_ns: 700_000_000,
            mounts_done_ns: 701_000_000,
            root_mounted_ns: 720_000_000,
            switch_root_ns: 721_000_000,
        };
        assert_eq!(parse_handoff(&format_handoff(&marks)), Some(marks));
    }

    #[test]
    fn a_bad_or_empty_handoff_is_none() {
        assert_eq!(parse_handoff(""), None);
        assert_eq!(parse_handoff("init_ns=abc\n"), None);
        assert_eq!(parse_handoff("garbage"), None);
        assert_eq!(
            parse_handoff("init_ns=5\nfuture_key=1\n").map(|m| m.init_ns),
            Some(5)
        );
    }

    #[test]
    fn a_missing_device_is_named_after_the_wait() {
        let err = wait_for("/dev/vmbench-no-such-disk", Duration::from_millis(10)).unwrap_err();
        assert!(
            err.contains("/dev/vmbench-no-such-disk did not appear within 10 ms"),
            "{err}"
        );
    }
}
