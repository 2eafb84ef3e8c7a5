//! Readiness polling for the server's workers: epoll on Linux, kqueue on macOS.
//!
//! A registration names a descriptor, what to wait for ([`Interest`]) and a `u64` token that
//! [`Events::tokens`] gives back. Registrations are level-triggered on both systems: a
//! descriptor is reported by every wait while it stays readable. [`Poller::wait`] fills an
//! [`Events`] buffer reserved up front, so a wait allocates nothing.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use rustix::io;

/// What a registration waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interest {
    /// The descriptor is readable (epoll `EPOLLIN`; kqueue `EVFILT_READ`).
    Readable,
    /// The socket is readable or its peer shut down its side (epoll `EPOLLIN | EPOLLRDHUP`;
    /// kqueue `EVFILT_READ`, which reports a socket's end of stream as readable, with
    /// `EV_EOF`).
    ReadableOrHangUp,
}

/// An epoll (Linux) or kqueue (macOS) instance.
#[derive(Debug)]
pub(crate) struct Poller {
    fd: OwnedFd,
}

impl Poller {
    /// A new, empty poller (close-on-exec).
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Poller { fd: sys::create()? })
    }

    /// Registers `fd`, reported with `token`. Delete the registration before closing `fd`.
    #[inline]
    pub(crate) fn add(&self, fd: impl AsFd, token: u64, interest: Interest) -> io::Result<()> {
        sys::add(&self.fd, fd, token, interest)
    }

    /// Removes `fd`'s registration.
    #[inline]
    pub(crate) fn delete(&self, fd: impl AsFd) -> io::Result<()> {
        sys::delete(&self.fd, fd)
    }

    /// Waits until a registered descriptor is ready or `timeout` passes (`None`: no limit),
    /// replacing `events`' contents with what is ready (at most its capacity). `EINTR` is
    /// returned as is.
    #[inline]
    pub(crate) fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        sys::wait(&self.fd, &mut events.list, timeout)
    }
}

/// What one [`Poller::wait`] found.
pub(crate) struct Events {
    list: Vec<sys::Event>,
}

impl Events {
    /// Room for `capacity` events per wait (at least one), reserved now.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Events {
            list: Vec::with_capacity(capacity.max(1)),
        }
    }

    /// The tokens of the ready registrations.
    #[inline]
    pub(crate) fn tokens(&self) -> impl Iterator<Item = u64> + '_ {
        self.list.iter().map(sys::token)
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("ready", &self.list.len())
            .field("capacity", &self.list.capacity())
            .finish()
    }
}

#[cfg(target_os = "linux")]
mod sys {
    use std::os::fd::{AsFd, OwnedFd};
    use std::time::Duration;

    use rustix::event::epoll;
    use rustix::io;

    use super::Interest;

    pub(super) type Event = epoll::Event;

    pub(super) fn create() -> io::Result<OwnedFd> {
        epoll::create(epoll::CreateFlags::CLOEXEC)
    }

    #[inline]
    pub(super) fn add(
        poller: &OwnedFd,
        fd: impl AsFd,
        token: u64,
        interest: Interest,
    ) -> io::Result<()> {
        let flags = match interest {
            Interest::Readable => epoll::EventFlags::IN,
            Interest::ReadableOrHangUp => epoll::EventFlags::IN | epoll::EventFlags::RDHUP,
        };
        epoll::add(poller, fd, epoll::EventData::new_u64(token), flags)
    }

    #[inline]
    pub(super) fn delete(poller: &OwnedFd, fd: impl AsFd) -> io::Result<()> {
        epoll::delete(poller, fd)
    }

    #[inline]
    pub(super) fn wait(
        poller: &OwnedFd,
        list: &mut Vec<Event>,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        let ts = timeout.map(|d| rustix::time::Timespec {
            tv_sec: d.as_secs() as i64,
            tv_nsec: i64::from(d.subsec_nanos()),
        });
        list.clear();
        epoll::wait(poller, rustix::buffer::spare_capacity(list), ts.as_ref()).map(drop)
    }

    #[inline]
    pub(super) fn token(event: &Event) -> u64 {
        event.data.u64()
    }
}

#[cfg(target_os = "macos")]
mod sys {
    use std::os::fd::{AsFd, AsRawFd, OwnedFd};
    use std::time::Duration;

    use rustix::event::kqueue::{self, EventFilter, EventFlags};
    use rustix::io;

    use super::Interest;

    pub(super) type Event = kqueue::Event;

    // Tokens travel in `udata`, a pointer: every macOS target is 64-bit, so none is cut short.
    const _: () = assert!(usize::BITS == u64::BITS);

