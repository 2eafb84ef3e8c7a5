//! Server and clients in separate processes: every message kind, message sizes from 0 B to
//! 16 MiB, many threads on one client, cancellation, and the server's handler contract.

#![cfg(any(target_os = "linux", target_os = "macos", windows))]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use ferry_transport::ErrorCode;
use ferry_transport::{Client, Error, Request, Server};

const SERVICE: &str = "svc";

/// Cancellations the server observed (in the server process).
static CANCELLED: AtomicU64 = AtomicU64::new(0);
/// Notifications the server received (in the server process).
static NOTIFIED: AtomicU64 = AtomicU64::new(0);

fn transform(data: &[u8]) -> Vec<u8> {
    data.iter().map(|b| b.wrapping_add(1)).collect()
}

/// The test server's handler: the first payload byte selects what to do.
fn handle(req: Request<'_>) {
    let payload = req.payload();
    let (op, rest) = payload.split_first().map_or((0, &[][..]), |(o, r)| (*o, r));
    match op {
        b'E' => {
            let out = transform(rest);
            let _ = req.respond(&out);
        }
        b'X' => {
            let msg = String::from_utf8_lossy(rest).into_owned();
            let _ = req.respond_error(ErrorCode(0x8000_0001), &msg);
        }
        b'S' => {
            let count = u32::from_le_bytes(rest[..4].try_into().unwrap());
            let size = u32::from_le_bytes(rest[4..8].try_into().unwrap()) as usize;
            let stream = req.into_stream();
            std::thread::spawn(move || {
                for i in 0..count {
                    if stream.send(&pattern(u64::from(i), size)).is_err() {
                        return;
                    }
                }
                let _ = stream.finish();
            });
        }
        b'T' => {
            // 4 threads send 8 fragmented items each through one StreamSender at once.
            let stream = req.into_stream();
            std::thread::spawn(move || {
                std::thread::scope(|s| {
                    for t in 0..4u64 {
                        let stream = &stream;
                        s.spawn(move || {
                            for i in 0..8 {
                                if stream.send(&pattern(t * 100 + i, 200_000)).is_err() {
                                    return;
                                }
                            }
                        });
                    }
                });
                let _ = stream.finish();
            });
        }
        b'N' => {
            let conn = req.connection();
            conn.notify(rest).unwrap();
            let _ = req.respond(b"ok");
        }
        b'C' => {
            let _ = req.respond(&NOTIFIED.load(Ordering::SeqCst).to_le_bytes());
        }
        b'W' => {
            let responder = req.into_responder();
            std::thread::spawn(move || {
                let end = Instant::now() + Duration::from_secs(10);
                while !responder.is_cancelled() && Instant::now() < end {
                    std::thread::sleep(Duration::from_millis(1));
                }
                if responder.is_cancelled() {
                    CANCELLED.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        b'Q' => {
            let _ = req.respond(&CANCELLED.load(Ordering::SeqCst).to_le_bytes());
        }
        b'P' => panic!("handler asked to panic"),
        b'D' => drop(req),
        _ => {
            let _ = req.respond_error(ErrorCode(0x8000_0002), "unknown op");
        }
    }
}

struct Notify;
impl ferry_transport::Handler for Notify {
    fn on_request(&self, request: Request<'_>) {
        handle(request)
    }
    fn on_notification(&self, _c: &ferry_transport::Connection, payload: &[u8]) {
        if payload == b"count me" {
            NOTIFIED.fetch_add(1, Ordering::SeqCst);
        }
    }
}

child_entry!(|role, dir| {
    match role {
        "server" => {
            let mut cfg = server_config(&dir);
            cfg.limits = small_rings(cfg.limits);
            serve_until_stopped(Server::bind(SERVICE, cfg, Notify).expect("bind"))
        }
        other => panic!("unknown role {other}"),
    }
});

/// The request for the test server's `S` op: a stream of `count` items of `size` bytes.
fn stream_request(count: u32, size: u32) -> Vec<u8> {
    let mut req = vec![b'S'];
    req.extend(count.to_le_bytes());
    req.extend(size.to_le_bytes());
    req
}

fn start_server(dir: &TestDir) -> std::process::Child {
    start_child("server", dir.path())
}

fn connect(dir: &TestDir) -> Client {
    let mut cfg = client_config(dir.path());
    cfg.limits = small_rings(cfg.limits);
    Client::connect_with(SERVICE, cfg).expect("connect")
}

fn echo(client: &Client, data: &[u8]) -> Vec<u8> {
    let mut req = Vec::with_capacity(data.len() + 1);
    req.push(b'E');
    req.extend_from_slice(data);
    client.call(&req).expect("echo call").to_vec()
}

#[test]
fn message_sizes_from_empty_to_16_mib() {
    let dir = TestDir::new("sizes");
    let mut server = start_server(&dir);
    let client = connect(&dir);
    let ring = TEST_RING as usize;
    // The request carries one opcode byte, so these are the payload sizes the ring sees.
    for size in [
        0,
        1,
        ring - 1,
        ring,
        ring + 1,
        3 * ring + 7,
        16 * 1024 * 1024 - 1,
    ] {
        let data = pattern(size as u64, size);
        let got = echo(&client, &data);
        assert_eq!(got.len(), size, "response length for a {size}-byte message");
        assert!(
            got == transform(&data),
            "response content for a {size}-byte message"
        );
    }
    // Over the agreed maximum: refused locally with a clear error, nothing sent.
    let too_big = vec![b'E'; 16 * 1024 * 1024 + 1];
    match client.call(&too_big) {
        Err(Error::TooLarge { len, max }) => assert!(len > max),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // And the connection still works.
    assert_eq!(echo(&client, b"still alive"), transform(b"still alive"));
    stop_child(&mut server);
}

#[test]
fn every_message_kind() {
    let dir = TestDir::new("kinds");
    let mut server = start_server(&dir);
    let received = Arc::new(std::sync::Mutex::new(Vec::<Vec<u8>>::new()));
    let r = received.clone();
    let mut cfg = client_config(dir.path());
    cfg.limits = small_rings(cfg.limits);
    cfg.on_notification = Some(Arc::new(move |p: &[u8]| r.lock().unwrap().push(p.to_vec())));
    let client = Client::connect_with(SERVICE, cfg).unwrap();

    // Request → Response.
    assert_eq!(&*client.call(b"Eabc").unwrap(), b"bcd");
    // Request → ErrorResponse, with the handler's code and message.
    match client.call(b"Xno such method") {
        Err(Error::Remote { code, message }) => {
            assert_eq!(code, ErrorCode(0x8000_0001));
            assert_eq!(message, "no such method");
        }
        other => panic!("expected a remote error, got {other:?}"),
    }
    // A handler that panics or drops the request: the caller gets an error, never a hang.
    assert!(matches!(
        client.call(b"P"),
        Err(Error::Remote {
            code: ErrorCode::HANDLER_FAILED,
            ..
        })
    ));
    assert!(matches!(
        client.call(b"D"),
        Err(Error::Remote {
            code: ErrorCode::HANDLER_FAILED,
            ..
        })
    ));
    // Notification client → server (counted by the server).
    for _ in 0..3 {
        client.notify(b"count me").unwrap();
    }
    let count = u64::from_le_bytes(client.call(b"C").unwrap()[..8].try_into().unwrap());
    assert_eq!(
        count, 3,
        "the server saw every notification, in order before the call"
    );
    // Notification server → client (pushed before the response).
    assert_eq!(&*client.call(b"Npushed").unwrap(), b"ok");
    assert!(eventually(Duration::from_secs(5), || received
        .lock()
        .unwrap()
        .iter()
        .any(|p| p == b"pushed")));
    // Stream: items in order, then the end.
    let mut stream = client.stream(&stream_request(100, 1000)).unwrap();
    let mut n = 0u64;
    while let Some(item) = stream.next_item().unwrap() {
        assert_eq!(item, pattern(n, 1000), "stream item {n}");
        n += 1;
    }
    assert_eq!(n, 100);
    // Cancellation reaches the handler.
    let before = u64::from_le_bytes(client.call(b"Q").unwrap()[..8].try_into().unwrap());
    match client.call_timeout(b"W", Duration::from_millis(50)) {
        Err(Error::Timeout(_)) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(eventually(Duration::from_secs(5), || {
        u64::from_le_bytes(client.call(b"Q").unwrap()[..8].try_into().unwrap()) == before + 1
    }));
    // Cancelling a stream half way.
    let mut stream = client.stream(&stream_request(1_000_000, 64)).unwrap();
    for i in 0..10 {
        assert_eq!(stream.next_item().unwrap().unwrap(), pattern(i, 64));
    }
    stream.cancel();
    // The connection is still healthy afterwards.
    assert_eq!(&*client.call(b"Exyz").unwrap(), b"yz{");
    stop_child(&mut server);
}

#[test]
fn many_threads_share_one_client() {
    let dir = TestDir::new("threads");
    let mut server = start_server(&dir);
    let client = connect(&dir);
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let client = client.clone();
            std::thread::spawn(move || {
                for i in 0..2000u64 {
                    let data = pattern(t * 1_000_000 + i, (i % 300) as usize);
                    let mut req = vec![b'E'];
                    req.extend_from_slice(&data);
                    let resp = client.call(&req).expect("call");
                    assert!(
                        *resp == *transform(&data),
                        "thread {t} call {i} got someone else's answer"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(client.stats().calls_ok, 16_000);
    stop_child(&mut server);
}

/// Notifications a client sent just before it closed (or was dropped, or exited) were accepted:
/// `notify` returned `Ok` with them in the ring. The server must deliver them even when it sees
/// the control socket hang up before it has read the ring.
#[test]
fn notifications_sent_right_before_a_close_are_delivered() {
    let dir = TestDir::new("notify-close");
    let mut server = start_server(&dir);
    let counter = connect(&dir);
    let count = |c: &Client| u64::from_le_bytes(c.call(b"C").unwrap()[..8].try_into().unwrap());
    let mut expected = count(&counter);
    for round in 0..20 {
        let client = connect(&dir);
        for _ in 0..50 {
            client.notify(b"count me").unwrap();
        }
        if round % 2 == 0 {
            client.close();
        } else {
            drop(client);
        }
        expected += 50;
        assert!(
            eventually(Duration::from_secs(5), || count(&counter) == expected),
            "round {round}: the server counted {} notifications, {expected} were sent",
            count(&counter)
        );
    }
    stop_child(&mut server);
}

/// `StreamSender` is `Sync`: items sent from several threads at once must arrive whole, each
/// exactly once, in each thread's order, even when every item goes as several fragments.
#[test]
fn stream_items_sent_from_many_threads_stay_whole() {
    let dir = TestDir::new("stream-threads");
    let mut server = start_server(&dir);
    let client = connect(&dir);
    let mut stream = client.stream(b"T").unwrap();
    let mut next = [0u64; 4];
    let mut n = 0;
    while let Some(item) = stream.next_item().expect("stream item") {
        let t = (0..4u64)
            .find(|&t| next[t as usize] < 8 && item == pattern(t * 100 + next[t as usize], 200_000))
            .unwrap_or_else(|| panic!("item {n} ({} bytes) is not the next item of any sender thread (corrupted or out of order)", item.len()));
        next[t as usize] += 1;
        n += 1;
    }
    assert_eq!(next, [8; 4], "every thread's 8 items, each once");
    stop_child(&mut server);
}

/// A stream nobody reads fills its queue, and the thread reading the ring (the monitor, or a
/// caller leading for the others) waits for that reader: backpressure. The server's death must
/// still fail every other call in flight instead of leaving it waiting for the lagging reader.
#[test]
fn server_death_is_seen_while_a_stream_reader_lags() {
    let dir = TestDir::new("lagging-reader");
    let mut server = start_server(&dir);
    let client = connect(&dir);
    // 64 items of 64 KiB: four times the client's stream queue, never read.
    let mut stream = client.stream(&stream_request(64, 64 << 10)).unwrap();
    // No call is waiting, so the monitor thread reads the ring: it fills the queue and waits
    // for the reader, with the ring behind it full. That wait is the case under test.
    assert!(
        eventually(Duration::from_secs(10), || {
            metric(
                &client.metrics_text(),
                "ferry_client_stream_backpressure_waits_total",
            ) == Some(1.0)
        }),
        "the stream's queue never filled (the reading thread never waited for its consumer)"
    );
    let c = client.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(c.call(b"W")));
    // Kill the server once it holds the call (and the stream): a call in flight.
    assert!(
        eventually(Duration::from_secs(10), || server_metric(
            dir.path(),
            SERVICE,
            "ferry_server_requests_in_flight"
        ) == 2.0),
        "the server never had the call and the stream in flight"
    );
    let killed = Instant::now();
    kill9(&mut server);
    let r = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("a call in flight still waits 5 s after the server died (its death went unseen)");
    println!("in-flight call failed {:?} after SIGKILL", killed.elapsed());
    assert!(
        matches!(r, Err(Error::Closed(_))),
        "in-flight call after server death: {r:?}"
    );
    // The stream hands out what it queued, then ends with the same error; it never hangs.
    let mut items = 0;
    let end = loop {
        match stream.next_item() {
            Ok(Some(item)) => {
                assert_eq!(item, pattern(items, 64 << 10), "item {items}");
                items += 1;
            }
            other => break other,
        }
    };
    assert!(matches!(end, Err(Error::Closed(_))), "stream end: {end:?}");
    assert!(
        items < 64,
        "all 64 items arrived although the server was killed"
    );
}

#[test]
fn server_death_fails_calls_and_clients_reconnect() {
    let dir = TestDir::new("restart");
    let mut server = start_server(&dir);
    let client = connect(&dir);
    assert_eq!(echo(&client, b"a"), b"b");
    // A call in flight when the server dies fails with a clear error, never hangs.
    let c = client.clone();
    let waiting = std::thread::spawn(move || c.call(b"W"));
    assert!(
        eventually(Duration::from_secs(10), || server_metric(
            dir.path(),
            SERVICE,
            "ferry_server_requests_in_flight"
        ) == 1.0),
        "the server never had the call in flight"
    );
    let killed = Instant::now();
    kill9(&mut server);
    let r = waiting.join().unwrap();
    let detected = killed.elapsed();
    assert!(
        matches!(r, Err(Error::Closed(_))),
        "in-flight call after server death: {r:?}"
    );
    println!("in-flight call failed {detected:?} after SIGKILL");
    assert!(eventually(Duration::from_secs(2), || !client.is_connected()));
    // No server: a call fails (after trying to reconnect until its deadline).
    assert!(
        client
            .call_timeout(b"Ex", Duration::from_millis(30))
            .is_err()
    );
    // Restart: the next call reconnects.
    let mut server = start_child("server", dir.path());
    let bound = Instant::now();
    let resp = client
        .call_timeout(b"Eok", Duration::from_secs(5))
        .expect("call after restart");
    println!(
        "reconnected and answered {:?} after the new server's bind",
        bound.elapsed()
    );
    assert_eq!(&*resp, b"pl");
    assert!(client.stats().connects >= 2);
    stop_child(&mut server);
}

#[cfg(unix)]
#[test]
fn only_one_server_per_name_and_stale_sockets_are_replaced() {
    let dir = TestDir::new("bind");
    let mut server = start_server(&dir);
    match Server::bind(SERVICE, server_config(dir.path()), |r: Request<'_>| {
        let _ = r.respond(b"");
    }) {
        Err(Error::AlreadyRunning { .. }) => {}
        other => panic!("second bind: expected AlreadyRunning, got {other:?}"),
    }
    // SIGKILL leaves the socket file behind; the next bind replaces it.
    kill9(&mut server);
    assert!(
        dir.path().join("svc.sock").exists(),
        "a killed server leaves its socket file"
    );
    let s = Server::bind(SERVICE, server_config(dir.path()), |r: Request<'_>| {
        let _ = r.respond(b"fresh");
    })
    .expect("bind over a stale socket");
    let client = Client::connect_with(SERVICE, client_config(dir.path())).unwrap();
    assert_eq!(&*client.call(b"").unwrap(), b"fresh");
    drop(client);
    s.shutdown();
    assert!(
        !dir.path().join("svc.sock").exists(),
        "a clean shutdown removes the socket"
    );
    assert!(
        !dir.path().join("svc.lock").exists(),
        "a clean shutdown removes the lock file"
    );
}

/// Windows: a second server on the name is refused while the first lives; once it is killed
/// (its pipe goes with its process), the name can be bound again at once.
#[cfg(windows)]
#[test]
fn only_one_server_per_name_and_a_killed_servers_name_is_free_again() {
    let dir = TestDir::new("bind");
    let mut server = start_server(&dir);
    match Server::bind(SERVICE, server_config(dir.path()), |r: Request<'_>| {
        let _ = r.respond(b"");
    }) {
        Err(Error::AlreadyRunning { .. }) => {}
        other => panic!("second bind: expected AlreadyRunning, got {other:?}"),
    }
    kill9(&mut server);
    let s = Server::bind(SERVICE, server_config(dir.path()), |r: Request<'_>| {
        let _ = r.respond(b"fresh");
    })
    .expect("bind after the first server died");
    let client = Client::connect_with(SERVICE, client_config(dir.path())).unwrap();
    assert_eq!(&*client.call(b"").unwrap(), b"fresh");
    drop(client);
    s.shutdown();
}

#[cfg(windows)]
#[test]
fn connecting_without_a_server_says_so() {
    let dir = TestDir::new("nobody");
    let cfg = client_config(dir.path()).with_connect_timeout(Duration::from_millis(20));
    match Client::connect_with(SERVICE, cfg) {
        Err(e @ Error::NotRunning { .. }) => {
            assert!(
                e.to_string().contains("no Ferry server is running on"),
                "{e}"
            )
        }
        other => panic!("expected NotRunning, got {other:?}"),
    }
}

#[cfg(unix)]
#[test]
fn connecting_without_a_server_says_so() {
    let dir = TestDir::new("nobody");
    std::fs::create_dir_all(dir.path()).unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let cfg = client_config(dir.path()).with_connect_timeout(Duration::from_millis(20));
    match Client::connect_with(SERVICE, cfg) {
        Err(e @ Error::NotRunning { .. }) => {
            assert!(e.to_string().contains("no Ferry server is running"))
        }
        other => panic!("expected NotRunning, got {other:?}"),
    }
}

#[cfg(unix)]
#[test]
fn refuses_directories_other_users_can_write() {
    let dir = TestDir::new("perm");
    std::fs::create_dir_all(dir.path()).unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    match Server::bind(SERVICE, server_config(dir.path()), |r: Request<'_>| {
        let _ = r.respond(b"");
    }) {
        Err(e @ Error::UnsafeDirectory { .. }) => {
            assert!(e.to_string().contains("group or others can write"))
        }
        other => panic!("expected UnsafeDirectory, got {other:?}"),
    }
}

/// A client of a user not on the allow-list is refused, and told so by name (Windows: Wine
/// runs every process as one user, so the other user is an allow-list without ours).
#[test]
fn a_user_not_on_the_allow_list_is_refused() {
    let dir = TestDir::new("user");
    let mut cfg = server_config(dir.path());
    let me = allow_only_another_user(&mut cfg);
    let _server = Server::bind(SERVICE, cfg, |r: Request<'_>| r.respond(b"")).unwrap();
    match Client::connect_with(SERVICE, client_config(dir.path())) {
        Err(Error::Refused { code, message }) => {
            assert_eq!(code, ferry_frame::ErrorCode::REFUSED);
            assert!(message.contains(&me), "{message}");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[test]
fn pipelined_calls_from_one_thread_each_get_their_own_answer() {
    let dir = TestDir::new("pipelined");
    let mut server = start_server(&dir);
    let client = connect(&dir);
    // A window of 200 requests sent before any answer is collected, answers collected in
    // reverse order: each must be its own request's.
    let requests: Vec<Vec<u8>> = (0..200u64)
        .map(|i| {
            let mut r = vec![b'E'];
            r.extend(pattern(i, (i as usize * 37) % 3000));
            r
        })
        .collect();
    let pending: Vec<_> = requests
        .iter()
        .map(|r| client.start_call(r).expect("start_call"))
        .collect();
    let ids: std::collections::HashSet<u64> = pending.iter().map(|p| p.id()).collect();
    assert_eq!(
        ids.len(),
        pending.len(),
        "every call in flight has its own id"
    );
    for (request, call) in requests.iter().zip(pending).rev() {
        let response = call.wait().expect("pipelined answer");
        assert_eq!(&*response, &transform(&request[1..])[..]);
    }
    // A sliding window, the way a throughput-minded caller uses it.
    let mut window = std::collections::VecDeque::new();
    for i in 0..5_000u32 {
        let request = [b'E', (i % 251) as u8];
        window.push_back((request[1], client.start_call(&request).unwrap()));
        if window.len() == 32 {
            let (sent, call) = window.pop_front().unwrap();
            assert_eq!(&*call.wait().unwrap(), &[sent.wrapping_add(1)]);
        }
    }
    for (sent, call) in window {
        assert_eq!(&*call.wait().unwrap(), &[sent.wrapping_add(1)]);
    }
    assert_eq!(client.stats().calls_failed, 0);
    stop_child(&mut server);
}

#[test]
fn dropping_a_pending_call_cancels_it_and_frees_its_slot() {
    let dir = TestDir::new("pending-drop");
    let mut server = start_server(&dir);
    let mut cfg = client_config(dir.path());
    cfg.limits = small_rings(cfg.limits);
    cfg.max_in_flight = 4;
    let client = Client::connect_with(SERVICE, cfg).expect("connect");
    let q =
        |client: &Client| u64::from_le_bytes(client.call(b"Q").unwrap()[..8].try_into().unwrap());
    let before = q(&client);
    // `W` is answered only when cancelled (or after 10 s): dropping the pending call must reach
    // the handler as a cancellation.
    let slow = client.start_call(b"W").expect("start_call");
    drop(slow);
    assert!(
        eventually(Duration::from_secs(5), || q(&client) == before + 1),
        "the server never saw the dropped call's cancellation"
    );
    // Timing out behaves the same, and reports the timeout.
    let slow = client.start_call(b"W").expect("start_call");
    assert!(matches!(
        slow.wait_timeout(Duration::from_millis(20)),
        Err(Error::Timeout(_))
    ));
    assert!(eventually(Duration::from_secs(5), || q(&client) == before + 2));
    // All four slots are free again: four calls in flight at once still work.
    let calls: Vec<_> = (0..4u8)
        .map(|i| client.start_call(&[b'E', i]).expect("a slot"))
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(&*call.wait().unwrap(), &[i as u8 + 1]);
    }
    // The server going away fails a pending call with a clear error instead of hanging.
    let pending = client.start_call(b"W").expect("start_call");
    kill9(&mut server);
    match pending.wait_timeout(Duration::from_secs(5)) {
        Err(Error::Closed(why)) => assert!(!why.is_empty()),
        other => panic!("expected Closed after the server died, got {other:?}"),
    }
}
