//! The soak server: answers calls with checksummed bodies, checks the checksum of every file it
//! is sent, streams numbered items from a fixed pool of threads, answers slow calls late unless
//! cancelled, pushes numbered notifications to every connection, and checks that each client's
//! requests and notifications arrive in order without duplicates or gaps.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_transport::{
    Connection, Handler, Request, Responder, Server, ServerConfig, StreamSender,
};

use crate::proto::{self, Head, op};
use crate::{Opts, SERVICE, report};

/// Application error code for "your request was corrupted".
const CORRUPT_REQUEST: ferry_transport::ErrorCode = ferry_transport::ErrorCode(0x8000_0001);
/// Stream threads: a stuck client blocks one of them, never the worker.
const STREAM_THREADS: usize = 8;
/// Interval between pushes to each connection.
const PUSH_EVERY: Duration = Duration::from_millis(50);

/// A deliberate bug, to show that the checkers catch it (`inject=...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inject {
    None,
    /// Flip one byte of one call answer after sealing it.
    Corrupt,
    /// Answer one call with the previous call's answer (a duplicate).
    Dup,
    /// Never answer one call (leak its responder).
    Drop,
    /// Skip one push sequence number.
    DropPush,
    /// Keep [`LEAK_BYTES`] of memory per request for ever (the RSS growth check must fail).
    Leak,
}

/// What `inject=leak` retains per request: small enough to look like a real slow leak, large
/// enough that a 60-second soak's growth check sees it (about 1 MiB/s at this machine's rate).
const LEAK_BYTES: usize = 1024;

/// What `inject=leak` keeps.
static LEAKED: Mutex<Vec<Box<[u8]>>> = Mutex::new(Vec::new());

/// Blocks from this size up are mapped on their own by glibc (see `main`).
#[cfg(target_env = "gnu")]
const MMAP_THRESHOLD: libc::c_int = 256 << 10;

/// Which request the injected bug hits.
const INJECT_AT: u64 = 300;

#[derive(Default)]
struct ClientTrack {
    /// Last request seq per lane.
    lanes: HashMap<u32, u64>,
    /// Last notification seq, and how many arrived.
    note_last: Option<u64>,
    notes: u64,
}

struct State {
    stop: AtomicBool,
    inject: Inject,
    calls: AtomicU64,
    files: AtomicU64,
    file_bytes: AtomicU64,
    streams: AtomicU64,
    items: AtomicU64,
    slow: AtomicU64,
    cancels_seen: AtomicU64,
    streams_cancelled: AtomicU64,
    notes: AtomicU64,
    pushes: AtomicU64,
    violations: AtomicU64,
    clients: Mutex<HashMap<u32, ClientTrack>>,
    /// connection id -> client id (learned from its first message).
    conn_client: Mutex<HashMap<u64, u32>>,
    streams_tx: Mutex<Sender<StreamJob>>,
    slow_tx: Mutex<Sender<SlowJob>>,
    pushers: Mutex<Vec<std::thread::JoinHandle<()>>>,
    last_answer: Mutex<Vec<u8>>,
    pid: u32,
}

struct StreamJob {
    sender: StreamSender,
    head: Head,
}

struct SlowJob {
    due: Instant,
    responder: Responder,
    head: Head,
    sum: u64,
}

impl State {
    fn violation(&self, kind: &str, detail: &str) {
        self.violations.fetch_add(1, Ordering::Relaxed);
        report!("violation kind={kind} msg={detail}");
    }

    /// Checks that a client's requests on one lane come in increasing order.
    fn track_request(&self, conn: &Connection, head: &Head) {
        self.conn_client
            .lock()
            .unwrap()
            .entry(conn.id())
            .or_insert(head.client);
        let mut clients = self.clients.lock().unwrap();
        let track = clients.entry(head.client).or_default();
        if let Some(&last) = track.lanes.get(&head.lane)
            && head.seq <= last
        {
            drop(clients);
            self.violation(
                "server_request_order",
                &format!(
                    "client {} lane {} sent seq {} after seq {last} (duplicate or reordered request)",
                    head.client, head.lane, head.seq
                ),
            );
            return;
        }
        track.lanes.insert(head.lane, head.seq);
    }
}

struct Soak(Arc<State>);

