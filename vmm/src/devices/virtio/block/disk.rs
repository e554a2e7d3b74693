//! The image behind a virtio-blk disk: raw, or qcow2 with its backing
//! chain, read and written through imago.
//!
//! # Opening a chain
//! Every file of the chain is opened here, explicitly, and handed to imago
//! with its backing image already opened and a [`DenyImplicitOpenGate`]:
//! imago never opens a file because an image names it. (Its permissive
//! gate would: a backing file opened read-only by default, but without a
//! bound on the chain's depth, so an image naming itself as its backing
//! file recurses until the stack overflows.) So:
//! - only the top image is ever opened for writing, and only when the disk
//!   is writable; every backing file is opened `O_RDONLY` and given to imago
//!   as read-only, so a write reaching a base image would be refused by the
//!   kernel, not just by imago's bookkeeping;
//! - a chain that loops (the same file twice) or is deeper than
//!   [`MAX_CHAIN_DEPTH`] is refused, and a missing backing file is named;
//! - each file is `flock(2)`ed, the writable one exclusively and the rest
//!   shared, so two VMMs cannot write one image and nobody can open a base
//!   for writing while a VM reads it.
//!
//! Each qcow2 header is vetted ([`qcow2_header`]) before imago sees it, and
//! a file's first bytes decide its format ([`mod@format`]); a backing file's
//! format is the one its image declares, probed only when it declares none.
//!
//! # I/O
//! Reads and writes go straight between the image and the guest's buffers
//! (imago turns vm-memory slices into an iovec for `preadv`/`pwritev`),
//! except a read into buffers that overlap each other, which goes through a
//! bounce buffer (two `&mut` views of one byte are not sound Rust). An
//! `imago` panic on a corrupt image fails that request and every later one
//! on this disk, not the VMM.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use imago::file::File as ImagoFile;
use imago::io_buffers::{IoVector, IoVectorMut};
use imago::qcow2::Qcow2;
use imago::raw::Raw;
use imago::{DenyImplicitOpenGate, FormatAccess, FormatDriverBuilder};
use sha2::{Digest, Sha256};
use vm_memory::VolatileSlice;

use super::format::{self, Sniffed};
use super::qcow2_header::{self, Problem};

pub const SECTOR_BYTES: u64 = 512;
/// Images in a chain, the top one included.
pub const MAX_CHAIN_DEPTH: usize = 16;
/// Bytes of the serial number virtio-blk's GET_ID returns.
pub const ID_BYTES: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Disk image {0} does not exist")]
    Missing(PathBuf),
    #[error("Cannot open disk image {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a disk image: {why}")]
    NotAnImage { path: PathBuf, why: String },
    #[error("Disk image {path} is a {what}: only raw and qcow2 images are supported")]
    OtherFormat { path: PathBuf, what: &'static str },
    #[error("Disk image {path} is a {problem}")]
    Qcow2 { path: PathBuf, problem: Problem },
    #[error("Disk image {image} needs backing file {path}, which does not exist")]
    MissingBacking { image: PathBuf, path: PathBuf },
    #[error("Disk image {image} has a backing file in {format:?} format: only raw and qcow2 are supported")]
    BackingFormat { image: PathBuf, format: String },
    #[error("Backing file {path} of {image} is declared qcow2 but is not a qcow2 image")]
    BackingNotQcow2 { image: PathBuf, path: PathBuf },
    #[error("The backing chain of {top} loops: it reaches {path} twice")]
    Loop { top: PathBuf, path: PathBuf },
    #[error("The backing chain of {top} is deeper than {MAX_CHAIN_DEPTH} images")]
    TooDeep { top: PathBuf },
    #[error(
        "Disk image {path} is in use: another VMM (or another --disk of this one) has it locked"
    )]
    Locked { path: PathBuf },
    #[error("imago cannot open disk image {path}")]
    Imago {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Raw,
    Qcow2,
}

