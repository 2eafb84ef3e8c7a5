//! Ferry's transport: connections between two processes over shared-memory rings.
//!
//! ```no_run
//! # fn main() -> Result<(), ferry_transport::Error> {
//! use ferry_transport::{Client, Server, ServerConfig, Request};
//!
//! // The engine process:
//! let server = Server::bind("engine", ServerConfig::default(), |req: Request<'_>| {
//!     let answer = req.payload().to_ascii_uppercase();
//!     req.respond(&answer)
//! })?;
//!
//! // The editor process:
//! let client = Client::connect("engine")?;
//! let response = client.call(b"complete: fn ma")?;
//! assert_eq!(&*response, b"COMPLETE: FN MA");
//! # drop(server);
//! # Ok(())
//! # }
//! ```
//!
//! A server binds a *service name*; the name maps to a Unix-domain control socket in a per-user
//! directory. A client connects, the two agree on a protocol version and limits (the
//! handshake), and the server hands the client the connection's shared memory (Linux: a sealed
//! `memfd`; macOS: an unlinked `shm_open` object) holding two rings (client → server and server →
//! client), and two doorbells (Linux: eventfds; macOS: pipes). From then on every message is one
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
//! # Observability
//! Metrics, in a `prometheus-client` registry: [`Server::metrics_text`] and
//! [`Client::metrics_text`] give the OpenMetrics text exposition, [`Server::register_metrics`] /
//! [`Client::register_metrics`] add them to the application's own registry, and
//! [`read_server_metrics`] reads a running server's text from another process through its
//! control socket (`cargo run -p ferry-transport --example ferry_stats -- <service>`).
//!
//! - Server: `ferry_server_connections_{accepted,refused{reason},closed{reason}}_total`,
//!   `ferry_server_connections_open`, `ferry_server_errors_total{kind=protocol|handler_panic|
//!   request_dropped}`, `ferry_server_requests_in_flight`, `ferry_server_metrics_queries_total`,
//!   and over all connections `ferry_server_{messages,bytes}` received and sent by `kind`
//!   (`ferry_server_messages_received_total`, `ferry_server_received_bytes_total`, ...),
//!   `ferry_server_ring_full_total` (sends that found the ring full),
//!   `ferry_server_wakeups_sent_total{mechanism=futex|doorbell}`,
//!   `ferry_server_wakeups_received_total`.
//! - Per open connection (label `connection`, the [`Connection::id`]): the same data-path
//!   families as `ferry_connection_*`, and `ferry_connection_requests_in_flight`. A connection's
//!   series go away when it closes (its counts stay in the server's totals), so the number of
//!   series follows the open connections, not all connections ever made.
//! - Client: `ferry_client_calls_total{outcome="ok"}`, `ferry_client_calls_failed_total{error}`,
//!   `ferry_client_{connects,reconnections,connect_retries}_total`,
//!   `ferry_client_stream_backpressure_waits_total` (times the thread reading the ring waited for
//!   a stream's consumer to make room in its queue), the data-path families as
//!   `ferry_client_*`, and the histogram `ferry_client_round_trip_seconds` (one call in
//!   [`ClientConfig::round_trip_sample_every`] per thread, 8 by default).
//!
//! What a message pays: a relaxed load and store of counters of its own connection, which only
//! the thread holding the ring writes (no lock-prefixed instruction, no lock, no allocation);
//! labels exist only when the text is rendered. [`ServerStats`] and [`ClientStats`] are the same
//! counters the text shows.
//!
//! Lifecycle events go through `tracing` (no subscriber is installed): bind, accept (peer pid,
//! uid, limits), refusal (reason), failed handshake, close (reason, duration, message counts),
//! protocol errors, handler panics, shutdown; a client's connect, backoff, reconnection, and
//! its server's death. Nothing is logged per message, and no event carries payload bytes.
//!
//! # Changes (issue 20)
//! The API others build on changed once (the README's "Changes" lists it in full): one error
//! vocabulary on every OS ([`Error::NotRunning`], [`Error::AlreadyRunning`],
//! [`Error::PeerNotAllowed`]; new [`Error::InvalidConfig`]); portable [`UserId`]
//! ([`ServerConfig::allowed_users`], [`Connection::peer_user`]) and [`Endpoint`]
//! ([`Server::endpoint`]); [`ClientStats`] / [`ServerStats`] are plain snapshots;
//! `#[non_exhaustive]` configs with `with_*` setters; [`StreamReceiver`] (was `Stream`) and the
//! tokio `AsyncStreamReceiver`, whose `next_item`s both return `Result<Option<Vec<u8>>, Error>`;
//! [`Request::respond`] returns a `Result` like [`Responder::respond`] ([`HandlerOutput`]);
//! answers take an [`ErrorCode`]; the `unix` / `windows` modules are hidden. Fixed: a handler
//! that answered and then panicked no longer gets a second `ErrorResponse`.
//!
//! # Platforms
//! Linux: everything, tested.
//!
//! macOS (`x86_64-apple-darwin` and `aarch64-apple-darwin`): the whole crate, client, server,
//! metrics and the tokio API included, **compiles and passes clippy for both Apple targets, and
//! has never run**: there is no Mac in the gate. What differs from Linux there: the shared memory
//! is an unlinked `shm_open` object (no seals; macOS refuses to resize it once sized), the peer's
//! credentials come from `getpeereid` and `LOCAL_PEERPID`, a doorbell is a pipe (both of its ends
//! travel with the `Welcome`, see docs/protocol.md §7.1), the server's workers wait in `kevent`
//! instead of `epoll_wait`, the client watches the control socket with `POLLIN` alone (no
//! `POLLRDHUP`), and waits on a ring's sleep word use `os_sync_wait_on_address` (macOS 14.4+;
//! older systems sleep in 1 ms slices instead).
//!
//! Windows (`x86_64-pc-windows-gnu`): the client, the server and the tokio API, **tested under
//! Wine** (not on Windows itself). What differs there: the control channel is a named pipe
//! restricted to the current user, peers are checked by the user SID of their process (a
//! [`UserId`] holds a SID there: [`ServerConfig::allowed_users`], [`Connection::peer_user`]), the
//! memory and the doorbells (unnamed events) are duplicated into the client, a pending read on
//! the pipe tells each side that the other is gone, the server's workers wait on an I/O
//! completion port, and a thread waiting on a ring's sleep word is woken through its doorbell's
//! waiter (`WaitOnAddress` works within one process only). `runtime_dir` scopes the pipe name.

