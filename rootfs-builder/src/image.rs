//! Building an ext4 root image with the agent in it, from a directory tree
//! (`mkfs.ext4 -d`) or from an existing ext4 image (a sparse copy), then
//! edited with debugfs: the source is never modified and nothing is
//! mounted.
//!
//! The steps, for every recipe:
//! 1. the inputs are checked and hashed, which names the image; if the
//!    image and its sidecar are already there and agree, that is the result
//!    ("up to date");
//! 2. a temporary file beside the output becomes the file system;
//! 3. debugfs installs the agent (and for a systemd image its unit and the
//!    symlink enabling it; for a plain one `/sbin/init` and the mount points
//!    the agent moves into the new root), and `/etc/vmbench/image.json`;
//! 4. the image is synced and hashed, the old sidecar removed, and image
//!    and sidecar renamed into place, the sidecar last, so a sidecar always
//!    describes the image beside it.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::Digest;

use crate::agent::{check_agent, Agent};
use crate::atomic::{parent_dir, TempFile};
use crate::disk::{check_ext4, needs_recovery};
use crate::e2fs::{self, normalize_times, Ext4Image, Mkfs, Script};
use crate::lookup::{absolute, lookup, Lookup, NodeKind, RootView};
use crate::provenance::{
    sha256_file, sha256_hex, sidecar_path, up_to_date, ImageInfo, ImageKind, Provenance, Recipe,
    SourceKind, Sources,
};
use crate::systemd::{
    find_systemd, AGENT_PATH, AGENT_UNIT, AGENT_UNIT_PATH, AGENT_UNIT_WANTS_PATH, IMAGE_JSON_PATH,
};
use crate::tree::{scan_tree, HostTree, TreeSummary, BLOCK_BYTES};
use crate::{Error, Result};

const MIB: u64 = 1 << 20;
/// Default sizes are rounded up to this.
const SIZE_STEP_MIB: u64 = 64;
/// The least free room a default-sized image leaves.
const MIN_HEADROOM_BYTES: u64 = 64 * MIB;
const INODE_BYTES: u64 = 256;
/// One inode per this many bytes of image at least (mke2fs's default ratio).
const BYTES_PER_INODE: u64 = 16384;
/// The directories the agent moves `/dev`, `/proc`, `/sys` and `/run` onto
/// when it switches to the image as root, and `/tmp`.
const MOUNT_POINTS: [(&str, u32); 5] = [
    ("/dev", 0o755),
    ("/proc", 0o555),
    ("/sys", 0o555),
    ("/run", 0o755),
    ("/tmp", 0o1777),
];

/// Where an image goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Into this directory (vmbench's `images` cache), content-addressed.
    Cache(PathBuf),
    /// To exactly this file (its sidecar beside it).
    Path(PathBuf),
}

/// What every image build takes besides its recipe.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The static guest agent.
    pub agent: PathBuf,
    pub output: Output,
    /// Recorded in the provenance (e.g. "0.1.0 (git abc123)"); not an input.
    pub vmbench_version: String,
}

/// A built (or found) image.
#[derive(Debug, Clone)]
pub struct Built {
    pub path: PathBuf,
    pub info: ImageInfo,
    /// It was there already, built from the same inputs.
    pub up_to_date: bool,
}

/// What from-raw starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawSource {
    /// A raw ext4 file system image.
    Image(PathBuf),
    /// A directory tree.
    Tree(PathBuf),
}

impl RawSource {
    /// A directory is a tree, anything else an image.
    pub fn detect(path: &Path) -> Result<RawSource> {
        match fs::metadata(path) {
            Ok(meta) if meta.is_dir() => Ok(RawSource::Tree(path.to_path_buf())),
            Ok(_) => Ok(RawSource::Image(path.to_path_buf())),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Err(Error::NotFound {
                path: path.to_path_buf(),
            }),
            Err(source) => Err(Error::Io {
                what: "read",
                path: path.to_path_buf(),
                source,
            }),
        }
    }
}

