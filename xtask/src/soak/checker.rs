//! What the children report (`kind key=value ...` lines) and the verdict on it: the checks run
//! on lines and samples only, never on processes, so that unit tests can feed them.

use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, Default)]
pub struct Line {
    pub kind: String,
    pub kv: Vec<(String, String)>,
}

impl Line {
    pub fn parse(text: &str) -> Line {
        let text = text.trim_end();
        let (head, msg) = match text.find(" msg=") {
            Some(i) => (&text[..i], Some(&text[i + 5..])),
            None => (text, None),
        };
        let mut words = head.split_whitespace();
        let kind = words.next().unwrap_or("").to_owned();
        let mut kv: Vec<(String, String)> = words
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        if let Some(m) = msg {
            kv.push(("msg".into(), m.to_owned()));
        }
        Line { kind, kv }
    }
    pub fn get(&self, k: &str) -> &str {
        self.kv
            .iter()
            .find(|(key, _)| key == k)
            .map_or("", |(_, v)| v.as_str())
    }
    pub fn num(&self, k: &str) -> u64 {
        self.get(k).parse().unwrap_or(0)
    }
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub t: f64,
    pub generation: u64,
    pub rss_kb: u64,
    pub fds: u64,
    pub maps: u64,
    pub steady: bool,
}

/// Everything observed, and the verdict. Separate from process handling so that the checks can
/// be fed lines in unit tests.
#[derive(Debug, Default)]
pub struct Checker {
    pub violations: Vec<String>,
    pub errors: BTreeMap<String, u64>,
    pub errors_unexpected: u64,
    pub faults: BTreeMap<String, u64>,
    pub fault_notes: Vec<String>,
    /// Fault windows in which connection errors are expected: (start, end).
    pub windows: Vec<(f64, f64)>,
    /// Every fault injected: (kind, start, end), end infinite until it ends.
    pub fault_log: Vec<(String, f64, f64)>,
    /// Per-second merged latency histograms of completion calls (bucket -> count).
    pub lat: BTreeMap<u64, BTreeMap<u32, u64>>,
    /// Seconds during which a hostile client was active / no fault at all was active.
    pub hostile_secs: Vec<u64>,
    pub quiet_secs: Vec<u64>,
    pub samples: Vec<Sample>,
    /// Per-client totals (last progress or final line), by client id.
    pub totals: BTreeMap<u64, Line>,
    pub server_finals: Vec<Line>,
    /// (client id, notes the server saw, last seq) from the server's `disc` lines.
    pub server_disc: HashMap<u64, (u64, i64)>,
    pub hostile_outcomes: BTreeMap<String, Vec<u64>>,
}

impl Checker {
    pub fn violation(&mut self, v: String) {
        if self.violations.len() < 200 {
            self.violations.push(v);
        }
    }

    pub(super) fn in_window(&self, t: f64) -> bool {
        self.windows.iter().any(|&(a, b)| t >= a && t <= b)
    }

    /// An `err` line from an honest client at time `t` (seconds into the run).
    pub fn client_error(&mut self, t: f64, l: &Line, stopped_recently: bool) {
        let op = l.get("op");
        let kind = l.get("kind");
        *self.errors.entry(format!("{op}/{kind}")).or_default() += 1;
        let expected = match kind {
            // The server was being killed/restarted or a connection-level fault was on.
            "closed" | "not_running" => self.in_window(t),
            "timeout" => self.in_window(t) || stopped_recently,
            "refused" | "io" => op == "connect" && self.in_window(t),
            _ => false,
        };
        if !expected {
            self.errors_unexpected += 1;
            self.violation(format!(
                "unexpected_error: client {} {op} failed with {kind} at {t:.1}s outside any fault window: {}",
                l.get("client"),
                l.get("msg")
            ));
        }
    }

    pub fn add_latency(&mut self, sec: u64, l: &Line) {
        let lat = l.get("lat");
        if lat.is_empty() || lat == "-" {
            return;
        }
        let h = self.lat.entry(sec).or_default();
        for part in lat.split(',') {
            if let Some((b, n)) = part.split_once(':')
                && let (Ok(b), Ok(n)) = (b.parse::<u32>(), n.parse::<u64>())
            {
                *h.entry(b).or_default() += n;
            }
        }
    }

