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
//! # What this crate is not (yet)
//! Linux only for now (Windows and macOS transports are issue 8).

#![warn(missing_docs)]
// Linux only until the Windows and macOS transports land (issue 8): elsewhere the crate is empty.
#![cfg(target_os = "linux")]

mod client;
mod error;
mod link;
mod server;
mod slots;
#[cfg(feature = "tokio")]
pub mod tokio;
pub mod unix;

pub use client::{
    Client, ClientConfig, ClientStats, NotificationHandler, PendingCall, Response, Stream,
};
pub use error::Error;
pub use ferry_frame::Limits;
pub use ferry_notify::WaitPolicy;
pub use link::{MAX_RING, MIN_RING};
pub use server::{
    Connection, Handler, Request, Responder, Server, ServerConfig, ServerStats, StreamSender,
};
