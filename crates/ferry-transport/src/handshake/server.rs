//! The server side of the connection handshake (and of metrics queries, the other
//! conversation a control channel may hold).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ferry_frame::{ErrorCode, Hello, Kind, Limits, ServerPolicy, Welcome};
use ferry_notify::Doorbell;
use ferry_ring::{Consumer, Producer};

use crate::error::Error;
use crate::link::{Layout, Liveness, RingSlice, Rx, Tx};
use crate::metrics::{LinkCounters, RefuseReason};
use crate::sys::{self, Control, Peer, SharedMemory};

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

/// Windows: runs one control-channel conversation (a handshake, or a metrics query), each read
/// and write bounded by the handshake timeout. (Unix reads the first frame without waiting,
/// many handshakes at once: `server::acceptor::concurrent`.)
#[cfg(windows)]
pub(crate) fn accept_one(
    shared: &Arc<ServerShared>,
    mut control: Control,
) -> Result<Accepted, Refusal> {
    control
        .set_timeout(Some(shared.config.handshake_timeout))
        .map_err(failed)?;
    let peer = control.identify().map_err(failed)?;
    // Read the Hello (or MetricsQuery) even from a user who will be refused: a channel closed
    // before the client has written it makes the client's write fail, and the client never
    // reads the Refuse that says why.
    let first = control.recv();
    conclude(shared, control, peer, first)
}

/// The rest of a control-channel conversation once its first frame is in (`first`: the frame,
/// `None` when the peer hung up before one, or why reading it failed): a handshake (a new
/// connection), a metrics query, or a refusal.
pub(crate) fn conclude(
    shared: &Arc<ServerShared>,
    mut control: Control,
    peer: Peer,
    first: Result<Option<sys::Incoming>, Error>,
) -> Result<Accepted, Refusal> {
    let cfg = &shared.config;
    if !cfg.allows(&peer.user) {
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
    let Some(frame) = first.map_err(failed)? else {
        return Err(failed(Error::Closed(
            "the client hung up during the handshake",
        )));
    };
    if frame.header.kind() == Kind::MetricsQuery {
        return answer_metrics_query(shared, &control, &frame.payload);
    }
    let welcome = negotiate(&control, frame.header.kind(), &frame.payload, &cfg.limits)?;
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
    let parts = match Parts::create(&layout) {
        Ok(parts) => parts,
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
        .send_welcome(
            &welcome.to_bytes(),
            &parts.mem,
            &parts.server_bell,
            &parts.client_bell,
        )
        .map_err(failed)?;
    control.established(true).map_err(failed)?;
    let conn = parts.into_connection(shared, control, peer, &welcome.limits);
    Ok(Accepted::Connection(conn, welcome.limits))
}

/// Reads the client's `Hello` (a frame of `kind` carrying `payload`) and agrees on a version
/// and limits within the server's `limits`; a `Refuse` that says why otherwise.
fn negotiate(
    control: &Control,
    kind: Kind,
    payload: &[u8],
    limits: &Limits,
) -> Result<Welcome, Refusal> {
    if kind != Kind::Hello {
        return Err(refuse(
            control,
            RefuseReason::NotHello,
            ErrorCode::PROTOCOL_VIOLATION,
            &format!("expected Hello, got {kind}"),
        ));
    }
    let hello = match Hello::decode(payload) {
        Ok(h) => h,
        Err(e) => {
            return Err(refuse(
                control,
                RefuseReason::BadHello,
                ErrorCode::PROTOCOL_VIOLATION,
                &format!("bad Hello: {e}"),
            ));
        }
    };
    ferry_frame::negotiate(&hello, &ServerPolicy::new(*limits)).map_err(|code| {
        if code == ErrorCode::VERSION_UNSUPPORTED {
            let why = format!(
                "protocol versions {}..={} are not supported (this server speaks {}..={}): upgrade the older side",
                hello.min_version,
                hello.max_version,
                ferry_frame::MIN_SUPPORTED_VERSION,
                ferry_frame::MAX_SUPPORTED_VERSION
            );
            refuse(control, RefuseReason::VersionUnsupported, code, &why)
        } else {
            let why = "the requested limits are below what this server accepts";
            refuse(control, RefuseReason::LimitsUnacceptable, code, why)
        }
    })
}

/// What a new connection is made of, created before the `Welcome` goes out.
struct Parts {
    mem: Arc<SharedMemory>,
    consumer: Consumer<RingSlice>,
    producer: Producer<RingSlice>,
    server_bell: Doorbell,
    client_bell: Doorbell,
    /// The client's doorbell again, for the outgoing side.
    client_bell_tx: Doorbell,
}

impl Parts {
    /// The connection's shared memory (both rings initialised) and doorbells. Everything that
    /// can fail (here: for lack of descriptors) happens before the Welcome: once it is sent,
    /// the client believes it is connected, so a failure after it would look like a server
    /// that hung up at once instead of a refusal that says why.
    fn create(layout: &Layout) -> Result<Self, Error> {
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
        let client_bell_tx = client_bell.try_clone()?;
        Ok(Self {
            mem,
            consumer,
            producer,
            server_bell,
            client_bell,
            client_bell_tx,
        })
    }

    /// The server's side of the connection, once the client has it.
    fn into_connection(
        self,
        shared: &ServerShared,
        control: Control,
        peer: Peer,
        limits: &Limits,
    ) -> Arc<ConnState> {
        drop(self.mem); // the rings keep the mapping
        let deferred = (0..MAX_DEFERRED)
            .map(|_| Deferred {
                id: AtomicU64::new(0),
                in_use: AtomicBool::new(false),
                cancelled: AtomicBool::new(false),
                waker: Mutex::new(None),
            })
            .collect();
        let metrics = Arc::new(LinkCounters::default());
        Arc::new(ConnState {
            id: shared.next_conn_id.fetch_add(1, Ordering::Relaxed),
            tx: Tx::new(
                self.producer,
                self.client_bell_tx,
                limits,
                shared.config.policy,
                metrics.clone(),
            ),
            rx: Mutex::new({
                let mut rx = Rx::new(self.consumer, self.client_bell, limits, metrics.clone());
                rx.set_budget(shared.metrics.partials.clone());
                rx
            }),
            live: Liveness::default(),
            control,
            bell: self.server_bell,
            peer_pid: peer.pid,
            peer_user: crate::UserId(peer.user),
            metrics,
            server_metrics: shared.metrics.clone(),
            opened: Instant::now(),
            pending: Mutex::new(None),
            has_pending: AtomicBool::new(false),
            deferred,
        })
    }
}
