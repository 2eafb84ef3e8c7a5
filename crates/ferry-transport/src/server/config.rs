//! How a server serves.

use std::path::PathBuf;
use std::time::Duration;

use ferry_frame::Limits;
use ferry_notify::WaitPolicy;

use crate::error::Error;
use crate::link::Layout;
use crate::sys;
use crate::user::UserId;

/// How a server serves.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The most the server grants for each limit (ring sizes, message size). Clients may ask
    /// for less.
    pub limits: Limits,
    /// How workers wait when their connections are idle.
    pub policy: WaitPolicy,
    /// Event-loop threads; each new connection goes to the next one, round robin. Default:
    /// [`default_workers`] (one per four CPUs, 1 to 8).
    pub workers: usize,
    /// Users allowed to connect (default: only the user the server runs as: its effective uid
    /// on Unix, its token's user SID on Windows).
    pub allowed_users: Vec<UserId>,
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
    /// Checks what no client could be served with: a limit of 0, ring sizes the layout cannot
    /// have, no connection allowed at all. (Without this every client would be refused, each
    /// told that *its* limits are wrong.)
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let invalid = |field: &'static str, why: String| Error::InvalidConfig { field, why };
        let l = &self.limits;
        for (field, v) in [
            ("limits.max_message_size", l.max_message_size),
            ("limits.max_partial_messages", l.max_partial_messages),
            ("limits.max_buffered_bytes", l.max_buffered_bytes),
        ] {
            if v == 0 {
                return Err(invalid(field, "0 would refuse every client".to_owned()));
            }
        }
        Layout::new(l).map_err(|why| invalid("limits", why))?;
        if self.max_connections == 0 {
            return Err(invalid(
                "max_connections",
                "0 would refuse every client".to_owned(),
            ));
        }
        Ok(())
    }

    /// Whether `user` may connect.
    pub(crate) fn allows(&self, user: &sys::UserId) -> bool {
        self.allowed_users.iter().any(|u| u.0 == *user)
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
            workers: default_workers(),
            allowed_users: sys::default_allowed_users()
                .into_iter()
                .map(UserId)
                .collect(),
            max_connections: 4096,
            handshake_timeout: Duration::from_secs(1),
            max_pending_handshakes: 1024,
            max_partial_bytes: 256 << 20,
            runtime_dir: None,
        }
    }
}

/// Builder-style setters: `ServerConfig::default().with_runtime_dir(dir).with_limits(limits)`. (The
/// struct is `#[non_exhaustive]`: outside this crate it is built from [`Default`] and these
/// setters or field assignments, never with a struct literal, so fields can be added later.)
impl ServerConfig {
    /// Sets [`limits`](Self::limits).
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
    /// Sets [`policy`](Self::policy).
    #[must_use]
    pub fn with_policy(mut self, policy: WaitPolicy) -> Self {
        self.policy = policy;
        self
    }
    /// Sets [`workers`](Self::workers).
    #[must_use]
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }
    /// Sets [`allowed_users`](Self::allowed_users).
    #[must_use]
    pub fn with_allowed_users(mut self, allowed_users: Vec<UserId>) -> Self {
        self.allowed_users = allowed_users;
        self
    }
    /// Sets [`max_connections`](Self::max_connections).
    #[must_use]
    pub fn with_max_connections(mut self, max_connections: usize) -> Self {
        self.max_connections = max_connections;
        self
    }
    /// Sets [`handshake_timeout`](Self::handshake_timeout).
    #[must_use]
    pub fn with_handshake_timeout(mut self, handshake_timeout: Duration) -> Self {
        self.handshake_timeout = handshake_timeout;
        self
    }
    /// Sets [`max_partial_bytes`](Self::max_partial_bytes).
    #[must_use]
    pub fn with_max_partial_bytes(mut self, max_partial_bytes: usize) -> Self {
        self.max_partial_bytes = max_partial_bytes;
        self
    }
    /// Sets [`max_pending_handshakes`](Self::max_pending_handshakes).
    #[must_use]
    pub fn with_max_pending_handshakes(mut self, max_pending_handshakes: usize) -> Self {
        self.max_pending_handshakes = max_pending_handshakes;
        self
    }
    /// Sets [`runtime_dir`](Self::runtime_dir).
    #[must_use]
    pub fn with_runtime_dir(mut self, runtime_dir: impl Into<PathBuf>) -> Self {
        self.runtime_dir = Some(runtime_dir.into());
        self
    }
}

/// The default number of server workers: one per four CPUs the process may use, at least 1
/// and at most 8.
///
/// A busy worker spins on its connections, and the clients on the same machine need CPUs too
/// (a blocking caller spins while it waits for its answer), so the server takes about a
/// quarter of them: 1 worker up to 7 CPUs (this project's 2-CPU development machine), 2 on 8,
/// 4 on 16, 8 from 32 on. Set [`ServerConfig::workers`] to choose.
#[must_use]
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 4).clamp(1, 8))
}
