//! The outputs: the table on stdout, `report.md`, `report.json` (schema in
//! `docs/bench-gate.md`).

use std::fmt::Write as _;

use super::gates::{Bound, Verdict};
use super::model::Summary;

/// Everything one bench-gate run found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub date_utc: String,
    pub commit: String,
    pub mode: String,
    pub runs: usize,
    pub pin: Option<String>,
    pub cpu_model: String,
    pub cpus: usize,
    pub kernel: String,
    pub load_start: String,
    pub load_end: String,
    pub summaries: Vec<Summary>,
    /// Named single figures (memory, reconnect, scale), with their unit.
    pub figures: Vec<(String, f64, &'static str)>,
    pub gates: Vec<Verdict>,
    pub notes: Vec<String>,
    /// `--wine`: the Wine version every process ran under (`None`: a Linux run).
    pub wine: Option<String>,
    /// `--wine`: the sanity checks that stand in for the gates.
    pub checks: Vec<Check>,
}

/// A `--wine` sanity check: not a performance gate, only "it ran and every call was answered".
#[derive(Debug, Clone)]
pub struct Check {
    pub what: String,
    pub pass: bool,
    pub detail: String,
}

/// The line every `--wine` output starts with.
pub fn wine_header(wine: &str) -> String {
    format!(
        "Measured under {wine} on Linux, not on Windows: the Windows build of Ferry and of its \
         peers, run by Wine. These are Wine's figures; no gate applies to them."
    )
}

/// A number without useless decimals: `10`, `0.1`, `1000000`.
pub fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

fn us(ns: Option<f64>) -> String {
    ns.map_or_else(|| "-".to_owned(), |ns| format!("{:.2}", ns / 1000.0))
}

fn rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} k", v / 1e3)
    } else if v > 0.0 {
        format!("{v:.0}")
    } else {
        "-".to_owned()
    }
}

pub fn size(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

/// How many times better Ferry (default policy) is than `s`: latency rows compare p50,
/// throughput rows messages per second. The editor rows compare with Ferry's typed postcard
/// client.
fn ferry_ratio(s: &Summary, all: &[Summary]) -> String {
    let reference = if s.key.scenario.starts_with("editor-") {
        "ferry-postcard"
    } else {
        "ferry"
    };
    let ferry = all.iter().find(|f| {
        f.key.transport == reference && f.key.scenario == s.key.scenario && f.key.size == s.key.size
    });
    let Some(ferry) = ferry else {
        return "-".to_owned();
    };
    let ratio = match (s.p50_ns, ferry.p50_ns) {
        (Some(them), Some(us)) if us > 0.0 => them / us,
        _ if ferry.msgs_per_sec > 0.0 && s.msgs_per_sec > 0.0 => {
            ferry.msgs_per_sec / s.msgs_per_sec
        }
        _ => return "-".to_owned(),
    };
    format!("{ratio:.1}x")
}

const COLUMNS: [&str; 12] = [
    "transport",
    "scenario",
    "size",
    "p50 µs",
    "p99 µs",
    "p99.9 µs",
    "max µs",
    "msgs/s",
    "GB/s",
    "Ferry is",
    "allocs/msg c/s",
    "CPUs c/s",
];

fn rows(report: &Report) -> Vec<[String; 12]> {
    report
        .summaries
        .iter()
        .map(|s| {
            let allocs = format!(
                "{}/{}",
                num(s.client_allocs_per_msg),
                s.server_allocs_per_msg.map_or_else(|| "-".to_owned(), num)
            );
            [
                s.key.transport.clone(),
                s.key.scenario.clone(),
                size(s.key.size),
                us(s.p50_ns),
                us(s.p99_ns),
                us(s.p999_ns),
                us(s.max_ns),
                rate(s.msgs_per_sec),
                if (s.key.scenario == "rtt" && s.key.size < crate::bench_gate::RTT_LARGE)
                    || s.key.scenario == "editor-complete"
                {
                    "-".to_owned()
                } else {
                    format!("{:.2}", s.gbps)
                },
                ferry_ratio(s, &report.summaries),
                allocs,
                s.placement.join(" "),
            ]
        })
        .collect()
}

fn gate_measured(g: &Verdict) -> String {
    g.measured.map_or_else(
        || "not measured".to_owned(),
        |v| {
            if v.abs() >= 100.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.3}")
            }
        },
    )
}

