//! Metrics: exact counts after a known workload, errors by kind after provoking them, the text
//! exposition's syntax, reading a running server's metrics from another process through its
//! control socket (and being refused for a disallowed uid), and per-connection series that
//! disappear when their connection closes.

#![cfg(any(target_os = "linux", target_os = "macos", windows))]

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use ferry_frame::{ErrorCode, ErrorPayload, Hello, Kind};
use ferry_transport::{Client, Error, Request, Responder, Server, read_server_metrics};

const SERVICE: &str = "metrics";

/// Requests the child server holds unanswered (op `H`) until an `R` releases them.
static HELD: Mutex<Vec<Responder>> = Mutex::new(Vec::new());

/// The test server's handler: the first payload byte selects what to do.
fn handle(req: Request<'_>) {
    match req.payload().first() {
        Some(b'P') => panic!("handler asked to panic"),
        Some(b'D') => drop(req),
        Some(b'H') => HELD.lock().unwrap().push(req.into_responder()),
        Some(b'R') => {
            for r in HELD.lock().unwrap().drain(..) {
                r.respond(b"released").unwrap();
            }
            let _ = req.respond(b"ok");
        }
        Some(b'S') => {
            std::thread::sleep(Duration::from_millis(300));
            let _ = req.respond(b"slow");
        }
        _ => {
            let echo = req.payload();
            let _ = req.respond(echo);
        }
    }
}

child_entry!(|role, dir| {
    match role {
        "server" => {
            let mut cfg = server_config(&dir);
            cfg.limits = small_rings(cfg.limits);
            serve_until_stopped(Server::bind(SERVICE, cfg, handle).expect("bind"))
        }
        // Reads the metrics of the server in `dir` and says what happened.
        "query" => match read_server_metrics(SERVICE, Some(&dir)) {
            Ok(text) => println!("OUTCOME ok lines={}", text.lines().count()),
            Err(Error::Refused { code, message }) => {
                println!("OUTCOME refused code={:#x} message={message}", code.0)
            }
            Err(e) => println!("OUTCOME error {e}"),
        },
        other => panic!("unknown role {other}"),
    }
});

fn start_server(dir: &TestDir) -> std::process::Child {
    start_child("server", dir.path())
}

/// A client that times every call (the exact round-trip counts below rely on it).
fn connect(dir: &TestDir) -> Client {
    let mut cfg = client_config(dir.path());
    cfg.limits = small_rings(cfg.limits);
    cfg.round_trip_sample_every = 1;
    Client::connect_with(SERVICE, cfg).expect("connect")
}

/// The server's metrics, read from this process through the control socket.
fn server_metrics(dir: &TestDir) -> Metrics {
    let text = read_server_metrics(SERVICE, Some(dir.path())).expect("read the server's metrics");
    Metrics::parse(&text)
}

/// A parsed OpenMetrics text exposition: `series (name{labels}) → value`, and the families
/// declared with `# TYPE`.
#[derive(Debug)]
struct Metrics {
    samples: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
}

