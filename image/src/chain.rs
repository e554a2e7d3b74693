//! A backing chain, opened file by file from the top image down.
//!
//! Each file is opened here, explicitly: only the top image may be opened
//! for writing (and only when the caller asks), every backing file is
//! opened `O_RDONLY`, so a write reaching a base image would be refused by
//! the kernel, not just by imago's bookkeeping. For each file, in order:
//! it must exist (a missing backing file is named, with the image naming
//! it), be a regular file or a block device, not be one already in the
//! chain (by device and inode: a chain that loops is refused), and the
//! chain must not grow past [`MAX_CHAIN_DEPTH`]. With
//! [`OpenOptions::lock`] it is then `flock(2)`ed, the writable one
//! exclusively and the rest shared, so two writers cannot share an image
//! and nobody can open a base for writing while a VM reads it. Its format
//! is the one the caller states for the top image ([`OpenOptions::format`])
//! or the image above declares for a backing file, probed from its first
//! bytes only when none is stated (a raw file whose guest wrote a qcow2
//! header into it is then still raw). A writable top image must have its
//! format stated ([`Error::FormatNotStated`]): the guest writes its first
//! bytes, and a probe would let it turn a raw disk into a qcow2 image that
//! names any host file as its backing file. A qcow2 file's header and tables are vetted
//! ([`crate::qcow2`]) and its backing file, resolved as QEMU resolves it,
//! is the next in the chain.

use std::fs::File;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::file::{self, read_prefix};
use crate::format::{sniff, Format, Sniffed, SNIFF_BYTES};
use crate::{qcow2, Error, Result, MAX_CHAIN_DEPTH};

/// How [`Chain::open`] opens the files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// Open the top image for writing too. Backing files are always read-only.
    pub writable: bool,
    /// `flock(2)` every file: the writable top exclusively, the rest shared;
    /// a file someone holds the other way is [`Error::Locked`]. The locks
    /// last as long as the files stay open.
    pub lock: bool,
    /// The top image's format, as the caller states it; `None` probes its
    /// first bytes, which only a read-only open may do.
    pub format: Option<Format>,
}

/// One file of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub path: PathBuf,
    pub format: Format,
    pub file_bytes: u64,
}

/// The files of a chain, opened and vetted, the top one first.
#[derive(Debug)]
pub struct Chain {
    pub(crate) opened: Vec<Opened>,
}

#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) layer: Layer,
    pub(crate) file: File,
    pub(crate) writable: bool,
}

/// What the image above says about its backing file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Declared {
    Probe,
    Raw,
    Qcow2,
}

impl Chain {
    /// Opens and vets every file of the chain from `top` down.
    pub fn open(top: &Path, options: OpenOptions) -> Result<Chain> {
        let mut opened: Vec<Opened> = Vec::new();
        let mut seen: Vec<(u64, u64)> = Vec::new();
        let stated = match options.format {
            Some(Format::Raw) => Declared::Raw,
            Some(Format::Qcow2) => Declared::Qcow2,
            None if options.writable => {
                return Err(Error::FormatNotStated {
                    path: top.to_path_buf(),
                })
            }
            None => Declared::Probe,
        };
        let mut next = Some((top.to_path_buf(), stated));
        while let Some((path, declared)) = next.take() {
            if opened.len() == MAX_CHAIN_DEPTH {
                return Err(Error::TooDeep {
                    top: top.to_path_buf(),
                });
            }
            let below = opened.last().map(|o| o.layer.path.as_path());
            let writable = options.writable && opened.is_empty();
            let file = file::open(&path, writable, below)?;
            let read_err = |source| Error::Io {
                what: "read",
                path: path.clone(),
                source,
            };
            let meta = file.metadata().map_err(read_err)?;
            let file_type = meta.file_type();
            if file_type.is_dir() {
                return Err(Error::Directory { path });
            }
            if !file_type.is_file() && !file_type.is_block_device() {
                return Err(Error::NotAFile { path });
            }
            if seen.contains(&(meta.dev(), meta.ino())) {
                return Err(Error::Loop {
                    top: top.to_path_buf(),
                    path,
                });
            }
            seen.push((meta.dev(), meta.ino()));
            if options.lock {
                file::lock(&file, writable).map_err(|source| match source.raw_os_error() {
                    Some(libc::EWOULDBLOCK) => Error::Locked { path: path.clone() },
                    _ => Error::Io {
                        what: "lock",
                        path: path.clone(),
                        source,
                    },
                })?;
            }
            let file_bytes = file::len_bytes(&file).map_err(read_err)?;
            let prefix = read_prefix(&file, SNIFF_BYTES).map_err(read_err)?;
            let format = format_of(&path, below, declared, sniff(&prefix))?;
            if file_bytes == 0 {
                return Err(Error::Empty { path });
            }
            if format == Format::Qcow2 {
                let first =
                    read_prefix(&file, qcow2::first_cluster_bytes(&prefix)).map_err(read_err)?;
                let qcow2_err = |problem| Error::Qcow2 {
                    path: path.clone(),
                    problem,
                };
                let header = qcow2::parse(&first, file_bytes).map_err(qcow2_err)?;
                qcow2::check_tables(&file, &header, file_bytes)
                    .map_err(read_err)?
                    .map_err(qcow2_err)?;
                if let Some(backing) = header.backing {
                    let declared = declared_format(&path, backing.format.as_deref())?;
                    next = Some((backing_path(&path, &backing.name), declared));
                }
            }
            opened.push(Opened {
                layer: Layer {
                    path,
                    format,
                    file_bytes,
                },
                file,
                writable,
            });
        }
        Ok(Chain { opened })
    }

