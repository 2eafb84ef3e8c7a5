//! Waking the other process: shared-memory futex words, pollable doorbells, and an adaptive
//! spin-then-park wait policy.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
//! use std::time::{Duration, Instant};
//! use ferry_notify::{Parker, Unparker, WaitOutcome, WaitPolicy};
//!
//! const TOKEN: u32 = 1; // "I sleep on my Parker"
//! // In real use both live in shared memory; here two threads stand in for two processes.
//! let data = Arc::new(AtomicU32::new(0));
//! let sleep_word = Arc::new(AtomicU32::new(0));
//!
//! let parker = Parker::new()?;
//! let unparker = Unparker::open(parker.spec())?; // the spec is what you send to the peer
//!
//! let (d, w) = (data.clone(), sleep_word.clone());
//! let producer = std::thread::spawn(move || {
//!     d.store(42, SeqCst);                    // publish
//!     if w.swap(0, SeqCst) != 0 {             // is the consumer asleep? take its token...
//!         unparker.unpark(&w).unwrap();       // ...and only then wake it
//!     }
//! });
//!
//! let outcome = WaitPolicy::default().wait_until(
//!     || data.load(SeqCst) != 0,                          // ready?
//!     || {                                                // announce the sleep, re-check
//!         sleep_word.store(TOKEN, SeqCst);
//!         if data.load(SeqCst) != 0 { sleep_word.store(0, SeqCst); false } else { true }
//!     },
//!     |timeout| parker.park(&sleep_word, TOKEN, timeout), // block while word == TOKEN
//!     Some(Instant::now() + Duration::from_secs(10)),
//! )?;
//! assert_eq!(outcome, WaitOutcome::Woken);
//! assert_eq!(data.load(SeqCst), 42);
//! producer.join().unwrap();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What is here
//!
//! * [`word`]: wait on a 32-bit word in shared memory while it holds an expected value, and
//!   wake one/all waiters. Linux: shared futex. macOS 14.4+: `os_sync_wait_on_address` with
//!   `OS_SYNC_WAIT_ON_ADDRESS_SHARED` (resolved at run time). Elsewhere
//!   [`word::is_supported`] is `false` and the calls return [`NotifyError::Unsupported`].
//!   Between the threads of **one** process, [`word::wait_in_process`] and
//!   [`word::wake_one_in_process`] / [`word::wake_all_in_process`] work on every OS. Linux:
//!   private futex (`FUTEX_PRIVATE_FLAG`). Windows: `WaitOnAddress` / `WakeByAddressSingle` /
//!   `WakeByAddressAll`. macOS 14.4+: `os_sync_wait_on_address` without the `SHARED` flag;
//!   older macOS: a process-wide table of condition variables keyed by the word's address.
//! * [`Parker`] / [`Unparker`] / [`ParkerSpec`]: the same "wait on a word" on **every** OS.
//!   The waiting side creates a `Parker` and sends its [`ParkerSpec`] (a short string) to the
//!   peer, which opens an `Unparker`. Linux: a futex on the word (the spec names no object).
//!   Windows: a named auto-reset event in `Local\` whose name holds the user's SID and 128
//!   random bits (`WaitOnAddress` does not work across processes). macOS: `os_sync` where
//!   available, else a POSIX named semaphore.
//! * [`Doorbell`]: a wake-up an event loop can poll (tokio `AsyncFd`, epoll, a server
//!   watching many connections). Linux: an eventfd. Windows: an auto-reset event (a
//!   waitable handle), named, or unnamed and handed over with `DuplicateHandle`. macOS: a
//!   non-blocking pipe.
//! * [`WaitPolicy`]: spin ([`core::hint::spin_loop`]) for a bounded budget, then
//!   [`std::thread::yield_now`], then park; with a process-wide spin governor
//!   ([`policy::spinning_threads`]) so that more spinners than CPUs never happens.
//!
//! # What this crate is NOT
//!
//! * Not a ring or a queue: it carries no data, only "look again".
//! * Not async: it never touches tokio. The transport registers a [`Doorbell`]'s descriptor
//!   or handle with its event loop.
//! * Not a lock or a condition variable, and it does no shared-memory setup or fd passing:
//!   the transport maps the memory and sends descriptors (`SCM_RIGHTS`) or names.
//! * Not a guard against a hostile peer of the same user: names are validated and scoped to
//!   the user, but a peer can always wake you spuriously. Spurious wake-ups are part of the
//!   contract; callers re-check their condition.
//!
//! # The sleep protocol
//!
//! Waking must never be lost, yet the producer must not pay a system call per message. The
//! ring (`ferry-ring`, "sleep protocol" in its docs) and this crate agree on one protocol
//! around a shared `AtomicU32` *sleep word* per direction:
//!
//! 1. Consumer, before sleeping: store a nonzero token into the sleep word (`SeqCst`), full
//!    fence, re-check the ring. If it is non-empty, retract (swap the word to 0) and go on;
//!    otherwise block "while word == token" ([`word::wait`], [`Parker::park`], or
//!    [`Doorbell::wait`] for a doorbell token).
//! 2. Producer, after publishing (Release store, `SeqCst` fence): read the sleep word; if it
//!    is nonzero, swap it to 0 and **then** wake through the mechanism the token names
//!    ([`word::wake_one`], [`Unparker::unpark`], [`Doorbell::ring`]).
//!
//! Because the word changes before the wake, a futex wait that starts late returns at once
//! (`EAGAIN`); event- and pipe-based mechanisms latch the wake until the waiter consumes it.
//! Either way a wake-up that races with the sleep is never lost; at worst it arrives as a
//! spurious wake-up later, which [`WaitPolicy::wait_until`] absorbs by re-checking.
//!
//! # Choosing a wait policy
//!
//! Round trips between two processes (`cargo bench -p ferry-notify --bench wake_latency`,
//! 2-vCPU AMD EPYC VM, load average ~6 from other builds, so treat them as orientation):
//!
//! | policy | p50, two CPUs | p99, two CPUs | p50, one CPU | p99, one CPU |
//! |---|---|---|---|---|
//! | `Spin` | 0.40 µs | 0.57 µs | (stalls until the scheduler tick) | |
//! | `default()` (adaptive) | 0.39 µs | 1.4 µs | 4.5 µs | 6.2 µs |
//! | `ParkOnly` (futex) | 25 µs | 4 ms | 5.4 µs | 9.5 µs |
//! | raw futex, for comparison | 24 µs | 3.5 ms | 4.9 µs | 7.7 µs |
//!
//! Placement dominates: a blocking wake-up across CPUs pays for waking an idle vCPU, on one CPU
//! only a context switch. The adaptive default spins ~10–25 µs (yielding every
//! [`policy::SPIN_YIELD_EVERY`] iterations so a peer waiting for *this* CPU can run), yields a
//! few times, then parks: it gets spinning latency while both sides are busy and costs no CPU
//! when idle. Use `ParkOnly` for connections that are mostly idle and latency-insensitive, and
//! `Spin` only when each side owns a core.
//!
//! # Errors
//!
//! Hot-path calls return the small `Copy` [`NotifyError`]; creating and opening objects
//! returns [`SetupError`], whose messages say what to do (descriptor limits, names,
//! permissions, unsupported kernels).

