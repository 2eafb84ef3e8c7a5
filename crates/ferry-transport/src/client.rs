//! The blocking client: connect, call, notify, stream.
//!
//! One [`Client`] is shared by every thread of the editor (`Clone` is an `Arc` bump). Calls from
//! many threads are pipelined over one connection: each call takes a slot (a preallocated entry
//! of the in-flight table), writes its request into the ring under a short lock, and waits for
//! its answer. Whoever waits first reads the incoming ring for everybody (the *leader*), hands
//! each answer to its slot and wakes its thread; when the leader's own answer arrives it hands
//! the reading over to another waiter. With one caller this means the caller itself spins on
//! the ring: a round trip costs two cache-line transfers and no system call while both sides
//! are busy.
//!
//! A monitor thread per connection sleeps on the control socket and the client's doorbell: it
//! reads the ring when no call is waiting (server notifications), and notices the server's
//! death (the socket hangs up) at once, failing every call in flight with [`Error::Closed`].
//! The next call then reconnects, with backoff, until its deadline.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ferry_frame::{ErrorCode, ErrorPayload, Hello, Kind, Limits, Welcome};
use ferry_notify::{Doorbell, WaitOutcome, WaitPolicy};
use ferry_ring::{Consumer, Producer};

use crate::error::Error;
use crate::link::{Layout, Liveness, Polled, Rx, TOKEN_DOORBELL, TOKEN_FUTEX, Tx, WAIT_SLICE};
use crate::metrics::{CallError, ClientMetrics, LinkCounters};
use crate::slots::{STREAM_QUEUE_BYTES, Slots, State, wait_slot};
use crate::sys::{self, Control, Endpoint};

/// A callback for notifications the server pushes.
pub type NotificationHandler = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// How a client connects and waits.
#[derive(Clone)]
pub struct ClientConfig {
    /// Limits to ask the server for (it may lower them). Ring sizes must be powers of two.
    pub limits: Limits,
    /// How a waiting call waits: spin, then yield, then park (default), or one of the extremes.
    pub policy: WaitPolicy,
    /// Most calls in flight at once on this client (the size of the preallocated call table).
    pub max_in_flight: usize,
    /// How long `connect` (and each reconnection attempt inside a call) may take.
    pub connect_timeout: Duration,
    /// Whether a call made after the server went away reconnects (with backoff) before failing.
    pub reconnect: bool,
    /// Unix: the directory holding the service's socket (default: `$XDG_RUNTIME_DIR/ferry`,
    /// see `unix::service_dir::runtime_dir`).
    /// Windows: a scope for the service's pipe name (a hash of the path joins the name), so
    /// that servers and clients given the same directory find each other and others do not.
    /// Client and server must agree on it.
    pub runtime_dir: Option<PathBuf>,
    /// One call in this many (per calling thread) is timed for the round-trip histogram
    /// (`ferry_client_round_trip_seconds`); 1 times every call, 0 none. Timing a call reads the
    /// clock twice, which costs about 60 ns on a 0.85 µs round trip on the development machine,
    /// so the default, 8, samples.
    pub round_trip_sample_every: u32,
    /// Called for each notification the server pushes, on whichever thread reads the ring: the
    /// connection's monitor thread, a blocking caller, or (with the tokio API) an async call's
    /// poll on a runtime thread; keep it short and never block in it. Without one,
    /// notifications are counted in [`ClientStats::notifications_dropped`] and dropped.
    pub on_notification: Option<NotificationHandler>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("limits", &self.limits)
            .field("policy", &self.policy)
            .field("max_in_flight", &self.max_in_flight)
            .field("connect_timeout", &self.connect_timeout)
            .field("reconnect", &self.reconnect)
            .field("runtime_dir", &self.runtime_dir)
            .field("round_trip_sample_every", &self.round_trip_sample_every)
            .field("on_notification", &self.on_notification.is_some())
            .finish()
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            limits: Limits {
                client_to_server_ring_bytes: 1 << 18,
                server_to_client_ring_bytes: 1 << 18,
                ..Limits::default()
            },
            policy: WaitPolicy::default(),
            max_in_flight: 256,
            connect_timeout: Duration::from_secs(2),
            reconnect: true,
            runtime_dir: None,
            round_trip_sample_every: 8,
            on_notification: None,
        }
    }
}

