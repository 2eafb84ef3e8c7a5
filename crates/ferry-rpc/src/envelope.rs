//! The envelope: 16 bytes in front of every typed message (docs/rpc.md §2 has the layout byte
//! by byte). Pure data: no I/O, no clock.

use crate::error::RpcError;

/// Size of the envelope in bytes. A multiple of 16, so a payload that starts 16-aligned in the
/// ring record keeps its body 16-aligned (what rkyv's archived types need).
pub const ENVELOPE_LEN: usize = 16;

/// The only envelope version this crate speaks.
pub const VERSION: u8 = 1;

/// What a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageKind {
    /// A call: one request, one answer.
    Call = 0,
    /// A call answered by a stream of items.
    Stream = 1,
    /// A notification from the client: no answer.
    Notification = 2,
    /// A push from the server: no answer.
    Push = 3,
    /// The answer to a call.
    Response = 4,
    /// One item of a streamed answer.
    StreamItem = 5,
}

impl MessageKind {
    fn from_u8(v: u8) -> Option<MessageKind> {
        Some(match v {
            0 => MessageKind::Call,
            1 => MessageKind::Stream,
            2 => MessageKind::Notification,
            3 => MessageKind::Push,
            4 => MessageKind::Response,
            5 => MessageKind::StreamItem,
            _ => return None,
        })
    }
}

/// How the body is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CodecId {
    /// Bytes as they are (`&[u8]` arguments).
    Raw = 0,
    /// serde + postcard.
    Postcard = 1,
    /// rkyv 0.8, validated on receipt.
    Rkyv = 2,
    /// serde_json (JSON-RPC-2.0-shaped services).
    Json = 3,
}

impl CodecId {
    /// The codec of byte `v`, if known.
    pub fn from_u8(v: u8) -> Option<CodecId> {
        Some(match v {
            0 => CodecId::Raw,
            1 => CodecId::Postcard,
            2 => CodecId::Rkyv,
            3 => CodecId::Json,
            _ => return None,
        })
    }
    /// Its name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            CodecId::Raw => "raw",
            CodecId::Postcard => "postcard",
            CodecId::Rkyv => "rkyv",
            CodecId::Json => "json",
        }
    }
}

/// Flag: the body is lz4-compressed (block format); `uncompressed_len` gives its size.
pub const FLAG_LZ4: u8 = 1 << 0;
/// Flag: the sender decodes lz4-compressed bodies (the negotiation: each side compresses only
/// toward a peer that said so).
pub const FLAG_ACCEPTS_LZ4: u8 = 1 << 1;
/// The flags this version knows; others are refused (a newer peer must not set them toward an
/// older one without asking).
pub const KNOWN_FLAGS: u8 = FLAG_LZ4 | FLAG_ACCEPTS_LZ4;

/// The envelope of one message, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// What the message is.
    pub kind: MessageKind,
    /// How the body is encoded.
    pub codec: CodecId,
    /// `FLAG_*` bits.
    pub flags: u8,
    /// The method (calls, streams, notifications, pushes); the answered method for answers.
    pub method: u32,
    /// Calls and streams: the caller's time budget in microseconds, 0 for none.
    pub budget_us: u32,
    /// With [`FLAG_LZ4`]: the size of the body once decompressed; else 0.
    pub uncompressed_len: u32,
}

impl Envelope {
    /// An envelope without flags, budget or compression.
    pub fn new(kind: MessageKind, codec: CodecId, method: u32) -> Envelope {
        Envelope {
            kind,
            codec,
            flags: 0,
            method,
            budget_us: 0,
            uncompressed_len: 0,
        }
    }

    /// Writes the envelope into the first [`ENVELOPE_LEN`] bytes of `out`.
    pub fn write(&self, out: &mut [u8]) {
        out[0] = VERSION;
        out[1] = self.kind as u8;
        out[2] = self.codec as u8;
        out[3] = self.flags;
        out[4..8].copy_from_slice(&self.method.to_le_bytes());
        out[8..12].copy_from_slice(&self.budget_us.to_le_bytes());
        out[12..16].copy_from_slice(&self.uncompressed_len.to_le_bytes());
    }

    /// The envelope as bytes.
    pub fn to_bytes(&self) -> [u8; ENVELOPE_LEN] {
        let mut b = [0u8; ENVELOPE_LEN];
        self.write(&mut b);
        b
    }

    /// Reads and validates the envelope at the front of `message`; returns it and the body.
    ///
    /// # Errors
    /// [`RpcError::BadEnvelope`] when the message is shorter than an envelope, names another
    /// version, an unknown kind, codec or flag, or claims a decompressed size without the lz4
    /// flag.
    pub fn read(message: &[u8]) -> Result<(Envelope, &[u8]), RpcError> {
        let Some((head, body)) = message.split_first_chunk::<ENVELOPE_LEN>() else {
            return Err(RpcError::BadEnvelope(format!(
                "the message is {} bytes, shorter than the {ENVELOPE_LEN}-byte envelope",
                message.len()
            )));
        };
        if head[0] != VERSION {
            return Err(RpcError::BadEnvelope(format!(
                "envelope version {} (this side speaks version {VERSION})",
                head[0]
            )));
        }
        let kind = MessageKind::from_u8(head[1])
            .ok_or_else(|| RpcError::BadEnvelope(format!("unknown message kind {}", head[1])))?;
        let codec = CodecId::from_u8(head[2])
            .ok_or_else(|| RpcError::BadEnvelope(format!("unknown codec id {}", head[2])))?;
        let flags = head[3];
        if flags & !KNOWN_FLAGS != 0 {
            return Err(RpcError::BadEnvelope(format!(
                "unknown flags {:#04x}",
                flags & !KNOWN_FLAGS
            )));
        }
        let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let env = Envelope {
            kind,
            codec,
            flags,
            method: word(4),
            budget_us: word(8),
            uncompressed_len: word(12),
        };
        if env.flags & FLAG_LZ4 == 0 && env.uncompressed_len != 0 {
            return Err(RpcError::BadEnvelope(
                "a decompressed size is given but the body is not compressed".into(),
            ));
        }
        Ok((env, body))
    }
}

/// The stable id of method `method` of service `service`: 32-bit FNV-1a of `"service.method"`.
/// A `const fn`, so the generated code computes it at compile time (and checks for collisions
/// there).
pub const fn method_id(service: &str, method: &str) -> u32 {
    const PRIME: u32 = 0x0100_0193;
    let mut h: u32 = 0x811c_9dc5;
    let s = service.as_bytes();
    let mut i = 0;
    while i < s.len() {
        h ^= s[i] as u32;
        h = h.wrapping_mul(PRIME);
        i += 1;
    }
    h ^= b'.' as u32;
    h = h.wrapping_mul(PRIME);
    let m = method.as_bytes();
    let mut i = 0;
    while i < m.len() {
        h ^= m[i] as u32;
        h = h.wrapping_mul(PRIME);
        i += 1;
    }
    h
}

/// Panics (at compile time, in a `const` item) if two ids of `ids` are equal: the generated
/// code calls it so that a collision between two methods of a service is a compile error.
pub const fn assert_unique_ids(service: &str, ids: &[u32]) {
    let mut i = 0;
    while i < ids.len() {
        let mut j = i + 1;
        while j < ids.len() {
            if ids[i] == ids[j] {
                let _ = service;
                panic!(
                    "two methods of this service have the same method id: rename one or give it \
                     an explicit #[method(id = N)]"
                );
            }
            j += 1;
        }
        i += 1;
    }
}
