//! `cargo xtask bench-gate`: Ferry against the alternatives, real processes, one run.
//!
//! It builds `ferry-bench` (release), starts the servers (Ferry with the default and the
//! park-only wait policy, a Unix-domain socket, TCP loopback, Node.js on a Unix socket when
//! `node` is installed; the pipe peer is a child of its client), runs every scenario `--runs`
//! times interleaved (so noise hits every transport alike), and reports medians over runs:
//! a table on stdout, `target/bench-gate/{report.md, report.json, latency.svg}`. It exits
//! non-zero naming each gate of `benches/gates.toml` that was missed.
//!
//! The child processes speak line-oriented text (see `crates/ferry-bench`):
//! servers print `ready t_ns=<CLOCK_MONOTONIC ns; Windows: the performance counter> [port=P]`
//! and answer `stats` on stdin with
//! `stats allocs=N cpu=C rss_anon_kb=… vm_rss_kb=… rss_shmem_kb=… [conns=N …]` (the Windows
//! build: `pagefile_kb=… working_set_kb=… peak_working_set_kb=…` for the memory); clients run
//! with `--sync 1`, print `warm`, wait for a line, measure, print
//! `result transport=… scenario=… size=… msgs=… bytes=… elapsed_ns=… allocs=… cpu=…` and
//! `hist <value_ns>:<count>,…`, print `done` and wait for a line before disconnecting. The
//! pauses let the harness read the server's allocation counter exactly around the measured
//! window.
//!
//! `--quick` (what CI runs): one run, fewer samples, Ferry and the Unix socket only; it
//! enforces the gates that do not depend on timing (allocations, connections served, memory at
//! rest) and checks that the report is produced.
//!
//! `--wine`: the same harness with `ferry-bench` built for `x86_64-pc-windows-gnu` and every
//! process (servers and clients) run under Wine, in the prefix the CI's Wine step uses. The
//! peers are the Windows ones: a named pipe (`npipe`), TCP loopback, an anonymous pipe pair.
//! Its figures are Wine's, not Windows's: the report says so at the top, goes to
//! `target/bench-gate/wine/`, and the gates of `benches/gates.toml` are not applied to it; the
//! run checks only that everything completed and every call was answered (the server's own
//! counters agree with the client's).

mod gates;
mod model;
mod procs;
mod report;
mod svg;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::cmd::{Cmd, on_path};
use crate::wine::{self, WINDOWS_TARGET};
use crate::workspace::Workspace;
use model::{Hist, Key, Run, Summary};
use procs::{Fields, Proc, busiest_thread_cpu};
use report::Report;

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub quick: bool,
    pub runs: usize,
    pub samples: u64,
    /// `(server CPU, client CPU)`.
    pub pin: Option<(u32, u32)>,
    /// `--peers all`: also iceoryx2 (slow to compile: ferry-bench's `iceoryx2` feature).
    pub all_peers: bool,
    /// `--peers rpc`: the RPC framework peers (tarpc) even under `--quick`.
    pub rpc: bool,
    /// `--wine`: the Windows build of ferry-bench, run under Wine (see the module docs).
    pub wine: bool,
}

impl Options {
    /// Whether the RPC framework peers of the editor workload (tarpc) are built and run:
    /// full Linux runs, and `--quick` with `--peers all` or `--peers rpc` (ferry-bench's
    /// `peers-rpc` feature).
    pub fn rpc_peers(&self) -> bool {
        !self.wine && (!self.quick || self.all_peers || self.rpc)
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            quick: false,
            runs: 3,
            samples: 200_000,
            pin: None,
            all_peers: false,
            rpc: false,
            wine: false,
        }
    }
}

pub fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options::default();
    let mut runs_given = false;
    let mut samples_given = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (arg.as_str(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("`{name}` needs a value"))
        };
        let whole = |name: &str, raw: String| {
            raw.parse::<u64>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("`{name}` wants a whole number > 0, got `{raw}`"))
        };
        match flag {
            "--quick" => o.quick = true,
            "--wine" => o.wine = true,
            "--runs" => {
                o.runs = whole("--runs", value("--runs")?)? as usize;
                runs_given = true;
            }
            "--samples" => {
                o.samples = whole("--samples", value("--samples")?)?;
                samples_given = true;
            }
            "--pin" => {
                let raw = value("--pin")?;
                let pair = raw
                    .split_once(',')
                    .and_then(|(s, c)| Some((s.trim().parse().ok()?, c.trim().parse().ok()?)));
                o.pin = Some(pair.ok_or_else(|| {
                    format!(
                        "`--pin` wants `<server CPU>,<client CPU>`, e.g. `--pin 0,1`; got `{raw}`"
                    )
                })?);
            }
            "--peers" => match value("--peers")?.as_str() {
                "all" => o.all_peers = true,
                "rpc" => o.rpc = true,
                "default" => o.all_peers = false,
                other => {
                    return Err(format!(
                        "`--peers` is `default`, `rpc` (adds tarpc to `--quick`) or `all` (adds \
                         iceoryx2, and tarpc to `--quick`), got `{other}`"
                    ));
                }
            },
            other => return Err(format!("unknown option `{other}` for `bench-gate`")),
        }
    }
    if o.quick {
        if !runs_given {
            o.runs = 1;
        }
        if !samples_given {
            o.samples = 20_000;
        }
    }
    if o.wine {
        if o.all_peers || o.rpc {
            return Err(
                "`--peers all` and `--peers rpc` add Linux peers (iceoryx2, tarpc): not with \
                 `--wine`"
                    .into(),
            );
        }
        // Round trips of the peers take 100 to 400 µs under Wine: fewer samples keep a run in
        // minutes (still 10 000+ per percentile, 100+ beyond p99).
        if !samples_given {
            o.samples = if o.quick { 5_000 } else { WINE_SAMPLES };
        }
    }
    Ok(o)
}

/// Timed round trips per latency run under Wine unless `--samples` says otherwise.
pub const WINE_SAMPLES: u64 = 20_000;

/// One client measurement of the plan.
#[derive(Debug, Clone)]
struct Item {
    transport: &'static str,
    scenario: &'static str,
    size: usize,
}

fn plan(o: &Options, node: bool) -> Vec<Item> {
    let item = |transport, scenario, size| Item {
        transport,
        scenario,
        size,
    };
    let mut items = Vec::new();
    if o.wine {
        // The Windows peers: a named pipe, TCP loopback, an anonymous pipe pair (a child).
        let latency: &[&'static str] = if o.quick {
            &["ferry", "npipe", "tcp"]
        } else {
            &["ferry", "ferry-park", "ferry-async", "npipe", "tcp", "pipe"]
        };
        for &t in latency {
            items.push(item(t, "rtt", 64));
        }
        for scenario in ["oneway", "pipelined"] {
            for t in ["ferry", "npipe", "tcp"] {
                items.push(item(t, scenario, 64));
            }
        }
        return items;
    }
    if o.quick {
        items.push(item("ferry", "rtt", 64));
        items.push(item("uds", "rtt", 64));
        items.push(item("ferry", "oneway", 64));
        items.push(item("uds", "oneway", 64));
        items.push(item("ferry", "oneway", 64 << 10));
        items.push(item("ferry", "pipelined", 64));
        items.extend(editor_plan(o.rpc_peers()));
        return items;
    }
    let mut latency = vec!["ferry", "ferry-park", "ferry-async", "uds", "tcp", "pipe"];
    if node {
        latency.push("node");
    }
    if o.all_peers {
        latency.extend(["iceoryx2", "iceoryx2-block"]);
    }
    for size in [64, 1024] {
        for &t in &latency {
            items.push(item(t, "rtt", size));
        }
    }
    // A whole file each way: 1 MiB request -> 1 MiB echo (fewer samples, see `measure`).
    for t in ["ferry", "uds", "tcp"] {
        items.push(item(t, "rtt", RTT_LARGE));
    }
    for size in [64, 64 << 10, 1 << 20] {
        for t in ["ferry", "uds", "tcp", "pipe"] {
            items.push(item(t, "oneway", size));
        }
    }
    for t in ["ferry", "uds", "tcp", "pipe"] {
        items.push(item(t, "pipelined", 64));
    }
    // The old system's load tests on the raw transport: 100 callers x 64 B and 32 x 1 KiB, a
    // thread and a connection each (Ferry, the Unix socket with a thread per connection), and
    // a tokio task each on one shared Ferry connection.
    for (scenario, size) in [("load-100", 64), ("load-32", 1024)] {
        for t in ["ferry", "ferry-async", "uds"] {
            items.push(item(t, scenario, size));
        }
    }
    items.extend(editor_plan(o.rpc_peers()));
    items
}