/// What the image above says about its backing file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Declared {
    Probe,
    Raw,
    Qcow2,
}

/// One opened, vetted file of a chain.
struct Layer {
    path: PathBuf,
    file: File,
    kind: Kind,
    writable: bool,
}

/// An open image with its chain, ready for the guest's requests.
pub struct Disk {
    image: FormatAccess<ImagoFile>,
    /// Top first.
    chain: Vec<PathBuf>,
    read_only: bool,
    size_bytes: u64,
    id: [u8; ID_BYTES],
    /// imago panicked: every request fails from then on.
    failed: bool,
}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disk")
            .field("chain", &self.chain)
            .field("read_only", &self.read_only)
            .field("size_bytes", &self.size_bytes)
            .finish()
    }
}

impl Disk {
    /// Opens the image at `path` (writable unless `read_only`) and its backing chain.
    pub fn open(path: &Path, read_only: bool) -> Result<Disk> {
        let layers = open_chain(path, !read_only)?;
        let chain: Vec<PathBuf> = layers.iter().map(|l| l.path.clone()).collect();
        let mut lower: Option<FormatAccess<ImagoFile>> = None;
        for layer in layers.into_iter().rev() {
            let imago_err = |source| Error::Imago {
                path: layer.path.clone(),
                source,
            };
            let storage = ImagoFile::try_from(layer.file).map_err(imago_err)?;
            let gate = DenyImplicitOpenGate::default();
            let access = match layer.kind {
                Kind::Raw => FormatAccess::new(
                    Raw::builder(storage)
                        .write(layer.writable)
                        .open(gate)
                        .map_err(imago_err)?,
                ),
                Kind::Qcow2 => FormatAccess::new(
                    Qcow2::<ImagoFile>::builder(storage)
                        .backing(lower.take())
                        .write(layer.writable)
                        .open(gate)
                        .map_err(imago_err)?,
                ),
            };
            lower = Some(access);
        }
        let image = lower.expect("a chain has at least its top image");
        let size_bytes = image.size();
        if size_bytes < SECTOR_BYTES {
            return Err(Error::NotAnImage {
                path: path.to_path_buf(),
                why: format!("its virtual size is {size_bytes} bytes, less than one sector"),
            });
        }
        Ok(Disk {
            image,
            id: id_of(path),
            chain,
            read_only,
            size_bytes,
            failed: false,
        })
    }

    /// The disk's size in 512-byte sectors (a partial last sector is left out).
    pub fn capacity_sectors(&self) -> u64 {
        self.size_bytes / SECTOR_BYTES
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// The image files, the top one first.
    pub fn chain(&self) -> &[PathBuf] {
        &self.chain
    }

    /// A serial number stable for the image's path: `vmb-` and 16 hex digits.
    pub fn id(&self) -> [u8; ID_BYTES] {
        self.id
    }

    /// Fills `buffers`, in order, from the disk at `offset_bytes`.
    pub fn read(&mut self, offset_bytes: u64, buffers: &[VolatileSlice<'_>]) -> io::Result<()> {
        let total = total_len(buffers);
        self.check_range(offset_bytes, total)?;
        if overlapping(buffers) {
            let mut bounce = vec![0u8; total as usize];
            self.guarded(|image| image.read(&mut bounce[..], offset_bytes))?;
            let mut done = 0;
            for buffer in buffers {
                buffer.copy_from(&bounce[done..done + buffer.len()]);
                done += buffer.len();
            }
            return Ok(());
        }
        let (iovec, _guard) = IoVectorMut::from_volatile_slice(buffers.iter());
        self.guarded(|image| image.readv(iovec, offset_bytes))
    }

    /// Writes `buffers`, in order, to the disk at `offset_bytes`.
    pub fn write(&mut self, offset_bytes: u64, buffers: &[VolatileSlice<'_>]) -> io::Result<()> {
        if self.read_only {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the disk is read-only",
            ));
        }
        self.check_range(offset_bytes, total_len(buffers))?;
        let (iovec, _guard) = IoVector::from_volatile_slice(buffers.iter());
        self.guarded(|image| image.writev(iovec, offset_bytes))
    }

    /// Writes back imago's caches and makes everything written durable.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.guarded(|image| {
            image.flush()?;
            image.sync()
        })
    }

    fn check_range(&self, offset_bytes: u64, len_bytes: u64) -> io::Result<()> {
        match offset_bytes.checked_add(len_bytes) {
            Some(end) if end <= self.capacity_sectors() * SECTOR_BYTES => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "beyond the end of the disk",
            )),
        }
    }

    fn guarded<T>(
        &mut self,
        op: impl FnOnce(&FormatAccess<ImagoFile>) -> io::Result<T>,
    ) -> io::Result<T> {
        if self.failed {
            return Err(io::Error::other("imago failed on this disk earlier"));
        }
        match catch_unwind(AssertUnwindSafe(|| op(&self.image))) {
            Ok(result) => result,
            Err(_) => {
                self.failed = true;
                Err(io::Error::other("imago panicked"))
            }
        }
    }
}

