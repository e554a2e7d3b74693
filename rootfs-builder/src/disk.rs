//! Disk images as the host boots them: a raw ext4 file system, or a qcow2
//! image over a backing chain that ends in one. [`validate_image`] checks
//! one before a VM starts, so a bad image is one clear error naming the file
//! instead of a guest that panics looking for its root.
//!
//! What makes a raw or qcow2 image and its chain sound is `vmbench-image`'s
//! (the VMM's virtio-blk device uses the same rules): the chain is opened
//! there, every file explicitly and read-only, unlocked (the VMs lock their
//! own overlays). What is this crate's is that a root disk must hold ext4,
//! and how a bad image is worded for `vmbench boot --rootfs` and `vmbench
//! rootfs` ([`From<vmbench_image::Error>`](Error)).

use std::path::{Path, PathBuf};

use vmbench_image::{file, Chain, OpenOptions, Problem, Sniffed};

pub use vmbench_image::{Format as DiskFormat, Layer as ChainLayer, OpenImage, MAX_CHAIN_DEPTH};

use crate::provenance::{read_sidecar, ImageInfo};
use crate::{Error, Result};

/// Where the ext2/3/4 superblock starts, and its magic within it.
const SUPERBLOCK_OFFSET: u64 = 1024;
const EXT4_MAGIC_OFFSET: usize = 56;
const EXT4_MAGIC: u16 = 0xef53;
/// `s_feature_incompat` and its "journal needs recovery" bit.
const EXT4_INCOMPAT_OFFSET: usize = 0x60;
const EXT4_INCOMPAT_RECOVER: u32 = 0x4;

/// An image that passed [`validate_image`].
#[derive(Debug, Clone)]
pub struct DiskImage {
    pub path: PathBuf,
    pub format: DiskFormat,
    /// The disk's size as the guest sees it.
    pub virtual_size_bytes: u64,
    /// The top image first, its base last.
    pub chain: Vec<ChainLayer>,
    /// The base's sidecar, when it is a `vmbench rootfs` image (its identity
    /// for the results).
    pub base_info: Option<ImageInfo>,
}

/// Checks that `path` is a disk vmbench can boot: a raw ext4 file system, or
/// a qcow2 image whose chain (opened read-only, every file) is intact and
/// ends in one.
pub fn validate_image(path: &Path) -> Result<DiskImage> {
    let image = open_read_only(path)?;
    if image.chain.len() == 1 && image.chain[0].format == DiskFormat::Raw {
        // Says what a raw file is when it is not ext4 (short, partitioned, …).
        check_ext4(path)?;
    }
    let superblock = image.read(SUPERBLOCK_OFFSET, 1024)?;
    let base = image.chain.last().expect("a chain has a top");
    if let Some(problem) = ext4_problem(&superblock) {
        let what = if image.chain.len() == 1 {
            format!("the disk it holds {problem}")
        } else {
            format!(
                "the disk its chain makes (base {}) {problem}",
                base.path.display()
            )
        };
        return Err(Error::NotExt4 {
            path: path.to_path_buf(),
            detail: what,
        });
    }
    let base_info = read_sidecar(&base.path).ok();
    Ok(DiskImage {
        path: path.to_path_buf(),
        format: image.chain[0].format,
        virtual_size_bytes: image.virtual_size_bytes(),
        chain: image.chain.clone(),
        base_info,
    })
}

/// Opens `path` and its backing chain read-only through imago.
pub fn open_read_only(path: &Path) -> Result<OpenImage> {
    let chain = Chain::open(path, OpenOptions::default())?;
    Ok(chain.into_imago()?)
}

/// What is wrong with `superblock` (the 1 KiB at byte 1024) as ext2/3/4, if anything.
fn ext4_problem(superblock: &[u8]) -> Option<String> {
    let magic = superblock
        .get(EXT4_MAGIC_OFFSET..EXT4_MAGIC_OFFSET + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))?;
    (magic != EXT4_MAGIC).then(|| {
        format!("has no ext4 superblock: the magic at byte 1080 is 0x{magic:04X}, not 0xEF53")
    })
}

