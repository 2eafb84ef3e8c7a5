//! The "editor" half of the typed editor ↔ engine example: completions (timed), a chat stream
//! cancelled half way, a file analysed, a change notified and the engine's push received.
//! Start `engine` first.

#[path = "shared/schema.rs"]
mod schema;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use ferry_rpc::{ClientConfig, RpcConfig};
use schema::*;

struct Pushes(mpsc::SyncSender<AnalysisReady>);

impl EnginePushes for Pushes {
    fn analysis_ready(&self, ev: AnalysisReady) {
        let _ = self.0.try_send(ev);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (tx, rx) = mpsc::sync_channel(16);
    let engine = EngineClient::connect_with_pushes(
        SERVICE,
        ClientConfig::default(),
        RpcConfig::default(),
        Pushes(tx),
    )?;

    let suffix = "\n}\n".repeat(100);
    let mut lat = Vec::new();
    for prefix in ["fn ma", "let x = ve", "impl Dis", "use std::syn"] {
        let t = Instant::now();
        let items = engine.complete(&CompletionRequest {
            path: "src/main.rs",
            line: 12,
            column: prefix.len() as u32,
            prefix,
            suffix: &suffix,
        })?;
        let us = t.elapsed().as_secs_f64() * 1e6;
        lat.push(us);
        let labels: Vec<&str> = items.iter().map(|i| i.label.as_str()).collect();
        println!("completion {prefix:?} -> {labels:?} in {us:.1} µs");
    }

    let t = Instant::now();
    let mut chat = engine.chat(&ChatRequest {
        prompt: "explain the borrow checker in simple words".into(),
    })?;
    let mut first = None;
    let mut text = String::new();
    for (n, token) in chat.by_ref().enumerate() {
        first.get_or_insert_with(|| t.elapsed());
        text.push_str(&token?.0);
        if n + 1 == 50 {
            println!("cancelling the chat after 50 tokens");
            break;
        }
    }
    chat.cancel();
    println!(
        "chat: first token after {:?}; text so far: {text:?}",
        first.unwrap_or_default()
    );

    let file =
        "fn main() {\n    let x = std::env::args().nth(1).unwrap();\n    println!(\"{x}\");\n}\n"
            .repeat(1000);
    let t = Instant::now();
    let diagnostics = engine.analyze(file.as_bytes())?;
    println!(
        "analysed {} bytes in {:?}: {} diagnostics, first at line {}",
        file.len(),
        t.elapsed(),
        diagnostics.len(),
        diagnostics.first().map_or(0, |d| d.line)
    );

    engine.did_change(&ChangeEvent {
        path: "src/main.rs".into(),
        version: 2,
    })?;
    let ready = rx.recv_timeout(Duration::from_secs(5))?;
    println!("push from the engine: {ready:?}");

    lat.sort_by(f64::total_cmp);
    println!("completion latencies (µs): {lat:.1?}");
    Ok(())
}
