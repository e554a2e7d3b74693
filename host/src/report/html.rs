//! One self-contained HTML page of a run: inline SVG and CSS, no scripts,
//! nothing fetched. Sections: the boot timeline ([`super::svg::timeline`]),
//! a systemd guest's units as a Gantt chart (what `systemd-analyze plot`
//! draws), the slowest initcalls and the exit rate (each "not profiled"
//! until results.json holds them), the benchmarks' distributions with their
//! peaks, and for an A/B run each metric's samples of both variants with the
//! ratio of medians and its interval. Every string from results.json —
//! guest-supplied unit names above all — is escaped.

use std::fmt::Write;

use super::svg::{num, ticks};
use super::{escape, unit_spans, vm_label, Report};
use crate::compare::Side;
use crate::results::VmStatus;

const CSS: &str = "body{font-family:sans-serif;margin:1.5em;color:#222;max-width:1100px}\
h1{font-size:1.4em}h2{font-size:1.15em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}\
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:.2em .5em;text-align:left}\
td.n{text-align:right}.none{color:#777;font-style:italic}.regression{color:#b00}.improvement{color:#070}\
dl.env{display:grid;grid-template-columns:max-content auto;gap:.1em 1em;font-size:.9em}dt{color:#555}dd{margin:0}\
svg{display:block;margin:.5em 0}";

/// The page.
pub fn page(report: &Report) -> String {
    let mut h = String::new();
    let title = format!("vmbench report: {}", report.source);
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{CSS}</style></head><body>",
        escape(&title)
    );
    let _ = write!(h, "<h1>{}</h1>", escape(&title));
    environment(&mut h, report);
    h.push_str("<section id=\"timeline\"><h2>Boot timeline</h2>");
    h.push_str(&super::svg::timeline(report));
    h.push_str("</section>");
    systemd(&mut h, report);
    h.push_str(
        "<section id=\"initcalls\"><h2>Slowest initcalls</h2><p class=\"none\">Not profiled: \
         this run holds no initcall profile (the <code>initcalls</code> profiler).</p></section>",
    );
    h.push_str(
        "<section id=\"exit-rate\"><h2>Exit rate over the boot</h2><p class=\"none\">Not profiled: \
         this run's results.json holds no exit counts in time buckets.</p></section>",
    );
    benchmarks(&mut h, report);
    ab(&mut h, report);
    h.push_str("</body></html>\n");
    h
}

fn environment(h: &mut String, report: &Report) {
    h.push_str("<dl class=\"env\">");
    let mut row = |k: &str, v: String| {
        let _ = write!(h, "<dt>{}</dt><dd>{}</dd>", escape(k), escape(&v));
    };
    for v in &report.variants {
        let e = &v.results.environment;
        let name = if v.name.is_empty() {
            "run".to_string()
        } else {
            format!("variant {}", v.name)
        };
        let ok = v
            .results
            .vms
            .iter()
            .filter(|vm| vm.status == VmStatus::Ok)
            .count();
        row(
            &name,
            format!(
                "started {}; {} of {} VMs ok; {} backend ({}), {} vCPU, {} MiB",
                v.results.started_at,
                ok,
                v.results.vms.len(),
                e.backend,
                e.accel,
                e.vcpus,
                e.mem_mib
            ),
        );
        row("guest kernel", e.guest_kernel.clone());
        row(
            "host",
            format!(
                "{} ({}), kernel {}",
                e.host_cpu, e.host_cpu_info.vendor, e.host_kernel
            ),
        );
    }
    h.push_str("</dl>");
}

