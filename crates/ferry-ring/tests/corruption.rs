//! A buggy or hostile peer: attach validation and every kind of corruption
//! must give a clear error, poison the handle, and never panic or go out of
//! bounds.
#![cfg(not(loom))] // loom atomics only work inside loom::model: see tests/loom.rs

mod common;

use std::num::NonZeroU32;
use std::sync::Arc;

use common::*;
use ferry_ring::{
    AttachError, Consumer, Corrupted, Corruption, HEADER_SIZE, HeapRegion, LAYOUT_VERSION, MAGIC,
    PopError, Producer, Region, ReserveError, SleepPrep, TAG_DATA, TAG_PADDING, Wake, heap, init,
    region_size,
};

type P = Producer<Arc<HeapRegion>>;
type C = Consumer<Arc<HeapRegion>>;

const TOKEN: NonZeroU32 = NonZeroU32::new(3).unwrap();

/// A view of another region shifted by `shift` bytes (to test alignment and
/// short regions).
struct Window {
    inner: HeapRegion,
    shift: usize,
    len: usize,
}

// SAFETY: the window lies inside `inner` (constructors check), which lives as
// long as the window and never moves.
unsafe impl Region for Window {
    fn as_ptr(&self) -> *mut u8 {
        // SAFETY: shift < inner.len() (constructors check).
        unsafe { self.inner.as_ptr().add(self.shift) }
    }
    fn len(&self) -> usize {
        self.len
    }
}

fn window(inner_len: usize, shift: usize, len: usize) -> Window {
    assert!(shift + len <= inner_len);
    Window {
        inner: HeapRegion::new_zeroed(inner_len),
        shift,
        len,
    }
}

fn fresh(capacity: usize) -> Arc<HeapRegion> {
    let r = Arc::new(HeapRegion::for_capacity(capacity));
    init(&r, capacity).unwrap();
    r
}

fn both_attach_err(region: &Arc<HeapRegion>) -> (AttachError, AttachError) {
    (
        Producer::attach(Arc::clone(region)).unwrap_err(),
        Consumer::attach(Arc::clone(region)).unwrap_err(),
    )
}

fn same(e: AttachError) -> (AttachError, AttachError) {
    (e, e)
}

#[test]
fn attach_refuses_a_region_too_small_for_the_header() {
    let w = window(512, 0, HEADER_SIZE - 8);
    assert_eq!(
        init(&w, 64),
        Err(AttachError::RegionTooSmallForHeader {
            len: HEADER_SIZE - 8,
            needed: HEADER_SIZE
        })
    );
    let w = Arc::new(window(512, 0, 100));
    assert!(matches!(
        Producer::attach(Arc::clone(&w)),
        Err(AttachError::RegionTooSmallForHeader { len: 100, .. })
    ));
    assert!(matches!(
        Consumer::attach(w),
        Err(AttachError::RegionTooSmallForHeader { .. })
    ));
}

#[test]
fn attach_refuses_a_misaligned_region() {
    let w = Arc::new(window(4096, 64, 1024));
    let addr = w.as_ptr() as usize;
    assert_eq!(init(&w, 256), Err(AttachError::Misaligned { addr }));
    assert_eq!(
        Producer::attach(Arc::clone(&w)).err(),
        Some(AttachError::Misaligned { addr })
    );
    assert_eq!(
        Consumer::attach(w).err(),
        Some(AttachError::Misaligned { addr })
    );
}

#[test]
fn init_refuses_bad_capacities_and_short_regions() {
    let r = HeapRegion::for_capacity(1024);
    for cap in [0usize, 8, 63, 96, 1000, 1 << 31] {
        assert_eq!(
            init(&r, cap),
            Err(AttachError::BadCapacity {
                capacity: cap as u64
            })
        );
    }
    assert_eq!(
        init(&r, 2048),
        Err(AttachError::RegionTooSmall {
            len: region_size(1024),
            capacity: 2048,
            needed: region_size(2048)
        })
    );
}

#[test]
fn attach_refuses_wrong_magic() {
    let r = Arc::new(HeapRegion::for_capacity(64));
    assert_eq!(
        both_attach_err(&r),
        same(AttachError::BadMagic { found: 0 })
    );
    init(&r, 64).unwrap();
    poke_u64(&*r, MAGIC_OFF, MAGIC ^ 1);
    assert_eq!(
        both_attach_err(&r),
        same(AttachError::BadMagic { found: MAGIC ^ 1 })
    );
}

