//! Stream flow control, both directions (virtio 1.2 §5.10.6.3).
//!
//! Primer: each side has a receive buffer of `buf_alloc` bytes and counts,
//! in a u32 that wraps, `fwd_cnt`: the bytes it has taken out of that buffer
//! (handed on, here: echoed back). Every header carries the sender's current
//! `buf_alloc` and `fwd_cnt`. A sender counts its own `tx_cnt`, and may have
//! at most `peer_buf_alloc − (tx_cnt − peer_fwd_cnt)` payload bytes
//! outstanding: the space the peer has left. A receiver whose peer may be
//! waiting for space tells it with CREDIT_UPDATE (a header alone); a sender
//! that has run out may ask for one with CREDIT_REQUEST.
//!
//! All counters wrap; differences are taken with wrapping arithmetic, which
//! stays right as long as less than 4 GiB is ever outstanding.

use crate::packet::Header;
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credit {
    /// Our receive buffer's size.
    buf_alloc: u32,
    /// Payload bytes received into it.
    rx_cnt: u32,
    /// Payload bytes taken out of it.
    fwd_cnt: u32,
    /// `fwd_cnt` as the peer last heard it.
    told_fwd_cnt: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// Payload bytes sent to the peer.
    tx_cnt: u32,
}

impl Credit {
    pub fn new(buf_alloc: u32) -> Credit {
        Credit {
            buf_alloc,
            rx_cnt: 0,
            fwd_cnt: 0,
            told_fwd_cnt: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            tx_cnt: 0,
        }
    }

    /// Takes the peer's view from a header it sent.
    pub fn update_peer(&mut self, header: &Header) {
        self.peer_buf_alloc = header.buf_alloc;
        self.peer_fwd_cnt = header.fwd_cnt;
    }

    /// Payload bytes the peer has room for now. A peer whose counters make no
    /// sense (it says it forwarded more than it was sent) gives no credit.
    pub fn peer_free(&self) -> u32 {
        let outstanding = self.tx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(outstanding)
    }

    pub fn sent(&mut self, bytes: u32) {
        self.tx_cnt = self.tx_cnt.wrapping_add(bytes);
    }

    /// Accounts `bytes` of payload arriving; more than we have room for is the
    /// peer ignoring our credit.
    pub fn received(&mut self, bytes: u32) -> Result<()> {
        if bytes > self.free() {
            return Err(Error::BadPacket {
                what: "rw_beyond_credit",
            });
        }
        self.rx_cnt = self.rx_cnt.wrapping_add(bytes);
        Ok(())
    }

    /// Bytes our receive buffer has room for.
    pub fn free(&self) -> u32 {
        let held = self.rx_cnt.wrapping_sub(self.fwd_cnt);
        self.buf_alloc.saturating_sub(held)
    }

    /// Accounts `bytes` taken out of our receive buffer.
    pub fn consumed(&mut self, bytes: u32) {
        self.fwd_cnt = self.fwd_cnt.wrapping_add(bytes);
    }

    /// Fills in our buf_alloc and fwd_cnt, as every header we send must.
    pub fn stamp(&mut self, header: &mut Header) {
        header.buf_alloc = self.buf_alloc;
        header.fwd_cnt = self.fwd_cnt;
        self.told_fwd_cnt = self.fwd_cnt;
    }

    /// Whether to send a CREDIT_UPDATE: we have freed a quarter of our buffer
    /// or more since the peer last heard, so it may be waiting for room it
    /// does not know it has. (Echoed data carries fwd_cnt anyway, so this
    /// rarely fires while echoing.)
    pub fn update_due(&self) -> bool {
        self.fwd_cnt.wrapping_sub(self.told_fwd_cnt) >= self.buf_alloc / 4
            && self.fwd_cnt != self.told_fwd_cnt
    }

    pub fn buf_alloc(&self) -> u32 {
        self.buf_alloc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer_says(buf_alloc: u32, fwd_cnt: u32) -> Header {
        Header {
            buf_alloc,
            fwd_cnt,
            ..Header::default()
        }
    }

    #[test]
    fn sending_uses_up_the_peers_space_and_its_fwd_cnt_gives_it_back() {
        let mut credit = Credit::new(1000);
        assert_eq!(credit.peer_free(), 0, "no credit before the peer speaks");
        credit.update_peer(&peer_says(4096, 0));
        assert_eq!(credit.peer_free(), 4096);
        credit.sent(4000);
        assert_eq!(credit.peer_free(), 96);
        credit.sent(96);
        assert_eq!(credit.peer_free(), 0);
        credit.update_peer(&peer_says(4096, 1000));
        assert_eq!(credit.peer_free(), 1000);
        // The peer may shrink its buffer below what is outstanding.
        credit.update_peer(&peer_says(2000, 1000));
        assert_eq!(credit.peer_free(), 0);
    }

    #[test]
    fn counters_wrap() {
        let mut credit = Credit::new(1000);
        credit.sent(u32::MAX - 9);
        credit.update_peer(&peer_says(100, u32::MAX - 9));
        credit.sent(30);
        assert_eq!(credit.peer_free(), 70);
        credit.update_peer(&peer_says(100, 20));
        assert_eq!(credit.peer_free(), 100);

        credit.received(1000).unwrap();
        credit.consumed(1000);
        for _ in 0..5_000_000 {
            credit.received(999).unwrap();
            credit.consumed(999);
        }
        assert_eq!(credit.free(), 1000);
    }

    #[test]
    fn a_peer_claiming_more_forwarded_than_sent_gets_nothing() {
        let mut credit = Credit::new(1000);
        credit.sent(10);
        credit.update_peer(&peer_says(4096, 11));
        assert_eq!(credit.peer_free(), 0);
    }

    #[test]
    fn receiving_beyond_our_buffer_is_a_bad_packet() {
        let mut credit = Credit::new(1000);
        credit.received(600).unwrap();
        assert_eq!(credit.free(), 400);
        assert_eq!(
            credit.received(401),
            Err(Error::BadPacket {
                what: "rw_beyond_credit"
            })
        );
        credit.consumed(100);
        credit.received(500).unwrap();
        assert_eq!(credit.free(), 0);
    }

    #[test]
    fn headers_carry_our_counters_and_updates_follow_a_quarter_freed() {
        let mut credit = Credit::new(1000);
        let mut header = Header::default();
        credit.stamp(&mut header);
        assert_eq!((header.buf_alloc, header.fwd_cnt), (1000, 0));
        credit.received(1000).unwrap();
        credit.consumed(249);
        assert!(!credit.update_due());
        credit.consumed(1);
        assert!(credit.update_due());
        credit.stamp(&mut header);
        assert_eq!(header.fwd_cnt, 250);
        assert!(!credit.update_due());
    }
}
