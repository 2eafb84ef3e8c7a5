//! One connection as the server sees it: its rings, deferred requests, and the answers the
//! worker sends inline without blocking.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use ferry_frame::Kind;
use ferry_notify::Doorbell;

use crate::error::Error;
use crate::link::{Liveness, Rx, Tx};
use crate::metrics::{LinkCounters, ServerMetrics};
use crate::sys::Control;
use crate::user::UserId;

/// One client connection, as the server sees it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Connection {
    pub(crate) state: Arc<ConnState>,
}

/// Deferred requests (answered later, from any thread) tracked per connection for cancellation.
pub(crate) const MAX_DEFERRED: usize = 256;

#[derive(Debug)]
pub(crate) struct Deferred {
    pub(crate) id: AtomicU64,
    pub(crate) in_use: AtomicBool,
    pub(crate) cancelled: AtomicBool,
    /// The task waiting for cancellation (the tokio API's `cancelled()`), woken by a `Cancel`
    /// or the connection's end.
    pub(crate) waker: Mutex<Option<std::task::Waker>>,
}

impl Deferred {
    pub(crate) fn wake(&self) {
        let waker = self.waker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

#[derive(Debug)]
pub(crate) struct ConnState {
    pub(crate) id: u64,
    pub(crate) tx: Tx,
    pub(crate) rx: Mutex<Rx>,
    pub(crate) live: Liveness,
    pub(crate) control: Control,
    pub(crate) bell: Doorbell,
    pub(crate) peer_pid: i32,
    pub(crate) peer_user: UserId,
    /// This connection's counters (also held by `tx` and `rx`, which write them).
    pub(crate) metrics: Arc<LinkCounters>,
    /// The server's metrics, for what a connection's requests count there.
    pub(crate) server_metrics: Arc<ServerMetrics>,
    pub(crate) opened: Instant,
    /// An inline answer that did not fit in the ring: (kind, id, payload, bytes sent so far).
    /// While it is set the worker reads no more requests from this connection.
    pub(crate) pending: Mutex<Option<Pending>>,
    /// `pending.is_some()`, written under `pending`'s lock and read by the worker without it:
    /// the worker asks after every message it reads, and a lock per message was a measurable
    /// share of a small message's cost. Only the worker's own thread (or a thread its handler
    /// joins before returning) sets a pending answer, so the worker always reads it current.
    pub(crate) has_pending: AtomicBool,
    pub(crate) deferred: Box<[Deferred]>,
}

#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) kind: Kind,
    pub(crate) id: u64,
    pub(crate) payload: Vec<u8>,
    /// Progress of a fragmented answer: bytes sent, and whether it holds fragment budget.
    pub(crate) progress: crate::link::Progress,
}

impl ConnState {
    pub(crate) fn lock_rx(&self) -> MutexGuard<'_, Rx> {
        self.rx.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn lock_pending(&self) -> MutexGuard<'_, Option<Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether an answer is pending, read without the lock (the `has_pending` flag).
    #[inline]
    pub(crate) fn has_pending(&self) -> bool {
        self.has_pending.load(Ordering::Relaxed)
    }

    /// Sets or clears the pending answer; `pending` is this connection's locked slot.
    fn set_pending(&self, pending: &mut Option<Pending>, to: Option<Pending>) {
        self.has_pending.store(to.is_some(), Ordering::Relaxed);
        *pending = to;
    }

    /// Drops the pending answer (its client is gone).
    pub(crate) fn drop_pending(&self) {
        let mut pending = self.lock_pending();
        self.set_pending(&mut pending, None);
    }

    /// Like [`send_inline`](Self::send_inline) for a payload that `fill` writes in place: into
    /// the ring record itself when it fits now, else into the pending answer's buffer.
    pub(crate) fn send_inline_with(
        &self,
        kind: Kind,
        id: u64,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) {
        let mut pending = self.lock_pending();
        let mut fill = Some(fill);
        if pending.is_none() && len <= self.tx.max_single() {
            let f = fill.take().expect("not used yet");
            match self
                .tx
                .try_send_with(kind, ferry_frame::Flags::NONE, id, len, &self.live, f)
            {
                Ok(Ok(())) => return,
                Ok(Err(f)) => fill = Some(f),
                Err(_) => return, // connection failing; the worker closes it
            }
        }
        debug_assert!(
            pending.is_none(),
            "the worker reads nothing while an answer is pending"
        );
        let mut payload = vec![0u8; len];
        if let Some(f) = fill {
            f(&mut payload);
        }
        self.set_pending(
            &mut pending,
            Some(Pending {
                kind,
                id,
                payload,
                progress: crate::link::Progress::default(),
            }),
        );
    }

