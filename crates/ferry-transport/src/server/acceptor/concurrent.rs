//! The server's acceptor on Unix: every handshake at once, none able to hold up another.
//!
//! One thread and one poller (epoll; macOS: kqueue). The listening socket is non-blocking and
//! registered in the poller with the acceptor's doorbell (`Server::stop` rings it). A new
//! socket is made non-blocking and registered too, with a deadline of `handshake_timeout` from
//! its accept; whenever it is readable, what has arrived of its first frame is read into its own
//! small buffer (`PartialFrame`: 24 header bytes, then the payload, at most
//! [`MAX_FIRST_PAYLOAD`], checked on the header before it is allocated). Only when the whole
//! frame is in does the acceptor do the rest of the handshake (`handshake::server::conclude`): check the
//! user, negotiate, create the memory and doorbells, send the `Welcome` (a few dozen bytes into
//! a fresh socket's empty buffer: it never waits). So a socket that says nothing, or stops half
//! way through its `Hello`, costs one descriptor and a few bytes until its deadline, and delays
//! nobody.
//!
//! Bounds: at most `max_pending_handshakes` at once (when another arrives, the oldest pending
//! one is refused, `reason="handshakes_pending"`); one that misses its deadline is refused with
//! `TIMEOUT` (`reason="handshake_timeout"`). A metrics query's answer can be large, so it is
//! sent from a short-lived thread with blocking writes bounded by the handshake timeout, at most
//! [`MAX_METRICS_QUERIES`] at once (more are refused `BUSY`).
//!
//! Windows serves handshakes one at a time (`acceptor.rs`): its named-pipe listener
//! accepts with an overlapped `ConnectNamedPipe` on one instance at a time.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ferry_frame::{ErrorCode, Kind};

use crate::control_frame::{Fed, PartialFrame};
use crate::error::Error;
use crate::handshake::server as handshake;
use crate::metrics::RefuseReason;
use crate::server::ServerShared;
use crate::sys::{Control, Events, Incoming, Interest, Peer, Poller};

/// Most payload bytes a handshake's first frame may announce (a `Hello` has 24, a
/// `MetricsQuery` none): a larger one is a bad frame, refused before anything is allocated.
pub(crate) const MAX_FIRST_PAYLOAD: usize = 4096;
/// Metrics queries answered at once, each on its own thread.
const MAX_METRICS_QUERIES: usize = 4;
/// New sockets taken per wake-up before the pending ones are served again (the listening socket
/// stays readable while more wait: the poller reports it again at once).
const ACCEPTS_PER_WAKE: usize = 64;

const LISTENER: u64 = u64::MAX;
const STOP: u64 = u64::MAX - 1;

/// A handshake in progress.
struct Handshake {
    control: Control,
    peer: Peer,
    first: PartialFrame,
    deadline: Instant,
    /// Which entry of `order` is this handshake's (an entry of a finished one is skipped).
    serial: u64,
}

/// The pending handshakes: slots indexed by their poller token, and their accept order (which
/// is also their deadline order: every deadline is accept time + the same timeout).
struct Pending {
    slots: Vec<Option<Handshake>>,
    free: Vec<usize>,
    order: VecDeque<(u64, usize)>,
    next_serial: u64,
    live: usize,
}

impl Pending {
    fn insert(&mut self, control: Control, peer: Peer, deadline: Instant) -> usize {
        let serial = self.next_serial;
        self.next_serial += 1;
        let h = Handshake {
            control,
            peer,
            first: PartialFrame::new(MAX_FIRST_PAYLOAD),
            deadline,
            serial,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(h);
                slot
            }
            None => {
                self.slots.push(Some(h));
                self.slots.len() - 1
            }
        };
        self.order.push_back((serial, slot));
        self.live += 1;
        slot
    }

    fn take(&mut self, slot: usize) -> Option<Handshake> {
        let h = self.slots.get_mut(slot)?.take()?;
        self.free.push(slot);
        self.live -= 1;
        Some(h)
    }

    /// The oldest pending handshake's slot (dropping the entries of finished ones on the way).
    fn oldest(&mut self) -> Option<usize> {
        while let Some(&(serial, slot)) = self.order.front() {
            if self.slots[slot]
                .as_ref()
                .is_some_and(|h| h.serial == serial)
            {
                return Some(slot);
            }
            self.order.pop_front();
        }
        None
    }
}