/// `vmbench rootfs ext4`: a plain image of `tree` (no systemd assumed):
/// the agent, and `/sbin/init` pointing to it unless the tree has one.
/// `size_mib` defaults to the tree's size with generous headroom.
pub fn build_plain_image(
    tree: &Path,
    size_mib: Option<u64>,
    options: &BuildOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Built> {
    let agent = check_agent(&options.agent)?;
    if let RawSource::Image(_) = RawSource::detect(tree)? {
        return Err(Error::TreeNotADirectory {
            path: tree.to_path_buf(),
        });
    }
    progress(&format!("hashing {}", tree.display()));
    let summary = scan_tree(tree)?;
    let job = Job {
        kind: ImageKind::Plain,
        recipe: Recipe::Ext4 {
            tree_sha256: summary.sha256.clone(),
            size_mib,
        },
        content: Content::Tree {
            path: tree,
            summary,
            size_mib,
        },
        agent,
        sources: Sources {
            tree: Some(tree.to_path_buf()),
            image: None,
            agent: options.agent.clone(),
        },
    };
    assemble(job, options, progress)
}

/// `vmbench rootfs from-raw`: a new base image from a systemd distribution's
/// raw ext4 image (copied) or tree, with the agent as a systemd service.
pub fn build_systemd_image(
    source: &RawSource,
    options: &BuildOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Built> {
    let agent = check_agent(&options.agent)?;
    let (job_source, content, sources) = match source {
        RawSource::Tree(tree) => {
            require_systemd(&HostTree { root: tree }, tree)?;
            progress(&format!("hashing {}", tree.display()));
            let summary = scan_tree(tree)?;
            (
                (SourceKind::Tree, summary.sha256.clone()),
                Content::Tree {
                    path: tree,
                    summary,
                    size_mib: None,
                },
                Sources {
                    tree: Some(tree.clone()),
                    image: None,
                    agent: options.agent.clone(),
                },
            )
        }
        RawSource::Image(image) => {
            check_ext4(image)?;
            if needs_recovery(image)? {
                return Err(Error::NeedsRecovery {
                    path: image.clone(),
                });
            }
            require_systemd(&Ext4Image { image }, image)?;
            progress(&format!("hashing {}", image.display()));
            (
                (SourceKind::Image, sha256_file(image)?),
                Content::Image { path: image },
                Sources {
                    tree: None,
                    image: Some(image.clone()),
                    agent: options.agent.clone(),
                },
            )
        }
    };
    let job = Job {
        kind: ImageKind::Systemd,
        recipe: Recipe::FromRaw {
            source: job_source.0,
            source_sha256: job_source.1,
        },
        content,
        agent,
        sources,
    };
    assemble(job, options, progress)
}

fn require_systemd(root: &dyn RootView, path: &Path) -> Result<()> {
    match find_systemd(root)? {
        Some(_) => Ok(()),
        None => Err(Error::NoSystemd {
            path: path.to_path_buf(),
        }),
    }
}

/// One image to make.
pub(crate) struct Job<'a> {
    pub kind: ImageKind,
    pub recipe: Recipe,
    pub content: Content<'a>,
    pub agent: Agent,
    pub sources: Sources,
}

pub(crate) enum Content<'a> {
    Tree {
        path: &'a Path,
        summary: TreeSummary,
        size_mib: Option<u64>,
    },
    Image {
        path: &'a Path,
    },
}

/// The provenance and output path a job would have, without building it.
pub(crate) fn provenance_of(
    kind: ImageKind,
    recipe: Recipe,
    agent: &Agent,
    options: &BuildOptions,
) -> (Provenance, PathBuf) {
    let unit_sha256 = (kind == ImageKind::Systemd).then(|| sha256_hex(AGENT_UNIT.as_bytes()));
    let provenance = Provenance::new(
        kind,
        recipe,
        agent.sha256.clone(),
        unit_sha256,
        options.vmbench_version.clone(),
    );
    let out = match &options.output {
        Output::Cache(dir) => dir.join(provenance.file_name()),
        Output::Path(path) => path.clone(),
    };
    (provenance, out)
}

/// The image at `out` if it is already the result of these inputs.
pub(crate) fn existing(provenance: &Provenance, out: &Path) -> Option<Built> {
    up_to_date(out, &provenance.inputs_sha256).map(|info| Built {
        path: out.to_path_buf(),
        info,
        up_to_date: true,
    })
}

