//! The run as a Chrome trace-event file (the JSON Object Format:
//! `{"traceEvents": [...], "displayTimeUnit": "ms", "otherData": {...}}`),
//! which Perfetto and `chrome://tracing` open. One process per VM (each VM
//! of each round and variant), its threads: the host's phases, the guest's
//! phases, the systemd units, the benchmark windows; boot markers as
//! instant events on the host thread. Timestamps in µs from the run's
//! origin ([`super::Report::origin_ns`]).
//!
//! Exit counts as counter tracks need exit counts in time buckets, which
//! results.json does not hold yet: `otherData.exit_counters` says so.

use serde_json::{json, Value};

use super::{guest_segments, host_segments, unit_spans, vm_label, Report};

pub const TID_HOST: u64 = 1;
pub const TID_GUEST: u64 = 2;
pub const TID_UNITS: u64 = 3;
pub const TID_WINDOWS: u64 = 4;

fn us(ms: f64) -> f64 {
    (ms * 1000.0 * 1000.0).round() / 1000.0
}

fn meta(name: &str, pid: u64, tid: u64, value: Value) -> Value {
    json!({"name": name, "ph": "M", "ts": 0, "pid": pid, "tid": tid, "args": value})
}

fn slice(name: &str, cat: &str, pid: u64, tid: u64, start_ms: f64, end_ms: f64) -> Value {
    json!({
        "name": name, "cat": cat, "ph": "X", "pid": pid, "tid": tid,
        "ts": us(start_ms), "dur": us((end_ms - start_ms).max(0.0)),
    })
}

/// The trace of a report.
pub fn trace(report: &Report) -> Value {
    let origin = report.origin_ns();
    let mut events = Vec::new();
    let mut windows_seen = false;
    for (i, (variant, vm)) in report.vms().enumerate() {
        let pid = i as u64 + 1;
        let label = format!("{} ({})", vm_label(variant, vm), vm.status.as_str());
        events.push(meta("process_name", pid, 0, json!({"name": label})));
        events.push(meta(
            "process_sort_index",
            pid,
            0,
            json!({"sort_index": pid}),
        ));
        for (tid, name) in [
            (TID_HOST, "host phases (CLOCK_MONOTONIC)"),
            (TID_GUEST, "guest phases (guest clock, Ready aligned)"),
            (TID_UNITS, "systemd units"),
            (TID_WINDOWS, "benchmark windows"),
        ] {
            events.push(meta("thread_name", pid, tid, json!({"name": name})));
            events.push(meta(
                "thread_sort_index",
                pid,
                tid,
                json!({"sort_index": tid}),
            ));
        }
        for s in host_segments(vm, origin) {
            events.push(slice(s.name, "host", pid, TID_HOST, s.start_ms, s.end_ms));
        }
        for m in &vm.boot_markers {
            if m.host_ns >= origin {
                events.push(json!({
                    "name": format!("marker 0x{:02x}", m.code), "cat": "marker", "ph": "i",
                    "s": "t", "pid": pid, "tid": TID_HOST,
                    "ts": us((m.host_ns - origin) as f64 / 1e6),
                }));
            }
        }
        for s in guest_segments(vm, origin) {
            events.push(slice(s.name, "guest", pid, TID_GUEST, s.start_ms, s.end_ms));
        }
        for u in unit_spans(vm, origin) {
            let end = u.active_ms.unwrap_or(u.activating_ms);
            let mut e = slice(&u.id, "systemd", pid, TID_UNITS, u.activating_ms, end);
            e["args"] = json!({"activating_ms": end - u.activating_ms});
            events.push(e);
        }
        if let Some(exits) = &vm.exits {
            for w in &exits.windows {
                let (Some(end), true) = (w.end_ns, w.start_ns >= origin) else {
                    continue;
                };
                windows_seen = true;
                let name = vm
                    .benchmarks
                    .iter()
                    .find(|b| b.samples.as_ref().is_some_and(|s| s.window == w.id))
                    .map_or_else(|| format!("window {}", w.id), |b| b.name.clone());
                let at = |ns: u64| (ns.saturating_sub(origin)) as f64 / 1e6;
                let mut e = slice(
                    &name,
                    "benchmark",
                    pid,
                    TID_WINDOWS,
                    at(w.start_ns),
                    at(end),
                );
                let by_kind: serde_json::Map<String, Value> = w
                    .exits
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), json!(v.count)))
                    .collect();
                e["args"] = json!({"window": w.id, "userspace_exits": by_kind});
                events.push(e);
            }
        }
    }
    let windows_note = if windows_seen {
        "from vms[].exits.windows (the VMM's window marks)"
    } else {
        "none: no VM has timed benchmark windows (the kvm backend's vms[].exits.windows)"
    };
    json!({
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "source": report.source,
            "variants": report.variants.iter().map(|v| v.name.clone()).collect::<Vec<_>>(),
            "origin_clock_monotonic_ns": origin,
            "guest_alignment": "guest clocks placed so that the guest's Ready meets the host's",
            "benchmark_windows": windows_note,
            "exit_counters": "not in results.json yet (no exit counts in time buckets): no counter tracks",
        }
    })
}