    /// Leak check: for each server generation that lived long enough, the floor (RSS) or median
    /// (descriptors, mappings) of its steady samples in its last 20 % must be within 5 % of its
    /// baseline.
    ///
    /// The baseline is the first steady samples after both the warm-up (the first 40 % of the
    /// server's life: per-connection buffers grow to the largest message each connection has
    /// seen and are then reused) and the first occurrence, in this server's life, of every kind
    /// of fault that it went through. A fault's first occurrence can raise the server's memory
    /// once for good without leaking: in the first connection churn thousands of connections
    /// come and go; tables that keep their capacity (connection slots, hash maps) grow to the
    /// most open at once, and glibc's heaps keep the high-water of that. Measured on the soak server alone, 1.5 s churns of ~2500
    /// connections each: RssAnon 288 -> 940 kB after the first, 1068 after the fifth, 1160-1172
    /// from the ninth to the fifteenth (~13 000 connections without growth); malloc's in-use
    /// bytes 46 -> 200 -> 253 -> 300 -> 316 kB over four. Seeds 2245681787 and 1445374470 failed
    /// on that first step (+5-7 %) when the first churn came after the baseline began. After every
    /// kind has happened once, such a high-water is inside the baseline; a leak still grows
    /// from there. A generation whose last first occurrence leaves no room for a baseline before
    /// its last 20 % is reported as not checked.
    pub fn check_growth(&mut self, min_span: f64) {
        let mut generations: BTreeMap<u64, Vec<&Sample>> = BTreeMap::new();
        for s in &self.samples {
            generations.entry(s.generation).or_default().push(s);
        }
        let mut found = Vec::new();
        for (generation, all) in &generations {
            let (Some(first), Some(last)) = (all.first(), all.last()) else {
                continue;
            };
            let span = last.t - first.t;
            if span < min_span {
                continue;
            }
            let warm = first.t + span * 0.4;
            let late_start = last.t - span * 0.2;
            // The end of the first occurrence of each kind of fault this server went through.
            let mut firsts: BTreeMap<&str, f64> = BTreeMap::new();
            for (kind, start, end) in &self.fault_log {
                if *start <= last.t && *end >= first.t {
                    firsts.entry(kind.as_str()).or_insert(*end);
                }
            }
            let (after, why) = firsts
                .iter()
                .map(|(k, &e)| (e, *k))
                .fold((warm, "warm-up"), |a, b| if b.0 > a.0 { b } else { a });
            let early_end = (after + span * 0.2).min(late_start);
            let early: Vec<&&Sample> = all
                .iter()
                .filter(|s| s.steady && s.t > after && s.t <= early_end)
                .collect();
            let late: Vec<&&Sample> = all
                .iter()
                .filter(|s| s.steady && s.t >= late_start)
                .collect();
            if early.len() < 3 || late.len() < 3 {
                found.push(format!(
                    "not_checked: server generation {generation} had too few steady samples ({} after its {why} ended at {after:.1}s and before {late_start:.1}s, {} after) to compare",
                    early.len(),
                    late.len()
                ));
                continue;
            }
            // RSS moves with the large messages in flight: compare its floor (the smallest
            // sample of each window), which a leak raises. Descriptors and mappings do not
            // move in steady state: compare medians.
            let mut compared = Vec::new();
            for (what, floor, f) in [
                ("rss", true, (|s: &Sample| s.rss_kb) as fn(&Sample) -> u64),
                ("fds", false, |s: &Sample| s.fds),
                ("maps", false, |s: &Sample| s.maps),
            ] {
                let pick = |v: Vec<u64>| {
                    if floor {
                        v.into_iter().min().unwrap_or(0)
                    } else {
                        median(v)
                    }
                };
                let a = pick(early.iter().map(|s| f(s)).collect());
                let b = pick(late.iter().map(|s| f(s)).collect());
                compared.push(format!("{what} {a} -> {b}"));
                if a > 0 && b as f64 > a as f64 * 1.05 {
                    found.push(format!(
                        "growth: server generation {generation}: {what} grew {:.1} % after warm-up and the first of each fault ({a} -> {b}, {} of steady samples from {:.1}s and from {late_start:.1}s)",
                        100.0 * (b as f64 / a as f64 - 1.0),
                        if floor { "floors" } else { "medians" },
                        early[0].t
                    ));
                }
            }
            found.push(format!(
                "growth_checked: server generation {generation}: baseline from {:.1}s (after its {why} ended at {after:.1}s), last from {late_start:.1}s: {}",
                early[0].t,
                compared.join(", ")
            ));
        }
        for f in found {
            if f.starts_with("not_checked") || f.starts_with("growth_checked") {
                self.fault_notes.push(f);
            } else {
                self.violation(f);
            }
        }
    }

