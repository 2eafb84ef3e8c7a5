//! Loom model of the sleep protocol driven by `WaitPolicy::wait_until`: no interleaving of
//! consumer and producer loses the wake-up.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p ferry-notify --test loom_sleep --release`.
//!
//! The futex is emulated with a loom `Mutex` + `Condvar` with the kernel's semantics: the
//! waiter checks "word == expected" and enqueues atomically with respect to wakers, and a wake
//! with nobody queued is lost (it does not latch). When the producer has finished it wakes
//! everyone once more; a sleeper whose word still holds the token at that point was missed (a
//! lost wake-up) and panics. The broken variant (no re-check after announcing the sleep) must be
//! caught, which shows the model can fail.

#![cfg(loom)]

use loom::sync::atomic::{AtomicU32, Ordering::*, fence};
use loom::sync::{Arc, Condvar, Mutex};

use ferry_notify::{WaitOutcome, WaitPolicy};

const TOKEN: u32 = 1;

#[derive(Default)]
struct Futex {
    /// Set (under `queue`) once the producer has sent everything.
    producer_done: AtomicU32,
    queue: Mutex<()>,
    cv: Condvar,
}

impl Futex {
    /// `FUTEX_WAIT`: sleeps only while the word holds `expected`. A sleeper that is still
    /// (or again) asleep after the producer finished can never be woken: that is the lost
    /// wake-up, reported as a panic instead of a deadlock so that the model can show it.
    fn wait(&self, word: &AtomicU32, expected: u32) {
        let mut guard = self.queue.lock().unwrap();
        if word.load(SeqCst) == expected {
            assert!(self.producer_done.load(SeqCst) == 0, "lost wake-up");
            guard = self.cv.wait(guard).unwrap();
            assert!(
                word.load(SeqCst) != expected || self.producer_done.load(SeqCst) == 0,
                "lost wake-up"
            );
        }
        drop(guard);
    }

    /// `FUTEX_WAKE` of one waiter; lost if nobody waits.
    fn wake(&self) {
        let _guard = self.queue.lock().unwrap();
        self.cv.notify_one();
    }

    /// Wakes every sleeper one last time so that a stranded one can report itself.
    fn finish(&self) {
        let _guard = self.queue.lock().unwrap();
        self.producer_done.store(1, SeqCst);
        self.cv.notify_all();
    }
}

#[derive(Default)]
struct Shared {
    data: AtomicU32,
    sleep: AtomicU32,
    futex: Futex,
}

fn producer(s: &Shared, value: u32) {
    s.data.store(value, Release);
    fence(SeqCst);
    if s.sleep.load(SeqCst) != 0 && s.sleep.swap(0, SeqCst) != 0 {
        s.futex.wake();
    }
}

fn consumer(s: &Shared, policy: WaitPolicy, value: u32, recheck: bool) -> WaitOutcome {
    policy
        .wait_until(
            || s.data.load(Acquire) >= value,
            || {
                s.sleep.store(TOKEN, SeqCst);
                fence(SeqCst);
                if recheck && s.data.load(SeqCst) >= value {
                    s.sleep.swap(0, SeqCst);
                    false
                } else {
                    true
                }
            },
            |_timeout| {
                s.futex.wait(&s.sleep, TOKEN);
                Ok(WaitOutcome::Woken)
            },
            None,
        )
        .unwrap()
}

fn model(policy: WaitPolicy, messages: u32, recheck: bool) {
    loom::model(move || {
        let s = Arc::new(Shared::default());
        let p = s.clone();
        let t = loom::thread::spawn(move || {
            for v in 1..=messages {
                producer(&p, v);
            }
            p.futex.finish();
        });
        for v in 1..=messages {
            assert_eq!(consumer(&s, policy, v, recheck), WaitOutcome::Woken);
        }
        t.join().unwrap();
    });
}

#[test]
fn park_only_never_loses_a_wakeup() {
    model(WaitPolicy::ParkOnly, 2, true);
}

#[test]
fn adaptive_never_loses_a_wakeup() {
    model(WaitPolicy::Adaptive { spin: 1, yields: 1 }, 1, true);
}

#[test]
#[should_panic(expected = "lost wake-up")]
fn skipping_the_recheck_loses_wakeups() {
    model(WaitPolicy::ParkOnly, 1, false);
}
