//! The blocking server: bind a service name, accept connections, run a handler per request.
//!
//! Threads: one acceptor (accepts on the control socket; on Unix it serves every pending
//! handshake at once from a poller, each with a deadline, see `acceptor/concurrent.rs`; on
//! Windows one at a time, each with a timeout) and `workers` event-loop threads (default 1). Each connection belongs to one worker,
//! which reads its ring, runs the handler inline for each message, and writes answers back.
//! While any of its connections is busy the worker spins on their rings (bounded by the wait
//! policy's budget, learned as `ferry_notify::policy::SpinLearner` says; the process-wide spin
//! governor of blocking waiters does not apply to workers); when all are idle it arms every
//! ring's sleep word with its doorbell token and sleeps in `epoll_wait` (macOS: `kevent`;
//! Windows: an I/O completion port fed by thread-pool waits) on the doorbells and control
//! channels, so an idle server costs no CPU, and a client's death (its control channel hangs
//! up) is seen at once.
//!
//! Where things are: [`config`] (how a server serves), [`conn`] (one connection as the server
//! sees it, and its inline answers), [`request`] (the request API handlers answer through),
//! [`acceptor`] (the thread that accepts and runs each handshake, see
//! `crate::handshake::server`), [`worker`] (the event loop).

mod acceptor;
mod config;
pub(crate) mod conn;
pub(crate) mod request;
mod worker;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use ferry_notify::Doorbell;

use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::metrics::ServerMetrics;
use crate::sys::{self, Listener};

use acceptor::acceptor;
use conn::ConnState;
use worker::worker;

pub use config::{ServerConfig, default_workers};
pub use conn::Connection;
#[cfg(feature = "tokio")]
pub(crate) use request::AnswerLink;
pub use request::{Request, Responder, StreamSender};

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

/// What a closure handler may return: `()`, or the `Result` of answering
/// ([`Request::respond`] and its siblings), so that `|req| req.respond(b"ok")` is a handler.
/// An `Err` there only says the client is gone, which the server sees and handles anyway.
pub trait HandlerOutput {}

impl HandlerOutput for () {}

impl HandlerOutput for Result<(), Error> {}

impl<F, R> Handler for F
where
    F: Fn(Request<'_>) -> R + Send + Sync + 'static,
    R: HandlerOutput,
{
    fn on_request(&self, request: Request<'_>) {
        let _ = self(request);
    }
}

/// The live counters behind [`ServerStats`] (what [`Server::stats`] reads).
#[derive(Debug, Default)]
pub(crate) struct ServerCounters {
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) connections_refused: AtomicU64,
    pub(crate) connections_closed: AtomicU64,
    pub(crate) connections_open: AtomicUsize,
    pub(crate) requests: AtomicU64,
    pub(crate) notifications: AtomicU64,
    pub(crate) protocol_errors: AtomicU64,
}

impl ServerCounters {
    /// Their values now.
    pub(crate) fn snapshot(&self) -> ServerStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ServerStats {
            connections_accepted: load(&self.connections_accepted),
            connections_refused: load(&self.connections_refused),
            connections_closed: load(&self.connections_closed),
            connections_open: self.connections_open.load(Ordering::Relaxed),
            requests: load(&self.requests),
            notifications: load(&self.notifications),
            protocol_errors: load(&self.protocol_errors),
        }
    }
}

/// Counters of one server, read at one moment by [`Server::stats`]. Each counter is read on
/// its own (relaxed): the set is not one atomic snapshot.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Connections accepted (handshake completed).
    pub connections_accepted: u64,
    /// Connection attempts refused (wrong user, version, limits, capacity), and metrics
    /// queries turned away. The metrics text has them by reason.
    pub connections_refused: u64,
    /// Connections that ended. The metrics text has them by reason.
    pub connections_closed: u64,
    /// Connections open now.
    pub connections_open: usize,
    /// Requests received.
    pub requests: u64,
    /// Notifications received.
    pub notifications: u64,
    /// Protocol violations: bad frames, broken limits, corrupted rings (each closed its
    /// connection). A client's `Goodbye` or hang-up is not one.
    pub protocol_errors: u64,
}

/// A running server. Dropping it shuts it down.
#[derive(Debug)]
pub struct Server {
    pub(crate) shared: Arc<ServerShared>,
    pub(crate) threads: Vec<JoinHandle<()>>,
}

pub(crate) struct ServerShared {
    pub(crate) config: ServerConfig,
    pub(crate) listener: Listener,
    pub(crate) handler: Box<dyn Handler>,
    pub(crate) stop: AtomicBool,
    /// Unix: wakes the acceptor's poller when the server stops.
    #[cfg(unix)]
    pub(crate) acceptor_bell: Doorbell,
    pub(crate) stats: ServerCounters,
    pub(crate) metrics: Arc<ServerMetrics>,
    /// The service name, for the lifecycle events.
    pub(crate) service: Box<str>,
    pub(crate) workers: Vec<WorkerInbox>,
    pub(crate) next_worker: AtomicUsize,
    pub(crate) next_conn_id: AtomicU64,
}

impl std::fmt::Debug for ServerShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerShared")
            .field("endpoint", &Endpoint(self.listener.endpoint()))
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

pub(crate) struct WorkerInbox {
    pub(crate) new: Mutex<Vec<Arc<ConnState>>>,
    pub(crate) bell: Doorbell,
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
        let partial_budget = config.max_partial_bytes;
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
            #[cfg(unix)]
            acceptor_bell: Doorbell::new()?,
            stats: ServerCounters::default(),
            metrics: Arc::new(ServerMetrics::with_partial_budget(partial_budget)),
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
            allowed_users = ?shared.config.allowed_users,
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

    /// Where the service's control channel lives: its socket (Unix) or named pipe (Windows).
    pub fn endpoint(&self) -> Endpoint<'_> {
        Endpoint(self.shared.listener.endpoint())
    }

    /// The server's counters, now.
    pub fn stats(&self) -> ServerStats {
        self.shared.stats.snapshot()
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

    pub(crate) fn metrics_collector(&self) -> ServerCollector {
        ServerCollector(Arc::downgrade(&self.shared))
    }

    /// Stops accepting, says goodbye to every client, and waits for the threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    pub(crate) fn stop(&mut self) {
        if self.shared.stop.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::info!(
            service = &*self.shared.service,
            connections_open = self.shared.stats.connections_open.load(Ordering::Relaxed),
            "ferry server shutting down"
        );
        self.shared.listener.stop();
        #[cfg(unix)]
        let _ = self.shared.acceptor_bell.ring();
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
pub(crate) struct ServerCollector(pub(crate) std::sync::Weak<ServerShared>);

impl prometheus_client::collector::Collector for ServerCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        match self.0.upgrade() {
            Some(shared) => shared
                .metrics
                .encode(&shared.stats.snapshot(), &mut encoder),
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
