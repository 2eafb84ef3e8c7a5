//! `WaitOnAddress` / `WakeByAddressSingle` / `WakeByAddressAll`: waits on a word between the
//! threads of one process (Windows 8+; Wine implements them). They do not work across
//! processes, even on shared memory, hence the events of [`super::event`] for that.
//!
//! See [WaitOnAddress](https://learn.microsoft.com/en-us/windows/win32/api/synchapi/nf-synchapi-waitonaddress).

use core::sync::atomic::AtomicU32;
use core::time::Duration;

use windows_sys::Win32::Foundation::{ERROR_TIMEOUT, GetLastError};
use windows_sys::Win32::System::Threading::{WaitOnAddress, WakeByAddressAll, WakeByAddressSingle};

use super::millis;
use crate::{NotifyError, WaitOutcome};

/// Blocks while `*word == expected`, for at most `timeout` (milliseconds, rounded up).
pub(crate) fn wait(
    word: &AtomicU32,
    expected: u32,
    timeout: Option<Duration>,
) -> Result<WaitOutcome, NotifyError> {
    // SAFETY: `word` is a live, aligned 4-byte atomic for the whole call (the OS only reads
    // it); `expected` is a local 4-byte value the OS reads during the call only.
    let ok = unsafe {
        WaitOnAddress(
            word.as_ptr().cast_const().cast(),
            (&raw const expected).cast(),
            size_of::<u32>(),
            millis(timeout),
        )
    };
    if ok != 0 {
        // Woken, spuriously, or the word did not hold `expected`.
        return Ok(WaitOutcome::Woken);
    }
    // SAFETY: reads the calling thread's last-error value, set by WaitOnAddress.
    match unsafe { GetLastError() } {
        ERROR_TIMEOUT => Ok(WaitOutcome::TimedOut),
        code => Err(NotifyError::Os(code as i32)),
    }
}

/// Wakes one thread (`all == false`) or every thread blocked in [`wait`] on `word`.
pub(crate) fn wake(word: &AtomicU32, all: bool) {
    let addr = word.as_ptr().cast_const().cast();
    if all {
        // SAFETY: any address may be passed; the OS only uses it as a key.
        unsafe { WakeByAddressAll(addr) };
    } else {
        // SAFETY: as above.
        unsafe { WakeByAddressSingle(addr) };
    }
}
