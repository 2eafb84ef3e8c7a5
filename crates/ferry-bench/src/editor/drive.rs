//! The measuring loops the editor clients share; each client hands them its own call (a
//! closure, or a `Caller` for the RPC framework peers' tasks). Sequential round trips are
//! [`measure::sequential`], which the iceoryx2 peer runs too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::measure::{self, AllocWindow, Outcome};
use crate::opts::Opts;

/// Bytes a chat token carries on average (tokens are 2–8 bytes), for the report's byte rate.
const TOKEN_BYTES: u64 = 5;

/// `editor-analyze`: `warmup` untimed then `samples` timed analyses of the same `size`-byte
/// source file (built first), `size` bytes counted for each.
pub fn analyze(
    opts: &Opts,
    samples: u64,
    warmup: u64,
    size: usize,
    mut analyze: impl FnMut(&str) -> Result<(), String>,
) -> Result<Outcome, String> {
    let text = super::schema::code(size, 1);
    measure::sequential(opts, samples, warmup, size as u64, || analyze(&text))
}

/// `editor-chat`: `warmup` untimed chats (then the harness's `warm` pause), then `requests`
/// chats. `chat` runs one and returns the time from its start to its first token (what the
/// histogram holds) and the number of tokens (what the rate counts).
pub fn chat(
    opts: &Opts,
    requests: u64,
    warmup: u64,
    mut chat: impl FnMut() -> Result<(Duration, u64), String>,
) -> Result<Outcome, String> {
    measure::warm_up(opts, warmup, &mut chat)?;
    let mut hist = measure::histogram();
    let allocs = AllocWindow::start();
    let start = Instant::now();
    let mut tokens = 0;
    for _ in 0..requests {
        let (first, n) = chat()?;
        measure::record(&mut hist, first);
        tokens += n;
    }
    Ok(Outcome {
        hist,
        msgs: tokens,
        bytes: tokens * TOKEN_BYTES,
        elapsed: start.elapsed(),
        allocs: allocs.end(),
    })
}

/// `editor-complete-16` with a thread per caller: `threads` threads calling `call` back to back
/// for `duration`, each call timed from the end of the one before. Returns each caller's
/// histogram and count of calls, for [`measure::merge`]; the caller keeps the measured window (it may
/// hold more than the callers, as the JSON-RPC peer's does).
pub fn callers(
    threads: usize,
    duration: Duration,
    call: impl Fn() -> Result<(), String> + Sync,
) -> Vec<Result<(Histogram<u64>, u64), String>> {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (stop, call) = (&stop, &call);
                s.spawn(move || {
                    let mut hist = measure::histogram();
                    let mut n = 0u64;
                    let mut t0 = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        call()?;
                        let t1 = Instant::now();
                        measure::record(&mut hist, t1 - t0);
                        t0 = t1;
                        n += 1;
                    }
                    Ok((hist, n))
                })
            })
            .collect();
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a caller panicked".into())))
            .collect()
    })
}

#[cfg(feature = "peers-rpc")]
pub use tasks::{Caller, client_runtime, complete, runtime};

/// The RPC framework peers' side: tokio runtimes and callers as tasks.
#[cfg(feature = "peers-rpc")]
mod tasks {
    use std::future::Future;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use super::super::Work;
    use super::super::schema::COMPLETE_REQUEST_BYTES;
    use crate::measure::{self, AllocWindow, Outcome};
    use crate::opts::Opts;

    /// A tokio runtime: current-thread, or `threads` workers.
    pub fn runtime(threads: Option<usize>) -> Result<tokio::runtime::Runtime, String> {
        match threads {
            None => tokio::runtime::Builder::new_current_thread(),
            Some(n) => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(n);
                b
            }
        }
        .enable_all()
        .build()
        .map_err(|e| format!("starting the tokio runtime: {e}"))
    }

    /// A client's runtime for `work`: two workers for the concurrent callers, else one thread.
    pub fn client_runtime(work: Work) -> Result<tokio::runtime::Runtime, String> {
        runtime(match work {
            Work::Concurrent { .. } => Some(2),
            _ => None,
        })
    }

    /// A peer's completion call (its client and request): [`complete`] runs it in sequence
    /// and, for `editor-complete-16`, gives each caller task a clone.
    pub trait Caller: Clone + Send + 'static {
        fn call(&self) -> impl Future<Output = Result<(), String>> + Send + '_;
    }

    /// `editor-complete` (sequential calls) and `editor-complete-16` (a task per caller) with
    /// `caller`'s completion call.
    pub fn complete<C: Caller>(
        opts: &Opts,
        rt: &tokio::runtime::Runtime,
        caller: &C,
        work: Work,
    ) -> Result<Outcome, String> {
        let call = || rt.block_on(caller.call());
        match work {
            Work::Complete { samples, warmup } => {
                measure::sequential(opts, samples, warmup, COMPLETE_REQUEST_BYTES as u64, call)
            }
            Work::Concurrent { threads, duration } => {
                measure::warm_up(opts, 1000, call)?;
                tasks(rt, caller, threads, duration, COMPLETE_REQUEST_BYTES as u64)
            }
            other => Err(format!("{other:?} is not a completion workload")),
        }
    }

    /// `editor-complete-16` with a task per caller: `threads` tasks on `rt`, each with its
    /// clone of `caller`, calling back to back for `duration`, each call timed from the end of
    /// the one before.
    fn tasks<C: Caller>(
        rt: &tokio::runtime::Runtime,
        caller: &C,
        threads: usize,
        duration: Duration,
        bytes_per_call: u64,
    ) -> Result<Outcome, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let allocs = AllocWindow::start();
        let start = Instant::now();
        let hists = rt.block_on(async {
            let tasks: Vec<_> = (0..threads)
                .map(|_| {
                    let (caller, stop, done) = (caller.clone(), stop.clone(), done.clone());
                    tokio::spawn(async move {
                        let mut hist = measure::histogram();
                        let mut t0 = Instant::now();
                        while !stop.load(Ordering::Relaxed) {
                            caller.call().await?;
                            let t1 = Instant::now();
                            measure::record(&mut hist, t1 - t0);
                            t0 = t1;
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok::<_, String>(hist)
                    })
                })
                .collect();
            tokio::time::sleep(duration).await;
            stop.store(true, Ordering::Relaxed);
            let mut hists = Vec::new();
            for t in tasks {
                hists.push(
                    t.await
                        .map_err(|e| format!("a caller task failed: {e}"))??,
                );
            }
            Ok::<_, String>(hists)
        })?;
        let elapsed = start.elapsed();
        let mut hist = measure::histogram();
        for h in hists {
            hist.add(&h).map_err(|e| e.to_string())?;
        }
        let msgs = done.load(Ordering::Relaxed);
        Ok(Outcome {
            hist,
            msgs,
            bytes: msgs * bytes_per_call,
            elapsed,
            allocs: allocs.end(),
        })
    }
}
