//! `--csv FILE`: every per-run value of every benchmark appended to FILE,
//! one row per value, as virtbench's `--csv` records its complete results.
//! The header is written when the file is new or empty.

use std::io::Write;
use std::path::Path;

use crate::results::RunResults;

/// The header row.
pub const HEADER: &str =
    "run_id,started_at,backend,accel,vm,round,suite,benchmark,unit,sample,value";

/// The rows of `results`' values, for run `run_id`.
pub fn rows(run_id: &str, results: &RunResults) -> String {
    let mut out = String::new();
    for vm in &results.vms {
        for b in &vm.benchmarks {
            let Some(samples) = &b.samples else { continue };
            for (i, value) in samples.values().enumerate() {
                out.push_str(&format!(
                    "{run_id},{},{},{},{},{},{},{},{},{i},{value}\n",
                    results.started_at,
                    field(&vm.backend),
                    field(&vm.accel),
                    vm.id,
                    vm.round,
                    b.suite.name(),
                    field(&b.name),
                    field(&samples.unit),
                ));
            }
        }
    }
    out
}

/// A CSV field: quoted when it holds a comma, a quote or a line break.
fn field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// Appends `results`' values to `path` (the header first if it is new or empty).
pub fn append(path: &Path, run_id: &str, results: &RunResults) -> std::io::Result<usize> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut text = String::new();
    if file.metadata()?.len() == 0 {
        text.push_str(HEADER);
        text.push('\n');
    }
    let rows = rows(run_id, results);
    let count = rows.lines().count();
    text.push_str(&rows);
    file.write_all(text.as_bytes())?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::catalog::Suite;
    use crate::bench::outcome::{Outcome, Samples};
    use crate::bench::record::{BenchmarkRecord, Status};
    use crate::results::VmRecord;

    fn results() -> RunResults {
        let mut r = crate::results::test_results();
        let mut vm = VmRecord::new(3, std::path::Path::new("/x"));
        vm.backend = "qemu".into();
        vm.accel = "tcg,odd".into();
        vm.round = 1;
        vm.benchmarks = vec![
            BenchmarkRecord::from_outcome(
                "syscall",
                Suite::Micro,
                Outcome::Done(Samples {
                    unit: "ns".into(),
                    clock: "CLOCK_MONOTONIC_RAW/tsc".into(),
                    iterations: 1,
                    overhead_milli: 0,
                    calibration_runs: 1,
                    values: vec![85_300, 90_001],
                    stop: "peaks".into(),
                    window: 1,
                    ops_in_window: 2,
                    extra: vec![],
                }),
            ),
            BenchmarkRecord::not_measured(
                "hypercall",
                Suite::Micro,
                Status::Unavailable,
                "#UD".into(),
            ),
        ];
        r.vms.push(vm);
        r
    }

    #[test]
    fn every_value_is_a_row_and_the_header_comes_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("values.csv");
        assert_eq!(append(&path, "run-1", &results()).unwrap(), 2);
        assert_eq!(append(&path, "run-2", &results()).unwrap(), 2);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert_eq!(lines[0], HEADER);
        assert_eq!(
            lines[1],
            "run-1,2025-01-01T00:00:00Z,qemu,\"tcg,odd\",3,1,micro,syscall,ns,0,85.3"
        );
        assert_eq!(
            lines[2],
            "run-1,2025-01-01T00:00:00Z,qemu,\"tcg,odd\",3,1,micro,syscall,ns,1,90.001"
        );
        assert!(lines[3].starts_with("run-2,"));
        assert_eq!(field("a\"b"), "\"a\"\"b\"");
    }
}
