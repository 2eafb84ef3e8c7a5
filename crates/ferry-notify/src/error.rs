//! Error types.
//!
//! Two kinds, on purpose:
//!
//! * [`NotifyError`]: returned by the hot-path operations (wait, wake, ring). Small,
//!   `Copy`, allocation-free, in the style of `rtrb::PushError`.
//! * [`SetupError`]: returned when creating or opening OS objects. Its messages say what
//!   went wrong **and** what to do about it.

use core::fmt;

/// A wait, wake or ring failed in a way that is not a normal outcome.
///
/// Timeouts and spurious wake-ups are *not* errors; they are reported through
/// [`WaitOutcome`](crate::WaitOutcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NotifyError {
    /// The mechanism does not exist on this system (for example word waits on Windows, or on
    /// macOS older than 14.4). Use a [`Parker`](crate::Parker) or a
    /// [`Doorbell`](crate::Doorbell) instead.
    Unsupported,
    /// The OS rejected the object: the descriptor or handle is closed or is not of the expected
    /// kind, or the address is not mapped (`EBADF`, `EFAULT`, `EINVAL`, `ERROR_INVALID_HANDLE`).
    /// The connection is unusable; tear it down and reconnect.
    InvalidObject,
    /// Any other OS error, with its raw code (`errno` on Unix, `GetLastError` on Windows).
    Os(i32),
}

impl fmt::Display for NotifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unsupported => f.write_str(
                "this wake-up mechanism is not supported on this system; \
                 use a Parker or a Doorbell instead",
            ),
            Self::InvalidObject => f.write_str(
                "the OS rejected the wake-up object (closed descriptor/handle or unmapped \
                 address); drop this connection and reconnect",
            ),
            Self::Os(code) => write!(
                f,
                "the OS refused the wait/wake operation (OS error {code}: {}); \
                 drop this connection and reconnect",
                std::io::Error::from_raw_os_error(*code)
            ),
        }
    }
}

impl std::error::Error for NotifyError {}

