//! The tokio API (feature `tokio`): an async client, async streams, and a server that runs an
//! async handler per request as a tokio task.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferry_transport::Error> {
//! use ferry_transport::ServerConfig;
//! use ferry_transport::tokio::{AsyncClient, AsyncRequest, serve};
//!
//! // The engine process: one tokio task per request.
//! let server = serve("engine", ServerConfig::default(), |req: AsyncRequest| async move {
//!     req.payload().to_ascii_uppercase() // the answer (or answer through `req` yourself)
//! })?;
//!
//! // The editor process.
//! let client = AsyncClient::connect("engine").await?;
//! let response = client.call(b"complete: fn ma").await?;
//! assert_eq!(&*response, b"COMPLETE: FN MA");
//! # drop(server);
//! # Ok(())
//! # }
//! ```
//!
//! # How an async call waits
//!
//! The blocking client's call slots hold either a blocked thread (a condvar) or, for async
//! callers, a [`Waker`](std::task::Waker): whoever reads an answer from the ring puts it in its
//! slot and wakes whichever of the two waits. Nothing here adds a lock, an atomic or an
//! allocation to the blocking call path: the waker lives in the slot's existing mutex, next to
//! the condvar flag that reader already checks.
//!
//! Who reads the ring for an async caller:
//!
//! 1. **The call itself, in its first poll.** It writes the request into the ring and then
//!    reads the incoming ring for at most the [`WaitPolicy`](crate::WaitPolicy)'s spin budget
//!    (about 10–25 µs by default; bounded even for `Spin`, none for `ParkOnly`), exactly like a
//!    blocking caller's spin phase. An answer within that window completes the call in the
//!    same poll: no system call, no thread wake-up, so the latency is the blocking one. This
//!    briefly occupies the tokio worker, like any short computation between two `.await`s;
//!    pick `ParkOnly` to never spin.
//! 2. **Afterwards, a reader that may block.** The call registers its waker and leaves the
//!    ring *armed*: the server rings the connection's doorbell when it next writes,
//!    and the connection's monitor thread (which already sleeps on that doorbell and on the
//!    control socket) reads the answer and wakes the task. If a blocking caller is leading
//!    (reading for everybody) it completes async slots on the way. No wake-up can be lost:
//!    the waker is registered under the slot's lock before the last check of the slot, and
//!    every reader that stops reading either hands the ring to a blocked caller or arms the
//!    doorbell first (the ring's sleep protocol then guarantees that the server sees the
//!    arming or the reader sees the data).
//!
//! Integrating the doorbell with tokio's reactor (`AsyncFd`) instead would save the monitor's
//! hop (one thread wake-up) on the slow path only, but would need the runtime's I/O driver, tie
//! a shared client to one runtime, and make the ring's reader a tokio worker that must never
//! block on a backed-up stream; the monitor thread may. The fast path above, which is what
//! latency-sensitive callers hit, is the same either way.
//!
//! Async callers never block their thread: a full ring, a request large enough to be
//! fragmented, and reconnecting go to tokio's blocking pool (`spawn_blocking`, with one owned
//! copy of the payload); a full stream queue makes the async reader stop and hand the ring to
//! the monitor thread.
//!
//! # Cancellation
//!
//! Dropping a [`call`](AsyncClient::call) future mid-flight frees its slot at once (its
//! generation changes, so the answer that arrives later is dropped) and tells the server
//! (`Cancel`, best effort: not when the ring is full). Dropping an [`AsyncStream`] before its
//! end cancels it on the server, like dropping a blocking [`Stream`](crate::Stream).
//!
//! # Runtime requirements
//!
//! Use inside a tokio runtime. [`AsyncClient::call_timeout`] needs the time driver
//! (`enable_time`, on in `#[tokio::main]`). [`serve`] spawns its tasks on the runtime it is
//! called from.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use ::tokio::runtime::Handle;
use ferry_frame::Kind;

use crate::client::{self, Client, ClientConfig, ClientStats, Conn, Response, Shared, nonblocking};
use crate::error::Error;
use crate::link::WAIT_SLICE;
use crate::metrics::CallError;
use crate::server::{AnswerLink, Handler, Request, Responder, Server, ServerConfig};
use crate::{Connection, Limits};

