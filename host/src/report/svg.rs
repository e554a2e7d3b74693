//! The boot-timeline chart: each VM's boot as stacked phase bars on one time
//! axis (ms from the first VM's spawn), the host's view and the guest's side
//! by side on the same scale. Self-contained SVG: no scripts, no external
//! references, every piece of text escaped. Also the drawing helpers the
//! HTML page's other charts share (ticks, colours).

use std::fmt::Write;

use super::{escape, guest_segments, host_segments, vm_label, Report, Segment};

/// The phases, in boot order, with their colours.
pub const PHASES: [(&str, &str); 7] = [
    ("vmm", "#8c6bb1"),
    ("vmm+kernel", "#72b7b2"),
    ("kernel", "#4c78a8"),
    ("initrd", "#f58518"),
    ("userspace", "#54a24b"),
    ("report", "#bab0ac"),
    ("shutdown", "#e45756"),
];

pub fn colour(phase: &str) -> &'static str {
    PHASES
        .iter()
        .find(|(p, _)| *p == phase)
        .map_or("#999999", |(_, c)| c)
}

/// Round tick values covering `0..=max`: steps of 1, 2 or 5 × 10ⁿ, about
/// `want` of them.
pub fn ticks(min: f64, max: f64, want: usize) -> Vec<f64> {
    let span = max - min;
    if !(span.is_finite() && span > 0.0) {
        return vec![min];
    }
    let raw = span / want.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (min / step).ceil() as i64;
    let last = (max / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// A number for an axis label: no more decimals than it needs.
pub fn num(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

const LABEL_W: f64 = 170.0;
const PANEL_W: f64 = 380.0;
const GAP: f64 = 30.0;
const ROW_H: f64 = 20.0;
const TOP: f64 = 46.0;

/// The chart.
pub fn timeline(report: &Report) -> String {
    let origin = report.origin_ns();
    let rows: Vec<(String, Vec<Segment>, Vec<Segment>)> = report
        .vms()
        .map(|(variant, vm)| {
            let label = format!("{} ({})", vm_label(variant, vm), vm.status.as_str());
            (label, host_segments(vm, origin), guest_segments(vm, origin))
        })
        .collect();
    let max_ms = rows
        .iter()
        .flat_map(|(_, h, g)| h.iter().chain(g))
        .map(|s| s.end_ms)
        .fold(0.0f64, f64::max)
        .max(1.0);
    let width = LABEL_W + 2.0 * PANEL_W + GAP + 20.0;
    let rows_h = rows.len().max(1) as f64 * ROW_H;
    let legend_y = TOP + rows_h + 42.0;
    let height = legend_y + 24.0;
    let x =
        |panel: usize, ms: f64| LABEL_W + panel as f64 * (PANEL_W + GAP) + ms / max_ms * PANEL_W;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(
        s,
        "<title>Boot timeline: {}</title>",
        escape(&report.source)
    );
    let _ = write!(
        s,
        r##"<rect width="{width}" height="{height}" fill="#ffffff"/>"##
    );
    for (panel, title) in [
        (0, "host view (CLOCK_MONOTONIC)"),
        (1, "guest view (its clock, Ready aligned)"),
    ] {
        let _ = write!(
            s,
            r#"<text class="panel-title" x="{}" y="{}" font-weight="bold">{}</text>"#,
            x(panel, 0.0),
            TOP - 28.0,
            escape(title)
        );
    }
    // The axis under each panel, with grid lines through the rows.
    let axis_y = TOP + rows_h + 4.0;
    s.push_str(r#"<g class="axis">"#);
    for panel in 0..2 {
        let _ = write!(
            s,
            r##"<line x1="{}" x2="{}" y1="{axis_y}" y2="{axis_y}" stroke="#333"/>"##,
            x(panel, 0.0),
            x(panel, max_ms)
        );
        for t in ticks(0.0, max_ms, 5) {
            let tx = x(panel, t);
            let _ = write!(
                s,
                r##"<line x1="{tx}" x2="{tx}" y1="{}" y2="{}" stroke="#ddd"/><line x1="{tx}" x2="{tx}" y1="{axis_y}" y2="{}" stroke="#333"/><text class="tick" x="{tx}" y="{}" text-anchor="middle">{}</text>"##,
                TOP - 4.0,
                axis_y,
                axis_y + 4.0,
                axis_y + 16.0,
                num(t)
            );
        }
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">ms since the first spawn</text>"#,
            x(panel, max_ms / 2.0),
            axis_y + 30.0
        );
    }
    s.push_str("</g>");
    for (i, (label, host, guest)) in rows.iter().enumerate() {
        let y = TOP + i as f64 * ROW_H;
        let _ = write!(
            s,
            r#"<g class="vm" data-vm="{}"><text x="{}" y="{}" text-anchor="end">{}</text>"#,
            i,
            LABEL_W - 8.0,
            y + ROW_H * 0.7,
            escape(label)
        );
        for (panel, segs, view) in [(0, host, "host"), (1, guest, "guest")] {
            if segs.is_empty() {
                let _ = write!(
                    s,
                    r##"<text x="{}" y="{}" fill="#888">no {view} marks</text>"##,
                    x(panel, 0.0) + 4.0,
                    y + ROW_H * 0.7
                );
            }
            for seg in segs.iter() {
                let x0 = x(panel, seg.start_ms.max(0.0));
                let w = (x(panel, seg.end_ms) - x0).max(0.5);
                let _ = write!(
                    s,
                    r#"<rect class="phase {view}" data-phase="{}" x="{x0:.2}" y="{:.2}" width="{w:.2}" height="{:.2}" fill="{}"><title>{}</title></rect>"#,
                    escape(seg.name),
                    y + 3.0,
                    ROW_H - 6.0,
                    colour(seg.name),
                    escape(&format!(
                        "{label}, {view}: {} {:.1} ms ({:.1}–{:.1})",
                        seg.name,
                        seg.end_ms - seg.start_ms,
                        seg.start_ms,
                        seg.end_ms
                    ))
                );
            }
        }
        s.push_str("</g>");
    }
    if rows.is_empty() {
        let _ = write!(
            s,
            r#"<text x="{}" y="{}">no VMs in this run</text>"#,
            LABEL_W,
            TOP + 14.0
        );
    }
    s.push_str(r#"<g class="legend">"#);
    let mut lx = LABEL_W;
    for (phase, c) in PHASES {
        let _ = write!(
            s,
            r#"<rect x="{lx}" y="{legend_y}" width="12" height="12" fill="{c}"/><text x="{}" y="{}">{phase}</text>"#,
            lx + 16.0,
            legend_y + 10.0
        );
        lx += 28.0 + 7.0 * phase.len() as f64;
    }
    s.push_str("</g></svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{fixture, Variant};

    fn report(vms: usize, unit: &str) -> Report {
        Report::new(
            "<fixture>",
            vec![Variant {
                name: String::new(),
                results: fixture::run(vms, unit),
            }],
        )
    }

    #[test]
    fn one_bar_group_per_vm_and_an_axis() {
        let svg = timeline(&report(4, "a.service"));
        assert_eq!(svg.matches(r#"<g class="vm""#).count(), 4);
        assert_eq!(svg.matches(r#"<g class="axis">"#).count(), 1);
        // qemu: vmm+kernel, userspace, report, shutdown on the host; kernel
        // and userspace in the guest.
        assert_eq!(svg.matches(r#"class="phase host""#).count(), 4 * 4);
        assert_eq!(svg.matches(r#"class="phase guest""#).count(), 4 * 2);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.contains("&lt;fixture&gt;"));
        assert!(!svg.contains("<script"));
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(ticks(0.0, 340.0, 5), [0.0, 100.0, 200.0, 300.0]);
        assert_eq!(
            ticks(0.0, 1.0, 5),
            [0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
        );
        assert_eq!(ticks(0.0, 0.0, 5), [0.0]);
        assert_eq!(num(0.2), "0.2");
        assert_eq!(num(300.0), "300");
    }
}
