//! The guest's inputs, checked before any VM starts: a kernel that QEMU and our
//! VMM can load, and an initramfs the kernel can unpack and that has an `/init`.
//! A bad input is one clear error here instead of N confusing guest failures.

use std::path::{Path, PathBuf};

use vmbench_rootfs::provenance::sha256_hex;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Cannot read {what} {path}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Kernel {path} is neither an x86-64 ELF vmlinux nor a bzImage ({detail})")]
    NotAKernel { path: PathBuf, detail: String },
    #[error("Kernel {path} is an ELF vmlinux without a PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY), which {needs} needs; build it with CONFIG_PVH=y, use its bzImage, or boot it with --backend kvm --entry linux64")]
    NoPvhNote { path: PathBuf, needs: &'static str },
    #[error("Initramfs {path} is corrupt: {source}")]
    BadInitramfs {
        path: PathBuf,
        #[source]
        source: vmbench_rootfs::Error,
    },
    #[error("Cannot build the initramfs {path}: {source}")]
    BuildInitramfs {
        path: PathBuf,
        #[source]
        source: vmbench_rootfs::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// The kind of kernel image, as far as booting it is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// An ELF vmlinux with a PVH entry point.
    ElfPvh,
    /// An ELF vmlinux without one: only the 64-bit Linux entry of our VMM
    /// boots it (QEMU loads an ELF kernel only through the PVH note).
    Elf,
    /// A bzImage (setup header magic "HdrS").
    BzImage,
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// A checked input file.
#[derive(Debug, Clone)]
pub struct CheckedFile<K> {
    pub path: PathBuf,
    pub sha256: String,
    pub size_bytes: u64,
    pub kind: K,
}

/// Reads and checks a kernel image.
pub fn check_kernel(path: &Path) -> Result<CheckedFile<KernelFormat>> {
    let bytes = read("kernel", path)?;
    let kind = kernel_format(&bytes).map_err(|detail| Error::NotAKernel {
        path: path.to_path_buf(),
        detail,
    })?;
    Ok(CheckedFile {
        path: path.to_path_buf(),
        sha256: sha256_hex(&bytes),
        size_bytes: bytes.len() as u64,
        kind,
    })
}

impl CheckedFile<KernelFormat> {
    /// Refuses a kernel the way it will be booted cannot enter: an ELF
    /// without a PVH note under QEMU, or with `--entry pvh`. `needs` names
    /// what needs the note.
    pub fn check_entry(&self, needs_pvh: Option<&'static str>) -> Result<()> {
        match (self.kind, needs_pvh) {
            (KernelFormat::Elf, Some(needs)) => Err(Error::NoPvhNote {
                path: self.path.clone(),
                needs,
            }),
            _ => Ok(()),
        }
    }
}

/// What kind of kernel `bytes` is, or what it is not.
fn kernel_format(bytes: &[u8]) -> std::result::Result<KernelFormat, String> {
    if bytes.starts_with(b"\x7fELF") {
        use vmbench_vmm::loader::{pvh_entry, ElfError};
        return match pvh_entry(bytes) {
            Ok(Some(_)) => Ok(KernelFormat::ElfPvh),
            Ok(None) => Ok(KernelFormat::Elf),
            Err(ElfError::Unreadable(detail)) => Err(format!("unreadable ELF: {detail}")),
            Err(e) => Err(e.to_string()),
        };
    }
    // The x86 boot protocol's setup header: "HdrS" at offset 0x202.
    if bytes.get(0x202..0x206) == Some(b"HdrS") {
        return Ok(KernelFormat::BzImage);
    }
    let head: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
    Err(format!("starts with {}", head.join(" ")))
}

/// Reads and checks an initramfs: a cpio newc archive (plain or gzip) with an
/// executable `/init`.
pub fn check_initramfs(path: &Path) -> Result<CheckedFile<()>> {
    let bytes = read("initramfs", path)?;
    let bad = |source| Error::BadInitramfs {
        path: path.to_path_buf(),
        source,
    };
    let entries = vmbench_rootfs::read_initramfs(&bytes).map_err(bad)?;
    vmbench_rootfs::check_bootable(&entries).map_err(bad)?;
    Ok(CheckedFile {
        path: path.to_path_buf(),
        sha256: sha256_hex(&bytes),
        size_bytes: bytes.len() as u64,
        kind: (),
    })
}

/// The initramfs for an agent binary, built once into the cache and named by
/// the hash of the agent and this vmbench build: the archive is
/// deterministic, so the same pair always gives the same file.
///
/// It is not compressed: the kernel would inflate it before running init,
/// and that time, our scaffolding's rather than the kernel's, would count
/// in the kernel phase (20–50 ms of a ~600 ms TCG boot, 11.6 s under an
/// emulating KVM, a few ms on hardware). Loading the larger file costs the
/// VMM well under a millisecond.
pub fn agent_initramfs(agent: &Path, cache_dir: &Path) -> Result<PathBuf> {
    let mut key = read("guest agent", agent)?;
    // The layout around the agent is this build's code: a new build may lay
    // the archive out differently, so it is part of the name too.
    key.extend_from_slice(crate::environment::vmbench_version().as_bytes());
    let name = format!("agent-{}.cpio", &sha256_hex(&key)[..16]);
    let path = cache_dir.join("initramfs").join(name);
    if path.is_file() {
        return Ok(path);
    }
    let build_err = |source| Error::BuildInitramfs {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(path.parent().expect("has a parent")).map_err(|source| {
        Error::Read {
            what: "cache directory",
            path: path.parent().expect("has a parent").to_path_buf(),
            source,
        }
    })?;
    let image = vmbench_rootfs::agent_initramfs(agent).map_err(build_err)?;
    image
        .write(&path, vmbench_rootfs::Compression::None)
        .map_err(build_err)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_a_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmlinux");
        std::fs::write(&path, b"hello world, not a kernel").unwrap();
        let err = check_kernel(&path).unwrap_err().to_string();
        assert!(
            err.contains("neither an x86-64 ELF vmlinux nor a bzImage"),
            "{err}"
        );
        assert!(err.contains("starts with 68 65 6c 6c"), "{err}");
    }

    #[test]
    fn truncated_elf_is_not_a_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmlinux");
        std::fs::write(&path, b"\x7fELF\x02\x01\x01").unwrap();
        let err = check_kernel(&path).unwrap_err().to_string();
        assert!(err.contains("unreadable ELF"), "{err}");
    }

    #[test]
    fn an_elf_without_pvh_note_is_refused_only_where_the_note_is_needed() {
        // This test binary is an x86-64 ELF without a PVH note.
        let exe = std::env::current_exe().unwrap();
        let kernel = check_kernel(&exe).unwrap();
        assert_eq!(kernel.kind, KernelFormat::Elf);
        assert!(
            kernel.check_entry(None).is_ok(),
            "the 64-bit entry boots it"
        );
        let err = kernel.check_entry(Some("QEMU")).unwrap_err();
        assert!(matches!(err, Error::NoPvhNote { needs: "QEMU", .. }));
        assert!(err.to_string().contains("--entry linux64"), "{err}");
    }

    #[test]
    fn bzimage_magic_is_recognised() {
        let mut bytes = vec![0u8; 0x300];
        bytes[0x202..0x206].copy_from_slice(b"HdrS");
        assert!(matches!(kernel_format(&bytes), Ok(KernelFormat::BzImage)));
    }

    #[test]
    fn missing_kernel_names_the_path() {
        let err = check_kernel(Path::new("/nonexistent/vmlinux"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/vmlinux"), "{err}");
    }

    #[test]
    fn corrupt_initramfs_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("initramfs.cpio.gz");
        std::fs::write(&path, b"\x1f\x8b\x08\x00garbage").unwrap();
        let err = check_initramfs(&path).unwrap_err().to_string();
        assert!(err.starts_with("Initramfs"), "{err}");
    }

    #[test]
    fn agent_initramfs_is_cached_and_checks_out() {
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("agent");
        std::fs::write(&agent, b"#!/bin/true\n").unwrap();
        let first = agent_initramfs(&agent, dir.path()).unwrap();
        let modified = std::fs::metadata(&first).unwrap().modified().unwrap();
        let second = agent_initramfs(&agent, dir.path()).unwrap();
        assert_eq!(first, second);
        assert_eq!(
            std::fs::metadata(&second).unwrap().modified().unwrap(),
            modified
        );
        check_initramfs(&first).unwrap();
        // Plain cpio newc: nothing for the guest kernel to inflate.
        assert!(std::fs::read(&first).unwrap().starts_with(b"070701"));
    }
}
