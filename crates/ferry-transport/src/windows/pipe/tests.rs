use std::sync::Arc;

use super::*;
use crate::windows::overlapped::millis;

fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "unit-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[test]
fn bind_connect_and_exchange_bytes_both_ways() {
    let service = unique("bytes");
    let listener = Arc::new(PipeListener::bind(&service).expect("bind"));
    assert!(listener.name().ends_with(&service));
    let l = listener.clone();
    let server = std::thread::spawn(move || {
        let pipe = l
            .accept(Some(Duration::from_secs(10)))
            .expect("accept")
            .expect("not stopped");
        assert_eq!(pipe.end(), End::Server);
        let mut buf = [0u8; 5];
        let mut got = 0;
        while got < 5 {
            got += pipe.read(&mut buf[got..]).expect("read");
        }
        assert_eq!(&buf, b"hello");
        pipe.write_all(b"world").expect("write");
        pipe.peer_pid().expect("client pid")
    });
    let client = connect(&service, Duration::from_secs(10)).expect("connect");
    assert_eq!(client.end(), End::Client);
    client.write_all(b"hello").expect("write");
    let mut buf = [0u8; 5];
    let mut got = 0;
    while got < 5 {
        got += client.read(&mut buf[got..]).expect("read");
    }
    assert_eq!(&buf, b"world");
    assert_eq!(server.join().expect("server"), std::process::id());
    assert_eq!(client.peer_pid().expect("server pid"), std::process::id());
    // The server thread dropped its end: the client sees the pipe broken, and reads EOF.
    assert!(client.is_broken());
    assert_eq!(client.read(&mut buf).expect("eof"), 0);
}

#[test]
fn a_second_bind_on_the_same_name_is_refused_clearly() {
    let service = unique("twice");
    let first = PipeListener::bind(&service).expect("first bind");
    let err = PipeListener::bind(&service).expect_err("second bind");
    match &err {
        Error::AlreadyRunning {
            endpoint: pipe,
            pid,
        } => {
            assert_eq!(pipe, first.name());
            assert_eq!(*pid, Some(std::process::id()));
        }
        other => panic!("expected AlreadyRunning, got {other}"),
    }
    assert!(err.to_string().contains("already serving"), "{err}");
    // Once the first listener is gone, the name is free again (a restarted server binds).
    drop(first);
    PipeListener::bind(&service).expect("bind after the first server went away");
}

