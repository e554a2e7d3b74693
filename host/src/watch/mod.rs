//! One VM from start to end: its sockets, its VMM, its reports, its verdict.
//!
//! The VM's thread waits in one `poll` on everything that can happen to it —
//! a guest connection, report bytes, a boot-marker byte, the VMM's exit (a
//! pidfd), the deadline — and timestamps each event on CLOCK_MONOTONIC the
//! moment it wakes, so a VM costs vmbench no CPU while it boots.
//!
//! - `sockets`: the listeners and the VMM's pidfd;
//! - `messages`: what arrives on them ([`collector`] judges the report bytes);
//! - `verdict`: the VM's phases, status, error and warnings at the end.

mod bench;
pub mod collector;
mod messages;
mod sockets;
mod verdict;

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use vmbench_vmm::devices::marker::MarkStream;

use crate::backend::{Launcher, VmSpec};
use crate::bench::plan::VmBench;
use crate::clock::now_ns;
use crate::error_line::one_line;
use crate::interrupt::Stop;
use crate::results::{VmRecord, VmStatus};
use collector::Session;
pub use sockets::listen;
use sockets::pidfd_open;

/// Connections one guest may open to the collector; the agent needs one.
const MAX_CONNECTIONS: usize = 8;

/// What a VM's progress callback is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Milestone {
    Hello,
    Ready,
    /// `vmbench bench`: the result of the VM's benchmark at this index
    /// (in `benchmarks`) came in.
    Benchmark(usize),
}

/// Runs one VM to its end (or until `stop` is requested) and returns its
/// record; never panics on guest input.
pub fn run(
    spec: &VmSpec,
    backend: &Launcher,
    stop: &Stop,
    bench: Option<&VmBench>,
    on_progress: &mut dyn FnMut(&VmRecord, Milestone),
) -> VmRecord {
    let mut record = VmRecord::new(spec.id, &spec.dir);
    record.backend = backend.name().to_string();
    record.accel = match backend {
        Launcher::Kvm(_) => crate::backend::Accel::Kvm {
            native: matches!(spec.accel, crate::backend::Accel::Kvm { native: true }),
        }
        .label()
        .to_string(),
        Launcher::Qemu(_) => spec.accel.label().to_string(),
    };
    if let Some(bench) = bench {
        crate::bench::prepare_record(&mut record, bench);
    }
    if let Err(error) = run_inner(spec, backend, stop, bench, &mut record, on_progress) {
        record.status = VmStatus::Failed;
        crate::bench::mark_unrun(
            &mut record.benchmarks,
            &format!("the VM did not start: {error}"),
        );
        record.error = Some(error);
    }
    record
}

fn run_inner(
    spec: &VmSpec,
    backend: &Launcher,
    stop: &Stop,
    bench: Option<&VmBench>,
    record: &mut VmRecord,
    on_progress: &mut dyn FnMut(&VmRecord, Milestone),
) -> Result<(), String> {
    std::fs::create_dir_all(&spec.dir)
        .map_err(|e| format!("Cannot create {}: {e}", spec.dir.display()))?;
    let vsock_listener = listen(&spec.vsock_uds())?;
    let marker_listener = listen(&spec.marker_socket())?;
    // The far end of the guest's vsock benchmarks, before the guest can look for it.
    let _endpoints = match bench.filter(|b| b.suite.runs_linux()) {
        Some(b) => Some(crate::bench::endpoints::Endpoints::serve(
            &spec.dir.join(format!(
                "{}_{}",
                crate::backend::VSOCK_UDS_BASE,
                b.endpoint_port
            )),
            b.pair.as_ref().map(|p| {
                let side = if p.is_peer {
                    crate::bench::relay::Side::Peer
                } else {
                    crate::bench::relay::Side::Measures
                };
                (std::sync::Arc::clone(&p.relay), side)
            }),
        )?),
        None => None,
    };
    let mut helper = backend.start_helper(spec).map_err(|e| one_line(&e))?;

    let spawn_instant = Instant::now();
    record.host_ns.spawn = Some(now_ns());
    let started = backend.start_vmm(spec).map_err(|e| one_line(&e));
    let result = match started {
        Ok(mut vmm) => {
            let mut watch = Watch::new(spec, backend, stop, record, on_progress);
            watch.bench = bench.map(bench::BenchWatch::new);
            watch.run(
                &mut vmm,
                &vsock_listener,
                &marker_listener,
                spawn_instant + spec.timeout,
            );
            Ok(())
        }
        Err(e) => Err(e),
    };
    if let Some(helper) = helper.as_mut() {
        let _ = helper.kill();
        let _ = helper.wait();
    }
    for socket in [spec.vsock_uds(), spec.marker_socket()]
        .into_iter()
        .chain(backend.sockets(spec))
    {
        let _ = std::fs::remove_file(socket);
    }
    result
}

