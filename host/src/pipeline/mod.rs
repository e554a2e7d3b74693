//! `vmbench boot`: N guests in parallel, each on its own thread and VMM, their
//! reports gathered into one results.json that is rewritten as they arrive.
//!
//! The run is a short sequence of stages, each a module of its own:
//! 1. [`options`]: the numbers in the configuration make sense;
//! 2. [`inputs`]: the kernel, the initramfs and the root disk are found and
//!    checked, once, before anything starts;
//! 3. [`backends`]: KVM is calibrated, and the backends and accelerators
//!    the configuration names are resolved against what it found (and the
//!    kernel checked against them: [`inputs::check_entry`]);
//! 4. [`prepare`]: the output directory, each VM's spec and command line,
//!    the overlays of the root disk, and the results.json that says how the
//!    run was set up;
//! 5. [`launch`]: every VM runs on its own thread ([`crate::watch`]); their
//!    records come back as they go, with progress lines;
//! 6. [`aggregate`]: the run's statistics, over the VMs that ended `ok`.
//!
//! Rendering the results is not part of the run: [`crate::render`] does it
//! from the [`RunResults`] alone.

pub mod aggregate;
pub mod backends;
pub mod inputs;
pub mod launch;
pub mod options;
pub mod overlays;
pub mod prepare;
pub mod progress;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::interrupt::{self, Stop};
use crate::results::{RunResults, VmStatus};
use crate::{locate, results};
use aggregate::Measured;

pub use backends::{AccelChoice, BackendChoice};

#[derive(Debug, Clone)]
pub struct BootConfig {
    /// VMs per backend, per round.
    pub vms: u32,
    /// Measured rounds, one after another, each booting `vms` VMs per backend.
    pub runs: u32,
    /// Rounds before those, booted the same way but never measured.
    pub warmup: u32,
    /// One or more backends; with several, each boots `vms` VMs, interleaved.
    pub backends: Vec<BackendChoice>,
    /// kvm backend: force the kernel entry (`pvh`, `linux64`).
    pub entry: Option<String>,
    pub kernel: Option<PathBuf>,
    pub initramfs: Option<PathBuf>,
    pub agent: Option<PathBuf>,
    /// With `rootfs`: no initramfs; the kernel mounts the root disk and runs its init.
    pub no_initramfs: bool,
    pub mem_mib: u32,
    pub vcpus: u32,
    pub accel: AccelChoice,
    /// Seconds a VM may take from start to exit; default [`options::default_timeout_s`].
    pub timeout_s: Option<f64>,
    /// A root disk image each VM boots from, through its own overlay.
    pub rootfs: Option<PathBuf>,
    /// Keep the overlays after the run.
    pub keep_overlays: bool,
    pub out: Option<PathBuf>,
    /// Extra kernel command-line words, after vmbench's own.
    pub append: Vec<String>,
    pub port: u32,
    /// Progress lines on stderr.
    pub progress: bool,
    /// `vmbench bench`: the benchmarks to run in the guests (none: the
    /// guests boot, report and power off, as `vmbench boot` has them).
    pub bench: Option<crate::bench::plan::Plan>,
}

impl BootConfig {
    /// The VMs one round boots, over all its batches.
    pub fn vms_per_round(&self, backends: usize) -> u64 {
        let backends = backends.max(1) as u64;
        match &self.bench {
            None => u64::from(self.vms) * backends,
            Some(plan) => plan
                .suites
                .iter()
                .map(|s| u64::from(crate::bench::plan::Plan::vms_per_batch(*s, self.vms)))
                .sum::<u64>()
                .saturating_mul(backends),
        }
    }