    /// Honest latency while a hostile client is connected, against quiet seconds.
    pub fn check_hostile_latency(&mut self) {
        let merge = |secs: &[u64]| {
            let mut h = BTreeMap::new();
            for s in secs {
                if let Some(x) = self.lat.get(s) {
                    for (&b, &n) in x {
                        *h.entry(b).or_insert(0u64) += n;
                    }
                }
            }
            h
        };
        let quiet = merge(&self.quiet_secs);
        let hostile = merge(&self.hostile_secs);
        let (Some(q), Some(h)) = (percentile(&quiet, 0.99), percentile(&hostile, 0.99)) else {
            return;
        };
        // A tenfold p99 (and at least 50 ms more) is a hostile client hurting honest ones; less
        // is the noise of a shared 2-core machine.
        if h > q * 10.0 && h > q + 50_000.0 {
            self.violation(format!(
                "hostile_hurts_latency: honest p99 {} while a hostile client was on, {} otherwise",
                fmt_us(h),
                fmt_us(q)
            ));
        }
    }
}

pub(super) fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// Upper edge of a latency bucket, in microseconds (8 buckets per power of two).
pub fn bucket_us(b: u32) -> f64 {
    2f64.powf(f64::from(b) / 8.0)
}

pub fn percentile(h: &BTreeMap<u32, u64>, p: f64) -> Option<f64> {
    let total: u64 = h.values().sum();
    if total == 0 {
        return None;
    }
    let want = ((total as f64) * p).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (&b, &n) in h {
        seen += n;
        if seen >= want {
            return Some(bucket_us(b));
        }
    }
    h.keys().last().map(|&b| bucket_us(b))
}

