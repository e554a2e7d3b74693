//! The virtio-vsock packet header, `struct virtio_vsock_hdr` (virtio 1.2
//! §5.10.6): 44 bytes, little-endian, packed, in front of every packet:
//!
//! ```text
//!  0 src_cid u64    8 dst_cid u64   16 src_port u32  20 dst_port u32
//! 24 len u32       28 type u16     30 op u16        32 flags u32
//! 36 buf_alloc u32 40 fwd_cnt u32
//! ```
//!
//! `len` is the payload's length (only RW packets have one). The wire form
//! (`[u8; 44]`) is kept apart from the logical `Header`, so no packed struct
//! is ever referenced and byte order is explicit.

pub const HEADER_BYTES: usize = 44;
pub const HOST_CID: u64 = 2;
pub const TYPE_STREAM: u16 = 1;

/// SHUTDOWN flags: the sender will receive no more data / send no more.
pub const SHUTDOWN_RCV: u32 = 1;
pub const SHUTDOWN_SEND: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Request = 1,
    Response = 2,
    Rst = 3,
    Shutdown = 4,
    Rw = 5,
    CreditUpdate = 6,
    CreditRequest = 7,
}

impl Op {
    pub fn from_wire(op: u16) -> Option<Op> {
        Some(match op {
            1 => Op::Request,
            2 => Op::Response,
            3 => Op::Rst,
            4 => Op::Shutdown,
            5 => Op::Rw,
            6 => Op::CreditUpdate,
            7 => Op::CreditRequest,
            _ => return None,
        })
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub type_: u16,
    /// Raw: a device may send values no `Op` names.
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut bytes = [0; HEADER_BYTES];
        bytes[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        bytes[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        bytes[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        bytes[24..28].copy_from_slice(&self.len.to_le_bytes());
        bytes[28..30].copy_from_slice(&self.type_.to_le_bytes());
        bytes[30..32].copy_from_slice(&self.op.to_le_bytes());
        bytes[32..36].copy_from_slice(&self.flags.to_le_bytes());
        bytes[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        bytes[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        bytes
    }

    /// The header at the start of `bytes`; `None` if there are fewer than 44.
    pub fn decode(bytes: &[u8]) -> Option<Header> {
        let bytes: &[u8; HEADER_BYTES] = bytes.get(..HEADER_BYTES)?.try_into().ok()?;
        let u64_at = |at: usize| {
            let mut field = [0; 8];
            field.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(field)
        };
        let u32_at = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        Some(Header {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        })
    }

    pub fn op(&self) -> Option<Op> {
        Op::from_wire(self.op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xorshift::XorShift64;

    fn sample() -> Header {
        Header {
            src_cid: 0x0102_0304_0506_0708,
            dst_cid: 2,
            src_port: 0x1122_3344,
            dst_port: 5000,
            len: 6,
            type_: TYPE_STREAM,
            op: Op::Rw as u16,
            flags: 0xa0b0_c0d0,
            buf_alloc: 16384,
            fwd_cnt: 0xffff_fffe,
        }
    }

    #[test]
    fn the_wire_layout_is_packed_little_endian() {
        let bytes = sample().encode();
        #[rustfmt::skip]
        let expected: [u8; HEADER_BYTES] = [
            0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // src_cid
            2, 0, 0, 0, 0, 0, 0, 0,                         // dst_cid
            0x44, 0x33, 0x22, 0x11,                         // src_port
            0x88, 0x13, 0, 0,                               // dst_port 5000
            6, 0, 0, 0,                                     // len
            1, 0,                                           // type
            5, 0,                                           // op
            0xd0, 0xc0, 0xb0, 0xa0,                         // flags
            0, 0x40, 0, 0,                                  // buf_alloc 16384
            0xfe, 0xff, 0xff, 0xff,                         // fwd_cnt
        ];
        assert_eq!(bytes, expected);
    }

    #[test]
    fn decode_inverts_encode_and_ignores_what_follows() {
        let mut bytes = sample().encode().to_vec();
        assert_eq!(Header::decode(&bytes), Some(sample()));
        bytes.extend_from_slice(b"tok-1\n");
        assert_eq!(Header::decode(&bytes), Some(sample()));
        assert_eq!(Header::decode(&bytes[..HEADER_BYTES - 1]), None);
        assert_eq!(Header::decode(&[]), None);
    }

    #[test]
    fn ops_by_number() {
        for op in 1..=7 {
            assert_eq!(Op::from_wire(op).map(|o| o as u16), Some(op));
        }
        assert_eq!(Op::from_wire(0), None);
        assert_eq!(Op::from_wire(8), None);
        assert_eq!(Op::from_wire(u16::MAX), None);
    }

    #[test]
    fn any_bytes_decode_to_the_fields_they_hold() {
        // Every header is representable: decode then encode gives the bytes back.
        let mut rng = XorShift64::new(0x2545_f491_4f6c_dd1d);
        for _ in 0..1000 {
            let mut bytes = [0u8; HEADER_BYTES];
            for b in bytes.iter_mut() {
                *b = rng.next_u64() as u8;
            }
            assert_eq!(Header::decode(&bytes).unwrap().encode(), bytes);
        }
    }
}
