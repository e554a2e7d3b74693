//! The second level: the L2 tables the L1 table points to and the refcount
//! blocks the refcount table points to must lie inside the file, or imago
//! would read the missing part as zeros (unallocated clusters, the backing
//! file showing through). The header's own tables were checked by
//! [`parse`](super::parse); the data clusters are checked through imago's
//! mappings once it has the image open ([`crate::chain`]).

use std::io;
use std::os::unix::fs::FileExt;

use super::header::{Header, Problem, Table};
use super::ondisk::{entry_offset, table_entries};
use crate::file::read_at_most;

/// Tables with more entries than QEMU ever makes (32 MiB) are not read
/// here; imago refuses them.
const MAX_CHECKED_ENTRIES: u64 = 4 << 20;

/// Checks that every cluster the L1 and refcount tables of `header` point
/// to lies inside `file`, of `file_bytes` bytes. Reading the file can fail
/// (the outer error); a table entry pointing past its end is a [`Problem`].
pub fn check_tables(
    file: &impl FileExt,
    header: &Header,
    file_bytes: u64,
) -> io::Result<Result<(), Problem>> {
    let cluster_bytes = header.cluster_bytes();
    for (name, table) in [
        ("L2 table", header.l1_table),
        ("refcount block", header.refcount_table),
    ] {
        if let Some(problem) = check_pointed(file, name, table, cluster_bytes, file_bytes)? {
            return Ok(Err(problem));
        }
    }
    Ok(Ok(()))
}

fn check_pointed(
    file: &impl FileExt,
    name: &str,
    table: Table,
    cluster_bytes: u64,
    file_bytes: u64,
) -> io::Result<Option<Problem>> {
    if table.entries > MAX_CHECKED_ENTRIES {
        return Ok(None);
    }
    // At most 32 MiB (the bound above).
    let mut bytes = vec![0u8; (table.entries * 8) as usize];
    read_at_most(file, &mut bytes, table.offset)?;
    for (index, entry) in table_entries(&bytes).enumerate() {
        let cluster = entry_offset(entry);
        if cluster != 0 && cluster.saturating_add(cluster_bytes) > file_bytes {
            return Ok(Some(Problem::Truncated(format!(
                "{name} {index} is at byte {cluster}, but the file has {file_bytes} bytes"
            ))));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::header::parse;
    use super::super::header::tests::{image, put};
    use super::*;

    /// FileExt over a byte vector, for the table checks.
    pub(crate) struct Bytes(pub(crate) Vec<u8>);

    impl FileExt for Bytes {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(self.0.len());
            let n = buf.len().min(self.0.len() - start);
            buf[..n].copy_from_slice(&self.0[start..start + n]);
            Ok(n)
        }
        fn write_at(&self, _: &[u8], _: u64) -> io::Result<usize> {
            // The checks only read.
            Err(io::ErrorKind::Unsupported.into())
        }
    }

    /// The whole file of [`image`]: its first cluster, the refcount table,
    /// the refcount block and the L1 table, all zeros but the header.
    fn whole(size_bytes: u64) -> (Bytes, Header, u64) {
        let (mut h, len) = image(size_bytes, None);
        let header = parse(&h, len).unwrap();
        h.resize(len as usize, 0);
        (Bytes(h), header, len)
    }

    #[test]
    fn tables_beyond_the_end_are_found() {
        let (Bytes(file), header, len) = whole(1 << 30);
        assert_eq!(
            check_tables(&Bytes(file.clone()), &header, len).unwrap(),
            Ok(())
        );
        let mut pointing = file.clone();
        // L1 entry 1 -> an L2 table at cluster 9, past the end.
        put(&mut pointing, (3 << 16) + 8, &(9u64 << 16).to_be_bytes());
        let err = check_tables(&Bytes(pointing), &header, len)
            .unwrap()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "truncated qcow2 image: L2 table 1 is at byte 589824, but the file has 262144 bytes"
        );
        // Refcount table entry 0 -> a refcount block at cluster 4, just past the end.
        let mut pointing = file.clone();
        put(&mut pointing, 1 << 16, &(4u64 << 16).to_be_bytes());
        let err = check_tables(&Bytes(pointing), &header, len)
            .unwrap()
            .unwrap_err();
        assert!(err
            .to_string()
            .contains("refcount block 0 is at byte 262144"));
        // Entries inside the file pass, whatever their flag bits.
        let mut inside = file.clone();
        put(
            &mut inside,
            1 << 16,
            &((1u64 << 63) | (2u64 << 16)).to_be_bytes(),
        );
        assert_eq!(check_tables(&Bytes(inside), &header, len).unwrap(), Ok(()));
    }

    proptest! {
        /// A parsed header over random table contents, or tables anywhere
        /// in random bytes: an answer, never a panic.
        #[test]
        fn random_tables_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..400),
            l1 in (any::<u64>(), prop_oneof![0u64..4096, any::<u64>()]),
            refcount in (any::<u64>(), prop_oneof![0u64..4096, any::<u64>()]),
            cluster_bits in 9u32..=21,
            claimed in 0u64..1 << 40,
        ) {
            let header = Header {
                version: 3,
                cluster_bits,
                size_bytes: 0,
                backing: None,
                l1_table: Table { offset: l1.0, entries: l1.1 },
                refcount_table: Table { offset: refcount.0, entries: refcount.1 },
            };
            let _ = check_tables(&Bytes(bytes.clone()), &header, claimed);
            if let Ok(header) = parse(&bytes, claimed) {
                let _ = check_tables(&Bytes(bytes), &header, claimed);
            }
        }
    }
}
