//! `vmbench bench`'s output, from results.json alone: per suite, each
//! backend's benchmarks as virtbench prints them (`name: median (min –
//! max) unit`, every sample of the measured rounds' VMs pooled; with
//! `--distribution` each peak's value and share), then one table with the
//! backends side by side and what each operation cost in exits (kvm
//! backend: the VMM's attribution to the benchmark's window; QEMU: `—`,
//! and why under the table).

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::bench::catalog::{self, Suite};
use crate::bench::record::{BenchmarkRecord, Status};
use crate::error_line::printable;
use crate::results::{RunResults, VmRecord};

/// What to print besides the summaries.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shown {
    /// Each peak's value and share.
    pub distribution: bool,
}

/// One benchmark on one backend, every measured VM's record of it pooled.
#[derive(Default)]
struct Pooled<'a> {
    records: Vec<&'a BenchmarkRecord>,
}

impl Pooled<'_> {
    fn measured(&self) -> impl Iterator<Item = &BenchmarkRecord> {
        self.records.iter().copied().filter(|r| r.samples.is_some())
    }

    /// Every sample's value, in the unit.
    fn values(&self) -> Vec<u64> {
        self.measured()
            .flat_map(|r| {
                r.samples
                    .iter()
                    .flat_map(|s| s.values_milli.iter().copied())
            })
            .collect()
    }

    fn unit(&self) -> Option<&str> {
        self.measured()
            .find_map(|r| r.samples.as_ref().map(|s| s.unit.as_str()))
    }

    /// Why nothing was measured: the first VM's reason.
    fn why_not(&self) -> Option<(Status, String)> {
        let r = self.records.first()?;
        Some((r.status, r.why.clone().unwrap_or_default()))
    }

    /// Exits summed over the VMs' windows: (userspace per op, KVM exits
    /// per op, VMM mean ns per exit, the other reasons per op).
    fn exits(&self) -> Option<ExitsPerOp> {
        let mut ops = 0u64;
        let mut userspace: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        let mut kvm: BTreeMap<&str, u64> = BTreeMap::new();
        let mut any = false;
        for r in self.measured() {
            let Some(e) = &r.exits else { continue };
            any = true;
            ops = ops.saturating_add(e.ops);
            for (kind, k) in &e.userspace {
                let entry = userspace.entry(kind.as_str()).or_default();
                entry.0 = entry.0.saturating_add(k.count);
                entry.1 = entry.1.saturating_add(k.total_ns);
            }
            for (stat, d) in &e.kvm {
                let entry = kvm.entry(stat.as_str()).or_default();
                *entry = entry.saturating_add(d.delta);
            }
        }
        if !any || ops == 0 {
            return None;
        }
        let per_op = |n: u64| n as f64 / ops as f64;
        let user_count: u64 = userspace.values().map(|(c, _)| *c).sum();
        let user_ns: u64 = userspace.values().map(|(_, ns)| *ns).sum();
        let mut reasons: Vec<(String, f64)> = userspace
            .iter()
            .map(|(kind, (count, _))| (kind.to_string(), per_op(*count)))
            .chain(
                kvm.iter()
                    .filter(|(stat, _)| is_reason(stat))
                    .map(|(stat, delta)| (format!("kvm:{stat}"), per_op(*delta))),
            )
            .filter(|(_, v)| *v >= 0.01)
            .collect();
        reasons.sort_by(|a, b| b.1.total_cmp(&a.1));
        reasons.truncate(4);
        Some(ExitsPerOp {
            userspace: per_op(user_count),
            kvm_exits: kvm.get("exits").map(|d| per_op(*d)),
            vmm_mean_us: (user_count > 0).then(|| user_ns as f64 / user_count as f64 / 1e3),
            reasons,
        })
    }

    /// Why a measured benchmark has no exits (QEMU).
    fn exits_why_none(&self) -> Option<&str> {
        self.measured().find_map(|r| r.exits_why_none.as_deref())
    }
}

