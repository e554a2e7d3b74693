//! Putting the guest's kernel, initramfs and command line into its memory,
//! with linux-loader: an ELF `vmlinux` loads at its physical addresses and is
//! entered at its 64-bit entry point, or at its PVH entry when it has Xen's
//! PVH note; a bzImage's protected-mode part loads at 1 MiB and is entered
//! at its 64-bit entry (load address + 0x200).
//!
//! [`pvh_entry`] finds the PVH entry from the ELF headers alone, for a
//! program that checks a kernel before any VM starts.

use std::fs::File;
use std::path::{Path, PathBuf};

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::elf::PvhBootCapability;
use linux_loader::loader::{load_cmdline, BzImage, Elf, KernelLoader};
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use object::{elf, Endianness};
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

/// Why an ELF kernel's headers do not say where its PVH entry is.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ElfError {
    #[error("Unreadable ELF: {0}")]
    Unreadable(String),
    #[error("ELF machine {0} is not x86-64")]
    NotX86_64(u16),
    #[error("The PVH entry note holds {0} bytes, too few for the entry address")]
    ShortPvhNote(usize),
}

/// Xen's PVH entry note type, which Linux carries when built with CONFIG_PVH.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// The 32-bit PVH entry of an x86-64 ELF kernel image, from its Xen
/// `PHYS32_ENTRY` note (name `Xen`, the address in the first 4 bytes of
/// the descriptor, as linux-loader reads it for [`load_kernel`]); `None`:
/// no such note, so only the 64-bit Linux entry. Only the headers and the
/// note segments are read; a note segment that does not parse is passed
/// over.
pub fn pvh_entry(image: &[u8]) -> Result<Option<u64>, ElfError> {
    let file =
        ElfFile64::<Endianness>::parse(image).map_err(|e| ElfError::Unreadable(e.to_string()))?;
    let endian = file.endian();
    let machine = file.elf_header().e_machine(endian);
    if machine != elf::EM_X86_64 {
        return Err(ElfError::NotX86_64(machine.0));
    }
    for segment in file.elf_program_headers() {
        let Ok(Some(mut notes)) = segment.notes(endian, image) else {
            continue;
        };
        while let Ok(Some(note)) = notes.next() {
            if note.name_bytes() == b"Xen\0"
                && note.n_type(endian) == elf::NoteType(XEN_ELFNOTE_PHYS32_ENTRY)
            {
                let desc = note.desc();
                let address = desc
                    .first_chunk::<4>()
                    .ok_or(ElfError::ShortPvhNote(desc.len()))?;
                return Ok(Some(u64::from(u32::from_le_bytes(*address))));
            }
        }
    }
    Ok(None)
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
    /// `~/.cache/vmbench`), where the orchestrator finds it too. Without
    /// one, `test` is skipped (under CI, where it is built, it fails).
    fn test_kernel(test: &str) -> Option<std::path::PathBuf> {
        let path = std::env::var_os("VMBENCH_CACHE")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache/vmbench"))
            })
            .map(|cache| cache.join("kernel/current/vmlinux"))
            .filter(|path| path.is_file());
        if path.is_none() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "under CI the kernel is built by scripts/setup.sh"
            );
            println!("SKIPPED: {test}: no cached kernel (kernel-config/build.sh)");
        }
        path
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
        let Some(kernel) = test_kernel("vmbench_kernel_loads_at_its_entry_point") else {
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

    /// An x86-64 ELF (`machine` in its header) of one PT_LOAD at 1 MiB
    /// entered at its first byte, then a PT_NOTE of `notes`, each (name with
    /// its NULs, type, descriptor).
    fn elf_with_notes(machine: u16, notes: &[(&[u8], u32, &[u8])]) -> Vec<u8> {
        const HEADERS_BYTES: u64 = 64 + 2 * 56;
        let padded = |b: &[u8]| {
            let mut v = b.to_vec();
            v.resize(b.len().next_multiple_of(4), 0);
            v
        };
        let mut note_bytes = Vec::new();
        for (name, note_type, desc) in notes {
            for word in [name.len() as u32, desc.len() as u32, *note_type] {
                note_bytes.extend(word.to_le_bytes());
            }
            note_bytes.extend(padded(name));
            note_bytes.extend(padded(desc));
        }
        let code = [0xf4u8; 16]; // hlt
        let note_at = HEADERS_BYTES;
        let code_at = note_at + note_bytes.len() as u64;
        let mut elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0".to_vec();
        elf.extend(2u16.to_le_bytes()); // ET_EXEC
        elf.extend(machine.to_le_bytes());
        elf.extend(1u32.to_le_bytes());
        elf.extend(layout::KERNEL_ADDR.to_le_bytes()); // e_entry
        elf.extend(64u64.to_le_bytes()); // e_phoff
        elf.extend(0u64.to_le_bytes()); // e_shoff
        elf.extend(0u32.to_le_bytes()); // e_flags
        for half in [64u16, 56, 2, 64, 0, 0] {
            elf.extend(half.to_le_bytes());
        }
        // PT_LOAD, R+X: offset, vaddr, paddr, filesz, memsz, align.
        elf.extend(1u32.to_le_bytes());
        elf.extend(5u32.to_le_bytes());
        let load = layout::KERNEL_ADDR;
        let code_len = code.len() as u64;
        for word in [code_at, load, load, code_len, code_len, 0x1000] {
            elf.extend(word.to_le_bytes());
        }
        // PT_NOTE, R: offset, vaddr, paddr, filesz, memsz, align.
        elf.extend(4u32.to_le_bytes());
        elf.extend(4u32.to_le_bytes());
        let note_len = note_bytes.len() as u64;
        for word in [note_at, 0, 0, note_len, note_len, 4] {
            elf.extend(word.to_le_bytes());
        }
        assert_eq!(elf.len() as u64, HEADERS_BYTES);
        elf.extend(note_bytes);
        elf.extend(code);
        elf
    }

    const EM_X86_64: u16 = 62;

    /// What the loader makes of `image`, and what `pvh_entry` says.
    fn both(image: &[u8]) -> (Result<Option<u64>, String>, Result<Option<u64>, ElfError>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmlinux");
        std::fs::write(&path, image).unwrap();
        let loaded = load_kernel(&memory(64 << 20), &path)
            .map(|k| k.pvh_entry)
            .map_err(|e| e.to_string());
        (loaded, pvh_entry(image))
    }

    #[test]
    fn pvh_entry_is_where_the_loader_finds_it() {
        let other_note: (&[u8], u32, &[u8]) = (b"GNU\0", 3, &[1, 2, 3, 4]);
        let pvh_note: (&[u8], u32, &[u8]) = (b"Xen\0", 18, &0x0100_1000u32.to_le_bytes());
        let image = elf_with_notes(EM_X86_64, &[other_note, pvh_note]);
        assert_eq!(both(&image), (Ok(Some(0x0100_1000)), Ok(Some(0x0100_1000))));
        // Linux's note is a 64-bit word: the entry is its low half.
        let wide: (&[u8], u32, &[u8]) = (b"Xen\0", 18, &0x0100_2000u64.to_le_bytes());
        let image = elf_with_notes(EM_X86_64, &[wide]);
        assert_eq!(both(&image), (Ok(Some(0x0100_2000)), Ok(Some(0x0100_2000))));
        // Another type of Xen note, or the type under another name: no entry.
        let xen_other: (&[u8], u32, &[u8]) = (b"Xen\0", 6, &[0; 4]);
        let not_xen: (&[u8], u32, &[u8]) = (b"Xem\0", 18, &[0; 4]);
        let image = elf_with_notes(EM_X86_64, &[other_note, xen_other, not_xen]);
        assert_eq!(both(&image), (Ok(None), Ok(None)));
    }

    #[test]
    fn a_pvh_note_too_short_for_an_address_is_refused_by_both() {
        let short: (&[u8], u32, &[u8]) = (b"Xen\0", 18, &[0x40, 0x10]);
        let (loaded, found) = both(&elf_with_notes(EM_X86_64, &[short]));
        assert!(loaded.is_err(), "{loaded:?}");
        assert_eq!(found, Err(ElfError::ShortPvhNote(2)));
    }

    #[test]
    fn pvh_entry_wants_an_x86_64_elf() {
        let image = elf_with_notes(183, &[]); // EM_AARCH64
        assert_eq!(pvh_entry(&image), Err(ElfError::NotX86_64(183)));
        let err = pvh_entry(b"\x7fELF\x02\x01\x01").unwrap_err();
        assert!(matches!(err, ElfError::Unreadable(_)), "{err}");
        assert!(matches!(pvh_entry(&[]), Err(ElfError::Unreadable(_))));
    }

    #[test]
    fn vmbench_kernel_has_its_pvh_entry_where_the_loader_finds_it() {
        let Some(kernel) =
            test_kernel("vmbench_kernel_has_its_pvh_entry_where_the_loader_finds_it")
        else {
            return;
        };
        let image = std::fs::read(&kernel).unwrap();
        let loaded = load_kernel(&memory(256 << 20), &kernel).unwrap();
        assert!(
            loaded.pvh_entry.is_some(),
            "the kernel is built with CONFIG_PVH"
        );
        assert_eq!(pvh_entry(&image), Ok(loaded.pvh_entry));
    }

    proptest::proptest! {
        /// Any bytes, and any corruption of a kernel with a PVH note: an
        /// answer or an error, never a panic.
        #[test]
        fn pvh_entry_never_panics(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            flips in proptest::collection::vec((0usize..400, proptest::prelude::any::<u8>()), 1..8),
        ) {
            let _ = pvh_entry(&bytes);
            let note: (&[u8], u32, &[u8]) = (b"Xen\0", 18, &[0, 0x10, 0, 1]);
            let mut image = elf_with_notes(EM_X86_64, &[note]);
            for (at, byte) in flips {
                let at = at % image.len();
                image[at] = byte;
            }
            let _ = pvh_entry(&image);
        }
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
