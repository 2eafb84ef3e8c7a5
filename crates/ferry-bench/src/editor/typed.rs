//! Ferry's typed layer (`ferry-rpc`) in the editor workload: the server (one service, every
//! codec) and the clients `ferry-postcard`, `ferry-rkyv` and `ferry-json`.

use std::time::{Duration, Instant};

use ferry_rpc::codec::Archived;
use ferry_rpc::{ClientConfig, Context, RpcConfig, ServerConfig, Sink, Status};

use super::schema::*;
use super::{Work, drive};
use crate::measure::{self, AllocWindow, Outcome};
use crate::opts::Opts;

/// The typed transports: Ferry with each codec.
pub fn is_typed(transport: &str) -> bool {
    matches!(transport, "ferry-postcard" | "ferry-rkyv" | "ferry-json")
}

fn bad(e: String) -> Status {
    Status::new(1, e)
}

struct Engine;

impl Engine {
    fn stream(cx: &Context<'_>, tokens: u32, items: &Sink<'_, Token>) -> Result<(), Status> {
        for i in 0..tokens as usize {
            if cx.is_cancelled() {
                return Ok(());
            }
            let token = Token {
                text: std::borrow::Cow::Borrowed(token(i)),
            };
            if items.send(&token).is_err() {
                return Ok(());
            }
        }
        Ok(())
    }
}

impl EditorBench for Engine {
    fn complete(
        &self,
        _cx: &Context<'_>,
        req: CompletionRequest<'_>,
    ) -> Result<CompletionList, Status> {
        check_completion(&req.path, &req.prefix, &req.suffix, req.line).map_err(bad)?;
        Ok(CompletionList {
            items: std::borrow::Cow::Borrowed(&COMPLETIONS),
        })
    }

    fn complete_rkyv(
        &self,
        _cx: &Context<'_>,
        req: &Archived<RkyvCompletionRequest>,
    ) -> Result<CompletionList, Status> {
        check_completion(
            req.path.as_str(),
            req.prefix.as_str(),
            req.suffix.as_str(),
            req.line.to_native(),
        )
        .map_err(bad)?;
        Ok(CompletionList {
            items: std::borrow::Cow::Borrowed(&COMPLETIONS),
        })
    }

    fn complete_json(
        &self,
        cx: &Context<'_>,
        req: CompletionRequest<'_>,
    ) -> Result<CompletionList, Status> {
        self.complete(cx, req)
    }

    fn chat(
        &self,
        cx: &Context<'_>,
        req: ChatRequest<'_>,
        items: &Sink<'_, Token>,
    ) -> Result<(), Status> {
        Self::stream(cx, req.tokens, items)
    }

    fn chat_rkyv(
        &self,
        cx: &Context<'_>,
        req: &Archived<RkyvChatRequest>,
        items: &Sink<'_, Token>,
    ) -> Result<(), Status> {
        Self::stream(cx, req.tokens.to_native(), items)
    }

    fn chat_json(
        &self,
        cx: &Context<'_>,
        req: ChatRequest<'_>,
        items: &Sink<'_, Token>,
    ) -> Result<(), Status> {
        Self::stream(cx, req.tokens, items)
    }

    fn analyze(&self, _cx: &Context<'_>, file: &[u8]) -> Result<Vec<Diagnostic>, Status> {
        Ok(analyze(file))
    }

    fn analyze_rkyv(&self, _cx: &Context<'_>, file: &[u8]) -> Result<Vec<Diagnostic>, Status> {
        Ok(analyze(file))
    }

    fn analyze_json(&self, _cx: &Context<'_>, file: &[u8]) -> Result<Vec<Diagnostic>, Status> {
        Ok(analyze(file))
    }

    fn ping(&self, _cx: &Context<'_>, seq: u64) -> Result<u64, Status> {
        Ok(seq.wrapping_add(1))
    }

    fn echo(&self, _cx: &Context<'_>, data: &[u8]) -> Result<Vec<u8>, Status> {
        Ok(data.to_vec())
    }
}

