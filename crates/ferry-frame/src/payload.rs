//! Structured payloads: [`ErrorPayload`] (for `ErrorResponse`, `Goodbye`,
//! `Refuse`), and the handshake structs [`Hello`] and [`Welcome`] with their
//! [`Limits`]. (`Handles`, Windows only, is in `handles.rs`.)
//!
//! All are little-endian; `Hello` and `Welcome` are fixed 24-byte structs laid out
//! with zerocopy (size and offsets asserted at compile time).

use core::fmt;

use zerocopy::byteorder::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::codec::{DEFAULT_MAX_MESSAGE_SIZE, EncodeError};
use crate::header::{MAX_SUPPORTED_VERSION, MIN_SUPPORTED_VERSION};

/// Why a structured payload is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// The payload has the wrong length for its kind.
    #[error(
        "{what} payload has {got} bytes, expected {expected}; the peer speaks a different \
         protocol version or is broken, close the connection"
    )]
    WrongLength {
        /// Which payload.
        what: &'static str,
        /// Required length (the minimum, for variable-length payloads).
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// A variable-length payload is longer than its kind allows.
    #[error(
        "{what} payload has {got} bytes, more than the {max} allowed; the peer is broken or hostile, \
         close the connection"
    )]
    TooLong {
        /// Which payload.
        what: &'static str,
        /// The most allowed.
        max: usize,
        /// Actual length.
        got: usize,
    },
    /// The message text of an error payload (or the text of a metrics reply) is not UTF-8.
    #[error(
        "payload text (an error message or a metrics reply) is not valid UTF-8 (valid up to byte {valid_up_to}); the peer must send UTF-8, \
         treat the frame as a protocol violation"
    )]
    InvalidUtf8 {
        /// Offset in the text of the first invalid byte.
        valid_up_to: usize,
    },
    /// A reserved field is not zero.
    #[error(
        "reserved field `{field}` of the {what} payload is 0x{value:X}, must be 0; the peer uses an unnegotiated feature"
    )]
    ReservedNonZero {
        /// Which payload.
        what: &'static str,
        /// Which field.
        field: &'static str,
        /// The value found.
        value: u32,
    },
    /// A version field is zero or a version range is empty.
    #[error(
        "invalid version range {min}..={max} in {what}: versions start at 1 and min must not exceed max"
    )]
    BadVersion {
        /// Which payload.
        what: &'static str,
        /// Lowest version.
        min: u8,
        /// Highest version.
        max: u8,
    },
    /// A limit is zero.
    #[error(
        "limit `{field}` is 0 in {what}; every limit must be at least 1, fix the sender's configuration"
    )]
    ZeroLimit {
        /// Which payload.
        what: &'static str,
        /// Which field.
        field: &'static str,
    },
    /// The server chose a version the client did not offer.
    #[error(
        "server chose version {chosen}, but the client offered {min}..={max}; the server is broken, close the connection"
    )]
    VersionNotOffered {
        /// Chosen by the server.
        chosen: u8,
        /// Lowest offered.
        min: u8,
        /// Highest offered.
        max: u8,
    },
    /// A `Handles` payload lists no handle, or more than allowed.
    #[error(
        "Handles payload lists {count} handles, but 1 to {max} are allowed; the server is broken \
         or hostile, close the connection"
    )]
    BadHandleCount {
        /// The count found.
        count: u32,
        /// The most allowed.
        max: usize,
    },
    /// A `Handles` entry has a role this version does not define.
    #[error(
        "Handles payload has an entry with unknown role {role}; the server uses an unnegotiated \
         feature, close the connection"
    )]
    UnknownHandleRole {
        /// The role found.
        role: u32,
    },
    /// A `Handles` payload lists the same role twice.
    #[error(
        "Handles payload lists role {role} twice; each role may appear once, close the connection"
    )]
    DuplicateHandleRole {
        /// The repeated role.
        role: u32,
    },
    /// A `Handles` entry's value cannot be a handle.
    #[error(
        "Handles payload gives role {role} the value {value:#x}, which is not a handle number \
         (non-zero, a multiple of 4, below 2^31); the server is broken or hostile, close the \
         connection"
    )]
    BadHandleValue {
        /// The entry's role.
        role: u32,
        /// The value found.
        value: u64,
    },
    /// The server agreed to a limit above what the client asked for.
    #[error(
        "server agreed `{field}` = {agreed}, above the client's requested {requested}; limits may only be lowered, \
         close the connection"
    )]
    LimitRaised {
        /// Which limit.
        field: &'static str,
        /// What the client asked for.
        requested: u32,
        /// What the server answered.
        agreed: u32,
    },
}

