//! Encoding and decoding of whole frames.

use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, IntoBytes};

use crate::crc::{crc32c_append, header_crc};
use crate::header::{
    Flags, HEADER_LEN, Header, Kind, MAGIC, MAX_PAYLOAD_LEN, MAX_SUPPORTED_VERSION,
    MIN_SUPPORTED_VERSION, VERSION, WireHeader, offset,
};

/// Default limit on one frame's payload and on one reassembled message: 16 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: u32 = 16 * 1024 * 1024;

/// Receiver-side limits applied while decoding one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest accepted `payload_len`. Frames announcing more are rejected before
    /// the payload is looked at. Typically the agreed ring size or max message size.
    pub max_payload_len: u32,
}

impl DecodeLimits {
    /// Limits accepting payloads up to `max_payload_len` bytes.
    #[must_use]
    pub const fn new(max_payload_len: u32) -> Self {
        DecodeLimits { max_payload_len }
    }
}

impl Default for DecodeLimits {
    /// Payloads up to [`DEFAULT_MAX_MESSAGE_SIZE`] (16 MiB).
    fn default() -> Self {
        DecodeLimits::new(DEFAULT_MAX_MESSAGE_SIZE)
    }
}

/// Why a byte buffer is not a valid frame.
///
/// Every variant carries the offending values; the message says what to do. For a
/// peer on the same machine most of these mean the peer is broken or not a Ferry
/// peer at all: the connection should be closed (after a `Goodbye` with
/// [`ErrorCode::PROTOCOL_VIOLATION`](crate::ErrorCode::PROTOCOL_VIOLATION) where possible).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The buffer ends before the header or the announced payload does.
    #[error(
        "frame truncated: {needed} bytes needed (header + payload_len) but the buffer holds {got}; \
         pass the complete ring record, or read more bytes from the socket before decoding"
    )]
    Truncated {
        /// Bytes the frame needs.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// The buffer holds more bytes than header + `payload_len`.
    #[error(
        "{extra} trailing bytes after a {frame_len}-byte frame: a ring record must hold exactly one frame; \
         the peer wrote a wrong payload_len, or the caller passed more than one record"
    )]
    TrailingBytes {
        /// Length of the frame per its header.
        frame_len: usize,
        /// Bytes after it.
        extra: usize,
    },
    /// The first two bytes are not [`MAGIC`].
    #[error(
        "bad magic 0x{found:04X} (expected 0x{MAGIC:04X}, bytes \"Fy\"): the peer is not speaking the Ferry \
         frame protocol, or the reader lost track of frame boundaries; close the connection"
    )]
    BadMagic {
        /// The value found.
        found: u16,
    },
    /// The version byte is outside what this build supports.
    #[error(
        "unsupported frame version {found} (this build supports {MIN_SUPPORTED_VERSION}..={MAX_SUPPORTED_VERSION}): \
         the peer did not use the version agreed in the Hello/Welcome handshake; upgrade one side or close"
    )]
    UnsupportedVersion {
        /// The version found.
        found: u8,
    },
    /// The kind byte names no known kind.
    #[error(
        "unknown frame kind 0x{found:02X}: not defined in this protocol version; the peer is newer \
         or broken, close the connection"
    )]
    UnknownKind {
        /// The kind byte found.
        found: u8,
    },
    /// An undefined flag bit is set.
    #[error(
        "reserved flag bits set in flags 0x{flags:04X} (defined bits: 0x{defined:04X}); \
         the peer uses a feature that was not negotiated, close the connection",
        defined = Flags::DEFINED
    )]
    ReservedFlags {
        /// The whole flags field.
        flags: u16,
    },
    /// The reserved header field is not zero.
    #[error(
        "reserved header field is 0x{found:04X}, must be 0; the peer uses a feature that was not \
         negotiated, close the connection"
    )]
    ReservedNonZero {
        /// The value found.
        found: u16,
    },
    /// A defined flag is not allowed on this kind, or the combination is invalid.
    #[error(
        "flags {flags:?} are not allowed on a {kind} frame: only data kinds may be fragmented (MORE) \
         or aborted (ABORT), and ABORT excludes MORE; fix the sender"
    )]
    FlagsNotAllowed {
        /// The frame kind.
        kind: Kind,
        /// The flags found.
        flags: Flags,
    },
    /// This frame must have an empty payload (a `Cancel`, or an `ABORT` frame).
    #[error(
        "a {kind} frame with flags {flags:?} must have an empty payload but announces {len} bytes; fix the sender"
    )]
    PayloadNotAllowed {
        /// The frame kind.
        kind: Kind,
        /// The flags found.
        flags: Flags,
        /// Announced payload length.
        len: u32,
    },
    /// `payload_len` is over the receiver's limit.
    #[error(
        "payload length {len} exceeds the limit of {max} bytes: the peer ignored the agreed limits \
         (it must fragment large messages), or raise DecodeLimits::max_payload_len"
    )]
    PayloadTooLarge {
        /// Announced payload length.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// The CRC in the header does not match the bytes.
    #[error(
        "CRC32C mismatch: header says 0x{expected:08X}, bytes give 0x{computed:08X}; the frame was \
         corrupted or modified after the header was written, drop the connection"
    )]
    CrcMismatch {
        /// The CRC stored in the header.
        expected: u32,
        /// The CRC computed over header (CRC field zeroed) and payload.
        computed: u32,
    },
}

