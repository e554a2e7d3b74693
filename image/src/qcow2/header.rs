//! The qcow2 header checked: what [`ondisk`](super::ondisk) decoded, judged
//! against the rules of the format and against the file's length, giving
//! the [`Header`] the chain walker needs or the [`Problem`] that says why
//! the image cannot be used.

use super::ondisk::{
    be_u32, extensions, RawHeader, EXT_BACKING_FORMAT, MAGIC, V2_HEADER_BYTES, V3_HEADER_BYTES,
};

const MIN_CLUSTER_BITS: u32 = 9;
const MAX_CLUSTER_BITS: u32 = 21;
const MAX_REFCOUNT_ORDER: u32 = 6;
const MAX_BACKING_NAME_BYTES: u32 = 1023;

/// The incompatible feature bits qcow2 defines. vmbench accepts none of
/// them: imago refuses all but the external data file, which we refuse too
/// (it would be one more file opened on the image's say-so).
const INCOMPATIBLE_FEATURES: [(u32, &str); 5] = [
    (
        0,
        "the dirty bit (its refcounts need repair: `qemu-img check -r all`)",
    ),
    (1, "the corrupt bit (`qemu-img check` says what is wrong)"),
    (2, "an external data file"),
    (3, "a compression type other than zlib"),
    (4, "extended L2 entries (subclusters)"),
];

/// What the header says that the opener needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub cluster_bits: u32,
    /// The virtual disk's size.
    pub size_bytes: u64,
    pub backing: Option<Backing>,
    /// Its entries point to the L2 tables.
    pub l1_table: Table,
    /// Its entries point to the refcount blocks.
    pub refcount_table: Table,
}

impl Header {
    pub fn cluster_bytes(&self) -> u64 {
        1 << self.cluster_bits
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backing {
    /// As written in the image: relative to its directory unless absolute.
    pub name: String,
    /// From the backing format extension; none means "probe it".
    pub format: Option<String>,
}

/// A table of 8-byte entries the header points to, inside the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    pub offset: u64,
    pub entries: u64,
}

/// Why a qcow2 image cannot be used; the text completes "Disk image X is a …".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("truncated qcow2 image: {0}")]
    Truncated(String),
    #[error("qcow2 image with a corrupt header: {0}")]
    Corrupt(String),
    #[error("qcow2 image using {0}, which is not supported")]
    Unsupported(String),
}

/// How many bytes from the start of the file [`parse`] wants: the first
/// cluster, as far as `prefix` (the file's first 24 bytes or more) tells
/// its size. A parse of fewer bytes reports what is missing.
pub fn first_cluster_bytes(prefix: &[u8]) -> usize {
    match be_u32(prefix, 20) {
        Some(bits) if (MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&bits) => 1 << bits,
        _ => V3_HEADER_BYTES as usize,
    }
}

