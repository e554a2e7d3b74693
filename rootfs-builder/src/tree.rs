//! A directory tree on the host as the input of an image: its identity (a
//! hash of everything `mkfs.ext4 -d` copies that decides what the guest
//! sees: names, types, modes, owners, link targets, device numbers, hard
//! links and file contents), the space it needs, and lookups in it.
//!
//! Timestamps are not part of the identity: the same files copied at
//! another time are the same guest root (and the image gets fixed times,
//! see [`crate::e2fs`]). Extended attributes are not read
//! either (`mkfs.ext4 -d` copies them, but vmbench's trees carry none).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::lookup::{NodeKind, RootView};
use crate::provenance::hex;
use crate::{Error, Result};

/// ext4's block size in vmbench images.
pub(crate) const BLOCK_BYTES: u64 = 4096;
/// Targets shorter than this live in the inode ("fast" symlinks).
const FAST_SYMLINK_MAX_BYTES: u64 = 59;

/// What a tree is and how much room it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeSummary {
    /// SHA-256 of the walk, in hex.
    pub sha256: String,
    /// Entries below the root (the root itself not counted).
    pub entries: u64,
    /// Bytes of ext4 blocks the entries need (files, directories and long
    /// symlink targets, each rounded up to 4 KiB; hard links counted once).
    pub data_bytes: u64,
}

/// Walks `root` in a fixed order (depth first, names sorted bytewise) and
/// sums it up. Symlinks are recorded, never followed.
pub fn scan_tree(root: &Path) -> Result<TreeSummary> {
    let meta = fs::metadata(root).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => Error::NotFound {
            path: root.to_path_buf(),
        },
        _ => Error::ReadTree {
            path: root.to_path_buf(),
            source,
        },
    })?;
    if !meta.is_dir() {
        return Err(Error::TreeNotADirectory {
            path: root.to_path_buf(),
        });
    }
    let mut walk = Walk {
        hasher: Sha256::new(),
        entries: 0,
        data_bytes: dir_bytes(root)?,
        hard_links: HashMap::new(),
        buffer: vec![0; 1 << 20],
    };
    walk.dir(root, b"")?;
    Ok(TreeSummary {
        sha256: hex(&walk.hasher.finalize()),
        entries: walk.entries,
        data_bytes: walk.data_bytes,
    })
}

struct Walk {
    hasher: Sha256,
    entries: u64,
    data_bytes: u64,
    /// (device, inode) of files with several links -> the first path seen.
    hard_links: HashMap<(u64, u64), Vec<u8>>,
    buffer: Vec<u8>,
}

