//! Sockets that connect and then say nothing, or stop half way through their `Hello`, do not
//! delay anybody: the Unix acceptor serves every handshake at once, each with its own deadline
//! (see `src/acceptor.rs`). Before, handshakes were served one at a time, each waited out for
//! the handshake timeout: one silent socket delayed every honest client by 1 s, 50 locked them
//! out. The silent sockets are held by a child process; the server runs here, so that its
//! descriptors and memory can be read.

#![cfg(any(target_os = "linux", target_os = "macos"))]

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::*;
use ferry_frame::{Flags, HEADER_LEN, Hello, Kind};
use ferry_transport::{Client, Server, ServerConfig};

/// Silent or half-handshaken sockets the child holds.
const STALLED: usize = 1000;
/// Honest connect + first call, timed.
const TRIES: usize = 100;

/// The tests count this process's descriptors: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
#[ignore = "entry point of the child processes the other tests spawn"]
fn child_entry() {
    let Some((role, dir)) = child_role() else {
        return;
    };
    assert_eq!(role, "stall");
    let service: String = std::env::var("FERRY_TEST_SERVICE").unwrap();
    raise_fd_limit();
    let payload = Hello::new(ferry_frame::Limits::default()).to_bytes();
    let mut hello = vec![0u8; HEADER_LEN + payload.len()];
    hello[HEADER_LEN..].copy_from_slice(&payload);
    ferry_frame::encode_header_in_place(&mut hello, Kind::Hello, Flags::NONE, 0, payload.len())
        .expect("a Hello frame");
    let mut held = Vec::with_capacity(STALLED);
    for i in 0..STALLED {
        let mut s = UnixStream::connect(dir.join(format!("{service}.sock"))).expect("connect");
        // Every other one sends the first half of a Hello (a header cut short, or a header
        // without its payload), then stops.
        if i % 2 == 1 {
            let cut = if i % 4 == 1 { 10 } else { hello.len() - 5 };
            s.write_all(&hello[..cut]).expect("half a Hello");
        }
        held.push(s);
    }
    println!("HOLDING {}", held.len());
    std::thread::sleep(Duration::from_secs(120));
}

/// Raises this process's soft descriptor limit to the hard limit (1024 is a common soft limit;
/// the child holds a thousand sockets).
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        lim.current = lim.maximum;
        let _ = setrlimit(Resource::Nofile, lim);
    }
}

/// RssAnon of this process, kB (Linux); 0 elsewhere.
fn rss_anon_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("RssAnon:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Connects and makes a first call `TRIES` times; the latencies, sorted.
fn honest_tries(service: &str, dir: &TestDir) -> Vec<Duration> {
    let mut lat = Vec::with_capacity(TRIES);
    for i in 0..TRIES {
        let t = Instant::now();
        let client = Client::connect_with(service, client_config(dir.path()))
            .unwrap_or_else(|e| panic!("honest connect {i}: {e}"));
        let r = client.call(b"abc").expect("the first call");
        lat.push(t.elapsed());
        assert_eq!(&r[..], b"bcd");
        drop(client);
    }
    lat.sort();
    lat
}

fn p99(sorted: &[Duration]) -> Duration {
    sorted[(sorted.len() * 99).div_ceil(100) - 1]
}

fn server(dir: &TestDir, service: &str, timeout: Duration) -> Server {
    let mut cfg: ServerConfig = server_config(dir.path());
    cfg.limits = small_rings(cfg.limits);
    cfg.handshake_timeout = timeout;
    Server::bind(service, cfg, |r: ferry_transport::Request<'_>| {
        let out: Vec<u8> = r.payload().iter().map(|b| b.wrapping_add(1)).collect();
        let _ = r.respond(&out);
    })
    .expect("bind")
}

