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
//!
//! Where things are: [`config`] (how a client connects and waits), [`connect`] (connecting,
//! reconnecting, closing), [`calls`] (calls and pending calls), [`reader`] (the leader that
//! reads the ring for every waiter, dispatch, the monitor thread), [`stream`] (streamed
//! answers), [`nonblocking`] (reading the ring for async callers). The handshake itself is
//! `crate::handshake::client`.

mod calls;
mod config;
mod connect;
#[cfg(feature = "tokio")]
pub(crate) mod nonblocking;
mod reader;
mod stream;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use ferry_frame::Limits;
use ferry_notify::Doorbell;

use crate::link::{Liveness, Rx, Tx};
use crate::metrics::{CallError, ClientMetrics, LinkCounters};
use crate::slots::Slots;
use crate::sys::{Control, Endpoint};

pub use calls::PendingCall;
#[cfg(feature = "tokio")]
pub(crate) use calls::take_response;
pub use config::{ClientConfig, NotificationHandler};
pub use stream::StreamReceiver;

/// The live counters behind [`ClientStats`] (what [`Client::stats`] reads).
#[derive(Debug, Default)]
pub(crate) struct ClientCounters {
    pub(crate) calls_ok: AtomicU64,
    pub(crate) calls_failed: AtomicU64,
    pub(crate) connects: AtomicU64,
    pub(crate) notifications: AtomicU64,
    pub(crate) notifications_dropped: AtomicU64,
    pub(crate) notification_panics: AtomicU64,
}

impl ClientCounters {
    /// Their values now.
    pub(crate) fn snapshot(&self) -> ClientStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ClientStats {
            calls_ok: load(&self.calls_ok),
            calls_failed: load(&self.calls_failed),
            connects: load(&self.connects),
            notifications: load(&self.notifications),
            notifications_dropped: load(&self.notifications_dropped),
            notification_panics: load(&self.notification_panics),
        }
    }
}

/// Counters of one client (all connections it made), read at one moment by
/// [`Client::stats`]. Each counter is read on its own (relaxed): the set is not one atomic
/// snapshot.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// Calls answered with a response.
    pub calls_ok: u64,
    /// Calls that ended in an error of any kind (the metrics text has them by kind of error).
    pub calls_failed: u64,
    /// Connections established (the first one included).
    pub connects: u64,
    /// Notifications received and handed to the handler.
    pub notifications: u64,
    /// Notifications dropped because no handler was configured.
    pub notifications_dropped: u64,
    /// Notifications whose handler panicked (the panic is caught; reading goes on).
    pub notification_panics: u64,
}

/// A connection to a Ferry server. Cheap to clone; `Send + Sync`.
#[derive(Clone, Debug)]
pub struct Client {
    pub(crate) shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) endpoint: Endpoint,
    pub(crate) config: ClientConfig,
    pub(crate) slots: Slots,
    pub(crate) conn: Mutex<Option<Arc<Conn>>>,
    pub(crate) connecting: Mutex<()>,
    pub(crate) stats: ClientCounters,
    pub(crate) metrics: ClientMetrics,
    /// The service name, for the lifecycle events.
    pub(crate) service: Box<str>,
    /// Set by [`Client::close`] before it says `Goodbye`: the server's hang-up that answers it
    /// is not the server going away.
    pub(crate) closing: AtomicBool,
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
    pub(crate) rx: Mutex<Rx>,
    pub(crate) live: Liveness,
    pub(crate) control: Control,
    pub(crate) bell: Doorbell,
    /// Windows: the incoming ring's sleep word, which the monitor wakes when the doorbell
    /// rings (see `link`'s module docs).
    #[cfg(windows)]
    pub(crate) rx_word: crate::link::RxWord,
    pub(crate) limits: Limits,
    pub(crate) monitor: Mutex<Option<JoinHandle<()>>>,
    /// This connection's counters (written by `tx` and `rx`).
    pub(crate) metrics: Arc<LinkCounters>,
    /// The server's process id.
    pub(crate) server_pid: i32,
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
    pub(crate) shared: Arc<Shared>,
    pub(crate) index: u32,
    pub(crate) data: Vec<u8>,
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
pub(crate) struct ClientCollector(std::sync::Weak<Shared>);

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
        shared
            .metrics
            .encode(&shared.stats.snapshot(), current, &mut encoder)
    }
}
