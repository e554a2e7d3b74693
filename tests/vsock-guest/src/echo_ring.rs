//! The echo buffer: bytes received and not yet sent back, first in, first
//! out. It is the connection's receive buffer, so its capacity is the
//! `buf_alloc` the guest advertises, and what leaves it is `fwd_cnt`.

use crate::{Error, Result};

/// Small enough that a 100 KiB exchange needs several credit windows.
pub const ECHO_RING_BYTES: usize = 16 * 1024;

pub struct EchoRing {
    bytes: [u8; ECHO_RING_BYTES],
    /// Where the oldest byte is.
    start: usize,
    len: usize,
}

impl EchoRing {
    pub const EMPTY: EchoRing = EchoRing {
        bytes: [0; ECHO_RING_BYTES],
        start: 0,
        len: 0,
    };

    pub const fn capacity(&self) -> usize {
        ECHO_RING_BYTES
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn free(&self) -> usize {
        ECHO_RING_BYTES - self.len
    }

    /// Appends all of `data`, or nothing if it does not fit.
    pub fn push(&mut self, data: &[u8]) -> Result<()> {
        if data.len() > self.free() {
            return Err(Error::EchoOverflow);
        }
        let end = (self.start + self.len) % ECHO_RING_BYTES;
        let first = data.len().min(ECHO_RING_BYTES - end);
        self.bytes[end..end + first].copy_from_slice(&data[..first]);
        self.bytes[..data.len() - first].copy_from_slice(&data[first..]);
        self.len += data.len();
        Ok(())
    }

    /// The oldest bytes that lie together (all of them unless they wrap).
    pub fn front(&self) -> &[u8] {
        let first = self.len.min(ECHO_RING_BYTES - self.start);
        &self.bytes[self.start..self.start + first]
    }

    /// Drops the oldest `count` bytes (at most `len`).
    pub fn pop(&mut self, count: usize) {
        let count = count.min(self.len);
        self.start = (self.start + count) % ECHO_RING_BYTES;
        self.len -= count;
    }

    pub fn clear(&mut self) {
        self.start = 0;
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::xorshift::XorShift64;

    fn boxed() -> Box<EchoRing> {
        Box::new(EchoRing::EMPTY)
    }

    #[test]
    fn fills_to_capacity_and_refuses_more() {
        let mut ring = boxed();
        assert!(ring.is_empty());
        ring.push(&[7; ECHO_RING_BYTES - 1]).unwrap();
        assert_eq!(ring.push(&[1, 2]), Err(Error::EchoOverflow));
        assert_eq!(
            ring.len(),
            ECHO_RING_BYTES - 1,
            "a refused push adds nothing"
        );
        ring.push(&[8]).unwrap();
        assert_eq!(ring.free(), 0);
        assert_eq!(ring.front().len(), ECHO_RING_BYTES);
        assert_eq!(ring.front()[ECHO_RING_BYTES - 1], 8);
    }

    #[test]
    fn wraps_around_the_end() {
        let mut ring = boxed();
        ring.push(&[0; ECHO_RING_BYTES - 3]).unwrap();
        ring.pop(ECHO_RING_BYTES - 3);
        ring.push(b"abcdefg").unwrap();
        assert_eq!(ring.front(), b"abc");
        ring.pop(3);
        assert_eq!(ring.front(), b"defg");
        ring.pop(100);
        assert!(ring.is_empty());
    }

    #[test]
    fn behaves_like_a_deque_under_random_use() {
        let mut ring = boxed();
        let mut model = VecDeque::new();
        let mut rng = XorShift64::new(0x1234_5678_9abc_def1);
        let mut counter = 0u8;
        for _ in 0..20_000 {
            let r = rng.next_u64();
            if r % 2 == 0 {
                let n = (r >> 8) as usize % 5000;
                let data: Vec<u8> = (0..n)
                    .map(|_| {
                        counter = counter.wrapping_add(1);
                        counter
                    })
                    .collect();
                let fits = n <= ECHO_RING_BYTES - model.len();
                assert_eq!(ring.push(&data).is_ok(), fits);
                if fits {
                    model.extend(data);
                }
            } else {
                let n = (r >> 8) as usize % 5000;
                let front = ring.front().to_vec();
                let expected: Vec<u8> = model.iter().take(front.len()).copied().collect();
                assert_eq!(front, expected);
                let n = n.min(front.len());
                ring.pop(n);
                model.drain(..n);
            }
            assert_eq!(ring.len(), model.len());
        }
    }
}
