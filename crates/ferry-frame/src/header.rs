//! The 24-byte frame header: constants, [`Kind`], [`Flags`] and [`Header`].

use core::fmt;
use core::ops::BitOr;

use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Length of the frame header in bytes. The payload starts at this offset.
pub const HEADER_LEN: usize = 24;

/// The magic number, first two bytes of every frame: the ASCII bytes `"Fy"`
/// (`0x46 0x79`), i.e. `0x7946` read as a little-endian `u16`.
pub const MAGIC: u16 = 0x7946;

/// The frame format version this crate writes.
pub const VERSION: u8 = 1;

/// Lowest frame format version this crate can decode.
pub const MIN_SUPPORTED_VERSION: u8 = 1;

/// Highest frame format version this crate can decode.
pub const MAX_SUPPORTED_VERSION: u8 = 1;

/// Largest payload the header's 32-bit length field can describe.
pub const MAX_PAYLOAD_LEN: usize = u32::MAX as usize;

/// Byte offsets of the header fields (see `docs/protocol.md`).
pub mod offset {
    /// `magic`, `u16`.
    pub const MAGIC: usize = 0;
    /// `version`, `u8`.
    pub const VERSION: usize = 2;
    /// `kind`, `u8`.
    pub const KIND: usize = 3;
    /// `flags`, `u16`.
    pub const FLAGS: usize = 4;
    /// `reserved`, `u16`, must be zero.
    pub const RESERVED: usize = 6;
    /// `payload_len`, `u32`.
    pub const PAYLOAD_LEN: usize = 8;
    /// `crc`, `u32`.
    pub const CRC: usize = 12;
    /// `correlation_id`, `u64`.
    pub const CORRELATION_ID: usize = 16;
}

/// The header exactly as it lies in memory. Every field is a little-endian
/// byte array (alignment 1), so it can be read from any offset of a ring record.
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct WireHeader {
    pub(crate) magic: U16,
    pub(crate) version: u8,
    pub(crate) kind: u8,
    pub(crate) flags: U16,
    pub(crate) reserved: U16,
    pub(crate) payload_len: U32,
    pub(crate) crc: U32,
    pub(crate) correlation_id: U64,
}

const _: () = {
    assert!(core::mem::size_of::<WireHeader>() == HEADER_LEN);
    assert!(core::mem::align_of::<WireHeader>() == 1);
    assert!(core::mem::offset_of!(WireHeader, magic) == offset::MAGIC);
    assert!(core::mem::offset_of!(WireHeader, version) == offset::VERSION);
    assert!(core::mem::offset_of!(WireHeader, kind) == offset::KIND);
    assert!(core::mem::offset_of!(WireHeader, flags) == offset::FLAGS);
    assert!(core::mem::offset_of!(WireHeader, reserved) == offset::RESERVED);
    assert!(core::mem::offset_of!(WireHeader, payload_len) == offset::PAYLOAD_LEN);
    assert!(core::mem::offset_of!(WireHeader, crc) == offset::CRC);
    assert!(core::mem::offset_of!(WireHeader, correlation_id) == offset::CORRELATION_ID);
};

