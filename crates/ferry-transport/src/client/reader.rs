//! Reading the incoming ring: the leader (a waiting caller that reads for everybody), dispatch
//! of each message to its slot, and the monitor thread that reads while nobody waits.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ferry_frame::{ErrorCode, Kind};
use ferry_notify::WaitOutcome;

use crate::error::Error;
use crate::link::{Polled, Rx, TOKEN_DOORBELL, TOKEN_FUTEX, WAIT_SLICE};
use crate::slots::{STREAM_QUEUE_BYTES, State, wait_slot};
use crate::sys::{self};

use super::{Client, Conn, Shared};

impl Client {
    /// Waits until slot `index` has its answer (or the stream has data), reading the ring for
    /// everybody while no one else does.
    pub(crate) fn wait_answer(
        &self,
        conn: &Arc<Conn>,
        index: u32,
        deadline: Option<Instant>,
    ) -> Result<(), Error> {
        let slot = self.shared.slots.get(index);
        loop {
            {
                let mut inner = slot.lock();
                if let Some(r) = ready(&inner) {
                    return r;
                }
                // Register as a waiter *before* trying to lead: a departing leader scans for
                // waiters after unlocking the ring, so one of us always sees the other.
                self.shared.slots.set_waiter(&mut inner, true);
                inner.lead = false;
            }
            if let Some(mut rx) = conn.try_lock_rx() {
                let r = self.lead(conn, &mut rx, index, deadline);
                drop(rx);
                self.shared.slots.set_waiter(&mut slot.lock(), false);
                self.after_leading(conn, index);
                return r;
            }
            let mut inner = slot.lock();
            loop {
                if let Some(r) = ready(&inner) {
                    self.shared.slots.set_waiter(&mut inner, false);
                    return r;
                }
                if inner.lead {
                    break;
                }
                if conn.live.is_closed() {
                    self.shared.slots.set_waiter(&mut inner, false);
                    return Err(conn.live.error());
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    self.shared.slots.set_waiter(&mut inner, false);
                    return Err(Error::Timeout(Duration::ZERO));
                }
                inner = wait_slot(slot, inner, WAIT_SLICE, deadline);
            }
        }
    }

    /// Reads the ring until slot `index` is answered.
    pub(crate) fn lead(
        &self,
        conn: &Conn,
        rx: &mut Rx,
        index: u32,
        deadline: Option<Instant>,
    ) -> Result<(), Error> {
        let slot = self.shared.slots.get(index);
        // We read actively now: no doorbell needed until we leave.
        rx.cancel_sleep();
        loop {
            if let Err(e) = self.pump(conn, rx) {
                protocol_error(&self.shared, conn, &e, "the server sent something invalid");
                return Err(e);
            }
            if let Some(r) = ready(&slot.lock()) {
                return r;
            }
            if conn.live.is_closed() {
                return Err(conn.live.error());
            }
            let cell = std::cell::RefCell::new(&mut *rx);
            let outcome = self.shared.config.policy.wait_until(
                || cell.borrow().has_data() || conn.live.is_closed(),
                || matches!(cell.borrow_mut().prepare_sleep(TOKEN_FUTEX), Ok(true)),
                |timeout| {
                    let slice = timeout.map_or(WAIT_SLICE, |t| t.min(WAIT_SLICE));
                    let r = cell.borrow().wait_word(TOKEN_FUTEX, slice);
                    cell.borrow().cancel_sleep();
                    r
                },
                deadline,
            )?;
            if outcome == WaitOutcome::TimedOut && !rx.has_data() {
                return Err(Error::Timeout(Duration::ZERO));
            }
        }
    }

    /// After leading: pass the ring to another waiter, or re-arm the doorbell so the monitor
    /// thread reads what arrives while nobody waits.
    pub(crate) fn after_leading(&self, conn: &Conn, index: u32) {
        if self.shared.slots.hand_off(Some(index)) {
            return;
        }
        arm_idle_reader(&self.shared, conn, Reader::MayBlock);
    }

