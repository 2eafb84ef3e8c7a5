//! JSON-RPC 2.0 over stdio pipes, the way editors talk to language servers and agents today
//! (Lapce's UI to its proxy, LSP, the Agent Client Protocol): the server is a child process
//! whose stdin and stdout are the pipes; messages are serde_json, framed one per line
//! (`jsonrpc-stdio`, newline-delimited) or with LSP's `Content-Length` header (`jsonrpc-lsp`).
//!
//! Requests carry an `id` and `params`; the answer carries the same `id` and a `result`. A chat
//! answer is a stream of `$/progress` notifications (one token each, LSP's partial results),
//! then the request's `result`. The server reads and answers one message at a time, in order
//! (as `lsp-server`'s main loop does); `params` are parsed once, straight into the typed
//! request (`RawValue` for the envelope, borrowed strings where nothing was escaped).

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::schema::*;
use super::{Work, drive};
use crate::measure::{self, AllocWindow, Outcome};
use crate::opts::Opts;

/// The largest message either side accepts (a peer announcing more is refused).
const MAX_MESSAGE: usize = 64 << 20;

pub fn is_jsonrpc(transport: &str) -> bool {
    matches!(transport, "jsonrpc-stdio" | "jsonrpc-lsp")
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Framing {
    /// One message per line.
    Lines,
    /// `Content-Length: N\r\n\r\n` then N bytes (LSP).
    Lsp,
}

impl Framing {
    fn parse(name: &str) -> Result<Framing, String> {
        match name {
            "lines" => Ok(Framing::Lines),
            "lsp" => Ok(Framing::Lsp),
            other => Err(format!("unknown framing `{other}` (lines or lsp)")),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Framing::Lines => "lines",
            Framing::Lsp => "lsp",
        }
    }

    /// Writes `msg` framed into `out` (cleared first).
    fn frame<T: Serialize>(self, msg: &T, out: &mut Vec<u8>) -> io::Result<()> {
        out.clear();
        match self {
            Framing::Lines => {
                serde_json::to_writer(&mut *out, msg)?;
                out.push(b'\n');
            }
            Framing::Lsp => {
                let body = serde_json::to_vec(msg)?;
                write!(out, "Content-Length: {}\r\n\r\n", body.len())?;
                out.extend_from_slice(&body);
            }
        }
        Ok(())
    }

    /// Reads one message's body into `buf` (cleared first); `false` at the end of input.
    fn read(self, r: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<bool> {
        buf.clear();
        match self {
            Framing::Lines => {
                let n = r.take(MAX_MESSAGE as u64 + 1).read_until(b'\n', buf)?;
                if n == 0 {
                    return Ok(false);
                }
                if buf.last() != Some(&b'\n') {
                    return Err(invalid(format!(
                        "a line of {n} bytes without its newline (at most {MAX_MESSAGE} allowed)"
                    )));
                }
                buf.pop();
                Ok(true)
            }
            Framing::Lsp => {
                let mut len = None;
                loop {
                    let n = r.take(1024).read_until(b'\n', buf)?;
                    if n == 0 {
                        return if buf.is_empty() {
                            Ok(false)
                        } else {
                            Err(invalid("the input ended inside a header".into()))
                        };
                    }
                    let line = std::str::from_utf8(buf)
                        .map_err(|_| invalid("a header line that is not UTF-8".into()))?
                        .trim_end();
                    if line.is_empty() {
                        break;
                    }
                    if let Some(v) = line.strip_prefix("Content-Length:") {
                        len = Some(v.trim().parse::<usize>().map_err(|_| {
                            invalid(format!("`{line}`: the length is not a number"))
                        })?);
                    }
                    buf.clear();
                }
                let len = len.ok_or_else(|| invalid("a message without Content-Length".into()))?;
                if len > MAX_MESSAGE {
                    return Err(invalid(format!(
                        "a message of {len} bytes announced; at most {MAX_MESSAGE} allowed"
                    )));
                }
                buf.clear();
                buf.resize(len, 0);
                r.read_exact(buf)?;
                Ok(true)
            }
        }
    }
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Any message, as both sides first read it.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(default)]
    id: Option<u64>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct Request<'a, P> {
    jsonrpc: &'static str,
    id: u64,
    method: &'a str,
    params: P,
}

#[derive(Serialize)]
struct Response<R> {
    jsonrpc: &'static str,
    id: u64,
    result: R,
}

#[derive(Serialize)]
struct ErrorResponse {
    jsonrpc: &'static str,
    id: Option<u64>,
    error: ErrorObject,
}

#[derive(Serialize)]
struct ErrorObject {
    code: i32,
    message: String,
}

#[derive(Serialize)]
struct Notification<P> {
    jsonrpc: &'static str,
    method: &'static str,
    params: P,
}

#[derive(Serialize, Deserialize)]
struct Progress<'a> {
    token: u64,
    #[serde(borrow)]
    value: Token2<'a>,
}

