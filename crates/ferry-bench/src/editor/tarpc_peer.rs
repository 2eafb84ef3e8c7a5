//! The tarpc peer (`tarpc`; ferry-bench's `peers-rpc` feature): the editor service as tarpc's
//! users write it (`#[tarpc::service]`, owned arguments), over a Unix socket with tarpc's serde
//! transport and its bincode codec, tokio on both sides, built in release like every peer.
//!
//! tarpc has no server streams, so it runs `complete`, `complete-16` and `analyze`, not `chat`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{StreamExt as _, future};
use tarpc::context;
use tarpc::server::{BaseChannel, Channel as _};
use tarpc::tokio_serde::formats::Bincode;

use super::Work;
use super::schema::*;
use crate::measure::{self, AllocWindow, Outcome};
use crate::opts::Opts;

/// The completion request with owned fields (tarpc's arguments are owned values).
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
pub struct OwnedCompletionRequest {
    pub path: String,
    pub line: u32,
    pub column: u32,
    pub prefix: String,
    pub suffix: String,
}

#[tarpc::service]
pub trait Engine {
    async fn complete(req: OwnedCompletionRequest) -> Result<CompletionList, String>;
    async fn analyze(path: String, text: String) -> Vec<Diagnostic>;
}

#[derive(Clone)]
struct Server;

impl Engine for Server {
    async fn complete(
        self,
        _: context::Context,
        req: OwnedCompletionRequest,
    ) -> Result<CompletionList, String> {
        check_completion(&req.path, &req.prefix, &req.suffix, req.line)?;
        Ok(CompletionList {
            items: std::borrow::Cow::Borrowed(&COMPLETIONS),
        })
    }

    async fn analyze(self, _: context::Context, _path: String, text: String) -> Vec<Diagnostic> {
        analyze(text.as_bytes())
    }
}

fn runtime(threads: Option<usize>) -> Result<tokio::runtime::Runtime, String> {
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

/// `serve tarpc --path P`: tarpc's Unix-socket server (a multi-threaded runtime, one task per
/// request, as tarpc's examples do).
pub fn serve(opts: &Opts) -> Result<(), String> {
    let path: PathBuf = opts.path("path")?;
    let rt = runtime(Some(
        std::thread::available_parallelism().map_or(2, usize::from),
    ))?;
    let mut listener = rt
        .block_on(tarpc::serde_transport::unix::listen(
            &path,
            Bincode::default,
        ))
        .map_err(|e| format!("binding {}: {e}", path.display()))?;
    listener.config_mut().max_frame_length(64 << 20);
    println!("ready t_ns={}", measure::monotonic_ns());
    std::thread::spawn(|| measure::serve_stdin(String::new));
    rt.block_on(
        listener
            .filter_map(|r| future::ready(r.ok()))
            .map(BaseChannel::with_defaults)
            .map(|channel| {
                channel
                    .execute(Server.serve())
                    .for_each(|response| async move {
                        tokio::spawn(response);
                    })
            })
            .buffer_unordered(10_000)
            .for_each(|()| async {}),
    );
    Ok(())
}

/// The client and the runtime that drives it.
/// (Kept until the harness has read its figures: the client's dispatch task runs on `_rt`.)
pub struct Peer {
    _client: EngineClient,
    _rt: tokio::runtime::Runtime,
}

fn ctx() -> context::Context {
    let mut cx = context::current();
    cx.deadline = Instant::now() + Duration::from_secs(60);
    cx
}

fn owned_request() -> OwnedCompletionRequest {
    let r = completion_request();
    OwnedCompletionRequest {
        path: r.path.into_owned(),
        line: r.line,
        column: r.column,
        prefix: r.prefix.into_owned(),
        suffix: r.suffix.into_owned(),
    }
}

async fn complete(client: &EngineClient, req: &OwnedCompletionRequest) -> Result<(), String> {
    let list = client
        .complete(ctx(), req.clone())
        .await
        .map_err(|e| format!("tarpc complete: {e}"))??;
    check_completions(&list.items)
}

/// `client tarpc editor-…`.
pub fn client(work: Work, opts: &Opts) -> Result<(Outcome, Peer), String> {
    let path = opts.path("path")?;
    let threads = match work {
        Work::Concurrent { .. } => Some(2),
        _ => None,
    };
    let rt = runtime(threads)?;
    let client = rt.block_on(async {
        let mut transport = tarpc::serde_transport::unix::connect(&path, Bincode::default);
        transport.config_mut().max_frame_length(64 << 20);
        let transport = transport
            .await
            .map_err(|e| format!("connecting to {}: {e}", path.display()))?;
        Ok::<_, String>(EngineClient::new(tarpc::client::Config::default(), transport).spawn())
    })?;
    let req = owned_request();
    let timed = |samples: u64,
                 warmup: u64,
                 per: u64,
                 f: &dyn Fn() -> Result<(), String>|
     -> Result<Outcome, String> {
        for _ in 0..warmup {
            f()?;
        }
        measure::pause(opts, "warm")?;
        let mut hist = measure::histogram();
        let allocs = AllocWindow::start();
        let start = Instant::now();
        let mut t0 = start;
        for _ in 0..samples {
            f()?;
            let t1 = Instant::now();
            measure::record(&mut hist, t1 - t0);
            t0 = t1;
        }
        Ok(Outcome {
            hist,
            msgs: samples,
            bytes: samples * per,
            elapsed: start.elapsed(),
            allocs: allocs.end(),
        })
    };
    let outcome = match work {
        Work::Complete { samples, warmup } => {
            timed(samples, warmup, COMPLETE_REQUEST_BYTES as u64, &|| {
                rt.block_on(complete(&client, &req))
            })?
        }
        Work::Analyze {
            samples,
            warmup,
            size,
        } => {
            let text = code(size, 1);
            timed(samples, warmup, size as u64, &|| {
                let d = rt
                    .block_on(client.analyze(ctx(), PATH.to_owned(), text.clone()))
                    .map_err(|e| format!("tarpc analyze: {e}"))?;
                check_diagnostics(&d, text.as_bytes())
            })?
        }
        Work::Concurrent { threads, duration } => {
            for _ in 0..1000 {
                rt.block_on(complete(&client, &req))?;
            }
            measure::pause(opts, "warm")?;
            concurrent(&rt, &client, &req, threads, duration)?
        }
        Work::Chat { .. } | Work::Pipelined { .. } | Work::Load { .. } => {
            return Err("tarpc runs complete, complete-16 and analyze (it has no streams)".into());
        }
    };
    Ok((
        outcome,
        Peer {
            _client: client,
            _rt: rt,
        },
    ))
}

/// `threads` tasks sharing the one client (tarpc multiplexes them over its connection).
fn concurrent(
    rt: &tokio::runtime::Runtime,
    client: &EngineClient,
    req: &OwnedCompletionRequest,
    threads: usize,
    duration: Duration,
) -> Result<Outcome, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let allocs = AllocWindow::start();
    let start = Instant::now();
    let hists = rt.block_on(async {
        let tasks: Vec<_> = (0..threads)
            .map(|_| {
                let (client, req, stop, done) =
                    (client.clone(), req.clone(), stop.clone(), done.clone());
                tokio::spawn(async move {
                    let mut hist = measure::histogram();
                    let mut t0 = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        complete(&client, &req).await?;
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
        bytes: msgs * COMPLETE_REQUEST_BYTES as u64,
        elapsed,
        allocs: allocs.end(),
    })
}