pub(super) fn fmt_us(us: f64) -> String {
    if us >= 1e6 {
        format!("{:.2}s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.2}ms", us / 1e3)
    } else {
        format!("{us:.0}us")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_with_a_free_text_message() {
        let l =
            Line::parse("err op=call kind=closed client=3 t=5 msg=the connection is closed: x=y");
        assert_eq!(l.kind, "err");
        assert_eq!(l.get("op"), "call");
        assert_eq!(l.num("client"), 3);
        assert_eq!(l.get("msg"), "the connection is closed: x=y");
    }

    #[test]
    fn percentiles_from_log_buckets() {
        let mut h = BTreeMap::new();
        h.insert(80u32, 99u64); // 2^10 us
        h.insert(160u32, 1u64); // 2^20 us
        assert_eq!(percentile(&h, 0.5), Some(1024.0));
        assert_eq!(percentile(&h, 0.99), Some(1024.0));
        assert_eq!(percentile(&h, 1.0), Some(1048576.0));
        assert_eq!(percentile(&BTreeMap::new(), 0.5), None);
    }

    #[test]
    fn errors_outside_fault_windows_are_violations() {
        let mut c = Checker::default();
        c.windows.push((10.0, 15.0));
        let closed = Line::parse("err op=call kind=closed client=1 msg=gone");
        c.client_error(12.0, &closed, false);
        assert!(c.violations.is_empty(), "{:?}", c.violations);
        c.client_error(20.0, &closed, false);
        assert_eq!(c.violations.len(), 1);
        // A protocol error is never expected, not even in a window.
        c.client_error(
            12.0,
            &Line::parse("err op=call kind=protocol client=1"),
            false,
        );
        assert_eq!(c.violations.len(), 2);
        assert_eq!(c.errors_unexpected, 2);
    }

    fn steady(t: f64, rss: u64, fds: u64) -> Sample {
        Sample {
            t,
            generation: 1,
            rss_kb: rss,
            fds,
            maps: 100,
            steady: true,
        }
    }

    #[test]
    fn growth_after_warm_up_is_caught_and_flat_is_not() {
        let mut flat = Checker {
            samples: (0..100).map(|t| steady(t as f64, 10_000, 40)).collect(),
            ..Checker::default()
        };
        flat.check_growth(20.0);
        assert!(flat.violations.is_empty(), "{:?}", flat.violations);

        let mut leak = Checker {
            samples: (0..100)
                .map(|t| steady(t as f64, 10_000 + 100 * t, 40 + t / 10))
                .collect(),
            ..Checker::default()
        };
        leak.check_growth(20.0);
        assert_eq!(leak.violations.len(), 2, "{:?}", leak.violations);
        assert!(leak.violations[0].contains("rss"));
        assert!(leak.violations[1].contains("fds"));
    }

    /// A server's life as the soak samples it: one sample a second from 0 to 60 s, RSS from
    /// `rss(t)`, and the faults in `faults` (kind, start, end).
    fn life(rss: impl Fn(u64) -> u64, faults: &[(&str, f64, f64)]) -> Checker {
        Checker {
            samples: (0..=60)
                .map(|t| {
                    let mut s = steady(t as f64, rss(t), 40);
                    // Samples while a fault is on are not steady.
                    s.steady = !faults.iter().any(|f| (f.1..=f.2).contains(&(t as f64)));
                    s
                })
                .collect(),
            fault_log: faults
                .iter()
                .map(|&(k, a, b)| (k.to_owned(), a, b))
                .collect(),
            ..Checker::default()
        }
    }

    /// The schedule of seeds 2245681787 and 1445374470 in short: the first churn falls after
    /// the old baseline window began, a second churn comes later.
    const CHURN_TWICE: [(&str, f64, f64); 4] = [
        ("hostile", 10.0, 16.0),
        ("kill_client", 18.0, 19.0),
        ("churn", 30.0, 33.0),
        ("churn", 40.0, 43.0),
    ];

    #[test]
    fn a_first_churns_high_water_then_a_plateau_is_not_growth() {
        // The soak server's RssAnon as measured: a step of ~500 kB at the first churn (glibc's
        // arenas keep the high-water of many threads allocating at once), flat after the
        // second. Compared from before the first churn it was +6.5 %.
        let mut c = life(|t| if t < 31 { 8_000 } else { 8_520 }, &CHURN_TWICE);
        c.check_growth(20.0);
        assert!(c.violations.is_empty(), "{:?}", c.violations);
        assert_eq!(c.fault_notes.len(), 1, "{:?}", c.fault_notes);
        assert!(
            c.fault_notes[0].contains("after its churn ended at 33.0s")
                && c.fault_notes[0].contains("rss 8520 -> 8520"),
            "{:?}",
            c.fault_notes
        );
    }

    #[test]
    fn a_leak_is_caught_after_the_first_of_each_fault() {
        // `inject=leak` keeps 1 KiB per request, about 1 MiB/s; a tenth of that still fails.
        let mut c = life(|t| 8_000 + 100 * t, &CHURN_TWICE);
        c.check_growth(20.0);
        assert_eq!(c.violations.len(), 1, "{:?}", c.violations);
        assert!(c.violations[0].contains("rss grew"), "{:?}", c.violations);
        // A step that no first occurrence explains (here: after the baseline, with no fault
        // before it) is growth too.
        let mut c = life(|t| if t < 47 { 8_000 } else { 8_520 }, &CHURN_TWICE);
        c.check_growth(20.0);
        assert_eq!(c.violations.len(), 1, "{:?}", c.violations);
    }

    #[test]
    fn a_first_occurrence_too_late_for_a_baseline_is_not_checked_and_says_so() {
        let mut faults = CHURN_TWICE.to_vec();
        faults.push(("shm_limit", 44.0, 48.0));
        let mut c = life(|t| 8_000 + 100 * t, &faults);
        c.check_growth(20.0);
        assert!(c.violations.is_empty(), "{:?}", c.violations);
        assert_eq!(c.fault_notes.len(), 1, "{:?}", c.fault_notes);
        assert!(
            c.fault_notes[0].contains("not_checked") && c.fault_notes[0].contains("shm_limit"),
            "{:?}",
            c.fault_notes
        );
    }

    #[test]
    fn a_hostile_that_hurts_honest_latency_is_caught() {
        let mut c = Checker::default();
        for sec in 0..10 {
            c.add_latency(sec, &Line::parse("prog lat=80:100"));
        }
        c.quiet_secs = (0..5).collect();
        c.hostile_secs = (5..10).collect();
        c.check_hostile_latency();
        assert!(c.violations.is_empty());
        c.add_latency(7, &Line::parse("prog lat=180:50")); // 2^22.5 us ≈ 6 s
        c.check_hostile_latency();
        assert_eq!(c.violations.len(), 1, "{:?}", c.violations);
    }
}
