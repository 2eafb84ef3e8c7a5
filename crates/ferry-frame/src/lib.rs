//! The Ferry wire format: every message between editor and engine travels as a
//! frame, a 24-byte little-endian header followed by the payload, checked by a
//! CRC32C. The byte-level specification is `docs/protocol.md`.
//!
//! ```
//! use ferry_frame::{decode, encode_header_in_place, DecodeLimits, Flags, Kind, HEADER_LEN};
//!
//! // Zero-copy send: reserve HEADER_LEN + payload_len bytes (in a ring, here a
//! // stack array), write the payload in place, then fill in the header and CRC.
//! let mut record = [0u8; HEADER_LEN + 5];
//! record[HEADER_LEN..].copy_from_slice(b"hello");
//! let len = encode_header_in_place(&mut record, Kind::Request, Flags::NONE, 42, 5)?;
//! assert_eq!(len, record.len());
//!
//! // Receive: the buffer is exactly one frame; the payload is borrowed.
//! let frame = decode(&record, &DecodeLimits::default())?;
//! assert_eq!(frame.header.kind(), Kind::Request);
//! assert_eq!(frame.header.correlation_id(), 42);
//! assert_eq!(frame.payload, b"hello");
//!
//! // Untrusted bytes give a typed error, never a panic.
//! record[HEADER_LEN] ^= 1;
//! assert!(matches!(
//!     decode(&record, &DecodeLimits::default()),
//!     Err(ferry_frame::DecodeError::CrcMismatch { .. })
//! ));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Large messages travel as fragments (`Flags::MORE`) and are put back together
//! by the [`Reassembler`] (feature `alloc`, on by default), which bounds memory.
//! The handshake payloads [`Hello`] / [`Welcome`] and the [`ErrorPayload`] of
//! error responses, `Goodbye` and `Refuse` have helpers here too, and so do the
//! control-socket metrics exchange ([`check_metrics_query`], [`metrics_reply_text`]) and
//! the Windows `Handles` frame ([`Handles`]: which handles the server duplicated into the
//! client, sent on the named pipe after `Welcome`).
//!
//! # What this crate is not
//!
//! - Not a transport: it does no I/O, reads no clock, spawns nothing and never
//!   blocks. Rings (`ferry-ring`), waiting (`ferry-notify`) and the connection
//!   state machine (the transport) live elsewhere.
//! - Not a serialization format for payloads: a request's payload is opaque bytes
//!   (method names, arguments, JSON or anything else are the application's
//!   business). Only the error, `Hello` and `Welcome` payloads are defined here.
//! - Not a security boundary against a malicious peer with write access to the
//!   shared memory: the CRC detects corruption and framing bugs, it does not
//!   authenticate. Decoding is nevertheless total: any byte sequence yields a
//!   frame or a typed error, never a panic or an out-of-bounds access.
//!
//! # Features
//!
//! - `std` (default): CRC32C through the hardware-accelerated `crc32c` crate.
//!   Implies `alloc`.
//! - `alloc`: the [`Reassembler`].
//!
//! Without `std` the crate is `#![no_std]` and uses a portable table-driven CRC32C.
//! The only `unsafe` code is two calls of SSE 4.2 CRC functions (the header's, and small
//! payloads') after run-time CPU detection.

#![no_std]
// Two `unsafe` calls in the whole crate: the SSE 4.2 CRCs in `crc.rs`.
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod codec;
pub mod crc;
mod handles;
mod header;
mod metrics;
mod payload;
#[cfg(feature = "alloc")]
mod reassembly;

pub use codec::{
    DEFAULT_MAX_MESSAGE_SIZE, DecodeError, DecodeLimits, EncodeError, Frame, decode, decode_header,
    encode, encode_header_in_place,
};
pub use handles::{HandleEntry, HandleRole, Handles};
pub use header::{
    Flags, HEADER_LEN, Header, Kind, MAGIC, MAX_PAYLOAD_LEN, MAX_SUPPORTED_VERSION,
    MIN_SUPPORTED_VERSION, VERSION, offset,
};
pub use metrics::{MAX_METRICS_REPLY, check_metrics_query, metrics_reply_text};
pub use payload::{
    ErrorCode, ErrorPayload, Hello, Limits, PayloadError, ServerPolicy, Welcome, negotiate,
};
#[cfg(feature = "alloc")]
pub use reassembly::{Event, Message, Reassembler, ReassemblyError, ReassemblyLimits};
