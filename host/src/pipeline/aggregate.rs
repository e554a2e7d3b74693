//! Stage 6: the run as a whole: statistics of each phase over the VMs that
//! ended `ok`, when every VM was ready, and what the run cost vmbench
//! itself; with several backends, the same for each.

use super::backends::Backends;
use std::collections::BTreeMap;

use crate::metrics::{self, MetricDef};
use crate::results::{Aggregate, MetricSummary, RunResults, VmRecord, VmStatus};
use crate::stats;

/// What the run cost vmbench itself (its children excluded).
#[derive(Debug, Clone, Copy, Default)]
pub struct Measured {
    /// CPU time (user + system) while the VMs ran.
    pub cpu_ms_while_vms_ran: f64,
    /// CPU time of the whole process, setup included.
    pub cpu_ms_total: f64,
    /// From starting a round's first VM until its last one had ended,
    /// summed over the rounds.
    pub wall_ms: f64,
}

impl Measured {
    /// Adds a round's cost to the run's.
    pub fn add(&mut self, round: Measured) {
        self.cpu_ms_while_vms_ran += round.cpu_ms_while_vms_ran;
        self.wall_ms += round.wall_ms;
        self.cpu_ms_total = round.cpu_ms_total;
    }
}

/// CPU time (user + system) this process has used, in ms; children excluded.
pub fn self_cpu_ms() -> f64 {
    match nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF) {
        Ok(usage) => {
            let tv =
                |t: nix::sys::time::TimeVal| t.tv_sec() as f64 * 1e3 + t.tv_usec() as f64 / 1e3;
            tv(usage.user_time()) + tv(usage.system_time())
        }
        Err(_) => f64::NAN,
    }
}

/// Fills in the aggregates, over the measured rounds' VMs (never a warm-up
/// round's), and marks the run finished.
pub fn finish(results: &mut RunResults, backends: &Backends, measured: Measured) {
    // vmbench's CPU is shared by the VMs it started: an interrupted run's
    // VMs that never started cost it nothing.
    let all_vms = if results.interrupted {
        results
            .vms
            .iter()
            .filter(|v| v.host_ns.spawn.is_some())
            .count()
    } else {
        results.vms.len()
    };
    let measured_vms: Vec<VmRecord> = results.vms.iter().filter(|v| !v.warmup).cloned().collect();
    results.aggregate = Some(aggregate(&measured_vms, measured, all_vms));
    if backends.launchers.len() > 1 {
        results.aggregate_by_backend = Some(
            backends
                .names()
                .into_iter()
                .map(|name| {
                    let vms: Vec<VmRecord> = measured_vms
                        .iter()
                        .filter(|v| v.backend == name)
                        .cloned()
                        .collect();
                    (name.to_string(), aggregate(&vms, measured, all_vms))
                })
                .collect(),
        );
    }
    results.finished = true;
}

/// The statistics of `vms`; vmbench's own CPU time is the whole run's, so
/// per VM it is divided by `all_vms`, every VM the run booted (it cannot be
/// split by backend or round).
/// From a round's first spawn until every VM of the round was ready, the
/// median over rounds; `None` if a VM never got ready.
fn all_ready_ms(vms: &[VmRecord]) -> Option<f64> {
    let mut rounds: Vec<u32> = vms.iter().map(|v| v.round).collect();
    rounds.dedup();
    let per_round: Option<Vec<f64>> = rounds
        .iter()
        .map(|&round| {
            let these = vms.iter().filter(|v| v.round == round);
            let first_spawn = these.clone().filter_map(|v| v.host_ns.spawn).min()?;
            let last_ready = these
                .map(|v| v.host_ns.ready)
                .collect::<Option<Vec<u64>>>()?
                .into_iter()
                .max()?;
            Some(last_ready.saturating_sub(first_spawn) as f64 / 1e6)
        })
        .collect();
    stats::of(per_round?).map(|s| s.median)
}

pub fn aggregate(vms: &[VmRecord], measured: Measured, all_vms: usize) -> Aggregate {
    let ok: Vec<&VmRecord> = vms.iter().filter(|v| v.status == VmStatus::Ok).collect();
    let all_ready_ms = all_ready_ms(vms);
    let summary = |f: fn(&VmRecord) -> Option<f64>| {
        stats::of_vms(ok.iter().filter_map(|v| Some((v.id, f(v)?))))
    };
    Aggregate {
        vms: vms.len(),
        ok: ok.len(),
        wall_ms: measured.wall_ms,
        all_ready_ms,
        vmbench_cpu_ms_per_vm: measured.cpu_ms_while_vms_ran / all_vms.max(1) as f64,
        vmbench_cpu_ms_total: measured.cpu_ms_total,
        total_ms: summary(|v| v.phases_ms.total),
        vmm_ms: summary(|v| v.phases_ms.vmm),
        kernel_ms: summary(|v| v.phases_ms.kernel),
        guest_kernel_ms: summary(|v| v.phases_ms.guest_kernel),
        initrd_ms: summary(|v| v.phases_ms.initrd),
        guest_initrd_ms: summary(|v| v.phases_ms.guest_initrd),
        userspace_ms: summary(|v| v.phases_ms.userspace),
        guest_userspace_ms: summary(|v| v.phases_ms.guest_userspace),
        shutdown_ms: summary(|v| v.phases_ms.shutdown),
        systemd_kernel_ms: summary(|v| v.systemd.as_ref()?.phases_ms.kernel),
        systemd_initrd_ms: summary(|v| v.systemd.as_ref()?.phases_ms.initrd),
        systemd_userspace_ms: summary(|v| v.systemd.as_ref()?.phases_ms.userspace),
        overlay_create_ms: stats::of_vms(
            vms.iter()
                .filter_map(|v| Some((v.id, v.overlay.as_ref()?.create_ms))),
        ),
        metrics: metric_summaries(&ok),
        overlay_disk_used_kib: stats::of_vms(
            vms.iter()
                .filter_map(|v| Some((v.id, v.overlay.as_ref()?.disk_used_kib? as f64))),
        ),
    }
}

