//! Stage 5: a round's VMs, each on its own thread, started in id order
//! (with several backends, ids alternate between them), each watched to
//! its end by [`crate::watch`]. Records come back as VMs say Hello, become
//! ready and end; each one updates the results, which the caller rewrites.

use std::sync::mpsc;

use super::aggregate::{self_cpu_ms, Measured};
use super::backends::Backends;
use super::overlays;
use super::prepare::PreparedVm;
use super::progress::Progress;
use crate::interrupt::Stop;
use crate::results::{RunResults, VmRecord};
use crate::watch::{self, Milestone};

/// How often `on_change` hears from a round in which nothing arrived.
pub const TICK: std::time::Duration = std::time::Duration::from_millis(250);

/// One round: its VMs at once, each on its own thread, each watched to its
/// end (or until `stop` is requested: then each is stopped and recorded as
/// interrupted); `on_change` sees the results after each record that
/// arrives (`true`), and every [`TICK`] when none did (`false`). Returns
/// what the round cost vmbench itself.
pub fn launch_round(
    vms: &[&PreparedVm],
    backends: &Backends,
    keep_overlays: bool,
    stop: &Stop,
    progress: &Progress,
    results: &mut RunResults,
    mut on_change: impl FnMut(&RunResults, bool),
) -> Measured {
    let cpu_before = self_cpu_ms();
    let wall_start = std::time::Instant::now();
    let total_vms = vms.len();
    let (tx, rx) = mpsc::channel::<(VmRecord, Option<Milestone>)>();
    std::thread::scope(|scope| {
        for vm in vms {
            let thread_tx = tx.clone();
            let backend = &backends.launchers[vm.backend];
            let spawned = std::thread::Builder::new()
                .name(format!("vm-{}", vm.spec.id))
                .spawn_scoped(scope, move || {
                    run_one(vm, backend, keep_overlays, stop, &thread_tx)
                });
            if let Err(e) = spawned {
                // Out of threads (or memory): this VM fails, the others go on.
                let mut record = VmRecord::new(vm.spec.id, &vm.spec.dir);
                (record.round, record.warmup) = (vm.round, vm.warmup);
                record.backend = backend.name().to_string();
                record.status = crate::results::VmStatus::Failed;
                record.error = Some(format!("Cannot start a thread to watch the VM: {e}"));
                let _ = tx.send((record, None));
            }
        }
        drop(tx);
        let (mut ready, mut done) = (0, 0);
        loop {
            let (record, milestone) = match rx.recv_timeout(TICK) {
                Ok(arrived) => arrived,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    on_change(results, false);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            match milestone {
                Some(Milestone::Hello) => {}
                Some(Milestone::Ready) => {
                    ready += 1;
                    progress.ready(&record, ready, total_vms);
                }
                None => {
                    done += 1;
                    progress.ended(&record, done, total_vms);
                }
            }
            let id = record.id as usize;
            results.vms[id] = record;
            on_change(results, true);
        }
    });
    Measured {
        cpu_ms_while_vms_ran: self_cpu_ms() - cpu_before,
        cpu_ms_total: self_cpu_ms(),
        wall_ms: wall_start.elapsed().as_secs_f64() * 1e3,
    }
}

/// One VM's thread: its record at each milestone, then its final record
/// (with its overlay measured and, unless kept, removed).
fn run_one(
    vm: &PreparedVm,
    backend: &crate::backend::Launcher,
    keep_overlays: bool,
    stop: &Stop,
    tx: &mpsc::Sender<(VmRecord, Option<Milestone>)>,
) {
    let mut overlay = vm.overlay.clone();
    let in_its_round = |mut record: VmRecord| {
        (record.round, record.warmup) = (vm.round, vm.warmup);
        record
    };
    let mut on_progress = |record: &VmRecord, milestone| {
        let mut record = in_its_round(record.clone());
        record.overlay.clone_from(&overlay);
        drop(tx.send((record, Some(milestone))))
    };
    let mut record = in_its_round(watch::run(&vm.spec, backend, stop, &mut on_progress));
    if let Some(overlay) = overlay.as_mut() {
        overlays::settle(overlay, keep_overlays);
    }
    record.overlay = overlay;
    let _ = tx.send((record, None));
}
