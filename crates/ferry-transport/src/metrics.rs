//! Metrics of servers and clients, exported through `prometheus-client`.
//!
//! # What the hot path pays
//! Every counter a message touches is a plain atomic word of the connection, written by one
//! thread at a time: the sending side's under the producer lock the send takes anyway, the
//! receiving side's by whoever holds the incoming ring (its `Rx` is `&mut`). So an increment is
//! a relaxed load and a relaxed store (no `lock`-prefixed instruction, no lock of its own, no
//! allocation), and the two sides' counters sit on separate cache lines. The client's
//! round-trip histogram is one `fetch_add` into a power-of-two bucket and one into the sum,
//! plus the two clock reads that time the call. Nothing is looked up by label per message:
//! labels exist only when the text is rendered.
//!
//! # Bounded series
//! A server keeps one entry per *open* connection in a table (touched at connect, at close and
//! when rendering); when a connection closes its counts are folded into the server's totals and
//! its series disappear, so churning through thousands of connections does not grow memory.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use ferry_frame::Kind;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::error::Error;

/// The message kinds counted on the rings, as label values; the last one collects whatever
/// kind the peer wrote into a ring that does not belong there.
pub(crate) const KIND_LABELS: [&str; N_KINDS] = [
    "request",
    "response",
    "error_response",
    "notification",
    "stream_item",
    "stream_end",
    "cancel",
    "ping",
    "pong",
    "goodbye",
    "other",
];
pub(crate) const N_KINDS: usize = 11;

/// The index of `kind` in [`KIND_LABELS`].
#[inline]
pub(crate) const fn kind_index(kind: Kind) -> usize {
    match kind {
        Kind::Request => 0,
        Kind::Response => 1,
        Kind::ErrorResponse => 2,
        Kind::Notification => 3,
        Kind::StreamItem => 4,
        Kind::StreamEnd => 5,
        Kind::Cancel => 6,
        Kind::Ping => 7,
        Kind::Pong => 8,
        Kind::Goodbye => 9,
        _ => 10,
    }
}

/// Adds `n` to a counter that only one thread writes at a time (the caller holds the lock or
/// the `&mut` that serializes its writers): a relaxed load and store, no read-modify-write.
#[inline]
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

/// One direction of a connection's data path. Each instance has a single writer at a time
/// (see the module docs), and its own cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct SideCounters {
    /// Complete messages, by kind (a fragmented message counts once, when its last fragment
    /// goes or arrives).
    messages: [AtomicU64; N_KINDS],
    /// Payload bytes (headers not included), by kind.
    bytes: [AtomicU64; N_KINDS],
    /// Wake-ups delivered to the peer: futex wakes and doorbell rings.
    wakes_futex: AtomicU64,
    wakes_doorbell: AtomicU64,
    /// Sends that found the ring full (sending side only).
    ring_full: AtomicU64,
}

impl SideCounters {
    /// A message (or, with `complete` false, a non-final fragment) of `len` payload bytes.
    #[inline]
    pub(crate) fn frame(&self, kind: Kind, len: usize, complete: bool) {
        let k = kind_index(kind);
        bump(&self.bytes[k], len as u64);
        if complete {
            bump(&self.messages[k], 1);
        }
    }

    /// A wake-up this side delivered to its peer, by the mechanism of the token.
    #[inline]
    pub(crate) fn woke(&self, futex: bool, doorbell: bool) {
        if futex {
            bump(&self.wakes_futex, 1);
        }
        if doorbell {
            bump(&self.wakes_doorbell, 1);
        }
    }

    /// A send found the ring full (it waits, or the answer becomes pending).
    #[inline]
    pub(crate) fn ring_full(&self) {
        bump(&self.ring_full, 1);
    }
}

/// The counters of one connection: what it sent, what it received, and the doorbell wake-ups
/// its idle reader (server worker, client monitor) got.
#[derive(Debug, Default)]
pub(crate) struct LinkCounters {
    /// Written under the outgoing ring's producer lock.
    pub(crate) sent: SideCounters,
    /// Written by the holder of the incoming ring.
    pub(crate) received: SideCounters,
    /// Doorbell wake-ups this side's idle reader received (many writers: `fetch_add`; each
    /// follows a system call anyway).
    wakeups_received: AtomicU64,
}

