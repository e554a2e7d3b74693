//! The vmexit guest (`vmexit-guest/`) as the tests see it: where it is
//! built, and a reader of its report on the serial console, strict about
//! what the report promises (the orchestrator's own parser lives in
//! `host/`; this one only serves the tests).
//!
//! ```text
//! vmbench-vmexit: hello version=1 cpus=2 vendor=GenuineIntel tsc_khz=2600137 ...
//! vmbench-vmexit: bench name=cpuid status=ok unit=cycles iterations=1024 ... values=4789613,...
//! vmbench-vmexit: bench name=vmcall status=unavailable why=VMCALL%20...
//! vmbench-vmexit: done
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::vsock::Check;
use crate::{skip_unless_ci, workspace};

pub const PREFIX: &str = "vmbench-vmexit: ";

/// The suite in its order (window id = index), as the design fixes it.
pub const BENCHMARKS: [&str; 16] = [
    "cpuid",
    "vmcall",
    "inl_from_vmm",
    "inl_from_kernel",
    "mmio_read",
    "mov_to_cr8",
    "mov_dr",
    "rdmsr",
    "wrmsr",
    "tscdeadline_immed",
    "tscdeadline",
    "self_ipi",
    "ipi_cross",
    "wbinvd",
    "toggle_cr0_wp",
    "toggle_cr4_pge",
];

/// The guest built by scripts/build-vmexit-guest.sh.
pub fn vmexit_guest_bin() -> PathBuf {
    workspace().join("target/vmexit-guest/release/vmexit-guest")
}

/// The built guest, or `None` (after printing why, or failing under CI).
pub fn built_vmexit_guest(test: &str) -> Option<PathBuf> {
    let guest = vmexit_guest_bin();
    if guest.is_file() {
        return Some(guest);
    }
    let reason = format!(
        "{} is not built (scripts/build-vmexit-guest.sh)",
        guest.display()
    );
    skip_unless_ci(test, &reason);
    None
}

/// One benchmark's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bench {
    pub name: String,
    /// `ok`, `unavailable` or `failed`.
    pub status: String,
    /// Every field, `why` decoded.
    pub fields: BTreeMap<String, String>,
    /// `values=`, for `ok`.
    pub values: Vec<u64>,
}

impl Bench {
    pub fn number(&self, key: &str) -> Check<u64> {
        let text = self
            .fields
            .get(key)
            .ok_or_else(|| format!("{}: no {key}", self.name))?;
        text.parse()
            .map_err(|_| format!("{}: {key}={text} is no number", self.name))
    }

    pub fn why(&self) -> &str {
        self.fields.get("why").map_or("", String::as_str)
    }

    /// The median value, in cycles (values are milli-cycles).
    pub fn median_cycles(&self) -> f64 {
        let mut sorted = self.values.clone();
        sorted.sort_unstable();
        sorted[sorted.len() / 2] as f64 / 1000.0
    }
}

/// Everything the guest reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub hello: Option<BTreeMap<String, String>>,
    pub benches: Vec<Bench>,
    pub done: bool,
    /// `error why=...`, decoded.
    pub error: Option<String>,
}

impl Report {
    pub fn bench(&self, name: &str) -> Check<&Bench> {
        self.benches
            .iter()
            .find(|b| b.name == name)
            .ok_or_else(|| format!("no line for {name}"))
    }

    pub fn hello_number(&self, key: &str) -> Check<u64> {
        let hello = self.hello.as_ref().ok_or("no hello line")?;
        let text = hello.get(key).ok_or_else(|| format!("hello: no {key}"))?;
        text.parse()
            .map_err(|_| format!("hello: {key}={text} is no number"))
    }
}

/// `%XX` back to bytes.
pub fn percent_decode(text: &str) -> Check<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .ok_or_else(|| format!("a cut escape in {text}"))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad escape in {text}"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{text} decodes to no text"))
}

/// `key=value` fields separated by one space each.
fn fields(words: &[&str], line: &str) -> Check<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for word in words {
        let (key, value) = word
            .split_once('=')
            .ok_or_else(|| format!("`{word}` is no key=value in: {line}"))?;
        if key.is_empty() || map.insert(key.to_string(), value.to_string()).is_some() {
            return Err(format!("empty or repeated key `{key}` in: {line}"));
        }
    }
    Ok(map)
}

/// Reads the report from a serial log: lines with [`PREFIX`], ASCII,
/// under 64 KiB, fields separated by single spaces.
pub fn parse(serial: &str) -> Check<Report> {
    let mut report = Report::default();
    for line in serial.lines().filter_map(|l| l.strip_prefix(PREFIX)) {
        if line.len() >= 64 * 1024 || !line.is_ascii() {
            return Err(format!("a line over 64 KiB or not ASCII: {line:.200}"));
        }
        if report.done || report.error.is_some() {
            return Err(format!("a line after the end: {line:.200}"));
        }
        let words: Vec<&str> = line.split(' ').collect();
        let mut map = fields(&words[1..], line)?;
        match words[0] {
            "hello" if report.hello.is_none() && report.benches.is_empty() => {
                report.hello = Some(map)
            }
            "bench" => {
                let name = map
                    .remove("name")
                    .ok_or_else(|| format!("no name: {line}"))?;
                let status = map
                    .remove("status")
                    .ok_or_else(|| format!("no status: {line}"))?;
                if let Some(why) = map.get_mut("why") {
                    *why = percent_decode(why)?;
                }
                let values = match map.get("values") {
                    Some(text) => text
                        .split(',')
                        .map(|v| {
                            v.parse()
                                .map_err(|_| format!("value `{v}` in: {line:.200}"))
                        })
                        .collect::<Check<Vec<u64>>>()?,
                    None => Vec::new(),
                };
                report.benches.push(Bench {
                    name,
                    status,
                    fields: map,
                    values,
                });
            }
            "done" if map.is_empty() => report.done = true,
            "error" => {
                let why = map.get("why").ok_or_else(|| format!("no why: {line}"))?;
                report.error = Some(percent_decode(why)?);
            }
            _ => return Err(format!("an unexpected line: {line:.200}")),
        }
    }
    Ok(report)
}

