//! Bugs the soak (`cargo xtask soak`) found, pinned down: a panicking notification handler on
//! the client, a client's `Goodbye` counted as a protocol error, and concurrent fragmented
//! notifications merged into one message.

#![cfg(any(target_os = "linux", target_os = "macos", windows))]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use ferry_transport::{Client, Connection, Handler, Request, Server};

/// Pushes a notification to the caller before answering, so that whoever reads the client's
/// ring (a caller leading for the others, or the monitor) runs the notification handler.
struct PushThenAnswer;

impl Handler for PushThenAnswer {
    fn on_request(&self, req: Request<'_>) {
        let payload = req.payload();
        let _ = req.connection().notify(payload);
        let _ = req.respond(payload);
    }
    fn on_notification(&self, _conn: &Connection, _payload: &[u8]) {}
}

#[test]
fn a_panicking_notification_handler_does_not_stall_calls() {
    let dir = TestDir::new("notepanic");
    let _server = Server::bind("notepanic", server_config(dir.path()), PushThenAnswer).unwrap();
    let handled = Arc::new(AtomicU64::new(0));
    let h = handled.clone();
    let client = Client::connect_with(
        "notepanic",
        client_config(dir.path()).with_on_notification(move |p: &[u8]| {
            h.fetch_add(1, Ordering::Relaxed);
            if p[0].is_multiple_of(2) {
                panic!("notification handler panics on purpose");
            }
        }),
    )
    .unwrap();
    const THREADS: usize = 4;
    const CALLS: usize = 300;
    let done = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (client, done) = (client.clone(), done.clone());
            std::thread::spawn(move || {
                for i in 0..CALLS {
                    let msg = [(t * CALLS + i) as u8, t as u8, 1, 2];
                    let r = client
                        .call_timeout(&msg, Duration::from_secs(10))
                        .expect("the call completes although a notification handler panicked");
                    assert_eq!(&r[..], &msg);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while done.load(Ordering::Relaxed) < (THREADS * CALLS) as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        done.load(Ordering::Relaxed),
        (THREADS * CALLS) as u64,
        "calls stalled after the notification handler panicked"
    );
    for t in threads {
        t.join().unwrap();
    }
    let panics = client.stats().notification_panics;
    assert!(panics > 0, "no handler panic was seen");
    assert!(eventually(Duration::from_secs(5), || {
        handled.load(Ordering::Relaxed) == (THREADS * CALLS) as u64
    }));
    // Every notification reached the handler; about half of them panicked.
    assert_eq!(client.stats().notifications, (THREADS * CALLS) as u64);
}

#[test]
fn a_goodbye_is_not_a_protocol_error() {
    let dir = TestDir::new("goodbye");
    let server = echo_plus_one_server(&dir, "goodbye");
    for _ in 0..5 {
        let client = Client::connect_with("goodbye", client_config(dir.path())).unwrap();
        assert_eq!(&client.call(b"a").unwrap()[..], b"b");
        client.close(); // sends Goodbye
    }
    assert!(eventually(Duration::from_secs(5), || {
        server.stats().connections_closed == 5
    }));
    assert_eq!(server.stats().protocol_errors, 0);
}

/// Pushes two large notifications at once from two threads.
struct TwoPushes;

impl Handler for TwoPushes {
    fn on_request(&self, req: Request<'_>) {
        let conn = req.connection();
        let pushers: Vec<_> = [1u8, 2]
            .into_iter()
            .map(|b| {
                let conn = conn.clone();
                std::thread::spawn(move || conn.notify(&vec![b; 3 << 20]).unwrap())
            })
            .collect();
        for p in pushers {
            p.join().unwrap();
        }
        let _ = req.respond(b"ok");
    }
    fn on_notification(&self, _conn: &Connection, _payload: &[u8]) {}
}

#[test]
fn concurrent_fragmented_notifications_stay_apart() {
    let dir = TestDir::new("twonotes");
    let mut cfg = server_config(dir.path());
    cfg.limits = small_rings(cfg.limits);
    let _server = Server::bind("twonotes", cfg, TwoPushes).unwrap();
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let g = got.clone();
    let client = Client::connect_with(
        "twonotes",
        client_config(dir.path()).with_on_notification(move |p: &[u8]| {
            let uniform = p.iter().all(|&b| b == p[0]);
            g.lock().unwrap().push((p.len(), p[0], uniform));
        }),
    )
    .unwrap();
    for _ in 0..5 {
        assert_eq!(&client.call(b"go").unwrap()[..], b"ok");
    }
    assert!(eventually(Duration::from_secs(10), || got
        .lock()
        .unwrap()
        .len()
        == 10));
    for (len, first, uniform) in got.lock().unwrap().iter() {
        assert_eq!(*len, 3 << 20);
        assert!(
            uniform,
            "notification starting with {first} holds another's bytes"
        );
    }
}
