//! A worker: the event loop that serves the connections it owns.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferry_frame::{ErrorCode, ErrorPayload, Kind};
use ferry_notify::WaitPolicy;
use ferry_notify::policy::SpinLearner;

use crate::error::Error;
use crate::link::{Polled, TOKEN_DOORBELL};
use crate::metrics::CloseReason;
use crate::sys::{Events, Interest, Poller};

use super::conn::{ConnState, Connection};
use super::request::{Request, send_error_inline};
use super::{ServerShared, WorkerInbox};

/// The poller token of the worker's own doorbell (new connections, shutdown). A connection in
/// slot `s` has tokens `s << 1` (its control channel) and `s << 1 | 1` (its doorbell).
const WAKE_KEY: u64 = u64::MAX;

/// Why a connection whose client said `Goodbye` is closed.
pub(crate) const GOODBYE: &str = "the client said goodbye";

/// `quiet[slot]` of a cold connection (or an empty slot).
const COLD: u32 = u32::MAX;

/// Runs worker `index`'s event loop until the server stops, then says goodbye to its clients.
pub(crate) fn worker(shared: Arc<ServerShared>, index: usize) {
    let Some(mut worker) = Worker::new(&shared, index) else {
        return;
    };
    worker.run();
    worker.say_goodbye();
}

/// One worker: the connections it owns and how busy each is.
///
/// The hot list: connections polled every round (they were busy lately, or hold an answer
/// waiting for ring space). Every other connection is cold: its incoming ring is armed with
/// our doorbell token, so its client rings the doorbell when it next writes, and the poller
/// brings it back to the hot list. A round therefore costs what the busy connections cost,
/// not what all 1000 of them cost.
struct Worker<'a> {
    shared: &'a ServerShared,
    inbox: &'a WorkerInbox,
    poller: Poller,
    /// Connections by slot (`None`: a free slot, listed in `free_slots`).
    conns: Vec<Option<Arc<ConnState>>>,
    free_slots: Vec<usize>,
    /// Slots of the hot connections.
    hot: Vec<usize>,
    /// Per slot: rounds without progress, or `COLD`.
    quiet: Vec<u32>,
    spin: Spin,
    /// Rounds in a row in which no hot connection made progress.
    idle_rounds: u32,
    /// Rounds so far (wrapping), for looking at the poller now and then while busy.
    rounds: u32,
}

/// How long the worker spins before it lets its connections go cold and sleeps.
///
/// The spin budget is learned (adaptive policy only) with the same rule as
/// `WaitPolicy::wait_until` ([`SpinLearner`]): an idle spell that spinning did not end (the
/// worker went to sleep) halves it, down to nothing; work found while spinning doubles it
/// back; every `PROBE_EVERY`th spell is preceded by a short probe spin. So a server whose
/// clients call sparsely, or that shares its CPUs with more runnable threads than there are
/// cores, parks at once instead of burning the CPU its peers need. The process-wide spin
/// governor does not apply: a worker spins in rounds over many connections, not in one wait.
struct Spin {
    /// The policy's budget (`Spin`: unbounded; `ParkOnly`: none).
    max: u32,
    /// The policy's yields after spinning.
    yields: u32,
    /// `Some` for the adaptive policy.
    learner: Option<SpinLearner>,
}

impl Spin {
    fn new(policy: WaitPolicy) -> Self {
        match policy {
            WaitPolicy::Spin => Self {
                max: u32::MAX,
                yields: 0,
                learner: None,
            },
            WaitPolicy::ParkOnly => Self {
                max: 0,
                yields: 0,
                learner: None,
            },
            WaitPolicy::Adaptive { spin, yields } => Self {
                max: spin,
                yields,
                learner: Some(SpinLearner::new()),
            },
        }
    }

    /// Spin rounds for this spell (a probe's, when the learned budget is small).
    #[inline]
    fn budget(&self) -> u32 {
        self.learner
            .as_ref()
            .map_or(self.max, |l| l.budget(self.max))
    }

    /// Yields after the spin: none once the learned budget is gone.
    #[inline]
    fn yields(&self, budget: u32) -> u32 {
        if self.learner.is_some() && budget == 0 {
            0
        } else {
            self.yields
        }
    }

    /// Work came while spinning `budget`.
    #[inline]
    fn paid(&mut self, budget: u32) {
        if let Some(l) = &mut self.learner {
            l.paid(self.max, budget);
        }
    }

    /// Spinning `budget` did not pay this time: the worker slept. A new spell begins.
    fn slept(&mut self, budget: u32) {
        if let Some(l) = &mut self.learner {
            l.did_not_pay(budget);
            l.start_spell();
        }
    }
}

/// What the worker does after a round.
enum Next {
    /// Go on serving at once (spinning).
    Serve,
    /// Look at the poller, waiting at most this long (`None`: until something happens).
    Poll(Option<Duration>),
}

