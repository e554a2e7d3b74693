//! Putting the guest's kernel, initramfs and command line into its memory,
//! with linux-loader: an ELF `vmlinux` loads at its physical addresses and is
//! entered at its 64-bit entry point; a bzImage's protected-mode part loads at
//! 1 MiB and is entered at its 64-bit entry (load address + 0x200).

use std::fs::File;
use std::path::{Path, PathBuf};

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::elf::PvhBootCapability;
use linux_loader::loader::{load_cmdline, BzImage, Elf, KernelLoader};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::layout;

/// The 64-bit entry of a bzImage is 0x200 past its protected-mode code.
const BZIMAGE_ENTRY_OFFSET: u64 = 0x200;

/// Room for the command line before the next structure.
pub const CMDLINE_MAX_BYTES: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot load kernel {path}: as ELF: {elf}; as bzImage: {bzimage}")]
    Kernel {
        path: PathBuf,
        elf: String,
        bzimage: String,
    },
    #[error("Initramfs {path} ({size_bytes} bytes) does not fit in guest RAM below {limit:#x}")]
    InitramfsTooBig {
        path: PathBuf,
        size_bytes: u64,
        limit: u64,
    },
    #[error("Cannot copy initramfs {path} into guest memory: {source}")]
    Initramfs {
        path: PathBuf,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    #[error("Kernel command line ({len} bytes) is invalid or longer than {CMDLINE_MAX_BYTES} bytes: {detail}")]
    Cmdline { len: usize, detail: String },
}

/// A loaded kernel.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    /// Where the vCPU starts, in 64-bit mode.
    pub entry: u64,
    /// First byte after the kernel image.
    pub end: u64,
    /// A bzImage's setup header, for the boot parameters.
    pub setup_header: Option<setup_header>,
    /// The 32-bit PVH entry, when the ELF has the note (XEN_ELFNOTE_PHYS32_ENTRY).
    pub pvh_entry: Option<u64>,
}

/// Loads a vmlinux (ELF) or bzImage.
pub fn load_kernel<M: GuestMemoryBackend>(mem: &M, path: &Path) -> Result<LoadedKernel, Error> {
    let open = || {
        File::open(path).map_err(|source| Error::Open {
            path: path.to_path_buf(),
            source,
        })
    };
    let highmem = Some(GuestAddress(layout::KERNEL_ADDR));
    let elf = match Elf::load(mem, None, &mut open()?, highmem) {
        Ok(r) => {
            let pvh_entry = match r.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(addr) => Some(addr.0),
                _ => None,
            };
            return Ok(LoadedKernel {
                entry: r.kernel_load.0,
                end: r.kernel_end,
                setup_header: None,
                pvh_entry,
            });
        }
        Err(e) => e.to_string(),
    };
    match BzImage::load(mem, None, &mut open()?, highmem) {
        Ok(r) => Ok(LoadedKernel {
            entry: r.kernel_load.0 + BZIMAGE_ENTRY_OFFSET,
            end: r.kernel_end,
            setup_header: r.setup_header,
            pvh_entry: None,
        }),
        Err(e) => Err(Error::Kernel {
            path: path.to_path_buf(),
            elf,
            bzimage: e.to_string(),
        }),
    }
}

/// Copies the initramfs to the top of RAM below `ram_top` (page aligned);
/// returns (address, size).
pub fn load_initramfs<M: GuestMemoryBackend>(
    mem: &M,
    path: &Path,
    kernel_end: u64,
    ram_top: u64,
) -> Result<(u64, u32), Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let size_bytes = bytes.len() as u64;
    let too_big = || Error::InitramfsTooBig {
        path: path.to_path_buf(),
        size_bytes,
        limit: ram_top,
    };
    let size = u32::try_from(size_bytes).map_err(|_| too_big())?;
    let addr = ram_top.checked_sub(size_bytes).ok_or_else(too_big)? & !0xfff;
    if addr < kernel_end {
        return Err(too_big());
    }
    mem.write_slice(&bytes, GuestAddress(addr))
        .map_err(|source| Error::Initramfs {
            path: path.to_path_buf(),
            source,
        })?;
    Ok((addr, size))
}

