//! The Windows control plane between two processes, run under Wine by `cargo xtask ci`.
//!
//! The test is the server; it re-executes this test binary (`--exact child_entry --ignored`,
//! with `FERRY_TEST_ROLE` naming the child's part) as the client. End to end: bind → connect →
//! identity checks both ways → `Hello`/`Welcome` → the server duplicates a file mapping and two
//! doorbell events into the client (`Handles`) → both map the memory and attach `ferry-ring`
//! rings → the client sends requests through its ring and rings the server's doorbell, the
//! server answers through the other ring and rings back → the server kills the client
//! (`TerminateProcess`) and times how long it takes to notice through the client's process
//! handle, and through the broken pipe → a second server on the same name is refused → once
//! the first server is gone, the name can be bound again (a restarted server).
//!
//! Wine runs every process as the same user, so a peer of another user cannot be staged here:
//! `a_client_with_a_foreign_allow_list_refuses_the_server` runs the refusal against a real peer
//! process by giving the client an allow-list without the user the server runs as.

#![cfg(windows)]

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_frame::{Flags, HEADER_LEN, Hello, Kind, Limits, ServerPolicy, Welcome, negotiate};
use ferry_notify::Doorbell;
use ferry_ring::{Consumer, Producer};
use ferry_transport::Error;
use ferry_transport::windows::control::{
    self, ConnectionHandles, connection_grants, peer_gone, recv_handles, send_handles,
};
use ferry_transport::windows::identity::{PeerAccess, Sid};
use ferry_transport::windows::pipe::{PipeListener, connect};
use ferry_transport::windows::shm::{SharedMemory, ShmRegion};

/// Requests the client sends (and answers it gets back).
const REQUESTS: u64 = 64;
/// Ring capacities: small, the test moves little.
const RING: u32 = 1 << 16;
/// Generous: starting a process under Wine takes a while.
const STEP: Duration = Duration::from_secs(30);

fn limits() -> Limits {
    Limits {
        client_to_server_ring_bytes: RING,
        server_to_client_ring_bytes: RING,
        ..Limits::default()
    }
}

/// Where the two rings sit (docs/protocol.md §11): client → server at 0, server → client at
/// the next multiple of 4096, the whole rounded up to 4096.
struct Layout {
    c2s: (usize, usize),
    s2c: (usize, usize),
    total: usize,
}

impl Layout {
    fn new(l: &Limits) -> Layout {
        let c2s_len = ferry_ring::region_size(l.client_to_server_ring_bytes as usize);
        let s2c_len = ferry_ring::region_size(l.server_to_client_ring_bytes as usize);
        let s2c_off = c2s_len.next_multiple_of(4096);
        Layout {
            c2s: (0, c2s_len),
            s2c: (s2c_off, s2c_len),
            total: (s2c_off + s2c_len).next_multiple_of(4096),
        }
    }

    fn regions(&self, mem: &Arc<SharedMemory>) -> (ShmRegion, ShmRegion) {
        (
            mem.region(self.c2s.0, self.c2s.1).expect("c2s region"),
            mem.region(self.s2c.0, self.s2c.1).expect("s2c region"),
        )
    }
}

fn unique_service(tag: &str) -> String {
    format!("wine-it-{tag}-{}", std::process::id())
}

