//! Ferry's transport: connections between two processes over shared-memory rings.
//!
//! ```no_run
//! use ferry_transport::{Client, Server, ServerConfig, Request};
//!
//! // The engine process:
//! let server = Server::bind("engine", ServerConfig::default(), |req: Request<'_>| {
//!     let answer = req.payload().to_ascii_uppercase();
//!     req.respond(&answer);
//! })?;
//!
//! // The editor process:
//! let client = Client::connect("engine")?;
//! let response = client.call(b"complete: fn ma")?;
//! assert_eq!(&*response, b"COMPLETE: FN MA");
//! # drop(server);
//! # Ok::<(), ferry_transport::Error>(())
//! ```
//!
//! A server binds a *service name*; the name maps to a Unix-domain control socket in a per-user
//! directory. A client connects, the two agree on a protocol version and limits (the
//! handshake), and the server hands the client a sealed `memfd` holding two rings (client →
//! server and server → client) and two eventfd doorbells. From then on every message is one
//! frame (`ferry-frame`) in one ring record (`ferry-ring`); the control socket only serves to
//! tell each side, at once, that the other died.
//!
//! # Blocking and async
//! [`Client`] and [`Server`] are blocking (no runtime needed). With the `tokio` feature,
//! `ferry_transport::tokio` adds `AsyncClient` (async calls and streams, cancel-safe), and `serve`
//! (an async handler run as a tokio task per request), over the same connections; the blocking
//! path does not pay for it.
//!
//! # Zero copy
//! [`Client::call_with`] and [`Request::respond_with`] let the caller write the payload in place,
//! straight into the ring record; messages larger than one record (fragmented) go through a
//! staging buffer instead.
//!
//! # Platforms
//! Linux: everything, tested. macOS: only the [`unix`] control plane so far (shared memory from
//! `shm_open`, the peer's credentials from `getpeereid`), compile-checked, never run; the macOS
//! client and server and the Windows transport are issue 8.

#![warn(missing_docs)]
// Linux: everything. macOS: the Unix control plane (`unix`: service directory, socket, control
// frames with the peer's credentials, shared memory from `shm_open`), compile-checked only; the
// client and server follow with issue 8. Elsewhere the crate is empty.
#![cfg(any(target_os = "linux", target_os = "macos"))]

#[cfg(target_os = "linux")]
mod client;
mod error;
#[cfg(target_os = "linux")]
mod link;
#[cfg(target_os = "linux")]
mod metrics;
#[cfg(target_os = "linux")]
mod server;
#[cfg(target_os = "linux")]
mod slots;
#[cfg(all(feature = "tokio", target_os = "linux"))]
pub mod tokio;
pub mod unix;

#[cfg(target_os = "linux")]
pub use client::{
    Client, ClientConfig, ClientStats, NotificationHandler, PendingCall, Response, Stream,
};
pub use error::Error;
pub use ferry_frame::Limits;
pub use ferry_notify::WaitPolicy;
#[cfg(target_os = "linux")]
pub use link::{MAX_RING, MIN_RING};
#[cfg(target_os = "linux")]
pub use metrics::read_server_metrics;
/// The `prometheus-client` this crate exports its metrics through (for
/// [`Server::register_metrics`] / [`Client::register_metrics`]).
#[cfg(target_os = "linux")]
pub use prometheus_client;
#[cfg(target_os = "linux")]
pub use server::{
    Connection, Handler, Request, Responder, Server, ServerConfig, ServerStats, StreamSender,
};