fn gate_verdict(g: &Verdict) -> &'static str {
    match (g.pass, g.enforced) {
        (true, _) => "pass",
        (false, true) => "FAIL",
        (false, false) => "missed (not enforced in --quick)",
    }
}

/// The plain-text table printed at the end of a run.
pub fn table(report: &Report) -> String {
    let rows = rows(report);
    let mut out = String::new();
    if let Some(wine) = &report.wine {
        let _ = writeln!(out, "{}\n", wine_header(wine));
    }
    let mut widths = COLUMNS.map(|c| c.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut String, cells: &[String]| {
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            let pad = w - cell.chars().count();
            if i < 3 || i == 11 {
                let _ = write!(out, "{cell}{} ", " ".repeat(pad));
            } else {
                let _ = write!(out, "{}{cell} ", " ".repeat(pad));
            }
        }
        out.push('\n');
    };
    line(&mut out, &COLUMNS.map(str::to_owned));
    for row in &rows {
        line(&mut out, row);
    }
    out.push('\n');
    for l in editor_lines(&report.summaries) {
        let _ = writeln!(out, "{l}");
    }
    for (name, value, unit) in &report.figures {
        let _ = writeln!(
            out,
            "{name:<52} {} {unit}",
            num((value * 100.0).round() / 100.0)
        );
    }
    out.push('\n');
    for c in &report.checks {
        let verdict = if c.pass { "ok" } else { "FAILED" };
        let _ = writeln!(out, "check {verdict:<6} {} ({})", c.what, c.detail);
    }
    for g in &report.gates {
        let _ = writeln!(
            out,
            "gate {:<34} {:>14} {:>16}  {}",
            g.name,
            g.threshold_text(),
            gate_measured(g),
            gate_verdict(g)
        );
    }
    out
}