/// Why a frame could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The output buffer is shorter than the frame.
    #[error(
        "output buffer too small: the frame needs {needed} bytes (HEADER_LEN + payload) but the buffer has {got}; \
         reserve HEADER_LEN + payload_len bytes"
    )]
    BufferTooSmall {
        /// Bytes the frame needs.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// The payload does not fit the 32-bit length field.
    #[error(
        "payload of {len} bytes does not fit in one frame (max {MAX_PAYLOAD_LEN}); split it into fragments with Flags::MORE"
    )]
    PayloadTooLarge {
        /// The payload length.
        len: usize,
    },
    /// These flags are not allowed on this kind.
    #[error(
        "flags {flags:?} are not allowed on a {kind} frame: only data kinds may be fragmented (MORE) \
         or aborted (ABORT), and ABORT excludes MORE"
    )]
    FlagsNotAllowed {
        /// The frame kind.
        kind: Kind,
        /// The flags.
        flags: Flags,
    },
    /// This frame must have an empty payload.
    #[error("a {kind} frame with flags {flags:?} must have an empty payload, got {len} bytes")]
    PayloadNotAllowed {
        /// The frame kind.
        kind: Kind,
        /// The flags.
        flags: Flags,
        /// The payload length.
        len: usize,
    },
    /// A [`Frame`]'s header length disagrees with its payload slice.
    #[error(
        "frame header says payload_len {header} but the payload slice has {payload} bytes; \
         build frames with Frame::new"
    )]
    LengthMismatch {
        /// `payload_len` in the header.
        header: u32,
        /// Length of the payload slice.
        payload: usize,
    },
}

/// A decoded frame: the header copied out, the payload borrowed from the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The validated header.
    pub header: Header,
    /// The payload, `header.payload_len()` bytes.
    pub payload: &'a [u8],
}

impl<'a> Frame<'a> {
    /// A frame of the current [`VERSION`] with this kind, flags, correlation id and payload.
    ///
    /// # Errors
    ///
    /// [`EncodeError::PayloadTooLarge`] if the payload exceeds `u32::MAX` bytes;
    /// [`EncodeError::FlagsNotAllowed`] / [`EncodeError::PayloadNotAllowed`] for
    /// combinations the decoder would reject.
    pub fn new(
        kind: Kind,
        flags: Flags,
        correlation_id: u64,
        payload: &'a [u8],
    ) -> Result<Self, EncodeError> {
        let payload_len = check_encodable(kind, flags, payload.len())?;
        Ok(Frame {
            header: Header {
                version: VERSION,
                kind,
                flags,
                payload_len,
                correlation_id,
            },
            payload,
        })
    }

    /// Total encoded length: `HEADER_LEN + payload.len()`.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }
}

