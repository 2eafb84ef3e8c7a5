//! A worker: the event loop that serves the connections it owns.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ferry_frame::{ErrorCode, ErrorPayload, Kind};
use ferry_notify::WaitPolicy;
use ferry_notify::policy::PROBE_EVERY;

use crate::error::Error;
use crate::link::{Polled, TOKEN_DOORBELL};
use crate::metrics::CloseReason;
use crate::sys::{Events, Interest, Poller};

use super::ServerShared;
use super::conn::{ConnState, Connection};
use super::request::{Request, send_error_inline};

pub(crate) const WAKE_KEY: u64 = u64::MAX;

/// Why a connection whose client said `Goodbye` is closed.
pub(crate) const GOODBYE: &str = "the client said goodbye";

/// One worker's event loop.
pub(crate) fn worker(shared: Arc<ServerShared>, index: usize) {
    let inbox = &shared.workers[index];
    let Ok(poller) = Poller::new() else {
        return;
    };
    if poller
        .add(&inbox.bell, WAKE_KEY, Interest::Readable)
        .is_err()
    {
        return;
    }
    let mut conns: Vec<Option<Arc<ConnState>>> = Vec::new();
    let mut free_keys: Vec<usize> = Vec::new();
    let mut events = Events::with_capacity(256);
    // The hot list: connections polled every round (they were busy lately, or hold an answer
    // waiting for ring space). Every other connection is cold: its incoming ring is armed with
    // our doorbell token, so its client rings the doorbell when it next writes, and the poller
    // brings it back to the hot list. A round therefore costs what the busy connections cost,
    // not what all 1000 of them cost. `quiet[key]`: rounds without progress, or `COLD`.
    let mut hot: Vec<usize> = Vec::new();
    let mut quiet: Vec<u32> = Vec::new();
    const COLD: u32 = u32::MAX;
    let (spin, yields) = match shared.config.policy {
        WaitPolicy::Spin => (u32::MAX, 0),
        WaitPolicy::ParkOnly => (0, 0),
        WaitPolicy::Adaptive { spin, yields } => (spin, yields),
    };
    let mut idle_rounds: u32 = 0;
    let mut rounds: u32 = 0;
    // The spin budget is learned, as in `WaitPolicy::wait_until` (adaptive policy only): an
    // idle spell that spinning did not end (the worker went to sleep) halves it, down to
    // nothing; work found while spinning doubles it back. Every `PROBE_EVERY`th sleep is
    // preceded by a short probe spin. So a server whose clients call sparsely, or that shares
    // its CPUs with more runnable threads than there are cores, parks at once instead of
    // burning the CPU its peers need.
    let learns = matches!(shared.config.policy, WaitPolicy::Adaptive { .. });
    let mut learned = spin;
    let mut sleeps: u32 = 0;
    loop {
        if shared.stop.load(Ordering::Acquire) {
            break;
        }
        let probing = learns && learned < spin / 8 && sleeps.is_multiple_of(PROBE_EVERY);
        let budget = if probing { spin / 8 } else { learned };
        // The spin budget is per worker, not per connection: with more hot connections each
        // round costs more, so fewer rounds are spun before a quiet one is let go cold.
        let round_budget = budget / (hot.len().max(1) as u32);
        // Serve every hot connection once; let go cold those quiet for the whole budget.
        let mut progressed = false;
        let mut i = 0;
        while i < hot.len() {
            let key = hot[i];
            let Some(conn) = conns[key].clone() else {
                hot.swap_remove(i);
                continue;
            };
            match serve_conn(&shared, &conn) {
                Ok(true) => {
                    progressed = true;
                    quiet[key] = 0;
                }
                Ok(false) => {
                    quiet[key] = quiet[key].saturating_add(1);
                    if quiet[key] > round_budget && conn.lock_pending().is_none() {
                        let mut rx = conn.lock_rx();
                        if matches!(rx.prepare_sleep(TOKEN_DOORBELL), Ok(true)) {
                            drop(rx);
                            quiet[key] = COLD;
                            hot.swap_remove(i);
                            continue;
                        }
                        // Data came in meanwhile: stay hot.
                        rx.cancel_sleep();
                        quiet[key] = 0;
                    }
                }
                Err(e) => {
                    let reason = close_reason(&e, CloseReason::Other);
                    if reason == CloseReason::Protocol {
                        tracing::warn!(
                            service = &*shared.service,
                            connection = conn.id,
                            peer_pid = conn.peer_pid,
                            error = %e,
                            "ferry protocol error, closing the connection"
                        );
                    }
                    drop_conn(&shared, &poller, &mut conns, &mut free_keys, key, reason);
                    quiet[key] = COLD;
                    hot.swap_remove(i);
                    continue;
                }
            }
            i += 1;
        }
        rounds = rounds.wrapping_add(1);
        // While busy or spinning, look at the poller now and then: doorbells of cold connections,
        // hang-ups, new connections. Often when some connections are cold (their requests wait
        // for this), rarely when every connection is hot.
        let live = conns.len() - free_keys.len();
        let poll_every: u32 = if live > hot.len() { 16 } else { 256 };
        let poll_now = rounds.is_multiple_of(poll_every);
        if progressed {
            if learns && idle_rounds > 0 && idle_rounds <= round_budget {
                learned = learned.max(budget.saturating_mul(2).max(32)).min(spin);
            }
            idle_rounds = 0;
            if !poll_now {
                continue;
            }
        } else {
            idle_rounds = idle_rounds.saturating_add(1);
        }
        let yields_now = if learns && budget == 0 { 0 } else { yields };
        let mut timeout: Option<Duration> = Some(Duration::ZERO);
        if progressed || (!hot.is_empty() && idle_rounds <= round_budget) {
            if !poll_now {
                std::hint::spin_loop();
                continue;
            }
        } else if !hot.is_empty() && idle_rounds - round_budget.min(idle_rounds) <= yields_now {
            std::thread::yield_now();
        } else {
            // Going to sleep: arm every hot connection that has no answer waiting for ring
            // space, and let it go cold (the cold ones are armed already).
            let mut data = false;
            let mut i = 0;
            while i < hot.len() {
                let key = hot[i];
                let Some(conn) = conns[key].as_ref() else {
                    hot.swap_remove(i);
                    continue;
                };
                if conn.lock_pending().is_some() {
                    i += 1;
                    continue;
                }
                let mut rx = conn.lock_rx();
                if matches!(rx.prepare_sleep(TOKEN_DOORBELL), Ok(true)) {
                    drop(rx);
                    quiet[key] = COLD;
                    hot.swap_remove(i);
                } else {
                    rx.cancel_sleep();
                    data = true;
                    i += 1;
                }
            }
            if data {
                idle_rounds = 0;
                continue;
            }
            // Connections left hot hold an answer for a client that is not reading: look
            // again in a millisecond (their clients ring no doorbell for us when they drain).
            timeout = if hot.is_empty() {
                None
            } else {
                Some(Duration::from_millis(1))
            };
        }
        match poller.wait(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
        if timeout != Some(Duration::ZERO) {
            idle_rounds = 0;
            if learns {
                // Spinning `budget` did not pay this time.
                let current = learned.min(budget);
                learned = if current < 32 { 0 } else { current / 2 };
                sleeps = sleeps.wrapping_add(1);
            }
        }
        for key in events.tokens() {
            if key == WAKE_KEY {
                let _ = inbox.bell.drain();
                continue;
            }
            let slot = (key >> 1) as usize;
            let Some(conn) = conns.get(slot).and_then(Clone::clone) else {
                continue;
            };
            if key & 1 == 0 {
                // Control channel readable: its client's hang-up (or garbage, which ends the
                // connection as well).
                if conn.control.hung_up() {
                    let reason = serve_remaining(&shared, &conn);
                    drop_conn(&shared, &poller, &mut conns, &mut free_keys, slot, reason);
                    if quiet[slot] != COLD {
                        quiet[slot] = COLD;
                        if let Some(pos) = hot.iter().position(|&k| k == slot) {
                            hot.swap_remove(pos);
                        }
                    }
                }
            } else {
                // Its client wrote while it was cold: disarm and poll it again.
                let _ = conn.bell.drain();
                conn.metrics.wakeup_received();
                // Windows: the client rang instead of waking a responder sleeping for ring
                // space; wake it here (see `link`'s module docs).
                #[cfg(windows)]
                conn.tx.relay_wakes();
                if quiet[slot] == COLD {
                    conn.lock_rx().cancel_sleep();
                    quiet[slot] = 0;
                    hot.push(slot);
                }
            }
        }
        // Now and then, drop cold connections that another thread closed (a responder that
        // found the outgoing ring corrupted): the hot ones are seen in `serve_conn`.
        if rounds.is_multiple_of(4096) || timeout != Some(Duration::ZERO) {
            for slot in 0..conns.len() {
                if quiet[slot] == COLD && conns[slot].as_ref().is_some_and(|c| c.live.is_closed()) {
                    let reason = CloseReason::Protocol;
                    drop_conn(&shared, &poller, &mut conns, &mut free_keys, slot, reason);
                }
            }
        }
        // Adopt new connections (hot from the start).
        let new: Vec<Arc<ConnState>> =
            std::mem::take(&mut *inbox.new.lock().unwrap_or_else(|e| e.into_inner()));
        for conn in new {
            let slot = free_keys.pop().unwrap_or_else(|| {
                conns.push(None);
                quiet.push(COLD);
                conns.len() - 1
            });
            let k = (slot as u64) << 1;
            let ok = poller
                .add(conn.control.watch(), k, Interest::ReadableOrHangUp)
                .is_ok()
                && poller.add(&conn.bell, k | 1, Interest::Readable).is_ok();
            conns[slot] = Some(conn.clone());
            if !ok {
                let reason = CloseReason::Other;
                drop_conn(&shared, &poller, &mut conns, &mut free_keys, slot, reason);
                continue;
            }
            if quiet[slot] == COLD {
                hot.push(slot);
            }
            quiet[slot] = 0;
            shared.handler.on_connect(&Connection { state: conn });
        }
    }
    // Shutting down: say goodbye to everybody.
    for key in 0..conns.len() {
        if let Some(conn) = conns[key].clone() {
            let mut buf = [0u8; 64];
            let n = ErrorPayload::new(ErrorCode::SHUTTING_DOWN, "the server is shutting down")
                .encode(&mut buf)
                .unwrap_or(0);
            let _ = conn.tx.try_send(Kind::Goodbye, 0, &buf[..n], &conn.live);
            let reason = CloseReason::Shutdown;
            drop_conn(&shared, &poller, &mut conns, &mut free_keys, key, reason);
        }
    }
    let _ = index;
}

pub(crate) fn drop_conn(
    shared: &ServerShared,
    poller: &Poller,
    conns: &mut [Option<Arc<ConnState>>],
    free_keys: &mut Vec<usize>,
    slot: usize,
    reason: CloseReason,
) {
    let Some(conn) = conns[slot].take() else {
        return;
    };
    let _ = poller.delete(conn.control.watch());
    let _ = poller.delete(&conn.bell);
    conn.live.close("the connection was closed");
    conn.tx.wake_waiters();
    for d in conn.deferred.iter() {
        if d.in_use.load(Ordering::Acquire) {
            d.wake(); // an async handler waiting for cancellation sees the end
        }
    }
    conn.control.shutdown();
    free_keys.push(slot);
    shared
        .stats
        .connections_closed
        .fetch_add(1, Ordering::Relaxed);
    shared
        .stats
        .connections_open
        .fetch_sub(1, Ordering::Relaxed);
    if reason == CloseReason::Protocol {
        shared.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
    }
    let last = shared.metrics.closed(conn.id, reason);
    tracing::info!(
        service = &*shared.service,
        connection = conn.id,
        peer_pid = conn.peer_pid,
        reason = reason.label(),
        duration_ms = conn.opened.elapsed().as_millis() as u64,
        messages_received = last.messages_received(),
        messages_sent = last.messages_sent(),
        "ferry connection closed"
    );
    shared.handler.on_disconnect(&Connection { state: conn });
}

/// The client hung up its control socket (it exited, crashed, or dropped its client). What it
/// wrote before that was accepted on its side (`notify` returned `Ok`): serve what is still in
/// the incoming ring, dropping answers that cannot go out (nobody reads them any more), and say
/// why the connection ends. Bounded: a peer that keeps writing after its hang-up gets
/// `MAX_ROUNDS` rounds.
pub(crate) fn serve_remaining(shared: &ServerShared, conn: &Arc<ConnState>) -> CloseReason {
    const MAX_ROUNDS: usize = 1024;
    for _ in 0..MAX_ROUNDS {
        // A full ring towards a gone client never drains: drop the answer waiting for it.
        *conn.lock_pending() = None;
        match serve_conn(shared, conn) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return close_reason(&e, CloseReason::Hangup),
        }
    }
    CloseReason::Hangup
}

