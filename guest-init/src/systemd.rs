//! What systemd says about the boot, asked the way an administrator would:
//! `systemctl show` for the manager's timestamps and each unit's, `systemctl
//! get-default`, and `systemd-analyze time` (sent along so the host can check
//! its own reading of the timestamps against systemd's). Everything is run
//! after the boot finished, so none of it is boot time.

use std::process::Command;

use vmbench_proto::{SystemdReport, SystemdTimestamps, UnitTimes};

/// The manager's timestamps, by `systemctl show` property.
const MANAGER_PROPERTIES: &[&str] = &[
    "Version",
    "FirmwareTimestampMonotonic",
    "LoaderTimestampMonotonic",
    "KernelTimestampMonotonic",
    "InitRDTimestampMonotonic",
    "UserspaceTimestampMonotonic",
    "FinishTimestampMonotonic",
    "SecurityStartTimestampMonotonic",
    "SecurityFinishTimestampMonotonic",
    "GeneratorsStartTimestampMonotonic",
    "GeneratorsFinishTimestampMonotonic",
    "UnitsLoadStartTimestampMonotonic",
    "UnitsLoadFinishTimestampMonotonic",
];

const UNIT_PROPERTIES: &[&str] = &[
    "Id",
    "InactiveExitTimestampMonotonic",
    "ActiveEnterTimestampMonotonic",
    "ActiveExitTimestampMonotonic",
    "InactiveEnterTimestampMonotonic",
    "After",
];

/// Units reported at most (a frame holds 1 MiB; a minimal Debian has ~150).
const MAX_UNITS: usize = 2000;

/// Runs a command quietly (no pager, no colours); its stdout, or why not.
fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .env("SYSTEMD_PAGER", "")
        .env("SYSTEMD_COLORS", "0")
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{program} {} exited with {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Blocks until systemd says the boot is over (running or degraded); the
/// answer, or why it could not be asked.
pub fn wait_for_boot() -> Result<String, String> {
    // is-system-running exits non-zero for "degraded", which is still an
    // ended boot: only its output matters.
    let out = Command::new("systemctl")
        .args(["is-system-running", "--wait"])
        .output()
        .map_err(|e| format!("systemctl: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `systemctl show` output: `Key=Value` lines, units separated by a blank line.
pub fn parse_show(text: &str) -> Vec<Vec<(&str, &str)>> {
    let mut blocks = Vec::new();
    let mut block = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !block.is_empty() {
                blocks.push(std::mem::take(&mut block));
            }
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            block.push((key, value));
        }
    }
    if !block.is_empty() {
        blocks.push(block);
    }
    blocks
}

fn get<'a>(block: &[(&str, &'a str)], key: &str) -> &'a str {
    block
        .iter()
        .find(|(k, _)| *k == key)
        .map_or("", |(_, v)| *v)
}

fn us(block: &[(&str, &str)], key: &str) -> u64 {
    get(block, key).trim().parse().unwrap_or(0)
}

pub fn timestamps(block: &[(&str, &str)]) -> SystemdTimestamps {
    SystemdTimestamps {
        firmware_us: us(block, "FirmwareTimestampMonotonic"),
        loader_us: us(block, "LoaderTimestampMonotonic"),
        kernel_us: us(block, "KernelTimestampMonotonic"),
        initrd_us: us(block, "InitRDTimestampMonotonic"),
        userspace_us: us(block, "UserspaceTimestampMonotonic"),
        finish_us: us(block, "FinishTimestampMonotonic"),
        security_start_us: us(block, "SecurityStartTimestampMonotonic"),
        security_finish_us: us(block, "SecurityFinishTimestampMonotonic"),
        generators_start_us: us(block, "GeneratorsStartTimestampMonotonic"),
        generators_finish_us: us(block, "GeneratorsFinishTimestampMonotonic"),
        units_load_start_us: us(block, "UnitsLoadStartTimestampMonotonic"),
        units_load_finish_us: us(block, "UnitsLoadFinishTimestampMonotonic"),
    }
}

pub fn unit(block: &[(&str, &str)]) -> Option<UnitTimes> {
    let id = get(block, "Id");
    (!id.is_empty()).then(|| UnitTimes {
        id: id.to_string(),
        activating_us: us(block, "InactiveExitTimestampMonotonic"),
        active_us: us(block, "ActiveEnterTimestampMonotonic"),
        deactivating_us: us(block, "ActiveExitTimestampMonotonic"),
        inactive_us: us(block, "InactiveEnterTimestampMonotonic"),
        after: get(block, "After")
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    })
}

/// The unit names of `systemctl list-units --all --plain --no-legend`.
pub fn unit_names(list: &str) -> Vec<&str> {
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| name.contains('.'))
        .collect()
}