/// Creating or opening a notification object failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The process ran out of file descriptors or handles.
    #[error(
        "cannot create {what}: this process has too many open descriptors (EMFILE); \
         close unused connections or raise the limit (`ulimit -n`, RLIMIT_NOFILE)"
    )]
    ProcessLimit {
        /// What was being created.
        what: &'static str,
    },
    /// The system ran out of file descriptors, handles or kernel memory.
    #[error(
        "cannot create {what}: the system-wide table of open files or kernel objects is full \
         (ENFILE/ENOMEM); close descriptors in other processes or raise `fs.file-max`"
    )]
    SystemLimit {
        /// What was being created.
        what: &'static str,
    },
    /// The OS refused access to a named object.
    #[error(
        "permission denied opening {what} `{name}`: it belongs to another user or session; \
         run both processes as the same user in the same login session"
    )]
    PermissionDenied {
        /// What was being opened.
        what: &'static str,
        /// The name that was refused.
        name: String,
    },
    /// A named object does not exist.
    #[error(
        "{what} `{name}` does not exist: the peer has not created it yet or has already exited; \
         check that the peer is running and retry the connection"
    )]
    NotFound {
        /// What was being opened.
        what: &'static str,
        /// The name that was not found.
        name: String,
    },
    /// A name received from the peer (or given by the caller) is malformed or not one of ours.
    #[error(
        "invalid name `{name}`: {reason}; only pass names produced by this crate on the \
         same machine and for the same user"
    )]
    InvalidName {
        /// The offending name (truncated to 200 characters).
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The descriptor handed to `Doorbell::from_owned_fd` is not a doorbell.
    #[error(
        "the descriptor is not a doorbell (it is `{found}`); pass the descriptor created by \
         `Doorbell::new` in the peer process"
    )]
    NotADoorbell {
        /// What the descriptor turned out to be.
        found: String,
    },
    /// The system lacks a needed feature.
    #[error("{what} is not supported on this system; {hint}")]
    Unsupported {
        /// The missing feature.
        what: &'static str,
        /// What to do instead.
        hint: &'static str,
    },
    /// Any other OS failure.
    #[error("{op} failed: {source}; this is unexpected, report it with the OS version")]
    Os {
        /// The operation that failed (the system call or API name).
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl SetupError {
    /// Classifies an OS error from creating or opening `what` (`op` is the system call).
    pub(crate) fn from_io(op: &'static str, what: &'static str, source: std::io::Error) -> Self {
        #[cfg(unix)]
        {
            match source.raw_os_error() {
                Some(c) if c == rustix::io::Errno::MFILE.raw_os_error() => {
                    return Self::ProcessLimit { what };
                }
                Some(c)
                    if c == rustix::io::Errno::NFILE.raw_os_error()
                        || c == rustix::io::Errno::NOMEM.raw_os_error() =>
                {
                    return Self::SystemLimit { what };
                }
                Some(c) if c == rustix::io::Errno::NOSYS.raw_os_error() => {
                    return Self::Unsupported {
                        what,
                        hint: "this kernel lacks the system call; upgrade the OS",
                    };
                }
                _ => {}
            }
        }
        #[cfg(windows)]
        {
            use windows_sys::Win32::Foundation::{
                ERROR_NO_SYSTEM_RESOURCES, ERROR_NOT_ENOUGH_MEMORY, ERROR_TOO_MANY_OPEN_FILES,
            };
            match source.raw_os_error().map(|c| c as u32) {
                Some(ERROR_TOO_MANY_OPEN_FILES) => return Self::ProcessLimit { what },
                Some(ERROR_NO_SYSTEM_RESOURCES | ERROR_NOT_ENOUGH_MEMORY) => {
                    return Self::SystemLimit { what };
                }
                _ => {}
            }
        }
        Self::Os { op, source }
    }

    /// Classifies an OS error from opening the named object `name`.
    #[allow(dead_code)] // Used on Windows and macOS only.
    pub(crate) fn from_open(
        op: &'static str,
        what: &'static str,
        name: &str,
        source: std::io::Error,
    ) -> Self {
        match source.kind() {
            std::io::ErrorKind::NotFound => Self::NotFound {
                what,
                name: truncate(name),
            },
            std::io::ErrorKind::PermissionDenied => Self::PermissionDenied {
                what,
                name: truncate(name),
            },
            _ => Self::from_io(op, what, source),
        }
    }

    pub(crate) fn invalid_name(name: &str, reason: &'static str) -> Self {
        Self::InvalidName {
            name: truncate(name),
            reason,
        }
    }
}

/// Names come from the peer: keep error messages bounded.
fn truncate(name: &str) -> String {
    name.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_to_do() {
        let e = SetupError::ProcessLimit { what: "an eventfd" };
        assert!(e.to_string().contains("ulimit -n"), "{e}");
        let e = SetupError::invalid_name(&"x".repeat(1000), "bad prefix");
        let SetupError::InvalidName { name, .. } = &e else {
            panic!("wrong variant: {e:?}");
        };
        assert_eq!(name.len(), 200);
        assert!(NotifyError::InvalidObject.to_string().contains("reconnect"));
    }

    #[cfg(unix)]
    #[test]
    fn fd_exhaustion_is_classified() {
        let emfile = std::io::Error::from_raw_os_error(rustix::io::Errno::MFILE.raw_os_error());
        assert!(matches!(
            SetupError::from_io("eventfd", "an eventfd", emfile),
            SetupError::ProcessLimit { .. }
        ));
        let enfile = std::io::Error::from_raw_os_error(rustix::io::Errno::NFILE.raw_os_error());
        assert!(matches!(
            SetupError::from_io("eventfd", "an eventfd", enfile),
            SetupError::SystemLimit { .. }
        ));
        let other = std::io::Error::from_raw_os_error(rustix::io::Errno::IO.raw_os_error());
        assert!(matches!(
            SetupError::from_io("eventfd", "an eventfd", other),
            SetupError::Os { .. }
        ));
    }
}
