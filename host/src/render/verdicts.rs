//! A comparison's verdicts, for people and for CI: a terminal table, a
//! Markdown table (a pull-request comment), JSON, JUnit XML (one test case
//! per metric; a regression is a failure whose message holds the ratio, its
//! interval and p), and CSV.

use std::fmt::Write;

use vmbench_stats::{Method, Verdict};

use super::grid;
use crate::compare::{Row, Verdicts};

/// `--format` of `vmbench ab` and `vmbench compare`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Markdown,
    Json,
    Junit,
    Csv,
}

pub fn render(verdicts: &Verdicts, format: Format) -> String {
    match format {
        Format::Table => table(verdicts),
        Format::Markdown => markdown(verdicts),
        Format::Json => serde_json::to_string_pretty(verdicts).unwrap_or_default() + "\n",
        Format::Junit => junit(verdicts),
        Format::Csv => csv(verdicts),
    }
}

pub fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Regression => "REGRESSION",
        Verdict::Improvement => "improvement",
        Verdict::NoChange => "no change",
        Verdict::Inconclusive => "inconclusive",
    }
}

fn method_word(m: Option<Method>) -> &'static str {
    match m {
        Some(Method::MannWhitneyExact) => "Mann-Whitney (exact)",
        Some(Method::MannWhitneyNormal) => "Mann-Whitney (normal)",
        Some(Method::RangeRule) => "range rule (n <= 5)",
        None => "-",
    }
}

fn num(v: Option<f64>, decimals: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.decimals$}"))
}

/// The ratio's interval, `[low, high]`, or `-`.
fn interval(c: &vmbench_stats::Comparison) -> String {
    match (c.ci_low, c.ci_high) {
        (Some(low), Some(high)) => format!("[{low:.3}, {high:.3}]"),
        _ => "-".into(),
    }
}

/// The cells of one row: metric, unit, clock, n, medians, ratio and its
/// interval, p and corrected p, verdict.
fn cells(row: &Row) -> Vec<String> {
    let c = &row.comparison;
    vec![
        c.name.clone(),
        format!(
            "{}{}",
            row.unit,
            if row.clock.is_empty() {
                String::new()
            } else {
                format!(" ({})", row.clock)
            }
        ),
        format!("{}/{}", c.n_a, c.n_b),
        num(c.median_a, 1),
        num(c.median_b, 1),
        num(c.ratio, 3),
        interval(c),
        num(c.p, 4),
        num(c.p_corrected, 4),
        verdict_word(c.verdict).to_string(),
    ]
}

const HEADER: [&str; 10] = [
    "metric", "unit", "n A/B", "median A", "median B", "B/A", "95% CI", "p", "p (BH)", "verdict",
];

fn table(v: &Verdicts) -> String {
    let mut rows = vec![HEADER.map(String::from).to_vec()];
    rows.extend(v.rows.iter().map(cells));
    let mut out = format!("\n{} against {}:\n", v.candidate, v.baseline);
    out.push_str(&grid(&rows));
    for row in &v.rows {
        let c = &row.comparison;
        if !c.note.is_empty() && c.verdict != Verdict::NoChange {
            let _ = writeln!(out, "{}: {} ({})", c.name, c.note, method_word(c.method));
        }
    }
    let _ = writeln!(out, "{}", summary_line(v));
    out
}

/// "2 regressions, 1 improvement, 10 no change, 3 inconclusive (α = 0.01, noise ±5 %)".
fn summary_line(v: &Verdicts) -> String {
    let count = |verdict| {
        v.rows
            .iter()
            .filter(|r| r.comparison.verdict == verdict)
            .count()
    };
    // Benchmarks have a narrower band than boot metrics: each band said once.
    let mut bands: Vec<String> = Vec::new();
    for r in &v.rows {
        let band = format!("±{:.0}%", r.comparison.noise_band * 100.0);
        if !bands.contains(&band) {
            bands.push(band);
        }
    }
    if bands.is_empty() {
        bands.push("±0%".into());
    }
    format!(
        "{} regression(s), {} improvement(s), {} no change, {} inconclusive (alpha {}, noise band {})",
        count(Verdict::Regression),
        count(Verdict::Improvement),
        count(Verdict::NoChange),
        count(Verdict::Inconclusive),
        v.alpha,
        bands.join(" or ")
    )
}

