//! The blocking API's smaller surfaces, server and client in this process: what a handler
//! learns about its connection, errors answered through a `Responder` or a stream, long error
//! messages cut to fit, every wait policy on both sides, a notification for a client without a
//! handler, `Client::connect` with the default runtime directory, and the `Debug` output.

#![cfg(any(target_os = "linux", target_os = "macos", windows))]

mod common;

use std::time::Duration;

use common::*;
use ferry_transport::ErrorCode;
use ferry_transport::{
    Client, ClientConfig, Connection, Error, Handler, Request, Server, ServerConfig, WaitPolicy,
};

const SERVICE: &str = "api";

/// Requests held unanswered (op `hold`) until a `release`.
static HELD: std::sync::Mutex<Vec<ferry_transport::Responder>> = std::sync::Mutex::new(Vec::new());

/// A message longer than an error payload holds, whose cut falls inside a two-byte character.
fn long_message() -> String {
    format!("x{}", "é".repeat(1000))
}

struct Api;

impl Handler for Api {
    fn on_request(&self, req: Request<'_>) {
        match req.payload() {
            b"who" => {
                let c = req.connection();
                let user = c.peer_user().to_string();
                let text = format!("{}|{}|{}|{}", c.id(), c.peer_pid(), user, c.is_open());
                let _ = req.respond(text.as_bytes());
            }
            b"responder error" => {
                let r = req.into_responder();
                std::thread::spawn(move || {
                    r.respond_error(ErrorCode(0x8000_0011), "later, an error")
                        .unwrap();
                });
            }
            b"stream error" => {
                let s = req.into_stream();
                std::thread::spawn(move || {
                    s.send(b"one").unwrap();
                    s.fail(ErrorCode(0x8000_0012), "the stream failed").unwrap();
                });
            }
            b"long error" => {
                let _ = req.respond_error(ErrorCode(0x8000_0013), &long_message());
            }
            b"hold" => HELD.lock().unwrap().push(req.into_responder()),
            b"release" => {
                for r in HELD.lock().unwrap().drain(..) {
                    r.respond(b"released").unwrap();
                }
                let _ = req.respond(b"ok");
            }
            other => {
                let other = other.to_vec();
                let _ = req.respond(&other);
            }
        }
    }
    fn on_connect(&self, connection: &Connection) {
        // Every client is told hello; one without a notification handler drops it.
        connection.notify(b"hello").unwrap();
    }
}

fn bind(dir: &TestDir, policy: WaitPolicy) -> Server {
    let cfg = server_config(dir.path()).with_policy(policy);
    Server::bind(SERVICE, cfg, Api).unwrap()
}

#[test]
fn a_handler_sees_who_is_connected() {
    let dir = TestDir::new("who");
    let _server = bind(&dir, WaitPolicy::default());
    let client = Client::connect_with(SERVICE, client_config(dir.path())).unwrap();
    let answer = String::from_utf8(client.call(b"who").unwrap().to_vec()).unwrap();
    let fields: Vec<&str> = answer.split('|').collect();
    assert_eq!(fields[0], "1", "the first connection's id: {answer}");
    assert_eq!(fields[1], std::process::id().to_string(), "{answer}");
    // Unix `uid 1000`, Windows `user S-1-5-...`: this process's user, on both sides.
    let me = ferry_transport::UserId::current().unwrap();
    assert_eq!(fields[2], me.to_string(), "{answer}");
    #[cfg(unix)]
    assert_eq!(me.uid(), rustix::process::geteuid().as_raw());
    assert_eq!(fields[3], "true", "{answer}");
    let limits = client.limits().expect("connected: the agreed limits");
    // The smaller of what each side offers.
    let ring = |c: u32, s: u32| c.min(s);
    assert_eq!(
        limits.client_to_server_ring_bytes,
        ring(
            ClientConfig::default().limits.client_to_server_ring_bytes,
            ServerConfig::default().limits.client_to_server_ring_bytes
        )
    );
}

