//! The initramfs as a file tree: building one, writing it, and reading one
//! back the way the kernel unpacks it.
//!
//! The kernel takes a stream of cpio newc archives, each plain or compressed,
//! with NUL padding between them; it unpacks them in order into its rootfs
//! and runs `/init`. If `/init` is missing or not executable it falls back to
//! mounting a root device that a vmbench guest does not have, so the boot
//! ends in a panic far from the cause. [`read_initramfs`] and
//! [`check_bootable`] let the host refuse such an image before booting.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

use flate2::bufread::GzDecoder;
use flate2::GzBuilder;

use crate::atomic::write_atomically;
use crate::cpio::{
    self, CpioEntry, Node, PATH_MAX_BYTES, PERMISSION_BITS, S_IFLNK, S_IFMT, S_IFREG, TRAILER_NAME,
};
use crate::{Error, Result};

/// How [`Initramfs::write`] stores the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
}

/// Fixed so that the same image always compresses to the same bytes; zlib's
/// default trades size for speed well, and the kernel inflates any level.
const GZIP_LEVEL: u32 = 6;
/// "Unknown" in the gzip header; set rather than left to flate2's default so
/// the bytes do not depend on it.
const GZIP_OS_UNKNOWN: u8 = 255;
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
/// Other compressions the kernel may unpack, recognised only to say so.
const OTHER_COMPRESSIONS: [(&[u8], &str); 6] = [
    (&[0x28, 0xb5, 0x2f, 0xfd], "zstd"),
    (&[0xfd, b'7', b'z', b'X', b'Z', 0], "xz"),
    (b"BZh", "bzip2"),
    (&[0x5d, 0, 0], "lzma"),
    (&[0x89, b'L', b'Z', b'O'], "lzo"),
    (&[0x02, 0x21, 0x4c, 0x18], "lz4"),
];
/// Mode of the parent directories that [`Initramfs`] creates on its own.
const PARENT_DIR_MODE: u32 = 0o755;
/// Linux's limit on symlinks followed in one path lookup.
const MAX_SYMLINKS_FOLLOWED: usize = 40;

/// An initramfs under construction, keyed by path.
///
/// Paths may be given as `/dev/console` or `dev/console`; they are stored
/// relative, as the kernel's own `gen_init_cpio` writes them. Missing parent
/// directories are created with mode 0o755, and adding a path again replaces
/// it. The archive lists entries sorted by path, which puts every directory
/// before its contents and makes the bytes independent of insertion order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Initramfs {
    nodes: BTreeMap<String, Node>,
}

