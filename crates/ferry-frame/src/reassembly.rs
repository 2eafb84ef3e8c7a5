//! Reassembly of fragmented messages (needs the `alloc` feature).

use alloc::borrow::Cow;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::codec::Frame;
use crate::header::Kind;
use crate::payload::Limits;

/// Limits the [`Reassembler`] enforces. Use the values agreed in the handshake
/// ([`From<Limits>`](#impl-From<Limits>-for-ReassemblyLimits)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReassemblyLimits {
    /// Largest complete message, bytes (single-frame messages included).
    pub max_message_size: usize,
    /// Most partial messages held at once.
    pub max_partial_messages: usize,
    /// Most bytes held for partial messages at once (allocated capacity, all partials together).
    pub max_buffered_bytes: usize,
}

impl From<Limits> for ReassemblyLimits {
    fn from(l: Limits) -> Self {
        ReassemblyLimits {
            max_message_size: l.max_message_size as usize,
            max_partial_messages: l.max_partial_messages as usize,
            max_buffered_bytes: l.max_buffered_bytes as usize,
        }
    }
}

impl Default for ReassemblyLimits {
    /// The defaults of [`Limits::default`].
    fn default() -> Self {
        Limits::default().into()
    }
}

/// Why a fragment was rejected. The partial message it belonged to (if any) has
/// been discarded and its memory released; the `Reassembler` stays usable.
///
/// Each of these means the peer broke limits it agreed to in the handshake: the
/// receiver should send `Goodbye` with
/// [`ErrorCode::PROTOCOL_VIOLATION`](crate::ErrorCode::PROTOCOL_VIOLATION) and close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReassemblyError {
    /// The message grew past `max_message_size`.
    #[error(
        "{kind} message {correlation_id} reached {size} bytes, over the max message size of {max}; \
         the peer ignored the agreed limit, close the connection (or raise max_message_size)"
    )]
    MessageTooLarge {
        /// Kind of the message.
        kind: Kind,
        /// Its correlation id.
        correlation_id: u64,
        /// Size it would have reached.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A new fragmented message would exceed `max_partial_messages`.
    #[error(
        "cannot start {kind} message {correlation_id}: already {max} partial messages in flight (the limit); \
         the peer ignored the agreed limit, close the connection (or raise max_partial_messages)"
    )]
    TooManyPartials {
        /// Kind of the new message.
        kind: Kind,
        /// Its correlation id.
        correlation_id: u64,
        /// The limit.
        max: usize,
    },
    /// Buffering this fragment would exceed `max_buffered_bytes`.
    #[error(
        "buffering {needed} more bytes for {kind} message {correlation_id} would exceed the {max}-byte \
         reassembly budget ({held} held); the peer ignored the agreed limit, close the connection \
         (or raise max_buffered_bytes)"
    )]
    BufferFull {
        /// Kind of the message.
        kind: Kind,
        /// Its correlation id.
        correlation_id: u64,
        /// Bytes held before this fragment.
        held: usize,
        /// Bytes this fragment needed.
        needed: usize,
        /// The limit.
        max: usize,
    },
}

/// A complete message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// Its kind.
    pub kind: Kind,
    /// Its correlation id.
    pub correlation_id: u64,
    /// The payload: borrowed from the frame when the message was a single frame
    /// (no copy), owned when it was reassembled from fragments.
    pub payload: Cow<'a, [u8]>,
}

/// What a frame pushed into the [`Reassembler`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete message (a single frame, or the last fragment of one).
    Message(Message<'a>),
    /// A fragment was buffered; the message is not complete yet.
    Pending,
    /// An `ABORT` frame discarded the partial message (kind, id); `discarded` bytes
    /// were dropped (0 if there was no such partial message).
    Aborted {
        /// Kind of the aborted message.
        kind: Kind,
        /// Its correlation id.
        correlation_id: u64,
        /// Bytes discarded.
        discarded: usize,
    },
}

/// Reassembles fragmented messages received on one ring.
///
/// Partial messages are keyed by (kind, correlation id), so fragments of
/// different messages may interleave. Rules (see `docs/protocol.md`):
///
/// - a frame without `MORE` and no partial message under its key is a complete
///   message and is returned borrowed (no copy, no allocation);
/// - a frame with `MORE` starts or extends the partial message under its key; the
///   frame without `MORE` that follows completes it;
/// - a frame with `ABORT` discards the partial message under its key;
/// - a `Cancel` frame discards the partial `Request` with its correlation id (and
///   is itself returned as a message);
/// - [`clear`](Self::clear) (connection closed) discards everything.
///
/// Memory held (allocated capacity of all partial buffers, [`held_bytes`](Self::held_bytes))
/// never exceeds `max_buffered_bytes`.
#[derive(Debug)]
pub struct Reassembler {
    limits: ReassemblyLimits,
    partials: BTreeMap<(Kind, u64), Vec<u8>>,
    /// Sum of `capacity()` of all partial buffers.
    held: usize,
}

