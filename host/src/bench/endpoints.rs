//! The host's end of the guest's vsock benchmarks, on `vmbench.port + 1`.
//!
//! # Primer
//!
//! The agent connects to host port `vmbench.port + 1` (both backends put
//! the connection on `<vm-dir>/vsock.sock_<port+1>`, as they do the
//! report's) and its first byte names what it wants:
//!
//! - `e` (echo, `vsock_rtt`): every byte that follows is written back;
//! - `s` (sink, `vsock_bw`): every byte that follows is read and counted;
//! - `r` (relay, the inter suite): the benchmark's name and `\n` follow;
//!   the connection is handed to the pair's [`Relay`], which joins it to
//!   the other VM's connection of the same name.
//!
//! One thread per VM serves them all with `poll`, and never blocks on a
//! guest: echoes wait in a bounded buffer until the guest reads them (and
//! while one waits nothing more is read from it). At most
//! [`MAX_CONNECTIONS`] at once; more are closed at once.

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::relay::{Relay, Side};

/// Connections one guest may hold to its endpoints at once.
pub const MAX_CONNECTIONS: usize = 8;
/// An echo waiting for the guest to read it, at most.
const ECHO_BUFFER_BYTES: usize = 64 * 1024;
/// A relay connection's name line, at most (mode byte and newline included).
pub const MAX_NAME_LINE_BYTES: usize = 64;

/// The running endpoints of one VM; they stop when this is dropped.
pub struct Endpoints {
    quit: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    socket: PathBuf,
}

impl Endpoints {
    /// Listens on `socket` (before the VMM starts, so the guest's first
    /// connection finds it) and serves on a thread of its own. `relay`:
    /// the inter suite's pair, and which side this VM is.
    pub fn serve(socket: &Path, relay: Option<(Arc<Relay>, Side)>) -> Result<Endpoints, String> {
        let listener = crate::watch::listen(socket)?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("Cannot listen on {}: {e}", socket.display()))?;
        let quit = Arc::new(AtomicBool::new(false));
        let thread_quit = Arc::clone(&quit);
        let thread = std::thread::Builder::new()
            .name("bench-endpoints".into())
            .spawn(move || Server::new(listener, relay, thread_quit).run())
            .map_err(|e| format!("Cannot start the benchmark endpoints' thread: {e}"))?;
        Ok(Endpoints {
            quit,
            thread: Some(thread),
            socket: socket.to_path_buf(),
        })
    }
}

