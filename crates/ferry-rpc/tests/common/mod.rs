//! Helpers for the typed-service tests, after `ferry-transport`'s `tests/common`: a private
//! runtime directory per test, and servers in separate processes (a test re-executes its own
//! binary, running only `child_entry` with `FERRY_TEST_ROLE` set).

#![allow(dead_code)]

pub mod engine;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ferry_rpc::{AsyncService, ClientConfig, RpcConfig, RpcError, Server, ServerConfig, Service};

/// A private runtime directory for one test, removed on drop.
pub struct TestDir(pub PathBuf);

impl TestDir {
    pub fn new(tag: &str) -> TestDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ferry-rpc-test-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        TestDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn server_config(dir: &Path) -> ServerConfig {
    ServerConfig::default().with_runtime_dir(dir.to_owned())
}

pub fn client_config(dir: &Path) -> ClientConfig {
    ClientConfig::default().with_runtime_dir(dir.to_owned())
}

/// Serves `service` (a generated `<Name>Server`) as `name` in `dir`: blocking handlers, the
/// default RPC settings.
pub fn serve(dir: &TestDir, name: &str, service: impl Service) -> Server {
    ferry_rpc::serve(
        name,
        server_config(dir.path()),
        RpcConfig::default(),
        service,
    )
    .unwrap()
}

/// [`serve`] with async handlers (a generated `Async<Name>Server`), on `rt`.
pub fn serve_async<S: AsyncService>(
    rt: &tokio::runtime::Runtime,
    dir: &TestDir,
    name: &str,
    service: S,
) -> Server {
    rt.block_on(async {
        ferry_rpc::serve_async(
            name,
            server_config(dir.path()),
            RpcConfig::default(),
            service,
        )
    })
    .unwrap()
}

/// A client of `name` in `dir` with the default RPC settings, for a generated client's
/// `from_client` (what its `connect_with` does).
pub fn connect(dir: &TestDir, name: &str) -> ferry_rpc::Client {
    ferry_rpc::Client::connect(name, client_config(dir.path()), RpcConfig::default(), None).unwrap()
}

/// The client's timer and the server's deadline fire at the same time: either says so.
pub fn timed_out<T: std::fmt::Debug>(r: &Result<T, RpcError>) -> bool {
    matches!(
        r,
        Err(RpcError::Transport(ferry_transport::Error::Timeout(_))
            | RpcError::DeadlineExceeded { .. })
    )
}

/// Spawns this test binary as a child playing `role`.
pub fn spawn(role: &str, dir: &Path, extra: &[(&str, String)]) -> Child {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        "child_entry",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("FERRY_TEST_ROLE", role)
    .env("FERRY_RUNTIME_DIR", dir)
    .stdin(Stdio::null())
    .stdout(Stdio::piped());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn child process")
}

/// Reads lines from a child's stdout until one contains `prefix`; returns what follows it.
pub fn wait_line(child: &mut Child, prefix: &str, timeout: Duration) -> String {
    use std::io::{BufRead, BufReader};
    let out = child.stdout.take().expect("child stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let wanted = prefix.to_owned();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(out);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => {
                    let _ = tx.send(None);
                    return;
                }
                Ok(_) => {
                    if let Some(at) = line.find(wanted.as_str()) {
                        let rest = &line.trim_end()[at + wanted.len()..];
                        let _ = tx.send(Some(rest.trim().to_owned()));
                        let mut sink = String::new();
                        while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                            sink.clear();
                        }
                        return;
                    }
                }
            }
        }
    });
    match rx.recv_timeout(timeout) {
        Ok(Some(rest)) => rest,
        Ok(None) => panic!("child exited before printing {prefix:?}"),
        Err(_) => panic!("child did not print {prefix:?} within {timeout:?}"),
    }
}

/// In a spawned child: the role it plays and the runtime directory.
pub fn child_role() -> Option<(String, PathBuf)> {
    let role = std::env::var("FERRY_TEST_ROLE").ok()?;
    let dir = PathBuf::from(
        std::env::var("FERRY_RUNTIME_DIR").expect("FERRY_RUNTIME_DIR is set for children"),
    );
    Some((role, dir))
}

/// A child process killed (and reaped) on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `cond` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    cond()
}
