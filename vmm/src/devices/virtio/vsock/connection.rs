//! One stream connection between a guest AF_VSOCK socket and a host Unix
//! stream, as a small state machine.
//!
//! # Primer (virtio 1.2, §5.10.6)
//! - **Handshake.** The side that connects sends REQUEST; the listening side
//!   answers RESPONSE (accepted) or RST (refused). A guest-initiated
//!   connection starts here in [`State::PeerInit`] (the host stream is
//!   already connected; RESPONSE is owed), a host-initiated one in
//!   [`State::LocalInit`] (REQUEST owed, then RESPONSE awaited).
//! - **Data.** RW packets carry the bytes. Every packet carries the sender's
//!   `buf_alloc` (its receive buffer) and `fwd_cnt` (bytes it has passed
//!   on), so each side knows how much the other can still take:
//!   `buf_alloc − (bytes sent − fwd_cnt)`. Sending beyond that is a protocol
//!   violation: the guest that does it has its connection reset. Since data
//!   mostly flows one way, the receiver volunteers CREDIT_UPDATE once it has
//!   passed on a good part of its buffer; a sender out of credit may ask with
//!   CREDIT_REQUEST.
//! - **Close.** SHUTDOWN carries flags: RCV (the sender takes no more data),
//!   SEND (it sends no more). Once neither direction can carry data the
//!   connection ends with RST, which also aborts it at any time.
//!
//! The host side of the stream is non-blocking: guest data the host cannot
//! take at once waits in `to_host` (never more than the `buf_alloc` we
//! advertise), and host data is read straight into the guest's RX buffer,
//! never more than the guest's credit.

use std::collections::VecDeque;
use std::io::{ErrorKind, Write};
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use virtio_vsock::packet::{VsockPacket, PKT_HEADER_SIZE};
use vm_memory::io::{ReadVolatile, WriteVolatile};
use vm_memory::{Bytes, VolatileMemoryError, VolatileSlice};
use vmm_sys_util::epoll::EventSet;

use super::{op, HOST_CID, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};

/// The receive buffer we advertise: guest bytes the host has not taken yet.
pub const BUF_ALLOC: u32 = 256 * 1024;
/// Volunteer a credit update once this much has been passed on unannounced.
const CREDIT_UPDATE_THRESHOLD: u32 = BUF_ALLOC / 4;
/// How long the guest has to answer a host's connection request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a closing connection may take to hand its last bytes to the host.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Host-initiated: REQUEST owed or sent, the guest's RESPONSE awaited.
    LocalInit,
    /// Guest-initiated: the host stream is connected, RESPONSE owed.
    PeerInit,
    Established,
    /// Over; the muxer removes it (sending RST if [`Connection::owes_rst`]).
    Killed,
}

/// Packets owed to the guest, one bit each; sent in the order tested in
/// [`Connection::to_guest`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Pending(u8);

impl Pending {
    const RESPONSE: u8 = 1;
    const REQUEST: u8 = 2;
    /// The host stream may have data (or its end: then SHUTDOWN goes instead).
    const RW: u8 = 4;
    const CREDIT_REQUEST: u8 = 8;
    const CREDIT_UPDATE: u8 = 16;

    fn set(&mut self, bit: u8) {
        self.0 |= bit;
    }
    fn clear(&mut self, bit: u8) {
        self.0 &= !bit;
    }
    fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
    fn take(&mut self, bit: u8) -> bool {
        let had = self.has(bit);
        self.clear(bit);
        had
    }
}

/// A header to write into an RX buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub op: u16,
    pub flags: u32,
    pub len: u32,
}