/// Checks that the file at `path` is a raw ext2/3/4 file system; the error
/// says what it is instead.
pub fn check_ext4(path: &Path) -> Result<()> {
    let head = read_head(path)?;
    let not_ext4 = |detail: String| Error::NotExt4 {
        path: path.to_path_buf(),
        detail,
    };
    if head.is_empty() {
        return Err(not_ext4("it is empty".into()));
    }
    match vmbench_image::sniff(&head) {
        Sniffed::Qcow2 => {
            return Err(not_ext4(
                "it is a qcow2 image; convert it with `qemu-img convert -O raw`".into(),
            ))
        }
        Sniffed::OtherImage(what) | Sniffed::NotAnImage(what) => {
            return Err(not_ext4(format!("it is a {what}")))
        }
        Sniffed::Raw => {}
    }
    if head.len() < 2048 {
        return Err(not_ext4(format!(
            "it is {} bytes, too short for a superblock at byte 1024",
            head.len()
        )));
    }
    if let Some(problem) = ext4_problem(&head[1024..]) {
        let partitioned = head[510..512] == [0x55, 0xaa];
        let detail = if partitioned && &head[512..520] == b"EFI PART" {
            "it has a GPT partition table: it is a whole disk; extract the partition holding the root file system".to_string()
        } else if partitioned {
            "it has an MBR partition table: it is a whole disk; extract the partition holding the root file system".to_string()
        } else {
            format!("it {problem}")
        };
        return Err(not_ext4(detail));
    }
    Ok(())
}