#[test]
fn errors_answered_later_and_long_messages_reach_the_caller() {
    let dir = TestDir::new("errors");
    let _server = bind(&dir, WaitPolicy::default());
    let client = Client::connect_with(SERVICE, client_config(dir.path())).unwrap();
    match client.call(b"responder error") {
        Err(Error::Remote { code, message }) => {
            assert_eq!(code, ErrorCode(0x8000_0011));
            assert_eq!(message, "later, an error");
        }
        other => panic!("expected the responder's error, got {other:?}"),
    }
    let mut stream = client.stream(b"stream error").unwrap();
    assert_eq!(stream.next_item().unwrap().as_deref(), Some(&b"one"[..]));
    match stream.next_item() {
        Err(Error::Remote { code, message }) => {
            assert_eq!(code, ErrorCode(0x8000_0012));
            assert_eq!(message, "the stream failed");
        }
        other => panic!("expected the stream's error, got {other:?}"),
    }
    assert_eq!(
        stream.next_item().unwrap(),
        None,
        "a failed stream stays ended"
    );
    match client.call(b"long error") {
        Err(Error::Remote { code, message }) => {
            assert_eq!(code, ErrorCode(0x8000_0013));
            let full = long_message();
            assert!(
                message.len() < full.len() && full.starts_with(&message),
                "cut to a prefix of the message ({} of {} bytes)",
                message.len(),
                full.len()
            );
            assert!(message.len() >= 1000, "cut only as much as needed");
        }
        other => panic!("expected the long error, got {other:?}"),
    }
}

#[test]
fn a_client_at_max_in_flight_waits_for_a_slot_or_times_out() {
    let dir = TestDir::new("in-flight");
    let server = bind(&dir, WaitPolicy::default());
    let one = client_config(dir.path()).with_max_in_flight(1);
    let client = Client::connect_with(SERVICE, one).unwrap();
    let held = {
        let c = client.clone();
        std::thread::spawn(move || c.call(b"hold").map(|r| r.to_vec()))
    };
    assert!(eventually(Duration::from_secs(5), || {
        metric(&server.metrics_text(), "ferry_server_requests_in_flight") == Some(1.0)
    }));
    // The one slot is taken: a call with a deadline gives up, saying why.
    match client.call_timeout(b"x", Duration::from_millis(50)) {
        Err(e @ Error::TooManyInFlight(1)) => {
            assert!(e.to_string().contains("max_in_flight"), "{e}")
        }
        other => panic!(
            "expected TooManyInFlight(1), got {:?}",
            other.map(|r| r.to_vec())
        ),
    }
    // A call without one waits for the slot.
    let waiting = {
        let c = client.clone();
        std::thread::spawn(move || c.call(b"waited").map(|r| r.to_vec()))
    };
    // Release the held call through a second client (this one has no slot to spare).
    let other = Client::connect_with(SERVICE, client_config(dir.path())).unwrap();
    assert_eq!(&*other.call(b"release").unwrap(), b"ok");
    assert_eq!(held.join().unwrap().unwrap(), b"released");
    assert_eq!(waiting.join().unwrap().unwrap(), b"waited");
    assert_eq!(
        metric(
            &client.metrics_text(),
            r#"ferry_client_calls_failed_total{error="too_many_in_flight"}"#
        ),
        Some(1.0)
    );
}

#[test]
fn every_wait_policy_serves_on_both_sides() {
    for policy in [
        WaitPolicy::Spin,
        WaitPolicy::ParkOnly,
        WaitPolicy::Adaptive {
            spin: 10,
            yields: 2,
        },
    ] {
        let dir = TestDir::new("policy");
        let _server = bind(&dir, policy);
        let cfg = client_config(dir.path()).with_policy(policy);
        let client = Client::connect_with(SERVICE, cfg).unwrap();
        for i in 0..200u64 {
            let data = pattern(i, (i * 37 % 3000) as usize);
            assert_eq!(*client.call(&data).unwrap(), *data, "{policy:?} call {i}");
        }
    }
}