/// `serve editor --name N --dir D`: the typed engine (default wait policy).
pub fn serve(opts: &Opts) -> Result<(), String> {
    let name = opts.str("name")?;
    let config = ServerConfig::default().with_runtime_dir(opts.path("dir")?);
    let server = ferry_rpc::serve(
        name,
        config,
        RpcConfig::default(),
        EditorBenchServer::new(Engine),
    )
    .map_err(|e| format!("bind: {e}"))?;
    println!("ready t_ns={}", measure::monotonic_ns());
    measure::serve_stdin(|| {
        let s = server.stats();
        format!(
            "conns={} accepted={} requests={} notifications={}",
            s.connections_open, s.connections_accepted, s.requests, s.notifications,
        )
    })
}

fn connect(opts: &Opts) -> Result<EditorBenchClient, String> {
    let policy = match opts.str_or("policy", "adaptive") {
        "adaptive" => ferry_transport::WaitPolicy::default(),
        "park" => ferry_transport::WaitPolicy::ParkOnly,
        other => return Err(format!("unknown wait policy `{other}` (adaptive or park)")),
    };
    let config = ClientConfig::default()
        .with_runtime_dir(opts.path("dir")?)
        .with_policy(policy);
    EditorBenchClient::connect_with(opts.str("name")?, config, RpcConfig::default())
        .map_err(|e| format!("connect: {e}"))
}

/// One codec's calls, with the contents built once.
struct Calls {
    codec: &'static str,
    request: CompletionRequest<'static>,
    rkyv_request: RkyvCompletionRequest,
    prompt: ChatRequest<'static>,
    rkyv_prompt: RkyvChatRequest,
}

impl Calls {
    fn new(transport: &str, tokens: u32) -> Calls {
        Calls {
            codec: match transport {
                "ferry-rkyv" => "rkyv",
                "ferry-json" => "json",
                _ => "postcard",
            },
            request: completion_request(),
            rkyv_request: rkyv_completion_request(),
            prompt: ChatRequest {
                prompt: CHAT_PROMPT.into(),
                tokens,
            },
            rkyv_prompt: RkyvChatRequest {
                prompt: CHAT_PROMPT.into(),
                tokens,
            },
        }
    }

    fn complete(&self, c: &EditorBenchClient) -> Result<(), String> {
        let list = match self.codec {
            "rkyv" => c.complete_rkyv(&self.rkyv_request),
            "json" => c.complete_json(&self.request),
            _ => c.complete(&self.request),
        }
        .map_err(|e| format!("complete: {e}"))?;
        check_completions(&list.items)
    }

    /// One chat: returns the time to the first token and the number of tokens.
    fn chat(&self, c: &EditorBenchClient) -> Result<(Duration, u64), String> {
        let t0 = Instant::now();
        let stream = match self.codec {
            "rkyv" => c.chat_rkyv(&self.rkyv_prompt),
            "json" => c.chat_json(&self.prompt),
            _ => c.chat(&self.prompt),
        }
        .map_err(|e| format!("chat: {e}"))?;
        let mut first = None;
        let mut n = 0u64;
        for token in stream {
            let token = token.map_err(|e| format!("chat token: {e}"))?;
            first.get_or_insert_with(|| t0.elapsed());
            if token.text != self::token(n as usize) {
                return Err(format!("chat token {n} is {:?}", token.text));
            }
            n += 1;
        }
        if n != u64::from(self.prompt.tokens) {
            return Err(format!(
                "a chat answer had {n} tokens, {} expected",
                self.prompt.tokens
            ));
        }
        Ok((first.unwrap_or_default(), n))
    }

    fn analyze(&self, c: &EditorBenchClient, file: &[u8]) -> Result<(), String> {
        let diagnostics = match self.codec {
            "rkyv" => c.analyze_rkyv(file),
            "json" => c.analyze_json(file),
            _ => c.analyze(file),
        }
        .map_err(|e| format!("analyze: {e}"))?;
        check_diagnostics(&diagnostics, file)
    }
}

