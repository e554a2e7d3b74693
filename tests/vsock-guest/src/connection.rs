//! One vsock stream connection, guest side, that echoes what it receives.
//!
//! Primer (virtio 1.2 §5.10.6): a connection joins two (CID, port) pairs;
//! the host is CID 2. Every packet is a header (packet.rs), and an RW packet
//! also carries `len` payload bytes; every header carries its sender's
//! credit (credit.rs).
//!
//! - Connect: the guest sends REQUEST; the peer answers RESPONSE, or RST if
//!   nothing listens on that port (refused).
//! - Accept: the peer sends REQUEST to a port the guest listens on; the guest
//!   answers RESPONSE. A packet for a connection that does not exist is
//!   answered with RST (unless it is an RST).
//! - Data: RW packets, never more than the receiver's credit allows.
//!   CREDIT_REQUEST asks the receiver for a CREDIT_UPDATE.
//! - Close: SHUTDOWN, flags RCV (1: the sender will receive no more) and SEND
//!   (2: it will send no more). When a side has shut down both ways, its peer
//!   answers RST; a side that gets no RST in time sends RST itself. RST at any
//!   time ends the connection at once.
//!
//! The echo loop: RW payload goes into the echo ring, which is the guest's
//! receive buffer (its capacity is the `buf_alloc` advertised), and goes back
//! to the host as the host's credit allows; bytes leaving the ring are the
//! guest's `fwd_cnt`. In connect mode a greeting (the message and a newline)
//! goes out first. When the host shuts down its sending side, the guest sends
//! back what is left (unless the host will receive no more), shuts down both
//! ways, and waits for the host's RST.
//!
//! What the device delivers is checked: an unknown op, a type other than
//! STREAM, a destination CID other than the guest's, a payload on anything but
//! RW, or RW beyond the guest's credit is `Error::BadPacket`.
//!
//! Every wait is bounded by a deadline in TSC ticks (clock.rs), restarted
//! whenever the peer makes progress.

use core::fmt;

use crate::clock::Deadline;
use crate::credit::Credit;
use crate::echo_ring::EchoRing;
use crate::packet::{Header, Op, HOST_CID, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};
use crate::{Error, Result};

