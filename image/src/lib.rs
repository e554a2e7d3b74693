//! Disk images as vmbench boots them: a raw file, or a qcow2 image over a
//! backing chain of qcow2 images that ends in a raw one. One set of rules,
//! used by the pre-boot check of `vmbench boot --rootfs` (in
//! `vmbench-rootfs`) and by the VMM's virtio-blk device (in `vmbench-vmm`),
//! so that both refuse the same images.
//!
//! - [`mod@format`]: what a file's first bytes say it is. Raw has no signature,
//!   so a file is raw unless it is qcow2 or starts like something a user
//!   may hand over by mistake (another VM image format, a kernel, an
//!   initramfs, an archive).
//! - [`qcow2`]: the qcow2 header and the tables it points to, checked
//!   against the file before imago reads them ([`qcow2::ondisk`] decodes
//!   the bytes, [`qcow2::header`] checks them and gives the logical
//!   [`qcow2::Header`], [`qcow2::tables`] checks the tables it points to).
//! - [`chain`]: the backing chain, every file opened here explicitly
//!   ([`Chain::open`]), then handed to imago ([`Chain::into_imago`]).
//! - [`mod@file`]: opening a file with an error that says whether it is the
//!   image or a backing file that is missing, and reading its first bytes.
//!
//! # Why the chain is opened here and not by imago
//! imago 0.2.6 would open a backing file an image names itself, with no
//! bound on the chain's depth: an image naming itself as its backing file
//! recurses until the stack overflows. It also reads past the end of a file
//! as zeros (a truncated qcow2 would quietly read as unallocated, the
//! backing file's data showing through), ignores `crypt_method` (it would
//! hand the guest ciphertext), and panics on some corrupt images. So every
//! file is opened, sniffed and vetted here, imago is handed each one with
//! its backing image already opened and a gate that denies it any open of
//! its own, and every call into imago is guarded against its panics
//! ([`catch_panic`]).

use std::io;
use std::path::PathBuf;

mod access;
pub mod chain;
pub mod file;
pub mod format;
pub mod qcow2;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;

pub use access::{catch_panic, OpenImage, Panicked};
pub use chain::{Chain, Layer, OpenOptions};
pub use format::{sniff, sniff_file, Format, Sniffed, SNIFF_BYTES};
pub use qcow2::Problem;

/// Images in a chain, the top one included.
pub const MAX_CHAIN_DEPTH: usize = 16;

/// Why an image cannot be used. Callers with their own wording for a case
/// (the pre-boot check and the VMM word some differently) match on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Disk image {path} does not exist")]
    NotFound { path: PathBuf },
    #[error("Disk image {image} needs backing file {path}, which does not exist")]
    BackingMissing { image: PathBuf, path: PathBuf },
    #[error("Cannot {what} disk image {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a disk image: it is a directory")]
    Directory { path: PathBuf },
    #[error("{path} is not a disk image: it is neither a regular file nor a block device")]
    NotAFile { path: PathBuf },
    #[error("{path} is not a disk image: it is empty")]
    Empty { path: PathBuf },
    #[error("Disk image {path} is a {what}: only raw and qcow2 images are supported")]
    OtherImage { path: PathBuf, what: &'static str },
    #[error("{path} is not a disk image: it looks like a {what}")]
    NotAnImage { path: PathBuf, what: &'static str },
    #[error("Disk image {path} is a {problem}")]
    Qcow2 { path: PathBuf, problem: Problem },
    #[error("Disk image {image} has a backing file in {format:?} format: only raw and qcow2 are supported")]
    BackingFormat { image: PathBuf, format: String },
    #[error("Disk image {path} is opened for writing, so its format must be stated (raw or qcow2): probing the bytes a guest writes would let it forge a qcow2 header naming any host file as backing file")]
    FormatNotStated { path: PathBuf },
    #[error("Disk image {path} is stated to be qcow2 but is not a qcow2 image")]
    NotQcow2 { path: PathBuf },
    #[error("Backing file {path} of {image} is declared qcow2 but is not a qcow2 image")]
    BackingNotQcow2 { image: PathBuf, path: PathBuf },
    #[error("The backing chain of {top} loops: it reaches {path} twice")]
    Loop { top: PathBuf, path: PathBuf },
    #[error("The backing chain of {top} is deeper than {MAX_CHAIN_DEPTH} images")]
    TooDeep { top: PathBuf },
    #[error("Disk image {path} is in use: another process has it locked")]
    Locked { path: PathBuf },
    #[error("imago cannot {what} disk image {path}")]
    Imago {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("imago failed on disk image {path} (a corrupt image)")]
    ImagoPanicked { path: PathBuf },
}

pub type Result<T> = std::result::Result<T, Error>;