/// A token as a progress value: `{"text": "..."}`.
#[derive(Serialize, Deserialize)]
struct Token2<'a> {
    #[serde(borrow)]
    text: Cow<'a, str>,
}

/// `textDocument`-like analysis request: the file's text as a JSON string.
#[derive(Serialize, Deserialize)]
struct AnalyzeParams<'a> {
    #[serde(borrow)]
    path: Cow<'a, str>,
    #[serde(borrow)]
    text: Cow<'a, str>,
}

/// `jsonrpc-server --framing lines|lsp`: the child end, serving on its stdin and stdout until
/// stdin closes.
pub fn serve(opts: &Opts) -> Result<(), String> {
    let framing = Framing::parse(opts.str_or("framing", "lines"))?;
    let (stdin, stdout) = crate::os::stdio_files()?;
    let mut r = BufReader::with_capacity(64 << 10, stdin);
    let mut w = stdout;
    let (mut buf, mut out) = (Vec::new(), Vec::new());
    let io = |e: io::Error| format!("jsonrpc server: {e}");
    while framing.read(&mut r, &mut buf).map_err(io)? {
        let msg: Incoming<'_> = match serde_json::from_slice(&buf) {
            Ok(m) => m,
            Err(e) => {
                reply_error(
                    framing,
                    &mut w,
                    &mut out,
                    None,
                    -32700,
                    format!("parse error: {e}"),
                )
                .map_err(io)?;
                continue;
            }
        };
        let (Some(id), Some(method)) = (msg.id, msg.method.as_deref()) else {
            continue; // a notification: nothing to answer
        };
        let params = msg.params.map_or("null", RawValue::get);
        let answered = match method {
            "textDocument/completion" => {
                match serde_json::from_str::<CompletionRequest<'_>>(params)
                    .map_err(|e| e.to_string())
                    .and_then(|req| check_completion(&req.path, &req.prefix, &req.suffix, req.line))
                {
                    Ok(()) => send(
                        framing,
                        &mut w,
                        &mut out,
                        &Response {
                            jsonrpc: "2.0",
                            id,
                            result: CompletionList {
                                items: Cow::Borrowed(&COMPLETIONS),
                            },
                        },
                    ),
                    Err(e) => reply_error(framing, &mut w, &mut out, Some(id), -32602, e),
                }
            }
            "engine/chat" => match serde_json::from_str::<ChatRequest<'_>>(params) {
                Ok(req) => (|| {
                    for i in 0..req.tokens as usize {
                        send(
                            framing,
                            &mut w,
                            &mut out,
                            &Notification {
                                jsonrpc: "2.0",
                                method: "$/progress",
                                params: Progress {
                                    token: id,
                                    value: Token2 {
                                        text: Cow::Borrowed(token(i)),
                                    },
                                },
                            },
                        )?;
                    }
                    send(
                        framing,
                        &mut w,
                        &mut out,
                        &Response {
                            jsonrpc: "2.0",
                            id,
                            result: (),
                        },
                    )
                })(),
                Err(e) => reply_error(framing, &mut w, &mut out, Some(id), -32602, e.to_string()),
            },
            "engine/analyze" => match serde_json::from_str::<AnalyzeParams<'_>>(params) {
                Ok(p) => send(
                    framing,
                    &mut w,
                    &mut out,
                    &Response {
                        jsonrpc: "2.0",
                        id,
                        result: analyze(p.text.as_bytes()),
                    },
                ),
                Err(e) => reply_error(framing, &mut w, &mut out, Some(id), -32602, e.to_string()),
            },
            other => reply_error(
                framing,
                &mut w,
                &mut out,
                Some(id),
                -32601,
                format!("method `{other}` not found"),
            ),
        };
        answered.map_err(io)?;
    }
    Ok(())
}

fn send<T: Serialize>(
    framing: Framing,
    w: &mut impl Write,
    out: &mut Vec<u8>,
    msg: &T,
) -> io::Result<()> {
    framing.frame(msg, out)?;
    w.write_all(out)
}

fn reply_error(
    framing: Framing,
    w: &mut impl Write,
    out: &mut Vec<u8>,
    id: Option<u64>,
    code: i32,
    message: String,
) -> io::Result<()> {
    send(
        framing,
        w,
        out,
        &ErrorResponse {
            jsonrpc: "2.0",
            id,
            error: ErrorObject { code, message },
        },
    )
}