/// What a connection needs of the device: packets both ways, and time.
pub trait Link {
    /// Queues one packet (`header.len == payload.len()`), waiting (bounded)
    /// for room.
    fn send(&mut self, header: &Header, payload: &[u8]) -> Result<()>;
    /// Hands the next packet the device delivered, if any, to `handle`.
    fn receive<R>(&mut self, handle: impl FnOnce(&Header, &[u8]) -> R) -> Result<Option<R>>;
    fn now_ticks(&mut self) -> u64;
    /// The largest payload one packet may carry.
    fn max_payload(&self) -> usize;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr {
    pub cid: u64,
    pub port: u32,
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The host shut down, the guest shut down, the host sent RST.
    Clean,
    /// As Clean, but no RST came: the guest sent one.
    NoRstFromHost,
    /// The host reset the connection without shutting it down.
    ResetByHost,
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ending::Clean => "clean",
            Ending::NoRstFromHost => "no_rst_from_host",
            Ending::ResetByHost => "reset_by_host",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// RW payload bytes sent back (the greeting not included).
    pub echoed_bytes: u64,
    pub ended: Ending,
}

/// Connects from `local` to the host's `peer_port`, sends `greeting`, then
/// echoes until the host closes.
pub fn connect<L: Link>(
    link: &mut L,
    local: Addr,
    peer_port: u32,
    greeting: &[u8],
    ring: &mut EchoRing,
    wait_ticks: u64,
) -> Result<Summary> {
    let peer = Addr {
        cid: HOST_CID,
        port: peer_port,
    };
    let mut conn = Connection::new(link, local, peer, ring, greeting, wait_ticks);
    conn.send_control(Op::Request, 0)?;
    let deadline = conn.deadline();
    loop {
        match conn.poll()? {
            Some(Incoming::Ours(header, Op::Response)) => {
                conn.credit.update_peer(&header);
                break;
            }
            Some(Incoming::Ours(_, Op::Rst)) => return Err(Error::Refused { port: peer_port }),
            Some(Incoming::Ours(header, Op::CreditUpdate | Op::CreditRequest)) => {
                conn.credit.update_peer(&header);
            }
            Some(Incoming::Ours(..)) => {
                return Err(Error::BadPacket {
                    what: "unexpected_op",
                })
            }
            Some(Incoming::Stray(header, op)) => reset_stray(conn.link, &header, op)?,
            None => conn.idle(&deadline, "response")?,
        }
    }
    conn.established = true;
    conn.echo()
}

/// Waits for the host to connect to `local`, accepts, then echoes until the
/// host closes. Packets for other ports are reset.
pub fn listen<L: Link>(
    link: &mut L,
    local: Addr,
    ring: &mut EchoRing,
    wait_ticks: u64,
) -> Result<Summary> {
    let deadline = Deadline::after(link.now_ticks(), wait_ticks);
    let request = loop {
        let got = link.receive(|header, _| check(header, local.cid).map(|op| (*header, op)))?;
        match got.transpose()? {
            Some((header, Op::Request)) if header.dst_port == local.port => break header,
            Some((header, op)) => reset_stray(link, &header, op)?,
            None if deadline.passed(link.now_ticks()) => {
                return Err(Error::Timeout { waiting: "request" })
            }
            None => core::hint::spin_loop(),
        }
    };
    let peer = Addr {
        cid: request.src_cid,
        port: request.src_port,
    };
    let mut conn = Connection::new(link, local, peer, ring, &[], wait_ticks);
    conn.credit.update_peer(&request);
    conn.established = true;
    conn.send_control(Op::Response, 0)?;
    conn.echo()
}

/// The checks every delivered packet passes; its op if it does.
fn check(header: &Header, our_cid: u64) -> Result<Op> {
    let op = header.op().ok_or(Error::BadPacket { what: "op" })?;
    if header.type_ != TYPE_STREAM {
        return Err(Error::BadPacket { what: "type" });
    }
    if header.dst_cid != our_cid {
        return Err(Error::BadPacket { what: "dst_cid" });
    }
    if op != Op::Rw && header.len != 0 {
        return Err(Error::BadPacket {
            what: "payload_without_rw",
        });
    }
    Ok(op)
}

/// Answers a packet for no connection of ours with RST, as the spec asks.
fn reset_stray<L: Link>(link: &mut L, header: &Header, op: Op) -> Result<()> {
    if op == Op::Rst {
        return Ok(());
    }
    let reply = Header {
        src_cid: header.dst_cid,
        dst_cid: header.src_cid,
        src_port: header.dst_port,
        dst_port: header.src_port,
        len: 0,
        type_: TYPE_STREAM,
        op: Op::Rst as u16,
        flags: 0,
        buf_alloc: 0,
        fwd_cnt: 0,
    };
    link.send(&reply, &[])
}

/// A delivered packet that passed `check`.
enum Incoming {
    /// For this connection; an RW payload is already in the echo ring.
    Ours(Header, Op),
    /// For anything else.
    Stray(Header, Op),
}

struct Connection<'a, L: Link> {
    link: &'a mut L,
    wait_ticks: u64,
    local: Addr,
    peer: Addr,
    credit: Credit,
    ring: &'a mut EchoRing,
    /// Bytes to send before any echo: the greeting.
    outbox: &'a [u8],
    established: bool,
    /// The SHUTDOWN flags the peer has sent.
    peer_shutdown: u32,
    /// A CREDIT_REQUEST went out and no credit has come since.
    credit_requested: bool,
    echoed_bytes: u64,
}

