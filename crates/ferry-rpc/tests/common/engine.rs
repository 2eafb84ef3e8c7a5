//! The service the tests run: every method kind and every codec.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ferry_rpc::{AsyncSink, Context, Server, Sink, Status};

use super::TestDir;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CompletionRequest<'a> {
    pub path: &'a str,
    pub line: u32,
    pub column: u32,
    pub prefix: &'a str,
    #[serde(borrow)]
    pub suffix: &'a [u8],
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CompletionItem {
    pub label: String,
    pub score: u32,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CompletionList {
    pub items: Vec<CompletionItem>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub prompt: String,
    pub tokens: u32,
    /// Pause between tokens (ms).
    pub pace_ms: u32,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Token(pub String);

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub line: u32,
    pub message: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    pub path: String,
    pub version: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Reanalyzed {
    pub path: String,
    pub version: u64,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct ScoreRequest {
    pub words: Vec<String>,
    pub weight: u32,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct Score {
    pub total: u64,
    pub longest: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct HoverRequest {
    pub path: String,
    pub line: u32,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Hover {
    pub markdown: String,
}

/// What `wait` saw: its deadline's budget and whether it was cancelled.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct WaitReport {
    pub budget_ms: Option<u64>,
    pub cancelled: bool,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Counters {
    pub changes: u64,
    pub last_version: u64,
    pub chats_cancelled: u64,
    pub waits_cancelled: u64,
    /// `wait` handlers that started.
    pub waits_started: u64,
    /// Notifications that arrived after one of a higher version.
    pub out_of_order: u64,
}

#[ferry_rpc::service]
pub trait Engine {
    /// Completions: borrowed request (postcard).
    fn complete(req: CompletionRequest<'_>) -> CompletionList;
    /// A stream of tokens.
    fn chat(req: ChatRequest) -> impl Stream<Item = Token>;
    /// A file in raw bytes, diagnostics out.
    fn analyze(file: &[u8]) -> Vec<Diagnostic>;
    /// Editor → engine.
    #[notification]
    fn did_change(ev: ChangeEvent);
    /// Engine → editor.
    #[push]
    fn reanalyzed(ev: Reanalyzed);
    /// rkyv both ways.
    #[codec(rkyv)]
    fn score(req: ScoreRequest) -> Score;
    /// JSON both ways.
    #[codec(json)]
    fn hover(req: HoverRequest) -> Hover;
    /// Sleeps up to `ms`, stopping early when cancelled; says what it saw.
    fn wait(ms: u64) -> WaitReport;
    /// What the engine counted.
    #[method(id = 0x0000_0C0D)]
    fn counters(reset: bool) -> Counters;
    /// Always fails with an application status.
    fn fail(code: u32) -> u32;
}

/// The test engine (blocking handlers).
#[derive(Default)]
pub struct TestEngine {
    pub changes: AtomicU64,
    pub last_version: AtomicU64,
    pub chats_cancelled: AtomicU64,
    pub waits_cancelled: AtomicU64,
    pub waits_started: AtomicU64,
    pub out_of_order: AtomicU64,
    pub last_wait: Mutex<Option<WaitReport>>,
}

pub fn complete_answer(req: &CompletionRequest<'_>) -> CompletionList {
    CompletionList {
        items: (0..5)
            .map(|i| CompletionItem {
                label: format!(
                    "{}{}:{}:{}#{}",
                    req.prefix, req.path, req.line, req.column, i
                ),
                score: req.suffix.len() as u32 + i,
            })
            .collect(),
    }
}

pub fn analyze_answer(file: &[u8]) -> Vec<Diagnostic> {
    let sum: u64 = file.iter().map(|&b| u64::from(b)).sum();
    (0..20)
        .map(|i| Diagnostic {
            line: i,
            message: format!("{} bytes, sum {sum}", file.len()),
        })
        .collect()
}

pub fn score_answer(words: impl Iterator<Item = String>, weight: u32) -> Score {
    let words: Vec<String> = words.collect();
    Score {
        total: words.iter().map(|w| w.len() as u64).sum::<u64>() * u64::from(weight),
        longest: words
            .iter()
            .max_by_key(|w| w.len())
            .cloned()
            .unwrap_or_default(),
    }
}

fn report(cx: &Context<'_>) -> WaitReport {
    WaitReport {
        budget_ms: cx.deadline().map(|d| {
            d.saturating_duration_since(std::time::Instant::now())
                .as_millis() as u64
        }),
        cancelled: cx.is_cancelled(),
    }
}

impl Engine for TestEngine {
    fn complete(
        &self,
        _cx: &Context<'_>,
        req: CompletionRequest<'_>,
    ) -> Result<CompletionList, Status> {
        Ok(complete_answer(&req))
    }

    fn chat(
        &self,
        cx: &Context<'_>,
        req: ChatRequest,
        items: &Sink<'_, Token>,
    ) -> Result<(), Status> {
        for i in 0..req.tokens {
            if cx.is_cancelled() {
                self.chats_cancelled.fetch_add(1, Ordering::SeqCst);
                return Ok(());
            }
            if items.send(&Token(format!("{}-{i}", req.prompt))).is_err() {
                self.chats_cancelled.fetch_add(1, Ordering::SeqCst);
                return Ok(());
            }
            if req.pace_ms > 0 {
                std::thread::sleep(Duration::from_millis(req.pace_ms.into()));
            }
        }
        Ok(())
    }

    fn analyze(&self, _cx: &Context<'_>, file: &[u8]) -> Result<Vec<Diagnostic>, Status> {
        Ok(analyze_answer(file))
    }

    fn did_change(&self, cx: &Context<'_>, ev: ChangeEvent) {
        self.changes.fetch_add(1, Ordering::SeqCst);
        if self.last_version.swap(ev.version, Ordering::SeqCst) > ev.version {
            self.out_of_order.fetch_add(1, Ordering::SeqCst);
        }
        let _ = EnginePusher::new(cx.connection()).reanalyzed(&Reanalyzed {
            path: ev.path,
            version: ev.version,
        });
    }

    fn score(
        &self,
        _cx: &Context<'_>,
        req: &ferry_rpc::codec::Archived<ScoreRequest>,
    ) -> Result<Score, Status> {
        Ok(score_answer(
            req.words.iter().map(|w| w.as_str().to_owned()),
            req.weight.to_native(),
        ))
    }

    fn hover(&self, _cx: &Context<'_>, req: HoverRequest) -> Result<Hover, Status> {
        Ok(Hover {
            markdown: format!("**{}**:{}", req.path, req.line),
        })
    }

    fn wait(&self, cx: &Context<'_>, ms: u64) -> Result<WaitReport, Status> {
        self.waits_started.fetch_add(1, Ordering::SeqCst);
        let first = report(cx);
        let end = std::time::Instant::now() + Duration::from_millis(ms);
        while std::time::Instant::now() < end && !cx.is_cancelled() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let last = WaitReport {
            budget_ms: first.budget_ms,
            cancelled: cx.is_cancelled(),
        };
        if last.cancelled {
            self.waits_cancelled.fetch_add(1, Ordering::SeqCst);
        }
        *self.last_wait.lock().unwrap() = Some(last.clone());
        Ok(last)
    }

    fn counters(&self, _cx: &Context<'_>, reset: bool) -> Result<Counters, Status> {
        let c = Counters {
            changes: self.changes.load(Ordering::SeqCst),
            last_version: self.last_version.load(Ordering::SeqCst),
            chats_cancelled: self.chats_cancelled.load(Ordering::SeqCst),
            waits_cancelled: self.waits_cancelled.load(Ordering::SeqCst),
            waits_started: self.waits_started.load(Ordering::SeqCst),
            out_of_order: self.out_of_order.load(Ordering::SeqCst),
        };
        if reset {
            self.changes.store(0, Ordering::SeqCst);
            self.chats_cancelled.store(0, Ordering::SeqCst);
            self.waits_cancelled.store(0, Ordering::SeqCst);
            self.waits_started.store(0, Ordering::SeqCst);
            self.out_of_order.store(0, Ordering::SeqCst);
            self.last_version.store(0, Ordering::SeqCst);
        }
        Ok(c)
    }

    fn fail(&self, _cx: &Context<'_>, code: u32) -> Result<u32, Status> {
        Err(Status::new(code, format!("failing with {code} as asked")))
    }
}

/// The same engine with async handlers.
#[derive(Default)]
pub struct AsyncTestEngine {
    pub inner: TestEngine,
}

impl AsyncEngine for AsyncTestEngine {
    async fn complete(
        &self,
        _cx: &Context<'_>,
        req: CompletionRequest<'_>,
    ) -> Result<CompletionList, Status> {
        Ok(complete_answer(&req))
    }

    async fn chat(
        &self,
        cx: &Context<'_>,
        req: ChatRequest,
        items: &AsyncSink<Token>,
    ) -> Result<(), Status> {
        for i in 0..req.tokens {
            if cx.is_cancelled()
                || items
                    .send(&Token(format!("{}-{i}", req.prompt)))
                    .await
                    .is_err()
            {
                self.inner.chats_cancelled.fetch_add(1, Ordering::SeqCst);
                return Ok(());
            }
            if req.pace_ms > 0 {
                tokio::time::sleep(Duration::from_millis(req.pace_ms.into())).await;
            }
        }
        Ok(())
    }

    async fn analyze(&self, _cx: &Context<'_>, file: &[u8]) -> Result<Vec<Diagnostic>, Status> {
        Ok(analyze_answer(file))
    }

    async fn did_change(&self, cx: &Context<'_>, ev: ChangeEvent) {
        self.inner.did_change(cx, ev);
    }

    async fn score(
        &self,
        _cx: &Context<'_>,
        req: &ferry_rpc::codec::Archived<ScoreRequest>,
    ) -> Result<Score, Status> {
        Ok(score_answer(
            req.words.iter().map(|w| w.as_str().to_owned()),
            req.weight.to_native(),
        ))
    }

    async fn hover(&self, cx: &Context<'_>, req: HoverRequest) -> Result<Hover, Status> {
        self.inner.hover(cx, req)
    }

    async fn wait(&self, cx: &Context<'_>, ms: u64) -> Result<WaitReport, Status> {
        self.inner.waits_started.fetch_add(1, Ordering::SeqCst);
        let first = report(cx);
        let cancelled = tokio::select! {
            () = cx.cancelled() => true,
            () = tokio::time::sleep(Duration::from_millis(ms)) => false,
        };
        let last = WaitReport {
            budget_ms: first.budget_ms,
            cancelled,
        };
        if cancelled {
            self.inner.waits_cancelled.fetch_add(1, Ordering::SeqCst);
        }
        *self.inner.last_wait.lock().unwrap() = Some(last.clone());
        Ok(last)
    }

    async fn counters(&self, cx: &Context<'_>, reset: bool) -> Result<Counters, Status> {
        self.inner.counters(cx, reset)
    }

    async fn fail(&self, cx: &Context<'_>, code: u32) -> Result<u32, Status> {
        self.inner.fail(cx, code)
    }
}

/// A fresh directory, [`TestEngine`] served in it as `name` (blocking handlers, the default
/// RPC settings) and a client of it. Bound as `let (_dir, _server, client)`, they drop client
/// first, then the server, then the directory.
pub fn blocking_engine(name: &str) -> (TestDir, Server, EngineClient) {
    let dir = TestDir::new(name);
    let server = super::serve(&dir, name, EngineServer::new(TestEngine::default()));
    let client = engine_client(&dir, name);
    (dir, server, client)
}

/// [`blocking_engine`] with [`AsyncTestEngine`] on `rt`.
pub fn async_engine(rt: &tokio::runtime::Runtime, name: &str) -> (TestDir, Server, EngineClient) {
    let dir = TestDir::new(name);
    let server = super::serve_async(
        rt,
        &dir,
        name,
        AsyncEngineServer::new(AsyncTestEngine::default()),
    );
    let client = engine_client(&dir, name);
    (dir, server, client)
}

/// A typed client of `name` in `dir` (the default RPC settings).
pub fn engine_client(dir: &TestDir, name: &str) -> EngineClient {
    EngineClient::from_client(super::connect(dir, name))
}
