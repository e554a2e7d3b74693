//! KVM's own per-vCPU statistics (`KVM_GET_STATS_FD`, Linux 5.14+): the
//! kernel's count of every exit, including those it handled without coming
//! to userspace (`exits`, `io_exits`, `mmio_exits`, `halt_exits`,
//! `irq_exits`, …), read when the VM ends, and at each benchmark window's
//! marks ([`crate::windows`]).
//!
//! # The binary format
//! The fd reads as: a header (flags, name_size, num_desc, id_offset,
//! desc_offset, data_offset: six u32), then at desc_offset num_desc
//! descriptors (flags u32, exponent i16, size u16, offset u32, bucket_size u32,
//! then a NUL-padded name of name_size bytes), and at data_offset the values:
//! descriptor d's `size` u64s start at data_offset + d.offset. The low four
//! bits of a descriptor's flags are its type: cumulative (0), instant (1),
//! peak (2), linear (3) or log2 (4) histogram.

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
    StatsFd::open(vcpu)?.read()
}

/// How KVM says a statistic behaves (the type bits of a descriptor's flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatKind {
    /// A count that only grows (`exits`, `io_exits`, …).
    Cumulative,
    /// A value now (`blocking`, `guest_mode`): may go down.
    Instant,
    /// The highest value so far.
    Peak,
    /// A histogram (linear or log2): each bucket a count that only grows.
    Histogram,
}

impl StatKind {
    fn from_flags(flags: u32) -> StatKind {
        match flags & 0xf {
            1 => StatKind::Instant,
            2 => StatKind::Peak,
            3 | 4 => StatKind::Histogram,
            _ => StatKind::Cumulative,
        }
    }

    /// Whether a difference of two readings is a count of what happened
    /// in between.
    pub fn counts(self) -> bool {
        matches!(self, StatKind::Cumulative | StatKind::Histogram)
    }
}

/// One statistic as its descriptor gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub name: String,
    pub kind: StatKind,
    /// Where its values start in the data block, and how many u64 it has.
    offset: u32,
    size: u16,
}

/// What a statistics fd holds: the descriptors, read once, and where the
/// values are; the values themselves are read as often as needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub stats: Vec<Stat>,
    data_offset: u32,
    data_bytes: usize,
}

impl Layout {
    pub fn parse(h: &Header, descs: &[u8]) -> Result<Layout, Error> {
        let stats = descriptors(h, descs).collect::<Result<Vec<_>, _>>()?;
        let data_bytes = stats
            .iter()
            .map(|s| s.offset as usize + s.size as usize * 8)
            .max()
            .unwrap_or(0);
        Ok(Layout {
            stats,
            data_offset: h.data_offset,
            data_bytes,
        })
    }

    /// Each statistic's value from the data block, in descriptor order; a
    /// statistic of several values (a histogram) is summed.
    pub fn values(&self, data: &[u8]) -> Result<Vec<u64>, Error> {
        self.stats
            .iter()
            .map(|s| {
                let start = s.offset as usize;
                let values = data
                    .get(start..start + s.size as usize * 8)
                    .ok_or(Error::Malformed("value outside the data block"))?;
                Ok(values
                    .chunks(8)
                    .map(|v| u64::from_le_bytes(v.try_into().expect("8 bytes")))
                    .fold(0u64, u64::saturating_add))
            })
            .collect()
    }
}

/// A vCPU's statistics fd with its layout: [`StatsFd::values`] is one
/// `pread` of the data block, from any thread (a benchmark window reads
/// every vCPU's from the vCPU thread that marks it).
#[derive(Debug)]
pub struct StatsFd {
    file: File,
    layout: Layout,
}

