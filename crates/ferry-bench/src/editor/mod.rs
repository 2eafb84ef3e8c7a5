//! The `editor` workload: what an editor asks an engine, with the same message contents over
//! every transport (Ferry's typed layer with each codec, JSON-RPC 2.0 over stdio pipes; tarpc
//! and tonic gRPC over Unix sockets with the `peers-rpc` feature).
//!
//! - `editor-complete`: a completion request (path 40 B, line, column, 2 KiB of code before the
//!   cursor, 512 B after it) answered by 5 items of about 80 B; sequential round trips.
//! - `editor-complete-16`: the same calls from 16 threads sharing one connection (calls/s).
//! - `editor-chat`: one request answered by a stream of 500 tokens of 2–8 bytes; the histogram
//!   holds the time to the first token of each request, the rate counts tokens.
//! - `editor-analyze`: a 1 MiB source file in, 20 diagnostics out (round trips, GB/s).
//! - `editor-pipelined` (Ferry only): a small call (8 B in, 8 B out) with 64 in flight from one
//!   client thread (the typed client's `start_ping`, pipelined).
//! - `editor-old-100x10k`, `editor-old-32x1k` (Ferry only): the test of the system Ferry replaces,
//!   rerun: 100 connections × N completion calls each, and 32 connections with 1 KiB messages.
//!
//! Every server checks what it received (sizes of the fields, the file's lines) and answers with
//! the same contents; every client checks the answer (number of items, their sizes).

pub mod drive;
#[cfg(feature = "peers-rpc")]
pub mod grpc_peer;
pub mod jsonrpc;
pub mod schema;
#[cfg(feature = "peers-rpc")]
pub mod tarpc_peer;
pub mod typed;

use std::time::Duration;

use crate::measure::Outcome;
use crate::opts::Opts;

/// What an editor client measures.
#[derive(Debug, Clone, Copy)]
pub enum Work {
    /// Sequential completion round trips.
    Complete { samples: u64, warmup: u64 },
    /// `threads` callers on one connection, for `duration`.
    Concurrent { threads: usize, duration: Duration },
    /// `requests` chat streams of `tokens` tokens each (after `warmup` untimed ones).
    Chat {
        requests: u64,
        warmup: u64,
        tokens: u32,
    },
    /// `samples` analyses of a `size`-byte file.
    Analyze {
        samples: u64,
        warmup: u64,
        size: usize,
    },
    /// Small calls with `window` in flight from one thread, for `duration`.
    Pipelined { window: usize, duration: Duration },
    /// `conns` connections (a thread each), `calls` calls each, `size`-byte messages (`0`: the
    /// completion call).
    Load {
        conns: usize,
        calls: u64,
        size: usize,
    },
}

impl Work {
    pub fn parse(scenario: &str, opts: &Opts) -> Result<Work, String> {
        let n = |k: &str, d: u64| opts.num(k, d);
        let us = |v: u64| usize::try_from(v).map_err(|e| e.to_string());
        Ok(match scenario {
            "editor-complete" => Work::Complete {
                samples: n("samples", 100_000)?,
                warmup: n("warmup", 10_000)?,
            },
            "editor-complete-16" => Work::Concurrent {
                threads: us(n("threads", 16)?.max(1))?,
                duration: opts.duration(1000)?,
            },
            "editor-chat" => Work::Chat {
                requests: n("samples", 200)?.max(1),
                warmup: n("warmup", 20)?,
                tokens: u32::try_from(n("tokens", 500)?).map_err(|e| e.to_string())?,
            },
            "editor-analyze" => Work::Analyze {
                samples: n("samples", 100)?.max(1),
                warmup: n("warmup", 10)?,
                size: us(n("size", 1 << 20)?)?,
            },
            "editor-pipelined" => Work::Pipelined {
                window: us(n("window", 64)?.max(1))?,
                duration: opts.duration(1000)?,
            },
            "editor-old-100x10k" => Work::Load {
                conns: us(n("conns", 100)?.max(1))?,
                calls: n("calls", 10_000)?.max(1),
                size: 0,
            },
            "editor-old-32x1k" => Work::Load {
                conns: us(n("conns", 32)?.max(1))?,
                calls: n("calls", 10_000)?.max(1),
                size: us(n("size", 1024)?)?,
            },
            other => return Err(format!("unknown editor scenario `{other}`")),
        })
    }

    /// The request size the report shows beside the scenario.
    pub fn size(&self) -> usize {
        match *self {
            Work::Complete { .. } | Work::Concurrent { .. } => schema::COMPLETE_REQUEST_BYTES,
            Work::Chat { .. } => schema::CHAT_PROMPT.len(),
            Work::Analyze { size, .. } => size,
            Work::Pipelined { .. } => 8,
            Work::Load { size, .. } => {
                if size == 0 {
                    schema::COMPLETE_REQUEST_BYTES
                } else {
                    size
                }
            }
        }
    }
}

/// Whether `scenario` is one of the editor family's.
pub fn is_editor(scenario: &str) -> bool {
    scenario.starts_with("editor-")
}

/// `client <transport> editor-…`: runs `scenario` against `transport`, prints its lines.
pub fn client(transport: &str, scenario: &str, opts: &Opts) -> Result<(), String> {
    let work = Work::parse(scenario, opts)?;
    let (outcome, _connection): (Outcome, Box<dyn std::any::Any>) = match transport {
        t if typed::is_typed(t) => {
            let (o, c) = typed::client(t, work, opts)?;
            (o, Box::new(c))
        }
        t if jsonrpc::is_jsonrpc(t) => {
            let (o, c) = jsonrpc::client(t, work, opts)?;
            (o, Box::new(c))
        }
        #[cfg(feature = "peers-rpc")]
        "grpc" => {
            let (o, c) = grpc_peer::client(work, opts)?;
            (o, Box::new(c))
        }
        #[cfg(feature = "peers-rpc")]
        "tarpc" => {
            let (o, c) = tarpc_peer::client(work, opts)?;
            (o, Box::new(c))
        }
        other => {
            return Err(format!(
                "`{other}` does not run the editor workload (ferry-postcard, ferry-rkyv, \
                 ferry-json, jsonrpc-stdio, jsonrpc-lsp; tarpc and grpc with the `peers-rpc` feature)"
            ));
        }
    };
    outcome.print_named(transport, scenario, work.size());
    crate::measure::pause(opts, "done")
}