/// Why a connection closes, from the error serving it returned; `otherwise` for errors that say
/// nothing about the peer (the worker's main loop: `Other`; after a hang-up: `Hangup`).
pub(crate) fn close_reason(e: &Error, otherwise: CloseReason) -> CloseReason {
    match e {
        Error::Closed(GOODBYE) => CloseReason::Goodbye,
        // Closed by another thread: a responder found the outgoing ring corrupted.
        Error::Protocol(_) | Error::Closed(_) => CloseReason::Protocol,
        _ => otherwise,
    }
}

/// Serves one connection: flushes its pending answer, then handles what it sent.
/// Returns whether anything happened; an error means "close it".
pub(crate) fn serve_conn(shared: &ServerShared, conn: &Arc<ConnState>) -> Result<bool, Error> {
    if conn.live.is_closed() {
        return Err(conn.live.error());
    }
    if !conn.flush_pending() {
        return Ok(false);
    }
    let mut rx = conn.lock_rx();
    let mut goodbye = false;
    let polled = rx.poll(32, |kind, id, payload| {
        match kind {
            Kind::Request => {
                shared.stats.requests.fetch_add(1, Ordering::Relaxed);
                let request = Request {
                    conn,
                    id,
                    payload,
                    answered: false,
                };
                let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    shared.handler.on_request(request)
                }));
                if r.is_err() {
                    shared.metrics.handler_panicked();
                    tracing::warn!(
                        service = &*shared.service,
                        connection = conn.id,
                        request = id,
                        "ferry request handler panicked"
                    );
                    send_error_inline(
                        conn,
                        id,
                        ErrorCode::HANDLER_FAILED.0,
                        "the handler panicked",
                    );
                }
            }
            Kind::Notification => {
                shared.stats.notifications.fetch_add(1, Ordering::Relaxed);
                let c = Connection {
                    state: conn.clone(),
                };
                let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    shared.handler.on_notification(&c, payload)
                }));
            }
            Kind::Cancel => conn.cancel(id),
            Kind::Ping => conn.send_inline(Kind::Pong, id, payload),
            Kind::Goodbye => goodbye = true,
            _ => {} // answers the server did not ask for: ignored
        }
        // An answer that did not fit is pending: read no more until it is out.
        !goodbye && conn.lock_pending().is_none()
    })?;
    drop(rx);
    if goodbye {
        conn.live.close(GOODBYE);
        return Err(Error::Closed(GOODBYE));
    }
    Ok(matches!(polled, Polled::Messages(_)))
}