/// The highest throughput among `transports` in `scenario` at `size` (messages per second).
fn best_of(summaries: &[Summary], transports: &[&str], scenario: &str, size: usize) -> Option<f64> {
    summaries
        .iter()
        .filter(|x| {
            transports.contains(&x.key.transport.as_str())
                && x.key.scenario == scenario
                && x.key.size == size
        })
        .map(|x| x.msgs_per_sec)
        .fold(None, |best: Option<f64>, v| {
            Some(best.map_or(v, |b| b.max(v)))
        })
}

/// The large round trip's size (1 MiB each way); it has [`RTT_LARGE_SAMPLES`] samples.
pub const RTT_LARGE: usize = 1 << 20;
/// Timed 1 MiB round trips per run (each moves 2 MiB: ~0.5 ms on a socket here).
const RTT_LARGE_SAMPLES: u64 = 2_000;
/// Sequential calls per caller in the load tests (the old system's 10 000).
const LOAD_CALLS: u64 = 10_000;

/// The editor workload's transports: Ferry's typed layer with each codec, JSON-RPC 2.0 over
/// stdio pipes with each framing.
pub const EDITOR_TRANSPORTS: &[&str] = &[
    "ferry-postcard",
    "ferry-rkyv",
    "ferry-json",
    "jsonrpc-stdio",
    "jsonrpc-lsp",
];
/// A completion request's payload (ferry-bench's `editor::schema::COMPLETE_REQUEST_BYTES`).
pub const EDITOR_COMPLETE_BYTES: usize = 2608;
/// The chat prompt's length (`editor::schema::CHAT_PROMPT`).
pub const EDITOR_CHAT_BYTES: usize = 57;
pub const EDITOR_FILE_BYTES: usize = 1 << 20;

/// The editor family (Linux; the same in `--quick`, with shorter counts): every transport runs
/// complete, complete-16, chat and analyze (tarpc, with `rpc_peers`: all but chat, it has no
/// streams); Ferry's postcard client also runs the pipelined calls and the old system's two
/// load tests.
fn editor_plan(rpc_peers: bool) -> Vec<Item> {
    let mut items = Vec::new();
    for (scenario, size) in [
        ("editor-complete", EDITOR_COMPLETE_BYTES),
        ("editor-complete-16", EDITOR_COMPLETE_BYTES),
        ("editor-chat", EDITOR_CHAT_BYTES),
        ("editor-analyze", EDITOR_FILE_BYTES),
    ] {
        for &transport in EDITOR_TRANSPORTS {
            items.push(Item {
                transport,
                scenario,
                size,
            });
        }
        if rpc_peers {
            items.push(Item {
                transport: "grpc",
                scenario,
                size,
            });
            if scenario != "editor-chat" {
                items.push(Item {
                    transport: "tarpc",
                    scenario,
                    size,
                });
            }
        }
    }
    for (scenario, size) in [
        ("editor-pipelined", 8),
        ("editor-old-100x10k", EDITOR_COMPLETE_BYTES),
        ("editor-old-32x1k", 1024),
    ] {
        items.push(Item {
            transport: "ferry-postcard",
            scenario,
            size,
        });
    }
    items
}

/// The servers of a run, by transport.
struct Servers {
    ferry: Proc,
    ferry_park: Option<Proc>,
    /// The OS's local stream: the Unix socket (`uds`), under Wine the named pipe (`npipe`).
    local: Proc,
    tcp: Option<(Proc, u16)>,
    node: Option<Proc>,
    /// The typed editor engine (`serve editor`; not under Wine).
    editor: Option<Proc>,
    /// tarpc's and tonic's servers (`serve tarpc`, `serve grpc`, when the RPC peers run).
    tarpc: Option<Proc>,
    grpc: Option<Proc>,
}

struct Harness {
    bin: PathBuf,
    root: PathBuf,
    dir: PathBuf,
    opts: Options,
    /// `--wine`: the prefix every process runs in.
    wine_prefix: Option<String>,
}

impl Harness {
    fn command(&self, args: &[&str], cpu: Option<u32>) -> Command {
        let mut c = match &self.wine_prefix {
            Some(prefix) => {
                let mut c = Command::new("wine");
                c.arg(&self.bin)
                    .env("WINEPREFIX", prefix)
                    .env("WINEDEBUG", "-all");
                c
            }
            None => Command::new(&self.bin),
        };
        c.args(args).current_dir(&self.root);
        if let Some(cpu) = cpu {
            c.arg("--cpu").arg(cpu.to_string());
        }
        c
    }

    fn dir(&self) -> &str {
        self.dir.to_str().unwrap_or(".")
    }

