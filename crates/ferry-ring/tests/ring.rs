//! Behaviour of a well-behaved ring: records, wrap-around, batching, grants,
//! sleep/wake bookkeeping, attach/detach.
#![cfg(not(loom))] // loom atomics only work inside loom::model: see tests/loom.rs

mod common;

use std::num::NonZeroU32;
use std::sync::Arc;

use common::*;
use ferry_ring::{
    AttachError, Consumer, HeapRegion, PopError, Producer, ReserveError, Side, SleepPrep, TAG_DATA,
    TAG_PADDING, Wake, heap, init, max_record_len,
};

type P = Producer<Arc<HeapRegion>>;
type C = Consumer<Arc<HeapRegion>>;

fn pop(c: &mut C) -> Option<Vec<u8>> {
    let (v, wake) = c.try_pop_vec().expect("not corrupted")?;
    assert!(!wake.is_needed(), "nobody sleeps in these tests");
    Some(v)
}

fn push(p: &mut P, bytes: &[u8]) {
    let wake = p.try_push(bytes).expect("push");
    assert!(!wake.is_needed(), "nobody sleeps in these tests");
}

const T1: NonZeroU32 = NonZeroU32::new(7).unwrap();

#[test]
fn push_then_pop_returns_the_same_bytes() {
    let (mut p, mut c) = heap(1024).unwrap();
    assert!(c.is_empty());
    push(&mut p, b"hello");
    push(&mut p, b"");
    push(&mut p, &[9; 100]);
    assert!(!c.is_empty());
    assert_eq!(pop(&mut c).unwrap(), b"hello");
    assert_eq!(pop(&mut c).unwrap(), b"");
    assert_eq!(pop(&mut c).unwrap(), vec![9; 100]);
    assert_eq!(pop(&mut c), None);
    assert!(c.try_peek().unwrap().is_none());
}

#[test]
fn accessors_report_sizes() {
    let (mut p, mut c) = heap(256).unwrap();
    assert_eq!(p.capacity(), 256);
    assert_eq!(c.capacity(), 256);
    assert_eq!(p.max_record_len(), max_record_len(256));
    assert_eq!(c.max_record_len(), 120);
    assert_eq!(p.free_bytes(), 256);
    push(&mut p, &[1; 5]); // 8 + 8
    assert_eq!(p.free_bytes(), 240);
    assert_eq!(c.used_bytes(), 16);
    p.try_reserve(9).unwrap().stage(); // 8 + 16
    assert_eq!(p.staged_bytes(), 24);
    assert_eq!(c.used_bytes(), 16, "staged bytes are not visible");
    assert!(!p.publish().is_needed());
    assert_eq!(p.staged_bytes(), 0);
    assert_eq!(c.used_bytes(), 40);
    c.try_peek().unwrap().unwrap().consume();
    assert_eq!(c.consumed_bytes(), 16);
    assert_eq!(
        p.free_bytes(),
        216,
        "consumed but unreleased space is not free"
    );
    assert!(!c.release_consumed().is_needed());
    assert_eq!(c.consumed_bytes(), 0);
    assert_eq!(p.free_bytes(), 232);
    assert!(std::ptr::eq(p.region().as_ref(), c.region().as_ref()));
}

#[test]
fn records_wrap_with_padding_and_start_at_offset_zero() {
    let (mut p, mut c) = heap(128).unwrap();
    // 3 records of 24 bytes payload = 32 bytes each: offsets 0, 32, 64.
    for i in 0..3u64 {
        push(&mut p, &payload(i, 24));
    }
    for i in 0..3u64 {
        assert_eq!(pop(&mut c).unwrap(), payload(i, 24));
    }
    // Tail at 96: a 40-byte payload (48-byte record) does not fit in the
    // last 32 bytes -> padding of 32, record at 0.
    push(&mut p, &payload(3, 40));
    let region = Arc::clone(p.region());
    assert_eq!(peek_record(&*region, 96), (24, TAG_PADDING));
    assert_eq!(peek_record(&*region, 0), (40, TAG_DATA));
    assert_eq!(c.used_bytes(), 32 + 48);
    assert_eq!(pop(&mut c).unwrap(), payload(3, 40));
    assert_eq!(pop(&mut c), None);
    assert_eq!(p.free_bytes(), 128);
}

