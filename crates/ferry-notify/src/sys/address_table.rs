//! Waiting on a word's address within this process without an OS address wait: a fixed,
//! process-wide table of mutex + condition variable buckets, picked by hashing the address.
//!
//! The fallback of [`word::wait_in_process`](crate::word::wait_in_process) on macOS before
//! 14.4, where `os_sync_wait_on_address` does not exist (and the private `__ulock_wait` is
//! not used). Compiled on every OS for its tests.
//!
//! No wake-up is lost: a waiter compares the word with `expected` while it holds its bucket's
//! mutex and blocks on the condition variable without releasing it in between; a waker changes
//! the word *before* waking (the sleep protocol), then takes the same mutex, so either the
//! waiter saw the new value or it is already blocked and gets the notification. Different words
//! may share a bucket, so a wake notifies every waiter of the bucket (a waiter of another word
//! sees a spurious wake-up, which the contract allows), even for "wake one". Nothing is
//! allocated per wait; std's mutexes and condition variables may allocate once, on first use.

use core::sync::atomic::{AtomicU32, Ordering};
use core::time::Duration;
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::WaitOutcome;

/// Number of buckets: a power of two, enough that unrelated waiters rarely share one.
const BUCKETS: usize = 64;

struct Bucket {
    lock: Mutex<()>,
    cond: Condvar,
}

static TABLE: [Bucket; BUCKETS] = [const {
    Bucket {
        lock: Mutex::new(()),
        cond: Condvar::new(),
    }
}; BUCKETS];

/// The bucket of `word`'s address (Fibonacci hashing of the 4-byte-aligned address).
fn bucket(word: &AtomicU32) -> &'static Bucket {
    let index = (word.as_ptr() as usize as u64 >> 2).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        >> (u64::BITS - BUCKETS.trailing_zeros());
    &TABLE[index as usize]
}

/// Poisoning carries no meaning here (the mutex guards no data).
fn lock(m: &Mutex<()>) -> MutexGuard<'_, ()> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Blocks while `*word == expected`, for at most `timeout` (`None`: no limit), until a
/// [`wake`] on a word of the same bucket.
pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> WaitOutcome {
    let b = bucket(word);
    let guard = lock(&b.lock);
    if word.load(Ordering::SeqCst) != expected {
        return WaitOutcome::Woken;
    }
    match timeout {
        None => {
            drop(b.cond.wait(guard).unwrap_or_else(|e| e.into_inner()));
            WaitOutcome::Woken
        }
        Some(d) => {
            let (guard, result) = b
                .cond
                .wait_timeout(guard, d)
                .unwrap_or_else(|e| e.into_inner());
            drop(guard);
            if result.timed_out() {
                WaitOutcome::TimedOut
            } else {
                WaitOutcome::Woken
            }
        }
    }
}

/// Wakes every thread blocked in [`wait`] on `word` (and any other word of its bucket, which
/// see a spurious wake-up). Change the word first.
pub(crate) fn wake(word: &AtomicU32) {
    let b = bucket(word);
    // Taking the mutex orders this wake after every waiter's check of the word: one that read
    // the old value is blocked by now and gets the notification.
    drop(lock(&b.lock));
    b.cond.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn a_waiter_is_woken_by_a_wake_not_by_its_timeout() {
        let word = Arc::new(AtomicU32::new(1));
        let w = word.clone();
        let waiter = std::thread::spawn(move || {
            let started = Instant::now();
            let outcome = wait(&w, 1, Some(Duration::from_secs(10)));
            (outcome, started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(50));
        word.store(2, Ordering::SeqCst);
        wake(&word);
        let (outcome, took) = waiter.join().expect("waiter");
        assert_eq!(outcome, WaitOutcome::Woken);
        assert!(took < Duration::from_secs(5), "woken after {took:?}");
    }

    #[test]
    fn a_changed_word_returns_at_once_and_an_unchanged_one_times_out() {
        let word = AtomicU32::new(3);
        let started = Instant::now();
        assert_eq!(
            wait(&word, 4, Some(Duration::from_secs(10))),
            WaitOutcome::Woken
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        let started = Instant::now();
        assert_eq!(
            wait(&word, 3, Some(Duration::from_millis(30))),
            WaitOutcome::TimedOut
        );
        assert!(started.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn words_in_one_bucket_only_see_spurious_wake_ups() {
        // Find two words that share a bucket; a wake of one may wake the other's waiter, which
        // reports Woken while its word is unchanged (allowed), and never loses the wake of the
        // word that did change.
        let words: Vec<AtomicU32> = (0..(BUCKETS * 2)).map(|_| AtomicU32::new(0)).collect();
        let (a, b) = (0..words.len())
            .flat_map(|i| (i + 1..words.len()).map(move |j| (i, j)))
            .find(|&(i, j)| core::ptr::eq(bucket(&words[i]), bucket(&words[j])))
            .expect("pigeonhole: 128 words in 64 buckets");
        let words = Arc::new(words);
        let ws = words.clone();
        let waiter = std::thread::spawn(move || wait(&ws[a], 0, Some(Duration::from_secs(10))));
        std::thread::sleep(Duration::from_millis(50));
        words[b].store(1, Ordering::SeqCst);
        wake(&words[b]);
        words[a].store(1, Ordering::SeqCst);
        wake(&words[a]);
        assert_eq!(waiter.join().expect("waiter"), WaitOutcome::Woken);
    }
}
