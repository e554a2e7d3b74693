//! The image behind a virtio-blk disk: raw, or qcow2 with its backing
//! chain, read and written through imago.
//!
//! # Opening a chain
//! The chain is opened by `vmbench-image` ([`Chain::open`]), the same rules
//! the pre-boot check of `vmbench boot --rootfs` applies: every file opened
//! explicitly and vetted (format sniffed unless declared, qcow2 header and
//! tables checked against the file, loops, depth and missing backing files
//! refused), then handed to imago with its backing image already opened and
//! a gate that denies imago any open of its own (imago's permissive gate
//! would open a backing file an image names with no bound on the chain's
//! depth: an image naming itself recurses until the stack overflows). Here:
//! - only the top image is ever opened for writing, and only when the disk
//!   is writable; every backing file is opened `O_RDONLY` and given to imago
//!   as read-only, so a write reaching a base image would be refused by the
//!   kernel, not just by imago's bookkeeping;
//! - the top image's format is stated by the caller (`--disk
//!   PATH,format=raw|qcow2`), never probed for a writable disk: its first
//!   bytes are the guest's, and a guest that wrote a qcow2 header there
//!   would make the next run open any host file as its backing file;
//! - each file is `flock(2)`ed, the writable one exclusively and the rest
//!   shared, so two VMMs cannot write one image and nobody can open a base
//!   for writing while a VM reads it;
//! - a raw top image, and the disk, must hold at least one sector.
//!
//! # I/O
//! Reads and writes go straight between the image and the guest's buffers
//! (imago turns vm-memory slices into an iovec for `preadv`/`pwritev`),
//! except a read into buffers that overlap each other, which goes through a
//! bounce buffer (two `&mut` views of one byte are not sound Rust). An
//! `imago` panic on a corrupt image fails that request and every later one
//! on this disk, not the VMM.

use std::io;
use std::path::{Path, PathBuf};

use imago::file::File as ImagoFile;
use imago::io_buffers::{IoVector, IoVectorMut};
use imago::FormatAccess;
use sha2::{Digest, Sha256};
use vm_memory::VolatileSlice;
use vmbench_image::{catch_panic, Chain, Format, OpenOptions};

pub const SECTOR_BYTES: u64 = 512;
/// Bytes of the serial number virtio-blk's GET_ID returns.
pub const ID_BYTES: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The image or its chain is refused, in `vmbench-image`'s words.
    #[error(transparent)]
    Image(vmbench_image::Error),
    #[error("Cannot open disk image {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a disk image: {why}")]
    NotAnImage { path: PathBuf, why: String },
    #[error(
        "Disk image {path} is in use: another VMM (or another --disk of this one) has it locked"
    )]
    Locked { path: PathBuf },
}