#[test]
fn attach_refuses_wrong_version() {
    let r = fresh(64);
    poke_u32(&*r, VERSION_OFF, LAYOUT_VERSION + 1);
    assert_eq!(
        both_attach_err(&r),
        same(AttachError::VersionMismatch {
            found: LAYOUT_VERSION + 1
        })
    );
}

#[test]
fn attach_refuses_bad_declared_capacity() {
    let r = fresh(256);
    for cap in [0u32, 32, 100, 255] {
        poke_u32(&*r, CAPACITY_OFF, cap);
        assert_eq!(
            both_attach_err(&r),
            same(AttachError::BadCapacity {
                capacity: u64::from(cap)
            })
        );
    }
    // Valid capacity, but larger than the region.
    poke_u32(&*r, CAPACITY_OFF, 65536);
    assert_eq!(
        both_attach_err(&r),
        same(AttachError::RegionTooSmall {
            len: region_size(256),
            capacity: 65536,
            needed: region_size(65536)
        })
    );
}

#[test]
fn attach_refuses_inconsistent_cursors() {
    let r = fresh(256);
    for (head, tail) in [(8u64, 0u64), (0, 264), (4, 8), (0, 12), (1000, 1000 + 257)] {
        poke_u64(&*r, HEAD_OFF, head);
        poke_u64(&*r, TAIL_OFF, tail);
        assert_eq!(
            both_attach_err(&r),
            same(AttachError::BadCursors { head, tail }),
            "{head} {tail}"
        );
    }
    // Consistent but nonzero cursors are accepted and continued from.
    poke_u64(&*r, HEAD_OFF, 1024);
    poke_u64(&*r, TAIL_OFF, 1024);
    let mut p = Producer::attach(Arc::clone(&r)).unwrap();
    let mut c = Consumer::attach(Arc::clone(&r)).unwrap();
    assert!(!p.try_push(b"resumed").unwrap().is_needed());
    assert_eq!(peek_u64(&*r, TAIL_OFF), 1024 + 16);
    assert_eq!(c.try_pop_vec().unwrap().unwrap().0, b"resumed");
}

/// Asserts the consumer is poisoned with `why` and every operation fails.
fn assert_consumer_poisoned(c: &mut C, why: Corruption) {
    assert!(c.is_corrupted());
    assert_eq!(c.corruption(), Some(why));
    assert_eq!(c.try_peek().err(), Some(Corrupted));
    assert_eq!(c.try_pop_vec().err(), Some(Corrupted));
    assert_eq!(c.try_pop_into(&mut [0; 64]), Err(PopError::Corrupted));
    assert_eq!(c.prepare_sleep(TOKEN), Err(Corrupted));
    assert_eq!(c.release_consumed(), Wake::NONE);
    assert_eq!(c.used_bytes(), 0);
    assert_eq!(c.check_tail(), Err(Corrupted));
    assert_eq!(c.corruption(), Some(why), "the first reason is kept");
}

/// Asserts the producer is poisoned with `why` and every operation fails.
fn assert_producer_poisoned(p: &mut P, why: Corruption) {
    assert!(p.is_corrupted());
    assert_eq!(p.corruption(), Some(why));
    assert_eq!(p.try_reserve(1).err(), Some(ReserveError::Corrupted));
    assert_eq!(p.try_push(b"x"), Err(ReserveError::Corrupted));
    assert_eq!(p.prepare_sleep(1, TOKEN), Err(ReserveError::Corrupted));
    assert_eq!(p.publish(), Wake::NONE);
    assert_eq!(p.free_bytes(), 0);
}

fn ring_with(records: &[&[u8]]) -> (P, C, Arc<HeapRegion>) {
    let (mut p, c) = heap(256).unwrap();
    for r in records {
        assert!(!p.try_push(r).unwrap().is_needed());
    }
    let region = Arc::clone(p.region());
    (p, c, region)
}

