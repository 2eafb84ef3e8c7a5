//! The pollable doorbell on Linux: a non-blocking
//! [eventfd(2)](https://man7.org/linux/man-pages/man2/eventfd.2.html).
//!
//! One eventfd is shared by both processes (inherited, or passed with `SCM_RIGHTS`); the peer
//! rings it by adding 1 to its counter, the owner waits for it with
//! [poll(2)](https://man7.org/linux/man-pages/man2/poll.2.html) (or registers it with
//! epoll / tokio `AsyncFd`) and resets the counter by reading it.

use core::time::Duration;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use rustix::event::{EventfdFlags, PollFd, PollFlags, Timespec, eventfd, poll};
use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
use rustix::io::{Errno, read, write};

use super::futex::errno_to_notify;
use crate::{NotifyError, SetupError, WaitOutcome};

const WHAT: &str = "an eventfd doorbell";

#[derive(Debug)]
pub(crate) struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    pub(crate) fn new() -> Result<Self, SetupError> {
        let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|e| SetupError::from_io("eventfd", WHAT, e.into()))?;
        Ok(Self { fd })
    }

    pub(crate) fn from_owned_fd(fd: OwnedFd) -> Result<Self, SetupError> {
        // Where /proc is mounted, make sure this really is an eventfd: ringing a socket or a
        // pipe by mistake would write 8 bytes of garbage into someone else's stream.
        let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
        if let Ok(target) = std::fs::read_link(link)
            && target.as_os_str() != "anon_inode:[eventfd]"
        {
            return Err(SetupError::NotADoorbell {
                found: target.to_string_lossy().chars().take(100).collect(),
            });
        }
        let flags = fcntl_getfl(&fd).map_err(|e| SetupError::from_io("fcntl", WHAT, e.into()))?;
        if !flags.contains(OFlags::NONBLOCK) {
            fcntl_setfl(&fd, flags | OFlags::NONBLOCK)
                .map_err(|e| SetupError::from_io("fcntl", WHAT, e.into()))?;
        }
        Ok(Self { fd })
    }

    pub(crate) fn try_clone(&self) -> Result<Self, SetupError> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| SetupError::from_io("dup", WHAT, e))?;
        Ok(Self { fd })
    }

    pub(crate) fn into_fd(self) -> OwnedFd {
        self.fd
    }

    pub(crate) fn ring(&self) -> Result<(), NotifyError> {
        loop {
            match write(&self.fd, &1u64.to_ne_bytes()) {
                // EAGAIN: the counter is saturated, so the doorbell is already rung.
                Ok(_) | Err(Errno::AGAIN) => return Ok(()),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(errno_to_notify(e)),
            }
        }
    }

    pub(crate) fn drain(&self) -> Result<bool, NotifyError> {
        let mut buf = [0u8; 8];
        loop {
            match read(&self.fd, &mut buf) {
                Ok(8) => return Ok(true),
                Ok(_) => return Err(NotifyError::InvalidObject),
                Err(Errno::AGAIN) => return Ok(false),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(errno_to_notify(e)),
            }
        }
    }

    pub(crate) fn wait(&self, timeout: Option<Duration>) -> Result<WaitOutcome, NotifyError> {
        let ts = timeout.and_then(|d| Timespec::try_from(d).ok());
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        match poll(&mut fds, ts.as_ref()) {
            Ok(0) => return Ok(WaitOutcome::TimedOut),
            Ok(_) => {}
            Err(Errno::INTR) => return Ok(WaitOutcome::Woken),
            Err(e) => return Err(errno_to_notify(e)),
        }
        let revents = fds[0].revents();
        if revents.intersects(PollFlags::NVAL | PollFlags::ERR) {
            return Err(NotifyError::InvalidObject);
        }
        // Reset the counter; losing the race to another reader just makes this a spurious
        // wake-up, which callers handle by re-checking their condition.
        self.drain()?;
        Ok(WaitOutcome::Woken)
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
