//! The shared-memory layout: header, constants and record encoding.

use crate::sync::{AtomicU32, AtomicU64};

/// Reserved words: plain `core` atomics even under loom (never read, written
/// only by `init`), so that no part of the header is non-atomic.
type Reserved = [core::sync::atomic::AtomicU64; 14];
/// The reserved words of the cursor lines (which also hold `fence_free`).
type Reserved13 = [core::sync::atomic::AtomicU64; 13];

/// Value of [`RingHeader`]'s `magic` word: the bytes `FERRYRNG` read as a
/// little-endian `u64`.
pub const MAGIC: u64 = u64::from_le_bytes(*b"FERRYRNG");

/// Version of the layout described in the crate docs. Bumped on any change
/// of the header, the record encoding or the sleep protocol.
pub const LAYOUT_VERSION: u32 = 3;

/// Smallest data-area capacity accepted by [`init`](crate::init) and attach.
pub const MIN_CAPACITY: usize = 64;

/// Largest data-area capacity accepted by [`init`](crate::init) and attach (1 GiB).
pub const MAX_CAPACITY: usize = 1 << 30;

/// Required (and checked) alignment of a region's base address.
pub const REGION_ALIGN: usize = 128;

/// Size of a record header in the data area: `len: u32`, `tag: u32`.
pub const RECORD_HEADER_SIZE: usize = 8;

/// Tag of a record carrying payload (`"DATA"` little-endian).
pub const TAG_DATA: u32 = u32::from_le_bytes(*b"DATA");

/// Tag of a padding record that fills the data area up to its end
/// (`"PAD!"` little-endian).
pub const TAG_PADDING: u32 = u32::from_le_bytes(*b"PAD!");

/// Bytes of the header, i.e. the offset of the data area in the region.
///
/// 384 (three 128-byte lines) in normal builds; under `--cfg loom` the
/// header holds loom's larger atomics and this is whatever `size_of` says.
pub const HEADER_SIZE: usize = core::mem::size_of::<RingHeader>();

/// Bytes a region needs for a ring whose data area holds `capacity` bytes.
#[cfg(not(loom))]
#[must_use]
pub const fn region_size(capacity: usize) -> usize {
    HEADER_SIZE + capacity
}

/// Bytes a region needs for a ring whose data area holds `capacity` bytes:
/// under loom, plus a table of `capacity / 8` loom atomics standing for the
/// record words (loom atomics cannot live in plain bytes).
#[cfg(loom)]
#[must_use]
pub const fn region_size(capacity: usize) -> usize {
    HEADER_SIZE + capacity + capacity / 8 * core::mem::size_of::<AtomicU64>()
}

/// Largest payload a single record may carry in a ring of `capacity` bytes:
/// `capacity / 2 - 8`.
///
/// With this bound a maximal record (plus, at worst, the padding that skips
/// to the start of the data area) always fits in an empty ring, whatever the
/// cursor position, so a producer waiting for space always makes progress.
#[must_use]
pub const fn max_record_len(capacity: usize) -> usize {
    (capacity / 2).saturating_sub(RECORD_HEADER_SIZE)
}

/// Bytes a record with `len` payload bytes occupies: header plus payload
/// rounded up to 8.
#[inline]
pub(crate) const fn record_size(len: usize) -> u64 {
    (RECORD_HEADER_SIZE + ((len + 7) & !7)) as u64
}

/// Whether `capacity` is a power of two in `MIN_CAPACITY..=MAX_CAPACITY`.
pub(crate) const fn capacity_ok(capacity: u64) -> bool {
    capacity.is_power_of_two() && capacity >= MIN_CAPACITY as u64 && capacity <= MAX_CAPACITY as u64
}

/// Packs a record header word (`len` in the low half, `tag` in the high half,
/// which is `len` then `tag` in memory on little-endian targets).
#[inline]
pub(crate) const fn pack_record(len: u32, tag: u32) -> u64 {
    (len as u64) | ((tag as u64) << 32)
}

/// Line 0: identity, immutable after [`init`](crate::init).
#[repr(C, align(128))]
#[derive(Debug)]
pub struct IdentityLine {
    /// [`MAGIC`].
    pub magic: AtomicU64,
    /// [`LAYOUT_VERSION`].
    pub layout_version: AtomicU32,
    /// Data-area bytes: a power of two in `MIN_CAPACITY..=MAX_CAPACITY`.
    pub capacity: AtomicU32,
    pub(crate) reserved: Reserved,
}

/// Line 1: the producer's cursor, and the *consumer's* sleep word. The sleep
/// word sits in the line of the side that reads it on every publish, so the
/// hot path stays within the producer's own cache line; the consumer writes it
/// only when it goes to sleep.
#[repr(C, align(128))]
#[derive(Debug)]
pub struct ProducerLine {
    /// Byte cursor one past the last published record. Monotonic, 8-aligned.
    pub tail: AtomicU64,
    /// Nonzero token while the consumer is (about to be) asleep waiting for data.
    pub consumer_sleep: AtomicU32,
    /// 1 while a `Producer` handle is attached (an in-process guard against
    /// attaching two producers; not a defence against a hostile peer).
    pub producer_attached: AtomicU32,
    /// Nonzero while the producer publishes without a StoreLoad fence: a
    /// consumer preparing to sleep must then run a heavy barrier (see the
    /// crate docs, "Fence-free publication").
    pub fence_free: AtomicU32,
    pub(crate) reserved_u32: core::sync::atomic::AtomicU32,
    pub(crate) reserved: Reserved13,
}

