//! The watch's conclusions: the kvm backend's account of the VM, the
//! phases from every mark, and the VM's status with the error and warnings
//! that explain it.

use vmbench_proto::{GuestMarks, MARKER_SWITCH_ROOT, MARKER_USERSPACE_START};

use super::Watch;
use crate::backend::{kvm, Launcher, VmSpec};
use crate::log_tail;
use crate::results::{BootMarker, VmStatus};
use crate::timeline::Phases;

impl Watch<'_> {
    /// The kvm backend's account: the first KVM_RUN (the `vmm` phase ends
    /// there) and every exit. Its boot marks replace the ones forwarded
    /// through the marker socket: the VMM took them at the exit itself, the
    /// collector only when the byte arrived.
    pub(super) fn read_vmm_account(&mut self) {
        match kvm::read_account(&self.spec.dir) {
            Ok(account) => {
                self.record.host_ns.vmm_ready = account.first_run_ns;
                self.record.host_ns.run_init = account.console_marks.get("run_init").copied();
                if !account.boot_markers.is_empty() {
                    self.record.boot_markers = account
                        .boot_markers
                        .iter()
                        .map(|&(code, host_ns)| BootMarker { code, host_ns })
                        .collect();
                    self.record.boot_markers_dropped = account.boot_markers_not_kept;
                    let first = |wanted: u8| {
                        account
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
                self.record.exits = Some(account);
            }
            Err(e) => self
                .record
                .warnings
                .push(format!("No account of the VM's exits: {e}")),
        }
    }

    pub(super) fn update_phases(&mut self) {
        self.record.phases_ms = Phases::derive(
            &self.record.host_ns,
            self.guest_init_ns,
            self.record.guest_ns.as_ref(),
        );
    }

    /// Why a kvm-backend guest on KVM that emulates guest code ended when it
    /// did: the kernel reached `Run /init`, then init died at its first
    /// system call (such a host handles SYSCALL without the VMM, and the
    /// guest's init is killed), which no VMM can change. `None` for any
    /// other end.
    fn no_guest_userspace_here(&self) -> Option<String> {
        if !(matches!(self.backend, Launcher::Kvm(_)) && kvm::on_emulated_kvm(self.spec.accel)) {
            return None;
        }
        let run_init = self.record.host_ns.run_init?;
        let said = self.record.exits.as_ref()?.guest_said.as_deref()?;
        if !said.contains("Attempted to kill init") {
            return None;
        }
        let after_ms = run_init.saturating_sub(self.record.host_ns.spawn?) as f64 / 1e6;
        Some(format!(
            "The kernel reached Run /init {after_ms:.0} ms after spawn, but this host's KVM emulates guest code and cannot run guest userspace under KVM: init died at its first system call (the kernel said \"{said}\")"
        ))
    }

    /// Why the kvm backend's VMM ended when its seccomp filter caught a
    /// system call its thread never makes: the VMM's own line, with its exit
    /// status. `None` for any other end, and for QEMU.
    fn seccomp_stopped_the_vmm(&self) -> Option<String> {
        if !matches!(self.backend, Launcher::Kvm(_)) {
            return None;
        }
        let line = kvm::seccomp_violation_of(self.spec)?;
        let status = self.record.vmm_exit.clone().unwrap_or_default();
        Some(format!(
            "{} was stopped by its seccomp filter ({status}): {line}",
            self.backend.vmm_name()
        ))
    }

    /// The VM's verdict, from everything seen.
    pub(super) fn conclude(&mut self) {
        self.update_phases();
        let ready = self.record.host_ns.ready.is_some();
        let timeout_s = self.spec.timeout.as_secs_f64();
        // A VMM stopped by its filter did what it never does: whatever the
        // guest reported before, the VM failed.
        let (status, error) = if let Some(why) = self.seccomp_stopped_the_vmm() {
            (VmStatus::Failed, Some(why))
        } else if let Some(e) = self.protocol_error.take() {
            (VmStatus::ProtocolError, Some(e))
        } else if let Some(what) = self.guest_failure.take() {
            (
                VmStatus::Failed,
                Some(format!("The guest agent failed: {what}")),
            )
        } else if let Some(signal) = self.interrupted {
            let had = if ready {
                "the guest had reported ready".to_string()
            } else if self.record.host_ns.hello.is_some() {
                "the guest had said Hello, not Ready".to_string()
            } else {
                format!(
                    "no report from the guest yet; serial log ends: {}",
                    serial_tail(self.spec)
                )
            };
            (
                VmStatus::Interrupted,
                Some(format!(
                    "The run was interrupted by {} before the VM ended ({had})",
                    crate::interrupt::name(signal)
                )),
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
        } else if let Some(why) = self.no_guest_userspace_here() {
            (VmStatus::Failed, Some(why))
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
        if let Some(warning) = self.record.guest_ns.as_ref().and_then(coarse_clock) {
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

/// A warning when the guest's times were on a clocksource that ticks in
/// jiffies (the kernel could not use its TSC or kvm-clock): every guest
/// time then moves in steps of a jiffy, 4 ms with our kernel's HZ=250.
fn coarse_clock(marks: &GuestMarks) -> Option<String> {
    let clock = marks.clocksource.as_str();
    matches!(clock, "jiffies" | "refined-jiffies").then(|| {
        format!(
            "The guest kernel's clocksource was {clock}: its times move in steps of a jiffy (4 ms), too coarse to compare guest-side phases"
        )
    })
}

/// The last lines of the VM's serial console, on one line.
pub fn serial_tail(spec: &VmSpec) -> String {
    let tail = log_tail::last_lines(&spec.serial_log(), 6);
    if tail.is_empty() {
        "(serial log is empty)".to_string()
    } else {
        tail
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_jiffies_clock_is_coarse() {
        let on = |clocksource: &str| GuestMarks {
            clocksource: clocksource.into(),
            ..GuestMarks::default()
        };
        assert!(coarse_clock(&on("refined-jiffies"))
            .unwrap()
            .contains("refined-jiffies"));
        assert!(coarse_clock(&on("jiffies")).is_some());
        for precise in ["tsc", "tsc-early", "kvm-clock", ""] {
            assert_eq!(coarse_clock(&on(precise)), None, "{precise}");
        }
    }
}