struct Connection {
    stream: UnixStream,
    session: Session,
    open: bool,
}

/// The state of one VM's watch.
struct Watch<'a> {
    spec: &'a VmSpec,
    backend: &'a Launcher,
    stop: &'a Stop,
    record: &'a mut VmRecord,
    on_progress: &'a mut dyn FnMut(&VmRecord, Milestone),
    connections: Vec<Connection>,
    marker: Option<UnixStream>,
    /// Tells boot marks from benchmark windows' marks in the marker
    /// stream (QEMU's debugcon forwards every byte written to port 0x80).
    mark_stream: MarkStream,
    guest_init_ns: Option<u64>,
    guest_failure: Option<String>,
    protocol_error: Option<String>,
    /// `Ready` announced a systemd report; the Ack waits for it on this connection.
    systemd_pending: Option<usize>,
    exit: Option<ExitStatus>,
    timed_out: bool,
    /// The signal that stopped the run before this VM ended.
    interrupted: Option<i32>,
    /// Bytes read from one socket per wake, at most ([`messages::READ_BUDGET_BYTES`]).
    read_budget_bytes: usize,
    /// When the VM is given up on: its timeout from spawn, then (`vmbench
    /// bench`) each benchmark's, then its shutdown's.
    deadline: Instant,
    /// `vmbench bench`: the VM's benchmarks and where they are.
    bench: Option<bench::BenchWatch<'a>>,
}

impl<'a> Watch<'a> {
    fn new(
        spec: &'a VmSpec,
        backend: &'a Launcher,
        stop: &'a Stop,
        record: &'a mut VmRecord,
        on_progress: &'a mut dyn FnMut(&VmRecord, Milestone),
    ) -> Self {
        Watch {
            spec,
            backend,
            stop,
            record,
            on_progress,
            connections: Vec::new(),
            marker: None,
            mark_stream: MarkStream::default(),
            guest_init_ns: None,
            guest_failure: None,
            protocol_error: None,
            systemd_pending: None,
            exit: None,
            timed_out: false,
            interrupted: None,
            read_budget_bytes: messages::READ_BUDGET_BYTES,
            deadline: Instant::now() + spec.timeout,
            bench: None,
        }
    }

