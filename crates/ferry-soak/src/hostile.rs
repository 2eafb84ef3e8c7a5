//! The fault-injecting roles: a hostile client, connection churn, a one-shot probe, and a
//! connection attempt from another user.
//!
//! The hostile client speaks the handshake itself (with the transport's public control-socket
//! helpers) so that it holds the connection's mapping and can corrupt it. Modes:
//!
//! | mode | what it does |
//! |---|---|
//! | `scribble` | random bytes over both rings, ringing the server's doorbell |
//! | `cursor` | forges the producer cursor of its outgoing ring |
//! | `length` | forges a record header whose length is larger than the ring |
//! | `frames` | well-formed ring records holding malformed frames (bad CRC, version, kind, length) |
//! | `s2c_cursor` | forges its consumer cursor of the server's ring (the server finds out when it pushes) |
//! | `garbage` | random bytes instead of a `Hello` on the control socket |
//! | `oversized` | a control frame header announcing a 2 GiB payload |
//! | `version` | a `Hello` for protocol versions 7..=9 |
//! | `hdrversion` | a `Hello` frame whose header says version 9 |
//! | `wrongkind` | a `Request` frame instead of a `Hello` |
//! | `silent` | connects and never says anything |
//!
//! Each reports `hostile mode=M outcome=cut_off|refused|closed|not_cut_off ms=N`: how long the
//! server took to drop it. The orchestrator requires one of the first three.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferry_frame::{ErrorPayload, Flags, HEADER_LEN, Hello, Kind, Limits};
use ferry_ring::{Producer, Region};
use ferry_transport::unix::{control, service_dir, shm::SharedMemory};
use ferry_transport::{Client, ClientConfig};

use crate::proto::{self, Head, Rng, op};
use crate::{Opts, SERVICE, error_kind, report};

/// How long the server may take to cut a hostile client off.
const CUT_OFF_WITHIN: Duration = Duration::from_secs(5);

fn socket_path() -> std::path::PathBuf {
    service_dir::resolve(SERVICE)
        .expect("the soak service name resolves")
        .socket
}

/// A view of one ring inside the hostile client's mapping, for `ferry_ring::Producer`.
struct RawRing {
    /// The address, as an integer so that the view is `Send + Sync` like every `Region`.
    addr: usize,
    len: usize,
}

// SAFETY: `ptr..ptr+len` lies inside the connection's mapping (offset 0, length `region_size` of
// the agreed capacity, checked against the mapping's length before construction), which stays
// mapped for the rest of this process (the `SharedMemory` is leaked), and the mapping is
// page-aligned, so the 128-byte alignment holds.
unsafe impl Region for RawRing {
    fn as_ptr(&self) -> *mut u8 {
        self.addr as *mut u8
    }
    fn len(&self) -> usize {
        self.len
    }
}

fn write_u64(mem: &SharedMemory, off: usize, v: u64) {
    assert!(off + 8 <= mem.len());
    let p = mem.as_ptr().wrapping_add(off).cast::<u64>();
    // SAFETY: in bounds (checked above) of a live mapping; unaligned-tolerant write of plain
    // bytes into memory the peer treats as untrusted. Corrupting it is the point.
    unsafe { p.write_unaligned(v) };
}

/// A producer on the client → server ring of the hostile client's mapping.
fn c2s_producer(mem: &SharedMemory, c2s_len: usize) -> Result<Producer<RawRing>, String> {
    if c2s_len > mem.len() {
        return Err("the mapping is smaller than its first ring".into());
    }
    let ring = RawRing {
        addr: mem.as_ptr() as usize,
        len: c2s_len,
    };
    Producer::attach(ring).map_err(|e| format!("attach: {e}"))
}

/// A well-formed `Request` frame carrying `body`.
fn request_frame(body: &[u8], id: u64) -> Result<Vec<u8>, String> {
    let mut frame = vec![0u8; HEADER_LEN + body.len()];
    frame[HEADER_LEN..].copy_from_slice(body);
    ferry_frame::encode_header_in_place(&mut frame, Kind::Request, Flags::NONE, id, body.len())
        .map_err(|e| e.to_string())?;
    Ok(frame)
}

fn wait_hangup(sock: &UnixStream, within: Duration) -> Option<Duration> {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let t0 = Instant::now();
    loop {
        let left = within.checked_sub(t0.elapsed())?;
        let mut fds = [PollFd::new(sock, PollFlags::IN | PollFlags::RDHUP)];
        let ts = Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let _ = rustix::event::poll(&mut fds, Some(&ts));
        if !fds[0].revents().is_empty() {
            let mut b = [0u8; 64];
            match rustix::net::recv(sock, &mut b, rustix::net::RecvFlags::DONTWAIT) {
                Ok((0, _)) | Err(_)
                    if fds[0].revents().intersects(
                        PollFlags::HUP | PollFlags::RDHUP | PollFlags::ERR | PollFlags::IN,
                    ) =>
                {
                    // EOF (0 bytes) or an error: gone. AGAIN cannot happen after IN/HUP.
                    return Some(t0.elapsed());
                }
                _ => {}
            }
        }
    }
}

