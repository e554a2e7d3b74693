//! The progress lines `vmbench boot` prints on stderr while it runs (none
//! with `--quiet`): what it is about to do, each VM as it becomes ready and
//! as it ends, and warnings that do not stop the run.

use std::io::Write;
use std::path::Path;

use crate::error_line::printable;
use crate::results::{Environment, VmRecord};

pub struct Progress {
    enabled: bool,
}

impl Progress {
    pub fn new(enabled: bool) -> Self {
        Progress { enabled }
    }

    pub fn line(&self, line: &str) {
        if self.enabled {
            let _ = writeln!(std::io::stderr(), "{line}");
        }
    }

    pub fn warning(&self, what: &str) {
        self.line(&format!("vmbench: warning: {what}"));
    }

    /// What the run is about to boot, and where its results go.
    pub fn starting(&self, env: &Environment, total_vms: usize, out: &Path) {
        self.line(&format!(
            "vmbench: booting {} VM{} ({} backend, {}, {} MiB, {} vCPU) into {}",
            total_vms,
            if total_vms == 1 { "" } else { "s" },
            env.backend.replace(',', " and "),
            env.accel.replace(',', " and "),
            env.mem_mib,
            env.vcpus,
            out.display()
        ));
    }

    /// A round starts (with more than one, or of a named variant).
    pub fn round(&self, round: u32, rounds: u32, warmup: bool, label: Option<&str>) {
        let what = if warmup {
            " (warm-up, not measured)"
        } else {
            ""
        };
        let of = label.map(|l| format!(" of {l}")).unwrap_or_default();
        self.line(&format!("vmbench: round {}/{rounds}{of}{what}", round + 1));
    }

    pub fn ready(&self, record: &VmRecord, ready: usize, total_vms: usize) {
        self.line(&format!(
            "  vm-{} ({}) ready after {:.1} ms (guest kernel {:.1} ms) [{ready}/{total_vms} ready]",
            record.id,
            record.backend,
            record.phases_ms.total.unwrap_or(f64::NAN),
            record.phases_ms.guest_kernel.unwrap_or(f64::NAN),
        ));
    }

    pub fn ended(&self, record: &VmRecord, done: usize, total_vms: usize) {
        let detail = record
            .error
            .as_deref()
            .map(|e| format!(": {}", printable(e)))
            .unwrap_or_default();
        self.line(&format!(
            "  vm-{} ({}) {}{detail} [{done}/{total_vms} done]",
            record.id,
            record.backend,
            record.status.as_str(),
        ));
    }
}
