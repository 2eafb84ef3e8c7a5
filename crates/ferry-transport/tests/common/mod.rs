//! Helpers for tests that run the server and clients in separate processes.
//!
//! A test re-executes its own test binary, running only the `child_entry` test with
//! `FERRY_TEST_ROLE` set; `child_entry` dispatches on the role. The runtime directory is
//! passed in `FERRY_RUNTIME_DIR`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

#[cfg(unix)]
pub use ferry_transport::unix::shm::SharedMemory;
#[cfg(windows)]
pub use ferry_transport::windows::shm::SharedMemory;
use ferry_transport::{ClientConfig, Limits, Request, Server, ServerConfig};

/// A private runtime directory for one test, removed on drop.
pub struct TestDir(pub PathBuf);

impl TestDir {
    pub fn new(tag: &str) -> TestDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ferry-test-{}-{}-{tag}",
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
    ServerConfig {
        runtime_dir: Some(dir.to_owned()),
        ..ServerConfig::default()
    }
}

/// Makes `cfg` accept only another user than ours (Windows: Wine runs every process as one
/// user, so a foreign SID); returns how the server's refusal names us (`uid 1000`,
/// `user S-1-5-...`).
pub fn allow_only_another_user(cfg: &mut ServerConfig) -> String {
    #[cfg(unix)]
    {
        let me = rustix::process::geteuid().as_raw();
        cfg.allowed_uids = vec![me.wrapping_add(1)];
        format!("uid {me}")
    }
    #[cfg(windows)]
    {
        let me = ferry_transport::windows::identity::Sid::current_user().unwrap();
        cfg.allowed_sids = vec!["S-1-5-21-1-2-3-4242".parse().unwrap()];
        assert_ne!(cfg.allowed_sids[0], me);
        format!("user {me}")
    }
}

pub fn client_config(dir: &Path) -> ClientConfig {
    ClientConfig {
        runtime_dir: Some(dir.to_owned()),
        ..ClientConfig::default()
    }
}

/// Ring size the tests use (small, so that ring-size±1 and fragmentation are cheap to hit).
pub const TEST_RING: u32 = 1 << 16;

pub fn small_rings(limits: Limits) -> Limits {
    Limits {
        client_to_server_ring_bytes: TEST_RING,
        server_to_client_ring_bytes: TEST_RING,
        ..limits
    }
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
/// (libtest prints `test child_entry ... ` before the child's first line.)
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
                        // Keep draining so the child never blocks on a full pipe.
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

/// Kills a child with SIGKILL and reaps it.
pub fn kill9(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(unix)]
/// Open descriptors of this process (Linux: `/proc/self/fd`; macOS: `/dev/fd`, whose listing
/// also counts the descriptor reading it, as `/proc/self/fd`'s does).
pub fn fd_count() -> usize {
    #[cfg(target_os = "linux")]
    let dir = "/proc/self/fd";
    #[cfg(target_os = "macos")]
    let dir = "/dev/fd";
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[cfg(unix)]
/// The server's doorbell, from the descriptors a Welcome brought after the shared memory's
/// (Linux: its eventfd, then the client's; macOS: its pipe's read and write ends, then the
/// client's two).
pub fn server_bell(fds: impl IntoIterator<Item = std::os::fd::OwnedFd>) -> ferry_notify::Doorbell {
    let mut fds = fds.into_iter();
    #[cfg(target_os = "linux")]
    let bell = ferry_notify::Doorbell::from_owned_fd(fds.next().expect("the server's eventfd"));
    #[cfg(target_os = "macos")]
    let bell = ferry_notify::Doorbell::from_owned_fds(
        fds.next().expect("the server's pipe read end"),
        fds.next().expect("the server's pipe write end"),
    );
    bell.expect("the server's doorbell")
}

/// Polls `cond` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    cond()
}

/// Deterministic test content: byte i of message `seed`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// In a spawned child: the role it plays and the runtime directory; `None` in the test process
/// itself (then `child_entry` has nothing to do).
pub fn child_role() -> Option<(String, PathBuf)> {
    let role = std::env::var("FERRY_TEST_ROLE").ok()?;
    let dir = PathBuf::from(
        std::env::var("FERRY_RUNTIME_DIR").expect("FERRY_RUNTIME_DIR is set for children"),
    );
    Some((role, dir))
}

/// A server on `name` with small rings that answers each request with its bytes plus one.
pub fn echo_plus_one_server(dir: &TestDir, name: &str) -> Server {
    let mut cfg = server_config(dir.path());
    cfg.limits = small_rings(cfg.limits);
    Server::bind(name, cfg, |r: Request<'_>| {
        let out: Vec<u8> = r.payload().iter().map(|b| b.wrapping_add(1)).collect();
        r.respond(&out)
    })
    .expect("bind")
}