/// Steps 1-4 of the module notes.
pub(crate) fn assemble(
    job: Job<'_>,
    options: &BuildOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Built> {
    let (provenance, out) = provenance_of(job.kind, job.recipe.clone(), &job.agent, options);
    if let Some(built) = existing(&provenance, &out) {
        return Ok(built);
    }
    let dir = parent_dir(&out);
    fs::create_dir_all(dir).map_err(|source| Error::write(dir, source))?;
    let (file, temp) = TempFile::create_beside(&out).map_err(|e| Error::write(&out, e))?;

    let (size_mib, normalize) = match &job.content {
        Content::Tree {
            path,
            summary,
            size_mib,
        } => {
            let size_mib = size_mib.unwrap_or_else(|| default_size_mib(summary, &job.agent));
            if size_mib == 0 {
                return Err(Error::ImageTooSmall {
                    path: out,
                    size_mib,
                    detail: "an image of 0 MiB holds nothing".into(),
                });
            }
            let size_bytes = size_mib
                .checked_mul(MIB)
                .ok_or(Error::ImageTooLarge { size_mib })?;
            file.set_len(size_bytes)
                .map_err(|e| Error::write(&out, e))?;
            progress(&format!(
                "mkfs.ext4 -d {}: {size_mib} MiB, {} entries",
                path.display(),
                summary.entries
            ));
            // The file system's identity follows from its inputs, like its name.
            let seed = sha2::Sha256::digest(
                format!("vmbench ext4 {}", provenance.inputs_sha256).as_bytes(),
            );
            e2fs::mkfs_ext4(&Mkfs {
                image: temp.path(),
                tree: path,
                uuid: e2fs::uuid_from(&seed[..16]),
                hash_seed: e2fs::uuid_from(&seed[16..32]),
                inodes: (size_bytes / BYTES_PER_INODE).max((summary.entries + 16) * 3 / 2 + 1024),
                out: &out,
                size_mib,
            })?;
            (size_mib, true)
        }
        Content::Image { path } => {
            progress(&format!("copying {}", path.display()));
            let size_bytes = sparse_copy(path, &file, &out)?;
            (size_bytes / MIB, false)
        }
    };

    progress("installing the agent");
    let staged = tempfile::tempdir().map_err(|source| Error::Io {
        what: "create a temporary directory in",
        path: std::env::temp_dir(),
        source,
    })?;
    let stage = |name: &str, bytes: &[u8]| -> Result<PathBuf> {
        let path = staged.path().join(name);
        fs::write(&path, bytes).map_err(|source| Error::Io {
            what: "write",
            path: path.clone(),
            source,
        })?;
        Ok(path)
    };
    let mut json = serde_json::to_vec_pretty(&provenance).expect("plain data serializes");
    json.push(b'\n');
    let agent_bytes = fs::read(&job.agent.path).map_err(|source| Error::Io {
        what: "read the guest agent",
        path: job.agent.path.clone(),
        source,
    })?;
    if sha256_hex(&agent_bytes) != job.agent.sha256 {
        return Err(Error::Io {
            what: "read the guest agent",
            path: job.agent.path.clone(),
            source: io::Error::other("it changed while the image was being built"),
        });
    }
    let staged_files = Staged {
        agent: stage("vmbench-init", &agent_bytes)?,
        unit: stage("vmbench-agent.service", AGENT_UNIT.as_bytes())?,
        image_json: stage("image.json", &json)?,
    };
    let script = plan(temp.path(), job.kind, &staged_files, normalize)?;
    script.run(temp.path(), &out, size_mib)?;
    check_ext4(temp.path())?;

    progress("hashing the image");
    file.sync_all().map_err(|e| Error::write(&out, e))?;
    drop(file);
    let size_bytes = fs::metadata(temp.path())
        .map_err(|e| Error::write(&out, e))?
        .len();
    let info = ImageInfo {
        provenance,
        format: "raw".into(),
        filesystem: "ext4".into(),
        size_bytes,
        sha256: sha256_file(temp.path())?,
        e2fsprogs_version: e2fs::version()?,
        sources: job.sources,
    };
    persist_with_sidecar(temp, &out, &info)?;
    Ok(Built {
        path: out,
        info,
        up_to_date: false,
    })
}

/// Renames the image into place and writes its sidecar, so that at no
/// moment does a sidecar describe another image than the one beside it.
fn persist_with_sidecar(temp: TempFile, out: &Path, info: &ImageInfo) -> Result<()> {
    let sidecar = sidecar_path(out);
    let mut json = serde_json::to_vec_pretty(info).expect("plain data serializes");
    json.push(b'\n');
    let (mut file, sidecar_temp) =
        TempFile::create_beside(&sidecar).map_err(|e| Error::write(&sidecar, e))?;
    io::Write::write_all(&mut file, &json).map_err(|e| Error::write(&sidecar, e))?;
    file.sync_all().map_err(|e| Error::write(&sidecar, e))?;
    drop(file);
    match fs::remove_file(&sidecar) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(Error::write(&sidecar, error)),
    }
    temp.persist(out).map_err(|e| Error::write(out, e))?;
    if let Err(error) = sidecar_temp.persist(&sidecar) {
        // An image without its sidecar would be rebuilt, but do not leave
        // a complete-looking file that nothing vouches for.
        let _ = fs::remove_file(out);
        return Err(Error::write(&sidecar, error));
    }
    Ok(())
}