    pub(super) fn create() -> io::Result<OwnedFd> {
        // Not inherited by `fork` children anyway; close-on-exec as the epoll one is.
        let fd = kqueue::kqueue()?;
        io::fcntl_setfd(&fd, io::FdFlags::CLOEXEC)?;
        Ok(fd)
    }

    /// Applies one change to the kqueue, without collecting events (so a failed change is
    /// reported through the return value, not as an `EV_ERROR` event).
    fn change(poller: &OwnedFd, event: Event) -> io::Result<()> {
        let mut none: [Event; 0] = [];
        // SAFETY: `kevent` requires the descriptors named in the change list to stay valid
        // while the kqueue holds them. The poller's users delete a registration before they
        // close its descriptor (see `Poller::add`); and a descriptor closed anyway leaves the
        // kqueue by itself (closing a descriptor removes its kevents), so the worst outcome is
        // a missed event, never an access to freed memory. `none` is an empty, valid buffer.
        unsafe { kqueue::kevent(poller, &[event], &mut none[..], Some(Duration::ZERO)) }.map(drop)
    }

    #[inline]
    pub(super) fn add(
        poller: &OwnedFd,
        fd: impl AsFd,
        token: u64,
        // `EVFILT_READ` covers both: a socket's end of stream makes it readable (`EV_EOF`).
        _interest: Interest,
    ) -> io::Result<()> {
        let udata = std::ptr::without_provenance_mut(token as usize);
        // Level-triggered (no `EV_CLEAR`), as the epoll registrations are.
        let event = Event::new(
            EventFilter::Read(fd.as_fd().as_raw_fd()),
            EventFlags::ADD,
            udata,
        );
        change(poller, event)
    }

    #[inline]
    pub(super) fn delete(poller: &OwnedFd, fd: impl AsFd) -> io::Result<()> {
        let event = Event::new(
            EventFilter::Read(fd.as_fd().as_raw_fd()),
            EventFlags::DELETE,
            std::ptr::null_mut(),
        );
        change(poller, event)
    }

    #[inline]
    pub(super) fn wait(
        poller: &OwnedFd,
        list: &mut Vec<Event>,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        list.clear();
        // SAFETY: the change list is empty (see `change` for the registrations' descriptors);
        // the event list is the vector's spare capacity, which `kevent` fills and `list`'s
        // length then covers.
        unsafe { kqueue::kevent(poller, &[], rustix::buffer::spare_capacity(list), timeout) }
            .map(drop)
    }

    #[inline]
    pub(super) fn token(event: &Event) -> u64 {
        event.udata().addr() as u64
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use ferry_notify::Doorbell;

    use super::*;

    fn ready(poller: &Poller, events: &mut Events) -> Vec<u64> {
        poller.wait(events, Some(Duration::ZERO)).unwrap();
        let mut tokens: Vec<u64> = events.tokens().collect();
        tokens.sort_unstable();
        tokens
    }

    #[test]
    fn readiness_is_level_triggered_and_ends_with_delete() {
        let poller = Poller::new().unwrap();
        let mut events = Events::with_capacity(4);
        let (a, b) = (Doorbell::new().unwrap(), Doorbell::new().unwrap());
        poller.add(&a, 7, Interest::Readable).unwrap();
        poller.add(&b, u64::MAX, Interest::Readable).unwrap();
        assert_eq!(ready(&poller, &mut events), Vec::<u64>::new());
        a.ring().unwrap();
        b.ring().unwrap();
        assert_eq!(ready(&poller, &mut events), [7, u64::MAX]);
        // Not drained: reported again.
        assert_eq!(ready(&poller, &mut events), [7, u64::MAX]);
        assert!(a.drain().unwrap());
        assert_eq!(ready(&poller, &mut events), [u64::MAX]);
        poller.delete(&b).unwrap();
        assert_eq!(ready(&poller, &mut events), Vec::<u64>::new());
    }

    #[test]
    fn a_peer_hang_up_is_reported_and_a_timeout_ends_the_wait() {
        let poller = Poller::new().unwrap();
        let mut events = Events::with_capacity(1);
        let (ours, theirs) = UnixStream::pair().unwrap();
        poller.add(&ours, 3, Interest::ReadableOrHangUp).unwrap();
        poller
            .wait(&mut events, Some(Duration::from_millis(1)))
            .unwrap();
        assert_eq!(events.tokens().count(), 0);
        drop(theirs);
        poller
            .wait(&mut events, Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(events.tokens().collect::<Vec<_>>(), [3]);
        assert!(crate::sys::control_hung_up(&ours));
    }
}
