//! A systemd guest's own account of its boot, read the way `systemd-analyze`
//! reads it, and checked against what `systemd-analyze time` printed in the
//! same guest.
//!
//! systemd keeps its boot timestamps on CLOCK_MONOTONIC (microseconds since
//! the kernel started, firmware and loader as offsets before that). From
//! them `systemd-analyze time` prints (systemd 252, `analyze-time-data.c`):
//!
//! | phase | from |
//! | --- | --- |
//! | firmware | firmware − loader (only when set: EFI) |
//! | loader | loader (only when set) |
//! | kernel | initrd, or userspace when there is no initrd (− kernel, normally 0) |
//! | initrd | userspace − initrd (only with a systemd initrd) |
//! | userspace | finish − userspace |
//! | total | firmware + finish |
//!
//! and "`<target>` reached after X in userspace": the default target's
//! activation − userspace. vmbench computes the same from the same
//! timestamps, so the two agree to the millisecond `systemd-analyze` prints;
//! [`check_against_analyze`] says when they do not (a sign the report or its
//! reading is wrong).
//!
//! With vmbench's agent as the initramfs, systemd starts on the real root
//! and knows no initrd: its "kernel" then includes the agent's initrd phase,
//! which vmbench reports separately (`phases_ms.initrd`).

use serde::{Deserialize, Serialize};
use vmbench_proto::{SystemdReport, SystemdTimestamps, UnitTimes};

/// systemd's phases in milliseconds; absent where systemd has no value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SystemdPhases {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firmware: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loader: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initrd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub userspace: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<f64>,
    /// The default target's activation after userspace began.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_reached: Option<f64>,
}

/// What results.json keeps of a systemd guest: its raw report (per-unit
/// times included, so `blame` and `critical-chain` can be rebuilt), the
/// phases read from it, and the cross-check.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SystemdRecord {
    pub version: String,
    pub default_target: String,
    /// `running`, or `degraded` when units failed (see `failed_units`).
    #[serde(default)]
    pub system_state: String,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub failed_units: Vec<String>,
    pub phases_ms: SystemdPhases,
    pub timestamps_us: SystemdTimestamps,
    /// `systemd-analyze time` as the guest printed it.
    pub analyze_time: String,
    /// Whether vmbench's phases agree with that text to its millisecond.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agrees_with_analyze: Option<bool>,
    pub units: Vec<UnitTimes>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub problems: Vec<String>,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1e3
}

fn set(us: u64) -> Option<u64> {
    (us > 0).then_some(us)
}

/// The phases `systemd-analyze time` prints, from the same timestamps.
pub fn phases(t: &SystemdTimestamps, units: &[UnitTimes], default_target: &str) -> SystemdPhases {
    let kernel_done = set(t.initrd_us).or(set(t.userspace_us));
    let userspace = set(t.userspace_us);
    let finish = set(t.finish_us);
    let since = |from: Option<u64>, to: Option<u64>| Some(ms(to?.checked_sub(from?)?));
    let target_active = units
        .iter()
        .find(|u| u.id == default_target)
        .and_then(|u| set(u.active_us));
    SystemdPhases {
        firmware: set(t.firmware_us).map(|f| ms(f.saturating_sub(t.loader_us))),
        loader: set(t.loader_us).map(ms),
        kernel: kernel_done.map(|k| ms(k.saturating_sub(t.kernel_us))),
        initrd: set(t.initrd_us).and_then(|i| since(Some(i), userspace)),
        userspace: since(userspace, finish),
        // Guest numbers: a sum past u64 is no total (`systemd-analyze`
        // would print nonsense too), never a wrapped or panicking one.
        total: finish.and_then(|f| f.checked_add(t.firmware_us)).map(ms),
        target_reached: since(userspace, target_active),
    }
}

impl SystemdRecord {
    pub fn from_report(report: SystemdReport) -> SystemdRecord {
        let phases_ms = phases(&report.timestamps, &report.units, &report.default_target);
        let agrees_with_analyze = (!report.analyze_time.trim().is_empty())
            .then(|| check_against_analyze(&phases_ms, &report.analyze_time).is_ok());
        SystemdRecord {
            version: report.version,
            default_target: report.default_target,
            system_state: report.system_state,
            failed_units: report.failed_units,
            phases_ms,
            timestamps_us: report.timestamps,
            analyze_time: report.analyze_time,
            agrees_with_analyze,
            units: report.units,
            problems: report.problems,
        }
    }