/// Kind/flags/length rules shared by encoder and decoder. `Err(true)` means the
/// payload must be empty; `Err(false)` means the flags are not allowed.
const fn check_kind_flags(kind: Kind, flags: Flags, len: usize) -> Result<(), bool> {
    let more = flags.contains(Flags::MORE);
    let abort = flags.contains(Flags::ABORT);
    if (more || abort) && !kind.is_fragmentable() {
        return Err(false);
    }
    if more && abort {
        return Err(false);
    }
    if (abort || matches!(kind, Kind::Cancel)) && len != 0 {
        return Err(true);
    }
    Ok(())
}

fn check_encodable(kind: Kind, flags: Flags, len: usize) -> Result<u32, EncodeError> {
    let Ok(len32) = u32::try_from(len) else {
        return Err(EncodeError::PayloadTooLarge { len });
    };
    match check_kind_flags(kind, flags, len) {
        Ok(()) => Ok(len32),
        Err(false) => Err(EncodeError::FlagsNotAllowed { kind, flags }),
        Err(true) => Err(EncodeError::PayloadNotAllowed { kind, flags, len }),
    }
}

/// Validates the first [`HEADER_LEN`] bytes of `buf` as a header, without
/// looking at the payload or the CRC.
///
/// This is what a reader of a byte stream (the control socket) uses to learn how
/// long the frame is ([`Header::frame_len`]) before reading the rest and calling
/// [`decode`] on exactly that many bytes. Bytes after the header are ignored.
///
/// # Errors
///
/// [`DecodeError::Truncated`] if `buf` is shorter than the header; otherwise the
/// header errors of [`decode`] (everything but `TrailingBytes` and `CrcMismatch`).
pub fn decode_header(buf: &[u8], limits: &DecodeLimits) -> Result<Header, DecodeError> {
    let Ok((wire, _)) = WireHeader::read_from_prefix(buf) else {
        return Err(DecodeError::Truncated {
            needed: HEADER_LEN,
            got: buf.len(),
        });
    };
    let magic = wire.magic.get();
    if magic != MAGIC {
        return Err(DecodeError::BadMagic { found: magic });
    }
    let version = wire.version;
    if !(MIN_SUPPORTED_VERSION..=MAX_SUPPORTED_VERSION).contains(&version) {
        return Err(DecodeError::UnsupportedVersion { found: version });
    }
    let Some(kind) = Kind::from_u8(wire.kind) else {
        return Err(DecodeError::UnknownKind { found: wire.kind });
    };
    let raw_flags = wire.flags.get();
    let Some(flags) = Flags::from_bits(raw_flags) else {
        return Err(DecodeError::ReservedFlags { flags: raw_flags });
    };
    let reserved = wire.reserved.get();
    if reserved != 0 {
        return Err(DecodeError::ReservedNonZero { found: reserved });
    }
    let payload_len = wire.payload_len.get();
    match check_kind_flags(kind, flags, payload_len as usize) {
        Ok(()) => {}
        Err(false) => return Err(DecodeError::FlagsNotAllowed { kind, flags }),
        Err(true) => {
            return Err(DecodeError::PayloadNotAllowed {
                kind,
                flags,
                len: payload_len,
            });
        }
    }
    if payload_len > limits.max_payload_len {
        return Err(DecodeError::PayloadTooLarge {
            len: payload_len,
            max: limits.max_payload_len,
        });
    }
    Ok(Header {
        version,
        kind,
        flags,
        payload_len,
        correlation_id: wire.correlation_id.get(),
    })
}