/// KVM statistics that say why a vCPU left the guest or what KVM did for
/// it there (counts, not times): `io_exits`, `halt_exits`, …, and the
/// instruction emulation a KVM that emulates guest code lives on.
fn is_reason(stat: &str) -> bool {
    (stat.ends_with("_exits") && stat != "exits")
        || matches!(
            stat,
            "insn_emulation"
                | "insn_emulation_fail"
                | "irq_injections"
                | "nmi_injections"
                | "hypercalls"
        )
}

struct ExitsPerOp {
    userspace: f64,
    kvm_exits: Option<f64>,
    vmm_mean_us: Option<f64>,
    reasons: Vec<(String, f64)>,
}

/// A value in the unit, with as many digits as it deserves.
pub fn value(v: f64) -> String {
    if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 100.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn milli(v: u64) -> String {
    value(crate::bench::record::unit_of_milli(v))
}

/// `median (min – max) unit` of pooled values.
fn summary(values: &[u64], unit: &str) -> Option<String> {
    let s = vmbench_sampling::summary(values)?;
    Some(format!(
        "{} ({} – {}) {unit}",
        milli(s.median),
        milli(s.min),
        milli(s.max)
    ))
}

/// The measured VMs of a suite on a backend.
fn vms_of<'a>(results: &'a RunResults, suite: Suite, backend: &str) -> Vec<&'a VmRecord> {
    results
        .vms
        .iter()
        .filter(|v| !v.warmup && v.suite == Some(suite) && v.backend == backend)
        .filter(|v| v.peer_of.is_none())
        .collect()
}

/// `vmbench bench`'s text.
pub fn output(results: &RunResults, shown: Shown) -> String {
    let mut out = String::new();
    let Some(bench) = &results.bench else {
        return out;
    };
    let backends: Vec<&str> = results.environment.backend.split(',').collect();
    let accels: Vec<&str> = results.environment.accel.split(',').collect();
    let label = |i: usize| {
        format!(
            "{} ({})",
            backends[i],
            accels.get(i).copied().unwrap_or_default()
        )
    };
    for suite in &bench.suites {
        let names: Vec<&str> = bench
            .benchmarks
            .iter()
            .map(String::as_str)
            .filter(|n| catalog::find(n).is_some_and(|b| b.suite == *suite))
            .collect();
        let _ = writeln!(out, "== {} suite: {}", suite.name(), suite.about());
        // The backends that ran the suite, with their records; a backend
        // that could not run it says why in a line of its own.
        let mut pooled: Vec<BTreeMap<&str, Pooled<'_>>> = Vec::new();
        let mut ran: Vec<usize> = Vec::new();
        for (i, backend) in backends.iter().enumerate() {
            let vms = vms_of(results, *suite, backend);
            let mut by_name: BTreeMap<&str, Pooled<'_>> = BTreeMap::new();
            for vm in &vms {
                for r in &vm.benchmarks {
                    by_name.entry(r.name.as_str()).or_default().records.push(r);
                }
            }
            if let Some(skipped) = bench
                .not_run
                .iter()
                .find(|n| n.suite == *suite && n.backend == *backend)
            {
                let _ = writeln!(out, "{}: not run: {}", label(i), skipped.why);
                continue;
            } else {
                let ok = vms.iter().filter(|v| v.status.as_str() == "ok").count();
                let what = if *suite == Suite::Inter { "pair" } else { "VM" };
                let _ = writeln!(
                    out,
                    "{}: {} {what}{} ({} ok){}",
                    label(i),
                    vms.len(),
                    if vms.len() == 1 { "" } else { "s" },
                    ok,
                    pair_note(&vms)
                );
                for name in &names {
                    out.push_str(&virtbench_line(name, by_name.get(name), shown));
                }
            }
            pooled.push(by_name);
            ran.push(i);
        }
        if !ran.is_empty() {
            let ran_backends: Vec<&str> = ran.iter().map(|&i| backends[i]).collect();
            out.push_str(&side_by_side(
                *suite,
                &names,
                &ran_backends,
                &ran.iter().map(|&i| label(i)).collect::<Vec<_>>(),
                &pooled,
            ));
        }
        if *suite == Suite::Inter && !ran.is_empty() {
            let ran_backends: Vec<&str> = ran.iter().map(|&i| backends[i]).collect();
            out.push_str(&relay_note(results, &ran_backends));
        }
        out.push('\n');
    }
    out.push_str(&vm_problems(results));
    out
}

