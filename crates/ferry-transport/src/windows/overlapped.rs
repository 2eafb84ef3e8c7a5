//! Overlapped I/O on the control pipe: one operation issued, waited for on its own event (up
//! to a timeout, or until a stop event is set), and cancelled and reaped if it must give up, so
//! that no buffer is left in the kernel's hands when the call returns.

use std::os::windows::io::{AsRawHandle, OwnedHandle};
use std::time::Duration;

use windows_sys::Win32::Foundation::{
    ERROR_IO_PENDING, ERROR_OPERATION_ABORTED, GetLastError, HANDLE, WAIT_OBJECT_0, WAIT_TIMEOUT,
};
use windows_sys::Win32::System::IO::{CancelIoEx, GetOverlappedResult, OVERLAPPED};
use windows_sys::Win32::System::Threading::{CreateEventW, INFINITE, WaitForMultipleObjects};

use super::owned;
use crate::error::Error;

/// A manual-reset, non-signalled, unnamed event.
pub(crate) fn new_event() -> Result<OwnedHandle, Error> {
    // SAFETY: null attributes and name; nothing is retained.
    let raw = unsafe { CreateEventW(core::ptr::null(), 1, 0, core::ptr::null()) };
    // SAFETY: `raw` was just returned by CreateEventW on this thread.
    unsafe { owned(raw) }.map_err(|e| Error::io("CreateEventW", e))
}

/// How an overlapped operation ended.
pub(crate) enum Outcome {
    /// Completed, with this many bytes transferred.
    Done(u32),
    /// Failed with this Win32 error.
    Failed(u32),
    /// The timeout passed; the operation was cancelled.
    TimedOut,
    /// The stop event was set; the operation was cancelled.
    Stopped,
}

/// Runs one overlapped operation on `file`: `start` issues it with the OVERLAPPED it is given;
/// this waits for it (up to `timeout`, or until `stop` is set) and, if it must give up, cancels
/// it and waits for the cancellation. When this returns the kernel no longer uses the
/// OVERLAPPED or the operation's buffer.
pub(crate) fn run_overlapped(
    file: HANDLE,
    timeout: Option<Duration>,
    stop: Option<HANDLE>,
    start: impl FnOnce(*mut OVERLAPPED) -> i32,
) -> Result<Outcome, Error> {
    let event = new_event()?;
    let mut ov = OVERLAPPED {
        hEvent: event.as_raw_handle() as HANDLE,
        ..OVERLAPPED::default()
    };
    let ovp: *mut OVERLAPPED = &mut ov;
    if start(ovp) != 0 {
        return Ok(reap(file, ovp, false));
    }
    // SAFETY: reads the calling thread's last-error value, set by the call in `start`.
    let err = unsafe { GetLastError() };
    if err != ERROR_IO_PENDING {
        // Nothing is pending: the call failed outright (or, for ConnectNamedPipe, a client
        // was already connected: ERROR_PIPE_CONNECTED).
        return Ok(Outcome::Failed(err));
    }
    let ms = millis(timeout);
    let mut handles = [event.as_raw_handle() as HANDLE, core::ptr::null_mut()];
    let n = match stop {
        Some(s) => {
            handles[1] = s;
            2
        }
        None => 1,
    };
    // SAFETY: `handles[..n]` are live event handles.
    let woke = unsafe { WaitForMultipleObjects(n, handles.as_ptr(), 0, ms) };
    Ok(match woke {
        WAIT_OBJECT_0 => reap(file, ovp, false),
        w if w == WAIT_OBJECT_0 + 1 => cancel(file, ovp, Outcome::Stopped),
        WAIT_TIMEOUT => cancel(file, ovp, Outcome::TimedOut),
        _ => {
            // SAFETY: reads the calling thread's last-error value, set by the failed wait.
            let code = unsafe { GetLastError() };
            match cancel(file, ovp, Outcome::Failed(code)) {
                Outcome::Failed(_) => Outcome::Failed(code),
                other => other,
            }
        }
    })
}

/// Cancels the operation of `ov` and waits until the kernel is done with it; `cancelled` if it
/// was indeed cancelled, its real outcome if it completed meanwhile.
pub(crate) fn cancel(file: HANDLE, ov: *mut OVERLAPPED, cancelled: Outcome) -> Outcome {
    // SAFETY: `file` is live and `ov` is the OVERLAPPED of its pending operation. A failure
    // (ERROR_NOT_FOUND: it completed already) is fine: `reap` waits either way.
    unsafe { CancelIoEx(file, ov) };
    match reap(file, ov, true) {
        Outcome::Failed(ERROR_OPERATION_ABORTED) => cancelled,
        other => other,
    }
}

/// `GetOverlappedResult`, waiting for completion when `wait`.
pub(crate) fn reap(file: HANDLE, ov: *mut OVERLAPPED, wait: bool) -> Outcome {
    let mut n = 0u32;
    // SAFETY: `file` is live and `ov` is the OVERLAPPED of an operation issued on it; `n` is a
    // valid out pointer.
    if unsafe { GetOverlappedResult(file, ov, &mut n, i32::from(wait)) } != 0 {
        Outcome::Done(n)
    } else {
        // SAFETY: reads the calling thread's last-error value, set by GetOverlappedResult.
        Outcome::Failed(unsafe { GetLastError() })
    }
}

/// A wait's timeout in milliseconds: `INFINITE` for none; rounded up, so that a wait never
/// returns before its timeout; capped just below `INFINITE`.
pub(crate) fn millis(timeout: Option<Duration>) -> u32 {
    timeout.map_or(INFINITE, |d| {
        u32::try_from(d.as_nanos().div_ceil(1_000_000))
            .map_or(INFINITE - 1, |m| m.min(INFINITE - 1))
    })
}
