//! Reading the ring for async callers, who must never block their thread.
//!
//! An async call's first poll reads the ring itself for at most the policy's spin budget (the
//! answer usually arrives within it, and then the call completes in that one poll with no
//! system call and no wake-up at all); after that it registers its `Waker` in its slot and
//! leaves the ring to a reader that may block: a blocking caller leading, or the connection's
//! monitor thread, which the doorbell wakes for whatever arrives while nobody reads. Whoever
//! completes a slot takes its `Waker` and wakes it (see `dispatch`).

use std::task::{Context, Poll};

use ferry_notify::WaitPolicy;

use super::reader::{Reader, arm_idle_reader, protocol_error, pump, ready};
use super::{Conn, Shared};
use crate::error::Error;
use crate::link::Rx;

/// Iterations of spinning and of yielding an async caller's first poll may spend reading
/// the ring, from the client's wait policy. `Spin` is bounded too: a poll must return.
pub(crate) fn spin_plan(policy: WaitPolicy) -> (u32, u32) {
    match policy {
        WaitPolicy::Spin => (8 * ferry_notify::policy::DEFAULT_SPIN, 0),
        WaitPolicy::ParkOnly => (0, 0),
        WaitPolicy::Adaptive { spin, yields } => {
            // The process-wide spin governor: skip spinning when enough threads spin.
            if ferry_notify::policy::spinning_threads() >= ferry_notify::policy::spin_limit() {
                (0, yields)
            } else {
                (spin, yields)
            }
        }
    }
}

/// Polls slot `index` for its answer (or, for a stream, an item). With `spin`, reads the
/// ring for up to the policy's budget first. On `Pending` the task's waker is registered
/// in the slot and a reader that will wake it is guaranteed.
pub(crate) fn poll_slot(
    shared: &Shared,
    conn: &Conn,
    index: u32,
    spin: bool,
    cx: &mut Context<'_>,
) -> Poll<Result<(), Error>> {
    let slot = shared.slots.get(index);
    if let Some(r) = ready(&slot.lock()) {
        return Poll::Ready(r);
    }
    if conn.live.is_closed() {
        return Poll::Ready(Err(conn.live.error()));
    }
    if spin
        && !shared.slots.backlogged()
        && let Some(mut rx) = conn.try_lock_rx()
    {
        let r = spin_read(shared, conn, &mut rx, index);
        drop(rx);
        leave(shared, conn);
        if let Some(r) = r {
            return Poll::Ready(r);
        }
    }
    {
        let mut inner = slot.lock();
        if let Some(r) = ready(&inner) {
            return Poll::Ready(r);
        }
        if !inner
            .waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            inner.waker = Some(cx.waker().clone());
        }
    }
    // Someone must read what arrives: arm the doorbell (the monitor thread reads then),
    // unless another reader holds the ring (it arms or hands off when it leaves).
    arm_idle_reader(shared, conn, Reader::NeverBlocks);
    if let Some(r) = ready(&slot.lock()) {
        return Poll::Ready(r);
    }
    if conn.live.is_closed() {
        return Poll::Ready(Err(conn.live.error()));
    }
    Poll::Pending
}

/// Reads the ring until slot `index` is ready or the spin budget is spent (`None`).
pub(crate) fn spin_read(
    shared: &Shared,
    conn: &Conn,
    rx: &mut Rx,
    index: u32,
) -> Option<Result<(), Error>> {
    let slot = shared.slots.get(index);
    // We read actively now: no doorbell needed until we leave.
    rx.cancel_sleep();
    let (spins, yields) = spin_plan(shared.config.policy);
    let mut i: u32 = 0;
    loop {
        if rx.has_data() {
            if let Err(e) = pump(shared, conn, rx, Reader::NeverBlocks) {
                protocol_error(shared, conn, &e, "the server sent something invalid");
                return Some(Err(e));
            }
            if let Some(r) = ready(&slot.lock()) {
                return Some(r);
            }
            if shared.slots.backlogged() {
                return None;
            }
        }
        if conn.live.is_closed() {
            return Some(Err(conn.live.error()));
        }
        i += 1;
        if i > spins.saturating_add(yields) {
            return None;
        }
        if i <= spins {
            std::hint::spin_loop();
            if i.is_multiple_of(ferry_notify::policy::SPIN_YIELD_EVERY) {
                std::thread::yield_now();
            }
        } else {
            std::thread::yield_now();
        }
    }
}

/// After reading: pass the ring to a blocked caller, or arm the doorbell.
pub(crate) fn leave(shared: &Shared, conn: &Conn) {
    if shared.slots.hand_off(None) {
        return;
    }
    arm_idle_reader(shared, conn, Reader::NeverBlocks);
}