impl<'a> Worker<'a> {
    /// A worker with its poller watching its doorbell; `None` when the poller cannot be made.
    fn new(shared: &'a ServerShared, index: usize) -> Option<Self> {
        let inbox = &shared.workers[index];
        let poller = Poller::new().ok()?;
        poller.add(&inbox.bell, WAKE_KEY, Interest::Readable).ok()?;
        Some(Worker {
            shared,
            inbox,
            poller,
            conns: Vec::new(),
            free_slots: Vec::new(),
            hot: Vec::new(),
            quiet: Vec::new(),
            spin: Spin::new(shared.config.policy),
            idle_rounds: 0,
            rounds: 0,
        })
    }

    /// The event loop: serve the hot connections, spin or sleep, handle what the poller says,
    /// adopt new connections; until the server stops.
    fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        while !self.shared.stop.load(Ordering::Acquire) {
            let budget = self.spin.budget();
            // The spin budget is per worker, not per connection: with more hot connections each
            // round costs more, so fewer rounds are spun before a quiet one is let go cold.
            let round_budget = budget / (self.hot.len().max(1) as u32);
            let progressed = self.serve_hot(round_budget);
            self.rounds = self.rounds.wrapping_add(1);
            let timeout = match self.next(progressed, budget, round_budget) {
                Next::Serve => continue,
                Next::Poll(timeout) => timeout,
            };
            match self.poller.wait(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
            let slept = timeout != Some(Duration::ZERO);
            if slept {
                self.idle_rounds = 0;
                self.spin.slept(budget);
            }
            self.handle_events(&events);
            // Now and then, drop cold connections that another thread closed (a responder that
            // found the outgoing ring corrupted): the hot ones are seen in `serve_conn`.
            if slept || self.rounds.is_multiple_of(4096) {
                self.close_cold_closed();
            }
            self.adopt_new();
        }
    }

    /// Serves every hot connection once; lets go cold those quiet for the whole round budget,
    /// and closes those that failed. Returns whether any made progress.
    #[inline]
    fn serve_hot(&mut self, round_budget: u32) -> bool {
        let mut progressed = false;
        let mut i = 0;
        while i < self.hot.len() {
            let slot = self.hot[i];
            // Borrowed, not cloned: an `Arc` clone and drop per connection and round is two
            // read-modify-writes on every round trip's path.
            let Some(conn) = &self.conns[slot] else {
                self.hot.swap_remove(i);
                continue;
            };
            match serve_conn(self.shared, conn) {
                Ok(true) => {
                    progressed = true;
                    self.quiet[slot] = 0;
                }
                Ok(false) => {
                    self.quiet[slot] = self.quiet[slot].saturating_add(1);
                    if self.quiet[slot] > round_budget && !conn.has_pending() {
                        if arm_cold(conn) {
                            self.quiet[slot] = COLD;
                            self.hot.swap_remove(i);
                            continue;
                        }
                        // Data came in meanwhile: stay hot.
                        self.quiet[slot] = 0;
                    }
                }
                Err(e) => {
                    let reason = close_reason(&e, CloseReason::Other);
                    if reason == CloseReason::Protocol {
                        tracing::warn!(
                            service = &*self.shared.service,
                            connection = conn.id,
                            peer_pid = conn.peer_pid,
                            error = %e,
                            "ferry protocol error, closing the connection"
                        );
                        // Tell the client why (docs/protocol.md §6.4), unless what broke is
                        // the ring the Goodbye would travel on (then the connection is closed
                        // already: a responder found it corrupted).
                        if !conn.live.is_closed() {
                            goodbye(conn, ErrorCode::PROTOCOL_VIOLATION, &e.to_string());
                        }
                    } else if reason == CloseReason::PartialBudget {
                        tracing::warn!(
                            service = &*self.shared.service,
                            connection = conn.id,
                            peer_pid = conn.peer_pid,
                            error = %e,
                            "ferry partial-message budget exceeded, cutting the connection off"
                        );
                        goodbye(conn, ErrorCode::BUSY, &e.to_string());
                    }
                    self.close(slot, reason);
                    self.quiet[slot] = COLD;
                    self.hot.swap_remove(i);
                    continue;
                }
            }
            i += 1;
        }
        progressed
    }

