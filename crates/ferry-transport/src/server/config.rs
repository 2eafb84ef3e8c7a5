//! How a server serves.

use std::path::PathBuf;
use std::time::Duration;

use ferry_frame::Limits;
use ferry_notify::WaitPolicy;

use crate::error::Error;
use crate::link::Layout;
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
    /// How long a client may take to send its `Hello`.
    pub handshake_timeout: Duration,
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
            runtime_dir: None,
        }
    }
}
