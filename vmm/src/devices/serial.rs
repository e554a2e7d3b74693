//! COM1: vm-superio's 16550A state machine, its output going to the VM's
//! serial.log and its interrupt to an eventfd (an irqfd for IRQ 4 once the
//! VM has an irqchip). The last few console lines are also kept, so the VMM
//! can say what the kernel said last when the VM ended (a reboot, a power
//! off and a panic all end in the same triple fault), and two lines are
//! timestamped on the host clock at the exit that ends them: the first
//! (the console is up) and the kernel's `Run … as init process` (the last
//! thing the kernel says before init; the marks a guest that cannot run
//! userspace still gives the kernel phase).
//!
//! A guest decides how much it prints, so serial.log stops at
//! [`LOG_MAX_BYTES`]: what comes after is counted, not written (the tail
//! and the timestamped lines are still taken from it).

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::sync::{Arc, Mutex};

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

/// Raises the serial interrupt by signalling an eventfd.
pub struct EventFdTrigger(pub EventFd);

impl Trigger for EventFdTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// What serial.log holds at most: a Linux boot prints tens of KiB, a
/// kernel at its most verbose (`ignore_loglevel initcall_debug`) a few MiB.
pub const LOG_MAX_BYTES: u64 = 16 << 20;

/// Lines kept, and the bytes kept of each.
const TAIL_LINES: usize = 8;
const TAIL_LINE_BYTES: usize = 256;

/// The console's last complete lines, and the one being written.
#[derive(Default)]
struct TailState {
    lines: VecDeque<String>,
    current: Vec<u8>,
    /// The host time of the write being handled.
    now_ns: u64,
    /// [`CONSOLE_MARKS`] seen so far, with the host time their line ended.
    marks: BTreeMap<String, u64>,
    /// Bytes passed to the output, and those beyond its limit, dropped.
    out_bytes: u64,
    out_dropped: u64,
}

/// Whether a console line (its timestamp included) is the one a mark names.
type IsLine = fn(&str) -> bool;

/// The console lines timestamped: a name, and how to know the line (each
/// is kept once, the first time).
const CONSOLE_MARKS: [(&str, IsLine); 2] = [
    ("first_line", |_| true),
    ("run_init", |line| {
        line.contains("Run ") && line.ends_with(" as init process")
    }),
];

