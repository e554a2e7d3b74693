//! The cpio "newc" format (SVR4, no CRC), as the kernel's initramfs unpacker
//! reads it (`init/initramfs.c`) and its `usr/gen_init_cpio` writes it.
//!
//! An archive is a sequence of entries, each:
//!
//! ```text
//! header  110 ASCII bytes: the magic "070701", then 13 fields of 8 hex digits:
//!         ino mode uid gid nlink mtime filesize devmajor devminor
//!         rdevmajor rdevminor namesize check
//! name    namesize bytes including the terminating NUL; header + name are
//!         padded with NULs to a multiple of 4 bytes
//! data    filesize bytes (a file's contents, a symlink's target), padded to 4
//! ```
//!
//! The entry named `TRAILER!!!` ends the archive. Padding is counted from the
//! start of the stream, so each archive must itself start on a 4-byte
//! boundary. The kernel accepts several archives back to back with NUL bytes
//! between them (that is how an early-microcode archive is prepended to the
//! main one), and a later entry replaces an earlier one of the same name.
//!
//! The writer here is deterministic (mtime, uid and gid 0; inodes numbered in
//! output order) so that an image can be cached and compared by its hash. The
//! reader is strict and never panics: the host runs it on user-supplied files.

use std::borrow::Cow;

use crate::{Error, Result};

const MAGIC: &[u8; 6] = b"070701";
const HEADER_LEN: usize = 110;
const FIELD_LEN: usize = 8;
/// Header fields in on-disk order, for error messages.
const FIELD_NAMES: [&str; 13] = [
    "ino",
    "mode",
    "uid",
    "gid",
    "nlink",
    "mtime",
    "filesize",
    "devmajor",
    "devminor",
    "rdevmajor",
    "rdevminor",
    "namesize",
    "check",
];
pub(crate) const TRAILER_NAME: &str = "TRAILER!!!";
/// Longest name the kernel unpacks, NUL included; it silently skips longer
/// ones, which would leave a hole in the guest's root.
pub(crate) const PATH_MAX_BYTES: usize = 4096;

pub(crate) const S_IFMT: u32 = 0o170_000;
pub(crate) const S_IFDIR: u32 = 0o040_000;
pub(crate) const S_IFREG: u32 = 0o100_000;
pub(crate) const S_IFLNK: u32 = 0o120_000;
pub(crate) const S_IFCHR: u32 = 0o020_000;
pub(crate) const PERMISSION_BITS: u32 = 0o7777;

/// A file-tree node as the writer takes it: what to create, not how a header
/// encodes it. Modes are permission bits only (`0o7777`); the file type comes
/// from the variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir {
        mode: u32,
    },
    File {
        mode: u32,
        data: Vec<u8>,
    },
    /// Always mode 0o777, as Linux ignores a symlink's permissions.
    Symlink {
        target: String,
    },
    CharDev {
        mode: u32,
        major: u32,
        minor: u32,
    },
}

/// One entry as stored in an archive, with every header field decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpioEntry {
    /// The name as stored, without its NUL. This crate writes `dev/console`;
    /// other tools may write `./dev/console` or `/dev/console`.
    pub name: Vec<u8>,
    pub ino: u32,
    /// File type and permission bits, as in `st_mode`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub rdev_major: u32,
    pub rdev_minor: u32,
    /// A file's contents or a symlink's target.
    pub data: Vec<u8>,
}

impl CpioEntry {
    pub fn name_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.name)
    }

    /// The node this entry creates, or `None` for kinds the writer does not
    /// produce (block devices, FIFOs, sockets) and non-UTF-8 symlink targets.
    pub fn node(&self) -> Option<Node> {
        let mode = self.mode & PERMISSION_BITS;
        match self.mode & S_IFMT {
            S_IFDIR => Some(Node::Dir { mode }),
            S_IFREG => Some(Node::File {
                mode,
                data: self.data.clone(),
            }),
            S_IFLNK => {
                // gen_init_cpio stores the target with its NUL, GNU cpio without.
                let target = self.data.strip_suffix(&[0]).unwrap_or(&self.data);
                let target = String::from_utf8(target.to_vec()).ok()?;
                Some(Node::Symlink { target })
            }
            S_IFCHR => Some(Node::CharDev {
                mode,
                major: self.rdev_major,
                minor: self.rdev_minor,
            }),
            _ => None,
        }
    }
}

