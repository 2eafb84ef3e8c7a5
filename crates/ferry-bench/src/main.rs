//! `ferry-bench`: the processes that `cargo xtask bench-gate` starts.
//!
//! One binary, several roles, so that every transport is measured by the same harness with the
//! same message sizes:
//!
//! - `serve <transport>`: an echo server (Ferry, a Unix-domain socket, TCP loopback). It prints
//!   `ready ...` once it accepts connections and answers `stats` on stdin with its memory,
//!   allocation count and CPU (so the harness can read them between scenarios).
//! - `client <transport> <scenario>`: connects, warms up, measures, prints a `result ...` line and
//!   a `hist ...` line (the latency histogram, bucket by bucket, so runs and processes merge).
//! - `pipe-echo`: the far end of a pipe pair; the pipe client starts it as its own child.
//! - `scale`: many Ferry connections from one process, for the 1000-connection scenario.
//! - `reconnect`: a client that reports when it is served again after a server restart.
//!
//! The line formats are documented in `xtask/src/bench_gate.rs`, which parses them.

#[cfg(target_os = "linux")]
mod linux;

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    linux::main()
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!(
        "ferry-bench runs on Linux only for now (the Windows and macOS transports are issue 8)"
    );
    std::process::exit(2);
}
