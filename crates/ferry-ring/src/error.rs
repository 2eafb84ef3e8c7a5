//! Error types. Hot-path errors are small `Copy` enums (like `rtrb`'s);
//! [`AttachError`] is the setup error, whose messages say what to do.

use core::fmt;

/// Why a handle declared the ring corrupted (see [`Producer::corruption`]
/// and [`Consumer::corruption`]).
///
/// [`Producer::corruption`]: crate::Producer::corruption
/// [`Consumer::corruption`]: crate::Consumer::corruption
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Corruption {
    /// The peer's cursor went backwards.
    CursorBackwards,
    /// The peer's cursor is further ahead than the protocol allows
    /// (tail beyond head + capacity, or head beyond the published tail).
    CursorAhead,
    /// The peer's cursor is not a multiple of 8.
    CursorMisaligned,
    /// A record header carries a tag that is neither DATA nor PADDING.
    BadTag,
    /// A DATA record declares more payload than `max_record_len`.
    BadLength,
    /// A record extends past the committed tail.
    RecordPastTail,
    /// A DATA record crosses the end of the data area.
    RecordCrossesEnd,
    /// A PADDING record does not end exactly at the end of the data area.
    BadPadding,
}

impl Corruption {
    const fn describe(self) -> &'static str {
        match self {
            Corruption::CursorBackwards => "the peer's cursor went backwards",
            Corruption::CursorAhead => "the peer's cursor is further ahead than the ring allows",
            Corruption::CursorMisaligned => "the peer's cursor is not 8-byte aligned",
            Corruption::BadTag => "a record header has an unknown tag",
            Corruption::BadLength => "a record header declares a length above max_record_len",
            Corruption::RecordPastTail => {
                "a record extends past what the producer may have written (the released head plus the capacity)"
            }
            Corruption::RecordCrossesEnd => "a record crosses the end of the data area",
            Corruption::BadPadding => "a padding record does not end at the end of the data area",
        }
    }
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// The ring's shared state broke the protocol; the handle is poisoned and
/// every later operation fails the same way.
///
/// The peer is buggy or hostile: tear the connection down and, if wanted,
/// create a fresh ring. [`Producer::corruption`](crate::Producer::corruption)
/// and [`Consumer::corruption`](crate::Consumer::corruption) say what was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Corrupted;

impl fmt::Display for Corrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "ring corrupted: the peer wrote an invalid cursor or record header; \
             drop this connection and create a new ring",
        )
    }
}

impl core::error::Error for Corrupted {}

/// Error of [`Producer::try_reserve`](crate::Producer::try_reserve) and
/// [`Producer::try_push`](crate::Producer::try_push).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReserveError {
    /// Not enough free space now; retry after the consumer releases records.
    Full,
    /// The payload can never fit: `len` exceeds `max`
    /// ([`max_record_len`](crate::max_record_len)).
    TooLarge {
        /// Requested payload bytes.
        len: usize,
        /// Largest payload this ring accepts.
        max: usize,
    },
    /// The ring is corrupted (see [`Corrupted`]).
    Corrupted,
}

/// Error of [`Producer::try_push`](crate::Producer::try_push): the same as
/// [`ReserveError`].
pub type PushError = ReserveError;

impl fmt::Display for ReserveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReserveError::Full => {
                f.write_str("ring full: retry after the consumer releases records")
            }
            ReserveError::TooLarge { len, max } => write!(
                f,
                "record of {len} bytes exceeds this ring's maximum of {max}: \
                 split it or use a larger ring"
            ),
            ReserveError::Corrupted => fmt::Display::fmt(&Corrupted, f),
        }
    }
}

impl core::error::Error for ReserveError {}

impl From<Corrupted> for ReserveError {
    fn from(_: Corrupted) -> Self {
        ReserveError::Corrupted
    }
}

/// Error of [`Consumer::try_pop_into`](crate::Consumer::try_pop_into).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PopError {
    /// The next record has `needed` bytes, more than the buffer; it stays in
    /// the ring.
    BufferTooSmall {
        /// Payload bytes of the next record.
        needed: usize,
    },
    /// The ring is corrupted (see [`Corrupted`]).
    Corrupted,
}