#[test]
fn exact_fit_to_the_end_needs_no_padding() {
    let (mut p, mut c) = heap(64).unwrap();
    push(&mut p, &payload(0, 24)); // 0..32
    // 32..64 would fit, but not the zero word that must follow it (at 0).
    assert_eq!(p.try_push(&payload(1, 24)), Err(ReserveError::Full));
    assert_eq!(pop(&mut c).unwrap(), payload(0, 24));
    push(&mut p, &payload(1, 24)); // 32..64: exactly to the end, word at 0 zeroed
    let region = Arc::clone(p.region());
    assert_eq!(peek_record(&*region, 32), (24, TAG_DATA));
    assert_eq!(
        peek_u64(&*region, data(0)),
        0,
        "the terminator wrapped to 0"
    );
    // 0..24 plus its terminator at 24 fit before the head (32).
    push(&mut p, &payload(2, 16));
    assert_eq!(p.free_bytes(), 8);
    assert_eq!(p.try_push(&[]), Err(ReserveError::Full));
    assert_eq!(pop(&mut c).unwrap(), payload(1, 24));
    assert_eq!(pop(&mut c).unwrap(), payload(2, 16));
    assert_eq!(pop(&mut c), None);
}

#[test]
fn full_ring_refuses_until_drained() {
    let (mut p, mut c) = heap(256).unwrap();
    let mut n = 0u64;
    while p.try_push(&payload(n, 10)).is_ok() {
        n += 1;
    }
    assert_eq!(n, 256 / 24);
    assert_eq!(p.try_reserve(10).err(), Some(ReserveError::Full));
    // Releasing one record is not enough for a 10-byte record at the end
    // (8 bytes left + wrap): drain everything.
    for i in 0..n {
        assert_eq!(pop(&mut c).unwrap(), payload(i, 10));
    }
    assert_eq!(pop(&mut c), None);
    push(&mut p, &payload(99, 10));
    assert_eq!(pop(&mut c).unwrap(), payload(99, 10));
}

#[test]
fn too_large_is_refused_and_the_maximum_is_accepted() {
    let (mut p, mut c) = heap(1024).unwrap();
    let max = max_record_len(1024);
    assert_eq!(max, 504);
    assert_eq!(
        p.try_reserve(max + 1).err(),
        Some(ReserveError::TooLarge { len: max + 1, max })
    );
    assert_eq!(
        p.try_push(&vec![0; 4096]),
        Err(ReserveError::TooLarge { len: 4096, max })
    );
    push(&mut p, &payload(1, max));
    assert_eq!(pop(&mut c).unwrap(), payload(1, max));
}

#[test]
fn a_maximal_record_fits_in_an_empty_ring_at_every_offset() {
    let cap = 128;
    let (mut p, mut c) = heap(cap).unwrap();
    let max = max_record_len(cap);
    for shift in 0..cap / 8 {
        // Advance both cursors by 8 bytes (one empty record).
        push(&mut p, &[]);
        assert_eq!(pop(&mut c).unwrap(), b"");
        push(&mut p, &payload(shift as u64, max));
        assert_eq!(pop(&mut c).unwrap(), payload(shift as u64, max));
        assert!(c.is_empty());
    }
}

#[test]
fn staged_records_appear_only_on_publish() {
    let (mut p, mut c) = heap(512).unwrap();
    for i in 0..5u64 {
        let mut g = p.try_reserve(16).unwrap();
        g.as_mut_slice().copy_from_slice(&payload(i, 16));
        g.stage();
    }
    assert!(
        c.try_peek().unwrap().is_none(),
        "staged records are not published"
    );
    assert!(!p.publish().is_needed());
    assert_eq!(p.publish(), Wake::NONE, "nothing left to publish");
    for i in 0..5u64 {
        assert_eq!(pop(&mut c).unwrap(), payload(i, 16));
    }
    assert_eq!(pop(&mut c), None);
}

#[test]
fn commit_publishes_earlier_staged_records_too() {
    let (mut p, mut c) = heap(512).unwrap();
    p.try_reserve(3).unwrap().stage();
    let mut g = p.try_reserve(4).unwrap();
    g.as_mut_slice().copy_from_slice(b"abcd");
    assert!(!g.commit().is_needed());
    assert_eq!(pop(&mut c).unwrap().len(), 3);
    assert_eq!(pop(&mut c).unwrap(), b"abcd");
}

