//! The server the protocol conformance client (`conformance/python/client.py`) talks to: a real
//! Ferry server with the few behaviours a second implementation has to exercise.
//!
//! Requests (the payload is opaque to Ferry; this server looks at its start):
//! - `stream:<n>`: answers with `n` `StreamItem`s `item <i>`, then a `StreamEnd`;
//!   `stream:<n>:<size>`: items of `size` bytes, each byte of item `i` being `i mod 251`
//!   (enough of them fill the ring, so that the sender waits for space);
//! - `wait`: answers only when cancelled (`ErrorResponse` `CANCELLED`), or after 10 s with
//!   `not cancelled`;
//! - anything else: answered with the payload itself (echo, 0 B to the message size limit).
//!
//! A notification is answered with a notification `got:` + its payload.
//!
//! ```sh
//! cargo run -p ferry-transport --example conformance_server -- ferry-conformance /tmp/ferry-dir
//! ```
//!
//! Prints `ready <socket path>` once it listens, then serves until killed.

#[cfg(any(target_os = "linux", target_os = "macos"))]
mod example {
    use std::time::{Duration, Instant};

    use ferry_transport::{Connection, Handler, Request, Server, ServerConfig};

    struct Conformance;

    impl Handler for Conformance {
        fn on_request(&self, req: Request<'_>) {
            let payload = req.payload();
            if let Some(args) = payload.strip_prefix(b"stream:") {
                let args = String::from_utf8_lossy(args).into_owned();
                let mut args = args.split(':').map(|a| a.parse::<usize>().unwrap_or(0));
                let n = args.next().unwrap_or(0);
                let size = args.next();
                let stream = req.into_stream();
                std::thread::spawn(move || {
                    for i in 0..n {
                        let item = match size {
                            Some(size) => vec![(i % 251) as u8; size],
                            None => format!("item {i}").into_bytes(),
                        };
                        if stream.send(&item).is_err() {
                            return;
                        }
                    }
                    let _ = stream.finish();
                });
            } else if payload == b"wait" {
                let responder = req.into_responder();
                std::thread::spawn(move || {
                    let until = Instant::now() + Duration::from_secs(10);
                    while Instant::now() < until {
                        if responder.is_cancelled() {
                            return; // dropped when cancelled: `ErrorResponse` CANCELLED
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    let _ = responder.respond(b"not cancelled");
                });
            } else {
                req.respond(payload);
            }
        }

        fn on_notification(&self, connection: &Connection, payload: &[u8]) {
            let mut answer = b"got:".to_vec();
            answer.extend_from_slice(payload);
            let _ = connection.notify(&answer);
        }
    }

    pub fn main() -> Result<(), Box<dyn std::error::Error>> {
        let mut args = std::env::args().skip(1);
        let name = args.next().unwrap_or_else(|| "ferry-conformance".into());
        let config = ServerConfig {
            runtime_dir: args.next().map(Into::into),
            ..ServerConfig::default()
        };
        let server = Server::bind(&name, config, Conformance)?;
        println!("ready {}", server.paths().socket.display());
        loop {
            std::thread::park();
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "macos"))]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    example::main()
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn main() {
    eprintln!("the conformance server runs on Linux and macOS (the Python client speaks Unix)");
}
