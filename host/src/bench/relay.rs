//! The inter suite's relay: the host joins two guests' vsock connections
//! and moves their bytes, so two VMs can talk with no network between them.
//! The relay is part of what the inter benchmarks measure (a round trip is
//! guest → host → guest and back), so its own CPU time is recorded.
//!
//! # Primer
//!
//! Each VM's endpoints ([`super::endpoints`]) hand over a connection whose
//! first bytes were `r<benchmark name>\n`, with the side it came from
//! (the measuring VM, or its peer). Once both sides of a name are there,
//! a thread of its own writes the go byte [`GO`] to each, then copies
//! bytes both ways unchanged through bounded buffers, `poll`ing both, until
//! both sides have closed (a side's close is passed on as a shutdown of the
//! other's write half). The thread's CPU time (CLOCK_THREAD_CPUTIME_ID)
//! and the bytes it moved become the benchmark's [`RelayRecord`]. A side
//! whose partner has not come within [`PARTNER_WAIT`] is closed: its agent
//! reads EOF where it waited for [`GO`] and reports the failure.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::record::RelayRecord;

/// The byte that tells both sides to start.
pub const GO: u8 = b'g';
/// How long a side waits for its partner.
pub const PARTNER_WAIT: Duration = Duration::from_secs(20);
/// Bytes in flight one way, at most.
const BUFFER_BYTES: usize = 256 * 1024;
/// A session with no byte moving for this long is ended (both VMs are
/// gone or stuck; their benchmarks time out on their own).
const IDLE_LIMIT: Duration = Duration::from_secs(120);
/// Benchmarks the relay keeps a record of (one pair runs the suite's three).
const MAX_SESSIONS: usize = 64;

/// Which VM of the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The VM that times the benchmark.
    Measures,
    Peer,
}

/// One pair's relay.
#[derive(Debug, Default)]
pub struct Relay {
    state: Mutex<State>,
    done: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Connections waiting for their partner, by name and side.
    waiting: HashMap<(String, Side), (UnixStream, Instant)>,
    /// Finished sessions' records, by benchmark name.
    records: HashMap<String, RelayRecord>,
    sessions: usize,
}

impl Relay {
    pub fn new() -> Arc<Relay> {
        Arc::new(Relay::default())
    }

    /// A side's connection for benchmark `name`: waits for its partner, or
    /// starts the session with it.
    pub fn join(self: &Arc<Self>, side: Side, name: &str, stream: UnixStream) {
        let other = match side {
            Side::Measures => Side::Peer,
            Side::Peer => Side::Measures,
        };
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some((partner, _)) = state.waiting.remove(&(name.to_string(), other)) else {
            // A second connection of the same side and name replaces the first.
            state
                .waiting
                .insert((name.to_string(), side), (stream, Instant::now()));
            return;
        };
        if state.sessions >= MAX_SESSIONS {
            return;
        }
        state.sessions += 1;
        drop(state);
        let (measures, peer) = match side {
            Side::Measures => (stream, partner),
            Side::Peer => (partner, stream),
        };
        let relay = Arc::clone(self);
        let name = name.to_string();
        let _ = std::thread::Builder::new()
            .name("bench-relay".into())
            .spawn(move || {
                let record = session(measures, peer);
                let mut state = relay.state.lock().unwrap_or_else(|p| p.into_inner());
                state.records.insert(name, record);
                relay.done.notify_all();
            });
    }

    /// Closes the connections whose partner did not come in time.
    pub fn expire(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state
            .waiting
            .retain(|_, (_, since)| since.elapsed() < PARTNER_WAIT);
    }