/// A numeric error code (registry in `docs/protocol.md`).
///
/// Codes below `0x8000_0000` belong to the protocol; codes from `0x8000_0000` up
/// are application-defined. Unknown codes are not an error: treat them like
/// [`ErrorCode::HANDLER_FAILED`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode(pub u32);

impl ErrorCode {
    /// Normal close (`Goodbye` only): not an error.
    pub const NORMAL: ErrorCode = ErrorCode(0);
    /// The request handler failed; the message says why.
    pub const HANDLER_FAILED: ErrorCode = ErrorCode(1);
    /// The request was cancelled (answer to a `Cancel`).
    pub const CANCELLED: ErrorCode = ErrorCode(2);
    /// Unknown method, or the addressed thing does not exist.
    pub const NOT_FOUND: ErrorCode = ErrorCode(3);
    /// The request or its answer exceeds a size limit.
    pub const TOO_LARGE: ErrorCode = ErrorCode(4);
    /// The peer is shutting down and takes no new requests.
    pub const SHUTTING_DOWN: ErrorCode = ErrorCode(5);
    /// The peer broke the protocol (bad frame, limits ignored); the connection is closing.
    pub const PROTOCOL_VIOLATION: ErrorCode = ErrorCode(6);
    /// The handler ran out of time.
    pub const TIMEOUT: ErrorCode = ErrorCode(7);
    /// The request's arguments are invalid.
    pub const INVALID_ARGUMENT: ErrorCode = ErrorCode(8);
    /// The peer is overloaded; retry later.
    pub const BUSY: ErrorCode = ErrorCode(9);
    /// Handshake (`Refuse`): no common protocol version.
    pub const VERSION_UNSUPPORTED: ErrorCode = ErrorCode(0x100);
    /// Handshake (`Refuse`): the requested limits cannot be met.
    pub const LIMITS_UNACCEPTABLE: ErrorCode = ErrorCode(0x101);
    /// Handshake (`Refuse`): the server does not accept this client (capacity, policy).
    pub const REFUSED: ErrorCode = ErrorCode(0x102);
    /// First application-defined code.
    pub const APPLICATION_BASE: ErrorCode = ErrorCode(0x8000_0000);

    /// The registry name of a protocol code, or `None` for unknown and application codes.
    #[must_use]
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "NORMAL",
            1 => "HANDLER_FAILED",
            2 => "CANCELLED",
            3 => "NOT_FOUND",
            4 => "TOO_LARGE",
            5 => "SHUTTING_DOWN",
            6 => "PROTOCOL_VIOLATION",
            7 => "TIMEOUT",
            8 => "INVALID_ARGUMENT",
            9 => "BUSY",
            0x100 => "VERSION_UNSUPPORTED",
            0x101 => "LIMITS_UNACCEPTABLE",
            0x102 => "REFUSED",
            _ => return None,
        })
    }

    /// Whether the code is in the application-defined range.
    #[must_use]
    pub const fn is_application(self) -> bool {
        self.0 >= ErrorCode::APPLICATION_BASE.0
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "ErrorCode::{name}"),
            None => write!(f, "ErrorCode(0x{:X})", self.0),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({})", self.0),
            None => write!(f, "0x{:X}", self.0),
        }
    }
}

/// Payload of `ErrorResponse`, `Goodbye` and `Refuse`: a `u32` code (little-endian)
/// followed by a UTF-8 message filling the rest of the payload (not NUL-terminated,
/// may be empty).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorPayload<'a> {
    /// What went wrong.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: &'a str,
}

impl<'a> ErrorPayload<'a> {
    /// Length of the code field.
    pub const CODE_LEN: usize = 4;

    /// An error payload.
    #[must_use]
    pub const fn new(code: ErrorCode, message: &'a str) -> Self {
        ErrorPayload { code, message }
    }

    /// Encoded length: 4 + message bytes.
    #[must_use]
    pub const fn encoded_len(&self) -> usize {
        Self::CODE_LEN + self.message.len()
    }

