//! The vsock device's host side: which connection a guest packet belongs
//! to, the Unix sockets behind the connections, and what the guest is owed
//! next.
//!
//! - A guest REQUEST to host port P connects to the Unix socket
//!   `<uds_base>_P` (non-blocking: a listener that is absent or has a full
//!   backlog is a refusal, answered with RST, never a stalled device).
//! - Host programs connect to `<uds_base>` and ask for a guest port (see
//!   [`super::handshake`]); the muxer gives each a host port from 2^30 up.
//! - A packet that belongs to no connection is answered with RST from a
//!   queue of its own, bounded: while it is full the device stops taking
//!   packets from the guest, so a guest cannot make the VMM queue without end.
//!
//! Every host descriptor (listener, streams, a timer for deadlines) is in
//! one epoll, whose descriptor is the device's event descriptor; the device
//! thread calls [`Muxer::poll`] when it is readable. A stream is only in the
//! epoll while its connection wants something of it (see
//! [`Connection::interest`]), so level-triggered readiness never spins.

use std::collections::{HashMap, VecDeque};
use std::io::{self, ErrorKind};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
use virtio_vsock::packet::VsockPacket;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::timerfd::TimerFd;

use super::connection::{fill_header, Connection, Reply, State};
use super::handshake::{Handshake, Progress};
use super::{op, HOST_CID, TYPE_STREAM};
use crate::devices::virtio::Counters;

/// Connections open at once; a request beyond is refused.
pub const MAX_CONNECTIONS: usize = 1024;
/// Host programs still sending their request line.
const MAX_HANDSHAKES: usize = 64;
/// RST packets waiting for RX buffers before the device stops reading TX.
pub const MAX_RST_BACKLOG: usize = 256;
/// Host ports for host-initiated connections start here (as Firecracker's do).
const FIRST_LOCAL_PORT: u32 = 1 << 30;

/// Tokens below this are the device's own descriptors (its queue events).
pub const FIRST_MUXER_TOKEN: u64 = 8;
const LISTENER: u64 = 8;
const TIMER: u64 = 9;
const FIRST_STREAM_TOKEN: u64 = 16;

/// (host port, guest port).
type Key = (u32, u32);

struct Entry {
    conn: Connection,
    token: u64,
    /// What the stream is in the epoll for; empty: not in it.
    registered: EventSet,
    /// Whether the key is in `rx_queue`.
    queued: bool,
}

pub struct Muxer {
    guest_cid: u64,
    uds_base: PathBuf,
    epoll: Epoll,
    listener: UnixListener,
    /// Set after accept(2) failed for want of resources: the listener is out
    /// of the epoll until then, or it would wake the thread without end.
    listener_paused_until: Option<Instant>,
    timer: TimerFd,
    timer_at: Option<Instant>,
    conns: HashMap<Key, Entry>,
    by_token: HashMap<u64, Key>,
    handshakes: HashMap<u64, Handshake>,
    next_token: u64,
    next_local_port: u32,
    /// Connections with packets for the guest, served in turn.
    rx_queue: VecDeque<Key>,
    /// RSTs for packets that belong to no connection.
    rst_queue: VecDeque<Key>,
    pub counters: Counters,
}

/// Puts `fd` in `epoll` for `events`, reported as `token`.
fn watch(epoll: &Epoll, fd: RawFd, events: EventSet, token: u64) -> io::Result<()> {
    epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(events, token))
}

/// Takes `fd` out of `epoll` (one that was not in it is no matter).
fn unwatch(epoll: &Epoll, fd: RawFd) -> io::Result<()> {
    epoll.ctl(ControlOperation::Delete, fd, EpollEvent::default())
}

/// Connects to a Unix socket without waiting: a listener with a full
/// backlog refuses (EAGAIN) rather than blocking the device thread.
fn connect_now(path: &Path) -> io::Result<UnixStream> {
    let fd: OwnedFd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = UnixAddr::new(path)?;
    connect(fd.as_raw_fd(), &addr)?;
    Ok(UnixStream::from(fd))
}