    fn run(
        &mut self,
        vmm: &mut Child,
        vsock: &UnixListener,
        marker: &UnixListener,
        deadline: Instant,
    ) {
        let pidfd = pidfd_open(vmm.id());
        self.deadline = deadline;
        self.start_vmexit_progress(deadline);
        while self.exit.is_none() && self.protocol_error.is_none() {
            if let Some(signal) = self.stop.requested() {
                self.interrupted = Some(signal);
                break;
            }
            self.follow_vmexit_progress();
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                if !self.benchmark_hung() {
                    self.timed_out = true;
                }
                break;
            }
            // Without a pidfd, the exit is noticed by polling try_wait every 10 ms.
            let cap = if pidfd.is_some() {
                Duration::from_secs(1)
            } else {
                Duration::from_millis(10)
            };
            let wait_ms = left.min(cap).as_millis().max(1) as u16;
            let ready = self.wait(vsock, marker, pidfd.as_ref().map(|f| f.as_fd()), wait_ms);
            let ts = now_ns();
            if ready.vsock_listener {
                self.accept(vsock);
            }
            if ready.marker_listener {
                // The VMM's connection is the one that counts; any later one is
                // dropped (left pending, it would keep poll awake forever).
                while let Ok((stream, _)) = marker.accept() {
                    if self.marker.is_none() {
                        let _ = stream.set_nonblocking(true);
                        self.marker = Some(stream);
                    }
                }
            }
            if ready.marker {
                self.read_markers(ts);
            }
            for index in ready.connections {
                self.read_connection(index, ts);
            }
            if pidfd.is_none() || ready.exited {
                if let Ok(Some(status)) = vmm.try_wait() {
                    self.record.host_ns.exit = Some(ts);
                    self.exit = Some(status);
                }
            }
        }
        // Reports the guest sent just before its VMM ended are still in the sockets.
        self.accept(vsock);
        for index in 0..self.connections.len() {
            self.read_connection(index, now_ns());
        }
        self.read_markers(now_ns());
        if self.exit.is_none() {
            let why = match (self.interrupted, self.hung_in()) {
                (Some(signal), _) => format!(" on {}", crate::interrupt::name(signal)),
                (None, Some(name)) => format!(" after benchmark {name} hung"),
                (None, None) => String::new(),
            };
            self.record.vmm_exit = self
                .backend
                .stop(vmm, self.stop)
                .ok()
                .map(|s| format!("stopped by vmbench{why} ({s})"));
        } else {
            self.record.vmm_exit = self.exit.map(|s| s.to_string());
        }
        if let Launcher::Kvm(_) = self.backend {
            self.read_vmm_account();
        }
        self.conclude();
    }

    fn wait(
        &self,
        vsock: &UnixListener,
        marker: &UnixListener,
        pidfd: Option<BorrowedFd<'_>>,
        wait_ms: u16,
    ) -> Ready {
        let mut fds = vec![
            PollFd::new(vsock.as_fd(), PollFlags::POLLIN),
            PollFd::new(marker.as_fd(), PollFlags::POLLIN),
            // Readable once the run is asked to stop; the loop then leaves.
            PollFd::new(self.stop.wake_fd(), PollFlags::POLLIN),
        ];
        let marker_at = self.marker.as_ref().map(|m| {
            fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let pidfd_at = pidfd.map(|fd| {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
            fds.len() - 1
        });
        let first_conn = fds.len();
        let open: Vec<usize> = (0..self.connections.len())
            .filter(|&i| self.connections[i].open)
            .collect();
        for &i in &open {
            fds.push(PollFd::new(
                self.connections[i].stream.as_fd(),
                PollFlags::POLLIN,
            ));
        }
        if poll(&mut fds, PollTimeout::from(wait_ms)).is_err() {
            return Ready::default();
        }
        let is = |at: usize| fds[at].revents().is_some_and(|r| !r.is_empty());
        Ready {
            vsock_listener: is(0),
            marker_listener: is(1),
            marker: marker_at.is_some_and(is),
            exited: pidfd_at.is_some_and(is),
            connections: open
                .iter()
                .enumerate()
                .filter(|(k, _)| is(first_conn + k))
                .map(|(_, &i)| i)
                .collect(),
        }
    }
}

#[derive(Debug, Default)]
struct Ready {
    vsock_listener: bool,
    marker_listener: bool,
    marker: bool,
    exited: bool,
    connections: Vec<usize>,
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use vmbench_proto::{
        decode_body, encode_frame, FrameDecoder, GuestMarks, GuestMessage, Hello, HostMessage,
        MARKER_USERSPACE_START, PROTO_VERSION,
    };

    use super::*;
    use crate::backend::kvm;

    fn spec(dir: &Path, timeout: Duration) -> VmSpec {
        VmSpec {
            mem_mib: 64,
            timeout,
            ..VmSpec::for_test(0, dir)
        }
    }

    #[test]
    fn the_agent_and_the_vmm_agree_on_the_window_codes() {
        use vmbench_vmm::devices::marker::{WINDOW_END, WINDOW_START};
        assert_eq!(vmbench_proto::MARKER_WINDOW_START, WINDOW_START);
        assert_eq!(vmbench_proto::MARKER_WINDOW_END, WINDOW_END);
    }

    /// The watch loop only asks a launcher for names, messages and how to stop.
    fn fake_launcher() -> Launcher {
        Launcher::Qemu(crate::backend::qemu::Qemu {
            qemu: PathBuf::from("/unused"),
            vhost_device_vsock: PathBuf::from("/unused"),
        })
    }

    /// Runs the real watch loop with `vmm` standing in for QEMU and `guest`
    /// (on its own thread) standing in for the agent.
    fn watch<T: Send + 'static>(
        vmm: &mut Command,
        timeout: Duration,
        guest: impl FnOnce(PathBuf) -> T + Send + 'static,
    ) -> (VmRecord, T) {
        watch_with(&fake_launcher(), vmm, timeout, guest)
    }

    fn watch_with<T: Send + 'static>(
        launcher: &Launcher,
        vmm: &mut Command,
        timeout: Duration,
        guest: impl FnOnce(PathBuf) -> T + Send + 'static,
    ) -> (VmRecord, T) {
        watch_until(&Stop::new().unwrap(), launcher, vmm, timeout, guest)
    }

    /// [`watch_with`], with the run's stop request.
    fn watch_until<T: Send + 'static>(
        stop: &Stop,
        launcher: &Launcher,
        vmm: &mut Command,
        timeout: Duration,
        guest: impl FnOnce(PathBuf) -> T + Send + 'static,
    ) -> (VmRecord, T) {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(dir.path(), timeout);
        std::fs::write(
            spec.serial_log(),
            "[    0.1] Linux version 6.1\n[    0.5] Run /init as init process\n",
        )
        .unwrap();
        let vsock = listen(&spec.vsock_uds()).unwrap();
        let marker = listen(&spec.marker_socket()).unwrap();
        let mut child = vmm.spawn().unwrap();
        let uds = spec.vsock_uds();
        let guest = std::thread::spawn(move || guest(uds));
        let mut record = VmRecord::new(0, dir.path());
        record.host_ns.spawn = Some(now_ns());
        let mut on_progress = |_: &VmRecord, _| {};
        let deadline = Instant::now() + timeout;
        Watch::new(&spec, launcher, stop, &mut record, &mut on_progress)
            .run(&mut child, &vsock, &marker, deadline);
        (record, guest.join().unwrap())
    }

    #[test]
    fn a_stop_request_stops_the_vm_and_records_it_interrupted() {
        let stop = std::sync::Arc::new(Stop::new().unwrap());
        let asker = std::sync::Arc::clone(&stop);
        let (record, ()) = watch_until(
            &stop,
            &fake_launcher(),
            Command::new("sleep").arg("30"),
            Duration::from_secs(20),
            move |uds| {
                let mut s = UnixStream::connect(uds).unwrap();
                s.write_all(&frame(&hello())).unwrap();
                asker.request(libc::SIGINT);
            },
        );
        assert_eq!(record.status, VmStatus::Interrupted);
        let error = record.error.unwrap();
        assert!(error.contains("interrupted by SIGINT"), "{error}");
        assert!(error.contains("said Hello, not Ready"), "{error}");
        assert!(
            record.host_ns.hello.is_some(),
            "what it had reported is kept"
        );
        let vmm_exit = record.vmm_exit.unwrap();
        assert!(
            vmm_exit.contains("stopped by vmbench on SIGINT"),
            "{vmm_exit}"
        );
    }

    /// The watch of a VMM that would run for 30 s, whose guest connects
    /// and sends `bytes`. Its timeout is longer than that: a VMM that
    /// vmbench stopped was stopped for what the guest sent.
    fn guest_sends(bytes: Vec<u8>) -> VmRecord {
        let (record, ()) = watch(
            Command::new("sleep").arg("30"),
            Duration::from_secs(60),
            move |uds| {
                let mut s = UnixStream::connect(uds).unwrap();
                s.write_all(&bytes).unwrap();
            },
        );
        record
    }

    fn frame(message: &GuestMessage) -> Vec<u8> {
        encode_frame(message).unwrap()
    }

    fn hello() -> GuestMessage {
        GuestMessage::Hello(Hello {
            proto_version: PROTO_VERSION,
            agent_version: "test".into(),
            vm_id: 0,
            kernel_release: "6.1.0-test".into(),
            cpus: 1,
            mem_total_kib: 60_000,
            boottime_at_init_ns: 500_000_000,
        })
    }

    /// What a well-behaved agent sends: Hello, then Ready 10 ms after PID 1 began.
    fn say_hello_and_ready(s: &mut UnixStream) {
        s.write_all(&frame(&hello())).unwrap();
        let marks = GuestMarks {
            init_ns: 500_000_000,
            ready_ns: 510_000_000,
            ..GuestMarks::default()
        };
        s.write_all(&frame(&GuestMessage::Ready(marks))).unwrap();
    }

    #[test]
    fn good_report_is_acknowledged_and_ok() {
        let (record, got_ack) = watch(
            Command::new("sleep").arg("2"),
            Duration::from_secs(10),
            |uds| {
                let mut s = UnixStream::connect(uds).unwrap();
                say_hello_and_ready(&mut s);
                let mut dec = FrameDecoder::new();
                let mut buf = [0u8; 16];
                loop {
                    let n = s.read(&mut buf).unwrap();
                    dec.push(&buf[..n]);
                    if let Some(body) = dec.next_body().unwrap() {
                        return decode_body::<HostMessage>(&body).unwrap();
                    }
                }
            },
        );
        assert_eq!(got_ack, HostMessage::Ack);
        assert_eq!(record.status, VmStatus::Ok, "{record:?}");
        assert_eq!(record.guest.as_ref().unwrap().kernel_release, "6.1.0-test");
        let h = record.host_ns;
        assert!(
            h.spawn < h.hello && h.hello <= h.ready && h.ready < h.exit,
            "{h:?}"
        );
        assert_eq!(record.phases_ms.guest_kernel, Some(500.0));
        assert_eq!(record.phases_ms.guest_userspace, Some(10.0));
        assert!(record.phases_ms.shutdown.unwrap() > 0.0);
    }

    #[test]
    fn kvm_backend_takes_the_vmms_own_marks() {
        use vmbench_vmm::account::{self, Account, End, MemoryUse};
        let launcher = Launcher::Kvm(kvm::KvmVmm::for_vmbench(PathBuf::from("/unused")));
        let (record, (first_run, marked)) = watch_with(
            &launcher,
            Command::new("sleep").arg("1"),
            Duration::from_secs(10),
            |uds| {
                let dir = uds.parent().unwrap().to_path_buf();
                let first_run = now_ns();
                let marked = first_run + 1_000_000;
                let account_written = Account {
                    schema_version: account::SCHEMA_VERSION,
                    end: End::Reset,
                    ended_by_vcpu: Some(0),
                    guest_said: None,
                    entry: "pvh".into(),
                    first_run_ns: Some(first_run),
                    end_ns: marked + 2_000_000,
                    vcpus: vec![],
                    devices: Default::default(),
                    console_marks: Default::default(),
                    boot_markers: vec![(MARKER_USERSPACE_START, marked), (0x61, marked + 10)],
                    boot_markers_not_kept: 0,
                    boot_markers_not_forwarded: 0,
                    unclaimed_ports: Default::default(),
                    unclaimed_ports_other: 0,
                    unclaimed_mmio: Default::default(),
                    unclaimed_mmio_other: 0,
                    virtio_bad_accesses: 0,
                    serial_log_bytes_dropped: 0,
                    memory: MemoryUse::default(),
                    seccomp: true,
                    emulated_kvm: None,
                    windows: Vec::new(),
                    windows_not_kept: 0,
                    windows_restarted: 0,
                    window_ends_unmatched: 0,
                };
                account::write(&dir, &account_written).unwrap();
                // The same marker, forwarded later through the socket.
                std::thread::sleep(Duration::from_millis(50));
                let mut m = UnixStream::connect(dir.join("marker.sock")).unwrap();
                m.write_all(&[MARKER_USERSPACE_START]).unwrap();
                let mut s = UnixStream::connect(uds).unwrap();
                say_hello_and_ready(&mut s);
                (first_run, marked)
            },
        );
        assert_eq!(record.status, VmStatus::Ok, "{record:?}");
        assert_eq!(record.host_ns.vmm_ready, Some(first_run));
        assert_eq!(
            record.host_ns.init_start,
            Some(marked),
            "the VMM's exit time"
        );
        assert_eq!(record.phases_ms.kernel, Some(1.0));
        let codes: Vec<(u8, u64)> = record
            .boot_markers
            .iter()
            .map(|m| (m.code, m.host_ns))
            .collect();
        assert_eq!(
            codes,
            [(MARKER_USERSPACE_START, marked), (0x61, marked + 10)]
        );
        assert!(record.exits.is_some());
    }

    /// Reads frames from the host until one arrives or `wait` passes.
    fn host_reply(s: &mut UnixStream, wait: Duration) -> Option<HostMessage> {
        s.set_read_timeout(Some(wait)).unwrap();
        let mut dec = FrameDecoder::new();
        let mut buf = [0u8; 16];
        loop {
            let n = match s.read(&mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => n,
            };
            dec.push(&buf[..n]);
            if let Some(body) = dec.next_body().unwrap() {
                return Some(decode_body::<HostMessage>(&body).unwrap());
            }
        }
    }

    fn systemd_report() -> vmbench_proto::SystemdReport {
        use vmbench_proto::{SystemdTimestamps, UnitTimes};
        vmbench_proto::SystemdReport {
            version: "252".into(),
            timestamps: SystemdTimestamps {
                userspace_us: 1_000_000,
                finish_us: 4_000_000,
                ..SystemdTimestamps::default()
            },
            units: vec![UnitTimes {
                id: "multi-user.target".into(),
                activating_us: 3_900_000,
                active_us: 3_950_000,
                ..UnitTimes::default()
            }],
            default_target: "multi-user.target".into(),
            system_state: "running".into(),
            failed_units: vec![],
            analyze_time: "Startup finished in 1.000s (kernel) + 3.000s (userspace) = 4.000s\n\
                           multi-user.target reached after 2.950s in userspace.\n"
                .into(),
            problems: vec![],
        }
    }

    #[test]
    fn a_systemd_report_completes_the_report_before_the_ack() {
        let (record, (early, ack, sent_ns)) = watch(
            Command::new("sleep").arg("2"),
            Duration::from_secs(10),
            |uds| {
                let mut s = UnixStream::connect(uds).unwrap();
                s.write_all(&frame(&hello())).unwrap();
                let marks = GuestMarks {
                    init_ns: 500_000_000,
                    switch_root_ns: 520_000_000,
                    ready_ns: 3_500_000_000,
                    systemd_follows: true,
                    ..GuestMarks::default()
                };
                s.write_all(&frame(&GuestMessage::Ready(marks))).unwrap();
                let early = host_reply(&mut s, Duration::from_millis(300));
                let sent_ns = now_ns();
                s.write_all(&frame(&GuestMessage::Systemd(systemd_report())))
                    .unwrap();
                (early, host_reply(&mut s, Duration::from_secs(5)), sent_ns)
            },
        );
        assert_eq!(early, None, "no Ack before the announced systemd report");
        assert_eq!(ack, Some(HostMessage::Ack));
        assert_eq!(record.status, VmStatus::Ok, "{record:?}");
        let systemd = record.systemd.as_ref().unwrap();
        assert_eq!(systemd.phases_ms.kernel, Some(1000.0));
        assert_eq!(systemd.phases_ms.userspace, Some(3000.0));
        assert_eq!(systemd.agrees_with_analyze, Some(true));
        assert_eq!(record.phases_ms.guest_initrd, Some(20.0));
        let h = record.host_ns;
        // `reported` is when the systemd report came: it cannot be stamped
        // before the report was sent (Ready's stamp normally is).
        assert!(
            h.ready <= h.reported && h.reported >= Some(sent_ns),
            "reported before the systemd report was sent at {sent_ns}: {h:?}"
        );
        assert!(h.reported < h.exit);
        assert!(record.warnings.is_empty(), "{:?}", record.warnings);
    }

    #[test]
    fn an_unannounced_systemd_report_is_a_protocol_error() {
        let mut bytes = frame(&hello());
        bytes.extend(frame(&GuestMessage::Systemd(systemd_report())));
        let record = guest_sends(bytes);
        assert_eq!(record.status, VmStatus::ProtocolError, "{record:?}");
        assert!(record.error.unwrap().contains("did not announce"));
    }

    #[test]
    fn a_systemd_report_that_disagrees_with_systemd_analyze_is_a_warning() {
        let (record, ()) = watch(
            Command::new("sleep").arg("2"),
            Duration::from_secs(10),
            |uds| {
                let mut s = UnixStream::connect(uds).unwrap();
                s.write_all(&frame(&hello())).unwrap();
                let marks = GuestMarks {
                    systemd_follows: true,
                    ..GuestMarks::default()
                };
                s.write_all(&frame(&GuestMessage::Ready(marks))).unwrap();
                let mut report = systemd_report();
                report.analyze_time =
                    "Startup finished in 1.000s (kernel) + 9.000s (userspace) = 10.000s".into();
                s.write_all(&frame(&GuestMessage::Systemd(report))).unwrap();
                host_reply(&mut s, Duration::from_secs(5));
            },
        );
        assert_eq!(record.status, VmStatus::Ok);
        assert!(
            record
                .warnings
                .iter()
                .any(|w| w.contains("disagrees with systemd-analyze")),
            "{:?}",
            record.warnings
        );
    }

    #[test]
    fn garbage_from_the_guest_is_a_protocol_error_and_ends_the_vm() {
        let record = guest_sends(b"\x03\x00\x00\x00\xff\xff\xff".to_vec());
        assert_eq!(record.status, VmStatus::ProtocolError, "{record:?}");
        assert!(
            record.error.as_deref().unwrap().contains("invalid frame"),
            "{record:?}"
        );
        // Stopped, before both its own end (30 s) and its timeout (60 s):
        // for the garbage.
        assert!(
            record
                .vmm_exit
                .as_deref()
                .unwrap()
                .starts_with("stopped by vmbench"),
            "{record:?}"
        );
    }

    #[test]
    fn oversized_frame_from_the_guest_is_a_protocol_error() {
        let record = guest_sends(u32::MAX.to_le_bytes().to_vec());
        assert_eq!(record.status, VmStatus::ProtocolError);
        assert!(
            record
                .error
                .as_deref()
                .unwrap()
                .contains("exceeds the 1048576-byte limit"),
            "{record:?}"
        );
    }

    #[test]
    fn silent_guest_is_a_timeout_with_the_serial_tail() {
        let (record, ()) = watch(
            Command::new("sleep").arg("30"),
            Duration::from_millis(300),
            |_| {},
        );
        assert_eq!(record.status, VmStatus::Timeout);
        let error = record.error.unwrap();
        assert!(
            error.contains("No report from the guest within 0.3 s"),
            "{error}"
        );
        assert!(error.contains("Run /init as init process"), "{error}");
        assert!(record.vmm_exit.unwrap().starts_with("stopped by vmbench"));
    }

    #[test]
    fn a_vmm_its_seccomp_filter_stopped_is_failed_with_the_filters_line() {
        let launcher = Launcher::Kvm(kvm::KvmVmm::for_vmbench(PathBuf::from("/unused")));
        let line = "seccomp: syscall 59 (execve) not allowed in the vCPU thread";
        // The guest was ready: the VM still failed, its VMM having done what it never does.
        let (record, ()) = watch_with(
            &launcher,
            Command::new("sh").args(["-c", "sleep 0.5; exit 159"]),
            Duration::from_secs(10),
            move |uds| {
                let dir = uds.parent().unwrap();
                std::fs::write(dir.join("vmm.log"), format!("{line}\n")).unwrap();
                let mut s = UnixStream::connect(&uds).unwrap();
                say_hello_and_ready(&mut s);
            },
        );
        assert_eq!(record.status, VmStatus::Failed);
        let error = record.error.unwrap();
        assert!(error.contains(line), "{error}");
        assert!(
            error.contains("stopped by its seccomp filter (exit status: 159)"),
            "{error}"
        );
    }

    #[test]
    fn vmm_that_exits_before_ready_is_failed() {
        let (record, ()) = watch(
            Command::new("false").arg("x"),
            Duration::from_secs(10),
            |_| {},
        );
        assert_eq!(record.status, VmStatus::Failed);
        assert!(record
            .error
            .unwrap()
            .contains("before the guest reported ready"));
        assert!(record.host_ns.exit.is_some());
    }

    /// Runs `flood` as the guest of a VM whose VMM would run for 30 s and
    /// whose deadline is 1 s away: the guest writes without pause until the
    /// watch lets go of its socket. The watch must still reach its deadline
    /// (a hang is reported after a minute, long past it).
    fn flooded(flood: impl FnOnce(PathBuf) -> u64 + Send + 'static) -> (VmRecord, u64) {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(watch(
                Command::new("sleep").arg("30"),
                Duration::from_secs(1),
                flood,
            ));
        });
        rx.recv_timeout(Duration::from_secs(60))
            .expect("the flood kept the watch from its deadline")
    }

    /// Writes `chunk` to `stream` until the reader goes; the bytes written.
    fn write_until_closed(mut stream: UnixStream, chunk: &[u8]) -> u64 {
        let mut written = 0;
        while stream.write_all(chunk).is_ok() {
            written += chunk.len() as u64;
        }
        written
    }

    #[test]
    fn a_boot_marker_flood_is_bounded_and_cannot_hold_the_watch() {
        let (record, written) = flooded(|uds| {
            let marker = uds.with_file_name(vmbench_vmm::vm_dir::MARKER_SOCKET);
            write_until_closed(UnixStream::connect(marker).unwrap(), &[0x41; 4096])
        });
        assert_eq!(record.status, VmStatus::Timeout);
        assert_eq!(record.boot_markers.len(), crate::results::MAX_BOOT_MARKERS);
        assert!(record.boot_markers_dropped > 0);
        let seen = record.boot_markers.len() as u64 + record.boot_markers_dropped;
        assert!(seen <= written, "{seen} marks of {written} written");
    }

    #[test]
    fn a_message_flood_cannot_hold_the_watch() {
        let (record, written) = flooded(|uds| {
            let mut s = UnixStream::connect(uds).unwrap();
            s.write_all(&frame(&hello())).unwrap();
            let failed = frame(&GuestMessage::Failed {
                what: "again".into(),
            });
            write_until_closed(s, &failed.repeat(100))
        });
        assert!(written > 0);
        // The first Failed counts; the rest change nothing.
        assert_eq!(record.status, VmStatus::Failed);
        assert_eq!(
            record.error.as_deref(),
            Some("The guest agent failed: again")
        );
    }

    #[test]
    fn one_wake_reads_no_more_than_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(dir.path(), Duration::from_secs(10));
        let (mut guest, host) = UnixStream::pair().unwrap();
        host.set_nonblocking(true).unwrap();
        guest.write_all(&[0x41; 64 * 1024]).unwrap();
        let mut record = VmRecord::new(0, dir.path());
        let mut on_progress = |_: &VmRecord, _| {};
        let stop = Stop::new().unwrap();
        let launcher = fake_launcher();
        let mut watch = Watch::new(&spec, &launcher, &stop, &mut record, &mut on_progress);
        watch.marker = Some(host);
        watch.read_budget_bytes = 8 * 1024;
        watch.read_markers(1);
        let first_wake = watch.record.boot_markers.len() as u64 + watch.record.boot_markers_dropped;
        assert_eq!(first_wake, 8 * 1024, "one wake read its budget, no more");
        watch.read_markers(2);
        watch.read_markers(3);
        let kept = watch.record.boot_markers.len() as u64;
        assert_eq!(kept + watch.record.boot_markers_dropped, 24 * 1024);
        assert_eq!(kept, crate::results::MAX_BOOT_MARKERS as u64);
    }

    #[test]
    fn boot_markers_are_timestamped_and_io_delay_noise_and_windows_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(dir.path(), Duration::from_secs(10));
        let vsock = listen(&spec.vsock_uds()).unwrap();
        let marker = listen(&spec.marker_socket()).unwrap();
        let path = spec.marker_socket();
        let mut child = Command::new("sleep").arg("2").spawn().unwrap();
        let writer = std::thread::spawn(move || {
            let mut s = UnixStream::connect(path).unwrap();
            // Window 0x162 (its low id byte is the switch-root mark's code)
            // around mark 0x61: the window's bytes are no marks.
            s.write_all(&[0xff, MARKER_USERSPACE_START, 0x00, 0xb0, 0x62, 0x01])
                .unwrap();
            s.write_all(&[0x61, 0xb1, 0x62, 0x01]).unwrap();
        });
        let mut record = VmRecord::new(0, dir.path());
        let mut on_progress = |_: &VmRecord, _| {};
        let deadline = Instant::now() + spec.timeout;
        let stop = Stop::new().unwrap();
        Watch::new(
            &spec,
            &fake_launcher(),
            &stop,
            &mut record,
            &mut on_progress,
        )
        .run(&mut child, &vsock, &marker, deadline);
        writer.join().unwrap();
        let codes: Vec<u8> = record.boot_markers.iter().map(|m| m.code).collect();
        assert_eq!(codes, [MARKER_USERSPACE_START, 0x61]);
        assert_eq!(
            record.host_ns.init_start,
            Some(record.boot_markers[0].host_ns)
        );
        assert_eq!(record.host_ns.switch_root, None);
    }

    #[test]
    fn guest_opening_too_many_connections_is_a_protocol_error() {
        let (record, ()) = watch(
            Command::new("sleep").arg("30"),
            Duration::from_secs(20),
            |uds| {
                let _held: Vec<UnixStream> = (0..=MAX_CONNECTIONS)
                    .filter_map(|_| UnixStream::connect(&uds).ok())
                    .collect();
                std::thread::sleep(Duration::from_millis(300));
            },
        );
        assert_eq!(record.status, VmStatus::ProtocolError);
        assert!(record.error.unwrap().contains("more than 8 connections"));
    }

    #[test]
    fn long_socket_paths_are_refused_clearly() {
        let long = PathBuf::from(format!("/tmp/{}/vsock.sock_1234", "d".repeat(120)));
        assert!(listen(&long).unwrap_err().contains("use a shorter --out"));
    }
}
