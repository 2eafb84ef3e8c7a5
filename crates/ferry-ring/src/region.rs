//! Memory the ring lives in: the [`Region`] trait and the in-process
//! [`HeapRegion`].

/// Memory that holds a ring: a shared mapping in production, a heap
/// allocation in tests.
///
/// # Safety
///
/// Implementors guarantee that, for as long as the value lives (and any
/// clone of it, for shared-ownership types):
///
/// - [`as_ptr`](Region::as_ptr) always returns the same pointer, valid for
///   reads and writes of [`len`](Region::len) bytes (the memory never moves
///   and is never unmapped or freed while the value lives);
/// - the bytes are initialised (any values: a fresh mapping's zeroes or a
///   peer's garbage are fine, the handles validate everything they read);
/// - the pointer is aligned to at least 64 bytes (attach refuses anything
///   less aligned than [`REGION_ALIGN`](crate::REGION_ALIGN) anyway);
/// - within this process, the memory is accessed only through this crate's
///   handles (the other process is the ring's peer and is treated as
///   untrusted).
pub unsafe trait Region: Send + Sync {
    /// Base address of the region.
    fn as_ptr(&self) -> *mut u8;
    /// Size of the region in bytes.
    fn len(&self) -> usize;
    /// Whether the region is empty (it then cannot hold a ring).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// SAFETY: a `&'static R` keeps `R` alive forever, and `R` upholds the contract.
unsafe impl<R: Region + ?Sized> Region for &'static R {
    fn as_ptr(&self) -> *mut u8 {
        (**self).as_ptr()
    }
    fn len(&self) -> usize {
        (**self).len()
    }
}

// SAFETY: each `Arc` clone keeps the shared `R` alive, and `R` upholds the
// contract.
#[cfg(feature = "alloc")]
unsafe impl<R: Region + ?Sized> Region for alloc::sync::Arc<R> {
    fn as_ptr(&self) -> *mut u8 {
        (**self).as_ptr()
    }
    fn len(&self) -> usize {
        (**self).len()
    }
}

/// A zeroed, [`REGION_ALIGN`](crate::REGION_ALIGN)-aligned heap allocation,
/// for tests and in-process rings.
#[cfg(feature = "alloc")]
#[derive(Debug)]
pub struct HeapRegion {
    ptr: core::ptr::NonNull<u8>,
    len: usize,
}

#[cfg(feature = "alloc")]
impl HeapRegion {
    /// Allocates `len` zeroed bytes aligned to `REGION_ALIGN`.
    ///
    /// # Panics
    ///
    /// Panics if `len` is 0 or too large for a `Layout`; aborts (via
    /// `handle_alloc_error`) if the allocation fails.
    #[must_use]
    pub fn new_zeroed(len: usize) -> Self {
        let layout = Self::layout(len);
        // SAFETY: `layout` has a nonzero size (checked by `layout`).
        let raw = unsafe { alloc::alloc::alloc_zeroed(layout) };
        let Some(ptr) = core::ptr::NonNull::new(raw) else {
            alloc::alloc::handle_alloc_error(layout)
        };
        HeapRegion { ptr, len }
    }

    /// A region of [`region_size`](crate::region_size)`(capacity)` bytes.
    ///
    /// # Panics
    ///
    /// As [`new_zeroed`](Self::new_zeroed).
    #[must_use]
    pub fn for_capacity(capacity: usize) -> Self {
        Self::new_zeroed(crate::region_size(capacity))
    }

    fn layout(len: usize) -> core::alloc::Layout {
        assert!(len > 0, "HeapRegion of 0 bytes");
        core::alloc::Layout::from_size_align(len, crate::REGION_ALIGN)
            .expect("HeapRegion size overflows isize")
    }
}

#[cfg(feature = "alloc")]
impl Drop for HeapRegion {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `alloc_zeroed` with exactly this layout and
        // is freed once, here. (Under loom the header's loom atomics are not
        // dropped: loom keeps their state per execution, not in them.)
        unsafe { alloc::alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.len)) }
    }
}

// SAFETY: `HeapRegion` owns plain bytes; it hands out only a raw pointer, and
// all concurrent access to the bytes goes through the ring protocol
// (atomics for shared words, happens-before via the cursors for payload).
#[cfg(feature = "alloc")]
unsafe impl Send for HeapRegion {}
// SAFETY: as for `Send`: `&HeapRegion` exposes nothing but the pointer.
#[cfg(feature = "alloc")]
unsafe impl Sync for HeapRegion {}

// SAFETY: the allocation lives until `drop`, never moves, is `len` bytes and
// `REGION_ALIGN`-aligned.
#[cfg(feature = "alloc")]
unsafe impl Region for HeapRegion {
    fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    fn len(&self) -> usize {
        self.len
    }
}