/// Line 2: the consumer's cursor, and the *producer's* sleep word (read by the
/// consumer on every release; written by the producer only to sleep).
#[repr(C, align(128))]
#[derive(Debug)]
pub struct ConsumerLine {
    /// Byte cursor one past the last released record. Monotonic, 8-aligned.
    pub head: AtomicU64,
    /// Nonzero token while the producer is (about to be) asleep waiting for space.
    pub producer_sleep: AtomicU32,
    /// 1 while a `Consumer` handle is attached (see `producer_attached`).
    pub consumer_attached: AtomicU32,
    /// Nonzero while the consumer releases without a StoreLoad fence (see
    /// [`ProducerLine::fence_free`]).
    pub fence_free: AtomicU32,
    pub(crate) reserved_u32: core::sync::atomic::AtomicU32,
    pub(crate) reserved: Reserved13,
}

/// The ring header at offset 0 of the region. See the crate docs for the
/// full layout table.
#[repr(C)]
#[derive(Debug)]
pub struct RingHeader {
    /// Line 0 (offset 0): identity.
    pub id: IdentityLine,
    /// Line 1 (offset 128): producer-written.
    pub prod: ProducerLine,
    /// Line 2 (offset 256): consumer-written.
    pub cons: ConsumerLine,
}

impl RingHeader {
    /// A fresh header for a ring of `capacity` bytes with both cursors at 0.
    ///
    /// Not `const` because loom's atomics are not; [`init`](crate::init)
    /// moves it into the region with `ptr::write`.
    #[cfg(loom)]
    pub(crate) fn new(capacity: u32) -> Self {
        Self {
            id: IdentityLine {
                magic: AtomicU64::new(MAGIC),
                layout_version: AtomicU32::new(LAYOUT_VERSION),
                capacity: AtomicU32::new(capacity),
                reserved: [const { core::sync::atomic::AtomicU64::new(0) }; 14],
            },
            prod: ProducerLine {
                tail: AtomicU64::new(0),
                consumer_sleep: AtomicU32::new(0),
                producer_attached: AtomicU32::new(0),
                fence_free: AtomicU32::new(0),
                reserved_u32: core::sync::atomic::AtomicU32::new(0),
                reserved: [const { core::sync::atomic::AtomicU64::new(0) }; 13],
            },
            cons: ConsumerLine {
                head: AtomicU64::new(0),
                producer_sleep: AtomicU32::new(0),
                consumer_attached: AtomicU32::new(0),
                fence_free: AtomicU32::new(0),
                reserved_u32: core::sync::atomic::AtomicU32::new(0),
                reserved: [const { core::sync::atomic::AtomicU64::new(0) }; 13],
            },
        }
    }
}

// The layout is a cross-process contract: pin it (only where the atomics are
// the real, 8/4-byte ones).
#[cfg(not(loom))]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<RingHeader>() == 384);
    assert!(align_of::<RingHeader>() == 128);
    assert!(HEADER_SIZE.is_multiple_of(REGION_ALIGN));
    assert!(offset_of!(RingHeader, id) == 0);
    assert!(offset_of!(RingHeader, prod) == 128);
    assert!(offset_of!(RingHeader, cons) == 256);
    assert!(offset_of!(IdentityLine, magic) == 0);
    assert!(offset_of!(IdentityLine, layout_version) == 8);
    assert!(offset_of!(IdentityLine, capacity) == 12);
    assert!(offset_of!(ProducerLine, tail) == 0);
    assert!(offset_of!(ProducerLine, consumer_sleep) == 8);
    assert!(offset_of!(ProducerLine, producer_attached) == 12);
    assert!(offset_of!(ConsumerLine, head) == 0);
    assert!(offset_of!(ConsumerLine, producer_sleep) == 8);
    assert!(offset_of!(ConsumerLine, consumer_attached) == 12);
    assert!(offset_of!(ProducerLine, fence_free) == 16);
    assert!(offset_of!(ConsumerLine, fence_free) == 16);
    assert!(size_of::<IdentityLine>() == 128);
    assert!(size_of::<ProducerLine>() == 128);
    assert!(size_of::<ConsumerLine>() == 128);
    assert!(max_record_len(MIN_CAPACITY) == 24);
    assert!(MAX_CAPACITY <= u32::MAX as usize);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_sizes_round_up_to_eight() {
        assert_eq!(record_size(0), 8);
        assert_eq!(record_size(1), 16);
        assert_eq!(record_size(8), 16);
        assert_eq!(record_size(9), 24);
    }

    #[test]
    fn record_words_put_len_first_then_tag() {
        let w = pack_record(0x0102_0304, TAG_DATA);
        assert_eq!(w.to_le_bytes()[..4], 0x0102_0304u32.to_le_bytes());
        assert_eq!(w.to_le_bytes()[4..], *b"DATA");
    }

    #[test]
    fn capacities_must_be_powers_of_two_in_range() {
        assert!(capacity_ok(64) && capacity_ok(1 << 30));
        assert!(!capacity_ok(32) && !capacity_ok(96) && !capacity_ok(1 << 31) && !capacity_ok(0));
        assert_eq!(max_record_len(0), 0);
        assert_eq!(region_size(64), HEADER_SIZE + 64);
    }
}