fn total_len(buffers: &[VolatileSlice<'_>]) -> u64 {
    buffers.iter().map(|b| b.len() as u64).sum()
}

/// Do any two buffers share a byte of host memory?
fn overlapping(buffers: &[VolatileSlice<'_>]) -> bool {
    let mut ranges: Vec<(usize, usize)> = buffers
        .iter()
        .filter(|b| !b.is_empty())
        .map(|b| {
            let start = b.ptr_guard().as_ptr() as usize;
            (start, start + b.len())
        })
        .collect();
    ranges.sort_unstable();
    ranges.windows(2).any(|pair| pair[1].0 < pair[0].1)
}

fn id_of(path: &Path) -> [u8; ID_BYTES] {
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let digest = Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let mut id = [0u8; ID_BYTES];
    id.copy_from_slice(format!("vmb-{hex}").as_bytes());
    id
}

/// Opens and vets every file of the chain from `top` down.
fn open_chain(top: &Path, writable: bool) -> Result<Vec<Layer>> {
    let mut layers: Vec<Layer> = Vec::new();
    let mut seen: Vec<(u64, u64)> = Vec::new();
    let mut next = Some((top.to_path_buf(), Declared::Probe));
    while let Some((path, declared)) = next.take() {
        if layers.len() == MAX_CHAIN_DEPTH {
            return Err(Error::TooDeep {
                top: top.to_path_buf(),
            });
        }
        let is_top = layers.is_empty();
        let writable = is_top && writable;
        let file = open_file(&path, writable, layers.last().map(|l| l.path.as_path()))?;
        let open_err = |source| Error::Open {
            path: path.clone(),
            source,
        };
        let meta = file.metadata().map_err(open_err)?;
        let file_type = meta.file_type();
        if file_type.is_dir() {
            return Err(not_an_image(&path, "it is a directory"));
        }
        if !file_type.is_file() && !file_type.is_block_device() {
            return Err(not_an_image(
                &path,
                "it is neither a regular file nor a block device",
            ));
        }
        if seen.contains(&(meta.dev(), meta.ino())) {
            return Err(Error::Loop {
                top: top.to_path_buf(),
                path,
            });
        }
        seen.push((meta.dev(), meta.ino()));
        lock(&file, writable).map_err(|e| match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) => Error::Locked { path: path.clone() },
            _ => open_err(e),
        })?;
        let file_bytes = (&file).seek(SeekFrom::End(0)).map_err(open_err)?;
        let prefix = read_prefix(&file, format::SNIFF_BYTES as u64).map_err(open_err)?;
        let kind = match (declared, format::sniff(&prefix)) {
            (Declared::Raw, _) => Kind::Raw,
            (Declared::Qcow2, Sniffed::Qcow2) | (Declared::Probe, Sniffed::Qcow2) => Kind::Qcow2,
            (Declared::Qcow2, _) => {
                return Err(Error::BackingNotQcow2 {
                    image: layers.last().map(|l| l.path.clone()).unwrap_or_default(),
                    path,
                })
            }
            (Declared::Probe, Sniffed::Raw) => Kind::Raw,
            (Declared::Probe, Sniffed::OtherImage(what)) => {
                return Err(Error::OtherFormat { path, what })
            }
            (Declared::Probe, Sniffed::NotAnImage(what)) => {
                return Err(not_an_image(&path, &format!("it looks like a {what}")))
            }
        };
        if is_top && kind == Kind::Raw && file_bytes < SECTOR_BYTES {
            let why = if file_bytes == 0 {
                "it is empty".to_string()
            } else {
                format!("it is {file_bytes} bytes, less than one {SECTOR_BYTES}-byte sector")
            };
            return Err(not_an_image(&path, &why));
        }
        if kind == Kind::Qcow2 {
            let wanted = qcow2_header::first_cluster_bytes(&prefix);
            let first = read_prefix(&file, wanted).map_err(open_err)?;
            let header =
                qcow2_header::parse(&first, file_bytes).map_err(|problem| Error::Qcow2 {
                    path: path.clone(),
                    problem,
                })?;
            if let Some(backing) = header.backing {
                let declared = match backing.format.as_deref() {
                    // imago's create builder writes "" for "not given".
                    None | Some("") => Declared::Probe,
                    Some("raw" | "file") => Declared::Raw,
                    Some("qcow2") => Declared::Qcow2,
                    Some(other) => {
                        return Err(Error::BackingFormat {
                            image: path,
                            format: other.to_string(),
                        })
                    }
                };
                next = Some((resolve(&path, &backing.name), declared));
            }
        }
        layers.push(Layer {
            path,
            file,
            kind,
            writable,
        });
    }
    Ok(layers)
}

