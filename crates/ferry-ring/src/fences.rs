//! How a handle orders its publications against the peer's sleep protocol:
//! a SeqCst fence per publish (the default), or fence-free publication with
//! the cost moved to the sleeper (a heavy barrier). See the crate docs,
//! "Fence-free publication".

use crate::sync::{AtomicU32, Ordering, fence};

/// A heavy memory barrier: when it returns, every thread that may publish
/// fence-free to the rings of the handle it is given to has executed a full
/// memory barrier since the call began (or was not running). On Linux,
/// `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`, every fence-free process
/// having registered for it (`ferry_notify::barrier`).
pub type HeavyBarrier = fn();

/// A handle's side of the fence rules.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Fences {
    /// This handle publishes (or releases) without a StoreLoad fence.
    fence_free: bool,
    /// What this handle runs before re-checking, when it prepares to sleep
    /// and the peer is fence-free.
    heavy: Option<HeavyBarrier>,
}

impl Fences {
    /// Between the Release store that publishes (a record word, or `head`)
    /// and the load of the peer's sleep word.
    #[inline]
    pub(crate) fn after_publish(&self) {
        // Under loom the fence-free side keeps its SeqCst fence: that is the
        // model of the heavy barrier, which promotes the compiler fence below
        // to a full fence for the sleeper (the Linux kernel memory model's
        // reading of membarrier). Loom cannot inject a fence into another
        // thread.
        if self.fence_free && !cfg!(loom) {
            core::sync::atomic::compiler_fence(Ordering::SeqCst);
        } else {
            fence(Ordering::SeqCst);
        }
    }

    /// In `prepare_sleep`, right after the sleep token was stored: the
    /// fence, then the heavy barrier if the peer (its `fence_free` word is
    /// `peer_flag`) publishes fence-free. `false` if it does and this handle
    /// has no heavy barrier: it must then not sleep.
    #[inline]
    pub(crate) fn before_recheck(&self, peer_flag: &AtomicU32) -> bool {
        fence(Ordering::SeqCst);
        if peer_flag.load(Ordering::Relaxed) == 0 {
            return true;
        }
        match self.heavy {
            Some(barrier) => {
                barrier();
                true
            }
            None => false,
        }
    }

    /// Turns fence-free publication on or off, announcing it in `own_flag`
    /// (SeqCst store, then a fence: a sleeper that read the old value is
    /// seen by this side's next loads of its sleep word).
    pub(crate) fn set_fence_free(&mut self, own_flag: &AtomicU32, on: bool) {
        own_flag.store(u32::from(on), Ordering::SeqCst);
        fence(Ordering::SeqCst);
        self.fence_free = on;
    }

    pub(crate) fn is_fence_free(&self) -> bool {
        self.fence_free
    }

    pub(crate) fn set_heavy_barrier(&mut self, barrier: Option<HeavyBarrier>) {
        self.heavy = barrier;
    }
}
