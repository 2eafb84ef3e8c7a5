//! A client's metrics: failed calls by error, (re)connections, and the round-trip histogram.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::error::Error;

use super::encode::{counter, link_totals};
use super::{LinkCounters, LinkSnapshot};

/// Round-trip latency histogram, lock-free: power-of-two buckets from 512 ns to about 4.3 s.
#[derive(Debug)]
pub(crate) struct LatencyHistogram {
    /// Non-cumulative counts; the last bucket is `+Inf`.
    pub(crate) buckets: [AtomicU64; BUCKETS + 1],
    pub(crate) sum_ns: AtomicU64,
}

/// Finite buckets: upper bounds 2^9 .. 2^32 ns.
pub(crate) const BUCKETS: usize = 24;
pub(crate) const FIRST_BOUND_LOG2: u32 = 9;

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
    pub(crate) fn read(&self) -> (f64, u64, Vec<(f64, u64)>) {
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

    pub(crate) const fn label(self) -> &'static str {
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
    pub(crate) failed: [AtomicU64; 11],
    pub(crate) connect_retries: AtomicU64,
    pub(crate) stream_backpressure_waits: AtomicU64,
    pub(crate) round_trip: LatencyHistogram,
    /// The sum of the counters of the client's earlier connections.
    pub(crate) earlier: Mutex<LinkSnapshot>,
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