#[cfg(test)]
pub(crate) mod check {
    use serde_json::Value;

    /// Every event has what the trace-event format requires: `name`, `ph`,
    /// `ts` (µs), `pid`, `tid`; `dur` ≥ 0 for complete events (`X`); an
    /// object of numbers as `args` for counters (`C`); `args` for metadata
    /// (`M`); a scope `g`/`p`/`t` for instant events (`i`) that give one.
    pub fn problems(trace: &Value) -> Vec<String> {
        let mut out = Vec::new();
        let Some(events) = trace.get("traceEvents").and_then(Value::as_array) else {
            return vec!["no traceEvents array".into()];
        };
        for (i, e) in events.iter().enumerate() {
            let mut bad = |what: &str| out.push(format!("event {i} {what}: {e}"));
            if !e.get("name").is_some_and(Value::is_string) {
                bad("has no string name");
            }
            let ph = e.get("ph").and_then(Value::as_str).unwrap_or("");
            if !["X", "B", "E", "i", "I", "C", "M"].contains(&ph) {
                bad("has no known ph");
            }
            if !e
                .get("ts")
                .and_then(Value::as_f64)
                .is_some_and(|t| t >= 0.0)
            {
                bad("has no ts ≥ 0");
            }
            for id in ["pid", "tid"] {
                if !e.get(id).is_some_and(Value::is_u64) {
                    bad(&format!("has no integer {id}"));
                }
            }
            match ph {
                "X" if !e
                    .get("dur")
                    .and_then(Value::as_f64)
                    .is_some_and(|d| d >= 0.0) =>
                {
                    bad("(X) has no dur ≥ 0")
                }
                "C" if !e
                    .get("args")
                    .and_then(Value::as_object)
                    .is_some_and(|a| !a.is_empty() && a.values().all(Value::is_number)) =>
                {
                    bad("(C) has no numeric args")
                }
                "M" if !e.get("args").is_some_and(Value::is_object) => bad("(M) has no args"),
                "i" | "I"
                    if e.get("s")
                        .is_some_and(|s| !["g", "p", "t"].contains(&s.as_str().unwrap_or(""))) =>
                {
                    bad("has a bad scope")
                }
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{fixture, Variant};

    #[test]
    fn every_event_has_the_required_fields() {
        let run = fixture::run(3, "x\"<y>.service");
        let report = Report::new(
            "fixture",
            vec![Variant {
                name: String::new(),
                results: run,
            }],
        );
        let t = trace(&report);
        assert_eq!(check::problems(&t), Vec::<String>::new());
        let events = t["traceEvents"].as_array().unwrap();
        let names = |tid: u64, pid: u64| -> Vec<&str> {
            events
                .iter()
                .filter(|e| e["ph"] == "X" && e["tid"] == tid && e["pid"] == pid)
                .map(|e| e["name"].as_str().unwrap())
                .collect()
        };
        assert_eq!(
            names(TID_HOST, 2),
            ["vmm+kernel", "userspace", "report", "shutdown"]
        );
        assert_eq!(names(TID_GUEST, 2), ["kernel", "userspace"]);
        assert_eq!(
            names(TID_UNITS, 3),
            ["systemd-journald.service", "x\"<y>.service"]
        );
        let pids: std::collections::BTreeSet<u64> =
            events.iter().map(|e| e["pid"].as_u64().unwrap()).collect();
        assert_eq!(pids.len(), 3, "one process per VM");
        let first = events.iter().find(|e| e["ph"] == "X").unwrap();
        assert_eq!(first["ts"], 0.0, "the first spawn is the origin");
        assert!(t["otherData"]["exit_counters"]
            .as_str()
            .unwrap()
            .contains("not in results.json"));
        // It survives a round trip through its own text.
        let text = serde_json::to_string(&t).unwrap();
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(check::problems(&back), Vec::<String>::new());
    }

    #[test]
    fn the_checker_catches_missing_fields() {
        let bad = json!({"traceEvents": [
            {"name": "a", "ph": "X", "ts": 1, "pid": 1, "tid": 1},
            {"name": "b", "ph": "C", "ts": 1, "pid": 1, "tid": 1, "args": {"n": "x"}},
            {"ph": "i", "ts": -1, "pid": 1},
        ]});
        let p = check::problems(&bad);
        assert_eq!(p.len(), 5, "{p:#?}");
    }
}