/// The inter suite's VMs: which pairs.
fn pair_note(vms: &[&VmRecord]) -> String {
    let pairs: Vec<String> = vms
        .iter()
        .filter_map(|v| {
            let peer = v.benchmarks.iter().find_map(|b| b.peer_vm)?;
            Some(format!("vm-{} with vm-{peer}", v.id))
        })
        .collect();
    if pairs.is_empty() {
        String::new()
    } else {
        format!(", pairs: {}", pairs.join(", "))
    }
}

/// `  name: median (min – max) unit`, or why there is none; with
/// `--distribution` the peaks on the next line.
fn virtbench_line(name: &str, pooled: Option<&Pooled<'_>>, shown: Shown) -> String {
    let Some(pooled) = pooled else {
        return format!("  {name}: -\n");
    };
    let values = pooled.values();
    let mut line = match (pooled.unit(), summary(&values, pooled.unit().unwrap_or(""))) {
        (Some(_), Some(s)) => format!("  {name}: {s}"),
        _ => match pooled.why_not() {
            Some((status, why)) => format!("  {name}: {} ({})", status.as_str(), printable(&why)),
            None => format!("  {name}: -"),
        },
    };
    let failed_too = pooled
        .records
        .iter()
        .filter(|r| r.samples.is_none())
        .count();
    if failed_too > 0 && !values.is_empty() {
        let _ = write!(line, " [{failed_too} VM(s) without a result]");
    }
    line.push('\n');
    if shown.distribution && !values.is_empty() {
        let peaks = vmbench_sampling::peaks(&values);
        let total = values.len() as f64;
        let said: Vec<String> = peaks
            .iter()
            .map(|p| {
                format!(
                    "{} ({:.0} %)",
                    milli(p.value),
                    p.count as f64 * 100.0 / total
                )
            })
            .collect();
        let _ = writeln!(
            line,
            "      peaks: {} of {} samples",
            said.join(", "),
            values.len()
        );
    }
    line
}