impl Walk {
    fn dir(&mut self, dir: &Path, rel: &[u8]) -> Result<()> {
        let read_err = |source| Error::ReadTree {
            path: dir.to_path_buf(),
            source,
        };
        let mut names: Vec<_> = fs::read_dir(dir)
            .map_err(read_err)?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .map_err(read_err)?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let path = dir.join(&name);
            let mut child_rel = rel.to_vec();
            child_rel.push(b'/');
            child_rel.extend_from_slice(name.as_bytes());
            self.entry(&path, &child_rel)?;
        }
        Ok(())
    }

    fn entry(&mut self, path: &Path, rel: &[u8]) -> Result<()> {
        let read_err = |source| Error::ReadTree {
            path: path.to_path_buf(),
            source,
        };
        let meta = fs::symlink_metadata(path).map_err(read_err)?;
        let kind = meta.file_type();
        self.entries += 1;
        let tag: u8 = if kind.is_dir() {
            b'd'
        } else if kind.is_symlink() {
            b'l'
        } else if kind.is_file() {
            b'f'
        } else if kind.is_char_device() {
            b'c'
        } else if kind.is_block_device() {
            b'b'
        } else if kind.is_fifo() {
            b'p'
        } else {
            b's'
        };
        self.field(&[tag]);
        self.field(rel);
        self.field(&(meta.mode() & 0o7777).to_le_bytes());
        self.field(&meta.uid().to_le_bytes());
        self.field(&meta.gid().to_le_bytes());
        match tag {
            b'd' => {
                self.data_bytes += dir_bytes(path)?;
                self.dir(path, rel)?;
            }
            b'l' => {
                let target = fs::read_link(path).map_err(read_err)?;
                let target = target.as_os_str().as_bytes();
                if target.len() as u64 > FAST_SYMLINK_MAX_BYTES {
                    self.data_bytes += BLOCK_BYTES;
                }
                self.field(target);
            }
            b'f' => {
                if meta.nlink() > 1 {
                    let key = (meta.dev(), meta.ino());
                    if let Some(first) = self.hard_links.get(&key) {
                        let first = first.clone();
                        self.field(b"hard link to");
                        self.field(&first);
                        return Ok(());
                    }
                    self.hard_links.insert(key, rel.to_vec());
                }
                self.data_bytes += meta.len().div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
                self.field(&meta.len().to_le_bytes());
                self.contents(path, meta.len())?;
            }
            b'c' | b'b' => self.field(&meta.rdev().to_le_bytes()),
            _ => {}
        }
        Ok(())
    }

    /// A length-prefixed field, so that no two different walks hash alike.
    fn field(&mut self, bytes: &[u8]) {
        self.hasher.update((bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
    }

    fn contents(&mut self, path: &Path, len: u64) -> Result<()> {
        let read_err = |source| Error::ReadTree {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(read_err)?;
        let mut done = 0u64;
        loop {
            let n = file.read(&mut self.buffer).map_err(read_err)?;
            if n == 0 {
                break;
            }
            done += n as u64;
            self.hasher.update(&self.buffer[..n]);
        }
        if done != len {
            return Err(read_err(io::Error::other(format!(
                "it changed while being read ({len} bytes, then {done})"
            ))));
        }
        Ok(())
    }
}

/// Blocks an ext4 directory with these entries needs (8 bytes of header
/// and the name padded to 4 bytes each, "." and ".." included).
fn dir_bytes(dir: &Path) -> Result<u64> {
    let entries = fs::read_dir(dir).map_err(|source| Error::ReadTree {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut bytes = 12 + 12;
    for entry in entries.flatten() {
        bytes += 8 + (entry.file_name().len() as u64).div_ceil(4) * 4;
    }
    Ok(bytes.div_ceil(BLOCK_BYTES) * BLOCK_BYTES)
}

/// A directory tree on the host seen as a guest root.
pub(crate) struct HostTree<'a> {
    pub(crate) root: &'a Path,
}

impl HostTree<'_> {
    fn host_path(&self, real: &[String]) -> PathBuf {
        // `real` has no symlinks in it, so this stays inside the root.
        real.iter().fold(self.root.to_path_buf(), |p, c| p.join(c))
    }
}

impl RootView for HostTree<'_> {
    fn lstat(&self, real: &[String]) -> Result<Option<NodeKind>> {
        let path = self.host_path(real);
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(Error::ReadTree { path, source }),
        };
        let kind = meta.file_type();
        Ok(Some(if kind.is_dir() {
            NodeKind::Dir
        } else if kind.is_file() {
            NodeKind::File {
                executable: meta.mode() & 0o111 != 0,
            }
        } else if kind.is_symlink() {
            let target = fs::read_link(&path).map_err(|source| Error::ReadTree {
                path: path.clone(),
                source,
            })?;
            let target = target
                .to_str()
                .ok_or_else(|| Error::NonUtf8Symlink { path: path.clone() })?;
            NodeKind::Symlink {
                target: target.to_string(),
            }
        } else {
            NodeKind::Other
        }))
    }

    fn describe(&self) -> String {
        format!("tree {}", self.root.display())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{symlink, PermissionsExt};

    use super::*;
    use crate::lookup::{lookup, Lookup};

    fn sample(root: &Path) {
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        fs::write(root.join("etc/hostname"), b"guest\n").unwrap();
        fs::write(root.join("usr/bin/tool"), vec![7u8; 10_000]).unwrap();
        symlink("usr/bin", root.join("bin")).unwrap();
    }

    #[test]
    fn the_same_tree_hashes_alike_wherever_and_whenever_it_is() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        sample(a.path());
        std::thread::sleep(std::time::Duration::from_millis(20));
        sample(b.path());
        let (sa, sb) = (scan_tree(a.path()).unwrap(), scan_tree(b.path()).unwrap());
        assert_eq!(sa, sb);
        assert_eq!(sa.entries, 6);
        // Directories: root, etc, usr, usr/bin; files: 1 + 3 blocks.
        assert_eq!(sa.data_bytes, 4 * BLOCK_BYTES + 4 * BLOCK_BYTES);
    }

    #[test]
    fn contents_modes_and_link_targets_change_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        sample(dir.path());
        let before = scan_tree(dir.path()).unwrap().sha256;
        type Change = Box<dyn Fn(&Path)>;
        let changes: Vec<Change> = vec![
            Box::new(|r| fs::write(r.join("etc/hostname"), b"other\n").unwrap()),
            Box::new(|r| {
                fs::set_permissions(r.join("etc/hostname"), fs::Permissions::from_mode(0o600))
                    .unwrap()
            }),
            Box::new(|r| {
                fs::remove_file(r.join("bin")).unwrap();
                symlink("/usr/bin", r.join("bin")).unwrap();
            }),
            Box::new(|r| fs::rename(r.join("etc/hostname"), r.join("etc/hostnam")).unwrap()),
        ];
        for change in changes {
            let dir = tempfile::tempdir().unwrap();
            sample(dir.path());
            change(dir.path());
            assert_ne!(scan_tree(dir.path()).unwrap().sha256, before);
        }
    }

    #[test]
    fn a_file_is_not_a_tree() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        let err = scan_tree(&file).unwrap_err();
        assert!(matches!(err, Error::TreeNotADirectory { .. }), "{err}");
        let err = scan_tree(&dir.path().join("missing")).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn absolute_links_resolve_inside_the_tree_not_on_the_host() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("usr/sbin")).unwrap();
        // On the host /usr/sbin exists and may well hold an `init`.
        symlink("/usr/sbin", dir.path().join("sbin")).unwrap();
        let view = HostTree { root: dir.path() };
        assert_eq!(
            lookup(&view, "/sbin/init", false).unwrap(),
            Lookup::Missing {
                dir: vec!["usr".into(), "sbin".into()],
                rest: vec!["init".into()]
            }
        );
    }
}