impl<'a, L: Link> Connection<'a, L> {
    fn new(
        link: &'a mut L,
        local: Addr,
        peer: Addr,
        ring: &'a mut EchoRing,
        outbox: &'a [u8],
        wait_ticks: u64,
    ) -> Self {
        ring.clear();
        Connection {
            link,
            wait_ticks,
            local,
            peer,
            credit: Credit::new(ring.capacity() as u32),
            ring,
            outbox,
            established: false,
            peer_shutdown: 0,
            credit_requested: false,
            echoed_bytes: 0,
        }
    }

    fn deadline(&mut self) -> Deadline {
        Deadline::after(self.link.now_ticks(), self.wait_ticks)
    }

    /// Nothing arrived: a timeout once `deadline` has passed.
    fn idle(&mut self, deadline: &Deadline, waiting: &'static str) -> Result<()> {
        if deadline.passed(self.link.now_ticks()) {
            return Err(Error::Timeout { waiting });
        }
        core::hint::spin_loop();
        Ok(())
    }

    fn header(&mut self, op: Op, len: usize, flags: u32) -> Header {
        let mut header = Header {
            src_cid: self.local.cid,
            dst_cid: self.peer.cid,
            src_port: self.local.port,
            dst_port: self.peer.port,
            len: len as u32,
            type_: TYPE_STREAM,
            op: op as u16,
            flags,
            buf_alloc: 0,
            fwd_cnt: 0,
        };
        self.credit.stamp(&mut header);
        header
    }

    fn send_control(&mut self, op: Op, flags: u32) -> Result<()> {
        let header = self.header(op, 0, flags);
        self.link.send(&header, &[])
    }

    /// The next delivered packet, checked and sorted; RW payload for this
    /// connection goes into the echo ring (or, once the host receives no
    /// more, is dropped and counted as consumed).
    fn poll(&mut self) -> Result<Option<Incoming>> {
        let (local, peer) = (self.local, self.peer);
        let takes_data = self.established && self.peer_shutdown & SHUTDOWN_SEND == 0;
        let drops_data = self.peer_shutdown & SHUTDOWN_RCV != 0;
        let credit = &mut self.credit;
        let ring = &mut *self.ring;
        let got = self.link.receive(|header, payload| {
            let op = check(header, local.cid)?;
            let ours = header.dst_port == local.port
                && header.src_cid == peer.cid
                && header.src_port == peer.port;
            if !ours {
                return Ok(Incoming::Stray(*header, op));
            }
            if op == Op::Rw {
                if !takes_data {
                    return Err(Error::BadPacket {
                        what: "unexpected_rw",
                    });
                }
                credit.received(header.len)?;
                if drops_data {
                    credit.consumed(header.len);
                } else {
                    ring.push(payload)?;
                }
            }
            Ok(Incoming::Ours(*header, op))
        })?;
        got.transpose()
    }

    /// Payload bytes one packet may carry now, of `want`.
    fn sendable(&self, want: usize) -> usize {
        want.min(self.credit.peer_free() as usize)
            .min(self.link.max_payload())
    }

    /// Sends the greeting, then echoed bytes, as far as the host's credit goes.
    fn flush(&mut self) -> Result<()> {
        if self.peer_shutdown & SHUTDOWN_RCV != 0 {
            return Ok(());
        }
        while !self.outbox.is_empty() {
            let outbox = self.outbox;
            let count = self.sendable(outbox.len());
            if count == 0 {
                return Ok(());
            }
            let header = self.header(Op::Rw, count, 0);
            self.link.send(&header, &outbox[..count])?;
            self.credit.sent(count as u32);
            self.outbox = &outbox[count..];
        }
        while !self.ring.is_empty() {
            let count = self.sendable(self.ring.front().len());
            if count == 0 {
                break;
            }
            // Consumed before the header is made, so it carries the fwd_cnt
            // that frees this room: echoing is its own credit update.
            self.credit.consumed(count as u32);
            let header = self.header(Op::Rw, count, 0);
            self.link.send(&header, &self.ring.front()[..count])?;
            self.credit.sent(count as u32);
            self.ring.pop(count);
            self.echoed_bytes += count as u64;
        }
        Ok(())
    }