/// Counters of one client (all connections it made).
#[derive(Debug, Default)]
pub struct ClientStats {
    /// Calls answered with a response.
    pub calls_ok: AtomicU64,
    /// Calls that ended in an error of any kind (the metrics text has them by kind of error).
    pub calls_failed: AtomicU64,
    /// Connections established (the first one included).
    pub connects: AtomicU64,
    /// Notifications received and handed to the handler.
    pub notifications: AtomicU64,
    /// Notifications dropped because no handler was configured.
    pub notifications_dropped: AtomicU64,
    /// Notifications whose handler panicked (the panic is caught; reading goes on).
    pub notification_panics: AtomicU64,
}

/// A connection to a Ferry server. Cheap to clone; `Send + Sync`.
#[derive(Clone, Debug)]
pub struct Client {
    pub(crate) shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    endpoint: Endpoint,
    pub(crate) config: ClientConfig,
    pub(crate) slots: Slots,
    conn: Mutex<Option<Arc<Conn>>>,
    connecting: Mutex<()>,
    pub(crate) stats: ClientStats,
    pub(crate) metrics: ClientMetrics,
    /// The service name, for the lifecycle events.
    service: Box<str>,
    closing: AtomicBool,
}

impl Shared {
    /// Counts a failed call.
    pub(crate) fn call_failed(&self, e: CallError) {
        self.stats.calls_failed.fetch_add(1, Ordering::Relaxed);
        self.metrics.call_failed(e);
    }
}

#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) tx: Tx,
    rx: Mutex<Rx>,
    pub(crate) live: Liveness,
    control: Control,
    pub(crate) bell: Doorbell,
    /// Windows: the incoming ring's sleep word, which the monitor wakes when the doorbell
    /// rings (see `link`'s module docs).
    #[cfg(windows)]
    rx_word: crate::link::RxWord,
    limits: Limits,
    monitor: Mutex<Option<JoinHandle<()>>>,
    /// This connection's counters (written by `tx` and `rx`).
    metrics: Arc<LinkCounters>,
    /// The server's process id.
    server_pid: i32,
}

impl Conn {
    pub(crate) fn try_lock_rx(&self) -> Option<MutexGuard<'_, Rx>> {
        match self.rx.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }
}

/// The answer to a call. Derefs to the payload bytes. The buffer belongs to the call's slot
/// and goes back to it on drop, so a call allocates nothing in steady state.
#[derive(Debug)]
pub struct Response {
    shared: Arc<Shared>,
    index: u32,
    data: Vec<u8>,
}

impl std::ops::Deref for Response {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Response {
    fn drop(&mut self) {
        let slot = self.shared.slots.get(self.index);
        let mut inner = slot.lock();
        std::mem::swap(&mut inner.buf, &mut self.data);
        drop(inner);
        self.shared.slots.release(self.index);
    }
}

/// A streamed answer: items arrive in order, then the stream ends.
#[derive(Debug)]
pub struct Stream {
    client: Client,
    index: u32,
    id: u64,
    conn: Arc<Conn>,
    finished: bool,
}

impl Client {
    /// Connects to the server of service `name` with the default configuration.
    ///
    /// # Errors
    /// [`Error::NotRunning`] when no server listens; [`Error::Refused`] when it refuses us;
    /// [`Error::PeerNotAllowed`] when the socket belongs to a process of another user; setup
    /// errors otherwise.
    pub fn connect(name: &str) -> Result<Client, Error> {
        Self::connect_with(name, ClientConfig::default())
    }

