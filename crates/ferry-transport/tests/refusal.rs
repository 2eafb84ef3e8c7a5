//! A client of a uid the server does not allow must get the refusal, with its reason, even when
//! its Hello comes after the server decided. (Found by the soak's other-uid fault: the server
//! refused and closed before reading the Hello, so a client that sent its Hello a moment later
//! got EPIPE, "the peer closed the control socket", and never read the Refuse waiting for it.)

#![cfg(any(target_os = "linux", target_os = "macos", windows))]

mod common;

use std::time::Duration;

use common::*;
use ferry_frame::{ErrorCode, ErrorPayload, Hello, Kind};
use ferry_transport::{Client, Error, Server};

#[test]
fn a_refused_user_gets_the_reason_even_when_its_hello_is_late() {
    let dir = TestDir::new("refusal");
    let mut cfg = server_config(dir.path());
    let me = allow_only_another_user(&mut cfg);
    let _server = Server::bind("refusal", cfg, |r: ferry_transport::Request<'_>| {
        let _ = r.respond(b"");
    })
    .unwrap();
    for delay_ms in [0, 20, 100] {
        let raw = RawControl::connect(dir.path(), "refusal");
        std::thread::sleep(Duration::from_millis(delay_ms));
        let hello = Hello::new(ferry_frame::Limits::default()).to_bytes();
        raw.send(Kind::Hello, &hello)
            .unwrap_or_else(|e| panic!("Hello {delay_ms} ms after connecting: {e}"));
        let (kind, payload) = raw.recv().unwrap().expect("a Refuse frame");
        assert_eq!(kind, Kind::Refuse);
        let p = ErrorPayload::decode(&payload).unwrap();
        assert_eq!(p.code, ErrorCode::REFUSED);
        assert!(p.message.contains(&me), "{}", p.message);
    }
    // And through the library.
    let config = client_config(dir.path()).with_reconnect(false);
    match Client::connect_with("refusal", config) {
        Err(Error::Refused { message, .. }) => assert!(message.contains(&me), "{message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A server at `max_connections` refuses the next client as busy, saying so, and serves again
/// once a connection closed.
#[test]
fn a_server_at_its_connection_limit_refuses_with_busy() {
    let dir = TestDir::new("busy");
    let mut cfg = server_config(dir.path());
    cfg.max_connections = 1;
    let server = Server::bind("busy", cfg, |r: ferry_transport::Request<'_>| {
        let _ = r.respond(b"ok");
    })
    .unwrap();
    let no_retry = || client_config(dir.path()).with_reconnect(false);
    let first = Client::connect_with("busy", no_retry()).unwrap();
    assert_eq!(&*first.call(b"").unwrap(), b"ok");
    match Client::connect_with("busy", no_retry()) {
        Err(Error::Refused { code, message }) => {
            assert_eq!(code, ErrorCode::BUSY);
            assert!(
                message.contains("maximum of 1 connections"),
                "the reason names the limit: {message}"
            );
        }
        other => panic!("a second client beyond max_connections = 1: {other:?}"),
    }
    // Counted once the acceptor is done with it (the client may read the Refuse first).
    assert!(eventually(Duration::from_secs(5), || {
        metric(
            &server.metrics_text(),
            r#"ferry_server_connections_refused_total{reason="capacity"}"#,
        ) == Some(1.0)
    }));
    first.close();
    assert!(eventually(Duration::from_secs(5), || {
        metric(&server.metrics_text(), "ferry_server_connections_open") == Some(0.0)
    }));
    let again = Client::connect_with("busy", no_retry()).unwrap();
    assert_eq!(&*again.call(b"").unwrap(), b"ok");
}
