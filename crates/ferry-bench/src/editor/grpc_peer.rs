//! The gRPC peer (`grpc`; ferry-bench's `peers-rpc` feature): tonic 0.14 over a Unix socket with
//! prost messages. The messages derive `prost::Message` by hand and the service is the code
//! `tonic-build` generates, written out (so no `protoc` is needed); the proto it stands for:
//!
//! ```text
//! service Engine {
//!   rpc Complete(CompletionRequest) returns (CompletionList);
//!   rpc Chat(ChatRequest) returns (stream Token);
//!   rpc Analyze(AnalyzeRequest) returns (Diagnostics);
//! }
//! ```

use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::server::NamedService;

use super::Work;
use super::drive;
use super::schema::{CHAT_PROMPT, COMPLETIONS, PATH, check_completion, completion_request};
use crate::measure::{self, Outcome};
use crate::opts::Opts;

#[derive(Clone, PartialEq, prost::Message)]
pub struct CompletionRequest {
    #[prost(string, tag = "1")]
    pub path: String,
    #[prost(uint32, tag = "2")]
    pub line: u32,
    #[prost(uint32, tag = "3")]
    pub column: u32,
    #[prost(string, tag = "4")]
    pub prefix: String,
    #[prost(string, tag = "5")]
    pub suffix: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CompletionItem {
    #[prost(string, tag = "1")]
    pub label: String,
    #[prost(string, tag = "2")]
    pub detail: String,
    #[prost(uint32, tag = "3")]
    pub kind: u32,
    #[prost(uint32, tag = "4")]
    pub score: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CompletionList {
    #[prost(message, repeated, tag = "1")]
    pub items: Vec<CompletionItem>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ChatRequest {
    #[prost(string, tag = "1")]
    pub prompt: String,
    #[prost(uint32, tag = "2")]
    pub tokens: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Token {
    #[prost(string, tag = "1")]
    pub text: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AnalyzeRequest {
    #[prost(string, tag = "1")]
    pub path: String,
    #[prost(string, tag = "2")]
    pub text: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Diagnostic {
    #[prost(uint32, tag = "1")]
    pub line: u32,
    #[prost(uint32, tag = "2")]
    pub column: u32,
    #[prost(uint32, tag = "3")]
    pub severity: u32,
    #[prost(string, tag = "4")]
    pub message: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Diagnostics {
    #[prost(message, repeated, tag = "1")]
    pub items: Vec<Diagnostic>,
}

fn complete(req: &CompletionRequest) -> Result<CompletionList, tonic::Status> {
    check_completion(&req.path, &req.prefix, &req.suffix, req.line)
        .map_err(tonic::Status::invalid_argument)?;
    Ok(CompletionList {
        items: COMPLETIONS
            .iter()
            .map(|c| CompletionItem {
                label: c.label.to_string(),
                detail: c.detail.to_string(),
                kind: c.kind,
                score: c.score,
            })
            .collect(),
    })
}

fn analyze(req: &AnalyzeRequest) -> Diagnostics {
    Diagnostics {
        items: super::schema::analyze(req.text.as_bytes())
            .into_iter()
            .map(|d| Diagnostic {
                line: d.line,
                column: d.column,
                severity: d.severity,
                message: d.message.into_owned(),
            })
            .collect(),
    }
}

type TokenStream = Pin<Box<dyn futures::Stream<Item = Result<Token, tonic::Status>> + Send>>;

/// The server, as `tonic-build` would generate it for the proto above.
#[derive(Clone, Default)]
pub struct EngineServer;

impl NamedService for EngineServer {
    const NAME: &'static str = "editor.Engine";
}

struct CompleteSvc;
impl tonic::server::UnaryService<CompletionRequest> for CompleteSvc {
    type Response = CompletionList;
    type Future = BoxFuture<tonic::Response<CompletionList>, tonic::Status>;
    fn call(&mut self, request: tonic::Request<CompletionRequest>) -> Self::Future {
        Box::pin(async move { complete(request.get_ref()).map(tonic::Response::new) })
    }
}

struct AnalyzeSvc;
impl tonic::server::UnaryService<AnalyzeRequest> for AnalyzeSvc {
    type Response = Diagnostics;
    type Future = BoxFuture<tonic::Response<Diagnostics>, tonic::Status>;
    fn call(&mut self, request: tonic::Request<AnalyzeRequest>) -> Self::Future {
        Box::pin(async move { Ok(tonic::Response::new(analyze(request.get_ref()))) })
    }
}

struct ChatSvc;
impl tonic::server::ServerStreamingService<ChatRequest> for ChatSvc {
    type Response = Token;
    type ResponseStream = TokenStream;
    type Future = BoxFuture<tonic::Response<TokenStream>, tonic::Status>;
    fn call(&mut self, request: tonic::Request<ChatRequest>) -> Self::Future {
        let n = request.get_ref().tokens as usize;
        Box::pin(async move {
            let items = futures::stream::iter((0..n).map(|i| {
                Ok(Token {
                    text: super::schema::token(i).to_owned(),
                })
            }));
            Ok(tonic::Response::new(Box::pin(items) as TokenStream))
        })
    }
}

impl<B> tonic::codegen::Service<http::Request<B>> for EngineServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        match req.uri().path() {
            "/editor.Engine/Complete" => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
                Ok(grpc.unary(CompleteSvc, req).await)
            }),
            "/editor.Engine/Analyze" => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default())
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(64 << 20);
                Ok(grpc.unary(AnalyzeSvc, req).await)
            }),
            "/editor.Engine/Chat" => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
                Ok(grpc.server_streaming(ChatSvc, req).await)
            }),
            _ => Box::pin(
                async move { Ok(tonic::Status::unimplemented("no such method").into_http()) },
            ),
        }
    }
}