/// `client ferry-postcard|ferry-rkyv|ferry-json editor-…`.
pub fn client(
    transport: &str,
    work: Work,
    opts: &Opts,
) -> Result<(Outcome, EditorBenchClient), String> {
    let tokens = match work {
        Work::Chat { tokens, .. } => tokens,
        _ => 0,
    };
    let calls = Calls::new(transport, tokens);
    let client = connect(opts)?;
    let outcome = match work {
        Work::Complete { samples, warmup } => {
            measure::sequential(opts, samples, warmup, COMPLETE_REQUEST_BYTES as u64, || {
                calls.complete(&client)
            })?
        }
        Work::Analyze {
            samples,
            warmup,
            size,
        } => drive::analyze(opts, samples, warmup, size, |text| {
            calls.analyze(&client, text.as_bytes())
        })?,
        Work::Chat {
            requests, warmup, ..
        } => drive::chat(opts, requests, warmup, || calls.chat(&client))?,
        Work::Concurrent { threads, duration } => {
            measure::warm_up(opts, 1000, || calls.complete(&client))?;
            let allocs = AllocWindow::start();
            let start = Instant::now();
            let results = drive::callers(threads, duration, || calls.complete(&client));
            let elapsed = start.elapsed();
            measure::merge(
                results,
                elapsed,
                COMPLETE_REQUEST_BYTES as u64,
                allocs.end(),
            )?
        }
        Work::Pipelined { window, duration } => pipelined(&client, window, duration, opts)?,
        Work::Load {
            conns,
            calls: n,
            size,
        } => load(opts, &calls, conns, n, size)?,
    };
    Ok((outcome, client))
}

/// `window` typed calls in flight from one client thread: `start_ping` keeps a window of
/// pending replies (oldest first), the oldest is waited for and another started, every answer
/// checked (the same loop as the raw transport's `start_call` scenario).
fn pipelined(
    client: &EditorBenchClient,
    window: usize,
    duration: Duration,
    opts: &Opts,
) -> Result<Outcome, String> {
    for seq in 0..1000u64 {
        if client.ping(&seq).map_err(|e| format!("ping: {e}"))? != seq + 1 {
            return Err("a ping's answer is not its request + 1".into());
        }
    }
    let window = window.max(1);
    // Warm the pipelined path too (a window's worth of the transport's call slots, each keeping
    // its answer buffer), so that the measured window holds steady-state calls only.
    for round in 0..16u64 {
        let pending = (0..window as u64)
            .map(|i| {
                let seq = (round << 32) | i;
                client.start_ping(&seq).map(|p| (seq, p))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("start_ping: {e}"))?;
        for (seq, p) in pending {
            if p.wait().map_err(|e| format!("ping: {e}"))? != seq + 1 {
                return Err("a ping's answer is not its request + 1".into());
            }
        }
    }
    let mut in_flight = std::collections::VecDeque::with_capacity(window);
    measure::pause(opts, "warm")?;
    let allocs = AllocWindow::start();
    let start = Instant::now();
    let (mut next, mut done, mut stopping) = (0u64, 0u64, false);
    loop {
        while !stopping && in_flight.len() < window {
            let pending = client
                .start_ping(&next)
                .map_err(|e| format!("start_ping: {e}"))?;
            in_flight.push_back((next, pending));
            next += 1;
        }
        let Some((seq, pending)) = in_flight.pop_front() else {
            break;
        };
        let answer = pending.wait().map_err(|e| format!("ping: {e}"))?;
        if answer != seq.wrapping_add(1) {
            return Err("a ping's answer is not its request + 1".into());
        }
        done += 1;
        stopping = stopping || (done % 64 == 0 && start.elapsed() >= duration);
    }
    let elapsed = start.elapsed();
    Ok(Outcome {
        hist: measure::histogram(),
        msgs: done,
        bytes: done * 8,
        elapsed,
        allocs: allocs.end(),
    })
}

/// The old system's test: `conns` connections, a thread each, `n` calls each (completions, or
/// `size`-byte echoes); all start together after every connection is open.
fn load(opts: &Opts, calls: &Calls, conns: usize, n: u64, size: usize) -> Result<Outcome, String> {
    let mut clients = (0..conns)
        .map(|_| connect(opts))
        .collect::<Result<Vec<_>, _>>()?;
    let data = blob(size);
    let per_call = if size == 0 {
        COMPLETE_REQUEST_BYTES
    } else {
        size
    } as u64;
    measure::load(opts, &mut clients, n, per_call, |c| {
        if size == 0 {
            calls.complete(c)
        } else {
            let back = c.echo(&data).map_err(|e| format!("echo: {e}"))?;
            if back != data {
                return Err("an echo differs from its request".into());
            }
            Ok(())
        }
    })
}