impl From<vmbench_image::Error> for Error {
    fn from(error: vmbench_image::Error) -> Error {
        match error {
            vmbench_image::Error::Locked { path } => Error::Locked { path },
            vmbench_image::Error::Io { path, source, .. } => Error::Open { path, source },
            other => Error::Image(other),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

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
    /// Opens the image at `path` (writable unless `read_only`) and its
    /// backing chain. `format` states the image's format; only a read-only
    /// image may leave it to be probed from its first bytes.
    pub fn open(path: &Path, read_only: bool, format: Option<Format>) -> Result<Disk> {
        let options = OpenOptions {
            writable: !read_only,
            lock: true,
            format,
        };
        let chain = Chain::open(path, options)?;
        let top = chain.top();
        // An empty one is refused by the chain's rules already.
        if top.format == Format::Raw && top.file_bytes < SECTOR_BYTES {
            return Err(Error::NotAnImage {
                path: path.to_path_buf(),
                why: format!(
                    "it is {} bytes, less than one {SECTOR_BYTES}-byte sector",
                    top.file_bytes
                ),
            });
        }
        let opened = chain.into_imago()?;
        let image = opened.access;
        let chain: Vec<PathBuf> = opened.chain.into_iter().map(|layer| layer.path).collect();
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
        match catch_panic(|| op(&self.image)) {
            Ok(result) => result,
            Err(_panicked) => {
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

#[cfg(test)]
pub(crate) mod tests {
    use std::process::Command;

    use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
    use vmbench_image::testing::overlay_over_raw;
    pub(crate) use vmbench_image::testing::{base_byte, create_qcow2, write_raw};

    use super::*;

    pub(crate) fn sha256(path: &Path) -> Vec<u8> {
        Sha256::digest(std::fs::read(path).unwrap()).to_vec()
    }

    /// Whether qemu-img runs here; without it, a test that needs it skips,
    /// except under CI, where scripts/setup.sh has installed qemu-utils.
    pub(crate) fn qemu_img() -> bool {
        let here = Command::new("qemu-img")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            here || !ci,
            "qemu-img is not installed, which scripts/setup.sh installs under CI"
        );
        here
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

    /// Opens `path` as the VMM does for `--disk`: a writable image with its
    /// format stated (by its name: `.qcow2` or else raw), a read-only one
    /// probed.
    pub(crate) fn open_stated(path: &Path, read_only: bool) -> Result<Disk> {
        let format = match path.extension().and_then(|e| e.to_str()) {
            _ if read_only => None,
            Some("qcow2") => Some(Format::Qcow2),
            _ => Some(Format::Raw),
        };
        Disk::open(path, read_only, format)
    }

    /// Opens an image this test had open a moment ago. Another test of
    /// this binary may be spawning `qemu-img` just then, and a child
    /// between fork and exec holds a copy of every descriptor, the flock'ed
    /// one included: the lock outlives our close by that instant. (The VMM
    /// itself never forks.) So a `Locked` is tried again for up to 2 s.
    fn reopen(path: &Path, read_only: bool) -> Disk {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            match open_stated(path, read_only) {
                Err(Error::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                opened => return opened.unwrap(),
            }
        }
    }

    #[test]
    fn raw_reads_and_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        write_raw(&path, 64 << 10);
        let mut disk = open_stated(&path, false).unwrap();
        assert_eq!(disk.capacity_sectors(), 128);
        assert_eq!(read(&mut disk, 4096, 1024), expected_base(4096, 1024));
        write(&mut disk, 512, &[0xab; 512]).unwrap();
        assert_eq!(read(&mut disk, 512, 512), vec![0xab; 512]);
        disk.flush().unwrap();
        drop(disk);
        assert_eq!(std::fs::read(&path).unwrap()[512..1024], [0xab; 512]);
        let id = reopen(&path, true).id();
        assert!(id.starts_with(b"vmb-"), "{id:?}");
        assert_eq!(id, reopen(&path, true).id(), "stable");
    }

    #[test]
    fn requests_beyond_the_end_and_writes_to_a_read_only_disk_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        // A partial last sector is not part of the disk.
        write_raw(&path, 4096 + 100);
        let before = sha256(&path);
        let mut disk = open_stated(&path, true).unwrap();
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
        let mut disk = open_stated(&path, true).unwrap();
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
        let (base, overlay) = overlay_over_raw(dir.path());
        let base_sha = sha256(&base);

        let mut disk = open_stated(&overlay, false).unwrap();
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
        let mut again = reopen(&overlay, true);
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
        let mut disk = open_stated(&mid, false).unwrap();
        write(&mut disk, 128 << 10, &[0x11; 4096]).unwrap();
        drop(disk);
        // No backing format: probed (qcow2).
        create_qcow2(&top, 1 << 20, Some(("mid.qcow2", "")));
        let (base_sha, mid_sha) = (sha256(&base), sha256(&mid));

        let mut disk = reopen(&top, false);
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
        let mut disk = open_stated(&overlay, false).unwrap();
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
        open_stated(path, read_only).unwrap_err().to_string()
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
    fn a_writable_image_is_locked_against_a_second_writer() {
        let dir = tempfile::tempdir().unwrap();
        let (base, overlay) = overlay_over_raw(dir.path());
        let _vm = open_stated(&overlay, false).unwrap();
        assert!(open_err(&overlay, false).contains("is in use"));
        assert!(open_err(&overlay, true).contains("is in use"));
        // The base is shared: readers are welcome, a writer is not.
        let _reader = open_stated(&base, true).unwrap();
        assert!(open_err(&base, false).contains("is in use"));
    }
}