/// `serve grpc --path P`: tonic's server on a Unix socket (a multi-threaded runtime).
pub fn serve(opts: &Opts) -> Result<(), String> {
    let path: PathBuf = opts.path("path")?;
    let rt = drive::runtime(Some(
        std::thread::available_parallelism().map_or(2, usize::from),
    ))?;
    rt.block_on(async {
        let listener = tokio::net::UnixListener::bind(&path)
            .map_err(|e| format!("binding {}: {e}", path.display()))?;
        println!("ready t_ns={}", measure::monotonic_ns());
        std::thread::spawn(|| measure::serve_stdin(String::new));
        tonic::transport::Server::builder()
            .add_service(EngineServer)
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
            .await
            .map_err(|e| format!("serving gRPC: {e}"))
    })
}

type Grpc = tonic::client::Grpc<tonic::transport::Channel>;

/// The client and the runtime that drives it.
pub struct Peer {
    _grpc: Grpc,
    _rt: tokio::runtime::Runtime,
}

async fn call_complete(mut grpc: Grpc, req: &CompletionRequest) -> Result<(), String> {
    grpc.ready().await.map_err(|e| format!("gRPC: {e}"))?;
    let list: CompletionList = grpc
        .unary(
            tonic::Request::new(req.clone()),
            http::uri::PathAndQuery::from_static("/editor.Engine/Complete"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .map_err(|e| format!("gRPC complete: {e}"))?
        .into_inner();
    if list.items.len() != COMPLETIONS.len() || list.items[0].label != COMPLETIONS[0].label {
        return Err(format!(
            "a gRPC completion answer with {} items",
            list.items.len()
        ));
    }
    Ok(())
}

async fn call_chat(mut grpc: Grpc, tokens: u32) -> Result<(Duration, u64), String> {
    let t0 = Instant::now();
    grpc.ready().await.map_err(|e| format!("gRPC: {e}"))?;
    let mut stream = grpc
        .server_streaming(
            tonic::Request::new(ChatRequest {
                prompt: CHAT_PROMPT.to_owned(),
                tokens,
            }),
            http::uri::PathAndQuery::from_static("/editor.Engine/Chat"),
            tonic_prost::ProstCodec::<ChatRequest, Token>::default(),
        )
        .await
        .map_err(|e| format!("gRPC chat: {e}"))?
        .into_inner();
    let (mut first, mut n) = (None, 0u64);
    while let Some(token) = stream
        .message()
        .await
        .map_err(|e| format!("gRPC chat token: {e}"))?
    {
        first.get_or_insert_with(|| t0.elapsed());
        if token.text != super::schema::token(n as usize) {
            return Err(format!("chat token {n} is {:?}", token.text));
        }
        n += 1;
    }
    if n != u64::from(tokens) {
        return Err(format!("a chat answer had {n} tokens, {tokens} expected"));
    }
    Ok((first.unwrap_or_default(), n))
}

async fn call_analyze(mut grpc: Grpc, text: &str) -> Result<(), String> {
    grpc.ready().await.map_err(|e| format!("gRPC: {e}"))?;
    let d: Diagnostics = grpc
        .unary(
            tonic::Request::new(AnalyzeRequest {
                path: PATH.to_owned(),
                text: text.to_owned(),
            }),
            http::uri::PathAndQuery::from_static("/editor.Engine/Analyze"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .map_err(|e| format!("gRPC analyze: {e}"))?
        .into_inner();
    if d.items.len() != super::schema::DIAGNOSTICS {
        return Err(format!("{} diagnostics", d.items.len()));
    }
    Ok(())
}

/// `client grpc editor-…`.
pub fn client(work: Work, opts: &Opts) -> Result<(Outcome, Peer), String> {
    let path = opts.path("path")?;
    let rt = drive::client_runtime(work)?;
    let channel = rt.block_on(async {
        // The URI is required by the API and not used: the connector dials the socket.
        tonic::transport::Endpoint::try_from("http://[::]:50051")
            .map_err(|e| e.to_string())?
            .connect_with_connector(tower::service_fn(move |_: http::Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .map_err(|e| format!("connecting gRPC: {e}"))
    })?;
    let grpc = tonic::client::Grpc::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let r = completion_request();
    let complete = Complete {
        grpc,
        req: CompletionRequest {
            path: r.path.into_owned(),
            line: r.line,
            column: r.column,
            prefix: r.prefix.into_owned(),
            suffix: r.suffix.into_owned(),
        },
    };
    let grpc = &complete.grpc;
    let outcome = match work {
        Work::Complete { .. } | Work::Concurrent { .. } => {
            drive::complete(opts, &rt, &complete, work)?
        }
        Work::Analyze {
            samples,
            warmup,
            size,
        } => drive::analyze(opts, samples, warmup, size, |text| {
            rt.block_on(call_analyze(grpc.clone(), text))
        })?,
        Work::Chat {
            requests,
            warmup,
            tokens,
        } => drive::chat(opts, requests, warmup, || {
            rt.block_on(call_chat(grpc.clone(), tokens))
        })?,
        Work::Pipelined { .. } | Work::Load { .. } => {
            return Err("gRPC runs complete, complete-16, chat and analyze".into());
        }
    };
    Ok((
        outcome,
        Peer {
            _grpc: complete.grpc,
            _rt: rt,
        },
    ))
}

/// A completion caller: each task's clone shares the one channel (HTTP/2 streams over one
/// connection).
#[derive(Clone)]
struct Complete {
    grpc: Grpc,
    req: CompletionRequest,
}

impl drive::Caller for Complete {
    fn call(&self) -> impl Future<Output = Result<(), String>> + Send + '_ {
        call_complete(self.grpc.clone(), &self.req)
    }
}