#![warn(missing_docs)]

pub mod barrier;
mod error;
pub mod policy;
mod sys;

use core::sync::atomic::AtomicU32;
use core::time::Duration;

pub use error::{NotifyError, SetupError};
pub use policy::WaitPolicy;

/// How a wait ended (when it did not fail).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use]
pub enum WaitOutcome {
    /// The wait returned before its timeout: woken, the word no longer held the expected
    /// value, the doorbell was rung, or spuriously (signal, stray wake). Re-check the
    /// condition. From [`WaitPolicy::wait_until`] it means the condition was observed true.
    Woken,
    /// The timeout elapsed.
    TimedOut,
}

/// Wait on a 32-bit word in shared memory; wake its waiters.
///
/// The word must live in memory shared by both processes (a `MAP_SHARED` mapping); these
/// calls use the *shared* flavour of the OS primitive, so they work across processes that map
/// the page at different addresses. Supported on Linux (futex) and on macOS 14.4+
/// (`os_sync_wait_on_address`); see [`is_supported`](crate::word::is_supported). Use [`Parker`] for code that must run
/// everywhere.
///
/// Between the threads of one process, [`wait_in_process`](crate::word::wait_in_process) and
/// its two wakes work on every OS, on any word (shared memory or not). The two families do not
/// mix: a waiter of one is not guaranteed to be woken by the other's wakes.
pub mod word {
    use super::*;

