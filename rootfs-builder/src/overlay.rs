//! Per-VM qcow2 overlays: an empty qcow2 image whose backing file is a
//! base image, so a VM's writes land in its own small file and the base is
//! only ever read. One is made for every VM of every boot, so it must cost
//! next to nothing: imago writes a header, a refcount table and block, and
//! an L1 table (four clusters, 256 KiB of file, most of it never written).

use std::path::{Path, PathBuf};

use imago::file::File as ImagoFile;
use imago::qcow2::Qcow2;
use imago::{FormatCreateBuilder, StorageOpenOptions};

use crate::atomic::TempFile;
use crate::disk::{validate_image, DiskFormat};
use crate::{Error, Result};

/// A new overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    pub path: PathBuf,
    /// The backing file, absolute, as written into the overlay's header.
    pub base: PathBuf,
    pub base_format: DiskFormat,
    pub virtual_size_bytes: u64,
}

/// How much an overlay costs to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// The overlay's bytes are synced before it is renamed into place.
    Synced,
    /// No fsync: for overlays that live as long as one boot, where a crash
    /// loses the run anyway (the rename still makes it appear complete or
    /// not at all to every other process).
    Unsynced,
}

/// Creates the qcow2 overlay `out` over `base` (raw or qcow2, detected; it
/// must pass [`validate_image`]), with the base's virtual size and its
/// absolute path as backing file. `out` appears only once complete.
pub fn create_overlay(base: &Path, out: &Path, durability: Durability) -> Result<Overlay> {
    // Canonical, so the overlay works from any directory and names the
    // file itself rather than a link that may be repointed.
    let base_abs = base.canonicalize().map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound {
            path: base.to_path_buf(),
        },
        _ => Error::Io {
            what: "resolve",
            path: base.to_path_buf(),
            source,
        },
    })?;
    // A root disk, or the guest would find no root: the same check as
    // before booting.
    let base_disk = validate_image(&base_abs)?;
    let base_format = base_disk.format;
    let virtual_size_bytes = base_disk.virtual_size_bytes;
    let backing = base_abs.to_str().ok_or_else(|| Error::UnsupportedName {
        name: base_abs.display().to_string(),
    })?;

    let write_err = |source: std::io::Error| Error::write(out, source);
    let (file, temp) = TempFile::create_beside(out).map_err(write_err)?;
    let storage = ImagoFile::from_open_file(
        file.try_clone().map_err(write_err)?,
        StorageOpenOptions::new().filename(temp.path()).write(true),
    )
    .map_err(write_err)?;
    Qcow2::<ImagoFile>::create_builder(storage)
        .size(virtual_size_bytes)
        .backing(backing.to_string(), base_format.as_str().to_string())
        .create()
        .map_err(write_err)?;
    if durability == Durability::Synced {
        file.sync_all().map_err(write_err)?;
    }
    drop(file);
    temp.persist(out).map_err(write_err)?;
    Ok(Overlay {
        path: out.to_path_buf(),
        base: base_abs,
        base_format,
        virtual_size_bytes,
    })
}