/// The consumer never reads the producer's cursor to find records (the
/// record word at its head decides, see the crate docs): a forged tail
/// cannot make it read unpublished bytes, and the reads go on; the `&self`
/// probe `used_bytes` reports 0 for it, and `check_tail` (which the
/// transport runs before sleeping) poisons the handle.
#[test]
fn a_forged_tail_is_caught_by_check_tail() {
    for (forged, why) in [
        (256 + 8 + 32, Corruption::CursorAhead),
        (1 << 40, Corruption::CursorAhead),
        (12, Corruption::CursorMisaligned),
    ] {
        let (_p, mut c, r) = ring_with(&[b"a", b"b"]); // 32 bytes published
        poke_u64(&*r, TAIL_OFF, forged);
        assert_eq!(c.used_bytes(), 0, "tail {forged}");
        assert_eq!(c.try_pop_vec().unwrap().unwrap().0, b"a");
        assert_eq!(c.try_pop_vec().unwrap().unwrap().0, b"b");
        assert!(c.try_peek().unwrap().is_none());
        assert!(!c.is_corrupted());
        assert_eq!(c.prepare_sleep(TOKEN), Ok(SleepPrep::Sleep));
        c.cancel_sleep();
        assert_eq!(c.check_tail(), Err(Corrupted), "tail {forged}");
        assert_consumer_poisoned(&mut c, why);
    }
}

#[test]
fn a_tail_more_than_a_ring_behind_is_caught_by_check_tail() {
    let (mut p, mut c) = heap(256).unwrap();
    let r = Arc::clone(p.region());
    for i in 0..40u64 {
        assert!(!p.try_push(&payload(i, 24)).unwrap().is_needed());
        assert_eq!(c.try_pop_vec().unwrap().unwrap().0, payload(i, 24));
    }
    // 40 x 32 = 1280 bytes published and released; 1280 - 256 - 8 is too far behind.
    poke_u64(&*r, TAIL_OFF, 1280 - 256 - 8);
    assert_eq!(c.check_tail(), Err(Corrupted));
    assert_consumer_poisoned(&mut c, Corruption::CursorBackwards);
}

/// The tail is stored after the record word that publishes, so a consumer
/// may see it lag what it already consumed and released: not corruption.
#[test]
fn a_tail_lagging_what_was_consumed_is_not_corruption() {
    let (_p, mut c, r) = ring_with(&[b"a", b"b"]);
    assert_eq!(c.try_pop_vec().unwrap().unwrap().0, b"a");
    assert_eq!(c.try_pop_vec().unwrap().unwrap().0, b"b");
    poke_u64(&*r, TAIL_OFF, 16); // as if the last tail store were not visible yet
    assert_eq!(c.check_tail(), Ok(()));
    poke_u64(&*r, TAIL_OFF, 32 + 256); // as far ahead as a producer may get
    assert_eq!(c.check_tail(), Ok(()));
    assert!(!c.is_corrupted());
}

#[test]
fn a_zero_record_word_means_nothing_published_yet() {
    let (_p, mut c, r) = ring_with(&[b"abc"]);
    poke_record(&*r, 0, 0, 0);
    assert!(c.is_empty());
    assert!(c.try_peek().unwrap().is_none());
    assert!(!c.is_corrupted());
}

#[test]
fn unknown_tag_is_corruption() {
    let (_p, mut c, r) = ring_with(&[b"abc"]);
    poke_record(&*r, 0, 3, 0xDEAD_BEEF);
    assert_consumer_poisoned_after_peek(&mut c, Corruption::BadTag);
    // Tag 0 with a nonzero length is no better (an all-zero word means "no
    // record yet", see above).
    let (_p, mut c, r) = ring_with(&[b"abc"]);
    poke_record(&*r, 0, 3, 0);
    assert_consumer_poisoned_after_peek(&mut c, Corruption::BadTag);
}

fn assert_consumer_poisoned_after_peek(c: &mut C, why: Corruption) {
    assert_eq!(c.try_peek().err(), Some(Corrupted));
    assert_consumer_poisoned(c, why);
}

#[test]
fn oversized_len_is_corruption() {
    let (_p, mut c, r) = ring_with(&[b"abc"]);
    poke_record(&*r, 0, 121, TAG_DATA); // max_record_len(256) = 120
    assert_consumer_poisoned_after_peek(&mut c, Corruption::BadLength);
    let (_p, mut c, r) = ring_with(&[b"abc"]);
    poke_record(&*r, 0, u32::MAX, TAG_DATA);
    assert_consumer_poisoned_after_peek(&mut c, Corruption::BadLength);
}

/// Consumes (without releasing) 32-byte records from offset 224 until the
/// head is at data offset 96 of a 256-byte ring: 128 bytes consumed but not
/// released, so the producer can have filled at most 128 more (terminator
/// word included).
fn consumer_with_128_bytes_of_room() -> (P, C, Arc<HeapRegion>) {
    let (mut p, mut c) = heap(256).unwrap();
    let r = Arc::clone(p.region());
    for _ in 0..7 {
        assert!(!p.try_push(&[0; 24]).unwrap().is_needed());
        assert!(c.try_pop_vec().unwrap().is_some());
    }
    for _ in 0..4 {
        assert!(!p.try_push(&[1; 24]).unwrap().is_needed()); // 224, 0, 32, 64
    }
    for _ in 0..4 {
        c.try_peek().unwrap().unwrap().consume();
    }
    (p, c, r)
}

