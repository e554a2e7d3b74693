//! e2fsprogs as vmbench drives it: `mkfs.ext4 -d` makes a file system from a
//! directory tree without mounting anything, and `debugfs` reads and edits
//! the image in place, so neither needs root and the user's tree is never
//! touched.
//!
//! Reproducibility, as far as e2fsprogs 1.47 allows:
//! - the feature set comes from vmbench's own `mke2fs.conf` ([`MKE2FS_CONF`],
//!   through `MKE2FS_CONFIG`), not from the host's `/etc/mke2fs.conf`
//!   (Debian's makes images under 512 MiB with 1 KiB blocks);
//! - the UUID (`-U`) and directory hash seed (`-E hash_seed=`) are derived
//!   from the image's inputs; the root is `-E root_owner=0:0`;
//! - `E2FSPROGS_FAKE_TIME` (read by libext2fs, so by both tools) fixes the
//!   superblock times and every inode's creation time, and debugfs's
//!   `set_current_time` the times of what it creates;
//! - `mkfs.ext4 -d` copies each file's times from the host, where reading
//!   the tree (even to hash it) changes atimes, ctimes cannot be set, and a
//!   copy of the tree has new mtimes: `normalize_times` sets all three to
//!   the fixed time in every inode in use. An image's name says what is in
//!   it (names, modes, owners, contents: not times), so the same name must
//!   mean the same bytes; the price is that files lose their mtimes.
//!
//! debugfs exits 0 whatever its commands do and reports failures on stderr
//! only, so a script is planned to contain only commands that must succeed
//! (the image is queried first) and anything on stderr besides the banner
//! is an error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::lookup::{NodeKind, RootView};
use crate::{Error, Result};

/// vmbench's mke2fs.conf: Debian 12's ext4 defaults, with no usage types, so
/// the result does not depend on the host's configuration or on the image
/// size (`-T default` is passed so mke2fs does not look for one).
pub const MKE2FS_CONF: &str = "\
[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tenable_periodic_fsck = 0
\tblocksize = 4096
\tinode_size = 256
\tinode_ratio = 16384

[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
";

/// The time every timestamp vmbench sets is set to: 2023-11-14 22:13:20 UTC.
pub const FIXED_TIME_S: u64 = 1_700_000_000;
/// [`FIXED_TIME_S`] as debugfs takes it (YYYYMMDDHHMMSS, UTC).
const FIXED_TIME_DEBUGFS: &str = "20231114221320";
/// The first inode that is not reserved (lost+found); 2 is the root.
const FIRST_INODE: u64 = 11;
const ROOT_INODE: u64 = 2;

/// What `mkfs.ext4` is asked to make.
#[derive(Debug, Clone)]
pub(crate) struct Mkfs<'a> {
    /// The (new, empty) file to format; its length is the file system size.
    pub image: &'a Path,
    pub tree: &'a Path,
    pub uuid: String,
    pub hash_seed: String,
    pub inodes: u64,
    /// The output the image becomes, for errors.
    pub out: &'a Path,
    pub size_mib: u64,
}

/// Formats `spec.image` as ext4 holding a copy of `spec.tree`.
pub(crate) fn mkfs_ext4(spec: &Mkfs<'_>) -> Result<()> {
    let mut conf = tempfile::NamedTempFile::new().map_err(|source| Error::Io {
        what: "write a temporary mke2fs.conf",
        path: std::env::temp_dir(),
        source,
    })?;
    conf.write_all(MKE2FS_CONF.as_bytes())
        .map_err(|source| Error::Io {
            what: "write a temporary mke2fs.conf",
            path: conf.path().to_path_buf(),
            source,
        })?;
    let mut command = Command::new("mkfs.ext4");
    command
        .env("MKE2FS_CONFIG", conf.path())
        .env("E2FSPROGS_FAKE_TIME", FIXED_TIME_S.to_string())
        .args(["-q", "-F", "-T", "default", "-L", "vmbench"])
        .arg("-N")
        .arg(spec.inodes.to_string())
        .arg("-U")
        .arg(&spec.uuid)
        .arg("-E")
        // The file is new and sparse, so its journal already reads as zeros.
        .arg(format!(
            "hash_seed={},root_owner=0:0,lazy_journal_init=1",
            spec.hash_seed
        ))
        .arg("-d")
        .arg(spec.tree)
        .arg(spec.image);
    let output = run("mkfs.ext4", &mut command)?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    // mkfs.ext4's last line is its summary of what failed.
    let detail = last_line(&stderr);
    Err(classify_failure(
        "mkfs.ext4",
        &stderr,
        detail,
        spec.out,
        spec.size_mib,
    ))
}