fn not_an_image(path: &Path, why: &str) -> Error {
    Error::NotAnImage {
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

/// `below`: the image whose backing file this is, if it is one.
fn open_file(path: &Path, writable: bool, below: Option<&Path>) -> Result<File> {
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .write(writable)
        .open(path);
    opened.map_err(|source| match (source.kind(), below) {
        _ if source.raw_os_error() == Some(libc::EISDIR) => not_an_image(path, "it is a directory"),
        (io::ErrorKind::NotFound, None) => Error::Missing(path.to_path_buf()),
        (io::ErrorKind::NotFound, Some(image)) => Error::MissingBacking {
            image: image.to_path_buf(),
            path: path.to_path_buf(),
        },
        _ => Error::Open {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// A backing file name as QEMU reads it: relative to the image's directory.
fn resolve(image: &Path, name: &str) -> PathBuf {
    let name = Path::new(name);
    if name.is_absolute() {
        return name.to_path_buf();
    }
    image
        .parent()
        .map_or_else(|| name.to_path_buf(), |dir| dir.join(name))
}

/// The file's first `len` bytes, or all of it if shorter.
fn read_prefix(file: &File, len: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(done);
    Ok(buf)
}

/// An exclusive lock for a file we write, a shared one for a file we only
/// read; held until the file is closed.
fn lock(file: &File, exclusive: bool) -> io::Result<()> {
    let mode = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    // SAFETY: flock(2) on a descriptor `file` owns; it touches no memory.
    let rc = unsafe { libc::flock(file.as_raw_fd(), mode | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;
    use std::process::Command;

    use imago::{FormatCreateBuilder, Storage, StorageCreateOptions};
    use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

    use super::*;

    /// A base image's byte at `offset`: a pattern with no period a sector shares.
    pub(crate) fn base_byte(offset: u64) -> u8 {
        (offset.wrapping_mul(7) ^ (offset >> 9)) as u8
    }

    pub(crate) fn write_raw(path: &Path, bytes: u64) {
        let data: Vec<u8> = (0..bytes).map(base_byte).collect();
        std::fs::write(path, data).unwrap();
    }

    /// A qcow2 image of `bytes` over `backing` (name as written, format), made by imago.
    pub(crate) fn create_qcow2(path: &Path, bytes: u64, backing: Option<(&str, &str)>) {
        let file = ImagoFile::create_open(StorageCreateOptions::new().filename(path)).unwrap();
        let mut builder = Qcow2::<ImagoFile>::create_builder(file).size(bytes);
        if let Some((name, format)) = backing {
            builder = builder.backing(name.to_string(), format.to_string());
        }
        builder.create().unwrap();
    }

    pub(crate) fn sha256(path: &Path) -> Vec<u8> {
        Sha256::digest(std::fs::read(path).unwrap()).to_vec()
    }

    pub(crate) fn qemu_img() -> bool {
        Command::new("qemu-img")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn qemu_img_create(args: &[&str]) {
        let out = Command::new("qemu-img")
            .arg("create")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Guest memory to read into and write from.
    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
    }

    fn read(disk: &mut Disk, offset: u64, len: usize) -> Vec<u8> {
        let mem = mem();
        disk.read(offset, &[mem.get_slice(GuestAddress(0), len).unwrap()])
            .unwrap();
        let mut out = vec![0u8; len];
        mem.read_slice(&mut out, GuestAddress(0)).unwrap();
        out
    }

    fn write(disk: &mut Disk, offset: u64, data: &[u8]) -> io::Result<()> {
        let mem = mem();
        mem.write_slice(data, GuestAddress(0)).unwrap();
        disk.write(
            offset,
            &[mem.get_slice(GuestAddress(0), data.len()).unwrap()],
        )
    }

    fn expected_base(offset: u64, len: usize) -> Vec<u8> {
        (offset..offset + len as u64).map(base_byte).collect()
    }

    /// Is `path` open in this process, and only for reading?
    fn open_read_only_here(path: &Path) -> Option<bool> {
        let target = path.canonicalize().unwrap();
        let mut found = None;
        for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
            if std::fs::read_link(entry.path()).ok().as_deref() != Some(target.as_path()) {
                continue;
            }
            let info = std::fs::read_to_string(format!(
                "/proc/self/fdinfo/{}",
                entry.file_name().to_string_lossy()
            ));
            let Ok(info) = info else { continue };
            let flags = info
                .lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .map(|f| i32::from_str_radix(f.trim(), 8).unwrap())
                .unwrap();
            let read_only = flags & libc::O_ACCMODE == libc::O_RDONLY;
            found = Some(found.unwrap_or(true) && read_only);
        }
        found
    }

    #[test]
    fn raw_reads_and_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        write_raw(&path, 64 << 10);
        let mut disk = Disk::open(&path, false).unwrap();
        assert_eq!(disk.capacity_sectors(), 128);
        assert_eq!(read(&mut disk, 4096, 1024), expected_base(4096, 1024));
        write(&mut disk, 512, &[0xab; 512]).unwrap();
        assert_eq!(read(&mut disk, 512, 512), vec![0xab; 512]);
        disk.flush().unwrap();
        drop(disk);
        assert_eq!(std::fs::read(&path).unwrap()[512..1024], [0xab; 512]);
        let id = Disk::open(&path, true).unwrap().id();
        assert!(id.starts_with(b"vmb-"), "{id:?}");
        assert_eq!(id, Disk::open(&path, true).unwrap().id(), "stable");
    }

    #[test]
    fn requests_beyond_the_end_and_writes_to_a_read_only_disk_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        // A partial last sector is not part of the disk.
        write_raw(&path, 4096 + 100);
        let before = sha256(&path);
        let mut disk = Disk::open(&path, true).unwrap();
        assert_eq!(disk.capacity_sectors(), 8);
        assert!(write(&mut disk, 0, &[1; 512]).is_err());
        let mem = mem();
        let slice = [mem.get_slice(GuestAddress(0), 512).unwrap()];
        assert!(disk.read(4096, &slice).is_err());
        assert!(disk.read(u64::MAX - 100, &slice).is_err());
        assert!(disk.read(3584, &slice).is_ok());
        drop(disk);
        assert_eq!(sha256(&path), before);
    }

    #[test]
    fn overlapping_read_buffers_get_the_last_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        write_raw(&path, 8192);
        let mut disk = Disk::open(&path, true).unwrap();
        let mem = mem();
        let a = mem.get_slice(GuestAddress(0x1000), 1024).unwrap();
        let b = mem.get_slice(GuestAddress(0x1200), 512).unwrap();
        disk.read(0, &[a, b]).unwrap();
        let mut got = vec![0u8; 1024];
        mem.read_slice(&mut got, GuestAddress(0x1000)).unwrap();
        // `b` (disk bytes 1024..1536) was filled last, over `a`'s second half.
        assert_eq!(got[..512], expected_base(0, 512));
        assert_eq!(got[512..], expected_base(1024, 512));
    }

    /// The copy-on-write case: a raw base, an overlay imago made over it.
    #[test]
    fn a_qcow2_overlay_takes_the_writes_and_the_base_stays_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.raw");
        let overlay = dir.path().join("overlay.qcow2");
        write_raw(&base, 1 << 20);
        create_qcow2(&overlay, 1 << 20, Some(("base.raw", "raw")));
        let base_sha = sha256(&base);

        let mut disk = Disk::open(&overlay, false).unwrap();
        assert_eq!(disk.chain(), &[overlay.clone(), base.clone()]);
        assert_eq!(
            open_read_only_here(&base),
            Some(true),
            "the base is O_RDONLY"
        );
        assert_eq!(open_read_only_here(&overlay), Some(false));
        // Never written: the base's bytes.
        assert_eq!(
            read(&mut disk, 300 << 10, 4096),
            expected_base(300 << 10, 4096)
        );
        // A write straddling two clusters; the rest of those clusters still
        // reads from the base (copied up by imago).
        let offset = (64 << 10) - 1024;
        write(&mut disk, offset, &[0x5a; 2048]).unwrap();
        assert_eq!(read(&mut disk, offset, 2048), vec![0x5a; 2048]);
        assert_eq!(
            read(&mut disk, offset - 512, 512),
            expected_base(offset - 512, 512)
        );
        assert_eq!(
            read(&mut disk, offset + 2048, 512),
            expected_base(offset + 2048, 512)
        );
        disk.flush().unwrap();
        assert_eq!(sha256(&base), base_sha, "after flush");
        drop(disk);
        assert_eq!(sha256(&base), base_sha, "after drop");

        // The writes are in the overlay, seen by a fresh open.
        let mut again = Disk::open(&overlay, true).unwrap();
        assert_eq!(read(&mut again, offset, 2048), vec![0x5a; 2048]);
        assert_eq!(read(&mut again, 0, 512), expected_base(0, 512));
    }

    #[test]
    fn a_qcow2_over_qcow2_chain_reads_through_every_layer() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.raw");
        let mid = dir.path().join("mid.qcow2");
        let top = dir.path().join("top.qcow2");
        write_raw(&base, 1 << 20);
        create_qcow2(&mid, 1 << 20, Some((base.to_str().unwrap(), "raw")));
        let mut disk = Disk::open(&mid, false).unwrap();
        write(&mut disk, 128 << 10, &[0x11; 4096]).unwrap();
        drop(disk);
        // No backing format: probed (qcow2).
        create_qcow2(&top, 1 << 20, Some(("mid.qcow2", "")));
        let (base_sha, mid_sha) = (sha256(&base), sha256(&mid));

        let mut disk = Disk::open(&top, false).unwrap();
        assert_eq!(disk.chain().len(), 3);
        assert_eq!(open_read_only_here(&mid), Some(true));
        assert_eq!(
            read(&mut disk, 128 << 10, 4096),
            vec![0x11; 4096],
            "from mid"
        );
        assert_eq!(
            read(&mut disk, 0, 4096),
            expected_base(0, 4096),
            "from base"
        );
        write(&mut disk, 128 << 10, &[0x22; 512]).unwrap();
        write(&mut disk, 0, &[0x33; 512]).unwrap();
        assert_eq!(read(&mut disk, 128 << 10, 1024)[..512], [0x22; 512]);
        assert_eq!(read(&mut disk, (128 << 10) + 512, 512), vec![0x11; 512]);
        assert_eq!(read(&mut disk, 0, 512), vec![0x33; 512]);
        disk.flush().unwrap();
        drop(disk);
        assert_eq!((sha256(&base), sha256(&mid)), (base_sha, mid_sha));
    }

    #[test]
    fn a_qemu_img_overlay_works_the_same() {
        if !qemu_img() {
            return println!("SKIPPED: a_qemu_img_overlay_works_the_same: no qemu-img");
        }
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.raw");
        let overlay = dir.path().join("overlay.qcow2");
        write_raw(&base, 1 << 20);
        qemu_img_create(&[
            "-q",
            "-f",
            "qcow2",
            "-b",
            base.to_str().unwrap(),
            "-F",
            "raw",
            overlay.to_str().unwrap(),
        ]);
        let base_sha = sha256(&base);
        let mut disk = Disk::open(&overlay, false).unwrap();
        assert_eq!(disk.capacity_sectors(), 2048);
        write(&mut disk, 4096, &[0x77; 8192]).unwrap();
        assert_eq!(read(&mut disk, 0, 4096), expected_base(0, 4096));
        assert_eq!(read(&mut disk, 4096, 8192), vec![0x77; 8192]);
        drop(disk);
        assert_eq!(sha256(&base), base_sha);
        // And qemu-img finds the overlay consistent after our writes.
        let check = Command::new("qemu-img")
            .args(["check", overlay.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }

    fn open_err(path: &Path, read_only: bool) -> String {
        Disk::open(path, read_only).unwrap_err().to_string()
    }

    #[test]
    fn bad_images_are_one_clear_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name);

        assert_eq!(
            open_err(&p("nope.raw"), false),
            format!("Disk image {} does not exist", p("nope.raw").display())
        );
        std::fs::write(p("empty"), b"").unwrap();
        assert_eq!(
            open_err(&p("empty"), false),
            format!("{} is not a disk image: it is empty", p("empty").display())
        );
        std::fs::write(p("tiny"), b"abc").unwrap();
        assert!(open_err(&p("tiny"), true).contains("3 bytes, less than one 512-byte sector"));
        assert!(open_err(dir.path(), true).ends_with("is not a disk image: it is a directory"));
        assert!(open_err(dir.path(), false).ends_with("is not a disk image: it is a directory"));
        std::fs::write(p("initrd"), [0x1f, 0x8b, 8, 0, 0, 0]).unwrap();
        assert!(open_err(&p("initrd"), true).ends_with("it looks like a gzip file (an initramfs?)"));
        std::fs::write(p("x.vmdk"), b"KDMV\x01\0\0\0").unwrap();
        assert!(open_err(&p("x.vmdk"), true).contains("is a VMDK image: only raw and qcow2"));

        // A qcow2 image cut short, and one with a corrupt header field.
        create_qcow2(&p("good.qcow2"), 1 << 30, None);
        let good = std::fs::read(p("good.qcow2")).unwrap();
        std::fs::write(p("cut.qcow2"), &good[..1000]).unwrap();
        let err = open_err(&p("cut.qcow2"), false);
        assert!(
            err.starts_with(&format!(
                "Disk image {} is a truncated qcow2 image: its",
                p("cut.qcow2").display()
            )),
            "{err}"
        );
        std::fs::write(p("cut-header.qcow2"), &good[..40]).unwrap();
        assert!(open_err(&p("cut-header.qcow2"), false).contains("ends inside the qcow2 header"));
        let mut corrupt = good.clone();
        corrupt[20..24].copy_from_slice(&99u32.to_be_bytes());
        std::fs::write(p("corrupt.qcow2"), &corrupt).unwrap();
        assert!(open_err(&p("corrupt.qcow2"), false).contains("corrupt header: cluster_bits 99"));
        let mut dirty = good.clone();
        dirty[79] |= 1;
        std::fs::write(p("dirty.qcow2"), &dirty).unwrap();
        assert!(open_err(&p("dirty.qcow2"), false).contains("the dirty bit"));

        // A missing backing file, named as resolved.
        create_qcow2(&p("orphan.qcow2"), 1 << 20, Some(("gone.raw", "raw")));
        assert_eq!(
            open_err(&p("orphan.qcow2"), false),
            format!(
                "Disk image {} needs backing file {}, which does not exist",
                p("orphan.qcow2").display(),
                p("gone.raw").display()
            )
        );
        create_qcow2(&p("vmdk-backed.qcow2"), 1 << 20, Some(("x.vmdk", "vmdk")));
        assert!(
            open_err(&p("vmdk-backed.qcow2"), false).contains("backing file in \"vmdk\" format")
        );
    }

    #[test]
    fn chains_that_loop_or_never_end_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name);
        // An image that is its own backing file: imago's permissive gate
        // would recurse until the stack overflows.
        create_qcow2(&p("self.qcow2"), 1 << 20, Some(("self.qcow2", "qcow2")));
        assert!(open_err(&p("self.qcow2"), false).contains("loops: it reaches"));
        write_raw(&p("base.raw"), 1 << 20);
        let mut below = "base.raw".to_string();
        for i in 0..MAX_CHAIN_DEPTH {
            let name = format!("layer{i}.qcow2");
            create_qcow2(
                &p(&name),
                1 << 20,
                Some((&below, if i == 0 { "raw" } else { "qcow2" })),
            );
            below = name;
        }
        let err = open_err(&p(&below), false);
        assert!(
            err.contains(&format!("deeper than {MAX_CHAIN_DEPTH}")),
            "{err}"
        );
        assert!(Disk::open(&p(&format!("layer{}.qcow2", MAX_CHAIN_DEPTH - 2)), false).is_ok());
    }

    #[test]
    fn a_writable_image_is_locked_against_a_second_writer() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.raw");
        let overlay = dir.path().join("overlay.qcow2");
        write_raw(&base, 1 << 20);
        create_qcow2(&overlay, 1 << 20, Some(("base.raw", "raw")));
        let _vm = Disk::open(&overlay, false).unwrap();
        assert!(open_err(&overlay, false).contains("is in use"));
        assert!(open_err(&overlay, true).contains("is in use"));
        // The base is shared: readers are welcome, a writer is not.
        let _reader = Disk::open(&base, true).unwrap();
        assert!(open_err(&base, false).contains("is in use"));
    }

    #[test]
    fn a_backing_file_declared_qcow2_must_be_one() {
        let dir = tempfile::tempdir().unwrap();
        write_raw(&dir.path().join("base.raw"), 1 << 20);
        let overlay = dir.path().join("overlay.qcow2");
        create_qcow2(&overlay, 1 << 20, Some(("base.raw", "qcow2")));
        assert!(open_err(&overlay, false).contains("is declared qcow2 but is not"));
        // A header the probe found qcow2 but which is not whole, as a backing file.
        let mut f = std::fs::File::create(dir.path().join("fake.qcow2")).unwrap();
        f.write_all(b"QFI\xfb\0\0\0\x03").unwrap();
        let top = dir.path().join("top.qcow2");
        create_qcow2(&top, 1 << 20, Some(("fake.qcow2", "")));
        let err = open_err(&top, false);
        assert!(
            err.contains("fake.qcow2 is a truncated qcow2 image"),
            "{err}"
        );
    }
}