pub fn hostile(opts: &Opts) -> i32 {
    let mode = opts.get("mode").unwrap_or("scribble").to_owned();
    let mut r = Rng::new(opts.num("seed", 1));
    let t0 = Instant::now();
    let outcome = match mode.as_str() {
        "scribble" | "cursor" | "length" | "frames" | "s2c_cursor" => ring_attack(&mode, &mut r),
        "garbage" | "oversized" | "version" | "hdrversion" | "wrongkind" | "silent" => {
            control_attack(&mode, &mut r)
        }
        other => Err(format!("unknown mode {other}")),
    };
    match outcome {
        Ok((what, ms)) => {
            report!("hostile mode={mode} outcome={what} ms={ms}");
            0
        }
        Err(why) => {
            report!(
                "hostile mode={mode} outcome=not_cut_off ms={} msg={why}",
                t0.elapsed().as_millis()
            );
            0
        }
    }
}

fn ring_attack(mode: &str, r: &mut Rng) -> Result<(&'static str, u128), String> {
    let limits = Limits {
        client_to_server_ring_bytes: 1 << 16,
        server_to_client_ring_bytes: 1 << 16,
        ..Limits::default()
    };
    let sock = UnixStream::connect(socket_path()).map_err(|e| format!("connect: {e}"))?;
    control::send_frame(&sock, Kind::Hello, 0, &Hello::new(limits).to_bytes(), &[])
        .map_err(|e| format!("send Hello: {e}"))?;
    let frame = control::recv_frame(&sock)
        .map_err(|e| format!("recv Welcome: {e}"))?
        .ok_or("no Welcome")?;
    if frame.header.kind() != Kind::Welcome {
        return Err(format!("expected Welcome, got {}", frame.header.kind()));
    }
    let welcome = ferry_frame::Welcome::decode(&frame.payload).map_err(|e| e.to_string())?;
    let mut fds = frame.fds.into_iter();
    let mem_fd = fds.next().ok_or("no memfd")?;
    let len = rustix::fs::fstat(&mem_fd)
        .map_err(|e| e.to_string())?
        .st_size as usize;
    let mem = SharedMemory::open(mem_fd, len).map_err(|e| e.to_string())?;
    let bell = ferry_notify::Doorbell::from_owned_fd(fds.next().ok_or("no server doorbell")?)
        .map_err(|e| e.to_string())?;
    let c2s_cap = welcome.limits.client_to_server_ring_bytes as usize;
    let c2s_len = ferry_ring::region_size(c2s_cap);
    let s2c_off = c2s_len.next_multiple_of(4096);
    let started = Instant::now();
    match mode {
        "cursor" => write_u64(&mem, 128, (1 << 40) + 8 * r.below(1 << 20)),
        "length" => {
            let bad_len = (c2s_cap as u64 * 2) | (r.below(1 << 20) << 32 >> 32);
            let tag = u64::from(ferry_ring::TAG_DATA) << 32;
            write_u64(&mem, ferry_ring::HEADER_SIZE, (bad_len & 0xFFFF_FFFF) | tag);
            write_u64(&mem, 128, 64);
        }
        "s2c_cursor" => {
            // Forge our cursor of the server's ring, then ask for large answers: the server
            // finds out when it runs out of (what it believes is) free space.
            write_u64(&mem, s2c_off + 256, (1 << 41) + 8 * r.below(1 << 20));
            let mut p = c2s_producer(&mem, c2s_len)?;
            for seq in 0..8 {
                let head = Head {
                    op: op::CALL,
                    client: u32::MAX - std::process::id(),
                    lane: 0,
                    seq,
                    arg: 60_000,
                };
                let mut body = Vec::new();
                proto::build(&mut body, head, 16, 0);
                let frame = request_frame(&body, seq + 1)?;
                let _ = p.try_push(&frame);
            }
            std::mem::forget(p);
        }
        "frames" => {
            let mut p = c2s_producer(&mem, c2s_len)?;
            let head = Head {
                op: op::CALL,
                client: u32::MAX - std::process::id(),
                lane: 0,
                seq: 0,
                arg: 8,
            };
            let mut body = Vec::new();
            proto::build(&mut body, head, 16, 0);
            let mut frame = request_frame(&body, 1)?;
            match r.below(4) {
                0 => frame[HEADER_LEN + 3] ^= 0x40, // payload changed after the CRC
                1 => frame[2] = 9,                  // version
                2 => frame[3] = 0xEE,               // kind
                _ => frame[8..12].copy_from_slice(&(1u32 << 30).to_le_bytes()), // length
            }
            let _ = p.try_push(&frame);
            std::mem::forget(p);
        }
        _ => {}
    }
    let _ = bell.ring();
    if mode == "scribble" {
        // Keep scribbling (both rings, headers included) until the server hangs up.
        while started.elapsed() < CUT_OFF_WITHIN {
            for _ in 0..256 {
                let off = r.below(mem.len() as u64) as usize;
                let p = mem.as_ptr().wrapping_add(off);
                // SAFETY: `off < mem.len()`, in a live mapping; corrupting it is the point.
                unsafe { p.write_volatile(r.next() as u8) };
            }
            let _ = bell.ring();
            if wait_hangup(&sock, Duration::from_millis(2)).is_some() {
                return Ok(("cut_off", started.elapsed().as_millis()));
            }
        }
        return Err("the server kept the scribbled connection open".into());
    }
    let left = CUT_OFF_WITHIN.saturating_sub(started.elapsed());
    match wait_hangup(&sock, left) {
        Some(_) => Ok(("cut_off", started.elapsed().as_millis())),
        None => Err(format!(
            "the server kept the connection open {CUT_OFF_WITHIN:?} after {mode}"
        )),
    }
}