pub struct Connection {
    /// The host side's port: the port the guest connected to, or the one
    /// allocated for a host program's connection.
    pub local_port: u32,
    pub peer_port: u32,
    peer_cid: u64,
    stream: UnixStream,
    state: State,
    pending: Pending,
    /// A host-initiated connection's reply to its host program (`OK <port>\n`),
    /// written before any guest data and not counted as such.
    ack: Vec<u8>,
    /// Guest data the host has not taken yet.
    to_host: VecDeque<u8>,
    /// Guest bytes passed on to the host stream.
    fwd_cnt: Wrapping<u32>,
    /// `fwd_cnt` as last told to the guest.
    fwd_cnt_sent: Wrapping<u32>,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    /// Host bytes sent to the guest.
    rx_cnt: Wrapping<u32>,
    /// SHUTDOWN flags the guest has sent.
    peer_shutdown: u32,
    /// The host stream reached end of file.
    host_eof: bool,
    host_write_shut: bool,
    credit_requested: bool,
    /// A host-initiated connection's REQUEST went to the guest.
    request_sent: bool,
    expiry: Option<Instant>,
    /// Why it was killed, for the device's counters (`None`: an orderly end).
    kill_reason: Option<&'static str>,
    owes_rst: bool,
}

impl Connection {
    fn new(
        local_port: u32,
        peer_port: u32,
        peer_cid: u64,
        stream: UnixStream,
        state: State,
    ) -> Self {
        Connection {
            local_port,
            peer_port,
            peer_cid,
            stream,
            state,
            pending: Pending::default(),
            ack: Vec::new(),
            to_host: VecDeque::new(),
            fwd_cnt: Wrapping(0),
            fwd_cnt_sent: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            rx_cnt: Wrapping(0),
            peer_shutdown: 0,
            host_eof: false,
            host_write_shut: false,
            credit_requested: false,
            request_sent: false,
            expiry: None,
            kill_reason: None,
            owes_rst: false,
        }
    }

    /// The guest asked (REQUEST with its credit) and `stream` reached the host listener.
    pub fn from_guest_request(
        local_port: u32,
        peer_port: u32,
        peer_cid: u64,
        stream: UnixStream,
        buf_alloc: u32,
        fwd_cnt: u32,
    ) -> Self {
        let mut conn = Self::new(local_port, peer_port, peer_cid, stream, State::PeerInit);
        conn.peer_buf_alloc = buf_alloc;
        conn.peer_fwd_cnt = Wrapping(fwd_cnt);
        conn.pending.set(Pending::RESPONSE);
        conn
    }

    /// A host program asked for guest port `peer_port`. The deadline runs
    /// from now: a request the guest cannot take yet (its driver is not up)
    /// ends too, and the program may try again.
    pub fn from_host_request(
        local_port: u32,
        peer_port: u32,
        peer_cid: u64,
        stream: UnixStream,
    ) -> Self {
        let mut conn = Self::new(local_port, peer_port, peer_cid, stream, State::LocalInit);
        conn.pending.set(Pending::REQUEST);
        conn.expiry = Some(Instant::now() + REQUEST_TIMEOUT);
        conn
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    pub fn has_pending(&self) -> bool {
        self.pending != Pending::default()
    }

    /// Whether the guest must be told with an RST that the connection is gone.
    pub fn owes_rst(&self) -> bool {
        self.owes_rst
    }

    pub fn kill_reason(&self) -> Option<&'static str> {
        self.kill_reason
    }

    pub fn expiry(&self) -> Option<Instant> {
        self.expiry
    }