/// A [`Client`] for async code. Cheap to clone; `Send + Sync`; shares its connection (and call
/// slots) with the blocking [`Client`] it wraps, so blocking and async calls can be mixed.
#[derive(Clone, Debug)]
pub struct AsyncClient {
    client: Client,
}

impl From<Client> for AsyncClient {
    fn from(client: Client) -> Self {
        AsyncClient { client }
    }
}

fn join_error(what: &'static str) -> impl FnOnce(::tokio::task::JoinError) -> Error {
    move |e| Error::io(what, std::io::Error::other(e))
}

impl AsyncClient {
    /// Connects to the server of service `name` (the handshake runs on tokio's blocking pool).
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub async fn connect(name: &str) -> Result<AsyncClient, Error> {
        Self::connect_with(name, ClientConfig::default()).await
    }

    /// Connects with `config`.
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub async fn connect_with(name: &str, config: ClientConfig) -> Result<AsyncClient, Error> {
        let name = name.to_owned();
        ::tokio::task::spawn_blocking(move || Client::connect_with(&name, config))
            .await
            .map_err(join_error("connecting on tokio's blocking pool"))?
            .map(AsyncClient::from)
    }

    /// The blocking client this one wraps (same connection).
    pub fn blocking(&self) -> &Client {
        &self.client
    }

    /// The client's counters.
    pub fn stats(&self) -> &ClientStats {
        self.client.stats()
    }

    /// Whether a live connection exists now.
    pub fn is_connected(&self) -> bool {
        self.client.is_connected()
    }

    /// The limits agreed with the server on the current connection, if connected.
    pub fn limits(&self) -> Option<Limits> {
        self.client.limits()
    }

    /// Closes the connection (see [`Client::close`]); calls in flight fail.
    pub fn close(&self) {
        self.client.close();
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.client.shared
    }

    /// The live connection; reconnecting (which sleeps between attempts) runs on the blocking
    /// pool.
    async fn connection(&self, deadline: Option<Instant>) -> Result<Arc<Conn>, Error> {
        if let Some(c) = self.client.current()
            && !c.live.is_closed()
        {
            return Ok(c);
        }
        let client = self.client.clone();
        ::tokio::task::spawn_blocking(move || client.connection(deadline, true))
            .await
            .map_err(join_error("reconnecting on tokio's blocking pool"))?
    }

