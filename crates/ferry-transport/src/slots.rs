//! The client's table of calls in flight: a fixed array of slots, allocated once, so that a call
//! costs no heap allocation in steady state.
//!
//! A correlation id is `generation << 32 | slot index`. The generation changes every time a
//! slot is handed out, so a late answer to an abandoned call (timed out, cancelled, dropped)
//! names a generation that no longer matches and is dropped instead of reaching the slot's
//! next user.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::task::Waker;
use std::time::{Duration, Instant};

use ferry_frame::Kind;

use crate::error::Error;

/// Most bytes of stream items a stream may have waiting for its reader before the connection's
/// reader stops reading (backpressure reaches the server through the full ring).
pub(crate) const STREAM_QUEUE_BYTES: usize = 1 << 20;

/// Largest buffer a slot keeps once the message that needed it has been delivered: an answer
/// buffer or a stream queue that grew beyond this for a large message is freed (when the slot
/// is released, or when the queue runs empty) instead of staying at its high-water mark.
/// Messages up to this size keep reusing their buffer (no allocation per call in steady
/// state); larger ones allocate anyway (their reassembly does). With the default 256 slots a
/// client keeps at most 256 × 2 × 64 KiB of idle buffers, and only after that many
/// concurrent calls of that size (`tests/memory_release.rs` measures it).
pub(crate) const RETAIN_BYTES: usize = 64 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Not handed out.
    Free,
    /// Waiting for the answer.
    Waiting,
    /// A response or error arrived (for calls), or the stream ended.
    Done,
    /// The connection failed before the answer.
    Failed,
}

#[derive(Debug)]
pub(crate) struct SlotInner {
    pub state: State,
    /// Whether a thread is blocked on this slot's condvar.
    pub waiter: bool,
    /// The task of an async caller waiting on this slot (the async twin of `waiter`: whoever
    /// completes the slot takes it and wakes it). Only the tokio API sets it.
    pub waker: Option<Waker>,
    /// Whether this stream's item queue is over [`STREAM_QUEUE_BYTES`] (counted in
    /// [`Slots::backlogged`]).
    pub over: bool,
    /// Set by a departing reader: "take over reading the ring".
    pub lead: bool,
    /// Kind of the final answer (`Response`, `Error`, `StreamEnd`).
    pub kind: Kind,
    /// Payload of the final answer.
    pub buf: Vec<u8>,
    /// Stream items: each is a u32 little-endian length then the bytes.
    pub items: VecDeque<u8>,
    /// Whether this slot receives a stream.
    pub streaming: bool,
    /// Why it failed.
    pub failure: Option<&'static str>,
}

#[derive(Debug)]
pub(crate) struct Slot {
    pub generation: AtomicU32,
    pub inner: Mutex<SlotInner>,
    pub cv: Condvar,
}

impl Slot {
    pub(crate) fn lock(&self) -> MutexGuard<'_, SlotInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug)]
pub(crate) struct Slots {
    slots: Box<[Slot]>,
    /// Free slot indices, and how many threads wait for one.
    free: Mutex<FreeList>,
    free_cv: Condvar,
    /// Threads blocked on a slot's condvar (kept so that `hand_off`, on every call's way out,
    /// scans nothing in the common case of no other waiter).
    waiters: AtomicUsize,
    /// Streams whose item queue is over [`STREAM_QUEUE_BYTES`]. Readers that must not block
    /// (async callers) leave the ring to a thread that may while this is nonzero. Touched only
    /// when a stream crosses the limit, never on the call path.
    backlogged: AtomicUsize,
}

#[derive(Debug)]
struct FreeList {
    indices: Vec<u32>,
    /// Threads blocked in [`Slots::acquire`].
    blocked: usize,
    /// Async callers waiting for a slot (see [`Slots::poll_acquire`]).
    wakers: Vec<Waker>,
}

pub(crate) fn id_of(index: u32, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(index)
}

impl Slots {
    pub(crate) fn new(n: usize) -> Self {
        let slots = (0..n)
            .map(|_| Slot {
                generation: AtomicU32::new(0),
                inner: Mutex::new(SlotInner {
                    state: State::Free,
                    waiter: false,
                    waker: None,
                    over: false,
                    lead: false,
                    kind: Kind::Response,
                    buf: Vec::new(),
                    items: VecDeque::new(),
                    streaming: false,
                    failure: None,
                }),
                cv: Condvar::new(),
            })
            .collect();
        Slots {
            slots,
            free: Mutex::new(FreeList {
                indices: (0..n as u32).rev().collect(),
                blocked: 0,
                wakers: Vec::new(),
            }),
            free_cv: Condvar::new(),
            waiters: AtomicUsize::new(0),
            backlogged: AtomicUsize::new(0),
        }
    }

    pub(crate) fn get(&self, index: u32) -> &Slot {
        &self.slots[index as usize]
    }

