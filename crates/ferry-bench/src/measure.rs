//! What every client measures and how it reports it; what every server reports on `stats`.

use std::fmt::Write as _;
use std::io::BufRead as _;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::alloc;
use crate::opts::Opts;
/// The OS's readings: the CPU a thread runs on, a clock shared by processes, memory.
pub use crate::os::{current_cpu, memory, monotonic_ns};

/// What a client measures.
#[derive(Debug, Clone)]
pub enum Scenario {
    /// Sequential request → response round trips: `samples` timed after `warmup` untimed.
    Rtt {
        size: usize,
        samples: u64,
        warmup: u64,
    },
    /// One-way messages for `duration`, then one round trip that proves all of them arrived.
    OneWay { size: usize, duration: Duration },
    /// Requests with up to `window` in flight from one client, for `duration`.
    Pipelined {
        size: usize,
        duration: Duration,
        window: u64,
    },
    /// The old system's load test (`load-<conns>`): `conns` callers at once, `calls`
    /// sequential round trips each, every one timed. Blocking transports: a connection and a
    /// thread per caller; `ferry-async`: a task per caller, all sharing one connection.
    Load {
        size: usize,
        conns: usize,
        calls: u64,
    },
}

impl Scenario {
    pub fn parse(name: &str, opts: &Opts) -> Result<Scenario, String> {
        let size = usize::try_from(opts.num("size", 64)?).map_err(|e| e.to_string())?;
        Ok(match name {
            "rtt" => Scenario::Rtt {
                size,
                samples: opts.num("samples", 200_000)?,
                warmup: opts.num("warmup", 20_000)?,
            },
            "oneway" | "bandwidth" => Scenario::OneWay {
                size,
                duration: opts.duration(1000)?,
            },
            "pipelined" => Scenario::Pipelined {
                size,
                duration: opts.duration(1000)?,
                window: opts.num("window", 64)?.max(1),
            },
            other => match other.strip_prefix("load-").map(str::parse::<usize>) {
                Some(Ok(conns)) if conns > 0 => Scenario::Load {
                    size,
                    conns,
                    calls: opts.num("calls", 10_000)?.max(1),
                },
                _ => {
                    return Err(format!(
                        "unknown scenario `{other}` (rtt, oneway, bandwidth, pipelined, \
                         load-<callers>)"
                    ));
                }
            },
        })
    }

    /// The scenario's name on the `result` line.
    pub fn name(&self) -> String {
        match self {
            Scenario::Rtt { .. } => "rtt".into(),
            Scenario::OneWay { .. } => "oneway".into(),
            Scenario::Pipelined { .. } => "pipelined".into(),
            Scenario::Load { conns, .. } => format!("load-{conns}"),
        }
    }

    pub fn size(&self) -> usize {
        match *self {
            Scenario::Rtt { size, .. }
            | Scenario::OneWay { size, .. }
            | Scenario::Pipelined { size, .. }
            | Scenario::Load { size, .. } => size,
        }
    }
}

/// A latency histogram in nanoseconds, 3 significant digits, up to a minute.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("constant histogram bounds are valid")
}

/// What one client run measured.
#[derive(Debug)]
pub struct Outcome {
    /// Round-trip latencies (empty for throughput scenarios).
    pub hist: Histogram<u64>,
    /// Messages (one-way) or requests (round trips) completed in the measured window.
    pub msgs: u64,
    /// Payload bytes those messages carried, one way.
    pub bytes: u64,
    /// Length of the measured window.
    pub elapsed: Duration,
    /// Heap allocations this process made during the measured window.
    pub allocs: u64,
}

impl Outcome {
    /// Prints the `result` and `hist` lines the harness parses.
    pub fn print(&self, transport: &str, scenario: &Scenario) {
        self.print_named(transport, &scenario.name(), scenario.size());
    }

    /// [`print`](Self::print) for a scenario named `scenario` with `size`-byte requests.
    pub fn print_named(&self, transport: &str, scenario: &str, size: usize) {
        println!(
            "result transport={transport} scenario={scenario} size={size} msgs={} bytes={} elapsed_ns={} allocs={} cpu={}",
            self.msgs,
            self.bytes,
            self.elapsed.as_nanos(),
            self.allocs,
            current_cpu(),
        );
        println!("hist {}", dump(&self.hist));
    }
}

/// `value:count` pairs, comma-separated (`-` when empty), each value the highest latency its
/// bucket stands for, so that merged histograms never report a latency lower than measured.
pub fn dump(hist: &Histogram<u64>) -> String {
    let mut out = String::new();
    for v in hist.iter_recorded() {
        if !out.is_empty() {
            out.push(',');
        }
        let _ = write!(out, "{}:{}", v.value_iterated_to(), v.count_at_value());
    }
    if out.is_empty() {
        out.push('-');
    }
    out
}

/// With `--sync 1` (the harness), a client stops at two points and waits for a line on stdin:
/// after its warm-up (`warm`), so the harness can read the server's counters just before the
/// measured window, and after its result (`done`), so it can read them again before the
/// client disconnects.
pub fn pause(opts: &Opts, label: &str) -> Result<(), String> {
    if opts.num("sync", 0)? == 0 {
        return Ok(());
    }
    println!("{label}");
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("reading the harness's go-ahead: {e}"))?;
    Ok(())
}

