//! KVM's own per-vCPU statistics (`KVM_GET_STATS_FD`, Linux 5.14+): the
//! kernel's count of every exit, including those it handled without coming
//! to userspace (`exits`, `io_exits`, `mmio_exits`, `halt_exits`,
//! `irq_exits`, …), read once when the VM ends.
//!
//! # The binary format
//! The fd reads as: a header (flags, name_size, num_desc, id_offset,
//! desc_offset, data_offset: six u32), then at desc_offset num_desc
//! descriptors (flags u32, exponent i16, size u16, offset u32, bucket_size u32,
//! then a NUL-padded name of name_size bytes), and at data_offset the values:
//! descriptor d's `size` u64s start at data_offset + d.offset.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;

use vmm_sys_util::{ioctl::ioctl, ioctl_io_nr};

const KVMIO: u32 = 0xae;
ioctl_io_nr!(KVM_GET_STATS_FD, KVMIO, 0xce);

const HEADER_BYTES: usize = 24;
const DESC_FIXED_BYTES: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("KVM_GET_STATS_FD failed: {0}")]
    Ioctl(String),
    #[error("Cannot read KVM statistics: {0}")]
    Read(String),
    #[error("KVM statistics are malformed: {0}")]
    Malformed(&'static str),
}

/// The statistics of one vCPU: single-valued ones by name (histograms summed).
pub fn read_vcpu(vcpu: &impl AsRawFd) -> Result<BTreeMap<String, u64>, Error> {
    // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new fd or -1.
    let fd = unsafe { ioctl(vcpu, KVM_GET_STATS_FD()) };
    if fd < 0 {
        return Err(Error::Ioctl(std::io::Error::last_os_error().to_string()));
    }
    // SAFETY: `fd` is a descriptor KVM just created for us; nothing else owns it.
    let file = unsafe { File::from_raw_fd(fd) };
    let read_at = |offset: u64, len: usize| {
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, offset)
            .map(|()| buf)
            .map_err(|e| Error::Read(e.to_string()))
    };
    let header = read_at(0, HEADER_BYTES)?;
    let h = Header::parse(&header)?;
    let descs = read_at(u64::from(h.desc_offset), h.desc_block_bytes()?)?;
    let data_bytes = data_block_bytes(&h, &descs)?;
    let data = read_at(u64::from(h.data_offset), data_bytes)?;
    parse(&h, &descs, &data)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub name_size: u32,
    pub num_desc: u32,
    pub desc_offset: u32,
    pub data_offset: u32,
}

fn u32_at(bytes: &[u8], at: usize) -> Result<u32, Error> {
    let b = bytes
        .get(at..at + 4)
        .ok_or(Error::Malformed("short read"))?;
    Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
}

impl Header {
    pub fn parse(bytes: &[u8]) -> Result<Header, Error> {
        Ok(Header {
            name_size: u32_at(bytes, 4)?,
            num_desc: u32_at(bytes, 8)?,
            desc_offset: u32_at(bytes, 16)?,
            data_offset: u32_at(bytes, 20)?,
        })
    }

    fn desc_bytes(&self) -> usize {
        DESC_FIXED_BYTES + self.name_size as usize
    }

    fn desc_block_bytes(&self) -> Result<usize, Error> {
        // The kernel has a few hundred statistics; a bound keeps a bad header
        // from asking for gigabytes.
        if self.num_desc > 4096 || self.name_size > 1024 {
            return Err(Error::Malformed(
                "implausible descriptor count or name size",
            ));
        }
        Ok(self.num_desc as usize * self.desc_bytes())
    }
}

fn descriptors<'a>(
    h: &'a Header,
    descs: &'a [u8],
) -> impl Iterator<Item = Result<(String, u32, u16), Error>> + 'a {
    descs
        .chunks(h.desc_bytes())
        .take(h.num_desc as usize)
        .map(move |d| {
            let size = u16::from_le_bytes(
                d.get(6..8)
                    .ok_or(Error::Malformed("short descriptor"))?
                    .try_into()
                    .expect("2"),
            );
            let offset = u32_at(d, 8)?;
            let name = d
                .get(DESC_FIXED_BYTES..)
                .ok_or(Error::Malformed("short descriptor"))?;
            let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
            Ok((
                String::from_utf8_lossy(&name[..end]).into_owned(),
                offset,
                size,
            ))
        })
}

fn data_block_bytes(h: &Header, descs: &[u8]) -> Result<usize, Error> {
    let mut end = 0usize;
    for d in descriptors(h, descs) {
        let (_, offset, size) = d?;
        end = end.max(offset as usize + size as usize * 8);
    }
    Ok(end)
}

/// Values by name; a statistic of several values (a histogram) is summed.
pub fn parse(h: &Header, descs: &[u8], data: &[u8]) -> Result<BTreeMap<String, u64>, Error> {
    let mut stats = BTreeMap::new();
    for d in descriptors(h, descs) {
        let (name, offset, size) = d?;
        let start = offset as usize;
        let values = data
            .get(start..start + size as usize * 8)
            .ok_or(Error::Malformed("value outside the data block"))?;
        let sum = values
            .chunks(8)
            .map(|v| u64::from_le_bytes(v.try_into().expect("8 bytes")))
            .fold(0u64, u64::saturating_add);
        stats.insert(name, sum);
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(name: &str, offset: u32, size: u16, name_size: usize) -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(&0u32.to_le_bytes());
        d.extend_from_slice(&0i16.to_le_bytes());
        d.extend_from_slice(&size.to_le_bytes());
        d.extend_from_slice(&offset.to_le_bytes());
        d.extend_from_slice(&0u32.to_le_bytes());
        let mut n = name.as_bytes().to_vec();
        n.resize(name_size, 0);
        d.extend_from_slice(&n);
        d
    }

    #[test]
    fn counters_and_histograms_are_read() {
        let h = Header {
            name_size: 16,
            num_desc: 2,
            desc_offset: 24,
            data_offset: 100,
        };
        let descs = [desc("exits", 0, 1, 16), desc("halt_wait_hist", 8, 3, 16)].concat();
        assert_eq!(data_block_bytes(&h, &descs).unwrap(), 32);
        let data: Vec<u8> = [42u64, 1, 2, 3]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let stats = parse(&h, &descs, &data).unwrap();
        assert_eq!(stats["exits"], 42);
        assert_eq!(stats["halt_wait_hist"], 6);
    }

    #[test]
    fn values_outside_the_data_are_an_error() {
        let h = Header {
            name_size: 8,
            num_desc: 1,
            desc_offset: 24,
            data_offset: 64,
        };
        let descs = desc("exits", 16, 1, 8);
        assert_eq!(
            parse(&h, &descs, &[0u8; 8]),
            Err(Error::Malformed("value outside the data block"))
        );
    }

    #[test]
    fn header_fields_are_read_and_bounded() {
        let bytes: Vec<u8> = [0u32, 48, 3, 0, 24, 400]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let h = Header::parse(&bytes).unwrap();
        assert_eq!(
            h,
            Header {
                name_size: 48,
                num_desc: 3,
                desc_offset: 24,
                data_offset: 400
            }
        );
        assert_eq!(h.desc_block_bytes().unwrap(), 3 * 64);
        let huge = Header {
            num_desc: 1 << 20,
            ..h
        };
        assert!(huge.desc_block_bytes().is_err());
        assert!(Header::parse(&bytes[..10]).is_err());
    }
}
