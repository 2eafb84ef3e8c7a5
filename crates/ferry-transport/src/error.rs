//! Errors of the transport. Each message says what happened and, where there is something to do,
//! what to do.

use std::io;
use std::path::PathBuf;

use crate::user::UserId;

use ferry_frame::{ErrorCode, ErrorPayload};

/// Everything a transport operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The service name cannot be used.
    #[error("invalid service name {name:?}: {why}")]
    InvalidServiceName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// A configuration value no connection could work with.
    #[error("invalid configuration: {field}: {why}; fix the value (the defaults work)")]
    InvalidConfig {
        /// The field (`limits.max_message_size`, `max_connections`, ...).
        field: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// The control socket path would not fit in `sockaddr_un`.
    #[error(
        "control socket path {path:?} is {len} bytes, more than the {max} a Unix socket address holds: \
         use a shorter service name or set FERRY_RUNTIME_DIR to a shorter directory"
    )]
    SocketPathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The runtime directory is not private to this user.
    #[error(
        "refusing to use {path:?}: {why}. Ferry keeps its sockets in a directory only you can \
         write to; fix its owner/mode (chmod 700) or set FERRY_RUNTIME_DIR to a private directory"
    )]
    UnsafeDirectory {
        /// The directory.
        path: PathBuf,
        /// Why it is refused.
        why: String,
    },
    /// Another server already serves this name.
    #[error("{}", already_running(endpoint, *pid))]
    AlreadyRunning {
        /// Where: the control socket's path (Unix) or the named pipe (Windows).
        endpoint: String,
        /// The serving process, when it could be asked (Windows; on Unix the live server is
        /// known by the lock it holds, not by pid).
        pid: Option<u32>,
    },
    /// No server is running on this name.
    #[error(
        "no Ferry server is running on {endpoint} (is the server started, with the same service name and user?)"
    )]
    NotRunning {
        /// Where it was looked for: the control socket's path (Unix) or the named pipe
        /// (Windows).
        endpoint: String,
    },
    /// The peer runs as a user this side does not accept.
    #[error(
        "peer process {pid} runs as {user}, which is not allowed to talk to this {side} (allowed: {})",
        users_text(allowed)
    )]
    PeerNotAllowed {
        /// Which side refused: "server" or "client".
        side: &'static str,
        /// The peer's process id.
        pid: u32,
        /// The peer's user.
        user: UserId,
        /// The users accepted.
        allowed: Vec<UserId>,
    },
    /// Windows: the service's named pipe exists but was not created by a Ferry server of this
    /// user (another user's process took the name first), so this side will not use it.
    #[error(
        "refusing the named pipe {pipe}: {why}. Ferry's pipes are only ever created by a server of \
         the same user; another process may be squatting on the name: find and stop it, or pick \
         another service name"
    )]
    PipeSquatted {
        /// The pipe's name.
        pipe: String,
        /// What gave it away.
        why: String,
    },
    /// The server refused the handshake.
    #[error("the server refused the connection: {message} (code {code})")]
    Refused {
        /// Why (`ErrorCode::REFUSED`, `BUSY`, `VERSION_UNSUPPORTED`, ...).
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The peer broke the protocol (bad frame, bad handshake, corrupted ring).
    #[error("protocol violation by the peer: {0}; the connection was closed")]
    Protocol(String),
    /// The server's shared memory failed validation.
    #[error("the server's shared memory is not acceptable: {0}")]
    BadSharedMemory(String),
    /// Creating or mapping shared memory failed.
    #[error(
        "shared memory: {step} failed: {source} (check `ulimit -n`, memory limits and /proc/sys/vm settings; on Windows, the commit limit and the process's handle count)"
    )]
    SharedMemory {
        /// The step that failed.
        step: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Setting up a notifier (eventfd, pipe, event) failed.
    #[error(transparent)]
    Notify(#[from] ferry_notify::SetupError),
    /// Waking or waiting failed.
    #[error("wake-up mechanism failed: {0}")]
    Wake(ferry_notify::NotifyError),
    /// Server side: a connection's partial (fragmented, incomplete) messages would take the
    /// memory the server holds for them, all connections together, past its budget; the
    /// connection is cut off (its client is told with `Goodbye` `BUSY`).
    #[error(
        "buffering {wanted} more bytes of partial messages would take the server past its budget \
         of {limit} bytes for them across all connections ({used} held): this connection is cut \
         off; raise ServerConfig::max_partial_bytes, or have clients send fewer large messages at once"
    )]
    OverBudget {
        /// Bytes the connection needed on top of what it held.
        wanted: usize,
        /// Bytes held by all connections at the time.
        used: usize,
        /// The budget.
        limit: usize,
    },
    /// The connection to the peer is gone (the peer exited, crashed, or closed it).
    #[error("the connection is closed: {0}")]
    Closed(&'static str),
    /// No answer before the deadline.
    #[error("timed out after {0:?} waiting for the peer")]
    Timeout(std::time::Duration),
    /// The message is larger than the agreed maximum.
    #[error(
        "message of {len} bytes exceeds the connection's maximum of {max} bytes (raise max_message_size on both sides)"
    )]
    TooLarge {
        /// The message length.
        len: usize,
        /// The agreed maximum.
        max: usize,
    },
    /// Too many calls are in flight on this client.
    #[error(
        "{0} calls are already in flight on this client: wait for some to finish or raise ClientConfig::max_in_flight"
    )]
    TooManyInFlight(usize),
    /// The handler answered with an error response.
    #[error("the server answered with error {code}: {message}")]
    Remote {
        /// The error code (application codes from `ErrorCode::APPLICATION_BASE`).
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
    /// The call was cancelled.
    #[error("the call was cancelled")]
    Cancelled,
    /// An OS call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

fn already_running(endpoint: &str, pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!(
            "a Ferry server (process {pid}, your user) is already serving {endpoint}; stop it or \
             pick another service name"
        ),
        #[cfg(windows)]
        None => format!(
            "the named pipe {endpoint} is taken and every instance of it was busy, so its owner \
             could not be checked (a busy Ferry server of yours, or another process holding the \
             name); stop it or pick another service name"
        ),
        #[cfg(not(windows))]
        None => format!(
            "a Ferry server is already running on {endpoint} (its lock is held); stop it or pick \
             another service name"
        ),
    }
}

fn users_text(users: &[UserId]) -> String {
    let list: Vec<String> = users.iter().map(ToString::to_string).collect();
    format!("[{}]", list.join(", "))
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: impl Into<io::Error>) -> Self {
        Error::Io {
            what: what.into(),
            source: source.into(),
        }
    }
}

impl From<ferry_notify::NotifyError> for Error {
    fn from(e: ferry_notify::NotifyError) -> Self {
        Error::Wake(e)
    }
}

/// The code and message of an error payload (`ErrorResponse`, `Refuse`); a payload that does
/// not decode becomes a protocol-violation error saying so.
pub(crate) fn decode_error(payload: &[u8]) -> (ErrorCode, String) {
    match ErrorPayload::decode(payload) {
        Ok(p) => (p.code, p.message.to_owned()),
        Err(e) => (
            ErrorCode::PROTOCOL_VIOLATION,
            format!("undecodable error payload: {e}"),
        ),
    }
}
