//! `Doorbell`: a wake-up an event loop can poll.

use core::time::Duration;

use crate::{NotifyError, SetupError, WaitOutcome};

#[cfg(any(target_os = "linux", target_os = "android"))]
type Inner = crate::sys::linux::eventfd::EventFd;
#[cfg(windows)]
type Inner = crate::sys::windows::event::Event;
#[cfg(target_vendor = "apple")]
type Inner = crate::sys::macos::pipe::Pipe;

/// A pollable wake-up: the peer [`ring`](Self::ring)s, the owner [`wait`](Self::wait)s or
/// registers it with an event loop and [`drain`](Self::drain)s it.
///
/// Rings latch: ringing a doorbell nobody waits on makes the next wait return at once, and
/// several rings before a drain collapse into one. One waiter per doorbell; use one doorbell
/// per direction.
///
/// * Linux: a non-blocking [eventfd(2)](https://man7.org/linux/man-pages/man2/eventfd.2.html),
///   shared by both processes; implements `AsFd`/`AsRawFd` for epoll and tokio `AsyncFd`
///   (wait for readability, then call [`drain`](Self::drain)). Send it with `SCM_RIGHTS` and
///   rebuild it with `Doorbell::from_owned_fd`.
/// * Windows: an auto-reset event; implements `AsHandle`/`AsRawHandle` for
///   `WaitForMultipleObjects` and friends. Either named (`Local\ferry-<SID>-<random>`,
///   what `Doorbell::new` makes): send `Doorbell::name` to the peer, which calls
///   `Doorbell::open_named`. Or unnamed (`Doorbell::new_unnamed`), which no other process can
///   find: duplicate its handle into the peer (`DuplicateHandle` with the raw handle from
///   `AsRawHandle`), which rebuilds it with `Doorbell::from_owned_handle`.
/// * macOS: a non-blocking pipe; `AsFd` is the read end (for kqueue), ringing writes to the
///   write end. Send both with `SCM_RIGHTS` and rebuild with `Doorbell::from_owned_fds`.
#[derive(Debug)]
pub struct Doorbell {
    inner: Inner,
}

impl Doorbell {
    /// Creates a doorbell (Windows: with a fresh random name, as `Doorbell::create_named`).
    ///
    /// # Errors
    ///
    /// Descriptor or handle limits ([`SetupError::ProcessLimit`], [`SetupError::SystemLimit`]),
    /// or [`SetupError::Unsupported`] on a kernel without eventfd.
    pub fn new() -> Result<Self, SetupError> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let inner = Inner::new()?;
        #[cfg(windows)]
        let inner = Inner::create_named()?;
        #[cfg(target_vendor = "apple")]
        let inner = Inner::new()?;
        Ok(Self { inner })
    }

    /// Rings: wakes the waiter, or makes its next wait return at once. Never blocks.
    ///
    /// Allocation-free; one system call (`write` / `SetEvent`).
    ///
    /// # Errors
    ///
    /// [`NotifyError::InvalidObject`] if the descriptor or handle is no longer valid.
    pub fn ring(&self) -> Result<(), NotifyError> {
        self.inner.ring()
    }

    /// Waits until the doorbell is rung or `timeout` elapses (`None` = no limit), and resets
    /// it.
    ///
    /// Returns at once, consuming the ring, if it was rung before the call. May return
    /// [`WaitOutcome::Woken`] spuriously (signals). Allocation-free.
    ///
    /// # Errors
    ///
    /// [`NotifyError::InvalidObject`] if the descriptor or handle is no longer valid.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<WaitOutcome, NotifyError> {
        self.inner.wait(timeout)
    }

    /// Resets the doorbell without blocking; returns whether it had been rung.
    ///
    /// Call after the event loop reports the descriptor/handle ready.
    ///
    /// # Errors
    ///
    /// [`NotifyError::InvalidObject`] if the descriptor or handle is no longer valid.
    pub fn drain(&self) -> Result<bool, NotifyError> {
        self.inner.drain()
    }

    /// Another doorbell for the same OS object (a `dup`ed descriptor or handle).
    ///
    /// # Errors
    ///
    /// Descriptor or handle limits.
    pub fn try_clone(&self) -> Result<Self, SetupError> {
        Ok(Self {
            inner: self.inner.try_clone()?,
        })
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod unix_fd {
    use super::*;
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

    impl Doorbell {
        /// Rebuilds a doorbell from a descriptor received from the peer (inherited, or
        /// `SCM_RIGHTS`). Sets `O_NONBLOCK` on it.
        ///
        /// # Errors
        ///
        /// [`SetupError::NotADoorbell`] if `/proc` shows the descriptor is not an eventfd
        /// (where `/proc` is not mounted the check is skipped); an OS error from `fcntl`.
        pub fn from_owned_fd(fd: OwnedFd) -> Result<Self, SetupError> {
            Ok(Self {
                inner: Inner::from_owned_fd(fd)?,
            })
        }
    }

    impl AsFd for Doorbell {
        fn as_fd(&self) -> BorrowedFd<'_> {
            self.inner.as_fd()
        }
    }

    impl AsRawFd for Doorbell {
        fn as_raw_fd(&self) -> RawFd {
            self.inner.as_raw_fd()
        }
    }

    impl From<Doorbell> for OwnedFd {
        fn from(d: Doorbell) -> OwnedFd {
            d.inner.into_fd()
        }
    }
}

