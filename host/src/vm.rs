//! One VM from start to end: its sockets, its VMM, its reports, its verdict.
//!
//! The VM's thread waits in one `poll` on everything that can happen to it —
//! a guest connection, report bytes, a boot-marker byte, the VMM's exit (a
//! pidfd), the deadline — and timestamps each event on CLOCK_MONOTONIC the
//! moment it wakes, so a VM costs vmbench no CPU while it boots.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use vmbench_proto::{
    encode_frame, GuestMessage, HostMessage, MARKER_SWITCH_ROOT, MARKER_USERSPACE_START,
};

use crate::backend::{kvm, Launcher, VmSpec, UNIX_PATH_MAX_BYTES};
use crate::collector::Session;
use crate::results::{BootMarker, GuestInfo, VmRecord, VmStatus};
use crate::systemd::SystemdRecord;
use crate::timeline::Phases;

/// CLOCK_MONOTONIC in nanoseconds: the host clock of every mark.
pub fn now_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// Connections one guest may open to the collector; the agent needs one.
const MAX_CONNECTIONS: usize = 8;

/// What a VM's progress callback is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Milestone {
    Hello,
    Ready,
}

/// Runs one VM to its end and returns its record; never panics on guest input.
pub fn run(
    spec: &VmSpec,
    backend: &Launcher,
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
    if let Err(error) = run_inner(spec, backend, &mut record, on_progress) {
        record.status = VmStatus::Failed;
        record.error = Some(error);
    }
    record
}