/// Decodes `buf`, which must hold exactly one frame (a ring record, or the bytes
/// of one frame read from the socket). The payload is borrowed, nothing is copied
/// but the 24 header bytes.
///
/// Checks, in order: length ≥ header, magic, version, kind, undefined flag bits,
/// reserved field, flags allowed for the kind (and empty payload where required),
/// `payload_len` within `limits`, buffer length exactly header + payload, CRC.
///
/// # Errors
///
/// One [`DecodeError`] variant per failed check; no byte sequence panics.
pub fn decode<'a>(buf: &'a [u8], limits: &DecodeLimits) -> Result<Frame<'a>, DecodeError> {
    let header = decode_header(buf, limits)?;
    let frame_len = header.frame_len();
    if buf.len() < frame_len {
        return Err(DecodeError::Truncated {
            needed: frame_len,
            got: buf.len(),
        });
    }
    if buf.len() > frame_len {
        return Err(DecodeError::TrailingBytes {
            frame_len,
            extra: buf.len() - frame_len,
        });
    }
    // `decode_header` succeeded, so `buf` holds at least a header.
    let Some((head, payload)) = buf.split_first_chunk::<HEADER_LEN>() else {
        return Err(DecodeError::Truncated {
            needed: HEADER_LEN,
            got: buf.len(),
        });
    };
    let expected = u32::from_le_bytes([
        head[offset::CRC],
        head[offset::CRC + 1],
        head[offset::CRC + 2],
        head[offset::CRC + 3],
    ]);
    // The header's CRC field counts as zero: `header_crc` skips it without a copy.
    let computed = crc32c_append(header_crc(head), payload);
    if computed != expected {
        return Err(DecodeError::CrcMismatch { expected, computed });
    }
    Ok(Frame { header, payload })
}

/// Writes the header (and CRC) of a frame whose payload the caller has already
/// placed at `buf[HEADER_LEN..HEADER_LEN + payload_len]`: the zero-copy send path.
///
/// Reserve `HEADER_LEN + payload_len` bytes in the ring, write the payload in
/// place, then call this. Bytes of `buf` after the frame are neither read nor
/// written. Returns the frame length, `HEADER_LEN + payload_len`.
///
/// # Errors
///
/// [`EncodeError::BufferTooSmall`] if `buf` is shorter than the frame,
/// [`EncodeError::PayloadTooLarge`], [`EncodeError::FlagsNotAllowed`],
/// [`EncodeError::PayloadNotAllowed`] as for [`Frame::new`]. Nothing is written on error.
pub fn encode_header_in_place(
    buf: &mut [u8],
    kind: Kind,
    flags: Flags,
    correlation_id: u64,
    payload_len: usize,
) -> Result<usize, EncodeError> {
    let len32 = check_encodable(kind, flags, payload_len)?;
    let Some(frame_len) = HEADER_LEN.checked_add(payload_len) else {
        return Err(EncodeError::PayloadTooLarge { len: payload_len });
    };
    if buf.len() < frame_len {
        return Err(EncodeError::BufferTooSmall {
            needed: frame_len,
            got: buf.len(),
        });
    }
    let wire = WireHeader {
        magic: U16::new(MAGIC),
        version: VERSION,
        kind: kind.as_u8(),
        flags: U16::new(flags.bits()),
        reserved: U16::new(0),
        payload_len: U32::new(len32),
        crc: U32::new(0),
        correlation_id: U64::new(correlation_id),
    };
    let frame = &mut buf[..frame_len];
    frame[..HEADER_LEN].copy_from_slice(wire.as_bytes());
    // The CRC field is zero now, so one pass over the contiguous frame gives the CRC.
    let crc = crc32c_append(0, frame);
    frame[offset::CRC..offset::CRC + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(frame_len)
}

/// Encodes `frame` (header, CRC and a copy of the payload) into the front of `out`.
/// Returns the number of bytes written, `HEADER_LEN + frame.payload.len()`.
///
/// The frame's header version is not consulted: frames are always written in [`VERSION`].
///
/// # Errors
///
/// [`EncodeError::LengthMismatch`] if `frame.header.payload_len()` differs from
/// `frame.payload.len()`; otherwise as [`encode_header_in_place`]. Nothing is written on error.
pub fn encode(frame: &Frame<'_>, out: &mut [u8]) -> Result<usize, EncodeError> {
    let h = frame.header;
    if h.payload_len as usize != frame.payload.len() {
        return Err(EncodeError::LengthMismatch {
            header: h.payload_len,
            payload: frame.payload.len(),
        });
    }
    let frame_len = frame.encoded_len();
    if out.len() < frame_len {
        return Err(EncodeError::BufferTooSmall {
            needed: frame_len,
            got: out.len(),
        });
    }
    // Validate before touching `out` so nothing is written on error.
    check_encodable(h.kind, h.flags, frame.payload.len())?;
    out[HEADER_LEN..frame_len].copy_from_slice(frame.payload);
    encode_header_in_place(out, h.kind, h.flags, h.correlation_id, frame.payload.len())
}