impl Muxer {
    /// Listens for host programs on `uds_base` (a stale socket file there is replaced).
    pub fn new(guest_cid: u64, uds_base: &Path) -> io::Result<Muxer> {
        let with_path = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("cannot listen on {}: {e}", uds_base.display()),
            )
        };
        if std::fs::symlink_metadata(uds_base).is_ok_and(|m| {
            use std::os::unix::fs::FileTypeExt;
            m.file_type().is_socket()
        }) {
            std::fs::remove_file(uds_base).map_err(with_path)?;
        }
        let listener = UnixListener::bind(uds_base).map_err(with_path)?;
        listener.set_nonblocking(true)?;
        let epoll = Epoll::new()?;
        watch(&epoll, listener.as_raw_fd(), EventSet::IN, LISTENER)?;
        let timer = TimerFd::new()?;
        watch(&epoll, timer.as_raw_fd(), EventSet::IN, TIMER)?;
        Ok(Muxer {
            guest_cid,
            uds_base: uds_base.to_path_buf(),
            epoll,
            listener,
            listener_paused_until: None,
            timer,
            timer_at: None,
            conns: HashMap::new(),
            by_token: HashMap::new(),
            handshakes: HashMap::new(),
            next_token: FIRST_STREAM_TOKEN,
            next_local_port: FIRST_LOCAL_PORT,
            rx_queue: VecDeque::new(),
            rst_queue: VecDeque::new(),
            counters: Counters::default(),
        })
    }

    /// The descriptor that is readable when the muxer (or a watched
    /// descriptor of the device) has work.
    pub fn epoll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// Adds one of the device's descriptors; [`Muxer::poll`] reports it by `token`.
    pub fn watch(&self, fd: RawFd, token: u64) -> io::Result<()> {
        assert!(
            token < FIRST_MUXER_TOKEN,
            "device tokens are below the muxer's"
        );
        watch(&self.epoll, fd, EventSet::IN, token)
    }

    pub fn open_connections(&self) -> usize {
        self.conns.len()
    }

    /// Handles what is ready on the host side without blocking; returns
    /// the device tokens that were ready, as bits.
    pub fn poll(&mut self) -> u64 {
        let mut events = [EpollEvent::default(); 64];
        let ready = self.epoll.wait(0, &mut events).unwrap_or(0);
        let mut device_tokens = 0;
        for e in &events[..ready] {
            match e.data() {
                LISTENER => self.accept(),
                TIMER => {
                    // Deadlines are checked in `sweep`; this only drains the timer.
                    let _ = self.timer.wait();
                    self.timer_at = None;
                }
                token if token < FIRST_MUXER_TOKEN => device_tokens |= 1 << token,
                token => self.host_ready(token, e.event_set()),
            }
        }
        device_tokens
    }

    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    fn accept(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    // Out of descriptors or memory: try again a little later.
                    self.counters.bump("host_accept_errors");
                    let _ = unwatch(&self.epoll, self.listener.as_raw_fd());
                    self.listener_paused_until = Some(Instant::now() + Duration::from_millis(100));
                    return;
                }
            };
            if self.handshakes.len() >= MAX_HANDSHAKES
                || self.conns.len() >= MAX_CONNECTIONS
                || stream.set_nonblocking(true).is_err()
            {
                self.counters.bump("host_connections_refused");
                continue;
            }
            let token = self.token();
            if watch(&self.epoll, stream.as_raw_fd(), EventSet::IN, token).is_err() {
                self.counters.bump("host_connections_refused");
                continue;
            }
            self.handshakes
                .insert(token, Handshake::new(stream, Instant::now()));
        }
    }

    fn host_ready(&mut self, token: u64, events: EventSet) {
        if let Some(handshake) = self.handshakes.get_mut(&token) {
            match handshake.read() {
                Progress::Waiting => {}
                Progress::Failed => {
                    self.drop_handshake(token);
                    self.counters.bump("host_handshake_errors");
                }
                Progress::Connect(port) => {
                    if let Some(handshake) = self.drop_handshake(token) {
                        self.connect_from_host(handshake.stream, port);
                    }
                }
            }
            return;
        }
        if let Some(&key) = self.by_token.get(&token) {
            if let Some(entry) = self.conns.get_mut(&key) {
                entry.conn.host_event(events);
            }
            self.settle(key);
        }
    }

    fn drop_handshake(&mut self, token: u64) -> Option<Handshake> {
        let handshake = self.handshakes.remove(&token)?;
        let _ = unwatch(&self.epoll, handshake.stream.as_raw_fd());
        Some(handshake)
    }

    fn insert(&mut self, key: Key, conn: Connection) {
        let token = self.token();
        self.by_token.insert(token, key);
        self.conns.insert(
            key,
            Entry {
                conn,
                token,
                registered: EventSet::empty(),
                queued: false,
            },
        );
        self.settle(key);
    }

    fn connect_from_host(&mut self, stream: UnixStream, guest_port: u32) {
        if self.conns.len() >= MAX_CONNECTIONS {
            self.counters.bump("too_many_connections");
            return;
        }
        let mut local_port = self.next_local_port;
        while self.conns.contains_key(&(local_port, guest_port)) {
            local_port = local_port.checked_add(1).unwrap_or(FIRST_LOCAL_PORT);
        }
        self.next_local_port = local_port.checked_add(1).unwrap_or(FIRST_LOCAL_PORT);
        self.counters.bump("connections_from_host");
        let conn = Connection::from_host_request(local_port, guest_port, self.guest_cid, stream);
        self.insert((local_port, guest_port), conn);
    }

    /// A packet the guest sent (from its TX queue).
    pub fn send_pkt(&mut self, pkt: &VsockPacket<'_, ()>) {
        if pkt.src_cid() != self.guest_cid {
            // Not from the guest's address: there is nobody to answer.
            self.counters.bump("wrong_cid");
            return;
        }
        let key = (pkt.dst_port(), pkt.src_port());
        if pkt.dst_cid() != HOST_CID {
            self.counters.bump("wrong_cid");
            return self.refuse(key, pkt.op());
        }
        if pkt.type_() != TYPE_STREAM {
            self.counters.bump("wrong_type");
            return self.refuse(key, pkt.op());
        }
        if let Some(entry) = self.conns.get_mut(&key) {
            if pkt.op() == op::RST {
                self.counters.bump("rst_received");
            }
            entry.conn.from_guest(pkt);
            return self.settle(key);
        }
        match pkt.op() {
            op::REQUEST => self.connect_from_guest(key, pkt),
            op::RST => self.counters.bump("rst_received"),
            _ => {
                self.counters.bump("unknown_connections");
                self.refuse(key, pkt.op());
            }
        }
    }

    /// Answers a packet with RST (never an RST: that would ping-pong).
    fn refuse(&mut self, key: Key, op: u16) {
        if op != op::RST {
            self.rst_queue.push_back(key);
        }
    }

    fn connect_from_guest(&mut self, key: Key, pkt: &VsockPacket<'_, ()>) {
        if self.conns.len() >= MAX_CONNECTIONS {
            self.counters.bump("too_many_connections");
            return self.refuse(key, op::REQUEST);
        }
        let path = PathBuf::from(format!("{}_{}", self.uds_base.display(), key.0));
        match connect_now(&path) {
            Ok(stream) => {
                self.counters.bump("connections_from_guest");
                let conn = Connection::from_guest_request(
                    key.0,
                    key.1,
                    self.guest_cid,
                    stream,
                    pkt.buf_alloc(),
                    pkt.fwd_cnt(),
                );
                self.insert(key, conn);
            }
            Err(_) => {
                self.counters.bump("connections_refused");
                self.refuse(key, op::REQUEST);
            }
        }
    }

    /// After anything happened to a connection: remove it if it is over
    /// (queueing its RST), else queue it if it owes the guest a packet.
    fn settle(&mut self, key: Key) {
        let Some(entry) = self.conns.get_mut(&key) else {
            return;
        };
        if entry.conn.state() != State::Killed {
            if entry.conn.has_pending() && !entry.queued {
                entry.queued = true;
                self.rx_queue.push_back(key);
            }
            return;
        }
        let Some(entry) = self.conns.remove(&key) else {
            return;
        };
        self.by_token.remove(&entry.token);
        if !entry.registered.is_empty() {
            let _ = unwatch(&self.epoll, entry.conn.stream().as_raw_fd());
        }
        if let Some(reason) = entry.conn.kill_reason() {
            self.counters.bump(reason);
        }
        if entry.conn.owes_rst() {
            self.rst_queue.push_back(key);
        }
        // Dropping the entry closes the host stream: the program sees end of file.
    }

    pub fn has_pending_rx(&self) -> bool {
        !self.rst_queue.is_empty() || !self.rx_queue.is_empty()
    }

    /// Whether the device should stop taking guest packets until the guest
    /// gives RX buffers for the answers already owed.
    pub fn rx_backlog_full(&self) -> bool {
        self.rst_queue.len() >= MAX_RST_BACKLOG
    }

    /// Fills an RX buffer with the next packet for the guest; false if
    /// nothing could be produced now (the buffer is then left unused).
    pub fn recv_pkt(&mut self, pkt: &mut VsockPacket<'_, ()>) -> bool {
        let mut turns = self.rx_queue.len();
        loop {
            if let Some((local_port, peer_port)) = self.rst_queue.pop_front() {
                let rst = Reply {
                    op: op::RST,
                    flags: 0,
                    len: 0,
                };
                fill_header(pkt, local_port, self.guest_cid, peer_port, rst);
                self.counters.bump("rst_sent");
                return true;
            }
            if turns == 0 {
                return false;
            }
            turns -= 1;
            let Some(key) = self.rx_queue.pop_front() else {
                return false;
            };
            let Some(entry) = self.conns.get_mut(&key) else {
                continue;
            };
            entry.queued = false;
            let produced = entry.conn.to_guest(pkt);
            self.settle(key);
            if produced {
                return true;
            }
        }
    }

    /// After each round of work: deadlines, what each stream is polled for,
    /// the timer for the next deadline, and the listener after a pause.
    pub fn sweep(&mut self) {
        let now = Instant::now();
        let expired: Vec<Key> = self
            .conns
            .iter()
            .filter(|(_, e)| e.conn.expiry().is_some_and(|at| at <= now))
            .map(|(&key, _)| key)
            .collect();
        for key in expired {
            if let Some(entry) = self.conns.get_mut(&key) {
                entry.conn.check_expiry(now);
            }
            self.settle(key);
        }
        let late: Vec<u64> = self
            .handshakes
            .iter()
            .filter(|(_, h)| h.deadline <= now)
            .map(|(&token, _)| token)
            .collect();
        for token in late {
            self.drop_handshake(token);
            self.counters.bump("host_handshake_timeouts");
        }
        if self.listener_paused_until.is_some_and(|at| at <= now)
            && watch(
                &self.epoll,
                self.listener.as_raw_fd(),
                EventSet::IN,
                LISTENER,
            )
            .is_ok()
        {
            self.listener_paused_until = None;
        }
        for entry in self.conns.values_mut() {
            let wanted = entry.conn.interest();
            if wanted == entry.registered {
                continue;
            }
            let fd = entry.conn.stream().as_raw_fd();
            let done = match (entry.registered.is_empty(), wanted.is_empty()) {
                (true, _) => watch(&self.epoll, fd, wanted, entry.token),
                (false, true) => unwatch(&self.epoll, fd),
                (false, false) => self.epoll.ctl(
                    ControlOperation::Modify,
                    fd,
                    EpollEvent::new(wanted, entry.token),
                ),
            };
            if done.is_ok() {
                entry.registered = wanted;
            }
        }
        self.arm_timer(now);
    }

    fn arm_timer(&mut self, now: Instant) {
        let next = self
            .conns
            .values()
            .filter_map(|e| e.conn.expiry())
            .chain(self.handshakes.values().map(|h| h.deadline))
            .chain(self.listener_paused_until)
            .min();
        if next == self.timer_at {
            return;
        }
        self.timer_at = next;
        let _ = match next {
            // A zero duration would disarm the timer: at least a millisecond.
            Some(at) => self.timer.reset(
                at.saturating_duration_since(now)
                    .max(Duration::from_millis(1)),
                None,
            ),
            None => self.timer.clear(),
        };
    }

    /// The driver reset the device: every connection ends (host programs
    /// see end of file) and nothing is owed to the guest any more.
    pub fn reset(&mut self) {
        for (_, entry) in self.conns.drain() {
            if !entry.registered.is_empty() {
                let _ = unwatch(&self.epoll, entry.conn.stream().as_raw_fd());
            }
        }
        self.by_token.clear();
        self.rx_queue.clear();
        self.rst_queue.clear();
    }
}
