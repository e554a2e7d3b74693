//! Finding the command line in the boot structure the VMM left in memory.
//!
//! - PVH: `hvm_start_info` (magic 0x336ec578) holds `cmdline_paddr`, a u64
//!   at offset 24.
//! - Linux 64-bit boot protocol: the zero page (`boot_params`) holds
//!   `hdr.cmd_line_ptr`, a u32 at 0x228, and its high half
//!   `ext_cmd_line_ptr`, a u32 at 0x0c8.
//!
//! Either way the line is a NUL-terminated string at a physical address.

use core::fmt;

/// Why the command line could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The PVH start info's magic is wrong: not a PVH boot.
    BadStartInfo { magic: u32 },
    /// An address outside the identity-mapped first 4 GiB (or 0).
    Unmapped { addr: u64 },
    /// No NUL within [`MAX_CMDLINE_BYTES`].
    CmdlineTooLong,
}

pub type Result<T> = core::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadStartInfo { magic } => write!(f, "bad_pvh_start_info magic={magic:#x}"),
            Error::Unmapped { addr } => write!(f, "unmapped addr={addr:#x}"),
            Error::CmdlineTooLong => write!(f, "cmdline_too_long"),
        }
    }
}

pub const PVH_MAGIC: u32 = 0x336e_c578;
const PVH_CMDLINE_PADDR: u64 = 24;
const ZERO_PAGE_CMD_LINE_PTR: u64 = 0x228;
const ZERO_PAGE_EXT_CMD_LINE_PTR: u64 = 0x0c8;
/// The boot page tables map this much, one to one.
pub const MAPPED_BYTES: u64 = 4 << 30;
pub const MAX_CMDLINE_BYTES: usize = 4096;

/// Whether `len` bytes at physical `addr` are identity-mapped.
pub fn check_mapped(addr: u64, len: u64) -> Result<()> {
    match addr.checked_add(len) {
        Some(end) if addr != 0 && end <= MAPPED_BYTES => Ok(()),
        _ => Err(Error::Unmapped { addr }),
    }
}

/// # Safety
/// `start_info` must be the physical address of a PVH start info (or at
/// least of 32 readable bytes) and the first 4 GiB identity-mapped.
pub unsafe fn pvh_cmdline(start_info: u64) -> Result<&'static [u8]> {
    check_mapped(start_info, 32)?;
    // SAFETY: mapped and readable, as the caller guarantees.
    let magic = unsafe { (start_info as *const u32).read_volatile() };
    if magic != PVH_MAGIC {
        return Err(Error::BadStartInfo { magic });
    }
    // SAFETY: the same structure, 8 bytes at an 8-aligned offset.
    let paddr = unsafe { ((start_info + PVH_CMDLINE_PADDR) as *const u64).read_volatile() };
    // SAFETY: the VMM's start info names a command line string.
    unsafe { c_string(paddr) }
}

/// # Safety
/// `boot_params` must be the physical address of Linux's zero page and the
/// first 4 GiB identity-mapped.
pub unsafe fn linux_cmdline(boot_params: u64) -> Result<&'static [u8]> {
    check_mapped(boot_params, 4096)?;
    // SAFETY: the zero page is 4 KiB, mapped, as the caller guarantees.
    let low = unsafe { ((boot_params + ZERO_PAGE_CMD_LINE_PTR) as *const u32).read_volatile() };
    // SAFETY: as above.
    let high =
        unsafe { ((boot_params + ZERO_PAGE_EXT_CMD_LINE_PTR) as *const u32).read_volatile() };
    // SAFETY: the VMM's zero page names a command line string.
    unsafe { c_string(u64::from(high) << 32 | u64::from(low)) }
}

/// The NUL-terminated string at `paddr` (empty for address 0).
///
/// # Safety
/// Unless 0, `paddr` must point to a NUL-terminated string, or to at least
/// MAX_CMDLINE_BYTES readable bytes, in identity-mapped memory.
unsafe fn c_string(paddr: u64) -> Result<&'static [u8]> {
    if paddr == 0 {
        return Ok(&[]);
    }
    check_mapped(paddr, 1)?;
    let start = paddr as *const u8;
    let mut len = 0;
    loop {
        check_mapped(paddr, len as u64 + 1)?;
        // SAFETY: within the string or its terminator, as the caller guarantees.
        if unsafe { start.add(len).read_volatile() } == 0 {
            break;
        }
        len += 1;
        if len == MAX_CMDLINE_BYTES {
            return Err(Error::CmdlineTooLong);
        }
    }
    // SAFETY: those len bytes were just read; nothing writes them afterwards.
    Ok(unsafe { core::slice::from_raw_parts(start, len) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_identity_mapped_4_gib_are_usable() {
        assert_eq!(check_mapped(0x1000, 32), Ok(()));
        assert_eq!(check_mapped(MAPPED_BYTES - 8, 8), Ok(()));
        assert_eq!(
            check_mapped(MAPPED_BYTES - 8, 9),
            Err(Error::Unmapped {
                addr: MAPPED_BYTES - 8
            })
        );
        assert_eq!(check_mapped(0, 1), Err(Error::Unmapped { addr: 0 }));
        assert_eq!(
            check_mapped(u64::MAX, 2),
            Err(Error::Unmapped { addr: u64::MAX })
        );
    }
}
