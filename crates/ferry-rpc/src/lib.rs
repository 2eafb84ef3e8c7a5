//! Typed services over Ferry: a Rust trait is the schema; `#[ferry_rpc::service]` generates a
//! typed client (blocking and tokio) and a server dispatcher (blocking and async handlers),
//! with per-method codecs, typed errors, cancellation, deadlines and server pushes.
//!
//! ```
//! use ferry_rpc::{Context, RpcConfig, Status};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! pub struct CompletionRequest<'a> {
//!     pub path: &'a str, // borrowed from the ring record on the server: no copy
//!     pub line: u32,
//!     pub prefix: &'a str,
//! }
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! pub struct Completion { pub label: String }
//!
//! #[ferry_rpc::service]
//! pub trait Engine {
//!     fn complete(req: CompletionRequest<'_>) -> Vec<Completion>;
//!     fn chat(prompt: String) -> impl Stream<Item = String>;
//!     #[notification]
//!     fn did_change(path: String);
//! }
//!
//! struct MyEngine;
//! impl Engine for MyEngine {
//!     fn complete(&self, _cx: &Context<'_>, req: CompletionRequest<'_>) -> Result<Vec<Completion>, Status> {
//!         Ok(vec![Completion { label: format!("{}_{}", req.prefix, req.line) }])
//!     }
//!     fn chat(&self, cx: &Context<'_>, prompt: String, items: &ferry_rpc::Sink<'_, String>) -> Result<(), Status> {
//!         for word in prompt.split(' ') {
//!             if cx.is_cancelled() { break; }
//!             let _ = items.send(&word.to_owned());
//!         }
//!         Ok(())
//!     }
//!     fn did_change(&self, _cx: &Context<'_>, _path: String) {}
//! }
//!
//! # fn main() -> Result<(), ferry_rpc::RpcError> {
//! # let dir = std::env::temp_dir().join(format!("ferry-rpc-doc-{}", std::process::id()));
//! # let server_config = ferry_rpc::ServerConfig::default().with_runtime_dir(&dir);
//! # let client_config = ferry_rpc::ClientConfig::default().with_runtime_dir(&dir);
//! // The engine process:
//! let server = ferry_rpc::serve("engine-doc", server_config, RpcConfig::default(), EngineServer::new(MyEngine))?;
//!
//! // The editor process (any number of threads may share `client`):
//! let client = EngineClient::connect_with("engine-doc", client_config, RpcConfig::default())?;
//! let list = client.complete(&CompletionRequest { path: "src/main.rs", line: 3, prefix: "fn ma" })?;
//! assert_eq!(list, vec![Completion { label: "fn ma_3".into() }]);
//! let words: Vec<String> = client.chat(&"hello typed world".to_owned())?.collect::<Result<_, _>>()?;
//! assert_eq!(words, ["hello", "typed", "world"]);
//! client.did_change(&"src/main.rs".to_owned())?;
//! # drop(server);
//! # let _ = std::fs::remove_dir_all(dir);
//! # Ok(())
//! # }
//! ```
//!
//! # What `#[service]` generates for `trait Engine`
//! - `trait Engine` itself, rewritten as the server's blocking handler trait: each method gets
//!   `&self` and a [`Context`], calls return `Result<T, Status>`, streams get a [`Sink`] and
//!   return `Result<(), Status>`, notifications return nothing. `trait AsyncEngine` is the same
//!   with async handlers (an [`AsyncSink`] for streams).
//! - `EngineServer<H>` / `AsyncEngineServer<H>`: the dispatchers, given to [`serve`] /
//!   [`serve_async`].
//! - `EngineClient` (blocking) and `EngineAsyncClient` (tokio): `Clone + Send + Sync`, one
//!   connection shared by every clone; `with_timeout` gives a client whose calls carry a
//!   deadline. For every call `foo` the blocking client also has `start_foo`, which sends the
//!   request and returns a [`PendingReply`] at once: many calls in flight from one thread
//!   (pipelining), each answer collected with [`PendingReply::wait`]; dropping one cancels it.
//! - `EnginePusher` (server side: typed pushes to one client) and `trait EnginePushes`
//!   (client side: the push handlers, each with an empty default).
//!
//! Method attributes: `#[notification]` (client → server, no answer), `#[push]` (server →
//! client), `#[method(id = N)]` (an explicit id), `#[codec(rkyv)]` / `#[codec(json)]` /
//! `#[codec(postcard)]` (per method; `#[service(codec = rkyv)]` sets the service's default,
//! postcard otherwise). A request argument of type `&[u8]` travels as raw bytes, written
//! straight into the ring record (`call_with`) and borrowed from it on the server.
//!
//! # Method ids
//! A method's id is FNV-1a of `"Service.method"` ([`method_id`], a `const fn`) unless given
//! with `#[method(id = N)]`. Two methods of one service with the same id do not compile:
//!
//! ```compile_fail
//! #[ferry_rpc::service]
//! trait Clash {
//!     #[method(id = 7)]
//!     fn a(x: u32) -> u32;
//!     #[method(id = 7)]
//!     fn b(x: u32) -> u32;
//! }
//! ```
//!
//! while the same service with distinct ids does:
//!
//! ```
//! #[ferry_rpc::service]
//! trait NoClash {
//!     #[method(id = 7)]
//!     fn a(x: u32) -> u32;
//!     #[method(id = 8)]
//!     fn b(x: u32) -> u32;
//! }
//! ```
//!
//! docs/rpc.md describes the envelope byte by byte, the method ids, the codecs, compression,
//! the error codes, versioning, and the JSON-RPC 2.0 mapping.

