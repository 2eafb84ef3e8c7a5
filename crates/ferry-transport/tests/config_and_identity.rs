//! The portable configuration and identity types: every `with_*` setter sets its field (and
//! nothing else), a server built from setters serves, `UserId` parses and prints the same way
//! on both sides of a refusal, and `Endpoint` names where the service lives.

#![cfg(any(target_os = "linux", target_os = "macos", windows))]

mod common;

use std::time::Duration;

use common::*;
use ferry_transport::{
    Client, ClientConfig, Error, Limits, Request, Server, ServerConfig, UserId, WaitPolicy,
};

#[test]
fn every_client_setter_sets_its_field() {
    let limits = small_rings(Limits::default());
    let cfg = ClientConfig::default()
        .with_limits(limits)
        .with_policy(WaitPolicy::ParkOnly)
        .with_max_in_flight(3)
        .with_connect_timeout(Duration::from_millis(1234))
        .with_reconnect(false)
        .with_runtime_dir("/some/dir")
        .with_round_trip_sample_every(5)
        .with_on_notification(|_: &[u8]| {});
    assert_eq!(cfg.limits, limits);
    assert_eq!(cfg.policy, WaitPolicy::ParkOnly);
    assert_eq!(cfg.max_in_flight, 3);
    assert_eq!(cfg.connect_timeout, Duration::from_millis(1234));
    assert!(!cfg.reconnect);
    assert_eq!(cfg.runtime_dir.as_deref(), Some("/some/dir".as_ref()));
    assert_eq!(cfg.round_trip_sample_every, 5);
    assert!(cfg.on_notification.is_some());
    // Nothing else moved.
    let d = ClientConfig::default();
    assert!(d.reconnect && d.on_notification.is_none() && d.runtime_dir.is_none());
}

#[test]
fn every_server_setter_sets_its_field_and_such_a_server_serves() {
    let dir = TestDir::new("setters");
    let me = UserId::current().unwrap();
    let limits = small_rings(Limits::default());
    let cfg = ServerConfig::default()
        .with_limits(limits)
        .with_policy(WaitPolicy::Spin)
        .with_workers(2)
        .with_allowed_users(vec![me.clone()])
        .with_max_connections(7)
        .with_handshake_timeout(Duration::from_millis(4321))
        .with_max_partial_bytes(1 << 24)
        .with_max_pending_handshakes(9)
        .with_runtime_dir(dir.path());
    assert_eq!(cfg.limits, limits);
    assert_eq!(cfg.policy, WaitPolicy::Spin);
    assert_eq!(cfg.workers, 2);
    assert_eq!(cfg.allowed_users, vec![me]);
    assert_eq!(cfg.max_connections, 7);
    assert_eq!(cfg.handshake_timeout, Duration::from_millis(4321));
    assert_eq!(cfg.max_partial_bytes, 1 << 24);
    assert_eq!(cfg.max_pending_handshakes, 9);
    assert_eq!(cfg.runtime_dir.as_deref(), Some(dir.path()));

    let server = Server::bind("setters", cfg, |r: Request<'_>| {
        let payload = r.payload();
        r.respond(payload)
    })
    .unwrap();
    let client = Client::connect_with("setters", client_config(dir.path())).unwrap();
    assert_eq!(&*client.call(b"served").unwrap(), b"served");
    assert_eq!(server.stats().connections_open, 1);
    assert_eq!(server.stats().requests, 1);
    assert_eq!(client.stats().calls_ok, 1);
}

#[test]
fn user_ids_parse_print_and_name_the_refused_peer() {
    let me = UserId::current().unwrap();
    // Printed, then parsed back from its bare form (a uid / a SID).
    #[cfg(unix)]
    {
        assert_eq!(me.to_string(), format!("uid {}", me.uid()));
        assert_eq!(me.uid().to_string().parse::<UserId>().unwrap(), me);
        assert_eq!(UserId::from_uid(me.uid()), me);
        assert_eq!(format!("{me:?}"), format!("UserId(uid {})", me.uid()));
    }
    #[cfg(windows)]
    {
        let sid = me.to_string().trim_start_matches("user ").to_owned();
        assert_eq!(sid.parse::<UserId>().unwrap(), me);
    }
    let bad = "not a user".parse::<UserId>().unwrap_err();
    assert!(bad.to_string().contains("not a user"), "{bad}");
    assert!(bad.to_string().contains("expected"), "{bad}");

    // A server that allows only someone else refuses us, naming us the same way.
    let dir = TestDir::new("other-user");
    let mut cfg = server_config(dir.path());
    let named = allow_only_another_user(&mut cfg);
    assert_eq!(named, me.to_string());
    let _server = Server::bind("otheruser", cfg, |r: Request<'_>| r.respond(b"")).unwrap();
    match Client::connect_with("otheruser", client_config(dir.path()).with_reconnect(false)) {
        Err(Error::Refused { code, message }) => {
            assert_eq!(code, ferry_transport::ErrorCode::REFUSED);
            assert!(message.contains(&me.to_string()), "{message}");
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn the_endpoint_names_where_the_service_lives() {
    let dir = TestDir::new("endpoint");
    let server = Server::bind("where", server_config(dir.path()), |r: Request<'_>| {
        r.respond(b"")
    })
    .unwrap();
    let endpoint = server.endpoint();
    #[cfg(unix)]
    {
        assert_eq!(endpoint.dir(), dir.path());
        assert_eq!(endpoint.socket_path(), dir.path().join("where.sock"));
        assert!(endpoint.lock_path().exists(), "the live server's lock");
        assert_eq!(
            endpoint.to_string(),
            endpoint.socket_path().display().to_string()
        );
    }
    #[cfg(windows)]
    {
        assert!(endpoint.pipe_name().starts_with(r"\\.\pipe\ferry-"));
        assert_eq!(endpoint.to_string(), endpoint.pipe_name());
    }
    assert_eq!(format!("{endpoint:?}"), format!("Endpoint({endpoint})"));
    // A second server on the name is refused, naming the same endpoint.
    match Server::bind("where", server_config(dir.path()), |r: Request<'_>| {
        r.respond(b"")
    }) {
        Err(e @ Error::AlreadyRunning { .. }) => {
            let Error::AlreadyRunning { endpoint: e2, .. } = &e else {
                unreachable!()
            };
            assert_eq!(*e2, server.endpoint().to_string(), "{e}");
            assert!(e.to_string().contains(e2.as_str()), "{e}");
        }
        other => panic!("second bind: {:?}", other.map(|_| ())),
    }
}