    /// The units that took longest to activate, as `systemd-analyze blame`
    /// lists them (activating → active), longest first.
    pub fn blame(&self) -> Vec<(&str, f64)> {
        let mut rows: Vec<(&str, f64)> = self
            .units
            .iter()
            .filter_map(|u| {
                let took = set(u.active_us)?.checked_sub(set(u.activating_us)?)?;
                Some((u.id.as_str(), ms(took)))
            })
            .collect();
        rows.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
        rows
    }
}

/// What `systemd-analyze time` printed, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AnalyzeTime {
    pub firmware: Option<f64>,
    pub loader: Option<f64>,
    pub kernel: Option<f64>,
    pub initrd: Option<f64>,
    pub userspace: Option<f64>,
    pub total: Option<f64>,
    pub target_reached: Option<f64>,
}

/// A systemd timespan ("1min 2.345s", "812ms", "2.001s", "1h 3min 4s") in
/// milliseconds.
pub fn parse_timespan_ms(text: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut any = false;
    for word in text.split_whitespace() {
        let split = word.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (number, unit) = word.split_at(split);
        let value: f64 = number.parse().ok()?;
        let scale = match unit {
            "us" | "µs" => 1e-3,
            "ms" => 1.0,
            "s" => 1e3,
            "min" => 60e3,
            "h" => 3600e3,
            "d" => 86_400e3,
            _ => return None,
        };
        total += value * scale;
        any = true;
    }
    any.then_some(total)
}

/// Reads `systemd-analyze time`'s two lines:
/// `Startup finished in 1.2s (kernel) + 3.4s (userspace) = 4.6s` and
/// `multi-user.target reached after 3.3s in userspace.`
pub fn parse_analyze_time(text: &str) -> Option<AnalyzeTime> {
    let mut out = AnalyzeTime::default();
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Startup finished in "))?;
    let (parts, total) = match line.rsplit_once(" = ") {
        Some((parts, total)) => (parts, parse_timespan_ms(total)),
        None => (line, None),
    };
    out.total = total;
    for part in parts.split(" + ") {
        let (span, label) = part.trim().rsplit_once(" (")?;
        let value = parse_timespan_ms(span)?;
        match label.trim_end_matches(')') {
            "firmware" => out.firmware = Some(value),
            "loader" => out.loader = Some(value),
            "kernel" => out.kernel = Some(value),
            "initrd" => out.initrd = Some(value),
            "userspace" => out.userspace = Some(value),
            _ => {}
        }
    }
    out.target_reached = text.lines().find_map(|l| {
        let after = l.split_once(" reached after ")?.1;
        parse_timespan_ms(after.strip_suffix(" in userspace.")?)
    });
    Some(out)
}