impl LinkCounters {
    /// The idle reader was woken by its doorbell.
    pub(crate) fn wakeup_received(&self) {
        self.wakeups_received.fetch_add(1, Relaxed);
    }

    /// The current values.
    pub(crate) fn snapshot(&self) -> LinkSnapshot {
        let read = |a: &[AtomicU64; N_KINDS]| std::array::from_fn(|i| a[i].load(Relaxed));
        LinkSnapshot {
            sent_messages: read(&self.sent.messages),
            sent_bytes: read(&self.sent.bytes),
            received_messages: read(&self.received.messages),
            received_bytes: read(&self.received.bytes),
            ring_full: self.sent.ring_full.load(Relaxed),
            wakes_futex: self.sent.wakes_futex.load(Relaxed)
                + self.received.wakes_futex.load(Relaxed),
            wakes_doorbell: self.sent.wakes_doorbell.load(Relaxed)
                + self.received.wakes_doorbell.load(Relaxed),
            wakeups_received: self.wakeups_received.load(Relaxed),
        }
    }
}

/// The values of [`LinkCounters`] at one moment, or a sum of them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LinkSnapshot {
    pub(crate) sent_messages: [u64; N_KINDS],
    pub(crate) sent_bytes: [u64; N_KINDS],
    pub(crate) received_messages: [u64; N_KINDS],
    pub(crate) received_bytes: [u64; N_KINDS],
    pub(crate) ring_full: u64,
    pub(crate) wakes_futex: u64,
    pub(crate) wakes_doorbell: u64,
    pub(crate) wakeups_received: u64,
}

impl LinkSnapshot {
    fn add(&mut self, o: &LinkSnapshot) {
        for i in 0..N_KINDS {
            self.sent_messages[i] += o.sent_messages[i];
            self.sent_bytes[i] += o.sent_bytes[i];
            self.received_messages[i] += o.received_messages[i];
            self.received_bytes[i] += o.received_bytes[i];
        }
        self.ring_full += o.ring_full;
        self.wakes_futex += o.wakes_futex;
        self.wakes_doorbell += o.wakes_doorbell;
        self.wakeups_received += o.wakeups_received;
    }

    /// All messages received, every kind.
    pub(crate) fn messages_received(&self) -> u64 {
        self.received_messages.iter().sum()
    }

    /// All messages sent, every kind.
    pub(crate) fn messages_sent(&self) -> u64 {
        self.sent_messages.iter().sum()
    }

    /// Requests received and not answered yet (the server's view of one connection): requests
    /// in, minus final answers out (response, error response, end of stream).
    pub(crate) fn requests_in_flight(&self) -> u64 {
        let answered = self.sent_messages[kind_index(Kind::Response)]
            + self.sent_messages[kind_index(Kind::ErrorResponse)]
            + self.sent_messages[kind_index(Kind::StreamEnd)];
        self.received_messages[kind_index(Kind::Request)].saturating_sub(answered)
    }
}

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
}

impl RefuseReason {
    const ALL: [RefuseReason; 10] = [
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
}

impl CloseReason {
    const ALL: [CloseReason; 5] = [
        CloseReason::Hangup,
        CloseReason::Goodbye,
        CloseReason::Protocol,
        CloseReason::Shutdown,
        CloseReason::Other,
    ];

    /// The label value.
    pub(crate) const fn label(self) -> &'static str {
        match self {
            CloseReason::Hangup => "client_hangup",
            CloseReason::Goodbye => "goodbye",
            CloseReason::Protocol => "protocol_error",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Other => "other",
        }
    }
}

/// A server's metrics beyond [`ServerStats`](crate::ServerStats): reasons, handler failures,
/// and the table of open connections' counters.
#[derive(Debug, Default)]
pub(crate) struct ServerMetrics {
    refused: [AtomicU64; 10],
    closed: [AtomicU64; 5],
    handler_panics: AtomicU64,
    requests_dropped: AtomicU64,
    metrics_queries: AtomicU64,
    conns: Mutex<ConnTable>,
}