/// The 13 numeric header fields, in on-disk order.
#[derive(Debug, Default, PartialEq, Eq)]
struct Header {
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: u32,
    file_size: u32,
    dev_major: u32,
    dev_minor: u32,
    rdev_major: u32,
    rdev_minor: u32,
    name_size: u32,
    check: u32,
}

impl Header {
    fn to_fields(&self) -> [u32; 13] {
        [
            self.ino,
            self.mode,
            self.uid,
            self.gid,
            self.nlink,
            self.mtime,
            self.file_size,
            self.dev_major,
            self.dev_minor,
            self.rdev_major,
            self.rdev_minor,
            self.name_size,
            self.check,
        ]
    }

    fn from_fields(f: [u32; 13]) -> Self {
        Self {
            ino: f[0],
            mode: f[1],
            uid: f[2],
            gid: f[3],
            nlink: f[4],
            mtime: f[5],
            file_size: f[6],
            dev_major: f[7],
            dev_minor: f[8],
            rdev_major: f[9],
            rdev_minor: f[10],
            name_size: f[11],
            check: f[12],
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(MAGIC);
        for field in self.to_fields() {
            // Upper case, as gen_init_cpio writes it; readers accept either.
            out.extend_from_slice(format!("{field:08X}").as_bytes());
        }
    }

    /// Decodes the header at `offset` of the stream `bytes`.
    fn decode(bytes: &[u8], offset: usize) -> Result<Self> {
        if offset >= bytes.len() {
            return Err(Error::MissingTrailer {
                offset: bytes.len(),
            });
        }
        // Magic first, so that junk shorter than a header is called junk.
        let available = &bytes[offset..];
        let magic = &available[..available.len().min(MAGIC.len())];
        if magic != &MAGIC[..magic.len()] {
            return Err(Error::BadMagic {
                offset,
                found: magic.escape_ascii().to_string(),
            });
        }
        let raw = span(bytes, offset, HEADER_LEN).ok_or(Error::TruncatedHeader {
            offset,
            available_bytes: available.len(),
        })?;
        let fields = &raw[MAGIC.len()..];
        let mut values = [0u32; 13];
        for (index, (value, digits)) in values
            .iter_mut()
            .zip(fields.chunks_exact(FIELD_LEN))
            .enumerate()
        {
            *value = parse_hex(digits).ok_or_else(|| Error::BadHexField {
                offset: offset + MAGIC.len() + index * FIELD_LEN,
                field: FIELD_NAMES[index],
                value: digits.escape_ascii().to_string(),
            })?;
        }
        Ok(Self::from_fields(values))
    }
}

/// Exactly 8 hex digits, either case. Stricter than `from_str_radix`, which
/// would also take a sign.
fn parse_hex(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |value, &digit| {
        Some(value << 4 | char::from(digit).to_digit(16)?)
    })
}

/// `bytes[start..start + len]`, or `None` if that runs past the end.
fn span(bytes: &[u8], start: usize, len: usize) -> Option<&[u8]> {
    bytes.get(start..start.checked_add(len)?)
}

fn align4(offset: usize) -> usize {
    offset.saturating_add(3) & !3
}

fn pad4(out: &mut Vec<u8>) {
    out.resize(align4(out.len()), 0);
}

fn len_u32(bytes: &[u8]) -> u32 {
    u32::try_from(bytes.len()).expect("callers keep names and data below 4 GiB")
}

