//! The schema both example processes compile: the `Engine` service and its types.

use serde::{Deserialize, Serialize};

/// Where the editor's cursor is, and the code around it (borrowed on the engine's side).
#[derive(Serialize, Deserialize, Debug)]
pub struct CompletionRequest<'a> {
    pub path: &'a str,
    pub line: u32,
    pub column: u32,
    pub prefix: &'a str,
    pub suffix: &'a str,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct CompletionItem {
    pub label: String,
    pub detail: String,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct ChatRequest {
    pub prompt: String,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct Token(pub String);

#[derive(Serialize, Deserialize, Debug)]
pub struct Diagnostic {
    pub line: u32,
    pub message: String,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct ChangeEvent {
    pub path: String,
    pub version: u64,
}

/// Engine → editor: the analysis of a changed file is ready.
#[derive(Serialize, Deserialize, Debug)]
pub struct AnalysisReady {
    pub path: String,
    pub version: u64,
    pub diagnostics: u32,
}

#[ferry_rpc::service]
pub trait Engine {
    /// Completions at the cursor.
    fn complete(req: CompletionRequest<'_>) -> Vec<CompletionItem>;
    /// A chat answer, token by token.
    fn chat(req: ChatRequest) -> impl Stream<Item = Token>;
    /// A whole file, as raw bytes (written straight into the ring), analysed.
    fn analyze(file: &[u8]) -> Vec<Diagnostic>;
    /// The editor changed a file.
    #[notification]
    fn did_change(ev: ChangeEvent);
    /// The engine finished analysing a change.
    #[push]
    fn analysis_ready(ev: AnalysisReady);
}

pub const SERVICE: &str = "ferry-rpc-engine";