#[test]
fn a_notification_without_a_handler_is_counted_as_dropped() {
    let dir = TestDir::new("dropped");
    let _server = bind(&dir, WaitPolicy::default());
    let client = Client::connect_with(SERVICE, client_config(dir.path())).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || {
            client.stats().notifications_dropped == 1
        }),
        "the server's hello was not seen"
    );
    assert_eq!(client.stats().notifications, 0);
    let text = client.metrics_text();
    assert_eq!(
        metric(
            &text,
            r#"ferry_client_notifications_total{handled="false"}"#
        ),
        Some(1.0)
    );
}

#[test]
fn debug_output_names_the_parts_and_no_handler_internals() {
    let dir = TestDir::new("debug");
    let server = bind(&dir, WaitPolicy::default());
    let cfg = client_config(dir.path()).with_on_notification(|_: &[u8]| {});
    let text = format!("{cfg:?}");
    assert!(text.contains("on_notification: true"), "{text}");
    assert!(text.contains("max_in_flight"), "{text}");
    let text = format!("{server:?}");
    assert!(
        text.contains("endpoint") && text.contains("stats"),
        "{text}"
    );
    #[cfg(unix)]
    assert!(server.endpoint().socket_path().exists());
    assert!(
        text.contains(&server.endpoint().to_string()),
        "the Debug output names the endpoint: {text}"
    );
    let client = Client::connect_with(SERVICE, cfg).unwrap();
    let text = format!("{client:?}");
    assert!(text.contains("Client"), "{text}");
}

#[test]
fn a_server_config_no_client_could_use_is_rejected_at_bind() {
    let dir = TestDir::new("invalid");
    type Break = fn(&mut ServerConfig);
    let cases: [(&str, Break); 4] = [
        ("limits.max_partial_messages", |c| {
            c.limits.max_partial_messages = 0
        }),
        ("limits.max_message_size", |c| c.limits.max_message_size = 0),
        ("limits", |c| c.limits.server_to_client_ring_bytes = 5000),
        ("max_connections", |c| c.max_connections = 0),
    ];
    for (field, break_it) in cases {
        let mut cfg = server_config(dir.path());
        break_it(&mut cfg);
        match Server::bind(SERVICE, cfg, Api) {
            Err(e @ Error::InvalidConfig { .. }) => {
                let Error::InvalidConfig { field: f, .. } = &e else {
                    unreachable!()
                };
                assert_eq!(*f, field, "{e}");
                assert!(e.to_string().contains(field), "{e}");
            }
            other => panic!("{field}: expected InvalidConfig, got {other:?}"),
        }
    }
    // Nothing was bound: a valid config binds the name now.
    let _server = bind(&dir, WaitPolicy::default());
}

child_entry!(|role, dir| {
    assert_eq!(role, "default-dir");
    // FERRY_RUNTIME_DIR (set by the parent) is the default runtime directory.
    assert_eq!(std::env::var_os("FERRY_RUNTIME_DIR"), Some(dir.into()));
    let client = Client::connect(SERVICE).expect("connect with the default runtime directory");
    println!(
        "ANSWER {}",
        String::from_utf8_lossy(&client.call(b"hi").unwrap())
    );
});

/// `FERRY_RUNTIME_DIR` is the default runtime directory on Linux and macOS (docs/protocol.md
/// §11); on Windows there is no runtime directory, only the pipe name's optional scope.
#[cfg(unix)]
#[test]
fn connect_finds_the_server_in_the_default_runtime_directory() {
    let dir = TestDir::new("default-dir");
    let _server = bind(&dir, WaitPolicy::default());
    let mut child = spawn("default-dir", dir.path(), &[]);
    assert_eq!(
        wait_line(&mut child, "ANSWER ", Duration::from_secs(20)),
        "hi"
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "the child failed: {status}");
}