    /// Connects with `config`.
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub fn connect_with(name: &str, config: ClientConfig) -> Result<Client, Error> {
        let endpoint = sys::resolve(name, config.runtime_dir.as_deref())?;
        let shared = Arc::new(Shared {
            slots: Slots::new(config.max_in_flight.max(1)),
            endpoint,
            config,
            conn: Mutex::new(None),
            connecting: Mutex::new(()),
            stats: ClientStats::default(),
            metrics: ClientMetrics::default(),
            service: name.into(),
            closing: AtomicBool::new(false),
        });
        let client = Client { shared };
        client.connection(
            Some(Instant::now() + client.shared.config.connect_timeout),
            false,
        )?;
        Ok(client)
    }

    /// The client's counters.
    pub fn stats(&self) -> &ClientStats {
        &self.shared.stats
    }

    /// The client's metrics as OpenMetrics text (the Prometheus text exposition, ending with
    /// `# EOF`): calls by outcome and error kind, (re)connections, messages and bytes by kind,
    /// ring-full waits, wake-ups, and the round-trip latency histogram, summed over every
    /// connection this client made.
    pub fn metrics_text(&self) -> String {
        crate::metrics::render(Box::new(ClientCollector(Arc::downgrade(&self.shared))))
    }

    /// Adds this client's metrics to `registry`. The registry holds only a weak reference:
    /// once every clone of the client is dropped, its metrics disappear from it.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register_collector(Box::new(ClientCollector(Arc::downgrade(&self.shared))));
    }

    /// The limits agreed with the server on the current connection, if connected.
    pub fn limits(&self) -> Option<Limits> {
        self.current().map(|c| c.limits)
    }

    /// Whether a live connection exists now.
    pub fn is_connected(&self) -> bool {
        self.current().is_some_and(|c| !c.live.is_closed())
    }

