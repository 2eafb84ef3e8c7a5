//! A connection's shared memory on Windows: an unnamed, pagefile-backed file mapping (section)
//! mapped by both processes.
//!
//! The server creates it (`CreateFileMappingW(INVALID_HANDLE_VALUE, …, no name)`): nothing in
//! any namespace names it, so only a process holding a handle can map it, and the server hands
//! the client one with `DuplicateHandle` (`FILE_MAP_READ | FILE_MAP_WRITE` only: the client
//! cannot extend or execute it). A pagefile-backed section has a fixed size, so neither side can
//! shrink it under the other's view (the guarantee the seals give on Linux). When both
//! processes are gone, so is the memory.
//!
//! The client treats the handle as untrusted: [`SharedMemory::open`] maps the *whole* section
//! and checks with `VirtualQuery` that the view is exactly the size the handshake announced
//! (rounded up to the page size), committed, read-write and a mapped view; a handle that is not
//! a section at all fails `MapViewOfFile`.

use std::os::windows::io::{AsHandle, AsRawHandle, BorrowedHandle, OwnedHandle};
use std::sync::Arc;

use ferry_ring::Region;
use windows_sys::Win32::Foundation::{HANDLE, INVALID_HANDLE_VALUE};
use windows_sys::Win32::System::Memory::{
    CreateFileMappingW, FILE_MAP_READ, FILE_MAP_WRITE, MEM_COMMIT, MEM_MAPPED,
    MEMORY_BASIC_INFORMATION, MEMORY_MAPPED_VIEW_ADDRESS, MapViewOfFile, PAGE_READWRITE,
    UnmapViewOfFile, VirtualQuery,
};
use windows_sys::Win32::System::SystemInformation::{GetSystemInfo, SYSTEM_INFO};

use super::owned;
use crate::error::Error;

/// The rights a client needs on the section, and all the server grants in its duplicate.
pub const CLIENT_ACCESS: u32 = FILE_MAP_READ | FILE_MAP_WRITE;

/// A mapped view of one connection's section.
#[derive(Debug)]
pub struct SharedMemory {
    view: *mut u8,
    len: usize,
    handle: OwnedHandle,
}

// SAFETY: the view is plain shared memory that stays mapped until drop; the struct only hands
// out its address (`as_ptr`), and every access through it is the caller's (the ring's) business,
// as with `memmap2::MmapRaw`, which is Send and Sync.
unsafe impl Send for SharedMemory {}
// SAFETY: as above: `&SharedMemory` gives nothing but the address and the length.
unsafe impl Sync for SharedMemory {}

impl SharedMemory {
    /// Creates an unnamed, pagefile-backed section of `len` bytes and maps it (server side).
    ///
    /// # Errors
    /// [`Error::SharedMemory`] when the system refuses (commit limit, handle limits, a zero
    /// `len`).
    pub fn create(len: usize) -> Result<Self, Error> {
        let size = len as u64;
        // SAFETY: INVALID_HANDLE_VALUE asks for a pagefile-backed section; no security
        // attributes (default DACL) and no name; nothing is retained.
        let raw = unsafe {
            CreateFileMappingW(
                INVALID_HANDLE_VALUE,
                core::ptr::null(),
                PAGE_READWRITE,
                (size >> 32) as u32,
                size as u32,
                core::ptr::null(),
            )
        };
        // SAFETY: `raw` was just returned by CreateFileMappingW on this thread.
        let handle = unsafe { owned(raw) }.map_err(|source| Error::SharedMemory {
            step: "CreateFileMappingW",
            source,
        })?;
        let view = map(&handle, len).map_err(|source| Error::SharedMemory {
            step: "MapViewOfFile",
            source,
        })?;
        Ok(Self { view, len, handle })
    }