    /// The record of benchmark `name`'s session, waiting up to `wait` for
    /// it to end (the measuring agent reports after closing its side, and
    /// the relay ends once it has seen both closes).
    pub fn record(&self, name: &str, wait: Duration) -> Option<RelayRecord> {
        let deadline = Instant::now() + wait;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(record) = state.records.get(name) {
                return Some(*record);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            state = self
                .done
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// This thread's CPU time so far, ns.
fn thread_cpu_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// One direction of a session.
struct Flow {
    buffer: Vec<u8>,
    /// The source has closed (its bytes still in `buffer` go on).
    source_closed: bool,
    /// The close was passed on.
    shut: bool,
    moved: u64,
}

impl Flow {
    fn new() -> Self {
        Flow {
            buffer: Vec::new(),
            source_closed: false,
            shut: false,
            moved: 0,
        }
    }

    fn finished(&self) -> bool {
        self.shut
    }
}

/// Relays until both sides have closed; what it cost.
fn session(mut measures: UnixStream, mut peer: UnixStream) -> RelayRecord {
    let cpu_start = thread_cpu_ns();
    let mut to_peer = Flow::new();
    let mut from_peer = Flow::new();
    let ok = [&mut measures, &mut peer]
        .into_iter()
        .all(|s| s.set_nonblocking(false).is_ok() && s.write_all(&[GO]).is_ok())
        && measures.set_nonblocking(true).is_ok()
        && peer.set_nonblocking(true).is_ok();
    let mut last_move = Instant::now();
    while ok && !(to_peer.finished() && from_peer.finished()) {
        if last_move.elapsed() > IDLE_LIMIT {
            break;
        }
        let flags = |reading: &Flow, writing: &Flow| {
            let mut f = PollFlags::empty();
            if !reading.source_closed && reading.buffer.len() < BUFFER_BYTES {
                f |= PollFlags::POLLIN;
            }
            if !writing.buffer.is_empty() {
                f |= PollFlags::POLLOUT;
            }
            f
        };
        // measures reads into to_peer and writes from_peer; peer the reverse.
        let mut fds = [
            PollFd::new(measures.as_fd(), flags(&to_peer, &from_peer)),
            PollFd::new(peer.as_fd(), flags(&from_peer, &to_peer)),
        ];
        if poll(&mut fds, PollTimeout::from(1000u16)).is_err() {
            continue;
        }
        let moved_before = to_peer.moved + from_peer.moved;
        pump(&mut measures, &mut to_peer);
        pump(&mut peer, &mut from_peer);
        drain(&mut peer, &mut to_peer);
        drain(&mut measures, &mut from_peer);
        if to_peer.moved + from_peer.moved != moved_before {
            last_move = Instant::now();
        }
        if to_peer.source_closed && from_peer.source_closed {
            // Both closed: whatever cannot be delivered goes nowhere.
            if to_peer.buffer.is_empty() && from_peer.buffer.is_empty() {
                break;
            }
        }
    }
    RelayRecord {
        cpu_ms: thread_cpu_ns().saturating_sub(cpu_start) as f64 / 1e6,
        bytes_to_peer: to_peer.moved,
        bytes_from_peer: from_peer.moved,
    }
}

/// Reads what `source` has into its flow's buffer.
fn pump(source: &mut UnixStream, flow: &mut Flow) {
    let mut buf = [0u8; 64 * 1024];
    while !flow.source_closed && flow.buffer.len() < BUFFER_BYTES {
        let room = (BUFFER_BYTES - flow.buffer.len()).min(buf.len());
        match source.read(&mut buf[..room]) {
            Ok(0) => flow.source_closed = true,
            Ok(n) => flow.buffer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(_) => flow.source_closed = true,
        }
    }
}

/// Writes the flow's buffer to `sink`; passes a close on once it is empty.
fn drain(sink: &mut UnixStream, flow: &mut Flow) {
    while !flow.buffer.is_empty() {
        match sink.write(&flow.buffer) {
            Ok(n) => {
                flow.buffer.drain(..n);
                flow.moved += n as u64;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(_) => {
                // The sink is gone: nothing more can reach it.
                flow.buffer.clear();
                flow.source_closed = true;
            }
        }
    }
    if flow.source_closed && !flow.shut {
        let _ = sink.shutdown(Shutdown::Write);
        flow.shut = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (UnixStream, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        (a, b)
    }

    #[test]
    fn two_sides_are_joined_after_the_go_byte_and_recorded() {
        let relay = Relay::new();
        let (mut a_guest, a_host) = pair();
        let (mut b_guest, b_host) = pair();
        relay.join(Side::Peer, "inter_vsock_rtt", b_host);
        relay.join(Side::Measures, "inter_vsock_rtt", a_host);
        let mut go = [0u8; 1];
        a_guest.read_exact(&mut go).unwrap();
        assert_eq!(go[0], GO);
        b_guest.read_exact(&mut go).unwrap();
        assert_eq!(go[0], GO);
        let echo = std::thread::spawn(move || {
            let mut byte = [0u8; 1];
            let mut n = 0;
            while b_guest.read(&mut byte).unwrap() == 1 {
                b_guest.write_all(&byte).unwrap();
                n += 1;
            }
            n
        });
        for i in 0..50u8 {
            a_guest.write_all(&[i]).unwrap();
            let mut back = [0u8; 1];
            a_guest.read_exact(&mut back).unwrap();
            assert_eq!(back[0], i);
        }
        a_guest.shutdown(Shutdown::Write).unwrap();
        assert_eq!(echo.join().unwrap(), 50);
        let mut rest = Vec::new();
        a_guest.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        let record = relay
            .record("inter_vsock_rtt", Duration::from_secs(10))
            .unwrap();
        assert_eq!((record.bytes_to_peer, record.bytes_from_peer), (50, 50));
        assert!(record.cpu_ms >= 0.0);
    }

    #[test]
    fn a_stream_arrives_whole_and_a_lonely_side_is_closed() {
        let relay = Relay::new();
        let (mut a_guest, a_host) = pair();
        let (mut b_guest, b_host) = pair();
        relay.join(Side::Measures, "inter_vsock_bw", a_host);
        relay.join(Side::Peer, "inter_vsock_bw", b_host);
        let mut go = [0u8; 1];
        a_guest.read_exact(&mut go).unwrap();
        b_guest.read_exact(&mut go).unwrap();
        let sink = std::thread::spawn(move || {
            let mut all = Vec::new();
            b_guest.read_to_end(&mut all).unwrap();
            all.len()
        });
        let block = vec![0x5a; 64 * 1024];
        for _ in 0..64 {
            a_guest.write_all(&block).unwrap();
        }
        drop(a_guest);
        assert_eq!(sink.join().unwrap(), 64 * 64 * 1024);
        let record = relay
            .record("inter_vsock_bw", Duration::from_secs(10))
            .unwrap();
        assert_eq!(record.bytes_to_peer, 64 * 64 * 1024);
        // A side alone, past the wait: closed by expire.
        let (mut lonely, host) = pair();
        relay.join(Side::Measures, "inter_sendfile", host);
        relay
            .state
            .lock()
            .unwrap()
            .waiting
            .values_mut()
            .for_each(|(_, since)| *since = Instant::now() - PARTNER_WAIT - Duration::from_secs(1));
        relay.expire();
        let mut byte = [0u8; 1];
        assert_eq!(lonely.read(&mut byte).unwrap(), 0);
        assert_eq!(relay.record("inter_sendfile", Duration::ZERO), None);
    }
}
