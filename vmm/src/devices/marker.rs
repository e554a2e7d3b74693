//! The boot-marker port (0x80, Cloud Hypervisor's debug port): each byte the
//! guest writes is a code, timestamped at the VM exit on the VMM's clock
//! ([`crate::clock`]). Codes 0x40–0x5f are the kernel's, 0x60–0x7f
//! userspace's (Cloud Hypervisor's ranges, [`is_mark`]); anything else (a
//! kernel's io_delay) is counted, not kept.
//!
//! # Benchmark windows
//! The same port carries the marks of benchmark windows ([`crate::windows`]):
//! `0xB0 lo hi` starts window `hi << 8 | lo`, `0xB1 lo hi` ends it. The two
//! bytes after a 0xB0 or 0xB1 are its id whatever their values (a 0x60
//! there is an id byte, not a boot mark); none of the three is a boot mark
//! or counted as noise. [`MarkStream`] is that state machine, one per VM (the
//! port is written under the port-I/O lock, so bytes from several vCPUs
//! arrive in one order): a window mark written by two vCPUs at once
//! interleaves, and a mark whose id bytes never come ends nothing.
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

/// A window's start code: `0xB0 lo hi`.
pub const WINDOW_START: u8 = 0xb0;
/// A window's end code: `0xB1 lo hi`.
pub const WINDOW_END: u8 = 0xb1;

/// What a byte written to the port is, given the bytes before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Byte {
    /// A boot mark (0x40–0x7f, outside a window mark).
    Mark,
    /// Anything else outside a window mark (a kernel's io_delay): noise.
    Other,
    /// Part of a window mark.
    Window(WindowStep),
}

/// How far a window mark has come with this byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowStep {
    /// 0xB0: a start, its id to follow.
    StartCode,
    /// The start's low id byte.
    StartLow,
    /// The start's high id byte: window `id` starts.
    Start(u16),
    /// 0xB1: an end, its id to follow.
    EndCode,
    /// The end's low id byte.
    EndLow,
    /// The end's high id byte: window `id` ends.
    End(u16),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Edge {
    #[default]
    Start,
    End,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum State {
    /// Between marks.
    #[default]
    Idle,
    /// After 0xB0 or 0xB1: the low id byte comes next.
    Code(Edge),
    /// After the low id byte: the high one comes next.
    Low(Edge, u8),
}

/// Tells boot marks, noise and window marks apart in the port's byte
/// stream: the VMM's marker feeds it every byte written, and so can a
/// reader of the raw stream (QEMU's debugcon, which forwards every byte).
/// Three bytes of state; no input can make it fail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MarkStream {
    state: State,
}

impl MarkStream {
    pub fn feed(&mut self, byte: u8) -> Byte {
        let (state, step) = match self.state {
            State::Idle => match byte {
                WINDOW_START => (State::Code(Edge::Start), WindowStep::StartCode),
                WINDOW_END => (State::Code(Edge::End), WindowStep::EndCode),
                _ if is_mark(byte) => return Byte::Mark,
                _ => return Byte::Other,
            },
            State::Code(edge) => (
                State::Low(edge, byte),
                match edge {
                    Edge::Start => WindowStep::StartLow,
                    Edge::End => WindowStep::EndLow,
                },
            ),
            State::Low(edge, low) => {
                let id = u16::from_le_bytes([low, byte]);
                (
                    State::Idle,
                    match edge {
                        Edge::Start => WindowStep::Start(id),
                        Edge::End => WindowStep::End(id),
                    },
                )
            }
        };
        self.state = state;
        Byte::Window(step)
    }
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
    stream: MarkStream,
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