    /// The most VMs that run at once: a round's (`vmbench boot`), or its
    /// largest batch (`vmbench bench` runs each suite and backend alone).
    pub fn vms_at_once(&self, backends: usize) -> u64 {
        match &self.bench {
            None => u64::from(self.vms) * backends.max(1) as u64,
            Some(plan) => plan
                .suites
                .iter()
                .map(|s| u64::from(crate::bench::plan::Plan::vms_per_batch(*s, self.vms)))
                .max()
                .unwrap_or(1),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Locate(#[from] locate::Error),
    #[error(transparent)]
    Input(#[from] crate::inputs::Error),
    #[error("{option} {value}: must be {range}")]
    OutOfRange {
        option: &'static str,
        value: String,
        range: String,
    },
    #[error("--vms {vms} on {backends} backend(s) for {rounds} round(s) (--runs + --warmup) is {total} VMs in all, more than the {max} a run may have", max = options::MAX_TOTAL_VMS)]
    TooManyVmsInAll {
        vms: u32,
        backends: usize,
        rounds: u64,
        total: u64,
    },
    #[error("{vms} VMs at once need up to {needed} open files, more than the {limit} this process may open (raise `ulimit -n`, or boot fewer --vms)")]
    TooFewFiles { vms: u64, needed: u64, limit: u64 },
    #[error("--a and --b must boot the same rounds: one variant changes --runs or --warmup (or, with benchmarks, --backend, --suite or --bench)")]
    UnevenVariants,
    #[error("--accel kvm: KVM cannot run guests here: {0}")]
    NoKvm(String),
    #[error("--backend kvm: KVM cannot run guests here: {0}")]
    NoKvmBackend(String),
    #[error("--backend names the same backend twice")]
    DuplicateBackend,
    #[error("Cannot find vmbench's own executable to run `vmbench vmm`: {0}")]
    SelfExe(std::io::Error),
    #[error("--out {0} already holds a results.json; choose another directory")]
    OutExists(PathBuf),
    #[error("Cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--rootfs: {0}")]
    Rootfs(vmbench_rootfs::Error),
    #[error("--rootfs: benchmarks run in the agent's initramfs (and the vmexit guest), not on a root disk")]
    BenchWithRootfs,
    #[error("--no-initramfs needs --rootfs: without an initramfs the guest's init comes from the root disk")]
    NoInitramfsWithoutRootfs,
    #[error("Cannot create the overlay for vm-{id}: {source}")]
    Overlay {
        id: u32,
        source: vmbench_rootfs::Error,
    },
    /// Stopped by a signal before any VM started; nothing was kept.
    #[error("interrupted by {} before any VM started; nothing was kept", interrupt::name(*.0))]
    Interrupted(i32),
}

pub type Result<T> = std::result::Result<T, Error>;

/// A finished run (or one a signal stopped, finalised with what it had).
pub struct Outcome {
    pub results: RunResults,
    pub results_path: PathBuf,
    /// The signal that stopped the run before all its VMs ended.
    pub interrupted: Option<i32>,
}

impl Outcome {
    pub fn all_ok(&self) -> bool {
        self.results.vms.iter().all(|v| v.status == VmStatus::Ok)
    }
}

/// Runs `vmbench boot`: the stages in order, every round in turn, until
/// `stop` is requested.
pub fn run(config: &BootConfig, stop: Arc<Stop>) -> Result<Outcome> {
    let mut run = set_up(config, None, stop)?;
    let mut measured = Measured::default();
    for round in 0..run.rounds() {
        if run.stop.requested().is_some() {
            break;
        }
        measured.add(run.boot_round(round));
    }
    run.finish(measured)
}

/// A run set up to its first VM (stages 1 to 4: its results.json written),
/// whose rounds are then booted one at a time: `vmbench boot` boots them in
/// order, `vmbench ab` interleaves two runs' rounds.
pub struct SetUp {
    progress: progress::Progress,
    backends: backends::Backends,
    keep_overlays: bool,
    /// The run's stop request: Ctrl-C and friends ([`crate::interrupt`]).
    pub stop: Arc<Stop>,
    /// A variant's name, in progress lines (`vmbench ab`).
    label: Option<String>,
    run: prepare::Prepared,
}

/// Stages 1 to 4 for `config`; `label` names the run in progress lines.
/// A stop requested before results.json exists ends it with
/// [`Error::Interrupted`], leaving nothing behind.
pub fn set_up(config: &BootConfig, label: Option<&str>, stop: Arc<Stop>) -> Result<SetUp> {
    let progress = progress::Progress::new(config.progress);
    let timeout = options::check(config)?;
    let inputs = inputs::resolve(config, &progress)?;
    let backends = backends::resolve(config)?;
    inputs::check_entry(&inputs, &backends, config)?;
    let run = prepare::prepare(config, timeout, &inputs, &backends, &stop)?;
    write(&run.results_path, &run.results)?;
    progress.starting(
        &run.results.environment,
        run.results.bench.as_ref(),
        run.results.vms.len(),
        &run.out,
    );
    Ok(SetUp {
        progress,
        backends,
        keep_overlays: config.keep_overlays,
        stop,
        label: label.map(str::to_string),
        run,
    })
}

/// Writes results.json (atomically).
fn write(path: &std::path::Path, results: &RunResults) -> Result<()> {
    results::write_atomic(path, results).map_err(|source| Error::Write {
        path: path.to_path_buf(),
        source,
    })
}

impl SetUp {
    /// Batches in all, in the order they boot (a round is one batch for
    /// `vmbench boot`, one per suite and backend for `vmbench bench`);
    /// warm-up rounds first.
    pub fn rounds(&self) -> u32 {
        self.run.vms.last().map_or(0, |vm| vm.batch + 1)
    }

    /// Boots one batch's VMs, rewriting results.json as their records arrive.
    pub fn boot_round(&mut self, batch: u32) -> Measured {
        let batches = self.rounds();
        let these: Vec<&prepare::PreparedVm> =
            self.run.vms.iter().filter(|vm| vm.batch == batch).collect();
        if let Some(first) = these.first().filter(|vm| vm.bench.is_some()) {
            let rounds = self.run.vms.last().map_or(0, |vm| vm.round + 1);
            self.progress
                .bench_batch(first, batch, batches, rounds, &self.backends.names());
        } else if batches > 1 || self.label.is_some() {
            let warmup = these.first().is_some_and(|vm| vm.warmup);
            self.progress
                .round(batch, batches, warmup, self.label.as_deref());
        }
        let (results_path, progress) = (&self.run.results_path, &self.progress);
        let ids: Vec<usize> = these.iter().map(|vm| vm.spec.id as usize).collect();
        let mut writes = CoalescedWrites::default();
        let measured = launch::launch_round(
            &these,
            &self.backends,
            self.keep_overlays,
            &self.stop,
            progress,
            &mut self.run.results,
            |results, changed| writes.changed(results_path, results, changed, progress),
        );
        writes.flush(results_path, &self.run.results, progress);
        // vmbench's CPU is the round's, not one VM's: each gets its share.
        let share = measured.cpu_ms_while_vms_ran / ids.len().max(1) as f64;
        for id in ids {
            self.run.results.vms[id].vmbench_cpu_ms = Some(share);
        }
        measured
    }

    /// Undoes a set-up whose run will not happen (the other variant of
    /// `vmbench ab` could not be set up): its overlays (unless kept) and its
    /// results.json are removed, so nothing looks like a run.
    pub fn abandon(mut self) {
        for vm in &mut self.run.results.vms {
            if let Some(overlay) = vm.overlay.as_mut().filter(|o| o.kept) {
                overlays::settle(overlay, self.keep_overlays);
            }
        }
        let _ = std::fs::remove_file(&self.run.results_path);
    }

    /// The aggregates, and results.json written a last time. After a stop,
    /// the VMs that never started are recorded as interrupted too, and
    /// their overlays removed (unless kept): the run is final either way.
    pub fn finish(mut self, mut measured: Measured) -> Result<Outcome> {
        let interrupted = self.stop.requested();
        if let Some(signal) = interrupted {
            self.run.results.interrupted = true;
            self.run.results.interrupted_by = Some(interrupt::name(signal));
            for vm in &mut self.run.results.vms {
                if vm.status == VmStatus::Running {
                    vm.status = VmStatus::Interrupted;
                    vm.error = Some(format!(
                        "Not started: the run was interrupted by {} before its round",
                        interrupt::name(signal)
                    ));
                    crate::bench::mark_unrun(
                        &mut vm.benchmarks,
                        &format!(
                            "the run was interrupted by {} before its VM started",
                            interrupt::name(signal)
                        ),
                    );
                }
                if let Some(overlay) = vm.overlay.as_mut().filter(|o| o.kept) {
                    overlays::settle(overlay, self.keep_overlays);
                }
            }
        }
        measured.cpu_ms_total = aggregate::self_cpu_ms();
        aggregate::finish(&mut self.run.results, &self.backends, measured);
        write(&self.run.results_path, &self.run.results)?;
        Ok(Outcome {
            results: self.run.results,
            results_path: self.run.results_path,
            interrupted,
        })
    }
}

/// results.json rewritten as records arrive, but at most every
/// [`CoalescedWrites::EVERY`]: however many records a round's VMs send at
/// once, the file is not rewritten (and synced) more often than that; a
/// change waits at most that long (the round ticks), and the last one is
/// always written by [`CoalescedWrites::flush`].
#[derive(Default)]
struct CoalescedWrites {
    last: Option<Instant>,
    pending: bool,
}

impl CoalescedWrites {
    const EVERY: Duration = Duration::from_millis(250);

    /// A record arrived (`changed`), or time passed.
    fn changed(
        &mut self,
        path: &std::path::Path,
        results: &RunResults,
        changed: bool,
        progress: &progress::Progress,
    ) {
        self.pending |= changed;
        if self.last.is_none_or(|at| at.elapsed() >= Self::EVERY) {
            self.flush(path, results, progress);
        }
    }

    fn flush(
        &mut self,
        path: &std::path::Path,
        results: &RunResults,
        progress: &progress::Progress,
    ) {
        if !self.pending {
            return;
        }
        // Written as reports arrive, so a run killed outright keeps what it has.
        if let Err(e) = write(path, results) {
            progress.warning(&e.to_string());
        }
        self.pending = false;
        self.last = Some(Instant::now());
    }
}