    /// After a round: spin on (serve again), yield, or go to sleep, by the spin budget. While
    /// busy or spinning, looks at the poller now and then (doorbells of cold connections,
    /// hang-ups, new connections): often when some connections are cold (their requests wait
    /// for this), rarely when every connection is hot.
    #[inline]
    fn next(&mut self, progressed: bool, budget: u32, round_budget: u32) -> Next {
        let live = self.conns.len() - self.free_slots.len();
        let poll_every: u32 = if live > self.hot.len() { 16 } else { 256 };
        let poll_now = self.rounds.is_multiple_of(poll_every);
        if progressed {
            if self.idle_rounds > 0 && self.idle_rounds <= round_budget {
                self.spin.paid(budget);
            }
            self.idle_rounds = 0;
            return if poll_now {
                Next::Poll(Some(Duration::ZERO))
            } else {
                Next::Serve
            };
        }
        self.idle_rounds = self.idle_rounds.saturating_add(1);
        let idle = self.idle_rounds;
        if !self.hot.is_empty() && idle <= round_budget {
            if !poll_now {
                std::hint::spin_loop();
                return Next::Serve;
            }
        } else if !self.hot.is_empty() && idle - round_budget.min(idle) <= self.spin.yields(budget)
        {
            std::thread::yield_now();
        } else {
            return self.prepare_to_sleep();
        }
        Next::Poll(Some(Duration::ZERO))
    }

    /// Going to sleep: arms every hot connection that has no answer waiting for ring space,
    /// and lets it go cold (the cold ones are armed already); one with an answer waiting stays
    /// hot, its ring armed to ring the doorbell when the client frees space. Serves on if one
    /// had data or space.
    fn prepare_to_sleep(&mut self) -> Next {
        let mut data = false;
        let mut i = 0;
        while i < self.hot.len() {
            let slot = self.hot[i];
            let Some(conn) = self.conns[slot].as_ref() else {
                self.hot.swap_remove(i);
                continue;
            };
            if let Some(armed) = conn.arm_pending() {
                data |= !armed;
                i += 1;
                continue;
            }
            if arm_cold(conn) {
                self.quiet[slot] = COLD;
                self.hot.swap_remove(i);
            } else {
                data = true;
                i += 1;
            }
        }
        if data {
            self.idle_rounds = 0;
            return Next::Serve;
        }
        // Connections left hot hold an answer for a client that is not reading: their clients
        // ring the doorbell when they free space (armed above); a millisecond's timeout is the
        // fallback for an answer that waits for the client's reassembly budget instead, or
        // whose token a responder thread's sleep replaced (docs/protocol.md §10.3).
        Next::Poll(if self.hot.is_empty() {
            None
        } else {
            Some(Duration::from_millis(1))
        })
    }