/// Turns a tool's complaint (all of `stderr`; `detail` the line to show)
/// into the error a user can act on.
fn classify_failure(
    tool: &'static str,
    stderr: &str,
    detail: String,
    out: &Path,
    size_mib: u64,
) -> Error {
    if stderr.contains("No space left on device") {
        return Error::NoSpace {
            path: out.to_path_buf(),
        };
    }
    if stderr.contains("Could not allocate block")
        || stderr.contains("Could not allocate inode")
        || stderr.contains("Device size reported to be zero")
        || stderr.contains("too small")
    {
        return Error::ImageTooSmall {
            path: out.to_path_buf(),
            size_mib,
            detail,
        };
    }
    Error::ToolFailed {
        tool,
        path: out.to_path_buf(),
        detail,
    }
}

fn last_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .rfind(|line| !line.is_empty())
        .unwrap_or("(no message)")
        .to_string()
}

/// Runs a tool, mapping "not installed" to an error that says what to install.
fn run(tool: &'static str, command: &mut Command) -> Result<Output> {
    command.output().map_err(|source| spawn_error(tool, source))
}

/// A debugfs script that edits an image; see the module notes.
#[derive(Debug, Default, Clone)]
pub(crate) struct Script {
    lines: Vec<String>,
}

impl Script {
    pub(crate) fn new() -> Self {
        let mut script = Script::default();
        script
            .lines
            .push(format!("set_current_time {FIXED_TIME_DEBUGFS}"));
        script
    }

    /// A directory owned by root, mode `mode`.
    pub(crate) fn mkdir(&mut self, path: &str, mode: u32) -> Result<()> {
        self.lines.push(format!("mkdir {}", quote(path)?));
        self.owner_and_mode(path, 0o040000 | mode)
    }

    pub(crate) fn rm(&mut self, path: &str) -> Result<()> {
        self.lines.push(format!("rm {}", quote(path)?));
        Ok(())
    }

    /// A copy of the host file `host`, owned by root, mode `mode`.
    pub(crate) fn write(&mut self, host: &Path, path: &str, mode: u32) -> Result<()> {
        let host = host.to_str().ok_or_else(|| Error::UnsupportedName {
            name: host.display().to_string(),
        })?;
        self.lines
            .push(format!("write {} {}", quote(host)?, quote(path)?));
        self.owner_and_mode(path, 0o100000 | mode)
    }

