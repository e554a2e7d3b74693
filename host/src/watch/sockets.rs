//! The watch's sockets: the listeners a VM's guest and VMM connect to, and
//! the VMM's exit as a pollable descriptor.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::Path;

use crate::backend::UNIX_PATH_MAX_BYTES;

/// A non-blocking listener at `path` (a stale socket there is replaced).
pub fn listen(path: &Path) -> Result<UnixListener, String> {
    let len = path.as_os_str().len();
    if len > UNIX_PATH_MAX_BYTES {
        return Err(format!(
            "Socket path {} is {len} bytes, over the {UNIX_PATH_MAX_BYTES}-byte limit of Unix sockets; use a shorter --out",
            path.display()
        ));
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .map_err(|e| format!("Cannot listen on {}: {e}", path.display()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("Cannot set {} non-blocking: {e}", path.display()))?;
    Ok(listener)
}

/// A process's exit as a pollable descriptor (pidfd_open(2), Linux 5.3+).
pub fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags, touches no memory of ours and
    // returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is a descriptor the kernel just created for us and nothing else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}