#[derive(Debug, Default)]
struct ConnTable {
    /// Open connections by id.
    open: BTreeMap<u64, std::sync::Arc<LinkCounters>>,
    /// The sum of the closed connections' counters.
    closed: LinkSnapshot,
}

impl ServerMetrics {
    fn table(&self) -> MutexGuard<'_, ConnTable> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection was accepted: its series appear.
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
    fn open_series(&self) -> usize {
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
struct PerConn<'a> {
    received_messages: Vec<(Vec<(&'static str, &'a str)>, u64)>,
    received_bytes: Vec<(Vec<(&'static str, &'a str)>, u64)>,
    sent_messages: Vec<(Vec<(&'static str, &'a str)>, u64)>,
    sent_bytes: Vec<(Vec<(&'static str, &'a str)>, u64)>,
    in_flight: Vec<(Vec<(&'static str, &'a str)>, u64)>,
    ring_full: Vec<(Vec<(&'static str, &'a str)>, u64)>,
    wakeups_sent: Vec<(Vec<(&'static str, &'a str)>, u64)>,
    wakeups_received: Vec<(Vec<(&'static str, &'a str)>, u64)>,
}

impl<'a> PerConn<'a> {
    fn add(&mut self, id: &'a str, s: &LinkSnapshot) {
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

    fn encode(&self, enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
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

/// The data-path families of a side (`prefix` is `ferry_server` or `ferry_client`).
fn link_totals(enc: &mut DescriptorEncoder<'_>, prefix: &str, s: &LinkSnapshot) -> fmt::Result {
    let by_kind = |v: &[u64; N_KINDS]| -> Vec<(Vec<(&'static str, &'static str)>, u64)> {
        (0..N_KINDS)
            .map(|k| (vec![("kind", KIND_LABELS[k])], v[k]))
            .collect()
    };
    counter(
        enc,
        &format!("{prefix}_messages_received"),
        "Messages received from the rings, by kind (a fragmented message counts once).",
        &by_kind(&s.received_messages),
    )?;
    counter(
        enc,
        &format!("{prefix}_received_bytes"),
        "Payload bytes received from the rings, by kind (frame headers not included).",
        &by_kind(&s.received_bytes),
    )?;
    counter(
        enc,
        &format!("{prefix}_messages_sent"),
        "Messages sent into the rings, by kind (a fragmented message counts once).",
        &by_kind(&s.sent_messages),
    )?;
    counter(
        enc,
        &format!("{prefix}_sent_bytes"),
        "Payload bytes sent into the rings, by kind (frame headers not included).",
        &by_kind(&s.sent_bytes),
    )?;
    counter(
        enc,
        &format!("{prefix}_ring_full"),
        "Sends that found the outgoing ring full (then waited, or kept the answer pending).",
        &[(vec![], s.ring_full)],
    )?;
    counter(
        enc,
        &format!("{prefix}_wakeups_sent"),
        "Wake-ups delivered to the peer (it was asleep on the ring), by mechanism.",
        &[
            (vec![("mechanism", "futex")], s.wakes_futex),
            (vec![("mechanism", "doorbell")], s.wakes_doorbell),
        ],
    )?;
    counter(
        enc,
        &format!("{prefix}_wakeups_received"),
        "Doorbell wake-ups received by the idle reader (server worker, client monitor thread).",
        &[(vec![], s.wakeups_received)],
    )
}

type Series<'a> = [(Vec<(&'static str, &'a str)>, u64)];

fn counter(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: &Series<'_>,
) -> fmt::Result {
    family(enc, name, help, MetricType::Counter, series)
}

fn gauge(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: &Series<'_>,
) -> fmt::Result {
    family(enc, name, help, MetricType::Gauge, series)
}

fn family(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    ty: MetricType,
    series: &Series<'_>,
) -> fmt::Result {
    if series.is_empty() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(name, help, None, ty)?;
    for (labels, value) in series {
        let labels: &[(&str, &str)] = labels;
        if labels.is_empty() {
            write_value(&mut m, ty, *value)?;
        } else {
            let mut f = m.encode_family(&labels)?;
            write_value(&mut f, ty, *value)?;
        }
    }
    Ok(())
}

fn write_value(
    m: &mut prometheus_client::encoding::MetricEncoder<'_>,
    ty: MetricType,
    value: u64,
) -> fmt::Result {
    match ty {
        MetricType::Gauge => m.encode_gauge(&i64::try_from(value).unwrap_or(i64::MAX)),
        _ => m.encode_counter::<NoLabelSet, u64, u64>(&value, None),
    }
}

/// Round-trip latency histogram, lock-free: power-of-two buckets from 512 ns to about 4.3 s.
#[derive(Debug)]
pub(crate) struct LatencyHistogram {
    /// Non-cumulative counts; the last bucket is `+Inf`.
    buckets: [AtomicU64; BUCKETS + 1],
    sum_ns: AtomicU64,
}

/// Finite buckets: upper bounds 2^9 .. 2^32 ns.
const BUCKETS: usize = 24;
const FIRST_BOUND_LOG2: u32 = 9;

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }
}

impl LatencyHistogram {
    /// Records one duration (two relaxed `fetch_add`s).
    #[inline]
    pub(crate) fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let bits = 64 - ns.saturating_sub(1).leading_zeros();
        let i = (bits.saturating_sub(FIRST_BOUND_LOG2) as usize).min(BUCKETS);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    /// (sum in seconds, count, (upper bound in seconds, non-cumulative count) per bucket).
    fn read(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let buckets: Vec<(f64, u64)> = (0..=BUCKETS)
            .map(|i| {
                let bound = if i == BUCKETS {
                    f64::INFINITY
                } else {
                    (1u64 << (FIRST_BOUND_LOG2 as usize + i)) as f64 / 1e9
                };
                (bound, self.buckets[i].load(Relaxed))
            })
            .collect();
        let count = buckets.iter().map(|b| b.1).sum();
        (self.sum_ns.load(Relaxed) as f64 / 1e9, count, buckets)
    }
}

/// What a failed call failed with, as a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallError {
    Closed,
    Timeout,
    Remote,
    Cancelled,
    TooLarge,
    TooManyInFlight,
    NotRunning,
    Refused,
    Protocol,
    /// An async call whose future was dropped before its answer.
    Dropped,
    Other,
}

impl CallError {
    const ALL: [CallError; 11] = [
        CallError::Closed,
        CallError::Timeout,
        CallError::Remote,
        CallError::Cancelled,
        CallError::TooLarge,
        CallError::TooManyInFlight,
        CallError::NotRunning,
        CallError::Refused,
        CallError::Protocol,
        CallError::Dropped,
        CallError::Other,
    ];

