//! The gates: thresholds from `benches/gates.toml`, measured values from the run, a verdict.

use std::collections::BTreeMap;

pub const GATES_FILE: &str = "benches/gates.toml";

/// A gate the harness knows how to measure.
pub struct Spec {
    /// The key in the gates file, without `_max` / `_min`.
    pub name: &'static str,
    pub what: &'static str,
    /// Depends on timing: enforced only by a full run, not by `--quick`.
    pub timing: bool,
}

pub const SPECS: &[Spec] = &[
    Spec {
        name: "rtt_64b_p99_us",
        what: "Ferry 64 B round trip p99 (µs)",
        timing: true,
    },
    Spec {
        name: "rtt_64b_p50_ratio_to_uds",
        what: "Ferry 64 B p50 / UDS 64 B p50",
        timing: true,
    },
    Spec {
        name: "pipelined_64b_requests_per_sec",
        what: "pipelined 64 B requests/s, one client",
        timing: true,
    },
    Spec {
        name: "oneway_64b_msgs_per_sec",
        what: "one-way 64 B messages/s",
        timing: true,
    },
    Spec {
        name: "rtt_p99_us",
        what: "Ferry round trip p99, worst of every size below 1 MiB (µs)",
        timing: true,
    },
    Spec {
        name: "pipelined_64b_ratio_to_best_peer",
        what: "pipelined 64 B requests/s / the best of UDS, TCP, pipe",
        timing: true,
    },
    Spec {
        name: "oneway_1mib_ratio_to_best_socket",
        what: "one-way 1 MiB messages/s / the better of UDS and TCP",
        timing: true,
    },
    Spec {
        name: "scale_1000_p99_us",
        what: "1000 connections from 10 processes, round trip p99 (µs)",
        timing: true,
    },
    Spec {
        name: "load_100_p99_ratio_to_uds",
        what: "100 blocking callers x 64 B: Ferry p99 / Unix socket p99",
        timing: true,
    },
    Spec {
        name: "load_100_async_calls_per_sec",
        what: "100 tokio tasks on one AsyncClient x 64 B: calls/s",
        timing: true,
    },
    Spec {
        name: "rss_anon_at_rest_kib",
        what: "server RssAnon at rest (KiB)",
        timing: false,
    },
    Spec {
        name: "connections_served",
        what: "connections served (>= 10 processes)",
        timing: false,
    },
    Spec {
        name: "allocs_per_msg",
        what: "heap allocations per message (client, server)",
        timing: false,
    },
    Spec {
        name: "reconnect_ms",
        what: "reconnect after server restart (ms)",
        timing: true,
    },
    Spec {
        name: "editor_complete_p99_us",
        what: "typed completion round trip p99, postcard, default policy (µs)",
        timing: true,
    },
    Spec {
        name: "editor_complete_p50_ratio_to_jsonrpc",
        what: "typed completion p50 / the faster JSON-RPC-over-stdio p50",
        timing: true,
    },
    Spec {
        name: "editor_pipelined_calls_per_sec",
        what: "pipelined typed calls/s (8 B in, 8 B out), one client",
        timing: true,
    },
    Spec {
        name: "editor_server_allocs_per_call",
        what: "server heap allocations per typed completion (postcard borrowed, rkyv)",
        timing: false,
    },
];

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    Max(f64),
    Min(f64),
}

/// Reads the gates file: every known gate exactly once, nothing unknown.
pub fn parse(text: &str) -> Result<BTreeMap<&'static str, Bound>, String> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("{GATES_FILE}:{}: expected `name = number`", n + 1))?;
        let (key, value) = (key.trim(), value.trim());
        let value: f64 = value
            .parse()
            .map_err(|_| format!("{GATES_FILE}:{}: `{value}` is not a number", n + 1))?;
        let (name, bound) = if let Some(name) = key.strip_suffix("_max") {
            (name, Bound::Max(value))
        } else if let Some(name) = key.strip_suffix("_min") {
            (name, Bound::Min(value))
        } else {
            return Err(format!(
                "{GATES_FILE}:{}: `{key}` must end in `_max` or `_min`",
                n + 1
            ));
        };
        let spec = SPECS
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| format!("{GATES_FILE}:{}: no gate named `{name}`", n + 1))?;
        if out.insert(spec.name, bound).is_some() {
            return Err(format!("{GATES_FILE}: `{name}` is set twice"));
        }
    }
    if let Some(missing) = SPECS.iter().find(|s| !out.contains_key(s.name)) {
        return Err(format!(
            "{GATES_FILE} has no threshold for `{}`",
            missing.name
        ));
    }
    Ok(out)
}

