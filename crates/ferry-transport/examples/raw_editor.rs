//! The "editor" half of the raw-bytes editor ↔ engine example (typed: `ferry-rpc`'s `editor`):
//! asks for completions, starts a chat stream, cancels it half way, and prints the latencies it
//! saw. Start `raw_engine` first.

#[cfg(any(target_os = "linux", target_os = "macos", windows))]
mod example {
    use std::time::Instant;

    use ferry_transport::Client;

    pub fn main() -> Result<(), Box<dyn std::error::Error>> {
        let client = Client::connect("ferry-engine")?;
        let mut lat = Vec::new();
        for word in ["fn ma", "let x = ve", "impl Dis", "use std::syn"] {
            let t = Instant::now();
            let answer = client.call(format!("complete:{word}").as_bytes())?;
            let us = t.elapsed().as_secs_f64() * 1e6;
            lat.push(us);
            println!(
                "completion {word:?} -> {:?} in {us:.1} µs",
                String::from_utf8_lossy(&answer)
            );
        }
        let t = Instant::now();
        let mut stream = client.stream(b"chat:explain the borrow checker in simple words")?;
        let mut first = None;
        let mut tokens = 0;
        let mut text = String::new();
        while let Some(token) = stream.next_item()? {
            first.get_or_insert_with(|| t.elapsed());
            text.push_str(&String::from_utf8_lossy(&token));
            tokens += 1;
            if tokens == 50 {
                println!("cancelling the chat after {tokens} tokens");
                stream.cancel();
                break;
            }
        }
        println!(
            "chat: first token after {:?}; text so far: {text:?}",
            first.unwrap_or_default()
        );
        // The connection is still fine after the cancel.
        let answer = client.call(b"complete:after_cancel")?;
        println!("after the cancel: {:?}", String::from_utf8_lossy(&answer));
        lat.sort_by(f64::total_cmp);
        println!("completion latencies (µs): {lat:.1?}");
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