/// The default size: the tree and the agent, plus half as much again and
/// at least 64 MiB free, rounded up to 64 MiB.
fn default_size_mib(summary: &TreeSummary, agent: &Agent) -> u64 {
    let needed = summary.data_bytes
        + agent.size_bytes.div_ceil(BLOCK_BYTES) * BLOCK_BYTES
        + (summary.entries + 16) * INODE_BYTES
        + 16 * BLOCK_BYTES;
    let total = needed + (needed / 2).max(MIN_HEADROOM_BYTES);
    total.div_ceil(SIZE_STEP_MIB * MIB) * SIZE_STEP_MIB
}

/// Host copies of what goes into the image, for debugfs `write`.
struct Staged {
    agent: PathBuf,
    unit: PathBuf,
    image_json: PathBuf,
}

/// The debugfs script that installs everything (see the module notes).
fn plan(image: &Path, kind: ImageKind, staged: &Staged, normalize: bool) -> Result<Script> {
    let view = Ext4Image { image };
    let mut planner = Planner {
        view: &view,
        image,
        script: Script::new(),
        created: BTreeSet::new(),
    };
    if normalize {
        normalize_times(image, &mut planner.script)?;
    }
    planner.ensure_dir("/usr/local/sbin")?;
    planner.install_file(AGENT_PATH, &staged.agent, 0o755)?;
    match kind {
        ImageKind::Plain => {
            for (dir, mode) in MOUNT_POINTS {
                if let Lookup::Missing { dir: at, rest } = lookup(&view, dir, true)? {
                    if rest.len() == 1 {
                        planner.mkdir(&at, &rest, mode)?;
                    }
                }
            }
            planner.init_symlink()?;
        }
        ImageKind::Systemd => {
            planner.ensure_dir("/etc/systemd/system/multi-user.target.wants")?;
            planner.install_file(AGENT_UNIT_PATH, &staged.unit, 0o644)?;
            planner.install_symlink(AGENT_UNIT_WANTS_PATH, AGENT_UNIT_PATH)?;
        }
    }
    planner.ensure_dir("/etc/vmbench")?;
    planner.install_file(IMAGE_JSON_PATH, &staged.image_json, 0o644)?;
    Ok(planner.script)
}

struct Planner<'a> {
    view: &'a Ext4Image<'a>,
    image: &'a Path,
    script: Script,
    /// Directories this script creates (absolute, symlink free).
    created: BTreeSet<String>,
}

impl Planner<'_> {
    /// Makes `rest` below the existing directory `at`, each level once.
    fn mkdir(&mut self, at: &[String], rest: &[String], mode: u32) -> Result<()> {
        let mut path = at.to_vec();
        for part in rest {
            path.push(part.clone());
            let abs = absolute(&path);
            if self.created.insert(abs.clone()) {
                self.script.mkdir(&abs, mode)?;
            }
        }
        Ok(())
    }

    fn ensure_dir(&mut self, path: &str) -> Result<()> {
        match lookup(self.view, path, true)? {
            Lookup::Found {
                kind: NodeKind::Dir,
                ..
            } => Ok(()),
            Lookup::Found { real, .. } => Err(Error::NotADirectory {
                root: format!("image {}", self.image.display()),
                path: absolute(&real),
            }),
            Lookup::Missing { dir, rest } => self.mkdir(&dir, &rest, 0o755),
        }
    }

    /// Where a file at `path` goes: its symlink-free path, after removing
    /// what is there (never a directory).
    fn replace(&mut self, path: &str) -> Result<String> {
        match lookup(self.view, path, false)? {
            Lookup::Found {
                kind: NodeKind::Dir,
                real,
            } => Err(Error::NotAFile {
                image: self.image.to_path_buf(),
                path: absolute(&real),
            }),
            Lookup::Found { real, .. } => {
                let abs = absolute(&real);
                self.script.rm(&abs)?;
                Ok(abs)
            }
            Lookup::Missing { mut dir, rest } => {
                dir.extend(rest);
                Ok(absolute(&dir))
            }
        }
    }

    fn install_file(&mut self, path: &str, host: &Path, mode: u32) -> Result<()> {
        let at = self.replace(path)?;
        self.script.write(host, &at, mode)
    }

    fn install_symlink(&mut self, path: &str, target: &str) -> Result<()> {
        let at = self.replace(path)?;
        self.script.symlink(&at, target)
    }

    /// `/sbin/init` -> the agent, unless the tree has an `/sbin/init`
    /// (through a usr-merged `/sbin` too); missing directories on the way
    /// (`/usr/sbin` behind `/sbin -> usr/sbin`) are created.
    fn init_symlink(&mut self) -> Result<()> {
        match lookup(self.view, "/sbin/init", false)? {
            Lookup::Found { .. } => Ok(()),
            Lookup::Missing { dir, rest } => {
                let (name, parents) = rest.split_last().expect("a missing path has a name");
                self.mkdir(&dir, parents, 0o755)?;
                let mut at = dir.clone();
                at.extend(parents.iter().cloned());
                at.push(name.clone());
                self.script.symlink(&absolute(&at), AGENT_PATH)
            }
        }
    }
}

