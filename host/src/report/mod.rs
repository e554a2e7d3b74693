//! `vmbench report RUN_OR_RESULTS`: a finished run as pictures — a Chrome
//! trace-event file ([`trace`]), the boot-timeline chart as SVG ([`svg`]),
//! and one self-contained HTML page ([`html`]). Everything here reads
//! results.json alone (from a run directory, a file, or the store's copy of
//! a run); nothing is measured and nothing is made up: a section whose data
//! a run does not hold says so.
//!
//! Times: host marks are CLOCK_MONOTONIC, so every VM of a run shares one
//! axis, whose zero is the earliest VM's spawn. A guest's own marks are on
//! its CLOCK_BOOTTIME (and a systemd guest's units on its CLOCK_MONOTONIC,
//! the same clock before any suspend); they are placed on the host axis so
//! that the guest's Ready coincides with the host's (the host sees it a
//! vsock hop later), or, without a Ready, so that the guest's clock starts
//! at the VM's spawn.

pub mod html;
pub mod svg;
pub mod trace;

use std::path::Path;

use crate::compare::{self, Judge, Side, Verdicts};
use crate::results::{RunResults, VmRecord};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Cannot read {path}: {detail}")]
    Read { path: String, detail: String },
    #[error("{0} holds neither results.json nor A/results.json and B/results.json")]
    NotARun(String),
    #[error("{0} is no run directory, no results.json and no run id (the store: {1})")]
    NotFound(String, String),
    #[error("Run {0} in the store has no results.json attachment")]
    NoResults(String),
    #[error(transparent)]
    Store(#[from] crate::store_commands::Error),
    #[error("Cannot write {path}: {detail}")]
    Write { path: String, detail: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// One variant of a run: `""` for a plain run, `A`/`B` for an A/B run.
#[derive(Debug, Clone)]
pub struct Variant {
    pub name: String,
    pub results: RunResults,
}

/// What a report shows: the run's variants and, for two, B judged against A.
#[derive(Debug, Clone)]
pub struct Report {
    /// Where it came from (a path or a run id), for titles.
    pub source: String,
    pub variants: Vec<Variant>,
    /// For an A/B run: each metric's verdict (ratio B/A and its interval).
    pub verdicts: Option<Verdicts>,
    /// Why there are no verdicts for an A/B run, if so.
    pub verdicts_why_none: Option<String>,
}

fn read_results(path: &Path) -> Result<RunResults> {
    let err = |detail: String| Error::Read {
        path: path.display().to_string(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| err(e.to_string()))
}

impl Report {
    /// A report over these variants; with two, B is judged against A as
    /// `vmbench ab` does (its default α and noise bands).
    pub fn new(source: &str, variants: Vec<Variant>) -> Report {
        let (verdicts, verdicts_why_none) = match variants.as_slice() {
            [a, b] => {
                let sa = Side::of_results(&a.name, &a.results);
                let sb = Side::of_results(&b.name, &b.results);
                match compare::compare(&sa, &sb, Judge::default()) {
                    Ok(v) => (Some(v), None),
                    Err(e) => (None, Some(e.to_string())),
                }
            }
            _ => (None, None),
        };
        Report {
            source: source.to_string(),
            variants,
            verdicts,
            verdicts_why_none,
        }
    }

    /// `RUN_OR_RESULTS`: a run directory (`results.json`, or an A/B run's
    /// `A/` and `B/`), a results.json file, or a run id in the store (its
    /// first characters will do).
    pub fn load(spec: &str, store: Option<&vmbench_store::Location>) -> Result<Report> {
        let path = Path::new(spec);
        if path.is_dir() {
            let plain = path.join("results.json");
            if plain.is_file() {
                let results = read_results(&plain)?;
                return Ok(Report::new(spec, vec![plain_variant(results)]));
            }
            let (a, b) = (path.join("A/results.json"), path.join("B/results.json"));
            if a.is_file() && b.is_file() {
                let variants = vec![
                    Variant {
                        name: "A".into(),
                        results: read_results(&a)?,
                    },
                    Variant {
                        name: "B".into(),
                        results: read_results(&b)?,
                    },
                ];
                return Ok(Report::new(spec, variants));
            }
            return Err(Error::NotARun(spec.to_string()));
        }
        if path.is_file() || spec.ends_with(".json") {
            let results = read_results(path)?;
            return Ok(Report::new(spec, vec![plain_variant(results)]));
        }
        let Some(location) = store else {
            return Err(Error::NotFound(spec.to_string(), "none".into()));
        };
        let mut store = vmbench_store::Store::open(location)
            .map_err(|e| Error::Store(crate::store_commands::Error::Store(e)))?;
        let id = crate::store_commands::full_id(&mut store, spec).map_err(|e| match e {
            crate::store_commands::Error::NoRun(_) => {
                Error::NotFound(spec.to_string(), location.to_string())
            }
            other => Error::Store(other),
        })?;
        let run = store
            .run(&id)
            .map_err(|e| Error::Store(crate::store_commands::Error::Store(e)))?
            .ok_or_else(|| Error::NotFound(spec.to_string(), location.to_string()))?;
        let mut variants = Vec::new();
        for v in &run.variants {
            let Some(att) = run
                .attachments
                .iter()
                .find(|a| a.variant == v.name && a.vm.is_none() && a.name == "results.json")
            else {
                continue;
            };
            let results: RunResults =
                serde_json::from_slice(&att.bytes).map_err(|e| Error::Read {
                    path: format!("run {id}'s results.json"),
                    detail: e.to_string(),
                })?;
            variants.push(Variant {
                name: v.name.clone(),
                results,
            });
        }
        if variants.is_empty() {
            return Err(Error::NoResults(id));
        }
        Ok(Report::new(&id, variants))
    }

    /// Every VM of every variant, with its variant's name.
    pub fn vms(&self) -> impl Iterator<Item = (&str, &VmRecord)> {
        self.variants
            .iter()
            .flat_map(|v| v.results.vms.iter().map(move |vm| (v.name.as_str(), vm)))
    }

    /// The axis's zero: the earliest host mark of any VM (its spawn).
    pub fn origin_ns(&self) -> u64 {
        self.vms()
            .filter_map(|(_, vm)| vm.host_ns.spawn.or(vm.host_ns.vmm_ready))
            .min()
            .unwrap_or(0)
    }
}

fn plain_variant(results: RunResults) -> Variant {
    Variant {
        name: String::new(),
        results,
    }
}

/// A VM's label: `VM 0`, with its variant, round and warm-up.
pub fn vm_label(variant: &str, vm: &VmRecord) -> String {
    let mut s = String::new();
    if !variant.is_empty() {
        s.push_str(variant);
        s.push(' ');
    }
    s.push_str(&format!("VM {}", vm.id));
    if vm.round > 0 || vm.warmup {
        s.push_str(&format!(" round {}", vm.round));
    }
    if vm.warmup {
        s.push_str(" (warm-up)");
    }
    s
}

/// One slice of a VM's boot on the shared axis, in ms from the origin.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub name: &'static str,
    pub start_ms: f64,
    pub end_ms: f64,
}

fn seg(name: &'static str, origin: u64, from: Option<u64>, to: Option<u64>) -> Option<Segment> {
    let (from, to) = (from?, to?);
    (to >= from && from >= origin).then(|| Segment {
        name,
        start_ms: (from - origin) as f64 / 1e6,
        end_ms: (to - origin) as f64 / 1e6,
    })
}

/// The host's view of a VM's boot: vmm, kernel (or vmm+kernel where the
/// backend cannot see the VMM's end), initrd, userspace, report, shutdown.
pub fn host_segments(vm: &VmRecord, origin: u64) -> Vec<Segment> {
    let h = &vm.host_ns;
    let kernel_end = h.init_start.or(h.run_init);
    let userspace_from = h.switch_root.or(h.init_start);
    let report_end = h.reported.filter(|&r| Some(r) != h.ready);
    [
        seg("vmm", origin, h.spawn, h.vmm_ready),
        match h.vmm_ready {
            Some(_) => seg("kernel", origin, h.vmm_ready, kernel_end),
            None => seg("vmm+kernel", origin, h.spawn, kernel_end),
        },
        seg("initrd", origin, h.init_start, h.switch_root),
        seg("userspace", origin, userspace_from, h.ready),
        seg("report", origin, h.ready, report_end),
        seg("shutdown", origin, report_end.or(h.ready), h.exit),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Where the guest's clock's zero lies on the host's CLOCK_MONOTONIC (ns):
/// its Ready at the host's Ready, else its zero at the VM's spawn.
pub fn guest_zero_ns(vm: &VmRecord) -> Option<i128> {
    let ready = vm.guest_ns.as_ref().map(|g| g.ready_ns).filter(|&r| r > 0);
    match (ready, vm.host_ns.ready) {
        (Some(g), Some(h)) => Some(h as i128 - g as i128),
        _ => vm.host_ns.spawn.map(i128::from),
    }
}

/// A guest-clock time (ns) on the axis (ms from the origin).
pub fn guest_ms(zero: i128, origin: u64, guest_ns: u64) -> f64 {
    (zero + guest_ns as i128 - origin as i128) as f64 / 1e6
}

/// The guest's own view: kernel (its clock's zero to PID 1), initrd,
/// userspace (to its Ready).
pub fn guest_segments(vm: &VmRecord, origin: u64) -> Vec<Segment> {
    let (Some(g), Some(zero)) = (vm.guest_ns.as_ref(), guest_zero_ns(vm)) else {
        return Vec::new();
    };
    let at = |ns: u64| guest_ms(zero, origin, ns);
    let set = |ns: u64| (ns > 0).then_some(ns);
    let mut out = Vec::new();
    let mut push = |name, from: Option<u64>, to: Option<u64>| {
        if let (Some(from), Some(to)) = (from, to) {
            if to >= from {
                out.push(Segment {
                    name,
                    start_ms: at(from),
                    end_ms: at(to),
                });
            }
        }
    };
    push("kernel", Some(0), set(g.init_ns));
    push("initrd", set(g.init_ns), set(g.switch_root_ns));
    push(
        "userspace",
        set(g.switch_root_ns).or(set(g.init_ns)),
        set(g.ready_ns),
    );
    out
}

/// A systemd unit's activation on the axis (ms), as `systemd-analyze plot`
/// draws it: activating → active, then active until it deactivated (or
/// the report).
#[derive(Debug, Clone, PartialEq)]
pub struct UnitSpan {
    pub id: String,
    pub activating_ms: f64,
    pub active_ms: Option<f64>,
    pub deactivating_ms: Option<f64>,
}

/// The units of a systemd guest that activated during the boot, in the
/// order they started.
pub fn unit_spans(vm: &VmRecord, origin: u64) -> Vec<UnitSpan> {
    let (Some(sd), Some(zero)) = (vm.systemd.as_ref(), guest_zero_ns(vm)) else {
        return Vec::new();
    };
    let at = |us: u64| guest_ms(zero, origin, us.saturating_mul(1000));
    let mut spans: Vec<UnitSpan> = sd
        .units
        .iter()
        .filter(|u| u.activating_us > 0 || u.active_us > 0)
        .map(|u| {
            let start = if u.activating_us > 0 {
                u.activating_us
            } else {
                u.active_us
            };
            UnitSpan {
                id: u.id.clone(),
                activating_ms: at(start),
                active_ms: (u.active_us >= start && u.active_us > 0).then(|| at(u.active_us)),
                deactivating_ms: (u.deactivating_us >= start && u.deactivating_us > 0)
                    .then(|| at(u.deactivating_us)),
            }
        })
        .collect();
    spans.sort_by(|a, b| a.activating_ms.total_cmp(&b.activating_ms));
    spans
}

/// Writes `text` to `path`.
pub fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::Write {
        path: path.display().to_string(),
        detail: e.to_string(),
    })
}

/// Text made safe for HTML and SVG (element content and quoted attributes).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters are not allowed in XML 1.0.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod fixture {
    //! A results.json as a run of the qemu backend and of a systemd guest
    //! would write it, made by hand.
    use crate::results::RunResults;

    pub fn run(vms: usize, hostile_unit: &str) -> RunResults {
        let ms = 1_000_000u64;
        let vms: Vec<serde_json::Value> = (0..vms as u64)
            .map(|i| {
                let t = 1_000_000 * ms + i * 3 * ms;
                serde_json::json!({
                    "id": i, "round": 0, "warmup": false, "backend": "qemu", "accel": "tcg",
                    "status": "ok", "warnings": [], "dir": format!("/tmp/vm{i}"),
                    "phases_ms": {"total": 300.0},
                    "host_ns": {"spawn": t, "vmm_ready": null, "init_start": t + 250 * ms,
                        "hello": t + 280 * ms, "ready": t + 300 * ms, "reported": t + 310 * ms,
                        "exit": t + 340 * ms},
                    "guest_ns": {"init_ns": 200 * ms, "mounts_done_ns": 0, "connected_ns": 0,
                        "ready_ns": 245 * ms, "connect_attempts": 1, "root_mounted_ns": 0,
                        "switch_root_ns": 0, "service_start_ns": 0, "systemd_follows": true,
                        "clocksource": "tsc"},
                    "boot_markers": [{"code": 0x60, "host_ns": t + 250 * ms}],
                    "systemd": {
                        "version": "252", "default_target": "multi-user.target",
                        "system_state": "running",
                        "phases_ms": {},
                        "timestamps_us": {"firmware_us": 0, "loader_us": 0, "kernel_us": 0,
                            "initrd_us": 0, "userspace_us": 200_000, "finish_us": 240_000,
                            "security_start_us": 0, "security_finish_us": 0,
                            "generators_start_us": 0, "generators_finish_us": 0,
                            "units_load_start_us": 0, "units_load_finish_us": 0},
                        "analyze_time": "",
                        "units": [
                            {"id": "systemd-journald.service", "activating_us": 205_000,
                             "active_us": 215_000, "deactivating_us": 0, "inactive_us": 0, "after": []},
                            {"id": hostile_unit, "activating_us": 210_000,
                             "active_us": 230_000, "deactivating_us": 0, "inactive_us": 0, "after": []},
                            {"id": "never.service", "activating_us": 0,
                             "active_us": 0, "deactivating_us": 0, "inactive_us": 0, "after": []}
                        ]
                    }
                })
            })
            .collect();
        let mut results = crate::results::test_results();
        results.vms =
            serde_json::from_value(serde_json::Value::Array(vms)).expect("fixture parses");
        results
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_share_one_axis_and_guest_ready_meets_host_ready() {
        let report = Report::new("x", vec![plain_variant(fixture::run(2, "a.service"))]);
        let origin = report.origin_ns();
        let vms: Vec<_> = report.vms().map(|(_, vm)| vm).collect();
        let host = host_segments(vms[1], origin);
        assert_eq!(host[0].name, "vmm+kernel", "qemu: no vmm_ready");
        assert_eq!(host[0].start_ms, 3.0);
        let user = host.iter().find(|s| s.name == "userspace").unwrap();
        let guest = guest_segments(vms[1], origin);
        let guser = guest.iter().find(|s| s.name == "userspace").unwrap();
        assert_eq!(guser.end_ms, user.end_ms);
        assert_eq!(guest[0].end_ms - guest[0].start_ms, 200.0);
        let units = unit_spans(vms[0], origin);
        assert_eq!(units.len(), 2, "a unit that never activated is left out");
        assert_eq!(units[0].id, "systemd-journald.service");
        assert_eq!(units[0].active_ms.unwrap() - units[0].activating_ms, 10.0);
    }

    #[test]
    fn escape_leaves_no_markup() {
        let e = escape("<script>alert('x')</script>&\"\u{1}");
        assert!(!e.contains('<') && !e.contains('>') && !e.contains('\'') && !e.contains('"'));
        assert!(!e.contains('\u{1}'));
    }
}
