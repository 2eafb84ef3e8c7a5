//! Binding a service: the lock that says "a server is running", stale-socket replacement, and
//! permission checks.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixListener;

use rustix::fs::FlockOperation;

use super::service_dir::{ServicePaths, ensure_private_dir};
use crate::error::Error;

/// A bound control socket. Dropping it removes the socket and lock files.
#[derive(Debug)]
pub struct BoundSocket {
    listener: UnixListener,
    paths: ServicePaths,
    // Held (flock'ed) for the server's life; closing it releases the lock.
    _lock: File,
}

impl BoundSocket {
    /// Binds the control socket of a service, or fails with [`Error::AlreadyRunning`] when a live
    /// server holds it.
    ///
    /// The server holds `flock(LOCK_EX)` on `<name>.lock` for its whole life: a socket file left
    /// by a crashed server is stale exactly when that lock can be taken, and is then replaced.
    pub fn bind(paths: ServicePaths) -> Result<Self, Error> {
        ensure_private_dir(&paths.dir)?;
        let lock = take_lock(&paths)?;
        match std::fs::remove_file(&paths.socket) {
            Ok(()) => tracing_stale(&paths),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::Io {
                    what: format!("removing stale socket {}", paths.socket.display()),
                    source,
                });
            }
        }
        let listener = UnixListener::bind(&paths.socket).map_err(|source| Error::Io {
            what: format!("binding {}", paths.socket.display()),
            source,
        })?;
        // The directory is 0700 already; 0600 on the socket is the second fence.
        std::fs::set_permissions(&paths.socket, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| Error::Io {
                what: format!("chmod 0600 {}", paths.socket.display()),
                source,
            },
        )?;
        Ok(Self {
            listener,
            paths,
            _lock: lock,
        })
    }

    /// The listening socket.
    pub fn listener(&self) -> &UnixListener {
        &self.listener
    }

    /// The service's paths.
    pub fn paths(&self) -> &ServicePaths {
        &self.paths
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        // Remove the socket first: a client that still finds it gets ECONNREFUSED, which it
        // treats as "not running". The lock file goes last, while we still hold the lock.
        let _ = std::fs::remove_file(&self.paths.socket);
        let _ = std::fs::remove_file(&self.paths.lock);
    }
}

fn tracing_stale(_paths: &ServicePaths) {}

/// Opens and locks `<name>.lock`, retrying if the file was replaced between open and lock.
fn take_lock(paths: &ServicePaths) -> Result<File, Error> {
    for _ in 0..8 {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&paths.lock)
            .map_err(|source| Error::Io {
                what: format!("opening {}", paths.lock.display()),
                source,
            })?;
        match rustix::fs::flock(file.as_fd(), FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(Error::AlreadyRunning {
                    endpoint: paths.socket.display().to_string(),
                    pid: None,
                });
            }
            Err(e) => {
                return Err(Error::Io {
                    what: format!("locking {}", paths.lock.display()),
                    source: e.into(),
                });
            }
        }
        // A previous owner may have unlinked the file between our open and our flock: then we
        // hold a lock on an orphaned inode, and a third server could lock a new file. Check that
        // the path still names the inode we locked.
        let ours = file.metadata().map_err(|source| Error::Io {
            what: "fstat lock".into(),
            source,
        })?;
        match std::fs::symlink_metadata(&paths.lock) {
            Ok(now) if now.ino() == ours.ino() && now.dev() == ours.dev() => return Ok(file),
            _ => continue,
        }
    }
    Err(Error::Io {
        what: format!("locking {}", paths.lock.display()),
        source: io::Error::other("the lock file kept being replaced while we locked it"),
    })
}