#[test]
fn consumed_records_free_space_only_on_release_consumed() {
    let (mut p, mut c) = heap(64).unwrap();
    push(&mut p, &payload(0, 24));
    push(&mut p, &payload(1, 16));
    for (i, len) in [(0u64, 24), (1, 16)] {
        let g = c.try_peek().unwrap().unwrap();
        assert_eq!(g.as_slice(), payload(i, len));
        assert_eq!(g.len(), len);
        assert!(!g.is_empty());
        g.consume();
    }
    assert!(c.try_peek().unwrap().is_none());
    assert_eq!(
        p.try_push(&[1]),
        Err(ReserveError::Full),
        "consumed but not released"
    );
    assert!(!c.release_consumed().is_needed());
    assert_eq!(c.release_consumed(), Wake::NONE, "nothing left to release");
    push(&mut p, &[1]);
}

#[test]
fn dropping_a_read_grant_keeps_the_record() {
    let (mut p, mut c) = heap(256).unwrap();
    push(&mut p, b"keep");
    drop(c.try_peek().unwrap().unwrap());
    assert_eq!(c.try_peek().unwrap().unwrap().as_slice(), b"keep");
    assert_eq!(pop(&mut c).unwrap(), b"keep");
}

#[test]
fn commit_len_publishes_a_prefix() {
    let (mut p, mut c) = heap(256).unwrap();
    let mut g = p.try_reserve(100).unwrap();
    assert_eq!(g.len(), 100);
    assert!(!g.is_empty());
    g.as_mut_slice().copy_from_slice(&payload(5, 100));
    assert!(!g.commit_len(10).is_needed());
    assert_eq!(c.used_bytes(), 8 + 16);
    assert_eq!(pop(&mut c).unwrap(), payload(5, 10));
    let g = p.try_reserve(0).unwrap();
    assert!(g.is_empty());
    assert!(!g.commit_len(0).is_needed());
    assert_eq!(pop(&mut c).unwrap(), b"");
}

#[test]
#[should_panic(expected = "exceeds the reserved")]
fn commit_len_beyond_the_reservation_panics() {
    let (mut p, _c) = heap(256).unwrap();
    let g = p.try_reserve(4).unwrap();
    let _ = g.commit_len(5);
}

#[test]
fn abandoned_grant_publishes_nothing_and_reuses_the_space() {
    let (mut p, mut c) = heap(64).unwrap();
    push(&mut p, &payload(0, 16)); // 0..24
    {
        // Needs padding (24..64 is 40 bytes, a 24-byte payload needs 32: fits),
        // then abandon it.
        let mut g = p.try_reserve(24).unwrap();
        g.as_mut_slice().fill(0xEE);
    }
    assert_eq!(p.staged_bytes(), 0);
    assert_eq!(p.free_bytes(), 40);
    assert_eq!(pop(&mut c).unwrap(), payload(0, 16));
    assert_eq!(pop(&mut c), None);
    // An abandoned grant that would have needed padding leaves no padding.
    push(&mut p, &payload(1, 16)); // 24..48
    assert_eq!(pop(&mut c).unwrap(), payload(1, 16));
    drop(p.try_reserve(24).unwrap()); // would pad 48..64 and go to 0
    push(&mut p, &[3]); // 48..64, no padding
    let region = Arc::clone(p.region());
    assert_eq!(peek_record(&*region, 48), (1, TAG_DATA));
    assert_eq!(pop(&mut c).unwrap(), [3]);
    assert_eq!(pop(&mut c), None);
}

#[test]
fn pop_into_a_small_buffer_leaves_the_record() {
    let (mut p, mut c) = heap(256).unwrap();
    push(&mut p, &payload(1, 20));
    let mut small = [0u8; 10];
    assert_eq!(
        c.try_pop_into(&mut small),
        Err(PopError::BufferTooSmall { needed: 20 })
    );
    let mut buf = [0u8; 32];
    let (n, wake) = c.try_pop_into(&mut buf).unwrap().unwrap();
    assert!(!wake.is_needed());
    assert_eq!(&buf[..n], payload(1, 20));
    assert_eq!(c.try_pop_into(&mut buf), Ok(None));
}

