//! The server side of the connection handshake (and of metrics queries, the other
//! conversation a control channel may hold).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ferry_frame::{ErrorCode, Hello, Kind, Limits, ServerPolicy};
use ferry_notify::Doorbell;
use ferry_ring::{Consumer, Producer};

use crate::error::Error;
use crate::link::{Layout, Liveness, Rx, Tx};
use crate::metrics::{LinkCounters, RefuseReason};
use crate::sys::{self, Control, SharedMemory};

use crate::server::conn::{ConnState, Deferred, MAX_DEFERRED};
use crate::server::request::error_payload;
use crate::server::{ServerCollector, ServerShared};

/// What a control-socket conversation ended in, when it was not turned away.
pub(crate) enum Accepted {
    /// A connection, with the limits agreed.
    Connection(Arc<ConnState>, Limits),
    /// A metrics query, answered with this many bytes of text.
    MetricsQuery(usize),
}

/// A connection attempt (or metrics query) turned away: why, and what the peer was told.
pub(crate) struct Refusal {
    pub(crate) reason: RefuseReason,
    pub(crate) error: Error,
}

/// Tells the peer why it is turned away (a `Refuse` frame, best effort).
pub(crate) fn refuse(
    control: &Control,
    reason: RefuseReason,
    code: ErrorCode,
    message: &str,
) -> Refusal {
    let mut buf = [0u8; 512];
    let payload = error_payload(&mut buf, code, message);
    let _ = control.send(Kind::Refuse, 0, payload);
    Refusal {
        reason,
        error: Error::Refused {
            code,
            message: message.to_owned(),
        },
    }
}

/// A handshake that ended without a `Refuse`: the peer hung up, timed out, or sent garbage.
pub(crate) fn failed(error: Error) -> Refusal {
    Refusal {
        reason: RefuseReason::HandshakeFailed,
        error,
    }
}

/// Answers a `MetricsQuery` (the peer's uid is already checked) with the metrics text.
pub(crate) fn answer_metrics_query(
    shared: &Arc<ServerShared>,
    control: &Control,
    payload: &[u8],
) -> Result<Accepted, Refusal> {
    if let Err(e) = ferry_frame::check_metrics_query(payload) {
        return Err(refuse(
            control,
            RefuseReason::BadQuery,
            ErrorCode::PROTOCOL_VIOLATION,
            &format!("bad MetricsQuery: {e}"),
        ));
    }
    let text = crate::metrics::render(Box::new(ServerCollector(Arc::downgrade(shared))));
    if text.len() > ferry_frame::MAX_METRICS_REPLY {
        return Err(refuse(
            control,
            RefuseReason::TooLarge,
            ErrorCode::TOO_LARGE,
            &format!(
                "the metrics text is {} bytes, more than a MetricsReply may carry ({}); \
                 read it in the server process with Server::metrics_text",
                text.len(),
                ferry_frame::MAX_METRICS_REPLY
            ),
        ));
    }
    // A querier that does not read must not hold the acceptor up for long (the handshake
    // timeout is still set).
    control
        .send(Kind::MetricsReply, 0, text.as_bytes())
        .map_err(failed)?;
    Ok(Accepted::MetricsQuery(text.len()))
}

