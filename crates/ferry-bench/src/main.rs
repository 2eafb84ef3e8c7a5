//! `ferry-bench`: the processes that `cargo xtask bench-gate` starts.
//!
//! One binary, several roles, so that every transport is measured by the same harness with the
//! same message sizes:
//!
//! - `serve <transport>`: an echo server (Ferry, TCP loopback, and the OS's local stream: a
//!   Unix-domain socket on Linux, a named pipe on Windows). It prints `ready ...` once it
//!   accepts connections and answers `stats` on stdin with its memory, allocation count and CPU
//!   (so the harness can read them between scenarios).
//! - `client <transport> <scenario>`: connects, warms up, measures, prints a `result ...` line and
//!   a `hist ...` line (the latency histogram, bucket by bucket, so runs and processes merge).
//! - `pipe-echo`: the far end of a pipe pair; the pipe client starts it as its own child.
//! - `scale`: many Ferry connections from one process, for the 1000-connection scenario.
//! - `reconnect`: a client that reports when it is served again after a server restart.
//! - `serve editor`, `client <transport> editor-…`, `jsonrpc-server`: the editor workload
//!   (Linux), Ferry's typed layer against JSON-RPC over stdio pipes (see [`editor`]).
//!
//! It runs on Linux (`cargo xtask bench-gate`) and on Windows (`cargo xtask bench-gate --wine`
//! runs the Windows build under Wine). The roles, the measuring loops and the line formats are
//! one code ([`ferry`], [`wire`], [`measure`]); what differs per OS is in `linux/` (the Unix
//! socket peer, CPU, clock and memory readings from rustix and `/proc`, the iceoryx2 peer) and
//! `windows.rs` (the named-pipe peer and the same readings through the Windows API).
//!
//! The line formats are documented in `xtask/src/bench_gate/mod.rs`, which parses them.

#[cfg(any(target_os = "linux", windows))]
mod alloc;
#[cfg(any(target_os = "linux", windows))]
mod ferry;
#[cfg(any(target_os = "linux", windows))]
mod measure;
#[cfg(any(target_os = "linux", windows))]
mod opts;
#[cfg(any(target_os = "linux", windows))]
mod wire;

#[cfg(target_os = "linux")]
mod editor;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as os;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as os;

#[cfg(any(target_os = "linux", windows))]
fn main() -> std::process::ExitCode {
    roles::main()
}

#[cfg(not(any(target_os = "linux", windows)))]
fn main() {
    eprintln!("ferry-bench runs on Linux and Windows only (macOS: not ported, never run)");
    std::process::exit(2);
}

#[cfg(any(target_os = "linux", windows))]
mod roles {
    use std::process::ExitCode;

    use crate::opts::Opts;
    use crate::{ferry, measure, os, wire};

