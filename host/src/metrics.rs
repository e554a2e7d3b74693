//! Every number vmbench reports per VM, as a metric: a name, a unit, the
//! clock it was read on, which way is better, and an alias group when two
//! metrics are one quantity seen two ways (the host's and the guest's view
//! of userspace, and systemd's). Samples of a metric are what statistics,
//! comparisons and the results store work on.

use serde::{Deserialize, Serialize};

use crate::results::VmRecord;

/// Which way is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    LowerIsBetter,
    HigherIsBetter,
}

/// What a metric is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricDef {
    /// `phase.total`, `systemd.unit.systemd-udevd.service`, `vmm.exits.io_out`, …
    pub name: String,
    /// `ms`, `KiB` or `count`.
    pub unit: String,
    /// `host` (CLOCK_MONOTONIC marks), `guest` (the guest kernel's clock),
    /// `systemd` (systemd's timestamps in the guest), `cpu` (CPU time), or
    /// empty for a quantity that is no time.
    pub clock: String,
    pub direction: Direction,
    /// Metrics with the same alias measure one quantity.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub alias: Option<String>,
}

/// One VM's value of one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub metric: MetricDef,
    pub value: f64,
}

/// Every guest benchmark's metric is named this and the benchmark.
pub const BENCH_PREFIX: &str = "bench.";

/// How many of a systemd guest's slowest units become metrics.
pub const SYSTEMD_UNITS: usize = 5;

fn def(name: &str, unit: &str, clock: &str, alias: Option<&str>) -> MetricDef {
    MetricDef {
        name: name.to_string(),
        unit: unit.to_string(),
        clock: clock.to_string(),
        direction: Direction::LowerIsBetter,
        alias: alias.map(str::to_string),
    }
}

/// A phase: (metric name, clock, alias, how to read it).
type Phase = (
    &'static str,
    &'static str,
    Option<&'static str>,
    fn(&VmRecord) -> Option<f64>,
);

const PHASES: [Phase; 13] = [
    ("phase.total", "host", None, |v| v.phases_ms.total),
    ("phase.vmm", "host", None, |v| v.phases_ms.vmm),
    ("phase.kernel", "host", Some("kernel"), |v| {
        v.phases_ms.kernel
    }),
    ("phase.to_init", "host", None, |v| {
        v.phases_ms.vmm_and_kernel
    }),
    ("phase.guest_kernel", "guest", Some("kernel"), |v| {
        v.phases_ms.guest_kernel
    }),
    ("phase.initrd", "host", Some("initrd"), |v| {
        v.phases_ms.initrd
    }),
    ("phase.guest_initrd", "guest", Some("initrd"), |v| {
        v.phases_ms.guest_initrd
    }),
    ("phase.userspace", "host", Some("userspace"), |v| {
        v.phases_ms.userspace
    }),
    ("phase.guest_userspace", "guest", Some("userspace"), |v| {
        v.phases_ms.guest_userspace
    }),
    ("phase.shutdown", "host", None, |v| v.phases_ms.shutdown),
    ("systemd.kernel", "systemd", Some("kernel"), |v| {
        v.systemd.as_ref()?.phases_ms.kernel
    }),
    ("systemd.initrd", "systemd", Some("initrd"), |v| {
        v.systemd.as_ref()?.phases_ms.initrd
    }),
    ("systemd.userspace", "systemd", Some("userspace"), |v| {
        v.systemd.as_ref()?.phases_ms.userspace
    }),
];

/// Every metric one VM has a value for: its phases, a systemd guest's
/// phases and slowest units, vmbench's own CPU for it, the kvm backend's
/// VMM memory and exits, and (`vmbench bench`) each benchmark it
/// measured, `bench.<name>`: the median of its samples, per operation in
/// the benchmark's unit.
pub fn samples_of(vm: &VmRecord) -> Vec<Sample> {
    let mut samples: Vec<Sample> = PHASES
        .iter()
        .filter_map(|(name, clock, alias, get)| {
            Some(Sample {
                metric: def(name, "ms", clock, *alias),
                value: get(vm)?,
            })
        })
        .collect();
    if let Some(systemd) = &vm.systemd {
        for (unit, took_ms) in systemd.blame().into_iter().take(SYSTEMD_UNITS) {
            samples.push(Sample {
                metric: def(&format!("systemd.unit.{unit}"), "ms", "systemd", None),
                value: took_ms,
            });
        }
    }
    if let Some(cpu_ms) = vm.vmbench_cpu_ms {
        samples.push(Sample {
            metric: def("vmbench.cpu", "ms", "cpu", None),
            value: cpu_ms,
        });
    }
    if let Some(account) = &vm.exits {
        let memory = [
            ("vmm.max_rss", account.memory.max_rss_kib),
            ("vmm.overhead", account.memory.vmm_overhead_kib),
        ];
        for (name, kib) in memory {
            samples.push(Sample {
                metric: def(name, "KiB", "", None),
                value: kib as f64,
            });
        }
        let mut kinds: Vec<&String> = account
            .vcpus
            .iter()
            .flat_map(|v| v.exits.by_kind.keys())
            .collect();
        kinds.sort();
        kinds.dedup();
        for kind in kinds {
            samples.push(Sample {
                metric: def(&format!("vmm.exits.{kind}"), "count", "", None),
                value: account.count(kind) as f64,
            });
        }
    }
    // One value per VM, as every metric has (the store keeps one per VM
    // and round): the median of the benchmark's samples in it. The samples
    // themselves stay in results.json (and `--csv`).
    for b in vm.benchmarks.iter().filter(|_| vm.peer_of.is_none()) {
        let Some(measured) = &b.samples else {
            continue;
        };
        let clock = if measured.unit == "cycles" {
            "tsc"
        } else {
            "guest"
        };
        samples.push(Sample {
            metric: def(
                &format!("{BENCH_PREFIX}{}", b.name),
                &measured.unit,
                clock,
                None,
            ),
            value: measured.median,
        });
    }
    samples
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vm_gives_the_phases_it_has_each_on_its_clock() {
        let mut vm = VmRecord::new(0, std::path::Path::new("/x"));
        vm.phases_ms.total = Some(700.0);
        vm.phases_ms.userspace = Some(20.0);
        vm.phases_ms.guest_userspace = Some(18.0);
        let samples = samples_of(&vm);
        let got: Vec<(&str, &str, f64)> = samples
            .iter()
            .map(|s| (s.metric.name.as_str(), s.metric.clock.as_str(), s.value))
            .collect();
        assert_eq!(
            got,
            [
                ("phase.total", "host", 700.0),
                ("phase.userspace", "host", 20.0),
                ("phase.guest_userspace", "guest", 18.0)
            ]
        );
        assert_eq!(samples[1].metric.alias, samples[2].metric.alias);
        assert!(samples
            .iter()
            .all(|s| s.metric.direction == Direction::LowerIsBetter && s.metric.unit == "ms"));
    }
}