impl Initramfs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `node` at `path`. Modes keep only their permission bits (0o7777).
    pub fn add(&mut self, path: &str, node: Node) -> Result<&mut Self> {
        let name = archive_name(path)?;
        let node = checked_node(path, node)?;
        let parents: Vec<&str> = name
            .match_indices('/')
            .map(|(end, _)| &name[..end])
            .collect();
        for parent in &parents {
            if let Some(existing) = self.nodes.get(*parent) {
                if !matches!(existing, Node::Dir { .. }) {
                    return Err(Error::ParentNotDir {
                        path: path.to_string(),
                        parent: (*parent).to_string(),
                    });
                }
            }
        }
        if !matches!(node, Node::Dir { .. }) && self.has_children(&name) {
            return Err(Error::DirNotEmpty {
                path: path.to_string(),
            });
        }
        for parent in parents {
            self.nodes.entry(parent.to_string()).or_insert(Node::Dir {
                mode: PARENT_DIR_MODE,
            });
        }
        self.nodes.insert(name, node);
        Ok(self)
    }

    pub fn add_dir(&mut self, path: &str, mode: u32) -> Result<&mut Self> {
        self.add(path, Node::Dir { mode })
    }

    pub fn add_file(
        &mut self,
        path: &str,
        mode: u32,
        data: impl Into<Vec<u8>>,
    ) -> Result<&mut Self> {
        let data = data.into();
        self.add(path, Node::File { mode, data })
    }

    /// Adds the contents of the host file `host_path` at `path`.
    pub fn add_file_from(&mut self, path: &str, mode: u32, host_path: &Path) -> Result<&mut Self> {
        let data = fs::read(host_path).map_err(|source| Error::ReadHostFile {
            path: host_path.to_path_buf(),
            source,
        })?;
        self.add_file(path, mode, data)
    }

    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<&mut Self> {
        let target = target.to_string();
        self.add(path, Node::Symlink { target })
    }

    pub fn add_char_dev(
        &mut self,
        path: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<&mut Self> {
        self.add(path, Node::CharDev { mode, major, minor })
    }

    /// The entries in archive order, with their stored (relative) paths.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Node)> + '_ {
        self.nodes.iter().map(|(path, node)| (path.as_str(), node))
    }

    /// The uncompressed cpio newc archive.
    pub fn to_cpio(&self) -> Vec<u8> {
        cpio::write_newc(self.entries())
    }

    /// The archive as [`Initramfs::write`] stores it.
    pub fn encode(&self, compression: Compression) -> Vec<u8> {
        let archive = self.to_cpio();
        match compression {
            Compression::None => archive,
            Compression::Gzip => gzip(&archive),
        }
    }

    /// Writes the archive to `out` atomically: `out` is either left as it was
    /// or replaced by the complete image, never by a partial one that a cache
    /// would then trust.
    pub fn write(&self, out: &Path, compression: Compression) -> Result<()> {
        write_atomically(out, &self.encode(compression)).map_err(|source| Error::Write {
            path: out.to_path_buf(),
            source,
        })
    }

    fn has_children(&self, name: &str) -> bool {
        let prefix = format!("{name}/");
        self.nodes
            .range(prefix.clone()..)
            .next()
            .is_some_and(|(path, _)| path.starts_with(&prefix))
    }
}

/// The standard vmbench image: the guest agent as `/init`, the mount points
/// it uses, and `/dev/console`.
pub fn agent_initramfs(agent_binary: &Path) -> Result<Initramfs> {
    let mut image = Initramfs::new();
    image.add_file_from("init", 0o755, agent_binary)?;
    for dir in ["dev", "proc", "sys", "run", "mnt", "root"] {
        image.add_dir(dir, 0o755)?;
    }
    image.add_dir("tmp", 0o1777)?;
    // The kernel opens /dev/console as init's stdin/stdout/stderr before
    // init runs, so before init can mount devtmpfs: without this node the
    // agent starts with no console at all.
    image.add_char_dev("dev/console", 0o600, 5, 1)?;
    Ok(image)
}

/// Reads every entry of an initramfs as the kernel would unpack it: a stream
/// of cpio newc archives and gzip members holding such archives, in any mix,
/// with NUL padding between them. Entries come in stream order.
pub fn read_initramfs(bytes: &[u8]) -> Result<Vec<CpioEntry>> {
    let mut entries = Vec::new();
    let mut offset = cpio::skip_zeros(bytes, 0);
    if offset == bytes.len() {
        return Err(Error::Empty);
    }
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        if rest.starts_with(GZIP_MAGIC) {
            let (archive, member_len) =
                gunzip_member(rest).map_err(|source| Error::Gzip { offset, source })?;
            entries.extend(cpio::read_newc(&archive)?);
            offset += member_len;
        } else if rest.starts_with(b"0") {
            // Anything starting like a cpio magic goes to the cpio reader,
            // whose error then says which magic it found.
            offset = cpio::read_archive(bytes, offset, &mut entries)?;
        } else if let Some((_, format)) = OTHER_COMPRESSIONS
            .iter()
            .find(|(magic, _)| rest.starts_with(magic))
        {
            return Err(Error::UnsupportedCompression { offset, format });
        } else {
            let head: Vec<String> = rest.iter().take(8).map(|b| format!("{b:02x}")).collect();
            return Err(Error::NotAnArchive {
                offset,
                head: head.join(" "),
            });
        }
        offset = cpio::skip_zeros(bytes, offset);
    }
    Ok(entries)
}