    fn blocked_on_credit(&self) -> bool {
        (!self.outbox.is_empty() || !self.ring.is_empty()) && self.credit.peer_free() == 0
    }

    fn echo(mut self) -> Result<Summary> {
        let mut deadline = self.deadline();
        loop {
            self.flush()?;
            if self.credit.update_due() {
                self.send_control(Op::CreditUpdate, 0)?;
            }
            let all_sent = self.outbox.is_empty() && self.ring.is_empty();
            if self.peer_shutdown & SHUTDOWN_SEND != 0
                && (all_sent || self.peer_shutdown & SHUTDOWN_RCV != 0)
            {
                return self.close();
            }
            match self.poll()? {
                Some(Incoming::Ours(header, op)) => {
                    deadline = self.deadline();
                    if op == Op::Rst {
                        return Ok(Summary {
                            echoed_bytes: self.echoed_bytes,
                            ended: Ending::ResetByHost,
                        });
                    }
                    self.credit.update_peer(&header);
                    self.credit_requested = false;
                    match op {
                        Op::Rw | Op::CreditUpdate | Op::Rst => {}
                        Op::CreditRequest => self.send_control(Op::CreditUpdate, 0)?,
                        Op::Shutdown => {
                            self.peer_shutdown |= header.flags & (SHUTDOWN_RCV | SHUTDOWN_SEND);
                            if self.peer_shutdown & SHUTDOWN_RCV != 0 {
                                // The host will take nothing more: what is
                                // left is dropped (as Linux does).
                                self.credit.consumed(self.ring.len() as u32);
                                self.ring.clear();
                                self.outbox = &[];
                            }
                        }
                        Op::Request | Op::Response => {
                            return Err(Error::BadPacket {
                                what: "unexpected_op",
                            })
                        }
                    }
                }
                Some(Incoming::Stray(header, op)) => reset_stray(self.link, &header, op)?,
                None => {
                    if self.blocked_on_credit() && !self.credit_requested {
                        self.send_control(Op::CreditRequest, 0)?;
                        self.credit_requested = true;
                    }
                    let waiting = if self.blocked_on_credit() {
                        "credit"
                    } else {
                        "data"
                    };
                    self.idle(&deadline, waiting)?;
                }
            }
        }
    }

