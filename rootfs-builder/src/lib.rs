//! Guest images for vmbench: initramfs archives, ext4 root images with the
//! guest agent in them, and the per-VM qcow2 overlays VMs boot from.
//!
//! # Initramfs
//! The simplest guest root is an initramfs: a cpio "newc" archive, plain
//! or gzip-compressed, that the kernel unpacks into a tmpfs before running
//! `/init`.
//!
//! - [`cpio`] encodes and decodes the newc format itself, strictly, because
//!   the host reads user-supplied archives with it and must refuse a corrupt
//!   one before booting instead of panicking or booting a half-unpacked root.
//! - [`initramfs`] is the file tree on top: the [`Initramfs`] builder (sorted
//!   by path, parents first, so the same inputs always give the same bytes and
//!   an image can be cached by the hash of what went into it), the standard
//!   vmbench layout ([`agent_initramfs`]), atomic writing, and reading back an
//!   image the way the kernel does ([`read_initramfs`], [`check_bootable`]).
//!
//! ```
//! use vmbench_rootfs::{read_initramfs, check_bootable, Initramfs};
//!
//! let mut image = Initramfs::new();
//! image.add_file("/init", 0o755, b"#!/bin/sh\n".to_vec())?;
//! image.add_char_dev("/dev/console", 0o600, 5, 1)?;
//! let entries = read_initramfs(&image.to_cpio())?;
//! check_bootable(&entries)?;
//! # Ok::<(), vmbench_rootfs::Error>(())
//! ```
//!
//! # Root disk images
//! A root file system on a disk: raw ext4 images, made without root and
//! without mounting anything by e2fsprogs ([`e2fs`]: `mkfs.ext4 -d`, then
//! `debugfs -w` to add files), never touching their sources:
//!
//! - [`build_plain_image`] (`vmbench rootfs ext4`): a directory tree, the
//!   agent as `/sbin/init` unless the tree has one;
//! - [`build_systemd_image`] (`vmbench rootfs from-raw`, "spin from raw"): a
//!   systemd distribution's ext4 image (copied) or tree, the agent installed
//!   as the systemd unit [`AGENT_UNIT`];
//! - [`build_debian_image`] (`vmbench rootfs debian`): a minimal Debian from
//!   debootstrap ([`debian`]), then as from-raw.
//!
//! Each image is named by the hash of its inputs ([`provenance`]), lands in
//! the image cache unless given a path, is reused when already built ("up to
//! date"), and has a sidecar `<image>.json` ([`ImageInfo`], read back with
//! [`read_sidecar`]) saying how it was made; the same provenance is inside
//! the image as `/etc/vmbench/image.json`. Every output is written to a
//! temporary file beside it and renamed into place when complete.
//!
//! # Booting them
//! - [`validate_image`] ([`disk`]): checks a raw ext4 image, or a qcow2 image
//!   and its backing chain (every file opened read-only, by the rules of
//!   `vmbench-image`), before a VM boots from it;
//! - [`create_overlay_over`] ([`overlay`]): a qcow2 overlay over an image
//!   that passed [`validate_image`], one per VM and boot, made by imago in
//!   well under a millisecond of CPU ([`create_overlay`] validates first).

use std::io;
use std::path::{Path, PathBuf};

pub mod agent;
mod atomic;
pub mod cpio;
pub mod debian;
pub mod disk;
pub mod e2fs;
pub mod image;
pub mod initramfs;
mod lookup;
pub mod overlay;
pub mod provenance;
pub mod systemd;
pub mod tree;

pub use agent::{check_agent, Agent};
pub use cpio::{read_newc, CpioEntry, Node};
pub use debian::{build_debian_image, default_mirror, Debian};
pub use disk::{
    check_ext4, open_read_only, validate_image, ChainLayer, DiskFormat, DiskImage, OpenImage,
};
pub use image::{build_plain_image, build_systemd_image, BuildOptions, Built, Output, RawSource};
pub use initramfs::{agent_initramfs, check_bootable, read_initramfs, Compression, Initramfs};
pub use overlay::{create_overlay, create_overlay_over, Durability, Overlay};
pub use provenance::{read_sidecar, sidecar_path, ImageInfo, ImageKind, Provenance, Recipe};
pub use systemd::{
    AGENT_PATH, AGENT_UNIT, AGENT_UNIT_PATH, AGENT_UNIT_WANTS_PATH, IMAGE_JSON_PATH,
};