#[test]
fn record_longer_than_the_producer_could_have_written_is_corruption() {
    // 112 + 8 (header) + 8 (terminator) = 128: possible.
    let (_p, mut c, r) = consumer_with_128_bytes_of_room();
    poke_record(&*r, 96, 112, TAG_DATA);
    assert_eq!(c.try_peek().unwrap().unwrap().len(), 112);
    // 120 needs 136: more than the producer may have filled.
    let (_p, mut c, r) = consumer_with_128_bytes_of_room();
    poke_record(&*r, 96, 120, TAG_DATA);
    assert_consumer_poisoned_after_peek(&mut c, Corruption::RecordPastTail);
}

#[test]
fn record_crossing_the_end_is_corruption() {
    let (mut p, mut c) = heap(256).unwrap();
    let r = Arc::clone(p.region());
    // Move both cursors to offset 224 (32 bytes before the end).
    for _ in 0..7 {
        assert!(!p.try_push(&[0; 24]).unwrap().is_needed());
        assert!(c.try_pop_vec().unwrap().is_some());
    }
    assert!(!p.try_push(&[1; 24]).unwrap().is_needed()); // 224..256
    assert!(!p.try_push(&[2; 24]).unwrap().is_needed()); // 0..32
    poke_record(&*r, 224, 40, TAG_DATA); // 48 bytes from 224: crosses the end
    assert_consumer_poisoned_after_peek(&mut c, Corruption::RecordCrossesEnd);
}

#[test]
fn padding_that_does_not_reach_the_end_is_corruption() {
    let (mut p, mut c) = heap(256).unwrap();
    let r = Arc::clone(p.region());
    for _ in 0..7 {
        assert!(!p.try_push(&[0; 24]).unwrap().is_needed());
        assert!(c.try_pop_vec().unwrap().is_some());
    }
    // 224: a 40-byte payload does not fit in 32: padding 224..256, record at 0.
    assert!(!p.try_push(&[5; 40]).unwrap().is_needed());
    assert_eq!(peek_record(&*r, 224), (24, TAG_PADDING));
    for bad in [16u32, 32, 0, u32::MAX] {
        poke_record(&*r, 224, bad, TAG_PADDING);
        let mut c2 = reattach_consumer(&mut c, &r);
        assert_consumer_poisoned_after_peek(&mut c2, Corruption::BadPadding);
        c = c2;
    }
    // The genuine padding still works for a fresh consumer.
    poke_record(&*r, 224, 24, TAG_PADDING);
    let mut c3 = reattach_consumer(&mut c, &r);
    assert_eq!(c3.try_pop_vec().unwrap().unwrap().0, vec![5; 40]);
}

/// Drops `c` (by replacing it with a fresh handle) and attaches anew.
fn reattach_consumer(c: &mut C, r: &Arc<HeapRegion>) -> C {
    let placeholder = {
        let (_p, c2) = heap(64).unwrap();
        c2
    };
    drop(std::mem::replace(c, placeholder));
    Consumer::attach(Arc::clone(r)).unwrap()
}

#[test]
fn padding_at_offset_zero_is_corruption() {
    let (_p, mut c, r) = ring_with(&[&[0; 100], &[0; 100]]); // 216 bytes published
    poke_record(&*r, 0, 248, TAG_PADDING); // "fills" 0..256
    assert_consumer_poisoned_after_peek(&mut c, Corruption::BadPadding);
}

#[test]
fn padding_beyond_what_the_producer_could_have_written_is_corruption() {
    let (mut p, mut c) = heap(256).unwrap();
    let r = Arc::clone(p.region());
    for _ in 0..7 {
        assert!(!p.try_push(&[0; 24]).unwrap().is_needed()); // 0..224
    }
    for _ in 0..7 {
        c.try_peek().unwrap().unwrap().consume(); // 224 consumed, none released
    }
    // Padding 224..256 plus a terminator needs 40 bytes; 32 are left.
    poke_record(&*r, 224, 24, TAG_PADDING);
    assert_consumer_poisoned_after_peek(&mut c, Corruption::RecordPastTail);
}