/// Checks that the kernel would find something to run: `/init`, following
/// symlinks within the archive (dracut's `/init` is one), must be an
/// executable regular file. Names are taken as the kernel takes them
/// (`./init`, `/init` and `init` are the same file) and a later entry
/// replaces an earlier one of the same name.
pub fn check_bootable(entries: &[CpioEntry]) -> Result<()> {
    let tree: BTreeMap<Vec<u8>, &CpioEntry> = entries
        .iter()
        .map(|entry| (normalize(&entry.name), entry))
        .collect();
    if !tree.contains_key(&b"init"[..]) {
        return Err(Error::NoInit);
    }
    let init = resolve(&tree, b"init").ok_or(Error::InitUnresolved)?;
    if init.mode & S_IFMT != S_IFREG {
        return Err(Error::InitNotFile { mode: init.mode });
    }
    if init.mode & 0o111 == 0 {
        return Err(Error::InitNotExecutable {
            mode: init.mode & PERMISSION_BITS,
        });
    }
    Ok(())
}

/// The name `gen_init_cpio` would store for `path`.
fn archive_name(path: &str) -> Result<String> {
    let invalid = |problem| Error::InvalidPath {
        path: path.to_string(),
        problem,
    };
    if path.contains('\0') {
        return Err(invalid("contains a NUL byte"));
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(invalid("contains \"..\"")),
            _ => parts.push(part),
        }
    }
    let name = parts.join("/");
    if name.is_empty() {
        return Err(invalid(
            "names the root directory, which the kernel creates itself",
        ));
    }
    if name == TRAILER_NAME {
        return Err(invalid("is the name that ends a cpio archive"));
    }
    if name.len() >= PATH_MAX_BYTES {
        return Err(invalid("is longer than PATH_MAX (4096 bytes with its NUL)"));
    }
    Ok(name)
}

/// `node` with its mode reduced to permission bits, or why the archive
/// cannot hold it.
fn checked_node(path: &str, node: Node) -> Result<Node> {
    Ok(match node {
        Node::Dir { mode } => Node::Dir {
            mode: mode & PERMISSION_BITS,
        },
        Node::File { mode, data } => {
            if u32::try_from(data.len()).is_err() {
                return Err(Error::FileTooLarge {
                    path: path.to_string(),
                    size_bytes: data.len(),
                });
            }
            Node::File {
                mode: mode & PERMISSION_BITS,
                data,
            }
        }
        Node::Symlink { target } => {
            let problem = if target.is_empty() {
                Some("is empty")
            } else if target.contains('\0') {
                Some("contains a NUL byte")
            } else if target.len() > PATH_MAX_BYTES {
                // The kernel silently skips such a symlink.
                Some("is longer than PATH_MAX (4096 bytes)")
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(Error::InvalidSymlinkTarget {
                    path: path.to_string(),
                    target,
                    problem,
                });
            }
            Node::Symlink { target }
        }
        Node::CharDev { mode, major, minor } => Node::CharDev {
            mode: mode & PERMISSION_BITS,
            major,
            minor,
        },
    })
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    // No file name and mtime 0 in the header: only the archive decides the bytes.
    let mut encoder = GzBuilder::new()
        .mtime(0)
        .operating_system(GZIP_OS_UNKNOWN)
        .write(Vec::new(), flate2::Compression::new(GZIP_LEVEL));
    encoder
        .write_all(bytes)
        .expect("writing to a Vec cannot fail");
    encoder.finish().expect("writing to a Vec cannot fail")
}

/// Inflates the gzip member at the start of `member`; returns its contents
/// and its compressed length, where the next member or archive may begin.
fn gunzip_member(member: &[u8]) -> io::Result<(Vec<u8>, usize)> {
    let mut decoder = GzDecoder::new(member);
    let mut contents = Vec::new();
    decoder.read_to_end(&mut contents)?;
    // The bufread decoder consumes exactly the member, trailer included.
    let member_len = member.len() - decoder.get_ref().len();
    Ok((contents, member_len))
}

/// Path components other than "" and ".", which lookup skips.
fn components(path: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    path.split(|&byte| byte == b'/')
        .filter(|part| !part.is_empty() && *part != b".")
}

/// `name` as the path it creates relative to "/", with ".." applied.
fn normalize(name: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in components(name) {
        if part == b".." {
            parts.pop();
        } else {
            parts.push(part);
        }
    }
    parts.join(&b'/')
}