/// Passes the output on, up to its limit, and keeps its tail.
struct Tee {
    out: Box<dyn Write + Send>,
    out_limit: u64,
    tail: Arc<Mutex<TailState>>,
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut tail = super::bus::lock(&self.tail);
        let room = self.out_limit.saturating_sub(tail.out_bytes);
        let n = if room == 0 {
            tail.out_dropped += buf.len() as u64;
            buf.len()
        } else {
            let fits = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
            let n = self.out.write(&buf[..fits])?;
            tail.out_bytes += n as u64;
            n
        };
        for &byte in &buf[..n] {
            match byte {
                b'\n' => {
                    let line = String::from_utf8_lossy(&tail.current)
                        .trim_end()
                        .to_string();
                    tail.current.clear();
                    let now_ns = tail.now_ns;
                    for (name, is) in CONSOLE_MARKS {
                        if !tail.marks.contains_key(name) && is(&line) {
                            tail.marks.insert(name.to_string(), now_ns);
                        }
                    }
                    if tail.lines.len() == TAIL_LINES {
                        tail.lines.pop_front();
                    }
                    tail.lines.push_back(line);
                }
                _ if tail.current.len() < TAIL_LINE_BYTES => tail.current.push(byte),
                _ => {}
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

pub struct SerialPort {
    uart: Serial<EventFdTrigger, NoEvents, Box<dyn Write + Send>>,
    tail: Arc<Mutex<TailState>>,
    /// Writes the UART refused (its output failed or the interrupt could not be raised).
    pub errors: u64,
}

impl SerialPort {
    /// A port whose output goes to `out`, up to [`LOG_MAX_BYTES`].
    pub fn new(interrupt: EventFd, out: Box<dyn Write + Send>) -> Self {
        Self::with_limit(interrupt, out, LOG_MAX_BYTES)
    }

    fn with_limit(interrupt: EventFd, out: Box<dyn Write + Send>, out_limit: u64) -> Self {
        let tail = Arc::new(Mutex::new(TailState::default()));
        let tee = Tee {
            out,
            out_limit,
            tail: tail.clone(),
        };
        SerialPort {
            uart: Serial::new(EventFdTrigger(interrupt), Box::new(tee)),
            tail,
            errors: 0,
        }
    }

    /// What the kernel said last about ending: Linux's `reboot: Restarting
    /// system`, `reboot: Power down` or `Kernel panic - not syncing: …`
    /// among the last console lines (its timestamp dropped), if any.
    pub fn last_word(&self) -> Option<String> {
        let tail = super::bus::lock(&self.tail);
        let partial = String::from_utf8_lossy(&tail.current).to_string();
        tail.lines
            .iter()
            .chain(std::iter::once(&partial))
            .rev()
            .find_map(|line| {
                let at = line
                    .find("Kernel panic")
                    .or_else(|| line.find("reboot: "))?;
                Some(line[at..].trim().to_string())
            })
    }

    /// Output bytes beyond [`LOG_MAX_BYTES`], not written.
    pub fn log_bytes_dropped(&self) -> u64 {
        super::bus::lock(&self.tail).out_dropped
    }

    /// A port whose output is kept in memory (for tests).
    pub fn in_memory() -> (Self, Arc<Mutex<Vec<u8>>>) {
        Self::in_memory_up_to(LOG_MAX_BYTES)
    }

    /// The same, its output stopping at `out_limit` bytes.
    fn in_memory_up_to(out_limit: u64) -> (Self, Arc<Mutex<Vec<u8>>>) {
        struct Shared(Arc<Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .map_err(|_| std::io::ErrorKind::Other)?
                    .extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let out = Arc::new(Mutex::new(Vec::new()));
        let event = EventFd::new(libc::EFD_NONBLOCK).expect("eventfd");
        let port = SerialPort::with_limit(event, Box::new(Shared(out.clone())), out_limit);
        (port, out)
    }

    pub fn read(&mut self, offset: u16) -> u8 {
        self.uart.read(offset as u8)
    }

    /// The console's timestamped lines (CLOCK_MONOTONIC ns): `first_line`,
    /// `run_init`, those that were written.
    pub fn console_marks(&self) -> BTreeMap<String, u64> {
        super::bus::lock(&self.tail).marks.clone()
    }

    /// A register write at host time `now_ns` (the exit's).
    pub fn write(&mut self, offset: u16, value: u8, now_ns: u64) {
        super::bus::lock(&self.tail).now_ns = now_ns;
        if self.uart.write(offset as u8, value).is_err() {
            self.errors += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LSR: u16 = 5;
    const LSR_THR_EMPTY: u8 = 0x20;

    #[test]
    fn transmitted_bytes_reach_the_log() {
        let (mut port, out) = SerialPort::in_memory();
        assert_ne!(port.read(LSR) & LSR_THR_EMPTY, 0, "ready to transmit");
        for b in b"Linux version" {
            port.write(0, *b, 0);
        }
        assert_eq!(out.lock().unwrap().as_slice(), b"Linux version");
        assert_eq!(port.errors, 0);
        assert_eq!(port.log_bytes_dropped(), 0);
    }

    #[test]
    fn the_log_stops_at_its_limit_and_the_rest_is_counted() {
        let (mut port, out) = SerialPort::in_memory_up_to(10);
        say(&mut port, "[ 0.1] Run /init as init process\n");
        say_at(&mut port, "reboot: Power down\n", 7);
        assert_eq!(out.lock().unwrap().as_slice(), b"[ 0.1] Run");
        assert_eq!(port.log_bytes_dropped(), 33 + 19 - 10);
        assert_eq!(port.errors, 0, "the guest sees a UART that works");
        // The console is still read past the limit.
        assert_eq!(port.last_word().as_deref(), Some("reboot: Power down"));
        assert!(port.console_marks().contains_key("run_init"));
    }

    fn say(port: &mut SerialPort, text: &str) {
        say_at(port, text, 0);
    }

    fn say_at(port: &mut SerialPort, text: &str, now_ns: u64) {
        text.bytes().for_each(|b| port.write(0, b, now_ns));
    }

    #[test]
    fn the_first_line_and_run_init_are_timestamped_once() {
        let (mut port, _) = SerialPort::in_memory();
        say_at(&mut port, "[    0.00] Linux version 6.1", 10);
        assert!(
            port.console_marks().is_empty(),
            "a line counts once it ends"
        );
        say_at(&mut port, "\n", 11);
        say_at(&mut port, "[    0.10] Run /init as init process\r\n", 20);
        say_at(&mut port, "[    0.20] Run /sbin/init as init process\n", 30);
        let marks: Vec<(String, u64)> = port.console_marks().into_iter().collect();
        assert_eq!(
            marks,
            [("first_line".to_string(), 11), ("run_init".to_string(), 20)]
        );
    }

    #[test]
    fn the_kernels_last_word_on_ending_is_kept() {
        let (mut port, _) = SerialPort::in_memory();
        assert_eq!(port.last_word(), None);
        say(&mut port, "[    1.20] Run /init as init process\r\n");
        assert_eq!(port.last_word(), None);
        say(&mut port, "[    2.50] reboot: Power down\r\n");
        say(
            &mut port,
            "[    2.51] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000000\n",
        );
        say(&mut port, "[    2.52] Kernel Offset: disabled\n");
        assert_eq!(
            port.last_word().as_deref(),
            Some("Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000000")
        );
        say(&mut port, "[    3.00] reboot: Restarting system");
        assert_eq!(
            port.last_word().as_deref(),
            Some("reboot: Restarting system"),
            "an unfinished line counts"
        );
        // Only the last lines are kept, each cut short.
        for _ in 0..20 {
            say(&mut port, &"x".repeat(1000));
            say(&mut port, "\n");
        }
        assert_eq!(port.last_word(), None);
    }
}
