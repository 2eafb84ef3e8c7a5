//! Two threads moving many records of varying sizes, with content checks:
//! spinning, batched, and with the sleep/wake protocol.
#![cfg(not(loom))] // loom atomics only work inside loom::model: see tests/loom.rs

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Condvar, Mutex};
use std::thread;

use ferry_ring::{ReserveError, SleepPrep, Wake, heap};

const RECORDS: u64 = if cfg!(miri) { 300 } else { 1_000_000 };

fn len_of(seq: u64, max: usize) -> usize {
    // Mostly small records, some large ones, some empty.
    let x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
    match x % 16 {
        0 => 0,
        1 => (x as usize) % (max + 1),
        _ => (x as usize) % 80,
    }
    .min(max)
}

fn fill(seq: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (seq as usize).wrapping_mul(31).wrapping_add(i) as u8;
    }
}

fn check(seq: u64, buf: &[u8], max: usize) {
    assert_eq!(buf.len(), len_of(seq, max), "record {seq}: wrong length");
    for (i, b) in buf.iter().enumerate() {
        assert_eq!(
            *b,
            (seq as usize).wrapping_mul(31).wrapping_add(i) as u8,
            "record {seq} byte {i}"
        );
    }
}

#[test]
fn two_threads_spinning_move_every_record_intact() {
    let (mut p, mut c) = heap(4096).unwrap();
    let max = p.max_record_len();
    let producer = thread::spawn(move || {
        for seq in 0..RECORDS {
            let len = len_of(seq, max);
            loop {
                match p.try_reserve(len) {
                    Ok(mut g) => {
                        fill(seq, g.as_mut_slice());
                        let _ = g.commit(); // nobody sleeps: spinning consumer
                        break;
                    }
                    Err(ReserveError::Full) => thread::yield_now(),
                    Err(e) => panic!("producer: {e}"),
                }
            }
        }
    });
    let mut seq = 0;
    while seq < RECORDS {
        match c.try_peek().expect("consumer not corrupted") {
            Some(g) => {
                check(seq, g.as_slice(), max);
                let _ = g.release();
                seq += 1;
            }
            None => thread::yield_now(),
        }
    }
    producer.join().unwrap();
    assert!(c.try_peek().unwrap().is_none());
}

#[test]
fn two_threads_batching_move_every_record_intact() {
    let (mut p, mut c) = heap(1024).unwrap();
    let max = p.max_record_len();
    let producer = thread::spawn(move || {
        let mut seq = 0;
        while seq < RECORDS {
            // Stage up to 8 records, then publish them with one store.
            for _ in 0..8 {
                if seq == RECORDS {
                    break;
                }
                match p.try_reserve(len_of(seq, max)) {
                    Ok(mut g) => {
                        fill(seq, g.as_mut_slice());
                        g.stage();
                        seq += 1;
                    }
                    Err(ReserveError::Full) => break,
                    Err(e) => panic!("producer: {e}"),
                }
            }
            if p.staged_bytes() == 0 {
                thread::yield_now();
            }
            let _ = p.publish();
        }
    });
    let mut seq = 0;
    while seq < RECORDS {
        let mut batch = 0;
        while let Some(g) = c.try_peek().expect("consumer not corrupted") {
            check(seq, g.as_slice(), max);
            g.consume();
            seq += 1;
            batch += 1;
            if batch == 5 {
                break;
            }
        }
        if batch == 0 {
            thread::yield_now();
        }
        let _ = c.release_consumed();
    }
    producer.join().unwrap();
}

/// A futex stand-in: wait blocks while the word equals the expected value.
/// `abort` turns a panic on the other thread into a failure instead of a hang.
#[derive(Default)]
struct Parker {
    lock: Mutex<()>,
    cv: Condvar,
    abort: AtomicBool,
}

impl Parker {
    fn wait(&self, word: &AtomicU32, expected: u32) {
        let mut g = self.lock.lock().unwrap();
        while word.load(Ordering::SeqCst) == expected {
            assert!(
                !self.abort.load(Ordering::SeqCst),
                "the other thread panicked"
            );
            g = self.cv.wait(g).unwrap();
        }
    }
    fn abort(&self) {
        self.abort.store(true, Ordering::SeqCst);
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.cv.notify_all();
    }
    fn wake(&self, w: Wake) {
        if w.is_needed() {
            let _g = self.lock.lock().unwrap();
            self.cv.notify_all();
        }
    }
}

#[test]
fn two_threads_sleeping_never_lose_a_wake_up() {
    // A tiny ring so that both sides sleep often; no timeouts anywhere, so a
    // lost wake-up hangs the test (and the harness reports it).
    let n = if cfg!(miri) { 100 } else { 200_000 };
    let (mut p, mut c) = heap(128).unwrap();
    let max = p.max_record_len();
    let parkers = std::sync::Arc::new((Parker::default(), Parker::default())); // (consumer's, producer's)
    let pk = std::sync::Arc::clone(&parkers);
    let token = NonZeroU32::new(1).unwrap();
    let producer = thread::spawn(move || {
        struct AbortOnPanic<'a>(&'a Parker);
        impl Drop for AbortOnPanic<'_> {
            fn drop(&mut self) {
                if thread::panicking() {
                    self.0.abort();
                }
            }
        }
        let _guard = AbortOnPanic(&pk.0);
        for seq in 0..n {
            let len = len_of(seq, max);
            loop {
                match p.try_reserve(len) {
                    Ok(mut g) => {
                        fill(seq, g.as_mut_slice());
                        pk.0.wake(g.commit());
                        break;
                    }
                    Err(ReserveError::Full) => match p.prepare_sleep(len, token).unwrap() {
                        SleepPrep::Ready => {}
                        SleepPrep::Sleep => {
                            pk.1.wait(p.producer_sleep_word(), token.get());
                            p.cancel_sleep();
                        }
                    },
                    Err(e) => panic!("producer: {e}"),
                }
            }
        }
    });
    let mut seq = 0;
    while seq < n {
        match c.try_peek().unwrap() {
            Some(g) => {
                check(seq, g.as_slice(), max);
                parkers.1.wake(g.release());
                seq += 1;
            }
            None => match c.prepare_sleep(token).unwrap() {
                SleepPrep::Ready => {}
                SleepPrep::Sleep => {
                    parkers.0.wait(c.consumer_sleep_word(), token.get());
                    c.cancel_sleep();
                }
            },
        }
    }
    producer.join().unwrap();
}