#[derive(Debug, Clone)]
pub struct Verdict {
    pub name: &'static str,
    pub what: &'static str,
    pub bound: Bound,
    pub measured: Option<f64>,
    pub pass: bool,
    pub enforced: bool,
}

impl Verdict {
    pub fn threshold_text(&self) -> String {
        match self.bound {
            Bound::Max(v) => format!("<= {}", crate::bench_gate::report::num(v)),
            Bound::Min(v) => format!(">= {}", crate::bench_gate::report::num(v)),
        }
    }
}

/// Judges every gate; a gate with nothing measured fails.
pub fn judge(
    bounds: &BTreeMap<&'static str, Bound>,
    measured: &BTreeMap<&'static str, f64>,
    quick: bool,
) -> Vec<Verdict> {
    SPECS
        .iter()
        .map(|spec| {
            let bound = bounds[spec.name];
            let value = measured.get(spec.name).copied();
            let pass = value.is_some_and(|v| match bound {
                Bound::Max(t) => v <= t,
                Bound::Min(t) => v >= t,
            });
            Verdict {
                name: spec.name,
                what: spec.what,
                bound,
                measured: value,
                pass,
                enforced: !(quick && spec.timing),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checked_in_file_parses() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../benches/gates.toml"
        ))
        .unwrap();
        let bounds = parse(&text).unwrap();
        assert_eq!(bounds["rtt_64b_p99_us"], Bound::Max(10.0));
        assert_eq!(bounds["connections_served"], Bound::Min(1000.0));
        assert_eq!(bounds["editor_complete_p99_us"], Bound::Max(10.0));
        assert_eq!(
            bounds["editor_complete_p50_ratio_to_jsonrpc"],
            Bound::Max(0.1)
        );
        assert_eq!(
            bounds["editor_pipelined_calls_per_sec"],
            Bound::Min(1_000_000.0)
        );
        assert_eq!(bounds["editor_server_allocs_per_call"], Bound::Max(0.0));
        // Issue 17's gates.
        assert_eq!(bounds["oneway_64b_msgs_per_sec"], Bound::Min(20_000_000.0));
        assert_eq!(bounds["rtt_p99_us"], Bound::Max(10.0));
        assert_eq!(bounds["pipelined_64b_ratio_to_best_peer"], Bound::Min(2.0));
        assert_eq!(bounds["oneway_1mib_ratio_to_best_socket"], Bound::Min(2.0));
        assert_eq!(bounds["scale_1000_p99_us"], Bound::Max(50.0));
        assert_eq!(bounds["load_100_p99_ratio_to_uds"], Bound::Max(1.0));
        assert_eq!(
            bounds["load_100_async_calls_per_sec"],
            Bound::Min(1_000_000.0)
        );
    }

    #[test]
    fn bad_files_are_refused() {
        let all: String = SPECS
            .iter()
            .map(|s| format!("{}_max = 1\n", s.name))
            .collect();
        assert!(parse(&all).is_ok());
        assert!(
            parse(&format!("{all}bogus_max = 1\n"))
                .unwrap_err()
                .contains("bogus")
        );
        assert!(
            parse(&format!("{all}reconnect_ms_max = 2\n"))
                .unwrap_err()
                .contains("twice")
        );
        assert!(parse("reconnect_ms = 2\n").unwrap_err().contains("_max"));
        assert!(
            parse("reconnect_ms_max = fast\n")
                .unwrap_err()
                .contains("number")
        );
        assert!(
            parse("reconnect_ms_max = 1\n")
                .unwrap_err()
                .contains("no threshold")
        );
    }

    #[test]
    fn judging_fails_missing_and_out_of_bounds_values() {
        let all: String = SPECS
            .iter()
            .map(|s| format!("{}_max = 10\n", s.name))
            .collect();
        let bounds = parse(&all).unwrap();
        let mut measured = BTreeMap::new();
        measured.insert("rtt_64b_p99_us", 9.0);
        measured.insert("reconnect_ms", 11.0);
        let v = judge(&bounds, &measured, false);
        let get = |n: &str| v.iter().find(|g| g.name == n).unwrap();
        assert!(get("rtt_64b_p99_us").pass);
        assert!(!get("reconnect_ms").pass);
        assert!(!get("allocs_per_msg").pass, "nothing measured must fail");
        let quick = judge(&bounds, &measured, true);
        assert!(
            !quick
                .iter()
                .find(|g| g.name == "reconnect_ms")
                .unwrap()
                .enforced
        );
        assert!(
            quick
                .iter()
                .find(|g| g.name == "allocs_per_msg")
                .unwrap()
                .enforced
        );
    }
}
