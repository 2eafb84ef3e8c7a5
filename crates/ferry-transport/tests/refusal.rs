//! A client of a uid the server does not allow must get the refusal, with its reason, even when
//! its Hello comes after the server decided. (Found by the soak's other-uid fault: the server
//! refused and closed before reading the Hello, so a client that sent its Hello a moment later
//! got EPIPE, "the peer closed the control socket", and never read the Refuse waiting for it.)

#![cfg(any(target_os = "linux", target_os = "macos"))]

mod common;

use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::*;
use ferry_frame::{ErrorCode, ErrorPayload, Hello, Kind};
use ferry_transport::unix::control;
use ferry_transport::{Client, ClientConfig, Error, Server};

#[test]
fn a_refused_uid_gets_the_reason_even_when_its_hello_is_late() {
    let dir = TestDir::new("refusal");
    let me = rustix::process::geteuid().as_raw();
    let mut cfg = server_config(dir.path());
    cfg.allowed_uids = vec![me.wrapping_add(1)];
    let _server = Server::bind("refusal", cfg, |r: ferry_transport::Request<'_>| {
        r.respond(b"")
    })
    .unwrap();
    for delay_ms in [0, 20, 100] {
        let sock = UnixStream::connect(dir.path().join("refusal.sock")).unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let hello = Hello::new(ferry_frame::Limits::default()).to_bytes();
        control::send_frame(&sock, Kind::Hello, 0, &hello, &[])
            .unwrap_or_else(|e| panic!("Hello {delay_ms} ms after connecting: {e}"));
        let frame = control::recv_frame(&sock).unwrap().expect("a Refuse frame");
        assert_eq!(frame.header.kind(), Kind::Refuse);
        let p = ErrorPayload::decode(&frame.payload).unwrap();
        assert_eq!(p.code, ErrorCode::REFUSED);
        assert!(p.message.contains(&format!("uid {me}")), "{}", p.message);
    }
    // And through the library.
    let config = ClientConfig {
        reconnect: false,
        ..client_config(dir.path())
    };
    match Client::connect_with("refusal", config) {
        Err(Error::Refused { message, .. }) => assert!(message.contains(&format!("uid {me}"))),
        other => panic!("expected a refusal, got {other:?}"),
    }
}