/// Records one latency.
pub fn record(hist: &mut Histogram<u64>, d: Duration) {
    hist.saturating_record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
}

/// Calls `f` `n` times untimed, then waits for the harness's go-ahead ([`pause`] `warm`).
// Used by the editor clients and iceoryx2 (Linux only).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub fn warm_up<T>(
    opts: &Opts,
    n: u64,
    mut f: impl FnMut() -> Result<T, String>,
) -> Result<(), String> {
    for _ in 0..n {
        f()?;
    }
    pause(opts, "warm")
}

/// Sequential round trips: `warmup` untimed calls of `f` (then the harness's `warm` pause),
/// then `samples` calls, each timed from the end of the one before (the first from the start
/// of the window), `bytes_per_call` counted for each.
// Used by the editor clients and iceoryx2 (Linux only).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub fn sequential(
    opts: &Opts,
    samples: u64,
    warmup: u64,
    bytes_per_call: u64,
    mut f: impl FnMut() -> Result<(), String>,
) -> Result<Outcome, String> {
    warm_up(opts, warmup, &mut f)?;
    let mut hist = histogram();
    let allocs = AllocWindow::start();
    let start = std::time::Instant::now();
    let mut t0 = start;
    for _ in 0..samples {
        f()?;
        let t1 = std::time::Instant::now();
        record(&mut hist, t1 - t0);
        t0 = t1;
    }
    Ok(Outcome {
        hist,
        msgs: samples,
        bytes: samples * bytes_per_call,
        elapsed: start.elapsed(),
        allocs: allocs.end(),
    })
}

/// The load test's measured part: every client of `clients` on its own thread, `calls`
/// sequential `call`s each (after 10 untimed ones, then the harness's `warm` pause), all
/// released together by a barrier; every call timed. The window runs from the release to the
/// last caller's end.
pub fn load<C: Send>(
    opts: &Opts,
    clients: &mut [C],
    calls: u64,
    bytes_per_call: u64,
    call: impl Fn(&mut C) -> Result<(), String> + Sync,
) -> Result<Outcome, String> {
    for c in clients.iter_mut() {
        for _ in 0..10 {
            call(c)?;
        }
    }
    pause(opts, "warm")?;
    let barrier = std::sync::Barrier::new(clients.len() + 1);
    let allocs = AllocWindow::start();
    let (results, elapsed) = std::thread::scope(|s| {
        let handles: Vec<_> = clients
            .iter_mut()
            .map(|c| {
                let (barrier, call) = (&barrier, &call);
                s.spawn(move || {
                    let mut hist = histogram();
                    barrier.wait();
                    for _ in 0..calls {
                        let t0 = std::time::Instant::now();
                        call(c)?;
                        record(&mut hist, t0.elapsed());
                    }
                    Ok((hist, calls))
                })
            })
            .collect();
        barrier.wait();
        let start = std::time::Instant::now();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a caller panicked".into())))
            .collect();
        (results, start.elapsed())
    });
    merge(results, elapsed, bytes_per_call, allocs.end())
}

/// One outcome from callers' results (each its histogram and count of calls, or why it
/// stopped): the histograms added, the calls counted.
pub fn merge(
    results: Vec<Result<(Histogram<u64>, u64), String>>,
    elapsed: Duration,
    bytes_per_call: u64,
    allocs: u64,
) -> Result<Outcome, String> {
    let mut hist = histogram();
    let mut msgs = 0;
    for r in results {
        let (h, n) = r?;
        hist.add(&h).map_err(|e| e.to_string())?;
        msgs += n;
    }
    Ok(Outcome {
        hist,
        msgs,
        bytes: msgs * bytes_per_call,
        elapsed,
        allocs,
    })
}

/// Counts allocations across a measured window.
pub struct AllocWindow(u64);

impl AllocWindow {
    pub fn start() -> AllocWindow {
        AllocWindow(alloc::count())
    }
    pub fn end(self) -> u64 {
        alloc::count() - self.0
    }
}

/// A server's stdin loop: `stats` prints a `stats ...` line with `extra()` appended; end of
/// input (the harness went away) or `quit` ends the process.
///
/// `allocs` is the allocation count when the command arrived and `allocs_end` the count after
/// the line was built, so the harness can leave out what answering `stats` itself allocates:
/// the server's own allocations between two `stats` are `allocs(second) - allocs_end(first)`.
/// The line buffer is reused, so reading a command allocates nothing after the first one.
pub fn serve_stdin(extra: impl Fn() -> String) -> ! {
    let stdin = std::io::stdin();
    let mut line = String::with_capacity(256);
    loop {
        line.clear();
        match stdin.lock().read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let allocs = alloc::count();
        match line.trim() {
            "stats" => {
                let text = format!(
                    "stats allocs={allocs} cpu={} {} {}",
                    current_cpu(),
                    memory(),
                    extra()
                );
                println!("{text} allocs_end={}", alloc::count());
            }
            "quit" => break,
            "" => {}
            other => eprintln!("ferry-bench serve: unknown command `{other}` on stdin"),
        }
    }
    std::process::exit(0)
}
