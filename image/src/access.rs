//! A vetted chain handed to imago: each file given to imago with its
//! backing image already opened and a gate that denies imago any open of
//! its own, bottom first; then each qcow2 image's data clusters checked
//! through imago's mappings, the last check of a truncated file (the header
//! and tables were checked before, [`crate::qcow2`]).

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use imago::file::File as ImagoFile;
use imago::format::drivers::FormatDriverInstance;
use imago::qcow2::Qcow2;
use imago::raw::Raw;
use imago::{
    DenyImplicitOpenGate, FormatAccess, FormatDriverBuilder, ShallowMapping, StorageOpenOptions,
};

use crate::chain::{Chain, Layer};
use crate::format::Format;
use crate::qcow2::Problem;
use crate::{Error, Result};

/// An image open through imago, its chain included.
pub struct OpenImage {
    pub access: FormatAccess<ImagoFile>,
    /// The top image first.
    pub chain: Vec<Layer>,
}

impl std::fmt::Debug for OpenImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenImage")
            .field("chain", &self.chain)
            .finish()
    }
}

impl OpenImage {
    /// The disk's size as the guest sees it.
    pub fn virtual_size_bytes(&self) -> u64 {
        self.access.size()
    }

    /// `len` bytes of the disk at `offset`, as the guest would read them.
    pub fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        let top = &self.chain[0].path;
        guarded(top, "read", || self.access.read(&mut buf[..], offset))?;
        Ok(buf)
    }
}

impl Chain {
    /// Hands the files to imago, the writable top (if any) for writing.
    pub fn into_imago(self) -> Result<OpenImage> {
        let chain = self.layers();
        let mut lower: Option<FormatAccess<ImagoFile>> = None;
        for opened in self.opened.into_iter().rev() {
            let path = opened.layer.path.as_path();
            let writable = opened.writable;
            let storage = ImagoFile::from_open_file(
                opened.file,
                StorageOpenOptions::new().filename(path).write(writable),
            )
            .map_err(|source| Error::Imago {
                what: "open",
                path: path.to_path_buf(),
                source,
            })?;
            let gate = DenyImplicitOpenGate::default();
            let access = match opened.layer.format {
                Format::Raw => FormatAccess::new(guarded(path, "open", || {
                    Raw::builder(storage).write(writable).open(gate)
                })?),
                Format::Qcow2 => {
                    let backing = lower.take();
                    let qcow2 = guarded(path, "open", || {
                        Qcow2::<ImagoFile>::builder(storage)
                            .backing(backing)
                            .write(writable)
                            .open(gate)
                    })?;
                    check_data_clusters(path, &qcow2, opened.layer.file_bytes)?;
                    FormatAccess::new(qcow2)
                }
            };
            lower = Some(access);
        }
        Ok(OpenImage {
            access: lower.expect("a chain has a top"),
            chain,
        })
    }
}

/// Every data cluster the qcow2 image maps lies inside its file.
fn check_data_clusters(path: &Path, qcow2: &Qcow2<ImagoFile>, file_bytes: u64) -> Result<()> {
    let size = qcow2.size();
    let mut offset = 0u64;
    while offset < size {
        let (host_offset, len) = guarded(path, "read", || {
            let (mapping, len) = qcow2.get_mapping(offset, size - offset)?;
            Ok(match mapping {
                ShallowMapping::Raw { offset, .. } => (Some(offset), len),
                _ => (None, len),
            })
        })?;
        if len == 0 {
            break;
        }
        if let Some(host_offset) = host_offset {
            if host_offset.saturating_add(len) > file_bytes {
                return Err(Error::Qcow2 {
                    path: path.to_path_buf(),
                    problem: Problem::Truncated(format!(
                        "data for disk offset {offset} is at file offset {host_offset}, but the file has {file_bytes} bytes"
                    )),
                });
            }
        }
        offset += len;
    }
    Ok(())
}

/// imago panicked (it does on some corrupt images).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Panicked;

/// Runs a call into imago, turning its panic into [`Panicked`] so that a
/// corrupt image fails that call, not the process.
pub fn catch_panic<T>(op: impl FnOnce() -> T) -> std::result::Result<T, Panicked> {
    catch_unwind(AssertUnwindSafe(op)).map_err(|_| Panicked)
}

/// An imago call `what`ing `path`, its failure or panic an error naming the file.
fn guarded<T>(path: &Path, what: &'static str, op: impl FnOnce() -> io::Result<T>) -> Result<T> {
    match catch_panic(op) {
        Ok(result) => result.map_err(|source| Error::Imago {
            what,
            path: path.to_path_buf(),
            source,
        }),
        Err(Panicked) => Err(Error::ImagoPanicked {
            path: path.to_path_buf(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::OpenOptions;
    use crate::testing::{base_byte, create_qcow2, overlay_over_raw};

    fn open(path: &Path) -> Result<OpenImage> {
        Chain::open(path, OpenOptions::default())?.into_imago()
    }

    #[test]
    fn an_overlay_reads_through_to_its_base() {
        let dir = tempfile::tempdir().unwrap();
        let (_base, overlay) = overlay_over_raw(dir.path());
        let image = open(&overlay).unwrap();
        assert_eq!(image.virtual_size_bytes(), 1 << 20);
        assert_eq!(image.chain.len(), 2);
        let expected: Vec<u8> = (4096..8192).map(base_byte).collect();
        assert_eq!(image.read(4096, 4096).unwrap(), expected);
    }

    #[test]
    fn data_clusters_past_the_end_of_the_file_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.qcow2");
        create_qcow2(&path, 1 << 20, None);
        let good_bytes = std::fs::metadata(&path).unwrap().len();
        {
            let chain = Chain::open(
                &path,
                OpenOptions {
                    writable: true,
                    lock: false,
                    format: Some(Format::Qcow2),
                },
            )
            .unwrap();
            let image = chain.into_imago().unwrap();
            image.access.write(&[0xabu8; 65536][..], 1 << 19).unwrap();
            image.access.flush().unwrap();
        }
        let written = std::fs::read(&path).unwrap();
        assert!(written.len() as u64 > good_bytes, "a cluster was allocated");
        assert_eq!(open(&path).unwrap().read(1 << 19, 4).unwrap(), [0xab; 4]);
        std::fs::write(&path, &written[..written.len() - 65536]).unwrap();
        let err = open(&path).unwrap_err().to_string();
        assert!(
            err.contains("is a truncated qcow2 image: data for disk offset 524288"),
            "{err}"
        );
    }

    #[test]
    fn a_panic_is_caught() {
        assert_eq!(catch_panic(|| 7), Ok(7));
        assert_eq!(catch_panic(|| -> u8 { panic!("imago") }), Err(Panicked));
        let err = guarded(Path::new("x"), "read", || -> io::Result<()> { panic!() });
        assert!(matches!(err, Err(Error::ImagoPanicked { .. })));
    }
}