    /// Takes one byte written to the port at `now_ns`: a boot mark is kept
    /// and forwarded, noise counted; a window mark's byte is only said.
    pub fn write(&mut self, code: u8, now_ns: u64) -> Byte {
        let byte = self.stream.feed(code);
        match byte {
            Byte::Mark => {
                if self.marks.len() < MAX_MARKS {
                    self.marks.push((code, now_ns));
                } else {
                    self.not_kept += 1;
                }
                self.forward(code);
            }
            Byte::Other => self.other_writes += 1,
            Byte::Window(_) => {}
        }
        byte
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

    fn steps(bytes: &[u8]) -> Vec<Byte> {
        let mut stream = MarkStream::default();
        bytes.iter().map(|&b| stream.feed(b)).collect()
    }

    #[test]
    fn a_window_mark_is_three_bytes_neither_marks_nor_noise() {
        use WindowStep::*;
        let out = Arc::new(Mutex::new(Vec::new()));
        let mut m = BootMarker::with_sink(Box::new(Shared(out.clone())));
        // Window 0x0160: its low id byte is a boot-mark code, and is no mark.
        let written: Vec<Byte> = [0xb0, 0x60, 0x01, 0x61, 0xb1, 0x60, 0x01, 0x00]
            .iter()
            .enumerate()
            .map(|(t, &b)| m.write(b, t as u64))
            .collect();
        assert_eq!(
            written,
            [
                Byte::Window(StartCode),
                Byte::Window(StartLow),
                Byte::Window(Start(0x0160)),
                Byte::Mark,
                Byte::Window(EndCode),
                Byte::Window(EndLow),
                Byte::Window(End(0x0160)),
                Byte::Other,
            ]
        );
        assert_eq!(m.marks(), &[(0x61, 3)]);
        assert_eq!(
            out.lock().unwrap().as_slice(),
            &[0x61],
            "only marks forwarded"
        );
        assert_eq!(m.other_writes(), 1, "the 0x00 alone");
    }

    /// An id is any two bytes, codes included; a mark cut short leaves the
    /// stream waiting for its id, and the next bytes complete it.
    #[test]
    fn ids_are_any_two_bytes_and_a_cut_mark_takes_the_next_ones() {
        use WindowStep::*;
        assert_eq!(
            steps(&[0xb0, 0xb0, 0xb1]),
            [
                Byte::Window(StartCode),
                Byte::Window(StartLow),
                Byte::Window(Start(0xb1b0))
            ]
        );
        assert_eq!(
            steps(&[0xb1, 0xff, 0xff, 0xb0, 0x00, 0x00]),
            [
                Byte::Window(EndCode),
                Byte::Window(EndLow),
                Byte::Window(End(0xffff)),
                Byte::Window(StartCode),
                Byte::Window(StartLow),
                Byte::Window(Start(0))
            ]
        );
        // 0xB0 then a boot mark and noise: they are the id, not a mark.
        assert_eq!(
            steps(&[0xb0, 0x60, 0x00, 0x60]),
            [
                Byte::Window(StartCode),
                Byte::Window(StartLow),
                Byte::Window(Start(0x0060)),
                Byte::Mark
            ]
        );
        // Cut after its low byte: nothing has started.
        let cut = steps(&[0x40, 0xb0, 0x07]);
        assert!(!cut.iter().any(|b| matches!(b, Byte::Window(Start(_)))));
    }

    /// Reads a byte stream the simple way, all at once: what a byte is
    /// depends only on where the last window code before it was.
    fn reference(bytes: &[u8]) -> Vec<Byte> {
        use WindowStep::*;
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let code = bytes[i];
            if code == WINDOW_START || code == WINDOW_END {
                let start = code == WINDOW_START;
                out.push(Byte::Window(if start { StartCode } else { EndCode }));
                if let Some(&low) = bytes.get(i + 1) {
                    out.push(Byte::Window(if start { StartLow } else { EndLow }));
                    if let Some(&high) = bytes.get(i + 2) {
                        let id = u16::from(low) | u16::from(high) << 8;
                        out.push(Byte::Window(if start { Start(id) } else { End(id) }));
                    }
                }
                i += 3;
            } else {
                out.push(if (0x40..0x80).contains(&code) {
                    Byte::Mark
                } else {
                    Byte::Other
                });
                i += 1;
            }
        }
        out
    }

    proptest::proptest! {
        /// Garbage, and window codes mixed into it, byte by byte: the state
        /// machine classifies every byte as the all-at-once reading does,
        /// and the marker keeps exactly the marks it finds.
        #[test]
        fn any_stream_is_read_as_the_simple_reading_does(
            bytes in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::prelude::any::<u8>(),
                    proptest::prelude::Just(WINDOW_START),
                    proptest::prelude::Just(WINDOW_END),
                ],
                0..200,
            )
        ) {
            let read = steps(&bytes);
            proptest::prop_assert_eq!(&read, &reference(&bytes));
            let mut m = BootMarker::default();
            for (t, &b) in bytes.iter().enumerate() {
                m.write(b, t as u64);
            }
            let marks: Vec<u8> = bytes
                .iter()
                .zip(&read)
                .filter(|(_, r)| **r == Byte::Mark)
                .map(|(b, _)| *b)
                .collect();
            let kept: Vec<u8> = m.marks().iter().map(|(c, _)| *c).collect();
            proptest::prop_assert_eq!(kept, marks);
            let noise = read.iter().filter(|r| **r == Byte::Other).count() as u64;
            proptest::prop_assert_eq!(m.other_writes(), noise);
        }
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
