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
use crate::results::{RunResults, VmRecord};
use crate::watch::{self, Milestone};

/// One round: its VMs at once, each on its own thread, each watched to its
/// end; `on_change` sees the results after each record that arrives.
/// Returns what the round cost vmbench itself.
pub fn launch_round(
    vms: &[&PreparedVm],
    backends: &Backends,
    keep_overlays: bool,
    progress: &Progress,
    results: &mut RunResults,
    mut on_change: impl FnMut(&RunResults),
) -> Measured {
    let cpu_before = self_cpu_ms();
    let wall_start = std::time::Instant::now();
    let total_vms = vms.len();
    let (tx, rx) = mpsc::channel::<(VmRecord, Option<Milestone>)>();
    std::thread::scope(|scope| {
        for vm in vms {
            let tx = tx.clone();
            let backend = &backends.launchers[vm.backend];
            scope.spawn(move || run_one(vm, backend, keep_overlays, &tx));
        }
        drop(tx);
        let (mut ready, mut done) = (0, 0);
        for (record, milestone) in rx {
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
            on_change(results);
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
    let mut record = in_its_round(watch::run(&vm.spec, backend, &mut on_progress));
    if let Some(overlay) = overlay.as_mut() {
        overlays::settle(overlay, keep_overlays);
    }
    record.overlay = overlay;
    let _ = tx.send((record, None));
}