/// What a frame is. The numeric values are the wire values of the `kind` byte.
///
/// Unknown values are a decode error ([`DecodeError::UnknownKind`](crate::DecodeError::UnknownKind)),
/// so new kinds can only appear together with a new negotiated version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Kind {
    /// A call that expects exactly one `Response`/`ErrorResponse`, or a stream of
    /// `StreamItem`s ended by `StreamEnd`/`ErrorResponse`. Either side may send one.
    Request = 0x01,
    /// The successful answer to the `Request` with the same correlation id.
    Response = 0x02,
    /// The failed answer to a `Request`: payload is an [`ErrorPayload`](crate::ErrorPayload).
    ErrorResponse = 0x03,
    /// A one-way message, either direction (the engine uses it to push).
    Notification = 0x04,
    /// One chunk of a streamed answer to the `Request` with the same correlation id.
    StreamItem = 0x05,
    /// The end of a streamed answer (payload may carry a final summary, often empty).
    StreamEnd = 0x06,
    /// Asks the peer to stop working on the `Request` with this correlation id. Empty payload.
    Cancel = 0x07,
    /// Liveness probe; the peer answers `Pong` with the same id and payload.
    Ping = 0x08,
    /// Answer to `Ping`.
    Pong = 0x09,
    /// The sender will send nothing more; payload is an [`ErrorPayload`](crate::ErrorPayload) reason.
    Goodbye = 0x0A,
    /// Handshake, client → server: a [`Hello`](crate::Hello) payload.
    Hello = 0x10,
    /// Handshake, server → client: a [`Welcome`](crate::Welcome) payload.
    Welcome = 0x11,
    /// Handshake refused, server → client: an [`ErrorPayload`](crate::ErrorPayload) reason.
    /// Also the answer to a `MetricsQuery` the server does not accept.
    Refuse = 0x12,
    /// Control socket only, client → server, instead of a `Hello`: asks for the server's
    /// metrics. Empty payload.
    MetricsQuery = 0x13,
    /// Control socket only, server → client: the answer to a `MetricsQuery`, the server's
    /// metrics as UTF-8 text (the OpenMetrics text exposition).
    MetricsReply = 0x14,
    /// Windows named pipe only, server → client, right after `Welcome`: the handles the server
    /// duplicated into the client's process (shared memory, doorbells), a
    /// [`Handles`](crate::Handles) payload. Where descriptors ride along with `Welcome`
    /// (`SCM_RIGHTS` on Unix) it is never sent.
    Handles = 0x15,
}

impl Kind {
    /// All kinds, in wire-value order.
    pub const ALL: [Kind; 16] = [
        Kind::Request,
        Kind::Response,
        Kind::ErrorResponse,
        Kind::Notification,
        Kind::StreamItem,
        Kind::StreamEnd,
        Kind::Cancel,
        Kind::Ping,
        Kind::Pong,
        Kind::Goodbye,
        Kind::Hello,
        Kind::Welcome,
        Kind::Refuse,
        Kind::MetricsQuery,
        Kind::MetricsReply,
        Kind::Handles,
    ];

    /// The kind with wire value `value`, or `None` if no kind has it.
    #[must_use]
    pub const fn from_u8(value: u8) -> Option<Kind> {
        Some(match value {
            0x01 => Kind::Request,
            0x02 => Kind::Response,
            0x03 => Kind::ErrorResponse,
            0x04 => Kind::Notification,
            0x05 => Kind::StreamItem,
            0x06 => Kind::StreamEnd,
            0x07 => Kind::Cancel,
            0x08 => Kind::Ping,
            0x09 => Kind::Pong,
            0x0A => Kind::Goodbye,
            0x10 => Kind::Hello,
            0x11 => Kind::Welcome,
            0x12 => Kind::Refuse,
            0x13 => Kind::MetricsQuery,
            0x14 => Kind::MetricsReply,
            0x15 => Kind::Handles,
            _ => return None,
        })
    }

    /// The wire value.
    #[must_use]
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// Whether messages of this kind may be split into fragments ([`Flags::MORE`])
    /// and aborted ([`Flags::ABORT`]). Control and handshake kinds must fit in one frame.
    #[must_use]
    pub const fn is_fragmentable(self) -> bool {
        matches!(
            self,
            Kind::Request
                | Kind::Response
                | Kind::ErrorResponse
                | Kind::Notification
                | Kind::StreamItem
                | Kind::StreamEnd
        )
    }

    /// Whether this is one of the control-socket handshake kinds (`Hello`, `Welcome`, `Refuse`).
    #[must_use]
    pub const fn is_handshake(self) -> bool {
        matches!(self, Kind::Hello | Kind::Welcome | Kind::Refuse)
    }