impl fmt::Display for PopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PopError::BufferTooSmall { needed } => write!(
                f,
                "next record has {needed} bytes, more than the buffer: \
                 retry with a buffer of at least max_record_len bytes"
            ),
            PopError::Corrupted => fmt::Display::fmt(&Corrupted, f),
        }
    }
}

impl core::error::Error for PopError {}

impl From<Corrupted> for PopError {
    fn from(_: Corrupted) -> Self {
        PopError::Corrupted
    }
}

/// Which side of the ring an [`AttachError`] concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The producer.
    Producer,
    /// The consumer.
    Consumer,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Producer => "producer",
            Side::Consumer => "consumer",
        })
    }
}

/// Why [`init`](crate::init), [`Producer::attach`](crate::Producer::attach)
/// or [`Consumer::attach`](crate::Consumer::attach) refused a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AttachError {
    /// The region cannot even hold the header.
    RegionTooSmallForHeader {
        /// Region bytes.
        len: usize,
        /// [`HEADER_SIZE`](crate::HEADER_SIZE).
        needed: usize,
    },
    /// The region is smaller than the capacity (declared or requested) needs.
    RegionTooSmall {
        /// Region bytes.
        len: usize,
        /// Capacity declared in the header or passed to `init`.
        capacity: usize,
        /// [`region_size`](crate::region_size)`(capacity)`.
        needed: usize,
    },
    /// The region's base address is not aligned to
    /// [`REGION_ALIGN`](crate::REGION_ALIGN).
    Misaligned {
        /// The base address.
        addr: usize,
    },
    /// The header does not start with [`MAGIC`](crate::MAGIC).
    BadMagic {
        /// The word found.
        found: u64,
    },
    /// The header's layout version is not [`LAYOUT_VERSION`](crate::LAYOUT_VERSION).
    VersionMismatch {
        /// Version in the header.
        found: u32,
    },
    /// The capacity is not a power of two in
    /// [`MIN_CAPACITY`](crate::MIN_CAPACITY)..=[`MAX_CAPACITY`](crate::MAX_CAPACITY).
    BadCapacity {
        /// The capacity declared or requested.
        capacity: u64,
    },
    /// The shared cursors are inconsistent (`head <= tail <= head + capacity`,
    /// both multiples of 8, must hold).
    BadCursors {
        /// Shared head.
        head: u64,
        /// Shared tail.
        tail: u64,
    },
    /// A handle for this side is already attached to the region.
    AlreadyAttached {
        /// The side.
        side: Side,
    },
}

impl fmt::Display for AttachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AttachError::RegionTooSmallForHeader { len, needed } => write!(
                f,
                "ring region is {len} bytes, too small for the {needed}-byte ring header: \
                 map the whole region (region_size(capacity) bytes)"
            ),
            AttachError::RegionTooSmall {
                len,
                capacity,
                needed,
            } => write!(
                f,
                "ring region is {len} bytes but capacity {capacity} needs {needed}: \
                 map region_size(capacity) bytes (was it created by a different Ferry version?)"
            ),
            AttachError::Misaligned { addr } => write!(
                f,
                "ring region at {addr:#x} is not {}-byte aligned: use a page-aligned mapping",
                crate::REGION_ALIGN
            ),
            AttachError::BadMagic { found } => write!(
                f,
                "ring region has magic {found:#018x}, expected {:#018x}: \
                 it is not a Ferry ring or was not initialised with ferry_ring::init",
                crate::MAGIC
            ),
            AttachError::VersionMismatch { found } => write!(
                f,
                "ring region has layout version {found}, this build speaks {}: \
                 run the same Ferry version in both processes",
                crate::LAYOUT_VERSION
            ),
            AttachError::BadCapacity { capacity } => write!(
                f,
                "ring capacity {capacity} is invalid: it must be a power of two between {} and {} bytes",
                crate::MIN_CAPACITY,
                crate::MAX_CAPACITY
            ),
            AttachError::BadCursors { head, tail } => write!(
                f,
                "ring cursors are inconsistent (head {head}, tail {tail}): \
                 the region is corrupted; re-create it with ferry_ring::init"
            ),
            AttachError::AlreadyAttached { side } => write!(
                f,
                "a {side} is already attached to this ring region: drop it first \
                 (or re-create the region with ferry_ring::init if its owner crashed)"
            ),
        }
    }
}

impl core::error::Error for AttachError {}