/// Encodes `entries`, in the order given, as one newc archive.
///
/// The caller guarantees valid names (non-empty, relative, no NUL, at most
/// [`PATH_MAX_BYTES`] with the NUL, not the trailer's name), parents before
/// children, and data below 4 GiB; [`crate::Initramfs`] checks all of these
/// as entries are added.
pub(crate) fn write_newc<'a>(entries: impl IntoIterator<Item = (&'a str, &'a Node)>) -> Vec<u8> {
    let mut out = Vec::new();
    for (index, (name, node)) in entries.into_iter().enumerate() {
        let (mode, nlink, data, rdev_major, rdev_minor) = match node {
            Node::Dir { mode } => (S_IFDIR | mode, 2, &[][..], 0, 0),
            Node::File { mode, data } => (S_IFREG | mode, 1, &data[..], 0, 0),
            Node::Symlink { target } => (S_IFLNK | 0o777, 1, target.as_bytes(), 0, 0),
            Node::CharDev { mode, major, minor } => (S_IFCHR | mode, 1, &[][..], *major, *minor),
        };
        let header = Header {
            // Distinct inodes keep the kernel from taking two regular files
            // for hard links of each other; numbering in output order keeps
            // them stable for the same inputs.
            ino: u32::try_from(index + 1).expect("fewer than 4 billion entries"),
            mode: mode & (S_IFMT | PERMISSION_BITS),
            nlink,
            file_size: len_u32(data),
            rdev_major,
            rdev_minor,
            name_size: len_u32(name.as_bytes()) + 1,
            ..Header::default()
        };
        push_entry(&mut out, &header, name.as_bytes(), data);
    }
    let trailer = Header {
        nlink: 1,
        name_size: len_u32(TRAILER_NAME.as_bytes()) + 1,
        ..Header::default()
    };
    push_entry(&mut out, &trailer, TRAILER_NAME.as_bytes(), &[]);
    out
}

