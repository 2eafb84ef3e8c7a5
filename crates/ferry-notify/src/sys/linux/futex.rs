//! Futex on a 32-bit word: shared (not `FUTEX_PRIVATE_FLAG`) for a word inside a shared
//! mapping, private for waits between the threads of this process.
//!
//! A private futex is keyed by (mm, virtual address) and cannot wake another process; a shared
//! futex is keyed by the backing page, so it works across processes that map the same memory
//! at different addresses. The private one skips the kernel's page lookup.
//! See [futex(2)](https://man7.org/linux/man-pages/man2/futex.2.html).

use core::sync::atomic::AtomicU32;
use core::time::Duration;

use rustix::io::Errno;
use rustix::thread::futex;

use crate::{NotifyError, WaitOutcome};

/// `FUTEX_WAIT` (shared) on `word` while it holds `expected`.
///
/// The timeout is relative and measured on `CLOCK_MONOTONIC`. A timeout too large for a
/// `timespec` waits forever.
pub(crate) fn wait(
    word: &AtomicU32,
    expected: u32,
    timeout: Option<Duration>,
) -> Result<WaitOutcome, NotifyError> {
    wait_with(word, futex::Flags::empty(), expected, timeout)
}

/// `FUTEX_WAIT | FUTEX_PRIVATE_FLAG` on `word` while it holds `expected`: only a
/// [`wake_private`] from a thread of this process wakes it.
pub(crate) fn wait_private(
    word: &AtomicU32,
    expected: u32,
    timeout: Option<Duration>,
) -> Result<WaitOutcome, NotifyError> {
    wait_with(word, futex::Flags::PRIVATE, expected, timeout)
}

fn wait_with(
    word: &AtomicU32,
    flags: futex::Flags,
    expected: u32,
    timeout: Option<Duration>,
) -> Result<WaitOutcome, NotifyError> {
    let ts = timeout.and_then(|d| futex::Timespec::try_from(d).ok());
    match futex::wait(word, flags, expected, ts.as_ref()) {
        // EAGAIN: the word no longer held `expected`; EINTR: a signal. Both are "re-check".
        Ok(()) | Err(Errno::AGAIN) | Err(Errno::INTR) => Ok(WaitOutcome::Woken),
        Err(Errno::TIMEDOUT) => Ok(WaitOutcome::TimedOut),
        Err(e) => Err(errno_to_notify(e)),
    }
}

/// `FUTEX_WAKE` (shared) for at most `count` waiters.
pub(crate) fn wake(word: &AtomicU32, count: u32) -> Result<(), NotifyError> {
    futex::wake(word, futex::Flags::empty(), count)
        .map(drop)
        .map_err(errno_to_notify)
}

/// `FUTEX_WAKE | FUTEX_PRIVATE_FLAG` for at most `count` waiters of [`wait_private`].
pub(crate) fn wake_private(word: &AtomicU32, count: u32) -> Result<(), NotifyError> {
    futex::wake(word, futex::Flags::PRIVATE, count)
        .map(drop)
        .map_err(errno_to_notify)
}

pub(crate) fn errno_to_notify(e: Errno) -> NotifyError {
    match e {
        Errno::FAULT | Errno::BADF | Errno::INVAL => NotifyError::InvalidObject,
        Errno::NOSYS => NotifyError::Unsupported,
        e => NotifyError::Os(e.raw_os_error()),
    }
}
