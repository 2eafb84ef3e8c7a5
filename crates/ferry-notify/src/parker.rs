//! `Parker` / `Unparker`: "wait on a word" that works on every OS.

use core::fmt;
use core::str::FromStr;
use core::sync::atomic::AtomicU32;
use core::time::Duration;

use crate::{NotifyError, SetupError, WaitOutcome};

#[cfg(any(target_os = "linux", target_os = "android"))]
const FUTEX_SPEC: &str = "futex";
#[cfg(windows)]
const EVENT_PREFIX: &str = "event:";
#[cfg(target_vendor = "apple")]
const OS_SYNC_SPEC: &str = "os-sync";
#[cfg(target_vendor = "apple")]
const SEM_PREFIX: &str = "sem:";

/// What the peer needs to open an [`Unparker`] for a [`Parker`]: a short ASCII string.
///
/// Send [`ParkerSpec::as_str`] to the peer during the connection handshake; the peer rebuilds
/// it with [`ParkerSpec::parse`], which validates it (it is untrusted input). Forms:
/// `futex` (Linux), `event:Local\ferry-<SID>-<32 hex>` (Windows), `os-sync` or
/// `sem:/<name>` (macOS).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ParkerSpec {
    text: String,
}

impl ParkerSpec {
    /// The spec as text, to send to the peer.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Parses and validates a spec received from the peer.
    ///
    /// # Errors
    ///
    /// [`SetupError::InvalidName`] if `text` is not a spec this build produces on this OS
    /// (wrong mechanism, malformed name, or on Windows a name of another user).
    pub fn parse(text: &str) -> Result<Self, SetupError> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if text == FUTEX_SPEC {
            return Ok(Self { text: text.into() });
        }
        #[cfg(windows)]
        if let Some(name) = text.strip_prefix(EVENT_PREFIX) {
            crate::sys::windows::event::validate_name(name)?;
            return Ok(Self { text: text.into() });
        }
        #[cfg(target_vendor = "apple")]
        {
            if text == OS_SYNC_SPEC {
                return Ok(Self { text: text.into() });
            }
            if let Some(name) = text.strip_prefix(SEM_PREFIX) {
                crate::sys::macos::semaphore::validate_name(name)?;
                return Ok(Self { text: text.into() });
            }
        }
        Err(SetupError::invalid_name(
            text,
            "not a parker spec of this OS (expected `futex`, `event:...`, `os-sync` or `sem:...`)",
        ))
    }
}

impl fmt::Display for ParkerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for ParkerSpec {
    type Err = SetupError;
    fn from_str(s: &str) -> Result<Self, SetupError> {
        Self::parse(s)
    }
}

/// The waiting side: blocks while a shared word holds an expected value.
///
/// Owns the OS object, if the platform needs one (Windows: a named event; macOS without
/// `os_sync`: a named semaphore). One `Parker` serves one waiting thread; make one per sleep
/// word.
#[derive(Debug)]
pub struct Parker {
    spec: ParkerSpec,
    #[cfg(windows)]
    event: crate::sys::windows::event::Event,
    #[cfg(target_vendor = "apple")]
    sem: Option<crate::sys::macos::semaphore::Semaphore>,
}

impl Parker {
    /// Creates the waiting side.
    ///
    /// # Errors
    ///
    /// Linux: never. Windows: creating the event failed (handle limits, see
    /// [`SetupError`]). macOS without `os_sync`: creating the semaphore failed.
    pub fn new() -> Result<Self, SetupError> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        return Ok(Self {
            spec: ParkerSpec {
                text: FUTEX_SPEC.into(),
            },
        });
        #[cfg(windows)]
        {
            let event = crate::sys::windows::event::Event::create_named()?;
            let spec = ParkerSpec {
                text: format!("{EVENT_PREFIX}{}", event.name()),
            };
            Ok(Self { spec, event })
        }
        #[cfg(target_vendor = "apple")]
        {
            if crate::sys::macos::os_sync::is_supported() {
                return Ok(Self {
                    spec: ParkerSpec {
                        text: OS_SYNC_SPEC.into(),
                    },
                    sem: None,
                });
            }
            let sem = crate::sys::macos::semaphore::Semaphore::create()?;
            let spec = ParkerSpec {
                text: format!("{SEM_PREFIX}{}", sem.name()),
            };
            Ok(Self {
                spec,
                sem: Some(sem),
            })
        }
    }

    /// What the peer needs to wake this parker.
    pub fn spec(&self) -> &ParkerSpec {
        &self.spec
    }

    /// An [`Unparker`] for this parker, in this process.
    ///
    /// # Errors
    ///
    /// As for [`Unparker::open`].
    pub fn unparker(&self) -> Result<Unparker, SetupError> {
        Unparker::open(&self.spec)
    }

    /// Blocks while `*word == expected`, for at most `timeout` (`None` = no limit).
    ///
    /// `word` is the shared sleep word the peer swaps to 0 before calling
    /// [`Unparker::unpark`]. Returns [`WaitOutcome::Woken`] at once if the word does not hold
    /// `expected`, after a wake-up, or spuriously; [`WaitOutcome::TimedOut`] after the
    /// timeout. Allocation-free.
    ///
    /// Linux: shared futex on `word`. Windows: check the word, then `WaitForSingleObject` on
    /// the event (millisecond resolution, rounded up); the sleep protocol's "change the word, then
    /// signal" ordering plus the event's latch make a late wait return at once. macOS:
    /// `os_sync_wait_on_address`, or the semaphore.
    ///
    /// # Errors
    ///
    /// [`NotifyError::InvalidObject`] if the OS rejects the word or the object.
    pub fn park(
        &self,
        word: &AtomicU32,
        expected: u32,
        timeout: Option<Duration>,
    ) -> Result<WaitOutcome, NotifyError> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        return crate::sys::linux::futex::wait(word, expected, timeout);
        #[cfg(windows)]
        {
            if word.load(core::sync::atomic::Ordering::SeqCst) != expected {
                return Ok(WaitOutcome::Woken);
            }
            self.event.wait(timeout)
        }
        #[cfg(target_vendor = "apple")]
        match &self.sem {
            None => crate::sys::macos::os_sync::wait(word, expected, timeout),
            Some(sem) => {
                if word.load(core::sync::atomic::Ordering::SeqCst) != expected {
                    return Ok(WaitOutcome::Woken);
                }
                sem.wait(timeout)
            }
        }
    }
}