    #[cfg(target_os = "linux")]
    const USAGE: &str = "\
ferry-bench serve <ferry|uds|tcp> [--name N --dir D --policy adaptive|park|spin] [--path P] [--cpu N]
ferry-bench client <ferry|ferry-park|ferry-spin|ferry-async|uds|tcp|pipe|node> <rtt|oneway|pipelined|bandwidth|load-C>
            --size BYTES [--samples N --warmup N --duration-ms N --window N --threads N --calls N] [--cpu N]
            (load-C: C callers at once, --calls each; ferry, ferry-async, uds, tcp, pipe)
            (ferry: --name N --dir D; uds, node: --path P; tcp: --port P)
ferry-bench pipe-echo
ferry-bench scale --name N --dir D --conns N --threads N --duration-ms N
ferry-bench reconnect --name N --dir D
ferry-bench serve editor --name N --dir D
ferry-bench serve tarpc|grpc --path P   (feature `peers-rpc`)
ferry-bench client <ferry-postcard|ferry-rkyv|ferry-json|jsonrpc-stdio|jsonrpc-lsp|tarpc|grpc>
            <editor-complete|editor-complete-16|editor-chat|editor-analyze|editor-pipelined|
             editor-old-100x10k|editor-old-32x1k>
            [--samples N --warmup N --duration-ms N --threads N --tokens N --size BYTES
             --window N --conns N --calls N] (ferry-*: --name N --dir D; tarpc, grpc: --path P)
ferry-bench jsonrpc-server --framing lines|lsp   (the JSON-RPC peers' child, on stdin/stdout)
";

    #[cfg(windows)]
    const USAGE: &str = "\
ferry-bench serve <ferry|npipe|tcp> [--name N --dir D --policy adaptive|park|spin] [--path P]
ferry-bench client <ferry|ferry-park|ferry-spin|ferry-async|npipe|tcp|pipe> <rtt|oneway|pipelined|bandwidth|load-C>
            --size BYTES [--samples N --warmup N --duration-ms N --window N --threads N --calls N]
            (ferry: --name N --dir D (a scope for the pipe name); npipe: --path \\\\.\\pipe\\NAME;
            tcp: --port P)
ferry-bench pipe-echo
ferry-bench scale --name N --dir D --conns N --threads N --duration-ms N
ferry-bench reconnect --name N --dir D
";

    pub fn main() -> ExitCode {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let result = Opts::parse(&args).and_then(|(pos, opts)| {
            opts.pin()?;
            let pos: Vec<&str> = pos.iter().map(String::as_str).collect();
            match pos.as_slice() {
                ["serve", "ferry"] => ferry::serve(&opts),
                ["serve", "tcp"] => wire::serve_tcp(),
                #[cfg(target_os = "linux")]
                ["serve", "editor"] => crate::editor::typed::serve(&opts),
                #[cfg(all(target_os = "linux", feature = "peers-rpc"))]
                ["serve", "tarpc"] => crate::editor::tarpc_peer::serve(&opts),
                #[cfg(all(target_os = "linux", feature = "peers-rpc"))]
                ["serve", "grpc"] => crate::editor::grpc_peer::serve(&opts),
                #[cfg(target_os = "linux")]
                ["jsonrpc-server"] => crate::editor::jsonrpc::serve(&opts),
                #[cfg(target_os = "linux")]
                ["client", transport, scenario] if crate::editor::is_editor(scenario) => {
                    crate::editor::client(transport, scenario, &opts)
                }
                ["serve", kind] if *kind == os::LOCAL_STREAM => os::serve_local(&opts),
                #[cfg(all(target_os = "linux", feature = "iceoryx2"))]
                ["serve", "iceoryx2"] => os::iox::serve(&opts),
                ["client", transport, scenario] => client(transport, scenario, &opts),
                ["pipe-echo"] => wire::pipe_echo(),
                ["scale"] => ferry::scale(&opts),
                ["reconnect"] => ferry::reconnect(&opts),
                _ => Err(format!("unknown role or arguments: {args:?}")),
            }
        });
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("ferry-bench: {message}\n\n{USAGE}");
                ExitCode::from(2)
            }
        }
    }

    fn client(transport: &str, scenario: &str, opts: &Opts) -> Result<(), String> {
        let scenario = measure::Scenario::parse(scenario, opts)?;
        // The connection stays open until the harness has read the server's counters after the
        // measured window (`done`), so they do not include the disconnect.
        let (outcome, _connection): (_, Box<dyn std::any::Any>) = match transport {
            "ferry" | "ferry-async" if matches!(scenario, measure::Scenario::Load { .. }) => {
                ferry::load(transport, &scenario, opts)?
            }
            t if wire::is_peer(t) && matches!(scenario, measure::Scenario::Load { .. }) => {
                let (o, c) = wire::load(transport, &scenario, opts)?;
                (o, Box::new(c))
            }
            "ferry" | "ferry-park" | "ferry-spin" => {
                let (o, c) = ferry::client(transport, &scenario, opts)?;
                (o, Box::new(c))
            }
            "ferry-async" => {
                let (o, c) = ferry::async_client(&scenario, opts)?;
                (o, Box::new(c))
            }
            t if wire::is_peer(t) => {
                let (o, c) = wire::client(transport, &scenario, opts)?;
                (o, Box::new(c))
            }
            #[cfg(all(target_os = "linux", feature = "iceoryx2"))]
            "iceoryx2" | "iceoryx2-block" => {
                let (o, c) = os::iox::client(transport, &scenario, opts)?;
                (o, Box::new(c))
            }
            other => {
                return Err(format!(
                    "unknown transport `{other}` on this OS (iceoryx2 needs Linux and the \
                     `iceoryx2` feature)"
                ));
            }
        };
        outcome.print(transport, &scenario);
        measure::pause(opts, "done")
    }
}
