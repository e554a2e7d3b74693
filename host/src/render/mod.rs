//! Turning results into text people read. Everything here takes results
//! types ([`crate::results`]) only: no backend's or VMM's internals.
//!
//! - [`boot_tables`]: the per-VM table, the systemd section and the
//!   aggregate that `vmbench boot` prints;
//! - [`exits_table`]: `--exits`, the kvm backend's exits per VM;
//! - [`json`]: results.json as `--json` prints it.

pub mod bench;
pub mod boot_tables;
pub mod exits_table;
pub mod verdicts;

use std::fmt::Write;

use crate::ab::{AbConfig, AbOutcome};
use crate::pipeline::Outcome;
use crate::results::RunResults;

/// A duration in ms with one decimal, or `-` when there is none.
pub(crate) fn ms(value: Option<f64>) -> String {
    value
        .map(|v| format!("{v:.1}"))
        .unwrap_or_else(|| "-".to_string())
}

/// Rows of cells as aligned text; the first row is the header.
pub(crate) fn grid(rows: &[Vec<String>]) -> String {
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

/// The results as `vmbench boot --json` prints them.
pub fn json(results: &RunResults) -> serde_json::Result<String> {
    serde_json::to_string_pretty(results)
}

/// What `vmbench boot` prints on stdout.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shown {
    /// results.json instead of the tables.
    pub json: bool,
    /// The exits table after the others.
    pub exits: bool,
}

/// `vmbench boot`'s output: the tables (and `--exits`) with where the
/// results are, or the results themselves as JSON.
pub fn boot_output(outcome: &Outcome, shown: Shown) -> serde_json::Result<String> {
    if shown.json {
        return Ok(json(&outcome.results)? + "\n");
    }
    let mut out = boot_tables::boot_tables(&outcome.results);
    if shown.exits {
        out.push_str(&exits_table::exits_table(&outcome.results));
    }
    let _ = writeln!(out, "results: {}", outcome.results_path.display());
    Ok(out)
}

/// `vmbench ab`'s output: each variant's tables, then where the results are.
pub fn ab_output(config: &AbConfig, outcome: &AbOutcome) -> String {
    let mut out = String::new();
    for (name, description, run) in [
        ("A", &config.a_description, &outcome.a),
        ("B", &config.b_description, &outcome.b),
    ] {
        let description = if description.trim().is_empty() {
            "the common options"
        } else {
            description.as_str()
        };
        let _ = writeln!(out, "== variant {name}: {description}");
        if run.results.bench.is_some() {
            out.push_str(&bench::output(&run.results, bench::Shown::default()));
        } else {
            out.push_str(&boot_tables::boot_tables(&run.results));
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "results: {} and {}",
        outcome.a.results_path.display(),
        outcome.b.results_path.display()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned() {
        let text = grid(&[
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