/// A control-channel connection made by hand (no library handshake): for tests that send the
/// server what a broken or hostile client would. Unix: the service's socket under `dir`;
/// Windows: its pipe, scoped by `dir` as the library scopes it.
pub struct RawControl {
    #[cfg(unix)]
    sock: std::os::unix::net::UnixStream,
    #[cfg(windows)]
    pipe: ferry_transport::windows::pipe::Pipe,
}

impl RawControl {
    /// Connects to service `name` whose runtime directory (Windows: scope) is `dir`.
    pub fn connect(dir: &Path, name: &str) -> RawControl {
        #[cfg(unix)]
        {
            let sock = std::os::unix::net::UnixStream::connect(dir.join(format!("{name}.sock")))
                .expect("connect to the control socket");
            sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            RawControl { sock }
        }
        #[cfg(windows)]
        {
            use ferry_transport::windows::{identity::Sid, pipe, pipe_name};
            let me = Sid::current_user().expect("our SID");
            let name = pipe_name::resolve_scoped(&me, name, Some(dir)).expect("pipe name");
            let pipe =
                pipe::connect_pipe(&name, Duration::from_secs(5)).expect("connect to the pipe");
            pipe.set_timeout(Some(Duration::from_secs(5)));
            RawControl { pipe }
        }
    }

    /// Sends one frame.
    pub fn send(
        &self,
        kind: ferry_frame::Kind,
        payload: &[u8],
    ) -> Result<(), ferry_transport::Error> {
        #[cfg(unix)]
        return ferry_transport::unix::control::send_frame(&self.sock, kind, 0, payload, &[]);
        #[cfg(windows)]
        return ferry_transport::windows::control::send_frame(&self.pipe, kind, 0, payload);
    }

    /// Writes raw bytes (not a frame).
    pub fn write_raw(&self, bytes: &[u8]) {
        #[cfg(unix)]
        let _ = std::io::Write::write_all(&mut &self.sock, bytes);
        #[cfg(windows)]
        let _ = self.pipe.write_all(bytes);
    }

    /// Says nothing more (Unix: shuts down the writing side) and reads until the server closes.
    pub fn finish_and_drain(&self) {
        #[cfg(unix)]
        {
            let _ = self.sock.shutdown(std::net::Shutdown::Write);
            let _ = std::io::Read::read_to_end(&mut &self.sock, &mut Vec::new());
        }
        #[cfg(windows)]
        {
            let mut buf = [0u8; 512];
            while matches!(self.pipe.read(&mut buf), Ok(n) if n > 0) {}
        }
    }

    /// The descriptors (Unix) that came with the last frame `recv_with_fds` read.
    #[cfg(unix)]
    pub fn recv_with_fds(
        &self,
    ) -> Result<Option<ferry_transport::unix::control::ControlFrame>, ferry_transport::Error> {
        ferry_transport::unix::control::recv_frame(&self.sock)
    }

    /// The pipe (Windows), for the `Handles` exchange.
    #[cfg(windows)]
    pub fn pipe(&self) -> &ferry_transport::windows::pipe::Pipe {
        &self.pipe
    }

    /// Receives one frame: its kind and payload (`None`: the server hung up).
    pub fn recv(&self) -> Result<Option<(ferry_frame::Kind, Vec<u8>)>, ferry_transport::Error> {
        #[cfg(unix)]
        let frame = ferry_transport::unix::control::recv_frame(&self.sock)?;
        #[cfg(windows)]
        let frame = ferry_transport::windows::control::recv_frame(&self.pipe)?;
        Ok(frame.map(|f| (f.header.kind(), f.payload)))
    }
}

/// What a hand-made handshake yields: the control channel, the server's answer, the mapped
/// connection memory and the server's doorbell.
pub struct RawConnection {
    pub control: RawControl,
    pub welcome: ferry_frame::Welcome,
    pub mem: SharedMemory,
    pub server_bell: ferry_notify::Doorbell,
}