fn property_args(properties: &[&'static str]) -> Vec<String> {
    properties
        .iter()
        .map(|p| format!("--property={p}"))
        .collect()
}

/// Gathers the report; what fails is listed in `problems`, the rest is kept.
pub fn gather() -> SystemdReport {
    let mut report = SystemdReport::default();
    let manager_args = property_args(MANAGER_PROPERTIES);
    let mut args: Vec<&str> = vec!["show"];
    args.extend(manager_args.iter().map(String::as_str));
    match run("systemctl", &args) {
        Ok(text) => {
            let blocks = parse_show(&text);
            if let Some(block) = blocks.first() {
                report.version = get(block, "Version").to_string();
                report.timestamps = timestamps(block);
            }
        }
        Err(e) => report.problems.push(e),
    }
    match run("systemctl", &["get-default"]) {
        Ok(text) => report.default_target = text.trim().to_string(),
        Err(e) => report.problems.push(e),
    }
    match run(
        "systemctl",
        &["list-units", "--all", "--plain", "--no-legend", "--full"],
    ) {
        Ok(list) => {
            let names = unit_names(&list);
            let unit_args = property_args(UNIT_PROPERTIES);
            let mut args: Vec<&str> = vec!["show"];
            args.extend(unit_args.iter().map(String::as_str));
            args.push("--");
            args.extend(names.iter().take(MAX_UNITS));
            match run("systemctl", &args) {
                Ok(text) => {
                    report.units = parse_show(&text).iter().filter_map(|b| unit(b)).collect()
                }
                Err(e) => report.problems.push(e),
            }
        }
        Err(e) => report.problems.push(e),
    }
    match run(
        "systemctl",
        &[
            "list-units",
            "--failed",
            "--all",
            "--plain",
            "--no-legend",
            "--full",
        ],
    ) {
        Ok(list) => {
            report.failed_units = unit_names(&list).into_iter().map(str::to_string).collect()
        }
        Err(e) => report.problems.push(e),
    }
    match run("systemd-analyze", &["time"]) {
        Ok(text) => report.analyze_time = text.trim().to_string(),
        Err(e) => report.problems.push(e),
    }
    report
}

/// systemd's own start (PID 1 on the real root), CLOCK_MONOTONIC ns, for a
/// guest that booted straight from its disk and left no handoff.
pub fn userspace_start_ns() -> Option<u64> {
    let text = run(
        "systemctl",
        &["show", "--property=UserspaceTimestampMonotonic"],
    )
    .ok()?;
    let blocks = parse_show(&text);
    let us = us(blocks.first()?, "UserspaceTimestampMonotonic");
    (us > 0).then_some(us * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANAGER: &str =
        "Version=252.38-1~deb12u1\nFirmwareTimestampMonotonic=0\nLoaderTimestampMonotonic=0\n\
KernelTimestampMonotonic=0\nInitRDTimestampMonotonic=0\nUserspaceTimestampMonotonic=1234567\n\
FinishTimestampMonotonic=37775100\nGeneratorsStartTimestampMonotonic=1400000\n";

    const UNITS: &str = "Id=systemd-journald.service\nInactiveExitTimestampMonotonic=1500000\n\
ActiveEnterTimestampMonotonic=1900000\nActiveExitTimestampMonotonic=0\nInactiveEnterTimestampMonotonic=0\n\
After=systemd-journald.socket -.mount system.slice\n\n\
Id=multi-user.target\nInactiveExitTimestampMonotonic=37000000\nActiveEnterTimestampMonotonic=37295567\n\
ActiveExitTimestampMonotonic=0\nInactiveEnterTimestampMonotonic=0\nAfter=\n";

    #[test]
    fn manager_timestamps() {
        let blocks = parse_show(MANAGER);
        assert_eq!(blocks.len(), 1);
        let t = timestamps(&blocks[0]);
        assert_eq!(
            (t.userspace_us, t.finish_us, t.initrd_us),
            (1_234_567, 37_775_100, 0)
        );
        assert_eq!(t.generators_start_us, 1_400_000);
        assert_eq!(get(&blocks[0], "Version"), "252.38-1~deb12u1");
    }

    #[test]
    fn units_and_their_order() {
        let units: Vec<UnitTimes> = parse_show(UNITS).iter().filter_map(|b| unit(b)).collect();
        assert_eq!(units.len(), 2);
        assert_eq!(units[0].id, "systemd-journald.service");
        assert_eq!(
            (units[0].activating_us, units[0].active_us),
            (1_500_000, 1_900_000)
        );
        assert_eq!(
            units[0].after,
            ["systemd-journald.socket", "-.mount", "system.slice"]
        );
        assert!(units[1].after.is_empty());
    }

    #[test]
    fn junk_is_skipped_not_fatal() {
        assert!(parse_show("").is_empty());
        let blocks = parse_show(
            "no equals sign\n\nId=\nAfter=x\n\nId=a.service\nActiveEnterTimestampMonotonic=n/a\n",
        );
        let units: Vec<UnitTimes> = blocks.iter().filter_map(|b| unit(b)).collect();
        assert_eq!(units.len(), 1);
        assert_eq!(units[0].active_us, 0);
    }

    #[test]
    fn unit_names_from_list_units() {
        let list = "-.mount loaded active mounted Root Mount\n\
                    systemd-journald.service loaded active running Journal Service\n\
                    \n";
        assert_eq!(unit_names(list), ["-.mount", "systemd-journald.service"]);
    }
}
