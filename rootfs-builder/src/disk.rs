//! Disk images as the host boots them: a raw ext4 file system, or a qcow2
//! image over a backing chain that ends in one. [`validate_image`] checks
//! one before a VM starts, so a bad image is one clear error naming the file
//! instead of a guest that panics looking for its root.
//!
//! qcow2 headers are read by imago, opening every file of the chain
//! explicitly and read-only (imago's own gates would open a backing file
//! an image names with no bound on the chain's depth). imago reads past the
//! end of a file as zeros, so a truncated qcow2 would quietly read as
//! unallocated (the backing file's data showing through); `qcow2_bounds`
//! first checks that the header's tables, and every L2 table and refcount
//! block they point to, lie inside the file, and the data clusters are then
//! checked through imago's mappings.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use imago::file::File as ImagoFile;
use imago::format::drivers::FormatDriverInstance;
use imago::qcow2::Qcow2;
use imago::raw::Raw;
use imago::{FormatAccess, ShallowMapping, StorageOpenOptions};
use serde::{Deserialize, Serialize};

use crate::provenance::{read_sidecar, ImageInfo};
use crate::{Error, Result};

/// Images in a chain, the top one included.
pub const MAX_CHAIN_DEPTH: usize = 16;
/// Where the ext2/3/4 superblock starts, and its magic within it.
const SUPERBLOCK_OFFSET: u64 = 1024;
const EXT4_MAGIC_OFFSET: usize = 56;
const EXT4_MAGIC: u16 = 0xef53;
/// `s_feature_incompat` and its "journal needs recovery" bit.
const EXT4_INCOMPAT_OFFSET: usize = 0x60;
const EXT4_INCOMPAT_RECOVER: u32 = 0x4;
const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";
/// Formats recognised only to name them.
const OTHER_FORMATS: [(&[u8], &str); 5] = [
    (b"KDMV", "VMDK image"),
    (b"vhdxfile", "VHDX image"),
    (b"conectix", "VHD image"),
    (b"<<< ", "VirtualBox VDI image"),
    (b"\x1f\x8b", "gzip file"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

impl DiskFormat {
    /// The name qcow2 headers and QEMU use.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

/// One file of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLayer {
    pub path: PathBuf,
    pub format: DiskFormat,
    pub file_bytes: u64,
}

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

/// An image open read-only through imago, its chain included.
pub struct OpenImage {
    pub access: FormatAccess<ImagoFile>,
    pub chain: Vec<ChainLayer>,
}

impl std::fmt::Debug for OpenImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenImage")
            .field("chain", &self.chain)
            .finish()
    }
}

impl OpenImage {
    pub fn virtual_size_bytes(&self) -> u64 {
        self.access.size()
    }

