//! What the tests check of a freestanding guest's ELF (the vsock test guest,
//! the vmexit guest): one static segment at 1 MiB entered at `linux_start`,
//! the PVH note naming `pvh_start`, and no SSE instruction (KVM's
//! instruction emulator, which runs every guest instruction on hosts with
//! nested KVM, cannot execute most of them; the build turns SSE off, and
//! this catches a build that lost the flag even where KVM is native).

use std::path::Path;
use std::process::Command;

use crate::vsock::find_program;
use crate::{dump, skip_unless_ci};

/// What an ELF says about itself, as far as these tests care.
pub struct ElfFacts {
    pub e_type: u16,
    pub entry: u64,
    /// (p_type, p_paddr, p_offset, p_filesz)
    pub segments: Vec<(u32, u64, u64, u64)>,
    /// Symbol name to value.
    pub symbols: Vec<(String, u64)>,
}

pub fn le(bytes: &[u8], at: usize, len: usize) -> u64 {
    bytes[at..at + len]
        .iter()
        .rev()
        .fold(0, |value, &b| value << 8 | u64::from(b))
}

pub fn read_elf(bytes: &[u8]) -> ElfFacts {
    assert_eq!(
        &bytes[..6],
        b"\x7fELF\x02\x01",
        "a 64-bit little-endian ELF"
    );
    let (phoff, phnum) = (le(bytes, 32, 8) as usize, le(bytes, 56, 2) as usize);
    let segments = (0..phnum)
        .map(|i| {
            let p = phoff + i * 56;
            let p_type = le(bytes, p, 4) as u32;
            (
                p_type,
                le(bytes, p + 24, 8),
                le(bytes, p + 8, 8),
                le(bytes, p + 32, 8),
            )
        })
        .collect();
    let (shoff, shnum) = (le(bytes, 40, 8) as usize, le(bytes, 60, 2) as usize);
    let section = |i: usize| {
        let s = shoff + i * 64;
        // (sh_type, sh_offset, sh_size, sh_link)
        (
            le(bytes, s + 4, 4),
            le(bytes, s + 24, 8) as usize,
            le(bytes, s + 32, 8) as usize,
            le(bytes, s + 40, 4) as usize,
        )
    };
    let mut symbols = Vec::new();
    for i in 0..shnum {
        let (sh_type, offset, size, link) = section(i);
        if sh_type != 2 {
            continue; // SHT_SYMTAB only
        }
        let (_, strings, ..) = section(link);
        for sym in (offset..offset + size).step_by(24) {
            let name_at = strings + le(bytes, sym, 4) as usize;
            let name_len = bytes[name_at..].iter().position(|&b| b == 0).unwrap();
            let name = String::from_utf8_lossy(&bytes[name_at..name_at + name_len]);
            symbols.push((name.into_owned(), le(bytes, sym + 8, 8)));
        }
    }
    ElfFacts {
        e_type: le(bytes, 16, 2) as u16,
        entry: le(bytes, 24, 8),
        segments,
        symbols,
    }
}

/// Checks the ELF at `path` is one static PT_LOAD at 1 MiB entered at
/// `linux_start`, with one PT_NOTE: the PVH entry `pvh_start`.
pub fn assert_static_at_1_mib_with_both_entries(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    let elf = read_elf(&bytes);
    assert_eq!(elf.e_type, 2, "ET_EXEC: linked at fixed addresses, not PIE");
    let symbol = |name: &str| {
        elf.symbols
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no symbol {name}"))
            .1
    };
    assert_eq!(elf.entry, symbol("linux_start"));
    let loads: Vec<_> = elf.segments.iter().filter(|s| s.0 == 1).collect();
    assert_eq!(loads.len(), 1, "one PT_LOAD");
    assert_eq!(loads[0].1, 0x10_0000, "loaded at 1 MiB");
    for forbidden in [2, 3] {
        assert!(
            elf.segments.iter().all(|s| s.0 != forbidden),
            "PT_DYNAMIC or PT_INTERP present"
        );
    }
    let notes: Vec<_> = elf.segments.iter().filter(|s| s.0 == 4).collect();
    assert_eq!(notes.len(), 1, "one PT_NOTE");
    let (_, _, offset, size) = *notes[0];
    let note = &bytes[offset as usize..(offset + size) as usize];
    // namesz 4, descsz 8, type 18 (XEN_ELFNOTE_PHYS32_ENTRY), "Xen\0", entry.
    assert_eq!(le(note, 0, 4), 4);
    assert_eq!(le(note, 4, 4), 8);
    assert_eq!(le(note, 8, 4), 18);
    assert_eq!(&note[12..16], b"Xen\0");
    assert_eq!(le(note, 16, 8), symbol("pvh_start"));
}

/// Checks no instruction of the ELF at `path` uses an SSE register (by
/// objdump; `SKIPPED` without it, outside CI).
pub fn assert_no_sse(test: &str, path: &Path) {
    let Some(objdump) = find_program("objdump") else {
        skip_unless_ci(test, "objdump (binutils) is not installed");
        return;
    };
    let out = Command::new(objdump).arg("-d").arg(path).output().unwrap();
    assert!(out.status.success(), "{}", dump(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let sse: Vec<&str> = text.lines().filter(|l| l.contains("%xmm")).collect();
    assert!(
        sse.is_empty(),
        "SSE instructions in the guest:\n{}",
        sse.join("\n")
    );
    assert!(
        text.contains("<pvh_start>:"),
        "objdump saw no code:\n{text}"
    );
}
