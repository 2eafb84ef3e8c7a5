//! The blocking server: bind a service name, accept connections, run a handler per request.
//!
//! Threads: one acceptor (accepts on the control socket and runs each handshake with a
//! timeout) and `workers` event-loop threads (default 1). Each connection belongs to one worker,
//! which reads its ring, runs the handler inline for each message, and writes answers back.
//! While any of its connections is busy the worker spins on their rings (bounded by the wait
//! policy and the process-wide spin governor); when all are idle it arms every ring's sleep word
//! with its doorbell token and sleeps in `epoll_wait` (macOS: `kevent`; Windows: an I/O
//! completion port fed by thread-pool waits) on the doorbells and control channels, so an idle
//! server costs no CPU, and a client's death (its control channel hangs up) is seen at once.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ferry_frame::{ErrorCode, ErrorPayload, Hello, Kind, Limits, ServerPolicy};
use ferry_notify::policy::PROBE_EVERY;
use ferry_notify::{Doorbell, WaitPolicy};
use ferry_ring::{Consumer, Producer};

use crate::error::Error;
use crate::link::{Layout, Liveness, Polled, Rx, TOKEN_DOORBELL, Tx};
use crate::metrics::{CloseReason, LinkCounters, RefuseReason, ServerMetrics};
use crate::sys::{self, Control, Events, Interest, Listener, Poller, SharedMemory, UserId};

/// How a server serves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The most the server grants for each limit (ring sizes, message size). Clients may ask
    /// for less.
    pub limits: Limits,
    /// How workers wait when their connections are idle.
    pub policy: WaitPolicy,
    /// Event-loop threads.
    pub workers: usize,
    /// Users allowed to connect (default: only the server's own effective uid).
    #[cfg(unix)]
    pub allowed_uids: Vec<u32>,
    /// Users allowed to connect (default: only the user the server runs as).
    #[cfg(windows)]
    pub allowed_sids: Vec<crate::windows::identity::Sid>,
    /// Most connections served at once; more are refused with a clear error.
    pub max_connections: usize,
    /// How long a client may take to send its `Hello`.
    pub handshake_timeout: Duration,
    /// Unix: the directory holding the service's socket (default: `$XDG_RUNTIME_DIR/ferry`,
    /// see `unix::service_dir::runtime_dir`).
    /// Windows: a scope for the service's pipe name (see [`ClientConfig::runtime_dir`](crate::ClientConfig::runtime_dir)).
    pub runtime_dir: Option<PathBuf>,
}

impl ServerConfig {
    /// Checks what no client could be served with: a limit of 0, ring sizes the layout cannot
    /// have, no connection allowed at all. (Without this every client would be refused, each
    /// told that *its* limits are wrong.)
    fn validate(&self) -> Result<(), Error> {
        let invalid = |field: &'static str, why: String| Error::InvalidConfig { field, why };
        let l = &self.limits;
        for (field, v) in [
            ("limits.max_message_size", l.max_message_size),
            ("limits.max_partial_messages", l.max_partial_messages),
            ("limits.max_buffered_bytes", l.max_buffered_bytes),
        ] {
            if v == 0 {
                return Err(invalid(field, "0 would refuse every client".to_owned()));
            }
        }
        Layout::new(l).map_err(|why| invalid("limits", why))?;
        if self.max_connections == 0 {
            return Err(invalid(
                "max_connections",
                "0 would refuse every client".to_owned(),
            ));
        }
        Ok(())
    }

    /// The users allowed to connect.
    fn allowed_users(&self) -> &[UserId] {
        #[cfg(unix)]
        return &self.allowed_uids;
        #[cfg(windows)]
        return &self.allowed_sids;
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            limits: Limits {
                client_to_server_ring_bytes: 1 << 20,
                server_to_client_ring_bytes: 1 << 20,
                ..Limits::default()
            },
            policy: WaitPolicy::default(),
            workers: 1,
            #[cfg(unix)]
            allowed_uids: sys::default_allowed_users(),
            #[cfg(windows)]
            allowed_sids: sys::default_allowed_users(),
            max_connections: 4096,
            handshake_timeout: Duration::from_secs(1),
            runtime_dir: None,
        }
    }
}

