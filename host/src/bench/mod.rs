//! `vmbench bench`: guest benchmarks, and what each costs in VM exits.
//!
//! A bench run is a `vmbench boot` run ([`crate::pipeline`]) whose VMs
//! measure instead of only booting. Each round boots, one batch at a
//! time, every chosen suite on every backend (so no two suites or
//! backends share the host's CPUs while they measure):
//!
//! - **vmexit**: the freestanding vmexit guest (`vmexit-guest/`, no
//!   initramfs, 2 vCPUs) times single exiting instructions at CPL0 and
//!   reports on its serial console; the watch reads the report strictly
//!   once the VM has ended ([`vmexit_report`]).
//! - **micro**: Linux with the agent (`vmbench.bench=1`) and a scratch
//!   disk; after `Ready` the VM's watch asks for one benchmark at a time
//!   (`RunBench`) and collects each result, each with its own timeout
//!   ([`plan::Order`]); the host serves the vsock benchmarks' far end
//!   ([`endpoints`]).
//! - **inter**: two such VMs whose agents talk through the host's
//!   [`relay`], which is part of what is measured.
//!
//! The VMM attributes its exits to each benchmark's window ([`exits`]);
//! results.json keeps every raw value with the peaks derived here
//! ([`record`]); [`crate::render::bench`] prints them as virtbench does,
//! with the exits per operation, and [`csv`] appends every value to a file.
//!
//! - [`catalog`]: every benchmark, for `--list` and the README;
//! - [`plan`]: what the command line chose, and each VM's part;
//! - [`outcome`]: a guest's result, whichever guest.

pub mod catalog;
pub mod csv;
pub mod endpoints;
pub mod exits;
pub mod outcome;
pub mod plan;
pub mod record;
pub mod relay;
pub mod vmexit_report;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::backend::{VmDisk, VmSpec};
use crate::pipeline::inputs::Inputs;
use crate::results::VmRecord;
use catalog::Suite;
use plan::{Plan, VmBench};
use record::{BenchmarkRecord, Status};

/// The scratch disk `vmbench bench` gives each micro-suite VM, as its
/// last virtio-blk disk: a sparse raw file, for the O_DIRECT benchmarks.
pub const SCRATCH_DISK: &str = "scratch.raw";
pub const SCRATCH_DISK_BYTES: u64 = 64 * 1024 * 1024;

/// What a benchmark that has not run yet says.
pub const NOT_RUN_YET: &str = "not run yet";

/// The run's benchmarks as results.json records them (`bench`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchRun {
    /// The suites, in the order each round ran them.
    pub suites: Vec<Suite>,
    /// The chosen benchmarks, in `--list` order.
    pub benchmarks: Vec<String>,
    pub rough: bool,
    /// `--budget-s` in ms: each benchmark's calibration and sampling
    /// (absent: each guest's default, 10 s for the agent, 2 s for the
    /// vmexit guest).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub budget_ms: Option<u32>,
    /// Each suite's benchmark timeout: past its budget and a grace (30 s
    /// for the vmexit guest, 90 s for the agent), a benchmark counts as hung.
    pub benchmark_timeout_s: std::collections::BTreeMap<Suite, f64>,
    /// The vmexit suite's guest.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub vmexit_guest: Option<GuestFile>,
    /// Suites a backend cannot run on this host, and why.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub not_run: Vec<SuiteNotRun>,
}

/// A guest program, and its content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuestFile {
    pub path: String,
    pub sha256: String,
}

/// A suite one backend did not run, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SuiteNotRun {
    pub suite: Suite,
    pub backend: String,
    pub why: String,
}

/// results.json's `bench` for `plan`.
pub fn run_record(plan: &Plan, inputs: &Inputs, not_run: Vec<SuiteNotRun>) -> BenchRun {
    BenchRun {
        suites: plan.suites.clone(),
        benchmarks: plan.benchmarks.iter().map(|b| b.name.to_string()).collect(),
        rough: plan.rough,
        budget_ms: plan.budget_ms,
        benchmark_timeout_s: plan
            .suites
            .iter()
            .map(|s| (*s, plan.benchmark_timeout(*s).as_secs_f64()))
            .collect(),
        vmexit_guest: inputs.vmexit_guest.as_ref().map(|g| GuestFile {
            path: g.path.display().to_string(),
            sha256: g.sha256.clone(),
        }),
        not_run,
    }
}

/// A bench VM's record before it starts: its suite, and each of its
/// benchmarks not run yet.
pub fn prepare_record(record: &mut VmRecord, bench: &VmBench) {
    record.suite = Some(bench.suite);
    record.peer_of = bench
        .pair
        .as_ref()
        .filter(|p| p.is_peer)
        .map(|p| p.other_vm);
    // The peer's records are named as it was asked (`…:peer`): what it
    // served; the measuring VM's are the benchmarks.
    record.benchmarks = bench
        .orders
        .iter()
        .map(|o| {
            let mut r = BenchmarkRecord::not_measured(
                &o.request_name,
                bench.suite,
                Status::NotRun,
                NOT_RUN_YET.into(),
            );
            r.peer_vm = bench.pair.as_ref().map(|p| p.other_vm);
            r
        })
        .collect();
}

/// A bench VM's spec: the vmexit guest (no initramfs, 2 vCPUs, a timeout
/// for all its benchmarks) or Linux with the agent told to take orders,
/// and for the micro suite its scratch disk, made now.
pub fn prepare_spec(
    spec: &mut VmSpec,
    disks: &mut Vec<VmDisk>,
    bench: &VmBench,
    plan: &Plan,
    inputs: &Inputs,
) -> std::io::Result<()> {
    match bench.suite {
        Suite::Vmexit => {
            if let Some(guest) = &inputs.vmexit_guest {
                spec.kernel = guest.path.clone();
            }
            spec.initramfs = None;
            spec.vcpus = plan::VMEXIT_VCPUS;
            spec.entry = None;
            spec.cmdline = format!("{} {}", spec.cmdline, plan.vmexit_cmdline());
            // No report before the end: the VM may take its boot's time
            // and every benchmark's.
            spec.timeout += plan.benchmark_timeout(Suite::Vmexit) * bench.orders.len() as u32;
        }
        Suite::Micro | Suite::Inter => {
            spec.cmdline = format!("{} {}", spec.cmdline, plan.agent_cmdline());
            if bench.suite == Suite::Micro {
                std::fs::create_dir_all(&spec.dir)?;
                let path = spec.dir.join(SCRATCH_DISK);
                let file = std::fs::File::create(&path)?;
                file.set_len(SCRATCH_DISK_BYTES)?;
                disks.push(VmDisk {
                    path,
                    format: vmbench_image::Format::Raw,
                });
            }
        }
    }
    Ok(())
}

/// The scratch disk of a VM, if it has one: removed once the VM ends.
pub fn scratch_disk(spec: &VmSpec) -> Option<PathBuf> {
    spec.disks
        .iter()
        .map(|d| d.path.clone())
        .find(|p| p.file_name().is_some_and(|n| n == SCRATCH_DISK))
}

/// The benchmarks a VM was never asked for get `why` (the VM did not
/// start, did not boot, the run was interrupted): every one still
/// [`NOT_RUN_YET`].
pub fn mark_unrun(benchmarks: &mut [BenchmarkRecord], why: &str) {
    for b in benchmarks
        .iter_mut()
        .filter(|b| b.status == Status::NotRun && b.why.as_deref() == Some(NOT_RUN_YET))
    {
        b.why = Some(why.to_string());
    }
}
