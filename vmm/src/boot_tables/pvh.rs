//! The PVH boot information (Xen's HVM direct boot ABI): `hvm_start_info`
//! at [`layout::PVH_INFO_ADDR`], passed in EBX, pointing at the command line,
//! a module list whose one entry is the initramfs, and a memory map in the
//! e820 types. Linux, QEMU, Firecracker and Cloud Hypervisor all speak it.

use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::WriteError;
use crate::layout;

/// "xEn3" with the top bit cleared, as the ABI defines it.
pub const START_MAGIC: u32 = 0x336e_c578;
const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;

/// The start info's size; the module list follows, then the memory map.
const START_INFO_BYTES: u64 = std::mem::size_of::<hvm_start_info>() as u64;
const MODLIST_ADDR: u64 = layout::PVH_INFO_ADDR + START_INFO_BYTES;
const MEMMAP_ADDR: u64 = MODLIST_ADDR + std::mem::size_of::<hvm_modlist_entry>() as u64;

/// The start info, module list and memory map for guest RAM `ram`, the
/// command line at `cmdline_addr` and the initramfs (address, size), if any.
pub fn build(
    ram: &[(u64, u64)],
    cmdline_addr: u64,
    initramfs: Option<(u64, u32)>,
) -> (
    hvm_start_info,
    Vec<hvm_modlist_entry>,
    Vec<hvm_memmap_table_entry>,
) {
    let mut memmap: Vec<hvm_memmap_table_entry> = ram
        .iter()
        .map(|&(addr, size)| hvm_memmap_table_entry {
            addr,
            size,
            type_: E820_RAM,
            reserved: 0,
        })
        .collect();
    // The EBDA and the (absent) firmware area up to 1 MiB, as a PC has them.
    memmap.push(hvm_memmap_table_entry {
        addr: layout::EBDA_ADDR,
        size: layout::KERNEL_ADDR - layout::EBDA_ADDR,
        type_: E820_RESERVED,
        reserved: 0,
    });
    memmap.sort_by_key(|e| e.addr);
    let modules: Vec<hvm_modlist_entry> = initramfs
        .map(|(paddr, size)| hvm_modlist_entry {
            paddr,
            size: u64::from(size),
            ..Default::default()
        })
        .into_iter()
        .collect();
    let info = hvm_start_info {
        magic: START_MAGIC,
        version: 1,
        nr_modules: modules.len() as u32,
        modlist_paddr: if modules.is_empty() { 0 } else { MODLIST_ADDR },
        cmdline_paddr: cmdline_addr,
        memmap_paddr: MEMMAP_ADDR,
        memmap_entries: memmap.len() as u32,
        ..Default::default()
    };
    (info, modules, memmap)
}

/// Writes what [`build`] made at [`layout::PVH_INFO_ADDR`].
pub fn write<M: GuestMemory>(
    mem: &M,
    (info, modules, memmap): &(
        hvm_start_info,
        Vec<hvm_modlist_entry>,
        Vec<hvm_memmap_table_entry>,
    ),
) -> Result<(), WriteError> {
    let err = |what, addr| move |source| WriteError { what, addr, source };
    mem.write_obj(*info, GuestAddress(layout::PVH_INFO_ADDR))
        .map_err(err("PVH start info", layout::PVH_INFO_ADDR))?;
    for (i, m) in modules.iter().enumerate() {
        let at = MODLIST_ADDR + (i * std::mem::size_of::<hvm_modlist_entry>()) as u64;
        mem.write_obj(*m, GuestAddress(at))
            .map_err(err("PVH module list", at))?;
    }
    for (i, e) in memmap.iter().enumerate() {
        let at = MEMMAP_ADDR + (i * std::mem::size_of::<hvm_memmap_table_entry>()) as u64;
        mem.write_obj(*e, GuestAddress(at))
            .map_err(err("PVH memory map", at))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use vm_memory::GuestMemoryMmap;

    use super::*;

    #[test]
    fn start_info_points_at_cmdline_initramfs_and_a_sorted_map() {
        let ram = layout::ram_ranges(256 << 20);
        let (info, modules, memmap) = build(&ram, layout::CMDLINE_ADDR, Some((0x0f00_0000, 1234)));
        assert_eq!((info.magic, info.version), (START_MAGIC, 1));
        assert_eq!(info.cmdline_paddr, layout::CMDLINE_ADDR);
        assert_eq!((info.nr_modules, info.modlist_paddr), (1, MODLIST_ADDR));
        assert_eq!((modules[0].paddr, modules[0].size), (0x0f00_0000, 1234));
        assert_eq!(info.memmap_entries, 3);
        let kinds: Vec<(u64, u32)> = memmap.iter().map(|e| (e.addr, e.type_)).collect();
        assert_eq!(
            kinds,
            vec![
                (0, E820_RAM),
                (layout::EBDA_ADDR, E820_RESERVED),
                (layout::KERNEL_ADDR, E820_RAM)
            ]
        );
        let (info, modules, _) = build(&ram, layout::CMDLINE_ADDR, None);
        assert_eq!((info.nr_modules, info.modlist_paddr), (0, 0));
        assert!(modules.is_empty());
    }

    #[test]
    fn written_where_ebx_points_and_within_the_page() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let built = build(&layout::ram_ranges(1 << 30), 0x20000, Some((0x100, 2)));
        write(&mem, &built).unwrap();
        let info: hvm_start_info = mem.read_obj(GuestAddress(layout::PVH_INFO_ADDR)).unwrap();
        assert_eq!(info.magic, START_MAGIC);
        let last: hvm_memmap_table_entry = mem
            .read_obj(GuestAddress(
                info.memmap_paddr + u64::from(info.memmap_entries - 1) * 24,
            ))
            .unwrap();
        assert_eq!(last.addr, layout::KERNEL_ADDR);
        // Everything stays below the zero page that follows.
        assert!(info.memmap_paddr + u64::from(info.memmap_entries) * 24 < layout::ZERO_PAGE_ADDR);
    }
}