fn run_inner(
    spec: &VmSpec,
    backend: &Launcher,
    record: &mut VmRecord,
    on_progress: &mut dyn FnMut(&VmRecord, Milestone),
) -> Result<(), String> {
    std::fs::create_dir_all(&spec.dir)
        .map_err(|e| format!("Cannot create {}: {e}", spec.dir.display()))?;
    let vsock_listener = listen(&spec.vsock_uds())?;
    let marker_listener = listen(&spec.marker_socket())?;
    let mut helper = backend.start_helper(spec).map_err(|e| error_chain(&e))?;

    let spawn_instant = Instant::now();
    record.host_ns.spawn = Some(now_ns());
    let started = backend.start_vmm(spec).map_err(|e| error_chain(&e));
    let result = match started {
        Ok(mut vmm) => {
            let mut watch = Watch::new(spec, backend, record, on_progress);
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

fn listen(path: &Path) -> Result<UnixListener, String> {
    let len = path.as_os_str().len();
    if len > UNIX_PATH_MAX_BYTES {
        return Err(format!(
            "Socket path {} is {len} bytes, over the {UNIX_PATH_MAX_BYTES}-byte limit of Unix sockets; use a shorter --out",
            path.display()
        ));
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .map_err(|e| format!("Cannot listen on {}: {e}", path.display()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("Cannot set {} non-blocking: {e}", path.display()))?;
    Ok(listener)
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A process's exit as a pollable descriptor (pidfd_open(2), Linux 5.3+).
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags, touches no memory of ours and
    // returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is a descriptor the kernel just created for us and nothing else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The last lines of the VM's serial console, on one line.
pub fn serial_tail(spec: &VmSpec) -> String {
    let text = std::fs::read(spec.serial_log()).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    let start = lines.len().saturating_sub(6);
    if lines.is_empty() {
        "(serial log is empty)".to_string()
    } else {
        lines[start..].join(" | ")
    }
}

/// "; QEMU said: …" when the VMM printed anything, else nothing.
fn vmm_said(backend: &Launcher, spec: &VmSpec) -> String {
    let said = backend.vmm_message(spec);
    if said.is_empty() {
        String::new()
    } else {
        format!("; {} said: {said}", backend.vmm_name())
    }
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
    record: &'a mut VmRecord,
    on_progress: &'a mut dyn FnMut(&VmRecord, Milestone),
    connections: Vec<Connection>,
    marker: Option<UnixStream>,
    guest_init_ns: Option<u64>,
    guest_failure: Option<String>,
    protocol_error: Option<String>,
    /// `Ready` announced a systemd report; the Ack waits for it on this connection.
    systemd_pending: Option<usize>,
    exit: Option<ExitStatus>,
    timed_out: bool,
}

impl<'a> Watch<'a> {
    fn new(
        spec: &'a VmSpec,
        backend: &'a Launcher,
        record: &'a mut VmRecord,
        on_progress: &'a mut dyn FnMut(&VmRecord, Milestone),
    ) -> Self {
        Watch {
            spec,
            backend,
            record,
            on_progress,
            connections: Vec::new(),
            marker: None,
            guest_init_ns: None,
            guest_failure: None,
            protocol_error: None,
            systemd_pending: None,
            exit: None,
            timed_out: false,
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
        while self.exit.is_none() && self.protocol_error.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.timed_out = true;
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
            self.record.vmm_exit = self
                .backend
                .stop(vmm)
                .ok()
                .map(|s| format!("stopped by vmbench ({s})"));
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

    fn accept(&mut self, listener: &UnixListener) {
        while let Ok((stream, _)) = listener.accept() {
            if self.connections.len() >= MAX_CONNECTIONS {
                self.protocol_error.get_or_insert(format!(
                    "Guest opened more than {MAX_CONNECTIONS} connections to the host"
                ));
                return;
            }
            let _ = stream.set_nonblocking(true);
            self.connections.push(Connection {
                stream,
                session: Session::new(),
                open: true,
            });
        }
    }

    fn read_markers(&mut self, ts: u64) {
        let Some(stream) = self.marker.as_mut() else {
            return;
        };
        let mut buf = [0u8; 64];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => {
                    self.marker = None;
                    return;
                }
                Ok(n) => {
                    // Only Cloud Hypervisor's boot-marker ranges count: other
                    // port-0x80 writes (a kernel's io_delay) are not marks.
                    for &code in buf[..n].iter().filter(|c| (0x40..=0x7f).contains(*c)) {
                        self.record
                            .boot_markers
                            .push(BootMarker { code, host_ns: ts });
                        if code == MARKER_USERSPACE_START
                            && self.record.host_ns.init_start.is_none()
                        {
                            self.record.host_ns.init_start = Some(ts);
                        }
                        if code == MARKER_SWITCH_ROOT && self.record.host_ns.switch_root.is_none() {
                            self.record.host_ns.switch_root = Some(ts);
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    fn read_connection(&mut self, index: usize, ts: u64) {
        let mut buf = [0u8; 4096];
        loop {
            let conn = &mut self.connections[index];
            if !conn.open {
                return;
            }
            let result = match conn.stream.read(&mut buf) {
                Ok(0) => {
                    conn.open = false;
                    conn.session.end().map(|()| Vec::new())
                }
                Ok(n) => conn.session.feed(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => {
                    conn.open = false;
                    return;
                }
            };
            match result {
                Ok(messages) => {
                    for message in messages {
                        self.on_message(index, message, ts);
                    }
                }
                Err(e) => {
                    self.connections[index].open = false;
                    self.protocol_error.get_or_insert(e.to_string());
                    return;
                }
            }
        }
    }

    fn on_message(&mut self, index: usize, message: GuestMessage, ts: u64) {
        match message {
            GuestMessage::Hello(hello) => {
                self.record.host_ns.hello.get_or_insert(ts);
                self.guest_init_ns = Some(hello.boottime_at_init_ns);
                self.record.guest = Some(GuestInfo {
                    proto_version: hello.proto_version,
                    agent_version: hello.agent_version,
                    kernel_release: hello.kernel_release,
                    cpus: hello.cpus,
                    mem_total_kib: hello.mem_total_kib,
                });
                self.update_phases();
                (self.on_progress)(self.record, Milestone::Hello);
            }
            GuestMessage::Ready(marks) => {
                self.record.host_ns.ready.get_or_insert(ts);
                let systemd_follows = marks.systemd_follows;
                self.record.guest_ns = Some(marks);
                if systemd_follows {
                    // The report is not whole yet: the Ack waits for it.
                    self.systemd_pending = Some(index);
                } else {
                    self.record.host_ns.reported.get_or_insert(ts);
                    self.acknowledge(index);
                }
                self.update_phases();
                (self.on_progress)(self.record, Milestone::Ready);
            }
            GuestMessage::Systemd(report) => {
                if self.systemd_pending != Some(index) {
                    self.connections[index].open = false;
                    self.protocol_error.get_or_insert(
                        "Guest sent a systemd report that its Ready did not announce".into(),
                    );
                    return;
                }
                self.systemd_pending = None;
                self.record.host_ns.reported.get_or_insert(ts);
                let record = SystemdRecord::from_report(report);
                if record.agrees_with_analyze == Some(false) {
                    let why = crate::systemd::check_against_analyze(
                        &record.phases_ms,
                        &record.analyze_time,
                    )
                    .err()
                    .unwrap_or_default();
                    self.record.warnings.push(format!(
                        "vmbench's reading of systemd's timestamps disagrees with systemd-analyze time in the guest: {why}"
                    ));
                }
                if !record.failed_units.is_empty() {
                    self.record.warnings.push(format!(
                        "The guest's boot ended {} with failed units: {}",
                        record.system_state,
                        record.failed_units.join(", ")
                    ));
                }
                for problem in &record.problems {
                    self.record.warnings.push(format!(
                        "The agent could not gather from systemd: {problem}"
                    ));
                }
                self.record.systemd = Some(record);
                self.acknowledge(index);
            }
            GuestMessage::Failed { what } => {
                self.guest_failure.get_or_insert(what);
            }
        }
    }

    /// Tells the guest its report is recorded (it powers off on this).
    fn acknowledge(&mut self, index: usize) {
        let ack = encode_frame(&HostMessage::Ack).expect("Ack encodes");
        // A few bytes into an empty socket buffer: this does not block.
        let stream = &mut self.connections[index].stream;
        if let Err(e) = stream.write_all(&ack) {
            self.record
                .warnings
                .push(format!("Could not acknowledge the report: {e}"));
        }
    }

    /// The kvm backend's account: the first KVM_RUN (the `vmm` phase ends
    /// there) and every exit. Its boot marks replace the ones forwarded
    /// through the marker socket: the VMM took them at the exit itself, the
    /// collector only when the byte arrived.
    fn read_vmm_account(&mut self) {
        match kvm::read_account(&self.spec.dir) {
            Ok(report) => {
                self.record.host_ns.vmm_ready = report.first_run_ns;
                if !report.boot_markers.is_empty() {
                    self.record.boot_markers = report
                        .boot_markers
                        .iter()
                        .map(|&(code, host_ns)| BootMarker { code, host_ns })
                        .collect();
                    let first = |wanted: u8| {
                        report
                            .boot_markers
                            .iter()
                            .find(|(code, _)| *code == wanted)
                            .map(|&(_, at)| at)
                    };
                    if let Some(at) = first(MARKER_USERSPACE_START) {
                        self.record.host_ns.init_start = Some(at);
                    }
                    if let Some(at) = first(MARKER_SWITCH_ROOT) {
                        self.record.host_ns.switch_root = Some(at);
                    }
                }
                self.record.exits = Some(report);
            }
            Err(e) => self
                .record
                .warnings
                .push(format!("No account of the VM's exits: {e}")),
        }
    }

    fn update_phases(&mut self) {
        self.record.phases_ms = Phases::derive(
            &self.record.host_ns,
            self.guest_init_ns,
            self.record.guest_ns.as_ref(),
        );
    }

    /// The VM's verdict, from everything seen.
    fn conclude(&mut self) {
        self.update_phases();
        let ready = self.record.host_ns.ready.is_some();
        let timeout_s = self.spec.timeout.as_secs_f64();
        let (status, error) = if let Some(e) = self.protocol_error.take() {
            (VmStatus::ProtocolError, Some(e))
        } else if let Some(what) = self.guest_failure.take() {
            (
                VmStatus::Failed,
                Some(format!("The guest agent failed: {what}")),
            )
        } else if self.timed_out {
            let what = if ready {
                format!("The guest reported ready but did not power off within {timeout_s} s")
            } else if self.record.host_ns.hello.is_some() {
                format!(
                    "The guest said Hello but not Ready within {timeout_s} s; serial log ends: {}",
                    serial_tail(self.spec)
                )
            } else {
                format!(
                    "No report from the guest within {timeout_s} s{}; serial log ends: {}",
                    vmm_said(self.backend, self.spec),
                    serial_tail(self.spec)
                )
            };
            (VmStatus::Timeout, Some(what))
        } else if !ready {
            let status = self.record.vmm_exit.clone().unwrap_or_default();
            let said = vmm_said(self.backend, self.spec);
            (
                VmStatus::Failed,
                Some(format!(
                    "{} exited ({status}) before the guest reported ready{said}; serial log ends: {}",
                    self.backend.vmm_name(),
                    serial_tail(self.spec)
                )),
            )
        } else {
            if let Some(status) = self.exit.filter(|s| !s.success()) {
                self.record.warnings.push(format!(
                    "{} exited with {status} after the guest was ready",
                    self.backend.vmm_name()
                ));
            }
            (VmStatus::Ok, None)
        };
        if let Some(warning) = self.record.phases_ms.disagreement() {
            self.record.warnings.push(warning);
        }
        if self.systemd_pending.take().is_some() {
            self.record
                .warnings
                .push("The guest announced a systemd report but it never arrived".to_string());
        }
        self.record.status = status;
        self.record.error = error;
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
    use std::path::PathBuf;
    use std::process::Command;

    use vmbench_proto::{decode_body, FrameDecoder, GuestMarks, Hello, PROTO_VERSION};

    use super::*;
    use crate::backend::Accel;

    fn spec(dir: &Path, timeout: Duration) -> VmSpec {
        VmSpec {
            id: 0,
            dir: dir.to_path_buf(),
            kernel: PathBuf::from("/unused"),
            initramfs: Some(PathBuf::from("/unused")),
            cmdline: String::new(),
            mem_mib: 64,
            vcpus: 1,
            accel: Accel::Tcg,
            port: 1234,
            timeout,
            entry: None,
            disks: Vec::new(),
        }
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
        Watch::new(&spec, launcher, &mut record, &mut on_progress)
            .run(&mut child, &vsock, &marker, deadline);
        (record, guest.join().unwrap())
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
        let launcher = Launcher::Kvm(kvm::KvmVmm {
            vmbench: PathBuf::from("/unused"),
        });
        let (record, (first_run, marked)) = watch_with(
            &launcher,
            Command::new("sleep").arg("1"),
            Duration::from_secs(10),
            |uds| {
                let dir = uds.parent().unwrap().to_path_buf();
                let first_run = now_ns();
                let marked = first_run + 1_000_000;
                let report = Account {
                    schema_version: account::SCHEMA_VERSION,
                    end: End::Reset,
                    ended_by_vcpu: Some(0),
                    guest_said: None,
                    entry: "pvh".into(),
                    first_run_ns: Some(first_run),
                    end_ns: marked + 2_000_000,
                    vcpus: vec![],
                    devices: Default::default(),
                    boot_markers: vec![(MARKER_USERSPACE_START, marked), (0x61, marked + 10)],
                    unclaimed_ports: Default::default(),
                    unclaimed_mmio: Default::default(),
                    virtio_bad_accesses: 0,
                    memory: MemoryUse::default(),
                };
                account::write(&dir, &report).unwrap();
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
        let (record, (early, ack)) = watch(
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
                s.write_all(&frame(&GuestMessage::Systemd(systemd_report())))
                    .unwrap();
                (early, host_reply(&mut s, Duration::from_secs(5)))
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
        assert!(
            h.ready.unwrap() + 250_000_000 <= h.reported.unwrap(),
            "reported when the systemd report came, 300 ms after Ready: {h:?}"
        );
        assert!(h.reported < h.exit);
        assert!(record.warnings.is_empty(), "{:?}", record.warnings);
    }

    #[test]
    fn an_unannounced_systemd_report_is_a_protocol_error() {
        let (record, ()) = watch(
            Command::new("sleep").arg("30"),
            Duration::from_secs(20),
            |uds| {
                let mut s = UnixStream::connect(uds).unwrap();
                s.write_all(&frame(&hello())).unwrap();
                s.write_all(&frame(&GuestMessage::Systemd(systemd_report())))
                    .unwrap();
            },
        );
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
        let started = Instant::now();
        let (record, ()) = watch(
            Command::new("sleep").arg("30"),
            Duration::from_secs(20),
            |uds| {
                let mut s = UnixStream::connect(uds).unwrap();
                s.write_all(b"\x03\x00\x00\x00\xff\xff\xff").unwrap();
            },
        );
        assert_eq!(record.status, VmStatus::ProtocolError, "{record:?}");
        assert!(
            record.error.as_deref().unwrap().contains("invalid frame"),
            "{record:?}"
        );
        assert!(
            record
                .vmm_exit
                .as_deref()
                .unwrap()
                .starts_with("stopped by vmbench"),
            "{record:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the VM was not ended at once"
        );
    }

    #[test]
    fn oversized_frame_from_the_guest_is_a_protocol_error() {
        let (record, ()) = watch(
            Command::new("sleep").arg("30"),
            Duration::from_secs(20),
            |uds| {
                let mut s = UnixStream::connect(uds).unwrap();
                s.write_all(&u32::MAX.to_le_bytes()).unwrap();
            },
        );
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

    #[test]
    fn boot_markers_are_timestamped_and_io_delay_noise_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(dir.path(), Duration::from_secs(10));
        let vsock = listen(&spec.vsock_uds()).unwrap();
        let marker = listen(&spec.marker_socket()).unwrap();
        let path = spec.marker_socket();
        let mut child = Command::new("sleep").arg("2").spawn().unwrap();
        let writer = std::thread::spawn(move || {
            let mut s = UnixStream::connect(path).unwrap();
            s.write_all(&[0xff, MARKER_USERSPACE_START, 0x00, 0x61])
                .unwrap();
        });
        let mut record = VmRecord::new(0, dir.path());
        let mut on_progress = |_: &VmRecord, _| {};
        let deadline = Instant::now() + spec.timeout;
        Watch::new(&spec, &fake_launcher(), &mut record, &mut on_progress)
            .run(&mut child, &vsock, &marker, deadline);
        writer.join().unwrap();
        let codes: Vec<u8> = record.boot_markers.iter().map(|m| m.code).collect();
        assert_eq!(codes, [MARKER_USERSPACE_START, 0x61]);
        assert_eq!(
            record.host_ns.init_start,
            Some(record.boot_markers[0].host_ns)
        );
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