    /// The local stream peer's transport: `uds`, or `npipe` under Wine.
    fn local(&self) -> &'static str {
        if self.opts.wine { "npipe" } else { "uds" }
    }

    /// Where the local stream server listens: a socket file, or a pipe name under Wine.
    fn local_path(&self) -> String {
        if self.opts.wine {
            format!(r"\\.\pipe\ferry-bench-{}-npipe", std::process::id())
        } else {
            self.dir.join("uds.sock").display().to_string()
        }
    }

    /// How long a process may take to print `ready` (Wine starts processes slowly).
    fn start_timeout(&self) -> Duration {
        Duration::from_secs(if self.opts.wine { 60 } else { 20 })
    }

    /// The Unix socket of an RPC framework peer's server.
    fn rpc_path(&self, kind: &str) -> String {
        self.dir.join(format!("{kind}.sock")).display().to_string()
    }

    fn server_cpu(&self) -> Option<u32> {
        self.opts.pin.map(|(s, _)| s)
    }

    fn client_cpu(&self) -> Option<u32> {
        self.opts.pin.map(|(_, c)| c)
    }

    fn ferry_server(&self, name: &str, policy: &str) -> Result<Proc, String> {
        let mut p = Proc::spawn(
            format!("the Ferry server `{name}`"),
            self.command(
                &[
                    "serve",
                    "ferry",
                    "--name",
                    name,
                    "--dir",
                    self.dir(),
                    "--policy",
                    policy,
                ],
                self.server_cpu(),
            ),
        )?;
        p.expect("ready", self.start_timeout())?;
        Ok(p)
    }

    fn start_servers(&self, node: bool) -> Result<Servers, String> {
        let ferry = self.ferry_server("bench-a", "adaptive")?;
        let ferry_park = if self.opts.quick {
            None
        } else {
            Some(self.ferry_server("bench-p", "park")?)
        };
        let mut local = Proc::spawn(
            if self.opts.wine {
                "the named-pipe server"
            } else {
                "the Unix-socket server"
            },
            self.command(
                &["serve", self.local(), "--path", &self.local_path()],
                self.server_cpu(),
            ),
        )?;
        local.expect("ready", self.start_timeout())?;
        let tcp = if self.opts.quick && !self.opts.wine {
            None
        } else {
            let mut p = Proc::spawn(
                "the TCP server",
                self.command(&["serve", "tcp"], self.server_cpu()),
            )?;
            let ready = Fields::parse(&p.expect("ready", self.start_timeout())?);
            let port = u16::try_from(ready.need("port")?).map_err(|e| e.to_string())?;
            Some((p, port))
        };
        let node = if node {
            let script = self.root.join("benches/peers/node_echo.js");
            let mut c = Command::new("node");
            c.arg(script).arg(self.dir.join("node.sock"));
            let mut p = Proc::spawn("the Node.js server", c)?;
            p.expect("ready", Duration::from_secs(20))?;
            Some(p)
        } else {
            None
        };
        let editor = if self.opts.wine {
            None
        } else {
            let mut p = Proc::spawn(
                "the typed editor engine",
                self.command(
                    &["serve", "editor", "--name", "bench-e", "--dir", self.dir()],
                    self.server_cpu(),
                ),
            )?;
            p.expect("ready", self.start_timeout())?;
            Some(p)
        };
        let rpc_server = |kind: &str| -> Result<Option<Proc>, String> {
            if !self.opts.rpc_peers() {
                return Ok(None);
            }
            let mut p = Proc::spawn(
                format!("the {kind} server"),
                self.command(
                    &["serve", kind, "--path", &self.rpc_path(kind)],
                    self.server_cpu(),
                ),
            )?;
            p.expect("ready", self.start_timeout())?;
            Ok(Some(p))
        };
        let tarpc = rpc_server("tarpc")?;
        let grpc = rpc_server("grpc")?;
        Ok(Servers {
            ferry,
            ferry_park,
            local,
            tcp,
            node,
            editor,
            tarpc,
            grpc,
        })
    }

    /// One client run of `item` against its server.
    fn measure(&self, item: &Item, servers: &mut Servers) -> Result<Run, String> {
        let size = item.size.to_string();
        let samples = self.opts.samples.to_string();
        let warmup = (self.opts.samples / 10).max(1000).to_string();
        let duration = if self.opts.quick { "200" } else { "1000" };
        let mut args: Vec<String> = [
            "client",
            item.transport,
            item.scenario,
            "--size",
            &size,
            "--sync",
            "1",
        ]
        .map(str::to_owned)
        .to_vec();
        let mut push = |k: &str, v: &str| {
            args.push(k.to_owned());
            args.push(v.to_owned());
        };
        match item.scenario {
            "rtt" if item.size >= RTT_LARGE => {
                push("--samples", &RTT_LARGE_SAMPLES.to_string());
                push("--warmup", &(RTT_LARGE_SAMPLES / 10).to_string());
            }
            "rtt" => {
                push("--samples", &samples);
                push("--warmup", &warmup);
            }
            s if s.starts_with("load-") => push("--calls", &LOAD_CALLS.to_string()),
            s if s.starts_with("editor-") => {
                for (k, v) in self.editor_args(s) {
                    push(k, &v);
                }
            }
            _ => push("--duration-ms", duration),
        }
        if item.scenario == "pipelined" {
            // Every transport: one client thread keeps 64 requests in flight on one connection.
            push("--window", "64");
        }
        let dir = self.dir().to_owned();
        // iceoryx2's polling server spins a CPU for as long as it runs: it is started for its
        // own measurement only, and stopped after it.
        let mut iox = None;
        if item.transport.starts_with("iceoryx2") {
            let name = format!("ferry-bench-{}-{}", std::process::id(), item.transport);
            let wait = if item.transport == "iceoryx2-block" {
                "block"
            } else {
                "poll"
            };
            let mut p = Proc::spawn(
                format!("the {} server", item.transport),
                self.command(
                    &[
                        "serve", "iceoryx2", "--name", &name, "--size", "1024", "--wait", wait,
                    ],
                    self.server_cpu(),
                ),
            )?;
            p.expect("ready", Duration::from_secs(20))?;
            push("--name", &name);
            iox = Some(p);
        }
        let (server, extra): (Option<&mut Proc>, Vec<(&str, String)>) = match item.transport {
            t if t.starts_with("ferry-") && item.scenario.starts_with("editor-") => (
                servers.editor.as_mut(),
                vec![("--name", "bench-e".into()), ("--dir", dir)],
            ),
            "ferry" | "ferry-async" => (
                Some(&mut servers.ferry),
                vec![("--name", "bench-a".into()), ("--dir", dir)],
            ),
            "tarpc" => (
                servers.tarpc.as_mut(),
                vec![("--path", self.rpc_path("tarpc"))],
            ),
            "grpc" => (
                servers.grpc.as_mut(),
                vec![("--path", self.rpc_path("grpc"))],
            ),
            "ferry-park" => (
                servers.ferry_park.as_mut(),
                vec![("--name", "bench-p".into()), ("--dir", dir)],
            ),
            "uds" | "npipe" => (
                Some(&mut servers.local),
                vec![("--path", self.local_path())],
            ),
            "node" => (
                servers.node.as_mut(),
                vec![("--path", self.dir.join("node.sock").display().to_string())],
            ),
            "tcp" => {
                let (p, port) = servers.tcp.as_mut().ok_or("no TCP server")?;
                (Some(p), vec![("--port", port.to_string())])
            }
            t if t.starts_with("iceoryx2") => (iox.as_mut(), vec![]),
            _ => (None, vec![]),
        };
        for (k, v) in &extra {
            push(k, v);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut client = Proc::spawn(
            format!("the {} {} client", item.transport, item.scenario),
            self.command(&args, self.client_cpu()),
        )?;
        let long = Duration::from_secs(600);
        client.expect("warm", long)?;
        let is_ferry = item.transport.starts_with("ferry");
        let mut server = server;
        let before = match (&mut server, is_ferry) {
            (Some(s), true) => Some(s.stats()?),
            _ => None,
        };
        client.send("")?;
        let result = Fields::parse(&client.expect("result", long)?);
        let hist_line = client.expect("hist", Duration::from_secs(10))?;
        let client_cpu = busiest_thread_cpu(client.pid());
        let server_cpu = server.as_ref().and_then(|s| busiest_thread_cpu(s.pid()));
        client.expect("done", Duration::from_secs(10))?;
        let after = match (&mut server, is_ferry) {
            (Some(s), true) => Some(s.stats()?),
            _ => None,
        };
        // What the Ferry server counted in the measured window (its counters between the
        // client's `warm` and `done`).
        let delta = |end: &str, start: &str| -> Result<Option<u64>, String> {
            match (&before, &after) {
                (Some(b), Some(a)) => Ok(Some(a.need(end)?.saturating_sub(b.need(start)?))),
                _ => Ok(None),
            }
        };
        let server_allocs = delta("allocs", "allocs_end")?;
        let server_requests = delta("requests", "requests")?;
        let server_notifications = delta("notifications", "notifications")?;
        client.send("")?;
        client.finish(Duration::from_secs(10))?;
        if let Some(mut p) = iox {
            p.send("quit")?;
            p.finish(Duration::from_secs(10))?;
        }
        Ok(Run {
            hist: Hist::parse(hist_line.strip_prefix("hist").unwrap_or(""))?,
            msgs: result.need("msgs")?,
            bytes: result.need("bytes")?,
            elapsed_ns: result.need("elapsed_ns")?,
            client_allocs: result.need("allocs")?,
            server_allocs,
            server_requests,
            server_notifications,
            client_cpu,
            server_cpu,
        })
    }

    /// The counts of an editor scenario's client (shorter under `--quick`).
    fn editor_args(&self, scenario: &str) -> Vec<(&'static str, String)> {
        let q = self.opts.quick;
        let pick = |quick: u64, full: u64| if q { quick } else { full }.to_string();
        let duration = pick(200, 1000);
        match scenario {
            "editor-complete" => vec![
                ("--samples", self.opts.samples.to_string()),
                ("--warmup", (self.opts.samples / 10).max(1000).to_string()),
            ],
            "editor-complete-16" => vec![("--threads", "16".into()), ("--duration-ms", duration)],
            "editor-chat" => vec![
                ("--samples", pick(20, 200)),
                ("--warmup", pick(5, 20)),
                ("--tokens", "500".into()),
            ],
            "editor-analyze" => vec![("--samples", pick(10, 100)), ("--warmup", pick(2, 10))],
            "editor-pipelined" => vec![("--window", "64".into()), ("--duration-ms", duration)],
            "editor-old-100x10k" => vec![("--conns", "100".into()), ("--calls", pick(200, 10_000))],
            "editor-old-32x1k" => vec![("--conns", "32".into()), ("--calls", pick(500, 10_000))],
            _ => vec![],
        }
    }

    /// 1000 connections from 10 processes against a fresh server.
    fn scale(&self, run: usize, figures: &mut Figures) -> Result<Run, String> {
        const PROCESSES: usize = 10;
        const PER_PROCESS: usize = 100;
        let name = format!("bench-s{run}");
        let mut server = self.ferry_server(&name, "adaptive")?;
        let rest = server.stats()?;
        let duration = if self.opts.quick { "300" } else { "2000" };
        let mut clients = Vec::new();
        for i in 0..PROCESSES {
            clients.push(Proc::spawn(
                format!("scale client {i}"),
                self.command(
                    &[
                        "scale",
                        "--name",
                        &name,
                        "--dir",
                        self.dir(),
                        "--conns",
                        &PER_PROCESS.to_string(),
                        "--threads",
                        "1",
                        "--duration-ms",
                        duration,
                    ],
                    None,
                ),
            )?);
        }
        for c in &mut clients {
            c.expect("connected", Duration::from_secs(120))?;
        }
        let loaded = server.stats()?;
        for c in &mut clients {
            c.send("go")?;
        }
        let mut merged = Run::default();
        let (mut served, mut open) = (0, 0);
        for mut c in clients {
            let r = Fields::parse(&c.expect("result", Duration::from_secs(120))?);
            let h = Hist::parse(
                c.expect("hist", Duration::from_secs(10))?
                    .strip_prefix("hist")
                    .unwrap_or(""),
            )?;
            merged.hist.merge(&h);
            merged.msgs += r.need("msgs")?;
            merged.bytes += r.need("bytes")?;
            merged.elapsed_ns = merged.elapsed_ns.max(r.need("elapsed_ns")?);
            served += r.need("served")?;
            open += r.need("open")?;
            c.finish(Duration::from_secs(30))?;
        }
        merged.server_cpu = busiest_thread_cpu(server.pid());
        server.send("quit")?;
        server.finish(Duration::from_secs(10))?;
        let kib = |f: &Fields, k: &str| f.num(k).map_or(f64::NAN, |v| v as f64);
        let mem = self.memory_keys();
        figures.add(
            "scale: connections open at the server while all were connected",
            loaded.num("conns").map_or(f64::NAN, |v| v as f64),
            "",
        );
        figures.add(
            "scale: connections that completed calls (all processes)",
            served as f64,
            "",
        );
        figures.add(
            "scale: connections still open at the end (clients' view)",
            open as f64,
            "",
        );
        figures.add(
            &format!("scale server {}, no connections", mem.private.1),
            kib(&rest, mem.private.0),
            "KiB",
        );
        figures.add(
            &format!("scale server {} with 1000 connections", mem.private.1),
            kib(&loaded, mem.private.0),
            "KiB",
        );
        figures.add(
            &format!("scale server {} with 1000 connections", mem.total.1),
            kib(&loaded, mem.total.0),
            "KiB",
        );
        if !self.opts.wine {
            figures.add(
                "scale server RssShmem (rings) with 1000 connections",
                kib(&loaded, "rss_shmem_kb"),
                "KiB",
            );
        }
        figures.add(
            &format!(
                "private memory per connection ({} growth / 1000)",
                mem.private.1
            ),
            (kib(&loaded, mem.private.0) - kib(&rest, mem.private.0)) * 1024.0
                / (PROCESSES * PER_PROCESS) as f64,
            "bytes",
        );
        Ok(merged)
    }

    /// Kill a server under a connected client, start a new one, time the client's return.
    fn reconnect(&self, run: usize) -> Result<f64, String> {
        let name = format!("bench-r{run}");
        let server = self.ferry_server(&name, "adaptive")?;
        let mut client = Proc::spawn(
            "the reconnecting client",
            self.command(&["reconnect", "--name", &name, "--dir", self.dir()], None),
        )?;
        client.expect("connected", self.start_timeout())?;
        std::thread::sleep(Duration::from_millis(20));
        server.kill();
        // Let the client see the hang-up and start its backoff, as after a real crash.
        std::thread::sleep(Duration::from_millis(20));
        let mut server = Proc::spawn(
            format!("the restarted Ferry server `{name}`"),
            self.command(
                &["serve", "ferry", "--name", &name, "--dir", self.dir()],
                self.server_cpu(),
            ),
        )?;
        let ready = Fields::parse(&server.expect("ready", self.start_timeout())?).need("t_ns")?;
        let back =
            Fields::parse(&client.expect("reconnected", Duration::from_secs(20))?).need("t_ns")?;
        client.finish(Duration::from_secs(10))?;
        server.send("quit")?;
        server.finish(Duration::from_secs(10))?;
        Ok(back.saturating_sub(ready) as f64 / 1e6)
    }
}