impl Handler for Soak {
    fn on_request(&self, req: Request<'_>) {
        let st = &self.0;
        let payload = req.payload();
        if st.inject == Inject::Leak {
            // Written, so that the pages are really used; kept for ever (in a static, so that
            // the compiler cannot drop an allocation nobody reads).
            LEAKED
                .lock()
                .unwrap()
                .push(vec![0xA5u8; LEAK_BYTES].into_boxed_slice());
        }
        let head = match proto::parse(payload) {
            Ok(h) => h,
            Err(bad) => {
                st.violation(
                    "server_corrupt_request",
                    &format!(
                        "a request of {} bytes failed its {} check",
                        payload.len(),
                        bad.name()
                    ),
                );
                let _ = req.respond_error(CORRUPT_REQUEST, "the request failed its soak checksum");
                return;
            }
        };
        st.track_request(&req.connection(), &head);
        let sum = proto::sum_of(payload);
        let answer = Head {
            op: op::ANSWER,
            arg: sum,
            ..head
        };
        match head.op {
            op::CALL => {
                let n = st.calls.fetch_add(1, Ordering::Relaxed) + 1;
                let mut out = Vec::new();
                proto::build(
                    &mut out,
                    answer,
                    head.arg as usize,
                    proto::mix(&[head.client.into(), head.lane.into(), head.seq, 1]),
                );
                let mut last = st.last_answer.lock().unwrap();
                if n == INJECT_AT {
                    match st.inject {
                        Inject::Corrupt => {
                            let at = out.len() - 1;
                            out[at] ^= 0x01;
                        }
                        Inject::Dup if !last.is_empty() => out = last.clone(),
                        Inject::Drop => {
                            std::mem::forget(req.into_responder());
                            return;
                        }
                        _ => {}
                    }
                }
                if st.inject == Inject::Dup {
                    last.clone_from(&out);
                }
                drop(last);
                let _ = req.respond(&out);
            }
            op::FILE => {
                st.files.fetch_add(1, Ordering::Relaxed);
                st.file_bytes
                    .fetch_add(payload.len() as u64, Ordering::Relaxed);
                let mut out = Vec::new();
                proto::build(&mut out, answer, 0, 0);
                let _ = req.respond(&out);
            }
            op::STREAM => {
                st.streams.fetch_add(1, Ordering::Relaxed);
                let job = StreamJob {
                    sender: req.into_stream(),
                    head,
                };
                let _ = st.streams_tx.lock().unwrap().send(job);
            }
            op::SLOW => {
                st.slow.fetch_add(1, Ordering::Relaxed);
                let job = SlowJob {
                    due: Instant::now() + Duration::from_millis(head.arg),
                    responder: req.into_responder(),
                    head,
                    sum,
                };
                let _ = st.slow_tx.lock().unwrap().send(job);
            }
            other => {
                st.violation("server_bad_op", &format!("request with op {other}"));
                let _ = req.respond_error(CORRUPT_REQUEST, "unknown op");
            }
        }
    }

    fn on_notification(&self, conn: &Connection, payload: &[u8]) {
        let st = &self.0;
        st.notes.fetch_add(1, Ordering::Relaxed);
        let head = match proto::parse(payload) {
            Ok(h) if h.op == op::NOTE => h,
            Ok(h) => {
                st.violation("server_bad_note", &format!("notification with op {}", h.op));
                return;
            }
            Err(bad) => {
                st.violation(
                    "server_corrupt_note",
                    &format!("a notification failed its {} check", bad.name()),
                );
                return;
            }
        };
        st.conn_client
            .lock()
            .unwrap()
            .entry(conn.id())
            .or_insert(head.client);
        let mut clients = st.clients.lock().unwrap();
        let track = clients.entry(head.client).or_default();
        let problem = match track.note_last {
            Some(last) if head.seq == last + 1 => None,
            None => None, // the first this server sees (the client may predate this server)
            Some(last) if head.seq <= last => Some(("note_duplicate_or_reordered", last)),
            Some(last) => Some(("note_lost", last)),
        };
        track.note_last = Some(head.seq);
        track.notes += 1;
        drop(clients);
        if let Some((kind, last)) = problem {
            st.violation(
                kind,
                &format!(
                    "client {} notification seq {} after {last}",
                    head.client, head.seq
                ),
            );
        }
    }

