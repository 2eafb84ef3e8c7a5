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

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use ferry_frame::Kind;

mod client;
mod encode;
mod server;

pub(crate) use client::{CallError, ClientMetrics};
pub(crate) use server::{CloseReason, RefuseReason, ServerMetrics};

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
pub(crate) fn bump(counter: &AtomicU64, n: u64) {
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
    use std::fmt;
    use std::sync::Arc;
    use std::time::Duration;

    use prometheus_client::encoding::DescriptorEncoder;

    use super::client::{BUCKETS, LatencyHistogram};
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
