//! A server's metrics: refusals and closes by reason, handler failures, and the series of
//! every open connection.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};

use prometheus_client::encoding::DescriptorEncoder;

use super::encode::{counter, gauge, link_totals};
use super::{KIND_LABELS, LinkCounters, LinkSnapshot};

/// Why a server turned a connection attempt (or a metrics query) away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefuseReason {
    /// The peer's uid is not in `allowed_uids`.
    UidNotAllowed,
    /// The first frame was neither `Hello` nor `MetricsQuery`.
    NotHello,
    /// The `Hello` payload did not decode.
    BadHello,
    /// No common protocol version.
    VersionUnsupported,
    /// The limits (ring sizes) cannot be met.
    LimitsUnacceptable,
    /// `max_connections` are open.
    Capacity,
    /// Setting the connection up failed (memory, descriptors).
    Resources,
    /// A `MetricsQuery` with a payload.
    BadQuery,
    /// The metrics text would exceed the reply limit.
    TooLarge,
    /// No `Refuse` could be sent: the peer hung up, timed out, or sent garbage.
    HandshakeFailed,
    /// Unix: no complete `Hello` within the handshake timeout (told so with `TIMEOUT`).
    HandshakeTimeout,
    /// Unix: `max_pending_handshakes` were in progress; the oldest was refused (`BUSY`).
    HandshakesPending,
}

impl RefuseReason {
    const ALL: [RefuseReason; 12] = [
        RefuseReason::UidNotAllowed,
        RefuseReason::NotHello,
        RefuseReason::BadHello,
        RefuseReason::VersionUnsupported,
        RefuseReason::LimitsUnacceptable,
        RefuseReason::Capacity,
        RefuseReason::Resources,
        RefuseReason::BadQuery,
        RefuseReason::TooLarge,
        RefuseReason::HandshakeFailed,
        RefuseReason::HandshakeTimeout,
        RefuseReason::HandshakesPending,
    ];

    /// The label value.
    pub(crate) const fn label(self) -> &'static str {
        match self {
            RefuseReason::UidNotAllowed => "uid_not_allowed",
            RefuseReason::NotHello => "not_hello",
            RefuseReason::BadHello => "bad_hello",
            RefuseReason::VersionUnsupported => "version_unsupported",
            RefuseReason::LimitsUnacceptable => "limits_unacceptable",
            RefuseReason::Capacity => "capacity",
            RefuseReason::Resources => "resources",
            RefuseReason::BadQuery => "bad_metrics_query",
            RefuseReason::TooLarge => "metrics_too_large",
            RefuseReason::HandshakeFailed => "handshake_failed",
            RefuseReason::HandshakeTimeout => "handshake_timeout",
            RefuseReason::HandshakesPending => "handshakes_pending",
        }
    }
}

/// Why a server closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The client's control socket hung up (it exited, crashed, or dropped its client).
    Hangup,
    /// The client said `Goodbye`.
    Goodbye,
    /// The client broke the protocol or corrupted a ring.
    Protocol,
    /// The server is shutting down.
    Shutdown,
    /// Anything else (the connection could not be registered with the worker).
    Other,
    /// Its partial messages would have taken the server past `ServerConfig::max_partial_bytes`.
    PartialBudget,
}

impl CloseReason {
    const ALL: [CloseReason; 6] = [
        CloseReason::Hangup,
        CloseReason::Goodbye,
        CloseReason::Protocol,
        CloseReason::Shutdown,
        CloseReason::Other,
        CloseReason::PartialBudget,
    ];

    /// The label value.
    pub(crate) const fn label(self) -> &'static str {
        match self {
            CloseReason::Hangup => "client_hangup",
            CloseReason::Goodbye => "goodbye",
            CloseReason::Protocol => "protocol_error",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Other => "other",
            CloseReason::PartialBudget => "partial_budget",
        }
    }
}

/// A server's metrics beyond [`ServerStats`](crate::ServerStats): reasons, handler failures,
/// and the table of open connections' counters.
#[derive(Debug, Default)]
pub(crate) struct ServerMetrics {
    pub(crate) refused: [AtomicU64; 12],
    pub(crate) closed: [AtomicU64; 6],
    /// The server-wide budget for partial messages, and what its connections hold of it.
    pub(crate) partials: std::sync::Arc<crate::link::PartialBudget>,
    pub(crate) handler_panics: AtomicU64,
    pub(crate) requests_dropped: AtomicU64,
    pub(crate) metrics_queries: AtomicU64,
    pub(crate) conns: Mutex<ConnTable>,
}