/// Parses the header in `first` (the file's first bytes, up to its first
/// cluster) of a file of `file_bytes` bytes, checking that the tables it
/// points to lie inside the file.
pub fn parse(first: &[u8], file_bytes: u64) -> Result<Header, Problem> {
    let truncated_header = || {
        Problem::Truncated(format!(
            "the file ends inside the qcow2 header ({file_bytes} bytes)"
        ))
    };
    if first.len() < 8 {
        return Err(truncated_header());
    }
    if &first[..4] != MAGIC {
        return Err(Problem::Corrupt("no qcow2 magic".into()));
    }
    let version = be_u32(first, 4).ok_or_else(truncated_header)?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(Problem::Unsupported(
                "format version 1 (the original qcow)".into(),
            ))
        }
        v => return Err(Problem::Unsupported(format!("format version {v}"))),
    }
    let raw = RawHeader::decode(first).ok_or_else(truncated_header)?;

    let cluster_bits = raw.cluster_bits;
    if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
        return Err(Problem::Corrupt(format!(
            "cluster_bits {cluster_bits} is outside {MIN_CLUSTER_BITS}..={MAX_CLUSTER_BITS}"
        )));
    }
    let cluster_bytes = 1u64 << cluster_bits;
    if raw.crypt_method != 0 {
        return Err(Problem::Unsupported(format!(
            "encryption (crypt_method {})",
            raw.crypt_method
        )));
    }

    let extensions_start = if version == 3 {
        check_v3_fields(&raw, cluster_bytes)?
    } else {
        V2_HEADER_BYTES
    };

    let l1_table = check_l1_table(&raw, file_bytes, cluster_bytes)?;
    let refcount_table = check_refcount_table(&raw, file_bytes, cluster_bytes)?;

    let backing_offset = raw.backing_file_offset;
    let backing_name = if backing_offset == 0 {
        None
    } else {
        backing_name(first, cluster_bytes, backing_offset, raw.backing_file_size)?
    };
    // Extensions end where the backing file name starts, or with the cluster.
    let extensions_end = if backing_offset == 0 {
        cluster_bytes
    } else {
        backing_offset.min(cluster_bytes)
    };
    let backing_format = backing_format(first, extensions_start, extensions_end)?;
    Ok(Header {
        version,
        cluster_bits,
        size_bytes: raw.size,
        backing: backing_name.map(|name| Backing {
            name,
            format: backing_format,
        }),
        l1_table,
        refcount_table,
    })
}

/// Checks what version 3 adds; where its header extensions start.
fn check_v3_fields(raw: &RawHeader, cluster_bytes: u64) -> Result<u64, Problem> {
    let incompatible = raw.incompatible_features;
    if incompatible != 0 {
        let named: Vec<String> = (0..64)
            .filter(|bit| incompatible & (1u64 << bit) != 0)
            .map(|bit| {
                INCOMPATIBLE_FEATURES
                    .iter()
                    .find(|(b, _)| *b == bit)
                    .map_or_else(
                        || format!("incompatible feature bit {bit}"),
                        |(_, n)| n.to_string(),
                    )
            })
            .collect();
        return Err(Problem::Unsupported(named.join(" and ")));
    }
    let refcount_order = raw.refcount_order;
    if refcount_order > MAX_REFCOUNT_ORDER {
        return Err(Problem::Corrupt(format!(
            "refcount_order {refcount_order} is above {MAX_REFCOUNT_ORDER}"
        )));
    }
    let header_length = u64::from(raw.header_length);
    if header_length < V3_HEADER_BYTES || header_length > cluster_bytes || header_length % 8 != 0 {
        return Err(Problem::Corrupt(format!(
            "header_length {header_length} is not a multiple of 8 between {V3_HEADER_BYTES} and the cluster size {cluster_bytes}"
        )));
    }
    Ok(header_length)
}

fn check_l1_table(raw: &RawHeader, file_bytes: u64, cluster_bytes: u64) -> Result<Table, Problem> {
    let entries = raw.l1_size;
    let offset = raw.l1_table_offset;
    if entries > 0 {
        if offset % cluster_bytes != 0 {
            return Err(Problem::Corrupt(format!(
                "the L1 table offset {offset:#x} is not cluster-aligned"
            )));
        }
        let end = offset.checked_add(u64::from(entries) * 8).ok_or_else(|| {
            Problem::Corrupt(format!("the L1 table offset {offset:#x} overflows"))
        })?;
        if end > file_bytes {
            return Err(Problem::Truncated(format!(
                "its L1 table ({offset:#x}..{end:#x}) ends beyond the end of the file ({file_bytes} bytes)"
            )));
        }
    }
    // Each L1 entry maps an L2 table of cluster_bytes / 8 data clusters.
    let mappable_bytes =
        u128::from(entries) * u128::from(cluster_bytes / 8) * u128::from(cluster_bytes);
    if u128::from(raw.size) > mappable_bytes {
        return Err(Problem::Corrupt(format!(
            "its L1 table of {entries} entries cannot map its size of {} bytes",
            raw.size
        )));
    }
    Ok(Table {
        offset,
        entries: u64::from(entries),
    })
}