    /// Whether word waits work on this system (checked once, cheap afterwards).
    ///
    /// `true` on Linux; on macOS `true` when `os_sync_wait_on_address` exists (14.4+);
    /// `false` on Windows.
    pub fn is_supported() -> bool {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        return true;
        #[cfg(target_vendor = "apple")]
        return crate::sys::macos::os_sync::is_supported();
        #[cfg(windows)]
        return false;
    }

    /// Blocks while `*word == expected`, for at most `timeout` (`None` = no limit).
    ///
    /// Returns [`WaitOutcome::Woken`] at once if the word does not hold `expected`, after a
    /// wake, or spuriously (signals); [`WaitOutcome::TimedOut`] after the timeout. The caller
    /// re-checks its condition either way. Allocation-free; one system call.
    ///
    /// Linux: [futex(2)](https://man7.org/linux/man-pages/man2/futex.2.html) `FUTEX_WAIT`
    /// without `FUTEX_PRIVATE_FLAG`. macOS: `os_sync_wait_on_address_with_timeout` with
    /// `OS_SYNC_WAIT_ON_ADDRESS_SHARED`.
    ///
    /// # Errors
    ///
    /// [`NotifyError::Unsupported`] where [`is_supported`] is `false`;
    /// [`NotifyError::InvalidObject`] if the kernel rejects the address.
    pub fn wait(
        word: &AtomicU32,
        expected: u32,
        timeout: Option<Duration>,
    ) -> Result<WaitOutcome, NotifyError> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        return crate::sys::linux::futex::wait(word, expected, timeout);
        #[cfg(target_vendor = "apple")]
        return crate::sys::macos::os_sync::wait(word, expected, timeout);
        #[cfg(windows)]
        {
            let _ = (word, expected, timeout);
            Err(NotifyError::Unsupported)
        }
    }

    /// Wakes at most one thread blocked in [`wait`] on `word`, in any process.
    ///
    /// Change the word *before* waking (see the [sleep protocol](crate#the-sleep-protocol)).
    /// Waking with no waiter is a cheap no-op system call.
    ///
    /// # Errors
    ///
    /// As for [`wait`].
    pub fn wake_one(word: &AtomicU32) -> Result<(), NotifyError> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        return crate::sys::linux::futex::wake(word, 1);
        #[cfg(target_vendor = "apple")]
        return crate::sys::macos::os_sync::wake(word, false);
        #[cfg(windows)]
        {
            let _ = word;
            Err(NotifyError::Unsupported)
        }
    }

    /// Wakes every thread blocked in [`wait`] on `word`, in any process.
    ///
    /// # Errors
    ///
    /// As for [`wait`].
    pub fn wake_all(word: &AtomicU32) -> Result<(), NotifyError> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        return crate::sys::linux::futex::wake(word, i32::MAX as u32);
        #[cfg(target_vendor = "apple")]
        return crate::sys::macos::os_sync::wake(word, true);
        #[cfg(windows)]
        {
            let _ = word;
            Err(NotifyError::Unsupported)
        }
    }

    /// Blocks while `*word == expected`, for at most `timeout` (`None` = no limit); woken only
    /// by [`wake_one_in_process`] / [`wake_all_in_process`] from threads of **this** process.
    ///
    /// The semantics of [`wait`], on every OS: [`WaitOutcome::Woken`] at once if the word does
    /// not hold `expected`, after a wake, or spuriously; [`WaitOutcome::TimedOut`] after the
    /// timeout. The caller re-checks its condition either way. Allocation-free.
    ///
    /// Linux: futex `FUTEX_WAIT | FUTEX_PRIVATE_FLAG`. Windows: `WaitOnAddress` (millisecond
    /// resolution, rounded up). macOS 14.4+: `os_sync_wait_on_address_with_timeout` without
    /// `OS_SYNC_WAIT_ON_ADDRESS_SHARED`; before 14.4 a process-wide table of 64 mutex +
    /// condition variable buckets keyed by the word's address (a wake takes the bucket's mutex;
    /// words sharing a bucket see spurious wake-ups).
    ///
    /// # Errors
    ///
    /// [`NotifyError::InvalidObject`] if the kernel rejects the address; [`NotifyError::Os`]
    /// for any other failure the OS reports.
    pub fn wait_in_process(
        word: &AtomicU32,
        expected: u32,
        timeout: Option<Duration>,
    ) -> Result<WaitOutcome, NotifyError> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        return crate::sys::linux::futex::wait_private(word, expected, timeout);
        #[cfg(windows)]
        return crate::sys::windows::address::wait(word, expected, timeout);
        #[cfg(target_vendor = "apple")]
        {
            use crate::sys::macos::os_sync;
            if os_sync::is_supported() {
                os_sync::wait_scoped(word, expected, timeout, os_sync::Scope::Process)
            } else {
                Ok(crate::sys::address_table::wait(word, expected, timeout))
            }
        }
    }

    /// Wakes at most one thread of this process blocked in [`wait_in_process`] on `word` (on
    /// macOS before 14.4: every such thread, see there).
    ///
    /// Change the word *before* waking (see the [sleep protocol](crate#the-sleep-protocol)).
    /// Waking with no waiter is cheap.
    ///
    /// # Errors
    ///
    /// As for [`wait_in_process`] (never on Windows, where waking cannot fail).
    pub fn wake_one_in_process(word: &AtomicU32) -> Result<(), NotifyError> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        return crate::sys::linux::futex::wake_private(word, 1);
        #[cfg(windows)]
        {
            crate::sys::windows::address::wake(word, false);
            Ok(())
        }
        #[cfg(target_vendor = "apple")]
        {
            use crate::sys::macos::os_sync;
            if os_sync::is_supported() {
                os_sync::wake_scoped(word, false, os_sync::Scope::Process)
            } else {
                crate::sys::address_table::wake(word);
                Ok(())
            }
        }
    }

    /// Wakes every thread of this process blocked in [`wait_in_process`] on `word`.
    ///
    /// # Errors
    ///
    /// As for [`wake_one_in_process`].
    pub fn wake_all_in_process(word: &AtomicU32) -> Result<(), NotifyError> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        return crate::sys::linux::futex::wake_private(word, i32::MAX as u32);
        #[cfg(windows)]
        {
            crate::sys::windows::address::wake(word, true);
            Ok(())
        }
        #[cfg(target_vendor = "apple")]
        {
            use crate::sys::macos::os_sync;
            if os_sync::is_supported() {
                os_sync::wake_scoped(word, true, os_sync::Scope::Process)
            } else {
                crate::sys::address_table::wake(word);
                Ok(())
            }
        }
    }

    #[cfg(test)]
    mod in_process_tests {
        use super::*;
        use core::sync::atomic::Ordering::SeqCst;
        use std::sync::Arc;
        use std::time::Instant;

        /// A thread blocked with a 10 s timeout, woken by `wake` 50 ms later: returns Woken,
        /// well before its timeout.
        fn woken_by(wake: fn(&AtomicU32) -> Result<(), NotifyError>) {
            let word = Arc::new(AtomicU32::new(7));
            let w = word.clone();
            let waiter = std::thread::spawn(move || {
                let started = Instant::now();
                // Spurious wake-ups are allowed: wait again while the word is unchanged.
                for waits in 1.. {
                    let outcome = wait_in_process(&w, 7, Some(Duration::from_secs(10)));
                    if outcome != Ok(WaitOutcome::Woken) || w.load(SeqCst) != 7 {
                        return (outcome, started.elapsed(), waits);
                    }
                }
                unreachable!()
            });
            std::thread::sleep(Duration::from_millis(50));
            let woke_at = Instant::now();
            word.store(8, SeqCst);
            wake(&word).expect("wake");
            let (outcome, took, waits) = waiter.join().expect("waiter");
            assert_eq!(outcome, Ok(WaitOutcome::Woken));
            // A wait that does not block would have returned thousands of times in 50 ms.
            assert!(waits < 50, "{waits} waits: the wait does not block");
            assert!(
                took < Duration::from_secs(5),
                "the wait ended after {took:?}, so not by the wake"
            );
            let latency = woke_at.elapsed();
            assert!(
                latency < Duration::from_secs(5),
                "woken {latency:?} after the wake"
            );
        }

        #[test]
        fn a_waiter_is_woken_by_wake_one_in_process() {
            woken_by(wake_one_in_process);
        }

        #[test]
        fn a_waiter_is_woken_by_wake_all_in_process() {
            woken_by(wake_all_in_process);
        }

        #[test]
        fn wake_all_in_process_wakes_every_waiter() {
            let word = Arc::new(AtomicU32::new(1));
            let waiters: Vec<_> = (0..4)
                .map(|_| {
                    let w = word.clone();
                    std::thread::spawn(move || {
                        let started = Instant::now();
                        while w.load(SeqCst) == 1 {
                            let outcome = wait_in_process(&w, 1, Some(Duration::from_secs(10)));
                            assert_eq!(outcome, Ok(WaitOutcome::Woken), "timed out, not woken");
                        }
                        started.elapsed()
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_millis(50));
            word.store(2, SeqCst);
            wake_all_in_process(&word).expect("wake all");
            for w in waiters {
                let took = w.join().expect("waiter");
                assert!(took < Duration::from_secs(5), "woken after {took:?}");
            }
        }

        #[test]
        fn wait_in_process_returns_at_once_when_the_word_differs() {
            let word = AtomicU32::new(3);
            let started = Instant::now();
            assert_eq!(
                wait_in_process(&word, 4, Some(Duration::from_secs(10))),
                Ok(WaitOutcome::Woken)
            );
            assert_eq!(wait_in_process(&word, 4, None), Ok(WaitOutcome::Woken));
            let took = started.elapsed();
            assert!(took < Duration::from_secs(5), "took {took:?}");
        }

        #[test]
        fn wait_in_process_times_out_when_nobody_wakes() {
            let word = AtomicU32::new(5);
            let started = Instant::now();
            // Spurious wake-ups may end a wait early; the deadline is what must hold.
            let mut spurious = 0;
            let outcome = loop {
                let left = Duration::from_millis(50).saturating_sub(started.elapsed());
                match wait_in_process(&word, 5, Some(left)) {
                    Ok(WaitOutcome::Woken) if spurious < 50 => spurious += 1,
                    other => break other,
                }
            };
            let took = started.elapsed();
            assert_eq!(outcome, Ok(WaitOutcome::TimedOut));
            // Windows rounds to milliseconds and its timer ticks may end a wait a little
            // early; allow a few milliseconds of slack.
            assert!(
                took >= Duration::from_millis(40),
                "timed out after only {took:?}"
            );
            assert!(took < Duration::from_secs(5), "timed out after {took:?}");
            assert_eq!(
                wait_in_process(&word, 5, Some(Duration::ZERO)),
                Ok(WaitOutcome::TimedOut)
            );
        }
    }
}

mod parker;
pub use parker::{Parker, ParkerSpec, Unparker};

mod doorbell;
pub use doorbell::Doorbell;