/// Everything that can go wrong building, writing, reading or checking a
/// guest image. Initramfs reader errors name the byte offset of the problem;
/// for gzip input the offset is into the decompressed data of that gzip
/// member.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("No cpio archive found: the input is empty or only zero bytes")]
    Empty,
    #[error("Not a cpio newc archive or gzip: starts with {head} (offset {offset})")]
    NotAnArchive { offset: usize, head: String },
    #[error("Initramfs data at offset {offset} is {format}-compressed; only gzip is supported")]
    UnsupportedCompression { offset: usize, format: &'static str },
    #[error("Corrupt or truncated gzip data at offset {offset}")]
    Gzip {
        offset: usize,
        #[source]
        source: io::Error,
    },
    #[error("Bad cpio magic at offset {offset}: expected \"070701\" (newc), found \"{found}\"")]
    BadMagic { offset: usize, found: String },
    #[error("Cpio archive at offset {offset} does not start on a 4-byte boundary")]
    MisalignedArchive { offset: usize },
    #[error("Cpio header field {field} at offset {offset} is not 8 hex digits: \"{value}\"")]
    BadHexField {
        offset: usize,
        field: &'static str,
        value: String,
    },
    #[error("Cpio header at offset {offset} is truncated: {available_bytes} of 110 bytes present")]
    TruncatedHeader {
        offset: usize,
        available_bytes: usize,
    },
    #[error(
        "Cpio entry name at offset {offset} is truncated: {available_bytes} of {name_size_bytes} bytes present"
    )]
    TruncatedName {
        offset: usize,
        name_size_bytes: u32,
        available_bytes: usize,
    },
    #[error("Cpio entry name at offset {offset} is not NUL-terminated")]
    NameNotTerminated { offset: usize },
    #[error("Cpio entry name at offset {offset} {problem}")]
    BadName {
        offset: usize,
        problem: &'static str,
    },
    #[error(
        "Data of cpio entry {name:?} at offset {offset} is truncated: {available_bytes} of {size_bytes} bytes present"
    )]
    TruncatedData {
        offset: usize,
        name: String,
        size_bytes: u32,
        available_bytes: usize,
    },
    #[error("Cpio archive ends at offset {offset} without a TRAILER!!! entry")]
    MissingTrailer { offset: usize },

    #[error("No /init in the initramfs: the kernel would have nothing to run")]
    NoInit,
    #[error("The /init symlink does not lead to a file in the initramfs (dangling or looping)")]
    InitUnresolved,
    #[error("The /init entry is not a regular file (mode {mode:06o})")]
    InitNotFile { mode: u32 },
    #[error("The /init file is not executable (mode {mode:04o})")]
    InitNotExecutable { mode: u32 },

    #[error("Invalid initramfs path {path:?}: {problem}")]
    InvalidPath { path: String, problem: &'static str },
    #[error("Invalid target {target:?} for symlink {path:?}: {problem}")]
    InvalidSymlinkTarget {
        path: String,
        target: String,
        problem: &'static str,
    },
    #[error("Cannot add {path:?}: {parent:?} is already in the initramfs and is not a directory")]
    ParentNotDir { path: String, parent: String },
    #[error("Cannot replace directory {path:?} with a non-directory: it has entries below it")]
    DirNotEmpty { path: String },
    #[error("File {path:?} is {size_bytes} bytes; a cpio newc entry holds at most 4 GiB - 1")]
    FileTooLarge { path: String, size_bytes: usize },
    #[error("Cannot read {path}")]
    ReadHostFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("Cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("Cannot {what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("No space left on the device for {path} (ENOSPC); the partial output was removed")]
    NoSpace { path: PathBuf },
    #[error("Cannot read {path} in the tree")]
    ReadTree {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a directory; a tree to build an image from must be one")]
    TreeNotADirectory { path: PathBuf },
    #[error("Symlink {path} has a target that is not UTF-8")]
    NonUtf8Symlink { path: PathBuf },
    #[error("Too many levels of symlinks looking up {path} in {root}")]
    SymlinkLoop { root: String, path: String },
    #[error("{path} in {root} is not a directory, but something needs to go below it")]
    NotADirectory { root: String, path: String },
    #[error("{path} in image {image} is a directory, where vmbench installs a file")]
    NotAFile { image: PathBuf, path: String },
    #[error("{path} is not in image {image}, or is not a regular file")]
    NotInImage { image: PathBuf, path: String },
    #[error("Name {name:?} cannot be passed to debugfs (it contains a quote, a newline or a NUL)")]
    UnsupportedName { name: String },
    #[error("`{tool}` is not installed; install it with `apt-get install {package}`")]
    ToolMissing {
        tool: &'static str,
        package: &'static str,
    },
    #[error("{tool} failed on {path}: {detail}")]
    ToolFailed {
        tool: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("Image {path} is too small at {size_mib} MiB for what goes into it ({detail}); give a larger --size-mib, or leave it out for a default size")]
    ImageTooSmall {
        path: PathBuf,
        size_mib: u64,
        detail: String,
    },
    #[error("Image size {size_mib} MiB is too large")]
    ImageTooLarge { size_mib: u64 },
    #[error("{path} does not exist")]
    NotFound { path: PathBuf },
    #[error("{path} is not an ext4 image ({detail})")]
    NotExt4 { path: PathBuf, detail: String },
    #[error("{path} was not cleanly unmounted (its journal needs recovery); run `e2fsck -fy` on a copy first")]
    NeedsRecovery { path: PathBuf },
    #[error("{path} has no systemd (neither /lib/systemd/systemd nor /usr/lib/systemd/systemd, following its symlinks): from-raw needs a distribution that boots with systemd; build a plain tree with `vmbench rootfs ext4`")]
    NoSystemd { path: PathBuf },
    #[error("{path} is not a disk image: {detail}")]
    NotADiskImage { path: PathBuf, detail: String },
    #[error("Disk image {path} is corrupt: {detail}")]
    CorruptImage { path: PathBuf, detail: String },
    #[error("Disk image {image} needs its backing file {path}, which does not exist")]
    BackingMissing { image: PathBuf, path: PathBuf },
    #[error("The backing chain of {top} loops: it reaches {path} twice")]
    BackingLoop { top: PathBuf, path: PathBuf },
    #[error(
        "The backing chain of {top} is deeper than {} images",
        disk::MAX_CHAIN_DEPTH
    )]
    ChainTooDeep { top: PathBuf },
    #[error("Sidecar {path} of image {image} cannot be read: {detail}")]
    Sidecar {
        image: PathBuf,
        path: PathBuf,
        detail: String,
    },
    #[error("Guest agent {path} cannot run in a guest: {problem}")]
    BadAgent { path: PathBuf, problem: String },
    #[error("Debian suite {suite:?} is not a suite name (letters, digits, '-', '.', '_')")]
    BadSuite { suite: String },
    #[error("This needs root: {what}; run it with sudo")]
    NeedsRoot { what: &'static str },
    #[error("debootstrap failed ({status}): {detail}; its log is {log}")]
    Debootstrap {
        status: String,
        detail: String,
        log: PathBuf,
    },
}

impl Error {
    /// A failed write to `path`: a full disk says so.
    pub(crate) fn write(path: &Path, source: io::Error) -> Error {
        if source.kind() == io::ErrorKind::StorageFull {
            Error::NoSpace {
                path: path.to_path_buf(),
            }
        } else {
            Error::Write {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