    /// Writes the payload to the front of `out` (for the zero-copy path, `out` is
    /// `&mut buf[HEADER_LEN..]`). Returns the bytes written.
    ///
    /// # Errors
    ///
    /// [`EncodeError::BufferTooSmall`] if `out` is too short; nothing is written then.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let len = self.encoded_len();
        let Some(out) = out.get_mut(..len) else {
            return Err(EncodeError::BufferTooSmall {
                needed: len,
                got: out.len(),
            });
        };
        let (code, text) = out.split_at_mut(Self::CODE_LEN);
        code.copy_from_slice(&self.code.0.to_le_bytes());
        text.copy_from_slice(self.message.as_bytes());
        Ok(len)
    }

    /// Parses an error payload, borrowing the message.
    ///
    /// # Errors
    ///
    /// [`PayloadError::WrongLength`] if shorter than 4 bytes;
    /// [`PayloadError::InvalidUtf8`] if the message is not UTF-8.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, PayloadError> {
        let Some((code, text)) = bytes.split_first_chunk::<4>() else {
            return Err(PayloadError::WrongLength {
                what: "error",
                expected: Self::CODE_LEN,
                got: bytes.len(),
            });
        };
        let message = core::str::from_utf8(text).map_err(|e| PayloadError::InvalidUtf8 {
            valid_up_to: e.valid_up_to(),
        })?;
        Ok(ErrorPayload {
            code: ErrorCode(u32::from_le_bytes(*code)),
            message,
        })
    }
}

/// Connection limits, requested in [`Hello`] and agreed in [`Welcome`].
/// All values are `u32`, all must be at least 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Largest message (after reassembly) either side may send, in bytes.
    pub max_message_size: u32,
    /// Most messages a sender may have partially sent (fragments outstanding) on one ring.
    pub max_partial_messages: u32,
    /// Most payload bytes of partially sent messages a sender may have outstanding on one ring.
    pub max_buffered_bytes: u32,
    /// Data capacity of the client → server ring, bytes.
    pub client_to_server_ring_bytes: u32,
    /// Data capacity of the server → client ring, bytes.
    pub server_to_client_ring_bytes: u32,
}

impl Default for Limits {
    /// 16 MiB messages, 16 partial messages, 64 MiB buffered, 1 MiB rings.
    fn default() -> Self {
        Limits {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_partial_messages: 16,
            max_buffered_bytes: 4 * DEFAULT_MAX_MESSAGE_SIZE,
            client_to_server_ring_bytes: 1 << 20,
            server_to_client_ring_bytes: 1 << 20,
        }
    }
}

#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct WireLimits {
    max_message_size: U32,
    max_partial_messages: U32,
    max_buffered_bytes: U32,
    client_to_server_ring_bytes: U32,
    server_to_client_ring_bytes: U32,
}

impl Limits {
    const FIELDS: [&'static str; 5] = [
        "max_message_size",
        "max_partial_messages",
        "max_buffered_bytes",
        "client_to_server_ring_bytes",
        "server_to_client_ring_bytes",
    ];

    fn values(&self) -> [u32; 5] {
        [
            self.max_message_size,
            self.max_partial_messages,
            self.max_buffered_bytes,
            self.client_to_server_ring_bytes,
            self.server_to_client_ring_bytes,
        ]
    }

    fn to_wire(self) -> WireLimits {
        WireLimits {
            max_message_size: U32::new(self.max_message_size),
            max_partial_messages: U32::new(self.max_partial_messages),
            max_buffered_bytes: U32::new(self.max_buffered_bytes),
            client_to_server_ring_bytes: U32::new(self.client_to_server_ring_bytes),
            server_to_client_ring_bytes: U32::new(self.server_to_client_ring_bytes),
        }
    }

    fn from_wire(w: &WireLimits, what: &'static str) -> Result<Self, PayloadError> {
        let limits = Limits {
            max_message_size: w.max_message_size.get(),
            max_partial_messages: w.max_partial_messages.get(),
            max_buffered_bytes: w.max_buffered_bytes.get(),
            client_to_server_ring_bytes: w.client_to_server_ring_bytes.get(),
            server_to_client_ring_bytes: w.server_to_client_ring_bytes.get(),
        };
        if let Some(i) = limits.values().iter().position(|&v| v == 0) {
            return Err(PayloadError::ZeroLimit {
                what,
                field: Self::FIELDS[i],
            });
        }
        Ok(limits)
    }

