//! The producer handle.

use core::num::NonZeroU32;

use crate::error::{AttachError, Corrupted, Corruption, ReserveError, Side};
use crate::fences::{Fences, HeavyBarrier};
use crate::layout::{
    RECORD_HEADER_SIZE, TAG_DATA, TAG_PADDING, max_record_len, pack_record, record_size,
};
use crate::raw::Raw;
use crate::region::Region;
use crate::sync::{AtomicU32, Ordering};
use crate::wake::{SleepPrep, Wake};

/// How far past the tail [`Producer`] prefetches for writing (bytes).
const WARM_AHEAD: u64 = 1024;
/// The cache line size the prefetch assumes.
const WARM_LINE: u64 = 64;

/// The writing end of a ring. See the [crate docs](crate) for the protocol.
#[derive(Debug)]
pub struct Producer<R: Region> {
    raw: Raw,
    /// Local tail: one past the last committed or staged record.
    tail: u64,
    /// Last tail stored to shared memory.
    published: u64,
    /// Last validated shared head.
    cached_head: u64,
    /// The record word of the first staged record (at `published`), kept
    /// back until [`publish`](Self::publish) stores it with Release: that
    /// store is what makes the staged records visible.
    pending: u64,
    fences: Fences,
    corruption: Option<Corruption>,
    // Last field: dropped after `raw`'s users (Drop::drop runs first anyway).
    region: R,
}

// SAFETY: `Raw` holds pointers into `region`, which is `Send` and keeps the
// memory alive and in place wherever the handle goes; the handle's own state
// is plain data. Nothing is shared with other handles except through atomics.
unsafe impl<R: Region> Send for Producer<R> {}

impl<R: Region> Producer<R> {
    /// Attaches the producer end to an [`init`](crate::init)ialised region.
    ///
    /// The local tail starts at the shared tail; from then on the shared tail
    /// is only written, never read back.
    ///
    /// # Errors
    ///
    /// [`AttachError`] if the region is too small, misaligned, not a ring of
    /// this layout version, its cursors are inconsistent, or a producer is
    /// already attached.
    pub fn attach(region: R) -> Result<Self, AttachError> {
        let (raw, head, tail) = Raw::attach(&region, Side::Producer)?;
        // A producer that died fence-free left its flag set: start fenced.
        raw.header().prod.fence_free.store(0, Ordering::SeqCst);
        Ok(Producer {
            raw,
            tail,
            published: tail,
            cached_head: head,
            pending: 0,
            fences: Fences::default(),
            corruption: None,
            region,
        })
    }

    /// The region this producer writes to.
    pub fn region(&self) -> &R {
        &self.region
    }