    /// `len` bytes of the disk at `offset`, as the guest would read them.
    pub fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        let top = &self.chain[0].path;
        guarded(top, || self.access.read(&mut buf[..], offset))?;
        Ok(buf)
    }
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
    let file = open_file(path, None)?;
    let len = file_len(&file, path)?;
    let head = read_prefix(&file, 2048).map_err(|source| Error::Io {
        what: "read",
        path: path.to_path_buf(),
        source,
    })?;
    let not_ext4 = |detail: String| Error::NotExt4 {
        path: path.to_path_buf(),
        detail,
    };
    if len == 0 {
        return Err(not_ext4("it is empty".into()));
    }
    if head.starts_with(QCOW2_MAGIC) {
        return Err(not_ext4(
            "it is a qcow2 image; convert it with `qemu-img convert -O raw`".into(),
        ));
    }
    if let Some((_, what)) = OTHER_FORMATS.iter().find(|(m, _)| head.starts_with(m)) {
        return Err(not_ext4(format!("it is a {what}")));
    }
    if len < 2048 {
        return Err(not_ext4(format!(
            "it is {len} bytes, too short for a superblock at byte 1024"
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
    let file = open_file(path, None)?;
    let head = read_prefix(&file, 2048).map_err(|source| Error::Io {
        what: "read",
        path: path.to_path_buf(),
        source,
    })?;
    let at = 1024 + EXT4_INCOMPAT_OFFSET;
    let incompat = u32::from_le_bytes(head[at..at + 4].try_into().expect("4 bytes"));
    Ok(incompat & EXT4_INCOMPAT_RECOVER != 0)
}

/// The format the file's first bytes say it has.
pub fn sniff(path: &Path) -> Result<DiskFormat> {
    let file = open_file(path, None)?;
    let head = read_prefix(&file, 16).map_err(|source| Error::Io {
        what: "read",
        path: path.to_path_buf(),
        source,
    })?;
    Ok(if head.starts_with(QCOW2_MAGIC) {
        DiskFormat::Qcow2
    } else {
        DiskFormat::Raw
    })
}

/// Opens `path` and its backing chain read-only through imago.
pub fn open_read_only(path: &Path) -> Result<OpenImage> {
    struct Opened {
        layer: ChainLayer,
        qcow2: Option<Qcow2<ImagoFile>>,
        raw: Option<Raw<ImagoFile>>,
    }
    let mut opened: Vec<Opened> = Vec::new();
    let mut seen: Vec<(u64, u64)> = Vec::new();
    // (path, declared format, the image naming it as backing file)
    let mut next: Option<(PathBuf, Option<DiskFormat>, Option<PathBuf>)> =
        Some((path.to_path_buf(), None, None));
    while let Some((path, declared, below)) = next.take() {
        if opened.len() == MAX_CHAIN_DEPTH {
            return Err(Error::ChainTooDeep {
                top: opened[0].layer.path.clone(),
            });
        }
        let file = open_file(&path, below.as_deref())?;
        let meta = file.metadata().map_err(|source| Error::Io {
            what: "read",
            path: path.clone(),
            source,
        })?;
        if meta.is_dir() {
            return Err(bad_image(&path, "it is a directory"));
        }
        if !meta.is_file() && !meta.file_type().is_block_device() {
            return Err(bad_image(&path, "it is neither a file nor a block device"));
        }
        if seen.contains(&(meta.dev(), meta.ino())) {
            return Err(Error::BackingLoop {
                top: opened[0].layer.path.clone(),
                path,
            });
        }
        seen.push((meta.dev(), meta.ino()));
        let file_bytes = file_len(&file, &path)?;
        let head = read_prefix(&file, 16).map_err(|source| Error::Io {
            what: "read",
            path: path.clone(),
            source,
        })?;
        let is_qcow2 = head.starts_with(QCOW2_MAGIC);
        let format = match declared {
            Some(DiskFormat::Raw) => DiskFormat::Raw,
            Some(DiskFormat::Qcow2) if !is_qcow2 => {
                return Err(bad_image(
                    &path,
                    &format!(
                        "{} names it as a qcow2 backing file, but it is not qcow2",
                        below.unwrap_or_default().display()
                    ),
                ))
            }
            _ if is_qcow2 => DiskFormat::Qcow2,
            _ => {
                if let Some((_, what)) = OTHER_FORMATS.iter().find(|(m, _)| head.starts_with(m)) {
                    return Err(bad_image(
                        &path,
                        &format!("it is a {what}; only raw and qcow2 are supported"),
                    ));
                }
                DiskFormat::Raw
            }
        };
        if file_bytes == 0 {
            return Err(bad_image(&path, "it is empty"));
        }
        let storage = ImagoFile::from_open_file(
            file.try_clone().map_err(|source| Error::Io {
                what: "open",
                path: path.clone(),
                source,
            })?,
            StorageOpenOptions::new().filename(&path).write(false),
        )
        .map_err(|source| imago_error(&path, source))?;
        let layer = ChainLayer {
            path: path.clone(),
            format,
            file_bytes,
        };
        match format {
            DiskFormat::Raw => {
                let raw = guarded(&path, || Raw::open_image(storage, false))?;
                opened.push(Opened {
                    layer,
                    qcow2: None,
                    raw: Some(raw),
                });
            }
            DiskFormat::Qcow2 => {
                qcow2_bounds(&file, file_bytes).map_err(|detail| bad_qcow2(&path, &detail))?;
                let qcow2 = guarded(&path, || Qcow2::<ImagoFile>::open_image(storage, false))?;
                if qcow2.requires_external_data_file() {
                    return Err(bad_qcow2(
                        &path,
                        "it keeps its data in an external data file, which vmbench does not support",
                    ));
                }
                check_data_clusters(&path, &qcow2, file_bytes)?;
                if let Some(name) = qcow2.implicit_backing_file() {
                    let declared = match qcow2.implicit_backing_format().map(String::as_str) {
                        None | Some("") => None,
                        Some("raw" | "file") => Some(DiskFormat::Raw),
                        Some("qcow2") => Some(DiskFormat::Qcow2),
                        Some(other) => {
                            return Err(bad_qcow2(
                                &path,
                                &format!("its backing file is in {other:?} format; only raw and qcow2 are supported"),
                            ))
                        }
                    };
                    next = Some((backing_path(&path, name), declared, Some(path.clone())));
                }
                opened.push(Opened {
                    layer,
                    qcow2: Some(qcow2),
                    raw: None,
                });
            }
        }
    }
    let chain: Vec<ChainLayer> = opened.iter().map(|o| o.layer.clone()).collect();
    let mut lower: Option<FormatAccess<ImagoFile>> = None;
    for layer in opened.into_iter().rev() {
        lower = Some(match (layer.qcow2, layer.raw) {
            (Some(mut qcow2), _) => {
                qcow2.set_backing(lower.take());
                FormatAccess::new(qcow2)
            }
            (None, Some(raw)) => FormatAccess::new(raw),
            (None, None) => unreachable!("every layer is raw or qcow2"),
        });
    }
    Ok(OpenImage {
        access: lower.expect("a chain has a top"),
        chain,
    })
}

/// Every data cluster the qcow2 image maps lies inside the file.
fn check_data_clusters(path: &Path, qcow2: &Qcow2<ImagoFile>, file_bytes: u64) -> Result<()> {
    let size = qcow2.size();
    let mut offset = 0u64;
    while offset < size {
        let (host_offset, len) = guarded(path, || {
            let (mapping, len) = qcow2.get_mapping(offset, size - offset)?;
            Ok(match mapping {
                ShallowMapping::Raw { offset, .. } => (Some(offset), len),
                _ => (None, len),
            })
        })?;
        if len == 0 {
            break;
        }
        if let Some(host_offset) = host_offset {
            if host_offset.saturating_add(len) > file_bytes {
                return Err(bad_qcow2(
                    path,
                    &format!(
                        "it is truncated: data for disk offset {offset} is at file offset {host_offset}, but the file has {file_bytes} bytes"
                    ),
                ));
            }
        }
        offset += len;
    }
    Ok(())
}

/// Checks the header's own tables, and the L2 tables and refcount blocks
/// they point to, against the file's length. The error says what is out
/// of bounds; a header imago would refuse anyway passes (imago says why).
pub(crate) fn qcow2_bounds(
    file: &impl FileExt,
    file_bytes: u64,
) -> std::result::Result<(), String> {
    let mut header = [0u8; 72];
    let got = read_at_most(file, &mut header, 0).map_err(|e| format!("cannot read it: {e}"))?;
    if got < header.len() {
        return Err(format!(
            "it is truncated: {got} bytes, less than a qcow2 header (72 bytes)"
        ));
    }
    let be32 = |at: usize| u32::from_be_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    let be64 = |at: usize| u64::from_be_bytes(header[at..at + 8].try_into().expect("8 bytes"));
    let cluster_bits = be32(20);
    if !(9..=21).contains(&cluster_bits) {
        return Ok(());
    }
    let cluster_bytes = 1u64 << cluster_bits;
    let table = |name: &str, offset: u64, bytes: u64| -> std::result::Result<(), String> {
        match offset.checked_add(bytes) {
            Some(end) if end <= file_bytes => Ok(()),
            _ => Err(format!(
                "it is truncated: its {name} ends at byte {}, but the file has {file_bytes} bytes",
                offset.saturating_add(bytes)
            )),
        }
    };
    let (backing_offset, backing_bytes) = (be64(8), u64::from(be32(16)));
    if backing_offset != 0 {
        table("backing file name", backing_offset, backing_bytes)?;
    }
    let (l1_entries, l1_offset) = (u64::from(be32(36)), be64(40));
    let (refcount_offset, refcount_clusters) = (be64(48), u64::from(be32(56)));
    // One L1 entry maps an L2 table's worth of clusters (8-byte entries).
    let l1_entry_bytes = u128::from(cluster_bytes) * u128::from(cluster_bytes / 8);
    let virtual_bytes = be64(24);
    let l1_needed = u128::from(virtual_bytes).div_ceil(l1_entry_bytes);
    if l1_needed > u128::from(l1_entries) {
        return Err(format!(
            "its L1 table has {l1_entries} entries, too few for its virtual size of {virtual_bytes} bytes ({l1_needed} needed)"
        ));
    }
    table("L1 table", l1_offset, l1_entries * 8)?;
    table(
        "refcount table",
        refcount_offset,
        refcount_clusters * cluster_bytes,
    )?;
    // Bits 9-55 of an L1 or refcount table entry hold a cluster's offset.
    const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
    let pointed = |name: &str, offset: u64, entries: u64| -> std::result::Result<(), String> {
        // Tables larger than QEMU ever makes (32 MiB) are left for imago to refuse.
        if entries > (4 << 20) {
            return Ok(());
        }
        let mut bytes = vec![0u8; (entries * 8) as usize];
        read_at_most(file, &mut bytes, offset).map_err(|e| format!("cannot read it: {e}"))?;
        for (index, entry) in bytes.chunks_exact(8).enumerate() {
            let cluster = u64::from_be_bytes(entry.try_into().expect("8 bytes")) & OFFSET_MASK;
            if cluster != 0 && cluster.saturating_add(cluster_bytes) > file_bytes {
                return Err(format!(
                    "it is truncated: {name} {index} is at byte {cluster}, but the file has {file_bytes} bytes"
                ));
            }
        }
        Ok(())
    };
    pointed("L2 table", l1_offset, l1_entries)?;
    pointed(
        "refcount block",
        refcount_offset,
        refcount_clusters * cluster_bytes / 8,
    )?;
    Ok(())
}

/// Runs an imago operation, turning its panics (it has some on corrupt
/// images) into errors naming the file.
fn guarded<T>(path: &Path, op: impl FnOnce() -> io::Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(op)) {
        Ok(result) => result.map_err(|source| imago_error(path, source)),
        Err(_) => Err(bad_qcow2(path, "imago failed on it (a corrupt image)")),
    }
}

fn imago_error(path: &Path, source: io::Error) -> Error {
    Error::CorruptImage {
        path: path.to_path_buf(),
        detail: source.to_string(),
    }
}

fn bad_image(path: &Path, detail: &str) -> Error {
    Error::NotADiskImage {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

fn bad_qcow2(path: &Path, detail: &str) -> Error {
    Error::CorruptImage {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

/// A backing file name as QEMU reads it: relative to the image's directory.
fn backing_path(image: &Path, name: &str) -> PathBuf {
    let name = Path::new(name);
    if name.is_absolute() {
        return name.to_path_buf();
    }
    crate::atomic::parent_dir(image).join(name)
}

/// Opens `path` read-only; `below` is the image naming it as its backing file.
fn open_file(path: &Path, below: Option<&Path>) -> Result<File> {
    File::open(path).map_err(|source| match (source.kind(), below) {
        (io::ErrorKind::NotFound, None) => Error::NotFound {
            path: path.to_path_buf(),
        },
        (io::ErrorKind::NotFound, Some(image)) => Error::BackingMissing {
            image: image.to_path_buf(),
            path: path.to_path_buf(),
        },
        _ => Error::Io {
            what: "open",
            path: path.to_path_buf(),
            source,
        },
    })
}

fn file_len(file: &File, path: &Path) -> Result<u64> {
    use std::io::{Seek, SeekFrom};
    // Seeking works for block devices too, whose metadata says 0 bytes.
    let mut file = file;
    file.seek(SeekFrom::End(0)).map_err(|source| Error::Io {
        what: "read",
        path: path.to_path_buf(),
        source,
    })
}

/// The file's first `len` bytes, or all of it if shorter.
fn read_prefix(file: &File, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let got = read_at_most(file, &mut buf, 0)?;
    buf.truncate(got);
    Ok(buf)
}

fn read_at_most(file: &impl FileExt, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// FileExt over a byte vector, for the bounds parser.
    struct Bytes(Vec<u8>);

    impl FileExt for Bytes {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            let start = (offset as usize).min(self.0.len());
            let n = buf.len().min(self.0.len() - start);
            buf[..n].copy_from_slice(&self.0[start..start + n]);
            Ok(n)
        }
        fn write_at(&self, _: &[u8], _: u64) -> io::Result<usize> {
            // The parser only reads.
            Err(io::ErrorKind::Unsupported.into())
        }
    }

    /// A qcow2 header with 64 KiB clusters, the L1 table at cluster 3 and
    /// the refcount table at cluster 1.
    fn header(l1_entries: u32) -> Vec<u8> {
        let mut h = vec![0u8; 4 << 16];
        h[0..4].copy_from_slice(QCOW2_MAGIC);
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[20..24].copy_from_slice(&16u32.to_be_bytes());
        h[36..40].copy_from_slice(&l1_entries.to_be_bytes());
        h[40..48].copy_from_slice(&(3u64 << 16).to_be_bytes());
        h[48..56].copy_from_slice(&(1u64 << 16).to_be_bytes());
        h[56..60].copy_from_slice(&1u32.to_be_bytes());
        h
    }

    #[test]
    fn tables_beyond_the_end_are_found() {
        let h = header(2);
        assert_eq!(qcow2_bounds(&Bytes(h.clone()), h.len() as u64), Ok(()));
        // 2 L1 entries of 64 KiB clusters map 1 GiB; a 2 GiB disk needs more.
        let mut big = h.clone();
        big[24..32].copy_from_slice(&(2u64 << 30).to_be_bytes());
        let err = qcow2_bounds(&Bytes(big), h.len() as u64).unwrap_err();
        assert!(err.contains("too few for its virtual size"), "{err}");
        let cut = (3 << 16) + 8;
        let err = qcow2_bounds(&Bytes(h[..cut].to_vec()), cut as u64).unwrap_err();
        assert!(err.contains("L1 table ends at byte 196624"), "{err}");
        let mut pointing = h.clone();
        // L1 entry 1 -> an L2 table at cluster 9, past the end.
        pointing[(3 << 16) + 8..(3 << 16) + 16].copy_from_slice(&(9u64 << 16).to_be_bytes());
        let err = qcow2_bounds(&Bytes(pointing), h.len() as u64).unwrap_err();
        assert!(err.contains("L2 table 1 is at byte 589824"), "{err}");
        let err = qcow2_bounds(&Bytes(h[..40].to_vec()), 40).unwrap_err();
        assert!(err.contains("less than a qcow2 header"), "{err}");
    }

    #[test]
    fn superblock_magic_is_checked() {
        let mut sb = vec![0u8; 1024];
        assert!(ext4_problem(&sb).unwrap().contains("0x0000"));
        sb[56..58].copy_from_slice(&0xef53u16.to_le_bytes());
        assert_eq!(ext4_problem(&sb), None);
    }

    proptest! {
        #[test]
        fn random_headers_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..400),
            claimed in 0u64..1 << 40,
        ) {
            let mut with_magic = QCOW2_MAGIC.to_vec();
            with_magic.extend_from_slice(&bytes);
            let _ = qcow2_bounds(&Bytes(with_magic), claimed);
            let _ = qcow2_bounds(&Bytes(bytes), claimed);
        }
    }
}
