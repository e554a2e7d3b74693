//! One virtio-blk request: its descriptor chain parsed and checked against
//! guest memory before anything touches the disk.
//!
//! # The layout we accept
//! `[header][data…][status]`, each in its own descriptors: the header a
//! device-readable descriptor of at least 16 bytes (the first 16 are read),
//! the status the last descriptor, device-writable and at least 1 byte (the
//! first one is written), and between them the data, device-writable for
//! IN and GET_ID, device-readable for OUT. Every driver we know (Linux,
//! SeaBIOS, OVMF) builds exactly this; virtio 1.x lets a driver merge them
//! in other ways, which we refuse rather than guess at.
//!
//! # What is checked
//! virtio-queue's chain iterator stops at the queue size (so a descriptor
//! loop ends), at a `next` index beyond the table, at an unreadable
//! descriptor and past 4 GiB in total, but it stops *silently*: the chain
//! simply looks shorter. So a chain whose last descriptor still says NEXT
//! was cut short, and is refused without being answered (its apparent
//! last descriptor is not its status). Then: the status descriptor, the
//! header, each data descriptor's direction and that it lies in guest
//! memory, the total length against [`MAX_DATA_BYTES`] and, for IN and
//! OUT, that it is whole sectors. A request whose status can be written
//! but that is otherwise wrong is answered with IOERR; one without a usable
//! status byte goes back with a used length of 0.

use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::disk::SECTOR_BYTES;

pub const HEADER_BYTES: usize = 16;

/// Request types (`virtio_blk_req.type`).
pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const T_FLUSH: u32 = 4;
pub const T_GET_ID: u32 = 8;

/// What the device promises a driver's requests stay within: at most
/// [`super::SEG_MAX`] data descriptors of at most [`super::SIZE_MAX_BYTES`] each.
pub const MAX_DATA_BYTES: u64 = super::SEG_MAX as u64 * super::SIZE_MAX_BYTES as u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    In,
    Out,
    Flush,
    GetId,
    Unsupported(u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub kind: Kind,
    pub sector: u64,
    /// The data buffers in order (empty ones left out); none for FLUSH and
    /// unsupported types, whose data is ignored.
    pub data: Vec<(GuestAddress, u32)>,
    pub data_bytes: u64,
    /// Where the status byte goes.
    pub status: GuestAddress,
}

/// What is wrong with a chain; each has a counter in `vmm.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The iterator stopped before a descriptor without NEXT: a loop, a
    /// `next` beyond the table, an unreadable descriptor or over 4 GiB.
    TruncatedChain,
    TooManyDescriptors,
    MissingStatus,
    ReadOnlyStatus,
    EmptyStatus,
    StatusOutsideMemory,
    WritableHeader,
    ShortHeader,
    HeaderOutsideMemory,
    WrongDirection,
    DataOutsideMemory,
    TooLong,
    PartialSector,
}

impl Fault {
    pub const ALL: [Fault; 13] = [
        Fault::TruncatedChain,
        Fault::TooManyDescriptors,
        Fault::MissingStatus,
        Fault::ReadOnlyStatus,
        Fault::EmptyStatus,
        Fault::StatusOutsideMemory,
        Fault::WritableHeader,
        Fault::ShortHeader,
        Fault::HeaderOutsideMemory,
        Fault::WrongDirection,
        Fault::DataOutsideMemory,
        Fault::TooLong,
        Fault::PartialSector,
    ];