#[cfg(target_vendor = "apple")]
mod apple_fd {
    use super::*;
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

    impl Doorbell {
        /// Rebuilds a doorbell from the two ends of the peer's pipe (received with
        /// `SCM_RIGHTS`). Sets `O_NONBLOCK` and `FD_CLOEXEC` on both.
        ///
        /// # Errors
        ///
        /// [`SetupError::NotADoorbell`] if either descriptor is not a pipe; an OS error from
        /// `fstat`/`fcntl`.
        pub fn from_owned_fds(read: OwnedFd, write: OwnedFd) -> Result<Self, SetupError> {
            Ok(Self {
                inner: Inner::from_owned_fds(read, write)?,
            })
        }

        /// The write end (what [`ring`](Self::ring) writes to), to send to the peer together
        /// with the read end ([`AsFd`]).
        pub fn write_fd(&self) -> BorrowedFd<'_> {
            self.inner.write_fd()
        }
    }

    /// The read end: register it for readability with kqueue or tokio `AsyncFd`.
    impl AsFd for Doorbell {
        fn as_fd(&self) -> BorrowedFd<'_> {
            self.inner.as_fd()
        }
    }

    impl AsRawFd for Doorbell {
        fn as_raw_fd(&self) -> RawFd {
            self.inner.as_raw_fd()
        }
    }
}

#[cfg(windows)]
mod windows_handle {
    use super::*;
    use std::os::windows::io::{AsHandle, AsRawHandle, BorrowedHandle, OwnedHandle, RawHandle};

    impl Doorbell {
        /// Creates a doorbell backed by a new named auto-reset event
        /// (`Local\ferry-<SID>-<32 random hex digits>`); send [`name`](Self::name) to the peer.
        ///
        /// # Errors
        ///
        /// Handle limits, or an OS error while reading the user's SID.
        pub fn create_named() -> Result<Self, SetupError> {
            Self::new()
        }

        /// Opens the doorbell the peer created, by the name it sent. The name is validated
        /// first: it must be `Local\ferry-<this user's SID>-<32 hex digits>`.
        ///
        /// # Errors
        ///
        /// [`SetupError::InvalidName`] for a malformed name or another user's name,
        /// [`SetupError::NotFound`] if the peer's event no longer exists,
        /// [`SetupError::PermissionDenied`] if its ACL refuses us.
        pub fn open_named(name: &str) -> Result<Self, SetupError> {
            Ok(Self {
                inner: Inner::open_named(name)?,
            })
        }

        /// The event's name, to send to the peer; empty for an unnamed doorbell
        /// ([`new_unnamed`](Self::new_unnamed), [`from_owned_handle`](Self::from_owned_handle)).
        pub fn name(&self) -> &str {
            self.inner.name()
        }

        /// Creates a doorbell backed by a new *unnamed* auto-reset event. No other process can
        /// open it by name: hand it to the peer by duplicating its handle
        /// ([`AsRawHandle::as_raw_handle`] gives the source for `DuplicateHandle`; grant
        /// `EVENT_MODIFY_STATE | SYNCHRONIZE`), and have the peer call
        /// [`from_owned_handle`](Self::from_owned_handle).
        ///
        /// # Errors
        ///
        /// Handle limits ([`SetupError::ProcessLimit`], [`SetupError::SystemLimit`]).
        pub fn new_unnamed() -> Result<Self, SetupError> {
            Ok(Self {
                inner: Inner::create_unnamed()?,
            })
        }

        /// Rebuilds a doorbell from an event handle the peer duplicated into this process.
        /// The handle is checked to refer to an event (`NtQueryObject`'s type name); it
        /// should be an auto-reset event with `EVENT_MODIFY_STATE | SYNCHRONIZE` access (a
        /// manual-reset one would stay rung after a wait: spurious wake-ups, never lost ones).
        ///
        /// # Errors
        ///
        /// [`SetupError::NotADoorbell`] if the handle is not an event (it is closed then);
        /// [`SetupError::Os`] if the type cannot be queried.
        pub fn from_owned_handle(handle: OwnedHandle) -> Result<Self, SetupError> {
            Ok(Self {
                inner: Inner::from_owned_handle(handle)?,
            })
        }
    }

