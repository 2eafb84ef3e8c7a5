//! How a client connects and waits.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferry_frame::Limits;
use ferry_notify::WaitPolicy;

/// A callback for notifications the server pushes.
pub type NotificationHandler = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// How a client connects and waits.
#[derive(Clone)]
#[non_exhaustive]
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
    /// notifications are counted in [`ClientStats::notifications_dropped`](crate::ClientStats::notifications_dropped) and dropped.
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

/// Builder-style setters: `ClientConfig::default().with_runtime_dir(dir).with_limits(limits)`. (The
/// struct is `#[non_exhaustive]`: outside this crate it is built from [`Default`] and these
/// setters or field assignments, never with a struct literal, so fields can be added later.)
impl ClientConfig {
    /// Sets [`limits`](Self::limits).
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
    /// Sets [`policy`](Self::policy).
    #[must_use]
    pub fn with_policy(mut self, policy: WaitPolicy) -> Self {
        self.policy = policy;
        self
    }
    /// Sets [`max_in_flight`](Self::max_in_flight).
    #[must_use]
    pub fn with_max_in_flight(mut self, max_in_flight: usize) -> Self {
        self.max_in_flight = max_in_flight;
        self
    }
    /// Sets [`connect_timeout`](Self::connect_timeout).
    #[must_use]
    pub fn with_connect_timeout(mut self, connect_timeout: Duration) -> Self {
        self.connect_timeout = connect_timeout;
        self
    }
    /// Sets [`reconnect`](Self::reconnect).
    #[must_use]
    pub fn with_reconnect(mut self, reconnect: bool) -> Self {
        self.reconnect = reconnect;
        self
    }
    /// Sets [`runtime_dir`](Self::runtime_dir).
    #[must_use]
    pub fn with_runtime_dir(mut self, runtime_dir: impl Into<PathBuf>) -> Self {
        self.runtime_dir = Some(runtime_dir.into());
        self
    }
    /// Sets [`round_trip_sample_every`](Self::round_trip_sample_every).
    #[must_use]
    pub fn with_round_trip_sample_every(mut self, round_trip_sample_every: u32) -> Self {
        self.round_trip_sample_every = round_trip_sample_every;
        self
    }
    /// Sets [`on_notification`](Self::on_notification).
    #[must_use]
    pub fn with_on_notification(
        mut self,
        on_notification: impl Fn(&[u8]) + Send + Sync + 'static,
    ) -> Self {
        self.on_notification = Some(Arc::new(on_notification));
        self
    }
}