impl Drop for Endpoints {
    fn drop(&mut self) {
        self.quit.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// What a connection is doing.
#[derive(Debug)]
enum Mode {
    /// Its first byte has not come yet.
    Choosing,
    Echo {
        pending: Vec<u8>,
    },
    Sink {
        bytes: u64,
    },
    /// Reading the benchmark's name for the relay.
    Naming {
        line: Vec<u8>,
    },
}

struct Connection {
    stream: UnixStream,
    mode: Mode,
}

struct Server {
    listener: UnixListener,
    relay: Option<(Arc<Relay>, Side)>,
    quit: Arc<AtomicBool>,
    connections: Vec<Connection>,
}

/// What a connection wants after a wake.
enum Next {
    Keep,
    Close,
    /// To the relay, with the benchmark's name.
    Relay(String),
}

impl Server {
    fn new(
        listener: UnixListener,
        relay: Option<(Arc<Relay>, Side)>,
        quit: Arc<AtomicBool>,
    ) -> Self {
        Server {
            listener,
            relay,
            quit,
            connections: Vec::new(),
        }
    }

    fn run(mut self) {
        while !self.quit.load(Ordering::SeqCst) {
            let mut fds = vec![PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
            for c in &self.connections {
                let mut flags = PollFlags::POLLIN;
                if matches!(&c.mode, Mode::Echo { pending } if !pending.is_empty()) {
                    // Nothing more is read while an echo waits.
                    flags = PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(c.stream.as_fd(), flags));
            }
            // The quit flag is checked every 100 ms.
            if poll(&mut fds, PollTimeout::from(100u16)).is_err() {
                continue;
            }
            let woke: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            drop(fds);
            if let Some((relay, _)) = &self.relay {
                relay.expire();
            }
            if woke[0] {
                self.accept();
            }
            let mut keep = Vec::with_capacity(self.connections.len());
            for (i, mut c) in std::mem::take(&mut self.connections)
                .into_iter()
                .enumerate()
            {
                let next = if woke.get(i + 1).copied().unwrap_or(false) {
                    serve(&mut c)
                } else {
                    Next::Keep
                };
                match next {
                    Next::Keep => keep.push(c),
                    Next::Close => {}
                    Next::Relay(name) => {
                        if let Some((relay, side)) = &self.relay {
                            relay.join(*side, &name, c.stream);
                        }
                    }
                }
            }
            self.connections = keep;
        }
    }

    fn accept(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            if self.connections.len() >= MAX_CONNECTIONS || stream.set_nonblocking(true).is_err() {
                continue;
            }
            self.connections.push(Connection {
                stream,
                mode: Mode::Choosing,
            });
        }
    }
}

/// Serves one connection that woke; what becomes of it.
fn serve(c: &mut Connection) -> Next {
    if let Mode::Echo { pending } = &mut c.mode {
        if !pending.is_empty() {
            return match c.stream.write(pending) {
                Ok(n) => {
                    pending.drain(..n);
                    Next::Keep
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => Next::Keep,
                Err(_) => Next::Close,
            };
        }
    }
    let mut buf = [0u8; 64 * 1024];
    let room = match &c.mode {
        Mode::Echo { .. } => ECHO_BUFFER_BYTES,
        Mode::Naming { line } => MAX_NAME_LINE_BYTES - line.len(),
        Mode::Choosing => 1,
        Mode::Sink { .. } => buf.len(),
    };
    let n = match c.stream.read(&mut buf[..room.max(1)]) {
        Ok(0) => return Next::Close,
        Ok(n) => n,
        Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
            return Next::Keep
        }
        Err(_) => return Next::Close,
    };
    let got = &buf[..n];
    match &mut c.mode {
        Mode::Choosing => {
            c.mode = match got[0] {
                b'e' => Mode::Echo {
                    pending: Vec::new(),
                },
                b's' => Mode::Sink { bytes: 0 },
                b'r' => Mode::Naming { line: vec![b'r'] },
                _ => return Next::Close,
            };
            Next::Keep
        }
        Mode::Echo { pending } => {
            match c.stream.write(got) {
                Ok(written) => pending.extend_from_slice(&got[written..]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => pending.extend_from_slice(got),
                Err(_) => return Next::Close,
            }
            Next::Keep
        }
        Mode::Sink { bytes } => {
            *bytes += n as u64;
            Next::Keep
        }
        Mode::Naming { line } => {
            line.extend_from_slice(got);
            match line.iter().position(|&b| b == b'\n') {
                // Bytes after the name would be the benchmark's: the agent
                // sends none before the relay's go byte.
                Some(end) if end + 1 == line.len() => match std::str::from_utf8(&line[1..end]) {
                    Ok(name) if valid_name(name) => Next::Relay(name.to_string()),
                    _ => Next::Close,
                },
                Some(_) => Next::Close,
                None if line.len() >= MAX_NAME_LINE_BYTES => Next::Close,
                None => Next::Keep,
            }
        }
    }
}

/// A benchmark's name as the relay takes it: a few lowercase words.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// How long a test waits for a reply.
    const WAIT: Duration = Duration::from_secs(10);

    fn served() -> (tempfile::TempDir, PathBuf, Endpoints) {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("vsock.sock_1235");
        let endpoints = Endpoints::serve(&socket, None).unwrap();
        (dir, socket, endpoints)
    }

    fn connect(socket: &Path) -> UnixStream {
        let s = UnixStream::connect(socket).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s
    }

    #[test]
    fn echo_answers_each_byte_and_a_large_write_whole() {
        let (_dir, socket, endpoints) = served();
        let mut s = connect(&socket);
        s.write_all(b"e").unwrap();
        for round in 0..100u8 {
            s.write_all(&[round]).unwrap();
            let mut back = [0u8; 1];
            s.read_exact(&mut back).unwrap();
            assert_eq!(back[0], round);
        }
        // More than the echo buffer, written while nothing is read back.
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let writer = {
            let mut w = s.try_clone().unwrap();
            let big = big.clone();
            std::thread::spawn(move || w.write_all(&big).unwrap())
        };
        let mut back = vec![0u8; big.len()];
        s.read_exact(&mut back).unwrap();
        writer.join().unwrap();
        assert!(back == big);
        drop(endpoints);
        assert!(!socket.exists(), "the socket is removed with the endpoints");
    }

    #[test]
    fn sink_reads_everything_and_strangers_are_closed() {
        let (_dir, socket, _endpoints) = served();
        let mut s = connect(&socket);
        s.write_all(b"s").unwrap();
        s.write_all(&vec![7u8; 1 << 20]).unwrap();
        let mut other = connect(&socket);
        other.write_all(b"x").unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(
            other.read(&mut byte).unwrap(),
            0,
            "an unknown mode is closed"
        );
        // A relay name on a VM without a pair: closed too.
        let mut r = connect(&socket);
        r.write_all(b"rinter_vsock_rtt\n").unwrap();
        assert_eq!(r.read(&mut byte).unwrap(), 0);
    }

    #[test]
    fn connections_beyond_the_limit_are_closed() {
        let (_dir, socket, _endpoints) = served();
        let held: Vec<UnixStream> = (0..MAX_CONNECTIONS)
            .map(|_| {
                let mut s = connect(&socket);
                s.write_all(b"e").unwrap();
                s
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let mut extra = connect(&socket);
        let _ = extra.write_all(b"e\x01");
        let mut byte = [0u8; 1];
        assert!(matches!(extra.read(&mut byte), Ok(0) | Err(_)));
        drop(held);
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("inter_vsock_rtt"));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(!valid_name("../x"));
    }
}