#[derive(Debug, Default)]
pub(crate) struct ConnTable {
    /// Open connections by id.
    pub(crate) open: BTreeMap<u64, std::sync::Arc<LinkCounters>>,
    /// The sum of the closed connections' counters.
    pub(crate) closed: LinkSnapshot,
}

impl ServerMetrics {
    pub(crate) fn table(&self) -> MutexGuard<'_, ConnTable> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection was accepted: its series appear.
    /// Metrics for a server whose connections may hold `limit` bytes of partial messages.
    pub(crate) fn with_partial_budget(limit: usize) -> Self {
        ServerMetrics {
            partials: std::sync::Arc::new(crate::link::PartialBudget::new(limit)),
            ..ServerMetrics::default()
        }
    }

    pub(crate) fn opened(&self, id: u64, link: &std::sync::Arc<LinkCounters>) {
        self.table().open.insert(id, link.clone());
    }

    /// A connection closed: its series disappear, its counts go into the totals. Returns its
    /// final counts.
    pub(crate) fn closed(&self, id: u64, reason: CloseReason) -> LinkSnapshot {
        self.closed[reason as usize].fetch_add(1, Relaxed);
        let mut t = self.table();
        let Some(link) = t.open.remove(&id) else {
            return LinkSnapshot::default();
        };
        let last = link.snapshot();
        t.closed.add(&last);
        last
    }

    /// A connection attempt or metrics query was turned away.
    pub(crate) fn refused(&self, reason: RefuseReason) {
        self.refused[reason as usize].fetch_add(1, Relaxed);
    }

    /// A handler panicked.
    pub(crate) fn handler_panicked(&self) {
        self.handler_panics.fetch_add(1, Relaxed);
    }

    /// A request was dropped without an answer (the transport answered with an error).
    pub(crate) fn request_dropped(&self) {
        self.requests_dropped.fetch_add(1, Relaxed);
    }

    /// A metrics query was answered.
    pub(crate) fn metrics_query(&self) {
        self.metrics_queries.fetch_add(1, Relaxed);
    }

    /// Open connections whose series are exported now.
    #[cfg(test)]
    pub(crate) fn open_series(&self) -> usize {
        self.table().open.len()
    }

    /// Writes the server's metrics.
    pub(crate) fn encode(
        &self,
        stats: &crate::ServerStats,
        enc: &mut DescriptorEncoder<'_>,
    ) -> fmt::Result {
        // One consistent view of the connection table: totals = closed + open.
        let (totals, open): (LinkSnapshot, Vec<(String, LinkSnapshot)>) = {
            let t = self.table();
            let open: Vec<_> = t
                .open
                .iter()
                .map(|(id, l)| (id.to_string(), l.snapshot()))
                .collect();
            let mut totals = t.closed;
            for (_, s) in &open {
                totals.add(s);
            }
            (totals, open)
        };
        let load = |a: &AtomicU64| a.load(Relaxed);

        counter(
            enc,
            "ferry_server_connections_accepted",
            "Connections accepted (handshake completed).",
            &[(vec![], stats.connections_accepted)],
        )?;
        let refused: Vec<_> = RefuseReason::ALL
            .iter()
            .map(|r| {
                (
                    vec![("reason", r.label())],
                    load(&self.refused[*r as usize]),
                )
            })
            .collect();
        counter(
            enc,
            "ferry_server_connections_refused",
            "Connection attempts and metrics queries turned away, by reason.",
            &refused,
        )?;
        let closed: Vec<_> = CloseReason::ALL
            .iter()
            .map(|r| (vec![("reason", r.label())], load(&self.closed[*r as usize])))
            .collect();
        counter(
            enc,
            "ferry_server_connections_closed",
            "Connections that ended, by reason.",
            &closed,
        )?;
        gauge(
            enc,
            "ferry_server_connections_open",
            "Connections open now.",
            &[(vec![], stats.connections_open as u64)],
        )?;
        gauge(
            enc,
            "ferry_server_partial_bytes",
            "Bytes held for partial (fragmented, incomplete) messages, all connections together \
             (against ServerConfig::max_partial_bytes).",
            &[(vec![], self.partials.used() as u64)],
        )?;
        counter(
            enc,
            "ferry_server_errors",
            "Errors by kind: protocol violations (each closed its connection), handler panics, \
             requests dropped without an answer.",
            &[
                (vec![("kind", "protocol")], stats.protocol_errors),
                (vec![("kind", "handler_panic")], load(&self.handler_panics)),
                (
                    vec![("kind", "request_dropped")],
                    load(&self.requests_dropped),
                ),
            ],
        )?;
        counter(
            enc,
            "ferry_server_metrics_queries",
            "Metrics queries answered on the control socket.",
            &[(vec![], load(&self.metrics_queries))],
        )?;
        link_totals(enc, "ferry_server", &totals)?;
        // Of open connections only: a closed connection's unanswered requests are gone.
        gauge(
            enc,
            "ferry_server_requests_in_flight",
            "Requests received on open connections and not answered yet.",
            &[(
                vec![],
                open.iter().map(|(_, s)| s.requests_in_flight()).sum(),
            )],
        )?;

        // Per open connection.
        let mut per = PerConn::default();
        for (id, s) in &open {
            per.add(id, s);
        }
        per.encode(enc)
    }
}

