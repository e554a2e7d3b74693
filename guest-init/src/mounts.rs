//! The pseudo filesystems every userspace expects.

use nix::mount::{mount, MsFlags};
use nix::sys::stat::Mode;

/// (source, target, fstype, data)
const MOUNTS: &[(&str, &str, &str, &str)] = &[
    ("proc", "/proc", "proc", ""),
    ("sysfs", "/sys", "sysfs", ""),
    ("devtmpfs", "/dev", "devtmpfs", "mode=0755"),
    ("tmpfs", "/run", "tmpfs", "mode=0755"),
    ("tmpfs", "/tmp", "tmpfs", "mode=1777"),
];

/// Mounts what it can; a failure is reported and the agent goes on, since the
/// report to the host needs none of these mounts.
pub fn mount_all() {
    for (source, target, fstype, data) in MOUNTS {
        let _ = nix::unistd::mkdir(*target, Mode::from_bits_truncate(0o755));
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
        let data = (!data.is_empty()).then_some(*data);
        match mount(Some(*source), *target, Some(*fstype), flags, data) {
            // devtmpfs is already there when the kernel has DEVTMPFS_MOUNT.
            Ok(()) | Err(nix::errno::Errno::EBUSY) => {}
            Err(e) => crate::console::line(&[
                ("warn", "mount_failed"),
                ("target", target),
                ("error", e.desc()),
            ]),
        }
    }
}