#![warn(missing_docs)]
// Linux: everything, tested. macOS: everything, compile-checked only. Windows: everything,
// tested under Wine (see "Platforms"). Elsewhere the crate is empty.
#![cfg(any(target_os = "linux", target_os = "macos", windows))]

mod client;
mod control_frame;
mod endpoint;
mod error;
mod handshake;
mod link;
mod metrics;
mod server;
mod service_name;
mod slots;
mod sys;
#[cfg(feature = "tokio")]
pub mod tokio;
mod user;
// The platform layers are public only for this crate's own tests and tools (hand-made
// handshakes, raw control frames, shared memory): hidden, and not part of the API (no semver
// promise). Everything an application needs is at the crate root, the same on every platform.
#[cfg(any(target_os = "linux", target_os = "macos"))]
#[doc(hidden)]
pub mod unix;
#[cfg(windows)]
#[doc(hidden)]
pub mod windows;

pub use client::{
    Client, ClientConfig, ClientStats, NotificationHandler, PendingCall, Response, StreamReceiver,
};
pub use endpoint::Endpoint;
pub use error::Error;
pub use ferry_frame::{ErrorCode, Limits};
pub use ferry_notify::WaitPolicy;
pub use handshake::metrics_query::read_server_metrics;
pub use link::{MAX_RING, MIN_RING};
/// The `prometheus-client` this crate exports its metrics through (for
/// [`Server::register_metrics`] / [`Client::register_metrics`]).
pub use prometheus_client;
pub use server::{
    Connection, Handler, HandlerOutput, Request, Responder, Server, ServerConfig, ServerStats,
    StreamSender, default_workers,
};
pub use user::{UserId, UserIdParseError};
