//! A server at its descriptor limit: a new client gets either a working connection or a
//! refusal that says why, never a Welcome followed by a hang-up. (Found by the soak's fd-limit
//! fault: the server cloned a doorbell after sending the Welcome, and when that failed for lack
//! of a descriptor the client saw "the server went away" right after connecting.)
//!
//! Alone in its test binary: it exhausts the process's descriptors.

#![cfg(any(target_os = "linux", target_os = "macos"))]

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use ferry_transport::{Client, Error};

const SERVICE: &str = "fdlimit";

child_entry!(|role, dir| {
    assert_eq!(role, "client");
    // Wait until the server is at its limit.
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    let config = client_config(&dir).with_reconnect(false);
    let outcome = Client::connect_with(SERVICE, config).and_then(|c| c.call(b"a").map(|_| ()));
    match outcome {
        Ok(()) => println!("RESULT ok"),
        Err(Error::Refused { message, .. }) => println!("RESULT refused {message}"),
        Err(e) => println!("RESULT other {e}"),
    }
});

#[test]
fn at_the_descriptor_limit_a_new_client_is_served_or_refused_with_a_reason() {
    let dir = TestDir::new("fdlimit");
    let _server = echo_plus_one_server(&dir, SERVICE);
    // With k descriptors left the server can do k steps of the handshake: every k up to what a
    // whole connection needs, and one more. A connection takes 5 of the server's descriptors
    // while it is set up on Linux (socket, memfd, two eventfds, a clone of one), 8 on macOS
    // (socket, shared memory, three pipes' two ends each).
    #[cfg(target_os = "linux")]
    const MOST_SPARE: usize = 6;
    #[cfg(target_os = "macos")]
    const MOST_SPARE: usize = 9;
    for spare in 0..=MOST_SPARE {
        let mut child = child_command("client")
            .env("FERRY_RUNTIME_DIR", dir.path())
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        // Fill the table, then give back exactly `spare` descriptors.
        let mut filler = Vec::new();
        while let Ok(f) = std::fs::File::open("/dev/null") {
            filler.push(f);
        }
        filler.truncate(filler.len() - spare);
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
        let result = wait_line(&mut child, "RESULT ", Duration::from_secs(20));
        drop(filler);
        kill9(&mut child);
        // No descriptor even for accept(): the connection waits in the backlog and the
        // client's handshake times out, which is a clear error too.
        assert!(
            result == "ok"
                || result.starts_with("refused")
                || result.starts_with("other timed out"),
            "with {spare} descriptors to spare the client got: {result}"
        );
    }
    // And once descriptors are back, connections work.
    let client = Client::connect_with(SERVICE, client_config(dir.path())).unwrap();
    assert_eq!(&*client.call(b"a").unwrap(), b"b");
}
