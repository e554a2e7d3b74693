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
    pub fn starting(
        &self,
        env: &Environment,
        bench: Option<&crate::bench::BenchRun>,
        total_vms: usize,
        out: &Path,
    ) {
        let what = match bench {
            None => "booting".to_string(),
            Some(b) => {
                let suites: Vec<&str> = b.suites.iter().map(|s| s.name()).collect();
                format!("benchmarking ({} suite)", suites.join(", "))
            }
        };
        let vcpus = match bench {
            Some(b) if b.suites.contains(&crate::bench::catalog::Suite::Vmexit) => format!(
                "{} vCPU, the vmexit guest {}",
                env.vcpus,
                crate::bench::plan::VMEXIT_VCPUS
            ),
            _ => format!("{} vCPU", env.vcpus),
        };
        self.line(&format!(
            "vmbench: {what}: {} VM{} ({} backend, {}, {} MiB, {vcpus}) into {}",
            total_vms,
            if total_vms == 1 { "" } else { "s" },
            env.backend.replace(',', " and "),
            env.accel.replace(',', " and "),
            env.mem_mib,
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

    /// A `vmbench bench` batch starts: which suite, on which backend, in
    /// which round.
    pub fn bench_batch(
        &self,
        first: &super::prepare::PreparedVm,
        batch: u32,
        batches: u32,
        rounds: u32,
        backends: &[&str],
    ) {
        let Some(bench) = &first.bench else { return };
        let what = if first.warmup {
            " (warm-up, not measured)"
        } else {
            ""
        };
        let names: Vec<&str> = bench.orders.iter().map(|o| o.benchmark.name).collect();
        self.line(&format!(
            "vmbench: [{}/{batches}] {} suite on {} (round {}/{rounds}{what}): {}",
            batch + 1,
            bench.suite.name(),
            backends.get(first.backend).copied().unwrap_or("?"),
            first.round + 1,
            names.join(", ")
        ));
    }

    /// A benchmark's result came in.
    pub fn benchmark(&self, vm: u32, record: &crate::bench::record::BenchmarkRecord) {
        let said = match (&record.samples, &record.why) {
            (Some(s), _) => format!(
                "{:.3} ({:.3} – {:.3}) {}, {} samples",
                s.median,
                s.min,
                s.max,
                s.unit,
                s.values_milli.len()
            ),
            (None, Some(why)) => format!("{}: {}", record.status.as_str(), printable(why)),
            (None, None) => record.status.as_str().to_string(),
        };
        self.line(&format!("  vm-{vm} {}: {said}", record.name));
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