/// What the server does with what clients send.
pub trait Handler: Send + Sync + 'static {
    /// A request arrived. Answer it through `request` (now, or later from any thread via
    /// [`Request::into_responder`] / [`Request::into_stream`]). A request dropped without an
    /// answer is answered with an error, so the caller never waits forever.
    fn on_request(&self, request: Request<'_>);
    /// A notification arrived.
    fn on_notification(&self, _connection: &Connection, _payload: &[u8]) {}
    /// A client connected.
    fn on_connect(&self, _connection: &Connection) {}
    /// A client's connection ended.
    fn on_disconnect(&self, _connection: &Connection) {}
}

impl<F: Fn(Request<'_>) + Send + Sync + 'static> Handler for F {
    fn on_request(&self, request: Request<'_>) {
        self(request)
    }
}

/// Counters of one server.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Connections accepted (handshake completed).
    pub connections_accepted: AtomicU64,
    /// Connection attempts refused (wrong user, version, limits, capacity), and metrics
    /// queries turned away. The metrics text has them by reason.
    pub connections_refused: AtomicU64,
    /// Connections that ended. The metrics text has them by reason.
    pub connections_closed: AtomicU64,
    /// Connections open now.
    pub connections_open: AtomicUsize,
    /// Requests received.
    pub requests: AtomicU64,
    /// Notifications received.
    pub notifications: AtomicU64,
    /// Protocol violations: bad frames, broken limits, corrupted rings (each closed its
    /// connection). A client's `Goodbye` or hang-up is not one.
    pub protocol_errors: AtomicU64,
}

/// A running server. Dropping it shuts it down.
#[derive(Debug)]
pub struct Server {
    shared: Arc<ServerShared>,
    threads: Vec<JoinHandle<()>>,
}

pub(crate) struct ServerShared {
    config: ServerConfig,
    listener: Listener,
    handler: Box<dyn Handler>,
    stop: AtomicBool,
    pub(crate) stats: ServerStats,
    pub(crate) metrics: Arc<ServerMetrics>,
    /// The service name, for the lifecycle events.
    service: Box<str>,
    workers: Vec<WorkerInbox>,
    next_worker: AtomicUsize,
    next_conn_id: AtomicU64,
}

impl std::fmt::Debug for ServerShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerShared")
            .field("endpoint", self.listener.endpoint())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

struct WorkerInbox {
    new: Mutex<Vec<Arc<ConnState>>>,
    bell: Doorbell,
}

/// One client connection, as the server sees it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Connection {
    state: Arc<ConnState>,
}

/// Deferred requests (answered later, from any thread) tracked per connection for cancellation.
const MAX_DEFERRED: usize = 256;

#[derive(Debug)]
struct Deferred {
    id: AtomicU64,
    in_use: AtomicBool,
    cancelled: AtomicBool,
    /// The task waiting for cancellation (the tokio API's `cancelled()`), woken by a `Cancel`
    /// or the connection's end.
    waker: Mutex<Option<std::task::Waker>>,
}

impl Deferred {
    fn wake(&self) {
        let waker = self.waker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

#[derive(Debug)]
struct ConnState {
    id: u64,
    tx: Tx,
    rx: Mutex<Rx>,
    live: Liveness,
    control: Control,
    bell: Doorbell,
    peer_pid: i32,
    peer_user: UserId,
    /// This connection's counters (also held by `tx` and `rx`, which write them).
    metrics: Arc<LinkCounters>,
    /// The server's metrics, for what a connection's requests count there.
    server_metrics: Arc<ServerMetrics>,
    opened: Instant,
    /// An inline answer that did not fit in the ring: (kind, id, payload, bytes sent so far).
    /// While it is set the worker reads no more requests from this connection.
    pending: Mutex<Option<Pending>>,
    deferred: Box<[Deferred]>,
}

#[derive(Debug)]
struct Pending {
    kind: Kind,
    id: u64,
    payload: Vec<u8>,
    /// Progress of a fragmented answer: bytes sent, and whether it holds fragment budget.
    progress: crate::link::Progress,
}

impl ConnState {
    fn lock_rx(&self) -> MutexGuard<'_, Rx> {
        self.rx.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn lock_pending(&self) -> MutexGuard<'_, Option<Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Like [`send_inline`](Self::send_inline) for a payload that `fill` writes in place: into
    /// the ring record itself when it fits now, else into the pending answer's buffer.
    fn send_inline_with(&self, kind: Kind, id: u64, len: usize, fill: impl FnOnce(&mut [u8])) {
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
        *pending = Some(Pending {
            kind,
            id,
            payload,
            progress: crate::link::Progress::default(),
        });
    }

    /// Answers from the worker thread without ever blocking it: straight into the ring when it
    /// fits, else kept as this connection's one pending answer.
    fn send_inline(&self, kind: Kind, id: u64, payload: &[u8]) {
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
        *pending = Some(Pending {
            kind,
            id,
            payload: payload.to_vec(),
            progress: crate::link::Progress::default(),
        });
    }

    /// Tries to send the pending answer; true when nothing is pending any more.
    fn flush_pending(&self) -> bool {
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
                *pending = None;
                true
            }
            Ok(false) => false,
        }
    }