pub fn markdown(report: &Report) -> String {
    let mut out = String::new();
    match &report.wine {
        Some(wine) => {
            let _ = writeln!(out, "# Ferry bench-gate report — under Wine, not Windows\n");
            let _ = writeln!(out, "**{}**\n", wine_header(wine));
        }
        None => {
            let _ = writeln!(out, "# Ferry bench-gate report\n");
        }
    }
    let _ = writeln!(
        out,
        "{} UTC, commit `{}`, mode `{}`, {} run(s) per scenario (figures are medians over runs), pin: {}.\n",
        report.date_utc,
        report.commit,
        report.mode,
        report.runs,
        report
            .pin
            .as_deref()
            .unwrap_or("none (the scheduler placed the processes)")
    );
    let _ = writeln!(
        out,
        "Machine: {} × {}, Linux {}; load average at start `{}`, at end `{}`.\n",
        report.cpus, report.cpu_model, report.kernel, report.load_start, report.load_end
    );
    let _ = writeln!(out, "| {} |", COLUMNS.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(COLUMNS.len()));
    for row in rows(report) {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    let _ = writeln!(
        out,
        "\n\"Ferry is\": the row's p50 over Ferry's (latency rows) or Ferry's messages/s over the \
         row's (throughput rows), same scenario and size. \"CPUs c/s\": the CPU the client's and \
         the server's busiest thread last ran on, per run.\n"
    );
    let editor = editor_lines(&report.summaries);
    if !editor.is_empty() {
        let _ = writeln!(out, "## Editor workload\n\n{EDITOR_NOTE}\n");
        for l in editor {
            let _ = writeln!(out, "{l}");
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "| figure | value |\n|---|---|");
    for (name, value, unit) in &report.figures {
        let _ = writeln!(
            out,
            "| {name} | {} {unit} |",
            num((value * 100.0).round() / 100.0)
        );
    }
    if !report.checks.is_empty() {
        let _ = writeln!(out, "\n| check | result | detail |\n|---|---|---|");
        for c in &report.checks {
            let verdict = if c.pass { "ok" } else { "FAILED" };
            let _ = writeln!(out, "| {} | {verdict} | {} |", c.what, c.detail);
        }
    }
    if !report.gates.is_empty() || report.wine.is_none() {
        let _ = writeln!(
            out,
            "\n| gate | what | threshold | measured | verdict |\n|---|---|---|---|---|"
        );
    }
    for g in &report.gates {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} |",
            g.name,
            g.what,
            g.threshold_text(),
            gate_measured(g),
            gate_verdict(g)
        );
    }
    if !report.notes.is_empty() {
        let _ = writeln!(out, "\nNotes:\n");
        for n in &report.notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    let _ = writeln!(
        out,
        "\n![64 B round-trip latency by percentile](latency.svg)"
    );
    if report
        .summaries
        .iter()
        .any(|s| s.key.scenario == "editor-complete")
    {
        let _ = writeln!(
            out,
            "\n![editor completion round trip by percentile](latency-editor.svg)"
        );
    }
    out
}

/// What the editor rows mean (the report's section on them).
const EDITOR_NOTE: &str = "The same messages over every transport, separate processes \
(docs/bench-gate.md). `complete`: a 2608 B completion request (path 40 B, line, column, 2 KiB \
before the cursor, 512 B after) answered by 5 items of about 80 B, sequential round trips. \
`16 callers`: the same call from 16 threads sharing one connection (one pair of pipes for \
JSON-RPC). `chat`: one request answered by 500 tokens of 2–8 bytes: time to the first token, and \
tokens/s over whole answers. `analyze`: a 1 MiB file in, 20 diagnostics out. `allocs/call`: \
heap allocations per call in the server (Ferry's typed server; the JSON-RPC server is the \
client's child and is not counted).";

/// The old system's published figures, for the rerun of its test (not measured here).
pub const OLD_SYSTEM: [(&str, &str, &str); 2] = [
    (
        "editor-old-100x10k",
        "100 connections × 10 000 typed completion calls",
        "71 K msg/s, 136 µs average",
    ),
    (
        "editor-old-32x1k",
        "32 connections, 1 KiB messages",
        "419 K msg/s, 10.05 µs p99",
    ),
];

/// The editor workload as markdown tables (empty when it did not run): one row per transport,
/// then the rerun of the old system's test beside its published figures.
pub fn editor_lines(all: &[Summary]) -> Vec<String> {
    let find = |t: &str, s: &str| {
        all.iter()
            .find(|x| x.key.transport == t && x.key.scenario == s)
    };
    let mut transports: Vec<&str> = Vec::new();
    for s in all.iter().filter(|s| s.key.scenario.starts_with("editor-")) {
        if !transports.contains(&s.key.transport.as_str()) {
            transports.push(&s.key.transport);
        }
    }
    if transports.is_empty() {
        return Vec::new();
    }
    let mut out = vec![
        "| transport | complete p50 µs | p99 µs | p99.9 µs | allocs/call c/s | 16 callers calls/s | \
         chat first token p50 µs | tokens/s | analyze 1 MiB p50 ms | GB/s |"
            .to_owned(),
        "|---|---|---|---|---|---|---|---|---|---|".to_owned(),
    ];
    for t in &transports {
        let c = find(t, "editor-complete");
        let c16 = find(t, "editor-complete-16");
        let chat = find(t, "editor-chat");
        let an = find(t, "editor-analyze");
        if c.is_none() && c16.is_none() && chat.is_none() && an.is_none() {
            continue;
        }
        out.push(format!(
            "| {t} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            us(c.and_then(|s| s.p50_ns)),
            us(c.and_then(|s| s.p99_ns)),
            us(c.and_then(|s| s.p999_ns)),
            c.map_or_else(
                || "-".to_owned(),
                |s| format!(
                    "{}/{}",
                    num((s.client_allocs_per_msg * 100.0).round() / 100.0),
                    s.server_allocs_per_msg
                        .map_or_else(|| "-".to_owned(), |v| num((v * 100.0).round() / 100.0))
                )
            ),
            c16.map_or_else(|| "-".to_owned(), |s| rate(s.msgs_per_sec)),
            us(chat.and_then(|s| s.p50_ns)),
            chat.map_or_else(|| "-".to_owned(), |s| rate(s.msgs_per_sec)),
            an.and_then(|s| s.p50_ns)
                .map_or_else(|| "-".to_owned(), |v| format!("{:.2}", v / 1e6)),
            an.map_or_else(|| "-".to_owned(), |s| format!("{:.2}", s.gbps)),
        ));
    }
    if let Some(p) = find("ferry-postcard", "editor-pipelined") {
        out.push(String::new());
        out.push(format!(
            "Pipelined typed calls (8 B in, 8 B out, 64 in flight, one client thread): {} calls/s.",
            rate(p.msgs_per_sec)
        ));
    }
    let old: Vec<_> = OLD_SYSTEM
        .iter()
        .filter_map(|(s, what, theirs)| Some((find("ferry-postcard", s)?, *what, *theirs)))
        .collect();
    if !old.is_empty() {
        out.push(String::new());
        out.push(
            "| the old system's test, rerun (Ferry typed, postcard) | calls/s | average µs | p99 µs | \
             the old system's published figures (not measured here) |"
                .to_owned(),
        );
        out.push("|---|---|---|---|---|".to_owned());
        for (s, what, theirs) in old {
            out.push(format!(
                "| {what} | {} | {} | {} | {theirs} |",
                rate(s.msgs_per_sec),
                us(s.mean_ns),
                us(s.p99_ns)
            ));
        }
    }
    out
}

fn jn(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => num(v),
        _ => "null".to_owned(),
    }
}