impl StatsFd {
    /// Asks KVM for the vCPU's statistics fd and reads its descriptors.
    pub fn open(vcpu: &impl AsRawFd) -> Result<StatsFd, Error> {
        // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new fd or -1.
        let fd = unsafe { ioctl(vcpu, KVM_GET_STATS_FD()) };
        if fd < 0 {
            return Err(Error::Ioctl(std::io::Error::last_os_error().to_string()));
        }
        // SAFETY: `fd` is a descriptor KVM just created for us; nothing else owns it.
        let file = unsafe { File::from_raw_fd(fd) };
        let header = read_at(&file, 0, HEADER_BYTES)?;
        let h = Header::parse(&header)?;
        let descs = read_at(&file, u64::from(h.desc_offset), h.desc_block_bytes()?)?;
        let layout = Layout::parse(&h, &descs)?;
        Ok(StatsFd { file, layout })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Every statistic's value now, in the layout's order.
    pub fn values(&self) -> Result<Vec<u64>, Error> {
        let data = read_at(
            &self.file,
            u64::from(self.layout.data_offset),
            self.layout.data_bytes,
        )?;
        self.layout.values(&data)
    }

    /// Every statistic's value now, by name.
    pub fn read(&self) -> Result<BTreeMap<String, u64>, Error> {
        let values = self.values()?;
        Ok(self
            .layout
            .stats
            .iter()
            .map(|s| s.name.clone())
            .zip(values)
            .collect())
    }
}

fn read_at(file: &File, offset: u64, len: usize) -> Result<Vec<u8>, Error> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)
        .map(|()| buf)
        .map_err(|e| Error::Read(e.to_string()))
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
) -> impl Iterator<Item = Result<Stat, Error>> + 'a {
    descs
        .chunks(h.desc_bytes())
        .take(h.num_desc as usize)
        .map(move |d| {
            let flags = u32_at(d, 0)?;
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
            Ok(Stat {
                name: String::from_utf8_lossy(&name[..end]).into_owned(),
                kind: StatKind::from_flags(flags),
                offset,
                size,
            })
        })
}

/// Values by name; a statistic of several values (a histogram) is summed.
pub fn parse(h: &Header, descs: &[u8], data: &[u8]) -> Result<BTreeMap<String, u64>, Error> {
    let layout = Layout::parse(h, descs)?;
    let values = layout.values(data)?;
    Ok(layout
        .stats
        .into_iter()
        .map(|s| s.name)
        .zip(values)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(name: &str, offset: u32, size: u16, name_size: usize) -> Vec<u8> {
        desc_with_flags(0, name, offset, size, name_size)
    }

    fn desc_with_flags(
        flags: u32,
        name: &str,
        offset: u32,
        size: u16,
        name_size: usize,
    ) -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(&flags.to_le_bytes());
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
        assert_eq!(Layout::parse(&h, &descs).unwrap().data_bytes, 32);
        let data: Vec<u8> = [42u64, 1, 2, 3]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let stats = parse(&h, &descs, &data).unwrap();
        assert_eq!(stats["exits"], 42);
        assert_eq!(stats["halt_wait_hist"], 6);
    }

    /// The type bits of the flags say which statistics count events (a
    /// difference of two readings means something) and which are levels.
    #[test]
    fn each_statistic_has_its_kind() {
        let h = Header {
            name_size: 16,
            num_desc: 5,
            desc_offset: 24,
            data_offset: 200,
        };
        let descs = [
            // Type bits 0 (cumulative) with unit and base bits above (ns, pow10).
            desc_with_flags(0x20 | 0x100, "halt_poll_ns", 0, 1, 16),
            desc_with_flags(0x1, "blocking", 8, 1, 16),
            desc_with_flags(0x2, "peak", 16, 1, 16),
            desc_with_flags(0x3, "linear_hist", 24, 2, 16),
            desc_with_flags(0x4, "log_hist", 40, 2, 16),
        ]
        .concat();
        let layout = Layout::parse(&h, &descs).unwrap();
        let kinds: Vec<(&str, StatKind, bool)> = layout
            .stats
            .iter()
            .map(|s| (s.name.as_str(), s.kind, s.kind.counts()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("halt_poll_ns", StatKind::Cumulative, true),
                ("blocking", StatKind::Instant, false),
                ("peak", StatKind::Peak, false),
                ("linear_hist", StatKind::Histogram, true),
                ("log_hist", StatKind::Histogram, true),
            ]
        );
        assert_eq!(layout.data_bytes, 56);
        let data: Vec<u8> = (1u64..=7).flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(layout.values(&data).unwrap(), [1, 2, 3, 4 + 5, 6 + 7]);
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
