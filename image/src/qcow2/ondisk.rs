//! qcow2 as stored: the header's big-endian fields at their offsets, the
//! header extensions after it, and table entries. Nothing here judges a
//! value ([`super::header`] does); every read is bounds-checked, so any
//! bytes decode to something or to `None`, never a panic.

/// The first four bytes of every qcow2 file.
pub const MAGIC: &[u8; 4] = b"QFI\xfb";
/// The fixed header of version 2, and of version 3 (which appends fields).
pub const V2_HEADER_BYTES: u64 = 72;
pub const V3_HEADER_BYTES: u64 = 104;
/// Header extension types: the end of the list, and the backing file's format.
pub const EXT_END: u32 = 0;
pub const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// Bits 9-55 of an L1, L2 or refcount table entry hold a cluster's offset.
const ENTRY_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Version 2 has no refcount_order field: its refcounts are 16 bits.
const V2_REFCOUNT_ORDER: u32 = 4;

/// The big-endian u32 at `offset`, if `bytes` hold all of it.
pub fn be_u32(bytes: &[u8], offset: u64) -> Option<u32> {
    let start = usize::try_from(offset).ok()?;
    let field = bytes.get(start..start.checked_add(4)?)?;
    Some(u32::from_be_bytes(field.try_into().ok()?))
}

/// The big-endian u64 at `offset`, if `bytes` hold all of it.
pub fn be_u64(bytes: &[u8], offset: u64) -> Option<u64> {
    let start = usize::try_from(offset).ok()?;
    let field = bytes.get(start..start.checked_add(8)?)?;
    Some(u64::from_be_bytes(field.try_into().ok()?))
}

/// The header's fields as the file has them (QEMU's names), not yet checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawHeader {
    pub version: u32,
    pub backing_file_offset: u64,
    pub backing_file_size: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub crypt_method: u32,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    /// The version 3 fields; version 2's implied values otherwise.
    pub incompatible_features: u64,
    pub refcount_order: u32,
    pub header_length: u32,
}

impl RawHeader {
    /// The length of the fixed header of `version` (2's for an unknown one).
    pub fn fixed_bytes(version: u32) -> u64 {
        if version == 3 {
            V3_HEADER_BYTES
        } else {
            V2_HEADER_BYTES
        }
    }

    /// The header in `first`, the file's first bytes; `None` if they end
    /// before the fixed header of the version they state.
    pub fn decode(first: &[u8]) -> Option<RawHeader> {
        let version = be_u32(first, 4)?;
        let v2 = RawHeader {
            version,
            backing_file_offset: be_u64(first, 8)?,
            backing_file_size: be_u32(first, 16)?,
            cluster_bits: be_u32(first, 20)?,
            size: be_u64(first, 24)?,
            crypt_method: be_u32(first, 32)?,
            l1_size: be_u32(first, 36)?,
            l1_table_offset: be_u64(first, 40)?,
            refcount_table_offset: be_u64(first, 48)?,
            refcount_table_clusters: be_u32(first, 56)?,
            incompatible_features: 0,
            refcount_order: V2_REFCOUNT_ORDER,
            header_length: V2_HEADER_BYTES as u32,
        };
        if version != 3 {
            return Some(v2);
        }
        Some(RawHeader {
            incompatible_features: be_u64(first, 72)?,
            refcount_order: be_u32(first, 96)?,
            header_length: be_u32(first, 100)?,
            ..v2
        })
    }
}

/// One header extension: type, where it starts, its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extension<'a> {
    pub kind: u32,
    pub offset: u64,
    pub data: &'a [u8],
}

/// An extension whose data runs past the end of the area given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overrun {
    pub kind: u32,
    pub offset: u64,
}

/// The header extensions in `first` between `start` and `end`: each a
/// type (u32), a length (u32) and its data padded to 8 bytes, until type 0,
/// `end` or the end of `first`. An overrun ends the list.
pub fn extensions(first: &[u8], start: u64, end: u64) -> Extensions<'_> {
    Extensions {
        first,
        offset: start,
        end: end.min(first.len() as u64),
    }
}

pub struct Extensions<'a> {
    first: &'a [u8],
    offset: u64,
    end: u64,
}

impl<'a> Iterator for Extensions<'a> {
    type Item = Result<Extension<'a>, Overrun>;

    fn next(&mut self) -> Option<Self::Item> {
        let offset = self.offset;
        if offset.saturating_add(8) > self.end {
            return None;
        }
        let kind = be_u32(self.first, offset)?;
        let length = be_u32(self.first, offset + 4)?;
        if kind == EXT_END {
            self.offset = self.end;
            return None;
        }
        let data_start = offset + 8;
        let data_end = data_start + u64::from(length);
        if data_end > self.end {
            self.offset = self.end;
            return Some(Err(Overrun { kind, offset }));
        }
        // Each step advances by at least 8 bytes, so the list ends.
        self.offset = data_start + u64::from(length).next_multiple_of(8);
        // Within `first`: data_end <= end <= first.len().
        let data = &self.first[data_start as usize..data_end as usize];
        Some(Ok(Extension { kind, offset, data }))
    }
}

/// The cluster an L1, L2 or refcount table entry points to (0: none).
pub fn entry_offset(entry: u64) -> u64 {
    entry & ENTRY_OFFSET_MASK
}

/// A table's big-endian 8-byte entries.
pub fn table_entries(bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
    bytes
        .chunks_exact(8)
        .map(|entry| u64::from_be_bytes(entry.try_into().expect("8 bytes")))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn version_2_has_its_implied_v3_fields() {
        let mut h = vec![0u8; V2_HEADER_BYTES as usize];
        h[4..8].copy_from_slice(&2u32.to_be_bytes());
        h[20..24].copy_from_slice(&16u32.to_be_bytes());
        let raw = RawHeader::decode(&h).unwrap();
        assert_eq!((raw.version, raw.cluster_bits), (2, 16));
        assert_eq!((raw.refcount_order, raw.header_length), (4, 72));
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        assert_eq!(RawHeader::decode(&h), None, "v3 needs 104 bytes");
    }

    #[test]
    fn extensions_end_at_type_0_or_the_area() {
        let mut area = vec![0u8; 64];
        area[0..4].copy_from_slice(&7u32.to_be_bytes());
        area[4..8].copy_from_slice(&3u32.to_be_bytes());
        area[8..11].copy_from_slice(b"abc");
        let found: Vec<_> = extensions(&area, 0, 64).collect();
        assert_eq!(
            found,
            [Ok(Extension {
                kind: 7,
                offset: 0,
                data: b"abc"
            })]
        );
        assert_eq!(
            extensions(&area, 0, 10).collect::<Vec<_>>(),
            [Err(Overrun { kind: 7, offset: 0 })]
        );
    }

    #[test]
    fn entries_keep_only_the_offset_bits() {
        let entry = (1u64 << 63) | (0x1234u64 << 16) | 1;
        assert_eq!(entry_offset(entry), 0x1234 << 16);
        let bytes = [entry.to_be_bytes(), 5u64.to_be_bytes()].concat();
        assert_eq!(table_entries(&bytes).collect::<Vec<_>>(), [entry, 5]);
    }

    proptest! {
        /// Any bytes decode or do not, and list their extensions, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            start: u64,
            end: u64,
        ) {
            let _ = RawHeader::decode(&bytes);
            let _ = extensions(&bytes, start % 400, end).count();
            let _ = table_entries(&bytes).map(entry_offset).count();
        }
    }
}
