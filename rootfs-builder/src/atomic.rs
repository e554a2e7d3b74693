//! Writing outputs atomically: every image, overlay and sidecar is written to
//! a temporary file in its final directory and renamed into place only once
//! it is complete, so a reader (or a cache lookup) sees either the old file
//! or the whole new one, never a partial one. The temporary file is removed
//! on every error path, a full disk included.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A temporary file beside an output, removed when dropped unless persisted,
/// so any failure between creating and renaming it leaves nothing behind.
#[derive(Debug)]
pub(crate) struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl TempFile {
    /// Creates `.<name>.<pid>.<n>.tmp` in `out`'s directory; the same
    /// directory, so the final rename cannot cross file systems.
    pub(crate) fn create_beside(out: &Path) -> io::Result<(File, TempFile)> {
        let file_name = out.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the output path has no file name",
            )
        })?;
        let dir = parent_dir(out);
        let mut last_error = None;
        for attempt in 0..100 {
            let mut name = OsString::from(".");
            name.push(file_name);
            name.push(format!(".{}.{attempt}.tmp", std::process::id()));
            let path = dir.join(name);
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => return Ok((file, TempFile { path, keep: false })),
                // Another thread of this process is writing the same output.
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                    last_error = Some(error)
                }
                Err(error) => return Err(error),
            }
        }
        Err(last_error.expect("the loop ran"))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the file onto `out`. The caller has synced its data: the
    /// name must not reach the disk before the bytes do, or a crash could
    /// leave a complete-looking but empty file. The rename itself need not
    /// be durable: losing it only means building the output again.
    pub(crate) fn persist(mut self, out: &Path) -> io::Result<()> {
        fs::rename(&self.path, out)?;
        self.keep = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// The directory `out` lands in ("." for a bare file name).
pub(crate) fn parent_dir(out: &Path) -> &Path {
    match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Writes `bytes` to `out` atomically and durably.
pub(crate) fn write_atomically(out: &Path, bytes: &[u8]) -> io::Result<()> {
    let (mut file, temp) = TempFile::create_beside(out)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    temp.persist(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_dropped_temp_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("image.ext4");
        let (mut file, temp) = TempFile::create_beside(&out).unwrap();
        file.write_all(b"partial").unwrap();
        assert!(temp.path().starts_with(dir.path()));
        assert_eq!(names(dir.path()).len(), 1);
        drop(temp);
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn a_persisted_temp_file_replaces_the_output() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("image.ext4");
        fs::write(&out, b"old").unwrap();
        write_atomically(&out, b"new").unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"new");
        assert_eq!(names(dir.path()), ["image.ext4"]);
    }
}
