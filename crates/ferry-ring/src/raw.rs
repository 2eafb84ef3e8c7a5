//! Validated raw access to a region: the only place (with `region.rs`) that
//! turns the region's pointer into references.

use core::ptr::NonNull;

use crate::error::{AttachError, Side};
use crate::layout::{
    HEADER_SIZE, LAYOUT_VERSION, MAGIC, REGION_ALIGN, RingHeader, capacity_ok, region_size,
};
use crate::region::Region;
use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// Pointers into a region that passed [`Raw::attach`]'s checks.
///
/// Invariants: `header` points to an initialised `RingHeader` and `data` to
/// `capacity` bytes right after it, all inside a region that outlives `Raw`
/// (the owning handle stores the region next to it); `capacity` is a power of
/// two in `MIN_CAPACITY..=MAX_CAPACITY`.
#[derive(Debug)]
pub(crate) struct Raw {
    header: NonNull<RingHeader>,
    data: NonNull<u8>,
    capacity: u64,
}

/// Checks that `region` can hold at least a header.
fn check_region<R: Region>(region: &R) -> Result<NonNull<u8>, AttachError> {
    let len = region.len();
    if len < HEADER_SIZE {
        return Err(AttachError::RegionTooSmallForHeader {
            len,
            needed: HEADER_SIZE,
        });
    }
    let addr = region.as_ptr() as usize;
    if !addr.is_multiple_of(REGION_ALIGN) {
        return Err(AttachError::Misaligned { addr });
    }
    // A region of nonzero length at a nonzero aligned address is never null,
    // but a broken `Region` impl could return null: refuse it like misalignment.
    NonNull::new(region.as_ptr()).ok_or(AttachError::Misaligned { addr })
}

/// The header of a region that passed `check_region`.
///
/// # Safety
///
/// `base` must come from `check_region(region)` for a region that outlives
/// the returned reference, and (under loom only) the header must have been
/// written by [`init`](crate::init).
unsafe fn header_ref<'a>(base: NonNull<u8>) -> &'a RingHeader {
    // SAFETY: the region holds at least HEADER_SIZE bytes at a 128-aligned
    // address (check_region) and outlives 'a (caller). Every header field is
    // an atomic integer, valid for any bit pattern, and the peer may only
    // change it through atomic-compatible writes (Region contract), so the
    // shared reference is sound even over foreign bytes.
    unsafe { base.cast::<RingHeader>().as_ref() }
}

/// Writes a fresh header for a ring of `capacity` data bytes.
pub(crate) fn init<R: Region>(region: &R, capacity: usize) -> Result<(), AttachError> {
    let base = check_region(region)?;
    if !capacity_ok(capacity as u64) {
        return Err(AttachError::BadCapacity {
            capacity: capacity as u64,
        });
    }
    let needed = region_size(capacity);
    if region.len() < needed {
        return Err(AttachError::RegionTooSmall {
            len: region.len(),
            capacity,
            needed,
        });
    }
    #[cfg(not(loom))]
    {
        // SAFETY: `base` passed check_region and `region` outlives this call.
        let h = unsafe { header_ref(base) };
        if h.id.magic.load(Ordering::Acquire) == MAGIC {
            if h.prod.producer_attached.load(Ordering::Acquire) != 0 {
                return Err(AttachError::AlreadyAttached {
                    side: Side::Producer,
                });
            }
            if h.cons.consumer_attached.load(Ordering::Acquire) != 0 {
                return Err(AttachError::AlreadyAttached {
                    side: Side::Consumer,
                });
            }
        }
        // Atomic stores only: no data race even if something else in this
        // process still looks at the header.
        for w in
            h.id.reserved
                .iter()
                .chain(&h.prod.reserved)
                .chain(&h.cons.reserved)
        {
            w.store(0, Ordering::Relaxed);
        }
        h.prod.reserved_u32.store(0, Ordering::Relaxed);
        h.cons.reserved_u32.store(0, Ordering::Relaxed);
        h.prod.fence_free.store(0, Ordering::Relaxed);
        h.cons.fence_free.store(0, Ordering::Relaxed);
        h.prod.tail.store(0, Ordering::Relaxed);
        h.cons.producer_sleep.store(0, Ordering::Relaxed);
        h.prod.producer_attached.store(0, Ordering::Relaxed);
        h.cons.head.store(0, Ordering::Relaxed);
        h.prod.consumer_sleep.store(0, Ordering::Relaxed);
        h.cons.consumer_attached.store(0, Ordering::Relaxed);
        h.id.capacity.store(capacity as u32, Ordering::Relaxed);
        h.id.layout_version.store(LAYOUT_VERSION, Ordering::Relaxed);
        // The record word at the tail (0) must read 0: "no record yet".
        // SAFETY: capacity >= MIN_CAPACITY, so the first data word is inside
        // the region (checked above), 8-aligned (128-aligned data area), and
        // no handle is attached (checked above), so nothing accesses it
        // concurrently in this process.
        unsafe { AtomicU64::from_ptr(base.as_ptr().wrapping_add(HEADER_SIZE).cast()) }
            .store(0, Ordering::Relaxed);
        // Magic last, with Release: a header with the magic is complete.
        h.id.magic.store(MAGIC, Ordering::Release);
    }
    #[cfg(loom)]
    {
        // SAFETY: the region holds at least HEADER_SIZE bytes at a 128-aligned
        // address; loom atomics must be constructed, not stored to, so the
        // header is moved in whole. Loom models call `init` before any handle
        // exists.
        unsafe {
            base.cast::<RingHeader>()
                .as_ptr()
                .write(RingHeader::new(capacity as u32))
        };
        for i in 0..capacity / 8 {
            let word = base
                .as_ptr()
                .wrapping_add(HEADER_SIZE + capacity)
                .cast::<AtomicU64>()
                .wrapping_add(i);
            // SAFETY: the loom `region_size` reserves `capacity / 8` loom
            // atomics after the data area (checked above: region.len() >=
            // needed); the area is 8-aligned (header and capacity are
            // multiples of 8) and not yet shared with any handle.
            unsafe { word.write(AtomicU64::new(0)) };
        }
    }
    Ok(())
}