fn control_attack(mode: &str, r: &mut Rng) -> Result<(&'static str, u128), String> {
    let mut sock = UnixStream::connect(socket_path()).map_err(|e| format!("connect: {e}"))?;
    let started = Instant::now();
    let hello = Hello::new(Limits::default()).to_bytes();
    let framed = |kind: Kind, payload: &[u8]| {
        let mut f = vec![0u8; HEADER_LEN + payload.len()];
        f[HEADER_LEN..].copy_from_slice(payload);
        ferry_frame::encode_header_in_place(&mut f, kind, Flags::NONE, 0, payload.len())
            .expect("encodable");
        f
    };
    let bytes: Vec<u8> = match mode {
        "garbage" => {
            let mut b = vec![0u8; 1 + r.below(5000) as usize];
            proto::fill(&mut b, r.next());
            b
        }
        "oversized" => {
            let mut f = framed(Kind::Hello, &hello);
            f[8..12].copy_from_slice(&0x7FFF_FFF0u32.to_le_bytes());
            f
        }
        "version" => {
            let mut h = Hello::new(Limits::default());
            h.min_version = 7;
            h.max_version = 9;
            framed(Kind::Hello, &h.to_bytes())
        }
        "hdrversion" => {
            let mut f = framed(Kind::Hello, &hello);
            f[2] = 9;
            f
        }
        "wrongkind" => framed(Kind::Request, b"let me in"),
        _ => Vec::new(), // silent
    };
    if !bytes.is_empty() {
        let _ = sock.write_all(&bytes);
    }
    sock.set_read_timeout(Some(CUT_OFF_WITHIN))
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => {
                return Err(format!(
                    "no answer and no hang-up after {:?} ({e})",
                    started.elapsed()
                ));
            }
        }
    }
    let ms = started.elapsed().as_millis();
    if answer.len() >= HEADER_LEN && answer[3] == Kind::Refuse.as_u8() {
        let p = ErrorPayload::decode(&answer[HEADER_LEN..])
            .map(|p| format!("{:#x} {}", p.code.0, p.message))
            .unwrap_or_default();
        report!("hostile_refusal mode={mode} msg={p}");
        if mode == "version" && !p.contains("upgrade") {
            return Err(format!("the refusal does not say what to do: {p}"));
        }
        return Ok(("refused", ms));
    }
    if mode == "version" {
        return Err("a 7..=9 Hello was not refused with a reason".into());
    }
    Ok(("closed", ms))
}

/// Connects and disconnects at a high rate for `ms` milliseconds, one checked call each.
pub fn churn(opts: &Opts) -> i32 {
    let end = Instant::now() + Duration::from_millis(opts.num("ms", 2000));
    let mut r = Rng::new(opts.num("seed", 1));
    let base = opts.num("id", 1 << 31) as u32;
    let (mut ok, mut errs, mut bad) = (0u64, 0u64, 0u64);
    let mut msg = Vec::new();
    let config = ClientConfig::default().with_reconnect(false);
    static N: AtomicU64 = AtomicU64::new(0);
    while Instant::now() < end {
        let n = N.fetch_add(1, Ordering::Relaxed);
        match Client::connect_with(SERVICE, config.clone()) {
            Err(e) => {
                errs += 1;
                if errs <= 20 {
                    report!("err op=churn kind={} msg={e}", error_kind(&e));
                }
            }
            Ok(c) => {
                let head = Head {
                    op: op::CALL,
                    client: base.wrapping_add(n as u32),
                    lane: 0,
                    seq: 0,
                    arg: r.log_size(1, 256) as u64,
                };
                proto::build(&mut msg, head, r.log_size(1, 256), r.next());
                match c.call(&msg) {
                    Ok(a) => match proto::parse(&a) {
                        Ok(h) if h.seq == 0 && h.client == head.client => ok += 1,
                        _ => {
                            bad += 1;
                            report!(
                                "violation kind=wrong_answer msg=churn call {n} got a bad answer"
                            );
                        }
                    },
                    Err(e) => {
                        errs += 1;
                        if errs <= 20 {
                            report!("err op=churn kind={} msg={e}", error_kind(&e));
                        }
                    }
                }
                // Half leave politely, half just vanish.
                if n.is_multiple_of(2) {
                    c.close();
                }
            }
        }
    }
    report!("churn ok={ok} errors={errs} violations={bad}");
    i32::from(bad > 0)
}