fn check_refcount_table(
    raw: &RawHeader,
    file_bytes: u64,
    cluster_bytes: u64,
) -> Result<Table, Problem> {
    let offset = raw.refcount_table_offset;
    let clusters = raw.refcount_table_clusters;
    if clusters == 0 {
        return Err(Problem::Corrupt("the refcount table is empty".into()));
    }
    if offset == 0 || offset % cluster_bytes != 0 {
        return Err(Problem::Corrupt(format!(
            "the refcount table offset {offset:#x} is not a cluster-aligned offset past the header"
        )));
    }
    // At most 2^32 clusters of 2^21 bytes: no overflow.
    let bytes = u64::from(clusters) * cluster_bytes;
    let end = offset.checked_add(bytes).ok_or_else(|| {
        Problem::Corrupt(format!("the refcount table offset {offset:#x} overflows"))
    })?;
    if end > file_bytes {
        return Err(Problem::Truncated(format!(
            "its refcount table ({offset:#x}..{end:#x}) ends beyond the end of the file ({file_bytes} bytes)"
        )));
    }
    Ok(Table {
        offset,
        entries: bytes / 8,
    })
}

fn backing_name(
    first: &[u8],
    cluster_bytes: u64,
    offset: u64,
    length: u32,
) -> Result<Option<String>, Problem> {
    if length > MAX_BACKING_NAME_BYTES {
        return Err(Problem::Corrupt(format!(
            "the backing file name is {length} bytes long (at most {MAX_BACKING_NAME_BYTES})"
        )));
    }
    let end = offset.saturating_add(u64::from(length));
    if end > cluster_bytes {
        return Err(Problem::Corrupt(
            "the backing file name lies outside the first cluster".into(),
        ));
    }
    // Both bounds are below the cluster size (at most 2 MiB): they fit a usize.
    let Some(bytes) = first.get(offset as usize..end as usize) else {
        return Err(Problem::Truncated(
            "the file ends inside its backing file name".into(),
        ));
    };
    let name = std::str::from_utf8(bytes)
        .map_err(|_| Problem::Corrupt("the backing file name is not UTF-8".into()))?;
    if name.contains('\0') {
        return Err(Problem::Corrupt(
            "the backing file name contains a NUL byte".into(),
        ));
    }
    Ok((!name.is_empty()).then(|| name.to_string()))
}