    fn defer(&self, id: u64) -> Option<usize> {
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

    fn cancel(&self, id: u64) {
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
    /// The client's user id.
    #[cfg(unix)]
    pub fn peer_uid(&self) -> u32 {
        self.state.peer_user
    }
    /// The client's user (the user SID of its process's token).
    #[cfg(windows)]
    pub fn peer_sid(&self) -> &crate::windows::identity::Sid {
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

/// A request being handled. Answer it with one of the consuming methods.
#[derive(Debug)]
pub struct Request<'a> {
    conn: &'a Arc<ConnState>,
    id: u64,
    payload: &'a [u8],
    /// Set once an answer went out or was handed on (a `Responder`, a stream). It lives in the
    /// worker, not in the request, so that after a handler panics the worker still knows
    /// whether the request was answered before the panic (then it must not answer again).
    answered: &'a AtomicBool,
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
    /// Answers with `payload`.
    pub fn respond(self, payload: &[u8]) {
        self.answered.store(true, Ordering::Relaxed);
        self.conn.send_inline(Kind::Response, self.id, payload);
    }
    /// Answers with `len` bytes that `fill` writes in place, straight into the ring record (no
    /// copy of the payload on this side). When the answer does not fit now (the ring is full,
    /// or it is larger than one record and goes in fragments) `fill` writes into a buffer that
    /// is sent as the connection's pending answer, as [`respond`](Self::respond) would.
    /// `fill` gets exactly `len` bytes and should write them all.
    pub fn respond_with(self, len: usize, fill: impl FnOnce(&mut [u8])) {
        self.answered.store(true, Ordering::Relaxed);
        self.conn
            .send_inline_with(Kind::Response, self.id, len, fill);
    }
    /// Answers with an error `code` (see `ferry_frame::ErrorCode`; application codes from
    /// `0x8000_0000`) and a message for the caller.
    pub fn respond_error(self, code: u32, message: &str) {
        self.answered.store(true, Ordering::Relaxed);
        send_error_inline(self.conn, self.id, code, message);
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
                ErrorCode::HANDLER_FAILED.0,
                "the handler returned without answering",
            );
        }
    }
}

/// Encodes an error payload into `buf`, cutting the message (at a character boundary) to fit.
fn error_payload<'b>(buf: &'b mut [u8], code: ErrorCode, message: &str) -> &'b [u8] {
    let message = truncate_utf8(message, buf.len() - ErrorPayload::CODE_LEN);
    let n = ErrorPayload::new(code, message).encode(buf).unwrap_or(0);
    &buf[..n]
}

fn send_error_inline(conn: &ConnState, id: u64, code: u32, message: &str) {
    let mut buf = [0u8; 1024];
    conn.send_inline(
        Kind::ErrorResponse,
        id,
        error_payload(&mut buf, ErrorCode(code), message),
    );
}

fn truncate_utf8(s: &str, max: usize) -> &str {
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
    conn: Arc<ConnState>,
    id: u64,
    slot: Option<usize>,
    done: bool,
}