    /// Credit the guest has left for our data.
    fn peer_credit(&self) -> u32 {
        let in_flight = (self.rx_cnt - self.peer_fwd_cnt).0;
        // A guest claiming to have passed on more than it got leaves no credit.
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    fn can_read_host(&self) -> bool {
        self.state == State::Established && !self.host_eof && self.peer_shutdown & SHUTDOWN_RCV == 0
    }

    /// What to wait for on the host stream. Nothing at all means the muxer
    /// takes the stream out of its epoll, so a hang-up it cannot act on yet
    /// does not wake it again and again.
    pub fn interest(&self) -> EventSet {
        let mut set = EventSet::empty();
        if self.can_read_host() && !self.pending.has(Pending::RW) && self.peer_credit() > 0 {
            set |= EventSet::IN;
        }
        if !self.ack.is_empty() || !self.to_host.is_empty() {
            set |= EventSet::OUT;
        }
        set
    }

    fn kill(&mut self, reason: Option<&'static str>, rst: bool) {
        if self.state != State::Killed {
            self.state = State::Killed;
            self.kill_reason = reason;
            self.owes_rst = rst;
            self.pending = Pending::default();
        }
    }

    /// A packet from the guest for this connection.
    pub fn from_guest(&mut self, pkt: &VsockPacket<'_, ()>) {
        self.peer_buf_alloc = pkt.buf_alloc();
        self.peer_fwd_cnt = Wrapping(pkt.fwd_cnt());
        if self.peer_credit() > 0 {
            self.credit_requested = false;
        }
        match (self.state, pkt.op()) {
            (State::Killed, _) => {}
            // The guest aborts (or refuses a host's request): nothing is owed back.
            (_, op::RST) => self.kill(None, false),
            (State::LocalInit, op::RESPONSE) => {
                self.state = State::Established;
                self.expiry = None;
                self.ack = format!("OK {}\n", self.local_port).into_bytes();
                self.flush();
            }
            (State::Established, op::RW) => self.take_data(pkt.data_slice()),
            (State::Established, op::SHUTDOWN) => {
                self.peer_shutdown |= pkt.flags() & (SHUTDOWN_RCV | SHUTDOWN_SEND);
                self.pending.clear(Pending::RW);
                self.settle();
            }
            (_, op::CREDIT_UPDATE) => {}
            (State::Established | State::PeerInit, op::CREDIT_REQUEST) => {
                self.pending.set(Pending::CREDIT_UPDATE)
            }
            _ => self.kill(Some("unexpected_packets"), true),
        }
    }

    /// Guest data: straight to the host stream if nothing waits before it,
    /// the rest into `to_host`.
    fn take_data(&mut self, data: Option<&VolatileSlice<'_, ()>>) {
        if self.peer_shutdown & SHUTDOWN_SEND != 0 {
            return self.kill(Some("unexpected_packets"), true);
        }
        let Some(data) = data else { return };
        if self.to_host.len() + data.len() > BUF_ALLOC as usize {
            return self.kill(Some("credit_violations"), true);
        }
        let mut written = 0;
        if self.ack.is_empty() && self.to_host.is_empty() {
            while written < data.len() {
                let Ok(rest) = data.subslice(written, data.len() - written) else {
                    break;
                };
                match self.stream.write_volatile(&rest) {
                    Ok(0) => break,
                    Ok(n) => written += n,
                    Err(e) if would_block(&e) => break,
                    Err(_) => return self.kill(Some("host_write_errors"), true),
                }
            }
        }
        if written < data.len() {
            let mut rest = vec![0u8; data.len() - written];
            if data.read_slice(&mut rest, written).is_err() {
                return self.kill(Some("host_write_errors"), true);
            }
            self.to_host.extend(rest);
        }
        self.forwarded(written);
    }

    fn forwarded(&mut self, bytes: usize) {
        self.fwd_cnt += Wrapping(bytes as u32);
        if (self.fwd_cnt - self.fwd_cnt_sent).0 >= CREDIT_UPDATE_THRESHOLD {
            self.pending.set(Pending::CREDIT_UPDATE);
        }
    }

    /// Writes what waits for the host stream, as far as it takes it.
    fn flush(&mut self) {
        while !self.ack.is_empty() {
            match self.stream.write(&self.ack) {
                Ok(0) => return,
                Ok(n) => drop(self.ack.drain(..n)),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => return self.kill(Some("host_write_errors"), true),
            }
        }
        while !self.to_host.is_empty() {
            let (front, _) = self.to_host.as_slices();
            match self.stream.write(front) {
                Ok(0) => return,
                Ok(n) => {
                    self.to_host.drain(..n);
                    self.forwarded(n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => return self.kill(Some("host_write_errors"), true),
            }
        }
        self.settle();
    }

    /// After a shutdown or a flush: half-close the host stream once the
    /// guest sends no more and its data is out; end the connection once no
    /// direction can carry data.
    fn settle(&mut self) {
        if self.state != State::Established {
            return;
        }
        let drained = self.ack.is_empty() && self.to_host.is_empty();
        let guest_done = self.peer_shutdown & SHUTDOWN_SEND != 0;
        if guest_done && drained && !self.host_write_shut {
            self.host_write_shut = true;
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        let host_done = self.host_eof || self.peer_shutdown & SHUTDOWN_RCV != 0;
        if guest_done && host_done {
            if drained {
                self.kill(None, true);
            } else if self.expiry.is_none() {
                self.expiry = Some(Instant::now() + CLOSE_TIMEOUT);
            }
        }
    }

    /// The host stream is ready (`events` from epoll).
    pub fn host_event(&mut self, events: EventSet) {
        if events.contains(EventSet::ERROR) {
            return self.kill(Some("host_stream_errors"), true);
        }
        if events.intersects(EventSet::IN | EventSet::HANG_UP) && self.can_read_host() {
            self.pending.set(Pending::RW);
        }
        if events.intersects(EventSet::OUT | EventSet::HANG_UP)
            && self.interest().contains(EventSet::OUT)
        {
            self.flush();
        }
    }

    /// Called with the current time; ends a connection past its deadline.
    pub fn check_expiry(&mut self, now: Instant) {
        match self.expiry {
            Some(at) if at <= now => match self.state {
                // The guest never heard of an unsent request: no RST for it.
                State::LocalInit => self.kill(Some("request_timeouts"), self.request_sent),
                _ => self.kill(Some("close_timeouts"), true),
            },
            _ => {}
        }
    }

    /// Fills `pkt` (an RX buffer) with the next packet owed to the guest;
    /// false if there is none now.
    pub fn to_guest(&mut self, pkt: &mut VsockPacket<'_, ()>) -> bool {
        let Some(reply) = self.next_reply(pkt) else {
            return false;
        };
        fill_header(pkt, self.local_port, self.peer_cid, self.peer_port, reply);
        pkt.set_buf_alloc(BUF_ALLOC).set_fwd_cnt(self.fwd_cnt.0);
        self.fwd_cnt_sent = self.fwd_cnt;
        true
    }

    fn next_reply(&mut self, pkt: &mut VsockPacket<'_, ()>) -> Option<Reply> {
        let control = |op| {
            Some(Reply {
                op,
                flags: 0,
                len: 0,
            })
        };
        if self.pending.take(Pending::RESPONSE) {
            self.state = State::Established;
            return control(op::RESPONSE);
        }
        if self.pending.take(Pending::REQUEST) {
            self.request_sent = true;
            self.expiry = Some(Instant::now() + REQUEST_TIMEOUT);
            return control(op::REQUEST);
        }
        if self.pending.has(Pending::RW) {
            if let Some(reply) = self.read_host(pkt) {
                return Some(reply);
            }
        }
        if self.pending.take(Pending::CREDIT_REQUEST) {
            return control(op::CREDIT_REQUEST);
        }
        if self.pending.take(Pending::CREDIT_UPDATE) {
            return control(op::CREDIT_UPDATE);
        }
        None
    }

    /// Reads host data into the packet's buffer, up to the guest's credit.
    fn read_host(&mut self, pkt: &mut VsockPacket<'_, ()>) -> Option<Reply> {
        if !self.can_read_host() {
            self.pending.clear(Pending::RW);
            return None;
        }
        let credit = self.peer_credit();
        if credit == 0 {
            self.pending.clear(Pending::RW);
            if !self.credit_requested {
                self.credit_requested = true;
                self.pending.set(Pending::CREDIT_REQUEST);
            }
            return None;
        }
        let data = pkt.data_slice()?;
        let len = data.len().min(credit as usize);
        let Ok(mut target) = data.subslice(0, len) else {
            return None;
        };
        match self.stream.read_volatile(&mut target) {
            Ok(0) => {
                self.pending.clear(Pending::RW);
                self.host_eof = true;
                let reply = Reply {
                    op: op::SHUTDOWN,
                    flags: SHUTDOWN_SEND,
                    len: 0,
                };
                self.settle();
                Some(reply)
            }
            Ok(n) => {
                // RW stays pending: the stream may hold more.
                self.rx_cnt += Wrapping(n as u32);
                Some(Reply {
                    op: op::RW,
                    flags: 0,
                    len: n as u32,
                })
            }
            Err(e) if would_block(&e) => {
                self.pending.clear(Pending::RW);
                None
            }
            Err(_) => {
                self.kill(Some("host_read_errors"), true);
                None
            }
        }
    }
}

fn would_block(e: &VolatileMemoryError) -> bool {
    matches!(e, VolatileMemoryError::IOError(io) if io.kind() == ErrorKind::WouldBlock)
}

/// Writes a whole header into an RX buffer: zeroes first, so no field is
/// left from whatever the guest had there.
pub fn fill_header(
    pkt: &mut VsockPacket<'_, ()>,
    local_port: u32,
    peer_cid: u64,
    peer_port: u32,
    reply: Reply,
) {
    let _ = pkt.header_slice().write_slice(&[0u8; PKT_HEADER_SIZE], 0);
    pkt.set_src_cid(HOST_CID)
        .set_dst_cid(peer_cid)
        .set_src_port(local_port)
        .set_dst_port(peer_port)
        .set_type(TYPE_STREAM)
        .set_op(reply.op)
        .set_flags(reply.flags)
        .set_len(reply.len);
}

#[cfg(test)]
mod tests {
    use std::io::{self, Read};

    use super::*;

    /// The VMM's non-blocking end and the host program's end of a stream.
    pub(crate) fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (ours, theirs) = UnixStream::pair()?;
        ours.set_nonblocking(true)?;
        Ok((ours, theirs))
    }

    /// A packet over plain buffers, as the guest would have written it.
    struct Buf {
        header: [u8; PKT_HEADER_SIZE],
        data: Vec<u8>,
    }

    impl Buf {
        fn new(data_len: usize) -> Self {
            Buf {
                header: [0; PKT_HEADER_SIZE],
                data: vec![0; data_len],
            }
        }

        fn packet(&mut self) -> VsockPacket<'_, ()> {
            let data = (!self.data.is_empty()).then_some(self.data.as_mut_slice());
            // SAFETY: both buffers live as long as the packet borrows `self`,
            // and nothing else touches them meanwhile.
            unsafe { VsockPacket::new(&mut self.header, data) }.unwrap()
        }
    }

    /// A guest packet: header fields, then payload.
    fn guest(op: u16, flags: u32, buf_alloc: u32, fwd_cnt: u32, payload: &[u8]) -> Buf {
        let mut buf = Buf::new(payload.len());
        buf.data.copy_from_slice(payload);
        let mut pkt = buf.packet();
        pkt.set_src_cid(3)
            .set_dst_cid(HOST_CID)
            .set_src_port(1000)
            .set_dst_port(1234)
            .set_type(TYPE_STREAM)
            .set_op(op)
            .set_flags(flags)
            .set_buf_alloc(buf_alloc)
            .set_fwd_cnt(fwd_cnt)
            .set_len(payload.len() as u32);
        buf
    }

    fn deliver(conn: &mut Connection, mut buf: Buf) {
        let mut pkt = buf.packet();
        // A packet read back from memory, as the muxer sees it.
        let header = *pkt.header_slice();
        let mut raw = [0u8; PKT_HEADER_SIZE];
        header.read_slice(&mut raw, 0).unwrap();
        pkt.set_header_from_raw(&raw).unwrap();
        conn.from_guest(&pkt);
    }

    /// The next packet the connection owes the guest, if any: (op, flags, payload).
    fn next(conn: &mut Connection, room: usize) -> Option<(u16, u32, Vec<u8>)> {
        let mut buf = Buf::new(room);
        let mut pkt = buf.packet();
        if !conn.to_guest(&mut pkt) {
            return None;
        }
        let (op, flags, len) = (pkt.op(), pkt.flags(), pkt.len() as usize);
        assert_eq!(
            (pkt.src_cid(), pkt.dst_cid(), pkt.type_()),
            (HOST_CID, 3, TYPE_STREAM)
        );
        assert_eq!(pkt.buf_alloc(), BUF_ALLOC);
        Some((op, flags, buf.data[..len].to_vec()))
    }

    fn established(buf_alloc: u32) -> (Connection, UnixStream) {
        let (ours, host) = pair().unwrap();
        let mut conn = Connection::from_guest_request(1234, 1000, 3, ours, buf_alloc, 0);
        assert_eq!(next(&mut conn, 64).unwrap().0, op::RESPONSE);
        assert_eq!(conn.state(), State::Established);
        (conn, host)
    }

    #[test]
    fn guest_data_reaches_the_host_and_host_data_the_guest() {
        let (mut conn, mut host) = established(4096);
        deliver(&mut conn, guest(op::RW, 0, 4096, 0, b"hello"));
        let mut got = [0u8; 5];
        host.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        assert!(conn.interest().contains(EventSet::IN));
        host.write_all(b"world!").unwrap();
        conn.host_event(EventSet::IN);
        assert!(
            !conn.interest().contains(EventSet::IN),
            "data pending: not polled again"
        );
        assert_eq!(next(&mut conn, 4), Some((op::RW, 0, b"worl".to_vec())));
        assert_eq!(next(&mut conn, 64), Some((op::RW, 0, b"d!".to_vec())));
        assert_eq!(next(&mut conn, 64), None, "the stream is drained");
        assert!(conn.interest().contains(EventSet::IN));
    }

    #[test]
    fn host_data_respects_the_guest_credit_and_asks_for_more() {
        let (mut conn, mut host) = established(8);
        host.write_all(&[7u8; 20]).unwrap();
        conn.host_event(EventSet::IN);
        assert_eq!(next(&mut conn, 64).unwrap().2.len(), 8);
        assert_eq!(next(&mut conn, 64).map(|p| p.0), Some(op::CREDIT_REQUEST));
        assert_eq!(next(&mut conn, 64), None);
        assert!(
            conn.interest().is_empty(),
            "no credit: the stream is not polled"
        );
        // The guest passed on 8 bytes: credit again.
        deliver(&mut conn, guest(op::CREDIT_UPDATE, 0, 8, 8, b""));
        assert!(conn.interest().contains(EventSet::IN));
        conn.host_event(EventSet::IN);
        assert_eq!(next(&mut conn, 64).unwrap().2.len(), 8);
    }

    #[test]
    fn a_guest_beyond_its_credit_is_reset() {
        let (mut conn, host) = established(4096);
        // Nobody reads `host`: the socket buffer fills, then `to_host` does.
        let chunk = vec![1u8; 64 * 1024];
        for _ in 0..64 {
            deliver(&mut conn, guest(op::RW, 0, 4096, 0, &chunk));
            if conn.state() == State::Killed {
                break;
            }
        }
        assert_eq!(conn.state(), State::Killed);
        assert_eq!(conn.kill_reason(), Some("credit_violations"));
        assert!(conn.owes_rst());
        drop(host);
    }

    #[test]
    fn buffered_guest_data_is_flushed_when_the_host_reads() {
        let (mut conn, mut host) = established(4096);
        let chunk: Vec<u8> = (0..BUF_ALLOC).map(|i| i as u8).collect();
        deliver(&mut conn, guest(op::RW, 0, 4096, 0, &chunk));
        assert_eq!(conn.state(), State::Established);
        assert!(conn.interest().contains(EventSet::OUT), "some of it waits");
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        while got.len() < chunk.len() {
            let n = host.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
            conn.host_event(EventSet::OUT);
        }
        assert_eq!(got, chunk);
        assert!(!conn.interest().contains(EventSet::OUT));
        // A quarter of the buffer passed on: the guest hears of it.
        let mut ops = Vec::new();
        while let Some((op, _, _)) = next(&mut conn, 64) {
            ops.push(op);
        }
        assert_eq!(ops, vec![op::CREDIT_UPDATE]);
    }

    #[test]
    fn guest_shutdown_half_closes_then_host_eof_ends_it() {
        let (mut conn, mut host) = established(4096);
        deliver(&mut conn, guest(op::RW, 0, 4096, 0, b"last"));
        deliver(&mut conn, guest(op::SHUTDOWN, SHUTDOWN_SEND, 4096, 0, b""));
        let mut got = Vec::new();
        host.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"last", "the host sees the data, then end of file");
        assert_eq!(conn.state(), State::Established, "the host may still send");
        host.write_all(b"reply").unwrap();
        drop(host);
        conn.host_event(EventSet::IN | EventSet::HANG_UP);
        assert_eq!(next(&mut conn, 64), Some((op::RW, 0, b"reply".to_vec())));
        assert_eq!(
            next(&mut conn, 64),
            Some((op::SHUTDOWN, SHUTDOWN_SEND, vec![]))
        );
        assert_eq!(conn.state(), State::Killed, "no direction is left");
        assert_eq!(conn.kill_reason(), None, "an orderly end");
        assert!(conn.owes_rst());
    }

    #[test]
    fn full_guest_shutdown_waits_for_buffered_data_then_times_out() {
        let (mut conn, host) = established(4096);
        deliver(
            &mut conn,
            guest(op::RW, 0, 4096, 0, &vec![2u8; BUF_ALLOC as usize]),
        );
        deliver(
            &mut conn,
            guest(op::SHUTDOWN, SHUTDOWN_SEND | SHUTDOWN_RCV, 4096, 0, b""),
        );
        assert_eq!(
            conn.state(),
            State::Established,
            "data still waits for the host"
        );
        let at = conn.expiry().expect("a close deadline");
        conn.check_expiry(at + Duration::from_millis(1));
        assert_eq!(conn.kill_reason(), Some("close_timeouts"));
        drop(host);
    }

    #[test]
    fn host_request_sends_request_and_acks_the_host_on_response() {
        let (ours, mut host) = pair().unwrap();
        let mut conn = Connection::from_host_request(1 << 30, 5000, 3, ours);
        assert_eq!(next(&mut conn, 64).map(|p| p.0), Some(op::REQUEST));
        assert!(conn.expiry().is_some());
        deliver(&mut conn, guest(op::RESPONSE, 0, 4096, 0, b""));
        assert_eq!(conn.state(), State::Established);
        deliver(&mut conn, guest(op::RW, 0, 4096, 0, b"data"));
        let mut got = [0u8; 14 + 4];
        host.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"OK 1073741824\ndata");
    }