    pub fn counter(self) -> &'static str {
        match self {
            Fault::TruncatedChain => "truncated_chains",
            Fault::TooManyDescriptors => "too_many_descriptors",
            Fault::MissingStatus => "missing_status",
            Fault::ReadOnlyStatus => "read_only_status",
            Fault::EmptyStatus => "empty_status",
            Fault::StatusOutsideMemory => "status_outside_memory",
            Fault::WritableHeader => "writable_headers",
            Fault::ShortHeader => "short_headers",
            Fault::HeaderOutsideMemory => "header_outside_memory",
            Fault::WrongDirection => "wrong_direction_data",
            Fault::DataOutsideMemory => "data_outside_memory",
            Fault::TooLong => "too_long_requests",
            Fault::PartialSector => "partial_sector_requests",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No status byte to answer in: the chain goes back with used length 0.
    Unanswerable(Fault),
    /// Answered with IOERR in the status byte at `status`.
    Invalid { status: GuestAddress, fault: Fault },
}

/// Is `[addr, addr + len)` guest memory?
fn in_memory(mem: &GuestMemoryMmap, addr: GuestAddress, len: u32) -> bool {
    addr.0.checked_add(u64::from(len)).is_some() && mem.check_range(addr, len as usize)
}

/// Parses the chain `descriptors` yields (at most `max_descriptors` of them).
pub fn parse(
    descriptors: impl Iterator<Item = Descriptor>,
    mem: &GuestMemoryMmap,
    max_descriptors: usize,
) -> Result<Request, Refusal> {
    let mut descs: Vec<Descriptor> = Vec::new();
    for desc in descriptors {
        if descs.len() == max_descriptors {
            return Err(Refusal::Unanswerable(Fault::TooManyDescriptors));
        }
        descs.push(desc);
    }
    let status_desc = match descs.last() {
        None => return Err(Refusal::Unanswerable(Fault::TruncatedChain)),
        Some(last) if last.has_next() => return Err(Refusal::Unanswerable(Fault::TruncatedChain)),
        Some(_) if descs.len() < 2 => return Err(Refusal::Unanswerable(Fault::MissingStatus)),
        Some(last) => *last,
    };
    let unanswerable = match status_desc {
        d if !d.is_write_only() => Some(Fault::ReadOnlyStatus),
        d if d.len() == 0 => Some(Fault::EmptyStatus),
        d if !in_memory(mem, d.addr(), 1) => Some(Fault::StatusOutsideMemory),
        _ => None,
    };
    if let Some(fault) = unanswerable {
        return Err(Refusal::Unanswerable(fault));
    }
    let status = status_desc.addr();
    let invalid = |fault| Refusal::Invalid { status, fault };

    let header = descs[0];
    if header.is_write_only() {
        return Err(invalid(Fault::WritableHeader));
    }
    if (header.len() as usize) < HEADER_BYTES {
        return Err(invalid(Fault::ShortHeader));
    }
    let mut bytes = [0u8; HEADER_BYTES];
    mem.read_slice(&mut bytes, header.addr())
        .map_err(|_| invalid(Fault::HeaderOutsideMemory))?;
    let request_type = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
    let sector = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let kind = match request_type {
        T_IN => Kind::In,
        T_OUT => Kind::Out,
        T_FLUSH => Kind::Flush,
        T_GET_ID => Kind::GetId,
        other => Kind::Unsupported(other),
    };

    let device_writes = match kind {
        Kind::In | Kind::GetId => true,
        Kind::Out => false,
        Kind::Flush | Kind::Unsupported(_) => {
            return Ok(Request {
                kind,
                sector,
                data: Vec::new(),
                data_bytes: 0,
                status,
            })
        }
    };
    let mut data = Vec::new();
    let mut data_bytes = 0u64;
    for desc in &descs[1..descs.len() - 1] {
        if desc.is_write_only() != device_writes {
            return Err(invalid(Fault::WrongDirection));
        }
        if desc.len() == 0 {
            continue;
        }
        if !in_memory(mem, desc.addr(), desc.len()) {
            return Err(invalid(Fault::DataOutsideMemory));
        }
        data_bytes += u64::from(desc.len());
        if data_bytes > MAX_DATA_BYTES {
            return Err(invalid(Fault::TooLong));
        }
        data.push((desc.addr(), desc.len()));
    }
    if matches!(kind, Kind::In | Kind::Out) && data_bytes % SECTOR_BYTES != 0 {
        return Err(invalid(Fault::PartialSector));
    }
    Ok(Request {
        kind,
        sector,
        data,
        data_bytes,
        status,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const W: u16 = 2; // VIRTQ_DESC_F_WRITE
    const N: u16 = 1; // VIRTQ_DESC_F_NEXT
    const MEM_BYTES: u64 = 1 << 20;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_BYTES as usize)]).unwrap()
    }

    /// A header for `request_type` at `addr`.
    fn header_at(mem: &GuestMemoryMmap, addr: u64, request_type: u32, sector: u64) -> Descriptor {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&request_type.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        mem.write_slice(&h, GuestAddress(addr)).unwrap();
        Descriptor::new(addr, 16, N, 0)
    }

    fn header(mem: &GuestMemoryMmap, request_type: u32, sector: u64) -> Descriptor {
        header_at(mem, 0x100, request_type, sector)
    }

    fn desc(addr: u64, len: u32, flags: u16) -> Descriptor {
        Descriptor::new(addr, len, flags, 0)
    }

    fn status() -> Descriptor {
        desc(0x200, 1, W)
    }

    fn parse_all(mem: &GuestMemoryMmap, descs: &[Descriptor]) -> Result<Request, Refusal> {
        parse(descs.iter().copied(), mem, 256)
    }

    fn invalid(fault: Fault) -> Result<Request, Refusal> {
        Err(Refusal::Invalid {
            status: GuestAddress(0x200),
            fault,
        })
    }

    #[test]
    fn a_linux_read_parses() {
        let mem = mem();
        let h = header(&mem, T_IN, 7);
        let req = parse_all(
            &mem,
            &[
                h,
                desc(0x1000, 512, W | N),
                desc(0x3000, 1024, W | N),
                status(),
            ],
        )
        .unwrap();
        assert_eq!(req.kind, Kind::In);
        assert_eq!(req.sector, 7);
        assert_eq!(
            req.data,
            vec![(GuestAddress(0x1000), 512), (GuestAddress(0x3000), 1024)]
        );
        assert_eq!(req.data_bytes, 1536);
        assert_eq!(req.status, GuestAddress(0x200));
    }

    #[test]
    fn a_chain_the_iterator_cut_short_is_not_answered() {
        let mem = mem();
        let h = header(&mem, T_IN, 0);
        // The iterator stopped (a loop, a bad `next`): its last still says NEXT.
        assert_eq!(
            parse_all(&mem, &[h, desc(0x1000, 512, W | N)]),
            Err(Refusal::Unanswerable(Fault::TruncatedChain))
        );
        assert_eq!(
            parse_all(&mem, &[]),
            Err(Refusal::Unanswerable(Fault::TruncatedChain))
        );
        let many = vec![desc(0x1000, 512, W | N); 5];
        assert_eq!(
            parse(many.into_iter(), &mem, 4),
            Err(Refusal::Unanswerable(Fault::TooManyDescriptors))
        );
    }

    #[test]
    fn status_problems_leave_the_chain_unanswered() {
        let mem = mem();
        let h = header(&mem, T_IN, 0);
        let cases = [
            (vec![desc(0x100, 16, 0)], Fault::MissingStatus),
            (vec![h, desc(0x200, 1, 0)], Fault::ReadOnlyStatus),
            (vec![h, desc(0x200, 0, W)], Fault::EmptyStatus),
            (vec![h, desc(MEM_BYTES, 1, W)], Fault::StatusOutsideMemory),
            (vec![h, desc(u64::MAX, 1, W)], Fault::StatusOutsideMemory),
        ];
        for (descs, fault) in cases {
            assert_eq!(
                parse_all(&mem, &descs),
                Err(Refusal::Unanswerable(fault)),
                "{fault:?}"
            );
        }
    }

    #[test]
    fn header_and_data_problems_are_answered_with_ioerr() {
        let mem = mem();
        let h = header(&mem, T_IN, 0);
        let out = header_at(&mem, 0x180, T_OUT, 0);
        let cases = [
            (
                vec![desc(0x100, 16, W | N), status()],
                Fault::WritableHeader,
            ),
            (vec![desc(0x100, 15, N), status()], Fault::ShortHeader),
            (
                vec![desc(MEM_BYTES - 8, 16, N), status()],
                Fault::HeaderOutsideMemory,
            ),
            (
                vec![h, desc(0x1000, 512, N), status()],
                Fault::WrongDirection,
            ),
            (
                vec![out, desc(0x1000, 512, W | N), status()],
                Fault::WrongDirection,
            ),
            (
                vec![h, desc(MEM_BYTES - 256, 512, W | N), status()],
                Fault::DataOutsideMemory,
            ),
            (
                vec![h, desc(u64::MAX - 10, 512, W | N), status()],
                Fault::DataOutsideMemory,
            ),
            (
                vec![h, desc(0x1000, 100, W | N), status()],
                Fault::PartialSector,
            ),
        ];
        for (descs, fault) in cases {
            assert_eq!(parse_all(&mem, &descs), invalid(fault), "{fault:?}");
        }
        let huge = std::iter::once(h)
            .chain(std::iter::repeat_n(desc(0, MEM_BYTES as u32, W | N), 40))
            .chain(std::iter::once(status()))
            .collect::<Vec<_>>();
        assert_eq!(parse_all(&mem, &huge), invalid(Fault::TooLong));
    }

    #[test]
    fn flush_and_unknown_types_ignore_their_data() {
        let mem = mem();
        let h = header(&mem, T_FLUSH, 99);
        let req = parse_all(&mem, &[h, desc(MEM_BYTES * 4, 1, N), status()]).unwrap();
        assert_eq!((req.kind, req.data.len()), (Kind::Flush, 0));
        let h = header(&mem, 11, 0); // DISCARD, not offered
        assert_eq!(
            parse_all(&mem, &[h, status()]).unwrap().kind,
            Kind::Unsupported(11)
        );
        let h = header(&mem, T_GET_ID, 0);
        let req = parse_all(&mem, &[h, desc(0x1000, 20, W | N), status()]).unwrap();
        assert_eq!((req.kind, req.data_bytes), (Kind::GetId, 20));
    }

    proptest! {
        /// Any descriptors at all: a request within memory and limits, or a refusal; never a panic.
        #[test]
        fn arbitrary_chains_never_panic(
            descs in proptest::collection::vec((any::<u64>(), any::<u32>(), 0u16..8), 0..12),
            request_type in 0u32..12,
            near in proptest::collection::vec((0u64..MEM_BYTES + 4096, 0u32..70000, 0u16..4), 0..12),
        ) {
            let mem = mem();
            let _ = header(&mem, request_type, 0);
            for set in [&descs, &near] {
                let chain: Vec<Descriptor> = set
                    .iter()
                    .map(|&(addr, len, flags)| Descriptor::new(addr, len, flags, 0))
                    .collect();
                if let Ok(req) = parse(chain.into_iter(), &mem, 8) {
                    prop_assert!(req.data_bytes <= MAX_DATA_BYTES);
                    for (addr, len) in req.data {
                        prop_assert!(addr.0 + u64::from(len) <= MEM_BYTES);
                    }
                    prop_assert!(req.status.0 < MEM_BYTES);
                }
            }
        }
    }
}