/// What the tokio API needs of a [`Responder`]: its connection and id, to send from any task.
#[cfg(feature = "tokio")]
#[derive(Clone, Debug)]
pub(crate) struct AnswerLink {
    conn: Arc<ConnState>,
    id: u64,
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
    pub(crate) fn error_payload(code: u32, message: &str) -> Vec<u8> {
        let mut buf = [0u8; 1024];
        error_payload(&mut buf, ErrorCode(code), message).to_vec()
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
    pub fn respond_error(mut self, code: u32, message: &str) -> Result<(), Error> {
        self.done = true;
        send_error(&self.conn, Kind::ErrorResponse, self.id, code, message)
    }
}

fn send_error(
    conn: &ConnState,
    kind: Kind,
    id: u64,
    code: u32,
    message: &str,
) -> Result<(), Error> {
    let mut buf = [0u8; 1024];
    let payload = error_payload(&mut buf, ErrorCode(code), message);
    conn.tx.send(kind, id, payload, None, &conn.live)
}

impl Drop for Responder {
    fn drop(&mut self) {
        if !self.done {
            let (code, msg) = if self.is_cancelled() {
                (ErrorCode::CANCELLED.0, "cancelled")
            } else {
                self.conn.server_metrics.request_dropped();
                (
                    ErrorCode::HANDLER_FAILED.0,
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
    inner: Responder,
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
    pub fn fail(mut self, code: u32, message: &str) -> Result<(), Error> {
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

impl Server {
    /// Binds service `name` and starts serving with `handler`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for limits no client could be served with (a limit of 0, ring
    /// sizes that are not powers of two between [`MIN_RING`](crate::MIN_RING) and
    /// [`MAX_RING`](crate::MAX_RING)) or `max_connections` 0; [`Error::AlreadyRunning`] when a
    /// live server holds the name; [`Error::UnsafeDirectory`] when the runtime directory is not
    /// private; OS errors.
    pub fn bind(name: &str, config: ServerConfig, handler: impl Handler) -> Result<Server, Error> {
        config.validate()?;
        let endpoint = sys::resolve(name, config.runtime_dir.as_deref())?;
        sys::raise_fd_limit();
        let listener = Listener::bind(endpoint)?;
        let workers = (0..config.workers.max(1))
            .map(|_| {
                Ok(WorkerInbox {
                    new: Mutex::new(Vec::new()),
                    bell: Doorbell::new()?,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let shared = Arc::new(ServerShared {
            config,
            listener,
            handler: Box::new(handler),
            stop: AtomicBool::new(false),
            stats: ServerStats::default(),
            metrics: Arc::default(),
            service: name.into(),
            workers,
            next_worker: AtomicUsize::new(0),
            next_conn_id: AtomicU64::new(1),
        });
        tracing::info!(
            service = name,
            endpoint = sys::endpoint_text(shared.listener.endpoint()),
            workers = shared.workers.len(),
            max_connections = shared.config.max_connections,
            allowed_users = ?shared.config.allowed_users(),
            "ferry server bound"
        );
        let mut threads = Vec::new();
        for i in 0..shared.workers.len() {
            let s = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("ferry-worker-{i}"))
                    .spawn(move || worker(s, i))
                    .map_err(|e| Error::io("spawning a worker thread", e))?,
            );
        }
        let s = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("ferry-acceptor".into())
                .spawn(move || acceptor(s))
                .map_err(|e| Error::io("spawning the acceptor thread", e))?,
        );
        Ok(Server { shared, threads })
    }

    /// The service's paths (socket, lock, directory).
    #[cfg(unix)]
    pub fn paths(&self) -> &crate::unix::service_dir::ServicePaths {
        self.shared.listener.endpoint()
    }

    /// The service's control pipe (`\\.\pipe\ferry-<user SID>-...`).
    #[cfg(windows)]
    pub fn pipe_name(&self) -> &str {
        &self.shared.listener.endpoint().pipe
    }

    /// The server's counters.
    pub fn stats(&self) -> &ServerStats {
        &self.shared.stats
    }

    /// The server's metrics as OpenMetrics text (the Prometheus text exposition, ending with
    /// `# EOF`): the totals of [`ServerStats`] and more (see the crate docs for the list), and
    /// the series of every open connection (label `connection`, its [`Connection::id`]).
    /// Another process reads the same text through the control socket with
    /// [`read_server_metrics`](crate::read_server_metrics).
    pub fn metrics_text(&self) -> String {
        crate::metrics::render(Box::new(self.metrics_collector()))
    }

    /// Adds this server's metrics to `registry`, to be exported with the application's own.
    /// The registry holds only a weak reference: once the server is dropped, its metrics
    /// disappear from it.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register_collector(Box::new(self.metrics_collector()));
    }

    fn metrics_collector(&self) -> ServerCollector {
        ServerCollector(Arc::downgrade(&self.shared))
    }

    /// Stops accepting, says goodbye to every client, and waits for the threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.shared.stop.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::info!(
            service = &*self.shared.service,
            connections_open = self.shared.stats.connections_open.load(Ordering::Relaxed),
            "ferry server shutting down"
        );
        self.shared.listener.stop();
        for w in &self.shared.workers {
            let _ = w.bell.ring();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Renders a server's metrics at each scrape, while the server lives.
#[derive(Debug)]
struct ServerCollector(std::sync::Weak<ServerShared>);

impl prometheus_client::collector::Collector for ServerCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        match self.0.upgrade() {
            Some(shared) => shared.metrics.encode(&shared.stats, &mut encoder),
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn acceptor(shared: Arc<ServerShared>) {
    loop {
        let accepted = shared.listener.accept();
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        let Some(control) = accepted else {
            continue;
        };
        let _span = tracing::debug_span!(
            "ferry_handshake",
            service = &*shared.service,
            peer_pid = control.peer_pid(),
        )
        .entered();
        match accept_one(&shared, control) {
            Ok(Accepted::Connection(conn, limits)) => {
                shared
                    .stats
                    .connections_accepted
                    .fetch_add(1, Ordering::Relaxed);
                shared
                    .stats
                    .connections_open
                    .fetch_add(1, Ordering::Relaxed);
                shared.metrics.opened(conn.id, &conn.metrics);
                tracing::info!(
                    service = &*shared.service,
                    connection = conn.id,
                    peer_pid = conn.peer_pid,
                    peer_user = %conn.peer_user,
                    max_message_size = limits.max_message_size,
                    max_partial_messages = limits.max_partial_messages,
                    max_buffered_bytes = limits.max_buffered_bytes,
                    client_to_server_ring_bytes = limits.client_to_server_ring_bytes,
                    server_to_client_ring_bytes = limits.server_to_client_ring_bytes,
                    "ferry connection accepted"
                );
                let w = shared.next_worker.fetch_add(1, Ordering::Relaxed) % shared.workers.len();
                let inbox = &shared.workers[w];
                inbox
                    .new
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(conn);
                let _ = inbox.bell.ring();
            }
            Ok(Accepted::MetricsQuery(bytes)) => {
                shared.metrics.metrics_query();
                tracing::debug!(
                    service = &*shared.service,
                    bytes,
                    "ferry metrics query answered"
                );
            }
            Err(Refusal { reason, error }) => {
                shared
                    .stats
                    .connections_refused
                    .fetch_add(1, Ordering::Relaxed);
                shared.metrics.refused(reason);
                if reason == RefuseReason::HandshakeFailed {
                    tracing::warn!(
                        service = &*shared.service,
                        error = %error,
                        "ferry handshake failed"
                    );
                } else {
                    tracing::warn!(
                        service = &*shared.service,
                        reason = reason.label(),
                        error = %error,
                        "ferry connection refused"
                    );
                }
            }
        }
    }
}

/// What a control-socket conversation ended in, when it was not turned away.
enum Accepted {
    /// A connection, with the limits agreed.
    Connection(Arc<ConnState>, Limits),
    /// A metrics query, answered with this many bytes of text.
    MetricsQuery(usize),
}

/// A connection attempt (or metrics query) turned away: why, and what the peer was told.
struct Refusal {
    reason: RefuseReason,
    error: Error,
}

/// Tells the peer why it is turned away (a `Refuse` frame, best effort).
fn refuse(control: &Control, reason: RefuseReason, code: ErrorCode, message: &str) -> Refusal {
    let mut buf = [0u8; 512];
    let payload = error_payload(&mut buf, code, message);
    let _ = control.send(Kind::Refuse, 0, payload);
    Refusal {
        reason,
        error: Error::Refused {
            code: code.0,
            message: message.to_owned(),
        },
    }
}

/// A handshake that ended without a `Refuse`: the peer hung up, timed out, or sent garbage.
fn failed(error: Error) -> Refusal {
    Refusal {
        reason: RefuseReason::HandshakeFailed,
        error,
    }
}

/// Answers a `MetricsQuery` (the peer's uid is already checked) with the metrics text.
fn answer_metrics_query(
    shared: &Arc<ServerShared>,
    control: &Control,
    payload: &[u8],
) -> Result<Accepted, Refusal> {
    if let Err(e) = ferry_frame::check_metrics_query(payload) {
        return Err(refuse(
            control,
            RefuseReason::BadQuery,
            ErrorCode::PROTOCOL_VIOLATION,
            &format!("bad MetricsQuery: {e}"),
        ));
    }
    let text = crate::metrics::render(Box::new(ServerCollector(Arc::downgrade(shared))));
    if text.len() > ferry_frame::MAX_METRICS_REPLY {
        return Err(refuse(
            control,
            RefuseReason::TooLarge,
            ErrorCode::TOO_LARGE,
            &format!(
                "the metrics text is {} bytes, more than a MetricsReply may carry ({}); \
                 read it in the server process with Server::metrics_text",
                text.len(),
                ferry_frame::MAX_METRICS_REPLY
            ),
        ));
    }
    // A querier that does not read must not hold the acceptor up for long (the handshake
    // timeout is still set).
    control
        .send(Kind::MetricsReply, 0, text.as_bytes())
        .map_err(failed)?;
    Ok(Accepted::MetricsQuery(text.len()))
}

/// Runs one control-channel conversation: a handshake (a new connection), or a metrics query.
fn accept_one(shared: &Arc<ServerShared>, mut control: Control) -> Result<Accepted, Refusal> {
    let cfg = &shared.config;
    control
        .set_timeout(Some(cfg.handshake_timeout))
        .map_err(failed)?;
    let peer = control.identify().map_err(failed)?;
    if !cfg.allowed_users().contains(&peer.user) {
        // Read the Hello (or MetricsQuery) first (bounded by the handshake timeout): a channel
        // closed before the client has written it makes the client's write fail (EPIPE), and
        // the client never reads the Refuse that says why.
        let _ = control.recv();
        return Err(refuse(
            &control,
            RefuseReason::UidNotAllowed,
            ErrorCode::REFUSED,
            &format!(
                "{} is not allowed to use this service",
                sys::user_text(&peer.user)
            ),
        ));
    }
    let Some(frame) = control.recv().map_err(failed)? else {
        return Err(failed(Error::Closed(
            "the client hung up during the handshake",
        )));
    };
    if frame.header.kind() == Kind::MetricsQuery {
        return answer_metrics_query(shared, &control, &frame.payload);
    }
    if frame.header.kind() != Kind::Hello {
        return Err(refuse(
            &control,
            RefuseReason::NotHello,
            ErrorCode::PROTOCOL_VIOLATION,
            &format!("expected Hello, got {}", frame.header.kind()),
        ));
    }
    let hello = match Hello::decode(&frame.payload) {
        Ok(h) => h,
        Err(e) => {
            return Err(refuse(
                &control,
                RefuseReason::BadHello,
                ErrorCode::PROTOCOL_VIOLATION,
                &format!("bad Hello: {e}"),
            ));
        }
    };
    let welcome = match ferry_frame::negotiate(&hello, &ServerPolicy::new(cfg.limits)) {
        Ok(w) => w,
        Err(code) => {
            let why = if code == ErrorCode::VERSION_UNSUPPORTED {
                format!(
                    "protocol versions {}..={} are not supported (this server speaks {}..={}): upgrade the older side",
                    hello.min_version,
                    hello.max_version,
                    ferry_frame::MIN_SUPPORTED_VERSION,
                    ferry_frame::MAX_SUPPORTED_VERSION
                )
            } else {
                "the requested limits are below what this server accepts".to_owned()
            };
            let reason = if code == ErrorCode::VERSION_UNSUPPORTED {
                RefuseReason::VersionUnsupported
            } else {
                RefuseReason::LimitsUnacceptable
            };
            return Err(refuse(&control, reason, code, &why));
        }
    };
    let layout = match Layout::new(&welcome.limits) {
        Ok(l) => l,
        Err(why) => {
            return Err(refuse(
                &control,
                RefuseReason::LimitsUnacceptable,
                ErrorCode::LIMITS_UNACCEPTABLE,
                &why,
            ));
        }
    };
    if shared.stats.connections_open.load(Ordering::Relaxed) >= cfg.max_connections {
        return Err(refuse(
            &control,
            RefuseReason::Capacity,
            ErrorCode::BUSY,
            &format!(
                "the server is serving its maximum of {} connections",
                cfg.max_connections
            ),
        ));
    }
    let built = (|| -> Result<_, Error> {
        let mem = Arc::new(SharedMemory::create(layout.total)?);
        let (c2s, s2c) = layout.slices(&mem);
        ferry_ring::init(&c2s, layout.c2s_capacity)
            .map_err(|e| Error::BadSharedMemory(e.to_string()))?;
        ferry_ring::init(&s2c, layout.s2c_capacity)
            .map_err(|e| Error::BadSharedMemory(e.to_string()))?;
        let consumer = Consumer::attach(c2s).map_err(|e| Error::BadSharedMemory(e.to_string()))?;
        let producer = Producer::attach(s2c).map_err(|e| Error::BadSharedMemory(e.to_string()))?;
        let server_bell = Doorbell::new()?;
        let client_bell = Doorbell::new()?;
        // Everything that can fail (here: for lack of descriptors) happens before the Welcome:
        // once it is sent, the client believes it is connected, so a failure after it would
        // look like a server that hung up at once instead of a refusal that says why.
        let client_bell_tx = client_bell.try_clone()?;
        Ok((
            mem,
            consumer,
            producer,
            server_bell,
            client_bell,
            client_bell_tx,
        ))
    })();
    let (mem, consumer, producer, server_bell, client_bell, client_bell_tx) = match built {
        Ok(b) => b,
        Err(e) => {
            return Err(refuse(
                &control,
                RefuseReason::Resources,
                ErrorCode::BUSY,
                &format!("the server could not set up the connection: {e}"),
            ));
        }
    };
    control
        .send_welcome(&welcome.to_bytes(), &mem, &server_bell, &client_bell)
        .map_err(failed)?;
    drop(mem); // the rings keep the mapping
    control.established(true).map_err(failed)?;
    let deferred = (0..MAX_DEFERRED)
        .map(|_| Deferred {
            id: AtomicU64::new(0),
            in_use: AtomicBool::new(false),
            cancelled: AtomicBool::new(false),
            waker: Mutex::new(None),
        })
        .collect();
    let metrics = Arc::new(LinkCounters::default());
    let conn = Arc::new(ConnState {
        id: shared.next_conn_id.fetch_add(1, Ordering::Relaxed),
        tx: Tx::new(
            producer,
            client_bell_tx,
            &welcome.limits,
            shared.config.policy,
            metrics.clone(),
        ),
        rx: Mutex::new(Rx::new(
            consumer,
            client_bell,
            &welcome.limits,
            metrics.clone(),
        )),
        live: Liveness::default(),
        control,
        bell: server_bell,
        peer_pid: peer.pid,
        peer_user: peer.user,
        metrics,
        server_metrics: shared.metrics.clone(),
        opened: Instant::now(),
        pending: Mutex::new(None),
        deferred,
    });
    Ok(Accepted::Connection(conn, welcome.limits))
}

const WAKE_KEY: u64 = u64::MAX;

/// Why a connection whose client said `Goodbye` is closed.
const GOODBYE: &str = "the client said goodbye";

/// One worker's event loop.
fn worker(shared: Arc<ServerShared>, index: usize) {
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

fn drop_conn(
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
fn serve_remaining(shared: &ServerShared, conn: &Arc<ConnState>) -> CloseReason {
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
fn close_reason(e: &Error, otherwise: CloseReason) -> CloseReason {
    match e {
        Error::Closed(GOODBYE) => CloseReason::Goodbye,
        // Closed by another thread: a responder found the outgoing ring corrupted.
        Error::Protocol(_) | Error::Closed(_) => CloseReason::Protocol,
        _ => otherwise,
    }
}

/// Serves one connection: flushes its pending answer, then handles what it sent.
/// Returns whether anything happened; an error means "close it".
fn serve_conn(shared: &ServerShared, conn: &Arc<ConnState>) -> Result<bool, Error> {
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
                            ErrorCode::HANDLER_FAILED.0,
                            "the handler panicked",
                        );
                    }
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
