//! The files of a chain: opening one with an error that names what is
//! missing, its length, its first bytes, and its lock.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use crate::{Error, Result};

/// Opens `path` for reading, and for writing too if `writable`.
/// `backing_of` is the image that names it as its backing file, if it is
/// one: a missing file is then [`Error::BackingMissing`], naming both.
///
/// `O_NONBLOCK`: an image can name any path as its backing file, and opening
/// a FIFO for reading would otherwise wait for a writer forever; this way it
/// opens at once and the chain refuses it as not a file. The flag has no
/// effect on the regular files and block devices that are accepted.
pub fn open(path: &Path, writable: bool, backing_of: Option<&Path>) -> Result<File> {
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .write(writable)
        .custom_flags(libc::O_NONBLOCK)
        .open(path);
    opened.map_err(|source| match (source.kind(), backing_of) {
        // Only an open for writing fails on a directory.
        _ if source.raw_os_error() == Some(libc::EISDIR) => Error::Directory {
            path: path.to_path_buf(),
        },
        (io::ErrorKind::NotFound, None) => Error::NotFound {
            path: path.to_path_buf(),
        },
        (io::ErrorKind::NotFound, Some(image)) => Error::BackingMissing {
            image: image.to_path_buf(),
            path: path.to_path_buf(),
        },
        _ => Error::Io {
            what: "open",
            path: path.to_path_buf(),
            source,
        },
    })
}

/// The file's length. Seeking works for block devices too, whose metadata
/// says 0 bytes.
pub fn len_bytes(file: &File) -> io::Result<u64> {
    let mut file = file;
    file.seek(SeekFrom::End(0))
}

/// The file's first `len` bytes, or all of it if shorter.
pub fn read_prefix(file: &impl FileExt, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let got = read_at_most(file, &mut buf, 0)?;
    buf.truncate(got);
    Ok(buf)
}

/// Fills `buf` from `offset` as far as the file goes; how many bytes that was.
pub fn read_at_most(file: &impl FileExt, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// An exclusive lock for a file we write, a shared one for a file we only
/// read; held until the file is closed. A file locked the other way by
/// anyone is an `EWOULDBLOCK` error at once, not a wait.
pub fn lock(file: &File, exclusive: bool) -> io::Result<()> {
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
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_says_whose_backing_file_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone.raw");
        let top = dir.path().join("top.qcow2");
        assert!(matches!(open(&gone, false, None), Err(Error::NotFound { path }) if path == gone));
        assert!(matches!(
            open(&gone, false, Some(&top)),
            Err(Error::BackingMissing { image, path }) if image == top && path == gone
        ));
        assert!(matches!(
            open(dir.path(), true, None),
            Err(Error::Directory { .. })
        ));
    }

    #[test]
    fn prefixes_stop_at_the_end_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abcdef").unwrap();
        let file = open(&path, false, None).unwrap();
        assert_eq!(read_prefix(&file, 4).unwrap(), b"abcd");
        assert_eq!(read_prefix(&file, 100).unwrap(), b"abcdef");
        assert_eq!(len_bytes(&file).unwrap(), 6);
        let mut buf = [0u8; 8];
        assert_eq!(read_at_most(&file, &mut buf, 4).unwrap(), 2);
        assert_eq!(read_at_most(&file, &mut buf, 100).unwrap(), 0);
    }
}