    pub(crate) fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        self.lines
            .push(format!("symlink {} {}", quote(path)?, quote(target)?));
        Ok(())
    }

    fn owner_and_mode(&mut self, path: &str, mode: u32) -> Result<()> {
        let path = quote(path)?;
        self.lines.push(format!("sif {path} mode 0{mode:o}"));
        self.lines.push(format!("sif {path} uid 0"));
        self.lines.push(format!("sif {path} gid 0"));
        Ok(())
    }

    /// Access, change and modification times of inode `number` set to the
    /// fixed time.
    fn fix_times(&mut self, number: u64) {
        for field in ["atime", "ctime", "mtime"] {
            self.lines
                .push(format!("sif <{number}> {field} {FIXED_TIME_DEBUGFS}"));
        }
    }

    /// Runs the script on `image` (read-write). `out` names the image in errors.
    pub(crate) fn run(&self, image: &Path, out: &Path, size_mib: u64) -> Result<()> {
        let mut child = Command::new("debugfs")
            .env("E2FSPROGS_FAKE_TIME", FIXED_TIME_S.to_string())
            .env("DEBUGFS_PAGER", "__none__")
            .args(["-w", "-f", "-"])
            .arg(image)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| spawn_error("debugfs", source))?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let text = self.lines.join("\n") + "\n";
        // debugfs reads the whole script while stderr collects below; a
        // write error means it died early, which its stderr then explains.
        let writer = std::thread::Builder::new()
            .name("debugfs-script".into())
            .spawn(move || stdin.write_all(text.as_bytes()));
        let writer = match writer {
            Ok(writer) => writer,
            Err(source) => {
                // No thread, no script: debugfs must not be left waiting for one.
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Io {
                    what: "start a thread to feed debugfs for",
                    path: out.to_path_buf(),
                    source,
                });
            }
        };
        let output = child.wait_with_output().map_err(|source| Error::Io {
            what: "run debugfs on",
            path: out.to_path_buf(),
            source,
        })?;
        let _ = writer.join();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let problems: Vec<&str> = stderr
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !is_banner(line))
            .collect();
        if output.status.success() && problems.is_empty() {
            return Ok(());
        }
        // The first complaint is the cause; later ones follow from it.
        let detail = problems.first().unwrap_or(&"(no message)").to_string();
        Err(classify_failure(
            "debugfs",
            &problems.join("\n"),
            detail,
            out,
            size_mib,
        ))
    }
}

fn spawn_error(tool: &'static str, source: std::io::Error) -> Error {
    if source.kind() == std::io::ErrorKind::NotFound {
        Error::ToolMissing {
            tool,
            package: "e2fsprogs",
        }
    } else {
        Error::Io {
            what: "run e2fsprogs",
            path: PathBuf::from(tool),
            source,
        }
    }
}

fn is_banner(line: &str) -> bool {
    line.starts_with("debugfs ") && line.contains('(') && !line.contains(':')
}

/// A debugfs argument: double-quoted, which its parser reads as one word.
/// It has no escape for `"` itself, so such names are refused.
fn quote(word: &str) -> Result<String> {
    if word.contains(['"', '\n', '\0']) {
        return Err(Error::UnsupportedName {
            name: word.to_string(),
        });
    }
    Ok(format!("\"{word}\""))
}

/// An inode as `debugfs stat` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    pub number: u64,
    pub kind: InodeKind,
    /// Permission bits (0o7777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InodeKind {
    Regular,
    Directory,
    Symlink { target: String },
    Other(String),
}

/// Runs a read-only debugfs command on `image`; returns its stdout, or
/// `None` when the path it names does not exist.
fn query(image: &Path, request: &str) -> Result<Option<Vec<u8>>> {
    let output = run(
        "debugfs",
        Command::new("debugfs")
            .env("DEBUGFS_PAGER", "__none__")
            .arg("-R")
            .arg(request)
            .arg(image),
    )?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("File not found by ext2_lookup") {
        return Ok(None);
    }
    let problems: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !is_banner(line))
        .collect();
    if !output.status.success() || !problems.is_empty() {
        return Err(Error::ToolFailed {
            tool: "debugfs",
            path: image.to_path_buf(),
            detail: problems.join("; "),
        });
    }
    Ok(Some(output.stdout))
}

