//! The report to the host: connect over vsock, send `Hello`, then `Ready`
//! (and, for a systemd guest, its `Systemd` report) or `Failed`, and wait for
//! `Ack` — or, in bench mode, for the host's orders (`RunBench`, answered
//! with `Bench`, until `Ack`). Every failure is one console line; the caller
//! powers off either way.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, VsockAddr};
use vmbench_proto::{
    decode_body, encode_frame, BenchResult, FrameDecoder, GuestMarks, GuestMessage, Hello,
    HostMessage, SystemdReport, HOST_CID, PROTO_VERSION,
};

use crate::clock::boottime_ns;
use crate::console;
use crate::settings::{self, Settings};

/// The kernel command line's settings; bad ones are reported on the console.
pub fn settings() -> Settings {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_else(|e| {
        console::line(&[("warn", "no_cmdline"), ("error", &e.to_string())]);
        String::new()
    });
    let (settings, problems) = settings::parse(&cmdline);
    for p in problems {
        console::line(&[
            ("warn", "bad_setting"),
            ("key", &p.key),
            ("value", &p.value),
        ]);
    }
    settings
}

/// One connection to the host and the marks that go into `Ready`.
pub struct Conversation {
    stream: File,
    settings: Settings,
    /// The host's bytes not yet taken as messages.
    decoder: FrameDecoder,
    pub marks: GuestMarks,
}

impl Conversation {
    /// Connects (retrying while the host side comes up) and says `Hello`;
    /// `init_ns` is CLOCK_BOOTTIME when PID 1 started.
    pub fn open(settings: &Settings, mut marks: GuestMarks, init_ns: u64) -> Option<Conversation> {
        let (socket, attempts) = match connect_host(settings) {
            Ok(connected) => connected,
            Err(failure) => {
                console::line(&[
                    ("error", "host_unreachable"),
                    ("cid", &HOST_CID.to_string()),
                    ("port", &settings.port.to_string()),
                    ("attempts", &failure.attempts.to_string()),
                    ("elapsed_ms", &failure.elapsed_ms.to_string()),
                    ("last_error", &failure.last_error),
                ]);
                return None;
            }
        };
        marks.connected_ns = boottime_ns();
        marks.connect_attempts = attempts;
        let mut conversation = Conversation {
            stream: File::from(socket),
            settings: settings.clone(),
            decoder: FrameDecoder::new(),
            marks,
        };
        let hello = Hello {
            proto_version: PROTO_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            vm_id: settings.vm_id,
            kernel_release: nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            cpus: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(0),
            mem_total_kib: mem_total_kib().unwrap_or(0),
            boottime_at_init_ns: init_ns,
        };
        conversation
            .send("hello", &GuestMessage::Hello(hello))
            .then_some(conversation)
    }

    fn send(&mut self, what: &str, message: &GuestMessage) -> bool {
        let sent = encode_frame(message)
            .map_err(|e| e.to_string())
            .and_then(|frame| self.stream.write_all(&frame).map_err(|e| e.to_string()));
        if let Err(e) = &sent {
            console::line(&[("error", "send_failed"), ("message", what), ("detail", e)]);
        }
        sent.is_ok()
    }

    /// The guest has booted: marker, mark, `Ready`.
    pub fn ready(&mut self, systemd_follows: bool) -> bool {
        crate::marker::write(vmbench_proto::MARKER_USERSPACE_READY);
        self.marks.ready_ns = boottime_ns();
        self.marks.systemd_follows = systemd_follows;
        self.marks.clocksource = crate::clock::clocksource();
        let marks = self.marks.clone();
        self.send("ready", &GuestMessage::Ready(marks))
    }

    pub fn systemd(&mut self, report: SystemdReport) -> bool {
        self.send("systemd", &GuestMessage::Systemd(report))
    }

    pub fn failed(&mut self, what: &str) {
        self.send(
            "failed",
            &GuestMessage::Failed {
                what: what.to_string(),
            },
        );
    }