fn markdown(v: &Verdicts) -> String {
    let mut out = format!("**{}** against **{}**\n\n", v.candidate, v.baseline);
    let _ = writeln!(out, "| {} |", HEADER.join(" | "));
    let _ = writeln!(out, "|{}", " --- |".repeat(HEADER.len()));
    for row in &v.rows {
        let mut cells: Vec<String> = cells(row).iter().map(|c| c.replace('|', "\\|")).collect();
        if row.comparison.verdict == Verdict::Regression {
            cells[9] = format!("**{}**", cells[9]);
        }
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    let _ = writeln!(out, "\n{}", summary_line(v));
    out
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn junit(v: &Verdicts) -> String {
    let failures = v
        .rows
        .iter()
        .filter(|r| r.comparison.verdict == Verdict::Regression)
        .count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let suite = format!("vmbench {} vs {}", v.baseline, v.candidate);
    let _ = writeln!(
        out,
        "<testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\">",
        xml(&suite),
        v.rows.len()
    );
    for row in &v.rows {
        let c = &row.comparison;
        let _ = write!(
            out,
            "  <testcase classname=\"vmbench\" name=\"{}\"",
            xml(&c.name)
        );
        let detail = format!(
            "B/A {} CI {} p {} (BH {}): {}",
            num(c.ratio, 3),
            interval(c),
            num(c.p, 4),
            num(c.p_corrected, 4),
            c.note
        );
        match c.verdict {
            Verdict::Regression => {
                let _ = writeln!(
                    out,
                    ">\n    <failure message=\"regression: {}\"/>\n  </testcase>",
                    xml(&detail)
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    ">\n    <system-out>{}: {}</system-out>\n  </testcase>",
                    verdict_word(c.verdict),
                    xml(&detail)
                );
            }
        }
    }
    out.push_str("</testsuite>\n");
    out
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn csv(v: &Verdicts) -> String {
    let mut out = String::from(
        "metric,unit,clock,n_a,n_b,median_a,median_b,ratio,ci_low,ci_high,u,p,p_corrected,method,verdict,note\n",
    );
    for row in &v.rows {
        let c = &row.comparison;
        let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        let fields = [
            csv_field(&c.name),
            csv_field(&row.unit),
            csv_field(&row.clock),
            c.n_a.to_string(),
            c.n_b.to_string(),
            opt(c.median_a),
            opt(c.median_b),
            opt(c.ratio),
            opt(c.ci_low),
            opt(c.ci_high),
            opt(c.u),
            opt(c.p),
            opt(c.p_corrected),
            csv_field(method_word(c.method)),
            verdict_word(c.verdict).to_lowercase(),
            csv_field(&c.note),
        ];
        let _ = writeln!(out, "{}", fields.join(","));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::{compare, Judge, Side};
    use crate::metrics::{Direction, MetricDef};

    fn side(label: &str, values: &[f64]) -> Side {
        let def = MetricDef {
            name: "phase.total".into(),
            unit: "ms".into(),
            clock: "host".into(),
            direction: Direction::LowerIsBetter,
            alias: None,
        };
        let mut side = Side {
            label: label.into(),
            ..Side::default()
        };
        side.samples
            .insert(def.name.clone(), (def, values.to_vec()));
        side
    }

    fn verdicts() -> Verdicts {
        let a: Vec<f64> = (0..10).map(|i| 600.0 + f64::from(i)).collect();
        let b: Vec<f64> = a.iter().map(|x| x * 1.2).collect();
        compare(&side("old", &a), &side("new", &b), Judge::default()).unwrap()
    }

    #[test]
    fn every_format_carries_the_verdict() {
        let v = verdicts();
        let table = render(&v, Format::Table);
        assert!(
            table.contains("REGRESSION") && table.contains("1.200"),
            "{table}"
        );
        assert!(render(&v, Format::Markdown).contains("| phase.total | ms (host) |"));
        let json: serde_json::Value = serde_json::from_str(&render(&v, Format::Json)).unwrap();
        assert_eq!(json["rows"][0]["verdict"], "regression");
        let junit = render(&v, Format::Junit);
        assert!(
            junit.contains("failures=\"1\"")
                && junit.contains("<failure message=\"regression: B/A 1.200"),
            "{junit}"
        );
        let csv = render(&v, Format::Csv);
        assert_eq!(csv.lines().count(), 2);
        assert!(
            csv.lines()
                .nth(1)
                .unwrap()
                .starts_with("phase.total,ms,host,10,10,"),
            "{csv}"
        );
    }
}
