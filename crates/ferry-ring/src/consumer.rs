//! The consumer handle.

use core::num::NonZeroU32;

use crate::error::{AttachError, Corrupted, Corruption, PopError, Side};
use crate::fences::{Fences, HeavyBarrier};
use crate::layout::{RECORD_HEADER_SIZE, TAG_DATA, TAG_PADDING, max_record_len, record_size};
use crate::producer::take_sleeper;
use crate::raw::Raw;
use crate::region::Region;
use crate::sync::{AtomicU32, Ordering};
use crate::wake::{SleepPrep, Wake};

/// The reading end of a ring. See the [crate docs](crate) for the protocol.
#[derive(Debug)]
pub struct Consumer<R: Region> {
    raw: Raw,
    /// Local head: one past the last consumed record (or skipped padding).
    head: u64,
    /// Last head stored to shared memory.
    published: u64,
    fences: Fences,
    corruption: Option<Corruption>,
    region: R,
}

// SAFETY: as for `Producer`: `Raw` points into `region`, which is `Send` and
// keeps the memory alive and in place; the rest is plain data.
unsafe impl<R: Region> Send for Consumer<R> {}

impl<R: Region> Consumer<R> {
    /// Attaches the consumer end to an [`init`](crate::init)ialised region.
    ///
    /// The local head starts at the shared head; from then on the shared head
    /// is only written, never read back.
    ///
    /// # Errors
    ///
    /// As [`Producer::attach`](crate::Producer::attach), with "consumer" for
    /// "producer".
    pub fn attach(region: R) -> Result<Self, AttachError> {
        let (raw, head, _tail) = Raw::attach(&region, Side::Consumer)?;
        // A consumer that died fence-free left its flag set: start fenced.
        raw.header().cons.fence_free.store(0, Ordering::SeqCst);
        Ok(Consumer {
            raw,
            head,
            published: head,
            fences: Fences::default(),
            corruption: None,
            region,
        })
    }

    /// The region this consumer reads from.
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

    /// The word the consumer sleeps on (`consumer_sleep`), for the notifier.
    #[must_use]
    pub fn consumer_sleep_word(&self) -> &AtomicU32 {
        &self.raw.header().prod.consumer_sleep
    }

    /// Bytes between the local head and a fresh read of the producer's tail
    /// (records plus padding; approximate: the tail is stored right after
    /// the record word that publishes, so it may lag a record the consumer
    /// already sees). 0 if the ring is corrupted or the tail read is invalid.
    #[must_use]
    pub fn used_bytes(&self) -> usize {
        if self.corruption.is_some() {
            return 0;
        }
        let tail = self.raw.header().prod.tail.load(Ordering::Acquire);
        if self.tail_problem(tail).is_some() {
            // Not a tail an honest producer could store.
            return 0;
        }
        // A tail lagging what we consumed counts as nothing left.
        tail.saturating_sub(self.head) as usize
    }