/// Runs one control-channel conversation: a handshake (a new connection), or a metrics query.
pub(crate) fn accept_one(
    shared: &Arc<ServerShared>,
    mut control: Control,
) -> Result<Accepted, Refusal> {
    let cfg = &shared.config;
    control
        .set_timeout(Some(cfg.handshake_timeout))
        .map_err(failed)?;
    let peer = control.identify().map_err(failed)?;
    if !cfg.allows(&peer.user) {
        // Read the Hello (or MetricsQuery) first (bounded by the handshake timeout): a channel
        // closed before the client has written it makes the client's write fail (EPIPE), and
        // the client never reads the Refuse that says why.
        let _ = control.recv();
        return Err(refuse(
            &control,
            RefuseReason::UidNotAllowed,
            ErrorCode::REFUSED,
            &format!(
                "{} is not allowed to use this service",
                sys::user_text(&peer.user)
            ),
        ));
    }
    let Some(frame) = control.recv().map_err(failed)? else {
        return Err(failed(Error::Closed(
            "the client hung up during the handshake",
        )));
    };
    if frame.header.kind() == Kind::MetricsQuery {
        return answer_metrics_query(shared, &control, &frame.payload);
    }
    if frame.header.kind() != Kind::Hello {
        return Err(refuse(
            &control,
            RefuseReason::NotHello,
            ErrorCode::PROTOCOL_VIOLATION,
            &format!("expected Hello, got {}", frame.header.kind()),
        ));
    }
    let hello = match Hello::decode(&frame.payload) {
        Ok(h) => h,
        Err(e) => {
            return Err(refuse(
                &control,
                RefuseReason::BadHello,
                ErrorCode::PROTOCOL_VIOLATION,
                &format!("bad Hello: {e}"),
            ));
        }
    };
    let welcome = match ferry_frame::negotiate(&hello, &ServerPolicy::new(cfg.limits)) {
        Ok(w) => w,
        Err(code) => {
            let why = if code == ErrorCode::VERSION_UNSUPPORTED {
                format!(
                    "protocol versions {}..={} are not supported (this server speaks {}..={}): upgrade the older side",
                    hello.min_version,
                    hello.max_version,
                    ferry_frame::MIN_SUPPORTED_VERSION,
                    ferry_frame::MAX_SUPPORTED_VERSION
                )
            } else {
                "the requested limits are below what this server accepts".to_owned()
            };
            let reason = if code == ErrorCode::VERSION_UNSUPPORTED {
                RefuseReason::VersionUnsupported
            } else {
                RefuseReason::LimitsUnacceptable
            };
            return Err(refuse(&control, reason, code, &why));
        }
    };
    let layout = match Layout::new(&welcome.limits) {
        Ok(l) => l,
        Err(why) => {
            return Err(refuse(
                &control,
                RefuseReason::LimitsUnacceptable,
                ErrorCode::LIMITS_UNACCEPTABLE,
                &why,
            ));
        }
    };
    if shared.stats.connections_open.load(Ordering::Relaxed) >= cfg.max_connections {
        return Err(refuse(
            &control,
            RefuseReason::Capacity,
            ErrorCode::BUSY,
            &format!(
                "the server is serving its maximum of {} connections",
                cfg.max_connections
            ),
        ));
    }
    let built = (|| -> Result<_, Error> {
        let mem = Arc::new(SharedMemory::create(layout.total)?);
        let (c2s, s2c) = layout.slices(&mem);
        ferry_ring::init(&c2s, layout.c2s_capacity)
            .map_err(|e| Error::BadSharedMemory(e.to_string()))?;
        ferry_ring::init(&s2c, layout.s2c_capacity)
            .map_err(|e| Error::BadSharedMemory(e.to_string()))?;
        let consumer = Consumer::attach(c2s).map_err(|e| Error::BadSharedMemory(e.to_string()))?;
        let producer = Producer::attach(s2c).map_err(|e| Error::BadSharedMemory(e.to_string()))?;
        let server_bell = Doorbell::new()?;
        let client_bell = Doorbell::new()?;
        // Everything that can fail (here: for lack of descriptors) happens before the Welcome:
        // once it is sent, the client believes it is connected, so a failure after it would
        // look like a server that hung up at once instead of a refusal that says why.
        let client_bell_tx = client_bell.try_clone()?;
        Ok((
            mem,
            consumer,
            producer,
            server_bell,
            client_bell,
            client_bell_tx,
        ))
    })();
    let (mem, consumer, producer, server_bell, client_bell, client_bell_tx) = match built {
        Ok(b) => b,
        Err(e) => {
            return Err(refuse(
                &control,
                RefuseReason::Resources,
                ErrorCode::BUSY,
                &format!("the server could not set up the connection: {e}"),
            ));
        }
    };
    control
        .send_welcome(&welcome.to_bytes(), &mem, &server_bell, &client_bell)
        .map_err(failed)?;
    drop(mem); // the rings keep the mapping
    control.established(true).map_err(failed)?;
    let deferred = (0..MAX_DEFERRED)
        .map(|_| Deferred {
            id: AtomicU64::new(0),
            in_use: AtomicBool::new(false),
            cancelled: AtomicBool::new(false),
            waker: Mutex::new(None),
        })
        .collect();
    let metrics = Arc::new(LinkCounters::default());
    let conn = Arc::new(ConnState {
        id: shared.next_conn_id.fetch_add(1, Ordering::Relaxed),
        tx: Tx::new(
            producer,
            client_bell_tx,
            &welcome.limits,
            shared.config.policy,
            metrics.clone(),
        ),
        rx: Mutex::new(Rx::new(
            consumer,
            client_bell,
            &welcome.limits,
            metrics.clone(),
        )),
        live: Liveness::default(),
        control,
        bell: server_bell,
        peer_pid: peer.pid,
        peer_user: crate::UserId(peer.user),
        metrics,
        server_metrics: shared.metrics.clone(),
        opened: Instant::now(),
        pending: Mutex::new(None),
        deferred,
    });
    Ok(Accepted::Connection(conn, welcome.limits))
}
