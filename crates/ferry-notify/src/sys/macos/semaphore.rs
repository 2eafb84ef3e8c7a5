//! POSIX named semaphores: the parker on macOS older than 14.4.
//!
//! Names are `/ferry-<uid hex>-<12 random hex>` (at most 31 bytes, the macOS limit). The
//! creator unlinks the name when its `Parker` is dropped. macOS has no `sem_timedwait`, so a
//! wait with a timeout polls `sem_trywait` with sleeps growing from 20 µs to 1 ms; a wait
//! without a timeout blocks in `sem_wait`. See `man 2 sem_open`.

use core::ffi::CStr;
use core::time::Duration;
use std::ffi::CString;
use std::hash::{BuildHasher, Hasher};
use std::time::Instant;

use crate::{NotifyError, SetupError, WaitOutcome};

const WHAT: &str = "a POSIX named semaphore";
const PREFIX: &str = "/ferry-";
const RANDOM_HEX: usize = 12;
/// `PSEMNAMLEN`: the longest name macOS accepts.
const MAX_NAME: usize = 31;

#[derive(Debug)]
pub(crate) struct Semaphore {
    sem: *mut libc::sem_t,
    name: CString,
    owner: bool,
}

// SAFETY: a `sem_t*` from `sem_open` may be used from any thread (POSIX semaphores are
// thread-safe); `Semaphore` only posts, waits and closes it.
unsafe impl Send for Semaphore {}
// SAFETY: as above; `sem_post`/`sem_wait`/`sem_trywait` may be called concurrently.
unsafe impl Sync for Semaphore {}

fn uid_hex() -> String {
    // SAFETY: getuid has no preconditions and cannot fail.
    format!("{:x}", unsafe { libc::getuid() })
}

fn random_hex() -> String {
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{:012x}", r & 0xffff_ffff_ffff)
}

pub(crate) fn validate_name(name: &str) -> Result<(), SetupError> {
    let rest = name
        .strip_prefix(PREFIX)
        .and_then(|r| r.strip_prefix(uid_hex().as_str()))
        .and_then(|r| r.strip_prefix('-'))
        .ok_or_else(|| SetupError::invalid_name(name, "not a ferry semaphore of this user"))?;
    if name.len() > MAX_NAME
        || rest.len() != RANDOM_HEX
        || !rest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(SetupError::invalid_name(name, "malformed random part"));
    }
    Ok(())
}

impl Semaphore {
    pub(crate) fn create() -> Result<Self, SetupError> {
        for _ in 0..4 {
            let name = format!("{PREFIX}{}-{}", uid_hex(), random_hex());
            let c = CString::new(name).map_err(|_| SetupError::invalid_name(PREFIX, "NUL"))?;
            // SAFETY: `c` is NUL-terminated; with O_CREAT the variadic mode and value
            // arguments are passed as `c_uint`, as sem_open reads them.
            let sem = unsafe {
                libc::sem_open(
                    c.as_ptr(),
                    libc::O_CREAT | libc::O_EXCL,
                    0o600 as libc::c_uint,
                    0 as libc::c_uint,
                )
            };
            if sem == libc::SEM_FAILED {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EEXIST) {
                    continue;
                }
                return Err(SetupError::from_io("sem_open", WHAT, e));
            }
            return Ok(Self {
                sem,
                name: c,
                owner: true,
            });
        }
        Err(SetupError::invalid_name(
            PREFIX,
            "every freshly generated semaphore name already existed",
        ))
    }

    pub(crate) fn open(name: &str) -> Result<Self, SetupError> {
        validate_name(name)?;
        let c = CString::new(name).map_err(|_| SetupError::invalid_name(name, "contains NUL"))?;
        // SAFETY: `c` is NUL-terminated; without O_CREAT no variadic arguments are read.
        let sem = unsafe { libc::sem_open(c.as_ptr(), 0) };
        if sem == libc::SEM_FAILED {
            return Err(SetupError::from_open(
                "sem_open",
                WHAT,
                name,
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Self {
            sem,
            name: c,
            owner: false,
        })
    }

    pub(crate) fn name(&self) -> &str {
        // Built from a `String`, so valid UTF-8.
        self.name.to_str().unwrap_or_default()
    }

    pub(crate) fn post(&self) -> Result<(), NotifyError> {
        // SAFETY: `self.sem` is a live semaphore from sem_open (closed only in Drop).
        if unsafe { libc::sem_post(self.sem) } == 0 {
            Ok(())
        } else {
            Err(last_error())
        }
    }

    fn try_wait(&self) -> Result<bool, NotifyError> {
        // SAFETY: `self.sem` is a live semaphore from sem_open.
        if unsafe { libc::sem_trywait(self.sem) } == 0 {
            return Ok(true);
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN | libc::EINTR) => Ok(false),
            _ => Err(last_error()),
        }
    }

    pub(crate) fn wait(&self, timeout: Option<Duration>) -> Result<WaitOutcome, NotifyError> {
        let Some(timeout) = timeout else {
            // SAFETY: `self.sem` is a live semaphore from sem_open.
            if unsafe { libc::sem_wait(self.sem) } == 0 {
                return Ok(WaitOutcome::Woken);
            }
            return match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => Ok(WaitOutcome::Woken),
                _ => Err(last_error()),
            };
        };
        let deadline = Instant::now().checked_add(timeout);
        let mut nap = Duration::from_micros(20);
        loop {
            if self.try_wait()? {
                return Ok(WaitOutcome::Woken);
            }
            let now = Instant::now();
            let left = match deadline {
                Some(d) if now >= d => return Ok(WaitOutcome::TimedOut),
                Some(d) => d - now,
                None => nap,
            };
            std::thread::sleep(nap.min(left));
            nap = (nap * 2).min(Duration::from_millis(1));
        }
    }
}

fn last_error() -> NotifyError {
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EINVAL | libc::EBADF) => NotifyError::InvalidObject,
        Some(e) => NotifyError::Os(e),
        None => NotifyError::InvalidObject,
    }
}

impl Drop for Semaphore {
    fn drop(&mut self) {
        let name: &CStr = &self.name;
        if self.owner {
            // SAFETY: `name` is NUL-terminated; unlinking only removes the name, the peer's
            // open handle stays valid.
            unsafe { libc::sem_unlink(name.as_ptr()) };
        }
        // SAFETY: `self.sem` is live and not used after this.
        unsafe { libc::sem_close(self.sem) };
    }
}
