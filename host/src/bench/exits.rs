//! Exits per benchmark: each benchmark's window in the VMM's account
//! (`vmm.json` `windows`, kvm backend) joined with its result by the
//! window id the guest marked (the result's `window`), as exits per
//! operation by kind, KVM's statistics per operation (`exits` counts the
//! exits KVM handled in the kernel too) and the VMM's mean handling time.
//! Only our VMM keeps windows; under QEMU each benchmark says why it has
//! none.

use crate::results::VmRecord;
use crate::vmm_account::{VmmAccount, VmmWindow};

use super::record::{BenchExits, ExitsOfKind, StatDelta};

/// Why a QEMU VM's benchmarks have no exits.
pub const QEMU_HAS_NONE: &str =
    "QEMU does not attribute exits to a guest's windows; only the kvm backend's VMM does";

/// Fills in each measured benchmark's exits from the VM's account (kvm
/// backend), or why it has none.
pub fn attribute(vm: &mut VmRecord) {
    let is_kvm = vm.backend == "kvm";
    let account = vm.exits.as_ref();
    for b in vm.benchmarks.iter_mut() {
        let Some(samples) = &b.samples else { continue };
        let found = if !is_kvm {
            Err(QEMU_HAS_NONE.to_string())
        } else {
            match account {
                None => Err("the VMM wrote no account of the VM".to_string()),
                Some(account) => of_window(account, samples.window, samples.ops_in_window),
            }
        };
        match found {
            Ok(exits) => {
                b.exits = Some(exits);
                b.exits_why_none = None;
            }
            Err(why) => {
                b.exits = None;
                b.exits_why_none = Some(why);
            }
        }
    }
}

/// Window `id`'s exits over `ops` operations, or why there are none. With
/// several windows of one id (a guest that marked it twice) the last that
/// ended counts.
pub fn of_window(account: &VmmAccount, id: u16, ops: u64) -> Result<BenchExits, String> {
    let windows: Vec<&VmmWindow> = account.windows.iter().filter(|w| w.id == id).collect();
    let Some(window) = windows.iter().rev().find(|w| w.end_ns.is_some()) else {
        return Err(if !windows.is_empty() {
            format!("window {id} never ended")
        } else if account.windows_not_kept > 0 {
            format!(
                "the VMM kept no window {id} (it keeps the first {}; {} more were counted only)",
                account.windows.len(),
                account.windows_not_kept
            )
        } else {
            format!("the guest marked no window {id}")
        });
    };
    if ops == 0 {
        return Err(format!("window {id} holds no operation"));
    }
    let per_op = |n: u64| n as f64 / ops as f64;
    let userspace: std::collections::BTreeMap<String, ExitsOfKind> = window
        .exits
        .iter()
        .flatten()
        .map(|(kind, e)| {
            (
                kind.clone(),
                ExitsOfKind {
                    count: e.count,
                    total_ns: e.total_ns,
                    per_op: per_op(e.count),
                },
            )
        })
        .collect();
    let count: u64 = userspace
        .values()
        .map(|e| e.count)
        .fold(0, u64::saturating_add);
    let total_ns: u64 = userspace
        .values()
        .map(|e| e.total_ns)
        .fold(0, u64::saturating_add);
    let kvm = match &window.kvm_stats {
        Some(Ok(stats)) => stats
            .iter()
            .filter(|(_, delta)| **delta > 0)
            .map(|(name, delta)| {
                (
                    name.clone(),
                    StatDelta {
                        delta: *delta,
                        per_op: per_op(*delta),
                    },
                )
            })
            .collect(),
        _ => Default::default(),
    };
    Ok(BenchExits {
        window: id,
        ops,
        window_ns: window.end_ns.map(|end| end.saturating_sub(window.start_ns)),
        userspace_per_op: per_op(count),
        vmm_mean_ns: (count > 0).then(|| total_ns as f64 / count as f64),
        userspace,
        kvm,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::vmm_account::WindowExits;

    fn account(windows: Vec<VmmWindow>, not_kept: u64) -> VmmAccount {
        let mut a: VmmAccount = serde_json::from_value(serde_json::json!({
            "end": {"kind": "reset"}, "ended_by_vcpu": null, "entry": "pvh",
            "first_run_ns": 1, "end_ns": 2, "vcpus": [], "devices": {}, "boot_markers": [],
            "unclaimed_ports": {}, "unclaimed_mmio": {}, "virtio_bad_accesses": 0,
            "memory": {"max_rss_kib": 0, "guest_resident_kib": 0, "vmm_overhead_kib": 0}
        }))
        .unwrap();
        a.windows = windows;
        a.windows_not_kept = not_kept;
        a
    }

    fn window(id: u16, end: Option<u64>, io_in: u64, exits: u64) -> VmmWindow {
        VmmWindow {
            id,
            start_ns: 1_000,
            start_vcpu: 0,
            end_ns: end,
            end_vcpu: end.map(|_| 0),
            exits: end.map(|_| {
                BTreeMap::from([(
                    "io_in".to_string(),
                    WindowExits {
                        count: io_in,
                        total_ns: io_in * 2_000,
                    },
                )])
            }),
            kvm_stats: end.map(|_| {
                Ok(BTreeMap::from([
                    ("exits".to_string(), exits),
                    ("halt_exits".to_string(), 0),
                ]))
            }),
        }
    }

    #[test]
    fn a_window_gives_exits_per_operation_and_the_vmms_time() {
        let a = account(
            vec![
                window(3, Some(5_000), 1000, 1010),
                window(4, Some(9_000), 0, 2000),
            ],
            0,
        );
        let port = of_window(&a, 3, 1000).unwrap();
        assert_eq!(port.userspace["io_in"].per_op, 1.0);
        assert_eq!(port.userspace_per_op, 1.0);
        assert_eq!(port.vmm_mean_ns, Some(2000.0));
        assert_eq!(port.kvm["exits"].per_op, 1.01);
        assert!(
            !port.kvm.contains_key("halt_exits"),
            "zero deltas are left out"
        );
        assert_eq!(port.window_ns, Some(4_000));
        let cpuid = of_window(&a, 4, 1000).unwrap();
        assert_eq!(cpuid.userspace_per_op, 0.0);
        assert_eq!(cpuid.vmm_mean_ns, None);
        assert_eq!(cpuid.kvm["exits"].per_op, 2.0);
    }

    #[test]
    fn a_missing_window_says_why() {
        let a = account(vec![window(1, None, 0, 0)], 0);
        assert_eq!(of_window(&a, 1, 10).unwrap_err(), "window 1 never ended");
        assert_eq!(
            of_window(&a, 2, 10).unwrap_err(),
            "the guest marked no window 2"
        );
        let full = account(vec![window(1, Some(2_000), 0, 0)], 7);
        assert!(of_window(&full, 9, 10)
            .unwrap_err()
            .contains("7 more were counted only"));
        assert!(of_window(&full, 1, 0).unwrap_err().contains("no operation"));
    }
}
