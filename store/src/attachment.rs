//! How an attachment's bytes are kept: under the SHA-256 of the original
//! contents, zlib-compressed when that saves at least a tenth (serial logs
//! and JSON shrink several times; an already compressed file is kept as
//! it is). Reading checks the hash, so a damaged row is reported, never
//! handed back.

use std::io::{Read, Write};

use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use flate2::Compression;

use crate::record::sha256_hex;

/// The `encoding` column's values.
pub(crate) const IDENTITY: &str = "identity";
pub(crate) const ZLIB: &str = "zlib";

/// Contents ready to be stored.
#[derive(Debug, Clone)]
pub(crate) struct Encoded {
    pub(crate) size_bytes: i64,
    pub(crate) encoding: &'static str,
    pub(crate) data: Vec<u8>,
}

pub(crate) fn encode(bytes: &[u8]) -> Encoded {
    let size_bytes = bytes.len() as i64;
    let mut z = ZlibEncoder::new(Vec::with_capacity(bytes.len() / 4), Compression::fast());
    let compressed = z.write_all(bytes).and_then(|()| z.finish());
    match compressed {
        Ok(data) if data.len() <= bytes.len() - bytes.len() / 10 => Encoded {
            size_bytes,
            encoding: ZLIB,
            data,
        },
        _ => Encoded {
            size_bytes,
            encoding: IDENTITY,
            data: bytes.to_vec(),
        },
    }
}

/// The original contents, or why they cannot be had (a message naming what
/// is wrong, for [`crate::Error::Damaged`]).
pub(crate) fn decode(
    sha256: &str,
    size_bytes: i64,
    encoding: &str,
    data: Vec<u8>,
) -> Result<Vec<u8>, String> {
    let bytes = match encoding {
        IDENTITY => data,
        ZLIB => {
            let mut out = Vec::with_capacity(usize::try_from(size_bytes).unwrap_or(0));
            ZlibDecoder::new(data.as_slice())
                .read_to_end(&mut out)
                .map_err(|_| format!("attachment {sha256} (its zlib data is corrupt)"))?;
            out
        }
        other => return Err(format!("attachment {sha256} (unknown encoding {other:?})")),
    };
    if bytes.len() as i64 != size_bytes || sha256_hex(&bytes) != sha256 {
        return Err(format!(
            "attachment {sha256} (its contents do not match their SHA-256)"
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_compressed_and_comes_back() {
        let log = "[    0.000000] Linux version 6.1.0\n".repeat(1000);
        let e = encode(log.as_bytes());
        assert_eq!(e.encoding, ZLIB);
        assert!(e.data.len() < log.len() / 10);
        assert_eq!(
            decode(
                &sha256_hex(log.as_bytes()),
                e.size_bytes,
                e.encoding,
                e.data
            )
            .unwrap(),
            log.as_bytes()
        );
    }

    #[test]
    fn incompressible_bytes_are_kept_as_they_are() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for bytes in [noise.as_slice(), b"", b"a"] {
            let e = encode(bytes);
            assert_eq!(e.encoding, IDENTITY);
            assert_eq!(e.data, bytes);
            assert_eq!(
                decode(&sha256_hex(bytes), e.size_bytes, e.encoding, e.data).unwrap(),
                bytes
            );
        }
    }

    #[test]
    fn damage_is_reported() {
        let abc = "abc".repeat(100);
        let e = encode(abc.as_bytes());
        let sha256 = sha256_hex(abc.as_bytes());
        let mut data = e.data.clone();
        data[3] ^= 0xff;
        assert!(decode(&sha256, e.size_bytes, e.encoding, data).is_err());
        assert!(decode(&sha256, e.size_bytes, "lz4", e.data.clone()).is_err());
        assert!(decode(&sha256, e.size_bytes + 1, e.encoding, e.data).is_err());
        assert!(decode(&sha256_hex(b"abc"), 3, IDENTITY, b"abd".to_vec()).is_err());
    }
}