    /// Field-wise minimum of two limit sets.
    #[must_use]
    pub fn min(&self, other: &Limits) -> Limits {
        Limits {
            max_message_size: self.max_message_size.min(other.max_message_size),
            max_partial_messages: self.max_partial_messages.min(other.max_partial_messages),
            max_buffered_bytes: self.max_buffered_bytes.min(other.max_buffered_bytes),
            client_to_server_ring_bytes: self
                .client_to_server_ring_bytes
                .min(other.client_to_server_ring_bytes),
            server_to_client_ring_bytes: self
                .server_to_client_ring_bytes
                .min(other.server_to_client_ring_bytes),
        }
    }
}

#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct WireHello {
    min_version: u8,
    max_version: u8,
    reserved: U16,
    limits: WireLimits,
}

#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct WireWelcome {
    version: u8,
    reserved0: u8,
    reserved1: U16,
    limits: WireLimits,
}

const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<WireLimits>() == 20);
    assert!(size_of::<WireHello>() == Hello::LEN);
    assert!(size_of::<WireWelcome>() == Welcome::LEN);
    assert!(align_of::<WireHello>() == 1 && align_of::<WireWelcome>() == 1);
    assert!(offset_of!(WireHello, limits) == 4);
    assert!(offset_of!(WireWelcome, limits) == 4);
    assert!(offset_of!(WireLimits, server_to_client_ring_bytes) == 16);
};

/// `Hello` payload (client → server, first frame on the control socket): the
/// client's supported version range and requested limits. 24 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Hello {
    /// Lowest protocol version the client speaks (≥ 1).
    pub min_version: u8,
    /// Highest protocol version the client speaks (≥ `min_version`).
    pub max_version: u8,
    /// Limits the client asks for.
    pub limits: Limits,
}

impl Hello {
    /// Encoded length.
    pub const LEN: usize = 24;

    /// A `Hello` offering every version this crate supports.
    #[must_use]
    pub const fn new(limits: Limits) -> Self {
        Hello {
            min_version: MIN_SUPPORTED_VERSION,
            max_version: MAX_SUPPORTED_VERSION,
            limits,
        }
    }

    /// The 24 payload bytes.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; Hello::LEN] {
        let wire = WireHello {
            min_version: self.min_version,
            max_version: self.max_version,
            reserved: U16::new(0),
            limits: self.limits.to_wire(),
        };
        let mut out = [0u8; Hello::LEN];
        out.copy_from_slice(wire.as_bytes());
        out
    }

    /// Parses and validates a `Hello` payload.
    ///
    /// # Errors
    ///
    /// [`PayloadError::WrongLength`] unless exactly 24 bytes;
    /// [`PayloadError::ReservedNonZero`]; [`PayloadError::BadVersion`] if
    /// `min_version` is 0 or above `max_version`; [`PayloadError::ZeroLimit`].
    pub fn decode(bytes: &[u8]) -> Result<Self, PayloadError> {
        let Ok(wire) = WireHello::read_from_bytes(bytes) else {
            return Err(PayloadError::WrongLength {
                what: "Hello",
                expected: Hello::LEN,
                got: bytes.len(),
            });
        };
        if wire.reserved.get() != 0 {
            return Err(PayloadError::ReservedNonZero {
                what: "Hello",
                field: "reserved",
                value: u32::from(wire.reserved.get()),
            });
        }
        if wire.min_version == 0 || wire.min_version > wire.max_version {
            return Err(PayloadError::BadVersion {
                what: "Hello",
                min: wire.min_version,
                max: wire.max_version,
            });
        }
        Ok(Hello {
            min_version: wire.min_version,
            max_version: wire.max_version,
            limits: Limits::from_wire(&wire.limits, "Hello")?,
        })
    }

    /// Client side: checks that the server's `Welcome` is a valid answer to this
    /// `Hello` (version offered, no limit raised).
    ///
    /// # Errors
    ///
    /// [`PayloadError::VersionNotOffered`] or [`PayloadError::LimitRaised`].
    pub fn check_welcome(&self, welcome: &Welcome) -> Result<(), PayloadError> {
        if !(self.min_version..=self.max_version).contains(&welcome.version) {
            return Err(PayloadError::VersionNotOffered {
                chosen: welcome.version,
                min: self.min_version,
                max: self.max_version,
            });
        }
        let asked = self.limits.values();
        let got = welcome.limits.values();
        for i in 0..asked.len() {
            if got[i] > asked[i] {
                return Err(PayloadError::LimitRaised {
                    field: Limits::FIELDS[i],
                    requested: asked[i],
                    agreed: got[i],
                });
            }
        }
        Ok(())
    }
}

