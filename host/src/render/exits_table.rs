//! `vmbench boot --exits`: for each VM of the kvm backend, its userspace
//! exits by I/O port and MMIO address sorted by time spent (as `perf kvm
//! stat report` prints them), and KVM's own exit counters. The VMM keeps
//! each vCPU's first ports and addresses apart and the rest together: those
//! are the rows `io port (others)` and `mmio (others)`.

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
        for (other, event) in [
            (&vcpu.exits.by_port_other, "io port (others)"),
            (&vcpu.exits.by_mmio_addr_other, "mmio (others)"),
        ] {
            if other.count > 0 {
                by_event.entry(event.into()).or_default().merge(other);
            }
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
    out.push_str(&beyond_limits_line(account));
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

/// What the VMM counted without keeping (a guest beyond the account's
/// limits) or did not pass on: one line, or nothing when all was kept.
fn beyond_limits_line(account: &VmmAccount) -> String {
    let counts = [
        (account.boot_markers_not_kept, "boot marks not kept"),
        (
            account.boot_markers_not_forwarded,
            "boot marks not forwarded to vmbench",
        ),
        (
            account.unclaimed_ports_other,
            "unclaimed port accesses counted together",
        ),
        (
            account.unclaimed_mmio_other,
            "unclaimed mmio accesses counted together",
        ),
        (
            account.serial_log_bytes_dropped,
            "bytes of console output not written to serial.log",
        ),
    ];
    let said: Vec<String> = counts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
    if said.is_empty() {
        return String::new();
    }
    format!("beyond the VMM's account limits: {}\n", said.join(", "))
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn latency(count: u64, total_ns: u64) -> serde_json::Value {
        json!({"count": count, "total_ns": total_ns, "min_ns": 10, "max_ns": 200, "log2_histogram": []})
    }

    #[test]
    fn exits_beyond_the_vmms_tables_show_as_others() {
        let account: VmmAccount = serde_json::from_value(json!({
            "end": {"kind": "reset"}, "ended_by_vcpu": 0, "entry": "pvh",
            "first_run_ns": 1, "end_ns": 2, "devices": {}, "virtio_bad_accesses": 0,
            "vcpus": [{"index": 0, "first_run_ns": 1, "kvm_stats": {"Err": "none"}, "exits": {
                "by_kind": {"mmio_read": latency(5, 500)},
                "by_port": {}, "by_port_other": latency(0, 0),
                "by_mmio_addr": {"3221225472": latency(1, 100)},
                "by_mmio_addr_other": latency(4, 400),
            }}],
            "boot_markers": [], "boot_markers_not_kept": 7, "boot_markers_not_forwarded": 0,
            "unclaimed_ports": {}, "unclaimed_ports_other": 0,
            "unclaimed_mmio": {}, "unclaimed_mmio_other": 3,
            "memory": {"max_rss_kib": 0, "guest_resident_kib": 0, "vmm_overhead_kib": 0},
        }))
        .unwrap();
        let rows: Vec<(String, u64)> = exit_rows(&account)
            .into_iter()
            .map(|r| (r.event, r.latency.count))
            .collect();
        assert_eq!(
            rows,
            [("mmio (others)".into(), 4), ("mmio 0xc0000000".into(), 1)]
        );
        assert_eq!(
            beyond_limits_line(&account),
            "beyond the VMM's account limits: 7 boot marks not kept, 3 unclaimed mmio accesses counted together\n"
        );
    }

    #[test]
    fn an_account_from_before_the_limits_still_reads() {
        let account: VmmAccount = serde_json::from_value(json!({
            "end": {"kind": "reset"}, "ended_by_vcpu": 0, "entry": "pvh",
            "first_run_ns": 1, "end_ns": 2, "devices": {}, "virtio_bad_accesses": 0,
            "vcpus": [{"index": 0, "first_run_ns": 1, "kvm_stats": {"Err": "none"}, "exits": {
                "by_kind": {}, "by_port": {"1016": latency(3, 30)}, "by_mmio_addr": {},
            }}],
            "boot_markers": [], "unclaimed_ports": {}, "unclaimed_mmio": {},
            "memory": {"max_rss_kib": 0, "guest_resident_kib": 0, "vmm_overhead_kib": 0},
        }))
        .unwrap();
        assert_eq!(exit_rows(&account).len(), 1);
        assert_eq!(beyond_limits_line(&account), "");
    }
}
