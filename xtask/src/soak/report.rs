//! The end of a run: the summary table, `report.json` and the plot.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::checker::{fmt_us, percentile};
use super::procs::Soak;
use crate::json;

/// Aggregate counters: the final (or last) line of every client, plus the servers' finals.
pub(super) fn totals(s: &Soak) -> Vec<(&'static str, u64)> {
    let keys = [
        "calls",
        "files",
        "streams",
        "streams_cancelled",
        "items",
        "slow_ok",
        "slow_cancelled",
        "deadline_overruns",
        "notes",
        "pushes",
        "bytes_out",
        "bytes_in",
        "errors",
    ];
    keys.iter()
        .map(|&k| (k, s.c.totals.values().map(|l| l.num(k)).sum()))
        .collect()
}

struct Slice {
    from: f64,
    to: f64,
    calls: u64,
    p50: Option<f64>,
    p99: Option<f64>,
    p999: Option<f64>,
    rss_mib: f64,
    fds: u64,
    maps: u64,
}

fn slices(s: &Soak) -> Vec<Slice> {
    let end = s.now().max(1.0);
    let n = 10usize;
    let w = end / n as f64;
    (0..n)
        .map(|i| {
            let (from, to) = (i as f64 * w, (i + 1) as f64 * w);
            let mut h = BTreeMap::new();
            for (&sec, x) in s.c.lat.range(from as u64..to.ceil() as u64) {
                if (sec as f64) < to {
                    for (&b, &c) in x {
                        *h.entry(b).or_insert(0u64) += c;
                    }
                }
            }
            let in_slice = s.c.samples.iter().filter(|x| x.t >= from && x.t < to);
            let (mut rss, mut fds, mut maps) = (0u64, 0u64, 0u64);
            for x in in_slice {
                rss = rss.max(x.rss_kb);
                fds = fds.max(x.fds);
                maps = maps.max(x.maps);
            }
            Slice {
                from,
                to,
                calls: h.values().sum(),
                p50: percentile(&h, 0.5),
                p99: percentile(&h, 0.99),
                p999: percentile(&h, 0.999),
                rss_mib: rss as f64 / 1024.0,
                fds,
                maps,
            }
        })
        .collect()
}

pub(super) fn summary(s: &Soak) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "== soak summary: {} clients, {:.0}s, chaos {}, seed {} ==",
        s.opts.clients,
        s.now(),
        if s.opts.chaos { "on" } else { "off" },
        s.opts.seed
    );
    let _ = writeln!(
        o,
        "\nmoved (honest clients, all processes incl. killed ones):"
    );
    for (k, v) in totals(s) {
        let shown = if k.starts_with("bytes") {
            format!("{:.1} MiB", v as f64 / (1 << 20) as f64)
        } else {
            v.to_string()
        };
        let _ = writeln!(o, "  {k:<18} {shown:>14}");
    }
    for f in &s.c.server_finals {
        let _ = writeln!(
            o,
            "  last server: requests {} accepted {} protocol_errors {} cancels_seen {} file_bytes {:.1} MiB",
            f.get("requests"),
            f.get("accepted"),
            f.get("protocol_errors"),
            f.get("cancels_seen"),
            f.num("file_bytes") as f64 / (1 << 20) as f64
        );
    }
    let _ = writeln!(o, "\nfaults injected:");
    if s.c.faults.is_empty() {
        let _ = writeln!(o, "  none");
    }
    for (k, v) in &s.c.faults {
        let _ = writeln!(o, "  {k:<24} {v:>6}");
    }
    for (k, v) in &s.c.hostile_outcomes {
        let _ = writeln!(
            o,
            "  hostile outcome {k:<26} x{} (max {} ms to cut off)",
            v.len(),
            v.iter().max().unwrap_or(&0)
        );
    }
    for n in &s.c.fault_notes {
        let _ = writeln!(o, "  note: {n}");
    }
    let _ = writeln!(
        o,
        "\nerrors by op/kind ({} unexpected):",
        s.c.errors_unexpected
    );
    if s.c.errors.is_empty() {
        let _ = writeln!(o, "  none");
    }
    for (k, v) in &s.c.errors {
        let _ = writeln!(o, "  {k:<32} {v:>8}");
    }
    let _ = writeln!(
        o,
        "\nover time (completion-call latency; server RSS/fds/maps, max per slice):"
    );
    let _ = writeln!(
        o,
        "  {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6} {:>6}",
        "slice", "calls", "p50", "p99", "p99.9", "rss MiB", "fds", "maps"
    );
    for sl in slices(s) {
        let f = |x: Option<f64>| x.map_or("-".to_owned(), fmt_us);
        let _ = writeln!(
            o,
            "  {:>5.0}-{:<5.0} {:>9} {:>9} {:>9} {:>9} {:>9.1} {:>6} {:>6}",
            sl.from,
            sl.to,
            sl.calls,
            f(sl.p50),
            f(sl.p99),
            f(sl.p999),
            sl.rss_mib,
            sl.fds,
            sl.maps
        );
    }
    let _ = writeln!(o, "\nviolations: {}", s.c.violations.len());
    o
}