/// Copies the file at `source` into `dest` keeping holes (images are mostly
/// holes); returns the length.
fn sparse_copy(source: &Path, dest: &File, out: &Path) -> Result<u64> {
    use nix::errno::Errno;
    use nix::unistd::{lseek, Whence};
    let read_err = |source_err| Error::Io {
        what: "read",
        path: source.to_path_buf(),
        source: source_err,
    };
    let input = File::open(source).map_err(read_err)?;
    let len = input.metadata().map_err(read_err)?.len();
    dest.set_len(len).map_err(|e| Error::write(out, e))?;
    let mut offset: i64 = 0;
    let end = len as i64;
    while offset < end {
        let data = match lseek(&input, offset, Whence::SeekData) {
            Ok(data) => data,
            // No data after `offset`: the rest is a hole.
            Err(Errno::ENXIO) => break,
            Err(errno) => return Err(read_err(errno.into())),
        };
        let hole = lseek(&input, data, Whence::SeekHole)
            .map_err(|errno| read_err(errno.into()))?
            .min(end);
        copy_range(&input, dest, data as u64, (hole - data) as u64).map_err(|e| {
            match e.kind() {
                io::ErrorKind::StorageFull => Error::NoSpace {
                    path: out.to_path_buf(),
                },
                _ => Error::Io {
                    what: "copy",
                    path: source.to_path_buf(),
                    source: e,
                },
            }
        })?;
        offset = hole;
    }
    Ok(len)
}

/// Copies `len` bytes at `offset` from `input` to the same offset in
/// `output`: in the kernel where it can, else through a buffer.
fn copy_range(input: &File, output: &File, offset: u64, len: u64) -> io::Result<()> {
    use nix::errno::Errno;
    let mut done = 0u64;
    while done < len {
        let mut off_in = (offset + done) as i64;
        let mut off_out = off_in;
        let chunk = (len - done).min(1 << 30) as usize;
        match nix::fcntl::copy_file_range(
            input,
            Some(&mut off_in),
            output,
            Some(&mut off_out),
            chunk,
        ) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            Ok(n) => done += n as u64,
            Err(Errno::EXDEV | Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {
                return copy_buffered(input, output, offset + done, len - done)
            }
            Err(Errno::EINTR) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
    Ok(())
}

fn copy_buffered(input: &File, output: &File, offset: u64, len: u64) -> io::Result<()> {
    let mut buffer = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buffer.len() as u64) as usize;
        input.read_exact_at(&mut buffer[..n], offset + done)?;
        output.write_all_at(&buffer[..n], offset + done)?;
        done += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_sizes_leave_room_and_are_rounded() {
        let agent = Agent {
            path: "a".into(),
            sha256: String::new(),
            size_bytes: 1_500_000,
        };
        let tiny = TreeSummary {
            sha256: String::new(),
            entries: 3,
            data_bytes: 3 * BLOCK_BYTES,
        };
        assert_eq!(default_size_mib(&tiny, &agent), 128);
        let debian = TreeSummary {
            sha256: String::new(),
            entries: 12_000,
            data_bytes: 263 * MIB,
        };
        let mib = default_size_mib(&debian, &agent);
        assert_eq!(mib % SIZE_STEP_MIB, 0);
        assert!(mib * MIB >= 263 * MIB * 3 / 2, "{mib}");
        assert!(mib <= 512, "{mib}");
    }
}