/// Does the handshake by hand (as a hostile client would) with service `service` under `dir`;
/// the server's refusal (code, message) otherwise.
pub fn raw_handshake(
    dir: &Path,
    service: &str,
    hello: ferry_frame::Hello,
) -> Result<RawConnection, (u32, String)> {
    let control = RawControl::connect(dir, service);
    control
        .send(ferry_frame::Kind::Hello, &hello.to_bytes())
        .expect("send Hello");
    #[cfg(unix)]
    let frame = control.recv_with_fds().expect("recv").expect("a frame");
    #[cfg(windows)]
    let frame = ferry_transport::windows::control::recv_frame(control.pipe())
        .expect("recv")
        .expect("a frame");
    if frame.header.kind() == ferry_frame::Kind::Refuse {
        let p = ferry_frame::ErrorPayload::decode(&frame.payload).expect("refusal payload");
        return Err((p.code.0, p.message.to_owned()));
    }
    assert_eq!(frame.header.kind(), ferry_frame::Kind::Welcome);
    let welcome = ferry_frame::Welcome::decode(&frame.payload).unwrap();
    #[cfg(unix)]
    let (mem, server_bell) = {
        let mut fds = frame.fds;
        let mem_fd = fds.remove(0);
        let len = rustix::fs::fstat(&mem_fd).unwrap().st_size as usize;
        (
            SharedMemory::open(mem_fd, len).expect("map"),
            server_bell(fds),
        )
    };
    #[cfg(windows)]
    let (mem, server_bell) = {
        use ferry_transport::windows::control::{ConnectionHandles, recv_handles};
        let handles =
            ConnectionHandles::adopt(&recv_handles(control.pipe()).expect("Handles")).unwrap();
        // docs/protocol.md §11: client → server ring at 0, server → client ring at the next
        // multiple of 4096, the whole rounded up to 4096.
        let l = &welcome.limits;
        let c2s = ferry_ring::region_size(l.client_to_server_ring_bytes as usize);
        let s2c = ferry_ring::region_size(l.server_to_client_ring_bytes as usize);
        let total = (c2s.next_multiple_of(4096) + s2c).next_multiple_of(4096);
        (
            SharedMemory::open(handles.shared_memory, total).expect("map"),
            ferry_notify::Doorbell::from_owned_handle(handles.server_doorbell).expect("doorbell"),
        )
    };
    Ok(RawConnection {
        control,
        welcome,
        mem,
        server_bell,
    })
}

/// One ring inside a hand-made connection's mapping, for `ferry_ring`'s handles.
#[cfg(unix)]
pub struct RawRing {
    addr: usize,
    len: usize,
}

// SAFETY: `addr..addr + len` lies inside the connection's mapping (checked in
// `RawConnection::rings` against its length), which lives as long as the `RawConnection` the
// caller keeps (and drops after these handles); the mapping is page-aligned and each ring starts
// at a multiple of 4096.
#[cfg(unix)]
unsafe impl ferry_ring::Region for RawRing {
    fn as_ptr(&self) -> *mut u8 {
        self.addr as *mut u8
    }
    fn len(&self) -> usize {
        self.len
    }
}

#[cfg(unix)]
impl RawConnection {
    /// Offset of the server → client ring in the mapping (docs/protocol.md §7.1).
    pub fn s2c_offset(&self) -> usize {
        let c2s = ferry_ring::region_size(self.welcome.limits.client_to_server_ring_bytes as usize);
        c2s.next_multiple_of(4096)
    }

    /// A producer on the client → server ring and a consumer on the server → client ring, as
    /// the client's library would hold them. Keep `self` alive (and drop it after them).
    pub fn rings(&self) -> (ferry_ring::Producer<RawRing>, ferry_ring::Consumer<RawRing>) {
        let l = &self.welcome.limits;
        let c2s_len = ferry_ring::region_size(l.client_to_server_ring_bytes as usize);
        let s2c_len = ferry_ring::region_size(l.server_to_client_ring_bytes as usize);
        let s2c_off = self.s2c_offset();
        assert!(
            s2c_off + s2c_len <= self.mem.len(),
            "both rings in the mapping"
        );
        let base = self.mem.as_ptr() as usize;
        let tx = ferry_ring::Producer::attach(RawRing {
            addr: base,
            len: c2s_len,
        })
        .expect("attach the client → server ring");
        let rx = ferry_ring::Consumer::attach(RawRing {
            addr: base + s2c_off,
            len: s2c_len,
        })
        .expect("attach the server → client ring");
        (tx, rx)
    }
}

/// An encoded frame of `kind` with `payload` (header and CRC included).
pub fn frame(kind: ferry_frame::Kind, id: u64, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; ferry_frame::HEADER_LEN + payload.len()];
    f[ferry_frame::HEADER_LEN..].copy_from_slice(payload);
    ferry_frame::encode_header_in_place(&mut f, kind, ferry_frame::Flags::NONE, id, payload.len())
        .expect("encodable");
    f
}
