//! Loom models of the ring protocol on tiny rings (capacity 64: a handful
//! of records), including the sleep/wake protocol on both sides with a
//! futex stand-in. Loom reports a deadlock if a wake-up is ever lost.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=4 cargo test -p ferry-ring --release --test loom`
#![cfg(loom)]

use std::num::NonZeroU32;

use ferry_ring::sync::{AtomicU32, Ordering};
use ferry_ring::{Consumer, HeapRegion, Producer, ReserveError, SleepPrep, Wake, heap};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

type P = Producer<std::sync::Arc<HeapRegion>>;
type C = Consumer<std::sync::Arc<HeapRegion>>;

fn bytes(seq: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seq.wrapping_mul(16).wrapping_add(i as u8))
        .collect()
}

/// Pushes, yielding while full. Nobody sleeps, so no wake may be needed.
fn push_spin(p: &mut P, data: &[u8]) {
    loop {
        match p.try_push(data) {
            Ok(w) => {
                assert!(!w.is_needed());
                return;
            }
            Err(ReserveError::Full) => thread::yield_now(),
            Err(e) => panic!("{e}"),
        }
    }
}

/// Pops, yielding while empty.
fn pop_spin(c: &mut C) -> Vec<u8> {
    loop {
        if let Some((v, w)) = c.try_pop_vec().unwrap() {
            assert!(!w.is_needed());
            return v;
        }
        thread::yield_now();
    }
}

#[test]
fn push_pop_across_the_wrap() {
    loom::model(|| {
        let (mut p, mut c) = heap(64).unwrap();
        // 24-byte records at 0 and 24; the third pads 48..64 and goes to 0.
        let t = thread::spawn(move || {
            for i in 0..3 {
                push_spin(&mut p, &bytes(i, 16));
            }
        });
        for i in 0..3 {
            assert_eq!(pop_spin(&mut c), bytes(i, 16));
        }
        t.join().unwrap();
        assert!(c.try_peek().unwrap().is_none());
    });
}

#[test]
fn full_then_drain() {
    loom::model(|| {
        let (mut p, mut c) = heap(64).unwrap();
        // 0..24 and 24..48: full (a record needs the 8 bytes after it too).
        push_spin(&mut p, &bytes(0, 16));
        push_spin(&mut p, &bytes(1, 16));
        assert_eq!(p.try_push(&[0]), Err(ReserveError::Full));
        let t = thread::spawn(move || {
            for i in 0..3 {
                assert_eq!(pop_spin(&mut c), bytes(i, 16));
            }
        });
        // Pads 48..64 and goes to 0: needs both records released.
        push_spin(&mut p, &bytes(2, 16));
        t.join().unwrap();
    });
}

#[test]
fn empty_ring_shows_nothing_or_a_whole_record() {
    loom::model(|| {
        let (mut p, mut c) = heap(64).unwrap();
        let t = thread::spawn(move || {
            assert!(!p.try_push(&bytes(7, 20)).unwrap().is_needed());
        });
        match c.try_peek().unwrap() {
            None => {}
            Some(g) => assert_eq!(g.as_slice(), bytes(7, 20)),
        }
        t.join().unwrap();
        assert_eq!(pop_spin(&mut c), bytes(7, 20));
    });
}

#[test]
fn batch_stage_publish_and_batch_release() {
    loom::model(|| {
        let (mut p, mut c) = heap(64).unwrap();
        let t = thread::spawn(move || {
            for i in 0..2 {
                let mut g = p.try_reserve(16).unwrap();
                g.as_mut_slice().copy_from_slice(&bytes(i, 16));
                g.stage();
            }
            assert!(!p.publish().is_needed());
            // The ring is full: this needs the consumer's batch release.
            loop {
                match p.try_reserve(8) {
                    Ok(mut g) => {
                        g.as_mut_slice().copy_from_slice(&bytes(2, 8));
                        g.stage();
                        break;
                    }
                    Err(ReserveError::Full) => thread::yield_now(),
                    Err(e) => panic!("{e}"),
                }
            }
            assert!(!p.publish().is_needed());
        });
        let mut seen = 0;
        while seen < 2 {
            match c.try_peek().unwrap() {
                Some(g) => {
                    assert_eq!(g.as_slice(), bytes(seen, 16));
                    g.consume();
                    seen += 1;
                }
                None => thread::yield_now(),
            }
        }
        assert!(!c.release_consumed().is_needed());
        assert_eq!(pop_spin(&mut c), bytes(2, 8));
        t.join().unwrap();
    });
}

/// Futex stand-in: `wait` blocks while `word == expected`, re-checked under
/// the lock; `wake` notifies under the lock.
#[derive(Default)]
struct Futex {
    lock: Mutex<()>,
    cv: Condvar,
}

impl Futex {
    fn wait(&self, word: &AtomicU32, expected: u32) {
        let mut g = self.lock.lock().unwrap();
        while word.load(Ordering::SeqCst) == expected {
            g = self.cv.wait(g).unwrap();
        }
    }
    fn wake(&self, w: Wake, token: u32) {
        if w.is_needed() {
            assert_eq!(w.token(), token);
            let _g = self.lock.lock().unwrap();
            self.cv.notify_all();
        }
    }
}