/// The entry that `path` leads to, following symlinks as path lookup does,
/// or `None` if a component is missing or the symlinks loop.
fn resolve<'a>(tree: &BTreeMap<Vec<u8>, &'a CpioEntry>, path: &[u8]) -> Option<&'a CpioEntry> {
    let mut pending: Vec<Vec<u8>> = components(path).rev().map(<[u8]>::to_vec).collect();
    let mut resolved: Vec<Vec<u8>> = Vec::new();
    let mut followed = 0;
    while let Some(part) = pending.pop() {
        if part == b".." {
            resolved.pop();
            continue;
        }
        resolved.push(part);
        let entry = tree.get(&resolved.join(&b'/'))?;
        if entry.mode & S_IFMT == S_IFLNK {
            followed += 1;
            if followed > MAX_SYMLINKS_FOLLOWED {
                return None;
            }
            resolved.pop();
            // gen_init_cpio stores the target with its NUL.
            let target = entry.data.strip_suffix(&[0]).unwrap_or(&entry.data);
            if target.starts_with(b"/") {
                resolved.clear();
            }
            pending.extend(components(target).rev().map(<[u8]>::to_vec));
        }
    }
    tree.get(&resolved.join(&b'/')).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use std::process::{Command, Stdio};

    fn sample() -> Initramfs {
        let mut image = Initramfs::new();
        image
            .add_file("/init", 0o755, b"#!/bin/sh\n".to_vec())
            .unwrap()
            .add_dir("/proc", 0o555)
            .unwrap()
            .add_symlink("/bin/sh", "/init")
            .unwrap()
            .add_char_dev("/dev/console", 0o600, 5, 1)
            .unwrap();
        image
    }

    fn names(entries: &[CpioEntry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| e.name_lossy().into_owned())
            .collect()
    }

    fn entry(name: &str, mode: u32, data: &[u8]) -> CpioEntry {
        CpioEntry {
            name: name.as_bytes().to_vec(),
            ino: 0,
            mode,
            uid: 0,
            gid: 0,
            nlink: 1,
            mtime: 0,
            dev_major: 0,
            dev_minor: 0,
            rdev_major: 0,
            rdev_minor: 0,
            data: data.to_vec(),
        }
    }

    /// Whether GNU cpio runs here; without it, a test that needs it skips,
    /// except under CI, where scripts/setup.sh has installed it.
    fn have_cpio() -> bool {
        let here = Command::new("cpio")
            .arg("--version")
            .output()
            .is_ok_and(|output| output.status.success());
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            here || !ci,
            "GNU cpio is not installed, which scripts/setup.sh installs under CI"
        );
        here
    }

    #[test]
    fn same_inputs_give_the_same_bytes_in_any_order() {
        let first = sample().to_cpio();
        assert_eq!(first, sample().to_cpio());
        let mut reordered = Initramfs::new();
        reordered
            .add_char_dev("dev/console", 0o600, 5, 1)
            .unwrap()
            .add_symlink("bin/sh", "/init")
            .unwrap()
            .add_dir("proc", 0o555)
            .unwrap()
            .add_file("init", 0o755, b"#!/bin/sh\n".to_vec())
            .unwrap();
        assert_eq!(first, reordered.to_cpio());
    }

    #[test]
    fn parents_are_created_and_come_first() {
        let entries = cpio::read_newc(&sample().to_cpio()).unwrap();
        assert_eq!(
            names(&entries),
            ["bin", "bin/sh", "dev", "dev/console", "init", "proc"]
        );
        assert_eq!(entries[0].node(), Some(Node::Dir { mode: 0o755 }));
        assert_eq!(entries[5].node(), Some(Node::Dir { mode: 0o555 }));
    }

    #[test]
    fn explicit_directory_mode_wins_in_either_order() {
        let mut before = Initramfs::new();
        before
            .add_dir("a", 0o700)
            .unwrap()
            .add_file("a/f", 0o644, "x")
            .unwrap();
        let mut after = Initramfs::new();
        after
            .add_file("a/f", 0o644, "x")
            .unwrap()
            .add_dir("a", 0o700)
            .unwrap();
        assert_eq!(before, after);
        assert_eq!(
            before.entries().next(),
            Some(("a", &Node::Dir { mode: 0o700 }))
        );
    }

    #[test]
    fn adding_a_path_again_replaces_it() {
        let mut image = Initramfs::new();
        image.add_file("/etc/motd", 0o644, "old").unwrap();
        image.add_file("etc//./motd", 0o600, "new").unwrap();
        image.add_symlink("etc", "/x").unwrap_err();
        let entries: Vec<_> = image.entries().collect();
        assert_eq!(
            entries,
            [
                ("etc", &Node::Dir { mode: 0o755 }),
                (
                    "etc/motd",
                    &Node::File {
                        mode: 0o600,
                        data: b"new".to_vec()
                    }
                ),
            ]
        );
    }

    #[test]
    fn modes_keep_only_permission_bits() {
        let mut image = Initramfs::new();
        image.add_file("init", 0o100_755, "x").unwrap();
        let entries = cpio::read_newc(&image.to_cpio()).unwrap();
        assert_eq!(entries[0].mode, S_IFREG | 0o755);
    }

    #[test]
    fn invalid_paths_are_refused() {
        let long = "a".repeat(PATH_MAX_BYTES);
        for path in [
            "",
            "/",
            "./",
            "a/../b",
            "..",
            "a\0b",
            "TRAILER!!!",
            "/TRAILER!!!",
            &long,
        ] {
            let err = Initramfs::new().add_dir(path, 0o755).unwrap_err();
            assert!(
                matches!(err, Error::InvalidPath { .. }),
                "{path:?}: {err:?}"
            );
        }
    }

    #[test]
    fn a_file_cannot_be_a_parent() {
        let mut image = Initramfs::new();
        image.add_file("a", 0o644, "x").unwrap();
        let err = image.add_file("a/b", 0o644, "y").unwrap_err();
        assert!(
            matches!(&err, Error::ParentNotDir { parent, .. } if parent == "a"),
            "{err:?}"
        );
        image
            .add_dir("d", 0o755)
            .unwrap()
            .add_dir("d/e", 0o755)
            .unwrap();
        let err = image.add_char_dev("d", 0o600, 1, 3).unwrap_err();
        assert!(matches!(err, Error::DirNotEmpty { .. }), "{err:?}");
        // Replacing a directory with a directory keeps what is below it.
        image.add_dir("d", 0o700).unwrap();
        assert_eq!(image.entries().count(), 3);
    }

    #[test]
    fn bad_symlink_targets_are_refused() {
        for target in ["", "a\0b"] {
            let err = Initramfs::new().add_symlink("l", target).unwrap_err();
            assert!(
                matches!(err, Error::InvalidSymlinkTarget { .. }),
                "{target:?}: {err:?}"
            );
        }
    }

    #[test]
    fn missing_host_file_is_named() {
        let err = Initramfs::new()
            .add_file_from("init", 0o755, Path::new("/nonexistent/agent"))
            .unwrap_err();
        assert!(matches!(err, Error::ReadHostFile { .. }), "{err:?}");
        assert!(err.to_string().contains("/nonexistent/agent"), "{err}");
    }

    #[test]
    fn agent_image_has_the_standard_layout() {
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("agent");
        fs::write(&agent, b"\x7fELF agent").unwrap();
        let image = agent_initramfs(&agent).unwrap();
        let entries = read_initramfs(&image.encode(Compression::Gzip)).unwrap();
        check_bootable(&entries).unwrap();
        let nodes: BTreeMap<String, Node> = entries
            .iter()
            .map(|e| (e.name_lossy().into_owned(), e.node().unwrap()))
            .collect();
        let dir_mode = |mode| Node::Dir { mode };
        assert_eq!(
            nodes,
            BTreeMap::from([
                ("dev".into(), dir_mode(0o755)),
                (
                    "dev/console".into(),
                    Node::CharDev {
                        mode: 0o600,
                        major: 5,
                        minor: 1
                    }
                ),
                (
                    "init".into(),
                    Node::File {
                        mode: 0o755,
                        data: b"\x7fELF agent".to_vec()
                    }
                ),
                ("mnt".into(), dir_mode(0o755)),
                ("proc".into(), dir_mode(0o755)),
                ("root".into(), dir_mode(0o755)),
                ("run".into(), dir_mode(0o755)),
                ("sys".into(), dir_mode(0o755)),
                ("tmp".into(), dir_mode(0o1777)),
            ])
        );
        let err = agent_initramfs(&dir.path().join("missing")).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn gzip_round_trips_and_is_deterministic() {
        let image = sample();
        let gz = image.encode(Compression::Gzip);
        assert_eq!(gz, sample().encode(Compression::Gzip));
        assert_eq!(&gz[..2], GZIP_MAGIC);
        assert_eq!(gz[3], 0, "no optional header fields such as a file name");
        assert_eq!(&gz[4..8], &[0; 4], "mtime 0");
        let plain = cpio::read_newc(&image.to_cpio()).unwrap();
        assert_eq!(read_initramfs(&gz).unwrap(), plain);
        assert_eq!(read_initramfs(&image.to_cpio()).unwrap(), plain);
    }

    #[test]
    fn mixed_concatenated_stream_is_read() {
        // Like an early-microcode archive prepended to a compressed main one.
        let mut early = Initramfs::new();
        early
            .add_file("kernel/x86/microcode/GenuineIntel.bin", 0o644, "ucode")
            .unwrap();
        let mut stream = early.to_cpio();
        stream.extend_from_slice(&[0; 512]);
        stream.extend_from_slice(&sample().encode(Compression::Gzip));
        stream.extend_from_slice(&gzip(&early.to_cpio()));
        stream.extend_from_slice(&[0; 7]);
        let entries = read_initramfs(&stream).unwrap();
        assert_eq!(entries.len(), 4 + 6 + 4);
        check_bootable(&entries).unwrap();
    }

    #[test]
    fn neither_cpio_nor_gzip_is_refused() {
        let err = read_initramfs(b"hello world").unwrap_err();
        let message = err.to_string();
        assert!(
            message
                .contains("Not a cpio newc archive or gzip: starts with 68 65 6c 6c 6f 20 77 6f"),
            "{message}"
        );
        let mut stream = sample().to_cpio();
        let end = stream.len();
        stream.extend_from_slice(b"\xff");
        let err = read_initramfs(&stream).unwrap_err();
        assert!(
            matches!(err, Error::NotAnArchive { offset, .. } if offset == end),
            "{err:?}"
        );
        assert!(matches!(read_initramfs(&[0; 9]), Err(Error::Empty)));
    }

    #[test]
    fn other_compressions_are_named() {
        let err = read_initramfs(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0]).unwrap_err();
        assert!(err.to_string().contains("zstd"), "{err}");
    }

    #[test]
    fn corrupt_or_truncated_gzip_is_refused() {
        let err = read_initramfs(b"\x1f\x8b\x08\x00garbage").unwrap_err();
        assert!(matches!(err, Error::Gzip { offset: 0, .. }), "{err:?}");
        let gz = sample().encode(Compression::Gzip);
        for len in [2, 10, gz.len() / 2, gz.len() - 4, gz.len() - 1] {
            let err = read_initramfs(&gz[..len]).unwrap_err();
            assert!(
                matches!(err, Error::Gzip { .. }),
                "truncated to {len}: {err:?}"
            );
        }
        let mut flipped = gz.clone();
        let crc_at = gz.len() - 8;
        flipped[crc_at] ^= 1;
        assert!(matches!(read_initramfs(&flipped), Err(Error::Gzip { .. })));
    }

    #[test]
    fn corrupt_cpio_inside_gzip_is_refused() {
        let mut archive = sample().to_cpio();
        archive[0] = b'1';
        let err = read_initramfs(&gzip(&archive)).unwrap_err();
        assert!(matches!(err, Error::BadMagic { offset: 0, .. }), "{err:?}");
    }

    #[test]
    fn init_must_exist() {
        let entries = [entry("sbin/init", S_IFREG | 0o755, b"x")];
        assert!(matches!(check_bootable(&entries), Err(Error::NoInit)));
    }

    #[test]
    fn init_must_be_an_executable_file() {
        let err = check_bootable(&[entry("init", S_IFREG | 0o644, b"x")]).unwrap_err();
        assert!(
            matches!(err, Error::InitNotExecutable { mode: 0o644 }),
            "{err:?}"
        );
        let err = check_bootable(&[entry("init", cpio::S_IFDIR | 0o755, b"")]).unwrap_err();
        assert!(matches!(err, Error::InitNotFile { .. }), "{err:?}");
    }

    #[test]
    fn later_entries_replace_earlier_ones() {
        let good = entry("init", S_IFREG | 0o755, b"x");
        let bad = entry("./init", S_IFREG | 0o644, b"x");
        assert!(check_bootable(&[good.clone(), bad.clone()]).is_err());
        check_bootable(&[bad, good]).unwrap();
    }

    #[test]
    fn init_may_be_a_symlink() {
        // dracut's layout: /init -> usr/lib/systemd/systemd, and merged /usr.
        let entries = [
            entry(".", cpio::S_IFDIR | 0o755, b""),
            entry("./usr", cpio::S_IFDIR | 0o755, b""),
            entry("./usr/lib", cpio::S_IFDIR | 0o755, b""),
            entry("./usr/lib/systemd", cpio::S_IFDIR | 0o755, b""),
            entry("./usr/lib/systemd/systemd", S_IFREG | 0o755, b"x"),
            entry("./lib", S_IFLNK | 0o777, b"usr/lib"),
            entry(
                "./init",
                S_IFLNK | 0o777,
                b"/lib/systemd/../systemd/systemd\0",
            ),
        ];
        check_bootable(&entries).unwrap();
    }

    #[test]
    fn dangling_or_looping_init_symlink_is_refused() {
        let dangling = [entry("init", S_IFLNK | 0o777, b"/nowhere")];
        assert!(matches!(
            check_bootable(&dangling),
            Err(Error::InitUnresolved)
        ));
        let looping = [
            entry("init", S_IFLNK | 0o777, b"a"),
            entry("a", S_IFLNK | 0o777, b"init"),
        ];
        assert!(matches!(
            check_bootable(&looping),
            Err(Error::InitUnresolved)
        ));
    }

    #[test]
    fn write_replaces_the_output_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("initramfs.cpio.gz");
        fs::write(&out, b"old").unwrap();
        sample().write(&out, Compression::Gzip).unwrap();
        assert_eq!(fs::read(&out).unwrap(), sample().encode(Compression::Gzip));
        sample().write(&out, Compression::None).unwrap();
        assert_eq!(fs::read(&out).unwrap(), sample().to_cpio());
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["initramfs.cpio.gz"]);
    }

    #[test]
    fn failed_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("missing").join("initramfs.cpio");
        let err = sample().write(&out, Compression::None).unwrap_err();
        assert!(matches!(err, Error::Write { .. }), "{err:?}");
        assert!(err.to_string().contains("missing/initramfs.cpio"), "{err}");
        assert!(!out.exists());

        // The temporary file is created, but the rename onto a directory fails.
        let out = dir.path().join("occupied");
        fs::create_dir(&out).unwrap();
        sample().write(&out, Compression::Gzip).unwrap_err();
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["occupied"]);
        assert_eq!(fs::read_dir(&out).unwrap().count(), 0);
    }

    #[test]
    fn gnu_cpio_lists_the_archive() {
        if !have_cpio() {
            println!("SKIPPED: GNU cpio is not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("initramfs.cpio");
        sample().write(&out, Compression::None).unwrap();
        let output = Command::new("cpio")
            .args(["-t", "--quiet", "-F"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let listed: Vec<_> = String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        let ours: Vec<_> = sample()
            .entries()
            .map(|(path, _)| path.to_string())
            .collect();
        assert_eq!(listed, ours);
    }

    #[test]
    fn archive_from_gnu_cpio_is_read() {
        if !have_cpio() {
            println!("SKIPPED: GNU cpio is not installed");
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::write(root.join("bin/agent"), b"agent").unwrap();
        fs::set_permissions(root.join("bin/agent"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("bin/agent", root.join("init")).unwrap();
        let mut child = Command::new("cpio")
            .args(["-o", "-H", "newc", "--quiet"])
            .current_dir(&root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b".\nbin\nbin/agent\ninit\n")
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success());
        let entries = read_initramfs(&gzip(&output.stdout)).unwrap();
        assert_eq!(names(&entries), [".", "bin", "bin/agent", "init"]);
        assert_eq!(entries[2].data, b"agent");
        check_bootable(&entries).unwrap();
    }

    fn leaf() -> impl Strategy<Value = Node> {
        prop_oneof![
            (0u32..0o10000, vec(any::<u8>(), 0..40))
                .prop_map(|(mode, data)| Node::File { mode, data }),
            "[a-z/.]{1,12}".prop_map(|target| Node::Symlink { target }),
            (0u32..0o10000, any::<u32>(), any::<u32>())
                .prop_map(|(mode, major, minor)| Node::CharDev { mode, major, minor }),
        ]
    }

    /// Directories have only "d" components and leaves end in an "f" one, so
    /// no leaf is ever another entry's parent and any insertion order works.
    fn tree() -> impl Strategy<Value = BTreeMap<String, Node>> {
        let dir = (vec("d[a-c]", 1..4), 0u32..0o10000)
            .prop_map(|(parts, mode)| (parts.join("/"), Node::Dir { mode }));
        let leaf =
            (vec("d[a-c]", 0..3), "f[a-z0-9]{1,6}", leaf()).prop_map(|(mut parts, name, node)| {
                parts.push(name);
                (parts.join("/"), node)
            });
        vec(prop_oneof![dir, leaf], 0..20).prop_map(|entries| entries.into_iter().collect())
    }

    fn build<'a>(entries: impl IntoIterator<Item = (&'a String, &'a Node)>) -> Initramfs {
        let mut image = Initramfs::new();
        for (path, node) in entries {
            image.add(path, node.clone()).unwrap();
        }
        image
    }

    proptest! {
        #[test]
        fn written_archives_read_back(tree in tree()) {
            let image = build(&tree);
            let expected: Vec<(String, Node)> =
                image.entries().map(|(path, node)| (path.to_string(), node.clone())).collect();
            for (path, node) in &tree {
                prop_assert!(expected.contains(&(path.clone(), node.clone())));
            }
            for compression in [Compression::None, Compression::Gzip] {
                let entries = read_initramfs(&image.encode(compression)).unwrap();
                let read: Vec<(String, Node)> = entries
                    .iter()
                    .map(|e| (e.name_lossy().into_owned(), e.node().unwrap()))
                    .collect();
                prop_assert_eq!(&read, &expected);
                let inodes: Vec<u32> = entries.iter().map(|e| e.ino).collect();
                prop_assert_eq!(inodes, (1..=entries.len() as u32).collect::<Vec<_>>());
            }
        }

        #[test]
        fn insertion_order_does_not_matter(
            (tree, shuffled) in tree().prop_flat_map(|tree| {
                let entries: Vec<(String, Node)> = tree.clone().into_iter().collect();
                (Just(tree), Just(entries).prop_shuffle())
            })
        ) {
            let sorted = build(&tree);
            let shuffled = build(shuffled.iter().map(|(path, node)| (path, node)));
            prop_assert_eq!(sorted.encode(Compression::Gzip), shuffled.encode(Compression::Gzip));
        }

        #[test]
        fn corrupted_gzip_never_panics(
            flips in vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            keep in any::<prop::sample::Index>(),
        ) {
            let mut bytes = sample().encode(Compression::Gzip);
            for (index, xor) in flips {
                let at = index.index(bytes.len());
                bytes[at] ^= xor;
            }
            let len = keep.index(bytes.len() + 1);
            if let Ok(entries) = read_initramfs(&bytes[..len]) {
                let _ = check_bootable(&entries);
            }
        }

        #[test]
        fn random_input_never_panics(bytes in vec(any::<u8>(), 0..300)) {
            if let Ok(entries) = read_initramfs(&bytes) {
                let _ = check_bootable(&entries);
            }
        }
    }
}