/// Whether the ext4 file system in `path` has a journal that was not
/// replayed (it was not cleanly unmounted): editing it offline would be
/// overwritten when the journal is replayed.
pub(crate) fn needs_recovery(path: &Path) -> Result<bool> {
    let head = read_head(path)?;
    let at = 1024 + EXT4_INCOMPAT_OFFSET;
    let incompat = head
        .get(at..at + 4)
        .map_or(0, |b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
    Ok(incompat & EXT4_INCOMPAT_RECOVER != 0)
}

/// The file's first 2 KiB (the boot block and the superblock), or all of
/// it if shorter.
fn read_head(path: &Path) -> Result<Vec<u8>> {
    let file = file::open(path, false, None)?;
    file::read_prefix(&file, 2048).map_err(|source| Error::Io {
        what: "read",
        path: path.to_path_buf(),
        source,
    })
}

/// The pre-boot check's wording of a bad image.
impl From<vmbench_image::Error> for Error {
    fn from(error: vmbench_image::Error) -> Error {
        use vmbench_image::Error as Image;
        let not_a_disk = |path: PathBuf, detail: String| Error::NotADiskImage { path, detail };
        let corrupt = |path: PathBuf, detail: String| Error::CorruptImage { path, detail };
        match error {
            Image::NotFound { path } => Error::NotFound { path },
            Image::BackingMissing { image, path } => Error::BackingMissing { image, path },
            Image::Io { what, path, source } => Error::Io { what, path, source },
            Image::Directory { path } => not_a_disk(path, "it is a directory".into()),
            Image::NotAFile { path } => {
                not_a_disk(path, "it is neither a file nor a block device".into())
            }
            Image::Empty { path } => not_a_disk(path, "it is empty".into()),
            Image::OtherImage { path, what } | Image::NotAnImage { path, what } => not_a_disk(
                path,
                format!("it is a {what}; only raw and qcow2 are supported"),
            ),
            Image::BackingNotQcow2 { image, path } => not_a_disk(
                path,
                format!(
                    "{} names it as a qcow2 backing file, but it is not qcow2",
                    image.display()
                ),
            ),
            // The pre-boot check opens read-only and probes; these cannot arise.
            Image::FormatNotStated { path } => not_a_disk(path, "its format is not stated".into()),
            Image::NotQcow2 { path } => not_a_disk(path, "it is not qcow2".into()),
            Image::Qcow2 { path, problem } => corrupt(
                path,
                match problem {
                    Problem::Truncated(detail) => format!("it is truncated: {detail}"),
                    Problem::Corrupt(detail) => detail,
                    Problem::Unsupported(what) => {
                        format!("it uses {what}, which vmbench does not support")
                    }
                },
            ),
            Image::BackingFormat { image, format } => corrupt(
                image,
                format!(
                    "its backing file is in {format:?} format; only raw and qcow2 are supported"
                ),
            ),
            Image::Loop { top, path } => Error::BackingLoop { top, path },
            Image::TooDeep { top } => Error::ChainTooDeep { top },
            // Nothing here locks; a lock held elsewhere is a failed open.
            Image::Locked { path } => Error::Io {
                what: "lock",
                path,
                source: std::io::ErrorKind::WouldBlock.into(),
            },
            Image::Imago { path, source, .. } => corrupt(path, source.to_string()),
            Image::ImagoPanicked { path } => {
                corrupt(path, "imago failed on it (a corrupt image)".into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblock_magic_is_checked() {
        let mut sb = vec![0u8; 1024];
        assert!(ext4_problem(&sb).unwrap().contains("0x0000"));
        sb[56..58].copy_from_slice(&0xef53u16.to_le_bytes());
        assert_eq!(ext4_problem(&sb), None);
    }

    #[test]
    fn a_raw_file_that_is_not_ext4_says_what_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name);
        let detail = |name: &str| match check_ext4(&p(name)) {
            Err(Error::NotExt4 { detail, .. }) => detail,
            other => panic!("{name}: {other:?}"),
        };
        std::fs::write(p("empty"), b"").unwrap();
        assert_eq!(detail("empty"), "it is empty");
        std::fs::write(p("q"), b"QFI\xfb\0\0\0\x03").unwrap();
        assert!(detail("q").starts_with("it is a qcow2 image; convert it"));
        std::fs::write(p("vdi"), b"<<< Oracle VM VirtualBox Disk Image >>>").unwrap();
        assert_eq!(detail("vdi"), "it is a VirtualBox VDI image");
        std::fs::write(p("short"), [0u8; 100]).unwrap();
        assert!(detail("short").contains("100 bytes, too short"));
        let mut mbr = vec![0u8; 4096];
        mbr[510..512].copy_from_slice(&[0x55, 0xaa]);
        std::fs::write(p("mbr"), &mbr).unwrap();
        assert!(detail("mbr").contains("MBR partition table"));
        assert!(matches!(
            check_ext4(&p("nope")),
            Err(Error::NotFound { .. })
        ));
    }

    /// The pre-boot check words some refusals its own way.
    #[test]
    fn bad_chains_are_worded_for_the_pre_boot_check() {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name);
        let err = |name: &str| validate_image(&p(name)).unwrap_err().to_string();
        std::fs::write(p("empty"), b"").unwrap();
        assert_eq!(
            err("empty"),
            format!("{} is not a disk image: it is empty", p("empty").display())
        );
        std::fs::write(p("x.vmdk"), b"KDMV\x01\0\0\0").unwrap();
        assert!(err("x.vmdk").ends_with("it is a VMDK image; only raw and qcow2 are supported"));
        assert_eq!(
            err("nope"),
            format!("{} does not exist", p("nope").display())
        );
        let mut header = b"QFI\xfb\0\0\0\x03".to_vec();
        header.resize(200, 0);
        std::fs::write(p("cut.qcow2"), &header).unwrap();
        assert!(
            err("cut.qcow2").starts_with(&format!(
                "Disk image {} is corrupt: ",
                p("cut.qcow2").display()
            )),
            "{}",
            err("cut.qcow2")
        );
        header[32..36].copy_from_slice(&1u32.to_be_bytes());
        header[20..24].copy_from_slice(&16u32.to_be_bytes());
        std::fs::write(p("aes.qcow2"), &header).unwrap();
        assert!(err("aes.qcow2").ends_with(
            "is corrupt: it uses encryption (crypt_method 1), which vmbench does not support"
        ));
        assert!(err(".").ends_with("is not a disk image: it is a directory"));
    }
}