fn push_entry(out: &mut Vec<u8>, header: &Header, name: &[u8], data: &[u8]) {
    header.encode(out);
    out.extend_from_slice(name);
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

/// Reads every entry of a stream of newc archives: one or more archives, each
/// ending with `TRAILER!!!`, with optional NUL padding between and after them,
/// as the kernel accepts. Entries come in stream order; the trailers are not
/// returned.
pub fn read_newc(bytes: &[u8]) -> Result<Vec<CpioEntry>> {
    let mut entries = Vec::new();
    let mut offset = skip_zeros(bytes, 0);
    if offset == bytes.len() {
        return Err(Error::Empty);
    }
    while offset < bytes.len() {
        let end = read_archive(bytes, offset, &mut entries)?;
        offset = skip_zeros(bytes, end);
    }
    Ok(entries)
}

/// The first offset at or after `offset` that is not a NUL byte.
pub(crate) fn skip_zeros(bytes: &[u8], offset: usize) -> usize {
    let zeros = bytes.get(offset..).unwrap_or_default();
    offset + zeros.iter().take_while(|&&byte| byte == 0).count()
}

/// Reads one archive starting at `start` of the stream `bytes` into
/// `entries`, and returns the offset just after its trailer's padding (at
/// most `bytes.len()`: padding cut off at the end of the stream is harmless).
pub(crate) fn read_archive(
    bytes: &[u8],
    start: usize,
    entries: &mut Vec<CpioEntry>,
) -> Result<usize> {
    if start % 4 != 0 {
        return Err(Error::MisalignedArchive { offset: start });
    }
    let mut offset = start;
    loop {
        let header = Header::decode(bytes, offset)?;
        let name_offset = offset + HEADER_LEN;
        let name = read_name(bytes, name_offset, header.name_size)?;
        let name_end = name_offset + name.len() + 1;
        // A stream cut off inside the padding after the last name loses
        // nothing; the kernel reads it, and so do we.
        let data_offset = align4(name_end).min(bytes.len());
        let data = span(bytes, data_offset, header.file_size as usize).ok_or_else(|| {
            Error::TruncatedData {
                offset: data_offset,
                name: String::from_utf8_lossy(name).into_owned(),
                size_bytes: header.file_size,
                available_bytes: bytes.len().saturating_sub(data_offset),
            }
        })?;
        let next = align4(data_offset + data.len());
        if name == TRAILER_NAME.as_bytes() {
            return Ok(next.min(bytes.len()));
        }
        entries.push(CpioEntry {
            name: name.to_vec(),
            ino: header.ino,
            mode: header.mode,
            uid: header.uid,
            gid: header.gid,
            nlink: header.nlink,
            mtime: header.mtime,
            dev_major: header.dev_major,
            dev_minor: header.dev_minor,
            rdev_major: header.rdev_major,
            rdev_minor: header.rdev_minor,
            data: data.to_vec(),
        });
        offset = next;
    }
}

/// The name at `offset`, without its NUL.
fn read_name(bytes: &[u8], offset: usize, name_size: u32) -> Result<&[u8]> {
    let raw = span(bytes, offset, name_size as usize).ok_or(Error::TruncatedName {
        offset,
        name_size_bytes: name_size,
        available_bytes: bytes.len().saturating_sub(offset),
    })?;
    let Some((&0, name)) = raw.split_last() else {
        return Err(Error::NameNotTerminated { offset });
    };
    let problem = if name.is_empty() {
        "is empty"
    } else if name.contains(&0) {
        "contains a NUL byte before its end"
    } else if raw.len() > PATH_MAX_BYTES {
        "is longer than PATH_MAX (4096 bytes), so the kernel would skip it"
    } else {
        return Ok(name);
    };
    Err(Error::BadName { offset, problem })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file(mode: u32, data: &[u8]) -> Node {
        Node::File {
            mode,
            data: data.to_vec(),
        }
    }

    /// A small archive with one entry of every kind the writer produces.
    fn sample() -> Vec<u8> {
        let nodes = [
            ("dev", Node::Dir { mode: 0o755 }),
            (
                "dev/console",
                Node::CharDev {
                    mode: 0o600,
                    major: 5,
                    minor: 1,
                },
            ),
            ("init", file(0o755, b"#!/bin/sh\necho hi\n")),
            (
                "sh",
                Node::Symlink {
                    target: "/init".into(),
                },
            ),
        ];
        write_newc(nodes.iter().map(|(name, node)| (*name, node)))
    }

    #[test]
    fn one_entry_matches_hand_computed_bytes() {
        let node = file(0o755, b"hi\n");
        let bytes = write_newc([("init", &node)]);
        let expected = concat!(
            // magic, ino 1, mode 0o100755, uid, gid, nlink 1, mtime,
            "070701",
            "00000001",
            "000081ED",
            "00000000",
            "00000000",
            "00000001",
            "00000000",
            // filesize 3, devmajor/minor, rdevmajor/minor, namesize 5, check
            "00000003",
            "00000000",
            "00000000",
            "00000000",
            "00000000",
            "00000005",
            "00000000",
            // 110 + 5 = 115: one NUL pads the name to 116; data pads to 120.
            "init\0\0",
            "hi\n\0",
            // The trailer: nlink 1, namesize 11; 110 + 11 = 121, padded to 124.
            "070701",
            "00000000",
            "00000000",
            "00000000",
            "00000000",
            "00000001",
            "00000000",
            "00000000",
            "00000000",
            "00000000",
            "00000000",
            "00000000",
            "0000000B",
            "00000000",
            "TRAILER!!!\0\0\0\0",
        );
        assert_eq!(String::from_utf8_lossy(&bytes), expected);
        assert_eq!(bytes.len(), 244);
    }

    #[test]
    fn writer_output_reads_back() {
        let entries = read_newc(&sample()).unwrap();
        let names: Vec<_> = entries.iter().map(|e| e.name_lossy()).collect();
        assert_eq!(names, ["dev", "dev/console", "init", "sh"]);
        let inodes: Vec<_> = entries.iter().map(|e| e.ino).collect();
        assert_eq!(inodes, [1, 2, 3, 4]);
        let console = &entries[1];
        assert_eq!(console.mode, S_IFCHR | 0o600);
        assert_eq!((console.rdev_major, console.rdev_minor), (5, 1));
        assert_eq!((console.dev_major, console.dev_minor), (0, 0));
        assert_eq!(entries[0].nlink, 2);
        assert!(entries[1..].iter().all(|e| e.nlink == 1));
        assert!(entries
            .iter()
            .all(|e| e.mtime == 0 && e.uid == 0 && e.gid == 0));
        assert_eq!(
            entries[3].node(),
            Some(Node::Symlink {
                target: "/init".into()
            })
        );
        assert_eq!(entries[3].mode, S_IFLNK | 0o777);
    }

    #[test]
    fn lower_case_hex_and_nul_terminated_symlinks_are_accepted() {
        // GNU cpio writes lower-case hex; gen_init_cpio stores a symlink's NUL.
        let mut bytes = Vec::new();
        bytes.extend_from_slice(b"070701");
        for field in [1, 0o120777, 0, 0, 1, 0, 6, 0, 0, 0, 0, 3, 0] {
            bytes.extend_from_slice(format!("{field:08x}").as_bytes());
        }
        bytes.extend_from_slice(b"sh\0\0\0\0/init\0\0\0");
        bytes.extend_from_slice(&write_newc([]));
        let entries = read_newc(&bytes).unwrap();
        assert_eq!(
            entries[0].node(),
            Some(Node::Symlink {
                target: "/init".into()
            })
        );
    }

    #[test]
    fn trailing_zeros_and_concatenated_archives_are_read() {
        let mut bytes = sample();
        bytes.extend_from_slice(&[0; 512]);
        let second = write_newc([("extra", &file(0o644, b"x"))]);
        bytes.extend_from_slice(&second);
        bytes.extend_from_slice(&[0; 3]);
        let entries = read_newc(&bytes).unwrap();
        assert_eq!(entries.len(), 5);
        assert_eq!(entries[4].name, b"extra");
    }

    #[test]
    fn empty_input_is_refused() {
        assert!(matches!(read_newc(b""), Err(Error::Empty)));
        assert!(matches!(read_newc(&[0; 16]), Err(Error::Empty)));
    }

    #[test]
    fn bad_magic_names_its_offset() {
        let mut bytes = sample();
        // The second entry starts after the "dev" directory: 110 + 4 = 114 -> 116.
        bytes[116..122].copy_from_slice(b"070707");
        let err = read_newc(&bytes).unwrap_err();
        assert!(
            matches!(err, Error::BadMagic { offset: 116, .. }),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("offset 116"), "{message}");
        assert!(message.contains("070707"), "{message}");
    }

    #[test]
    fn junk_after_the_trailer_is_bad_magic() {
        let mut bytes = sample();
        let end = bytes.len();
        bytes.extend_from_slice(b"junk");
        let err = read_newc(&bytes).unwrap_err();
        assert!(
            matches!(err, Error::BadMagic { offset, .. } if offset == end),
            "{err:?}"
        );
    }

    #[test]
    fn misaligned_second_archive_is_refused() {
        let mut bytes = sample();
        bytes.push(0);
        let start = bytes.len();
        bytes.extend_from_slice(&sample());
        let err = read_newc(&bytes).unwrap_err();
        assert!(
            matches!(err, Error::MisalignedArchive { offset } if offset == start),
            "{err:?}"
        );
    }

    #[test]
    fn non_hex_field_names_field_and_offset() {
        let mut bytes = sample();
        // filesize is field 6: 6 + 6 * 8 = 54.
        bytes[54..62].copy_from_slice(b"0000000G");
        let err = read_newc(&bytes).unwrap_err();
        assert!(
            matches!(
                err,
                Error::BadHexField {
                    offset: 54,
                    field: "filesize",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("offset 54"), "{err}");
        // A sign is not a hex digit, though from_str_radix would take it.
        bytes[54..62].copy_from_slice(b"+0000001");
        assert!(matches!(read_newc(&bytes), Err(Error::BadHexField { .. })));
    }

    #[test]
    fn truncated_header_is_refused() {
        let bytes = sample();
        let err = read_newc(&bytes[..50]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::TruncatedHeader {
                    offset: 0,
                    available_bytes: 50
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("offset 0"), "{err}");
    }

    #[test]
    fn truncated_name_is_refused() {
        let bytes = sample();
        let err = read_newc(&bytes[..112]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::TruncatedName {
                    offset: 110,
                    name_size_bytes: 4,
                    available_bytes: 2
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("offset 110"), "{err}");
    }

    #[test]
    fn truncated_data_is_refused() {
        let node = file(0o755, b"hello");
        let bytes = write_newc([("init", &node)]);
        let err = read_newc(&bytes[..118]).unwrap_err();
        assert!(
            matches!(&err, Error::TruncatedData { offset: 116, size_bytes: 5, available_bytes: 2, name } if name == "init"),
            "{err:?}"
        );
        assert!(err.to_string().contains("offset 116"), "{err}");
    }

    #[test]
    fn name_without_nul_is_refused() {
        let mut bytes = sample();
        bytes[113] = b'x'; // "dev\0" -> "devx"
        let err = read_newc(&bytes).unwrap_err();
        assert!(
            matches!(err, Error::NameNotTerminated { offset: 110 }),
            "{err:?}"
        );
        assert!(err.to_string().contains("offset 110"), "{err}");
    }

    #[test]
    fn empty_and_nul_containing_names_are_refused() {
        let mut bytes = sample();
        bytes[111] = 0; // "dev\0" -> "d\0v\0"
        let err = read_newc(&bytes).unwrap_err();
        assert!(matches!(err, Error::BadName { offset: 110, .. }), "{err:?}");

        let mut bytes = Vec::new();
        let header = Header {
            nlink: 1,
            name_size: 1,
            ..Header::default()
        };
        header.encode(&mut bytes);
        bytes.extend_from_slice(b"\0\0");
        bytes.extend_from_slice(&write_newc([]));
        let err = read_newc(&bytes).unwrap_err();
        assert!(matches!(err, Error::BadName { offset: 110, .. }), "{err:?}");
        assert!(err.to_string().contains("is empty"), "{err}");
    }

    #[test]
    fn missing_trailer_is_refused() {
        let node = file(0o644, b"data");
        let bytes = write_newc([("a", &node)]);
        // The first entry is 112 (header + name) + 4 (data) bytes.
        let err = read_newc(&bytes[..116]).unwrap_err();
        assert!(
            matches!(err, Error::MissingTrailer { offset: 116 }),
            "{err:?}"
        );
        assert!(err.to_string().contains("offset 116"), "{err}");
    }

    #[test]
    fn every_truncation_before_the_trailer_ends_is_an_error() {
        let bytes = sample();
        // The trailer's 11-byte name is followed by 3 bytes of padding, which
        // the kernel does not need.
        let trailer_name_end = bytes.len() - 3;
        for len in 0..trailer_name_end {
            assert!(read_newc(&bytes[..len]).is_err(), "truncated to {len}");
        }
        for len in trailer_name_end..=bytes.len() {
            assert_eq!(
                read_newc(&bytes[..len]).unwrap().len(),
                4,
                "truncated to {len}"
            );
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = read_newc(&bytes);
        }

        #[test]
        fn random_headers_never_panic(
            fields in proptest::collection::vec(any::<u32>(), 13),
            tail in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            // Random bytes rarely get past the magic; this reaches the size checks.
            let mut bytes = MAGIC.to_vec();
            for field in fields {
                bytes.extend_from_slice(format!("{field:08X}").as_bytes());
            }
            bytes.extend_from_slice(&tail);
            let _ = read_newc(&bytes);
        }

        #[test]
        fn corrupted_archives_never_panic(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
            keep in any::<prop::sample::Index>(),
        ) {
            let mut bytes = sample();
            for (index, xor) in flips {
                let at = index.index(bytes.len());
                bytes[at] ^= xor;
            }
            let len = keep.index(bytes.len() + 1);
            let _ = read_newc(&bytes[..len]);
        }
    }
}