/// Checks a whole run: a hello, a line for each of `selected` (names of
/// [`BENCHMARKS`], in that order) and nothing else, `done`; an `ok` line
/// with a sane calibration (at least one iteration, one calibration run,
/// values, its window its index, `ops_in_window` = iterations × samples);
/// any other status with a reason.
pub fn check_suite(report: &Report, selected: &[&str]) -> Check<()> {
    if let Some(error) = &report.error {
        return Err(format!("the guest stopped: {error}"));
    }
    let hello = report.hello.as_ref().ok_or("no hello line")?;
    if hello.get("version").map(String::as_str) != Some("1") {
        return Err(format!("hello version: {hello:?}"));
    }
    for key in ["cpus", "tsc_khz"] {
        report.hello_number(key)?;
    }
    if hello.get("vendor").is_none_or(String::is_empty) {
        return Err(format!("hello without a vendor: {hello:?}"));
    }
    let names: Vec<&str> = report.benches.iter().map(|b| b.name.as_str()).collect();
    if names != selected {
        return Err(format!("benchmarks {names:?}, expected {selected:?}"));
    }
    for bench in &report.benches {
        match bench.status.as_str() {
            "ok" => check_ok(bench)?,
            "unavailable" | "failed" if !bench.why().is_empty() => {}
            _ => {
                return Err(format!(
                    "{}: status {} without a reason",
                    bench.name, bench.status
                ))
            }
        }
    }
    if !report.done {
        return Err("no done line".into());
    }
    Ok(())
}

fn check_ok(bench: &Bench) -> Check<()> {
    let name = &bench.name;
    if bench.fields.get("unit").map(String::as_str) != Some("cycles") {
        return Err(format!("{name}: unit {:?}", bench.fields.get("unit")));
    }
    let iterations = bench.number("iterations")?;
    if iterations < 1 || bench.number("calibration_runs")? < 1 {
        return Err(format!("{name}: no calibration: {:?}", bench.fields));
    }
    bench.number("overhead_milli")?;
    if bench.values.is_empty() {
        return Err(format!("{name}: no values"));
    }
    let stop = bench.fields.get("stop").map_or("", String::as_str);
    if !["peaks", "max_samples", "budget"].contains(&stop) {
        return Err(format!("{name}: stop={stop}"));
    }
    let index = BENCHMARKS
        .iter()
        .position(|b| b == name)
        .unwrap_or(usize::MAX);
    if bench.number("window")? != index as u64 {
        return Err(format!(
            "{name}: window {:?}, not its index {index}",
            bench.fields.get("window")
        ));
    }
    let ops = iterations * bench.values.len() as u64;
    if bench.number("ops_in_window")? != ops {
        return Err(format!(
            "{name}: ops_in_window is not iterations × samples ({ops})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &str = "noise\n\
        vmbench-vmexit: hello version=1 cpus=2 vendor=GenuineIntel tsc_khz=2600000 apic=x2apic\n\
        vmbench-vmexit: bench name=cpuid status=ok unit=cycles iterations=4 overhead_milli=9000 \
        calibration_runs=5 stop=peaks window=0 ops_in_window=8 values=1500,2500\n\
        vmbench-vmexit: bench name=vmcall status=unavailable why=VMCALL%20raised%20#UD\n\
        vmbench-vmexit: done\n";

    #[test]
    fn a_good_run_reads_and_passes() {
        let report = parse(RUN).unwrap();
        check_suite(&report, &["cpuid", "vmcall"]).unwrap();
        assert_eq!(report.bench("vmcall").unwrap().why(), "VMCALL raised #UD");
        assert_eq!(report.bench("cpuid").unwrap().median_cycles(), 2.5);
        assert_eq!(report.hello_number("cpus"), Ok(2));
    }

    #[test]
    fn broken_runs_fail_the_check() {
        for (bad, why) in [
            (RUN.replace("vmbench-vmexit: done\n", ""), "no done"),
            (RUN.replace("ops_in_window=8", "ops_in_window=9"), "ops"),
            (RUN.replace("window=0", "window=3"), "window"),
            (RUN.replace("why=VMCALL%20raised%20#UD", "why="), "a reason"),
            (RUN.replace("iterations=4", "iterations=0"), "calibration"),
            (RUN.replace(" values=1500,2500", ""), "no values"),
        ] {
            let result = parse(&bad).and_then(|r| check_suite(&r, &["cpuid", "vmcall"]));
            let err = result.unwrap_err();
            assert!(err.contains(why), "{why}: {err}");
        }
        assert!(check_suite(&parse(RUN).unwrap(), &["cpuid"]).is_err());
        assert!(
            parse(&RUN.replace("status=ok ", "status=ok  ")).is_err(),
            "two spaces"
        );
        assert!(
            parse(&format!("{RUN}{PREFIX}done\n")).is_err(),
            "a line after done"
        );
        let error = parse(&format!("{PREFIX}error why=bad%20value\n")).unwrap();
        assert_eq!(error.error.as_deref(), Some("bad value"));
    }
}
