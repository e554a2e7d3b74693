//! The host's side of the vsock test guest (tests/vsock-guest): finding it,
//! running processes with timeouts, the echo exchanges, and reading what the
//! guest printed. Written for the QEMU + vhost-device-vsock tests, and meant
//! to run unchanged against vmbench's own VMM: nothing here knows which VMM
//! is underneath.
//!
//! The host end of guest vsock is a Unix socket, the convention Firecracker,
//! Cloud Hypervisor and vhost-device-vsock share (`<uds>` below):
//!
//! - a guest connection to host port P arrives at `<uds>_P`, where a host
//!   program must already listen (else the connection is refused);
//! - a host program reaches guest port P by connecting to `<uds>` and
//!   writing `CONNECT P\n`; the answer is a line `OK <port>\n`, and from then
//!   on the stream is the connection.
//!
//! Every wait has a timeout, and every child is killed when its guard drops,
//! so a failing test neither hangs nor leaves processes behind.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::{skip_unless_ci, workspace};

/// What a failed check says: which step, and what was seen.
pub type Check<T> = Result<T, String>;

/// Every line of the guest's starts with this.
pub const GUEST_PREFIX: &str = "vsock-guest: ";

/// The guest built by scripts/build-test-guest.sh.
pub fn vsock_guest_bin() -> PathBuf {
    workspace().join("target/vsock-guest/release/vsock-guest")
}

/// The built guest, or `None` (after printing why, or failing under CI)
/// when it is not built.
pub fn built_vsock_guest(test: &str) -> Option<PathBuf> {
    let guest = vsock_guest_bin();
    if guest.is_file() {
        return Some(guest);
    }
    let reason = format!(
        "{} is not built (scripts/build-test-guest.sh)",
        guest.display()
    );
    skip_unless_ci(test, &reason);
    None
}

/// `name` on PATH, or in ~/.cargo/bin (where `cargo install` puts
/// vhost-device-vsock, often not on a test runner's PATH).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let cargo_bin = std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo/bin"));
    std::env::split_paths(&path)
        .chain(cargo_bin)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A child process that is killed and reaped when dropped.
pub struct KillOnDrop {
    name: String,
    child: Child,
}