pub fn json(report: &Report) -> String {
    let mut out = String::from("{\n");
    let _ = writeln!(out, "  \"schema\": \"ferry-bench-gate/1\",");
    let _ = writeln!(
        out,
        "  \"run\": {{\"date_utc\": {}, \"commit\": {}, \"mode\": {}, \"runs_per_scenario\": {}, \"pin\": {}}},",
        crate::json::string(&report.date_utc),
        crate::json::string(&report.commit),
        crate::json::string(&report.mode),
        report.runs,
        report
            .pin
            .as_deref()
            .map_or_else(|| "null".to_owned(), crate::json::string)
    );
    let _ = writeln!(
        out,
        "  \"machine\": {{\"cpu_model\": {}, \"cpus\": {}, \"kernel\": {}, \"loadavg_start\": {}, \"loadavg_end\": {}}},",
        crate::json::string(&report.cpu_model),
        report.cpus,
        crate::json::string(&report.kernel),
        crate::json::string(&report.load_start),
        crate::json::string(&report.load_end)
    );
    out.push_str("  \"results\": [\n");
    for (i, s) in report.summaries.iter().enumerate() {
        let curve: Vec<String> = s
            .curve
            .iter()
            .map(|(p, v)| format!("[{}, {}]", num(*p), num(*v)))
            .collect();
        let placement: Vec<String> = s.placement.iter().map(|p| crate::json::string(p)).collect();
        let _ = write!(
            out,
            "    {{\"transport\": {}, \"scenario\": {}, \"msg_size\": {}, \"runs\": {}, \"samples\": {}, \
             \"p50_ns\": {}, \"p99_ns\": {}, \"p999_ns\": {}, \"max_ns\": {}, \"mean_ns\": {}, \
             \"msgs_per_sec\": {}, \
             \"gbps\": {}, \"client_allocs_per_msg\": {}, \"server_allocs_per_msg\": {}, \
             \"cpus_client_server\": [{}], \"percentiles_ns\": [{}]}}",
            crate::json::string(&s.key.transport),
            crate::json::string(&s.key.scenario),
            s.key.size,
            s.runs,
            s.samples,
            jn(s.p50_ns),
            jn(s.p99_ns),
            jn(s.p999_ns),
            jn(s.max_ns),
            jn(s.mean_ns.map(f64::round)),
            jn(Some(s.msgs_per_sec.round())),
            jn(Some((s.gbps * 1000.0).round() / 1000.0)),
            jn(Some(s.client_allocs_per_msg)),
            jn(s.server_allocs_per_msg),
            placement.join(", "),
            curve.join(", ")
        );
        out.push_str(if i + 1 < report.summaries.len() {
            ",\n"
        } else {
            "\n"
        });
    }
    out.push_str("  ],\n  \"figures\": [\n");
    for (i, (name, value, unit)) in report.figures.iter().enumerate() {
        let _ = write!(
            out,
            "    {{\"name\": {}, \"value\": {}, \"unit\": {}}}",
            crate::json::string(name),
            jn(Some(*value)),
            crate::json::string(unit)
        );
        out.push_str(if i + 1 < report.figures.len() {
            ",\n"
        } else {
            "\n"
        });
    }
    out.push_str("  ],\n  \"gates\": [\n");
    for (i, g) in report.gates.iter().enumerate() {
        let (kind, threshold) = match g.bound {
            Bound::Max(v) => ("max", v),
            Bound::Min(v) => ("min", v),
        };
        let _ = write!(
            out,
            "    {{\"name\": {}, \"what\": {}, \"bound\": {}, \"threshold\": {}, \"measured\": {}, \"pass\": {}, \"enforced\": {}}}",
            crate::json::string(g.name),
            crate::json::string(g.what),
            crate::json::string(kind),
            num(threshold),
            jn(g.measured),
            g.pass,
            g.enforced
        );
        out.push_str(if i + 1 < report.gates.len() {
            ",\n"
        } else {
            "\n"
        });
    }
    out.push_str("  ],\n");
    if let Some(wine) = &report.wine {
        // Only in `--wine` reports, so a Linux report is as it always was.
        let checks: Vec<String> = report
            .checks
            .iter()
            .map(|c| {
                format!(
                    "{{\"what\": {}, \"pass\": {}, \"detail\": {}}}",
                    crate::json::string(&c.what),
                    c.pass,
                    crate::json::string(&c.detail)
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "  \"wine\": {},\n  \"measured_under\": {},\n  \"checks\": [{}],",
            crate::json::string(wine),
            crate::json::string(&wine_header(wine)),
            checks.join(", ")
        );
    }
    let notes: Vec<String> = report
        .notes
        .iter()
        .map(|n| crate::json::string(n))
        .collect();
    let _ = writeln!(out, "  \"notes\": [{}]\n}}", notes.join(", "));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_sizes_read_well() {
        assert_eq!(num(10.0), "10");
        assert_eq!(num(0.1), "0.1");
        assert_eq!(num(0.00012), "0.0001");
        assert_eq!(size(64), "64 B");
        assert_eq!(size(1024), "1 KiB");
        assert_eq!(size(1 << 20), "1 MiB");
        assert_eq!(rate(17_400_000.0), "17.40 M");
    }

    #[test]
    fn wine_reports_say_so_and_show_checks_not_gates() {
        let linux = Report::default();
        assert!(!markdown(&linux).contains("Wine"));
        assert!(!json(&linux).contains("\"wine\""));
        let wine = Report {
            wine: Some("wine-8.0".into()),
            checks: vec![Check {
                what: "ferry rtt 64 B: every call answered".into(),
                pass: true,
                detail: "10 in 1 run(s)".into(),
            }],
            ..Report::default()
        };
        let md = markdown(&wine);
        assert!(md.starts_with("# Ferry bench-gate report — under Wine, not Windows"));
        assert!(md.contains("Measured under wine-8.0 on Linux, not on Windows"));
        assert!(md.contains("| ferry rtt 64 B: every call answered | ok |"));
        assert!(!md.contains("| gate |"));
        assert!(table(&wine).starts_with("Measured under wine-8.0"));
        assert!(json(&wine).contains("\"wine\": \"wine-8.0\""));
    }
}