/// The `stats` keys of a server's private and total memory, with their names in the report.
struct MemoryKeys {
    private: (&'static str, &'static str),
    total: (&'static str, &'static str),
}

impl Harness {
    /// Linux: `/proc/self/status`'s `RssAnon` and `VmRSS`. Windows (Wine):
    /// `GetProcessMemoryInfo`'s commit charge and working set, as Wine reports them.
    fn memory_keys(&self) -> MemoryKeys {
        if self.opts.wine {
            MemoryKeys {
                private: ("pagefile_kb", "PagefileUsage (Wine)"),
                total: ("working_set_kb", "WorkingSetSize (Wine)"),
            }
        } else {
            MemoryKeys {
                private: ("rss_anon_kb", "RssAnon"),
                total: ("vm_rss_kb", "VmRSS"),
            }
        }
    }
}

/// Named single figures, each with the values of every run (reported as their median).
#[derive(Default)]
struct Figures(Vec<(String, Vec<f64>, &'static str)>);

impl Figures {
    fn add(&mut self, name: &str, value: f64, unit: &'static str) {
        match self.0.iter_mut().find(|(n, _, _)| n == name) {
            Some((_, values, _)) => values.push(value),
            None => self.0.push((name.to_owned(), vec![value], unit)),
        }
    }
    fn median(&self, name: &str) -> Option<f64> {
        let (_, values, _) = self.0.iter().find(|(n, _, _)| n == name)?;
        model::median(values.clone())
    }
    fn values(&self, name: &str) -> Vec<f64> {
        self.0
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, values, _)| values.clone())
            .unwrap_or_default()
    }
    fn min(&self, name: &str) -> Option<f64> {
        let (_, values, _) = self.0.iter().find(|(n, _, _)| n == name)?;
        values
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .reduce(f64::min)
    }
}

fn progress(step: usize, total: usize, text: &str) {
    print!("[{step:>3}/{total}] {text} … ");
    let _ = std::io::stdout().flush();
}

fn describe(run: &Run) -> String {
    match run.hist.percentile(50.0) {
        Some(p50) => format!(
            "p50 {:.2} µs, p99 {:.2} µs",
            p50 as f64 / 1e3,
            run.hist.percentile(99.0).unwrap_or(0) as f64 / 1e3
        ),
        None => format!(
            "{:.2} M msgs/s, {:.2} GB/s",
            run.msgs_per_sec() / 1e6,
            run.gbps()
        ),
    }
}