impl Raw {
    /// Validates `region` and claims `side`'s attach flag. Returns the raw
    /// access and the shared `(head, tail)` at attach time.
    pub(crate) fn attach<R: Region>(
        region: &R,
        side: Side,
    ) -> Result<(Raw, u64, u64), AttachError> {
        let base = check_region(region)?;
        // SAFETY: `base` passed check_region; `region` outlives this call and
        // the caller stores it next to the returned `Raw`.
        let h = unsafe { header_ref(base) };
        let magic = h.id.magic.load(Ordering::Acquire);
        if magic != MAGIC {
            return Err(AttachError::BadMagic { found: magic });
        }
        let version = h.id.layout_version.load(Ordering::Relaxed);
        if version != LAYOUT_VERSION {
            return Err(AttachError::VersionMismatch { found: version });
        }
        let capacity = u64::from(h.id.capacity.load(Ordering::Relaxed));
        if !capacity_ok(capacity) {
            return Err(AttachError::BadCapacity { capacity });
        }
        let needed = region_size(capacity as usize);
        if region.len() < needed {
            return Err(AttachError::RegionTooSmall {
                len: region.len(),
                capacity: capacity as usize,
                needed,
            });
        }
        let flag = match side {
            Side::Producer => &h.prod.producer_attached,
            Side::Consumer => &h.cons.consumer_attached,
        };
        if flag
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(AttachError::AlreadyAttached { side });
        }
        let head = h.cons.head.load(Ordering::Acquire);
        let tail = h.prod.tail.load(Ordering::Acquire);
        if !head.is_multiple_of(8)
            || !tail.is_multiple_of(8)
            || tail < head
            || tail - head > capacity
        {
            flag.store(0, Ordering::Release);
            return Err(AttachError::BadCursors { head, tail });
        }
        // SAFETY: HEADER_SIZE < needed <= region.len(), so the offset stays
        // inside the region and the result is non-null.
        let data = unsafe { base.add(HEADER_SIZE) };
        Ok((
            Raw {
                header: base.cast(),
                data,
                capacity,
            },
            head,
            tail,
        ))
    }

    /// The header.
    #[inline]
    pub(crate) fn header(&self) -> &RingHeader {
        // SAFETY: `header` was validated by `attach` and the region outlives
        // `self` (struct invariant); see `header_ref` for why a shared
        // reference is sound.
        unsafe { self.header.as_ref() }
    }

    /// This side's attach flag, cleared when the handle drops.
    pub(crate) fn attach_flag(&self, side: Side) -> &AtomicU32 {
        match side {
            Side::Producer => &self.header().prod.producer_attached,
            Side::Consumer => &self.header().cons.consumer_attached,
        }
    }

    /// Data-area bytes.
    #[inline]
    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Offset in the data area of byte cursor `cursor`, rounded down to 8.
    #[inline]
    pub(crate) fn offset(&self, cursor: u64) -> u64 {
        cursor & (self.capacity - 1) & !7
    }

    /// The record-header word at byte cursor `cursor` (taken modulo the
    /// capacity and rounded down to 8, so always in bounds and aligned), as
    /// an atomic.
    ///
    /// Record words are the ring's publication points (see the crate docs):
    /// every access to them is atomic. Payload bytes written at the same
    /// offset in another lap are plain, ordered against these accesses by the
    /// cursors (happens-before), never concurrent with them.
    #[cfg(not(loom))]
    #[inline]
    fn record_word(&self, cursor: u64) -> &AtomicU64 {
        let off = self.offset(cursor) as usize;
        // SAFETY: off + 8 <= capacity (capacity is a multiple of 8 and off is
        // an 8-aligned offset below it), so the word is inside the data area,
        // which is 128-aligned, so the word is 8-aligned. The region outlives
        // `self` (struct invariant). Within this process every concurrent
        // access to the word is atomic (this function); plain payload
        // accesses to the same bytes in other laps happen-before or after
        // them through the cursors. The peer is another process: whatever it
        // writes is only ever read through this atomic and validated.
        unsafe { AtomicU64::from_ptr(self.data.as_ptr().wrapping_add(off).cast()) }
    }

    /// Under loom the record words live in a table of loom atomics after the
    /// data area (one per 8 data bytes), so that loom models their ordering;
    /// payload bytes stay plain memory in the data area.
    #[cfg(loom)]
    #[inline]
    fn record_word(&self, cursor: u64) -> &AtomicU64 {
        let index = (self.offset(cursor) / 8) as usize;
        let word = self
            .data
            .as_ptr()
            .wrapping_add(self.capacity as usize)
            .cast::<AtomicU64>()
            .wrapping_add(index);
        // SAFETY: `init` wrote `capacity / 8` loom atomics right after the
        // data area (the loom `region_size` includes them) and index <
        // capacity / 8; the region outlives `self`.
        unsafe { &*word }
    }

    /// Reads the record word at `cursor` (Acquire: a nonzero word published
    /// by the producer makes the record it heads, and everything the
    /// producer wrote before it, visible).
    #[inline]
    pub(crate) fn load_record(&self, cursor: u64) -> u64 {
        self.record_word(cursor).load(Ordering::Acquire)
    }

    /// Writes the record word at `cursor` with `order` (Release for the word
    /// that publishes, Relaxed for words published by a later Release).
    #[inline]
    pub(crate) fn store_record(&self, cursor: u64, word: u64, order: Ordering) {
        self.record_word(cursor).store(word, order);
    }

    /// Hints the CPU to fetch, for writing, the cache line holding the data
    /// byte at `cursor` (taken modulo the capacity). A hint only: x86_64
    /// `prefetchw`, aarch64 `prfm pstl1keep`, nothing elsewhere or under
    /// miri and loom.
    #[inline]
    pub(crate) fn prefetch_for_write(&self, cursor: u64) {
        let ptr = self
            .data
            .as_ptr()
            .wrapping_add(self.offset(cursor) as usize);
        #[cfg(all(target_arch = "x86_64", not(miri), not(loom)))]
        // SAFETY: a prefetch neither faults nor changes memory or any
        // register but reads `ptr`; the address is inside the data area
        // anyway (offset() < capacity). `prefetchw` executes as a NOP on
        // x86_64 CPUs that predate it.
        unsafe {
            core::arch::asm!("prefetchw [{0}]", in(reg) ptr, options(nostack, preserves_flags, readonly));
        }
        #[cfg(all(target_arch = "aarch64", not(miri), not(loom)))]
        // SAFETY: as above: `prfm` is a hint that never faults.
        unsafe {
            core::arch::asm!("prfm pstl1keep, [{0}]", in(reg) ptr, options(nostack, preserves_flags, readonly));
        }
        #[cfg(any(not(any(target_arch = "x86_64", target_arch = "aarch64")), miri, loom))]
        let _ = ptr;
    }

    /// Pointer to `len` bytes at data offset `off`.
    ///
    /// # Panics
    ///
    /// If `off + len` exceeds the capacity (never, for offsets the handles
    /// validated; this keeps a logic error from becoming an out-of-bounds
    /// access).
    #[inline]
    pub(crate) fn data_ptr(&self, off: u64, len: usize) -> *mut u8 {
        assert!(
            off <= self.capacity && len as u64 <= self.capacity - off,
            "ring data access out of bounds"
        );
        // SAFETY: off <= capacity, so the result is inside (or one past) the
        // data area of the region.
        unsafe { self.data.as_ptr().add(off as usize) }
    }
}