/// The backing format extension's value, if there is one between `start` and `end`.
fn backing_format(first: &[u8], start: u64, end: u64) -> Result<Option<String>, Problem> {
    let mut format = None;
    for extension in extensions(first, start, end) {
        let extension = extension.map_err(|overrun| {
            Problem::Corrupt(format!(
                "header extension {:#x} at {:#x} runs past the header area",
                overrun.kind, overrun.offset
            ))
        })?;
        if extension.kind == EXT_BACKING_FORMAT {
            let name = std::str::from_utf8(extension.data)
                .map_err(|_| Problem::Corrupt("the backing format name is not UTF-8".into()))?;
            format = Some(name.to_string());
        }
    }
    Ok(format)
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::super::ondisk::EXT_END;
    use super::*;

    /// A well-formed v3 header of a `size_bytes` image with 64 KiB clusters
    /// (QEMU's layout: header, refcount table, refcount block, L1 table),
    /// its backing name and format if given; with the file's length.
    pub(crate) fn image(size_bytes: u64, backing: Option<(&str, &str)>) -> (Vec<u8>, u64) {
        let cluster: u64 = 1 << 16;
        let mut h = vec![0u8; cluster as usize];
        let put32 =
            |h: &mut Vec<u8>, o: usize, v: u32| h[o..o + 4].copy_from_slice(&v.to_be_bytes());
        let put64 =
            |h: &mut Vec<u8>, o: usize, v: u64| h[o..o + 8].copy_from_slice(&v.to_be_bytes());
        h[..4].copy_from_slice(MAGIC);
        put32(&mut h, 4, 3);
        put32(&mut h, 20, 16);
        put64(&mut h, 24, size_bytes);
        let l1_entries = size_bytes.div_ceil(cluster * (cluster / 8)) as u32;
        put32(&mut h, 36, l1_entries);
        put64(&mut h, 40, 3 * cluster);
        put64(&mut h, 48, cluster);
        put32(&mut h, 56, 1);
        put32(&mut h, 96, 4);
        put32(&mut h, 100, 112);
        let mut ext = 112;
        if let Some((name, format)) = backing {
            put32(&mut h, ext, EXT_BACKING_FORMAT);
            put32(&mut h, ext + 4, format.len() as u32);
            h[ext + 8..ext + 8 + format.len()].copy_from_slice(format.as_bytes());
            ext += 8 + format.len().next_multiple_of(8);
            put32(&mut h, ext, EXT_END);
            let name_at = ext + 8;
            h[name_at..name_at + name.len()].copy_from_slice(name.as_bytes());
            put64(&mut h, 8, name_at as u64);
            put32(&mut h, 16, name.len() as u32);
        }
        let file_bytes = 3 * cluster + (u64::from(l1_entries) * 8).next_multiple_of(cluster);
        (h, file_bytes)
    }

    pub(crate) fn put(h: &mut [u8], offset: usize, value: &[u8]) {
        h[offset..offset + value.len()].copy_from_slice(value);
    }

    #[test]
    fn a_well_formed_header_parses() {
        let (h, len) = image(1 << 30, Some(("base.raw", "raw")));
        assert_eq!(
            parse(&h, len).unwrap(),
            Header {
                version: 3,
                cluster_bits: 16,
                size_bytes: 1 << 30,
                backing: Some(Backing {
                    name: "base.raw".into(),
                    format: Some("raw".into())
                }),
                l1_table: Table {
                    offset: 3 << 16,
                    entries: 2
                },
                refcount_table: Table {
                    offset: 1 << 16,
                    entries: 1 << 13
                },
            }
        );
        let (h, len) = image(1 << 20, None);
        assert_eq!(parse(&h, len).unwrap().backing, None);
        assert_eq!(first_cluster_bytes(&h), 1 << 16);
        assert_eq!(first_cluster_bytes(b"QFI"), V3_HEADER_BYTES as usize);
    }

    #[test]
    fn truncation_is_named() {
        let (h, len) = image(1 << 30, None);
        for cut in [0, 7, 50, 100] {
            let err = parse(&h[..cut], cut as u64).unwrap_err();
            assert!(
                matches!(&err, Problem::Truncated(m) if m.contains("inside the qcow2 header")),
                "{cut}: {err}"
            );
        }
        // The header is whole but the file ends before its tables.
        let err = parse(&h, 4096).unwrap_err();
        assert_eq!(
            err.to_string(),
            "truncated qcow2 image: its L1 table (0x30000..0x30010) ends beyond the end of the file (4096 bytes)"
        );
        assert!(matches!(parse(&h, 0x30008), Err(Problem::Truncated(_))));
        assert!(parse(&h, len).is_ok());
        // Zeros past the end of the file are what qcow2 readers take them
        // for (unallocated); only the tables must be there.
        assert!(parse(&h, 0x30010).is_ok());
        // The refcount table (one cluster at 0x10000) cut short.
        let (mut h, _) = image(1 << 20, None);
        put(&mut h, 36, &0u32.to_be_bytes());
        put(&mut h, 24, &0u64.to_be_bytes());
        let err = parse(&h, 0x18000).unwrap_err();
        assert!(
            matches!(&err, Problem::Truncated(m) if m.contains("refcount table (0x10000..0x20000)")),
            "{err}"
        );
    }

    #[test]
    fn corrupt_fields_are_named() {
        let (good, len) = image(1 << 30, None);
        let cases: [(usize, &[u8], &str); 7] = [
            (0, b"QFI\x00", "no qcow2 magic"),
            (20, &40u32.to_be_bytes(), "cluster_bits 40"),
            (40, &0x30001u64.to_be_bytes(), "L1 table offset 0x30001"),
            (36, &0u32.to_be_bytes(), "cannot map"),
            (56, &0u32.to_be_bytes(), "refcount table is empty"),
            (100, &20u32.to_be_bytes(), "header_length 20"),
            (96, &9u32.to_be_bytes(), "refcount_order 9"),
        ];
        for (offset, bytes, expected) in cases {
            let mut h = good.clone();
            put(&mut h, offset, bytes);
            let err = parse(&h, len).unwrap_err();
            assert!(
                matches!(&err, Problem::Corrupt(m) if m.contains(expected)),
                "{expected}: {err}"
            );
        }
        let (mut h, len) = image(1 << 30, Some(("base", "raw")));
        put(&mut h, 16, &2000u32.to_be_bytes());
        assert!(parse(&h, len)
            .unwrap_err()
            .to_string()
            .contains("2000 bytes long"));
    }

    #[test]
    fn too_few_l1_entries_for_the_size_are_refused() {
        // 2 L1 entries of 64 KiB clusters map 1 GiB; a 2 GiB disk needs more.
        let (mut h, len) = image(1 << 30, None);
        put(&mut h, 24, &(2u64 << 30).to_be_bytes());
        let err = parse(&h, len).unwrap_err();
        assert_eq!(
            err,
            Problem::Corrupt(
                "its L1 table of 2 entries cannot map its size of 2147483648 bytes".into()
            )
        );
    }

    #[test]
    fn unsupported_features_are_named() {
        let (good, len) = image(1 << 30, None);
        let mut h = good.clone();
        put(&mut h, 4, &1u32.to_be_bytes());
        assert_eq!(
            parse(&h, len).unwrap_err().to_string(),
            "qcow2 image using format version 1 (the original qcow), which is not supported"
        );
        let mut h = good.clone();
        put(&mut h, 32, &2u32.to_be_bytes());
        assert!(parse(&h, len)
            .unwrap_err()
            .to_string()
            .contains("encryption"));
        let mut h = good.clone();
        put(&mut h, 72, &((1u64 << 3) | (1 << 9)).to_be_bytes());
        assert_eq!(
            parse(&h, len).unwrap_err(),
            Problem::Unsupported(
                "a compression type other than zlib and incompatible feature bit 9".into()
            )
        );
        let mut h = good.clone();
        put(&mut h, 72, &(1u64 << 2).to_be_bytes());
        assert_eq!(
            parse(&h, len).unwrap_err(),
            Problem::Unsupported("an external data file".into())
        );
    }

    #[test]
    fn a_v2_header_has_no_v3_fields() {
        let (mut h, len) = image(1 << 20, None);
        put(&mut h, 4, &2u32.to_be_bytes());
        // What would be v3's refcount_order is ignored in v2 (its
        // extensions start at 72, where a zero type ends them).
        put(&mut h, 96, &u32::MAX.to_be_bytes());
        assert_eq!(parse(&h, len).unwrap().version, 2);
    }

    proptest! {
        /// Any bytes and any file length: a header or a problem, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), file_bytes: u64) {
            let mut bytes = bytes;
            if bytes.len() >= 4 {
                bytes[..4].copy_from_slice(MAGIC);
            }
            let _ = parse(&bytes, file_bytes);
        }

        /// A good header with a few fields overwritten at random.
        #[test]
        fn mutated_headers_never_panic(
            edits in proptest::collection::vec((0usize..200, any::<u64>()), 1..6),
            file_bytes in 0u64..(1 << 22),
        ) {
            let (mut h, _) = image(1 << 30, Some(("base.qcow2", "qcow2")));
            for (offset, value) in edits {
                put(&mut h, offset, &value.to_be_bytes());
            }
            let _ = parse(&h, file_bytes);
        }
    }
}