fn spawn(role: &str, service: &str) -> Child {
    let exe = std::env::current_exe().expect("current_exe");
    Command::new(exe)
        .args([
            "--exact",
            "child_entry",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FERRY_TEST_ROLE", role)
        .env("FERRY_TEST_SERVICE", service)
        .env("FERRY_TEST_PARENT", std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the child")
}

/// Pushes one frame as one ring record.
fn push_frame(p: &mut Producer<ShmRegion>, kind: Kind, id: u64, payload: &[u8]) {
    let mut grant = p
        .try_reserve(HEADER_LEN + payload.len())
        .expect("ring space (the test never fills the ring)");
    let buf = grant.as_mut_slice();
    buf[HEADER_LEN..].copy_from_slice(payload);
    ferry_frame::encode_header_in_place(buf, kind, Flags::NONE, id, payload.len()).expect("encode");
    let _ = grant.commit(); // the peer is woken by its doorbell, rung after each batch
}

/// Pops `n` frames, waiting on `bell` while the ring is empty; returns (kind, id, payload).
fn pop_frames(c: &mut Consumer<ShmRegion>, bell: &Doorbell, n: usize) -> Vec<(Kind, u64, Vec<u8>)> {
    let deadline = Instant::now() + STEP;
    let mut out = Vec::new();
    while out.len() < n {
        match c.try_pop_vec().expect("ring not corrupted") {
            Some((rec, _wake)) => {
                let f = ferry_frame::decode(&rec, &ferry_frame::DecodeLimits::default())
                    .expect("a valid frame");
                out.push((
                    f.header.kind(),
                    f.header.correlation_id(),
                    f.payload.to_vec(),
                ));
            }
            None => {
                assert!(
                    Instant::now() < deadline,
                    "only {} of {n} frames after {STEP:?}",
                    out.len()
                );
                // Latching: a ring that came before this wait makes it return at once.
                let _ = bell.wait(Some(Duration::from_millis(100))).expect("wait");
            }
        }
    }
    out
}

fn request_payload(i: u64) -> Vec<u8> {
    format!("request {i}: {}", "x".repeat((i as usize * 37) % 300)).into_bytes()
}

#[test]
fn control_plane_end_to_end_with_a_child_client() {
    let me = Sid::current_user().expect("current user");
    let service = unique_service("e2e");
    let listener = PipeListener::bind(&service).expect("bind");
    let mut child = spawn("client", &service);

    // Accept, and identify the client before reading anything from it.
    let pipe = listener
        .accept(Some(STEP))
        .expect("accept")
        .expect("not stopped");
    pipe.set_timeout(Some(STEP));
    let client = pipe
        .peer_process(PeerAccess::WatchAndGrant)
        .expect("the client's process");
    assert_eq!(client.pid(), child.id(), "the pipe names the child");
    client
        .check_allowed("server", std::slice::from_ref(&me))
        .expect("the client runs as our user");

    // Handshake.
    let hello = control::recv_frame(&pipe).expect("recv").expect("a Hello");
    assert_eq!(hello.header.kind(), Kind::Hello);
    let hello = Hello::decode(&hello.payload).expect("valid Hello");
    let welcome = negotiate(&hello, &ServerPolicy::new(limits())).expect("negotiate");

    // The connection's memory and doorbells, made before the Welcome (what fails here should
    // be a Refuse that says why), then handed to the client right after it.
    let layout = Layout::new(&welcome.limits);
    let mem = Arc::new(SharedMemory::create(layout.total).expect("shared memory"));
    let (c2s, s2c) = layout.regions(&mem);
    ferry_ring::init(&c2s, RING as usize).expect("init c2s");
    ferry_ring::init(&s2c, RING as usize).expect("init s2c");
    let mut from_client = Consumer::attach(c2s).expect("attach c2s");
    let mut to_client = Producer::attach(s2c).expect("attach s2c");
    let server_bell = Doorbell::new_unnamed().expect("server doorbell");
    let client_bell = Doorbell::new_unnamed().expect("client doorbell");
    control::send_frame(&pipe, Kind::Welcome, 0, &welcome.to_bytes()).expect("send Welcome");
    send_handles(
        &pipe,
        &client,
        &connection_grants(&mem, &server_bell, &client_bell),
    )
    .expect("send the handles");

    // Requests in, answers out, through the rings.
    let requests = pop_frames(&mut from_client, &server_bell, REQUESTS as usize);
    for (i, (kind, id, payload)) in requests.iter().enumerate() {
        assert_eq!(*kind, Kind::Request);
        assert_eq!(*id, i as u64);
        assert_eq!(*payload, request_payload(*id));
        push_frame(
            &mut to_client,
            Kind::Response,
            *id,
            &payload.to_ascii_uppercase(),
        );
    }
    client_bell.ring().expect("ring the client");
    let verdict = pop_frames(&mut from_client, &server_bell, 1);
    assert_eq!(verdict[0].0, Kind::Notification);
    assert_eq!(verdict[0].2, b"all answers verified");

    // Dead-peer detection. The goal is 10 ms on Windows; Wine's process teardown goes through
    // wineserver and is slower, so the bound asserted here is generous.
    assert!(!peer_gone(&pipe, &client), "the client is alive");
    let killed = Instant::now();
    child.kill().expect("TerminateProcess");
    let via_process = loop {
        if client.has_exited() {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < STEP,
            "the process handle never signalled"
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    let via_pipe = loop {
        if pipe.is_broken() {
            break killed.elapsed();
        }
        assert!(killed.elapsed() < STEP, "the pipe never broke");
        std::thread::sleep(Duration::from_millis(1));
    };
    println!(
        "dead-peer detection after TerminateProcess: process handle {:.2} ms, broken pipe {:.2} ms \
         (polling every 1 ms)",
        via_process.as_secs_f64() * 1e3,
        via_pipe.as_secs_f64() * 1e3
    );
    assert!(
        via_process < Duration::from_secs(1),
        "process handle took {via_process:?}"
    );
    assert!(peer_gone(&pipe, &client));
    let _ = child.wait();

    // A second server on the same name is refused, naming the live one.
    let err = PipeListener::bind(&service).expect_err("a second server");
    match &err {
        Error::AlreadyServed { pipe: name, pid } => {
            assert_eq!(name, listener.name());
            assert_eq!(*pid, Some(std::process::id()));
        }
        other => panic!("expected AlreadyServed, got: {other}"),
    }
    println!("second bind: {err}");

    // The server goes away; a restarted one binds the same name.
    drop(pipe);
    drop(listener);
    let again = PipeListener::bind(&service).expect("bind after the first server is gone");
    assert!(again.name().ends_with(&service));
}

#[test]
fn a_client_with_a_foreign_allow_list_refuses_the_server() {
    let service = unique_service("picky");
    let listener = PipeListener::bind(&service).expect("bind");
    let mut child = spawn("picky-client", &service);
    let pipe = listener
        .accept(Some(STEP))
        .expect("accept")
        .expect("not stopped");
    pipe.set_timeout(Some(STEP));
    // The client hangs up without sending anything: the server reads a clean end of stream.
    assert!(
        control::recv_frame(&pipe).expect("end of stream").is_none(),
        "the client sends nothing to a server it refused"
    );
    let status = child.wait().expect("wait");
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read the child's output");
    assert!(status.success(), "child failed: {out}");
    assert!(
        out.contains("refused: peer process") && out.contains("not allowed to talk to this client"),
        "{out}"
    );
}

/// The child's part; runs only when a parent test spawns it.
#[test]
#[ignore = "child process entry point, spawned by the other tests"]
fn child_entry() {
    let Ok(role) = std::env::var("FERRY_TEST_ROLE") else {
        return;
    };
    let service = std::env::var("FERRY_TEST_SERVICE").expect("FERRY_TEST_SERVICE");
    let parent: u32 = std::env::var("FERRY_TEST_PARENT")
        .expect("FERRY_TEST_PARENT")
        .parse()
        .expect("a pid");
    match role.as_str() {
        "client" => client_role(&service, parent),
        "picky-client" => picky_client_role(&service, parent),
        other => panic!("unknown role {other}"),
    }
}

fn client_role(service: &str, parent: u32) {
    let me = Sid::current_user().expect("current user");
    let pipe = connect(service, STEP).expect("connect");
    pipe.set_timeout(Some(STEP));
    let server = pipe
        .peer_process(PeerAccess::Watch)
        .expect("the server's process");
    assert_eq!(server.pid(), parent, "the pipe names the parent");
    server
        .check_allowed("client", std::slice::from_ref(&me))
        .expect("the server runs as our user");

    let hello = Hello::new(limits());
    control::send_frame(&pipe, Kind::Hello, 0, &hello.to_bytes()).expect("send Hello");
    let welcome = control::recv_frame(&pipe)
        .expect("recv")
        .expect("a Welcome");
    assert_eq!(welcome.header.kind(), Kind::Welcome);
    let welcome = Welcome::decode(&welcome.payload).expect("valid Welcome");
    hello.check_welcome(&welcome).expect("acceptable Welcome");
    let handles = recv_handles(&pipe).expect("the Handles frame");
    let handles = ConnectionHandles::adopt(&handles).expect("adopt the handles");

    let layout = Layout::new(&welcome.limits);
    let mem = Arc::new(
        SharedMemory::open(handles.shared_memory, layout.total).expect("map the server's memory"),
    );
    let (c2s, s2c) = layout.regions(&mem);
    let mut to_server = Producer::attach(c2s).expect("attach c2s");
    let mut from_server = Consumer::attach(s2c).expect("attach s2c");
    let server_bell = Doorbell::from_owned_handle(handles.server_doorbell).expect("server bell");
    let my_bell = Doorbell::from_owned_handle(handles.client_doorbell).expect("client bell");

    for i in 0..REQUESTS {
        push_frame(&mut to_server, Kind::Request, i, &request_payload(i));
    }
    server_bell.ring().expect("ring the server");
    let answers = pop_frames(&mut from_server, &my_bell, REQUESTS as usize);
    for (i, (kind, id, payload)) in answers.iter().enumerate() {
        assert_eq!(*kind, Kind::Response);
        assert_eq!(*id, i as u64);
        assert_eq!(*payload, request_payload(*id).to_ascii_uppercase());
    }
    push_frame(
        &mut to_server,
        Kind::Notification,
        0,
        b"all answers verified",
    );
    server_bell.ring().expect("ring the server");
    // Wait to be killed: the pipe stays open until then (a read returns 0 only if the server
    // closes first, which this test does not do).
    let mut b = [0u8; 1];
    pipe.set_timeout(None);
    let _ = pipe.read(&mut b);
}

fn picky_client_role(service: &str, parent: u32) {
    let pipe = connect(service, STEP).expect("connect");
    let server = pipe
        .peer_process(PeerAccess::Watch)
        .expect("the server's process");
    assert_eq!(server.pid(), parent);
    // An allow-list without the user the server runs as (under Wine, everyone's user).
    let foreign: Sid = "S-1-5-21-1111111111-2222222222-3333333333-1001"
        .parse()
        .expect("a SID");
    let err = server
        .check_allowed("client", &[foreign])
        .expect_err("the server's user is not on the list");
    assert!(matches!(err, Error::PeerSidNotAllowed { .. }), "{err}");
    println!("refused: {err}");
    // Hang up without a Hello.
}
