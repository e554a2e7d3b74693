//! The text tables `vmbench boot` prints: one row per VM, then the aggregate.

use std::fmt::Write;

use crate::report::stats::Summary;
use crate::results::{RunResults, VmRecord};

fn ms(value: Option<f64>) -> String {
    value
        .map(|v| format!("{v:.1}"))
        .unwrap_or_else(|| "-".to_string())
}

/// Rows of cells as aligned text; the first row is the header.
fn render(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
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

/// A per-VM column: header and how to read it.
type Column = (&'static str, fn(&VmRecord) -> Option<f64>);

const VM_COLUMNS: &[Column] = &[
    ("total ms", |v| v.phases_ms.total),
    ("vmm ms", |v| v.phases_ms.vmm),
    ("kernel ms", |v| v.phases_ms.kernel),
    ("to init ms", |v| v.phases_ms.vmm_and_kernel),
    ("guest kernel ms", |v| v.phases_ms.guest_kernel),
    ("userspace ms", |v| v.phases_ms.userspace_any()),
    ("shutdown ms", |v| v.phases_ms.shutdown),
];

/// The per-VM table; a column no VM has a value for (a phase this backend
/// cannot see) is left out rather than printed as dashes.
fn vm_table(vms: &[VmRecord]) -> String {
    let shown: Vec<&Column> = VM_COLUMNS
        .iter()
        .enumerate()
        .filter(|(i, (_, get))| *i == 0 || vms.iter().any(|v| get(v).is_some()))
        .map(|(_, c)| c)
        .collect();
    let mut header = vec!["vm".to_string(), "status".to_string()];
    header.extend(shown.iter().map(|(name, _)| name.to_string()));
    let mut rows = vec![header];
    for vm in vms {
        let mut row = vec![format!("vm-{}", vm.id), vm.status.as_str().to_string()];
        row.extend(shown.iter().map(|(_, get)| ms(get(vm))));
        rows.push(row);
    }
    render(&rows)
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
        None => vec![
            name.to_string(),
            "0".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
        ],
    }
}

/// The per-VM table and the aggregate, as `vmbench boot` prints them.
pub fn boot_report(results: &RunResults) -> String {
    let mut out = vm_table(&results.vms);
    let not_ok: Vec<&VmRecord> = results.vms.iter().filter(|v| v.error.is_some()).collect();
    for vm in &not_ok {
        let _ = writeln!(
            out,
            "vm-{} {}: {}",
            vm.id,
            vm.status.as_str(),
            vm.error.as_deref().unwrap_or("")
        );
    }
    for vm in &results.vms {
        for warning in &vm.warnings {
            let _ = writeln!(out, "vm-{} warning: {warning}", vm.id);
        }
    }
    if let Some(agg) = &results.aggregate {
        out.push('\n');
        let rows = vec![
            [
                "phase (ok VMs)",
                "n",
                "mean ms",
                "median ms",
                "min ms",
                "max ms",
                "stddev ms",
            ]
            .map(String::from)
            .to_vec(),
            summary_row("total", agg.total_ms.as_ref()),
            summary_row("guest kernel", agg.guest_kernel_ms.as_ref()),
            summary_row("userspace", agg.userspace_ms.as_ref()),
            summary_row("shutdown", agg.shutdown_ms.as_ref()),
        ];
        out.push_str(&render(&rows));
        let env = &results.environment;
        let _ = writeln!(
            out,
            "\n{}/{} VMs ok; all ready after {} ms; wall {:.1} ms; vmbench CPU {:.1} ms per VM, {:.0} ms in all ({} backend, {}, {} MiB, {} vCPU)",
            agg.ok,
            agg.vms,
            ms(agg.all_ready_ms),
            agg.wall_ms,
            agg.vmbench_cpu_ms_per_vm,
            agg.vmbench_cpu_ms_total,
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
    fn columns_no_vm_has_are_left_out() {
        let mut vm = VmRecord::new(0, std::path::Path::new("/x"));
        vm.phases_ms.total = Some(10.0);
        vm.phases_ms.guest_kernel = Some(7.0);
        let text = vm_table(&[vm]);
        assert!(
            text.contains("total ms") && text.contains("guest kernel ms"),
            "{text}"
        );
        assert!(
            !text.contains("vmm ms") && !text.contains("shutdown ms"),
            "{text}"
        );
    }

    #[test]
    fn missing_values_show_a_dash() {
        assert_eq!(ms(None), "-");
        assert_eq!(ms(Some(1.26)), "1.3");
    }
}
