//! The acceptor thread: accepts on the control channel and runs each conversation (a
//! handshake or a metrics query, see `crate::handshake::server`), handing new connections to
//! the workers. On Unix it serves every pending handshake at once ([`concurrent`]); on Windows
//! one at a time, each read and write bounded by the handshake timeout.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::metrics::RefuseReason;

use super::ServerShared;
#[cfg(windows)]
use crate::handshake::server::accept_one;
use crate::handshake::server::{Accepted, Refusal};

#[cfg(unix)]
mod concurrent;

/// The acceptor thread's loop, until the server stops.
pub(crate) fn acceptor(shared: Arc<ServerShared>) {
    #[cfg(unix)]
    concurrent::run(shared);
    #[cfg(windows)]
    one_at_a_time(shared);
}

/// Windows: one handshake at a time (a named-pipe instance is accepted, read and answered in
/// turn).
#[cfg(windows)]
fn one_at_a_time(shared: Arc<ServerShared>) {
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
        let r = accept_one(&shared, control);
        record(&shared, r);
    }
}

/// Counts and logs how a control-channel conversation ended, and hands a new connection to a
/// worker.
pub(crate) fn record(shared: &ServerShared, result: Result<Accepted, Refusal>) {
    match result {
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
                peer_user = %conn.peer_user.0,
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