    pub(crate) fn current(&self) -> Option<Arc<Conn>> {
        self.shared
            .conn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The live connection, reconnecting (with backoff, until `deadline`) when it is gone.
    pub(crate) fn connection(
        &self,
        deadline: Option<Instant>,
        reconnecting: bool,
    ) -> Result<Arc<Conn>, Error> {
        if let Some(c) = self.current()
            && !c.live.is_closed()
        {
            return Ok(c);
        }
        if reconnecting && !self.shared.config.reconnect {
            return Err(self
                .current()
                .map_or(Error::Closed("not connected"), |c| c.live.error()));
        }
        let _one_at_a_time = self
            .shared
            .connecting
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(c) = self.current()
            && !c.live.is_closed()
        {
            return Ok(c);
        }
        let deadline =
            deadline.unwrap_or_else(|| Instant::now() + self.shared.config.connect_timeout);
        let mut backoff = Duration::from_millis(1);
        let started = Instant::now();
        let mut attempts: u32 = 0;
        loop {
            attempts += 1;
            match handshake(&self.shared.endpoint, &self.shared.config) {
                Ok(conn) => {
                    let conn = Arc::new(conn);
                    self.start_monitor(&conn)?;
                    {
                        // The old connection's counts join the totals as it is replaced, under
                        // the lock a rendering takes, so each count is seen once.
                        let mut earlier = self.shared.metrics.earlier();
                        let mut current =
                            self.shared.conn.lock().unwrap_or_else(|e| e.into_inner());
                        if let Some(old) = current.replace(conn.clone()) {
                            ClientMetrics::fold(&mut earlier, &old.metrics);
                        }
                    }
                    let n = self.shared.stats.connects.fetch_add(1, Ordering::Relaxed);
                    let l = conn.limits;
                    tracing::info!(
                        service = &*self.shared.service,
                        server_pid = conn.server_pid,
                        reconnection = n > 0,
                        attempts,
                        elapsed_us = started.elapsed().as_micros() as u64,
                        max_message_size = l.max_message_size,
                        client_to_server_ring_bytes = l.client_to_server_ring_bytes,
                        server_to_client_ring_bytes = l.server_to_client_ring_bytes,
                        "{}",
                        if n > 0 {
                            "ferry client reconnected"
                        } else {
                            "ferry client connected"
                        }
                    );
                    return Ok(conn);
                }
                Err(
                    e @ (Error::NotRunning { .. } | Error::PipeNotFound { .. } | Error::Closed(_)),
                ) => {
                    let now = Instant::now();
                    if now >= deadline {
                        tracing::warn!(
                            service = &*self.shared.service,
                            attempts,
                            error = %e,
                            "ferry client gave up connecting"
                        );
                        return Err(e);
                    }
                    self.shared.metrics.connect_retry();
                    tracing::debug!(
                        service = &*self.shared.service,
                        attempt = attempts,
                        backoff_us = backoff.as_micros() as u64,
                        error = %e,
                        "ferry server not reachable, retrying after a backoff"
                    );
                    std::thread::sleep(backoff.min(deadline - now));
                    // Capped low so that a restarted server is found within a few ms.
                    backoff = (backoff * 2).min(Duration::from_millis(16));
                }
                Err(e) => {
                    tracing::warn!(
                        service = &*self.shared.service,
                        error = %e,
                        "ferry client could not connect"
                    );
                    return Err(e);
                }
            }
        }
    }

    fn start_monitor(&self, conn: &Arc<Conn>) -> Result<(), Error> {
        let weak = Arc::downgrade(&self.shared);
        let c = conn.clone();
        let handle = std::thread::Builder::new()
            .name("ferry-client-monitor".into())
            .spawn(move || monitor(weak, c))
            .map_err(|e| Error::io("spawning the client's monitor thread", e))?;
        *conn.monitor.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Ok(())
    }

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

    fn call_inner(&self, request: &[u8], deadline: Option<Instant>) -> Result<Response, Error> {
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

    fn call_once(
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
            arm_idle_reader(&self.shared, &conn);
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
    /// [`ClientConfig::max_in_flight`] per client; a further `start_call` waits for a free slot.
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

    /// Sends `request` and returns the stream of items the server answers with.
    ///
    /// # Errors
    /// As [`call`](Self::call) for sending the request.
    pub fn stream(&self, request: &[u8]) -> Result<Stream, Error> {
        let conn = self.connection(None, true)?;
        let (index, id) = self.shared.slots.acquire(true, None)?;
        if let Err(e) = conn.tx.send(Kind::Request, id, request, None, &conn.live) {
            self.shared.slots.release(index);
            return Err(e);
        }
        Ok(Stream {
            client: self.clone(),
            index,
            id,
            conn,
            finished: false,
        })
    }

    /// Waits until slot `index` has its answer (or the stream has data), reading the ring for
    /// everybody while no one else does.
    fn wait_answer(
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
    fn lead(
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
    fn after_leading(&self, conn: &Conn, index: u32) {
        if self.shared.slots.hand_off(Some(index)) {
            return;
        }
        arm_idle_reader(&self.shared, conn);
    }

    /// Reads everything available and dispatches it.
    fn pump(&self, conn: &Conn, rx: &mut Rx) -> Result<Polled, Error> {
        pump(&self.shared, conn, rx)
    }

    /// Closes the connection (sends `Goodbye`), failing calls in flight. Other clones of this
    /// client see it closed too.
    pub fn close(&self) {
        self.shared.closing.store(true, Ordering::Release);
        if let Some(conn) = self
            .shared
            .conn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let mut buf = [0u8; 64];
            let n = ErrorPayload::new(ErrorCode::NORMAL, "client closed")
                .encode(&mut buf)
                .unwrap_or(0);
            let _ = conn.tx.send(
                Kind::Goodbye,
                0,
                &buf[..n],
                Some(Instant::now() + WAIT_SLICE),
                &conn.live,
            );
            close(&self.shared, &conn, "the client closed the connection");
            ClientMetrics::fold(&mut self.shared.metrics.earlier(), &conn.metrics);
            tracing::info!(
                service = &*self.shared.service,
                server_pid = conn.server_pid,
                "ferry client closed its connection"
            );
            conn.control.shutdown();
            let _ = conn.bell.ring();
            if let Some(h) = conn
                .monitor
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                && h.thread().id() != std::thread::current().id()
            {
                let _ = h.join();
            }
        }
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
        if code == ErrorCode::CANCELLED.0 {
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

/// Releases a slot if the call fails before handing it to a [`Response`].
/// A call sent with [`Client::start_call`] whose answer has not been collected yet.
#[derive(Debug)]
#[must_use = "dropping a PendingCall cancels the call"]
pub struct PendingCall {
    client: Client,
    conn: Arc<Conn>,
    index: u32,
    id: u64,
    waited: bool,
    /// When the call started, if it is timed.
    started: Option<Instant>,
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

    fn wait_until(mut self, deadline: Option<Instant>) -> Result<Response, Error> {
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

struct SlotGuard<'a> {
    shared: &'a Shared,
    index: u32,
    armed: bool,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.slots.release(self.index);
        }
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

/// Reads everything available on `rx`, handing each message to its slot. May block while a
/// stream's reader lags (backpressure): only for threads that may block.
fn pump(shared: &Shared, conn: &Conn, rx: &mut Rx) -> Result<Polled, Error> {
    rx.poll(64, |kind, id, payload| {
        dispatch(shared, conn, kind, id, payload, true)
    })
}

/// Like [`pump`], but never blocks: for async callers reading the ring inside a `poll`. A
/// stream item for a full queue is queued anyway (the queue overshoots by that one message)
/// and reading stops there; while [`Slots::backlogged`] says so, the ring is left to readers
/// that may block (the monitor thread, blocking callers).
#[cfg(feature = "tokio")]
pub(crate) fn pump_nonblocking(shared: &Shared, conn: &Conn, rx: &mut Rx) -> Result<Polled, Error> {
    rx.poll(64, |kind, id, payload| {
        dispatch(shared, conn, kind, id, payload, false)
    })
}

/// Hands one message to its slot (or handler). Returns whether to go on reading: `false` only
/// when `can_block` is false and a stream queue just went over its limit.
fn dispatch(
    shared: &Shared,
    conn: &Conn,
    kind: Kind,
    id: u64,
    payload: &[u8],
    can_block: bool,
) -> bool {
    match kind {
        Kind::Response | Kind::ErrorResponse | Kind::StreamEnd | Kind::StreamItem => {
            let Some((_, slot)) = shared.slots.lookup(id) else {
                return true; // an answer to an abandoned call: dropped by design
            };
            let mut inner = slot.lock();
            if inner.state != State::Waiting {
                return true;
            }
            let mut go_on = true;
            if kind == Kind::StreamItem {
                if !inner.streaming {
                    return true;
                }
                // Backpressure: wait (bounded by liveness) while the stream's reader lags.
                let mut counted = false;
                while can_block
                    && inner.items.len() + payload.len() > STREAM_QUEUE_BYTES
                    && !inner.items.is_empty()
                {
                    if !counted {
                        shared.metrics.stream_backpressure_wait();
                        counted = true;
                    }
                    if conn.live.is_closed() || shared.slots.lookup(id).is_none() {
                        return true;
                    }
                    // This thread may be the monitor, which then is not watching the control
                    // socket: look at it here, or the server's death would go unseen (and every
                    // other call hang) for as long as the stream's reader lags.
                    if conn.control.hung_up() {
                        drop(inner);
                        server_went_away(shared, conn);
                        return true;
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
                    go_on = can_block;
                }
            } else {
                inner.kind = kind;
                inner.buf.clear();
                inner.buf.extend_from_slice(payload);
                inner.state = State::Done;
            }
            // Waking costs a system call: only when a thread sleeps on this slot, or a task
            // waits for it.
            let wake = inner.waiter;
            let waker = inner.waker.take();
            drop(inner);
            if wake {
                slot.cv.notify_all();
            }
            if let Some(w) = waker {
                w.wake();
            }
            go_on
        }
        Kind::Notification => {
            match &shared.config.on_notification {
                Some(handler) => {
                    shared.stats.notifications.fetch_add(1, Ordering::Relaxed);
                    // The handler runs on whichever thread reads the ring (a caller leading for
                    // the others, or the monitor): a panic must not unwind through the reader,
                    // which would leave the other callers waiting for a leader that is gone.
                    let r =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(payload)));
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
                None => {
                    shared
                        .stats
                        .notifications_dropped
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            true
        }
        Kind::Ping => {
            if can_block {
                let _ = conn.tx.send(
                    Kind::Pong,
                    id,
                    payload,
                    Some(Instant::now() + WAIT_SLICE),
                    &conn.live,
                );
            } else {
                // Best effort without waiting: a full ring means the server is not reading.
                let _ = conn.tx.try_send(Kind::Pong, id, payload, &conn.live);
            }
            true
        }
        Kind::Goodbye => {
            conn.live.close("the server said goodbye");
            shared.slots.fail_all("the server closed the connection");
            true
        }
        // Pong, Cancel, Request from the server: nothing the client serves today.
        _ => true,
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

/// Leaves the incoming ring armed so that the server rings our doorbell for whatever it sends
/// next while no call waits; reads what is already there first.
fn arm_idle_reader(shared: &Shared, conn: &Conn) {
    let Some(mut rx) = conn.try_lock_rx() else {
        return;
    };
    loop {
        match pump(shared, conn, &mut rx) {
            Ok(Polled::Messages(_)) => continue,
            Ok(Polled::Empty) => {}
            Err(e) => {
                protocol_error(shared, conn, &e, "the server sent something invalid");
                return;
            }
        }
        match rx.prepare_sleep(TOKEN_DOORBELL) {
            Ok(true) => return,
            Ok(false) => continue,
            Err(e) => {
                protocol_error(shared, conn, &e, "the server corrupted the incoming ring");
                return;
            }
        }
    }
}

/// Fails every call in flight: the server's control socket hung up.
fn server_went_away(shared: &Shared, conn: &Conn) {
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

/// The connection's monitor: sleeps on the control channel and the doorbell.
fn monitor(shared: std::sync::Weak<Shared>, conn: Arc<Conn>) {
    if let Some(s) = shared.upgrade() {
        arm_idle_reader(&s, &conn);
    }
    while let Ok(woke) = sys::wait_hangup_or_bell(&conn.control, &conn.bell) {
        let Some(s) = shared.upgrade() else { break };
        if conn.live.is_closed() {
            break;
        }
        if woke.control && conn.control.hung_up() {
            server_went_away(&s, &conn);
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
            arm_idle_reader(&s, &conn);
        }
    }
}

impl Stream {
    /// The next item: `Ok(Some(bytes))`, `Ok(None)` at the end of the stream.
    ///
    /// # Errors
    /// [`Error::Remote`] if the server ended the stream with an error; [`Error::Closed`] if the
    /// connection was lost.
    pub fn next_item(&mut self) -> Result<Option<Vec<u8>>, Error> {
        let mut out = Vec::new();
        Ok(self.next_into(&mut out)?.then_some(out))
    }

    /// Like [`next_item`](Self::next_item) but fills `out` (cleared first) and returns whether
    /// an item was read: no allocation once `out` is large enough.
    ///
    /// # Errors
    /// As [`next_item`](Self::next_item).
    pub fn next_into(&mut self, out: &mut Vec<u8>) -> Result<bool, Error> {
        out.clear();
        if self.finished {
            return Ok(false);
        }
        let shared = &self.client.shared;
        let slot = shared.slots.get(self.index);
        loop {
            {
                let mut inner = slot.lock();
                if inner.items.len() >= 4 {
                    let mut len = [0u8; 4];
                    for (i, b) in inner.items.drain(..4).enumerate() {
                        len[i] = b;
                    }
                    let n = u32::from_le_bytes(len) as usize;
                    out.extend(inner.items.drain(..n));
                    crate::slots::trim_items(&mut inner);
                    if inner.over && inner.items.len() <= STREAM_QUEUE_BYTES {
                        shared.slots.set_over(&mut inner, false);
                    }
                    drop(inner);
                    slot.cv.notify_all(); // a reader blocked on our full queue may go on
                    return Ok(true);
                }
                match inner.state {
                    State::Done => {
                        self.finished = true;
                        if inner.kind == Kind::ErrorResponse {
                            let (code, message) = decode_error(&inner.buf);
                            return Err(Error::Remote { code, message });
                        }
                        return Ok(false);
                    }
                    State::Failed => {
                        self.finished = true;
                        return Err(Error::Closed(
                            inner.failure.unwrap_or("the connection was lost"),
                        ));
                    }
                    _ => {}
                }
            }
            self.client.wait_answer(&self.conn, self.index, None)?;
        }
    }

    /// Asks the server to stop the stream; items already sent are discarded.
    pub fn cancel(mut self) {
        self.cancel_inner();
    }

    fn cancel_inner(&mut self) {
        if !self.finished {
            self.finished = true;
            let _ = self.conn.tx.send(
                Kind::Cancel,
                self.id,
                &[],
                Some(Instant::now() + WAIT_SLICE),
                &self.conn.live,
            );
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.cancel_inner();
        self.client.shared.slots.release(self.index);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(conn) = self
            .conn
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            conn.live.close("the client was dropped");
            conn.control.shutdown();
        }
    }
}

/// Renders a client's metrics at each scrape, while the client lives.
#[derive(Debug)]
struct ClientCollector(std::sync::Weak<Shared>);

impl prometheus_client::collector::Collector for ClientCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        let Some(shared) = self.0.upgrade() else {
            return Ok(());
        };
        let current = || {
            shared
                .conn
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|c| c.metrics.snapshot())
        };
        shared.metrics.encode(&shared.stats, current, &mut encoder)
    }
}

/// The code and message of an error payload (`ErrorResponse`, `Refuse`); a payload that does
/// not decode becomes a protocol-violation error saying so.
pub(crate) fn decode_error(payload: &[u8]) -> (u32, String) {
    match ErrorPayload::decode(payload) {
        Ok(p) => (p.code.0, p.message.to_owned()),
        Err(e) => (
            ErrorCode::PROTOCOL_VIOLATION.0,
            format!("undecodable error payload: {e}"),
        ),
    }
}

/// Connects and performs the handshake.
fn handshake(endpoint: &Endpoint, config: &ClientConfig) -> Result<Conn, Error> {
    let (mut control, server) = Control::connect(endpoint, config.connect_timeout, "client")?;
    let hello = Hello::new(config.limits);
    control.send(Kind::Hello, 0, &hello.to_bytes())?;
    let Some(frame) = control.recv()? else {
        return Err(Error::Closed("the server hung up during the handshake"));
    };
    match frame.header.kind() {
        Kind::Welcome => {}
        Kind::Refuse => {
            let (code, message) = decode_error(&frame.payload);
            return Err(Error::Refused { code, message });
        }
        other => return Err(Error::Protocol(format!("expected Welcome, got {other}"))),
    }
    let welcome = Welcome::decode(&frame.payload)
        .map_err(|e| Error::Protocol(format!("bad Welcome: {e}")))?;
    hello
        .check_welcome(&welcome)
        .map_err(|e| Error::Protocol(format!("unacceptable Welcome: {e}")))?;
    let layout = Layout::new(&welcome.limits).map_err(Error::Protocol)?;
    let (mem, server_bell, bell) = control.receive_connection(frame, layout.total)?;
    let mem = Arc::new(mem);
    let (c2s, s2c) = layout.slices(&mem);
    #[cfg(windows)]
    let s2c_ring = s2c.clone();
    let producer = Producer::attach(c2s).map_err(|e| Error::BadSharedMemory(e.to_string()))?;
    let consumer = Consumer::attach(s2c).map_err(|e| Error::BadSharedMemory(e.to_string()))?;
    control.established(false)?;
    let metrics = Arc::new(LinkCounters::default());
    let rx = Rx::new(
        consumer,
        server_bell.try_clone()?,
        &welcome.limits,
        metrics.clone(),
    );
    Ok(Conn {
        tx: Tx::new(
            producer,
            server_bell,
            &welcome.limits,
            config.policy,
            metrics.clone(),
        )
        .with_own_bell(bell.try_clone()?),
        #[cfg(windows)]
        rx_word: crate::link::RxWord::new(s2c_ring, &rx),
        rx: Mutex::new(rx),
        live: Liveness::default(),
        control,
        bell,
        limits: welcome.limits,
        monitor: Mutex::new(None),
        metrics,
        server_pid: server.pid,
    })
}

/// Reading the ring for async callers, who must never block their thread.
///
/// An async call's first poll reads the ring itself for at most the policy's spin budget (the
/// answer usually arrives within it, and then the call completes in that one poll with no
/// system call and no wake-up at all); after that it registers its `Waker` in its slot and
/// leaves the ring to a reader that may block: a blocking caller leading, or the connection's
/// monitor thread, which the doorbell wakes for whatever arrives while nobody reads. Whoever
/// completes a slot takes its `Waker` and wakes it (see `dispatch`).
#[cfg(feature = "tokio")]
pub(crate) mod nonblocking {
    use std::task::{Context, Poll};

    use ferry_notify::WaitPolicy;

    use super::{Conn, Shared, protocol_error, pump_nonblocking, ready};
    use crate::error::Error;
    use crate::link::{Polled, Rx, TOKEN_DOORBELL};

    /// Rounds of reading one poll may do while arming the doorbell before it hands the ring to
    /// the monitor thread (a server flooding us must not keep a tokio worker in one poll).
    const ARM_ROUNDS: usize = 16;

    /// Iterations of spinning and of yielding an async caller's first poll may spend reading
    /// the ring, from the client's wait policy. `Spin` is bounded too: a poll must return.
    fn spin_plan(policy: WaitPolicy) -> (u32, u32) {
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
        arm(shared, conn);
        if let Some(r) = ready(&slot.lock()) {
            return Poll::Ready(r);
        }
        if conn.live.is_closed() {
            return Poll::Ready(Err(conn.live.error()));
        }
        Poll::Pending
    }

    /// Reads the ring until slot `index` is ready or the spin budget is spent (`None`).
    fn spin_read(
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
                if let Err(e) = pump_nonblocking(shared, conn, rx) {
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
        arm(shared, conn);
    }

    /// Leaves the incoming ring armed (the server rings the doorbell, the monitor thread
    /// reads), reading what is already there first — without ever blocking: when a stream is
    /// backed up, or the server keeps sending, the monitor thread is rung to take over.
    pub(crate) fn arm(shared: &Shared, conn: &Conn) {
        let Some(mut rx) = conn.try_lock_rx() else {
            return; // its holder arms or hands off when it leaves
        };
        for _ in 0..ARM_ROUNDS {
            if shared.slots.backlogged() {
                break;
            }
            match pump_nonblocking(shared, conn, &mut rx) {
                Ok(Polled::Messages(_)) => continue,
                Ok(Polled::Empty) => {}
                Err(e) => {
                    protocol_error(shared, conn, &e, "the server sent something invalid");
                    return;
                }
            }
            match rx.prepare_sleep(TOKEN_DOORBELL) {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => {
                    protocol_error(shared, conn, &e, "the server corrupted the incoming ring");
                    return;
                }
            }
        }
        drop(rx);
        // The monitor thread (which may block) reads from here on.
        let _ = conn.bell.ring();
    }
}
