//! The `conformance` step of `cargo xtask ci`: the second implementation of the protocol
//! (`conformance/python/client.py`, Python 3 with the standard library only, written from
//! `docs/protocol.md`) against the real server (`ferry-transport`'s `conformance_server`
//! example). Linux only: the Python client speaks the Linux transport (memfd, eventfds).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::cmd::{Cmd, Failure, on_path};
use crate::workspace::Workspace;

/// The service name the server binds and the client resolves (docs/protocol.md §12.1).
const SERVICE: &str = "ferry-conformance";

/// Builds the server, starts it in a fresh private runtime directory, runs the Python client
/// against it, and stops the server.
pub fn run(ws: &Workspace) -> Result<String, Failure> {
    if !on_path("python3") {
        return Err(Failure::new("python3 is not installed")
            .hint("install it (`apt-get install python3`; `.ci/run` does)"));
    }
    Cmd::cargo()
        .args([
            "build",
            "-p",
            "ferry-transport",
            "--example",
            "conformance_server",
        ])
        .run()?;
    let server_bin = ws.target_dir.join("debug/examples/conformance_server");
    let dir = std::env::temp_dir().join(format!("ferry-conformance-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut server = Command::new(&server_bin)
        .args([SERVICE.as_ref(), dir.as_os_str()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Failure::new(format!("could not start {}: {e}", server_bin.display())))?;
    let result = wait_ready(&mut server).and_then(|()| {
        Cmd::new("python3")
            .args(["conformance/python/client.py", SERVICE])
            .env("FERRY_RUNTIME_DIR", dir.to_string_lossy())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .run()
    });
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    result.map_err(|mut f| {
        f.reproduce = Some(reproduce(&dir));
        f
    })?;
    Ok("Python client (docs/protocol.md) against conformance_server: all checks".into())
}

/// Waits (at most 60 s) for the server's `ready <socket>` line.
fn wait_ready(server: &mut Child) -> Result<(), Failure> {
    let out = server.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(line) if line.starts_with("ready ") => Ok(()),
        Ok(line) => Err(Failure::new(format!(
            "conformance_server did not start: it printed {line:?}"
        ))),
        Err(_) => Err(Failure::new(
            "conformance_server printed nothing within 60 s",
        )),
    }
}

fn reproduce(dir: &Path) -> String {
    format!(
        "cargo run -p ferry-transport --example conformance_server -- {SERVICE} {d} & \
         FERRY_RUNTIME_DIR={d} python3 conformance/python/client.py {SERVICE}",
        d = dir.display()
    )
}