/// A 64-byte ring holding 56 bytes of records: full (the last 8 bytes are
/// the terminator word's).
fn full_producer() -> (P, C, Arc<HeapRegion>) {
    let (mut p, c) = heap(64).unwrap();
    assert!(!p.try_push(&[0; 24]).unwrap().is_needed());
    assert!(!p.try_push(&[0; 16]).unwrap().is_needed());
    assert_eq!(p.try_push(&[]), Err(ReserveError::Full));
    let r = Arc::clone(p.region());
    (p, c, r)
}

#[test]
fn forged_head_ahead_of_the_published_tail_is_corruption() {
    let (mut p, _c, r) = full_producer();
    poke_u64(&*r, HEAD_OFF, 72);
    assert_eq!(p.try_reserve(8).err(), Some(ReserveError::Corrupted));
    assert_producer_poisoned(&mut p, Corruption::CursorAhead);
}

#[test]
fn head_beyond_staged_but_unpublished_records_is_corruption() {
    let (mut p, _c) = heap(64).unwrap();
    let r = Arc::clone(p.region());
    p.try_reserve(24).unwrap().stage();
    p.try_reserve(16).unwrap().stage();
    poke_u64(&*r, HEAD_OFF, 32); // the consumer cannot have seen it
    assert_eq!(p.try_reserve(8).err(), Some(ReserveError::Corrupted));
    assert_producer_poisoned(&mut p, Corruption::CursorAhead);
}

#[test]
fn backwards_head_is_corruption() {
    let (mut p, mut c, r) = full_producer();
    assert!(c.try_pop_vec().unwrap().is_some());
    // Padding 56..64, then 0..24: the producer now caches head 32.
    assert!(!p.try_push(&[0; 16]).unwrap().is_needed());
    poke_u64(&*r, HEAD_OFF, 0);
    assert_eq!(p.try_push(&[0; 24]), Err(ReserveError::Corrupted));
    assert_producer_poisoned(&mut p, Corruption::CursorBackwards);
}

#[test]
fn misaligned_head_is_corruption() {
    let (mut p, _c, r) = full_producer();
    poke_u64(&*r, HEAD_OFF, 4);
    assert_eq!(
        p.free_bytes(),
        8,
        "&self probe falls back to the cached head (0): 64 - 56"
    );
    assert!(!p.is_corrupted());
    assert_eq!(p.prepare_sleep(8, TOKEN), Err(ReserveError::Corrupted));
    assert_eq!(
        peek_u32(&*r, PRODUCER_SLEEP_OFF),
        0,
        "the sleep word is cleared"
    );
    assert_producer_poisoned(&mut p, Corruption::CursorMisaligned);
}

#[test]
fn a_garbage_sleep_token_is_passed_through_not_trusted() {
    let (mut p, c) = heap(64).unwrap();
    let r = Arc::clone(p.region());
    poke_u32(&*r, CONSUMER_SLEEP_OFF, u32::MAX);
    let w = p.try_push(b"x").unwrap();
    assert_eq!(w.token(), u32::MAX);
    assert_eq!(peek_u32(&*r, CONSUMER_SLEEP_OFF), 0);
    drop(c);
}

#[test]
fn a_poisoned_consumer_does_not_release() {
    let (mut p, mut c, r) = ring_with(&[b"a", b"b"]);
    c.try_peek().unwrap().unwrap().consume();
    poke_record(&*r, 8 + 8, 0, 1); // second record: bad tag
    assert_eq!(c.try_peek().err(), Some(Corrupted));
    assert_eq!(c.release_consumed(), Wake::NONE);
    assert_eq!(peek_u64(&*r, HEAD_OFF), 0);
    assert_eq!(p.prepare_sleep(8, TOKEN), Ok(SleepPrep::Ready));
}

/// Each kind of corruption says what was wrong, in its own words (the
/// transport puts them into its protocol errors).
#[test]
fn every_corruption_says_what_was_wrong() {
    let all = [
        (Corruption::CursorBackwards, "backwards"),
        (Corruption::CursorAhead, "ahead"),
        (Corruption::CursorMisaligned, "aligned"),
        (Corruption::BadTag, "tag"),
        (Corruption::BadLength, "length"),
        (Corruption::RecordPastTail, "capacity"),
        (Corruption::RecordCrossesEnd, "crosses the end"),
        (Corruption::BadPadding, "padding"),
    ];
    let mut seen = std::collections::HashSet::new();
    for (c, word) in all {
        let text = c.to_string();
        assert!(text.contains(word), "{c:?}: {text}");
        assert!(seen.insert(text), "{c:?} shares its message");
    }
}