    #[test]
    fn host_request_refused_or_unanswered() {
        let (ours, _host) = pair().unwrap();
        let mut conn = Connection::from_host_request(1 << 30, 5000, 3, ours);
        next(&mut conn, 64);
        deliver(&mut conn, guest(op::RST, 0, 0, 0, b""));
        assert_eq!((conn.state(), conn.owes_rst()), (State::Killed, false));

        let (ours, _host) = pair().unwrap();
        let mut conn = Connection::from_host_request(1 << 30, 5000, 3, ours);
        next(&mut conn, 64);
        conn.check_expiry(Instant::now() + REQUEST_TIMEOUT + Duration::from_millis(1));
        assert_eq!(conn.kill_reason(), Some("request_timeouts"));
    }

    #[test]
    fn packets_out_of_place_reset_the_connection() {
        // Data before the handshake completed.
        let (ours, _host) = pair().unwrap();
        let mut conn = Connection::from_host_request(1 << 30, 5000, 3, ours);
        deliver(&mut conn, guest(op::RW, 0, 4096, 0, b"early"));
        assert_eq!(conn.kill_reason(), Some("unexpected_packets"));
        // An unknown op on an established connection.
        let (mut conn, _host) = established(4096);
        deliver(&mut conn, guest(42, 0, 4096, 0, b""));
        assert_eq!(conn.kill_reason(), Some("unexpected_packets"));
        // Data after the guest said it sends no more.
        let (mut conn, _host) = established(4096);
        deliver(&mut conn, guest(op::SHUTDOWN, SHUTDOWN_SEND, 4096, 0, b""));
        deliver(&mut conn, guest(op::RW, 0, 4096, 0, b"late"));
        assert_eq!(conn.kill_reason(), Some("unexpected_packets"));
    }

    #[test]
    fn a_lying_fwd_cnt_gives_no_credit() {
        let (mut conn, mut host) = established(4096);
        deliver(&mut conn, guest(op::CREDIT_UPDATE, 0, 4096, 1_000_000, b""));
        assert_eq!(conn.peer_credit(), 0);
        host.write_all(b"x").unwrap();
        conn.host_event(EventSet::IN);
        assert_eq!(next(&mut conn, 64).map(|p| p.0), Some(op::CREDIT_REQUEST));
    }

    #[test]
    fn credit_request_is_answered() {
        let (mut conn, _host) = established(4096);
        deliver(&mut conn, guest(op::CREDIT_REQUEST, 0, 4096, 0, b""));
        assert_eq!(next(&mut conn, 64).map(|p| p.0), Some(op::CREDIT_UPDATE));
    }
}
