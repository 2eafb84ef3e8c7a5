//! 1000 concurrent connections from 10 client processes, served by one server; every call's
//! response is checked.

#![cfg(any(target_os = "linux", target_os = "macos", windows))]

mod common;

use std::time::Duration;

use common::*;
use ferry_transport::{Client, Limits, Request, Server};

const SERVICE: &str = "scale";
const PROCESSES: usize = 10;
const PER_PROCESS: usize = 100;
const CALLS: u64 = 20;

fn limits() -> Limits {
    Limits {
        client_to_server_ring_bytes: 4096,
        server_to_client_ring_bytes: 4096,
        ..Limits::default()
    }
}

child_entry!(|role, dir| {
    assert_eq!(role, "clients");
    let me: u64 = std::env::var("FERRY_TEST_INDEX").unwrap().parse().unwrap();
    // What is tested is that all 1000 are served at once, not how fast each connects: under
    // Wine on a loaded 2-CPU machine a Windows handshake (served one at a time there) can take
    // longer than the 2 s default, and 10 processes connect at once.
    let mut cfg = client_config(&dir).with_connect_timeout(Duration::from_secs(30));
    cfg.limits = limits();
    let clients: Vec<Client> = (0..PER_PROCESS)
        .map(|_| Client::connect_with(SERVICE, cfg.clone()).expect("connect"))
        .collect();
    println!("CONNECTED");
    // Wait for the go signal: every process connected, so all 1000 are open at once.
    let go = dir.join("go");
    while !go.exists() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut ok = 0u64;
    for round in 0..CALLS {
        for (i, c) in clients.iter().enumerate() {
            let seed = (me << 40) | ((i as u64) << 20) | round;
            let data = pattern(seed, 48);
            let resp = c.call(&data).expect("call");
            let want: Vec<u8> = data.iter().rev().copied().collect();
            assert_eq!(*resp, *want, "process {me} connection {i} round {round}");
            ok += 1;
        }
    }
    println!("OK {ok}");
    std::thread::sleep(Duration::from_secs(60));
});

#[test]
fn thousand_connections_from_ten_processes() {
    let dir = TestDir::new("scale");
    let mut cfg = server_config(dir.path());
    cfg.limits = limits();
    let server = Server::bind(SERVICE, cfg, |r: Request<'_>| {
        let out: Vec<u8> = r.payload().iter().rev().copied().collect();
        let _ = r.respond(&out);
    })
    .unwrap();
    let mut children: Vec<_> = (0..PROCESSES)
        .map(|i| {
            spawn(
                "clients",
                dir.path(),
                &[("FERRY_TEST_INDEX", i.to_string())],
            )
        })
        .collect();
    for c in &mut children {
        wait_line(c, "CONNECTED", Duration::from_secs(60));
    }
    let total = PROCESSES * PER_PROCESS;
    assert!(
        eventually(Duration::from_secs(10), || server.stats().connections_open
            == total),
        "open connections: {}",
        server.stats().connections_open
    );
    std::fs::create_dir_all(dir.path()).unwrap(); // Windows: a runtime dir is only a scope
    std::fs::write(dir.path().join("go"), b"").unwrap();
    // wait_line consumed stdout; poll the server's request counter instead, then check exits.
    let want = (total as u64) * CALLS;
    assert!(
        eventually(Duration::from_secs(120), || server.stats().requests >= want),
        "requests served: {} of {want}",
        server.stats().requests
    );
    for c in &mut children {
        // A child that failed an assertion has exited non-zero by now; the others sleep.
        if let Ok(Some(status)) = c.try_wait() {
            panic!("a client process exited early: {status}");
        }
        kill9(c);
    }
    assert_eq!(server.stats().requests, want);
    assert_eq!(server.stats().protocol_errors, 0);
}