impl Reassembler {
    /// An empty reassembler enforcing `limits`.
    #[must_use]
    pub fn new(limits: ReassemblyLimits) -> Self {
        Reassembler {
            limits,
            partials: BTreeMap::new(),
            held: 0,
        }
    }

    /// The limits in force.
    #[must_use]
    pub fn limits(&self) -> &ReassemblyLimits {
        &self.limits
    }

    /// Number of partial messages held.
    #[must_use]
    pub fn partial_count(&self) -> usize {
        self.partials.len()
    }

    /// Bytes allocated for partial messages (sum of buffer capacities).
    #[must_use]
    pub fn held_bytes(&self) -> usize {
        self.held
    }

    /// Payload bytes received so far for partial messages (≤ [`held_bytes`](Self::held_bytes)).
    #[must_use]
    pub fn buffered_bytes(&self) -> usize {
        self.partials.values().map(Vec::len).sum()
    }

    /// Discards every partial message (call when the connection closes).
    pub fn clear(&mut self) {
        self.partials.clear();
        self.held = 0;
    }

    /// Discards the partial message (kind, id), returning how many payload bytes it held.
    pub fn discard(&mut self, kind: Kind, correlation_id: u64) -> usize {
        match self.partials.remove(&(kind, correlation_id)) {
            Some(buf) => {
                self.held -= buf.capacity();
                buf.len()
            }
            None => 0,
        }
    }

    /// Feeds one decoded frame.
    ///
    /// # Errors
    ///
    /// A [`ReassemblyError`] when a limit would be exceeded; the partial message
    /// concerned is discarded.
    pub fn push<'a>(&mut self, frame: Frame<'a>) -> Result<Event<'a>, ReassemblyError> {
        let h = frame.header;
        let kind = h.kind();
        let id = h.correlation_id();
        if h.is_abort() {
            let discarded = self.discard(kind, id);
            return Ok(Event::Aborted {
                kind,
                correlation_id: id,
                discarded,
            });
        }
        if kind == Kind::Cancel {
            self.discard(Kind::Request, id);
        }
        let more = h.is_more();
        let key = (kind, id);
        let existing = self.partials.get(&key).map_or(0, Vec::len);
        let size = existing.saturating_add(frame.payload.len());
        if size > self.limits.max_message_size {
            self.discard(kind, id);
            return Err(ReassemblyError::MessageTooLarge {
                kind,
                correlation_id: id,
                size,
                max: self.limits.max_message_size,
            });
        }
        if !more && !self.partials.contains_key(&key) {
            return Ok(Event::Message(Message {
                kind,
                correlation_id: id,
                payload: Cow::Borrowed(frame.payload),
            }));
        }
        let mut buf = match self.partials.remove(&key) {
            Some(buf) => {
                self.held -= buf.capacity();
                buf
            }
            None if self.partials.len() >= self.limits.max_partial_messages => {
                return Err(ReassemblyError::TooManyPartials {
                    kind,
                    correlation_id: id,
                    max: self.limits.max_partial_messages,
                });
            }
            None => Vec::new(),
        };
        // `buf` is out of the map and out of `held` here; on error it is dropped,
        // which discards the partial message.
        self.grow(&mut buf, frame.payload.len(), key)?;
        buf.extend_from_slice(frame.payload);
        if more {
            self.held += buf.capacity();
            self.partials.insert(key, buf);
            return Ok(Event::Pending);
        }
        Ok(Event::Message(Message {
            kind,
            correlation_id: id,
            payload: Cow::Owned(buf),
        }))
    }

    /// Makes room for `additional` more bytes in `buf` (a partial message taken
    /// out of the map) so that `held + buf.capacity()` stays within
    /// `max_buffered_bytes`. Grows geometrically while the budget allows.
    fn grow(
        &mut self,
        buf: &mut Vec<u8>,
        additional: usize,
        key: (Kind, u64),
    ) -> Result<(), ReassemblyError> {
        let max = self.limits.max_buffered_bytes;
        let needed = buf.len().saturating_add(additional);
        if needed <= buf.capacity() {
            return Ok(());
        }
        if needed > max.saturating_sub(self.held) {
            // Reclaim the slack left by geometric growth before giving up.
            buf.shrink_to_fit();
            for other in self.partials.values_mut() {
                other.shrink_to_fit();
            }
            self.held = self.partials.values().map(Vec::capacity).sum();
        }
        let budget = max.saturating_sub(self.held);
        if needed > budget {
            return Err(ReassemblyError::BufferFull {
                kind: key.0,
                correlation_id: key.1,
                held: self.held + buf.len(),
                needed: additional,
                max,
            });
        }
        let target = needed
            .max(buf.capacity().saturating_mul(2))
            .min(self.limits.max_message_size)
            .min(budget)
            .max(needed);
        buf.reserve_exact(target - buf.len());
        Ok(())
    }
}