    pub(crate) fn of(e: &Error) -> CallError {
        match e {
            Error::Closed(_) => CallError::Closed,
            Error::Timeout(_) => CallError::Timeout,
            Error::Remote { .. } => CallError::Remote,
            Error::Cancelled => CallError::Cancelled,
            Error::TooLarge { .. } => CallError::TooLarge,
            Error::TooManyInFlight(_) => CallError::TooManyInFlight,
            Error::NotRunning { .. } => CallError::NotRunning,
            Error::Refused { .. } | Error::PeerNotAllowed { .. } => CallError::Refused,
            Error::Protocol(_) | Error::BadSharedMemory(_) => CallError::Protocol,
            _ => CallError::Other,
        }
    }

    const fn label(self) -> &'static str {
        match self {
            CallError::Closed => "closed",
            CallError::Timeout => "timeout",
            CallError::Remote => "remote",
            CallError::Cancelled => "cancelled",
            CallError::TooLarge => "too_large",
            CallError::TooManyInFlight => "too_many_in_flight",
            CallError::NotRunning => "not_running",
            CallError::Refused => "refused",
            CallError::Protocol => "protocol",
            CallError::Dropped => "dropped",
            CallError::Other => "other",
        }
    }
}

/// A client's metrics beyond [`ClientStats`](crate::ClientStats).
#[derive(Debug, Default)]
pub(crate) struct ClientMetrics {
    failed: [AtomicU64; 11],
    connect_retries: AtomicU64,
    stream_backpressure_waits: AtomicU64,
    pub(crate) round_trip: LatencyHistogram,
    /// The sum of the counters of the client's earlier connections.
    earlier: Mutex<LinkSnapshot>,
}

