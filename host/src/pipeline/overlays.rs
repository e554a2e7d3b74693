//! Each VM's own qcow2 overlay of the root disk: made before any VM starts,
//! measured after the VM ends, removed unless kept.

use std::path::{Path, PathBuf};

use vmbench_rootfs::DiskImage;

use super::{Error, Result};
use crate::interrupt::Stop;
use crate::results::OverlayUse;

/// Each VM's overlay of the root disk, in its directory.
pub const OVERLAY_NAME: &str = "rootfs.qcow2";

/// One overlay per VM directory, made before any VM starts, so that a
/// failure (a full disk) stops the run with nothing booted; on failure, or
/// when `stop` is requested meanwhile, the ones made are removed.
pub fn create(base: &DiskImage, dirs: &[PathBuf], stop: &Stop) -> Result<Vec<OverlayUse>> {
    let mut made: Vec<OverlayUse> = Vec::new();
    let undo = |made: &[OverlayUse]| {
        for overlay in made {
            let _ = std::fs::remove_file(&overlay.path);
        }
    };
    for (id, dir) in dirs.iter().enumerate() {
        if let Some(signal) = stop.requested() {
            undo(&made);
            return Err(Error::Interrupted(signal));
        }
        match create_one(base, dir, id as u32) {
            Ok(overlay) => made.push(overlay),
            Err(e) => {
                undo(&made);
                return Err(e);
            }
        }
    }
    Ok(made)
}

/// One overlay, timed: the base was validated once for the run, so the
/// time is the overlay's own.
fn create_one(base: &DiskImage, dir: &Path, id: u32) -> Result<OverlayUse> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join(OVERLAY_NAME);
    let start = std::time::Instant::now();
    vmbench_rootfs::create_overlay_over(base, &path, vmbench_rootfs::Durability::Unsynced)
        .map_err(|source| Error::Overlay { id, source })?;
    Ok(OverlayUse {
        path: path.display().to_string(),
        create_ms: start.elapsed().as_secs_f64() * 1e3,
        disk_used_kib: None,
        kept: true,
    })
}

/// After the VM: how much the overlay took, then remove it unless kept.
pub fn settle(overlay: &mut OverlayUse, keep: bool) {
    use std::os::unix::fs::MetadataExt;
    overlay.disk_used_kib = std::fs::metadata(&overlay.path)
        .ok()
        .map(|m| m.blocks() * 512 / 1024);
    if !keep && std::fs::remove_file(&overlay.path).is_ok() {
        overlay.kept = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small raw ext4 base, made with mkfs.ext4 (e2fsprogs, which
    /// scripts/setup.sh installs).
    fn base(dir: &Path) -> DiskImage {
        let path = dir.join("base.ext4");
        std::fs::File::create(&path)
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
        let made = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&path)
            .status()
            .expect("mkfs.ext4 runs");
        assert!(made.success());
        vmbench_rootfs::validate_image(&path).unwrap()
    }

    #[test]
    fn a_stop_before_the_overlays_leaves_none() {
        let dir = tempfile::tempdir().unwrap();
        let base = base(dir.path());
        let dirs: Vec<PathBuf> = (0..3).map(|i| dir.path().join(format!("vm-{i}"))).collect();
        let stop = Stop::new().unwrap();
        let made = create(&base, &dirs, &stop).unwrap();
        assert_eq!(made.len(), 3);
        for overlay in &made {
            std::fs::remove_file(&overlay.path).unwrap();
        }
        stop.request(libc::SIGINT);
        match create(&base, &dirs, &stop) {
            Err(Error::Interrupted(signal)) => assert_eq!(signal, libc::SIGINT),
            other => panic!("not interrupted: {:?}", other.map(|m| m.len())),
        }
        for dir in &dirs {
            assert!(!dir.join(OVERLAY_NAME).exists(), "{}", dir.display());
        }
    }
}
