//! Errors of typed calls, and the status a handler answers with.

/// Error codes of the typed layer, carried in the transport's error answers (application range
/// of `ferry_frame::ErrorCode`). docs/rpc.md §4 lists them.
pub mod code {
    /// The server has no method of this id.
    pub const UNKNOWN_METHOD: u32 = 0x8000_F001;
    /// The request's body does not decode as the method's argument type.
    pub const BAD_REQUEST: u32 = 0x8000_F002;
    /// The envelope is malformed (version, kind, codec, flags, or compression).
    pub const BAD_ENVELOPE: u32 = 0x8000_F003;
    /// The call's deadline passed on the server (before or while its handler ran).
    pub const DEADLINE_EXCEEDED: u32 = 0x8000_F004;
    /// The handler could not encode its answer.
    pub const BAD_RESPONSE: u32 = 0x8000_F005;
    /// The server runs as many streams for this connection as it allows.
    pub const BUSY: u32 = 0x8000_F006;
    /// First code of the range reserved for the typed layer; handlers' [`Status`](crate::Status)
    /// codes must lie below it.
    pub const RESERVED_BASE: u32 = 0x8000_F000;
}

/// What a handler answers instead of a value: an application error with a code and a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the handler answered with error {code}: {message}")]
pub struct Status {
    /// The application's code, from 0 to [`Status::MAX_CODE`] (larger ones are sent as
    /// `MAX_CODE`). It travels as `0x8000_0000 + code`, in the transport's application range.
    pub code: u32,
    /// What went wrong, for the caller.
    pub message: String,
}

impl Status {
    /// The largest application code: above it the range is the typed layer's own.
    pub const MAX_CODE: u32 = code::RESERVED_BASE - 0x8000_0001;

    /// The transport error code this status travels as.
    pub(crate) fn wire_code(&self) -> u32 {
        0x8000_0000 + self.code.min(Self::MAX_CODE)
    }

    /// A status with `code` and `message`.
    pub fn new(code: u32, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
        }
    }
}

/// Everything a typed call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The transport failed (not connected, connection lost, timeout, cancelled...).
    #[error(transparent)]
    Transport(#[from] ferry_transport::Error),
    /// The server does not know the method: it runs an older (or another) service definition.
    #[error(
        "the server has no method {method} (id {id:#010x}) of service {service}: it runs an older \
         or a different definition of the service; upgrade the server or do not call this method"
    )]
    UnknownMethod {
        /// The service called.
        service: &'static str,
        /// The method called.
        method: &'static str,
        /// Its id.
        id: u32,
    },
    /// The server could not decode the request as the method's argument type.
    #[error("the server refused the request to {method}: {message}")]
    BadRequest {
        /// `Service.method`.
        method: &'static str,
        /// What the server found wrong.
        message: String,
    },
    /// The answer could not be decoded as the method's return type.
    #[error(
        "the answer of {method} does not decode as its type: {message} (do client and server use \
         the same service definition?)"
    )]
    BadResponse {
        /// `Service.method`.
        method: &'static str,
        /// What was wrong.
        message: String,
    },
    /// A malformed envelope (from the peer, or a server that did not accept ours).
    #[error("malformed envelope: {0}")]
    BadEnvelope(String),
    /// The call's deadline passed on the server (before its handler ran, or while it ran: its
    /// answer, or the rest of the stream, was dropped).
    #[error("the deadline of {method} passed on the server")]
    DeadlineExceeded {
        /// `Service.method`.
        method: &'static str,
    },
    /// The handler answered with an application error.
    #[error("{method}: {status}")]
    Status {
        /// `Service.method`.
        method: &'static str,
        /// The handler's status.
        status: Status,
    },
    /// `serve_async` (or an async client) was used outside a tokio runtime.
    #[error("ferry_rpc::serve_async must be called inside a tokio runtime (enter one first)")]
    NoRuntime,
    /// The server refused to start the stream: this connection runs as many as it allows.
    #[error("the server is busy: {message}")]
    Busy {
        /// `Service.method`.
        method: &'static str,
        /// The server's words.
        message: String,
    },
    /// This side could not encode a value.
    #[error("could not encode the {what} of {method}: {message}")]
    Encode {
        /// `Service.method`.
        method: &'static str,
        /// "request", "response", "item".
        what: &'static str,
        /// The codec's message.
        message: String,
    },
}

impl RpcError {
    /// Maps an error answer of the transport for `method` (of `service`, id `id`) to the typed
    /// error its code stands for.
    pub(crate) fn from_transport(
        e: ferry_transport::Error,
        service: &'static str,
        method: &'static str,
        qualified: &'static str,
        id: u32,
    ) -> RpcError {
        let ferry_transport::Error::Remote { code: c, message } = e else {
            return RpcError::Transport(e);
        };
        match c {
            code::UNKNOWN_METHOD => RpcError::UnknownMethod {
                service,
                method,
                id,
            },
            code::BAD_REQUEST => RpcError::BadRequest {
                method: qualified,
                message,
            },
            code::BAD_ENVELOPE => RpcError::BadEnvelope(message),
            code::DEADLINE_EXCEEDED => RpcError::DeadlineExceeded { method: qualified },
            code::BAD_RESPONSE => RpcError::BadResponse {
                method: qualified,
                message,
            },
            code::BUSY => RpcError::Busy {
                method: qualified,
                message,
            },
            c if (0x8000_0000..code::RESERVED_BASE).contains(&c) => RpcError::Status {
                method: qualified,
                status: Status {
                    code: c - 0x8000_0000,
                    message,
                },
            },
            c => RpcError::Transport(ferry_transport::Error::Remote { code: c, message }),
        }
    }
}