    /// Sends `request` and waits for the response (no deadline). Cancel-safe: dropping the
    /// future frees its slot and cancels the request on the server.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn call(&self, request: &[u8]) -> Result<Response, Error> {
        self.call_inner(Payload::<NoFill>::Bytes(request), None)
            .await
    }

    /// Like [`call`](Self::call) with the request written in place by `fill` (`len` bytes),
    /// straight into the ring record when the ring has room and the request fits in one
    /// record; otherwise into a buffer sent from tokio's blocking pool.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn call_with(
        &self,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<Response, Error> {
        self.call_inner(Payload::With(len, fill), None).await
    }

    /// Sends `request` and waits at most `timeout` for the response; on timeout the request is
    /// cancelled on the server and [`Error::Timeout`] returned. Needs tokio's time driver.
    ///
    /// # Errors
    /// As [`call`](Self::call), plus [`Error::Timeout`].
    pub async fn call_timeout(&self, request: &[u8], timeout: Duration) -> Result<Response, Error> {
        let deadline = Instant::now() + timeout;
        match ::tokio::time::timeout(
            timeout,
            self.call_inner(Payload::<NoFill>::Bytes(request), Some(deadline)),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout(timeout)),
        }
    }

    async fn call_inner<F: FnOnce(&mut [u8])>(
        &self,
        payload: Payload<'_, F>,
        deadline: Option<Instant>,
    ) -> Result<Response, Error> {
        // Failures (and a dropped future) are counted when `InFlight` drops unfinished.
        let mut call = self.start(false, payload, deadline).await?;
        poll_fn(|cx| call.poll_wait(cx)).await?;
        call.finish()
    }

    /// Takes a slot and sends the request. Between a send on the fast path (which disarms the
    /// doorbell) and the first read of the ring there is no suspension point.
    async fn start<F: FnOnce(&mut [u8])>(
        &self,
        streaming: bool,
        payload: Payload<'_, F>,
        deadline: Option<Instant>,
    ) -> Result<InFlight, Error> {
        let started = self.client.start_timer();
        let conn = match self.connection(deadline).await {
            Ok(c) => c,
            Err(e) => {
                if !streaming {
                    self.client.shared.call_failed(CallError::of(&e));
                }
                return Err(e);
            }
        };
        let (index, id) = poll_fn(|cx| self.shared().slots.poll_acquire(streaming, cx)).await;
        let mut call = InFlight {
            shared: self.shared().clone(),
            conn,
            index,
            id,
            sent: false,
            done: false,
            spun: false,
            stream: streaming,
            released: false,
            started,
            error: None,
        };
        let payload = match call.try_send_now(payload) {
            Ok(None) => return Ok(call),
            Ok(Some(rest)) => rest,
            Err(e) => {
                call.done = true;
                call.error = Some(CallError::of(&e));
                return Err(e);
            }
        };
        // Slow path: the ring is full, or the request goes in fragments.
        let conn = call.conn.clone();
        let bytes = payload.into_vec();
        let sent = ::tokio::task::spawn_blocking(move || {
            conn.tx
                .send(Kind::Request, id, &bytes, deadline, &conn.live)
        })
        .await
        .map_err(join_error("sending a request on tokio's blocking pool"))
        .and_then(|r| r);
        if let Err(e) = sent {
            call.done = true;
            call.error = Some(CallError::of(&e));
            return Err(e);
        }
        call.sent = true;
        Ok(call)
    }

    /// Sends a one-way notification.
    ///
    /// # Errors
    /// As [`Client::notify`].
    pub async fn notify(&self, payload: &[u8]) -> Result<(), Error> {
        let conn = self.connection(None).await?;
        if payload.len() <= conn.tx.max_single()
            && conn
                .tx
                .try_send(Kind::Notification, 0, payload, &conn.live)?
        {
            return Ok(());
        }
        let bytes = payload.to_vec();
        ::tokio::task::spawn_blocking(move || {
            conn.tx
                .send(Kind::Notification, 0, &bytes, None, &conn.live)
        })
        .await
        .map_err(join_error(
            "sending a notification on tokio's blocking pool",
        ))?
    }

    /// Sends `request` and returns the stream of items the server answers with. Dropping the
    /// stream before its end cancels it on the server.
    ///
    /// # Errors
    /// As [`Client::stream`].
    pub async fn stream(&self, request: &[u8]) -> Result<AsyncStream, Error> {
        let call = self
            .start(true, Payload::<NoFill>::Bytes(request), None)
            .await?;
        // Leave the ring armed: nobody reads for this stream until it is polled.
        nonblocking::leave(&call.shared, &call.conn);
        Ok(AsyncStream {
            call,
            finished: false,
        })
    }
}

/// A request payload: bytes, or a length and a closure that writes them in place.
enum Payload<'a, F> {
    Bytes(&'a [u8]),
    With(usize, F),
}

/// The closure type of a [`Payload::Bytes`] (never called).
type NoFill = fn(&mut [u8]);

impl<F: FnOnce(&mut [u8])> Payload<'_, F> {
    fn into_vec(self) -> Vec<u8> {
        match self {
            Payload::Bytes(b) => b.to_vec(),
            Payload::With(len, fill) => {
                let mut v = vec![0u8; len];
                fill(&mut v);
                v
            }
        }
    }
}

/// A call (or stream) that holds a slot. Dropping it before the end frees the slot and
/// cancels the request on the server.
#[derive(Debug)]
struct InFlight {
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    index: u32,
    id: u64,
    /// The request is in the ring.
    sent: bool,
    /// The slot went to a `Response`, or the call ended with an error: nothing to cancel.
    done: bool,
    /// The ring was read (spun on) during the current wait already.
    spun: bool,
    stream: bool,
    /// The slot went to a `Response` (which releases it) and the call was counted.
    released: bool,
    /// When the call began, if it is timed for the round-trip histogram.
    started: Option<Instant>,
    /// What the call failed with, when it did (counted on drop; `Dropped` when unknown).
    error: Option<CallError>,
}