/// The backends side by side, with each operation's exits on the kvm backend.
fn side_by_side(
    suite: Suite,
    names: &[&str],
    backends: &[&str],
    labels: &[String],
    pooled: &[BTreeMap<&str, Pooled<'_>>],
) -> String {
    let unit = catalog::of(suite).next().map_or("", |b| b.unit);
    // Each backend's time per operation first, then the exits: the kvm
    // backend's figures, and a dash for each other backend.
    let mut header = vec!["benchmark".to_string()];
    header.extend(labels.iter().map(|l| format!("{l} {unit}/op")));
    let kvm = backends.iter().position(|b| *b == "kvm");
    if kvm.is_some() {
        header.extend(["kvm: userspace exits/op", "KVM exits/op", "VMM µs/exit"].map(String::from));
    }
    let others: Vec<usize> = (0..backends.len()).filter(|i| Some(*i) != kvm).collect();
    header.extend(others.iter().map(|&i| format!("{} exits/op", backends[i])));
    if kvm.is_some() {
        header.push("kvm: by reason (per op)".into());
    }
    let mut rows = vec![header];
    let mut why_none: Vec<String> = Vec::new();
    for name in names {
        let mut row = vec![name.to_string()];
        for p in pooled.iter().map(|by_name| by_name.get(name)) {
            let values = p.map(Pooled::values).unwrap_or_default();
            row.push(match vmbench_sampling::summary(&values) {
                Some(s) => milli(s.median),
                None => p
                    .and_then(Pooled::why_not)
                    .map_or("-".into(), |(s, _)| s.as_str().to_string()),
            });
        }
        let mut reasons = String::new();
        if let Some(k) = kvm {
            let p = pooled[k].get(name);
            match p.and_then(Pooled::exits) {
                Some(e) => {
                    row.extend([
                        format!("{:.2}", e.userspace),
                        e.kvm_exits.map_or("-".into(), |x| format!("{x:.2}")),
                        e.vmm_mean_us.map_or("-".into(), |us| format!("{us:.2}")),
                    ]);
                    reasons = e
                        .reasons
                        .iter()
                        .map(|(k, v)| format!("{k} {v:.2}"))
                        .collect::<Vec<_>>()
                        .join(", ");
                }
                None => {
                    if let Some(why) = p.and_then(Pooled::exits_why_none) {
                        push_once(&mut why_none, format!("kvm: {why}"));
                    }
                    row.extend(["—", "—", "—"].map(String::from));
                }
            }
        }
        for &i in &others {
            row.push("—".into());
            let p = pooled[i].get(name);
            if p.is_some_and(|p| p.measured().next().is_some()) {
                let why = p
                    .and_then(Pooled::exits_why_none)
                    .unwrap_or(crate::bench::exits::QEMU_HAS_NONE);
                push_once(&mut why_none, format!("{}: {why}", backends[i]));
            }
        }
        if kvm.is_some() {
            row.push(reasons);
        }
        rows.push(row);
    }
    let mut out = super::grid(&rows);
    for why in why_none {
        let _ = writeln!(out, "—: {why}");
    }
    out
}

fn push_once(list: &mut Vec<String>, item: String) {
    if !list.contains(&item) {
        list.push(item);
    }
}

/// The inter suite's note: the relay is measured, and what it cost.
fn relay_note(results: &RunResults, backends: &[&str]) -> String {
    let mut out = String::from(
        "The inter suite's figures include vmbench's relay on the host (guest → host → guest):",
    );
    for backend in backends {
        let cpu: f64 = vms_of(results, Suite::Inter, backend)
            .iter()
            .flat_map(|v| v.benchmarks.iter())
            .filter_map(|b| b.relay.map(|r| r.cpu_ms))
            .sum();
        let _ = write!(out, " {backend}: the relay's CPU {cpu:.1} ms;");
    }
    out.pop();
    out.push_str(".\n");
    out
}

/// VMs that did not end `ok`, and warnings, under everything.
fn vm_problems(results: &RunResults) -> String {
    let mut out = String::new();
    for vm in &results.vms {
        if vm.status.as_str() != "ok" {
            let _ = writeln!(
                out,
                "vm-{} ({}, {}): {}: {}",
                vm.id,
                vm.backend,
                vm.suite.map_or("-", Suite::name),
                vm.status.as_str(),
                printable(vm.error.as_deref().unwrap_or(""))
            );
        }
        for warning in &vm.warnings {
            let _ = writeln!(out, "vm-{}: warning: {}", vm.id, printable(warning));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::outcome::Samples;
    use crate::bench::record::{BenchExits, ExitsOfKind, SamplesRecord, StatDelta};
    use crate::bench::{BenchRun, SuiteNotRun};

    fn results() -> RunResults {
        let mut r = crate::results::test_results();
        r.environment.backend = "kvm,qemu".into();
        r.environment.accel = "kvm-emulated,tcg".into();
        r.bench = Some(BenchRun {
            suites: vec![Suite::Vmexit, Suite::Micro],
            benchmarks: vec![
                "cpuid".into(),
                "inl_from_vmm".into(),
                "ipi_cross".into(),
                "syscall".into(),
            ],
            rough: false,
            budget_ms: None,
            benchmark_timeout_s: Default::default(),
            vmexit_guest: None,
            not_run: vec![SuiteNotRun {
                suite: Suite::Micro,
                backend: "kvm".into(),
                why: "no userspace here".into(),
            }],
        });
        r
    }

    fn measured(name: &str, suite: Suite, values: Vec<u64>, unit: &str) -> BenchmarkRecord {
        let mut r = BenchmarkRecord::from_outcome(
            name,
            suite,
            crate::bench::outcome::Outcome::Done(Samples {
                unit: unit.into(),
                clock: "tsc".into(),
                iterations: 100,
                overhead_milli: 0,
                calibration_runs: 5,
                ops_in_window: 100 * values.len() as u64,
                values,
                stop: "peaks".into(),
                window: 1,
                extra: vec![],
            }),
        );
        let _: &SamplesRecord = r.samples.as_ref().unwrap();
        r.exits_why_none = None;
        r
    }

    fn vm(id: u32, backend: &str, suite: Suite, benchmarks: Vec<BenchmarkRecord>) -> VmRecord {
        let mut v = VmRecord::new(id, std::path::Path::new("/x"));
        v.backend = backend.into();
        v.suite = Some(suite);
        v.status = crate::results::VmStatus::Ok;
        v.benchmarks = benchmarks;
        v
    }

    #[test]
    fn backends_side_by_side_with_exits_on_kvm_and_dashes_on_qemu() {
        let mut r = results();
        let mut inl = measured(
            "inl_from_vmm",
            Suite::Vmexit,
            vec![100_000_000; 10],
            "cycles",
        );
        inl.exits = Some(BenchExits {
            window: 1,
            ops: 1000,
            window_ns: Some(1),
            userspace: BTreeMap::from([(
                "io_in".to_string(),
                ExitsOfKind {
                    count: 1000,
                    total_ns: 2_500_000,
                    per_op: 1.0,
                },
            )]),
            userspace_per_op: 1.0,
            vmm_mean_ns: Some(2500.0),
            kvm: BTreeMap::from([
                (
                    "exits".to_string(),
                    StatDelta {
                        delta: 1000,
                        per_op: 1.0,
                    },
                ),
                (
                    "io_exits".to_string(),
                    StatDelta {
                        delta: 1000,
                        per_op: 1.0,
                    },
                ),
            ]),
        });
        let cpuid = measured(
            "cpuid",
            Suite::Vmexit,
            vec![50_000_000, 60_000_000, 70_000_000],
            "cycles",
        );
        let ipi = BenchmarkRecord::not_measured(
            "ipi_cross",
            Suite::Vmexit,
            Status::Unavailable,
            "one vCPU".into(),
        );
        r.vms.push(vm(
            0,
            "kvm",
            Suite::Vmexit,
            vec![cpuid.clone(), inl.clone(), ipi.clone()],
        ));
        let mut q_inl = measured("inl_from_vmm", Suite::Vmexit, vec![3_000_000; 10], "cycles");
        q_inl.exits_why_none = Some(crate::bench::exits::QEMU_HAS_NONE.into());
        r.vms
            .push(vm(1, "qemu", Suite::Vmexit, vec![cpuid, q_inl, ipi]));
        r.vms.push(vm(
            2,
            "qemu",
            Suite::Micro,
            vec![measured("syscall", Suite::Micro, vec![85_300; 10], "ns")],
        ));
        let text = output(&r, Shown { distribution: true });
        assert!(
            text.contains("  cpuid: 60000 (50000 – 70000) cycles\n"),
            "{text}"
        );
        assert!(
            text.contains("  ipi_cross: unavailable (one vCPU)"),
            "{text}"
        );
        assert!(
            text.contains("peaks: 100000 (100 %) of 10 samples"),
            "{text}"
        );
        let row = text
            .lines()
            .find(|l| l.starts_with("inl_from_vmm"))
            .unwrap();
        let cells: Vec<&str> = row
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(
            cells,
            [
                "inl_from_vmm",
                "100000",
                "3000",
                "1.00",
                "1.00",
                "2.50",
                "—",
                "io_in 1.00, kvm:io_exits 1.00"
            ],
            "{text}"
        );
        assert!(
            text.contains("—: qemu: QEMU does not attribute exits"),
            "{text}"
        );
        assert!(
            text.contains("kvm (kvm-emulated): not run: no userspace here"),
            "{text}"
        );
        assert!(
            text.contains("  syscall: 85.30 (85.30 – 85.30) ns"),
            "{text}"
        );
    }

    #[test]
    fn values_keep_their_digits() {
        assert_eq!(value(81234.4), "81234");
        assert_eq!(value(123.45), "123.5");
        assert_eq!(value(85.333), "85.33");
        assert_eq!(value(0.1234), "0.123");
    }
}