/// One connection attempt and one call; says what happened.
pub fn probe(opts: &Opts) -> i32 {
    let config = ClientConfig::default()
        .with_reconnect(false)
        .with_connect_timeout(Duration::from_millis(opts.num("timeout_ms", 2000)));
    let result = Client::connect_with(SERVICE, config).and_then(|c| {
        let mut msg = Vec::new();
        let head = Head {
            op: op::CALL,
            client: (1 << 30) + std::process::id(),
            lane: 0,
            seq: 0,
            arg: 8,
        };
        proto::build(&mut msg, head, 8, 0);
        let a = c.call(&msg)?;
        c.close();
        Ok(proto::parse(&a).is_ok())
    });
    match result {
        Ok(true) => report!("probe result=ok"),
        Ok(false) => report!("probe result=bad_answer"),
        Err(e) => report!("probe result=err kind={} msg={e}", error_kind(&e)),
    }
    0
}

/// A connection attempt as uid/gid 65534 ("nobody"). Through the library, the client refuses
/// the root-owned runtime directory itself. Then, keeping CAP_DAC_OVERRIDE so that file modes do
/// not stop it first, it reaches the socket and says Hello: the server must refuse the uid.
pub fn other_uid(_opts: &Opts) -> i32 {
    use rustix::thread::{CapabilitySet, CapabilitySets};
    let nobody_u = rustix::process::Uid::from_raw(65534);
    let nobody_g = rustix::process::Gid::from_raw(65534);
    let path = socket_path();
    let dropped = (|| -> Result<(), String> {
        rustix::thread::set_keep_capabilities(true).map_err(|e| format!("keepcaps: {e}"))?;
        rustix::thread::set_thread_groups(&[]).map_err(|e| format!("setgroups: {e}"))?;
        rustix::thread::set_thread_res_gid(nobody_g, nobody_g, nobody_g)
            .map_err(|e| format!("setresgid: {e}"))?;
        rustix::thread::set_thread_res_uid(nobody_u, nobody_u, nobody_u)
            .map_err(|e| format!("setresuid: {e}"))?;
        Ok(())
    })();
    if let Err(why) = dropped {
        report!("otheruid outcome=skipped msg=cannot become uid 65534 here: {why}");
        return 0;
    }
    // 1. Plain library use, no capability: refused on the client side.
    let lib = match Client::connect(SERVICE) {
        Ok(_) => "connected".to_owned(),
        Err(e) => error_kind(&e).to_owned(),
    };
    // 2. Past the file modes (CAP_DAC_OVERRIDE), at the server's own uid check.
    let caps = CapabilitySets {
        effective: CapabilitySet::DAC_OVERRIDE,
        permitted: CapabilitySet::DAC_OVERRIDE,
        inheritable: CapabilitySet::empty(),
    };
    let raw = match rustix::thread::set_capabilities(None, caps) {
        Err(e) => format!("skipped:capset {e}"),
        Ok(()) => match UnixStream::connect(&path) {
            Err(e) => format!("connect_failed:{}", e.kind()),
            Ok(sock) => {
                let hello = Hello::new(Limits::default()).to_bytes();
                let _ = sock.set_read_timeout(Some(CUT_OFF_WITHIN));
                match control::send_frame(&sock, Kind::Hello, 0, &hello, &[])
                    .and_then(|()| control::recv_frame(&sock))
                {
                    Ok(Some(f)) if f.header.kind() == Kind::Refuse => {
                        let p = ErrorPayload::decode(&f.payload)
                            .map(|p| format!("{:#x}:{}", p.code.0, p.message.replace(' ', "_")))
                            .unwrap_or_default();
                        format!("refused:{p}")
                    }
                    Ok(Some(f)) => format!("accepted:{}", f.header.kind()),
                    Ok(None) => "closed".to_owned(),
                    Err(e) => format!("error:{}", error_kind(&e)),
                }
            }
        },
    };
    report!("otheruid outcome=done lib={lib} raw={raw}");
    0
}
