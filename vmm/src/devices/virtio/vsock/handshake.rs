//! How a host program reaches a guest port (the convention Firecracker,
//! Cloud Hypervisor and vhost-device-vsock share): it connects to the VM's
//! Unix socket `<vm-dir>/vsock.sock`, writes `CONNECT <port>\n`, and, once
//! the guest accepts, reads `OK <host port>\n`; after that the stream is the
//! connection. A refused or unanswered request closes the stream instead.
//!
//! The line is read a byte at a time: whatever the program sends after the
//! newline is connection data and must stay in the socket.

use std::io::{ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// `CONNECT 4294967295\n` is 19 bytes; anything longer is not a request.
const MAX_LINE_BYTES: usize = 32;
/// How long a host program may take to send its request line.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// A host connection whose request line is still being read.
pub struct Handshake {
    pub stream: UnixStream,
    line: Vec<u8>,
    pub deadline: Instant,
}

/// Where reading the line got to.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// More bytes are needed.
    Waiting,
    /// The program asked for this guest port.
    Connect(u32),
    /// Not a request, or the program went away: close it.
    Failed,
}

impl Handshake {
    pub fn new(stream: UnixStream, now: Instant) -> Self {
        Handshake {
            stream,
            line: Vec::new(),
            deadline: now + TIMEOUT,
        }
    }

    /// Reads what has arrived (the stream is non-blocking).
    pub fn read(&mut self) -> Progress {
        let mut byte = [0u8; 1];
        loop {
            match self.stream.read(&mut byte) {
                Ok(0) => return Progress::Failed,
                Ok(_) if byte[0] == b'\n' => {
                    return parse_connect(&self.line).map_or(Progress::Failed, Progress::Connect)
                }
                Ok(_) if self.line.len() == MAX_LINE_BYTES => return Progress::Failed,
                Ok(_) => self.line.push(byte[0]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Progress::Waiting,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Progress::Failed,
            }
        }
    }
}

/// `CONNECT <port>` (without the newline) → the port: decimal, no sign,
/// no leading or trailing junk.
pub fn parse_connect(line: &[u8]) -> Option<u32> {
    let digits = line.strip_prefix(b"CONNECT ")?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn requests() {
        assert_eq!(parse_connect(b"CONNECT 1234"), Some(1234));
        assert_eq!(parse_connect(b"CONNECT 4294967295"), Some(u32::MAX));
        for bad in [
            &b"CONNECT 4294967296"[..],
            b"CONNECT ",
            b"CONNECT -1",
            b"CONNECT +1",
            b"CONNECT 12 ",
            b"CONNECT  12",
            b"connect 12",
            b"CONNECT 0x10",
            b"",
        ] {
            assert_eq!(parse_connect(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    proptest! {
        #[test]
        fn any_line_parses_without_panicking(line in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = parse_connect(&line);
        }

        #[test]
        fn every_port_round_trips(port in any::<u32>()) {
            prop_assert_eq!(parse_connect(format!("CONNECT {port}").as_bytes()), Some(port));
        }
    }

    fn handshake() -> (Handshake, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        (Handshake::new(ours, Instant::now()), theirs)
    }

    #[test]
    fn the_line_may_arrive_in_pieces_and_data_after_it_stays() {
        let (mut hs, mut program) = handshake();
        assert_eq!(hs.read(), Progress::Waiting);
        program.write_all(b"CONN").unwrap();
        assert_eq!(hs.read(), Progress::Waiting);
        program.write_all(b"ECT 52\nafter").unwrap();
        assert_eq!(hs.read(), Progress::Connect(52));
        let mut rest = [0u8; 5];
        hs.stream.set_nonblocking(false).unwrap();
        hs.stream.read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"after");
    }

    #[test]
    fn junk_long_lines_and_hangups_fail() {
        let (mut hs, mut program) = handshake();
        program.write_all(b"HELLO\n").unwrap();
        assert_eq!(hs.read(), Progress::Failed);
        let (mut hs, mut program) = handshake();
        program.write_all(&[b'7'; 100]).unwrap();
        assert_eq!(hs.read(), Progress::Failed);
        let (mut hs, program) = handshake();
        drop(program);
        assert_eq!(hs.read(), Progress::Failed);
    }
}