    /// Reads everything available and dispatches it.
    pub(crate) fn pump(&self, conn: &Conn, rx: &mut Rx) -> Result<Polled, Error> {
        pump(&self.shared, conn, rx, Reader::MayBlock)
    }
}

pub(crate) fn ready(inner: &crate::slots::SlotInner) -> Option<Result<(), Error>> {
    match inner.state {
        State::Done => Some(Ok(())),
        State::Failed => Some(Err(Error::Closed(
            inner.failure.unwrap_or("the connection was lost"),
        ))),
        State::Waiting if inner.streaming && !inner.items.is_empty() => Some(Ok(())),
        _ => None,
    }
}

/// Whether the thread reading the incoming ring may block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reader {
    /// A blocking caller leading, or the monitor thread: may wait while a stream's reader lags
    /// (backpressure), and for ring space to answer a `Ping`.
    MayBlock,
    /// An async caller reading inside a `poll`: never waits. A stream item for a full queue is
    /// queued anyway (the queue overshoots by that one message) and reading stops there; while
    /// [`Slots::backlogged`](crate::slots::Slots::backlogged) says so, the ring is left to
    /// readers that may block.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    NeverBlocks,
}

/// What a reader does after handing over one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterMessage {
    /// Read the next message.
    ReadOn,
    /// Stop reading: a stream's queue just went over its limit and this reader may not block.
    Pause,
}

/// Rounds of reading an async caller's poll may do while arming the doorbell before it hands
/// the ring to the monitor thread (a server flooding us must not keep a tokio worker in one
/// poll).
const ARM_ROUNDS: usize = 16;

/// Reads everything available on `rx` (up to a batch), handing each message to its slot.
pub(crate) fn pump(
    shared: &Shared,
    conn: &Conn,
    rx: &mut Rx,
    reader: Reader,
) -> Result<Polled, Error> {
    rx.poll(64, |kind, id, payload| {
        dispatch(shared, conn, kind, id, payload, reader) == AfterMessage::ReadOn
    })
}

/// Hands one message to its slot (an answer, a stream item), to the notification handler, or
/// answers it (`Ping`).
fn dispatch(
    shared: &Shared,
    conn: &Conn,
    kind: Kind,
    id: u64,
    payload: &[u8],
    reader: Reader,
) -> AfterMessage {
    match kind {
        Kind::Response | Kind::ErrorResponse | Kind::StreamEnd | Kind::StreamItem => {
            deliver(shared, conn, kind, id, payload, reader)
        }
        Kind::Notification => {
            notification(shared, payload);
            AfterMessage::ReadOn
        }
        Kind::Ping => {
            match reader {
                Reader::MayBlock => {
                    let _ = conn.tx.send(
                        Kind::Pong,
                        id,
                        payload,
                        Some(Instant::now() + WAIT_SLICE),
                        &conn.live,
                    );
                }
                Reader::NeverBlocks => {
                    // Best effort without waiting: a full ring means the server is not reading.
                    let _ = conn.tx.try_send(Kind::Pong, id, payload, &conn.live);
                }
            }
            AfterMessage::ReadOn
        }
        Kind::Goodbye => {
            let (code, message) = match ferry_frame::ErrorPayload::decode(payload) {
                Ok(p) => (p.code, p.message),
                Err(_) => (ErrorCode(u32::MAX), "(an undecodable Goodbye payload)"),
            };
            tracing::warn!(
                service = &*shared.service,
                server_pid = conn.server_pid,
                code = code.0,
                message,
                "ferry server said goodbye"
            );
            let reason = goodbye_reason(code);
            conn.live.close(reason);
            shared.slots.fail_all(reason);
            AfterMessage::ReadOn
        }
        // Pong, Cancel, Request from the server: nothing the client serves today.
        _ => AfterMessage::ReadOn,
    }
}