impl ClientMetrics {
    /// A call failed with `e`.
    pub(crate) fn call_failed(&self, e: CallError) {
        self.failed[e as usize].fetch_add(1, Relaxed);
    }

    /// A connection attempt failed and will be retried after a backoff.
    pub(crate) fn connect_retry(&self) {
        self.connect_retries.fetch_add(1, Relaxed);
    }

    /// A thread reading the ring started waiting for a stream's consumer to make room in its
    /// queue (backpressure).
    pub(crate) fn stream_backpressure_wait(&self) {
        self.stream_backpressure_waits.fetch_add(1, Relaxed);
    }

    /// Locks the sum of earlier connections' counters; fold a replaced connection's counters
    /// in while holding it, so that a concurrent rendering sees each count exactly once.
    pub(crate) fn earlier(&self) -> MutexGuard<'_, LinkSnapshot> {
        self.earlier.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Folds a replaced connection's counters into the totals.
    pub(crate) fn fold(earlier: &mut LinkSnapshot, link: &LinkCounters) {
        earlier.add(&link.snapshot());
    }

    /// Writes the client's metrics; `current` is the connection in use, if any.
    pub(crate) fn encode(
        &self,
        stats: &crate::ClientStats,
        current: impl FnOnce() -> Option<LinkSnapshot>,
        enc: &mut DescriptorEncoder<'_>,
    ) -> fmt::Result {
        let totals = {
            let earlier = self.earlier();
            let mut t = *earlier;
            if let Some(c) = current() {
                t.add(&c);
            }
            t
        };
        let load = |a: &AtomicU64| a.load(Relaxed);
        counter(
            enc,
            "ferry_client_calls",
            "Calls answered with a response.",
            &[(vec![("outcome", "ok")], stats.calls_ok)],
        )?;
        let failed: Vec<_> = CallError::ALL
            .iter()
            .map(|e| (vec![("error", e.label())], load(&self.failed[*e as usize])))
            .collect();
        counter(
            enc,
            "ferry_client_calls_failed",
            "Calls that ended in an error, by error kind.",
            &failed,
        )?;
        let connects = stats.connects;
        counter(
            enc,
            "ferry_client_connects",
            "Connections established, the first one included.",
            &[(vec![], connects)],
        )?;
        counter(
            enc,
            "ferry_client_reconnections",
            "Connections established after the first (the server went away and came back).",
            &[(vec![], connects.saturating_sub(1))],
        )?;
        counter(
            enc,
            "ferry_client_connect_retries",
            "Connection attempts that failed and were retried after a backoff.",
            &[(vec![], load(&self.connect_retries))],
        )?;
        counter(
            enc,
            "ferry_client_notifications",
            "Server notifications received, by whether a handler took them.",
            &[
                (vec![("handled", "true")], stats.notifications),
                (vec![("handled", "false")], stats.notifications_dropped),
            ],
        )?;
        counter(
            enc,
            "ferry_client_notification_handler_panics",
            "Notifications whose handler panicked (caught; reading went on).",
            &[(vec![], stats.notification_panics)],
        )?;
        counter(
            enc,
            "ferry_client_stream_backpressure_waits",
            "Times the thread reading the ring had to wait because a stream's consumer lagged \
             (its queue was full); the ring fills behind it meanwhile.",
            &[(vec![], load(&self.stream_backpressure_waits))],
        )?;
        link_totals(enc, "ferry_client", &totals)?;
        let (sum, count, buckets) = self.round_trip.read();
        let mut m = enc.encode_descriptor(
            "ferry_client_round_trip_seconds",
            "Round-trip time of calls the server answered (response or error response), from \
             sending the request to having the answer.",
            None,
            MetricType::Histogram,
        )?;
        m.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }
}

