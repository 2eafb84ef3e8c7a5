//! `os_sync_wait_on_address` / `os_sync_wake_by_address_{any,all}` (macOS 14.4+), with the
//! `*_SHARED` flags for words in shared memory or without them for waits within this process,
//! looked up with `dlsym` at run time so that the binary still starts on older systems (where
//! [`is_supported`] is `false`).
//!
//! See `man 3 os_sync_wait_on_address` and `<os/os_sync_wait_on_address.h>`.

use core::ffi::{c_int, c_void};
use core::sync::atomic::AtomicU32;
use core::time::Duration;
use std::sync::OnceLock;

use crate::{NotifyError, WaitOutcome};

/// `OS_SYNC_WAIT_ON_ADDRESS_SHARED`: the address may be in memory shared between processes.
const WAIT_SHARED: u32 = 1;
/// `OS_SYNC_WAKE_BY_ADDRESS_SHARED`.
const WAKE_SHARED: u32 = 1;
/// `OS_CLOCK_MACH_ABSOLUTE_TIME`, the only clock the timed wait accepts.
const CLOCK_MACH_ABSOLUTE_TIME: u32 = 32;

type WaitFn = unsafe extern "C" fn(*mut c_void, u64, usize, u32) -> c_int;
type WaitTimeoutFn = unsafe extern "C" fn(*mut c_void, u64, usize, u32, u32, u64) -> c_int;
type WakeFn = unsafe extern "C" fn(*mut c_void, usize, u32) -> c_int;

struct Fns {
    wait: WaitFn,
    wait_timeout: WaitTimeoutFn,
    wake_any: WakeFn,
    wake_all: WakeFn,
}

fn lookup(name: &core::ffi::CStr) -> Option<*mut c_void> {
    // SAFETY: `name` is NUL-terminated; RTLD_DEFAULT searches every loaded image.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!p.is_null()).then_some(p)
}

fn fns() -> Option<&'static Fns> {
    static FNS: OnceLock<Option<Fns>> = OnceLock::new();
    FNS.get_or_init(|| {
        let wait = lookup(c"os_sync_wait_on_address")?;
        let wait_timeout = lookup(c"os_sync_wait_on_address_with_timeout")?;
        let wake_any = lookup(c"os_sync_wake_by_address_any")?;
        let wake_all = lookup(c"os_sync_wake_by_address_all")?;
        // SAFETY (all four transmutes): these symbols, where libSystem exports them, have
        // exactly the C signatures declared above (from <os/os_sync_wait_on_address.h>), and
        // the pointer dlsym returns for a function symbol is that function's address.
        // SAFETY: see above.
        let wait = unsafe { core::mem::transmute::<*mut c_void, WaitFn>(wait) };
        // SAFETY: see above.
        let wait_timeout =
            unsafe { core::mem::transmute::<*mut c_void, WaitTimeoutFn>(wait_timeout) };
        // SAFETY: see above.
        let wake_any = unsafe { core::mem::transmute::<*mut c_void, WakeFn>(wake_any) };
        // SAFETY: see above.
        let wake_all = unsafe { core::mem::transmute::<*mut c_void, WakeFn>(wake_all) };
        Some(Fns {
            wait,
            wait_timeout,
            wake_any,
            wake_all,
        })
    })
    .as_ref()
}

pub(crate) fn is_supported() -> bool {
    fns().is_some()
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Which waiters an address names: any process's (the word is in shared memory) or only this
/// process's threads (no `*_SHARED` flag; the kernel keys the wait by address space).
#[derive(Clone, Copy)]
pub(crate) enum Scope {
    Shared,
    Process,
}

/// Waits while `*word == expected` (shared scope: woken from any process).
pub(crate) fn wait(
    word: &AtomicU32,
    expected: u32,
    timeout: Option<Duration>,
) -> Result<WaitOutcome, NotifyError> {
    wait_scoped(word, expected, timeout, Scope::Shared)
}

/// Waits while `*word == expected`, woken by a [`wake_scoped`] of the same `scope`.
pub(crate) fn wait_scoped(
    word: &AtomicU32,
    expected: u32,
    timeout: Option<Duration>,
    scope: Scope,
) -> Result<WaitOutcome, NotifyError> {
    let f = fns().ok_or(NotifyError::Unsupported)?;
    let flags = match scope {
        Scope::Shared => WAIT_SHARED,
        Scope::Process => 0,
    };
    let addr = word.as_ptr().cast::<c_void>();
    let rc = match timeout {
        // SAFETY: `addr` points at a live, aligned 4-byte atomic for the whole call; the
        // kernel only reads it.
        None => unsafe { (f.wait)(addr, u64::from(expected), 4, flags) },
        Some(d) => {
            // A zero timeout is rejected (EINVAL); 1 ns behaves as "check once".
            let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
            // SAFETY: as above.
            unsafe {
                (f.wait_timeout)(
                    addr,
                    u64::from(expected),
                    4,
                    flags,
                    CLOCK_MACH_ABSOLUTE_TIME,
                    ns,
                )
            }
        }
    };
    if rc >= 0 {
        return Ok(WaitOutcome::Woken);
    }
    match errno() {
        libc::ETIMEDOUT => Ok(WaitOutcome::TimedOut),
        libc::EINTR => Ok(WaitOutcome::Woken),
        libc::EFAULT | libc::EINVAL => Err(NotifyError::InvalidObject),
        e => Err(NotifyError::Os(e)),
    }
}

/// Wakes one or all waiters of `word` (shared scope: in any process).
pub(crate) fn wake(word: &AtomicU32, all: bool) -> Result<(), NotifyError> {
    wake_scoped(word, all, Scope::Shared)
}

/// Wakes one or all waiters of `word` that wait in `scope`.
pub(crate) fn wake_scoped(word: &AtomicU32, all: bool, scope: Scope) -> Result<(), NotifyError> {
    let f = fns().ok_or(NotifyError::Unsupported)?;
    let flags = match scope {
        Scope::Shared => WAKE_SHARED,
        Scope::Process => 0,
    };
    let addr = word.as_ptr().cast::<c_void>();
    let wake = if all { f.wake_all } else { f.wake_any };
    // SAFETY: `addr` points at a live, aligned 4-byte atomic; the kernel does not access it.
    if unsafe { wake(addr, 4, flags) } == 0 {
        return Ok(());
    }
    match errno() {
        // Nobody was waiting: fine.
        libc::ENOENT => Ok(()),
        libc::EFAULT | libc::EINVAL => Err(NotifyError::InvalidObject),
        e => Err(NotifyError::Os(e)),
    }
}