    /// Whether this kind travels only on the control socket (or named pipe): the handshake
    /// kinds, the metrics query and reply, and `Handles`. Such a frame in a ring is not part of
    /// the conversation.
    #[must_use]
    pub const fn is_control(self) -> bool {
        matches!(
            self,
            Kind::Hello
                | Kind::Welcome
                | Kind::Refuse
                | Kind::MetricsQuery
                | Kind::MetricsReply
                | Kind::Handles
        )
    }
}

impl TryFrom<u8> for Kind {
    type Error = u8;

    /// Returns the unknown value as the error.
    fn try_from(value: u8) -> Result<Self, u8> {
        Kind::from_u8(value).ok_or(value)
    }
}

impl From<Kind> for u8 {
    fn from(kind: Kind) -> u8 {
        kind.as_u8()
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?} (0x{:02X})", self.as_u8())
    }
}

/// The header's `flags` field: a set of the defined bits only.
///
/// A value with an undefined bit set cannot be constructed; on the wire such a
/// value is a decode error ([`DecodeError::ReservedFlags`](crate::DecodeError::ReservedFlags)).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u16);

impl Flags {
    /// No flag set.
    pub const NONE: Flags = Flags(0);
    /// More fragments of this message follow (bit 0).
    pub const MORE: Flags = Flags(1 << 0);
    /// Discard the partial message with this frame's (kind, correlation id) (bit 1).
    /// The frame has an empty payload and no `MORE`.
    pub const ABORT: Flags = Flags(1 << 1);
    /// Every defined bit.
    pub const DEFINED: u16 = Flags::MORE.0 | Flags::ABORT.0;

    /// The flags with these bits, or `None` if an undefined bit is set.
    #[must_use]
    pub const fn from_bits(bits: u16) -> Option<Flags> {
        if bits & !Flags::DEFINED == 0 {
            Some(Flags(bits))
        } else {
            None
        }
    }

    /// The wire value.
    #[must_use]
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// Whether every bit of `other` is set in `self`.
    #[must_use]
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no bit is set.
    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl BitOr for Flags {
    type Output = Flags;

    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Flags(0x{:04X}", self.0)?;
        if self.contains(Flags::MORE) {
            f.write_str(" MORE")?;
        }
        if self.contains(Flags::ABORT) {
            f.write_str(" ABORT")?;
        }
        f.write_str(")")
    }
}

/// A validated frame header, copied out of the buffer.
///
/// The CRC is not kept: [`decode`](crate::decode) has already checked it, and
/// encoding recomputes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    pub(crate) version: u8,
    pub(crate) kind: Kind,
    pub(crate) flags: Flags,
    pub(crate) payload_len: u32,
    pub(crate) correlation_id: u64,
}

impl Header {
    /// The format version the frame was written with.
    #[must_use]
    pub const fn version(&self) -> u8 {
        self.version
    }

    /// The frame kind.
    #[must_use]
    pub const fn kind(&self) -> Kind {
        self.kind
    }

    /// The flags.
    #[must_use]
    pub const fn flags(&self) -> Flags {
        self.flags
    }

    /// Payload length in bytes.
    #[must_use]
    pub const fn payload_len(&self) -> u32 {
        self.payload_len
    }

    /// The correlation id.
    #[must_use]
    pub const fn correlation_id(&self) -> u64 {
        self.correlation_id
    }

    /// Whether more fragments of this message follow.
    #[must_use]
    pub const fn is_more(&self) -> bool {
        self.flags.contains(Flags::MORE)
    }

    /// Whether this frame aborts a partial message.
    #[must_use]
    pub const fn is_abort(&self) -> bool {
        self.flags.contains(Flags::ABORT)
    }

    /// Total frame length: `HEADER_LEN + payload_len` (saturating at `usize::MAX`
    /// on 32-bit targets, where such a frame could not be held anyway).
    #[must_use]
    pub const fn frame_len(&self) -> usize {
        HEADER_LEN.saturating_add(self.payload_len as usize)
    }
}
