//! Faults: clients killed mid-write, a hostile client scribbling over its shared memory, garbage
//! and wrong versions on the control socket. The server runs in this process so that its
//! counters and descriptor table can be checked; clients are separate processes.

#![cfg(any(target_os = "linux", target_os = "macos", windows))]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use ferry_frame::{ErrorCode, Hello};
use ferry_transport::{Client, Server};

const SERVICE: &str = "faults";

fn echo_server(dir: &TestDir) -> Server {
    echo_plus_one_server(dir, SERVICE)
}

child_entry!(|role, dir| {
    match role {
        // Connects by hand, then scribbles over both rings and rings the server's doorbell.
        "hostile" => {
            // Keep the whole connection: its control channel closing would be a hang-up,
            // not the corruption this test is about.
            let conn = raw_handshake(
                &dir,
                SERVICE,
                Hello::new(small_rings(ferry_frame::Limits::default())),
            )
            .expect("handshake");
            let (mem, server_bell) = (&conn.mem, &conn.server_bell);
            println!("CONNECTED");
            let mut x: u64 = 0x2545_F491_4F6C_DD1D;
            let end = Instant::now() + Duration::from_millis(300);
            while Instant::now() < end {
                for _ in 0..4096 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let off = (x as usize) % mem.len();
                    let byte = mem.as_ptr().wrapping_add(off);
                    // SAFETY: `off < mem.len()` and the mapping is live, so `byte` is valid for
                    // a write; we are the hostile peer and mean to corrupt the rings.
                    unsafe { byte.write_volatile(x as u8) };
                }
                let _ = server_bell.ring();
            }
            println!("DONE");
            std::thread::sleep(Duration::from_secs(30));
        }
        other => panic!("unknown role {other}"),
    }
});

#[test]
fn a_hostile_client_only_loses_its_own_connection() {
    let dir = TestDir::new("hostile");
    let server = echo_server(&dir);
    let honest = Client::connect_with(SERVICE, client_config(dir.path())).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let calls = {
        let honest = honest.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let data = pattern(n, (n % 200) as usize);
                let resp = honest.call(&data).expect("honest client's call");
                let want: Vec<u8> = data.iter().map(|b| b.wrapping_add(1)).collect();
                assert_eq!(*resp, *want, "honest call {n}");
                n += 1;
            }
            n
        })
    };
    let mut hostile = spawn("hostile", dir.path(), &[]);
    wait_line(&mut hostile, "DONE", Duration::from_secs(30));
    assert!(
        eventually(Duration::from_secs(5), || server.stats().protocol_errors
            >= 1),
        "the server detected the corruption"
    );
    assert!(eventually(Duration::from_secs(5), || server
        .stats()
        .connections_open
        == 1));
    // The honest client goes on being served after the hostile one is gone.
    let served = honest.stats().calls_ok;
    assert!(
        eventually(Duration::from_secs(10), || honest.stats().calls_ok
            >= served + 100),
        "the honest client was not served after the hostile one was cut off"
    );
    stop.store(true, Ordering::Relaxed);
    let n = calls.join().expect("honest client never failed");
    assert!(n > 0);
    kill9(&mut hostile);
}

#[test]
fn wrong_protocol_version_is_refused_with_a_clear_error() {
    let dir = TestDir::new("version");
    let _server = echo_server(&dir);
    let mut hello = Hello::new(small_rings(ferry_frame::Limits::default()));
    hello.min_version = 7;
    hello.max_version = 9;
    match raw_handshake(dir.path(), SERVICE, hello) {
        Err((code, message)) => {
            assert_eq!(code, ErrorCode::VERSION_UNSUPPORTED);
            assert!(
                message.contains("7..=9") && message.contains("upgrade"),
                "{message}"
            );
        }
        Ok(_) => panic!("a version-9 client was accepted"),
    }
    // Ring sizes that are not powers of two are refused too, saying why.
    let mut hello = Hello::new(ferry_frame::Limits::default());
    hello.limits.client_to_server_ring_bytes = 5_000;
    match raw_handshake(dir.path(), SERVICE, hello) {
        Err((code, message)) => {
            assert_eq!(code, ErrorCode::LIMITS_UNACCEPTABLE);
            assert!(message.contains("powers of two"), "{message}");
        }
        Ok(_) => panic!("a 5000-byte ring was accepted"),
    }
}

#[test]
fn garbage_on_the_control_socket_is_dropped_and_service_goes_on() {
    let dir = TestDir::new("garbage");
    let server = echo_server(&dir);
    for len in [1usize, 23, 24, 100, 5000] {
        let raw = RawControl::connect(dir.path(), SERVICE);
        raw.write_raw(&pattern(len as u64, len));
        raw.finish_and_drain(); // the server answers Refuse or just closes
    }
    assert!(eventually(Duration::from_secs(5), || server
        .stats()
        .connections_refused
        == 5));
    assert_eq!(server.stats().connections_open, 0);
    let client = Client::connect_with(SERVICE, client_config(dir.path())).unwrap();
    assert_eq!(&*client.call(b"a").unwrap(), b"b");
}