pub fn run(opts: &Options) -> ExitCode {
    match gate(opts) {
        Ok(missed) if missed.is_empty() => ExitCode::SUCCESS,
        Ok(missed) => {
            if opts.wine {
                eprintln!("\nbench-gate --wine: {} check(s) failed:", missed.len());
            } else {
                eprintln!("\nbench-gate: {} gate(s) missed:", missed.len());
            }
            for m in &missed {
                eprintln!("  - {m}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("\nbench-gate: {e}");
            ExitCode::from(2)
        }
    }
}

fn read_trim(path: &str) -> String {
    fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn loadavg() -> String {
    read_trim("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `YYYY-MM-DD HH:MM` (UTC) from the system clock.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm), for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Runs the benchmark; returns the enforced gates that were missed, or under Wine the checks
/// that failed (empty: all passed).
pub fn gate(opts: &Options) -> Result<Vec<String>, String> {
    let started = Instant::now();
    let ws = Workspace::discover()?;
    let bounds = gates::parse(
        &fs::read_to_string(ws.root.join(gates::GATES_FILE))
            .map_err(|e| format!("reading {}: {e}", gates::GATES_FILE))?,
    )?;
    let failure = |f: crate::cmd::Failure| match f.hint {
        Some(hint) => format!("{} ({hint})", f.what),
        None => f.what,
    };
    let wine_prefix = if opts.wine {
        println!("bench-gate --wine: preparing the Wine prefix");
        Some(
            wine::prepare(&ws.target_dir, "runs the Windows build of ferry-bench", "")
                .map_err(failure)?,
        )
    } else {
        None
    };
    let mut build = Cmd::cargo().args(["build", "--release", "-p", "ferry-bench"]);
    let bin = if opts.wine {
        println!("bench-gate --wine: building ferry-bench for {WINDOWS_TARGET} (release)");
        build = build.args(["--target", WINDOWS_TARGET]);
        ws.target_dir
            .join(WINDOWS_TARGET)
            .join("release/ferry-bench.exe")
    } else {
        println!("bench-gate: building ferry-bench (release)");
        ws.target_dir.join("release/ferry-bench")
    };
    let mut features = Vec::new();
    if opts.all_peers {
        features.push("iceoryx2");
    }
    if opts.rpc_peers() {
        features.push("peers-rpc");
    }
    if !features.is_empty() {
        build = build.args(["--features", features.join(",").as_str()]);
    }
    build.run().map_err(|f| {
        if opts.wine {
            failure(f.hint(format!(
                "is the target installed? `rustup target add {WINDOWS_TARGET}`"
            )))
        } else {
            f.what
        }
    })?;
    let out_dir = if opts.wine {
        ws.target_dir.join("bench-gate/wine")
    } else {
        ws.target_dir.join("bench-gate")
    };
    let dir = out_dir.join(format!("run-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let h = Harness {
        bin,
        root: ws.root.clone(),
        dir: dir.clone(),
        opts: opts.clone(),
        wine_prefix,
    };
    let result = measure_all(&h, opts, &bounds, &out_dir);
    let _ = fs::remove_dir_all(&dir);
    if let Some(prefix) = &h.wine_prefix {
        wine::stop_server(prefix);
    }
    let missed = result?;
    println!(
        "bench-gate: finished in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(missed)
}

fn measure_all(
    h: &Harness,
    opts: &Options,
    bounds: &BTreeMap<&'static str, gates::Bound>,
    out_dir: &Path,
) -> Result<Vec<String>, String> {
    let mut report = Report {
        date_utc: utc_now(),
        commit: Cmd::new("git")
            .args(["describe", "--always", "--dirty"])
            .read()
            .map_or_else(|| "unknown".to_owned(), |s| s.trim().to_owned()),
        mode: if opts.quick { "quick" } else { "full" }.to_owned(),
        runs: opts.runs,
        pin: opts
            .pin
            .map(|(s, c)| format!("server CPU {s}, client CPU {c}")),
        cpu_model: read_trim("/proc/cpuinfo")
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, m)| m.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".to_owned()),
        cpus: std::thread::available_parallelism().map_or(0, usize::from),
        kernel: read_trim("/proc/sys/kernel/osrelease"),
        load_start: loadavg(),
        wine: opts.wine.then(|| {
            Cmd::new("wine").arg("--version").read().map_or_else(
                || "Wine (version unknown)".to_owned(),
                |v| v.trim().to_owned(),
            )
        }),
        ..Report::default()
    };
    let node = !opts.quick && !opts.wine && on_path("node");
    if opts.wine {
        report.notes.extend(wine_notes(h));
    } else {
        if !opts.quick && !node {
            report
                .notes
                .push("Node.js peer skipped: `node` is not on PATH.".into());
        }
        if node && opts.pin.is_some() {
            report.notes.push(
                "The Node.js server is not pinned (`--pin` applies to ferry-bench processes)."
                    .into(),
            );
        }
        if !opts.rpc_peers() {
            report.notes.push(
                "tarpc and gRPC not measured: `--quick` does not build ferry-bench's `peers-rpc` \
                 feature (`--peers rpc` or `--peers all` adds them)."
                    .into(),
            );
        }
        if !opts.all_peers {
            report.notes.push(
                "iceoryx2 not measured: it is slow to compile; `--peers all` adds it (polling and blocking).".into(),
            );
        }
    }
    report.notes.push(format!(
        "This machine has {} CPUs: a spinning Ferry client and server own them while they run.",
        report.cpus
    ));
    let items = plan(opts, node);
    let total = items.len() * opts.runs + 2 * opts.runs;
    let mut step = 0;
    let mut figures = Figures::default();
    let mut servers = h.start_servers(node)?;
    let fresh = servers.ferry.stats()?;
    let mut runs: BTreeMap<Key, Vec<Run>> = BTreeMap::new();
    for run in 1..=opts.runs {
        for item in &items {
            step += 1;
            progress(
                step,
                total,
                &format!(
                    "run {run}/{} {:<9} {:>7} {:<10}",
                    opts.runs,
                    item.scenario,
                    report::size(item.size),
                    item.transport
                ),
            );
            let t = Instant::now();
            let r = h.measure(item, &mut servers)?;
            println!("{} ({:.1} s)", describe(&r), t.elapsed().as_secs_f64());
            runs.entry(Key {
                transport: item.transport.to_owned(),
                scenario: item.scenario.to_owned(),
                size: item.size,
            })
            .or_default()
            .push(r);
        }
        step += 1;
        progress(
            step,
            total,
            &format!(
                "run {run}/{} scale: 1000 connections from 10 processes",
                opts.runs
            ),
        );
        let t = Instant::now();
        let r = h.scale(run, &mut figures)?;
        println!(
            "{}, {:.0} requests/s ({:.1} s)",
            describe(&r),
            r.msgs_per_sec(),
            t.elapsed().as_secs_f64()
        );
        runs.entry(Key {
            transport: "ferry".into(),
            scenario: "scale-1000".into(),
            size: 64,
        })
        .or_default()
        .push(r);
        step += 1;
        progress(
            step,
            total,
            &format!("run {run}/{} reconnect after a server restart", opts.runs),
        );
        let ms = h.reconnect(run)?;
        println!("{ms:.2} ms");
        figures.add(
            "reconnect: restarted server's bind → first answer",
            ms,
            "ms",
        );
    }
    // At rest after the traffic: every client has gone; wait for the server to notice.
    let mut after = servers.ferry.stats()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while after.num("conns").unwrap_or(0) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        after = servers.ferry.stats()?;
    }
    let kib = |f: &Fields, k: &str| f.num(k).map_or(f64::NAN, |v| v as f64);
    let mem = h.memory_keys();
    for (when, stats) in [("fresh", &fresh), ("after all the traffic above", &after)] {
        for (key, name) in [mem.private, mem.total] {
            figures.add(
                &format!("server {name} at rest, {when}"),
                kib(stats, key),
                "KiB",
            );
        }
    }
    report.load_end = loadavg();

    report.summaries = runs
        .iter()
        .map(|(k, v)| model::summarize(k.clone(), v))
        .collect();
    report.summaries.sort_by_key(|s| {
        let order = [
            "rtt",
            "oneway",
            "pipelined",
            "load-100",
            "load-32",
            "scale-1000",
            "editor-complete",
            "editor-complete-16",
            "editor-chat",
            "editor-analyze",
            "editor-pipelined",
            "editor-old-100x10k",
            "editor-old-32x1k",
        ];
        let t = [
            "ferry",
            "ferry-async",
            "ferry-park",
            "uds",
            "npipe",
            "tcp",
            "pipe",
            "node",
            "ferry-postcard",
            "ferry-rkyv",
            "ferry-json",
            "jsonrpc-stdio",
            "jsonrpc-lsp",
            "tarpc",
            "grpc",
        ];
        (
            order
                .iter()
                .position(|o| *o == s.key.scenario)
                .unwrap_or(99),
            s.key.size,
            t.iter().position(|o| *o == s.key.transport).unwrap_or(99),
        )
    });
    report.figures = figures
        .0
        .iter()
        .map(|(n, v, u)| (n.clone(), model::median(v.clone()).unwrap_or(f64::NAN), *u))
        .collect();

    let find = |t: &str, s: &str, size: usize| -> Option<&Summary> {
        report
            .summaries
            .iter()
            .find(|x| x.key.transport == t && x.key.scenario == s && x.key.size == size)
    };
    let mut measured: BTreeMap<&'static str, f64> = BTreeMap::new();
    if opts.wine {
        // Wine's figures are not Windows's: no gate applies to them, only the sanity checks.
        report.checks = wine_checks(opts, &runs, &figures);
    } else if let Some(f) = find("ferry", "rtt", 64) {
        if let Some(p99) = f.p99_ns {
            measured.insert("rtt_64b_p99_us", p99 / 1e3);
        }
        if let (Some(a), Some(b)) = (f.p50_ns, find("uds", "rtt", 64).and_then(|u| u.p50_ns)) {
            measured.insert("rtt_64b_p50_ratio_to_uds", a / b);
        }
        if let Some(server) = f.server_allocs_per_msg {
            measured.insert("allocs_per_msg", f.client_allocs_per_msg.max(server));
        }
    }
    if let Some(f) = find("ferry", "pipelined", 64) {
        measured.insert("pipelined_64b_requests_per_sec", f.msgs_per_sec);
        if let Some(best) = best_of(&report.summaries, &["uds", "tcp", "pipe"], "pipelined", 64) {
            measured.insert("pipelined_64b_ratio_to_best_peer", f.msgs_per_sec / best);
        }
    }
    if let Some(f) = find("ferry", "oneway", 64) {
        measured.insert("oneway_64b_msgs_per_sec", f.msgs_per_sec);
    }
    if let Some(f) = find("ferry", "oneway", 1 << 20)
        && let Some(best) = best_of(&report.summaries, &["uds", "tcp"], "oneway", 1 << 20)
    {
        measured.insert("oneway_1mib_ratio_to_best_socket", f.msgs_per_sec / best);
    }
    // Every small round trip Ferry measured (the 1 MiB one moves 2 MiB: not a latency figure).
    let small_rtt_p99 = report
        .summaries
        .iter()
        .filter(|x| x.key.transport == "ferry" && x.key.scenario == "rtt" && x.key.size < RTT_LARGE)
        .filter_map(|x| x.p99_ns)
        .fold(None, |worst: Option<f64>, p| {
            Some(worst.map_or(p, |w| w.max(p)))
        });
    if let Some(p99) = small_rtt_p99 {
        measured.insert("rtt_p99_us", p99 / 1e3);
    }
    if let Some(p99) = find("ferry", "scale-1000", 64).and_then(|f| f.p99_ns) {
        measured.insert("scale_1000_p99_us", p99 / 1e3);
    }
    if let (Some(a), Some(b)) = (
        find("ferry", "load-100", 64).and_then(|f| f.p99_ns),
        find("uds", "load-100", 64).and_then(|f| f.p99_ns),
    ) {
        measured.insert("load_100_p99_ratio_to_uds", a / b);
    }
    if let Some(f) = find("ferry-async", "load-100", 64) {
        measured.insert("load_100_async_calls_per_sec", f.msgs_per_sec);
    }
    let rest = kib(&fresh, "rss_anon_kb").max(kib(&after, "rss_anon_kb"));
    if rest.is_finite() {
        measured.insert("rss_anon_at_rest_kib", rest);
    }
    if let Some(served) = figures.min("scale: connections that completed calls (all processes)") {
        measured.insert("connections_served", served);
    }
    if let Some(ms) = figures.median("reconnect: restarted server's bind → first answer") {
        measured.insert("reconnect_ms", ms);
    }
    editor_gates(&report.summaries, &mut measured);
    if !opts.wine {
        report.gates = gates::judge(bounds, &measured, opts.quick);
    }

    // Stop the servers before writing (their exit is part of a clean run).
    let Servers {
        ferry,
        ferry_park,
        local,
        tcp,
        node,
        editor,
        tarpc,
        grpc,
    } = servers;
    let mut procs = vec![ferry, local];
    procs.extend(ferry_park);
    procs.extend(tcp.map(|(p, _)| p));
    procs.extend(node);
    procs.extend(editor);
    procs.extend(tarpc);
    procs.extend(grpc);
    for mut p in procs {
        p.send("quit")?;
        p.finish(Duration::from_secs(10))?;
    }

    let latency: Vec<&Summary> = report
        .summaries
        .iter()
        .filter(|s| s.key.scenario == "rtt" && s.key.size == 64)
        .collect();
    let title = format!(
        "64 B round trip, two processes{} — {} ({} CPUs), {} UTC, median of {} run(s)",
        report.wine.as_ref().map_or_else(String::new, |w| format!(
            ", under {w} on Linux (not Windows)"
        )),
        report.cpu_model,
        report.cpus,
        report.date_utc,
        report.runs
    );
    let editor: Vec<&Summary> = report
        .summaries
        .iter()
        .filter(|s| s.key.scenario == "editor-complete")
        .collect();
    let editor_title = format!(
        "editor: completion call ({EDITOR_COMPLETE_BYTES} B request, 5 items back), two processes \
         — {} ({} CPUs), {} UTC, median of {} run(s)",
        report.cpu_model, report.cpus, report.date_utc, report.runs
    );
    let mut outputs = vec![
        ("report.json", report::json(&report)),
        ("report.md", report::markdown(&report)),
        ("latency.svg", svg::plot(&title, &latency)),
    ];
    if !editor.is_empty() {
        outputs.push(("latency-editor.svg", svg::plot(&editor_title, &editor)));
    }
    for (name, text) in &outputs {
        let path = out_dir.join(name);
        fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
        let written = fs::metadata(&path).map_or(0, |m| m.len());
        if written == 0 {
            return Err(format!("{} was not written", path.display()));
        }
    }
    println!("\n{}", report::table(&report));
    println!(
        "bench-gate: wrote {0}/report.json, {0}/report.md, {0}/latency.svg{1}",
        out_dir.display(),
        if editor.is_empty() {
            String::new()
        } else {
            format!(", {}/latency-editor.svg", out_dir.display())
        }
    );
    if opts.wine {
        return Ok(report
            .checks
            .iter()
            .filter(|c| !c.pass)
            .map(|c| format!("{}: {}", c.what, c.detail))
            .collect());
    }
    Ok(report
        .gates
        .iter()
        .filter(|g| g.enforced && !g.pass)
        .map(|g| {
            format!(
                "{} ({}): measured {}, must be {}",
                g.name,
                g.what,
                g.measured.map_or_else(|| "nothing".to_owned(), report::num),
                g.threshold_text()
            )
        })
        .collect())
}

/// The editor family's gates from the run's summaries (a figure not measured stays out, and its
/// gate fails as "not measured").
fn editor_gates(summaries: &[Summary], measured: &mut BTreeMap<&'static str, f64>) {
    let find = |t: &str, s: &str| {
        summaries
            .iter()
            .find(|x| x.key.transport == t && x.key.scenario == s)
    };
    let complete = |t: &str| find(t, "editor-complete");
    if let Some(typed) = complete("ferry-postcard") {
        if let Some(p99) = typed.p99_ns {
            measured.insert("editor_complete_p99_us", p99 / 1e3);
        }
        // The faster of the two JSON-RPC framings: the stricter comparison.
        let jsonrpc = ["jsonrpc-stdio", "jsonrpc-lsp"]
            .iter()
            .filter_map(|t| complete(t)?.p50_ns)
            .reduce(f64::min);
        if let (Some(a), Some(b)) = (typed.p50_ns, jsonrpc) {
            measured.insert("editor_complete_p50_ratio_to_jsonrpc", a / b);
        }
    }
    let allocs: Vec<Option<f64>> = ["ferry-postcard", "ferry-rkyv"]
        .iter()
        .map(|t| complete(t).and_then(|s| s.server_allocs_per_msg))
        .collect();
    if let Some(all) = allocs.into_iter().collect::<Option<Vec<f64>>>() {
        measured.insert(
            "editor_server_allocs_per_call",
            all.into_iter().fold(0.0, f64::max),
        );
    }
    if let Some(p) = find("ferry-postcard", "editor-pipelined") {
        measured.insert("editor_pipelined_calls_per_sec", p.msgs_per_sec);
    }
}

/// What a `--wine` report says about itself, besides its header.
fn wine_notes(h: &Harness) -> Vec<String> {
    vec![
        "Every process (servers, clients, the pipe peer's child) is ferry-bench built for \
         x86_64-pc-windows-gnu, run by Wine on the Linux machine above. Windows calls are Wine's, \
         several of them requests to wineserver (named-pipe I/O, events, waits on handles: \
         what a parked Ferry side and its doorbell use), so a figure here says how the Windows \
         build behaves under Wine, not how it performs on Windows."
            .into(),
        "No gate of benches/gates.toml is applied: the checks only say that every run \
         completed and every call was answered."
            .into(),
        "Peers: `npipe` is a byte-mode named pipe with blocking ReadFile/WriteFile, one instance \
         per client; `tcp` is Winsock TCP loopback with TCP_NODELAY; `pipe` is a pair of \
         anonymous pipes to a child process. Not measured under Wine: the Unix socket, Node.js, \
         iceoryx2, payloads other than 64 B."
            .into(),
        "Wine's performance counter (behind `Instant`) ticks every 100 ns: latencies are \
         multiples of 0.1 µs."
            .into(),
        "Memory: Wine's GetProcessMemoryInfo, i.e. the Linux process that hosts the Windows \
         program, Wine's own libraries and heaps included: Wine 8 reports that process's \
         RssAnon + VmSwap as PagefileUsage (the commit charge) and its VmRSS as \
         WorkingSetSize; it leaves PrivateUsage 0, so that is not shown. Not comparable with \
         Windows, nor with the Linux report's RssAnon. Allocations are those of ferry-bench's \
         Rust allocator (Wine's own are not seen)."
            .into(),
        "\"CPUs c/s\": the Linux CPU that the busiest thread of each Wine process last ran on."
            .into(),
        format!(
            "{} timed round trips per latency run (`--samples`), after {} untimed.",
            h.opts.samples,
            (h.opts.samples / 10).max(1000)
        ),
    ]
}

/// The `--wine` run's checks: every run completed (or the run would have stopped with an
/// error), every call was answered, and the Ferry server counted what the client sent.
fn wine_checks(
    opts: &Options,
    runs: &BTreeMap<Key, Vec<Run>>,
    figures: &Figures,
) -> Vec<report::Check> {
    let mut checks = Vec::new();
    for (key, runs) in runs {
        if key.scenario == "scale-1000" {
            continue;
        }
        let what = format!(
            "{} {} {}: every call answered",
            key.transport,
            key.scenario,
            report::size(key.size)
        );
        let mut problems = Vec::new();
        let mut total = 0;
        for (i, r) in runs.iter().enumerate() {
            let n = i + 1;
            total += r.msgs;
            if r.msgs == 0 {
                problems.push(format!("run {n}: nothing completed"));
            }
            if key.scenario == "rtt" && (r.msgs != opts.samples || r.hist.count() != opts.samples) {
                problems.push(format!(
                    "run {n}: {} answered, {} timed, of {}",
                    r.msgs,
                    r.hist.count(),
                    opts.samples
                ));
            }
            // The Ferry server's own count of what it handled in the measured window.
            let (counted, unit) = if key.scenario == "oneway" {
                (r.server_notifications, "notifications")
            } else {
                (r.server_requests, "requests")
            };
            if let Some(counted) = counted {
                // (A one-way run's closing call is a request: not among the notifications.)
                if counted != r.msgs {
                    problems.push(format!(
                        "run {n}: the client counted {}, the server {counted} {unit}",
                        r.msgs
                    ));
                }
            }
        }
        let server = if runs.iter().any(|r| r.server_requests.is_some()) {
            ", the server's counters agree"
        } else {
            ""
        };
        checks.push(report::Check {
            what,
            pass: problems.is_empty(),
            detail: if problems.is_empty() {
                format!("{total} in {} run(s){server}", runs.len())
            } else {
                problems.join("; ")
            },
        });
    }
    let all = |name: &str| figures.values(name);
    for (name, what) in [
        (
            "scale: connections that completed calls (all processes)",
            "scale: all 1000 connections from 10 processes completed calls",
        ),
        (
            "scale: connections open at the server while all were connected",
            "scale: the server had all 1000 connections open at once",
        ),
    ] {
        let values = all(name);
        checks.push(report::Check {
            what: what.into(),
            pass: values.len() == opts.runs && values.iter().all(|&v| v == 1000.0),
            detail: format!(
                "per run: {}",
                values
                    .iter()
                    .map(|&v| report::num(v))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    let back = all("reconnect: restarted server's bind → first answer");
    checks.push(report::Check {
        what: "reconnect: the client was served again after every server restart".into(),
        pass: back.len() == opts.runs && back.iter().all(|v| v.is_finite()),
        detail: format!("{} of {} restart(s)", back.len(), opts.runs),
    });
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn options_parse_and_quick_lowers_the_defaults() {
        assert_eq!(parse(&[]).unwrap(), Options::default());
        let q = parse(&args("--quick")).unwrap();
        assert_eq!((q.runs, q.samples), (1, 20_000));
        let q = parse(&args("--quick --runs 2 --samples=5000 --pin 0,1")).unwrap();
        assert_eq!((q.runs, q.samples, q.pin), (2, 5000, Some((0, 1))));
        assert!(parse(&args("--pin 0")).unwrap_err().contains("--pin"));
        assert!(parse(&args("--runs 0")).is_err());
        assert!(parse(&args("--fast")).is_err());
        assert!(parse(&args("--peers all")).unwrap().all_peers);
        assert!(parse(&args("--peers some")).is_err());
    }

    #[test]
    fn the_full_plan_has_every_peer_and_the_quick_one_is_small() {
        let full = plan(&Options::default(), true);
        for t in [
            "ferry",
            "ferry-park",
            "ferry-async",
            "uds",
            "tcp",
            "pipe",
            "node",
        ] {
            assert!(
                full.iter()
                    .any(|i| i.transport == t && i.scenario == "rtt" && i.size == 64),
                "{t}"
            );
        }
        assert!(
            full.iter()
                .any(|i| i.scenario == "oneway" && i.size == 1 << 20)
        );
        let all = plan(&parse(&args("--peers all")).unwrap(), true);
        assert!(all.iter().any(|i| i.transport == "iceoryx2-block"));
        assert!(!full.iter().any(|i| i.transport.starts_with("iceoryx2")));
        let quick = plan(&parse(&args("--quick")).unwrap(), false);
        assert!(quick.len() < full.len());
        assert!(
            quick
                .iter()
                .filter(|i| !i.scenario.starts_with("editor-"))
                .all(|i| i.transport == "ferry" || i.transport == "uds")
        );
        // The editor family runs in both, every transport on the four editor scenarios.
        for plan in [&full, &quick] {
            for s in [
                "editor-complete",
                "editor-complete-16",
                "editor-chat",
                "editor-analyze",
            ] {
                for t in EDITOR_TRANSPORTS {
                    assert!(
                        plan.iter().any(|i| i.transport == *t && i.scenario == s),
                        "{t} {s}"
                    );
                }
            }
            for s in ["editor-pipelined", "editor-old-100x10k", "editor-old-32x1k"] {
                assert!(plan.iter().any(|i| i.scenario == s), "{s}");
            }
        }
        // tarpc (no streams: no chat) in full runs, and in `--quick` only with `--peers all`.
        let tarpc = |p: &[Item]| -> Vec<&str> {
            p.iter()
                .filter(|i| i.transport == "tarpc")
                .map(|i| i.scenario)
                .collect()
        };
        assert_eq!(
            tarpc(&full),
            ["editor-complete", "editor-complete-16", "editor-analyze"]
        );
        assert!(tarpc(&quick).is_empty());
        let quick_all = plan(&parse(&args("--quick --peers all")).unwrap(), false);
        assert_eq!(tarpc(&quick_all).len(), 3);
        // gRPC has server streams: all four.
        assert_eq!(full.iter().filter(|i| i.transport == "grpc").count(), 4);
        assert!(!quick.iter().any(|i| i.transport == "grpc"));
        let quick_rpc = parse(&args("--quick --peers rpc")).unwrap();
        assert!(!quick_rpc.all_peers);
        assert_eq!(tarpc(&plan(&quick_rpc, false)).len(), 3);
    }

    #[test]
    fn editor_gates_take_the_typed_rows_and_the_faster_jsonrpc() {
        let summary = |t: &str, s: &str, p50: u64, p99: u64, server: Option<u64>| {
            let run = Run {
                hist: Hist(vec![(p50, 98), (p99, 2)]),
                msgs: 100,
                elapsed_ns: 1_000_000,
                server_allocs: server,
                ..Run::default()
            };
            model::summarize(
                Key {
                    transport: t.into(),
                    scenario: s.into(),
                    size: EDITOR_COMPLETE_BYTES,
                },
                &[run],
            )
        };
        let mut all = vec![
            summary("ferry-postcard", "editor-complete", 4_000, 9_000, Some(0)),
            summary("jsonrpc-stdio", "editor-complete", 50_000, 90_000, None),
            summary("jsonrpc-lsp", "editor-complete", 40_000, 90_000, None),
            summary("ferry-postcard", "editor-pipelined", 0, 0, Some(0)),
        ];
        let mut m = BTreeMap::new();
        editor_gates(&all, &mut m);
        assert_eq!(m["editor_complete_p99_us"], 9.0);
        assert_eq!(m["editor_complete_p50_ratio_to_jsonrpc"], 0.1);
        assert_eq!(m["editor_pipelined_calls_per_sec"], 100_000.0);
        // No rkyv row: the allocation gate has nothing measured (and so fails).
        assert!(!m.contains_key("editor_server_allocs_per_call"));
        all.push(summary(
            "ferry-rkyv",
            "editor-complete",
            4_000,
            9_000,
            Some(3),
        ));
        let mut m = BTreeMap::new();
        editor_gates(&all, &mut m);
        assert_eq!(m["editor_server_allocs_per_call"], 0.03);
        let lines = report::editor_lines(&all);
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("| ferry-postcard | 4.00 | 9.00 |"))
        );
        assert!(lines.iter().any(|l| l.contains("Pipelined typed calls")));
        assert!(!lines.iter().any(|l| l.contains("71 K msg/s")));
        all.push(summary(
            "ferry-postcard",
            "editor-old-100x10k",
            20_000,
            60_000,
            None,
        ));
        let lines = report::editor_lines(&all);
        let old = lines
            .iter()
            .find(|l| l.contains("100 connections"))
            .unwrap();
        // Measured: 100 calls in 1 ms, mean (98 × 20 + 2 × 60) / 100 µs; theirs beside it.
        assert!(
            old.contains("| 100.0 k | 20.80 | 60.00 | 71 K msg/s, 136 µs average |"),
            "{old}"
        );
        assert!(report::editor_lines(&[]).is_empty());
    }

    #[test]
    fn wine_runs_windows_peers_without_gates() {
        let o = parse(&args("--wine")).unwrap();
        assert!(o.wine);
        assert_eq!((o.runs, o.samples), (3, WINE_SAMPLES));
        let q = parse(&args("--wine --quick")).unwrap();
        assert_eq!((q.runs, q.samples), (1, 5_000));
        assert_eq!(parse(&args("--wine --samples 777")).unwrap().samples, 777);
        assert!(parse(&args("--wine --peers all")).is_err());
        let full = plan(&o, true);
        for t in ["ferry", "ferry-park", "ferry-async", "npipe", "tcp", "pipe"] {
            assert!(
                full.iter().any(|i| i.transport == t && i.scenario == "rtt"),
                "{t}"
            );
        }
        assert!(
            full.iter()
                .all(|i| !matches!(i.transport, "uds" | "node") && i.size == 64)
        );
        assert!(!full.iter().any(|i| i.scenario.starts_with("editor-")));
        for s in ["oneway", "pipelined"] {
            assert!(
                full.iter()
                    .any(|i| i.transport == "ferry" && i.scenario == s)
            );
        }
        assert!(plan(&q, false).len() < full.len());
    }

    #[test]
    fn wine_checks_catch_unanswered_calls() {
        let opts = parse(&args("--wine --runs 1 --samples 10")).unwrap();
        let key = |t: &str, s: &str| Key {
            transport: t.into(),
            scenario: s.into(),
            size: 64,
        };
        let run = |msgs, timed, server: Option<u64>| Run {
            hist: Hist(if timed > 0 {
                vec![(1000, timed)]
            } else {
                vec![]
            }),
            msgs,
            server_requests: server,
            server_notifications: server,
            ..Run::default()
        };
        let mut figures = Figures::default();
        for name in [
            "scale: connections that completed calls (all processes)",
            "scale: connections open at the server while all were connected",
        ] {
            figures.add(name, 1000.0, "");
        }
        figures.add(
            "reconnect: restarted server's bind → first answer",
            3.0,
            "ms",
        );
        let mut runs = BTreeMap::new();
        runs.insert(key("ferry", "rtt"), vec![run(10, 10, Some(10))]);
        runs.insert(key("ferry", "oneway"), vec![run(640, 0, Some(640))]);
        runs.insert(key("tcp", "rtt"), vec![run(10, 10, None)]);
        assert!(wine_checks(&opts, &runs, &figures).iter().all(|c| c.pass));
        runs.insert(key("ferry", "pipelined"), vec![run(500, 0, Some(499))]);
        runs.insert(key("npipe", "rtt"), vec![run(10, 9, None)]);
        let failed: Vec<String> = wine_checks(&opts, &runs, &figures)
            .into_iter()
            .filter(|c| !c.pass)
            .map(|c| c.what)
            .collect();
        assert_eq!(
            failed,
            [
                "ferry pipelined 64 B: every call answered",
                "npipe rtt 64 B: every call answered"
            ]
        );
        let mut short = Figures::default();
        short.add(
            "scale: connections that completed calls (all processes)",
            999.0,
            "",
        );
        assert_eq!(
            wine_checks(&opts, &BTreeMap::new(), &short)
                .iter()
                .filter(|c| !c.pass)
                .count(),
            3
        );
    }

    #[test]
    fn dates_are_civil() {
        let d = utc_now();
        assert_eq!(d.len(), 16, "{d}");
        assert!(d.starts_with("20"), "{d}");
    }
}