    fn on_connect(&self, conn: &Connection) {
        let st = self.0.clone();
        let conn = conn.clone();
        let handle = std::thread::Builder::new()
            .name("soak-push".into())
            .spawn(move || push_loop(&st, &conn));
        match handle {
            Ok(h) => {
                reap_finished(&self.0.pushers);
                self.0.pushers.lock().unwrap().push(h);
            }
            Err(e) => report!("err op=push kind=spawn msg={e}"),
        }
    }

    fn on_disconnect(&self, conn: &Connection) {
        let st = &self.0;
        let client = st.conn_client.lock().unwrap().remove(&conn.id());
        if let Some(client) = client {
            // Forget the client with its connection: churn connects thousands of clients, each
            // under a new id, and keeping their tracks was a leak of this server's own (about
            // 3 MiB per churn fault, which the RSS growth check caught).
            let track = st.clients.lock().unwrap().remove(&client);
            if let Some(t) = track {
                report!(
                    "disc conn={} client={client} notes={} note_last={}",
                    conn.id(),
                    t.notes,
                    t.note_last.map_or(-1, |s| s as i64)
                );
            }
        }
    }
}

/// Joins the threads of `handles` that have ended (freeing their stacks) and forgets them.
fn reap_finished(handles: &Mutex<Vec<std::thread::JoinHandle<()>>>) {
    let finished: Vec<_> = {
        let mut all = handles.lock().unwrap();
        let (done, running) = std::mem::take(&mut *all)
            .into_iter()
            .partition(|h| h.is_finished());
        *all = running;
        done
    };
    for h in finished {
        let _ = h.join();
    }
}

fn push_loop(st: &State, conn: &Connection) {
    let mut seq = 0u64;
    let mut msg = Vec::new();
    while conn.is_open() && !st.stop.load(Ordering::Acquire) {
        if st.inject == Inject::DropPush && st.pushes.load(Ordering::Relaxed) == INJECT_AT {
            seq += 1;
        }
        let head = Head {
            op: op::PUSH,
            client: conn.id() as u32,
            lane: st.pid,
            seq,
            arg: 0,
        };
        proto::build(&mut msg, head, 8 + (seq % 120) as usize, seq);
        if conn.notify(&msg).is_err() {
            break;
        }
        st.pushes.fetch_add(1, Ordering::Relaxed);
        seq += 1;
        std::thread::sleep(PUSH_EVERY);
    }
}

