//! Connecting, reconnecting (with backoff), and closing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_frame::{ErrorCode, ErrorPayload, Kind, Limits};

use crate::error::Error;
use crate::link::WAIT_SLICE;
use crate::metrics::ClientMetrics;
use crate::slots::Slots;
use crate::sys::{self};

use super::reader::{close, monitor};
use super::{Client, ClientCollector, ClientConfig, ClientCounters, ClientStats, Conn, Shared};
use crate::handshake::client::handshake;

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
            stats: ClientCounters::default(),
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

    /// The client's counters, now.
    pub fn stats(&self) -> ClientStats {
        self.shared.stats.snapshot()
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
                Ok(conn) => return self.install(conn, attempts, started),
                Err(e @ (Error::NotRunning { .. } | Error::Closed(_))) => {
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

    /// Makes a newly connected `conn` the client's connection (with its monitor thread), after
    /// `attempts` attempts since `started`.
    fn install(&self, conn: Conn, attempts: u32, started: Instant) -> Result<Arc<Conn>, Error> {
        let conn = Arc::new(conn);
        self.start_monitor(&conn)?;
        {
            // The old connection's counts join the totals as it is replaced, under the lock a
            // rendering takes, so each count is seen once.
            let mut earlier = self.shared.metrics.earlier();
            let mut current = self.shared.conn.lock().unwrap_or_else(|e| e.into_inner());
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
        Ok(conn)
    }

    pub(crate) fn start_monitor(&self, conn: &Arc<Conn>) -> Result<(), Error> {
        let weak = Arc::downgrade(&self.shared);
        let c = conn.clone();
        let handle = std::thread::Builder::new()
            .name("ferry-client-monitor".into())
            .spawn(move || monitor(weak, c))
            .map_err(|e| Error::io("spawning the client's monitor thread", e))?;
        *conn.monitor.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Ok(())
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
