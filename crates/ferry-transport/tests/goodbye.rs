//! The server says why it ends a connection: `Goodbye` with `PROTOCOL_VIOLATION` and a message
//! naming the problem before it cuts a client off, `Goodbye` with `SHUTTING_DOWN` on
//! `Server::shutdown`; the client's calls in flight fail with `Closed` saying which.

#![cfg(any(target_os = "linux", target_os = "macos"))]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use ferry_frame::{DecodeLimits, ErrorCode, ErrorPayload, HEADER_LEN, Hello, Kind};
use ferry_transport::{Error, Request, Responder, Server};

/// Reads frames from the server → client ring until a `Goodbye`; its code and message.
fn read_goodbye(
    rx: &mut ferry_ring::Consumer<RawRing>,
    conn: &RawConnection,
    within: Duration,
) -> Option<(u32, String)> {
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; 64 << 10];
    while Instant::now() < deadline {
        match rx.try_pop_into(&mut buf) {
            Ok(Some((len, _))) => {
                let f = ferry_frame::decode(&buf[..len], &DecodeLimits::default()).expect("frame");
                if f.header.kind() == Kind::Goodbye {
                    let p = ErrorPayload::decode(f.payload).expect("a Goodbye's error payload");
                    return Some((p.code.0, p.message.to_owned()));
                }
            }
            Ok(None) => {
                let _ = conn.server_bell.ring();
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("reading the server's ring: {e:?}"),
        }
    }
    None
}

#[test]
fn a_protocol_violation_is_answered_with_goodbye_and_its_reason() {
    let dir = TestDir::new("goodbye-violation");
    let server = echo_plus_one_server(&dir, "byeviolation");
    let conn = raw_handshake(
        dir.path(),
        "byeviolation",
        Hello::new(small_rings(ferry_frame::Limits::default())),
    )
    .expect("handshake");
    let (mut tx, mut rx) = conn.rings();
    // A request whose payload changed after its CRC was computed.
    let mut bad = frame(Kind::Request, 1, b"hello");
    bad[HEADER_LEN] ^= 0x20;
    let _ = tx.try_push(&bad).expect("room for one frame");
    let _ = conn.server_bell.ring();
    let (code, message) = read_goodbye(&mut rx, &conn, Duration::from_secs(10))
        .expect("the server said Goodbye before closing");
    assert_eq!(code, ErrorCode::PROTOCOL_VIOLATION.0, "{message}");
    assert!(
        message.to_lowercase().contains("crc"),
        "the message names the problem: {message}"
    );
    // And then it hung up.
    assert!(eventually(Duration::from_secs(5), || server
        .stats()
        .protocol_errors
        == 1));
    drop((tx, rx));
}

#[test]
fn shutdown_says_goodbye_and_calls_in_flight_fail_saying_so() {
    let dir = TestDir::new("goodbye-shutdown");
    // The handler keeps every request unanswered: the call stays in flight.
    let kept: Arc<Mutex<Vec<Responder>>> = Arc::default();
    let k = kept.clone();
    let server = Server::bind(
        "byeshutdown",
        server_config(dir.path()),
        move |r: Request<'_>| k.lock().unwrap().push(r.into_responder()),
    )
    .unwrap();
    // A raw client, to read the Goodbye's code itself.
    let raw = raw_handshake(
        dir.path(),
        "byeshutdown",
        Hello::new(ferry_frame::Limits::default()),
    )
    .expect("handshake");
    let (_tx, mut rx) = raw.rings();
    let client = ferry_transport::Client::connect_with("byeshutdown", client_config(dir.path()))
        .expect("connect");
    let c = client.clone();
    let call = std::thread::spawn(move || c.call_timeout(b"wait", Duration::from_secs(20)));
    assert!(
        eventually(Duration::from_secs(10), || !kept.lock().unwrap().is_empty()),
        "the call reached the handler"
    );
    server.shutdown();
    let r = call.join().unwrap();
    match &r {
        Err(Error::Closed(why)) => assert!(why.contains("SHUTTING_DOWN"), "{why}"),
        other => panic!("the call in flight ended with {other:?}"),
    }
    let (code, message) =
        read_goodbye(&mut rx, &raw, Duration::from_secs(5)).expect("the raw client got a Goodbye");
    assert_eq!(code, ErrorCode::SHUTTING_DOWN.0, "{message}");
    kept.lock().unwrap().clear();
}