    /// A benchmark's result, the answer to a `RunBench`.
    pub fn bench(&mut self, result: BenchResult) -> bool {
        self.send("bench", &GuestMessage::Bench(result))
    }

    /// Waits (bounded) for the host to say it has the report.
    pub fn wait_ack(&mut self) {
        let timeout_ms = self.settings.ack_timeout_ms;
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        let got = self.receive(Some(deadline)).and_then(|message| match message {
            Some(HostMessage::Ack) => Ok(()),
            Some(HostMessage::RunBench(request)) => Err(format!(
                "the host asked for benchmark {:?}, but this guest was not booted with vmbench.bench=1",
                request.name
            )),
            None => Err(format!("no Ack from the host within {timeout_ms} ms")),
        });
        match got {
            Ok(()) => self.reported(),
            Err(e) => console::line(&[("warn", "no_ack"), ("detail", &e)]),
        }
    }

    /// The host has the whole report and lets the guest go.
    pub fn reported(&self) {
        console::line(&[
            ("event", "reported"),
            ("vm_id", &self.settings.vm_id.to_string()),
        ]);
    }

    /// Waits, as long as it takes, for the host's next message (bench mode).
    /// Children that end meanwhile are reaped: PID 1 inherits every orphan.
    pub fn next_order(&mut self) -> Result<HostMessage, String> {
        self.receive(None)?
            .ok_or_else(|| "no message and no deadline".to_string())
    }

    /// The next message from the host, `None` once `deadline` passes; an
    /// error when the stream breaks or brings garbage.
    fn receive(&mut self, deadline: Option<Instant>) -> Result<Option<HostMessage>, String> {
        let mut buf = [0u8; 256];
        loop {
            if let Some(body) = self.decoder.next_body().map_err(|e| e.to_string())? {
                return decode_body::<HostMessage>(&body)
                    .map(Some)
                    .map_err(|e| e.to_string());
            }
            // Without a deadline, wake now and then to reap.
            let wait = match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    left
                }
                None => {
                    crate::power::reap_children();
                    Duration::from_secs(1)
                }
            };
            let wait_ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(self.stream.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(wait_ms)) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) => {}
                Err(e) => return Err(e.desc().to_string()),
            }
            match self.stream.read(&mut buf) {
                Ok(0) => return Err("the host closed the connection".to_string()),
                Ok(n) => self.decoder.push(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

struct ConnectFailure {
    attempts: u32,
    elapsed_ms: u128,
    last_error: String,
}

/// Connects to the host, retrying until `connect_timeout_ms`: the host side may
/// not be listening yet, and the vsock device may still be probing.
fn connect_host(settings: &Settings) -> Result<(OwnedFd, u32), ConnectFailure> {
    let start = Instant::now();
    let deadline = Duration::from_millis(settings.connect_timeout_ms);
    let mut attempts = 0u32;
    let mut pause = Duration::from_millis(5);
    loop {
        attempts += 1;
        let result = socket(
            AddressFamily::Vsock,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .and_then(|fd| {
            connect(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                &VsockAddr::new(HOST_CID, settings.port),
            )
            .map(|()| fd)
        });
        let last_error = match result {
            Ok(fd) => return Ok((fd, attempts)),
            Err(e) => format!("{e:?}: {}", e.desc()),
        };
        if start.elapsed() + pause > deadline {
            return Err(ConnectFailure {
                attempts,
                elapsed_ms: start.elapsed().as_millis(),
                last_error,
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

fn mem_total_kib() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_total_kib(&meminfo)
}

fn parse_mem_total_kib(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_is_read() {
        assert_eq!(
            parse_mem_total_kib("MemTotal:         245124 kB\nMemFree: 1 kB\n"),
            Some(245124)
        );
        assert_eq!(parse_mem_total_kib("MemFree: 1 kB\n"), None);
    }
}