#[test]
fn consumer_sleep_protocol_bookkeeping() {
    let (mut p, mut c) = heap(256).unwrap();
    assert_eq!(c.prepare_sleep(T1), Ok(SleepPrep::Sleep));
    assert_eq!(
        c.consumer_sleep_word()
            .load(std::sync::atomic::Ordering::SeqCst),
        7
    );
    let wake = p.try_push(b"x").unwrap();
    assert!(wake.is_needed());
    assert_eq!(wake.token(), 7);
    assert_eq!(
        c.consumer_sleep_word()
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "waker clears the word"
    );
    // Data is there: no sleep, word stays clear.
    assert_eq!(c.prepare_sleep(T1), Ok(SleepPrep::Ready));
    assert_eq!(
        c.consumer_sleep_word()
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    assert_eq!(pop(&mut c).unwrap(), b"x");
    // Declared, then cancelled: the producer sees no sleeper.
    assert_eq!(c.prepare_sleep(T1), Ok(SleepPrep::Sleep));
    c.cancel_sleep();
    assert!(!p.try_push(b"y").unwrap().is_needed());
    // Data published before the re-read: Ready, cleared.
    let region = Arc::clone(c.region());
    assert_eq!(pop(&mut c).unwrap(), b"y");
    push(&mut p, b"z");
    assert_eq!(c.prepare_sleep(T1), Ok(SleepPrep::Ready));
    assert_eq!(peek_u32(&*region, CONSUMER_SLEEP_OFF), 0);
}

#[test]
fn producer_sleep_protocol_bookkeeping() {
    let (mut p, mut c) = heap(64).unwrap();
    push(&mut p, &payload(0, 24)); // 0..32
    push(&mut p, &payload(1, 16)); // 32..56: full (the last 8 bytes are the terminator's)
    let token = NonZeroU32::new(0xABCD).unwrap();
    assert_eq!(p.prepare_sleep(16, token), Ok(SleepPrep::Sleep));
    assert_eq!(
        p.producer_sleep_word()
            .load(std::sync::atomic::Ordering::SeqCst),
        0xABCD
    );
    let (_, wake) = c.try_pop_vec().unwrap().unwrap();
    assert!(wake.is_needed());
    assert_eq!(wake.token(), 0xABCD);
    assert_eq!(
        p.producer_sleep_word()
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    // Space is there now (padding 56..64, record 0..24, terminator 24..32).
    assert_eq!(p.prepare_sleep(16, token), Ok(SleepPrep::Ready));
    // Full again; consumer releases before the producer re-reads: Ready.
    push(&mut p, &payload(2, 16));
    assert_eq!(p.prepare_sleep(16, token), Ok(SleepPrep::Sleep));
    p.cancel_sleep();
    assert_eq!(pop(&mut c).unwrap(), payload(1, 16));
    assert_eq!(p.prepare_sleep(16, token), Ok(SleepPrep::Ready));
    assert_eq!(
        p.producer_sleep_word()
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    assert_eq!(
        p.prepare_sleep(1000, token),
        Err(ReserveError::TooLarge { len: 1000, max: 24 })
    );
    p.cancel_sleep();
}

#[test]
fn wake_combines_and_reports_tokens() {
    assert_eq!(Wake::NONE.token(), 0);
    assert!(!Wake::NONE.is_needed());
    let (mut p, mut c) = heap(256).unwrap();
    assert_eq!(c.prepare_sleep(T1), Ok(SleepPrep::Sleep));
    let w = p.try_push(b"a").unwrap();
    assert_eq!(Wake::NONE.or(w), w);
    assert_eq!(w.or(Wake::NONE), w);
    assert_eq!(w.or(Wake::NONE).token(), 7);
}

#[test]
fn second_handle_for_a_side_is_refused_until_the_first_drops() {
    let (mut p, mut c) = heap(256).unwrap();
    let region = Arc::clone(p.region());
    assert_eq!(
        Producer::attach(Arc::clone(&region)).err(),
        Some(AttachError::AlreadyAttached {
            side: Side::Producer
        })
    );
    assert_eq!(
        Consumer::attach(Arc::clone(&region)).err(),
        Some(AttachError::AlreadyAttached {
            side: Side::Consumer
        })
    );
    assert_eq!(
        init(&region, 256),
        Err(AttachError::AlreadyAttached {
            side: Side::Producer
        })
    );
    push(&mut p, b"one");
    p.try_reserve(3).unwrap().stage(); // staged, never published: lost on drop
    drop(p);
    assert_eq!(
        init(&region, 256),
        Err(AttachError::AlreadyAttached {
            side: Side::Consumer
        })
    );
    // A new producer continues from the shared tail.
    let mut p2 = Producer::attach(Arc::clone(&region)).unwrap();
    push(&mut p2, b"two");
    assert_eq!(pop(&mut c).unwrap(), b"one");
    c.try_peek().unwrap().unwrap().consume(); // consumed, not released
    drop(c);
    let mut c2 = Consumer::attach(Arc::clone(&region)).unwrap();
    assert_eq!(
        pop(&mut c2).unwrap(),
        b"two",
        "unreleased records are seen again"
    );
    assert_eq!(pop(&mut c2), None);
}

#[test]
fn init_resets_a_ring_without_handles() {
    let region = Arc::new(HeapRegion::for_capacity(128));
    init(&region, 128).unwrap();
    {
        let mut p = Producer::attach(Arc::clone(&region)).unwrap();
        push(&mut p, b"stale");
    }
    init(&region, 128).unwrap();
    let mut c = Consumer::attach(Arc::clone(&region)).unwrap();
    assert_eq!(pop(&mut c), None);
}

#[test]
fn static_regions_work() {
    // Held by a static (not leaked): miri's leak check stays meaningful.
    static REGION: std::sync::OnceLock<HeapRegion> = std::sync::OnceLock::new();
    let region: &'static HeapRegion = REGION.get_or_init(|| HeapRegion::for_capacity(64));
    init(&region, 64).unwrap();
    let mut p = Producer::attach(region).unwrap();
    let mut c = Consumer::attach(region).unwrap();
    assert!(!p.try_push(b"s").unwrap().is_needed());
    let mut buf = [0u8; 8];
    assert_eq!(c.try_pop_into(&mut buf).unwrap().map(|(n, _)| n), Some(1));
    use ferry_ring::Region;
    assert!(!region.is_empty());
}

#[test]
fn heap_rejects_bad_capacities() {
    for cap in [0, 32, 100, 1 << 31] {
        assert_eq!(
            heap(cap).err(),
            Some(AttachError::BadCapacity {
                capacity: cap as u64
            })
        );
    }
}

#[test]
fn error_messages_say_what_and_what_to_do() {
    let full = ReserveError::Full.to_string();
    assert!(full.contains("full") && full.contains("retry"), "{full}");
    let big = ReserveError::TooLarge { len: 10, max: 5 }.to_string();
    assert!(
        big.contains("10") && big.contains('5') && big.contains("larger ring"),
        "{big}"
    );
    assert!(ReserveError::Corrupted.to_string().contains("corrupted"));
    assert!(
        PopError::BufferTooSmall { needed: 77 }
            .to_string()
            .contains("77")
    );
    assert!(PopError::Corrupted.to_string().contains("new ring"));
    let e = AttachError::RegionTooSmall {
        len: 4096,
        capacity: 65536,
        needed: 65920,
    }
    .to_string();
    assert!(
        e.contains("4096") && e.contains("65536") && e.contains("65920"),
        "{e}"
    );
    let msgs = [
        AttachError::RegionTooSmallForHeader {
            len: 1,
            needed: 384,
        },
        AttachError::Misaligned { addr: 0x1001 },
        AttachError::BadMagic { found: 3 },
        AttachError::VersionMismatch { found: 99 },
        AttachError::BadCapacity { capacity: 3 },
        AttachError::BadCursors { head: 8, tail: 0 },
        AttachError::AlreadyAttached {
            side: Side::Consumer,
        },
    ]
    .map(|e| e.to_string());
    assert!(msgs[0].contains("384"));
    assert!(msgs[1].contains("0x1001"));
    assert!(msgs[2].contains("magic"));
    assert!(msgs[3].contains("99"));
    assert!(msgs[4].contains("power of two"));
    assert!(msgs[5].contains("head 8"));
    assert!(msgs[6].contains("consumer"));
    assert!(Side::Producer.to_string() == "producer");
}

#[test]
fn peer_sleep_words_and_can_reserve_agree_with_the_sleep_protocol() {
    use core::num::NonZeroU32;
    use core::sync::atomic::Ordering;
    let (mut p, mut c) = ferry_ring::heap(256).unwrap();
    // Each side's peer word is the other side's own word.
    assert!(core::ptr::eq(p.peer_sleep_word(), c.consumer_sleep_word()));
    assert!(core::ptr::eq(c.peer_sleep_word(), p.producer_sleep_word()));
    // A consumer that declared sleep is seen through the producer's peer word.
    assert_eq!(
        c.prepare_sleep(NonZeroU32::new(5).unwrap()),
        Ok(ferry_ring::SleepPrep::Sleep)
    );
    assert_eq!(p.peer_sleep_word().load(Ordering::SeqCst), 5);
    let wake = p.try_push(b"x").unwrap();
    assert_eq!(wake.token(), 5);
    assert_eq!(p.peer_sleep_word().load(Ordering::SeqCst), 0);
    // can_reserve: true while a record fits, false when full, true again after a release.
    let max = p.max_record_len();
    assert!(p.can_reserve(max));
    assert!(!p.can_reserve(max + 1), "longer than any record");
    while p.can_reserve(40) {
        let _ = p.try_push(&[1; 40]).unwrap();
    }
    assert!(
        p.try_reserve(40).is_err(),
        "can_reserve said no, try_reserve agrees"
    );
    let (_, _wake) = c.try_pop_into(&mut [0u8; 64]).unwrap().unwrap();
    let (_, _wake) = c.try_pop_into(&mut [0u8; 64]).unwrap().unwrap();
    assert!(p.can_reserve(40), "space freed by the consumer is seen");
}

static HEAVY_CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn counting_heavy_barrier() {
    HEAVY_CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

/// Fence-free publication moves the StoreLoad ordering to the sleeper: it
/// runs its heavy barrier when the peer is fence-free, and refuses to sleep
/// (says Ready) if it has none.
#[test]
fn fence_free_peers_make_the_sleeper_run_its_heavy_barrier() {
    let (mut p, mut c) = heap(256).unwrap();
    let region = Arc::clone(p.region());
    assert!(!p.is_fence_free() && !c.is_fence_free());
    p.set_fence_free(true);
    c.set_fence_free(true);
    assert!(p.is_fence_free() && c.is_fence_free());
    assert_eq!(
        peek_u32(&*region, TAIL_OFF + 16),
        1,
        "producer's fence_free word"
    );
    assert_eq!(
        peek_u32(&*region, HEAD_OFF + 16),
        1,
        "consumer's fence_free word"
    );

    // No heavy barrier: never sleeps on a fence-free peer, and leaves no token.
    assert_eq!(c.prepare_sleep(T1), Ok(SleepPrep::Ready));
    assert_eq!(peek_u32(&*region, CONSUMER_SLEEP_OFF), 0);

    let before = HEAVY_CALLS.load(std::sync::atomic::Ordering::SeqCst);
    c.set_heavy_barrier(Some(counting_heavy_barrier));
    assert_eq!(c.prepare_sleep(T1), Ok(SleepPrep::Sleep));
    assert_eq!(
        HEAVY_CALLS.load(std::sync::atomic::Ordering::SeqCst),
        before + 1
    );
    // The fence-free publish still sees the sleeper and hands out its token.
    let w = p.try_push(b"x").unwrap();
    assert!(w.is_needed());
    assert_eq!(w.token(), T1.get());
    c.cancel_sleep();
    assert_eq!(pop(&mut c).unwrap(), b"x");

    // The producer side, waiting for space on a fence-free consumer.
    while p.try_push(&[7; 100]).is_ok() {}
    assert_eq!(
        p.prepare_sleep(100, T1),
        Ok(SleepPrep::Ready),
        "no heavy barrier"
    );
    assert_eq!(peek_u32(&*region, PRODUCER_SLEEP_OFF), 0);
    p.set_heavy_barrier(Some(counting_heavy_barrier));
    let before = HEAVY_CALLS.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(p.prepare_sleep(100, T1), Ok(SleepPrep::Sleep));
    assert_eq!(
        HEAVY_CALLS.load(std::sync::atomic::Ordering::SeqCst),
        before + 1
    );
    let (_, w) = c.try_pop_vec().unwrap().unwrap();
    assert!(
        w.is_needed(),
        "the fence-free release still wakes the producer"
    );

    // A fenced peer costs the sleeper no heavy barrier.
    p.set_fence_free(false);
    while pop(&mut c).is_some() {}
    let before = HEAVY_CALLS.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(c.prepare_sleep(T1), Ok(SleepPrep::Sleep));
    assert_eq!(
        HEAVY_CALLS.load(std::sync::atomic::Ordering::SeqCst),
        before
    );
    c.cancel_sleep();

    // Dropping a handle (or attaching a new one) clears its word.
    drop(c);
    assert_eq!(peek_u32(&*region, HEAD_OFF + 16), 0);
}
