//! Guest images for vmbench: deterministic initramfs archives.
//!
//! The guest's root file system is an initramfs: a cpio "newc" archive, plain
//! or gzip-compressed, that the kernel unpacks into a tmpfs before running
//! `/init`. This crate builds such archives and checks them:
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

use std::io;
use std::path::PathBuf;

pub mod cpio;
pub mod initramfs;

pub use cpio::{read_newc, CpioEntry, Node};
pub use initramfs::{agent_initramfs, check_bootable, read_initramfs, Compression, Initramfs};

/// Everything that can go wrong building, writing, reading or checking an
/// initramfs. Reader errors name the byte offset of the problem; for gzip
/// input the offset is into the decompressed data of that gzip member.
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
    #[error("Cannot write initramfs {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;
