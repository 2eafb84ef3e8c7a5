//! Calls: blocking, with a deadline, written in place, pipelined ([`PendingCall`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ferry_frame::{ErrorCode, Kind};

use crate::error::Error;
use crate::link::WAIT_SLICE;
use crate::metrics::CallError;

use super::reader::{Reader, arm_idle_reader};
use super::{Client, Conn, Response, Shared};
use crate::error::decode_error;

impl Client {
    /// Sends `request` and waits for the response (no deadline).
    ///
    /// # Errors
    /// [`Error::Remote`] when the handler answered with an error; [`Error::Closed`] when the
    /// connection was lost before the answer; others as for [`connect`](Self::connect).
    pub fn call(&self, request: &[u8]) -> Result<Response, Error> {
        self.call_inner(request, None)
    }

    /// Sends `request` and waits at most `timeout` for the response; on timeout the request is
    /// cancelled on the server (`Cancel`) and [`Error::Timeout`] returned.
    ///
    /// # Errors
    /// As [`call`](Self::call), plus [`Error::Timeout`].
    pub fn call_timeout(&self, request: &[u8], timeout: Duration) -> Result<Response, Error> {
        self.call_inner(request, Some(Instant::now() + timeout))
    }

    /// Sends a request of `len` bytes that `fill` writes in place, straight into the ring
    /// record (no copy of the payload on this side), and waits for the response.
    ///
    /// A request larger than one ring record (about a quarter of the client → server ring) is
    /// sent in fragments: then `fill` writes into a staging buffer that is copied into the
    /// fragments, as [`call`](Self::call) would. `fill` gets exactly `len` bytes; what it does
    /// not write is sent as whatever the record held before, so it should write them all.
    ///
    /// # Errors
    /// As [`call`](Self::call).
    pub fn call_with(&self, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<Response, Error> {
        let started = self.start_timer();
        let r = self.call_once(
            |conn, id, deadline| send_with(conn, Kind::Request, id, len, fill, deadline),
            None,
        );
        self.count(r, started)
    }

    pub(crate) fn call_inner(
        &self,
        request: &[u8],
        deadline: Option<Instant>,
    ) -> Result<Response, Error> {
        let started = self.start_timer();
        let r = self.call_once(
            |conn, id, deadline| {
                conn.tx
                    .send(Kind::Request, id, request, deadline, &conn.live)
            },
            deadline,
        );
        self.count(r, started)
    }

    /// When this call is one of those timed for the round-trip histogram (one in
    /// [`ClientConfig::round_trip_sample_every`] per thread), the time it starts.
    #[inline]
    pub(crate) fn start_timer(&self) -> Option<Instant> {
        thread_local! {
            /// Calls left until this thread times one.
            static UNTIL_TIMED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
        }
        let every = self.shared.config.round_trip_sample_every;
        if every == 0 {
            return None;
        }
        UNTIL_TIMED.with(|left| match left.get() {
            0 => {
                left.set(every - 1);
                Some(Instant::now())
            }
            n => {
                left.set(n - 1);
                None
            }
        })
    }

    /// Counts the outcome of a call; an answered call that was timed (`started`) goes into the
    /// round-trip histogram.
    pub(crate) fn count<T>(
        &self,
        result: Result<T, Error>,
        started: Option<Instant>,
    ) -> Result<T, Error> {
        let answered = match &result {
            Ok(_) => {
                self.shared.stats.calls_ok.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                self.shared.call_failed(CallError::of(e));
                matches!(e, Error::Remote { .. })
            }
        };
        if answered && let Some(t) = started {
            self.shared.metrics.round_trip.record(t.elapsed());
        }
        result
    }

    pub(crate) fn call_once(
        &self,
        send: impl FnOnce(&Conn, u64, Option<Instant>) -> Result<(), Error>,
        deadline: Option<Instant>,
    ) -> Result<Response, Error> {
        let conn = self.connection(deadline, true)?;
        let (index, id) = self.shared.slots.acquire(false, deadline)?;
        let guard = SlotGuard {
            shared: &self.shared,
            index,
            armed: true,
        };
        // Disarm the idle reader's doorbell before the request goes out: the answer may come
        // back before we start reading, and a server that finds the doorbell armed pays a
        // system call and wakes our monitor thread for nothing. Whoever leads next re-arms it
        // on the way out (see `after_leading`).
        if let Some(rx) = conn.try_lock_rx() {
            rx.cancel_sleep();
        }
        if let Err(e) = send(&conn, id, deadline) {
            arm_idle_reader(&self.shared, &conn, Reader::MayBlock);
            return Err(e);
        }
        match self.wait_answer(&conn, index, deadline) {
            Ok(()) => {}
            Err(e) => {
                if matches!(e, Error::Timeout(_)) {
                    let _ = conn.tx.send(
                        Kind::Cancel,
                        id,
                        &[],
                        Some(Instant::now() + WAIT_SLICE),
                        &conn.live,
                    );
                }
                return Err(e);
            }
        }
        std::mem::forget(guard);
        take_response(&self.shared, index)
    }

    /// Sends `request` and returns at once: wait for the answer later with
    /// [`PendingCall::wait`]. Many calls can be in flight from one thread this way (pipelining:
    /// send a window of requests, then collect the answers), up to
    /// [`ClientConfig::max_in_flight`](crate::ClientConfig::max_in_flight) per client; a further `start_call` waits for a free slot.
    ///
    /// Dropping a `PendingCall` without waiting cancels the call: its slot is freed at once (a
    /// late answer is discarded) and the server is told (`Cancel`, best effort).
    ///
    /// ```no_run
    /// # fn demo(client: &ferry_transport::Client) -> Result<(), ferry_transport::Error> {
    /// let pending: Vec<_> = (0..16u8)
    ///     .map(|i| client.start_call(&[i]))
    ///     .collect::<Result<_, _>>()?;
    /// for call in pending {
    ///     let response = call.wait()?;
    ///     println!("{} bytes", response.len());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`call`](Self::call) for sending the request.
    pub fn start_call(&self, request: &[u8]) -> Result<PendingCall, Error> {
        let started = self.start_timer();
        let conn = self.connection(None, true)?;
        let (index, id) = self.shared.slots.acquire(false, None)?;
        if let Err(e) = conn.tx.send(Kind::Request, id, request, None, &conn.live) {
            self.shared.slots.release(index);
            self.shared.call_failed(CallError::of(&e));
            return Err(e);
        }
        Ok(PendingCall {
            client: self.clone(),
            conn,
            index,
            id,
            waited: false,
            started,
        })
    }

    /// Sends a one-way notification.
    ///
    /// # Errors
    /// [`Error::TooLarge`], [`Error::Closed`], or [`Error::Timeout`] never (waits for space).
    pub fn notify(&self, payload: &[u8]) -> Result<(), Error> {
        let conn = self.connection(None, true)?;
        conn.tx
            .send(Kind::Notification, 0, payload, None, &conn.live)
    }
}

/// Turns the answered slot `index` into a [`Response`] (which releases the slot on drop) or the
/// error the server answered with.
pub(crate) fn take_response(shared: &Arc<Shared>, index: u32) -> Result<Response, Error> {
    let slot = shared.slots.get(index);
    let mut inner = slot.lock();
    let data = std::mem::take(&mut inner.buf);
    let kind = inner.kind;
    drop(inner);
    let response = Response {
        shared: shared.clone(),
        index,
        data,
    };
    if kind == Kind::ErrorResponse {
        let (code, message) = decode_error(&response);
        if code == ErrorCode::CANCELLED {
            return Err(Error::Cancelled);
        }
        return Err(Error::Remote { code, message });
    }
    Ok(response)
}

/// Sends a message of `len` bytes written in place by `fill`: straight into one ring record when
/// it fits in one frame, through a staging buffer when it must be fragmented.
pub(crate) fn send_with(
    conn: &Conn,
    kind: Kind,
    id: u64,
    len: usize,
    fill: impl FnOnce(&mut [u8]),
    deadline: Option<Instant>,
) -> Result<(), Error> {
    if len <= conn.tx.max_single() {
        conn.tx.send_with(
            kind,
            ferry_frame::Flags::NONE,
            id,
            len,
            deadline,
            &conn.live,
            fill,
        )
    } else {
        let mut staging = vec![0u8; len];
        fill(&mut staging);
        conn.tx.send(kind, id, &staging, deadline, &conn.live)
    }
}

/// A call sent with [`Client::start_call`] whose answer has not been collected yet.
#[derive(Debug)]
#[must_use = "dropping a PendingCall cancels the call"]
pub struct PendingCall {
    pub(crate) client: Client,
    pub(crate) conn: Arc<Conn>,
    pub(crate) index: u32,
    pub(crate) id: u64,
    pub(crate) waited: bool,
    /// When the call started, if it is timed.
    pub(crate) started: Option<Instant>,
}

impl PendingCall {
    /// Waits for the answer (no deadline).
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn wait(self) -> Result<Response, Error> {
        self.wait_until(None)
    }