    /// Handles what the poller reported: the worker's doorbell, hang-ups, cold connections'
    /// doorbells.
    fn handle_events(&mut self, events: &Events) {
        for key in events.tokens() {
            if key == WAKE_KEY {
                let _ = self.inbox.bell.drain();
                continue;
            }
            let slot = (key >> 1) as usize;
            let Some(conn) = self.conns.get(slot).and_then(Clone::clone) else {
                continue;
            };
            if key & 1 == 0 {
                // Control channel readable: its client's hang-up (or garbage, which ends the
                // connection as well).
                if conn.control.hung_up() {
                    let reason = serve_remaining(self.shared, &conn);
                    self.close(slot, reason);
                    if self.quiet[slot] != COLD {
                        self.quiet[slot] = COLD;
                        if let Some(pos) = self.hot.iter().position(|&k| k == slot) {
                            self.hot.swap_remove(pos);
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
                if self.quiet[slot] == COLD {
                    conn.lock_rx().cancel_sleep();
                    self.quiet[slot] = 0;
                    self.hot.push(slot);
                }
            }
        }
    }

    /// Closes the cold connections that another thread closed.
    fn close_cold_closed(&mut self) {
        for slot in 0..self.conns.len() {
            if self.quiet[slot] == COLD
                && self.conns[slot]
                    .as_ref()
                    .is_some_and(|c| c.live.is_closed())
            {
                self.close(slot, CloseReason::Protocol);
            }
        }
    }

    /// Adopts the connections the acceptor handed over (hot from the start).
    fn adopt_new(&mut self) {
        let new: Vec<Arc<ConnState>> =
            std::mem::take(&mut *self.inbox.new.lock().unwrap_or_else(|e| e.into_inner()));
        for conn in new {
            let slot = self.free_slots.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.quiet.push(COLD);
                self.conns.len() - 1
            });
            let k = (slot as u64) << 1;
            let ok = self
                .poller
                .add(conn.control.watch(), k, Interest::ReadableOrHangUp)
                .is_ok()
                && self
                    .poller
                    .add(&conn.bell, k | 1, Interest::Readable)
                    .is_ok();
            self.conns[slot] = Some(conn.clone());
            if !ok {
                self.close(slot, CloseReason::Other);
                continue;
            }
            if self.quiet[slot] == COLD {
                self.hot.push(slot);
            }
            self.quiet[slot] = 0;
            self.shared.handler.on_connect(&Connection { state: conn });
        }
    }

    /// Shutting down: says goodbye to everybody.
    fn say_goodbye(&mut self) {
        for slot in 0..self.conns.len() {
            if let Some(conn) = self.conns[slot].clone() {
                goodbye(
                    &conn,
                    ErrorCode::SHUTTING_DOWN,
                    "the server is shutting down",
                );
                self.close(slot, CloseReason::Shutdown);
            }
        }
    }

    /// Closes the connection in `slot` for `reason`: forgets it, wakes whoever waits on it,
    /// counts and logs it, and tells the handler.
    fn close(&mut self, slot: usize, reason: CloseReason) {
        let Some(conn) = self.conns[slot].take() else {
            return;
        };
        let shared = self.shared;
        let _ = self.poller.delete(conn.control.watch());
        let _ = self.poller.delete(&conn.bell);
        conn.live.close("the connection was closed");
        // Its partial messages' memory goes back now, not when the last handle of the
        // connection (a responder on another thread) is dropped.
        conn.lock_rx().discard_partials();
        conn.tx.wake_waiters();
        for d in conn.deferred.iter() {
            if d.in_use.load(Ordering::Acquire) {
                d.wake(); // an async handler waiting for cancellation sees the end
            }
        }
        conn.control.shutdown();
        self.free_slots.push(slot);
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
        if self.free_slots.len() == self.conns.len() {
            // This worker's last connection is gone: what its traffic left in the allocator
            // goes back to the OS (the server's memory at rest).
            crate::sys::release_free_memory();
        }
    }
}

/// Most bytes of a `Goodbye`'s message (a longer one is cut at a character boundary).
const GOODBYE_MESSAGE_MAX: usize = 480;

/// Sends `Goodbye` with `code` and `message` before the connection closes, without waiting:
/// when the outgoing ring has no room (the client is not reading), the client learns of the
/// end from the hang-up alone.
fn goodbye(conn: &ConnState, code: ErrorCode, message: &str) {
    let mut end = message.len().min(GOODBYE_MESSAGE_MAX);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let mut buf = [0u8; 4 + GOODBYE_MESSAGE_MAX];
    let n = ErrorPayload::new(code, &message[..end])
        .encode(&mut buf)
        .unwrap_or(0);
    let _ = conn.tx.try_send(Kind::Goodbye, 0, &buf[..n], &conn.live);
}

/// Arms `conn`'s incoming ring with the worker's doorbell token (the connection goes cold);
/// `false`, with the ring disarmed again, when data came in meanwhile (it stays hot).
#[inline]
fn arm_cold(conn: &ConnState) -> bool {
    let mut rx = conn.lock_rx();
    if matches!(rx.prepare_sleep(TOKEN_DOORBELL), Ok(true)) {
        true
    } else {
        rx.cancel_sleep();
        false
    }
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
        conn.drop_pending();
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
        Error::OverBudget { .. } => CloseReason::PartialBudget,
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
    // Counted once per batch, not per message: each is a read-modify-write of a line every
    // worker shares.
    let (mut requests, mut notifications) = (0u64, 0u64);
    // The handle notification handlers get: made once per batch (an `Arc` clone and drop per
    // message was a measurable share of a small notification's cost).
    let mut handle: Option<Connection> = None;
    let polled = rx.poll(32, |kind, id, payload| {
        match kind {
            Kind::Request => {
                requests += 1;
                let answered = AtomicBool::new(false);
                let request = Request {
                    conn,
                    id,
                    payload,
                    answered: &answered,
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
                    // A handler that answered (or handed the request to a `Responder` or a
                    // stream, which answer for it) before panicking: one answer per request.
                    if !answered.load(Ordering::Relaxed) {
                        send_error_inline(
                            conn,
                            id,
                            ErrorCode::HANDLER_FAILED,
                            "the handler panicked",
                        );
                    }
                }
            }
            Kind::Notification => {
                notifications += 1;
                let c = handle.get_or_insert_with(|| Connection {
                    state: conn.clone(),
                });
                let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    shared.handler.on_notification(c, payload)
                }));
            }
            Kind::Cancel => conn.cancel(id),
            Kind::Ping => conn.send_inline(Kind::Pong, id, payload),
            Kind::Goodbye => goodbye = true,
            _ => {} // answers the server did not ask for: ignored
        }
        // An answer that did not fit is pending: read no more until it is out.
        !goodbye && !conn.has_pending()
    });
    drop(rx);
    if requests > 0 {
        shared.stats.requests.fetch_add(requests, Ordering::Relaxed);
    }
    if notifications > 0 {
        shared
            .stats
            .notifications
            .fetch_add(notifications, Ordering::Relaxed);
    }
    let polled = polled?;
    if goodbye {
        conn.live.close(GOODBYE);
        return Err(Error::Closed(GOODBYE));
    }
    Ok(matches!(polled, Polled::Messages(_)))
}