fn refused(server: &Server, reason: &str) -> u64 {
    let text = server.metrics_text();
    let key = format!("ferry_server_connections_refused_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// This process's descriptors once the server serves `open` connections and the clients
/// closed here have let go of theirs (their monitor threads end on their own).
fn settled_fds(server: &Server, open: usize) -> usize {
    assert!(eventually(Duration::from_secs(10), || server
        .stats()
        .connections_open
        == open));
    let mut last = fd_count();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = fd_count();
        if now == last {
            return now;
        }
        last = now;
    }
}

/// Waits until the server has taken all of the child's sockets (they are pending: the child
/// connected them, and the server accepted each into its poller).
fn wait_accepted(before: usize, timeout: Duration) {
    assert!(
        eventually(timeout, || fd_count() >= before + STALLED),
        "the server accepted only {} of the {STALLED} stalled sockets",
        fd_count().saturating_sub(before)
    );
}

#[test]
fn a_thousand_silent_sockets_do_not_delay_an_honest_client() {
    let _serial = serial();
    let dir = TestDir::new("stall");
    let service = "stall";
    let server = server(&dir, service, Duration::from_secs(60));
    let existing = Client::connect_with(service, client_config(dir.path())).unwrap();
    assert_eq!(&existing.call(b"x").unwrap()[..], b"y");
    // Baseline: the same tries with nobody stalling.
    let quiet = honest_tries(service, &dir);
    let fds_before = settled_fds(&server, 1);
    let rss_before = rss_anon_kb();
    let mut child = spawn(
        "stall",
        dir.path(),
        &[("FERRY_TEST_SERVICE", service.to_owned())],
    );
    wait_line(&mut child, "HOLDING", Duration::from_secs(60));
    wait_accepted(fds_before, Duration::from_secs(30));
    // Up to three rounds of tries: on a loaded machine one round's p99 can be one descheduled
    // try (the quiet baseline's p99 here reached 8 ms); the target holds if one round meets it.
    // Before the concurrent acceptor, every try waited behind all the stalled sockets, each
    // for the handshake timeout (60 s here): none could.
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let stalled = honest_tries(service, &dir);
        eprintln!(
            "honest connect + first call, {TRIES} tries: quiet p50 {:?} p99 {:?}; with {STALLED} stalled sockets p50 {:?} p99 {:?}",
            quiet[TRIES / 2],
            p99(&quiet),
            stalled[TRIES / 2],
            p99(&stalled)
        );
        rounds.push(p99(&stalled));
        if p99(&stalled) < Duration::from_millis(10) {
            break;
        }
    }
    assert!(
        rounds.iter().any(|&p| p < Duration::from_millis(10)),
        "p99 of an honest connect and first call with {STALLED} stalled sockets held open: \
         {rounds:?} in {} rounds (without them: {:?})",
        rounds.len(),
        p99(&quiet)
    );
    // The connection made before is unaffected.
    assert_eq!(&existing.call(b"x").unwrap()[..], b"y");
    // The stalled sockets go away: so do the server's descriptors and memory for them.
    kill9(&mut child);
    assert!(
        eventually(Duration::from_secs(10), || fd_count() <= fds_before),
        "{} descriptors after the stalled sockets closed, {fds_before} before",
        fd_count()
    );
    let rss_after = rss_anon_kb();
    assert!(
        rss_after <= rss_before + rss_before / 10 + 512,
        "RssAnon {rss_after} kB after the stalled sockets closed, {rss_before} kB before"
    );
    assert_eq!(server.stats().protocol_errors, 0);
    assert_eq!(refused(&server, "handshake_timeout"), 0);
}

#[test]
fn stalled_handshakes_time_out_and_give_their_descriptors_back() {
    let _serial = serial();
    let dir = TestDir::new("stall-timeout");
    let service = "stalltimeout";
    let timeout = Duration::from_secs(2);
    let server = server(&dir, service, timeout);
    let fds_before = settled_fds(&server, 0);
    let mut child = spawn(
        "stall",
        dir.path(),
        &[("FERRY_TEST_SERVICE", service.to_owned())],
    );
    wait_line(&mut child, "HOLDING", Duration::from_secs(60));
    // Each is refused at its deadline (with TIMEOUT, counted), while the child still holds
    // its end: the server's descriptors come back without the peers' help.
    assert!(
        eventually(Duration::from_secs(30), || refused(
            &server,
            "handshake_timeout"
        ) == STALLED as u64),
        "{} of {STALLED} stalled handshakes timed out",
        refused(&server, "handshake_timeout")
    );
    // (Plus two: our ends of the child's stdout and stdin pipes, open while it lives.)
    assert!(
        eventually(Duration::from_secs(5), || fd_count() <= fds_before + 2),
        "{} descriptors after the stalled handshakes timed out, {fds_before} before (+2 pipes)",
        fd_count()
    );
    // And the service goes on.
    let client = Client::connect_with(service, client_config(dir.path())).unwrap();
    assert_eq!(&client.call(b"abc").unwrap()[..], b"bcd");
    kill9(&mut child);
}

#[test]
fn past_the_pending_limit_the_oldest_handshake_is_refused() {
    let _serial = serial();
    let dir = TestDir::new("stall-limit");
    let service = "stalllimit";
    let mut cfg: ServerConfig = server_config(dir.path());
    cfg.max_pending_handshakes = 100;
    cfg.handshake_timeout = Duration::from_secs(60);
    let server = Server::bind(service, cfg, |r: ferry_transport::Request<'_>| {
        let _ = r.respond(b"ok");
    })
    .expect("bind");
    let mut child = spawn(
        "stall",
        dir.path(),
        &[("FERRY_TEST_SERVICE", service.to_owned())],
    );
    wait_line(&mut child, "HOLDING", Duration::from_secs(60));
    assert!(
        eventually(Duration::from_secs(30), || refused(
            &server,
            "handshakes_pending"
        ) >= (STALLED - 100) as u64),
        "{} refused for the pending limit",
        refused(&server, "handshakes_pending")
    );
    // An honest client still gets in: it is the newest.
    let client = Client::connect_with(service, client_config(dir.path())).unwrap();
    assert_eq!(&client.call(b"hi").unwrap()[..], b"ok");
    kill9(&mut child);
}
