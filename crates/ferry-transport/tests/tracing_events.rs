//! Lifecycle events through `tracing`: a recording subscriber (every level, trace included)
//! sees bind, accept, refuse, handshake failure, protocol-free close with its reason and counts,
//! handler panics, client connect, server death, backoff and reconnection; and no field of any
//! event or span holds payload bytes.

#![cfg(any(target_os = "linux", target_os = "macos", windows))]

mod common;

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use ferry_frame::{Hello, Kind};
use ferry_transport::{Client, Request, Server};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// The payload every call and notification carries; it must never reach a log.
const SECRET: &[u8] = b"SECRET-PAYLOAD-7f3a9c";

/// One recorded event or span: its level, message and fields as text.
#[derive(Debug, Clone)]
struct Recorded {
    level: tracing::Level,
    fields: Vec<(String, String)>,
}

impl Recorded {
    fn message(&self) -> &str {
        self.field("message").unwrap_or("")
    }
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<Recorded>>,
    spans: Mutex<Vec<Recorded>>,
    next_span: AtomicU64,
}

struct Fields<'a>(&'a mut Vec<(String, String)>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
}

/// The subscriber installed: a handle on the shared recording.
struct Rec(Arc<Recorder>);

impl Subscriber for Rec {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let mut fields = vec![("name".to_owned(), attrs.metadata().name().to_owned())];
        attrs.record(&mut Fields(&mut fields));
        self.0.spans.lock().unwrap().push(Recorded {
            level: *attrs.metadata().level(),
            fields,
        });
        Id::from_u64(self.0.next_span.fetch_add(1, Ordering::Relaxed) + 1)
    }
    fn record(&self, _: &Id, values: &Record<'_>) {
        let mut fields = Vec::new();
        values.record(&mut Fields(&mut fields));
        self.0.spans.lock().unwrap().push(Recorded {
            level: tracing::Level::TRACE,
            fields,
        });
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Vec::new();
        event.record(&mut Fields(&mut fields));
        self.0.events.lock().unwrap().push(Recorded {
            level: *event.metadata().level(),
            fields,
        });
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

impl Recorder {
    fn find(&self, message: &str) -> Vec<Recorded> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.message() == message)
            .cloned()
            .collect()
    }
    fn one(&self, message: &str) -> Recorded {
        let found = self.find(message);
        assert!(
            !found.is_empty(),
            "no event {message:?} among {:#?}",
            self.events.lock().unwrap()
        );
        found.into_iter().next().unwrap()
    }
    fn wait_for(&self, message: &str) -> Recorded {
        assert!(
            eventually(Duration::from_secs(10), || !self.find(message).is_empty()),
            "no event {message:?} among {:#?}",
            self.events.lock().unwrap()
        );
        self.one(message)
    }
}

const SERVICE: &str = "traced";

fn handle(req: Request<'_>) {
    if req.payload() == b"panic" {
        panic!("handler asked to panic");
    }
    let echo = req.payload();
    let _ = req.respond(echo);
}

child_entry!(|role, dir| {
    assert_eq!(role, "server");
    serve_until_stopped(Server::bind(SERVICE, server_config(&dir), handle).expect("bind"))
});

