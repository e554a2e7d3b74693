//! `vmbench boot --exits`: for each VM of the kvm backend, its userspace
//! exits by I/O port and MMIO address sorted by time spent (as `perf kvm
//! stat report` prints them), and KVM's own exit counters.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::grid;
use crate::results::{RunResults, VmRecord};
use crate::vmm_account::{ExitLatency, VmmAccount};

/// One row of the exits table: what, how many, how long.
struct ExitRow {
    event: String,
    latency: ExitLatency,
}

/// The userspace exits of one VM, all vCPUs together, by port and MMIO
/// address, sorted by time spent.
fn exit_rows(account: &VmmAccount) -> Vec<ExitRow> {
    let mut by_event: BTreeMap<String, ExitLatency> = BTreeMap::new();
    for vcpu in &account.vcpus {
        for (port, l) in &vcpu.exits.by_port {
            by_event
                .entry(format!("io port {port:#x}"))
                .or_default()
                .merge(l);
        }
        for (addr, l) in &vcpu.exits.by_mmio_addr {
            by_event
                .entry(format!("mmio {addr:#x}"))
                .or_default()
                .merge(l);
        }
        for (kind, event) in [("other", "other"), ("emulation", "emulated instruction")] {
            if let Some(l) = vcpu.exits.by_kind.get(kind) {
                by_event.entry(event.into()).or_default().merge(l);
            }
        }
    }
    let mut rows: Vec<ExitRow> = by_event
        .into_iter()
        .map(|(event, latency)| ExitRow { event, latency })
        .collect();
    rows.sort_by(|a, b| {
        b.latency
            .total_ns
            .cmp(&a.latency.total_ns)
            .then(a.event.cmp(&b.event))
    });
    rows
}

/// KVM's own counters of the VM, all vCPUs together.
fn kvm_counters(account: &VmmAccount) -> Option<BTreeMap<String, u64>> {
    let mut sum: BTreeMap<String, u64> = BTreeMap::new();
    for vcpu in &account.vcpus {
        for (name, value) in vcpu.kvm_stats.as_ref().ok()? {
            let total = sum.entry(name.clone()).or_default();
            *total = total.saturating_add(*value);
        }
    }
    Some(sum)
}

/// `--exits`: per VM, the userspace exits sorted by time spent (as `perf kvm
/// stat report` prints them) and KVM's own exit counters.
pub fn exits_table(results: &RunResults) -> String {
    let mut out = String::new();
    for vm in &results.vms {
        if let Some(account) = &vm.exits {
            out.push_str(&vm_exits(vm, account));
        }
    }
    if out.is_empty() {
        out.push_str("\n(no exit accounts: only the kvm backend records them)\n");
    }
    out
}

/// One VM's section of the exits table.
fn vm_exits(vm: &VmRecord, account: &VmmAccount) -> String {
    let mut out = String::new();
    let rows = exit_rows(account);
    // The VMM's numbers, which a guest drives: saturate, never wrap or panic.
    let samples = rows
        .iter()
        .map(|r| r.latency.count)
        .fold(0, u64::saturating_add);
    let time = rows
        .iter()
        .map(|r| r.latency.total_ns)
        .fold(0, u64::saturating_add);
    let pct = |part: u64, all: u64| {
        if all == 0 {
            0.0
        } else {
            100.0 * part as f64 / all as f64
        }
    };
    let _ = writeln!(
        out,
        "\nvm-{} ({}, {} vCPU, {} entry, ended: {}): exits handled in userspace",
        vm.id,
        vm.backend,
        account.vcpus.len(),
        account.entry,
        account.end.label()
            + &account
                .guest_said
                .as_ref()
                .map(|s| format!(", after \"{s}\""))
                .unwrap_or_default()
    );
    let mut table = vec![[
        "event", "samples", "samples%", "time%", "min µs", "max µs", "avg µs",
    ]
    .map(String::from)
    .to_vec()];
    for r in &rows {
        let l = &r.latency;
        table.push(vec![
            r.event.clone(),
            l.count.to_string(),
            format!("{:.2}%", pct(l.count, samples)),
            format!("{:.2}%", pct(l.total_ns, time)),
            format!("{:.2}", l.min_ns as f64 / 1e3),
            format!("{:.2}", l.max_ns as f64 / 1e3),
            format!("{:.2}", l.mean_ns() / 1e3),
        ]);
    }
    out.push_str(&grid(&table));
    let _ = writeln!(
        out,
        "total: {samples} samples, {:.3} ms in userspace",
        time as f64 / 1e6
    );
    out.push_str(&kvm_counters_line(account));
    if let Some(emulated) = &account.emulated_kvm {
        let counts: Vec<String> = emulated
            .recovered
            .iter()
            .map(|(kind, n)| format!("{kind}={n}"))
            .collect();
        let _ = writeln!(
            out,
            "instructions KVM's emulator refused, completed by the VMM (emulated KVM: a test aid, emulator timings): {}",
            if counts.is_empty() { "none".to_string() } else { counts.join(" ") }
        );
    }
    out
}

/// KVM's own exit counters, all vCPUs together, on one line.
fn kvm_counters_line(account: &VmmAccount) -> String {
    let Some(kvm) = kvm_counters(account) else {
        return "KVM's counters: not available on this host\n".to_string();
    };
    let names = [
        "exits",
        "io_exits",
        "mmio_exits",
        "halt_exits",
        "irq_exits",
        "signal_exits",
        "request_irq_exits",
        "insn_emulation",
    ];
    let shown: Vec<String> = names
        .iter()
        .filter_map(|n| kvm.get(*n).map(|v| format!("{n}={v}")))
        .collect();
    format!(
        "KVM's counters (all exits, in-kernel too): {}\n",
        shown.join(" ")
    )
}
