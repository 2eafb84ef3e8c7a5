//! Errors of the transport. Each message says what happened and, where there is something to do,
//! what to do.

use std::io;
use std::path::PathBuf;

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
    #[error(
        "a Ferry server is already running on {socket:?} (its lock is held); stop it or pick another service name"
    )]
    AlreadyRunning {
        /// The socket of the live server.
        socket: PathBuf,
    },
    /// No server is listening on this name.
    #[error(
        "no Ferry server is running on {socket:?} (is the server started, with the same service name and user?)"
    )]
    NotRunning {
        /// The socket looked for.
        socket: PathBuf,
    },
    /// The peer runs as a user this side does not accept.
    #[error(
        "peer process {pid} runs as uid {uid}, which is not allowed to talk to this {side} (allowed: {allowed:?})"
    )]
    PeerNotAllowed {
        /// Which side refused: "server" or "client".
        side: &'static str,
        /// The peer's uid.
        uid: u32,
        /// The peer's pid.
        pid: i32,
        /// The uids accepted.
        allowed: Vec<u32>,
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
    /// Windows: a server of this user already serves this name (or, with no `pid`, the pipe
    /// exists and every instance was busy, so who serves it could not be checked).
    #[error("{}", already_served(pipe, *pid))]
    AlreadyServed {
        /// The pipe's name.
        pipe: String,
        /// The serving process, when it could be asked (`None` while every instance was busy).
        pid: Option<u32>,
    },
    /// Windows: no server serves this name.
    #[error(
        "no Ferry server is serving the named pipe {pipe} (is the server started, with the same service name and user?)"
    )]
    PipeNotFound {
        /// The pipe looked for.
        pipe: String,
    },
    /// Windows: the peer runs as a user (SID) this side does not accept.
    #[error(
        "peer process {pid} runs as {sid}, which is not allowed to talk to this {side} (allowed: {allowed:?})"
    )]
    PeerSidNotAllowed {
        /// Which side refused: "server" or "client".
        side: &'static str,
        /// The peer's user SID, in string form.
        sid: String,
        /// The peer's process id.
        pid: u32,
        /// The SIDs accepted.
        allowed: Vec<String>,
    },
    /// The server refused the handshake.
    #[error("the server refused the connection: {message} (code {code:#x})")]
    Refused {
        /// The error code (`ferry_frame::ErrorCode`).
        code: u32,
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
    #[error("the server answered with error {code:#x}: {message}")]
    Remote {
        /// The error code.
        code: u32,
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

fn already_served(pipe: &str, pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!(
            "a Ferry server (process {pid}, your user) is already serving the named pipe {pipe}; \
             stop it or pick another service name"
        ),
        None => format!(
            "the named pipe {pipe} is taken and every instance of it was busy, so its owner could \
             not be checked (a busy Ferry server of yours, or another process holding the name); \
             stop it or pick another service name"
        ),
    }
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
pub(crate) fn decode_error(payload: &[u8]) -> (u32, String) {
    match ErrorPayload::decode(payload) {
        Ok(p) => (p.code.0, p.message.to_owned()),
        Err(e) => (
            ErrorCode::PROTOCOL_VIOLATION.0,
            format!("undecodable error payload: {e}"),
        ),
    }
}