    /// Answers from the worker thread without ever blocking it: straight into the ring when it
    /// fits, else kept as this connection's one pending answer.
    pub(crate) fn send_inline(&self, kind: Kind, id: u64, payload: &[u8]) {
        let mut pending = self.lock_pending();
        if pending.is_none() && payload.len() <= self.tx.max_single() {
            match self.tx.try_send(kind, id, payload, &self.live) {
                Ok(true) => return,
                Ok(false) => {}
                Err(_) => return, // connection failing; the worker closes it
            }
        }
        debug_assert!(
            pending.is_none(),
            "the worker reads nothing while an answer is pending"
        );
        self.set_pending(
            &mut pending,
            Some(Pending {
                kind,
                id,
                payload: payload.to_vec(),
                progress: crate::link::Progress::default(),
            }),
        );
    }

    /// Whether an answer is pending, and if so, arms the ring so that the client's next
    /// release of space rings this connection's doorbell ([`Tx::arm_for_space`]). Returns
    /// `None` when nothing is pending, `Some(true)` when armed (the worker may sleep),
    /// `Some(false)` when the space is there now (flush instead of sleeping).
    ///
    /// [`Tx::arm_for_space`]: crate::link::Tx::arm_for_space
    pub(crate) fn arm_pending(&self) -> Option<bool> {
        let pending = self.lock_pending();
        let p = pending.as_ref()?;
        Some(self.tx.arm_for_space(p.payload.len() - p.progress.sent))
    }

    /// Tries to send the pending answer; true when nothing is pending any more.
    pub(crate) fn flush_pending(&self) -> bool {
        let mut pending = self.lock_pending();
        let Some(p) = pending.as_mut() else {
            return true;
        };
        // Never waits: sends what fits now and remembers how far it got, so a large answer
        // goes out fragment by fragment as the client drains the ring.
        let r = self
            .tx
            .try_send_from(p.kind, p.id, &p.payload, &mut p.progress, &self.live);
        match r {
            Ok(true) | Err(_) => {
                self.set_pending(&mut pending, None);
                true
            }
            Ok(false) => false,
        }
    }

    pub(crate) fn defer(&self, id: u64) -> Option<usize> {
        for (i, d) in self.deferred.iter().enumerate() {
            if d.in_use
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                d.cancelled.store(false, Ordering::Relaxed);
                d.id.store(id, Ordering::Release);
                return Some(i);
            }
        }
        None
    }

    pub(crate) fn cancel(&self, id: u64) {
        for d in self.deferred.iter() {
            if d.in_use.load(Ordering::Acquire) && d.id.load(Ordering::Acquire) == id {
                d.cancelled.store(true, Ordering::Release);
                d.wake();
            }
        }
    }
}

impl Connection {
    /// Server-unique number of this connection.
    pub fn id(&self) -> u64 {
        self.state.id
    }
    /// The client's process id (from `SO_PEERCRED`, macOS `LOCAL_PEERPID`, Windows
    /// `GetNamedPipeClientProcessId`, at connect time).
    pub fn peer_pid(&self) -> i32 {
        self.state.peer_pid
    }
    /// The client's user (its effective uid on Unix, its token's user SID on Windows, at
    /// connect time).
    pub fn peer_user(&self) -> &UserId {
        &self.state.peer_user
    }
    /// Whether the connection is still open.
    pub fn is_open(&self) -> bool {
        !self.state.live.is_closed()
    }
    /// Pushes a notification to the client (waits for ring space, never drops).
    ///
    /// # Errors
    /// [`Error::Closed`] when the client is gone; [`Error::TooLarge`].
    pub fn notify(&self, payload: &[u8]) -> Result<(), Error> {
        self.state
            .tx
            .send(Kind::Notification, 0, payload, None, &self.state.live)
    }
}