    /// Maps a section handle received from the server (client side), after checking that it is
    /// one and that its view is exactly `expected_len` bytes (rounded up to the page size),
    /// committed and read-write.
    ///
    /// # Errors
    /// [`Error::BadSharedMemory`] naming what is wrong (not a section, another size, not
    /// committed, not writable).
    pub fn open(handle: OwnedHandle, expected_len: usize) -> Result<Self, Error> {
        // Map the whole section (length 0) to see its real size.
        let view = map(&handle, 0).map_err(|e| {
            Error::BadSharedMemory(format!(
                "the handle for the shared memory cannot be mapped ({e}): it is not a \
                 read-write file mapping"
            ))
        })?;
        let mapped = Self {
            view,
            len: expected_len,
            handle,
        };
        let mut info = MEMORY_BASIC_INFORMATION::default();
        // SAFETY: `view` is the start of our live view; `info` is writable for its size.
        let got = unsafe {
            VirtualQuery(
                view.cast_const().cast(),
                &mut info,
                size_of::<MEMORY_BASIC_INFORMATION>(),
            )
        };
        if got == 0 {
            return Err(Error::SharedMemory {
                step: "VirtualQuery",
                source: std::io::Error::last_os_error(),
            });
        }
        let want = expected_len.next_multiple_of(page_size());
        let problem = if info.Type != MEM_MAPPED {
            Some(format!("it is not a mapped view (type {:#x})", info.Type))
        } else if info.State != MEM_COMMIT {
            Some(format!(
                "its pages are not committed (state {:#x}): touching them would fault",
                info.State
            ))
        } else if info.Protect != PAGE_READWRITE {
            Some(format!(
                "it is not read-write (protection {:#x})",
                info.Protect
            ))
        } else if info.RegionSize != want {
            Some(format!(
                "it maps {} bytes but the handshake announced {expected_len} ({want} with page \
                 rounding)",
                info.RegionSize
            ))
        } else {
            None
        };
        match problem {
            Some(why) => Err(Error::BadSharedMemory(format!(
                "the server's file mapping is not usable: {why}"
            ))),
            None => Ok(mapped),
        }
    }

    /// The section, to duplicate into the peer (grant [`CLIENT_ACCESS`]).
    pub fn handle(&self) -> BorrowedHandle<'_> {
        self.handle.as_handle()
    }

    /// Start of the view.
    pub fn as_ptr(&self) -> *mut u8 {
        self.view
    }

    /// Length of the memory in bytes (as created or announced).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the memory is empty (never, for a connection's memory).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `len` bytes at `offset`, as a `ferry-ring` [`Region`] that keeps the mapping alive.
    ///
    /// # Errors
    /// [`Error::BadSharedMemory`] when the slice is out of bounds or not aligned to
    /// [`ferry_ring::REGION_ALIGN`].
    pub fn region(self: &Arc<Self>, offset: usize, len: usize) -> Result<ShmRegion, Error> {
        let end = offset.checked_add(len);
        if end.is_none_or(|end| end > self.len) {
            return Err(Error::BadSharedMemory(format!(
                "a ring at offset {offset} of {len} bytes does not fit in {} bytes of shared memory",
                self.len
            )));
        }
        if !offset.is_multiple_of(ferry_ring::REGION_ALIGN) {
            return Err(Error::BadSharedMemory(format!(
                "a ring at offset {offset} is not aligned to {} bytes",
                ferry_ring::REGION_ALIGN
            )));
        }
        Ok(ShmRegion {
            mem: self.clone(),
            offset,
            len,
        })
    }
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        // SAFETY: `view` is our live view, unmapped once, here; nothing uses it afterwards
        // (regions hold an `Arc` to `self`, so none outlives it). The handle closes after.
        unsafe {
            UnmapViewOfFile(MEMORY_MAPPED_VIEW_ADDRESS {
                Value: self.view.cast(),
            })
        };
    }
}

/// Part of a [`SharedMemory`] holding one ring (see [`SharedMemory::region`]).
#[derive(Debug, Clone)]
pub struct ShmRegion {
    mem: Arc<SharedMemory>,
    offset: usize,
    len: usize,
}

