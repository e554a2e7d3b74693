//! The tables `vmbench boot` prints: one row per VM, the systemd guests'
//! own view, errors and warnings, then the aggregate (and each backend's,
//! side by side, with several).

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{grid, ms};
use crate::error_line::printable;
use crate::results::{Aggregate, RunResults, VmRecord};
use crate::stats::Summary;

/// A per-VM column: header and how to read it.
type Column = (&'static str, fn(&VmRecord) -> Option<f64>);

/// Each column is on one clock: the host's unless its header says guest.
const VM_COLUMNS: &[Column] = &[
    ("total ms", |v| v.phases_ms.total),
    ("vmm ms", |v| v.phases_ms.vmm),
    ("kernel ms", |v| v.phases_ms.kernel),
    ("to init ms", |v| v.phases_ms.vmm_and_kernel),
    ("guest kernel ms", |v| v.phases_ms.guest_kernel),
    ("initrd ms", |v| v.phases_ms.initrd),
    ("guest initrd ms", |v| v.phases_ms.guest_initrd),
    ("userspace ms", |v| v.phases_ms.userspace),
    ("guest userspace ms", |v| v.phases_ms.guest_userspace),
    ("shutdown ms", |v| v.phases_ms.shutdown),
];

/// How many of the slowest units the systemd section lists.
const BLAME_UNITS: usize = 5;

/// systemd guests: each VM's phases as `systemd-analyze time` reads them
/// beside the host's view, whether that reading agreed with what
/// `systemd-analyze time` printed in the guest, and the slowest units.
fn systemd_section(vms: &[VmRecord]) -> String {
    let with: Vec<&VmRecord> = vms.iter().filter(|v| v.systemd.is_some()).collect();
    let Some(first) = with.first() else {
        return String::new();
    };
    let mut rows = vec![[
        "systemd's view",
        "kernel ms",
        "initrd ms",
        "userspace ms",
        "total ms",
        "target ms",
        "host initrd ms",
        "host userspace ms",
        "systemd-analyze",
        "state",
    ]
    .map(String::from)
    .to_vec()];
    for vm in &with {
        let Some(sd) = &vm.systemd else { continue };
        let p = &sd.phases_ms;
        rows.push(vec![
            format!("vm-{}", vm.id),
            ms(p.kernel),
            ms(p.initrd),
            ms(p.userspace),
            ms(p.total),
            ms(p.target_reached),
            ms(vm.phases_ms.initrd),
            ms(vm.phases_ms.userspace),
            match sd.agrees_with_analyze {
                Some(true) => "agrees".into(),
                Some(false) => "DIFFERS".into(),
                None => "-".into(),
            },
            match (sd.system_state.as_str(), sd.failed_units.len()) {
                ("", _) => "-".into(),
                (state, 0) => printable(state).into_owned(),
                (state, n) => format!("{} ({n} failed)", printable(state)),
            },
        ]);
    }
    let mut out = String::from(
        "
",
    );
    out.push_str(&grid(&rows));
    let _ = writeln!(
        out,
        "(systemd {}: kernel = until systemd started, which includes vmbench's initramfs; target = {} reached after userspace began)",
        printable(first.systemd.as_ref().map_or("", |s| s.version.as_str())),
        printable(first.systemd.as_ref().map_or("", |s| s.default_target.as_str())),
    );
    if let Some(sd) = &first.systemd {
        let blame = sd.blame();
        if !blame.is_empty() {
            let _ = writeln!(
                out,
                "slowest units of vm-{} (systemd-analyze blame):",
                first.id
            );
            for (unit, took) in blame.iter().take(BLAME_UNITS) {
                let _ = writeln!(out, "  {took:>9.1} ms  {}", printable(unit));
            }
        }
    }
    out
}

/// The per-VM table; a column no VM has a value for (a phase this backend
/// cannot see) is left out rather than printed as dashes.
fn vm_table(vms: &[VmRecord]) -> String {
    let shown: Vec<&Column> = VM_COLUMNS
        .iter()
        .enumerate()
        .filter(|(i, (_, get))| *i == 0 || vms.iter().any(|v| get(v).is_some()))
        .map(|(_, c)| c)
        .collect();
    let several = vms.iter().any(|v| v.backend != vms[0].backend);
    let rounds = vms.iter().any(|v| v.round > 0);
    let mut header = vec!["vm".to_string()];
    if rounds {
        header.push("round".into());
    }
    if several {
        header.push("backend".into());
    }
    header.push("status".into());
    header.extend(shown.iter().map(|(name, _)| name.to_string()));
    let mut rows = vec![header];
    for vm in vms {
        let mut row = vec![format!("vm-{}", vm.id)];
        if rounds {
            let warmup = if vm.warmup { " (warm-up)" } else { "" };
            row.push(format!("{}{warmup}", vm.round));
        }
        if several {
            row.push(vm.backend.clone());
        }
        row.push(vm.status.as_str().to_string());
        row.extend(shown.iter().map(|(_, get)| ms(get(vm))));
        rows.push(row);
    }
    grid(&rows)
}

fn summary_row(name: &str, clock: &str, summary: Option<&Summary>) -> Vec<String> {
    match summary {
        Some(s) => vec![
            name.to_string(),
            clock.to_string(),
            s.n.to_string(),
            format!("{:.1}", s.mean),
            format!("{:.1}", s.median),
            format!("{:.1}", s.min),
            format!("{:.1}", s.max),
            format!("{:.1}", s.stddev),
        ],
        None => vec![
            name.to_string(),
            clock.to_string(),
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
pub fn boot_tables(results: &RunResults) -> String {
    let mut out = vm_table(&results.vms);
    out.push_str(&systemd_section(&results.vms));
    out.push_str(&errors_and_warnings(&results.vms));
    if let Some(agg) = &results.aggregate {
        out.push('\n');
        out.push_str(&aggregate_table(agg));
        if let Some(by_backend) = &results.aggregate_by_backend {
            out.push('\n');
            out.push_str(&side_by_side(by_backend));
        }
        out.push_str(&run_summary(results, agg));
    }
    out
}

/// Each failed VM's error, then every warning, a line each.
fn errors_and_warnings(vms: &[VmRecord]) -> String {
    let mut out = String::new();
    for vm in vms.iter().filter(|v| v.error.is_some()) {
        let _ = writeln!(
            out,
            "vm-{} {}: {}",
            vm.id,
            vm.status.as_str(),
            printable(vm.error.as_deref().unwrap_or(""))
        );
    }
    for vm in vms {
        for warning in &vm.warnings {
            let _ = writeln!(out, "vm-{} warning: {}", vm.id, printable(warning));
        }
    }
    out
}

/// Each phase's statistics over the ok VMs, each on the clock it names
/// (host: CLOCK_MONOTONIC marks; guest: the guest's own; systemd: systemd's
/// in the guest); phases no VM had are left out.
fn aggregate_table(agg: &Aggregate) -> String {
    type Pick = fn(&Aggregate) -> Option<&Summary>;
    // (phase, clock, summary, shown even when no VM had it)
    let phases: [(&str, &str, Pick, bool); 12] = [
        ("total", "host", |a| a.total_ms.as_ref(), true),
        ("vmm", "host", |a| a.vmm_ms.as_ref(), false),
        ("kernel", "host", |a| a.kernel_ms.as_ref(), false),
        ("kernel", "guest", |a| a.guest_kernel_ms.as_ref(), true),
        ("initrd", "host", |a| a.initrd_ms.as_ref(), false),
        ("initrd", "guest", |a| a.guest_initrd_ms.as_ref(), false),
        ("userspace", "host", |a| a.userspace_ms.as_ref(), true),
        (
            "userspace",
            "guest",
            |a| a.guest_userspace_ms.as_ref(),
            false,
        ),
        ("shutdown", "host", |a| a.shutdown_ms.as_ref(), true),
        ("kernel", "systemd", |a| a.systemd_kernel_ms.as_ref(), false),
        ("initrd", "systemd", |a| a.systemd_initrd_ms.as_ref(), false),
        (
            "userspace",
            "systemd",
            |a| a.systemd_userspace_ms.as_ref(),
            false,
        ),
    ];
    let header = [
        "phase (ok VMs)",
        "clock",
        "n",
        "mean ms",
        "median ms",
        "min ms",
        "max ms",
        "stddev ms",
    ];
    let mut rows = vec![header.map(String::from).to_vec()];
    let systemd = agg.systemd_userspace_ms.is_some();
    for (name, clock, pick, always) in phases {
        // systemd's initrd is shown beside its other phases, even empty.
        let shown = always || pick(agg).is_some() || (clock == "systemd" && systemd);
        if shown {
            rows.push(summary_row(name, clock, pick(agg)));
        }
    }
    grid(&rows)
}

/// The run in one line (and the root disk's in another): how many VMs were
/// ok, when all were ready, what vmbench cost, and how the run was set up.
fn run_summary(results: &RunResults, agg: &Aggregate) -> String {
    let mut out = String::new();
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
    if let (Some(create), Some(rootfs)) = (&agg.overlay_create_ms, &env.rootfs) {
        let _ = writeln!(
            out,
            "root disk {} ({}, base sha256 {}): overlays made in {:.2} ms (median), {} KiB written per VM (median)",
            rootfs.path,
            rootfs.format,
            &rootfs.base_sha256[..rootfs.base_sha256.len().min(12)],
            create.median,
            agg.overlay_disk_used_kib
                .as_ref()
                .map_or("-".to_string(), |s| format!("{:.0}", s.median)),
        );
    }
    out
}

/// "median [min–max] (n)" of a phase, or "-".
fn compact(summary: Option<&Summary>) -> String {
    summary.map_or_else(
        || "-".to_string(),
        |s| format!("{:.1} [{:.1}–{:.1}] (n={})", s.median, s.min, s.max, s.n),
    )
}

/// Each backend's phases in its own column (`--backend kvm,qemu`).
fn side_by_side(by_backend: &BTreeMap<String, Aggregate>) -> String {
    type Pick = fn(&Aggregate) -> Option<&Summary>;
    let phases: [(&str, Pick); 6] = [
        ("total (host)", |a| a.total_ms.as_ref()),
        ("vmm (host)", |a| a.vmm_ms.as_ref()),
        ("kernel (host)", |a| a.kernel_ms.as_ref()),
        ("kernel (guest)", |a| a.guest_kernel_ms.as_ref()),
        ("userspace (host)", |a| a.userspace_ms.as_ref()),
        ("shutdown (host)", |a| a.shutdown_ms.as_ref()),
    ];
    let mut header = vec!["phase, median [min–max] ms".to_string()];
    header.extend(by_backend.keys().cloned());
    let mut rows = vec![header];
    for (name, pick) in &phases {
        let mut row = vec![name.to_string()];
        row.extend(by_backend.values().map(|a| compact(pick(a))));
        rows.push(row);
    }
    let mut ok = vec!["ok VMs".to_string()];
    ok.extend(by_backend.values().map(|a| format!("{}/{}", a.ok, a.vms)));
    rows.push(ok);
    grid(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn systemd_guests_get_their_own_section() {
        use vmbench_proto::{SystemdReport, SystemdTimestamps, UnitTimes};
        let mut vm = VmRecord::new(3, std::path::Path::new("/x"));
        vm.phases_ms.initrd = Some(31.0);
        vm.phases_ms.userspace = Some(4100.0);
        vm.systemd = Some(crate::systemd::SystemdRecord::from_report(SystemdReport {
            version: "252".into(),
            timestamps: SystemdTimestamps {
                userspace_us: 900_000,
                finish_us: 4_900_000,
                ..SystemdTimestamps::default()
            },
            units: vec![UnitTimes {
                id: "slow.service".into(),
                activating_us: 1_000_000,
                active_us: 2_500_000,
                ..UnitTimes::default()
            }],
            default_target: "multi-user.target".into(),
            analyze_time: "Startup finished in 900ms (kernel) + 4.000s (userspace) = 4.900s".into(),
            system_state: "degraded".into(),
            failed_units: vec!["systemd-sysctl.service".into()],
            problems: vec![],
        }));
        let text = systemd_section(&[vm]);
        let row = text.lines().find(|l| l.starts_with("vm-3")).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "vm-3", "900.0", "-", "4000.0", "4900.0", "-", "31.0", "4100.0", "agrees",
                "degraded", "(1", "failed)"
            ]
        );
        assert!(text.contains("1500.0 ms  slow.service"), "{text}");
        assert_eq!(
            systemd_section(&[VmRecord::new(0, std::path::Path::new("/x"))]),
            ""
        );
    }

    #[test]
    fn guest_text_is_escaped_in_every_table() {
        use vmbench_proto::{SystemdReport, SystemdTimestamps, UnitTimes};
        const HOSTILE: &str = "\u{1b}[2J\u{1b}]0;owned\u{7}\nvm-9 ok\u{202e}";
        let mut vm = VmRecord::new(0, std::path::Path::new("/x"));
        vm.error = Some(format!("The guest agent failed: {HOSTILE}"));
        vm.warnings = vec![format!("serial log ends: {HOSTILE}")];
        vm.systemd = Some(crate::systemd::SystemdRecord::from_report(SystemdReport {
            version: HOSTILE.into(),
            timestamps: SystemdTimestamps {
                userspace_us: 900_000,
                finish_us: 4_900_000,
                ..SystemdTimestamps::default()
            },
            units: vec![UnitTimes {
                id: format!("{HOSTILE}.service"),
                activating_us: 1_000_000,
                active_us: 2_500_000,
                ..UnitTimes::default()
            }],
            default_target: HOSTILE.into(),
            analyze_time: String::new(),
            system_state: HOSTILE.into(),
            failed_units: vec![HOSTILE.into()],
            problems: vec![],
        }));
        let text = [
            errors_and_warnings(std::slice::from_ref(&vm)),
            systemd_section(&[vm]),
        ]
        .concat();
        let bad: Vec<char> = text
            .chars()
            .filter(|&c| c != '\n' && (c.is_control() || c == '\u{202e}'))
            .collect();
        assert!(bad.is_empty(), "{bad:?} in {text}");
        assert!(
            !text.lines().any(|l| l.starts_with("vm-9")),
            "a guest made a line: {text}"
        );
        assert!(text.contains("\\x1b[2J"), "{text}");
    }
}
