//! The request API: [`Request`] (answered inline), [`Responder`] (answered later, from any
//! thread), [`StreamSender`] (a streamed answer).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ferry_frame::{ErrorCode, ErrorPayload, Kind};

use crate::error::Error;

use super::conn::{ConnState, Connection};

/// A request being handled. Answer it with one of the consuming methods.
#[derive(Debug)]
pub struct Request<'a> {
    pub(crate) conn: &'a Arc<ConnState>,
    pub(crate) id: u64,
    pub(crate) payload: &'a [u8],
    /// Set once an answer went out or was handed on (a `Responder`, a stream). It lives in the
    /// worker, not in the request, so that after a handler panics the worker still knows
    /// whether the request was answered before the panic (then it must not answer again).
    pub(crate) answered: &'a AtomicBool,
}

impl<'a> Request<'a> {
    /// The request's payload, borrowed from the ring (it stays there until the handler
    /// returns, so it can be passed straight to [`respond`](Self::respond)); copy what you keep.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
    /// The connection it came on.
    pub fn connection(&self) -> Connection {
        Connection {
            state: self.conn.clone(),
        }
    }
    /// Answers with `payload`: now, or (when the ring is full, or the answer goes in
    /// fragments) by the worker as the client makes room, before it reads anything more from
    /// this connection.
    ///
    /// # Errors
    /// [`Error::Closed`] when the connection is closed: the answer cannot reach the client.
    /// (As for [`Responder::respond`]; a handler may just return it.)
    pub fn respond(self, payload: &[u8]) -> Result<(), Error> {
        self.answered.store(true, Ordering::Relaxed);
        self.conn.send_inline(Kind::Response, self.id, payload);
        self.outcome()
    }
    /// Answers with `len` bytes that `fill` writes in place, straight into the ring record (no
    /// copy of the payload on this side). When the answer does not fit now (the ring is full,
    /// or it is larger than one record and goes in fragments) `fill` writes into a buffer that
    /// is sent as the connection's pending answer, as [`respond`](Self::respond) would.
    /// `fill` gets exactly `len` bytes and should write them all.
    ///
    /// # Errors
    /// As [`respond`](Self::respond).
    pub fn respond_with(self, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<(), Error> {
        self.answered.store(true, Ordering::Relaxed);
        self.conn
            .send_inline_with(Kind::Response, self.id, len, fill);
        self.outcome()
    }
    /// Answers with an error `code` (a protocol code such as [`ErrorCode::INVALID_ARGUMENT`], or
    /// an application code from [`ErrorCode::APPLICATION_BASE`]) and a message for the caller.
    ///
    /// # Errors
    /// As [`respond`](Self::respond).
    pub fn respond_error(self, code: ErrorCode, message: &str) -> Result<(), Error> {
        self.answered.store(true, Ordering::Relaxed);
        send_error_inline(self.conn, self.id, code, message);
        self.outcome()
    }
    /// What answering came to: `Err` once the connection is closed.
    fn outcome(&self) -> Result<(), Error> {
        if self.conn.live.is_closed() {
            return Err(self.conn.live.error());
        }
        Ok(())
    }
    /// Takes the request out of the handler to answer it later, from any thread.
    pub fn into_responder(self) -> Responder {
        self.answered.store(true, Ordering::Relaxed);
        let slot = self.conn.defer(self.id);
        Responder {
            conn: self.conn.clone(),
            id: self.id,
            slot,
            done: false,
        }
    }
    /// Answers with a stream of items, sent later from any thread.
    pub fn into_stream(self) -> StreamSender {
        StreamSender {
            inner: self.into_responder(),
        }
    }
}

impl Drop for Request<'_> {
    fn drop(&mut self) {
        // Dropped by a panicking handler: the worker answers "the handler panicked" (and counts
        // the panic) once `catch_unwind` returns.
        if !self.answered.load(Ordering::Relaxed) && !std::thread::panicking() {
            self.answered.store(true, Ordering::Relaxed);
            self.conn.server_metrics.request_dropped();
            send_error_inline(
                self.conn,
                self.id,
                ErrorCode::HANDLER_FAILED,
                "the handler returned without answering",
            );
        }
    }
}

/// Encodes an error payload into `buf`, cutting the message (at a character boundary) to fit.
pub(crate) fn error_payload<'b>(buf: &'b mut [u8], code: ErrorCode, message: &str) -> &'b [u8] {
    let message = truncate_utf8(message, buf.len() - ErrorPayload::CODE_LEN);
    let n = ErrorPayload::new(code, message).encode(buf).unwrap_or(0);
    &buf[..n]
}

pub(crate) fn send_error_inline(conn: &ConnState, id: u64, code: ErrorCode, message: &str) {
    let mut buf = [0u8; 1024];
    conn.send_inline(
        Kind::ErrorResponse,
        id,
        error_payload(&mut buf, code, message),
    );
}

pub(crate) fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Answers one request later, from any thread. Dropping it unanswered answers with an error.
#[derive(Debug)]
pub struct Responder {
    pub(crate) conn: Arc<ConnState>,
    pub(crate) id: u64,
    pub(crate) slot: Option<usize>,
    pub(crate) done: bool,
}

/// What the tokio API needs of a [`Responder`]: its connection and id, to send from any task.
#[cfg(feature = "tokio")]
#[derive(Clone, Debug)]
pub(crate) struct AnswerLink {
    pub(crate) conn: Arc<ConnState>,
    pub(crate) id: u64,
}