/// The waking side of a [`Parker`], possibly in another process.
#[derive(Debug)]
pub struct Unparker {
    #[cfg(windows)]
    event: crate::sys::windows::event::Event,
    #[cfg(target_vendor = "apple")]
    sem: Option<crate::sys::macos::semaphore::Semaphore>,
}

impl Unparker {
    /// Opens the waking side from the peer's [`ParkerSpec`].
    ///
    /// # Errors
    ///
    /// Windows / macOS semaphores: [`SetupError::NotFound`] if the peer's object is gone,
    /// [`SetupError::PermissionDenied`] if it belongs to someone else, or a descriptor/handle
    /// limit. [`SetupError::Unsupported`] if the spec names a mechanism this system lacks.
    pub fn open(spec: &ParkerSpec) -> Result<Self, SetupError> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            // `ParkerSpec` can only hold "futex" here (see `parse`).
            debug_assert_eq!(spec.text, FUTEX_SPEC);
            Ok(Self {})
        }
        #[cfg(windows)]
        {
            let name = spec
                .text
                .strip_prefix(EVENT_PREFIX)
                .ok_or_else(|| SetupError::invalid_name(&spec.text, "not an event parker spec"))?;
            let event = crate::sys::windows::event::Event::open_named(name)?;
            Ok(Self { event })
        }
        #[cfg(target_vendor = "apple")]
        {
            if spec.text == OS_SYNC_SPEC {
                if !crate::sys::macos::os_sync::is_supported() {
                    return Err(SetupError::Unsupported {
                        what: "os_sync_wait_on_address",
                        hint: "the peer runs on a newer macOS than this process sees; \
                               upgrade to macOS 14.4 or later",
                    });
                }
                return Ok(Self { sem: None });
            }
            let name = spec.text.strip_prefix(SEM_PREFIX).ok_or_else(|| {
                SetupError::invalid_name(&spec.text, "not a semaphore parker spec")
            })?;
            let sem = crate::sys::macos::semaphore::Semaphore::open(name)?;
            Ok(Self { sem: Some(sem) })
        }
    }

    /// Wakes the parker (if it is parked; otherwise the next park may return spuriously).
    ///
    /// Change `word` *before* calling this (the [sleep protocol](crate#the-sleep-protocol)).
    /// Allocation-free; one system call.
    ///
    /// # Errors
    ///
    /// [`NotifyError::InvalidObject`] if the OS rejects the word or the object.
    pub fn unpark(&self, word: &AtomicU32) -> Result<(), NotifyError> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        return crate::sys::linux::futex::wake(word, 1);
        #[cfg(windows)]
        {
            let _ = word;
            self.event.set()
        }
        #[cfg(target_vendor = "apple")]
        match &self.sem {
            None => crate::sys::macos::os_sync::wake(word, false),
            Some(sem) => sem.post(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips_and_rejects_garbage() {
        let p = Parker::new().expect("parker");
        let again = ParkerSpec::parse(p.spec().as_str()).expect("own spec parses");
        assert_eq!(&again, p.spec());
        for bad in [
            "",
            "futex2",
            "event:",
            "sem:",
            "event:Global\\x",
            "\u{0}",
            "sem:/../x",
        ] {
            assert!(ParkerSpec::parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn park_returns_at_once_when_word_differs_and_times_out_otherwise() {
        let p = Parker::new().expect("parker");
        let word = AtomicU32::new(5);
        assert_eq!(p.park(&word, 4, None), Ok(WaitOutcome::Woken));
        let t0 = std::time::Instant::now();
        let r = p.park(&word, 5, Some(Duration::from_millis(20)));
        assert_eq!(r, Ok(WaitOutcome::TimedOut));
        assert!(t0.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn unpark_wakes_a_parked_thread() {
        use core::sync::atomic::Ordering::SeqCst;
        let p = Parker::new().expect("parker");
        let u = p.unparker().expect("unparker");
        let word = std::sync::Arc::new(AtomicU32::new(1));
        let w = word.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            w.store(0, SeqCst);
            u.unpark(&w).expect("unpark");
        });
        // A spurious return is allowed (loop), a lost wake-up is not: the park would then run
        // into its timeout.
        loop {
            let r = p
                .park(&word, 1, Some(Duration::from_secs(30)))
                .expect("park");
            assert_eq!(r, WaitOutcome::Woken, "lost wake-up");
            if word.load(SeqCst) == 0 {
                break;
            }
        }
        t.join().expect("waker thread");
    }
}
