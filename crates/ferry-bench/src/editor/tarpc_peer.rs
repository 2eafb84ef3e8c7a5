//! The tarpc peer (`tarpc`; ferry-bench's `peers-rpc` feature): the editor service as tarpc's
//! users write it (`#[tarpc::service]`, owned arguments), over a Unix socket with tarpc's serde
//! transport and its bincode codec, tokio on both sides, built in release like every peer.
//!
//! tarpc has no server streams, so it runs `complete`, `complete-16` and `analyze`, not `chat`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::{StreamExt as _, future};
use tarpc::context;
use tarpc::server::{BaseChannel, Channel as _};
use tarpc::tokio_serde::formats::Bincode;

use super::Work;
use super::drive;
use super::schema::*;
use crate::measure::{self, Outcome};
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

/// `serve tarpc --path P`: tarpc's Unix-socket server (a multi-threaded runtime, one task per
/// request, as tarpc's examples do).
pub fn serve(opts: &Opts) -> Result<(), String> {
    let path: PathBuf = opts.path("path")?;
    let rt = drive::runtime(Some(
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
    let rt = drive::client_runtime(work)?;
    let client = rt.block_on(async {
        let mut transport = tarpc::serde_transport::unix::connect(&path, Bincode::default);
        transport.config_mut().max_frame_length(64 << 20);
        let transport = transport
            .await
            .map_err(|e| format!("connecting to {}: {e}", path.display()))?;
        Ok::<_, String>(EngineClient::new(tarpc::client::Config::default(), transport).spawn())
    })?;
    let complete = Complete {
        client,
        req: owned_request(),
    };
    let client = &complete.client;
    let outcome = match work {
        Work::Complete { .. } | Work::Concurrent { .. } => {
            drive::complete(opts, &rt, &complete, work)?
        }
        Work::Analyze {
            samples,
            warmup,
            size,
        } => drive::analyze(opts, samples, warmup, size, |text| {
            let d = rt
                .block_on(client.analyze(ctx(), PATH.to_owned(), text.to_owned()))
                .map_err(|e| format!("tarpc analyze: {e}"))?;
            check_diagnostics(&d, text.as_bytes())
        })?,
        Work::Chat { .. } | Work::Pipelined { .. } | Work::Load { .. } => {
            return Err("tarpc runs complete, complete-16 and analyze (it has no streams)".into());
        }
    };
    Ok((
        outcome,
        Peer {
            _client: complete.client,
            _rt: rt,
        },
    ))
}

/// A completion caller: each task's clone shares the one client (tarpc multiplexes them over
/// its connection).
#[derive(Clone)]
struct Complete {
    client: EngineClient,
    req: OwnedCompletionRequest,
}

impl drive::Caller for Complete {
    fn call(&self) -> impl Future<Output = Result<(), String>> + Send + '_ {
        complete(&self.client, &self.req)
    }
}
