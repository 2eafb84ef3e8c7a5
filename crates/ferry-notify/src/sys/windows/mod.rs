//! Windows: auto-reset events, named (`Local\ferry-<SID>-<random>`) or unnamed (handed over
//! with `DuplicateHandle`); and `WaitOnAddress` for waits within one process.

pub(crate) mod address;
pub(crate) mod event;

use core::time::Duration;

use windows_sys::Win32::System::Threading::INFINITE;

/// A wait's timeout in milliseconds: `INFINITE` for none; rounded up, so that a wait never
/// returns before its timeout; capped just below `INFINITE`.
pub(crate) fn millis(timeout: Option<Duration>) -> u32 {
    match timeout {
        None => INFINITE,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000);
            u32::try_from(ms).map_or(INFINITE - 1, |m| m.min(INFINITE - 1))
        }
    }
}