impl Metrics {
    /// Parses the text strictly: every line is a comment (`# HELP`, `# TYPE`, `# UNIT`, the final
    /// `# EOF`) or a sample `name{key="value",...} value` (labels optional) whose family was
    /// declared before it.
    fn parse(text: &str) -> Metrics {
        assert!(text.ends_with("# EOF\n"), "exposition ends with # EOF");
        let mut samples = BTreeMap::new();
        let mut types = BTreeMap::new();
        for line in text.lines() {
            if let Some(comment) = line.strip_prefix("# ") {
                let mut parts = comment.splitn(3, ' ');
                match parts.next() {
                    Some("TYPE") => {
                        let name = parts.next().expect("TYPE name").to_owned();
                        let ty = parts.next().expect("TYPE type").to_owned();
                        assert!(
                            ["counter", "gauge", "histogram"].contains(&ty.as_str()),
                            "{line}"
                        );
                        assert!(
                            types.insert(name, ty).is_none(),
                            "family declared twice: {line}"
                        );
                    }
                    Some("HELP" | "UNIT") => {}
                    Some("EOF") => assert_eq!(line, "# EOF"),
                    _ => panic!("unexpected comment line {line:?}"),
                }
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("value of {line:?} is not a number"));
            let name = match series.split_once('{') {
                Some((name, labels)) => {
                    let labels = labels.strip_suffix('}').expect("labels end with }");
                    for label in split_labels(labels) {
                        let (k, v) = label.split_once('=').expect("label is key=value");
                        assert!(is_name(k), "label name {k:?} in {line:?}");
                        assert!(
                            v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                            "label value {v:?} is quoted in {line:?}"
                        );
                    }
                    name
                }
                None => series,
            };
            assert!(is_name(name), "metric name {name:?}");
            let family = ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| types.contains_key(*f)))
                .unwrap_or(name);
            assert!(
                types.contains_key(family),
                "sample {line:?} has no # TYPE before it"
            );
            assert!(
                samples.insert(series.to_owned(), value).is_none(),
                "duplicate series {series}"
            );
        }
        assert!(!samples.is_empty());
        Metrics { samples, types }
    }

    /// The value of one series, written exactly as in the text.
    fn get(&self, series: &str) -> u64 {
        let v = *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("no series {series} in\n{:#?}", self.samples));
        assert!(v >= 0.0 && v.fract() == 0.0, "{series} = {v}");
        v as u64
    }

    /// Series whose text contains `needle`.
    fn count_matching(&self, needle: &str) -> usize {
        self.samples.keys().filter(|k| k.contains(needle)).count()
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// Splits `a="x",b="y"` at the commas outside quotes.
fn split_labels(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

#[test]
fn a_known_workload_gives_exact_counts_on_both_sides() {
    let dir = TestDir::new("workload");
    let mut server = start_server(&dir);
    let client = connect(&dir);
    const CALLS: u64 = 100;
    const NOTES: u64 = 10;
    let request = [b'E'; 64];
    for _ in 0..CALLS {
        assert_eq!(&*client.call(&request).unwrap(), &request[..]);
    }
    for _ in 0..NOTES {
        client.notify(&[b'n'; 10]).unwrap();
    }
    // One more call: its answer means the server has read every notification before it.
    client.call(b"E").unwrap();

    let m = server_metrics(&dir);
    let c = r#"connection="1""#;
    assert_eq!(
        m.get(&format!(
            "ferry_connection_messages_received_total{{{c},kind=\"request\"}}"
        )),
        CALLS + 1
    );
    assert_eq!(
        m.get(&format!(
            "ferry_connection_received_bytes_total{{{c},kind=\"request\"}}"
        )),
        CALLS * 64 + 1
    );
    assert_eq!(
        m.get(&format!(
            "ferry_connection_messages_received_total{{{c},kind=\"notification\"}}"
        )),
        NOTES
    );
    assert_eq!(
        m.get(&format!(
            "ferry_connection_received_bytes_total{{{c},kind=\"notification\"}}"
        )),
        NOTES * 10
    );
    assert_eq!(
        m.get(&format!(
            "ferry_connection_messages_sent_total{{{c},kind=\"response\"}}"
        )),
        CALLS + 1
    );
    assert_eq!(
        m.get(&format!(
            "ferry_connection_sent_bytes_total{{{c},kind=\"response\"}}"
        )),
        CALLS * 64 + 1
    );
    assert_eq!(
        m.get(&format!("ferry_connection_requests_in_flight{{{c}}}")),
        0
    );
    // The server's totals agree with its one connection.
    assert_eq!(
        m.get(r#"ferry_server_messages_received_total{kind="request"}"#),
        CALLS + 1
    );
    assert_eq!(
        m.get(r#"ferry_server_sent_bytes_total{kind="response"}"#),
        CALLS * 64 + 1
    );
    assert_eq!(m.get("ferry_server_connections_accepted_total"), 1);
    assert_eq!(m.get("ferry_server_connections_open"), 1);
    // This query is the first one the server answered (it counts after rendering).
    assert_eq!(m.get("ferry_server_metrics_queries_total"), 0);
    assert_eq!(
        server_metrics(&dir).get("ferry_server_metrics_queries_total"),
        1
    );
    assert_eq!(m.types["ferry_server_connections_open"], "gauge");
    assert_eq!(m.types["ferry_connection_messages_received"], "counter");

    // The client's side of the same traffic.
    let cm = Metrics::parse(&client.metrics_text());
    assert_eq!(
        cm.get(r#"ferry_client_calls_total{outcome="ok"}"#),
        CALLS + 1
    );
    assert_eq!(
        cm.get(r#"ferry_client_messages_sent_total{kind="request"}"#),
        CALLS + 1
    );
    assert_eq!(
        cm.get(r#"ferry_client_sent_bytes_total{kind="request"}"#),
        CALLS * 64 + 1
    );
    assert_eq!(
        cm.get(r#"ferry_client_messages_sent_total{kind="notification"}"#),
        NOTES
    );
    assert_eq!(
        cm.get(r#"ferry_client_messages_received_total{kind="response"}"#),
        CALLS + 1
    );
    assert_eq!(cm.get("ferry_client_round_trip_seconds_count"), CALLS + 1);
    assert_eq!(
        cm.get(r#"ferry_client_round_trip_seconds_bucket{le="+Inf"}"#),
        CALLS + 1
    );
    assert_eq!(cm.types["ferry_client_round_trip_seconds"], "histogram");
    assert_eq!(cm.get("ferry_client_connects_total"), 1);
    assert_eq!(cm.get("ferry_client_reconnections_total"), 0);

    // A request held by the handler is in flight until it is answered.
    let held = client.start_call(b"H").unwrap();
    assert!(eventually(Duration::from_secs(5), || {
        server_metrics(&dir).get("ferry_server_requests_in_flight") == 1
    }));
    let m = server_metrics(&dir);
    assert_eq!(
        m.get(&format!("ferry_connection_requests_in_flight{{{c}}}")),
        1
    );
    assert_eq!(&*client.call(b"R").unwrap(), b"ok");
    assert_eq!(&*held.wait().unwrap(), b"released");
    assert_eq!(
        server_metrics(&dir).get("ferry_server_requests_in_flight"),
        0
    );
    stop_child(&mut server);
}

/// Does the handshake by hand with `hello`; returns the server's refusal code, if any.
fn raw_hello(dir: &TestDir, kind: Kind, payload: &[u8]) -> Option<u32> {
    let raw = RawControl::connect(dir.path(), SERVICE);
    raw.send(kind, payload).unwrap();
    let (kind, payload) = raw.recv().unwrap()?;
    if kind == Kind::Refuse {
        return Some(ErrorPayload::decode(&payload).unwrap().code.0);
    }
    None
}

#[test]
fn errors_are_counted_by_kind() {
    let dir = TestDir::new("errors");
    let mut server = start_server(&dir);

    // Refusals, each with its reason.
    let mut hello = Hello::new(small_rings(ferry_frame::Limits::default()));
    hello.min_version = 7;
    hello.max_version = 9;
    assert_eq!(
        raw_hello(&dir, Kind::Hello, &hello.to_bytes()),
        Some(ErrorCode::VERSION_UNSUPPORTED.0)
    );
    assert_eq!(
        raw_hello(&dir, Kind::Ping, b"not a hello"),
        Some(ErrorCode::PROTOCOL_VIOLATION.0)
    );
    assert_eq!(
        raw_hello(&dir, Kind::Hello, &[1, 2, 3]),
        Some(ErrorCode::PROTOCOL_VIOLATION.0)
    );
    assert_eq!(
        raw_hello(&dir, Kind::MetricsQuery, b"with a payload"),
        Some(ErrorCode::PROTOCOL_VIOLATION.0)
    );
    // A client that sends no Hello: no Refuse can reach it. It says nothing and reads until the
    // server hangs up, so the server has taken the connection and ended the handshake before
    // the count below (on Unix the client's half-close is a hang-up the server sees at once;
    // Windows pipes have no half-close, so there the handshake timeout ends it).
    let raw = RawControl::connect(dir.path(), SERVICE);
    raw.finish_and_drain();
    drop(raw);

    // Handler failures, seen by the caller as remote errors.
    let client = connect(&dir);
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
    assert!(matches!(
        client.call(b"D"),
        Err(Error::Remote {
            code: ErrorCode::HANDLER_FAILED,
            ..
        })
    ));
    // A call that times out on the client.
    assert!(matches!(
        client.call_timeout(b"S", Duration::from_millis(20)),
        Err(Error::Timeout(_))
    ));
    // A call too large for the connection, refused before it is sent.
    assert!(matches!(
        client.call(&vec![0u8; 16 * 1024 * 1024 + 1]),
        Err(Error::TooLarge { .. })
    ));
    assert_eq!(&*client.call(b"Eok").unwrap(), b"Eok");

    let m = server_metrics(&dir);
    let refused = |reason: &str| {
        m.get(&format!(
            "ferry_server_connections_refused_total{{reason=\"{reason}\"}}"
        ))
    };
    assert_eq!(refused("version_unsupported"), 1);
    assert_eq!(refused("not_hello"), 1);
    assert_eq!(refused("bad_hello"), 1);
    assert_eq!(refused("bad_metrics_query"), 1);
    assert_eq!(refused("uid_not_allowed"), 0);
    assert_eq!(
        refused("handshake_failed"),
        1,
        "the client that sent no Hello is a failed handshake"
    );
    assert_eq!(
        m.get(r#"ferry_server_errors_total{kind="handler_panic"}"#),
        1
    );
    assert_eq!(
        m.get(r#"ferry_server_errors_total{kind="request_dropped"}"#),
        2
    );
    assert_eq!(m.get(r#"ferry_server_errors_total{kind="protocol"}"#), 0);
    // The panic and the drops were answered: nothing is left in flight.
    assert_eq!(
        m.get(r#"ferry_server_messages_sent_total{kind="error_response"}"#),
        3
    );

    let cm = Metrics::parse(&client.metrics_text());
    assert_eq!(
        cm.get(r#"ferry_client_calls_failed_total{error="remote"}"#),
        3
    );
    assert_eq!(
        cm.get(r#"ferry_client_calls_failed_total{error="timeout"}"#),
        1
    );
    assert_eq!(
        cm.get(r#"ferry_client_calls_failed_total{error="too_large"}"#),
        1
    );
    assert_eq!(cm.get(r#"ferry_client_calls_total{outcome="ok"}"#), 1);
    assert_eq!(
        client.stats().calls_failed,
        5,
        "ClientStats::calls_failed is the sum over the error kinds"
    );
    // Remote errors are round trips; the timeout and the local refusal are not.
    assert_eq!(cm.get("ferry_client_round_trip_seconds_count"), 4);
    stop_child(&mut server);
}

#[test]
fn a_corrupted_ring_is_a_protocol_error_and_closes_only_its_connection() {
    let dir = TestDir::new("corrupt");
    let mut server = start_server(&dir);
    let honest = connect(&dir);
    // A hand-made connection whose client → server ring we overwrite.
    let raw = raw_handshake(
        dir.path(),
        SERVICE,
        Hello::new(small_rings(ferry_frame::Limits::default())),
    )
    .expect("handshake");
    let (mem, server_bell) = (&raw.mem, &raw.server_bell);
    // Both rings' headers and cursors become garbage.
    for off in (0..mem.len()).step_by(8) {
        let word = mem.as_ptr().wrapping_add(off).cast::<u64>();
        // SAFETY: `off + 8 <= mem.len()` (the length is a multiple of the page size) and the
        // mapping is live and page-aligned, so `word` is valid and aligned for an 8-byte write;
        // we are the peer, and mean to corrupt the rings.
        unsafe { word.write_volatile(u64::MAX) };
    }
    server_bell.ring().unwrap();
    assert!(
        eventually(Duration::from_secs(5), || {
            server_metrics(&dir).get(r#"ferry_server_errors_total{kind="protocol"}"#) == 1
        }),
        "the server counted the corrupted ring as a protocol error"
    );
    let m = server_metrics(&dir);
    assert_eq!(
        m.get(r#"ferry_server_connections_closed_total{reason="protocol_error"}"#),
        1
    );
    assert_eq!(m.get("ferry_server_connections_open"), 1);
    // The corrupted connection's series are gone; the honest one's remain.
    assert_eq!(m.count_matching(r#"connection="2""#), 0);
    assert!(m.count_matching(r#"connection="1""#) > 0);
    assert_eq!(&*honest.call(b"Estill here").unwrap(), b"Estill here");
    drop(raw);
    stop_child(&mut server);
}

#[test]
fn another_process_reads_metrics_but_a_disallowed_uid_is_refused() {
    let dir = TestDir::new("query");
    // Allowed: a child process of our uid reads the text.
    let server = Server::bind(SERVICE, server_config(dir.path()), handle).unwrap();
    let mut child = spawn("query", dir.path(), &[]);
    let outcome = wait_line(&mut child, "OUTCOME", Duration::from_secs(20));
    let _ = child.wait();
    assert!(outcome.starts_with("ok lines="), "{outcome}");
    let lines: usize = outcome["ok lines=".len()..].parse().unwrap();
    assert!(lines > 20, "{outcome}");
    // The server counts a query after it answered it: the child may print first.
    let counted = Instant::now() + Duration::from_secs(10);
    let mut m = Metrics::parse(&server.metrics_text());
    while m.get("ferry_server_metrics_queries_total") == 0 && Instant::now() < counted {
        std::thread::sleep(Duration::from_millis(5));
        m = Metrics::parse(&server.metrics_text());
    }
    assert_eq!(m.get("ferry_server_metrics_queries_total"), 1);
    server.shutdown();

    // Disallowed: the server accepts only another user than ours (Windows: Wine runs every
    // process as one user, so a foreign SID).
    let mut cfg = server_config(dir.path());
    let me = allow_only_another_user(&mut cfg);
    let server = Server::bind(SERVICE, cfg, handle).unwrap();
    let mut child = spawn("query", dir.path(), &[]);
    let outcome = wait_line(&mut child, "OUTCOME", Duration::from_secs(20));
    let _ = child.wait();
    assert_eq!(
        outcome,
        format!("refused code=0x102 message={me} is not allowed to use this service")
    );
    let m = Metrics::parse(&server.metrics_text());
    assert_eq!(m.get("ferry_server_metrics_queries_total"), 0);
    assert_eq!(
        m.get(r#"ferry_server_connections_refused_total{reason="uid_not_allowed"}"#),
        1
    );
    // And in this process too, with the error the API documents.
    match read_server_metrics(SERVICE, Some(dir.path())) {
        Err(Error::Refused { code, message }) => {
            assert_eq!(code, ErrorCode::REFUSED);
            assert!(message.contains("is not allowed"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    server.shutdown();
    // No server: a clear NotRunning, on every OS.
    let nobody = read_server_metrics(SERVICE, Some(dir.path()));
    assert!(
        matches!(nobody, Err(Error::NotRunning { .. })),
        "{nobody:?}"
    );
}

#[test]
fn a_connections_series_disappear_when_it_closes() {
    let dir = TestDir::new("churn");
    let server = Server::bind(SERVICE, server_config(dir.path()), handle).unwrap();
    let churn = |n: u64| {
        for i in 0..n {
            let client = Client::connect_with(SERVICE, client_config(dir.path())).unwrap();
            let request = [&b"E"[..], &i.to_le_bytes()].concat();
            assert_eq!(&*client.call(&request).unwrap(), &request[..]);
            if i % 2 == 0 {
                client.close(); // Goodbye
            } // else dropped: the server sees the control socket hang up
        }
        assert!(eventually(Duration::from_secs(10), || {
            server.stats().connections_open == 0
        }));
    };
    churn(20);
    let after_20 = server.metrics_text();
    churn(300);
    let after_320 = server.metrics_text();
    let m = Metrics::parse(&after_320);
    // No per-connection series left, and the text did not grow (counter digits aside).
    assert_eq!(m.count_matching("connection="), 0, "{after_320}");
    assert_eq!(
        after_320.lines().count(),
        after_20.lines().count(),
        "the exposition has as many series after 320 connections as after 20"
    );
    assert!(after_320.len() <= after_20.len() + 64);
    // The totals kept everything the closed connections did.
    assert_eq!(m.get("ferry_server_connections_accepted_total"), 320);
    assert_eq!(
        m.get(r#"ferry_server_messages_received_total{kind="request"}"#),
        320
    );
    // Half said Goodbye, half just hung up. A Goodbye is followed at once by the hang-up, and
    // the server may see the hang-up first: only the sum is exact.
    let goodbye = m.get(r#"ferry_server_connections_closed_total{reason="goodbye"}"#);
    let hangup = m.get(r#"ferry_server_connections_closed_total{reason="client_hangup"}"#);
    assert_eq!(goodbye + hangup, 320);
    assert!(
        goodbye > 0 && hangup >= 160,
        "goodbye {goodbye}, hang-up {hangup}"
    );
    assert_eq!(m.get(r#"ferry_server_errors_total{kind="protocol"}"#), 0);
    // An open connection has its series while it is open.
    let client = Client::connect_with(SERVICE, client_config(dir.path())).unwrap();
    client.call(b"x").unwrap();
    let m = Metrics::parse(&server.metrics_text());
    assert_eq!(
        m.get(r#"ferry_connection_messages_received_total{connection="321",kind="request"}"#),
        1
    );
    drop(client);
    server.shutdown();
}

#[test]
fn a_client_counts_its_reconnection_and_keeps_its_totals() {
    let dir = TestDir::new("reconnect");
    let mut server = start_server(&dir);
    let client = connect(&dir);
    client.call(b"Eone").unwrap();
    kill9(&mut server);
    assert!(eventually(Duration::from_secs(5), || !client.is_connected()));
    let mut server = start_server(&dir);
    client.call(b"Etwo").unwrap();
    let m = Metrics::parse(&client.metrics_text());
    assert_eq!(m.get("ferry_client_connects_total"), 2);
    assert_eq!(m.get("ferry_client_reconnections_total"), 1);
    // Both connections' traffic: the first one's counts were kept when it was replaced.
    assert_eq!(
        m.get(r#"ferry_client_messages_sent_total{kind="request"}"#),
        2
    );
    assert_eq!(
        m.get(r#"ferry_client_messages_received_total{kind="response"}"#),
        2
    );
    assert_eq!(m.get(r#"ferry_client_calls_total{outcome="ok"}"#), 2);
    stop_child(&mut server);
}

#[test]
fn round_trips_are_sampled_per_thread_by_default() {
    let dir = TestDir::new("sampling");
    let server = Server::bind(SERVICE, server_config(dir.path()), handle).unwrap();
    let count = |client: &Client| {
        Metrics::parse(&client.metrics_text()).get("ferry_client_round_trip_seconds_count")
    };
    // A fresh thread: its first call is timed, then one in 8.
    let sampled = Client::connect_with(SERVICE, client_config(dir.path())).unwrap();
    let c = sampled.clone();
    std::thread::spawn(move || {
        for _ in 0..80 {
            c.call(b"E").unwrap();
        }
    })
    .join()
    .unwrap();
    assert_eq!(count(&sampled), 10);
    let m = Metrics::parse(&sampled.metrics_text());
    assert_eq!(m.get(r#"ferry_client_calls_total{outcome="ok"}"#), 80);
    // 0: no call is timed.
    let mut cfg = client_config(dir.path());
    cfg.round_trip_sample_every = 0;
    let untimed = Client::connect_with(SERVICE, cfg).unwrap();
    for _ in 0..20 {
        untimed.call(b"E").unwrap();
    }
    assert_eq!(count(&untimed), 0);
    server.shutdown();
}

#[test]
fn registries_hold_servers_and_clients_weakly() {
    let dir = TestDir::new("registry");
    let server = Server::bind(SERVICE, server_config(dir.path()), handle).unwrap();
    let client = Client::connect_with(SERVICE, client_config(dir.path())).unwrap();
    client.call(b"hi").unwrap();
    let mut registry = ferry_transport::prometheus_client::registry::Registry::default();
    server.register_metrics(&mut registry);
    client.register_metrics(&mut registry);
    let render = |r: &ferry_transport::prometheus_client::registry::Registry| {
        let mut out = String::new();
        ferry_transport::prometheus_client::encoding::text::encode(&mut out, r).unwrap();
        out
    };
    let m = Metrics::parse(&render(&registry));
    assert_eq!(m.get("ferry_server_connections_open"), 1);
    assert_eq!(m.get(r#"ferry_client_calls_total{outcome="ok"}"#), 1);
    drop(client);
    server.shutdown();
    let text = render(&registry);
    assert_eq!(text, "# EOF\n", "gone servers and clients export nothing");
}