#[test]
fn stop_ends_a_waiting_accept_at_once() {
    let listener = Arc::new(PipeListener::bind(&unique("stop")).expect("bind"));
    let l = listener.clone();
    let t = std::thread::spawn(move || {
        let started = Instant::now();
        let r = l.accept(None).expect("accept");
        (r.is_none(), started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(50));
    let stopped_at = Instant::now();
    listener.stop();
    let (none, _) = t.join().expect("acceptor");
    assert!(none, "a stopped accept returns None");
    let latency = stopped_at.elapsed();
    assert!(latency < Duration::from_secs(1), "stop took {latency:?}");
    assert!(listener.is_stopped());
    assert!(
        listener.accept(None).expect("accept").is_none(),
        "and so does every later one"
    );
}

#[test]
fn accept_and_read_time_out() {
    let service = unique("timeout");
    let listener = PipeListener::bind(&service).expect("bind");
    let err = listener
        .accept(Some(Duration::from_millis(20)))
        .expect_err("nobody connects");
    assert!(matches!(err, Error::Timeout(_)), "{err}");
    let client = connect(&service, Duration::from_secs(5)).expect("connect");
    let server = listener
        .accept(Some(Duration::from_secs(5)))
        .expect("accept after a timeout")
        .expect("not stopped");
    server.set_timeout(Some(Duration::from_millis(20)));
    let mut buf = [0u8; 4];
    let err = server.read(&mut buf).expect_err("nothing sent");
    assert!(matches!(err, Error::Timeout(_)), "{err}");
    // The cancelled read lost nothing: bytes sent afterwards arrive.
    client.write_all(b"late").expect("write");
    server.set_timeout(Some(Duration::from_secs(5)));
    let mut got = 0;
    while got < 4 {
        got += server.read(&mut buf[got..]).expect("read");
    }
    assert_eq!(&buf, b"late");
}

#[test]
fn connecting_to_a_name_nobody_serves_says_so() {
    let err = connect(&unique("nobody"), Duration::from_millis(100)).expect_err("no server");
    assert!(matches!(err, Error::NotRunning { .. }), "{err}");
    assert!(err.to_string().contains("is the server started"), "{err}");
}

#[test]
fn the_client_sees_a_server_hang_up() {
    let service = unique("hangup");
    let listener = PipeListener::bind(&service).expect("bind");
    let client = connect(&service, Duration::from_secs(5)).expect("connect");
    let server = listener
        .accept(Some(Duration::from_secs(5)))
        .unwrap()
        .unwrap();
    assert!(!client.is_broken());
    assert!(!server.is_broken());
    drop(server);
    assert!(client.is_broken());
    let err = client.write_all(b"x").expect_err("nobody reads");
    assert!(matches!(err, Error::Closed(_)), "{err}");
}

/// A connected pair of ends: (server's, client's).
fn pair(tag: &str) -> (Arc<Pipe>, Arc<Pipe>) {
    let service = unique(tag);
    let listener = PipeListener::bind(&service).expect("bind");
    let client = connect(&service, Duration::from_secs(5)).expect("connect");
    let server = listener
        .accept(Some(Duration::from_secs(5)))
        .expect("accept")
        .expect("not stopped");
    (Arc::new(server), Arc::new(client))
}

/// Waits up to `timeout` for the watch's event; how long it took, if it was signalled.
fn fires_within(watch: &HangupWatch, timeout: Duration) -> Option<Duration> {
    let started = Instant::now();
    // SAFETY: the watch's live event, borrowed for the call.
    let woke = unsafe {
        WaitForSingleObject(
            watch.event().as_raw_handle() as HANDLE,
            millis(Some(timeout)),
        )
    };
    (woke == WAIT_OBJECT_0).then(|| started.elapsed())
}

#[test]
fn a_watch_stays_quiet_while_both_ends_are_open() {
    let (server, client) = pair("quiet");
    let on_server = HangupWatch::start(server.clone()).expect("watch");
    let on_client = HangupWatch::start(client.clone()).expect("watch");
    assert_eq!(fires_within(&on_server, Duration::from_millis(100)), None);
    assert_eq!(fires_within(&on_client, Duration::from_millis(100)), None);
    assert!(!on_server.hung_up());
    assert!(!on_client.hung_up());
    assert!(!server.is_broken() && !client.is_broken());
}

#[test]
fn closing_the_client_fires_the_servers_watch() {
    let (server, client) = pair("close");
    let watch = HangupWatch::start(server).expect("watch");
    assert!(!watch.hung_up());
    drop(client);
    let took = fires_within(&watch, Duration::from_secs(1)).expect("fired within 1 s");
    assert!(
        watch.hung_up(),
        "fired after {took:?} but hung_up() says no"
    );
}

#[test]
fn the_servers_disconnect_fires_the_clients_watch() {
    let (server, client) = pair("disconnect");
    let on_client = HangupWatch::start(client.clone()).expect("watch");
    let on_server = HangupWatch::start(server.clone()).expect("watch");
    server.disconnect().expect("disconnect");
    let took = fires_within(&on_client, Duration::from_secs(1)).expect("fired within 1 s");
    assert!(
        on_client.hung_up(),
        "fired after {took:?} but hung_up() says no"
    );
    // The client's end is broken for good, while its handle is still open.
    assert!(client.is_broken());
    let err = client.write_all(b"x").expect_err("nobody listens");
    assert!(matches!(err, Error::Closed(_)), "{err}");
    // The server's own pending read ended too; disconnecting again is fine.
    assert!(fires_within(&on_server, Duration::from_secs(1)).is_some());
    server.disconnect().expect("disconnect again");
}

#[test]
fn a_byte_from_the_peer_fires_the_watch() {
    let (server, client) = pair("byte");
    let on_server = HangupWatch::start(server.clone()).expect("watch");
    let on_client = HangupWatch::start(client.clone()).expect("watch");
    client.write_all(b"!").expect("write");
    let took = fires_within(&on_server, Duration::from_secs(1)).expect("fired within 1 s");
    assert!(
        on_server.hung_up(),
        "fired after {took:?} but hung_up() says no"
    );
    // The other direction's watch saw nothing.
    assert!(!on_client.hung_up());
}

#[test]
fn a_watch_started_after_the_peer_left_fires_at_once() {
    let (server, client) = pair("late");
    drop(client);
    let watch = HangupWatch::start(server).expect("watch");
    assert!(fires_within(&watch, Duration::from_secs(1)).is_some());
    assert!(watch.hung_up());
}

#[test]
fn the_clients_disconnect_ends_its_own_watch_only() {
    let (server, client) = pair("client-disconnect");
    let on_client = HangupWatch::start(client.clone()).expect("watch");
    let on_server = HangupWatch::start(server.clone()).expect("watch");
    client.disconnect().expect("disconnect");
    assert!(fires_within(&on_client, Duration::from_secs(1)).is_some());
    // The server learns nothing until the client's handle closes.
    assert_eq!(fires_within(&on_server, Duration::from_millis(100)), None);
    drop(on_client);
    drop(client);
    assert!(fires_within(&on_server, Duration::from_secs(1)).is_some());
}

#[test]
fn dropping_a_pending_watch_is_clean_and_the_pipe_still_works() {
    let (server, client) = pair("drop-pending");
    for _ in 0..3 {
        let watch = HangupWatch::start(server.clone()).expect("watch");
        assert!(!watch.hung_up());
        drop(watch);
    }
    // The cancelled reads took nothing: bytes sent now all arrive.
    client.write_all(b"ab").expect("write");
    server.set_timeout(Some(Duration::from_secs(5)));
    let mut buf = [0u8; 2];
    let mut got = 0;
    while got < 2 {
        got += server.read(&mut buf[got..]).expect("read");
    }
    assert_eq!(&buf, b"ab");
    // The watches held the only other references: the pipe closes with the last one.
    assert_eq!(Arc::strong_count(&server), 1);
    drop(server);
    assert!(client.is_broken());
}
