//! The peers: TCP loopback with `TCP_NODELAY`, a pipe pair, and the OS's local stream (a
//! Unix-domain socket on Linux, a named pipe on Windows; see `os::LOCAL_STREAM`), all with the
//! same framing and the same echo server loop. (The Node.js peer is
//! `benches/peers/node_echo.js`, which speaks this framing on a Unix socket.)
//!
//! Framing: a 4-byte little-endian word (bits 0–30 the payload length, bit 31 set when no reply
//! is wanted) followed by the payload. The server echoes the whole frame back unless bit 31 is
//! set. Reads go through a 64 KiB `BufReader` (a header and a small payload cost one `read`);
//! each frame is written with one `write_all`.

use std::io::{self, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use crate::measure::{self, AllocWindow, Outcome, Scenario};
use crate::opts::Opts;
use crate::os;

/// A connected byte stream, as its reading and its writing half.
pub type Stream = (Box<dyn Read + Send>, Box<dyn Write + Send>);

const NO_REPLY: u32 = 1 << 31;
/// Largest payload the peers accept (the same 16 MiB Ferry allows by default).
const MAX_PAYLOAD: usize = 16 << 20;

/// Echoes frames from `r` to `w` until the peer closes.
fn echo(r: impl Read, mut w: impl Write) -> io::Result<()> {
    let mut r = BufReader::with_capacity(64 << 10, r);
    let mut buf = vec![0u8; 4 + 64];
    loop {
        let mut hdr = [0u8; 4];
        match r.read_exact(&mut hdr) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            other => other?,
        }
        let word = u32::from_le_bytes(hdr);
        let len = (word & !NO_REPLY) as usize;
        if len > MAX_PAYLOAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("frame of {len} bytes announced; the peers allow at most {MAX_PAYLOAD}"),
            ));
        }
        if buf.len() < 4 + len {
            buf.resize(4 + len, 0);
        }
        buf[..4].copy_from_slice(&hdr);
        r.read_exact(&mut buf[4..4 + len])?;
        if word & NO_REPLY == 0 {
            w.write_all(&buf[..4 + len])?;
        }
    }
}

/// Serves one connection on its own thread: echoes until the peer closes.
pub fn spawn_echo((r, w): Stream) {
    std::thread::spawn(move || echo(r, w));
}

/// `serve tcp`: accept connections on a loopback port, one echo thread each.
pub fn serve_tcp() -> Result<(), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("binding TCP: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    println!("ready t_ns={} port={port}", measure::monotonic_ns());
    std::thread::spawn(|| measure::serve_stdin(String::new));
    for stream in listener.incoming() {
        let stream = stream.map_err(|e| format!("accepting: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let w = stream.try_clone().map_err(|e| e.to_string())?;
        spawn_echo((Box::new(stream), Box::new(w)));
    }
    Ok(())
}

/// The child end of the pipe pair: echo stdin to stdout (unbuffered) until stdin closes.
pub fn pipe_echo() -> Result<(), String> {
    let (stdin, stdout) = os::stdio_files()?;
    echo(stdin, stdout).map_err(|e| format!("pipe echo: {e}"))
}

/// Whether `transport` is one of the socket-like peers this OS has.
pub fn is_peer(transport: &str) -> bool {
    matches!(transport, "tcp" | "pipe") || os::LOCAL_PEERS.contains(&transport)
}

/// A framed connection to one of the socket-like peers.
pub struct Wire {
    r: BufReader<Box<dyn Read + Send>>,
    w: Box<dyn Write + Send>,
    out: Vec<u8>,
    inb: Vec<u8>,
    child: Option<Child>,
}

impl Wire {
    fn connect(transport: &str, size: usize, opts: &Opts) -> Result<Wire, String> {
        let (r, w, child): (Box<dyn Read + Send>, Box<dyn Write + Send>, Option<Child>) =
            match transport {
                "tcp" => {
                    let port = opts.num("port", 0)?;
                    let s = TcpStream::connect((
                        "127.0.0.1",
                        u16::try_from(port).map_err(|e| e.to_string())?,
                    ))
                    .map_err(|e| format!("connecting to 127.0.0.1:{port}: {e}"))?;
                    s.set_nodelay(true).map_err(|e| e.to_string())?;
                    let w = s.try_clone().map_err(|e| e.to_string())?;
                    (Box::new(s), Box::new(w), None)
                }
                "pipe" => {
                    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
                    let mut child = Command::new(exe)
                        .arg("pipe-echo")
                        .stdin(Stdio::piped())
                        .stdout(Stdio::piped())
                        .spawn()
                        .map_err(|e| format!("starting the pipe echo child: {e}"))?;
                    let w = child.stdin.take().ok_or("pipe child without stdin")?;
                    let r = child.stdout.take().ok_or("pipe child without stdout")?;
                    (Box::new(r), Box::new(w), Some(child))
                }
                local if os::LOCAL_PEERS.contains(&local) => {
                    let (r, w) = os::connect_local(opts)?;
                    (r, w, None)
                }
                other => return Err(format!("`{other}` is not a socket-like peer")),
            };
        let mut out = vec![0u8; 4 + size];
        for (i, b) in out[4..].iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        Ok(Wire {
            r: BufReader::with_capacity(64 << 10, r),
            w,
            out,
            inb: vec![0u8; 4 + size],
            child,
        })
    }

    fn send(&mut self, reply: bool) -> io::Result<()> {
        let len = (self.out.len() - 4) as u32;
        let word = if reply { len } else { len | NO_REPLY };
        self.out[..4].copy_from_slice(&word.to_le_bytes());
        self.w.write_all(&self.out)
    }

    fn recv(&mut self) -> io::Result<()> {
        let mut hdr = [0u8; 4];
        self.r.read_exact(&mut hdr)?;
        let len = u32::from_le_bytes(hdr) as usize;
        if len + 4 != self.out.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "echo of {len} bytes for a request of {}",
                    self.out.len() - 4
                ),
            ));
        }
        self.r.read_exact(&mut self.inb[4..])?;
        if self.inb[4..] != self.out[4..] {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "echo differs from the request",
            ));
        }
        Ok(())
    }

    fn round_trip(&mut self) -> io::Result<()> {
        self.send(true)?;
        self.recv()
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Closing our end of its stdin ends the echo loop.
            self.w = Box::new(io::sink());
            let _ = child.wait();
        }
    }
}

