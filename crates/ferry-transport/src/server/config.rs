//! How a server serves.

use std::path::PathBuf;
use std::time::Duration;

use ferry_frame::Limits;
use ferry_notify::WaitPolicy;

use crate::sys::{self, UserId};

/// How a server serves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The most the server grants for each limit (ring sizes, message size). Clients may ask
    /// for less.
    pub limits: Limits,
    /// How workers wait when their connections are idle.
    pub policy: WaitPolicy,
    /// Event-loop threads.
    pub workers: usize,
    /// Users allowed to connect (default: only the server's own effective uid).
    #[cfg(unix)]
    pub allowed_uids: Vec<u32>,
    /// Users allowed to connect (default: only the user the server runs as).
    #[cfg(windows)]
    pub allowed_sids: Vec<crate::windows::identity::Sid>,
    /// Most connections served at once; more are refused with a clear error.
    pub max_connections: usize,
    /// How long a client may take to send its `Hello` (Unix: from its connect to the whole
    /// `Hello`; Windows: each read and write of the handshake).
    pub handshake_timeout: Duration,
    /// Most bytes the server holds for partial (fragmented, not yet complete) messages, all
    /// connections together (each connection's own limits are in `limits`: by default 64 MiB,
    /// so 1000 connections could otherwise ask for 64 GB). A connection whose next fragment
    /// would take the total past it is cut off with `Goodbye` `BUSY` (metric
    /// `ferry_server_connections_closed_total{reason="partial_budget"}`; what is held:
    /// `ferry_server_partial_bytes`). Default 256 MiB.
    pub max_partial_bytes: usize,
    /// Unix: most handshakes in progress at once (connected, `Hello` not complete yet). They
    /// are served concurrently, so a silent socket delays nobody; when one more arrives, the
    /// oldest is refused (metric `ferry_server_connections_refused_total{reason="handshakes_pending"}`).
    /// Windows serves handshakes one at a time and ignores it.
    pub max_pending_handshakes: usize,
    /// Unix: the directory holding the service's socket (default: `$XDG_RUNTIME_DIR/ferry`,
    /// see `unix::service_dir::runtime_dir`).
    /// Windows: a scope for the service's pipe name (see [`ClientConfig::runtime_dir`](crate::ClientConfig::runtime_dir)).
    pub runtime_dir: Option<PathBuf>,
}

impl ServerConfig {
    /// The users allowed to connect.
    pub(crate) fn allowed_users(&self) -> &[UserId] {
        #[cfg(unix)]
        return &self.allowed_uids;
        #[cfg(windows)]
        return &self.allowed_sids;
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            limits: Limits {
                client_to_server_ring_bytes: 1 << 20,
                server_to_client_ring_bytes: 1 << 20,
                ..Limits::default()
            },
            policy: WaitPolicy::default(),
            workers: 1,
            #[cfg(unix)]
            allowed_uids: sys::default_allowed_users(),
            #[cfg(windows)]
            allowed_sids: sys::default_allowed_users(),
            max_connections: 4096,
            handshake_timeout: Duration::from_secs(1),
            max_pending_handshakes: 1024,
            max_partial_bytes: 256 << 20,
            runtime_dir: None,
        }
    }
}