    /// Data-area bytes.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.raw.capacity() as usize
    }

    /// Largest payload of one record ([`max_record_len`](crate::max_record_len)).
    #[must_use]
    pub fn max_record_len(&self) -> usize {
        max_record_len(self.capacity())
    }

    /// Free bytes as of a fresh read of the consumer's head (approximate: the
    /// consumer may release more at any time; padding may make a record need
    /// more than its size). 0 if the ring is corrupted.
    #[must_use]
    pub fn free_bytes(&self) -> usize {
        if self.corruption.is_some() {
            return 0;
        }
        let head = self.raw.header().cons.head.load(Ordering::Acquire);
        let head = match self.check_head(head) {
            Ok(h) => h,
            Err(_) => self.cached_head,
        };
        (self.raw.capacity() - (self.tail - head)) as usize
    }

    /// Whether the handle is poisoned.
    #[must_use]
    pub fn is_corrupted(&self) -> bool {
        self.corruption.is_some()
    }

    /// What poisoned the handle, if anything.
    #[must_use]
    pub fn corruption(&self) -> Option<Corruption> {
        self.corruption
    }

    /// The word the producer sleeps on (`producer_sleep`), for the notifier.
    #[must_use]
    pub fn producer_sleep_word(&self) -> &AtomicU32 {
        &self.raw.header().cons.producer_sleep
    }

    fn poison(&mut self, c: Corruption) -> Corrupted {
        self.corruption = Some(c);
        Corrupted
    }

    /// Validates a head value read from shared memory against what the
    /// producer knows.
    fn check_head(&self, head: u64) -> Result<u64, Corruption> {
        if !head.is_multiple_of(8) {
            Err(Corruption::CursorMisaligned)
        } else if head < self.cached_head {
            Err(Corruption::CursorBackwards)
        } else if head > self.published {
            Err(Corruption::CursorAhead)
        } else {
            Ok(head)
        }
    }

    /// Re-reads the shared head (Acquire), validates it and caches it.
    fn refresh_head(&mut self) -> Result<(), Corrupted> {
        let head = self.raw.header().cons.head.load(Ordering::Acquire);
        match self.check_head(head) {
            Ok(h) => {
                self.cached_head = h;
                Ok(())
            }
            Err(c) => Err(self.poison(c)),
        }
    }

    /// Bytes a record of `len` payload bytes needs at the current tail, and
    /// whether it needs a padding record first.
    #[inline]
    fn need(&self, len: usize) -> (u64, bool) {
        let rec = record_size(len);
        let to_end = self.raw.capacity() - self.raw.offset(self.tail);
        if rec <= to_end {
            (rec, false)
        } else {
            (to_end + rec, true)
        }
    }

    /// Whether `need` bytes, plus the zero record word that must follow them
    /// (the terminator, see the crate docs), are free.
    #[inline]
    fn fits(&self, need: u64) -> bool {
        self.raw.capacity() - (self.tail - self.cached_head) >= need + RECORD_HEADER_SIZE as u64
    }

    /// After a record of `tail - before` bytes: asks the CPU for ownership
    /// of the two cache lines [`WARM_AHEAD`] bytes (at most a quarter of the
    /// ring) past the tail, where the records after the next dozen or so
    /// will be written. A write prefetch: it changes no memory and never
    /// faults.
    ///
    /// The producer's first store to a line otherwise waits for the line to
    /// be taken back from the consumer's cache (which read it one lap
    /// earlier), and a SeqCst fence after the store waits with it; with the
    /// prefetch that transfer happens ahead, off the critical path. Records
    /// smaller than a line skip it: they share lines with their neighbours,
    /// so one transfer serves several of them. See the crate docs, "Write
    /// prefetch", for what it measured.
    #[inline(always)]
    fn warm_ahead(&self, before: u64) {
        if self.tail - before >= WARM_LINE {
            let ahead = self.tail + (self.raw.capacity() / 4).min(WARM_AHEAD);
            self.raw.prefetch_for_write(ahead);
            self.raw.prefetch_for_write(ahead + WARM_LINE);
        }
    }

    /// Writes the record word at `cursor`: kept back in `pending` if it is
    /// the first unpublished word (the publication point), else stored
    /// Relaxed (published by that later Release store).
    #[inline]
    fn put_word(&mut self, cursor: u64, word: u64) {
        if cursor == self.published {
            self.pending = word;
        } else {
            self.raw.store_record(cursor, word, Ordering::Relaxed);
        }
    }

    /// Reserves space for a record of exactly `len` payload bytes.
    ///
    /// Re-reads the consumer's head only when the cached free space is not
    /// enough. Write the payload through [`WriteGrant::as_mut_slice`], then
    /// [`commit`](WriteGrant::commit), [`commit_len`](WriteGrant::commit_len)
    /// or [`stage`](WriteGrant::stage) it; dropping the grant abandons it.
    ///
    /// # Errors
    ///
    /// [`ReserveError::TooLarge`] if `len > max_record_len()`,
    /// [`ReserveError::Full`] if the space is not free yet,
    /// [`ReserveError::Corrupted`] if the consumer's head is invalid (now or
    /// before).
    #[inline]
    pub fn try_reserve(&mut self, len: usize) -> Result<WriteGrant<'_, R>, ReserveError> {
        if self.corruption.is_some() {
            return Err(ReserveError::Corrupted);
        }
        let max = self.max_record_len();
        if len > max {
            return Err(ReserveError::TooLarge { len, max });
        }
        let (need, padded) = self.need(len);
        if !self.fits(need) {
            self.refresh_head()?;
            if !self.fits(need) {
                return Err(ReserveError::Full);
            }
        }
        Ok(WriteGrant {
            producer: self,
            len,
            padded,
        })
    }

    /// Copies `payload` into one record and publishes it.
    ///
    /// # Errors
    ///
    /// As [`try_reserve`](Self::try_reserve).
    #[inline]
    pub fn try_push(&mut self, payload: &[u8]) -> Result<Wake, ReserveError> {
        let mut grant = self.try_reserve(payload.len())?;
        grant.as_mut_slice().copy_from_slice(payload);
        Ok(grant.commit())
    }

    /// Publishes every staged record with one Release store (of the first
    /// staged record's word; `tail` follows), then checks (after a SeqCst
    /// fence) whether the consumer sleeps.
    ///
    /// Returns [`Wake::NONE`] if nothing was staged or the handle is poisoned.
    #[inline]
    pub fn publish(&mut self) -> Wake {
        if self.tail == self.published || self.corruption.is_some() {
            return Wake::NONE;
        }
        let h = self.raw.header();
        self.raw
            .store_record(self.published, self.pending, Ordering::Release);
        h.prod.tail.store(self.tail, Ordering::Release);
        self.published = self.tail;
        self.fences.after_publish();
        take_sleeper(&h.prod.consumer_sleep)
    }

    /// Bytes staged but not yet published.
    #[must_use]
    pub fn staged_bytes(&self) -> usize {
        (self.tail - self.published) as usize
    }

    /// Declares that the producer is about to sleep until a record of
    /// `needed` payload bytes fits: stores `token` into `producer_sleep`
    /// (SeqCst), fences, re-reads the consumer's head.
    ///
    /// On [`SleepPrep::Sleep`], block while
    /// [`producer_sleep_word`](Self::producer_sleep_word) equals `token`, then
    /// call [`cancel_sleep`](Self::cancel_sleep) and retry. Publish staged
    /// records first: a consumer waiting for them would otherwise never free
    /// space.
    ///
    /// # Errors
    ///
    /// [`ReserveError::TooLarge`] if `needed` can never fit;
    /// [`ReserveError::Corrupted`] if the head is invalid (the word is then
    /// cleared). Never [`ReserveError::Full`].
    pub fn prepare_sleep(
        &mut self,
        needed: usize,
        token: NonZeroU32,
    ) -> Result<SleepPrep, ReserveError> {
        if self.corruption.is_some() {
            return Err(ReserveError::Corrupted);
        }
        let max = self.max_record_len();
        if needed > max {
            return Err(ReserveError::TooLarge { len: needed, max });
        }
        let (need, _) = self.need(needed);
        if self.fits(need) {
            return Ok(SleepPrep::Ready);
        }
        let h = self.raw.header();
        h.cons.producer_sleep.store(token.get(), Ordering::SeqCst);
        if !self.fences.before_recheck(&h.cons.fence_free) {
            // The consumer releases fence-free and we have no heavy barrier:
            // sleeping could miss its wake-up.
            self.cancel_sleep();
            return Ok(SleepPrep::Ready);
        }
        if let Err(e) = self.refresh_head() {
            self.cancel_sleep();
            return Err(e.into());
        }
        if self.fits(need) {
            self.cancel_sleep();
            Ok(SleepPrep::Ready)
        } else {
            Ok(SleepPrep::Sleep)
        }
    }

    /// The consumer's sleep word: the word a [`Wake`] returned by this producer refers to
    /// (block on it or wake it with futex semantics when the token says so).
    #[must_use]
    pub fn peer_sleep_word(&self) -> &AtomicU32 {
        &self.raw.header().prod.consumer_sleep
    }

    /// Whether a record of `len` payload bytes could be reserved now (re-reads the consumer's
    /// head if the cached one is not enough). It is the test
    /// [`prepare_sleep`](Self::prepare_sleep) applies, so a waiter can use it as its readiness
    /// check without ever disagreeing with the sleep protocol.
    pub fn can_reserve(&mut self, len: usize) -> bool {
        if self.corruption.is_some() || len > self.max_record_len() {
            return false;
        }
        let (need, _) = self.need(len);
        if self.fits(need) {
            return true;
        }
        self.refresh_head().is_ok() && self.fits(need)
    }

    /// Publishes without the SeqCst fence (`on`), or with it (the default).
    ///
    /// Fence-free, a publish is a Release store and a compiler fence: the
    /// StoreLoad ordering the sleep protocol needs is then the consumer's
    /// job, which it does with its [heavy barrier](crate::Consumer::set_heavy_barrier)
    /// when it prepares to sleep (see the crate docs, "Fence-free
    /// publication"). Turn it on only if this thread is reached by the
    /// consumer's heavy barrier (Linux: this process registered for
    /// `MEMBARRIER_CMD_GLOBAL_EXPEDITED`, which `ferry_notify::barrier` does):
    /// otherwise a sleeping consumer can miss a wake-up. A consumer without
    /// a heavy barrier never sleeps on a fence-free producer (its
    /// `prepare_sleep` says `Ready`), so it spins instead.
    pub fn set_fence_free(&mut self, on: bool) {
        let flag = &self.raw.header().prod.fence_free;
        self.fences.set_fence_free(flag, on);
    }

    /// Whether this producer publishes fence-free.
    #[must_use]
    pub fn is_fence_free(&self) -> bool {
        self.fences.is_fence_free()
    }

    /// The heavy barrier [`prepare_sleep`](Self::prepare_sleep) runs when
    /// the consumer releases fence-free (`None`: never sleep on such a
    /// consumer).
    pub fn set_heavy_barrier(&mut self, barrier: Option<HeavyBarrier>) {
        self.fences.set_heavy_barrier(barrier);
    }

    /// Clears `producer_sleep` (after waking, or to abandon a prepared sleep).
    pub fn cancel_sleep(&self) {
        self.raw
            .header()
            .cons
            .producer_sleep
            .store(0, Ordering::Relaxed);
    }
}