/// Whether `ours` agrees with what `systemd-analyze time` printed, to the
/// millisecond it prints (it truncates or rounds to 1 ms, or shows fewer
/// digits for longer spans: "1min 2.345s"); the first disagreement otherwise.
pub fn check_against_analyze(ours: &SystemdPhases, analyze: &str) -> Result<(), String> {
    let theirs = parse_analyze_time(analyze)
        .ok_or_else(|| format!("cannot read systemd-analyze's output: {analyze:?}"))?;
    let pairs = [
        ("firmware", ours.firmware, theirs.firmware),
        ("loader", ours.loader, theirs.loader),
        ("kernel", ours.kernel, theirs.kernel),
        ("initrd", ours.initrd, theirs.initrd),
        ("userspace", ours.userspace, theirs.userspace),
        ("total", ours.total, theirs.total),
        ("target reached", ours.target_reached, theirs.target_reached),
    ];
    for (name, ours, theirs) in pairs {
        match (ours, theirs) {
            (Some(a), Some(b)) if (a - b).abs() < 1.0 => {}
            (None, None) => {}
            // systemd prints no "reached" line if the target is not active yet.
            (Some(_), None) if name == "target reached" => {}
            (a, b) => {
                return Err(format!(
                    "{name}: vmbench reads {} ms, systemd-analyze printed {} ms",
                    a.map_or("nothing".into(), |v| format!("{v:.3}")),
                    b.map_or("nothing".into(), |v| format!("{v:.3}"))
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(id: &str, activating_us: u64, active_us: u64) -> UnitTimes {
        UnitTimes {
            id: id.into(),
            activating_us,
            active_us,
            ..UnitTimes::default()
        }
    }

    #[test]
    fn timespans() {
        assert_eq!(parse_timespan_ms("812ms"), Some(812.0));
        assert_eq!(parse_timespan_ms("2.001s"), Some(2001.0));
        assert_eq!(parse_timespan_ms("1min 2.345s"), Some(62_345.0));
        assert_eq!(parse_timespan_ms("1h 3min 4s"), Some(3_784_000.0));
        assert_eq!(parse_timespan_ms("250us"), Some(0.25));
        assert_eq!(parse_timespan_ms(""), None);
        assert_eq!(parse_timespan_ms("12 parsecs"), None);
        assert_eq!(parse_timespan_ms("s"), None);
    }

    #[test]
    fn phases_as_systemd_analyze_time_reads_them() {
        let t = SystemdTimestamps {
            userspace_us: 1_234_567,
            finish_us: 37_775_100,
            ..SystemdTimestamps::default()
        };
        let units = [unit("multi-user.target", 37_000_000, 37_295_567)];
        let p = phases(&t, &units, "multi-user.target");
        assert_eq!(p.kernel, Some(1234.567));
        assert_eq!(p.initrd, None);
        assert_eq!(p.userspace, Some(36_540.533));
        assert_eq!(p.total, Some(37_775.1));
        assert_eq!(p.target_reached, Some(36_061.0));
        assert_eq!(p.firmware, None);
        // As systemd 252 prints them for these timestamps.
        let analyze = "Startup finished in 1.234s (kernel) + 36.540s (userspace) = 37.775s \n\
                       multi-user.target reached after 36.061s in userspace.\n";
        assert_eq!(check_against_analyze(&p, analyze), Ok(()));
    }

    #[test]
    fn with_firmware_loader_and_a_systemd_initrd() {
        let t = SystemdTimestamps {
            firmware_us: 3_000_000,
            loader_us: 1_000_000,
            initrd_us: 800_000,
            userspace_us: 2_300_000,
            finish_us: 5_300_000,
            ..SystemdTimestamps::default()
        };
        let p = phases(&t, &[], "graphical.target");
        assert_eq!(
            (
                p.firmware,
                p.loader,
                p.kernel,
                p.initrd,
                p.userspace,
                p.total
            ),
            (
                Some(2000.0),
                Some(1000.0),
                Some(800.0),
                Some(1500.0),
                Some(3000.0),
                Some(8300.0)
            )
        );
        let analyze = "Startup finished in 2.000s (firmware) + 1.000s (loader) + 800ms (kernel) + 1.500s (initrd) + 3.000s (userspace) = 8.300s";
        assert_eq!(check_against_analyze(&p, analyze), Ok(()));
    }

    #[test]
    fn a_disagreement_is_named() {
        let t = SystemdTimestamps {
            userspace_us: 1_000_000,
            finish_us: 5_000_000,
            ..SystemdTimestamps::default()
        };
        let p = phases(&t, &[], "multi-user.target");
        let err = check_against_analyze(
            &p,
            "Startup finished in 1.000s (kernel) + 4.100s (userspace) = 5.100s",
        )
        .unwrap_err();
        assert!(
            err.starts_with("userspace: vmbench reads 4000.000 ms"),
            "{err}"
        );
        assert!(check_against_analyze(&p, "Bootup is not yet finished").is_err());
    }

    /// Found by the systemd_record fuzz target: a firmware time and a
    /// finish time that add up past u64 panicked the orchestrator.
    #[test]
    fn timestamps_that_overflow_give_no_total() {
        let t = SystemdTimestamps {
            firmware_us: u64::MAX,
            loader_us: 1,
            userspace_us: u64::MAX - 1,
            finish_us: 2,
            ..SystemdTimestamps::default()
        };
        let p = phases(&t, &[], "multi-user.target");
        assert_eq!(p.total, None);
        assert_eq!(p.userspace, None, "finish before userspace");
        assert_eq!(p.firmware, Some((u64::MAX - 1) as f64 / 1e3));
        let record = SystemdRecord::from_report(SystemdReport {
            timestamps: t,
            analyze_time: "Startup finished in 1.234s (kernel) + 36.540s (userspace) = 37.775s"
                .into(),
            ..SystemdReport::default()
        });
        assert_eq!(record.agrees_with_analyze, Some(false));
    }

    #[test]
    fn timestamps_past_u64_give_no_total() {
        let t = SystemdTimestamps {
            firmware_us: u64::MAX,
            userspace_us: 1,
            finish_us: 2,
            ..SystemdTimestamps::default()
        };
        let p = phases(&t, &[], "multi-user.target");
        assert_eq!(p.total, None);
        assert_eq!(p.userspace, Some(0.001));
    }

    proptest::proptest! {
        /// Whatever numbers and text a guest sends as its systemd report,
        /// reading it never panics or overflows: every phase is a finite,
        /// non-negative number of milliseconds, or absent.
        #[test]
        fn any_systemd_report_is_read_without_panic(
            stamps in proptest::collection::vec(
                proptest::prop_oneof![proptest::prelude::any::<u64>(), 0..10_000_000u64, proptest::strategy::Just(u64::MAX)],
                12,
            ),
            units in proptest::collection::vec(
                (proptest::prelude::any::<u64>(), proptest::prelude::any::<u64>(), proptest::prelude::any::<bool>()),
                0..6,
            ),
            analyze in proptest::prop_oneof![
                "\\PC{0,80}",
                "Startup finished in [0-9.]{1,25}(us|ms|s|min|h|d) \\((kernel|userspace|firmware)\\) \\+ [0-9.]{1,25}s \\(userspace\\) = [0-9.]{1,400}s",
            ],
        ) {
            let timestamps = SystemdTimestamps {
                firmware_us: stamps[0],
                loader_us: stamps[1],
                kernel_us: stamps[2],
                initrd_us: stamps[3],
                userspace_us: stamps[4],
                finish_us: stamps[5],
                security_start_us: stamps[6],
                security_finish_us: stamps[7],
                generators_start_us: stamps[8],
                generators_finish_us: stamps[9],
                units_load_start_us: stamps[10],
                units_load_finish_us: stamps[11],
            };
            let units: Vec<UnitTimes> = units
                .into_iter()
                .map(|(activating_us, active_us, target)| UnitTimes {
                    id: if target { "multi-user.target".into() } else { "x.service".into() },
                    activating_us,
                    active_us,
                    ..UnitTimes::default()
                })
                .collect();
            let record = SystemdRecord::from_report(SystemdReport {
                timestamps,
                units,
                default_target: "multi-user.target".into(),
                analyze_time: analyze.clone(),
                ..SystemdReport::default()
            });
            let p = record.phases_ms;
            for phase in [p.firmware, p.loader, p.kernel, p.initrd, p.userspace, p.total, p.target_reached]
                .into_iter()
                .flatten()
            {
                proptest::prop_assert!(phase.is_finite() && phase >= 0.0, "{p:?}");
            }
            for (_, took) in record.blame() {
                proptest::prop_assert!(took.is_finite() && took >= 0.0);
            }
            let _ = parse_analyze_time(&analyze);
        }
    }

    #[test]
    fn unset_timestamps_give_no_phases() {
        let p = phases(&SystemdTimestamps::default(), &[], "multi-user.target");
        assert_eq!(p, SystemdPhases::default());
    }

    #[test]
    fn blame_lists_the_slowest_activations_first() {
        let record = SystemdRecord::from_report(SystemdReport {
            units: vec![
                unit("a.service", 100, 5_100),
                unit("b.service", 100, 20_100),
                unit("never.service", 0, 0),
                unit("odd.service", 9_000, 100),
            ],
            ..SystemdReport::default()
        });
        assert_eq!(
            record.blame(),
            vec![("b.service", 20.0), ("a.service", 5.0)]
        );
        assert_eq!(record.agrees_with_analyze, None, "nothing to check against");
    }
}