/// What the error of every call in flight says when the server said `Goodbye` with `code`
/// (its message is in the client's log, event "ferry server said goodbye").
fn goodbye_reason(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::NORMAL => "the server closed the connection (Goodbye NORMAL)",
        ErrorCode::SHUTTING_DOWN => {
            "the server is shutting down (Goodbye SHUTTING_DOWN); reconnect when it is back"
        }
        ErrorCode::PROTOCOL_VIOLATION => {
            "the server cut this connection off for a protocol violation (Goodbye \
             PROTOCOL_VIOLATION; its message, in this client's log, names the problem)"
        }
        ErrorCode::BUSY => {
            "the server cut this connection off: its memory for partial (fragmented) messages, \
             all connections together, is used up (Goodbye BUSY); retry later"
        }
        _ => "the server closed the connection (Goodbye with another code; see this client's log)",
    }
}

/// Hands an answer or stream item to the slot of call `id` (dropped when the call was
/// abandoned) and wakes whoever waits for it.
fn deliver(
    shared: &Shared,
    conn: &Conn,
    kind: Kind,
    id: u64,
    payload: &[u8],
    reader: Reader,
) -> AfterMessage {
    let Some((_, slot)) = shared.slots.lookup(id) else {
        return AfterMessage::ReadOn; // an answer to an abandoned call: dropped by design
    };
    let mut inner = slot.lock();
    if inner.state != State::Waiting {
        return AfterMessage::ReadOn;
    }
    let mut after = AfterMessage::ReadOn;
    if kind == Kind::StreamItem {
        if !inner.streaming {
            return AfterMessage::ReadOn;
        }
        // Backpressure: wait (bounded by liveness) while the stream's reader lags.
        let mut counted = false;
        while reader == Reader::MayBlock
            && inner.items.len() + payload.len() > STREAM_QUEUE_BYTES
            && !inner.items.is_empty()
        {
            if !counted {
                shared.metrics.stream_backpressure_wait();
                counted = true;
            }
            if conn.live.is_closed() || shared.slots.lookup(id).is_none() {
                return AfterMessage::ReadOn;
            }
            // This thread may be the monitor, which then is not watching the control socket:
            // look at it here, or the server's death would go unseen (and every other call
            // hang) for as long as the stream's reader lags.
            if conn.control.hung_up() {
                drop(inner);
                server_went_away(shared, conn);
                return AfterMessage::ReadOn;
            }
            inner = slot
                .cv
                .wait_timeout(inner, WAIT_SLICE)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        inner.items.extend((payload.len() as u32).to_le_bytes());
        inner.items.extend(payload);
        if inner.items.len() > STREAM_QUEUE_BYTES {
            shared.slots.set_over(&mut inner, true);
            if reader == Reader::NeverBlocks {
                after = AfterMessage::Pause;
            }
        }
    } else {
        inner.kind = kind;
        inner.buf.clear();
        inner.buf.extend_from_slice(payload);
        inner.state = State::Done;
    }
    // Waking costs a system call: only when a thread sleeps on this slot, or a task waits for
    // it.
    let wake = inner.waiter;
    let waker = inner.waker.take();
    drop(inner);
    if wake {
        slot.cv.notify_all();
    }
    if let Some(w) = waker {
        w.wake();
    }
    after
}

/// Hands a notification to the configured handler, or counts it dropped.
fn notification(shared: &Shared, payload: &[u8]) {
    let Some(handler) = &shared.config.on_notification else {
        shared
            .stats
            .notifications_dropped
            .fetch_add(1, Ordering::Relaxed);
        return;
    };
    shared.stats.notifications.fetch_add(1, Ordering::Relaxed);
    // The handler runs on whichever thread reads the ring (a caller leading for the others, or
    // the monitor): a panic must not unwind through the reader, which would leave the other
    // callers waiting for a leader that is gone.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(payload)));
    if r.is_err() {
        shared
            .stats
            .notification_panics
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            service = &*shared.service,
            "ferry notification handler panicked"
        );
    }
}

/// The server broke the protocol (a bad frame, a corrupted ring): says so, then closes.
pub(crate) fn protocol_error(shared: &Shared, conn: &Conn, error: &Error, reason: &'static str) {
    tracing::warn!(
        service = &*shared.service,
        server_pid = conn.server_pid,
        error = %error,
        "ferry protocol error from the server, closing the connection"
    );
    close(shared, conn, reason);
}

pub(crate) fn close(shared: &Shared, conn: &Conn, reason: &'static str) {
    conn.live.close(reason);
    shared.slots.fail_all(reason);
    conn.tx.wake_waiters();
}