    /// The files, the top one first.
    pub fn layers(&self) -> Vec<Layer> {
        self.opened.iter().map(|o| o.layer.clone()).collect()
    }

    /// The top image.
    pub fn top(&self) -> &Layer {
        &self.opened[0].layer
    }
}

/// The format to read `path` as: the declared one, else what its first
/// bytes say if vmbench reads that. `below` names it as its backing file.
fn format_of(
    path: &Path,
    below: Option<&Path>,
    declared: Declared,
    sniffed: Sniffed,
) -> Result<Format> {
    match (declared, sniffed) {
        (Declared::Raw, _) => Ok(Format::Raw),
        (Declared::Qcow2 | Declared::Probe, Sniffed::Qcow2) => Ok(Format::Qcow2),
        (Declared::Qcow2, _) => Err(match below {
            Some(image) => Error::BackingNotQcow2 {
                image: image.to_path_buf(),
                path: path.to_path_buf(),
            },
            None => Error::NotQcow2 {
                path: path.to_path_buf(),
            },
        }),
        (Declared::Probe, Sniffed::Raw) => Ok(Format::Raw),
        (Declared::Probe, Sniffed::OtherImage(what)) => Err(Error::OtherImage {
            path: path.to_path_buf(),
            what,
        }),
        (Declared::Probe, Sniffed::NotAnImage(what)) => Err(Error::NotAnImage {
            path: path.to_path_buf(),
            what,
        }),
    }
}

/// The backing format `image` declares.
fn declared_format(image: &Path, format: Option<&str>) -> Result<Declared> {
    match format {
        // imago's create builder writes "" for "not given".
        None | Some("") => Ok(Declared::Probe),
        Some("raw" | "file") => Ok(Declared::Raw),
        Some("qcow2") => Ok(Declared::Qcow2),
        Some(other) => Err(Error::BackingFormat {
            image: image.to_path_buf(),
            format: other.to_string(),
        }),
    }
}

