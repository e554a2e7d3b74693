//! Identity page tables for the 64-bit entry: the first 4 GiB mapped with
//! 2 MiB pages. Linux needs only its first GiB until it builds its own
//! tables; the rest lets a guest that never does (vmbench's test guests)
//! reach the virtio-mmio window below 4 GiB. That top GiB is the MMIO gap,
//! so it is mapped uncached, as device memory must be.

use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::WriteError;

const PRESENT_WRITABLE: u64 = 0x3;
/// Write-through and cache-disable.
const UNCACHED: u64 = 0x18;
const PAGE_SIZE_2M: u64 = 0x80;

/// Page directories, one per GiB; they lie one after another from `pd`.
pub const PAGE_DIRECTORIES: u64 = 4;
/// Bytes identity-mapped: 512 entries of 2 MiB per page directory.
pub const MAPPED_BYTES: u64 = PAGE_DIRECTORIES * (512 << 21);
/// Where the uncached device region starts (the MMIO gap).
const UNCACHED_FROM: u64 = crate::layout::MMIO_GAP_START;

/// Writes PML4 → PDPT → page directories (at `pd`, `pd + 4 KiB`, …);
/// returns the CR3 value.
pub fn write<M: GuestMemory>(mem: &M, pml4: u64, pdpt: u64, pd: u64) -> Result<u64, WriteError> {
    let put = |what, addr: u64, value: u64| {
        mem.write_obj(value, GuestAddress(addr))
            .map_err(|source| WriteError { what, addr, source })
    };
    put("PML4", pml4, pdpt | PRESENT_WRITABLE)?;
    for gib in 0..PAGE_DIRECTORIES {
        let table = pd + gib * 0x1000;
        put("PDPT", pdpt + gib * 8, table | PRESENT_WRITABLE)?;
        for i in 0..512u64 {
            let page = (gib << 30) | (i << 21);
            let cache = if page >= UNCACHED_FROM { UNCACHED } else { 0 };
            put(
                "page directory",
                table + i * 8,
                page | PRESENT_WRITABLE | PAGE_SIZE_2M | cache,
            )?;
        }
    }
    Ok(pml4)
}

#[cfg(test)]
mod tests {
    use vm_memory::GuestMemoryMmap;

    use super::*;

    fn read(mem: &GuestMemoryMmap, addr: u64) -> u64 {
        mem.read_obj(GuestAddress(addr)).unwrap()
    }

    /// Walks the tables as the MMU would for a 2 MiB page.
    fn translate(mem: &GuestMemoryMmap, cr3: u64, va: u64) -> Option<u64> {
        let pml4e = read(mem, cr3 + ((va >> 39) & 0x1ff) * 8);
        (pml4e & 1 == 1).then_some(())?;
        let pdpte = read(mem, (pml4e & !0xfff) + ((va >> 30) & 0x1ff) * 8);
        (pdpte & 1 == 1).then_some(())?;
        let pde = read(mem, (pdpte & !0xfff) + ((va >> 21) & 0x1ff) * 8);
        (pde & 1 == 1 && pde & PAGE_SIZE_2M != 0).then_some(())?;
        Some((pde & !0x1f_ffff & 0x000f_ffff_ffff_ffff) | (va & 0x1f_ffff))
    }

    #[test]
    fn first_four_gibibytes_are_identity_mapped() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let cr3 = write(&mem, 0x9000, 0xa000, 0xb000).unwrap();
        assert_eq!(cr3, 0x9000);
        for va in [
            0,
            0x1234,
            0x10_0000,
            0x20_0001,
            0x4000_0000,
            0xd000_0050,
            MAPPED_BYTES - 1,
        ] {
            assert_eq!(translate(&mem, cr3, va), Some(va), "{va:#x}");
        }
        assert_eq!(translate(&mem, cr3, MAPPED_BYTES), None);
    }

    #[test]
    fn only_the_mmio_gap_is_uncached() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        write(&mem, 0x9000, 0xa000, 0xb000).unwrap();
        let pde = |va: u64| {
            read(
                &mem,
                0xb000 + (va >> 30) * 0x1000 + ((va >> 21) & 0x1ff) * 8,
            )
        };
        assert_eq!(pde(0x10_0000) & UNCACHED, 0);
        assert_eq!(pde(UNCACHED_FROM - 1) & UNCACHED, 0);
        assert_eq!(pde(UNCACHED_FROM) & UNCACHED, UNCACHED);
        assert_eq!(pde(0xd000_0000) & UNCACHED, UNCACHED);
    }

    #[test]
    fn too_small_memory_is_an_error() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0xd800)]).unwrap();
        let err = write(&mem, 0x9000, 0xa000, 0xb000).unwrap_err();
        assert!(
            err.to_string().contains("page directory at 0xd800"),
            "{err}"
        );
    }
}
