//! Small images for tests, here and in the crates that use this one
//! (feature `test-util`).

use std::path::{Path, PathBuf};

use imago::file::File as ImagoFile;
use imago::qcow2::Qcow2;
use imago::{FormatCreateBuilder, Storage, StorageCreateOptions};

/// A base image's byte at `offset`: a pattern with no period a sector shares.
pub fn base_byte(offset: u64) -> u8 {
    (offset.wrapping_mul(7) ^ (offset >> 9)) as u8
}

/// A raw image of `bytes` bytes of [`base_byte`].
pub fn write_raw(path: &Path, bytes: u64) {
    let data: Vec<u8> = (0..bytes).map(base_byte).collect();
    std::fs::write(path, data).unwrap();
}

/// A qcow2 image of `bytes` over `backing` (name as written, format), made by imago.
pub fn create_qcow2(path: &Path, bytes: u64, backing: Option<(&str, &str)>) {
    let file = ImagoFile::create_open(StorageCreateOptions::new().filename(path)).unwrap();
    let mut builder = Qcow2::<ImagoFile>::create_builder(file).size(bytes);
    if let Some((name, format)) = backing {
        builder = builder.backing(name.to_string(), format.to_string());
    }
    builder.create().unwrap();
}

/// The copy-on-write pair in `dir`: `base.raw` (1 MiB of [`base_byte`])
/// and `overlay.qcow2` over it, naming it relatively and as raw.
pub fn overlay_over_raw(dir: &Path) -> (PathBuf, PathBuf) {
    let base = dir.join("base.raw");
    let overlay = dir.join("overlay.qcow2");
    write_raw(&base, 1 << 20);
    create_qcow2(&overlay, 1 << 20, Some(("base.raw", "raw")));
    (base, overlay)
}