/// A backing file name as QEMU reads it: relative to the image's directory
/// ("." for an image named without one).
pub fn backing_path(image: &Path, name: &str) -> PathBuf {
    let name = Path::new(name);
    if name.is_absolute() {
        return name.to_path_buf();
    }
    match image.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(name),
        _ => Path::new(".").join(name),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::testing::{create_qcow2, overlay_over_raw, write_raw};

    fn open_err(path: &Path) -> Error {
        Chain::open(path, OpenOptions::default()).unwrap_err()
    }

    #[test]
    fn backing_names_are_relative_to_the_image() {
        assert_eq!(
            backing_path(Path::new("/a/b/top.qcow2"), "base.raw"),
            Path::new("/a/b/base.raw")
        );
        assert_eq!(
            backing_path(Path::new("/a/b/top.qcow2"), "/c/base.raw"),
            Path::new("/c/base.raw")
        );
        assert_eq!(
            backing_path(Path::new("top.qcow2"), "../base.raw"),
            Path::new("./../base.raw")
        );
    }

    #[test]
    fn a_chain_is_walked_top_first_and_backing_files_are_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name);
        write_raw(&p("base.raw"), 1 << 20);
        create_qcow2(&p("mid.qcow2"), 1 << 20, Some(("base.raw", "raw")));
        // No backing format: probed (qcow2).
        create_qcow2(&p("top.qcow2"), 1 << 20, Some(("mid.qcow2", "")));
        let chain = Chain::open(
            &p("top.qcow2"),
            OpenOptions {
                writable: true,
                lock: false,
                format: Some(Format::Qcow2),
            },
        )
        .unwrap();
        let formats: Vec<_> = chain.layers().iter().map(|l| l.format).collect();
        assert_eq!(formats, [Format::Qcow2, Format::Qcow2, Format::Raw]);
        assert_eq!(chain.layers()[2].path, p("base.raw"));
        assert_eq!(chain.layers()[2].file_bytes, 1 << 20);
        let writable: Vec<_> = chain.opened.iter().map(|o| o.writable).collect();
        assert_eq!(writable, [true, false, false]);
        assert_eq!(chain.top().path, p("top.qcow2"));
    }

    #[test]
    fn chains_that_loop_or_never_end_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name);
        // An image that is its own backing file: imago's permissive gate
        // would recurse until the stack overflows.
        create_qcow2(&p("self.qcow2"), 1 << 20, Some(("self.qcow2", "qcow2")));
        assert!(open_err(&p("self.qcow2"))
            .to_string()
            .contains("loops: it reaches"));
        write_raw(&p("base.raw"), 1 << 20);
        let mut below = "base.raw".to_string();
        for i in 0..MAX_CHAIN_DEPTH {
            let name = format!("layer{i}.qcow2");
            create_qcow2(
                &p(&name),
                1 << 20,
                Some((&below, if i == 0 { "raw" } else { "qcow2" })),
            );
            below = name;
        }
        let err = open_err(&p(&below)).to_string();
        assert!(
            err.contains(&format!("deeper than {MAX_CHAIN_DEPTH}")),
            "{err}"
        );
        let almost = p(&format!("layer{}.qcow2", MAX_CHAIN_DEPTH - 2));
        assert!(Chain::open(&almost, OpenOptions::default()).is_ok());
    }

    #[test]
    fn a_backing_file_declared_qcow2_must_be_one() {
        let dir = tempfile::tempdir().unwrap();
        write_raw(&dir.path().join("base.raw"), 1 << 20);
        let overlay = dir.path().join("overlay.qcow2");
        create_qcow2(&overlay, 1 << 20, Some(("base.raw", "qcow2")));
        assert!(open_err(&overlay)
            .to_string()
            .contains("is declared qcow2 but is not"));
        // A header the probe found qcow2 but which is not whole, as a backing file.
        let mut f = std::fs::File::create(dir.path().join("fake.qcow2")).unwrap();
        f.write_all(b"QFI\xfb\0\0\0\x03").unwrap();
        let top = dir.path().join("top.qcow2");
        create_qcow2(&top, 1 << 20, Some(("fake.qcow2", "")));
        let err = open_err(&top).to_string();
        assert!(
            err.contains("fake.qcow2 is a truncated qcow2 image"),
            "{err}"
        );
    }

    #[test]
    fn what_is_not_a_raw_or_qcow2_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name);
        assert!(matches!(open_err(&p("nope")), Error::NotFound { .. }));
        assert!(matches!(open_err(dir.path()), Error::Directory { .. }));
        assert!(matches!(
            open_err(Path::new("/dev/null")),
            Error::NotAFile { .. }
        ));
        std::fs::write(p("empty"), b"").unwrap();
        assert!(matches!(open_err(&p("empty")), Error::Empty { .. }));
        std::fs::write(p("x.vmdk"), b"KDMV\x01\0\0\0").unwrap();
        assert!(matches!(
            open_err(&p("x.vmdk")),
            Error::OtherImage {
                what: "VMDK image",
                ..
            }
        ));
        std::fs::write(p("kernel"), b"\x7fELF\x02\x01").unwrap();
        assert!(matches!(open_err(&p("kernel")), Error::NotAnImage { .. }));
        // A raw backing file declared raw is not probed: a guest may have
        // written anything at its start.
        std::fs::write(p("vmdk-looking.raw"), b"KDMV\x01\0\0\0").unwrap();
        create_qcow2(&p("over.qcow2"), 1 << 20, Some(("vmdk-looking.raw", "raw")));
        assert!(Chain::open(&p("over.qcow2"), OpenOptions::default()).is_ok());
        // Declared in a format vmbench does not read.
        create_qcow2(&p("vmdk-backed.qcow2"), 1 << 20, Some(("x.vmdk", "vmdk")));
        assert!(matches!(
            open_err(&p("vmdk-backed.qcow2")),
            Error::BackingFormat { format, .. } if format == "vmdk"
        ));
        // A missing backing file, named as resolved.
        create_qcow2(&p("orphan.qcow2"), 1 << 20, Some(("gone.raw", "raw")));
        assert!(matches!(
            open_err(&p("orphan.qcow2")),
            Error::BackingMissing { image, path } if image == p("orphan.qcow2") && path == p("gone.raw")
        ));
    }

    /// Found writing the qcow2_chain fuzz target: a backing file that is a
    /// FIFO hung the open (and the pre-boot check, and the VMM) for ever.
    #[test]
    fn a_fifo_is_refused_at_once_as_image_or_backing_file() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("base.fifo");
        let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo(3) reads a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let overlay = dir.path().join("overlay.qcow2");
        create_qcow2(&overlay, 1 << 20, Some(("base.fifo", "raw")));
        // Nobody ever opens the FIFO for writing: a blocking open would not
        // return, so the opens run on a thread and a hang fails the test.
        let (tx, rx) = std::sync::mpsc::channel();
        let paths = [overlay, fifo.clone()];
        std::thread::spawn(move || {
            for path in paths {
                let _ = tx.send(open_err(&path));
            }
        });
        for _ in 0..2 {
            let err = rx
                .recv_timeout(std::time::Duration::from_secs(30))
                .expect("opening a chain with a FIFO in it hung");
            assert!(
                matches!(&err, Error::NotAFile { path } if *path == fifo),
                "{err}"
            );
        }
    }

    /// A raw disk whose guest wrote a qcow2 header naming `backing` into
    /// its first bytes: what the next run finds there.
    fn forged_raw(path: &Path, backing: &Path) {
        create_qcow2(path, 1 << 20, Some((backing.to_str().unwrap(), "raw")));
        let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        file.set_len(1 << 20).unwrap();
    }

    #[test]
    fn a_stated_format_is_never_probed() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk.raw");
        // A host file the forged header names: probed, the chain would
        // reach for it (here it does not exist, so that is an error).
        let secret = dir.path().join("host-secret");
        forged_raw(&disk, &secret);
        let open = |writable, format| {
            Chain::open(
                &disk,
                OpenOptions {
                    writable,
                    lock: false,
                    format,
                },
            )
        };
        let chain = open(true, Some(Format::Raw)).unwrap();
        assert_eq!(chain.layers().len(), 1, "no backing file");
        assert_eq!(chain.top().format, Format::Raw);
        assert_eq!(chain.top().file_bytes, 1 << 20);
        assert!(matches!(
            open(true, None),
            Err(Error::FormatNotStated { path }) if path == disk
        ));
        // Read-only and unstated: probed (the documented choice).
        assert!(matches!(
            open(false, None),
            Err(Error::BackingMissing { path, .. }) if path == secret
        ));
        write_raw(&dir.path().join("plain.raw"), 1 << 20);
        let err = Chain::open(
            &dir.path().join("plain.raw"),
            OpenOptions {
                format: Some(Format::Qcow2),
                ..OpenOptions::default()
            },
        )
        .unwrap_err();
        assert!(matches!(err, Error::NotQcow2 { .. }), "{err}");
        assert!(err.to_string().contains("stated to be qcow2"), "{err}");
    }

    #[test]
    fn locks_keep_a_second_writer_out_and_let_readers_share() {
        let dir = tempfile::tempdir().unwrap();
        let (base, overlay) = overlay_over_raw(dir.path());
        let locked = |writable, format| OpenOptions {
            writable,
            lock: true,
            format: Some(format),
        };
        let _vm = Chain::open(&overlay, locked(true, Format::Qcow2)).unwrap();
        assert!(matches!(
            Chain::open(&overlay, locked(false, Format::Qcow2)),
            Err(Error::Locked { .. })
        ));
        // Without locking, nothing is asked.
        assert!(Chain::open(&overlay, OpenOptions::default()).is_ok());
        let _reader = Chain::open(&base, locked(false, Format::Raw)).unwrap();
        assert!(matches!(
            Chain::open(&base, locked(true, Format::Raw)),
            Err(Error::Locked { path }) if path == base
        ));
    }
}
