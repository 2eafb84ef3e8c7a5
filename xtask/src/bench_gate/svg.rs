//! `latency.svg`: every transport's 64 B round-trip latency by percentile, both axes
//! logarithmic (x in "nines": 90, 99, 99.9 …; y in nanoseconds), hand-written SVG.

use std::fmt::Write as _;

use super::model::Summary;

const W: f64 = 900.0;
const H: f64 = 520.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
const COLORS: &[&str] = &[
    "#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

/// Percentile → position in nines: p50 → 0.3, p90 → 1, p99 → 2, p99.9 → 3.
fn nines(p: f64) -> f64 {
    -(1.0 - (p / 100.0).min(0.999_999)).log10()
}

fn latency_label(ns: f64) -> String {
    match ns {
        ns if ns >= 1e9 => format!("{} s", ns / 1e9),
        ns if ns >= 1e6 => format!("{} ms", ns / 1e6),
        ns if ns >= 1e3 => format!("{} µs", ns / 1e3),
        ns => format!("{ns} ns"),
    }
}

pub fn plot(title: &str, series: &[&Summary]) -> String {
    let points: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.curve.iter().copied())
        .filter(|&(_, v)| v > 0.0)
        .collect();
    let (lo, hi) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &(_, v)| {
            (lo.min(v.log10()), hi.max(v.log10()))
        });
    let (y0, y1) = if points.is_empty() {
        (2.0, 5.0)
    } else {
        (lo.floor(), hi.ceil().max(lo.floor() + 1.0))
    };
    let x1 = points
        .iter()
        .map(|&(p, _)| nines(p))
        .fold(3.0, f64::max)
        .ceil();
    let px = |p: f64| LEFT + nines(p) / x1 * (W - LEFT - RIGHT);
    let py = |v: f64| TOP + (y1 - v.log10()) / (y1 - y0) * (H - TOP - BOTTOM);

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="28" font-size="15">{title}</text>"#
    );
    // Grid and axes.
    let mut decade = y0;
    while decade <= y1 + 1e-9 {
        let y = py(10f64.powf(decade));
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            latency_label(10f64.powf(decade))
        );
        decade += 1.0;
    }
    let mut n = 0.0;
    while n <= x1 + 1e-9 {
        let p = 100.0 * (1.0 - 10f64.powf(-n));
        let x = LEFT + n / x1 * (W - LEFT - RIGHT);
        let label = if n == 0.0 {
            "p0".to_owned()
        } else {
            format!("p{}", super::report::num((p * 1e4).round() / 1e4))
        };
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            H - BOTTOM,
            H - BOTTOM + 18.0
        );
        n += 1.0;
    }
    let _ = writeln!(
        out,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile (log scale of 1 − p)</text><text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">round-trip latency (log scale)</text>"##,
        (LEFT + W - RIGHT) / 2.0,
        H - 18.0,
        (TOP + H - BOTTOM) / 2.0,
        (TOP + H - BOTTOM) / 2.0
    );
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = s
            .curve
            .iter()
            .filter(|&&(_, v)| v > 0.0)
            .map(|&(p, v)| format!("{:.1},{:.1}", px(p), py(v)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        let ly = TOP + 10.0 + i as f64 * 20.0;
        let p50 = s
            .p50_ns
            .map_or_else(String::new, |v| format!(" (p50 {:.2} µs)", v / 1000.0));
        let _ = writeln!(
            out,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}{p50}</text>"#,
            W - RIGHT + 12.0,
            W - RIGHT + 32.0,
            W - RIGHT + 38.0,
            ly + 4.0,
            s.key.transport
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench_gate::model::{Hist, Key, Run, summarize};

    #[test]
    fn plot_has_one_line_per_transport() {
        let run = |v| Run {
            hist: Hist(vec![(v, 90), (v * 10, 10)]),
            msgs: 100,
            elapsed_ns: 1,
            ..Run::default()
        };
        let key = |t: &str| Key {
            transport: t.into(),
            scenario: "rtt".into(),
            size: 64,
        };
        let a = summarize(key("ferry"), &[run(800)]);
        let b = summarize(key("uds"), &[run(12_000)]);
        let svg = plot("t", &[&a, &b]);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains(">ferry (p50 0.80 µs)<"));
        assert!(svg.contains(">10 µs<"));
        assert!((nines(99.0) - 2.0).abs() < 1e-9);
    }
}