    /// Whether no published record is waiting: the record word at the head
    /// reads 0 (one Acquire load; true if the handle is poisoned).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.corruption.is_some() || self.raw.load_record(self.head) == 0
    }

    /// Validates the producer's `tail`, poisoning the handle if it is
    /// impossible.
    ///
    /// The tail is not how records are found (the record words are), so no
    /// read depends on it; but a peer that stores garbage there is broken or
    /// hostile, and the owner of this handle should hear of it. Call it off
    /// the hot path, e.g. when about to sleep (the transport does, after a
    /// `prepare_sleep` that said Sleep). An honest tail is 8-aligned and
    /// within `capacity` of the head we published: at most that far ahead
    /// (the producer fills at most `capacity` bytes past it), and at most
    /// that far behind (it is stored after the record word that publishes, so
    /// it may lag what we consumed, by less than one batch).
    ///
    /// # Errors
    ///
    /// [`Corrupted`] (`CursorMisaligned`, `CursorAhead` or
    /// `CursorBackwards`), or if the handle was already poisoned.
    pub fn check_tail(&mut self) -> Result<(), Corrupted> {
        if self.corruption.is_some() {
            return Err(Corrupted);
        }
        let tail = self.raw.header().prod.tail.load(Ordering::Acquire);
        match self.tail_problem(tail) {
            None => Ok(()),
            Some(bad) => Err(self.poison(bad)),
        }
    }

    /// What is wrong with `tail` as a producer's tail, if anything (the rule
    /// of [`check_tail`](Self::check_tail)).
    fn tail_problem(&self, tail: u64) -> Option<Corruption> {
        let cap = self.raw.capacity();
        if !tail.is_multiple_of(8) {
            Some(Corruption::CursorMisaligned)
        } else if tail > self.published.saturating_add(cap) {
            Some(Corruption::CursorAhead)
        } else if tail.saturating_add(cap) < self.published {
            Some(Corruption::CursorBackwards)
        } else {
            None
        }
    }

    fn poison(&mut self, c: Corruption) -> Corrupted {
        self.corruption = Some(c);
        Corrupted
    }

    /// Finds the next DATA record, skipping (and consuming) one padding
    /// record. Returns `(payload offset, payload len, record size)`.
    ///
    /// A record is published when its word, at the head, turns nonzero
    /// (Acquire load): the consumer reads only lines it needs anyway, never
    /// the producer's cursor line.
    #[inline(always)]
    fn next_record(&mut self) -> Result<Option<(u64, usize, u64)>, Corrupted> {
        if self.corruption.is_some() {
            return Err(Corrupted);
        }
        let cap = self.raw.capacity();
        // At most two rounds: a padding record only ever precedes a record
        // at offset 0, and padding at offset 0 is rejected.
        for _ in 0..2 {
            let word = self.raw.load_record(self.head);
            if word == 0 {
                return Ok(None);
            }
            let off = self.raw.offset(self.head);
            let to_end = cap - off;
            // The producer may fill at most `capacity` bytes past the head we
            // published (minus the terminator word).
            let room = cap - (self.head - self.published);
            let (len, tag) = (word as u32, (word >> 32) as u32);
            match tag {
                TAG_DATA => {
                    let len = len as usize;
                    if len > max_record_len(cap as usize) {
                        return Err(self.poison(Corruption::BadLength));
                    }
                    let rec = record_size(len);
                    if rec > to_end {
                        return Err(self.poison(Corruption::RecordCrossesEnd));
                    }
                    if rec + RECORD_HEADER_SIZE as u64 > room {
                        return Err(self.poison(Corruption::RecordPastTail));
                    }
                    return Ok(Some((off + RECORD_HEADER_SIZE as u64, len, rec)));
                }
                TAG_PADDING => {
                    if off == 0 || u64::from(len) + RECORD_HEADER_SIZE as u64 != to_end {
                        return Err(self.poison(Corruption::BadPadding));
                    }
                    if to_end + RECORD_HEADER_SIZE as u64 > room {
                        return Err(self.poison(Corruption::RecordPastTail));
                    }
                    self.head += to_end;
                }
                _ => return Err(self.poison(Corruption::BadTag)),
            }
        }
        Err(self.poison(Corruption::BadPadding))
    }

    /// The next record, if one is published. Padding is skipped
    /// transparently. Reads the record word at the head (Acquire), never the
    /// producer's tail.
    ///
    /// # Errors
    ///
    /// [`Corrupted`] if the tail or the record header is invalid (now or
    /// before): the handle is poisoned.
    #[inline]
    pub fn try_peek(&mut self) -> Result<Option<ReadGrant<'_, R>>, Corrupted> {
        Ok(self.next_record()?.map(|(off, len, rec)| ReadGrant {
            consumer: self,
            off,
            len,
            rec,
        }))
    }

    /// Copies the next record into `buf` and releases it. Returns its length
    /// and the [`Wake`] of the release.
    ///
    /// # Errors
    ///
    /// [`PopError::BufferTooSmall`] (the record stays in the ring) or
    /// [`PopError::Corrupted`].
    #[inline]
    pub fn try_pop_into(&mut self, buf: &mut [u8]) -> Result<Option<(usize, Wake)>, PopError> {
        let Some(grant) = self.try_peek()? else {
            return Ok(None);
        };
        let src = grant.as_slice();
        let n = src.len();
        let Some(dst) = buf.get_mut(..n) else {
            return Err(PopError::BufferTooSmall { needed: n });
        };
        dst.copy_from_slice(src);
        Ok(Some((n, grant.release())))
    }

    /// Copies the next record into a new `Vec` and releases it.
    ///
    /// # Errors
    ///
    /// [`Corrupted`], as [`try_peek`](Self::try_peek).
    #[cfg(feature = "alloc")]
    pub fn try_pop_vec(&mut self) -> Result<Option<(alloc::vec::Vec<u8>, Wake)>, Corrupted> {
        let Some(grant) = self.try_peek()? else {
            return Ok(None);
        };
        let v = grant.as_slice().to_vec();
        Ok(Some((v, grant.release())))
    }

    /// Publishes the local head (every record consumed so far) with one
    /// Release store, then checks (after a SeqCst fence) whether the producer
    /// sleeps. [`Wake::NONE`] if nothing was consumed or the handle is
    /// poisoned.
    #[inline]
    pub fn release_consumed(&mut self) -> Wake {
        if self.head == self.published || self.corruption.is_some() {
            return Wake::NONE;
        }
        let h = self.raw.header();
        h.cons.head.store(self.head, Ordering::Release);
        self.published = self.head;
        self.fences.after_publish();
        take_sleeper(&h.cons.producer_sleep)
    }

    /// Bytes consumed (or skipped as padding) but not yet released.
    #[must_use]
    pub fn consumed_bytes(&self) -> usize {
        (self.head - self.published) as usize
    }

    /// Declares that the consumer is about to sleep until a record arrives:
    /// stores `token` into `consumer_sleep` (SeqCst), fences, re-reads the
    /// record word at the head.
    ///
    /// On [`SleepPrep::Sleep`], block while
    /// [`consumer_sleep_word`](Self::consumer_sleep_word) equals `token`, then
    /// call [`cancel_sleep`](Self::cancel_sleep) and retry. Release consumed
    /// records first: a producer waiting for that space would otherwise never
    /// send.
    ///
    /// # Errors
    ///
    /// [`Corrupted`] if the handle is poisoned. (A garbage record word reads
    /// as [`SleepPrep::Ready`]; the next [`try_peek`](Self::try_peek)
    /// reports it. The tail is not checked here: see
    /// [`check_tail`](Self::check_tail).)
    pub fn prepare_sleep(&mut self, token: NonZeroU32) -> Result<SleepPrep, Corrupted> {
        if self.corruption.is_some() {
            return Err(Corrupted);
        }
        if self.raw.load_record(self.head) != 0 {
            return Ok(SleepPrep::Ready);
        }
        let h = self.raw.header();
        h.prod.consumer_sleep.store(token.get(), Ordering::SeqCst);
        if !self.fences.before_recheck(&h.prod.fence_free) {
            // The producer publishes fence-free and we have no heavy
            // barrier: sleeping could miss its wake-up.
            self.cancel_sleep();
            return Ok(SleepPrep::Ready);
        }
        if self.raw.load_record(self.head) != 0 {
            self.cancel_sleep();
            Ok(SleepPrep::Ready)
        } else {
            Ok(SleepPrep::Sleep)
        }
    }

    /// The producer's sleep word: the word a [`Wake`] returned by this consumer refers to.
    #[must_use]
    pub fn peer_sleep_word(&self) -> &AtomicU32 {
        &self.raw.header().cons.producer_sleep
    }

    /// Releases without the SeqCst fence (`on`), or with it (the default).
    /// The mirror of [`Producer::set_fence_free`](crate::Producer::set_fence_free): turn it on only if the
    /// producer's heavy barrier reaches this thread.
    pub fn set_fence_free(&mut self, on: bool) {
        let flag = &self.raw.header().cons.fence_free;
        self.fences.set_fence_free(flag, on);
    }

    /// Whether this consumer releases fence-free.
    #[must_use]
    pub fn is_fence_free(&self) -> bool {
        self.fences.is_fence_free()
    }

    /// The heavy barrier [`prepare_sleep`](Self::prepare_sleep) runs when
    /// the producer publishes fence-free (`None`: never sleep on such a
    /// producer).
    pub fn set_heavy_barrier(&mut self, barrier: Option<HeavyBarrier>) {
        self.fences.set_heavy_barrier(barrier);
    }

    /// Clears `consumer_sleep` (after waking, or to abandon a prepared sleep).
    pub fn cancel_sleep(&self) {
        self.raw
            .header()
            .prod
            .consumer_sleep
            .store(0, Ordering::Relaxed);
    }
}

