//! macOS: `os_sync_wait_on_address` (14.4+, resolved at run time), POSIX named semaphores as
//! the fallback parker, and a non-blocking pipe as the pollable doorbell.

pub(crate) mod os_sync;
pub(crate) mod pipe;
pub(crate) mod semaphore;