fn stream_worker(st: Arc<State>, rx: Arc<Mutex<Receiver<StreamJob>>>) {
    let mut item = Vec::new();
    loop {
        let job = rx.lock().unwrap().recv();
        let Ok(job) = job else { return };
        let count = job.head.arg & 0xFFFF_FFFF;
        let max = (job.head.arg >> 32).max(1) as usize;
        let mut ok = true;
        for i in 0..count {
            let mut r = proto::Rng::new(proto::mix(&[job.head.client.into(), job.head.seq, i]));
            let len = r.log_size(1, max);
            let head = Head {
                op: op::ITEM,
                client: job.head.client,
                lane: job.head.lane,
                seq: i,
                arg: job.head.seq,
            };
            proto::build(&mut item, head, len, r.next());
            match job.sender.send(&item) {
                Ok(()) => {
                    st.items.fetch_add(1, Ordering::Relaxed);
                }
                Err(ferry_transport::Error::Cancelled) => {
                    st.streams_cancelled.fetch_add(1, Ordering::Relaxed);
                    ok = false;
                    break;
                }
                Err(_) => {
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            let _ = job.sender.finish();
        }
    }
}

fn slow_worker(st: Arc<State>, rx: Receiver<SlowJob>) {
    let mut pending: Vec<SlowJob> = Vec::new();
    loop {
        let now = Instant::now();
        let mut i = 0;
        while i < pending.len() {
            if pending[i].due <= now {
                let job = pending.swap_remove(i);
                if job.responder.is_cancelled() {
                    st.cancels_seen.fetch_add(1, Ordering::Relaxed);
                    drop(job.responder); // answers CANCELLED to an abandoned call
                } else {
                    let mut out = Vec::new();
                    let head = Head {
                        op: op::ANSWER,
                        arg: job.sum,
                        ..job.head
                    };
                    proto::build(&mut out, head, 0, 0);
                    let _ = job.responder.respond(&out);
                }
            } else {
                i += 1;
            }
        }
        let wait = pending
            .iter()
            .map(|j| j.due.saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::from_millis(100));
        match rx.recv_timeout(wait) {
            Ok(job) => pending.push(job),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Descriptors held open by `fdfill` (the "near the fd limit" fault).
static FILLER: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());
/// RLIMIT_FSIZE before `fsize on` (the "shared memory creation fails" fault).
static FSIZE_SAVED: Mutex<Option<rustix::process::Rlimit>> = Mutex::new(None);

fn command(cmd: &str) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    match cmd {
        "fdfill" => {
            // Open /dev/null until a few descriptors below the soft limit remain: existing
            // connections need none, new ones need several (socket, memfd, two eventfds).
            let limit = getrlimit(Resource::Nofile).current.unwrap_or(1 << 20);
            let open = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count()) as u64;
            let want = limit.saturating_sub(open + 3);
            let mut filler = FILLER.lock().unwrap();
            let mut err = String::new();
            while (filler.len() as u64) < want {
                match std::fs::File::open("/dev/null") {
                    Ok(f) => filler.push(f),
                    Err(e) => {
                        err = e.to_string();
                        break;
                    }
                }
            }
            report!(
                "fdfill held={} limit={limit} open_before={open} msg={err}",
                filler.len()
            );
        }
        "fdfree" => {
            let n = std::mem::take(&mut *FILLER.lock().unwrap()).len();
            report!("fdfree released={n}");
        }
        "fsize on" => {
            // memfd_create + ftruncate(connection size) is how every connection's memory is
            // made; RLIMIT_FSIZE below that size makes ftruncate fail with EFBIG.
            let old = getrlimit(Resource::Fsize);
            let new = rustix::process::Rlimit {
                current: Some(4096),
                maximum: old.maximum,
            };
            let r = setrlimit(Resource::Fsize, new);
            *FSIZE_SAVED.lock().unwrap() = Some(old);
            report!("fsize on ok={}", r.is_ok());
        }
        "fsize off" => {
            if let Some(old) = FSIZE_SAVED.lock().unwrap().take() {
                let r = setrlimit(Resource::Fsize, old);
                report!("fsize off ok={}", r.is_ok());
            }
        }
        other => report!("err op=command kind=unknown msg={other}"),
    }
}

pub fn main(opts: &Opts) -> i32 {
    // SAFETY: setting a signal's disposition to SIG_IGN runs no code of ours in a handler; it is
    // done before any thread starts. Needed because the kernel sends SIGXFSZ (default: core dump)
    // along with EFBIG when ftruncate exceeds RLIMIT_FSIZE (the shared-memory-limit fault).
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    // The RSS growth check should see what the server holds, not what glibc caches. By default
    // glibc raises its mmap threshold to the size of the largest block freed (up to 32 MiB):
    // after the first 16 MiB file, every large reassembly buffer comes from an arena heap and
    // tens of MiB stay cached there after they are freed, at levels that depend on timing (a
    // quiet 90 s run plateaued 30 -> 57 MiB). A fixed threshold keeps each large buffer its own
    // mapping, returned to the kernel when freed; small allocations are unaffected.
    // Likewise glibc gives threads new arenas (up to 8 per core) as contention appears: the
    // first connection churn, which starts a push thread per connection, added ~40 mappings
    // and ~3.5 MiB of arena slack that then stayed. Two arenas make that a constant.
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallopt only changes allocator parameters; called before any thread starts.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
        // SAFETY: as above.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    }
    let inject = match opts.get("inject") {
        None | Some("none") => Inject::None,
        Some("corrupt") => Inject::Corrupt,
        Some("dup") => Inject::Dup,
        Some("drop") => Inject::Drop,
        Some("droppush") => Inject::DropPush,
        Some("leak") => Inject::Leak,
        Some(other) => {
            eprintln!("ferry-soak server: unknown inject={other}");
            return 2;
        }
    };
    let (streams_tx, streams_rx) = channel();
    let (slow_tx, slow_rx) = channel();
    let st = Arc::new(State {
        stop: AtomicBool::new(false),
        inject,
        calls: AtomicU64::new(0),
        files: AtomicU64::new(0),
        file_bytes: AtomicU64::new(0),
        streams: AtomicU64::new(0),
        items: AtomicU64::new(0),
        slow: AtomicU64::new(0),
        cancels_seen: AtomicU64::new(0),
        streams_cancelled: AtomicU64::new(0),
        notes: AtomicU64::new(0),
        pushes: AtomicU64::new(0),
        violations: AtomicU64::new(0),
        clients: Mutex::new(HashMap::new()),
        conn_client: Mutex::new(HashMap::new()),
        streams_tx: Mutex::new(streams_tx),
        slow_tx: Mutex::new(slow_tx),
        pushers: Mutex::new(Vec::new()),
        last_answer: Mutex::new(Vec::new()),
        pid: std::process::id(),
    });
    let streams_rx = Arc::new(Mutex::new(streams_rx));
    let mut helpers = Vec::new();
    for _ in 0..STREAM_THREADS {
        let (s, r) = (st.clone(), streams_rx.clone());
        helpers.push(std::thread::spawn(move || stream_worker(s, r)));
    }
    {
        let s = st.clone();
        helpers.push(std::thread::spawn(move || slow_worker(s, slow_rx)));
    }
    let config = ServerConfig::default().with_workers(opts.num("workers", 1) as usize);
    let server = match Server::bind(SERVICE, config, Soak(st.clone())) {
        Ok(s) => s,
        Err(e) => {
            report!("final role=server ok=false msg=bind failed: {e}");
            return 1;
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    crate::watch_stdin(stop.clone(), command);
    report!("ready pid={} socket={}", st.pid, server.endpoint());
    let mut next = Instant::now();
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(50));
        // Join the push threads that have ended. A thread not joined (nor detached) keeps its
        // stack mapped after it exits (glibc frees it on join): reaping only on the next
        // connect left the stacks of the last ~25 connections of a churn mapped until some
        // client connected again, which the soak's growth check saw as 40-60 more mappings
        // and ~10 % more RSS whenever a churn came last (seed 486144683).
        reap_finished(&st.pushers);
        if Instant::now() >= next {
            next += Duration::from_secs(1);
            // Give free heap pages back (glibc keeps them after a burst of connections, as
            // holes in its heaps), so that RSS tracks the memory the server still uses.
            // SAFETY: malloc_trim only releases free memory; it is thread-safe.
            #[cfg(target_env = "gnu")]
            unsafe {
                libc::malloc_trim(0);
            }
            let s = server.stats();
            report!(
                "prog requests={} notes={} open={} accepted={} refused={} closed={} protocol_errors={} pushes={} items={} violations={}",
                s.requests,
                s.notifications,
                s.connections_open,
                s.connections_accepted,
                s.connections_refused,
                s.connections_closed,
                s.protocol_errors,
                st.pushes.load(Ordering::Relaxed),
                st.items.load(Ordering::Relaxed),
                st.violations.load(Ordering::Relaxed),
            );
        }
    }
    // Clean shutdown: the soak checks that nothing is left behind once this returns.
    st.stop.store(true, Ordering::Release);
    let stats = (
        server.stats().requests,
        server.stats().connections_accepted,
        server.stats().protocol_errors,
    );
    server.shutdown();
    for h in std::mem::take(&mut *st.pushers.lock().unwrap()) {
        let _ = h.join();
    }
    // Closing the job channels ends the helper threads.
    drop(std::mem::replace(
        &mut *st.streams_tx.lock().unwrap(),
        channel().0,
    ));
    drop(std::mem::replace(
        &mut *st.slow_tx.lock().unwrap(),
        channel().0,
    ));
    for h in helpers {
        let _ = h.join();
    }
    report!(
        "final role=server ok=true requests={} accepted={} protocol_errors={} calls={} files={} file_bytes={} streams={} items={} slow={} cancels_seen={} streams_cancelled={} notes={} pushes={} violations={}",
        stats.0,
        stats.1,
        stats.2,
        st.calls.load(Ordering::Relaxed),
        st.files.load(Ordering::Relaxed),
        st.file_bytes.load(Ordering::Relaxed),
        st.streams.load(Ordering::Relaxed),
        st.items.load(Ordering::Relaxed),
        st.slow.load(Ordering::Relaxed),
        st.cancels_seen.load(Ordering::Relaxed),
        st.streams_cancelled.load(Ordering::Relaxed),
        st.notes.load(Ordering::Relaxed),
        st.pushes.load(Ordering::Relaxed),
        st.violations.load(Ordering::Relaxed),
    );
    0
}
