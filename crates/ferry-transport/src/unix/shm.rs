//! A connection's shared memory: a sealed `memfd` (Linux) or an unlinked POSIX shared-memory
//! object (macOS) mapped by both processes.
//!
//! The server creates the memfd, sizes it, and adds the seals `F_SEAL_SHRINK | F_SEAL_GROW |
//! F_SEAL_SEAL` before handing it over, so neither side can shrink the file under the other's
//! mapping (which would turn the peer's next access into `SIGBUS`). The client checks the size
//! with `fstat` and the seals with `F_GET_SEALS` before mapping. Nothing is named in `/dev/shm`:
//! when both processes are gone, so is the memory.
//!
//! macOS has no memfd: the server creates a POSIX shared-memory object under a short random
//! name (`/ferry-` and 16 hex digits: 23 characters, within macOS's 31), exclusively and mode
//! 0600, sizes it, and unlinks the name at once, before anything else happens; the descriptor is
//! all that is left, and it travels with `SCM_RIGHTS` like the memfd. macOS has no seals either,
//! but it refuses to resize a POSIX shared-memory object once it has been sized, which is the
//! guarantee the seals give on Linux. (Compile-checked only: it has never run on a Mac.)

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};

use memmap2::MmapRaw;
#[cfg(target_os = "linux")]
use rustix::fs::{MemfdFlags, SealFlags};

use crate::error::Error;

/// The seals every connection memfd carries.
#[cfg(target_os = "linux")]
pub const REQUIRED_SEALS: SealFlags = SealFlags::SHRINK
    .union(SealFlags::GROW)
    .union(SealFlags::SEAL);

/// A shared mapping of one connection's memfd.
#[derive(Debug)]
pub struct SharedMemory {
    map: MmapRaw,
    fd: OwnedFd,
}

impl SharedMemory {
    /// Creates an unlinked POSIX shared-memory object of `len` bytes and maps it (server side,
    /// macOS).
    ///
    /// # Errors
    /// [`Error::SharedMemory`] when the kernel refuses.
    #[cfg(target_os = "macos")]
    pub fn create(len: usize) -> Result<Self, Error> {
        use rustix::fs::Mode;
        use rustix::shm::OFlags;
        use std::hash::{BuildHasher, Hasher};
        let fail = |step: &'static str, source: rustix::io::Errno| Error::SharedMemory {
            step,
            source: source.into(),
        };
        for _ in 0..16 {
            // Unguessable enough for a name that lives a few microseconds: SipHash keys are
            // random per process, and each `RandomState` differs.
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            let name = format!("/ferry-{:016x}", h.finish());
            match rustix::shm::open(
                name.as_str(),
                OFlags::CREATE | OFlags::EXCL | OFlags::RDWR,
                Mode::RUSR | Mode::WUSR,
            ) {
                Ok(fd) => {
                    let _ = rustix::shm::unlink(name.as_str());
                    rustix::fs::ftruncate(&fd, len as u64).map_err(|e| fail("ftruncate", e))?;
                    return Self::map(fd, len);
                }
                Err(rustix::io::Errno::EXIST) => continue,
                Err(e) => return Err(fail("shm_open", e)),
            }
        }
        Err(fail("shm_open (16 names taken)", rustix::io::Errno::EXIST))
    }

    /// Validates and maps a shared-memory object received from the server (client side,
    /// macOS): its size must be `expected_len` (macOS may round it up to a whole page).
    ///
    /// # Errors
    /// [`Error::BadSharedMemory`] when the size is wrong; [`Error::SharedMemory`] when the
    /// kernel refuses the mapping.
    #[cfg(target_os = "macos")]
    pub fn open(fd: OwnedFd, expected_len: usize) -> Result<Self, Error> {
        let stat = rustix::fs::fstat(&fd).map_err(|e| Error::SharedMemory {
            step: "fstat",
            source: e.into(),
        })?;
        let page = rustix::param::page_size() as u64;
        let want = expected_len as u64;
        let size = u64::try_from(stat.st_size).unwrap_or(0);
        if size != want && size != want.div_ceil(page) * page {
            return Err(Error::BadSharedMemory(format!(
                "the server's shared memory is {} bytes but the handshake announced {expected_len}",
                stat.st_size
            )));
        }
        Self::map(fd, expected_len)
    }

    /// Creates a sealed memfd of `len` bytes and maps it (server side).
    ///
    /// # Errors
    /// [`Error::SharedMemory`] when the kernel refuses (`EMFILE`, `ENOMEM`, memlock or size limits).
    #[cfg(target_os = "linux")]
    pub fn create(len: usize) -> Result<Self, Error> {
        let fail = |step: &'static str, source: rustix::io::Errno| Error::SharedMemory {
            step,
            source: source.into(),
        };
        let fd = rustix::fs::memfd_create(
            "ferry-connection",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .map_err(|e| fail("memfd_create", e))?;
        rustix::fs::ftruncate(&fd, len as u64).map_err(|e| fail("ftruncate", e))?;
        rustix::fs::fcntl_add_seals(&fd, REQUIRED_SEALS).map_err(|e| fail("F_ADD_SEALS", e))?;
        Self::map(fd, len)
    }

    /// Validates and maps a memfd received from the server (client side): its size must be
    /// `expected_len` and it must carry [`REQUIRED_SEALS`].
    ///
    /// # Errors
    /// [`Error::BadSharedMemory`] when the size or seals are wrong; [`Error::SharedMemory`] when
    /// the kernel refuses the mapping.
    #[cfg(target_os = "linux")]
    pub fn open(fd: OwnedFd, expected_len: usize) -> Result<Self, Error> {
        let stat = rustix::fs::fstat(&fd).map_err(|e| Error::SharedMemory {
            step: "fstat",
            source: e.into(),
        })?;
        if stat.st_size < 0 || stat.st_size as u64 != expected_len as u64 {
            return Err(Error::BadSharedMemory(format!(
                "the server's memfd is {} bytes but the handshake announced {expected_len}",
                stat.st_size
            )));
        }
        let seals = rustix::fs::fcntl_get_seals(&fd).map_err(|_| {
            Error::BadSharedMemory("the server's file is not a sealable memfd".into())
        })?;
        if !seals.contains(REQUIRED_SEALS) {
            return Err(Error::BadSharedMemory(format!(
                "the server's memfd lacks the seals shrink|grow|seal (has {seals:?}): it could be \
                 truncated under our mapping"
            )));
        }
        Self::map(fd, expected_len)
    }

    fn map(fd: OwnedFd, len: usize) -> Result<Self, Error> {
        let file = File::from(fd);
        let map = memmap2::MmapOptions::new()
            .len(len)
            .map_raw(&file)
            .map_err(|source| Error::SharedMemory {
                step: "mmap",
                source,
            })?;
        Ok(Self {
            map,
            fd: file.into(),
        })
    }

    /// The memfd, to pass to the peer.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Start of the mapping.
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// Length of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the mapping is empty (never, for a connection's memory).
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }
}
