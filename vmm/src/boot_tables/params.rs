//! Linux's boot parameters (the "zero page", x86 boot protocol): where the
//! command line and initramfs are, and the e820 map of guest RAM.

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use vm_memory::{GuestAddress, GuestMemoryBackend};

use crate::layout;

const E820_RAM: u32 = 1;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x100_0000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Guest RAM has {count} ranges; the zero page holds at most {max}")]
    TooManyRanges { count: usize, max: usize },
    #[error("Cannot write the boot parameters at {addr:#x}: {source}")]
    Write {
        addr: u64,
        #[source]
        source: linux_loader::configurator::Error,
    },
}

/// What the boot parameters point at.
#[derive(Debug, Clone, Copy, Default)]
pub struct BootInputs {
    pub cmdline_addr: u64,
    /// Length of the command line without its NUL.
    pub cmdline_len: u32,
    /// (address, size) of the initramfs, if any.
    pub initramfs: Option<(u64, u32)>,
    /// A bzImage's own setup header, to start from.
    pub setup_header: Option<setup_header>,
}

/// The boot parameters for guest RAM `ram` (start, length) and `inputs`.
pub fn zero_page(ram: &[(u64, u64)], inputs: &BootInputs) -> Result<boot_params, Error> {
    let mut params = boot_params::default();
    if let Some(header) = inputs.setup_header {
        params.hdr = header;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    params.hdr.cmd_line_ptr = inputs.cmdline_addr as u32;
    params.hdr.cmdline_size = inputs.cmdline_len + 1;
    if let Some((addr, size)) = inputs.initramfs {
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size;
    }
    let max = params.e820_table.len();
    if ram.len() > max {
        return Err(Error::TooManyRanges {
            count: ram.len(),
            max,
        });
    }
    for (slot, &(addr, size)) in params.e820_table.iter_mut().zip(ram) {
        *slot = boot_e820_entry {
            addr,
            size,
            r#type: E820_RAM,
        };
    }
    params.e820_entries = ram.len() as u8;
    Ok(params)
}

/// Writes the boot parameters at [`layout::ZERO_PAGE_ADDR`].
pub fn write<M: GuestMemoryBackend>(mem: &M, params: &boot_params) -> Result<(), Error> {
    let addr = layout::ZERO_PAGE_ADDR;
    LinuxBootConfigurator::write_bootparams::<M>(&BootParams::new(params, GuestAddress(addr)), mem)
        .map_err(|source| Error::Write { addr, source })
}

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, GuestMemoryMmap};

    use super::*;

    #[test]
    fn e820_and_pointers_are_filled() {
        let ram = layout::ram_ranges(256 << 20);
        let inputs = BootInputs {
            cmdline_addr: layout::CMDLINE_ADDR,
            cmdline_len: 30,
            initramfs: Some((0x0f00_0000, 4096)),
            setup_header: None,
        };
        let p = zero_page(&ram, &inputs).unwrap();
        assert_eq!(p.e820_entries, 2);
        let (a0, s0, t0) = (
            p.e820_table[0].addr,
            p.e820_table[0].size,
            p.e820_table[0].r#type,
        );
        assert_eq!((a0, s0, t0), (0, layout::EBDA_ADDR, E820_RAM));
        let (a1, s1) = (p.e820_table[1].addr, p.e820_table[1].size);
        assert_eq!(
            (a1, s1),
            (layout::KERNEL_ADDR, (256 << 20) - layout::KERNEL_ADDR)
        );
        let (ptr, size) = (p.hdr.cmd_line_ptr, p.hdr.cmdline_size);
        assert_eq!((ptr, size), (layout::CMDLINE_ADDR as u32, 31));
        let (image, rsize) = (p.hdr.ramdisk_image, p.hdr.ramdisk_size);
        assert_eq!((image, rsize), (0x0f00_0000, 4096));
        let (magic, flag, loader) = (p.hdr.header, p.hdr.boot_flag, p.hdr.type_of_loader);
        assert_eq!((magic, flag, loader), (KERNEL_HDR_MAGIC, 0xaa55, 0xff));
    }

    #[test]
    fn a_bzimage_header_is_kept_and_completed() {
        let header = setup_header {
            version: 0x020f,
            ..Default::default()
        };
        let inputs = BootInputs {
            setup_header: Some(header),
            ..Default::default()
        };
        let p = zero_page(&layout::ram_ranges(64 << 20), &inputs).unwrap();
        let version = p.hdr.version;
        assert_eq!(version, 0x020f);
        assert_eq!({ p.hdr.header }, KERNEL_HDR_MAGIC);
    }

    #[test]
    fn zero_page_lands_in_guest_memory() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let p = zero_page(&layout::ram_ranges(64 << 20), &BootInputs::default()).unwrap();
        write(&mem, &p).unwrap();
        let back: boot_params = mem.read_obj(GuestAddress(layout::ZERO_PAGE_ADDR)).unwrap();
        assert_eq!(back.e820_entries, 2);
    }
}
