//! The text tables `vmbench boot` prints: one row per VM, then the aggregate.

use std::fmt::Write;

use crate::report::stats::Summary;
use crate::results::{RunResults, VmRecord};

fn ms(value: Option<f64>) -> String {
    value.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".to_string())
}

/// Rows of cells as aligned text; the first row is the header.
fn render(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            // First column left-aligned (names), the rest right-aligned (numbers).
            if c == 0 {
                let _ = write!(line, "{cell:<w$}", w = widths[c]);
            } else {
                let _ = write!(line, "  {cell:>w$}", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn vm_row(vm: &VmRecord) -> Vec<String> {
    let p = &vm.phases_ms;
    vec![
        format!("vm-{}", vm.id),
        vm.status.as_str().to_string(),
        ms(p.total),
        ms(p.vmm),
        ms(p.kernel),
        ms(p.guest_kernel),
        ms(p.userspace_any()),
        ms(p.shutdown),
    ]
}

fn summary_row(name: &str, summary: Option<&Summary>) -> Vec<String> {
    match summary {
        Some(s) => vec![
            name.to_string(),
            s.n.to_string(),
            format!("{:.1}", s.mean),
            format!("{:.1}", s.median),
            format!("{:.1}", s.min),
            format!("{:.1}", s.max),
            format!("{:.1}", s.stddev),
        ],
        None => vec![name.to_string(), "0".into(), "-".into(), "-".into(), "-".into(), "-".into(), "-".into()],
    }
}

/// The per-VM table and the aggregate, as `vmbench boot` prints them.
pub fn boot_report(results: &RunResults) -> String {
    let mut rows = vec![[
        "vm", "status", "total ms", "vmm ms", "kernel ms", "guest kernel ms", "userspace ms", "shutdown ms",
    ]
    .map(String::from)
    .to_vec()];
    rows.extend(results.vms.iter().map(vm_row));
    let mut out = render(&rows);
    let not_ok: Vec<&VmRecord> = results.vms.iter().filter(|v| v.error.is_some()).collect();
    for vm in &not_ok {
        let _ = writeln!(out, "vm-{} {}: {}", vm.id, vm.status.as_str(), vm.error.as_deref().unwrap_or(""));
    }
    for vm in &results.vms {
        for warning in &vm.warnings {
            let _ = writeln!(out, "vm-{} warning: {warning}", vm.id);
        }
    }
    if let Some(agg) = &results.aggregate {
        out.push('\n');
        let rows = vec![
            ["phase (ok VMs)", "n", "mean ms", "median ms", "min ms", "max ms", "stddev ms"].map(String::from).to_vec(),
            summary_row("total", agg.total_ms.as_ref()),
            summary_row("guest kernel", agg.guest_kernel_ms.as_ref()),
            summary_row("userspace", agg.userspace_ms.as_ref()),
            summary_row("shutdown", agg.shutdown_ms.as_ref()),
        ];
        out.push_str(&render(&rows));
        let env = &results.environment;
        let _ = writeln!(
            out,
            "\n{}/{} VMs ok; all ready after {} ms; wall {:.1} ms; vmbench CPU {:.1} ms per VM ({} backend, {}, {} MiB, {} vCPU)",
            agg.ok,
            agg.vms,
            ms(agg.all_ready_ms),
            agg.wall_ms,
            agg.vmbench_cpu_ms_per_vm,
            env.backend,
            env.accel,
            env.mem_mib,
            env.vcpus,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned() {
        let text = render(&[
            vec!["a".into(), "long header".into()],
            vec!["bbbb".into(), "1.0".into()],
        ]);
        assert_eq!(text, "a     long header\nbbbb          1.0\n");
    }

    #[test]
    fn missing_values_show_a_dash() {
        assert_eq!(ms(None), "-");
        assert_eq!(ms(Some(1.26)), "1.3");
    }
}