// SAFETY: `offset + len <= mem.len()` and `offset` is a multiple of REGION_ALIGN (both checked
// in `SharedMemory::region`); the view starts at an allocation-granularity boundary (64 KiB),
// so the region is aligned too; the mapping lives as long as the `Arc` and is never remapped.
unsafe impl Region for ShmRegion {
    fn as_ptr(&self) -> *mut u8 {
        // SAFETY: in bounds of the view, see the impl's comment.
        unsafe { self.mem.as_ptr().add(self.offset) }
    }
    fn len(&self) -> usize {
        self.len
    }
}

fn map(handle: &OwnedHandle, len: usize) -> std::io::Result<*mut u8> {
    // SAFETY: `handle` is live; a failure returns a null address and touches nothing.
    let view = unsafe {
        MapViewOfFile(
            handle.as_raw_handle() as HANDLE,
            FILE_MAP_READ | FILE_MAP_WRITE,
            0,
            0,
            len,
        )
    };
    if view.Value.is_null() {
        return Err(std::io::Error::last_os_error());
    }
    Ok(view.Value.cast())
}

fn page_size() -> usize {
    let mut info = SYSTEM_INFO::default();
    // SAFETY: `info` is writable for its size; GetSystemInfo cannot fail.
    unsafe { GetSystemInfo(&mut info) };
    (info.dwPageSize as usize).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poke(m: &SharedMemory, at: usize, v: u8) {
        assert!(at < m.len());
        // SAFETY: `at` is within the live view (checked above); volatile, as the other view
        // of the same memory reads it.
        unsafe { m.as_ptr().wrapping_add(at).write_volatile(v) }
    }

    fn peek(m: &SharedMemory, at: usize) -> u8 {
        assert!(at < m.len());
        // SAFETY: as in `poke`.
        unsafe { m.as_ptr().wrapping_add(at).read_volatile() }
    }

    fn duplicate(h: BorrowedHandle<'_>) -> OwnedHandle {
        h.try_clone_to_owned().expect("duplicate")
    }

    #[test]
    fn two_views_of_one_section_share_bytes() {
        let len = 64 * 1024;
        let a = SharedMemory::create(len).expect("create");
        assert_eq!(a.len(), len);
        assert!(!a.is_empty());
        let b = SharedMemory::open(duplicate(a.handle()), len).expect("open");
        assert_ne!(a.as_ptr(), b.as_ptr(), "two views");
        poke(&a, 100, 0xA5);
        assert_eq!(peek(&b, 100), 0xA5);
        poke(&b, len - 1, 0x5A);
        assert_eq!(peek(&a, len - 1), 0x5A);
    }

    #[test]
    fn open_refuses_a_wrong_size_and_other_objects() {
        let mem = SharedMemory::create(64 * 1024).expect("create");
        let err = SharedMemory::open(duplicate(mem.handle()), 128 * 1024).expect_err("bigger");
        assert!(
            err.to_string().contains("handshake announced 131072"),
            "{err}"
        );
        let err = SharedMemory::open(duplicate(mem.handle()), 32 * 1024).expect_err("smaller");
        assert!(err.to_string().contains("maps 65536 bytes"), "{err}");
        // A handle that is not a file mapping: an event.
        let bell = ferry_notify::Doorbell::new_unnamed().expect("event");
        let handle: OwnedHandle = bell.into();
        let err = SharedMemory::open(handle, 4096).expect_err("an event is not memory");
        assert!(matches!(err, Error::BadSharedMemory(_)), "{err}");
        assert!(err.to_string().contains("cannot be mapped"), "{err}");
    }

    #[test]
    fn regions_are_bounds_and_alignment_checked() {
        let mem = Arc::new(SharedMemory::create(64 * 1024).expect("create"));
        let r = mem.region(4096, 8192).expect("in bounds");
        assert_eq!(Region::len(&r), 8192);
        // SAFETY: in bounds of the view.
        assert_eq!(Region::as_ptr(&r), unsafe { mem.as_ptr().add(4096) });
        assert!(mem.region(60 * 1024, 8192).is_err(), "past the end");
        assert!(mem.region(usize::MAX, 2).is_err(), "overflow");
        assert!(mem.region(4, 64).is_err(), "misaligned");
    }
}