/// The editor's side: the child and its pipes.
pub struct Peer {
    framing: Framing,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    reader: Option<BufReader<ChildStdout>>,
    next_id: u64,
    out: Vec<u8>,
    inb: Vec<u8>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        // Closing its stdin ends the server's loop.
        self.stdin = None;
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }
}

fn io_err(e: impl std::fmt::Display) -> String {
    format!("jsonrpc: {e}")
}

impl Peer {
    fn start(framing: Framing) -> Result<Peer, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .args(["jsonrpc-server", "--framing", framing.name()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting the JSON-RPC server child: {e}"))?;
        let stdin = child.stdin.take().ok_or("JSON-RPC child without stdin")?;
        let stdout = child.stdout.take().ok_or("JSON-RPC child without stdout")?;
        Ok(Peer {
            framing,
            child: Some(child),
            stdin: Some(stdin),
            reader: Some(BufReader::with_capacity(64 << 10, stdout)),
            next_id: 1,
            out: Vec::new(),
            inb: Vec::new(),
        })
    }

    fn request<P: Serialize>(&mut self, method: &str, params: P) -> Result<u64, String> {
        let id = self.next_id;
        self.next_id += 1;
        let msg = Request {
            jsonrpc: "2.0",
            id,
            method,
            params,
        };
        self.framing.frame(&msg, &mut self.out).map_err(io_err)?;
        self.stdin
            .as_mut()
            .ok_or("closed")?
            .write_all(&self.out)
            .map_err(io_err)?;
        Ok(id)
    }

    /// Reads messages until the answer to `id`; `on_note` sees each notification's params.
    fn answer<R: for<'de> Deserialize<'de>>(
        &mut self,
        id: u64,
        mut on_note: impl FnMut(&str) -> Result<(), String>,
    ) -> Result<R, String> {
        let reader = self.reader.as_mut().ok_or("closed")?;
        loop {
            if !self.framing.read(reader, &mut self.inb).map_err(io_err)? {
                return Err("the JSON-RPC server closed its stdout".into());
            }
            let msg: Incoming<'_> = serde_json::from_slice(&self.inb).map_err(io_err)?;
            if let Some(e) = msg.error {
                return Err(format!("JSON-RPC error answer: {}", e.get()));
            }
            // (`"result": null` reads as `None`.)
            let result = msg.result.map_or("null", RawValue::get);
            match msg.id {
                Some(got) if got == id => return serde_json::from_str(result).map_err(io_err),
                Some(got) => return Err(format!("answer to {got} while waiting for {id}")),
                None => on_note(msg.params.map_or("null", RawValue::get))?,
            }
        }
    }

    fn complete(&mut self, req: &CompletionRequest<'_>) -> Result<(), String> {
        let id = self.request("textDocument/completion", req)?;
        let list: CompletionList = self.answer(id, |_| Err("unexpected notification".into()))?;
        check_completions(&list.items)
    }

    fn chat(&mut self, req: &ChatRequest<'_>) -> Result<(Duration, u64), String> {
        let t0 = Instant::now();
        let id = self.request("engine/chat", req)?;
        let mut first = None;
        let mut n = 0u64;
        let () = self.answer(id, |params| {
            let p: Progress<'_> = serde_json::from_str(params).map_err(io_err)?;
            first.get_or_insert_with(|| t0.elapsed());
            if p.token != id || p.value.text != token(n as usize) {
                return Err(format!("chat token {n} is {:?}", p.value.text));
            }
            n += 1;
            Ok(())
        })?;
        if n != u64::from(req.tokens) {
            return Err(format!(
                "a chat answer had {n} tokens, {} expected",
                req.tokens
            ));
        }
        Ok((first.unwrap_or_default(), n))
    }

    fn analyze(&mut self, text: &str) -> Result<(), String> {
        let id = self.request(
            "engine/analyze",
            AnalyzeParams {
                path: Cow::Borrowed(PATH),
                text: Cow::Borrowed(text),
            },
        )?;
        let diagnostics: Vec<Diagnostic> =
            self.answer(id, |_| Err("unexpected notification".into()))?;
        check_diagnostics(&diagnostics, text.as_bytes())
    }
}

/// `client jsonrpc-stdio|jsonrpc-lsp editor-…`.
pub fn client(transport: &str, work: Work, opts: &Opts) -> Result<(Outcome, Peer), String> {
    let framing = if transport == "jsonrpc-lsp" {
        Framing::Lsp
    } else {
        Framing::Lines
    };
    let mut peer = Peer::start(framing)?;
    let request = completion_request();
    let outcome = match work {
        Work::Complete { samples, warmup } => {
            measure::sequential(opts, samples, warmup, COMPLETE_REQUEST_BYTES as u64, || {
                peer.complete(&request)
            })?
        }
        Work::Analyze {
            samples,
            warmup,
            size,
        } => drive::analyze(opts, samples, warmup, size, |text| peer.analyze(text))?,
        Work::Chat {
            requests,
            warmup,
            tokens,
        } => {
            let req = ChatRequest {
                prompt: CHAT_PROMPT.into(),
                tokens,
            };
            drive::chat(opts, requests, warmup, || peer.chat(&req))?
        }
        Work::Concurrent { threads, duration } => {
            measure::warm_up(opts, 1000, || peer.complete(&request))?;
            concurrent(&mut peer, &request, threads, duration)?
        }
        Work::Pipelined { .. } | Work::Load { .. } => {
            return Err("the JSON-RPC peers run complete, complete-16, chat and analyze".into());
        }
    };
    Ok((outcome, peer))
}

type Pending = Mutex<HashMap<u64, mpsc::SyncSender<Result<Vec<u8>, String>>>>;

/// How long a caller waits for its answer (the reader may have stopped on a bad message).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// `threads` callers over the one pair of pipes: a reader thread hands each answer to the
/// caller waiting for its id (as an editor's JSON-RPC client does).
fn concurrent(
    peer: &mut Peer,
    request: &CompletionRequest<'_>,
    threads: usize,
    duration: Duration,
) -> Result<Outcome, String> {
    let framing = peer.framing;
    let mut reader = peer.reader.take().ok_or("closed")?;
    let writer = Mutex::new((peer.stdin.take().ok_or("closed")?, Vec::new()));
    let pending: Arc<Pending> = Arc::default();
    let next = AtomicU64::new(peer.next_id);
    let last = AtomicU64::new(u64::MAX);
    let allocs = AllocWindow::start();
    let start = Instant::now();
    let (results, reader) = std::thread::scope(|s| {
        let pending2 = pending.clone();
        let last = &last;
        let reading = s.spawn(move || {
            let mut buf = Vec::new();
            let fail = |why: String| {
                for (_, tx) in pending2.lock().unwrap_or_else(|p| p.into_inner()).drain() {
                    let _ = tx.try_send(Err(why.clone()));
                }
            };
            loop {
                match framing.read(&mut reader, &mut buf) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        fail(e.to_string());
                        break;
                    }
                }
                let id = match serde_json::from_slice::<Incoming<'_>>(&buf) {
                    Ok(m) => m.id,
                    Err(e) => {
                        fail(e.to_string());
                        break;
                    }
                };
                let tx = id.and_then(|id| {
                    pending2
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&id)
                });
                if let Some(tx) = tx {
                    let _ = tx.send(Ok(std::mem::take(&mut buf)));
                }
                // The answer to the closing request: hand the pipe back.
                if id == Some(last.load(Ordering::SeqCst)) {
                    break;
                }
            }
            reader
        });
        // Registers request `id` for its answer and writes it.
        let send = |id: u64| -> Result<mpsc::Receiver<Result<Vec<u8>, String>>, String> {
            let (tx, rx) = mpsc::sync_channel(1);
            pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, tx);
            let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
            let (pipe, out) = &mut *w;
            framing
                .frame(
                    &Request {
                        jsonrpc: "2.0",
                        id,
                        method: "textDocument/completion",
                        params: request,
                    },
                    out,
                )
                .map_err(io_err)?;
            pipe.write_all(out).map_err(io_err)?;
            Ok(rx)
        };
        let results = drive::callers(threads, duration, || {
            let id = next.fetch_add(1, Ordering::Relaxed);
            let body = send(id)?
                .recv_timeout(ANSWER_TIMEOUT)
                .map_err(|e| format!("no answer to request {id}: {e}"))??;
            let msg: Incoming<'_> = serde_json::from_slice(&body).map_err(io_err)?;
            let result = msg.result.ok_or("an answer without a result")?;
            let list: CompletionList = serde_json::from_str(result.get()).map_err(io_err)?;
            check_completions(&list.items)
        });
        // Every caller has its answer: one more request wakes the reader to hand the pipe back.
        let results = (|| {
            let id = next.fetch_add(1, Ordering::Relaxed);
            last.store(id, Ordering::SeqCst);
            send(id)?
                .recv_timeout(ANSWER_TIMEOUT)
                .map_err(|e| format!("no answer to the closing request: {e}"))??;
            Ok::<_, String>(results)
        })();
        (results, reading.join())
    });
    let elapsed = start.elapsed();
    let results = results?;
    peer.reader = Some(reader.map_err(|_| "the reader panicked")?);
    peer.stdin = Some(writer.into_inner().unwrap_or_else(|p| p.into_inner()).0);
    peer.next_id = next.load(Ordering::Relaxed);
    measure::merge(
        results,
        elapsed,
        COMPLETE_REQUEST_BYTES as u64,
        allocs.end(),
    )
}
