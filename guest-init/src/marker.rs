//! The boot-marker port: one byte written to I/O port 0x80 exits to the VMM,
//! which timestamps it on the host clock. Port access is asked for with
//! ioperm(2); if the kernel refuses it, the agent carries on without markers.

use std::sync::atomic::{AtomicU8, Ordering};

const UNKNOWN: u8 = 0;
const GRANTED: u8 = 1;
const REFUSED: u8 = 2;

static ACCESS: AtomicU8 = AtomicU8::new(UNKNOWN);

fn have_access() -> bool {
    match ACCESS.load(Ordering::Relaxed) {
        GRANTED => true,
        REFUSED => false,
        _ => {
            let port = libc::c_ulong::from(vmbench_proto::BOOT_MARKER_PORT);
            // SAFETY: ioperm only changes this process's I/O permission bitmap.
            let granted = unsafe { libc::ioperm(port, 1, 1) } == 0;
            ACCESS.store(if granted { GRANTED } else { REFUSED }, Ordering::Relaxed);
            if !granted {
                let err = std::io::Error::last_os_error().to_string();
                crate::console::line(&[("warn", "no_boot_marker_port"), ("error", &err)]);
            }
            granted
        }
    }
}

/// Writes `code` to the boot-marker port, if the kernel lets us.
pub fn write(code: u8) {
    if !have_access() {
        return;
    }
    // SAFETY: ioperm granted this process access to exactly this port; an
    // `out` to it has no effect on memory, only a VM exit.
    unsafe {
        std::arch::asm!("out dx, al", in("dx") vmbench_proto::BOOT_MARKER_PORT, in("al") code, options(nomem, nostack, preserves_flags));
    }
}

/// Marks the start of benchmark window `id`: the VMM attributes the exits
/// that follow to it (see `vmbench_proto::bench`).
pub fn window_start(id: u16) {
    window(vmbench_proto::MARKER_WINDOW_START, id);
}

/// Marks the end of benchmark window `id`.
pub fn window_end(id: u16) {
    window(vmbench_proto::MARKER_WINDOW_END, id);
}

fn window(code: u8, id: u16) {
    let [low, high] = id.to_le_bytes();
    write(code);
    write(low);
    write(high);
}
