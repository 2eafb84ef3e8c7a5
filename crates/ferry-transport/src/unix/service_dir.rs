//! Where a service's control socket lives, and the checks that keep other users out.
//!
//! A service name maps to `<dir>/<name>.sock` (plus `<name>.lock`, held with `flock` for the
//! server's life), where `<dir>` is, in order of preference:
//! `$FERRY_RUNTIME_DIR`, `$XDG_RUNTIME_DIR/ferry`, or `<temp dir>/ferry-<uid>`.
//! The directory must be a real directory (not a symlink) owned by the effective uid and not
//! writable by group or others; the server creates it with mode 0700 when it is missing.

use std::ffi::OsString;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::Error;

pub use crate::service_name::{MAX_NAME_LEN, validate_name};

/// `sun_path` holds 108 bytes including the terminating NUL on Linux (104 on macOS).
#[cfg(target_os = "linux")]
const MAX_SOCKET_PATH: usize = 107;
#[cfg(not(target_os = "linux"))]
const MAX_SOCKET_PATH: usize = 103;

/// The filesystem paths of one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePaths {
    /// The per-user directory holding the service's files.
    pub dir: PathBuf,
    /// The Unix-domain control socket.
    pub socket: PathBuf,
    /// The lock file a live server holds with `flock`.
    pub lock: PathBuf,
}

fn env_nonempty(key: &str) -> Option<OsString> {
    std::env::var_os(key).filter(|v| !v.is_empty())
}

/// The directory services of this user live in (not created, not checked).
pub fn runtime_dir() -> PathBuf {
    if let Some(dir) = env_nonempty("FERRY_RUNTIME_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(xdg) = env_nonempty("XDG_RUNTIME_DIR") {
        return Path::new(&xdg).join("ferry");
    }
    std::env::temp_dir().join(format!("ferry-{}", rustix::process::geteuid().as_raw()))
}

/// Resolves the paths of service `name` in [`runtime_dir`].
pub fn resolve(name: &str) -> Result<ServicePaths, Error> {
    resolve_in(&runtime_dir(), name)
}

/// Resolves the paths of service `name` in `dir`.
pub fn resolve_in(dir: &Path, name: &str) -> Result<ServicePaths, Error> {
    validate_name(name)?;
    let socket = dir.join(format!("{name}.sock"));
    let len = socket.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(Error::SocketPathTooLong {
            path: socket,
            len,
            max: MAX_SOCKET_PATH,
        });
    }
    let lock = dir.join(format!("{name}.lock"));
    Ok(ServicePaths {
        dir: dir.to_owned(),
        socket,
        lock,
    })
}

/// Creates `dir` with mode 0700 if it is missing, then checks it (see [`check_private_dir`]).
pub fn ensure_private_dir(dir: &Path) -> Result<(), Error> {
    match std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(false)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // The parent is missing (e.g. a FERRY_RUNTIME_DIR two levels deep): create the
            // parents with the default mode, the last component with 0700.
            std::fs::DirBuilder::new()
                .mode(0o700)
                .recursive(true)
                .create(dir)
                .map_err(|source| Error::Io {
                    what: format!("creating {}", dir.display()),
                    source,
                })?;
        }
        Err(source) => {
            return Err(Error::Io {
                what: format!("creating {}", dir.display()),
                source,
            });
        }
    }
    check_private_dir(dir)
}

/// Refuses a directory that is a symlink, is not a directory, is owned by another user, or that
/// group or others can write to.
pub fn check_private_dir(dir: &Path) -> Result<(), Error> {
    let meta = std::fs::symlink_metadata(dir).map_err(|source| Error::Io {
        what: format!("inspecting {}", dir.display()),
        source,
    })?;
    let unsafe_dir = |why: String| Error::UnsafeDirectory {
        path: dir.to_owned(),
        why,
    };
    if meta.file_type().is_symlink() {
        return Err(unsafe_dir("it is a symbolic link".into()));
    }
    if !meta.is_dir() {
        return Err(unsafe_dir("it is not a directory".into()));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(unsafe_dir(format!(
            "it is owned by uid {}, not by you (uid {me})",
            meta.uid()
        )));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "its mode is {mode:03o}: group or others can write to it"
        )));
    }
    Ok(())
}