/// The inode at `path` in the ext4 image (intermediate symlinks followed by
/// debugfs, a final one not), or `None` if there is none.
pub fn stat(image: &Path, path: &str) -> Result<Option<Inode>> {
    let Some(stdout) = query(image, &format!("stat {}", quote(path)?))? else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&stdout);
    let bad = || Error::ToolFailed {
        tool: "debugfs",
        path: image.to_path_buf(),
        detail: format!("unexpected `stat {path}` output: {}", last_line(&text)),
    };
    let number = field(&text, "Inode:").ok_or_else(bad)?;
    let kind = text
        .lines()
        .find_map(|l| l.split_once("Type: "))
        .map(|(_, rest)| rest.split("  ").next().unwrap_or("").trim().to_string())
        .ok_or_else(bad)?;
    let mode = field(&text, "Mode:").ok_or_else(bad)?;
    let mode = u32::from_str_radix(&mode, 8).map_err(|_| bad())?;
    let kind = match kind.as_str() {
        "regular" => InodeKind::Regular,
        "directory" => InodeKind::Directory,
        "symlink" => {
            let target = match text
                .lines()
                .find_map(|l| l.strip_prefix("Fast link dest: "))
            {
                Some(quoted) => quoted.trim().trim_matches('"').to_string(),
                // A long target lives in a data block, which `cat` reads.
                None => {
                    let bytes = query(image, &format!("cat <{number}>"))?.ok_or_else(bad)?;
                    String::from_utf8_lossy(&bytes).into_owned()
                }
            };
            InodeKind::Symlink { target }
        }
        other => InodeKind::Other(other.to_string()),
    };
    Ok(Some(Inode {
        number: number.parse().map_err(|_| bad())?,
        kind,
        mode,
        uid: field(&text, "User:")
            .and_then(|v| v.parse().ok())
            .ok_or_else(bad)?,
        gid: field(&text, "Group:")
            .and_then(|v| v.parse().ok())
            .ok_or_else(bad)?,
        size_bytes: field(&text, "Size:")
            .and_then(|v| v.parse().ok())
            .ok_or_else(bad)?,
    }))
}

/// The word after `label` in debugfs output.
fn field(text: &str, label: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (_, rest) = line.split_once(label)?;
        rest.split_whitespace().next().map(str::to_string)
    })
}

/// The contents of the regular file at `path` in the ext4 image.
pub fn read_file(image: &Path, path: &str) -> Result<Vec<u8>> {
    match stat(image, path)? {
        Some(Inode {
            kind: InodeKind::Regular,
            number,
            ..
        }) => query(image, &format!("cat <{number}>"))?.ok_or(Error::NotInImage {
            image: image.to_path_buf(),
            path: path.to_string(),
        }),
        _ => Err(Error::NotInImage {
            image: image.to_path_buf(),
            path: path.to_string(),
        }),
    }
}

/// The e2fsprogs version (`1.47.0`), as mkfs.ext4 reports it.
pub fn version() -> Result<String> {
    let output = run("mkfs.ext4", Command::new("mkfs.ext4").arg("-V"))?;
    let text = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    // "mke2fs 1.47.0 (5-Feb-2023)"
    Ok(text
        .split_whitespace()
        .nth(1)
        .unwrap_or("unknown")
        .to_string())
}

