//! The pollable doorbell on macOS: a non-blocking pipe. The waiter polls (or kqueues) the
//! read end; ringing writes one byte to the write end; draining reads until `EAGAIN`.
//! See [pipe(2)](https://man.freebsd.org/cgi/man.cgi?query=pipe&sektion=2) and `man 2 poll`.

use core::time::Duration;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::fs::{FileType, OFlags, fcntl_getfl, fcntl_setfl, fstat};
use rustix::io::{Errno, FdFlags, fcntl_setfd, read, write};

use crate::{NotifyError, SetupError, WaitOutcome};

const WHAT: &str = "a pipe doorbell";

#[derive(Debug)]
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

fn setup(fd: &OwnedFd) -> Result<(), SetupError> {
    let st = fstat(fd).map_err(|e| SetupError::from_io("fstat", WHAT, e.into()))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Fifo {
        return Err(SetupError::NotADoorbell {
            found: format!("{:?}", FileType::from_raw_mode(st.st_mode)),
        });
    }
    fcntl_setfd(fd, FdFlags::CLOEXEC).map_err(|e| SetupError::from_io("fcntl", WHAT, e.into()))?;
    let fl = fcntl_getfl(fd).map_err(|e| SetupError::from_io("fcntl", WHAT, e.into()))?;
    fcntl_setfl(fd, fl | OFlags::NONBLOCK).map_err(|e| SetupError::from_io("fcntl", WHAT, e.into()))
}

fn to_notify(e: Errno) -> NotifyError {
    match e {
        Errno::BADF | Errno::INVAL | Errno::FAULT => NotifyError::InvalidObject,
        e => NotifyError::Os(e.raw_os_error()),
    }
}

impl Pipe {
    pub(crate) fn new() -> Result<Self, SetupError> {
        let (read, write) =
            rustix::pipe::pipe().map_err(|e| SetupError::from_io("pipe", WHAT, e.into()))?;
        Self::from_owned_fds(read, write)
    }

    pub(crate) fn from_owned_fds(read: OwnedFd, write: OwnedFd) -> Result<Self, SetupError> {
        setup(&read)?;
        setup(&write)?;
        Ok(Self { read, write })
    }

    pub(crate) fn try_clone(&self) -> Result<Self, SetupError> {
        let dup = |fd: &OwnedFd| {
            fd.try_clone()
                .map_err(|e| SetupError::from_io("dup", WHAT, e))
        };
        Ok(Self {
            read: dup(&self.read)?,
            write: dup(&self.write)?,
        })
    }

    pub(crate) fn write_fd(&self) -> BorrowedFd<'_> {
        self.write.as_fd()
    }

    pub(crate) fn ring(&self) -> Result<(), NotifyError> {
        loop {
            match write(&self.write, &[1]) {
                // EAGAIN: the pipe is full, so it is certainly rung.
                Ok(_) | Err(Errno::AGAIN) => return Ok(()),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(to_notify(e)),
            }
        }
    }

    pub(crate) fn drain(&self) -> Result<bool, NotifyError> {
        let mut buf = [0u8; 64];
        let mut any = false;
        loop {
            match read(&self.read, &mut buf) {
                Ok(0) => return Ok(any),
                Ok(_) => any = true,
                Err(Errno::AGAIN) => return Ok(any),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(to_notify(e)),
            }
        }
    }

    pub(crate) fn wait(&self, timeout: Option<Duration>) -> Result<WaitOutcome, NotifyError> {
        let ts = timeout.and_then(|d| Timespec::try_from(d).ok());
        let mut fds = [PollFd::new(&self.read, PollFlags::IN)];
        match poll(&mut fds, ts.as_ref()) {
            Ok(0) => return Ok(WaitOutcome::TimedOut),
            Ok(_) => {}
            Err(Errno::INTR) => return Ok(WaitOutcome::Woken),
            Err(e) => return Err(to_notify(e)),
        }
        if fds[0]
            .revents()
            .intersects(PollFlags::NVAL | PollFlags::ERR)
        {
            return Err(NotifyError::InvalidObject);
        }
        self.drain()?;
        Ok(WaitOutcome::Woken)
    }
}

impl AsFd for Pipe {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }
}

impl AsRawFd for Pipe {
    fn as_raw_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }
}