/// A systemd guest's units, as `systemd-analyze plot` draws them: one row
/// per unit, activating (dark) then active (light), on the boot's axis.
pub fn gantt(units: &[super::UnitSpan], until_ms: f64) -> String {
    const LABEL_W: f64 = 260.0;
    const W: f64 = 760.0;
    const ROW: f64 = 14.0;
    let min = units
        .iter()
        .map(|u| u.activating_ms)
        .fold(f64::INFINITY, f64::min);
    let max = units
        .iter()
        .map(|u| u.active_ms.unwrap_or(u.activating_ms))
        .fold(until_ms, f64::max);
    let min = if min.is_finite() { min.min(max) } else { 0.0 };
    let span = (max - min).max(1.0);
    let x = |ms: f64| LABEL_W + (ms - min) / span * W;
    let height = 30.0 + units.len() as f64 * ROW + 24.0;
    let width = LABEL_W + W + 20.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="gantt" width="{width}" height="{height}" font-family="sans-serif" font-size="10">"#
    );
    let axis_y = 30.0 + units.len() as f64 * ROW + 2.0;
    s.push_str(r#"<g class="axis">"#);
    for t in ticks(min, max, 8) {
        let _ = write!(
            s,
            r##"<line x1="{0}" x2="{0}" y1="20" y2="{axis_y}" stroke="#e4e4e4"/><text x="{0}" y="16" text-anchor="middle">{1}</text>"##,
            x(t),
            num(t)
        );
    }
    let _ = write!(
        s,
        r##"<text x="{}" y="{}" text-anchor="middle">ms since the first spawn</text></g>"##,
        x(min + span / 2.0),
        axis_y + 16.0
    );
    for (i, u) in units.iter().enumerate() {
        let y = 30.0 + i as f64 * ROW;
        let name = escape(&u.id);
        let _ = write!(
            s,
            r#"<g class="unit"><text x="{}" y="{}" text-anchor="end">{name}</text>"#,
            LABEL_W - 6.0,
            y + 10.0
        );
        let active_from = u.active_ms.unwrap_or(u.activating_ms);
        let active_to = u.deactivating_ms.unwrap_or(max).max(active_from);
        if u.active_ms.is_some() {
            let _ = write!(
                s,
                r##"<rect x="{:.2}" y="{y}" width="{:.2}" height="{}" fill="#ccddff"/>"##,
                x(active_from),
                (x(active_to) - x(active_from)).max(0.5),
                ROW - 3.0
            );
        }
        let _ = write!(
            s,
            r##"<rect x="{:.2}" y="{y}" width="{:.2}" height="{}" fill="#cc4444"><title>{name}: activating {:.1} ms</title></rect></g>"##,
            x(u.activating_ms),
            (x(active_from) - x(u.activating_ms)).max(0.5),
            ROW - 3.0,
            active_from - u.activating_ms
        );
    }
    s.push_str("</svg>");
    s
}

fn systemd(h: &mut String, report: &Report) {
    h.push_str("<section id=\"systemd\"><h2>systemd units</h2>");
    let origin = report.origin_ns();
    let mut any = false;
    for v in &report.variants {
        let with: Vec<_> = v
            .results
            .vms
            .iter()
            .filter(|vm| vm.systemd.is_some())
            .collect();
        let Some(vm) = with
            .iter()
            .find(|vm| vm.status == VmStatus::Ok)
            .or(with.first())
        else {
            continue;
        };
        any = true;
        let sd = vm.systemd.as_ref().expect("filtered");
        let spans = unit_spans(vm, origin);
        let until = vm
            .host_ns
            .ready
            .map_or(0.0, |r| r.saturating_sub(origin) as f64 / 1e6);
        let _ = write!(
            h,
            "<h3>{}: systemd {}, {} ({} units activated{})</h3>",
            escape(&vm_label(&v.name, vm)),
            escape(&sd.version),
            escape(&sd.default_target),
            spans.len(),
            if with.len() > 1 {
                format!("; {} other VMs with systemd not drawn", with.len() - 1)
            } else {
                String::new()
            }
        );
        h.push_str(&gantt(&spans, until));
    }
    if !any {
        h.push_str("<p class=\"none\">No systemd guest in this run (the agent was PID 1).</p>");
    }
    h.push_str("</section>");
}