impl InFlight {
    /// Sends the request now if it fits in one record and the ring has room; otherwise gives
    /// the payload back.
    fn try_send_now<'a, F: FnOnce(&mut [u8])>(
        &mut self,
        payload: Payload<'a, F>,
    ) -> Result<Option<Payload<'a, F>>, Error> {
        let tx = &self.conn.tx;
        let len = match &payload {
            Payload::Bytes(b) => b.len(),
            Payload::With(len, _) => *len,
        };
        if len > tx.max_single() {
            return Ok(Some(payload));
        }
        // We read the ring right after sending: a doorbell armed now would only make the
        // server pay a system call and wake the monitor thread for nothing.
        if !self.stream
            && let Some(rx) = self.conn.try_lock_rx()
        {
            rx.cancel_sleep();
        }
        let flags = ferry_frame::Flags::NONE;
        let r = match payload {
            Payload::Bytes(b) => tx
                .try_send_with(Kind::Request, flags, self.id, len, &self.conn.live, |buf| {
                    buf.copy_from_slice(b)
                })
                .map(|r| r.map_err(|_| Payload::Bytes(b))),
            Payload::With(len, fill) => tx
                .try_send_with(Kind::Request, flags, self.id, len, &self.conn.live, fill)
                .map(|r| r.map_err(|f| Payload::With(len, f))),
        };
        match r {
            Ok(Ok(())) => {
                self.sent = true;
                Ok(None)
            }
            Ok(Err(payload)) => {
                nonblocking::leave(&self.shared, &self.conn);
                Ok(Some(payload))
            }
            Err(e) => {
                nonblocking::leave(&self.shared, &self.conn);
                Err(e)
            }
        }
    }

    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let spin = !self.spun;
        self.spun = true;
        let r = nonblocking::poll_slot(&self.shared, &self.conn, self.index, spin, cx);
        if let Poll::Ready(Err(e)) = &r {
            self.done = true;
            self.error = Some(CallError::of(e));
        }
        r
    }

    /// The answer of a completed call.
    fn finish(mut self) -> Result<Response, Error> {
        self.done = true;
        // The slot now belongs to the `Response` (an error answer's `Response` is dropped
        // inside `take_response`, which releases the slot).
        self.released = true;
        let r = client::take_response(&self.shared, self.index);
        Client {
            shared: self.shared.clone(),
        }
        .count(r, self.started)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        if !self.done && self.sent {
            // Best effort, never waiting: the answer is dropped on arrival anyway.
            let _ = self
                .conn
                .tx
                .try_send(Kind::Cancel, self.id, &[], &self.conn.live);
        }
        if !self.stream {
            // A call that failed, or whose future was dropped, counts as failed.
            self.shared
                .call_failed(self.error.unwrap_or(CallError::Dropped));
        }
        self.shared.slots.release(self.index);
    }
}

/// A streamed answer for async code: a [`futures_core::Stream`] of items, `Ok(bytes)` each,
/// then the end (`None`); an error item ends it early. Dropping it before the end cancels the
/// stream on the server.
#[derive(Debug)]
pub struct AsyncStream {
    call: InFlight,
    finished: bool,
}

impl AsyncStream {
    /// The next item: `Some(Ok(bytes))`, `Some(Err(_))` (then the end), or `None` at the end.
    pub async fn next_item(&mut self) -> Option<Result<Vec<u8>, Error>> {
        poll_fn(|cx| self.poll_item(cx)).await
    }

