//! The example servers end gracefully on SIGINT and SIGTERM: they exit 0, remove their socket,
//! and their clients are told (Goodbye SHUTTING_DOWN: a call then fails with `Closed` saying
//! so, not with a bare hang-up). The examples are built by `cargo test` beside the test binaries.

#![cfg(any(target_os = "linux", target_os = "macos"))]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ferry_transport::{Client, Error};

/// The example's binary: in `FERRY_EXAMPLES_DIR` when set (`cargo xtask ci` sets it for its
/// coverage run, whose `cargo test --tests` builds no examples), else beside this test's binary
/// (`cargo test` builds the examples there).
fn example(name: &str) -> std::path::PathBuf {
    let dir = match std::env::var_os("FERRY_EXAMPLES_DIR") {
        Some(dir) => std::path::PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().expect("current_exe");
            // target/<profile>/deps/<test> -> target/<profile>/examples
            exe.parent()
                .and_then(|deps| deps.parent())
                .expect("target/<profile>")
                .join("examples")
        }
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} was not built (`cargo test` builds the examples; alone: `cargo build -p ferry-transport --examples --all-features` first, or set FERRY_EXAMPLES_DIR)",
        path.display()
    );
    path
}

fn stops_gracefully_on(example_name: &str, service: &str, signal: rustix::process::Signal) {
    let dir = TestDir::new(example_name);
    std::fs::create_dir_all(dir.path()).unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let mut cmd = Command::new(example(example_name));
    if example_name == "echo_server" {
        cmd.arg(service);
    }
    let mut server = cmd
        .env("FERRY_RUNTIME_DIR", dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the example");
    let mut out = BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.contains("Ctrl-C to stop"), "{line}");
    let client = Client::connect_with(service, client_config(dir.path()).with_reconnect(false))
        .expect("connect");
    let hello: &[u8] = if example_name == "raw_engine" {
        b"complete:fn"
    } else {
        b"hi"
    };
    assert!(client.call(hello).is_ok());
    let pid = rustix::process::Pid::from_raw(server.id() as i32).unwrap();
    rustix::process::kill_process(pid, signal).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = server.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the example did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{example_name} exited with {status}");
    assert!(
        !dir.path().join(format!("{service}.sock")).exists(),
        "the socket was left behind"
    );
    match client.call(hello) {
        Err(Error::Closed(why)) => assert!(why.contains("SHUTTING_DOWN"), "{why}"),
        other => panic!("a call after the server's shutdown: {other:?}"),
    }
}

#[test]
fn echo_server_stops_gracefully_on_sigterm() {
    stops_gracefully_on(
        "echo_server",
        "ferry-echo-sigterm",
        rustix::process::Signal::TERM,
    );
}

#[test]
fn engine_stops_gracefully_on_sigint() {
    stops_gracefully_on("raw_engine", "ferry-engine", rustix::process::Signal::INT);
}
