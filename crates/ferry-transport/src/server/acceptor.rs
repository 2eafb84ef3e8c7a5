//! The acceptor thread: accepts on the control channel and runs each conversation (a
//! handshake or a metrics query, see `crate::handshake::server`), handing new connections to
//! the workers.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::metrics::RefuseReason;

use super::ServerShared;
use crate::handshake::server::{Accepted, Refusal, accept_one};

pub(crate) fn acceptor(shared: Arc<ServerShared>) {
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
        match accept_one(&shared, control) {
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
}