    impl From<Doorbell> for OwnedHandle {
        fn from(d: Doorbell) -> OwnedHandle {
            d.inner.into_handle()
        }
    }

    impl AsHandle for Doorbell {
        fn as_handle(&self) -> BorrowedHandle<'_> {
            self.inner.as_handle()
        }
    }

    impl AsRawHandle for Doorbell {
        fn as_raw_handle(&self) -> RawHandle {
            self.inner.as_raw_handle()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_latches_and_drain_resets() {
        let d = Doorbell::new().expect("doorbell");
        assert_eq!(d.drain(), Ok(false));
        d.ring().expect("ring");
        d.ring().expect("ring twice");
        assert_eq!(d.wait(Some(Duration::ZERO)), Ok(WaitOutcome::Woken));
        assert_eq!(d.drain(), Ok(false), "several rings collapse into one");
        assert_eq!(
            d.wait(Some(Duration::from_millis(10))),
            Ok(WaitOutcome::TimedOut)
        );
        d.ring().expect("ring");
        assert_eq!(d.drain(), Ok(true));
    }

    #[test]
    fn clone_shares_the_object() {
        let d = Doorbell::new().expect("doorbell");
        let c = d.try_clone().expect("clone");
        c.ring().expect("ring");
        assert_eq!(d.drain(), Ok(true));
    }

    #[test]
    fn wakes_a_thread_waiting_without_timeout() {
        let d = std::sync::Arc::new(Doorbell::new().expect("doorbell"));
        let r = d.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            r.ring().expect("ring");
        });
        assert_eq!(d.wait(None), Ok(WaitOutcome::Woken));
        t.join().expect("ringer");
    }

    #[cfg(windows)]
    #[test]
    fn open_named_validates_and_shares_the_event() {
        let d = Doorbell::create_named().expect("doorbell");
        let peer = Doorbell::open_named(d.name()).expect("open by name");
        peer.ring().expect("ring");
        assert_eq!(d.drain(), Ok(true));
        let other_user = d.name().replacen("S-1-", "S-9-", 1);
        assert!(matches!(
            Doorbell::open_named(&other_user),
            Err(SetupError::InvalidName { .. })
        ));
        let mut gone = d.name().to_owned();
        gone.truncate(gone.len() - 32);
        gone.push_str(&"0".repeat(32));
        assert!(
            matches!(
                Doorbell::open_named(&gone),
                Err(SetupError::NotFound { .. })
            ),
            "{:?}",
            Doorbell::open_named(&gone)
        );
    }

    #[cfg(windows)]
    #[test]
    fn unnamed_doorbell_rings_and_survives_a_handle_round_trip() {
        use std::os::windows::io::OwnedHandle;
        let d = Doorbell::new_unnamed().expect("unnamed doorbell");
        assert_eq!(d.name(), "", "an unnamed doorbell has no name to send");
        assert_eq!(d.drain(), Ok(false));
        // What the peer gets: another handle to the same event, adopted after the type check.
        let dup: OwnedHandle = d.try_clone().expect("duplicate").into();
        let peer = Doorbell::from_owned_handle(dup).expect("an event handle is accepted");
        peer.ring().expect("ring");
        assert_eq!(d.wait(Some(Duration::from_secs(5))), Ok(WaitOutcome::Woken));
        assert_eq!(
            d.drain(),
            Ok(false),
            "auto-reset: the wait consumed the ring"
        );
        d.ring().expect("ring back");
        assert_eq!(peer.drain(), Ok(true));
        // A named doorbell's handle is an event too.
        let named: OwnedHandle = Doorbell::create_named().expect("named").into();
        Doorbell::from_owned_handle(named).expect("named event handle");
    }

    #[cfg(windows)]
    #[test]
    fn from_owned_handle_rejects_other_objects() {
        use std::os::windows::io::OwnedHandle;
        let file = std::fs::File::open(std::env::current_exe().expect("exe")).expect("open");
        let err = Doorbell::from_owned_handle(OwnedHandle::from(file))
            .expect_err("a file is not a doorbell");
        let SetupError::NotADoorbell { found } = &err else {
            panic!("wrong error: {err}");
        };
        assert!(found.contains("File"), "{found}");
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn from_owned_fd_rejects_other_descriptors() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let err = Doorbell::from_owned_fd(a.into()).expect_err("a socket is not a doorbell");
        assert!(matches!(err, SetupError::NotADoorbell { .. }), "{err}");
        let d = Doorbell::new().expect("doorbell");
        let fd: std::os::fd::OwnedFd = d.into();
        let d = Doorbell::from_owned_fd(fd).expect("an eventfd is accepted");
        d.ring().expect("ring");
        assert_eq!(d.drain(), Ok(true));
    }
}