/// Writes the command line at [`layout::CMDLINE_ADDR`]; returns its length.
pub fn load_cmdline_str<M: GuestMemoryBackend>(mem: &M, text: &str) -> Result<u32, Error> {
    let bad = |detail: String| Error::Cmdline {
        len: text.len(),
        detail,
    };
    let mut cmdline = Cmdline::new(CMDLINE_MAX_BYTES).map_err(|e| bad(e.to_string()))?;
    cmdline.insert_str(text).map_err(|e| bad(e.to_string()))?;
    load_cmdline(mem, GuestAddress(layout::CMDLINE_ADDR), &cmdline)
        .map_err(|e| bad(e.to_string()))?;
    Ok(text.len() as u32)
}

#[cfg(test)]
mod tests {
    use vm_memory::GuestMemoryMmap;

    use super::*;

    /// The kernel kernel-config/build.sh built last (`$VMBENCH_CACHE`, else
    /// `~/.cache/vmbench`), where the orchestrator finds it too.
    fn test_kernel() -> Result<std::path::PathBuf, ()> {
        let cache = std::env::var_os("VMBENCH_CACHE")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache/vmbench"))
            })
            .ok_or(())?;
        let path = cache.join("kernel/current/vmlinux");
        path.is_file().then_some(path).ok_or(())
    }

    fn memory(bytes: u64) -> GuestMemoryMmap {
        let regions: Vec<(GuestAddress, usize)> = layout::memory_regions(bytes)
            .into_iter()
            .map(|(start, len)| (GuestAddress(start), len as usize))
            .collect();
        GuestMemoryMmap::from_ranges(&regions).unwrap()
    }

    #[test]
    fn vmbench_kernel_loads_at_its_entry_point() {
        let Ok(kernel) = test_kernel() else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "under CI the kernel is built by scripts/setup.sh"
            );
            println!("SKIPPED: vmbench_kernel_loads_at_its_entry_point: no cached kernel (kernel-config/build.sh)");
            return;
        };
        let mem = memory(256 << 20);
        let loaded = load_kernel(&mem, &kernel).unwrap();
        assert!(
            loaded.setup_header.is_none(),
            "an ELF vmlinux has no setup header"
        );
        assert!(
            loaded.entry >= layout::KERNEL_ADDR && loaded.entry < loaded.end,
            "{loaded:?}"
        );
        // The entry point holds code (startup_64), not the zeros of unloaded memory.
        let first: u32 = mem.read_obj(GuestAddress(loaded.entry)).unwrap();
        assert_ne!(first, 0);
    }

    #[test]
    fn garbage_is_neither_elf_nor_bzimage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let err = load_kernel(&memory(64 << 20), &path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("as ELF:") && err.contains("as bzImage:"),
            "{err}"
        );
    }

    #[test]
    fn initramfs_goes_to_the_top_of_ram_page_aligned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("initramfs");
        std::fs::write(&path, vec![7u8; 10_000]).unwrap();
        let mem = memory(64 << 20);
        let (addr, size) = load_initramfs(&mem, &path, 0x20_0000, 64 << 20).unwrap();
        assert_eq!(size, 10_000);
        assert_eq!(addr % 4096, 0);
        assert!(addr + 10_000 <= 64 << 20 && addr + 10_000 + 4096 > 64 << 20);
        let byte: u8 = mem.read_obj(GuestAddress(addr + 9_999)).unwrap();
        assert_eq!(byte, 7);
        let err = load_initramfs(&mem, &path, (64 << 20) - 100, 64 << 20).unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
    }

    #[test]
    fn cmdline_is_written_nul_terminated() {
        let mem = memory(64 << 20);
        let len = load_cmdline_str(&mem, "console=ttyS0 vmbench.id=1").unwrap();
        assert_eq!(len, 26);
        let mut buf = [0u8; 27];
        mem.read_slice(&mut buf, GuestAddress(layout::CMDLINE_ADDR))
            .unwrap();
        assert_eq!(&buf, b"console=ttyS0 vmbench.id=1\0");
        assert!(load_cmdline_str(&mem, &"x".repeat(CMDLINE_MAX_BYTES + 1)).is_err());
    }
}