/// One benchmark's samples as a histogram (50 bins), its peaks shaded.
fn histogram(values: &[f64], peaks: &[crate::bench::record::PeakRecord], unit: &str) -> String {
    const W: f64 = 600.0;
    const H: f64 = 90.0;
    let (lo, hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let (lo, hi) = if lo.is_finite() {
        (lo, if hi > lo { hi } else { lo + 1.0 })
    } else {
        (0.0, 1.0)
    };
    let bins = 50usize;
    let mut counts = vec![0usize; bins];
    for &v in values {
        let i = (((v - lo) / (hi - lo)) * bins as f64) as usize;
        counts[i.min(bins - 1)] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let x = |v: f64| 40.0 + (v - lo) / (hi - lo) * W;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="histogram" width="{}" height="{}" font-family="sans-serif" font-size="10">"#,
        W + 60.0,
        H + 40.0
    );
    for p in peaks {
        let _ = write!(
            s,
            r##"<rect class="peak" x="{:.2}" y="4" width="{:.2}" height="{H}" fill="#fde9c8"><title>peak {} {} ({:.0} % of samples)</title></rect><text x="{:.2}" y="12" fill="#a60">{}</text>"##,
            x(p.low),
            (x(p.high) - x(p.low)).max(1.5),
            num(p.value),
            escape(unit),
            p.share * 100.0,
            x(p.value) + 2.0,
            num(p.value)
        );
    }
    let bw = W / bins as f64;
    for (i, &c) in counts.iter().enumerate() {
        if c > 0 {
            let bh = c as f64 / top * (H - 12.0);
            let _ = write!(
                s,
                r##"<rect x="{:.2}" y="{:.2}" width="{:.2}" height="{bh:.2}" fill="#4c78a8"/>"##,
                40.0 + i as f64 * bw,
                4.0 + H - bh,
                bw - 0.5
            );
        }
    }
    s.push_str(r#"<g class="axis">"#);
    let _ = write!(
        s,
        r##"<line x1="40" x2="{}" y1="{}" y2="{}" stroke="#333"/>"##,
        40.0 + W,
        H + 4.0,
        H + 4.0
    );
    for t in ticks(lo, hi, 6) {
        let _ = write!(
            s,
            r#"<text x="{:.2}" y="{}" text-anchor="middle">{}</text>"#,
            x(t),
            H + 18.0,
            num(t)
        );
    }
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text></g></svg>"#,
        40.0 + W / 2.0,
        H + 34.0,
        escape(unit)
    );
    s
}

fn benchmarks(h: &mut String, report: &Report) {
    h.push_str("<section id=\"benchmarks\"><h2>Benchmarks</h2>");
    let mut any = false;
    for (variant, vm) in report.vms() {
        for b in &vm.benchmarks {
            let Some(samples) = &b.samples else { continue };
            any = true;
            let values: Vec<f64> = samples
                .values_milli
                .iter()
                .map(|&v| v as f64 / 1000.0)
                .collect();
            let peaks: Vec<String> = samples
                .peaks
                .iter()
                .map(|p| {
                    format!(
                        "{} {} ({:.0} %)",
                        num(p.value),
                        samples.unit,
                        p.share * 100.0
                    )
                })
                .collect();
            let _ = write!(
                h,
                "<h3>{} — {}</h3><p>{} samples, median {} {}, peaks: {}</p>",
                escape(&vm_label(variant, vm)),
                escape(&b.name),
                values.len(),
                num(samples.median),
                escape(&samples.unit),
                escape(&peaks.join(", "))
            );
            h.push_str(&histogram(&values, &samples.peaks, &samples.unit));
        }
    }
    if !any {
        h.push_str("<p class=\"none\">No benchmarks in this run.</p>");
    }
    h.push_str("</section>");
}

/// Both variants' samples of one metric on one scale: a row of dots each,
/// their medians marked.
fn strip(a: &[f64], b: &[f64], unit: &str) -> String {
    const W: f64 = 600.0;
    let all = a.iter().chain(b);
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
        (l.min(v), h.max(v))
    });
    let (lo, hi) = if lo.is_finite() {
        (lo, if hi > lo { hi } else { lo + 1.0 })
    } else {
        (0.0, 1.0)
    };
    let x = |v: f64| 30.0 + (v - lo) / (hi - lo) * W;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="strip" width="{}" height="80" font-family="sans-serif" font-size="10">"#,
        W + 60.0
    );
    for (row, (name, values, c)) in [("A", a, "#4c78a8"), ("B", b, "#f58518")]
        .into_iter()
        .enumerate()
    {
        let y = 12.0 + row as f64 * 22.0;
        let _ = write!(s, r#"<text x="4" y="{}">{name}</text>"#, y + 4.0);
        for &v in values {
            let _ = write!(
                s,
                r#"<circle cx="{:.2}" cy="{y}" r="3" fill="{c}" fill-opacity="0.6"/>"#,
                x(v)
            );
        }
        if let Some(m) = crate::stats::of(values.iter().copied()) {
            let _ = write!(
                s,
                r##"<line x1="{0:.2}" x2="{0:.2}" y1="{1}" y2="{2}" stroke="#000" stroke-width="2"/>"##,
                x(m.median),
                y - 8.0,
                y + 8.0
            );
        }
    }
    s.push_str(r##"<g class="axis"><line x1="30" x2="630" y1="52" y2="52" stroke="#333"/>"##);
    for t in ticks(lo, hi, 6) {
        let _ = write!(
            s,
            r#"<text x="{:.2}" y="66" text-anchor="middle">{}</text>"#,
            x(t),
            num(t)
        );
    }
    let _ = write!(
        s,
        r#"<text x="640" y="66">{}</text></g></svg>"#,
        escape(unit)
    );
    s
}

fn ab(h: &mut String, report: &Report) {
    h.push_str("<section id=\"ab\"><h2>A/B</h2>");
    let [a, b] = report.variants.as_slice() else {
        h.push_str("<p class=\"none\">Not an A/B run: one variant.</p></section>");
        return;
    };
    let Some(verdicts) = &report.verdicts else {
        let _ = write!(
            h,
            "<p class=\"none\">No verdicts: {}</p></section>",
            escape(report.verdicts_why_none.as_deref().unwrap_or("none"))
        );
        return;
    };
    let sa = Side::of_results(&a.name, &a.results);
    let sb = Side::of_results(&b.name, &b.results);
    let _ = write!(
        h,
        "<p>B against A, α = {}: the ratio of medians B/A with its bootstrap interval.</p>\
         <table><tr><th>metric</th><th>unit</th><th>n A</th><th>n B</th><th>median A</th><th>median B</th><th>B/A</th><th>interval</th><th>verdict</th></tr>",
        verdicts.alpha
    );
    let opt =
        |v: Option<f64>, digits: usize| v.map_or("–".to_string(), |v| format!("{v:.digits$}"));
    for row in &verdicts.rows {
        let c = &row.comparison;
        let verdict = format!("{:?}", c.verdict).to_lowercase();
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">[{}, {}]</td><td class=\"{}\" title=\"{}\">{}</td></tr>",
            escape(&c.name),
            escape(&row.unit),
            c.n_a,
            c.n_b,
            opt(c.median_a, 2),
            opt(c.median_b, 2),
            opt(c.ratio, 3),
            opt(c.ci_low, 3),
            opt(c.ci_high, 3),
            escape(&verdict),
            escape(&c.note),
            escape(&verdict)
        );
    }
    h.push_str("</table>");
    for row in &verdicts.rows {
        let c = &row.comparison;
        let (Some((_, va)), Some((_, vb))) = (sa.samples.get(&c.name), sb.samples.get(&c.name))
        else {
            continue;
        };
        let _ = write!(
            h,
            "<h3>{}: B/A {} [{}, {}]</h3>",
            escape(&c.name),
            opt(c.ratio, 3),
            opt(c.ci_low, 3),
            opt(c.ci_high, 3)
        );
        h.push_str(&strip(va, vb, &row.unit));
    }
    h.push_str("</section>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{fixture, Variant};

    const HOSTILE: &str = "evil<script>alert(1)</script><img src=x onerror=alert(2)>\"'&.service";

    fn report(variants: &[&str]) -> Report {
        Report::new(
            "<fixture>",
            variants
                .iter()
                .map(|n| Variant {
                    name: n.to_string(),
                    results: fixture::run(2, HOSTILE),
                })
                .collect(),
        )
    }

    #[test]
    fn a_hostile_unit_name_injects_no_markup() {
        let page = page(&report(&[""]));
        assert!(!page.contains("<script"), "no script element at all");
        assert!(!page.contains("<img"));
        assert!(page.contains("evil&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;&quot;&#39;&amp;.service"));
        assert_eq!(
            page.matches(r#"<g class="unit">"#).count(),
            2,
            "the first VM's activated units"
        );
        assert_eq!(page.matches(r#"<g class="vm""#).count(), 2);
        assert!(
            !page.contains("http://")
                || !page
                    .replace("http://www.w3.org/2000/svg", "")
                    .contains("http://"),
            "nothing fetched"
        );
    }

    #[test]
    fn sections_without_data_say_so() {
        let page = page(&report(&[""]));
        for id in [
            "timeline",
            "systemd",
            "initcalls",
            "exit-rate",
            "benchmarks",
            "ab",
        ] {
            assert!(page.contains(&format!("<section id=\"{id}\">")), "{id}");
        }
        assert!(page.contains("Not profiled: this run holds no initcall profile"));
        assert!(page.contains("Not profiled: this run's results.json holds no exit counts"));
        assert!(page.contains("No benchmarks in this run."));
        assert!(page.contains("Not an A/B run"));
    }

    #[test]
    fn an_ab_run_shows_each_metric_for_both_variants() {
        let r = report(&["A", "B"]);
        let page = page(&r);
        let rows = r.verdicts.as_ref().expect("verdicts").rows.len();
        assert!(rows > 0);
        assert_eq!(page.matches(r#"class="strip""#).count(), rows);
        assert_eq!(
            page.matches(r#"<g class="vm""#).count(),
            4,
            "both variants' VMs on the timeline"
        );
    }

    #[test]
    fn a_histogram_shades_each_peak() {
        let values = [1.0, 1.01, 1.02, 2.0, 2.01];
        let peaks = [
            crate::bench::record::PeakRecord {
                value: 1.01,
                low: 1.0,
                high: 1.02,
                count: 3,
                share: 0.6,
            },
            crate::bench::record::PeakRecord {
                value: 2.0,
                low: 2.0,
                high: 2.01,
                count: 2,
                share: 0.4,
            },
        ];
        let svg = histogram(&values, &peaks, "µs");
        assert_eq!(svg.matches(r#"class="peak""#).count(), 2);
    }
}