pub fn client(
    transport: &str,
    scenario: &Scenario,
    opts: &Opts,
) -> Result<(Outcome, Wire), String> {
    let mut wire = Wire::connect(transport, scenario.size(), opts)?;
    let io = |e: io::Error| format!("{transport}: {e}");
    let mut hist = measure::histogram();
    match *scenario {
        Scenario::Rtt {
            samples, warmup, ..
        } => {
            for _ in 0..warmup {
                wire.round_trip().map_err(io)?;
            }
            measure::pause(opts, "warm")?;
            let allocs = AllocWindow::start();
            let start = Instant::now();
            let mut t0 = start;
            for _ in 0..samples {
                wire.round_trip().map_err(io)?;
                let t1 = Instant::now();
                measure::record(&mut hist, t1 - t0);
                t0 = t1;
            }
            Ok((
                Outcome {
                    hist,
                    msgs: samples,
                    bytes: samples * scenario.size() as u64,
                    elapsed: start.elapsed(),
                    allocs: allocs.end(),
                },
                wire,
            ))
        }
        Scenario::OneWay { duration, size } => {
            wire.round_trip().map_err(io)?;
            measure::pause(opts, "warm")?;
            let allocs = AllocWindow::start();
            let start = Instant::now();
            let mut msgs = 0u64;
            while start.elapsed() < duration {
                for _ in 0..64 {
                    wire.send(false).map_err(io)?;
                }
                msgs += 64;
            }
            // The echo of this one comes after every message above was read.
            wire.round_trip().map_err(io)?;
            Ok((
                Outcome {
                    hist,
                    msgs,
                    bytes: msgs * size as u64,
                    elapsed: start.elapsed(),
                    allocs: allocs.end(),
                },
                wire,
            ))
        }
        Scenario::Load { .. } => Err("the load test runs through `wire::load`".into()),
        Scenario::Pipelined {
            duration,
            window,
            size,
        } => {
            wire.round_trip().map_err(io)?;
            measure::pause(opts, "warm")?;
            let allocs = AllocWindow::start();
            let start = Instant::now();
            for _ in 0..window {
                wire.send(true).map_err(io)?;
            }
            let (mut done, mut in_flight, mut stopping) = (0u64, window, false);
            while in_flight > 0 {
                wire.recv().map_err(io)?;
                done += 1;
                in_flight -= 1;
                stopping = stopping || (done % 64 == 0 && start.elapsed() >= duration);
                if !stopping {
                    wire.send(true).map_err(io)?;
                    in_flight += 1;
                }
            }
            Ok((
                Outcome {
                    hist,
                    msgs: done,
                    bytes: done * size as u64,
                    elapsed: start.elapsed(),
                    allocs: allocs.end(),
                },
                wire,
            ))
        }
    }
}

/// `client uds|tcp|pipe load-<callers>`: a connection and a thread per caller (the server has a
/// thread per connection too), sequential echoes.
pub fn load(
    transport: &str,
    scenario: &Scenario,
    opts: &Opts,
) -> Result<(Outcome, Vec<Wire>), String> {
    let Scenario::Load { size, conns, calls } = *scenario else {
        return Err("not a load scenario".into());
    };
    let mut wires = (0..conns)
        .map(|_| Wire::connect(transport, size, opts))
        .collect::<Result<Vec<_>, _>>()?;
    let outcome = measure::load(opts, &mut wires, calls, size as u64, |w| {
        w.round_trip().map_err(|e| format!("{transport}: {e}"))
    })?;
    Ok((outcome, wires))
}