/// The series of every open connection, grouped by metric.
#[derive(Default)]
pub(crate) struct PerConn<'a> {
    pub(crate) received_messages: Vec<(Vec<(&'static str, &'a str)>, u64)>,
    pub(crate) received_bytes: Vec<(Vec<(&'static str, &'a str)>, u64)>,
    pub(crate) sent_messages: Vec<(Vec<(&'static str, &'a str)>, u64)>,
    pub(crate) sent_bytes: Vec<(Vec<(&'static str, &'a str)>, u64)>,
    pub(crate) in_flight: Vec<(Vec<(&'static str, &'a str)>, u64)>,
    pub(crate) ring_full: Vec<(Vec<(&'static str, &'a str)>, u64)>,
    pub(crate) wakeups_sent: Vec<(Vec<(&'static str, &'a str)>, u64)>,
    pub(crate) wakeups_received: Vec<(Vec<(&'static str, &'a str)>, u64)>,
}

impl<'a> PerConn<'a> {
    pub(crate) fn add(&mut self, id: &'a str, s: &LinkSnapshot) {
        let c = ("connection", id);
        // Kinds that never moved on this connection are left out (fewer series).
        for (k, label) in KIND_LABELS.iter().enumerate() {
            let kind = ("kind", *label);
            if s.received_messages[k] != 0 || s.received_bytes[k] != 0 {
                self.received_messages
                    .push((vec![c, kind], s.received_messages[k]));
                self.received_bytes
                    .push((vec![c, kind], s.received_bytes[k]));
            }
            if s.sent_messages[k] != 0 || s.sent_bytes[k] != 0 {
                self.sent_messages.push((vec![c, kind], s.sent_messages[k]));
                self.sent_bytes.push((vec![c, kind], s.sent_bytes[k]));
            }
        }
        self.in_flight.push((vec![c], s.requests_in_flight()));
        self.ring_full.push((vec![c], s.ring_full));
        self.wakeups_sent
            .push((vec![c, ("mechanism", "futex")], s.wakes_futex));
        self.wakeups_sent
            .push((vec![c, ("mechanism", "doorbell")], s.wakes_doorbell));
        self.wakeups_received.push((vec![c], s.wakeups_received));
    }

    pub(crate) fn encode(&self, enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
        counter(
            enc,
            "ferry_connection_messages_received",
            "Messages received on one open connection, by kind.",
            &self.received_messages,
        )?;
        counter(
            enc,
            "ferry_connection_received_bytes",
            "Payload bytes received on one open connection, by kind.",
            &self.received_bytes,
        )?;
        counter(
            enc,
            "ferry_connection_messages_sent",
            "Messages sent on one open connection, by kind.",
            &self.sent_messages,
        )?;
        counter(
            enc,
            "ferry_connection_sent_bytes",
            "Payload bytes sent on one open connection, by kind.",
            &self.sent_bytes,
        )?;
        gauge(
            enc,
            "ferry_connection_requests_in_flight",
            "Requests received on one open connection and not answered yet.",
            &self.in_flight,
        )?;
        counter(
            enc,
            "ferry_connection_ring_full",
            "Sends on one open connection that found the outgoing ring full.",
            &self.ring_full,
        )?;
        counter(
            enc,
            "ferry_connection_wakeups_sent",
            "Wake-ups delivered to the peer of one open connection, by mechanism.",
            &self.wakeups_sent,
        )?;
        counter(
            enc,
            "ferry_connection_wakeups_received",
            "Doorbell wake-ups the idle reader of one open connection received.",
            &self.wakeups_received,
        )
    }
}
