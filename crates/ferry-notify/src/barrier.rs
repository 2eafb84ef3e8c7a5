//! Heavy memory barriers, for rings that publish fence-free
//! (`ferry_ring::Producer::set_fence_free`).
//!
//! A fence-free ring side publishes with a plain Release store; the side that
//! goes to sleep makes up for the missing StoreLoad fence with a heavy
//! barrier, which forces a full memory barrier on every CPU running a thread
//! of a registered process. On Linux that is
//! `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)` (Linux 4.16+; an IPI to the
//! CPUs running registered processes, about a microsecond on this project's
//! machine, and the interrupted CPU loses time too, so it suits streams that
//! rarely sleep, not request/response): the fence-free process must first
//! [`register_fence_free`]. Elsewhere there is no cross-process equivalent
//! (Windows' `FlushProcessWriteBuffers` and macOS have none that reaches
//! another process), so rings stay fenced there: [`register_fence_free`]
//! says `false` and [`heavy_barrier`] `None`.

/// Registers this process as one that may publish fence-free: the heavy
/// barriers of other processes then reach its threads. Idempotent (the
/// answer is computed once per process).
///
/// `false` if the OS cannot do it (not Linux, a kernel without
/// `MEMBARRIER_CMD_GLOBAL_EXPEDITED`, or a seccomp filter refusing
/// `membarrier`): then do not turn fence-free publication on.
#[must_use]
pub fn register_fence_free() -> bool {
    imp::register()
}

/// The heavy barrier to give ring handles
/// (`ferry_ring::Consumer::set_heavy_barrier`), if this OS has one.
#[must_use]
pub fn heavy_barrier() -> Option<fn()> {
    imp::heavy()
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod imp {
    use std::sync::OnceLock;

    use rustix::thread::{MembarrierCommand, MembarrierQuery, membarrier, membarrier_query};

    fn supported() -> bool {
        static SUPPORTED: OnceLock<bool> = OnceLock::new();
        *SUPPORTED.get_or_init(|| {
            membarrier_query().contains(
                MembarrierQuery::GLOBAL_EXPEDITED | MembarrierQuery::REGISTER_GLOBAL_EXPEDITED,
            )
        })
    }

    pub(super) fn register() -> bool {
        static REGISTERED: OnceLock<bool> = OnceLock::new();
        *REGISTERED.get_or_init(|| {
            supported() && membarrier(MembarrierCommand::RegisterGlobalExpedited).is_ok()
        })
    }

    pub(super) fn heavy() -> Option<fn()> {
        supported().then_some(global_expedited as fn())
    }

    /// `MEMBARRIER_CMD_GLOBAL_EXPEDITED`; should it ever fail (it cannot
    /// once the query said it is supported, short of a seccomp filter
    /// installed later), the non-expedited `MEMBARRIER_CMD_GLOBAL` (every
    /// process, no registration; milliseconds, but the guarantee holds). If
    /// that fails too, only a local fence is left and a wake-up could be
    /// missed.
    fn global_expedited() {
        if membarrier(MembarrierCommand::GlobalExpedited).is_err()
            && membarrier(MembarrierCommand::Global).is_err()
        {
            std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        }
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod imp {
    pub(super) fn register() -> bool {
        false
    }

    pub(super) fn heavy() -> Option<fn()> {
        None
    }
}

#[cfg(all(test, any(target_os = "linux", target_os = "android")))]
mod tests {
    use super::*;

    #[test]
    fn linux_registers_and_has_a_heavy_barrier() {
        // This project's CI machines run kernels with membarrier; a
        // sandbox that forbids it would fail here, which is the point: the
        // transport would then silently stay fenced.
        assert!(register_fence_free());
        assert!(register_fence_free(), "idempotent");
        let barrier = heavy_barrier().expect("membarrier GLOBAL_EXPEDITED");
        barrier();
    }
}