/// `Welcome` payload (server → client): the chosen version and the agreed limits. 24 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Welcome {
    /// The protocol version both sides now use (≥ 1).
    pub version: u8,
    /// The agreed limits (each ≤ what the client asked for).
    pub limits: Limits,
}

impl Welcome {
    /// Encoded length.
    pub const LEN: usize = 24;

    /// The 24 payload bytes.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; Welcome::LEN] {
        let wire = WireWelcome {
            version: self.version,
            reserved0: 0,
            reserved1: U16::new(0),
            limits: self.limits.to_wire(),
        };
        let mut out = [0u8; Welcome::LEN];
        out.copy_from_slice(wire.as_bytes());
        out
    }

    /// Parses and validates a `Welcome` payload.
    ///
    /// # Errors
    ///
    /// [`PayloadError::WrongLength`] unless exactly 24 bytes;
    /// [`PayloadError::ReservedNonZero`]; [`PayloadError::BadVersion`] if the
    /// version is 0; [`PayloadError::ZeroLimit`].
    pub fn decode(bytes: &[u8]) -> Result<Self, PayloadError> {
        let Ok(wire) = WireWelcome::read_from_bytes(bytes) else {
            return Err(PayloadError::WrongLength {
                what: "Welcome",
                expected: Welcome::LEN,
                got: bytes.len(),
            });
        };
        if wire.reserved0 != 0 {
            return Err(PayloadError::ReservedNonZero {
                what: "Welcome",
                field: "reserved0",
                value: u32::from(wire.reserved0),
            });
        }
        if wire.reserved1.get() != 0 {
            return Err(PayloadError::ReservedNonZero {
                what: "Welcome",
                field: "reserved1",
                value: u32::from(wire.reserved1.get()),
            });
        }
        if wire.version == 0 {
            return Err(PayloadError::BadVersion {
                what: "Welcome",
                min: 0,
                max: 0,
            });
        }
        Ok(Welcome {
            version: wire.version,
            limits: Limits::from_wire(&wire.limits, "Welcome")?,
        })
    }
}

/// What a server supports, for [`negotiate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerPolicy {
    /// Lowest version the server speaks.
    pub min_version: u8,
    /// Highest version the server speaks.
    pub max_version: u8,
    /// The most the server grants for each limit.
    pub max_limits: Limits,
    /// The least the server accepts for each limit (e.g. a minimum ring size).
    pub min_limits: Limits,
}

impl ServerPolicy {
    /// Every version this crate supports, at most `max_limits`, and no minimum (all 1).
    #[must_use]
    pub const fn new(max_limits: Limits) -> Self {
        ServerPolicy {
            min_version: MIN_SUPPORTED_VERSION,
            max_version: MAX_SUPPORTED_VERSION,
            max_limits,
            min_limits: Limits {
                max_message_size: 1,
                max_partial_messages: 1,
                max_buffered_bytes: 1,
                client_to_server_ring_bytes: 1,
                server_to_client_ring_bytes: 1,
            },
        }
    }
}

/// Server side of the handshake: the `Welcome` to answer `hello` with, or the
/// [`ErrorCode`] to `Refuse` it with.
///
/// The version is the highest one in both ranges; each limit is the smaller of
/// the requested and the server's maximum.
///
/// # Errors
///
/// [`ErrorCode::VERSION_UNSUPPORTED`] if the version ranges do not overlap;
/// [`ErrorCode::LIMITS_UNACCEPTABLE`] if an agreed limit would fall below the
/// server's minimum.
pub fn negotiate(hello: &Hello, server: &ServerPolicy) -> Result<Welcome, ErrorCode> {
    let version = hello.max_version.min(server.max_version);
    if version < hello.min_version.max(server.min_version) {
        return Err(ErrorCode::VERSION_UNSUPPORTED);
    }
    let limits = hello.limits.min(&server.max_limits);
    let floor = server.min_limits.values();
    if limits.values().iter().zip(floor).any(|(&v, f)| v < f) {
        return Err(ErrorCode::LIMITS_UNACCEPTABLE);
    }
    Ok(Welcome { version, limits })
}