#[cfg(feature = "tokio")]
impl AnswerLink {
    /// Sends one frame of `kind` if it fits in one record and the ring has room now (never
    /// waits): `Ok(false)` otherwise.
    pub(crate) fn try_send(&self, kind: Kind, payload: &[u8]) -> Result<bool, Error> {
        if payload.len() > self.conn.tx.max_single() {
            return Ok(false);
        }
        self.conn
            .tx
            .try_send(kind, self.id, payload, &self.conn.live)
    }
    /// Sends a message of `kind`, waiting for ring space.
    pub(crate) fn send(&self, kind: Kind, payload: &[u8]) -> Result<(), Error> {
        self.conn
            .tx
            .send(kind, self.id, payload, None, &self.conn.live)
    }
    /// An error payload for `code` and `message` (cut to fit).
    pub(crate) fn error_payload(code: ErrorCode, message: &str) -> Vec<u8> {
        let mut buf = [0u8; 1024];
        error_payload(&mut buf, code, message).to_vec()
    }
}

impl Responder {
    /// The connection and id, for the tokio API.
    #[cfg(feature = "tokio")]
    pub(crate) fn link(&self) -> AnswerLink {
        AnswerLink {
            conn: self.conn.clone(),
            id: self.id,
        }
    }
    /// Records that the answer went out another way (the tokio API sent it).
    #[cfg(feature = "tokio")]
    pub(crate) fn mark_answered(&mut self) {
        self.done = true;
    }
    /// Ready once the request is cancelled (or the connection ends); registers the task to be
    /// woken then. Never ready when the request could not be tracked (more than
    /// `MAX_DEFERRED` deferred requests on the connection) and the connection stays up.
    #[cfg(feature = "tokio")]
    pub(crate) fn poll_cancelled(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.is_cancelled() {
            return std::task::Poll::Ready(());
        }
        if let Some(i) = self.slot {
            let d = &self.conn.deferred[i];
            *d.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
        }
        if self.is_cancelled() {
            return std::task::Poll::Ready(());
        }
        std::task::Poll::Pending
    }
    /// Whether the client cancelled the request (stop working on it early).
    pub fn is_cancelled(&self) -> bool {
        self.conn.live.is_closed()
            || self
                .slot
                .is_some_and(|i| self.conn.deferred[i].cancelled.load(Ordering::Acquire))
    }
    /// Answers with `payload` (waits for ring space).
    ///
    /// # Errors
    /// [`Error::Closed`] when the client is gone.
    pub fn respond(mut self, payload: &[u8]) -> Result<(), Error> {
        self.done = true;
        self.conn
            .tx
            .send(Kind::Response, self.id, payload, None, &self.conn.live)
    }
    /// Answers with an error.
    ///
    /// # Errors
    /// [`Error::Closed`] when the client is gone.
    pub fn respond_error(mut self, code: ErrorCode, message: &str) -> Result<(), Error> {
        self.done = true;
        send_error(&self.conn, Kind::ErrorResponse, self.id, code, message)
    }
}

pub(crate) fn send_error(
    conn: &ConnState,
    kind: Kind,
    id: u64,
    code: ErrorCode,
    message: &str,
) -> Result<(), Error> {
    let mut buf = [0u8; 1024];
    let payload = error_payload(&mut buf, code, message);
    conn.tx.send(kind, id, payload, None, &conn.live)
}

impl Drop for Responder {
    fn drop(&mut self) {
        if !self.done {
            let (code, msg) = if self.is_cancelled() {
                (ErrorCode::CANCELLED, "cancelled")
            } else {
                self.conn.server_metrics.request_dropped();
                (
                    ErrorCode::HANDLER_FAILED,
                    "the handler dropped the request without answering",
                )
            };
            let _ = send_error(&self.conn, Kind::ErrorResponse, self.id, code, msg);
        }
        if let Some(i) = self.slot {
            let d = &self.conn.deferred[i];
            if let Ok(mut w) = d.waker.try_lock() {
                *w = None;
            }
            d.in_use.store(false, Ordering::Release);
        }
    }
}

/// Sends the items of a streamed answer, then its end. Items wait for ring space
/// (backpressure: a client that reads slowly slows the sender down; nothing is buffered).
#[derive(Debug)]
pub struct StreamSender {
    pub(crate) inner: Responder,
}

impl StreamSender {
    /// Whether the client cancelled the stream.
    pub fn is_cancelled(&self) -> bool {
        self.inner.is_cancelled()
    }
    /// Sends one item.
    ///
    /// # Errors
    /// [`Error::Cancelled`] once the client cancelled; [`Error::Closed`] when it is gone.
    pub fn send(&self, item: &[u8]) -> Result<(), Error> {
        if self.is_cancelled() {
            return Err(Error::Cancelled);
        }
        self.inner.conn.tx.send(
            Kind::StreamItem,
            self.inner.id,
            item,
            None,
            &self.inner.conn.live,
        )
    }
    /// Ends the stream.
    ///
    /// # Errors
    /// [`Error::Closed`] when the client is gone.
    pub fn finish(mut self) -> Result<(), Error> {
        self.inner.done = true;
        self.inner.conn.tx.send(
            Kind::StreamEnd,
            self.inner.id,
            &[],
            None,
            &self.inner.conn.live,
        )
    }
    /// Ends the stream with an error.
    ///
    /// # Errors
    /// [`Error::Closed`] when the client is gone.
    pub fn fail(mut self, code: ErrorCode, message: &str) -> Result<(), Error> {
        self.inner.done = true;
        send_error(
            &self.inner.conn,
            Kind::ErrorResponse,
            self.inner.id,
            code,
            message,
        )
    }
}