fn json_num(x: Option<f64>) -> String {
    x.map_or("null".into(), |v| format!("{v:.1}"))
}

pub(super) fn report_json(s: &Soak) -> String {
    let mut o = String::from("{\n");
    let _ = writeln!(o, "  \"seed\": {},", s.opts.seed);
    let _ = writeln!(o, "  \"clients\": {},", s.opts.clients);
    let _ = writeln!(o, "  \"chaos\": {},", s.opts.chaos);
    let _ = writeln!(o, "  \"duration_s\": {:.1},", s.now());
    let _ = writeln!(o, "  \"passed\": {},", s.c.violations.is_empty());
    let list = |m: &BTreeMap<String, u64>| {
        m.iter()
            .map(|(k, v)| format!("{}: {v}", json::string(k)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let totals: Vec<String> = totals(s)
        .iter()
        .map(|(k, v)| format!("{}: {v}", json::string(k)))
        .collect();
    let _ = writeln!(o, "  \"totals\": {{{}}},", totals.join(", "));
    let _ = writeln!(o, "  \"faults\": {{{}}},", list(&s.c.faults));
    let _ = writeln!(o, "  \"errors\": {{{}}},", list(&s.c.errors));
    let _ = writeln!(o, "  \"errors_unexpected\": {},", s.c.errors_unexpected);
    let strs = |v: &[String]| {
        v.iter()
            .map(|x| json::string(x))
            .collect::<Vec<_>>()
            .join(",\n    ")
    };
    let _ = writeln!(
        o,
        "  \"violations\": [\n    {}\n  ],",
        strs(&s.c.violations)
    );
    let _ = writeln!(o, "  \"notes\": [\n    {}\n  ],", strs(&s.c.fault_notes));
    let mut per_sec = Vec::new();
    for (sec, h) in &s.c.lat {
        per_sec.push(format!(
            "{{\"t\": {sec}, \"calls\": {}, \"p50_us\": {}, \"p99_us\": {}, \"max_us\": {}}}",
            h.values().sum::<u64>(),
            json_num(percentile(h, 0.5)),
            json_num(percentile(h, 0.99)),
            json_num(percentile(h, 1.0))
        ));
    }
    let _ = writeln!(o, "  \"latency\": [\n    {}\n  ],", per_sec.join(",\n    "));
    let fault_log: Vec<String> =
        s.c.fault_log
            .iter()
            .map(|(kind, a, b)| {
                format!(
                    "{{\"fault\": \"{kind}\", \"start\": {a:.1}, \"end\": {}}}",
                    json_num(Some(*b).filter(|e| e.is_finite()))
                )
            })
            .collect();
    let _ = writeln!(
        o,
        "  \"fault_log\": [\n    {}\n  ],",
        fault_log.join(",\n    ")
    );
    let samples: Vec<String> = s
        .c
        .samples
        .iter()
        .map(|x| {
            format!(
                "{{\"t\": {:.1}, \"server\": {}, \"rss_kb\": {}, \"fds\": {}, \"maps\": {}, \"steady\": {}}}",
                x.t, x.generation, x.rss_kb, x.fds, x.maps, x.steady
            )
        })
        .collect();
    let _ = writeln!(
        o,
        "  \"server_samples\": [\n    {}\n  ]",
        samples.join(",\n    ")
    );
    o.push_str("}\n");
    o
}

/// Two panels: completion-call latency (p50, p99; log scale) and server RSS, over time.
pub(super) fn svg(s: &Soak) -> String {
    let (w, h, pad) = (960.0, 560.0, 60.0);
    let panel_h = (h - 3.0 * pad) / 2.0;
    let t_end = s.now().max(1.0);
    let x = |t: f64| pad + (w - 2.0 * pad) * t / t_end;
    let mut o = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let _ = writeln!(
        o,
        "<text x=\"{pad}\" y=\"20\">ferry soak: seed {}, {} clients, chaos {}, {:.0}s</text>",
        s.opts.seed,
        s.opts.clients,
        if s.opts.chaos { "on" } else { "off" },
        t_end
    );
    // Panel 1: latency, log10 microseconds.
    let pts: Vec<(f64, f64, f64)> =
        s.c.lat
            .iter()
            .filter_map(|(&t, hh)| Some((t as f64, percentile(hh, 0.5)?, percentile(hh, 0.99)?)))
            .collect();
    let lmax = pts
        .iter()
        .map(|p| p.2)
        .fold(10.0f64, f64::max)
        .log10()
        .ceil();
    let lmin = pts
        .iter()
        .map(|p| p.1)
        .fold(1e9f64, f64::min)
        .max(1.0)
        .log10()
        .floor();
    let top1 = pad;
    let y1 = |us: f64| top1 + panel_h * (1.0 - (us.log10() - lmin) / (lmax - lmin).max(1.0));
    let _ = writeln!(
        o,
        "<rect x=\"{pad}\" y=\"{top1}\" width=\"{}\" height=\"{panel_h}\" fill=\"none\" stroke=\"#999\"/>",
        w - 2.0 * pad
    );
    let mut d = lmin;
    while d <= lmax {
        let us = 10f64.powf(d);
        let _ = writeln!(
            o,
            "<text x=\"4\" y=\"{:.1}\">{}</text>",
            y1(us) + 4.0,
            fmt_us(us)
        );
        d += 1.0;
    }
    for (i, (color, name)) in [("#1f77b4", "p50"), ("#d62728", "p99")].iter().enumerate() {
        let line: Vec<String> = pts
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.0), y1(if i == 0 { p.1 } else { p.2 })))
            .collect();
        let _ = writeln!(
            o,
            "<polyline fill=\"none\" stroke=\"{color}\" points=\"{}\"/>",
            line.join(" ")
        );
        let _ = writeln!(
            o,
            "<text x=\"{:.0}\" y=\"{:.0}\" fill=\"{color}\">call latency {name}</text>",
            pad + 10.0 + 150.0 * i as f64,
            top1 + 14.0
        );
    }
    // Panel 2: RSS.
    let top2 = 2.0 * pad + panel_h;
    let rmax =
        s.c.samples
            .iter()
            .map(|x| x.rss_kb)
            .max()
            .unwrap_or(1)
            .max(1) as f64
            / 1024.0;
    let y2 = |mib: f64| top2 + panel_h * (1.0 - mib / (rmax * 1.1));
    let _ = writeln!(
        o,
        "<rect x=\"{pad}\" y=\"{top2}\" width=\"{}\" height=\"{panel_h}\" fill=\"none\" stroke=\"#999\"/>",
        w - 2.0 * pad
    );
    let line: Vec<String> =
        s.c.samples
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.t), y2(p.rss_kb as f64 / 1024.0)))
            .collect();
    let _ = writeln!(
        o,
        "<polyline fill=\"none\" stroke=\"#2ca02c\" points=\"{}\"/>",
        line.join(" ")
    );
    let _ = writeln!(
        o,
        "<text x=\"{:.0}\" y=\"{:.0}\" fill=\"#2ca02c\">server RSS (max {rmax:.1} MiB)</text>",
        pad + 10.0,
        top2 + 14.0
    );
    let _ = writeln!(
        o,
        "<text x=\"4\" y=\"{:.0}\">{rmax:.0} MiB</text><text x=\"4\" y=\"{:.0}\">0</text>",
        y2(rmax) + 4.0,
        y2(0.0)
    );
    for i in 0..=5 {
        let t = t_end * i as f64 / 5.0;
        let _ = writeln!(
            o,
            "<text x=\"{:.0}\" y=\"{:.0}\">{t:.0}s</text>",
            x(t) - 8.0,
            h - pad / 2.0
        );
    }
    o.push_str("</svg>\n");
    o
}