/// Each metric the VMs had, summarised over them.
fn metric_summaries(vms: &[&VmRecord]) -> Vec<MetricSummary> {
    let mut by_name: BTreeMap<String, (MetricDef, Vec<(u32, f64)>)> = BTreeMap::new();
    for vm in vms {
        for sample in metrics::samples_of(vm) {
            by_name
                .entry(sample.metric.name.clone())
                .or_insert_with(|| (sample.metric.clone(), Vec::new()))
                .1
                .push((vm.id, sample.value));
        }
    }
    by_name
        .into_iter()
        .filter_map(|(name, (def, values))| {
            let summary = stats::of_vms(values)?;
            Some(MetricSummary {
                name,
                unit: def.unit,
                clock: def.clock,
                direction: def.direction,
                alias: def.alias,
                summary,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::timeline::Phases;

    fn vm(
        id: u32,
        status: VmStatus,
        spawn: u64,
        ready: Option<u64>,
        total: Option<f64>,
    ) -> VmRecord {
        let mut r = VmRecord::new(id, Path::new("/x"));
        r.status = status;
        r.host_ns.spawn = Some(spawn);
        r.host_ns.ready = ready;
        r.host_ns.exit = ready.map(|t| t + 1_000_000);
        r.phases_ms = Phases {
            total,
            ..Phases::default()
        };
        r
    }

    fn measured(cpu_ms_while_vms_ran: f64, cpu_ms_total: f64, wall_ms: f64) -> Measured {
        Measured {
            cpu_ms_while_vms_ran,
            cpu_ms_total,
            wall_ms,
        }
    }

    #[test]
    fn aggregate_counts_only_ok_vms() {
        let vms = [
            vm(0, VmStatus::Ok, 0, Some(100_000_000), Some(100.0)),
            vm(1, VmStatus::Ok, 1_000_000, Some(301_000_000), Some(300.0)),
            vm(2, VmStatus::Timeout, 2_000_000, None, None),
        ];
        let agg = aggregate(&vms, measured(30.0, 130.0, 400.0), 3);
        assert_eq!((agg.vms, agg.ok), (3, 2));
        assert_eq!(agg.total_ms.unwrap().median, 200.0);
        assert_eq!(agg.all_ready_ms, None, "a VM never got ready");
        assert_eq!(agg.wall_ms, 400.0);
        assert_eq!(agg.vmbench_cpu_ms_per_vm, 10.0);
        assert_eq!(agg.vmbench_cpu_ms_total, 130.0);
    }

    #[test]
    fn all_ready_is_each_rounds_own_and_warm_up_rounds_are_left_out() {
        let mut vms = vec![
            vm(0, VmStatus::Ok, 0, Some(900_000_000), Some(900.0)),
            vm(
                1,
                VmStatus::Ok,
                1_000_000_000,
                Some(1_100_000_000),
                Some(100.0),
            ),
            vm(
                2,
                VmStatus::Ok,
                2_000_000_000,
                Some(2_300_000_000),
                Some(300.0),
            ),
            vm(
                3,
                VmStatus::Ok,
                3_000_000_000,
                Some(3_200_000_000),
                Some(200.0),
            ),
        ];
        for (round, v) in vms.iter_mut().enumerate() {
            v.round = round as u32;
            v.warmup = round == 0;
        }
        let mut results = RunResults {
            schema_version: 0,
            started_at: String::new(),
            finished: false,
            interrupted: false,
            interrupted_by: None,
            bench: None,
            environment: crate::results::test_results().environment,
            vms,
            aggregate: None,
            aggregate_by_backend: None,
        };
        let one = Backends::for_test(1);
        finish(&mut results, &one, measured(40.0, 50.0, 0.0));
        let agg = results.aggregate.unwrap();
        assert_eq!((agg.vms, agg.ok), (3, 3), "the warm-up round is left out");
        assert_eq!(agg.total_ms.unwrap().median, 200.0);
        assert_eq!(agg.all_ready_ms, Some(200.0), "the median of 100, 300, 200");
        assert_eq!(agg.vmbench_cpu_ms_per_vm, 10.0, "over every VM booted");
    }

    #[test]
    fn all_ready_is_the_last_ready_since_the_first_spawn() {
        let vms = [
            vm(0, VmStatus::Ok, 0, Some(100_000_000), Some(100.0)),
            vm(1, VmStatus::Ok, 5, Some(250_000_000), Some(250.0)),
        ];
        assert_eq!(
            aggregate(&vms, measured(0.0, 0.0, 0.0), 2).all_ready_ms,
            Some(250.0)
        );
    }
}
