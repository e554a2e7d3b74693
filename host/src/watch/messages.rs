//! What the watch does with what arrives: guest connections, report bytes
//! (judged by the [`Session`] of each connection), boot-marker bytes, and
//! the Ack that tells the guest its report is recorded.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixListener;

use vmbench_proto::{
    encode_frame, GuestMessage, HostMessage, SystemdReport, MARKER_SWITCH_ROOT,
    MARKER_USERSPACE_START,
};

use vmbench_vmm::devices::marker::Byte;

use super::collector::Session;
use super::{Connection, Milestone, Watch, MAX_CONNECTIONS};

/// Bytes read from one socket per wake of the watch, at most: a guest that
/// writes without pause cannot keep the watch from its poll.
pub(super) const READ_BUDGET_BYTES: usize = 1 << 20;
use crate::results::{BootMarker, GuestInfo, MAX_BOOT_MARKERS};
use crate::systemd::SystemdRecord;

impl Watch<'_> {
    pub(super) fn accept(&mut self, listener: &UnixListener) {
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

    pub(super) fn read_markers(&mut self, ts: u64) {
        let mut buf = [0u8; 4096];
        // A flooding guest keeps the socket readable: past this much, the
        // watch goes back to its poll (its deadline, its VMM, a stop).
        let mut budget = self.read_budget_bytes;
        while budget > 0 {
            let Some(stream) = self.marker.as_mut() else {
                return;
            };
            match stream.read(&mut buf) {
                Ok(0) => {
                    self.marker = None;
                    return;
                }
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    // Only Cloud Hypervisor's boot-marker ranges count: other
                    // port-0x80 writes (a kernel's io_delay, benchmark
                    // windows' marks) are not marks.
                    for &code in &buf[..n] {
                        if self.mark_stream.feed(code) == Byte::Mark {
                            self.on_mark(code, ts);
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    fn on_mark(&mut self, code: u8, ts: u64) {
        if code == MARKER_USERSPACE_START && self.record.host_ns.init_start.is_none() {
            self.record.host_ns.init_start = Some(ts);
        }
        if code == MARKER_SWITCH_ROOT && self.record.host_ns.switch_root.is_none() {
            self.record.host_ns.switch_root = Some(ts);
        }
        if self.record.boot_markers.len() < MAX_BOOT_MARKERS {
            self.record
                .boot_markers
                .push(BootMarker { code, host_ns: ts });
        } else {
            self.record.boot_markers_dropped += 1;
        }
    }

    pub(super) fn read_connection(&mut self, index: usize, ts: u64) {
        let mut buf = [0u8; 4096];
        let mut budget = self.read_budget_bytes;
        while budget > 0 {
            let conn = &mut self.connections[index];
            if !conn.open {
                return;
            }
            let result = match conn.stream.read(&mut buf) {
                Ok(0) => {
                    conn.open = false;
                    conn.session.end().map(|()| Vec::new())
                }
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    conn.session.feed(&buf[..n])
                }
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
                // Each connection says Hello; the VM's first one counts.
                let first = self.record.host_ns.hello.is_none();
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
                if first {
                    (self.on_progress)(self.record, Milestone::Hello);
                }
            }
            GuestMessage::Ready(marks) => {
                let first = self.record.host_ns.ready.is_none();
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
                if first {
                    (self.on_progress)(self.record, Milestone::Ready);
                }
            }
            GuestMessage::Systemd(report) => self.on_systemd(index, report, ts),
            GuestMessage::Failed { what } => {
                self.guest_failure.get_or_insert(what);
            }
            // The session refuses a result the watch did not ask for, and
            // `vmbench boot` asks for none: this is only reached if that
            // check is ever lost, and must not pass silently then either.
            GuestMessage::Bench(result) => {
                self.connections[index].open = false;
                self.protocol_error.get_or_insert(format!(
                    "Guest sent a result for benchmark {:?}, which the host did not ask for",
                    result.name
                ));
            }
        }
    }

    /// A systemd guest's account, which its `Ready` announced: the report is
    /// whole now, and the guest gets its Ack.
    fn on_systemd(&mut self, index: usize, report: SystemdReport, ts: u64) {
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
            let why =
                crate::systemd::check_against_analyze(&record.phases_ms, &record.analyze_time)
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
}
