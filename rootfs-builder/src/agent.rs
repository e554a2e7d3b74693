//! The guest agent binary as an input: it must be a static x86-64 ELF,
//! since it runs in guests whose libraries (if any) are not the host's, and
//! its SHA-256 is part of every image's identity.

use std::path::{Path, PathBuf};

use crate::provenance::sha256_hex;
use crate::{Error, Result};

const ELF_MAGIC: &[u8] = b"\x7fELF";
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EM_X86_64: u16 = 62;
const PT_INTERP: u32 = 3;

/// A checked agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub path: PathBuf,
    pub sha256: String,
    pub size_bytes: u64,
}

/// Reads and checks the agent at `path`.
pub fn check_agent(path: &Path) -> Result<Agent> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        what: "read the guest agent",
        path: path.to_path_buf(),
        source,
    })?;
    if let Some(problem) = elf_problem(&bytes) {
        return Err(Error::BadAgent {
            path: path.to_path_buf(),
            problem,
        });
    }
    Ok(Agent {
        path: path.to_path_buf(),
        sha256: sha256_hex(&bytes),
        size_bytes: bytes.len() as u64,
    })
}

/// Why `bytes` is not a static x86-64 ELF executable, if it is not.
fn elf_problem(bytes: &[u8]) -> Option<String> {
    if !bytes.starts_with(ELF_MAGIC) {
        let head: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
        return Some(format!(
            "it is not an ELF executable (starts with {})",
            if head.is_empty() {
                "nothing: it is empty".to_string()
            } else {
                head.join(" ")
            }
        ));
    }
    if bytes.len() < 64 || bytes[4] != ELFCLASS64 || bytes[5] != ELFDATA2LSB {
        return Some("it is not a 64-bit little-endian ELF".into());
    }
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    let machine = u16_at(18);
    if machine != EM_X86_64 {
        return Some(format!(
            "it is built for ELF machine {machine}, not x86-64 (62)"
        ));
    }
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().expect("8 bytes")) as usize;
    let (phentsize, phnum) = (usize::from(u16_at(54)), usize::from(u16_at(56)));
    for index in 0..phnum {
        let at = phoff.saturating_add(index.saturating_mul(phentsize));
        let Some(entry) = bytes.get(at..at.saturating_add(4)) else {
            return Some("its program headers are truncated".into());
        };
        if u32::from_le_bytes(entry.try_into().expect("4 bytes")) == PT_INTERP {
            return Some(
                "it is dynamically linked (it has an ELF interpreter); build the static agent with scripts/build-agent.sh".into(),
            );
        }
    }
    None
}

/// A minimal static x86-64 ELF (headers only), for tests that need an agent.
pub fn fake_static_agent(payload: &[u8]) -> Vec<u8> {
    let mut elf = vec![0u8; 64 + 56];
    elf[..4].copy_from_slice(ELF_MAGIC);
    elf[4] = ELFCLASS64;
    elf[5] = ELFDATA2LSB;
    elf[6] = 1;
    elf[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
    elf[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    elf[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    elf[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    elf[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
    elf[64..68].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf.extend_from_slice(payload);
    elf
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn random_files_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = elf_problem(&tail);
            let mut elf = fake_static_agent(b"");
            elf.truncate(20);
            elf.extend_from_slice(&tail);
            let _ = elf_problem(&elf);
        }
    }

    #[test]
    fn a_static_elf_passes() {
        assert_eq!(elf_problem(&fake_static_agent(b"x")), None);
    }

    #[test]
    fn other_files_are_named_for_what_they_are() {
        assert!(elf_problem(b"#!/bin/sh\n").unwrap().contains("23 21 2f 62"));
        assert!(elf_problem(b"").unwrap().contains("empty"));
        let mut dynamic = fake_static_agent(b"");
        dynamic[64..68].copy_from_slice(&PT_INTERP.to_le_bytes());
        assert!(elf_problem(&dynamic)
            .unwrap()
            .contains("dynamically linked"));
        let mut arm = fake_static_agent(b"");
        arm[18..20].copy_from_slice(&183u16.to_le_bytes());
        assert!(elf_problem(&arm).unwrap().contains("machine 183"));
        let mut truncated = fake_static_agent(b"");
        truncated[56..58].copy_from_slice(&100u16.to_le_bytes());
        assert!(elf_problem(&truncated).unwrap().contains("truncated"));
    }
}
