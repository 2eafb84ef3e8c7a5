//! Where a service's control channel lives, the same type on every platform.

use std::fmt;

use crate::sys;

/// Where a service's control channel lives: a Unix-domain socket in the runtime directory
/// (Unix), a named pipe (Windows). Its `Display` is the socket's path or the pipe's name; the
/// platform's details are behind `cfg`'d accessors.
#[derive(Clone, Copy)]
pub struct Endpoint<'a>(pub(crate) &'a sys::Endpoint);

impl<'a> Endpoint<'a> {
    /// Unix: the control socket.
    #[cfg(unix)]
    pub fn socket_path(&self) -> &'a std::path::Path {
        &self.0.socket
    }
    /// Unix: the lock file a live server holds.
    #[cfg(unix)]
    pub fn lock_path(&self) -> &'a std::path::Path {
        &self.0.lock
    }
    /// Unix: the runtime directory holding both.
    #[cfg(unix)]
    pub fn dir(&self) -> &'a std::path::Path {
        &self.0.dir
    }
    /// Windows: the named pipe (`\\.\pipe\ferry-<user SID>-...`).
    #[cfg(windows)]
    pub fn pipe_name(&self) -> &'a str {
        &self.0.pipe
    }
}

impl fmt::Display for Endpoint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&sys::endpoint_text(self.0))
    }
}

impl fmt::Debug for Endpoint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({self})")
    }
}
