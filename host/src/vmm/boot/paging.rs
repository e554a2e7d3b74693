//! Identity page tables for the 64-bit entry: the first 1 GiB mapped with
//! 2 MiB pages, enough for the kernel to run until it builds its own.

use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::WriteError;

const PRESENT_WRITABLE: u64 = 0x3;
const PAGE_SIZE_2M: u64 = 0x80;

/// Bytes identity-mapped: 512 entries of 2 MiB.
pub const MAPPED_BYTES: u64 = 512 << 21;

/// Writes PML4 → PDPT → PD at the given addresses; returns the CR3 value.
pub fn write<M: GuestMemory>(mem: &M, pml4: u64, pdpt: u64, pd: u64) -> Result<u64, WriteError> {
    let put = |what, addr: u64, value: u64| {
        mem.write_obj(value, GuestAddress(addr))
            .map_err(|source| WriteError { what, addr, source })
    };
    put("PML4", pml4, pdpt | PRESENT_WRITABLE)?;
    put("PDPT", pdpt, pd | PRESENT_WRITABLE)?;
    for i in 0..512u64 {
        put(
            "page directory",
            pd + i * 8,
            (i << 21) | PRESENT_WRITABLE | PAGE_SIZE_2M,
        )?;
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
    fn first_gibibyte_is_identity_mapped() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let cr3 = write(&mem, 0x9000, 0xa000, 0xb000).unwrap();
        assert_eq!(cr3, 0x9000);
        for va in [0, 0x1234, 0x10_0000, 0x20_0001, MAPPED_BYTES - 1] {
            assert_eq!(translate(&mem, cr3, va), Some(va), "{va:#x}");
        }
        assert_eq!(translate(&mem, cr3, MAPPED_BYTES), None);
    }

    #[test]
    fn too_small_memory_is_an_error() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0xb800)]).unwrap();
        let err = write(&mem, 0x9000, 0xa000, 0xb000).unwrap_err();
        assert!(
            err.to_string().contains("page directory at 0xb800"),
            "{err}"
        );
    }
}