/// Leaves the incoming ring armed, so that the server rings our doorbell for whatever it sends
/// next while no call reads (the monitor thread reads then), reading what is already there
/// first. A `reader` that may block reads until the ring is empty. One that never blocks (an
/// async poll) reads at most `ARM_ROUNDS` rounds and stops when a stream is backed up; if the
/// ring is not armed by then, it rings the doorbell so that the monitor thread takes over.
/// Does nothing while another thread holds the ring (it arms or hands off when it leaves);
/// returns whether this thread held it.
pub(crate) fn arm_idle_reader(shared: &Shared, conn: &Conn, reader: Reader) -> bool {
    let Some(mut rx) = conn.try_lock_rx() else {
        return false;
    };
    let mut rounds = 0;
    loop {
        if reader == Reader::NeverBlocks {
            if rounds == ARM_ROUNDS || shared.slots.backlogged() {
                break;
            }
            rounds += 1;
        }
        match pump(shared, conn, &mut rx, reader) {
            Ok(Polled::Messages(_)) => continue,
            Ok(Polled::Empty) => {}
            Err(e) => {
                protocol_error(shared, conn, &e, "the server sent something invalid");
                return true;
            }
        }
        match rx.prepare_sleep(TOKEN_DOORBELL) {
            Ok(true) => return true,
            Ok(false) => {}
            Err(e) => {
                protocol_error(shared, conn, &e, "the server corrupted the incoming ring");
                return true;
            }
        }
    }
    drop(rx);
    // The monitor thread (which may block) reads from here on.
    let _ = conn.bell.ring();
    true
}

/// Fails every call in flight: the server's control socket hung up.
pub(crate) fn server_went_away(shared: &Shared, conn: &Conn) {
    tracing::warn!(
        service = &*shared.service,
        server_pid = conn.server_pid,
        "ferry server went away (its control socket hung up); calls in flight fail"
    );
    close(
        shared,
        conn,
        "the server went away (control socket hung up)",
    );
}

/// Reads what the server sent before its control socket hung up: a `Goodbye` there says why
/// (the server publishes it before it closes). When a calling thread holds the ring (a leader),
/// that thread reads it: the publish woke it, and it checks the ring at least every
/// [`WAIT_SLICE`]. So wait for the ring to be free, or the connection closed by what the
/// leader read, for at most two slices; only then may the monitor conclude that nothing
/// explains the hang-up (the server died), so a dead server's calls still fail within ~10 ms.
fn read_before_hang_up(shared: &Shared, conn: &Conn) {
    let give_up = Instant::now() + 2 * WAIT_SLICE;
    loop {
        if conn.live.is_closed() {
            return;
        }
        if arm_idle_reader(shared, conn, Reader::MayBlock) {
            return;
        }
        if Instant::now() >= give_up {
            return;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// The connection's monitor: sleeps on the control channel and the doorbell.
pub(crate) fn monitor(shared: std::sync::Weak<Shared>, conn: Arc<Conn>) {
    if let Some(s) = shared.upgrade() {
        arm_idle_reader(&s, &conn, Reader::MayBlock);
    }
    while let Ok(woke) = sys::wait_hangup_or_bell(&conn.control, &conn.bell) {
        let Some(s) = shared.upgrade() else { break };
        if conn.live.is_closed() {
            break;
        }
        if woke.control && conn.control.hung_up() {
            if s.closing.load(Ordering::Acquire) {
                // `Client::close` said Goodbye (the server hung up in answer) and closes the
                // connection itself: the server did not go away.
                break;
            }
            read_before_hang_up(&s, &conn);
            if !conn.live.is_closed() {
                server_went_away(&s, &conn);
            }
            break;
        }
        if woke.bell {
            conn.metrics.wakeup_received();
            // Windows: the server rang instead of waking a word; wake its sleepers here.
            #[cfg(windows)]
            {
                conn.rx_word.wake_all();
                conn.tx.relay_wakes();
            }
            arm_idle_reader(&s, &conn, Reader::MayBlock);
        }
    }
}
