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
use crate::disk::{validate_image, DiskFormat, DiskImage};
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
    // A root disk, or the guest would find no root: the same check as
    // before booting.
    let base_disk = validate_image(&canonical(base)?)?;
    create_overlay_over(&base_disk, out, durability)
}

/// Creates the qcow2 overlay `out` over `base`, an image [`validate_image`]
/// passed (it is not checked again: a run validates its image once and
/// makes one overlay per VM), with the base's virtual size and its absolute
/// path as backing file. `out` appears only once complete.
pub fn create_overlay_over(
    base: &DiskImage,
    out: &Path,
    durability: Durability,
) -> Result<Overlay> {
    let base_abs = canonical(&base.path)?;
    let base_format = base.format;
    let virtual_size_bytes = base.virtual_size_bytes;
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

/// `path` made absolute, so the overlay works from any directory, and
/// canonical, so it names the file itself rather than a link that may be
/// repointed.
fn canonical(path: &Path) -> Result<PathBuf> {
    path.canonicalize().map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound {
            path: path.to_path_buf(),
        },
        _ => Error::Io {
            what: "resolve",
            path: path.to_path_buf(),
            source,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A raw file the checks take for ext4: zeros and the superblock magic.
    fn fake_ext4(path: &Path) {
        let mut bytes = vec![0u8; 64 << 10];
        bytes[1080..1082].copy_from_slice(&0xef53u16.to_le_bytes());
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn an_overlay_over_a_validated_image_does_not_check_it_again() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.ext4");
        fake_ext4(&base);
        let disk = validate_image(&base).unwrap();
        // Made unbootable after the check: only create_overlay looks again.
        std::fs::write(&base, vec![0u8; 64 << 10]).unwrap();
        let out = dir.path().join("vm.qcow2");
        let made = create_overlay_over(&disk, &out, Durability::Unsynced).unwrap();
        assert_eq!(
            made,
            Overlay {
                path: out.clone(),
                base: base.canonicalize().unwrap(),
                base_format: DiskFormat::Raw,
                virtual_size_bytes: 64 << 10,
            }
        );
        let err = create_overlay(&base, &dir.path().join("x.qcow2"), Durability::Unsynced)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not an ext4 image"), "{err}");
        fake_ext4(&base);
        let over = validate_image(&out).unwrap();
        assert_eq!(over.format, DiskFormat::Qcow2);
        assert_eq!(over.chain.len(), 2);
        assert_eq!(over.virtual_size_bytes, 64 << 10);
    }
}