    /// Asks the server to stop the stream; items already sent are discarded.
    pub fn cancel(self) {
        drop(self);
    }

    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Vec<u8>, Error>>> {
        loop {
            if self.finished {
                return Poll::Ready(None);
            }
            let shared = &self.call.shared;
            let slot = shared.slots.get(self.call.index);
            {
                let mut inner = slot.lock();
                if inner.items.len() >= 4 {
                    let mut len = [0u8; 4];
                    for (i, b) in inner.items.drain(..4).enumerate() {
                        len[i] = b;
                    }
                    let n = (u32::from_le_bytes(len) as usize).min(inner.items.len());
                    let item: Vec<u8> = inner.items.drain(..n).collect();
                    crate::slots::trim_items(&mut inner);
                    if inner.over && inner.items.len() <= crate::slots::STREAM_QUEUE_BYTES {
                        shared.slots.set_over(&mut inner, false);
                    }
                    drop(inner);
                    slot.cv.notify_all(); // a reader blocked on our full queue may go on
                    self.call.spun = false;
                    return Poll::Ready(Some(Ok(item)));
                }
                match inner.state {
                    crate::slots::State::Done => {
                        self.finished = true;
                        self.call.done = true;
                        if inner.kind == Kind::ErrorResponse {
                            let (code, message) = crate::error::decode_error(&inner.buf);
                            return Poll::Ready(Some(Err(Error::Remote { code, message })));
                        }
                        return Poll::Ready(None);
                    }
                    crate::slots::State::Failed => {
                        self.finished = true;
                        self.call.done = true;
                        return Poll::Ready(Some(Err(Error::Closed(
                            inner.failure.unwrap_or("the connection was lost"),
                        ))));
                    }
                    _ => {}
                }
            }
            match self.call.poll_wait(cx) {
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(e)) => {
                    self.finished = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl futures_core::Stream for AsyncStream {
    type Item = Result<Vec<u8>, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_item(cx)
    }
}

impl futures_core::FusedStream for AsyncStream {
    fn is_terminated(&self) -> bool {
        self.finished
    }
}

// ---------------------------------------------------------------------------------------------
// The server.

/// Serves service `name` with an async `handler`, run as a tokio task per request on the
/// runtime `serve` is called from.
///
/// The server's event loop is the blocking [`Server`]'s (its worker threads read the rings);
/// each request's payload is copied out of the ring into the [`AsyncRequest`] (one allocation
/// per request), and the answer goes back into the ring straight from the task when it fits,
/// or from tokio's blocking pool when the ring is full or the answer needs fragments.
///
/// The handler answers by returning a [`Reply`] (bytes, an error, or `()` when it answered
/// through the request itself, e.g. with [`AsyncRequest::into_stream`]). A request dropped
/// without an answer (the handler returned `()` without answering, or panicked) is answered
/// with an error, so the caller never waits forever.
///
/// # Errors
/// As [`Server::bind`]; an I/O error when called outside a tokio runtime.
pub fn serve<F, Fut>(name: &str, config: ServerConfig, handler: F) -> Result<Server, Error>
where
    F: Fn(AsyncRequest) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: Into<Reply>,
{
    let runtime = Handle::try_current().map_err(|e| {
        Error::io(
            "ferry_transport::tokio::serve must be called inside a tokio runtime",
            std::io::Error::other(e),
        )
    })?;
    Server::bind(
        name,
        config,
        TokioHandler {
            handler,
            runtime,
            on_notification: None,
        },
    )
}

/// Like [`serve`], and `on_notification` is called for each notification a client sends, on
/// the server's worker thread that read it (keep it short: spawn a task for long work; the
/// payload is borrowed from the ring and valid only during the call).
///
/// # Errors
/// As [`serve`].
pub fn serve_with_notifications<F, Fut, N>(
    name: &str,
    config: ServerConfig,
    handler: F,
    on_notification: N,
) -> Result<Server, Error>
where
    F: Fn(AsyncRequest) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: Into<Reply>,
    N: Fn(&Connection, &[u8]) + Send + Sync + 'static,
{
    let runtime = Handle::try_current().map_err(|e| {
        Error::io(
            "ferry_transport::tokio::serve_with_notifications must be called inside a tokio runtime",
            std::io::Error::other(e),
        )
    })?;
    Server::bind(
        name,
        config,
        TokioHandler {
            handler,
            runtime,
            on_notification: Some(Box::new(on_notification)),
        },
    )
}

/// A notification callback of [`serve_with_notifications`].
type OnNotification = Box<dyn Fn(&Connection, &[u8]) + Send + Sync>;

struct TokioHandler<F> {
    handler: F,
    runtime: Handle,
    on_notification: Option<OnNotification>,
}

impl<F, Fut> Handler for TokioHandler<F>
where
    F: Fn(AsyncRequest) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: Into<Reply>,
{
    fn on_notification(&self, connection: &Connection, payload: &[u8]) {
        if let Some(f) = &self.on_notification {
            f(connection, payload);
        }
    }

    fn on_request(&self, request: Request<'_>) {
        let payload = request.payload().to_vec();
        let connection = request.connection();
        let answer = Arc::new(Answer {
            responder: Mutex::new(Some(request.into_responder())),
        });
        let fut = (self.handler)(AsyncRequest {
            payload,
            connection,
            answer: answer.clone(),
        });
        self.runtime.spawn(async move {
            let reply: Reply = fut.await.into();
            let answered = answer.take();
            match (reply, answered) {
                (Reply::Answered, _) | (_, None) => {}
                (Reply::Bytes(bytes), Some(r)) => {
                    let _ = respond(r, Kind::Response, bytes).await;
                }
                (Reply::Error { code, message }, Some(r)) => {
                    let payload = AnswerLink::error_payload(code, &message);
                    let _ = respond(r, Kind::ErrorResponse, payload).await;
                }
            }
        });
    }
}

/// What an async handler answers: bytes, an error, or nothing more (`()`: it answered through
/// the [`AsyncRequest`], or dropping the request answers with an error).
#[derive(Debug)]
pub enum Reply {
    /// Answer with these bytes.
    Bytes(Vec<u8>),
    /// Answer with an error `code` (see `ferry_frame::ErrorCode`; application codes from
    /// `0x8000_0000`) and a message for the caller.
    Error {
        /// The code.
        code: u32,
        /// The message.
        message: String,
    },
    /// The handler answered (or deliberately dropped) the request itself.
    Answered,
}

impl From<Vec<u8>> for Reply {
    fn from(bytes: Vec<u8>) -> Self {
        Reply::Bytes(bytes)
    }
}

impl From<()> for Reply {
    fn from((): ()) -> Self {
        Reply::Answered
    }
}

/// `Ok(bytes)` answers with the bytes, `Err((code, message))` with an error.
impl From<Result<Vec<u8>, (u32, String)>> for Reply {
    fn from(r: Result<Vec<u8>, (u32, String)>) -> Self {
        match r {
            Ok(bytes) => Reply::Bytes(bytes),
            Err((code, message)) => Reply::Error { code, message },
        }
    }
}

/// The responder of one request, shared by the handler's [`AsyncRequest`] and the task that
/// sends the handler's [`Reply`]: whoever takes it answers.
#[derive(Debug)]
struct Answer {
    responder: Mutex<Option<Responder>>,
}

impl Answer {
    fn take(&self) -> Option<Responder> {
        self.responder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

/// Sends the final answer of `responder`: from this task when it fits now, else from the
/// blocking pool.
async fn respond(mut responder: Responder, kind: Kind, payload: Vec<u8>) -> Result<(), Error> {
    let link = responder.link();
    responder.mark_answered();
    drop(responder);
    if link.try_send(kind, &payload)? {
        return Ok(());
    }
    ::tokio::task::spawn_blocking(move || link.send(kind, &payload))
        .await
        .map_err(join_error("answering on tokio's blocking pool"))?
}

/// A request for an async handler: an owned copy of the payload, and the ways to answer.
#[derive(Debug)]
pub struct AsyncRequest {
    payload: Vec<u8>,
    connection: Connection,
    answer: Arc<Answer>,
}

impl AsyncRequest {
    /// The request's payload (copied out of the ring).
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Takes the payload out (leaves it empty).
    pub fn take_payload(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.payload)
    }

    /// The connection it came on.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Whether the client cancelled the request (or went away).
    pub fn is_cancelled(&self) -> bool {
        self.answer
            .responder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_none_or(Responder::is_cancelled)
    }

    /// Completes when the client cancels the request (a timed-out call, a dropped async call)
    /// or its connection ends; use it in `tokio::select!` to stop work early. Never completes
    /// for a request whose cancellation cannot be tracked (more than 256 requests answered
    /// later at once on one connection) while the connection stays up.
    pub async fn cancelled(&self) {
        poll_fn(|cx| {
            match &*self
                .answer
                .responder
                .lock()
                .unwrap_or_else(|e| e.into_inner())
            {
                Some(r) => r.poll_cancelled(cx),
                None => Poll::Ready(()),
            }
        })
        .await;
    }

    /// Answers with `payload`.
    ///
    /// # Errors
    /// [`Error::Closed`] when the client is gone.
    pub async fn respond(self, payload: &[u8]) -> Result<(), Error> {
        match self.answer.take() {
            Some(r) => respond(r, Kind::Response, payload.to_vec()).await,
            None => Ok(()),
        }
    }

    /// Answers with an error `code` and `message`.
    ///
    /// # Errors
    /// [`Error::Closed`] when the client is gone.
    pub async fn respond_error(self, code: u32, message: &str) -> Result<(), Error> {
        match self.answer.take() {
            Some(r) => {
                let payload = AnswerLink::error_payload(code, message);
                respond(r, Kind::ErrorResponse, payload).await
            }
            None => Ok(()),
        }
    }

    /// Answers with a stream of items (return `()` from the handler, or keep the sender in a
    /// task of its own).
    pub fn into_stream(self) -> AsyncStreamSender {
        AsyncStreamSender {
            responder: self.answer.take(),
        }
    }
}

/// Sends the items of a streamed answer, then its end. Items wait for ring space without
/// blocking the task's thread (backpressure: a client that reads slowly slows the sender).
/// Dropping it without [`finish`](Self::finish) ends the stream with an error (or, after a
/// cancellation, says so).
#[derive(Debug)]
pub struct AsyncStreamSender {
    responder: Option<Responder>,
}

impl AsyncStreamSender {
    /// Whether the client cancelled the stream (or went away).
    pub fn is_cancelled(&self) -> bool {
        self.responder.as_ref().is_none_or(Responder::is_cancelled)
    }

    /// Completes when the client cancels the stream (drops it) or its connection ends.
    pub async fn cancelled(&self) {
        poll_fn(|cx| match &self.responder {
            Some(r) => r.poll_cancelled(cx),
            None => Poll::Ready(()),
        })
        .await;
    }

    /// Sends one item.
    ///
    /// # Errors
    /// [`Error::Cancelled`] once the client cancelled; [`Error::Closed`] when it is gone.
    pub async fn send(&self, item: &[u8]) -> Result<(), Error> {
        let Some(r) = &self.responder else {
            return Err(Error::Cancelled);
        };
        if r.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let link = r.link();
        if link.try_send(Kind::StreamItem, item)? {
            return Ok(());
        }
        // Full ring or a large item: wait for space on the blocking pool.
        let item = item.to_vec();
        ::tokio::task::spawn_blocking(move || link.send(Kind::StreamItem, &item))
            .await
            .map_err(join_error("sending a stream item on tokio's blocking pool"))?
    }

    /// Ends the stream.
    ///
    /// # Errors
    /// [`Error::Closed`] when the client is gone.
    pub async fn finish(mut self) -> Result<(), Error> {
        match self.responder.take() {
            Some(r) => respond(r, Kind::StreamEnd, Vec::new()).await,
            None => Ok(()),
        }
    }

    /// Ends the stream with an error.
    ///
    /// # Errors
    /// [`Error::Closed`] when the client is gone.
    pub async fn fail(mut self, code: u32, message: &str) -> Result<(), Error> {
        match self.responder.take() {
            Some(r) => {
                let payload = AnswerLink::error_payload(code, message);
                respond(r, Kind::ErrorResponse, payload).await
            }
            None => Ok(()),
        }
    }
}

/// Sends a `Cancel` for a dropped stream: now if the ring has room, else from the blocking
/// pool (or, outside a runtime, waiting briefly as the blocking stream does).
fn cancel_stream(conn: &Arc<Conn>, id: u64) {
    if matches!(
        conn.tx.try_send(Kind::Cancel, id, &[], &conn.live),
        Ok(true)
    ) {
        return;
    }
    let send = {
        let conn = conn.clone();
        move || {
            let _ = conn.tx.send(
                Kind::Cancel,
                id,
                &[],
                Some(Instant::now() + WAIT_SLICE),
                &conn.live,
            );
        }
    };
    match Handle::try_current() {
        Ok(h) => drop(h.spawn_blocking(send)),
        Err(_) => send(),
    }
}

impl Drop for AsyncStream {
    fn drop(&mut self) {
        if !self.finished && !self.call.done {
            cancel_stream(&self.call.conn, self.call.id);
            // Already cancelled: `InFlight::drop` only releases the slot.
            self.call.sent = false;
        }
        self.call.done = true;
    }
}
