//! `vmbench doctor`: what this host can run, and for each missing piece the
//! command that fixes it.

use std::fmt::Write;

use crate::environment;
use crate::inputs;
use crate::locate;
use vmbench_vmm::probe::{self as kvm_probe, KvmVerdict};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    /// Usable, with a caveat.
    Note,
    /// The qemu backend cannot run without it.
    Missing,
}

#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub level: Level,
    pub detail: String,
    /// What to run, when something is to be done.
    pub fix: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Diagnosis {
    pub checks: Vec<Check>,
    pub kvm: KvmVerdict,
}

impl Diagnosis {
    /// Whether `vmbench boot` can run here (qemu backend).
    pub fn can_boot(&self) -> bool {
        self.checks.iter().all(|c| c.level != Level::Missing)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for check in &self.checks {
            let level = match check.level {
                Level::Ok => "ok",
                Level::Note => "note",
                Level::Missing => "MISSING",
            };
            let _ = writeln!(out, "{:<20} {:<8} {}", check.name, level, check.detail);
            if let Some(fix) = &check.fix {
                let _ = writeln!(out, "{:<20} {:<8} fix: {fix}", "", "");
            }
        }
        let verdict = if self.can_boot() {
            "vmbench boot can run here"
        } else {
            "vmbench boot cannot run here yet: run the fixes above, or scripts/setup.sh for all of them"
        };
        let _ = writeln!(
            out,
            "\n{verdict} (--accel auto would use {}).",
            if self.kvm.is_native() { "KVM" } else { "TCG" }
        );
        out
    }
}

fn from_result(name: &'static str, result: Result<String, String>, fix: &str) -> Check {
    match result {
        Ok(detail) => Check {
            name,
            level: Level::Ok,
            detail,
            fix: None,
        },
        Err(detail) => Check {
            name,
            level: Level::Missing,
            detail,
            fix: Some(fix.to_string()),
        },
    }
}

/// A program found (its path and version) or missing (with its fix).
fn program_check(
    name: &'static str,
    found: locate::Result<std::path::PathBuf>,
    fix: &str,
) -> Check {
    from_result(
        name,
        found
            .map(|p| format!("{} ({})", p.display(), environment::program_version(&p)))
            .map_err(|e| e.to_string()),
        fix,
    )
}

pub fn run() -> Diagnosis {
    let mut checks = Vec::new();
    let calibration = kvm_probe::calibrate();
    checks.push(match &calibration.verdict {
        KvmVerdict::Native { ns_per_iteration } => Check {
            name: "kvm",
            level: Level::Ok,
            detail: format!("native: guest code runs on the CPU ({ns_per_iteration:.1} ns per calibration loop iteration)"),
            fix: None,
        },
        KvmVerdict::Emulated { ns_per_iteration } => Check {
            name: "kvm",
            level: Level::Note,
            detail: format!(
                "emulated: /dev/kvm works but executes guest code in software ({ns_per_iteration:.0} ns per calibration loop iteration; native is ~1 ns), as nested KVM without hardware support does; Linux guests run under TCG here and timings are not hardware boot times"
            ),
            fix: None,
        },
        KvmVerdict::Absent { reason } => Check {
            name: "kvm",
            level: Level::Note,
            detail: format!("absent ({reason}); guests run under TCG"),
            fix: Some("load kvm_intel or kvm_amd on a host with VT-x/AMD-V to measure hardware boot times".into()),
        },
    });
    checks.push(program_check(
        "qemu",
        locate::qemu(),
        "apt-get install qemu-system-x86 qemu-utils",
    ));
    checks.push(program_check(
        "vhost-device-vsock",
        locate::vhost_device_vsock(),
        "cargo install --locked vhost-device-vsock",
    ));
    checks.push(kernel_check());
    checks.push(from_result(
        "guest agent",
        locate::default_agent()
            .map(|p| p.display().to_string())
            .map_err(|e| e.to_string()),
        "scripts/build-agent.sh",
    ));
    Diagnosis {
        checks,
        kvm: calibration.verdict,
    }
}

fn kernel_check() -> Check {
    let fix = "kernel-config/build.sh";
    let path = match locate::default_kernel() {
        Ok(path) => path,
        Err(e) => return from_result("guest kernel", Err(e.to_string()), fix),
    };
    // `vmbench boot`'s default backend here may be QEMU, which needs a PVH note.
    if let Err(e) = inputs::check_kernel(&path).and_then(|k| k.check_entry(Some("QEMU"))) {
        return from_result("guest kernel", Err(e.to_string()), fix);
    }
    match locate::kernel_inputs(&path) {
        Some(ki) if ki.fragments_sha256 != locate::FRAGMENTS_SHA256 => Check {
            name: "guest kernel",
            level: Level::Note,
            detail: format!(
                "{} ({}) was built from other config fragments than this vmbench's",
                path.display(),
                ki.release
            ),
            fix: Some(fix.into()),
        },
        Some(ki) => Check {
            name: "guest kernel",
            level: Level::Ok,
            detail: format!("{} ({}, from {})", path.display(), ki.release, ki.source),
            fix: None,
        },
        None => Check {
            name: "guest kernel",
            level: Level::Ok,
            detail: path.display().to_string(),
            fix: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_piece_blocks_boot_and_shows_its_fix() {
        let report = Diagnosis {
            checks: vec![
                Check {
                    name: "qemu",
                    level: Level::Missing,
                    detail: "not found".into(),
                    fix: Some("apt-get install qemu-system-x86".into()),
                },
                Check {
                    name: "kvm",
                    level: Level::Note,
                    detail: "emulated".into(),
                    fix: None,
                },
            ],
            kvm: KvmVerdict::Emulated {
                ns_per_iteration: 1300.0,
            },
        };
        assert!(!report.can_boot());
        let text = report.render();
        assert!(
            text.contains("fix: apt-get install qemu-system-x86"),
            "{text}"
        );
        assert!(text.contains("cannot run here yet"), "{text}");
        assert!(text.contains("would use TCG"), "{text}");
    }
}