    /// Takes a free slot (waiting up to `deadline` when all are busy) and arms it.
    /// Returns (index, correlation id).
    pub(crate) fn acquire(
        &self,
        streaming: bool,
        deadline: Option<Instant>,
    ) -> Result<(u32, u64), Error> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let index = loop {
            if let Some(i) = free.indices.pop() {
                break i;
            }
            free.blocked += 1;
            match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        free.blocked -= 1;
                        return Err(Error::TooManyInFlight(self.slots.len()));
                    }
                    free = self
                        .free_cv
                        .wait_timeout(free, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                None => free = self.free_cv.wait(free).unwrap_or_else(|e| e.into_inner()),
            }
            free.blocked -= 1;
        };
        drop(free);
        Ok(self.arm(index, streaming))
    }

    /// The async twin of [`acquire`](Self::acquire): takes a free slot now, or registers the
    /// task to be woken when one is released.
    #[cfg(feature = "tokio")]
    pub(crate) fn poll_acquire(
        &self,
        streaming: bool,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<(u32, u64)> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        match free.indices.pop() {
            Some(index) => {
                drop(free);
                std::task::Poll::Ready(self.arm(index, streaming))
            }
            None => {
                if !free.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    free.wakers.push(cx.waker().clone());
                }
                std::task::Poll::Pending
            }
        }
    }

    /// Hands out slot `index`: a new generation, a clean state.
    fn arm(&self, index: u32, streaming: bool) -> (u32, u64) {
        let slot = &self.slots[index as usize];
        let generation = slot.generation.load(Ordering::Relaxed).wrapping_add(1);
        let mut inner = slot.lock();
        slot.generation.store(generation, Ordering::Release);
        inner.state = State::Waiting;
        self.set_waiter(&mut inner, false);
        inner.lead = false;
        inner.buf.clear();
        inner.items.clear();
        inner.streaming = streaming;
        inner.failure = None;
        inner.waker = None;
        (index, id_of(index, generation))
    }

    /// Returns a slot to the free list; any late answer for its id is dropped.
    pub(crate) fn release(&self, index: u32) {
        let slot = &self.slots[index as usize];
        {
            let mut inner = slot.lock();
            inner.state = State::Free;
            // Bump the generation so nothing addressed to the old id lands here.
            slot.generation.fetch_add(1, Ordering::AcqRel);
            inner.items.clear();
            inner.waker = None;
            self.set_over(&mut inner, false);
            trim_items(&mut inner);
            if inner.buf.capacity() > RETAIN_BYTES {
                // A 16 MiB answer must not pin 16 MiB per slot forever.
                inner.buf = Vec::new();
            }
        }
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        free.indices.push(index);
        let someone_waits = free.blocked > 0;
        // Async waiters (rare: only when every slot is taken) all retry; one of them wins.
        let wakers = std::mem::take(&mut free.wakers);
        drop(free);
        if someone_waits {
            self.free_cv.notify_one();
        }
        for w in wakers {
            w.wake();
        }
    }

    /// Records whether a stream's queue is over the limit (keeps [`backlogged`] exact).
    ///
    /// [`backlogged`]: Self::backlogged
    pub(crate) fn set_over(&self, inner: &mut SlotInner, on: bool) {
        if inner.over != on {
            inner.over = on;
            if on {
                self.backlogged.fetch_add(1, Ordering::SeqCst);
            } else {
                self.backlogged.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Whether some stream's queue is over the limit (then only a reader that may block reads).
    pub(crate) fn backlogged(&self) -> bool {
        self.backlogged.load(Ordering::SeqCst) != 0
    }

    /// Looks up the slot an incoming id addresses, if it is still waiting for it.
    pub(crate) fn lookup(&self, id: u64) -> Option<(u32, &Slot)> {
        let index = (id & 0xffff_ffff) as u32;
        let generation = (id >> 32) as u32;
        let slot = self.slots.get(index as usize)?;
        (slot.generation.load(Ordering::Acquire) == generation).then_some((index, slot))
    }

    /// Fails every armed slot (connection lost) and wakes its waiter.
    pub(crate) fn fail_all(&self, reason: &'static str) {
        for slot in self.slots.iter() {
            let mut inner = slot.lock();
            if inner.state == State::Waiting {
                inner.state = State::Failed;
                inner.failure = Some(reason);
                let waker = inner.waker.take();
                drop(inner);
                slot.cv.notify_all(); // rare: the connection is lost
                if let Some(w) = waker {
                    w.wake();
                }
            }
        }
    }

    /// Marks whether a thread blocks on this slot (keeps the waiter count exact).
    pub(crate) fn set_waiter(&self, inner: &mut SlotInner, on: bool) {
        if inner.waiter != on {
            inner.waiter = on;
            if on {
                self.waiters.fetch_add(1, Ordering::SeqCst);
            } else {
                self.waiters.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Asks one blocked waiter to take over reading the ring. Returns whether one was found.
    pub(crate) fn hand_off(&self, except: Option<u32>) -> bool {
        if self.waiters.load(Ordering::SeqCst)
            <= usize::from(except.is_some_and(|i| self.slots[i as usize].lock().waiter))
        {
            return false;
        }
        for (i, slot) in self.slots.iter().enumerate() {
            if Some(i as u32) == except {
                continue;
            }
            let mut inner = slot.lock();
            if inner.state == State::Waiting && inner.waiter {
                inner.lead = true;
                drop(inner);
                slot.cv.notify_all();
                return true;
            }
        }
        false
    }
}

/// Frees a stream queue that grew beyond [`RETAIN_BYTES`] once it has run empty (a stream of
/// large items must not pin its largest backlog for the rest of the slot's life).
pub(crate) fn trim_items(inner: &mut SlotInner) {
    if inner.items.is_empty() && inner.items.capacity() > RETAIN_BYTES {
        inner.items = VecDeque::new();
    }
}

/// Waits on a slot's condvar for at most `slice`, clamped by `deadline`.
pub(crate) fn wait_slot<'a>(
    slot: &'a Slot,
    guard: MutexGuard<'a, SlotInner>,
    slice: Duration,
    deadline: Option<Instant>,
) -> MutexGuard<'a, SlotInner> {
    let d = deadline.map_or(slice, |d| {
        d.saturating_duration_since(Instant::now()).min(slice)
    });
    slot.cv
        .wait_timeout(guard, d)
        .unwrap_or_else(|e| e.into_inner())
        .0
}