#![warn(missing_docs)]

mod client;
pub mod codec;
pub mod envelope;
mod error;
pub mod json_rpc;
mod link;
mod server;
mod stream_pool;

pub use client::{
    AnswerDecoder, AsyncClient, AsyncTypedStream, Client, Encoder, ItemDecoder, PendingReply,
    PushCallback, TypedStream,
};
pub use envelope::{CodecId, method_id};
pub use error::{RpcError, Status, code};
pub use ferry_rpc_macros::service;
pub use ferry_transport::{ClientConfig, Connection, Server, ServerConfig};
pub use link::{AsyncTransport, ItemSource, PendingAnswer, Transport};
pub use server::{
    AsyncCall, AsyncService, AsyncSink, BoxFuture, Call, Context, Failure, Note, OwnedNote,
    Service, Sink, ValueEncoder, open_push, push, serve, serve_async,
};

/// rkyv, as the generated code names it (derive `rkyv::Archive`, `rkyv::Serialize`,
/// `rkyv::Deserialize` on the types of rkyv methods).
pub use rkyv;

/// What kind of method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MethodKind {
    /// One request, one answer.
    Call,
    /// One request, a stream of items.
    Stream,
    /// Client → server, no answer.
    Notification,
    /// Server → client, no answer.
    Push,
}

/// One method of a service, as the generated code describes it.
#[derive(Clone, Copy, Debug)]
pub struct Method {
    /// The service's name.
    pub service: &'static str,
    /// The method's name.
    pub name: &'static str,
    /// `Service.method`.
    pub qualified: &'static str,
    /// Its id (FNV-1a of `Service.method`, or the explicit one).
    pub id: u32,
    /// How its values are encoded.
    pub codec: CodecId,
    /// What kind of method.
    pub kind: MethodKind,
    /// Whether its request is raw bytes (a `&[u8]` argument).
    pub raw_request: bool,
    /// The request type, as written (for error messages).
    pub request_type: &'static str,
}

/// Stands for a method before the dispatcher matched one (never answered with).
pub(crate) static UNCHECKED: Method = Method {
    service: "?",
    name: "?",
    qualified: "?",
    id: 0,
    codec: CodecId::Raw,
    kind: MethodKind::Call,
    raw_request: false,
    request_type: "?",
};

impl Method {
    /// The typed error for a transport error of a call of this method.
    pub fn error(&'static self, e: ferry_transport::Error) -> RpcError {
        RpcError::from_transport(e, self.service, self.name, self.qualified, self.id)
    }
}

/// Settings of the typed layer, on either side.
#[derive(Clone, Debug)]
pub struct RpcConfig {
    /// Compress bodies larger than this many bytes with lz4, toward a peer that said it accepts
    /// lz4 (it says so in every message it sends; the first request is never compressed). `None`
    /// (the default): never compress.
    pub compress_above: Option<usize>,
    /// Whether this side accepts lz4-compressed bodies (and says so). Default `true`.
    pub accept_lz4: bool,
    /// The largest body this side decompresses; a compressed body that claims more is refused
    /// before anything is allocated. Default 64 MiB.
    pub max_decompressed: usize,
    /// Server: the most blocking stream handlers (each on a thread of the stream pool) one connection
    /// may have running; a stream request beyond it is answered with `BUSY` at once. Default 64.
    pub max_streams_per_connection: usize,
}

impl Default for RpcConfig {
    fn default() -> Self {
        RpcConfig {
            compress_above: None,
            accept_lz4: true,
            max_decompressed: 64 << 20,
            max_streams_per_connection: 64,
        }
    }
}

impl RpcConfig {
    /// The default settings, compressing bodies above `threshold` bytes.
    pub fn compressing_above(threshold: usize) -> RpcConfig {
        RpcConfig {
            compress_above: Some(threshold),
            ..RpcConfig::default()
        }
    }
}

/// Used by the generated code; not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::envelope::assert_unique_ids;
    pub use futures_core;

    /// Logs a push that did not decode (it has no answer to carry the error).
    pub fn push_undecodable(method: &'static crate::Method, e: crate::codec::CodecError) {
        tracing::warn!(method = method.qualified, error = %e, "push dropped: it does not decode");
    }
    /// Logs a push of a method this client does not know (a newer server).
    pub fn push_unknown(service: &'static str, id: u32) {
        tracing::debug!(service, id, "push of an unknown method dropped");
    }
}
