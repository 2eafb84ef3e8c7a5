//! The "AI engine" half of the raw-bytes editor ↔ engine example (the typed pair, on `ferry-rpc`,
//! is `crates/ferry-rpc/examples/engine.rs` and `editor.rs`): answers completion requests and
//! streams chat answers token by token, stopping early when the editor cancels.
//!
//! ```sh
//! cargo run --release -p ferry-transport --example raw_engine &
//! cargo run --release -p ferry-transport --example raw_editor
//! ```

#[cfg(any(target_os = "linux", target_os = "macos", windows))]
mod example {
    use std::time::Duration;

    use ferry_transport::{ErrorCode, Request, Server, ServerConfig};

    pub fn main() -> Result<(), Box<dyn std::error::Error>> {
        let server = Server::bind(
            "ferry-engine",
            ServerConfig::default(),
            |req: Request<'_>| {
                let text = String::from_utf8_lossy(req.payload()).into_owned();
                if let Some(prefix) = text.strip_prefix("complete:") {
                    // A completion: answered inline, on the worker thread.
                    let answer = format!("{prefix}_completed()");
                    let _ = req.respond(answer.as_bytes());
                } else if let Some(prompt) = text.strip_prefix("chat:") {
                    // A chat answer: streamed from a thread of its own, token by token.
                    let stream = req.into_stream();
                    let prompt = prompt.to_owned();
                    std::thread::spawn(move || {
                        for (i, word) in prompt.split_whitespace().cycle().take(200).enumerate() {
                            if stream.is_cancelled() {
                                eprintln!("engine: chat cancelled by the editor after {i} tokens");
                                return;
                            }
                            let token = format!("{word} ");
                            if stream.send(token.as_bytes()).is_err() {
                                return;
                            }
                            std::thread::sleep(Duration::from_millis(2)); // "thinking"
                        }
                        let _ = stream.finish();
                    });
                } else {
                    let _ = req.respond_error(
                        ErrorCode::APPLICATION_BASE,
                        "unknown request: use complete:<prefix> or chat:<prompt>",
                    );
                }
            },
        )?;
        println!("engine listening on {}; Ctrl-C to stop", server.endpoint());
        // SIGINT or SIGTERM (Windows: Ctrl-C, Ctrl-Break, closing the console): a graceful end.
        // `shutdown` stops accepting, answers nothing new, says Goodbye SHUTTING_DOWN to every
        // editor (its calls in flight fail with `Closed` saying so), and waits for the workers;
        // chat streams still running see `send` fail and end their threads.
        let (stop, stopped) = std::sync::mpsc::channel();
        ctrlc::set_handler(move || {
            let _ = stop.send(());
        })?;
        let _ = stopped.recv();
        println!("engine: shutting down");
        server.shutdown();
        Ok(())
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