    /// Waits at most `timeout` for the answer; on timeout the call is cancelled on the server
    /// and [`Error::Timeout`] returned.
    ///
    /// # Errors
    /// As [`Client::call_timeout`].
    pub fn wait_timeout(self, timeout: Duration) -> Result<Response, Error> {
        self.wait_until(Some(Instant::now() + timeout))
    }

    pub(crate) fn wait_until(mut self, deadline: Option<Instant>) -> Result<Response, Error> {
        let result = self
            .client
            .wait_answer(&self.conn, self.index, deadline)
            .and_then(|()| {
                // The slot now belongs to the response (released when it drops).
                self.waited = true;
                take_response(&self.client.shared, self.index)
            });
        self.client.count(result, self.started)
    }

    /// The correlation id the request went out with.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        if self.waited {
            return;
        }
        // Not answered (dropped, timed out, or the connection failed): tell the server, without
        // waiting for ring space longer than one wait slice, and free the slot; its generation
        // changes, so a late answer is discarded.
        if !self.conn.live.is_closed() {
            let _ = self.conn.tx.send(
                Kind::Cancel,
                self.id,
                &[],
                Some(Instant::now() + WAIT_SLICE),
                &self.conn.live,
            );
        }
        self.client.shared.slots.release(self.index);
    }
}

pub(crate) struct SlotGuard<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) index: u32,
    pub(crate) armed: bool,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.slots.release(self.index);
        }
    }
}
