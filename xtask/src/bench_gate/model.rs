//! What the runs measured, and how runs are combined: percentiles of each run's histogram,
//! then the median of each figure over the runs.

use std::collections::BTreeMap;

/// A latency histogram as `ferry-bench` prints it: `(highest value of the bucket in ns, count)`,
/// ascending.
#[derive(Debug, Clone, Default)]
pub struct Hist(pub Vec<(u64, u64)>);

impl Hist {
    /// Parses `v:c,v:c,...` (or `-` for empty).
    pub fn parse(text: &str) -> Result<Hist, String> {
        let text = text.trim();
        if text == "-" || text.is_empty() {
            return Ok(Hist::default());
        }
        let mut pairs = Vec::new();
        for pair in text.split(',') {
            let (v, c) = pair
                .split_once(':')
                .ok_or_else(|| format!("histogram bucket `{pair}` is not `value:count`"))?;
            let v = v
                .parse()
                .map_err(|_| format!("bad histogram value `{v}`"))?;
            let c = c
                .parse()
                .map_err(|_| format!("bad histogram count `{c}`"))?;
            pairs.push((v, c));
        }
        pairs.sort_unstable();
        Ok(Hist(pairs))
    }

    pub fn merge(&mut self, other: &Hist) {
        let mut map: BTreeMap<u64, u64> = self.0.iter().copied().collect();
        for &(v, c) in &other.0 {
            *map.entry(v).or_default() += c;
        }
        self.0 = map.into_iter().collect();
    }

    pub fn count(&self) -> u64 {
        self.0.iter().map(|&(_, c)| c).sum()
    }

    /// The smallest recorded value at or below which `p` percent of the samples lie.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((p / 100.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for &(v, c) in &self.0 {
            seen += c;
            if seen >= rank {
                return Some(v);
            }
        }
        self.0.last().map(|&(v, _)| v)
    }

    /// The mean of the samples (each counted at its bucket's highest value).
    pub fn mean(&self) -> Option<f64> {
        let total = self.count();
        (total > 0).then(|| {
            self.0
                .iter()
                .map(|&(v, c)| v as f64 * c as f64)
                .sum::<f64>()
                / total as f64
        })
    }

    pub fn max(&self) -> Option<u64> {
        self.0.last().map(|&(v, _)| v)
    }
}

/// The percentiles the latency plot draws.
pub const CURVE: &[f64] = &[
    0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.995, 99.999,
];

/// One client run.
#[derive(Debug, Clone, Default)]
pub struct Run {
    pub hist: Hist,
    pub msgs: u64,
    pub bytes: u64,
    pub elapsed_ns: u64,
    pub client_allocs: u64,
    pub server_allocs: Option<u64>,
    /// Requests and notifications the Ferry server counted in the measured window.
    pub server_requests: Option<u64>,
    pub server_notifications: Option<u64>,
    pub client_cpu: Option<u32>,
    pub server_cpu: Option<u32>,
}

impl Run {
    pub fn msgs_per_sec(&self) -> f64 {
        self.msgs as f64 * 1e9 / self.elapsed_ns.max(1) as f64
    }
    pub fn gbps(&self) -> f64 {
        self.bytes as f64 / self.elapsed_ns.max(1) as f64
    }
}

/// Which measurement: transport, scenario, payload size.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub transport: String,
    pub scenario: String,
    pub size: usize,
}

/// The runs of one key combined.
#[derive(Debug, Clone)]
pub struct Summary {
    pub key: Key,
    pub runs: usize,
    pub samples: u64,
    pub p50_ns: Option<f64>,
    pub p99_ns: Option<f64>,
    pub p999_ns: Option<f64>,
    pub max_ns: Option<f64>,
    pub mean_ns: Option<f64>,
    pub msgs_per_sec: f64,
    pub gbps: f64,
    /// Most allocations per message in any run (client side; server side where measured).
    pub client_allocs_per_msg: f64,
    pub server_allocs_per_msg: Option<f64>,
    /// `CURVE` percentiles, each the median over runs.
    pub curve: Vec<(f64, f64)>,
    /// `client CPU/server CPU` of each run (the busiest thread's last CPU).
    pub placement: Vec<String>,
}

pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

pub fn summarize(key: Key, runs: &[Run]) -> Summary {
    let pct = |p: f64| {
        median(
            runs.iter()
                .filter_map(|r| r.hist.percentile(p))
                .map(|v| v as f64)
                .collect(),
        )
    };
    let per_msg = |allocs: u64, msgs: u64| allocs as f64 / msgs.max(1) as f64;
    let server: Vec<f64> = runs
        .iter()
        .filter_map(|r| Some(per_msg(r.server_allocs?, r.msgs)))
        .collect();
    Summary {
        runs: runs.len(),
        samples: runs.iter().map(|r| r.hist.count()).sum(),
        p50_ns: pct(50.0),
        p99_ns: pct(99.0),
        p999_ns: pct(99.9),
        max_ns: median(
            runs.iter()
                .filter_map(|r| r.hist.max())
                .map(|v| v as f64)
                .collect(),
        ),
        mean_ns: median(runs.iter().filter_map(|r| r.hist.mean()).collect()),
        msgs_per_sec: median(runs.iter().map(Run::msgs_per_sec).collect()).unwrap_or(0.0),
        gbps: median(runs.iter().map(Run::gbps).collect()).unwrap_or(0.0),
        client_allocs_per_msg: runs
            .iter()
            .map(|r| per_msg(r.client_allocs, r.msgs))
            .fold(0.0, f64::max),
        server_allocs_per_msg: (!server.is_empty())
            .then(|| server.iter().copied().fold(0.0, f64::max)),
        curve: CURVE.iter().filter_map(|&p| Some((p, pct(p)?))).collect(),
        placement: runs
            .iter()
            .map(|r| {
                let show = |c: Option<u32>| c.map_or_else(|| "?".to_owned(), |c| c.to_string());
                format!("{}/{}", show(r.client_cpu), show(r.server_cpu))
            })
            .collect(),
        key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_merge() {
        let mut h = Hist::parse("10:50,20:40,1000:10").unwrap();
        assert_eq!(h.count(), 100);
        assert_eq!(h.percentile(50.0), Some(10));
        assert_eq!(h.percentile(50.5), Some(20));
        assert_eq!(h.percentile(90.0), Some(20));
        assert_eq!(h.percentile(99.0), Some(1000));
        assert_eq!(h.percentile(0.0), Some(10));
        h.merge(&Hist::parse("5:100").unwrap());
        assert_eq!(h.percentile(50.0), Some(5));
        assert_eq!(h.max(), Some(1000));
        assert_eq!(Hist::parse("10:1,30:3").unwrap().mean(), Some(25.0));
        assert_eq!(Hist::default().mean(), None);
        assert_eq!(Hist::parse("-").unwrap().percentile(50.0), None);
        assert!(Hist::parse("10;5").is_err());
    }

    #[test]
    fn median_of_runs() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn summary_takes_medians_and_worst_allocations() {
        let run = |p: u64, msgs, allocs| Run {
            hist: Hist(vec![(p, 100)]),
            msgs,
            bytes: msgs * 64,
            elapsed_ns: 1_000_000_000,
            client_allocs: allocs,
            server_allocs: Some(0),
            server_requests: None,
            server_notifications: None,
            client_cpu: Some(1),
            server_cpu: Some(0),
        };
        let key = Key {
            transport: "ferry".into(),
            scenario: "rtt".into(),
            size: 64,
        };
        let s = summarize(
            key,
            &[run(900, 100, 0), run(800, 300, 3), run(1000, 200, 0)],
        );
        assert_eq!(s.p50_ns, Some(900.0));
        assert_eq!(s.msgs_per_sec, 200.0);
        assert_eq!(s.client_allocs_per_msg, 0.01);
        assert_eq!(s.server_allocs_per_msg, Some(0.0));
        assert_eq!(s.placement, vec!["1/0"; 3]);
    }
}