/// The acceptor thread's loop, until the server stops.
pub(crate) fn run(shared: Arc<ServerShared>) {
    let poller = match Poller::new() {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(service = &*shared.service, error = %e, "ferry acceptor: no poller, not accepting");
            return;
        }
    };
    if let Err(e) = poller
        .add(shared.listener.watch(), LISTENER, Interest::Readable)
        .and_then(|()| poller.add(&shared.acceptor_bell, STOP, Interest::Readable))
    {
        tracing::error!(service = &*shared.service, error = %e, "ferry acceptor: cannot watch the listening socket, not accepting");
        return;
    }
    let mut pending = Pending {
        slots: Vec::new(),
        free: Vec::new(),
        order: VecDeque::new(),
        next_serial: 0,
        live: 0,
    };
    let metrics_queries = Arc::new(AtomicUsize::new(0));
    let mut events = Events::with_capacity(256);
    let mut tokens = Vec::with_capacity(256);
    loop {
        // Refuse the handshakes past their deadline; wait until the next one's.
        let now = Instant::now();
        let mut timeout = None;
        while let Some(slot) = pending.oldest() {
            let deadline = pending.slots[slot].as_ref().map_or(now, |h| h.deadline);
            if deadline > now {
                timeout = Some(deadline - now);
                break;
            }
            let h = pending.take(slot).expect("oldest is live");
            let _ = poller.delete(h.control.watch());
            let why = format!(
                "no complete Hello within the handshake timeout ({:?})",
                shared.config.handshake_timeout
            );
            let r = handshake::refuse(
                &h.control,
                RefuseReason::HandshakeTimeout,
                ErrorCode::TIMEOUT,
                &why,
            );
            super::record(&shared, Err(r));
        }
        match poller.wait(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::error!(service = &*shared.service, error = %e, "ferry acceptor: waiting failed, not accepting");
                return;
            }
        }
        if shared.stop.load(Ordering::Acquire) {
            return; // the pending sockets close with `pending`
        }
        tokens.clear();
        tokens.extend(events.tokens());
        for &token in &tokens {
            match token {
                STOP => {
                    let _ = shared.acceptor_bell.drain();
                }
                LISTENER => {
                    for _ in 0..ACCEPTS_PER_WAKE {
                        let Some(control) = shared.listener.accept() else {
                            break;
                        };
                        begin(&shared, &poller, &mut pending, control);
                    }
                }
                slot => {
                    let slot = slot as usize;
                    let Some(h) = pending.slots.get_mut(slot).and_then(Option::as_mut) else {
                        continue;
                    };
                    let first = match h.control.try_recv(&mut h.first) {
                        Ok(Fed::Incomplete) => continue,
                        Ok(Fed::Ended) => Ok(None),
                        Ok(Fed::Frame(header, payload)) => Ok(Some(Incoming::new(header, payload))),
                        Err(e) => Err(e),
                    };
                    let h = pending.take(slot).expect("live");
                    let _ = poller.delete(h.control.watch());
                    finish(&shared, &metrics_queries, h, first);
                }
            }
        }
    }
}

/// Takes a new socket into the pending handshakes (refusing the oldest when there are too many).
fn begin(shared: &Arc<ServerShared>, poller: &Poller, pending: &mut Pending, mut control: Control) {
    let peer = match control
        .set_handshake_mode(None)
        .and_then(|()| control.identify())
    {
        Ok(peer) => peer,
        Err(e) => return super::record(shared, Err(handshake::failed(e))),
    };
    let max = shared.config.max_pending_handshakes.max(1);
    if pending.live >= max
        && let Some(slot) = pending.oldest()
    {
        let h = pending.take(slot).expect("oldest is live");
        let _ = poller.delete(h.control.watch());
        let why = format!(
            "{max} handshakes were pending (max_pending_handshakes) and this was the oldest: \
             send the Hello right after connecting"
        );
        let r = handshake::refuse(
            &h.control,
            RefuseReason::HandshakesPending,
            ErrorCode::BUSY,
            &why,
        );
        super::record(shared, Err(r));
    }
    let deadline = Instant::now() + shared.config.handshake_timeout;
    let slot = pending.insert(control, peer, deadline);
    let h = pending.slots[slot].as_ref().expect("just inserted");
    if let Err(e) = poller.add(h.control.watch(), slot as u64, Interest::ReadableOrHangUp) {
        let h = pending.take(slot).expect("just inserted");
        drop(h);
        super::record(
            shared,
            Err(handshake::failed(Error::io(
                "watching a new control socket",
                e,
            ))),
        );
    }
}

/// The first frame is in (or the peer hung up, or sent garbage): the rest of the handshake.
fn finish(
    shared: &Arc<ServerShared>,
    metrics_queries: &Arc<AtomicUsize>,
    h: Handshake,
    first: Result<Option<Incoming>, Error>,
) {
    let _span = tracing::debug_span!(
        "ferry_handshake",
        service = &*shared.service,
        peer_pid = h.peer.pid,
    )
    .entered();
    let query = matches!(&first, Ok(Some(f)) if f.header.kind() == Kind::MetricsQuery);
    if !query {
        let r = handshake::conclude(shared, h.control, h.peer, first);
        return super::record(shared, r);
    }
    // The answer may be large: send it with blocking writes, off this thread.
    if metrics_queries.fetch_add(1, Ordering::AcqRel) >= MAX_METRICS_QUERIES {
        metrics_queries.fetch_sub(1, Ordering::AcqRel);
        let r = handshake::refuse(
            &h.control,
            RefuseReason::Capacity,
            ErrorCode::BUSY,
            &format!("{MAX_METRICS_QUERIES} metrics queries are being answered; retry"),
        );
        return super::record(shared, Err(r));
    }
    let (s, busy) = (shared.clone(), metrics_queries.clone());
    let timeout: Duration = shared.config.handshake_timeout;
    let spawned = std::thread::Builder::new()
        .name("ferry-metrics-query".into())
        .spawn(move || {
            let r = match h.control.set_handshake_mode(Some(timeout)) {
                Ok(()) => handshake::conclude(&s, h.control, h.peer, first),
                Err(e) => Err(handshake::failed(e)),
            };
            super::record(&s, r);
            busy.fetch_sub(1, Ordering::AcqRel);
        });
    if let Err(e) = spawned {
        metrics_queries.fetch_sub(1, Ordering::AcqRel);
        super::record(
            shared,
            Err(handshake::failed(Error::io(
                "spawning a metrics query thread",
                e,
            ))),
        );
    }
}