#[test]
fn lifecycle_events_appear_and_carry_no_payload() {
    let rec = Arc::new(Recorder::default());
    tracing::subscriber::set_global_default(Rec(rec.clone())).expect("the only subscriber");
    let me = std::process::id();

    // The server side, in this process.
    let dir = TestDir::new("tracing");
    let server = Server::bind(SERVICE, server_config(dir.path()), handle).unwrap();
    let bound = rec.one("ferry server bound");
    assert_eq!(bound.field("service"), Some(SERVICE));
    #[cfg(unix)]
    assert!(bound.field("endpoint").unwrap().ends_with("traced.sock"));
    #[cfg(windows)]
    assert!(bound.field("endpoint").unwrap().ends_with("-traced"));

    let client = Client::connect_with(SERVICE, client_config(dir.path())).unwrap();
    for _ in 0..100 {
        assert_eq!(&*client.call(SECRET).unwrap(), SECRET);
        client.notify(SECRET).unwrap();
    }
    assert!(client.call(b"panic").is_err());
    let accepted = rec.one("ferry connection accepted");
    assert_eq!(accepted.field("peer_pid"), Some(me.to_string().as_str()));
    #[cfg(unix)]
    let me_user = rustix::process::geteuid().as_raw().to_string();
    #[cfg(windows)]
    let me_user = ferry_transport::windows::identity::Sid::current_user()
        .unwrap()
        .to_string();
    assert_eq!(accepted.field("peer_user"), Some(me_user.as_str()));
    assert_eq!(accepted.field("connection"), Some("1"));
    assert!(accepted.field("server_to_client_ring_bytes").is_some());
    let connected = rec.one("ferry client connected");
    assert_eq!(connected.field("reconnection"), Some("false"));
    assert_eq!(connected.field("server_pid"), Some(me.to_string().as_str()));
    let panicked = rec.one("ferry request handler panicked");
    assert_eq!(panicked.level, tracing::Level::WARN);

    // A refusal with its reason, and a handshake that fails without one.
    let raw = RawControl::connect(dir.path(), SERVICE);
    let mut hello = Hello::new(ferry_frame::Limits::default());
    hello.min_version = 9;
    hello.max_version = 9;
    raw.send(Kind::Hello, &hello.to_bytes()).unwrap();
    let _ = raw.recv();
    let refused = rec.wait_for("ferry connection refused");
    assert_eq!(refused.field("reason"), Some("version_unsupported"));
    assert!(refused.field("error").unwrap().contains("9..=9"));
    // A client that hangs up before its Hello. Unix: the connection waits in the socket's
    // backlog and the acceptor reads its hang-up whenever it gets to it. Windows: only once the
    // server took the connection (its handshake span opened), since a client gone before the
    // server looks is no connection at all there.
    let handshakes = || {
        rec.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.field("name") == Some("ferry_handshake"))
            .count()
    };
    let before = handshakes();
    let raw = RawControl::connect(dir.path(), SERVICE);
    if cfg!(windows) {
        assert!(
            eventually(Duration::from_secs(10), || handshakes() == before + 1),
            "the server never took the connection (no handshake span)"
        );
    }
    drop(raw);
    let failed = rec.wait_for("ferry handshake failed");
    assert!(failed.field("error").unwrap().contains("hung up"));
    // The handshakes ran in a span naming the peer.
    assert!(rec.spans.lock().unwrap().iter().any(|s| {
        s.field("name") == Some("ferry_handshake")
            && s.field("peer_pid") == Some(me.to_string().as_str())
    }));

    // The close, with its reason, duration and counts.
    client.close();
    let closed = rec.wait_for("ferry connection closed");
    let reason = closed.field("reason").unwrap();
    assert!(reason == "goodbye" || reason == "client_hangup", "{reason}");
    let received: u64 = closed.field("messages_received").unwrap().parse().unwrap();
    assert!(
        received >= 201,
        "100 calls + 100 notifications + 1: {received}"
    );
    assert!(closed.field("duration_ms").is_some());
    rec.one("ferry client closed its connection");
    server.shutdown();
    rec.one("ferry server shutting down");

    // The client side against a server process: its death, backoff, reconnection.
    let dir = TestDir::new("tracing-child");
    let mut child = start_child("server", dir.path());
    let client = Client::connect_with(SERVICE, client_config(dir.path())).unwrap();
    assert_eq!(&*client.call(SECRET).unwrap(), SECRET);
    kill9(&mut child);
    let gone =
        rec.wait_for("ferry server went away (its control socket hung up); calls in flight fail");
    assert_eq!(gone.level, tracing::Level::WARN);
    assert_eq!(
        gone.field("server_pid"),
        Some(child.id().to_string().as_str())
    );
    let caller = {
        let client = client.clone();
        std::thread::spawn(move || client.call(SECRET).map(|r| r.to_vec()))
    };
    // The call retries with backoff until the new server is up.
    rec.wait_for("ferry server not reachable, retrying after a backoff");
    let mut child = start_child("server", dir.path());
    assert_eq!(caller.join().unwrap().unwrap(), SECRET);
    let again = rec.wait_for("ferry client reconnected");
    assert_eq!(again.field("reconnection"), Some("true"));
    assert_eq!(
        again.field("server_pid"),
        Some(child.id().to_string().as_str())
    );
    stop_child(&mut child);

    // No payload bytes anywhere, in any form a formatter would give them.
    let text = String::from_utf8_lossy(SECRET).into_owned();
    let hex: String = SECRET.iter().map(|b| format!("{b:02x}")).collect();
    let debug = format!("{:?}", &SECRET[..6]);
    let debug = debug.trim_end_matches(']');
    let all: Vec<Recorded> = rec
        .events
        .lock()
        .unwrap()
        .iter()
        .chain(rec.spans.lock().unwrap().iter())
        .cloned()
        .collect();
    assert!(all.len() > 10);
    for r in &all {
        for (k, v) in &r.fields {
            assert!(
                !v.contains(&text) && !v.contains(&hex) && !v.contains(debug),
                "field {k} = {v:?} holds payload bytes"
            );
        }
    }
    // Nothing per message above trace level: 300 messages did not make 300 events.
    let info_or_more = rec
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.level <= tracing::Level::DEBUG)
        .count();
    assert!(
        info_or_more < 40,
        "{info_or_more} events at debug level or above"
    );
}
