//! Echo server: answers every request with its own payload.
//!
//! ```sh
//! cargo run --release -p ferry-transport --example echo_server
//! cargo run --release -p ferry-transport --example echo_client   # in another terminal
//! ```

#[cfg(any(target_os = "linux", target_os = "macos", windows))]
mod example {
    use ferry_transport::{Request, Server, ServerConfig};

    pub fn main() -> Result<(), Box<dyn std::error::Error>> {
        let name = std::env::args()
            .nth(1)
            .unwrap_or_else(|| "ferry-echo".into());
        let server = Server::bind(
            &name,
            ServerConfig::default().with_policy(policy_from_env()?),
            |req: Request<'_>| {
                // The payload is borrowed from the incoming ring and copied once, into the outgoing one.
                let payload = req.payload();
                req.respond(payload)
            },
        )?;
        println!("echo server on {}; Ctrl-C to stop", server.endpoint());
        // SIGINT or SIGTERM (Windows: Ctrl-C, Ctrl-Break, closing the console): stop accepting,
        // tell every client (Goodbye SHUTTING_DOWN: their calls in flight fail with `Closed`
        // saying so), wait for the workers, remove the socket.
        let (stop, stopped) = std::sync::mpsc::channel();
        ctrlc::set_handler(move || {
            let _ = stop.send(());
        })?;
        let _ = stopped.recv();
        println!("echo server: shutting down");
        server.shutdown();
        Ok(())
    }

    /// `FERRY_POLICY=spin|park|adaptive` (default adaptive) picks the wait policy.
    fn policy_from_env() -> Result<ferry_transport::WaitPolicy, Box<dyn std::error::Error>> {
        let name = std::env::var("FERRY_POLICY").unwrap_or_else(|_| "adaptive".into());
        Ok(name.parse()?)
    }
}

#[cfg(any(target_os = "linux", target_os = "macos", windows))]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    example::main()
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
fn main() {
    eprintln!("ferry-transport's client and server run on Linux, macOS and Windows only");
}