impl<R: Region> Drop for Producer<R> {
    fn drop(&mut self) {
        self.set_fence_free(false);
        self.raw
            .attach_flag(Side::Producer)
            .store(0, Ordering::Release);
    }
}

/// If the peer's sleep word holds a token, resets it to 0 and returns it.
///
/// Resetting the word before the caller wakes the peer is what makes a racing
/// `futex_wait(word, token)` return at once instead of sleeping.
///
/// A compare-exchange rather than a swap: a take that finds the word already
/// back at 0 (the peer cancelled its sleep meanwhile) writes nothing. Both are
/// correct, but loom models the modification order as a partial order and,
/// with a swap that rewrote 0 over the peer's cancellation, let a later load
/// read that 0 as if it came after the peer's next token: a lost wake-up the
/// C++ model forbids (RMW atomicity puts the swap before that token), which
/// loom 0.7.3 reported at `LOOM_MAX_PREEMPTIONS=4`. A peer that keeps changing
/// the word cannot hold us here: after a few failed exchanges, a swap.
#[inline]
pub(crate) fn take_sleeper(word: &AtomicU32) -> Wake {
    let mut seen = word.load(Ordering::Relaxed);
    for _ in 0..4 {
        if seen == 0 {
            return Wake::NONE;
        }
        match word.compare_exchange(seen, 0, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(token) => return Wake::from_token(token),
            Err(now) => seen = now,
        }
    }
    Wake::from_token(word.swap(0, Ordering::AcqRel))
}

