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
