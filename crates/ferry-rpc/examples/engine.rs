//! The "AI engine" half of the typed editor ↔ engine example: completions, a chat answer
//! streamed token by token (stopping when the editor cancels), a file analysed, and a typed
//! push to the editor after each change.
//!
//! ```sh
//! cargo run --release -p ferry-rpc --example engine &
//! cargo run --release -p ferry-rpc --example editor
//! ```

#[path = "shared/schema.rs"]
mod schema;

use std::time::Duration;

use ferry_rpc::{Context, RpcConfig, ServerConfig, Sink, Status};
use schema::*;

struct MyEngine;

impl Engine for MyEngine {
    fn complete(
        &self,
        _cx: &Context<'_>,
        req: CompletionRequest<'_>,
    ) -> Result<Vec<CompletionItem>, Status> {
        // `req.prefix` and `req.suffix` borrow from the ring record: nothing was copied.
        let word = req
            .prefix
            .rsplit(|c: char| !c.is_alphanumeric() && c != '_')
            .next()
            .unwrap_or("");
        Ok(["in", "ap", "atch"]
            .iter()
            .map(|end| CompletionItem {
                label: format!("{word}{end}"),
                detail: format!("{}:{}:{}", req.path, req.line, req.column),
            })
            .collect())
    }

    fn chat(
        &self,
        cx: &Context<'_>,
        req: ChatRequest,
        items: &Sink<'_, Token>,
    ) -> Result<(), Status> {
        for (i, word) in req.prompt.split_whitespace().cycle().take(200).enumerate() {
            if cx.is_cancelled() {
                eprintln!("engine: chat cancelled by the editor after {i} tokens");
                return Ok(());
            }
            if items.send(&Token(format!("{word} "))).is_err() {
                eprintln!("engine: chat cancelled by the editor after {i} tokens");
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(2)); // "thinking"
        }
        Ok(())
    }

    fn analyze(&self, _cx: &Context<'_>, file: &[u8]) -> Result<Vec<Diagnostic>, Status> {
        let text =
            std::str::from_utf8(file).map_err(|e| Status::new(1, format!("not UTF-8: {e}")))?;
        Ok(text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.contains("unwrap()"))
            .map(|(i, _)| Diagnostic {
                line: i as u32 + 1,
                message: "unwrap() may panic".into(),
            })
            .collect())
    }

    fn did_change(&self, cx: &Context<'_>, ev: ChangeEvent) {
        // Tell the editor when the analysis of this version is ready (a typed push).
        let _ = EnginePusher::new(cx.connection()).analysis_ready(&AnalysisReady {
            path: ev.path,
            version: ev.version,
            diagnostics: 0,
        });
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _server = ferry_rpc::serve(
        SERVICE,
        ServerConfig::default(),
        RpcConfig::default(),
        EngineServer::new(MyEngine),
    )?;
    println!("engine serving {SERVICE}");
    loop {
        std::thread::park();
    }
}