/// Every inode in use that is the root or not reserved, from the bitmaps
/// as dumpe2fs prints them.
fn inodes_in_use(image: &Path) -> Result<Vec<u64>> {
    let output = run(
        "dumpe2fs",
        Command::new("dumpe2fs").arg(image).stdin(Stdio::null()),
    )?;
    let text = String::from_utf8_lossy(&output.stdout);
    let bad = |detail: &str| Error::ToolFailed {
        tool: "dumpe2fs",
        path: image.to_path_buf(),
        detail: detail.to_string(),
    };
    if !output.status.success() {
        return Err(bad(&last_line(&String::from_utf8_lossy(&output.stderr))));
    }
    let number = |label: &str| -> Result<u64> {
        field(&text, label)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad(&format!("no \"{label}\" in its output")))
    };
    let per_group = number("Inodes per group:")?;
    let count = number("Inode count:")?;
    let groups: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(' '))
        .filter_map(|l| l.trim_start().strip_prefix("Free inodes:"))
        .collect();
    if groups.len() as u64 != count.div_ceil(per_group) {
        return Err(bad("its group list does not match its inode count"));
    }
    let mut used = Vec::new();
    for (group, free) in groups.iter().enumerate() {
        let first = group as u64 * per_group + 1;
        let mut free_ranges = Vec::new();
        for range in free.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            let (lo, hi) = range.split_once('-').unwrap_or((range, range));
            let parse = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| bad(&format!("bad free inode range {range:?}")))
            };
            free_ranges.push((parse(lo)?, parse(hi)?));
        }
        for number in first..first + per_group {
            let is_free = free_ranges
                .iter()
                .any(|(lo, hi)| (*lo..=*hi).contains(&number));
            if !is_free && (number == ROOT_INODE || number >= FIRST_INODE) {
                used.push(number);
            }
        }
    }
    Ok(used)
}

/// Sets every used inode's times to the fixed time (see the module
/// notes), adding the commands to `script`.
pub(crate) fn normalize_times(image: &Path, script: &mut Script) -> Result<()> {
    for number in inodes_in_use(image)? {
        script.fix_times(number);
    }
    Ok(())
}

/// An ext4 image seen as a guest root, through debugfs.
pub(crate) struct Ext4Image<'a> {
    pub(crate) image: &'a Path,
}

impl RootView for Ext4Image<'_> {
    fn lstat(&self, real: &[String]) -> Result<Option<NodeKind>> {
        let path = crate::lookup::absolute(real);
        Ok(stat(self.image, &path)?.map(|inode| match inode.kind {
            InodeKind::Directory => NodeKind::Dir,
            InodeKind::Regular => NodeKind::File {
                executable: inode.mode & 0o111 != 0,
            },
            InodeKind::Symlink { target } => NodeKind::Symlink { target },
            InodeKind::Other(_) => NodeKind::Other,
        }))
    }

    fn describe(&self) -> String {
        format!("image {}", self.image.display())
    }
}

/// Whether `tool` can be run at all (for tests that need e2fsprogs).
pub fn tool_available(tool: &str) -> bool {
    Command::new(tool)
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// A UUID string from 16 bytes, marked as version 4 / variant 1 so tools
/// that check UUIDs accept it.
pub(crate) fn uuid_from(bytes: &[u8]) -> String {
    let mut b = [0u8; 16];
    b.copy_from_slice(&bytes[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex = crate::provenance::hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_refuses_what_debugfs_cannot_read() {
        assert_eq!(quote("/a b").unwrap(), "\"/a b\"");
        assert!(quote("/a\"b").is_err());
        assert!(quote("/a\nb").is_err());
    }

    #[test]
    fn uuids_are_version_4() {
        let uuid = uuid_from(&[0xff; 32]);
        assert_eq!(uuid, "ffffffff-ffff-4fff-bfff-ffffffffffff");
    }

    #[test]
    fn failures_are_classified() {
        let out = Path::new("/x/img");
        let classify = |tool, text: &str| classify_failure(tool, text, last_line(text), out, 64);
        assert!(matches!(
            classify(
                "mkfs.ext4",
                "mkfs.ext4: No space left on device while writing out and closing file system"
            ),
            Error::NoSpace { .. }
        ));
        assert!(matches!(
            classify(
                "mkfs.ext4",
                "__populate_fs: Could not allocate block in ext2 filesystem while writing file \"x\""
            ),
            Error::ImageTooSmall { size_mib: 64, .. }
        ));
        assert!(matches!(
            classify("debugfs", "something else"),
            Error::ToolFailed { .. }
        ));
    }

    #[test]
    fn the_banner_is_not_an_error() {
        assert!(is_banner("debugfs 1.47.0 (5-Feb-2023)"));
        assert!(!is_banner("debugfs: write: No such file"));
    }
}