/// Space reserved for one record; see [`Producer::try_reserve`].
///
/// Dropping it without committing or staging abandons the record: nothing
/// becomes visible to the consumer.
#[derive(Debug)]
#[must_use = "dropping a WriteGrant abandons the record"]
pub struct WriteGrant<'a, R: Region> {
    producer: &'a mut Producer<R>,
    len: usize,
    padded: bool,
}

impl<R: Region> WriteGrant<'_, R> {
    /// Data offset of the record header.
    #[inline]
    fn record_offset(&self) -> u64 {
        if self.padded {
            0
        } else {
            self.producer.raw.offset(self.producer.tail)
        }
    }

    /// The payload area: exactly the reserved length. Its initial contents
    /// are unspecified (old records or peer garbage).
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let off = self.record_offset() + RECORD_HEADER_SIZE as u64;
        let ptr = self.producer.raw.data_ptr(off, self.len);
        // SAFETY: `data_ptr` checked the range is inside the data area. The
        // range lies in free space (try_reserve checked it fits between the
        // tail and the validated head + capacity), which the consumer does not
        // read until the record is published; the grant borrows the producer
        // mutably, so this is the only live reference to it in this process.
        unsafe { core::slice::from_raw_parts_mut(ptr, self.len) }
    }

    /// Payload bytes reserved.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the reservation is for an empty payload.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes the padding (if any), the record word for `n` bytes and the
    /// zero terminator after the record, and advances the local tail.
    #[inline(always)]
    fn finish(&mut self, n: usize) {
        assert!(
            n <= self.len,
            "commit_len({n}) exceeds the reserved {} bytes",
            self.len
        );
        let p = &mut *self.producer;
        let before = p.tail;
        if self.padded {
            let to_end = p.raw.capacity() - p.raw.offset(p.tail);
            let pad_len = (to_end - RECORD_HEADER_SIZE as u64) as u32;
            p.put_word(p.tail, pack_record(pad_len, TAG_PADDING));
            p.tail += to_end;
        }
        p.put_word(p.tail, pack_record(n as u32, TAG_DATA));
        p.tail += record_size(n);
        // The word where the next record will start reads 0 ("nothing yet")
        // until that record is published; `fits` reserved these 8 bytes.
        p.raw.store_record(p.tail, 0, Ordering::Relaxed);
        p.warm_ahead(before);
    }

    /// Publishes the record (and anything staged before it) now.
    #[inline]
    pub fn commit(self) -> Wake {
        let n = self.len;
        self.commit_len(n)
    }

    /// Publishes only the first `n` payload bytes.
    ///
    /// # Panics
    ///
    /// If `n` exceeds the reserved length.
    #[inline]
    pub fn commit_len(mut self, n: usize) -> Wake {
        self.finish(n);
        self.producer.publish()
    }

    /// Writes the record header but does not publish: the record becomes
    /// visible with the next [`Producer::publish`] or commit.
    #[inline]
    pub fn stage(mut self) {
        let n = self.len;
        self.finish(n);
    }
}

#[cfg(all(test, not(loom), not(miri)))]
mod tests {
    use super::take_sleeper;
    use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    /// A peer that keeps rewriting its sleep word cannot hold a waker in
    /// `take_sleeper`: every take ends, with nothing or one of the peer's
    /// tokens, and leaves the word at 0 when it took one.
    #[test]
    fn a_peer_flipping_its_sleep_word_cannot_hold_the_waker() {
        let word = AtomicU32::new(0);
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut v = 1;
                while !stop.load(Ordering::Relaxed) {
                    word.store(v, Ordering::Relaxed);
                    v = if v == 1 { 2 } else { 1 };
                }
            });
            // Start once the peer has written a token: the first take then
            // always gets one (only takes write 0, and the peer writes 1 or 2).
            while word.load(Ordering::Relaxed) == 0 {
                std::hint::spin_loop();
            }
            let mut taken = 0u32;
            for _ in 0..200_000 {
                let w = take_sleeper(&word);
                if w.is_needed() {
                    assert!(matches!(w.token(), 1 | 2), "token {}", w.token());
                    taken += 1;
                }
            }
            stop.store(true, Ordering::Relaxed);
            assert!(taken > 0, "the flipping peer's tokens were never taken");
        });
    }
}
