//! The boot-marker port (0x80, Cloud Hypervisor's debug port): each byte the
//! guest writes is a code, timestamped at the VM exit on the VMM's clock
//! ([`crate::clock`]). Codes 0x40–0x5f are the kernel's, 0x60–0x7f
//! userspace's (Cloud Hypervisor's ranges, [`is_mark`]); anything else (a
//! kernel's io_delay) is counted, not kept.
//!
//! A guest may write as many marks as it likes, so the VMM keeps the first
//! [`MAX_MARKS`] and counts the rest. Each mark is also forwarded, as one
//! byte, to a reader of the VM's `marker.sock` (the orchestrator's
//! collector) as it happens. The port is written under the port-I/O lock
//! every vCPU takes, so forwarding never waits: a byte the socket cannot
//! take at once (its reader is slow, or gone) is dropped and counted.

use std::io::{ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use nix::sys::socket::{send, MsgFlags};

/// Marks kept with their times; a boot writes a handful.
pub const MAX_MARKS: usize = 1024;

/// Whether a byte written to the port is a boot mark (0x40–0x7f) rather
/// than noise such as a kernel's io_delay. Whoever reads the marks from the
/// port's stream (the orchestrator's collector) filters with this too.
pub fn is_mark(code: u8) -> bool {
    (0x40..=0x7f).contains(&code)
}

/// Where marks are forwarded.
#[derive(Default)]
enum Sink {
    /// Nobody listens: nothing is forwarded, nothing is dropped.
    #[default]
    None,
    Open(Box<dyn Write + Send>),
    /// The reader went away (or the sink failed): later marks are dropped.
    Gone,
}

/// The marks of one VM, and where they are forwarded as they happen.
#[derive(Default)]
pub struct BootMarker {
    marks: Vec<(u8, u64)>,
    /// Marks after the first [`MAX_MARKS`].
    not_kept: u64,
    other_writes: u64,
    /// Receives each code as one byte (the same stream QEMU's debugcon
    /// gives the collector); it must never block (see [`NonBlocking`]).
    sink: Sink,
    /// Marks the sink did not take.
    not_forwarded: u64,
}

/// A Unix stream written without waiting and without SIGPIPE: a write the
/// socket cannot take at once fails with `WouldBlock`, whatever the
/// descriptor's own mode.
pub struct NonBlocking(pub UnixStream);

impl Write for NonBlocking {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        send(self.0.as_raw_fd(), buf, flags).map_err(std::io::Error::from)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl BootMarker {
    /// Forwards to `sink`, which must not block: a write it cannot take at
    /// once must fail with `WouldBlock`.
    pub fn with_sink(sink: Box<dyn Write + Send>) -> Self {
        BootMarker {
            sink: Sink::Open(sink),
            ..Default::default()
        }
    }

    /// Forwards to the reader at the other end of `stream`.
    pub fn with_socket(stream: UnixStream) -> Self {
        Self::with_sink(Box::new(NonBlocking(stream)))
    }

    pub fn write(&mut self, code: u8, now_ns: u64) {
        if !is_mark(code) {
            self.other_writes += 1;
            return;
        }
        if self.marks.len() < MAX_MARKS {
            self.marks.push((code, now_ns));
        } else {
            self.not_kept += 1;
        }
        self.forward(code);
    }

    fn forward(&mut self, code: u8) {
        let result = match &mut self.sink {
            Sink::None => return,
            Sink::Gone => Err(ErrorKind::BrokenPipe.into()),
            Sink::Open(sink) => sink.write(&[code]),
        };
        match result {
            Ok(1) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => self.not_forwarded += 1,
            // The collector has gone (or takes nothing): the marks are still kept here.
            Ok(_) | Err(_) => {
                self.not_forwarded += 1;
                self.sink = Sink::Gone;
            }
        }
    }

    /// (code, host CLOCK_MONOTONIC ns) in the order written: the first
    /// [`MAX_MARKS`].
    pub fn marks(&self) -> &[(u8, u64)] {
        &self.marks
    }

    /// Marks written after the first [`MAX_MARKS`], not kept.
    pub fn not_kept(&self) -> u64 {
        self.not_kept
    }

    /// Marks a reader of the marker socket was connected for but did not
    /// get: it was not reading fast enough, or had gone.
    pub fn not_forwarded(&self) -> u64 {
        self.not_forwarded
    }

    pub fn other_writes(&self) -> u64 {
        self.other_writes
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::{Arc, Mutex};

    use super::*;

    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn marks_are_cloud_hypervisors_kernel_and_userspace_ranges() {
        let marks: Vec<u8> = (0..=u8::MAX).filter(|&c| is_mark(c)).collect();
        assert_eq!(marks, (0x40..=0x7f).collect::<Vec<u8>>());
    }

    #[test]
    fn codes_in_range_are_kept_and_forwarded() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let mut m = BootMarker::with_sink(Box::new(Shared(out.clone())));
        m.write(0xff, 1);
        m.write(0x60, 2);
        m.write(0x40, 3);
        m.write(0x80, 4);
        assert_eq!(m.marks(), &[(0x60, 2), (0x40, 3)]);
        assert_eq!(m.other_writes(), 2);
        assert_eq!(out.lock().unwrap().as_slice(), &[0x60, 0x40]);
        assert_eq!((m.not_kept(), m.not_forwarded()), (0, 0));
    }

    #[test]
    fn the_first_marks_are_kept_and_the_rest_counted() {
        let mut m = BootMarker::default();
        let total = MAX_MARKS as u64 + 500;
        for i in 0..total {
            m.write(0x40 | (i as u8 & 0x3f), i);
        }
        assert_eq!(m.marks().len(), MAX_MARKS);
        assert_eq!(m.marks()[MAX_MARKS - 1].1, MAX_MARKS as u64 - 1);
        assert_eq!(m.not_kept(), 500);
        assert_eq!(m.not_forwarded(), 0, "no reader, nothing to drop");
    }

    /// A reader that never reads: the socket fills, and then each mark is
    /// dropped and counted at once instead of stalling the vCPU (with a
    /// blocking write this test would hang). Once the reader has gone,
    /// every mark is dropped.
    #[test]
    fn a_reader_that_does_not_read_costs_marks_not_time() {
        let (ours, mut reader) = UnixStream::pair().unwrap();
        let mut m = BootMarker::with_socket(ours);
        let total = 100_000u64;
        for i in 0..total {
            m.write(0x60, i);
        }
        assert!(
            m.not_forwarded() > 0,
            "the socket buffer cannot hold them all"
        );
        reader.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let _ = reader.read_to_end(&mut got);
        assert_eq!(got.len() as u64 + m.not_forwarded(), total);
        assert!(got.iter().all(|&b| b == 0x60));
        drop(reader);
        let before = m.not_forwarded();
        m.write(0x61, total);
        m.write(0x62, total + 1);
        assert_eq!(m.not_forwarded(), before + 2);
        assert_eq!(m.not_kept(), total + 2 - MAX_MARKS as u64);
    }
}