    /// Shuts down both ways and waits for the host's RST, sending one
    /// itself if none comes.
    fn close(mut self) -> Result<Summary> {
        self.send_control(Op::Shutdown, SHUTDOWN_RCV | SHUTDOWN_SEND)?;
        // The host has shut down its sending side: more RW is an error.
        self.established = false;
        let deadline = self.deadline();
        loop {
            match self.poll()? {
                Some(Incoming::Ours(_, Op::Rst)) => {
                    return Ok(Summary {
                        echoed_bytes: self.echoed_bytes,
                        ended: Ending::Clean,
                    })
                }
                Some(Incoming::Ours(..)) => {}
                Some(Incoming::Stray(header, op)) => reset_stray(self.link, &header, op)?,
                None if deadline.passed(self.link.now_ticks()) => {
                    self.send_control(Op::Rst, 0)?;
                    return Ok(Summary {
                        echoed_bytes: self.echoed_bytes,
                        ended: Ending::NoRstFromHost,
                    });
                }
                None => core::hint::spin_loop(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::echo_ring::ECHO_RING_BYTES;

    const GUEST_CID: u64 = 3;
    const HOST_PORT: u32 = 5000;
    const GUEST_PORT: u32 = 49152;
    const WAIT_TICKS: u64 = 10_000;

    /// A host that plays the other end honestly (the way vhost-device-vsock
    /// and Firecracker do) and checks the guest does the same: it answers
    /// REQUEST, sends `data` within the guest's credit, takes back what the
    /// guest sends within its own credit, shuts down once it has everything,
    /// and answers the guest's SHUTDOWN with RST. Every tick of its clock
    /// is one call to `now_ticks`.
    struct FakeHost {
        ticks: u64,
        /// Packets waiting for the guest.
        to_guest: VecDeque<(Header, Vec<u8>)>,
        from_guest: Vec<(Header, Vec<u8>)>,
        /// The guest's port, once connected.
        guest_port: Option<u32>,
        host_port: u32,
        refuse: bool,
        silent: bool,
        rst_on_shutdown: bool,
        /// Credit updates only when asked.
        lazy_credit: bool,
        data: Vec<u8>,
        data_sent: usize,
        chunk_bytes: usize,
        max_payload: usize,
        /// Everything the guest sent as RW.
        received: Vec<u8>,
        expect_received: usize,
        shut_down: bool,
        reset_by_guest: bool,
        host_buf_alloc: u32,
        host_fwd_cnt: u32,
        host_told_fwd_cnt: u32,
        guest_buf_alloc: u32,
        guest_fwd_cnt: u32,
        host_tx_cnt: u32,
    }

    impl FakeHost {
        fn new(data: Vec<u8>, expect_received: usize) -> FakeHost {
            FakeHost {
                ticks: 0,
                to_guest: VecDeque::new(),
                from_guest: Vec::new(),
                guest_port: None,
                host_port: HOST_PORT,
                refuse: false,
                silent: false,
                rst_on_shutdown: true,
                lazy_credit: false,
                data,
                data_sent: 0,
                chunk_bytes: 1500,
                max_payload: 1000,
                received: Vec::new(),
                expect_received,
                shut_down: false,
                reset_by_guest: false,
                host_buf_alloc: 3000,
                host_fwd_cnt: 0,
                host_told_fwd_cnt: 0,
                guest_buf_alloc: 0,
                guest_fwd_cnt: 0,
                host_tx_cnt: 0,
            }
        }

        fn header(&mut self, op: Op, len: usize, flags: u32) -> Header {
            self.host_told_fwd_cnt = self.host_fwd_cnt;
            Header {
                src_cid: HOST_CID,
                dst_cid: GUEST_CID,
                src_port: self.host_port,
                dst_port: self.guest_port.unwrap_or(GUEST_PORT),
                len: len as u32,
                type_: TYPE_STREAM,
                op: op as u16,
                flags,
                buf_alloc: self.host_buf_alloc,
                fwd_cnt: self.host_fwd_cnt,
            }
        }

        fn queue(&mut self, op: Op, flags: u32) {
            let header = self.header(op, 0, flags);
            self.to_guest.push_back((header, Vec::new()));
        }

        /// A host with nothing to send, connecting to the guest's `port`.
        fn connecting(port: u32) -> FakeHost {
            let mut host = FakeHost::new(Vec::new(), 0);
            host.request(port);
            host
        }

        /// The host connecting to the guest's `port`.
        fn request(&mut self, port: u32) {
            self.guest_port = Some(port);
            self.host_port = 1024;
            self.queue(Op::Request, 0);
        }

        fn guest_credit(&self) -> usize {
            let outstanding = self.host_tx_cnt.wrapping_sub(self.guest_fwd_cnt);
            self.guest_buf_alloc.saturating_sub(outstanding) as usize
        }

        fn ops_from_guest(&self) -> Vec<Op> {
            self.from_guest
                .iter()
                .map(|(h, _)| h.op().unwrap())
                .collect()
        }
    }

    impl Link for FakeHost {
        fn send(&mut self, header: &Header, payload: &[u8]) -> Result<()> {
            assert_eq!(header.len as usize, payload.len());
            assert!(payload.len() <= self.max_payload);
            assert_eq!(header.src_cid, GUEST_CID);
            assert_eq!(header.type_, TYPE_STREAM);
            self.from_guest.push((*header, payload.to_vec()));
            let op = header.op().expect("the guest sends known ops");
            if op == Op::Rst {
                self.reset_by_guest = true;
                return Ok(());
            }
            assert_eq!(header.buf_alloc, ECHO_RING_BYTES as u32);
            self.guest_buf_alloc = header.buf_alloc;
            self.guest_fwd_cnt = header.fwd_cnt;
            match op {
                Op::Request => {
                    assert_eq!(header.dst_cid, HOST_CID);
                    assert_eq!(header.dst_port, self.host_port);
                    self.guest_port = Some(header.src_port);
                    if self.refuse {
                        self.queue(Op::Rst, 0);
                    } else if !self.silent {
                        self.queue(Op::Response, 0);
                    }
                }
                Op::Rw => {
                    self.received.extend_from_slice(payload);
                    self.host_fwd_cnt = self.host_fwd_cnt.wrapping_add(header.len);
                    let unannounced = self.host_fwd_cnt.wrapping_sub(self.host_told_fwd_cnt);
                    // The guest may never have more outstanding than the
                    // host's buffer: all received bytes beyond what the
                    // guest has heard of as forwarded.
                    assert!(
                        unannounced <= self.host_buf_alloc,
                        "the guest overran the host's credit"
                    );
                    if !self.lazy_credit && unannounced >= self.host_buf_alloc / 2 {
                        self.queue(Op::CreditUpdate, 0);
                    }
                }
                Op::CreditRequest => self.queue(Op::CreditUpdate, 0),
                Op::Shutdown => {
                    if self.rst_on_shutdown {
                        self.queue(Op::Rst, 0);
                    }
                }
                Op::Response | Op::CreditUpdate | Op::Rst => {}
            }
            Ok(())
        }

        fn receive<R>(&mut self, handle: impl FnOnce(&Header, &[u8]) -> R) -> Result<Option<R>> {
            let connected = self.guest_port.is_some()
                && self.from_guest.iter().any(|(h, _)| {
                    matches!(h.op(), Some(Op::Response)) || matches!(h.op(), Some(Op::Rw))
                });
            if self.to_guest.is_empty() && connected && !self.shut_down {
                let credit = self.guest_credit();
                if self.data_sent < self.data.len() && credit > 0 {
                    let count = (self.data.len() - self.data_sent)
                        .min(credit)
                        .min(self.chunk_bytes);
                    let payload = self.data[self.data_sent..self.data_sent + count].to_vec();
                    self.data_sent += count;
                    self.host_tx_cnt = self.host_tx_cnt.wrapping_add(count as u32);
                    let header = self.header(Op::Rw, count, 0);
                    self.to_guest.push_back((header, payload));
                } else if self.data_sent == self.data.len()
                    && self.received.len() >= self.expect_received
                {
                    self.shut_down = true;
                    self.queue(Op::Shutdown, SHUTDOWN_RCV | SHUTDOWN_SEND);
                }
            }
            Ok(self
                .to_guest
                .pop_front()
                .map(|(header, payload)| handle(&header, &payload)))
        }

        fn now_ticks(&mut self) -> u64 {
            self.ticks += 1;
            self.ticks
        }

        fn max_payload(&self) -> usize {
            self.max_payload
        }
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn ring() -> Box<EchoRing> {
        Box::new(EchoRing::EMPTY)
    }

    fn guest(port: u32) -> Addr {
        Addr {
            cid: GUEST_CID,
            port,
        }
    }

    /// connect() from GUEST_PORT to the host's HOST_PORT, greeting with
    /// `greeting`.
    fn connect_to(host: &mut FakeHost, greeting: &[u8]) -> Result<Summary> {
        connect(
            host,
            guest(GUEST_PORT),
            HOST_PORT,
            greeting,
            &mut ring(),
            WAIT_TICKS,
        )
    }

    /// listen() on the guest's port 6000.
    fn listen_on_6000(host: &mut FakeHost) -> Result<Summary> {
        listen(host, guest(6000), &mut ring(), WAIT_TICKS)
    }

    #[test]
    fn connect_sends_the_greeting_then_echoes_through_small_windows() {
        let data = pattern(100 * 1024);
        let mut host = FakeHost::new(data.clone(), 6 + data.len());
        let summary = connect_to(&mut host, b"tok-1\n");
        assert_eq!(
            summary,
            Ok(Summary {
                echoed_bytes: data.len() as u64,
                ended: Ending::Clean
            })
        );
        assert_eq!(&host.received[..6], b"tok-1\n");
        assert!(host.received[6..] == data[..], "the echo differs");
        let (request, _) = &host.from_guest[0];
        assert_eq!(request.op(), Some(Op::Request));
        assert_eq!(
            (request.src_port, request.dst_cid, request.dst_port),
            (GUEST_PORT, HOST_CID, HOST_PORT)
        );
        assert_eq!((request.buf_alloc, request.fwd_cnt), (16384, 0));
        let (last, _) = host.from_guest.last().unwrap();
        assert_eq!(last.op(), Some(Op::Shutdown));
        assert_eq!(last.flags, SHUTDOWN_RCV | SHUTDOWN_SEND);
        assert!(!host.reset_by_guest);
    }

    #[test]
    fn the_guest_asks_for_credit_when_the_host_gives_none_unasked() {
        // All the data in one packet, so no data packet from the host tells
        // the guest of the room its echo frees.
        let data = pattern(10_000);
        let mut host = FakeHost::new(data.clone(), 6 + data.len());
        host.lazy_credit = true;
        host.chunk_bytes = data.len();
        let summary = connect_to(&mut host, b"tok-2\n").unwrap();
        assert_eq!(summary.echoed_bytes, data.len() as u64);
        assert!(host.ops_from_guest().contains(&Op::CreditRequest));
    }

    #[test]
    fn a_reset_answer_is_a_refusal() {
        let mut host = FakeHost::new(Vec::new(), 0);
        host.refuse = true;
        let result = connect_to(&mut host, b"x\n");
        assert_eq!(result, Err(Error::Refused { port: HOST_PORT }));
    }

    #[test]
    fn no_answer_is_a_timeout_after_the_wait() {
        let mut host = FakeHost::new(Vec::new(), 0);
        host.silent = true;
        let result = connect_to(&mut host, b"x\n");
        assert_eq!(
            result,
            Err(Error::Timeout {
                waiting: "response"
            })
        );
        assert!(host.ticks >= WAIT_TICKS && host.ticks < 2 * WAIT_TICKS + 10);
    }

    #[test]
    fn listen_resets_other_ports_then_accepts_and_echoes() {
        let data = pattern(50_000);
        let mut host = FakeHost::new(data.clone(), data.len());
        host.request(7777);
        host.request(6000);
        host.host_port = 1024;
        let summary = listen_on_6000(&mut host).unwrap();
        assert_eq!(summary.echoed_bytes, data.len() as u64);
        assert!(host.received == data, "the echo differs");
        let (rst, _) = &host.from_guest[0];
        assert_eq!(rst.op(), Some(Op::Rst));
        assert_eq!((rst.src_port, rst.dst_port), (7777, 1024));
        let (response, _) = &host.from_guest[1];
        assert_eq!(response.op(), Some(Op::Response));
        assert_eq!((response.src_port, response.dst_port), (6000, 1024));
        assert_eq!(response.buf_alloc, ECHO_RING_BYTES as u32);
    }

    #[test]
    fn listen_times_out_without_a_request() {
        let mut host = FakeHost::new(Vec::new(), 0);
        let result = listen_on_6000(&mut host);
        assert_eq!(result, Err(Error::Timeout { waiting: "request" }));
    }

    #[test]
    fn a_credit_request_gets_a_credit_update() {
        let mut host = FakeHost::connecting(6000);
        host.queue(Op::CreditRequest, 0);
        listen_on_6000(&mut host).unwrap();
        assert_eq!(host.ops_from_guest()[..2], [Op::Response, Op::CreditUpdate]);
    }

    #[test]
    fn without_an_rst_from_the_host_the_guest_sends_one() {
        let mut host = FakeHost::new(pattern(100), 100);
        host.request(6000);
        host.rst_on_shutdown = false;
        let summary = listen_on_6000(&mut host).unwrap();
        assert_eq!(
            summary,
            Summary {
                echoed_bytes: 100,
                ended: Ending::NoRstFromHost
            }
        );
        assert_eq!(host.ops_from_guest().last(), Some(&Op::Rst));
    }

    #[test]
    fn a_reset_from_the_host_ends_the_echo() {
        let mut host = FakeHost::connecting(6000);
        host.queue(Op::Rst, 0);
        let summary = listen_on_6000(&mut host).unwrap();
        assert_eq!(summary.ended, Ending::ResetByHost);
    }

    #[test]
    fn what_is_left_when_the_host_stops_receiving_is_dropped() {
        let mut host = FakeHost::connecting(6000);
        host.host_buf_alloc = 0;
        host.lazy_credit = true;
        // The guest cannot echo (no host credit), then the host shuts down.
        let rw = host.header(Op::Rw, 5, 0);
        host.to_guest.push_back((rw, b"hello".to_vec()));
        host.queue(Op::Shutdown, SHUTDOWN_RCV | SHUTDOWN_SEND);
        host.shut_down = true;
        let summary = listen_on_6000(&mut host).unwrap();
        assert_eq!(
            summary,
            Summary {
                echoed_bytes: 0,
                ended: Ending::Clean
            }
        );
    }

    /// Runs listen() against a host that sends `bad` right after connecting.
    fn listen_then(bad: Header, payload: &[u8]) -> Result<Summary> {
        let mut host = FakeHost::connecting(6000);
        host.to_guest.push_back((bad, payload.to_vec()));
        listen_on_6000(&mut host)
    }

    fn from_host(op: u16, len: u32) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: GUEST_CID,
            src_port: 1024,
            dst_port: 6000,
            len,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: 3000,
            fwd_cnt: 0,
        }
    }

    #[test]
    fn malformed_packets_are_bad_packets() {
        let bad = |what| Err(Error::BadPacket { what });
        assert_eq!(listen_then(from_host(0, 0), &[]), bad("op"));
        assert_eq!(listen_then(from_host(8, 0), &[]), bad("op"));
        let mut seqpacket = from_host(Op::Rw as u16, 1);
        seqpacket.type_ = 2;
        assert_eq!(listen_then(seqpacket, b"x"), bad("type"));
        let mut elsewhere = from_host(Op::Rw as u16, 1);
        elsewhere.dst_cid = 4;
        assert_eq!(listen_then(elsewhere, b"x"), bad("dst_cid"));
        assert_eq!(
            listen_then(from_host(Op::CreditUpdate as u16, 1), b"x"),
            bad("payload_without_rw")
        );
        assert_eq!(
            listen_then(from_host(Op::Response as u16, 0), &[]),
            bad("unexpected_op")
        );
        let flood = vec![0; ECHO_RING_BYTES + 1];
        assert_eq!(
            listen_then(from_host(Op::Rw as u16, flood.len() as u32), &flood),
            bad("rw_beyond_credit")
        );
    }

    #[test]
    fn data_after_the_hosts_shutdown_is_a_bad_packet() {
        let mut host = FakeHost::connecting(6000);
        host.rst_on_shutdown = false;
        host.queue(Op::Shutdown, SHUTDOWN_SEND);
        host.shut_down = true;
        host.to_guest
            .push_back((from_host(Op::Rw as u16, 1), b"x".to_vec()));
        let result = listen_on_6000(&mut host);
        assert_eq!(
            result,
            Err(Error::BadPacket {
                what: "unexpected_rw"
            })
        );
    }

    #[test]
    fn bad_packets_in_the_handshake_are_errors_too() {
        let mut host = FakeHost::new(Vec::new(), 0);
        host.silent = true;
        let mut rw = from_host(Op::Rw as u16, 1);
        (rw.src_port, rw.dst_port) = (HOST_PORT, GUEST_PORT);
        host.to_guest.push_back((rw, b"x".to_vec()));
        let result = connect_to(&mut host, b"x\n");
        assert_eq!(
            result,
            Err(Error::BadPacket {
                what: "unexpected_rw"
            })
        );
    }
}