/// Renders a registry holding `collector` as OpenMetrics text (ends with `# EOF`).
pub(crate) fn render(collector: Box<dyn prometheus_client::collector::Collector>) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(collector);
    let mut out = String::new();
    // Writing into a String cannot fail; an encoder error would be a bug in the collector.
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        out.push_str("# error: the metrics could not be encoded\n# EOF\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[derive(Debug, Default)]
    struct Server {
        stats: crate::server::ServerCounters,
        metrics: ServerMetrics,
    }

    #[derive(Debug)]
    struct Collect(Arc<Server>);

    impl prometheus_client::collector::Collector for Collect {
        fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
            self.0.metrics.encode(&self.0.stats.snapshot(), &mut enc)
        }
    }

    fn value(text: &str, series: &str) -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn closed_connections_fold_into_totals_and_lose_their_series() {
        let s = Arc::new(Server::default());
        let links: Vec<Arc<LinkCounters>> = (0..3).map(|_| Arc::default()).collect();
        for (id, l) in links.iter().enumerate() {
            s.metrics.opened(id as u64 + 1, l);
            l.received.frame(Kind::Request, 10, true);
            l.sent.frame(Kind::Response, 7, false); // a fragment
            l.sent.frame(Kind::Response, 3, true);
        }
        links[0].received.frame(Kind::Request, 5, true); // one unanswered request
        let text = render(Box::new(Collect(s.clone())));
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(
            value(
                &text,
                r#"ferry_connection_messages_received_total{connection="1",kind="request"}"#
            ),
            Some(2)
        );
        assert_eq!(
            value(
                &text,
                r#"ferry_connection_requests_in_flight{connection="1"}"#
            ),
            Some(1)
        );
        assert_eq!(
            value(&text, r#"ferry_server_sent_bytes_total{kind="response"}"#),
            Some(30)
        );
        assert_eq!(
            value(
                &text,
                r#"ferry_server_messages_sent_total{kind="response"}"#
            ),
            Some(3)
        );

        let last = s.metrics.closed(1, CloseReason::Goodbye);
        assert_eq!(last.messages_received(), 2);
        s.metrics.closed(2, CloseReason::Hangup);
        assert_eq!(s.metrics.open_series(), 1);
        let text = render(Box::new(Collect(s.clone())));
        assert!(!text.contains(r#"connection="1""#), "{text}");
        assert!(!text.contains(r#"connection="2""#), "{text}");
        assert!(text.contains(r#"connection="3""#), "{text}");
        // Totals keep what the closed connections did.
        assert_eq!(
            value(
                &text,
                r#"ferry_server_messages_received_total{kind="request"}"#
            ),
            Some(4)
        );
        assert_eq!(
            value(
                &text,
                r#"ferry_server_connections_closed_total{reason="goodbye"}"#
            ),
            Some(1)
        );
        assert_eq!(value(&text, "ferry_server_requests_in_flight"), Some(0));
    }

    #[test]
    fn histogram_buckets() {
        let h = LatencyHistogram::default();
        for ns in [0u64, 1, 512, 513, 1024, 1025, 5_000_000_000, u64::MAX] {
            h.record(Duration::from_nanos(ns));
        }
        let (_, count, buckets) = h.read();
        assert_eq!(count, 8);
        assert_eq!(
            buckets[0],
            (512e-9, 3),
            "0, 1 and 512 ns are at most 512 ns"
        );
        assert_eq!(buckets[1].1, 2, "513 and 1024 ns");
        assert_eq!(buckets[2].1, 1, "1025 ns");
        assert_eq!(buckets[BUCKETS], (f64::INFINITY, 2), "5 s and more: +Inf");
    }

    #[test]
    fn every_kind_has_its_own_label() {
        let mut seen = std::collections::BTreeSet::new();
        for kind in Kind::ALL.into_iter().filter(|k| !k.is_control()) {
            assert!(seen.insert(kind_index(kind)), "{kind} shares an index");
            assert_ne!(KIND_LABELS[kind_index(kind)], "other");
        }
        assert_eq!(KIND_LABELS[kind_index(Kind::Hello)], "other");
    }
}