impl KillOnDrop {
    pub fn spawn(name: &str, command: &mut Command) -> Check<KillOnDrop> {
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        Ok(KillOnDrop {
            name: name.to_string(),
            child,
        })
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status once it has exited, or an error after `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Check<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() >= deadline => {
                    return Err(format!("{} still running after {timeout:?}", self.name))
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(format!("waiting for {}: {e}", self.name)),
            }
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until `path` exists.
pub fn wait_for_path(path: &Path, timeout: Duration) -> Check<()> {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        if Instant::now() >= deadline {
            return Err(format!(
                "{} did not appear within {timeout:?}",
                path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// `len` bytes that are not all alike and differ with `seed`, so a
/// reordered, dropped or duplicated chunk shows.
pub fn patterned_bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8 ^ seed)
        .collect()
}

/// Accepts one connection on `listener` within `timeout`.
pub fn accept_within(listener: &UnixListener, timeout: Duration) -> Check<UnixStream> {
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("set_nonblocking: {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream
                    .set_nonblocking(false)
                    .map_err(|e| format!("set_nonblocking: {e}"))?;
                return Ok(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(format!("no connection from the guest within {timeout:?}"));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    }
}

/// Reads one line, byte by byte so that nothing after it is consumed (the
/// rest of the stream belongs to the caller). `Ok(None)` at end of stream.
pub fn read_line(stream: &mut UnixStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let mut byte = [0];
    loop {
        if stream.read(&mut byte)? == 0 {
            return Ok(None);
        }
        line.push(byte[0]);
        if byte[0] == b'\n' {
            return Ok(Some(line));
        }
    }
}

fn set_timeouts(stream: &UnixStream, timeout: Duration) -> Check<()> {
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("socket timeouts: {e}"))
}

/// Connects to guest port `port` through the VMM's socket `uds`, retrying
/// (for up to `timeout`) while the socket is not there yet, the device is not
/// up, or the guest does not answer: the guest may still be booting.
///
/// vhost-device-vsock reads the CONNECT line with a buffered reader and drops
/// whatever else it read: nothing may be written before the `OK` line.
pub fn connect_to_guest(uds: &Path, port: u32, timeout: Duration) -> Check<UnixStream> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("never tried");
    while Instant::now() < deadline {
        match try_connect(uds, port) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "CONNECT {port} through {} got no OK within {timeout:?}; last: {last}",
        uds.display()
    ))
}

fn try_connect(uds: &Path, port: u32) -> Check<UnixStream> {
    let mut stream = UnixStream::connect(uds).map_err(|e| format!("connect: {e}"))?;
    // One attempt's answer: a guest that is up answers within this.
    set_timeouts(&stream, Duration::from_secs(3))?;
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .map_err(|e| format!("write CONNECT: {e}"))?;
    match read_line(&mut stream) {
        Ok(Some(line)) if line.starts_with(b"OK ") => Ok(stream),
        Ok(Some(line)) => Err(format!("answer {:?}", String::from_utf8_lossy(&line))),
        Ok(None) => Err("closed without an answer".into()),
        Err(e) => Err(format!("no answer: {e}")),
    }
}

/// Sends `data` and reads back as many bytes, writing from a second thread
/// so that neither direction's buffers fill up and stall the other (the
/// guest only echoes as fast as it is read). Returns what came back.
pub fn echo_round_trip(stream: &UnixStream, data: &[u8], timeout: Duration) -> Check<Vec<u8>> {
    set_timeouts(stream, timeout)?;
    let mut writer = stream.try_clone().map_err(|e| format!("clone: {e}"))?;
    let mut reader = stream;
    let mut back = Vec::with_capacity(data.len());
    std::thread::scope(|scope| {
        let sending = scope.spawn(move || writer.write_all(data));
        let mut chunk = vec![0; 64 * 1024];
        let deadline = Instant::now() + timeout;
        while back.len() < data.len() && Instant::now() < deadline {
            match reader.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => back.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("read after {} bytes back: {e}", back.len())),
            }
        }
        match sending.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("write: {e}")),
            Err(_) => Err("the writer thread panicked".into()),
        }
    })?;
    Ok(back)
}

/// Checks the echo matches, naming the first difference.
pub fn same_bytes(sent: &[u8], back: &[u8]) -> Check<()> {
    if let Some(at) = sent.iter().zip(back).position(|(a, b)| a != b) {
        return Err(format!("echo differs at byte {at} of {}", sent.len()));
    }
    if sent.len() != back.len() {
        return Err(format!(
            "sent {} bytes, {} came back",
            sent.len(),
            back.len()
        ));
    }
    Ok(())
}

/// After shutting down our sending side: the guest must close the
/// connection too, sending nothing more.
pub fn expect_close(stream: &mut UnixStream, timeout: Duration) -> Check<()> {
    set_timeouts(stream, timeout)?;
    let mut extra = [0; 256];
    match stream.read(&mut extra) {
        Ok(0) => Ok(()),
        Ok(n) => Err(format!("{n} unexpected bytes after the echo")),
        Err(e) => Err(format!("the connection did not close: {e}")),
    }
}

/// The host's side of `vsockguest.connect=<port>`: accept the guest on
/// `listener` (bound at `<uds>_<port>` before the guest starts), read its
/// greeting, echo `data` through it, shut down our sending side and see the
/// guest close.
pub fn serve_guest_connection(
    listener: &UnixListener,
    greeting: &[u8],
    data: &[u8],
    timeout: Duration,
) -> Check<()> {
    let mut stream = accept_within(listener, timeout)?;
    set_timeouts(&stream, timeout)?;
    let mut got = vec![0; greeting.len()];
    stream
        .read_exact(&mut got)
        .map_err(|e| format!("reading the greeting: {e}"))?;
    if got != greeting {
        return Err(format!(
            "greeting {:?}, expected {:?}",
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(greeting)
        ));
    }
    echo_and_close(stream, data, timeout)
}

/// The host's side of `vsockguest.listen=<port>`: connect through `uds`
/// (retrying while the guest boots), echo `data`, shut down our sending side
/// and see the guest close.
pub fn connect_and_echo(uds: &Path, port: u32, data: &[u8], timeout: Duration) -> Check<()> {
    let stream = connect_to_guest(uds, port, timeout)?;
    echo_and_close(stream, data, timeout)
}

fn echo_and_close(mut stream: UnixStream, data: &[u8], timeout: Duration) -> Check<()> {
    let back = echo_round_trip(&stream, data, timeout)?;
    same_bytes(data, &back)?;
    stream
        .shutdown(std::net::Shutdown::Write)
        .map_err(|e| format!("shutdown: {e}"))?;
    expect_close(&mut stream, timeout)
}

/// The guest's own lines in a serial log, without the prefix.
pub fn guest_lines(serial: &str) -> Vec<&str> {
    serial
        .lines()
        .filter_map(|line| line.strip_prefix(GUEST_PREFIX))
        .collect()
}

/// Checks the guest's last line is `done` and that it reports `mode
/// port=<port> closed ended=<ended> echoed_bytes=<echoed>`.
pub fn expect_done(serial: &str, mode: &str, port: u32, echoed: usize) -> Check<()> {
    let lines = guest_lines(serial);
    if lines.last() != Some(&"done") {
        return Err(format!("the guest did not end with `done`:\n{serial}"));
    }
    let summary = format!("{mode} port={port} closed ended=clean echoed_bytes={echoed}");
    if !lines.contains(&summary.as_str()) {
        return Err(format!("no `{summary}` from the guest:\n{serial}"));
    }
    Ok(())
}

/// Checks the guest's last line is `error=<error>…` (e.g. `refused port=5`).
pub fn expect_error(serial: &str, error: &str) -> Check<()> {
    let last = guest_lines(serial).last().copied().unwrap_or("");
    match last.strip_prefix("error=") {
        Some(reported) if reported.starts_with(error) => Ok(()),
        _ => Err(format!(
            "expected the guest to end with error={error}:\n{serial}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_lines_and_their_checks() {
        let serial = "noise\nvsock-guest: start entry=pvh\n\
                      vsock-guest: connect port=5000 closed ended=clean echoed_bytes=10\n\
                      vsock-guest: done\n";
        assert_eq!(guest_lines(serial).len(), 3);
        assert_eq!(expect_done(serial, "connect", 5000, 10), Ok(()));
        assert!(expect_done(serial, "connect", 5000, 11).is_err());
        assert!(expect_done(serial, "listen", 5000, 10).is_err());
        assert!(expect_error(serial, "refused").is_err());
        let refused = "vsock-guest: connect port=7\nvsock-guest: error=refused port=7\n";
        assert_eq!(expect_error(refused, "refused port=7"), Ok(()));
        assert!(expect_done(refused, "connect", 7, 0).is_err());
    }

    #[test]
    fn echo_checks_name_the_difference() {
        let data = patterned_bytes(1000, 1);
        assert_ne!(data, patterned_bytes(1000, 2));
        assert_eq!(same_bytes(&data, &data), Ok(()));
        let mut bad = data.clone();
        bad[500] ^= 1;
        assert_eq!(
            same_bytes(&data, &bad),
            Err("echo differs at byte 500 of 1000".into())
        );
        assert!(same_bytes(&data, &data[..999]).is_err());
    }

    #[test]
    fn an_echo_over_a_socket_pair() {
        let (host, mut guest) = UnixStream::pair().unwrap();
        let echo = std::thread::spawn(move || {
            let mut buf = [0; 4096];
            loop {
                match guest.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => guest.write_all(&buf[..n]).unwrap(),
                }
            }
        });
        let data = patterned_bytes(300 * 1024, 3);
        echo_and_close(host, &data, Duration::from_secs(10)).unwrap();
        echo.join().unwrap();
    }

    #[test]
    fn a_child_is_killed_when_its_guard_drops() {
        let mut sleeper = KillOnDrop::spawn("sleep", Command::new("sleep").arg("60")).unwrap();
        assert!(sleeper.wait_timeout(Duration::from_millis(50)).is_err());
        let pid = sleeper.id();
        drop(sleeper);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }
}