impl<R: Region> Drop for Consumer<R> {
    fn drop(&mut self) {
        self.set_fence_free(false);
        self.raw
            .attach_flag(Side::Consumer)
            .store(0, Ordering::Release);
    }
}

/// One published record, borrowed from the ring; see [`Consumer::try_peek`].
///
/// Dropping it leaves the record in the ring (the next peek returns it again).
#[derive(Debug)]
#[must_use = "dropping a ReadGrant leaves the record in the ring"]
pub struct ReadGrant<'a, R: Region> {
    consumer: &'a mut Consumer<R>,
    off: u64,
    len: usize,
    rec: u64,
}

impl<R: Region> ReadGrant<'_, R> {
    /// The payload: one contiguous record.
    ///
    /// The bytes live in shared memory: a misbehaving peer could change them
    /// while you look. Copy them out before validating anything you rely on.
    #[inline]
    #[must_use]
    pub fn as_slice(&self) -> &[u8] {
        let ptr = self.consumer.raw.data_ptr(self.off, self.len);
        // SAFETY: `data_ptr` checked the range is inside the data area;
        // `next_record` checked it lies between the local head and the
        // validated tail, i.e. in a published record that the producer does
        // not touch again until the head moves past it, which needs this
        // grant (borrowing the consumer mutably) to be released or dropped.
        unsafe { core::slice::from_raw_parts(ptr, self.len) }
    }

    /// Payload bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the payload is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Frees the record (and any consumed before it) now: one Release store
    /// of `head`.
    #[inline]
    pub fn release(self) -> Wake {
        self.consumer.head += self.rec;
        self.consumer.release_consumed()
    }

    /// Marks the record consumed without publishing the head: the space is
    /// freed by the next [`Consumer::release_consumed`] or release.
    #[inline]
    pub fn consume(self) {
        self.consumer.head += self.rec;
    }
}