const CONSUMER_TOKEN: NonZeroU32 = NonZeroU32::new(0xC0).unwrap();
const PRODUCER_TOKEN: NonZeroU32 = NonZeroU32::new(0x90).unwrap();

#[test]
fn consumer_sleeping_for_data_is_always_woken() {
    loom::model(|| {
        let (mut p, mut c) = heap(64).unwrap();
        let futex = Arc::new(Futex::default());
        let f = Arc::clone(&futex);
        let t = thread::spawn(move || {
            f.wake(p.try_push(&bytes(1, 8)).unwrap(), CONSUMER_TOKEN.get());
        });
        loop {
            if let Some((v, w)) = c.try_pop_vec().unwrap() {
                assert!(!w.is_needed());
                assert_eq!(v, bytes(1, 8));
                break;
            }
            match c.prepare_sleep(CONSUMER_TOKEN).unwrap() {
                SleepPrep::Ready => {}
                SleepPrep::Sleep => {
                    futex.wait(c.consumer_sleep_word(), CONSUMER_TOKEN.get());
                    c.cancel_sleep();
                }
            }
        }
        t.join().unwrap();
    });
}

#[test]
fn producer_sleeping_for_space_is_always_woken() {
    loom::model(|| {
        let (mut p, mut c) = heap(64).unwrap();
        assert!(!p.try_push(&bytes(0, 16)).unwrap().is_needed()); // 0..24
        assert!(!p.try_push(&bytes(1, 16)).unwrap().is_needed()); // 24..48: full
        let futex = Arc::new(Futex::default());
        let f = Arc::clone(&futex);
        let t = thread::spawn(move || {
            let (v, w) = c.try_pop_vec().unwrap().unwrap();
            assert_eq!(v, bytes(0, 16));
            f.wake(w, PRODUCER_TOKEN.get());
            c
        });
        loop {
            // 48..64 (to the end; its terminator at 0 needs the first record released).
            match p.try_push(&bytes(2, 8)) {
                Ok(w) => {
                    assert!(!w.is_needed());
                    break;
                }
                Err(ReserveError::Full) => {}
                Err(e) => panic!("{e}"),
            }
            match p.prepare_sleep(8, PRODUCER_TOKEN).unwrap() {
                SleepPrep::Ready => {}
                SleepPrep::Sleep => {
                    futex.wait(p.producer_sleep_word(), PRODUCER_TOKEN.get());
                    p.cancel_sleep();
                }
            }
        }
        let mut c = t.join().unwrap();
        assert_eq!(pop_spin(&mut c), bytes(1, 16));
        assert_eq!(pop_spin(&mut c), bytes(2, 8));
    });
}

#[test]
fn both_sides_sleeping_ping_pong() {
    ping_pong(false);
}

/// The same with both handles fence-free and each sleeper running its heavy
/// barrier. Loom cannot inject a fence into another thread, so the
/// fence-free side keeps its SeqCst fence under loom (the model of what
/// membarrier guarantees) and the heavy barrier is a no-op here: the model
/// checks the protocol around it (flags read after the token, the sleeper
/// that must not sleep without a barrier), not membarrier itself.
#[test]
fn both_sides_sleeping_fence_free() {
    ping_pong(true);
}

fn no_op_heavy_barrier() {}

fn ping_pong(fence_free: bool) {
    // Three records through a ring that holds two (the third pads to the
    // end and wraps): the producer may sleep for space, the consumer for
    // data, in any interleaving.
    loom::model(move || {
        let (mut p, mut c) = heap(64).unwrap();
        if fence_free {
            p.set_fence_free(true);
            c.set_fence_free(true);
            p.set_heavy_barrier(Some(no_op_heavy_barrier));
            c.set_heavy_barrier(Some(no_op_heavy_barrier));
        }
        let futexes = Arc::new((Futex::default(), Futex::default())); // (consumer's, producer's)
        let f = Arc::clone(&futexes);
        let t = thread::spawn(move || {
            for i in 0..3 {
                loop {
                    match p.try_push(&bytes(i, 16)) {
                        Ok(w) => {
                            f.0.wake(w, CONSUMER_TOKEN.get());
                            break;
                        }
                        Err(ReserveError::Full) => {}
                        Err(e) => panic!("{e}"),
                    }
                    if p.prepare_sleep(16, PRODUCER_TOKEN).unwrap() == SleepPrep::Sleep {
                        f.1.wait(p.producer_sleep_word(), PRODUCER_TOKEN.get());
                        p.cancel_sleep();
                    }
                }
            }
        });
        let mut seen = 0;
        while seen < 3 {
            if let Some((v, w)) = c.try_pop_vec().unwrap() {
                assert_eq!(v, bytes(seen, 16));
                futexes.1.wake(w, PRODUCER_TOKEN.get());
                seen += 1;
                continue;
            }
            if c.prepare_sleep(CONSUMER_TOKEN).unwrap() == SleepPrep::Sleep {
                futexes
                    .0
                    .wait(c.consumer_sleep_word(), CONSUMER_TOKEN.get());
                c.cancel_sleep();
            }
        }
        t.join().unwrap();
    });
}
