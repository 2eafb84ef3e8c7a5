//! An honest client: a seeded mix of completion calls, file analyses, chat streams (some
//! cancelled half way), slow calls that time out (cancellation) or not, and notifications; it
//! checks every answer, item and push it receives.
//!
//! Lanes (threads): 0 = calls, files and notifications; 1 = streams; 2 = slow calls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_transport::{Client, ClientConfig, Error};

use crate::proto::{self, Head, Rng, op};
use crate::{Opts, SERVICE, error_kind, now_ms, report};

/// Largest file body: the whole message (header included) is exactly the transport's 16 MiB.
const FILE_MAX: usize = ferry_frame::DEFAULT_MAX_MESSAGE_SIZE as usize - proto::HEADER;
const FILE_MIN: usize = 64 << 10;

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    files: AtomicU64,
    streams: AtomicU64,
    streams_cancelled: AtomicU64,
    items: AtomicU64,
    slow_ok: AtomicU64,
    slow_cancelled: AtomicU64,
    /// Slow calls whose deadline passed but that returned the answer (it had arrived).
    deadline_overruns: AtomicU64,
    notes: AtomicU64,
    pushes: AtomicU64,
    bytes_out: AtomicU64,
    bytes_in: AtomicU64,
    errors: AtomicU64,
    violations: AtomicU64,
    /// Start of the operation in progress per lane (ms since epoch; 0 = idle).
    busy_since: [AtomicU64; 3],
}

struct Ctx {
    id: u32,
    client: Client,
    stop: Arc<AtomicBool>,
    c: Arc<Counters>,
    /// Latency histogram (bucket -> count) of completion calls since the last progress line.
    hist: Mutex<HashMap<usize, u64>>,
}

impl Ctx {
    fn violation(&self, kind: &str, msg: &str) {
        self.c.violations.fetch_add(1, Ordering::Relaxed);
        report!("violation kind={kind} client={} msg={msg}", self.id);
    }
    fn error(&self, opname: &str, e: &Error) {
        self.c.errors.fetch_add(1, Ordering::Relaxed);
        report!(
            "err op={opname} kind={} client={} t={} msg={e}",
            error_kind(e),
            self.id,
            now_ms()
        );
    }
    fn begin(&self, lane: usize) {
        self.c.busy_since[lane].store(now_ms() as u64, Ordering::Relaxed);
    }
    fn end(&self, lane: usize) {
        self.c.busy_since[lane].store(0, Ordering::Relaxed);
    }
    /// Checks an answer to request `sent` (whose checksum is `sum`) and returns its body length.
    fn check_answer(&self, what: &str, sent: &Head, sum: u64, answer: &[u8]) -> Option<usize> {
        match proto::parse(answer) {
            Err(bad) => {
                self.violation(
                    "corrupt_answer",
                    &format!(
                        "{what} seq {} answer of {} bytes failed its {} check",
                        sent.seq,
                        answer.len(),
                        bad.name()
                    ),
                );
                None
            }
            Ok(h)
                if h.op != op::ANSWER
                    || h.client != sent.client
                    || h.lane != sent.lane
                    || h.seq != sent.seq
                    || h.arg != sum =>
            {
                self.violation(
                    "wrong_answer",
                    &format!(
                        "{what} seq {} got the answer for client {} lane {} seq {} op {} (duplicate, stale or misdelivered)",
                        sent.seq, h.client, h.lane, h.seq, h.op
                    ),
                );
                None
            }
            Ok(_) => Some(answer.len() - proto::HEADER),
        }
    }
}

fn sleep_unless_stopped(stop: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= end {
            return;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

fn lane_calls(ctx: &Ctx, seed: u64) {
    let mut r = Rng::new(proto::mix(&[seed, 0]));
    let mut msg = Vec::new();
    let mut seq = 0u64;
    let mut note_seq = 0u64;
    while !ctx.stop.load(Ordering::Relaxed) {
        let pick = r.below(100);
        ctx.begin(0);
        if pick < 70 {
            let head = Head {
                op: op::CALL,
                client: ctx.id,
                lane: 0,
                seq,
                arg: r.log_size(16, 16 << 10) as u64,
            };
            proto::build(&mut msg, head, r.log_size(16, 4096), r.next());
            let sum = proto::sum_of(&msg);
            let t0 = Instant::now();
            match ctx.client.call(&msg) {
                Ok(answer) => {
                    let us = t0.elapsed().as_secs_f64() * 1e6;
                    *ctx.hist
                        .lock()
                        .unwrap()
                        .entry(proto::bucket_of(us))
                        .or_default() += 1;
                    if let Some(n) = ctx.check_answer("call", &head, sum, &answer) {
                        if n as u64 != head.arg {
                            ctx.violation(
                                "answer_length",
                                &format!("call seq {seq}: asked {} bytes, got {n}", head.arg),
                            );
                        }
                        ctx.c.calls.fetch_add(1, Ordering::Relaxed);
                        ctx.c
                            .bytes_in
                            .fetch_add(answer.len() as u64, Ordering::Relaxed);
                    }
                    ctx.c
                        .bytes_out
                        .fetch_add(msg.len() as u64, Ordering::Relaxed);
                }
                Err(e) => ctx.error("call", &e),
            }
            seq += 1;
        } else if pick < 74 {
            let head = Head {
                op: op::FILE,
                client: ctx.id,
                lane: 0,
                seq,
                arg: 0,
            };
            proto::build(&mut msg, head, r.log_size(FILE_MIN, FILE_MAX), r.next());
            let sum = proto::sum_of(&msg);
            match ctx.client.call(&msg) {
                Ok(answer) => {
                    if ctx.check_answer("file", &head, sum, &answer).is_some() {
                        ctx.c.files.fetch_add(1, Ordering::Relaxed);
                    }
                    ctx.c
                        .bytes_out
                        .fetch_add(msg.len() as u64, Ordering::Relaxed);
                    ctx.c
                        .bytes_in
                        .fetch_add(answer.len() as u64, Ordering::Relaxed);
                }
                Err(e) => ctx.error("file", &e),
            }
            seq += 1;
        } else {
            for _ in 0..1 + r.below(8) {
                let head = Head {
                    op: op::NOTE,
                    client: ctx.id,
                    lane: 0,
                    seq: note_seq,
                    arg: 0,
                };
                proto::build(&mut msg, head, r.log_size(8, 1024), r.next());
                note_seq += 1;
                match ctx.client.notify(&msg) {
                    Ok(()) => {
                        ctx.c.notes.fetch_add(1, Ordering::Relaxed);
                        ctx.c
                            .bytes_out
                            .fetch_add(msg.len() as u64, Ordering::Relaxed);
                    }
                    Err(e) => ctx.error("note", &e),
                }
            }
        }
        ctx.end(0);
        sleep_unless_stopped(
            &ctx.stop,
            Duration::from_micros(r.log_size(200, 20_000) as u64),
        );
    }
}

fn lane_streams(ctx: &Ctx, seed: u64) {
    let mut r = Rng::new(proto::mix(&[seed, 1]));
    let mut msg = Vec::new();
    let mut item = Vec::new();
    let mut seq = 0u64;
    while !ctx.stop.load(Ordering::Relaxed) {
        let count = r.log_size(5, 400) as u64;
        let max = r.log_size(8, 512) as u64;
        // One stream in seven is cancelled after some items.
        let cancel_after = (r.below(7) == 0).then(|| r.below(count));
        let head = Head {
            op: op::STREAM,
            client: ctx.id,
            lane: 1,
            seq,
            arg: count | (max << 32),
        };
        proto::build(&mut msg, head, r.log_size(16, 2048), r.next());
        seq += 1;
        ctx.begin(1);
        match ctx.client.stream(&msg) {
            Err(e) => ctx.error("stream", &e),
            Ok(mut stream) => {
                ctx.c
                    .bytes_out
                    .fetch_add(msg.len() as u64, Ordering::Relaxed);
                let mut got = 0u64;
                loop {
                    if cancel_after == Some(got) {
                        stream.cancel();
                        ctx.c.streams_cancelled.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    match stream.next_into(&mut item) {
                        Ok(true) => {
                            ctx.c
                                .bytes_in
                                .fetch_add(item.len() as u64, Ordering::Relaxed);
                            match proto::parse(&item) {
                                Err(bad) => ctx.violation(
                                    "corrupt_item",
                                    &format!(
                                        "stream {} item {got} failed its {} check",
                                        head.seq,
                                        bad.name()
                                    ),
                                ),
                                Ok(h)
                                    if h.op != op::ITEM
                                        || h.client != ctx.id
                                        || h.arg != head.seq =>
                                {
                                    ctx.violation(
                                        "wrong_item",
                                        &format!(
                                            "stream {} got an item of client {} stream {}",
                                            head.seq, h.client, h.arg
                                        ),
                                    )
                                }
                                Ok(h) if h.seq != got => ctx.violation(
                                    if h.seq < got {
                                        "item_duplicate_or_reordered"
                                    } else {
                                        "item_lost"
                                    },
                                    &format!(
                                        "stream {}: item {} arrived where {got} was due",
                                        head.seq, h.seq
                                    ),
                                ),
                                Ok(_) => {}
                            }
                            got += 1;
                            ctx.c.items.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(false) => {
                            if got != count {
                                ctx.violation(
                                    "item_lost",
                                    &format!(
                                        "stream {} ended after {got} of {count} items",
                                        head.seq
                                    ),
                                );
                            }
                            ctx.c.streams.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Err(e) => {
                            ctx.error("stream", &e);
                            break;
                        }
                    }
                }
            }
        }
        ctx.end(1);
        sleep_unless_stopped(&ctx.stop, Duration::from_millis(r.log_size(5, 100) as u64));
    }
}

fn lane_slow(ctx: &Ctx, seed: u64) {
    let mut r = Rng::new(proto::mix(&[seed, 2]));
    let mut msg = Vec::new();
    let mut seq = 0u64;
    while !ctx.stop.load(Ordering::Relaxed) {
        let delay = r.log_size(40, 400) as u64;
        let cancel = r.below(2) == 0;
        // Cancelled: the deadline passes long before the server answers. Not cancelled: the
        // deadline leaves seconds of slack over the server's delay.
        let timeout = if cancel { delay / 4 } else { delay + 3000 };
        let head = Head {
            op: op::SLOW,
            client: ctx.id,
            lane: 2,
            seq,
            arg: delay,
        };
        proto::build(&mut msg, head, r.log_size(8, 256), r.next());
        let sum = proto::sum_of(&msg);
        seq += 1;
        ctx.begin(2);
        let t0 = Instant::now();
        match ctx
            .client
            .call_timeout(&msg, Duration::from_millis(timeout))
        {
            Ok(answer) => {
                let waited = t0.elapsed();
                if cancel && waited >= Duration::from_millis(delay) {
                    // The answer was there by the time this thread ran again (a loaded machine
                    // can be late to enforce a deadline); taking it is right, and counted.
                    ctx.c.deadline_overruns.fetch_add(1, Ordering::Relaxed);
                    let _ = ctx.check_answer("slow", &head, sum, &answer);
                } else if cancel {
                    ctx.violation(
                        "answered_too_early",
                        &format!(
                            "slow call seq {} delayed {delay} ms was answered after {:?}",
                            head.seq, waited
                        ),
                    );
                } else if ctx.check_answer("slow", &head, sum, &answer).is_some() {
                    ctx.c.slow_ok.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(Error::Timeout(_)) if cancel => {
                ctx.c.slow_cancelled.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => ctx.error(if cancel { "slow_cancel" } else { "slow" }, &e),
        }
        ctx.end(2);
        sleep_unless_stopped(&ctx.stop, Duration::from_millis(r.log_size(20, 300) as u64));
    }
}

fn line(ctx: &Ctx, kind: &str) -> String {
    let c = &ctx.c;
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let now = now_ms() as u64;
    let busy = c
        .busy_since
        .iter()
        .map(&l)
        .filter(|&t| t > 0)
        .map(|t| now.saturating_sub(t))
        .max()
        .unwrap_or(0);
    let hist: Vec<String> = std::mem::take(&mut *ctx.hist.lock().unwrap())
        .into_iter()
        .map(|(b, n)| format!("{b}:{n}"))
        .collect();
    let s = ctx.client.stats();
    format!(
        "{kind} role=client id={} calls={} files={} streams={} streams_cancelled={} items={} slow_ok={} slow_cancelled={} deadline_overruns={} notes={} pushes={} bytes_out={} bytes_in={} errors={} violations={} connects={} busy_ms={busy} lat={}",
        ctx.id,
        l(&c.calls),
        l(&c.files),
        l(&c.streams),
        l(&c.streams_cancelled),
        l(&c.items),
        l(&c.slow_ok),
        l(&c.slow_cancelled),
        l(&c.deadline_overruns),
        l(&c.notes),
        l(&c.pushes),
        l(&c.bytes_out),
        l(&c.bytes_in),
        l(&c.errors),
        l(&c.violations),
        s.connects,
        if hist.is_empty() {
            "-".to_owned()
        } else {
            hist.join(",")
        },
    )
}

pub fn main(opts: &Opts) -> i32 {
    let id = opts.num("id", 0) as u32;
    let seed = opts.num("seed", 1);
    let stop = Arc::new(AtomicBool::new(false));
    crate::watch_stdin(stop.clone(), |_| {});
    let counters = Arc::new(Counters::default());
    let violations_in_pushes: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    // Pushes: per (server pid, connection id), sequence numbers 0, 1, 2, ... with no gap.
    let on_push = {
        let c = counters.clone();
        let v = violations_in_pushes.clone();
        let next: Mutex<HashMap<(u32, u32), u64>> = Mutex::new(HashMap::new());
        Arc::new(move |payload: &[u8]| {
            c.pushes.fetch_add(1, Ordering::Relaxed);
            c.bytes_in
                .fetch_add(payload.len() as u64, Ordering::Relaxed);
            let problem = match proto::parse(payload) {
                Err(bad) => Some(format!(
                    "corrupt_push a push failed its {} check",
                    bad.name()
                )),
                Ok(h) if h.op != op::PUSH => Some(format!("wrong_push op {}", h.op)),
                Ok(h) => {
                    let mut next = next.lock().unwrap();
                    let want = next.entry((h.lane, h.client)).or_insert(0);
                    let p = if h.seq == *want {
                        None
                    } else if h.seq < *want {
                        Some(format!(
                            "push_duplicate_or_reordered push {} of server {} connection {} arrived after {}",
                            h.seq,
                            h.lane,
                            h.client,
                            *want - 1
                        ))
                    } else {
                        Some(format!(
                            "push_lost push {} of server {} connection {} arrived where {} was due",
                            h.seq, h.lane, h.client, *want
                        ))
                    };
                    if h.seq >= *want {
                        *want = h.seq + 1;
                    }
                    p
                }
            };
            if let Some(p) = problem {
                v.lock().unwrap().push(p);
            }
        })
    };
    let mut config = ClientConfig::default();
    config.on_notification = Some(on_push);
    // Connect, retrying through faults (server restarting, limits hit) until told to stop.
    let client = loop {
        match Client::connect_with(SERVICE, config.clone()) {
            Ok(c) => break c,
            Err(e) => {
                report!(
                    "err op=connect kind={} client={id} t={} msg={e}",
                    error_kind(&e),
                    now_ms()
                );
                if stop.load(Ordering::Relaxed) {
                    report!("final role=client id={id} ok=false msg=never connected");
                    return 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    report!("ready role=client id={id} pid={}", std::process::id());
    let ctx = Arc::new(Ctx {
        id,
        client,
        stop: stop.clone(),
        c: counters,
        hist: Mutex::new(HashMap::new()),
    });
    let lanes: Vec<_> = [lane_calls, lane_streams, lane_slow]
        .into_iter()
        .map(|f| {
            let ctx = ctx.clone();
            std::thread::spawn(move || f(&ctx, seed))
        })
        .collect();
    let mut next = Instant::now() + Duration::from_secs(1);
    let flush_push_violations = |ctx: &Ctx| {
        for p in std::mem::take(&mut *violations_in_pushes.lock().unwrap()) {
            let (kind, msg) = p.split_once(' ').unwrap_or((&p, ""));
            ctx.violation(kind, msg);
        }
    };
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
        if Instant::now() >= next {
            next += Duration::from_secs(1);
            flush_push_violations(&ctx);
            report!("{}", line(&ctx, "prog"));
        }
    }
    for lane in lanes {
        let _ = lane.join();
    }
    ctx.client.close();
    flush_push_violations(&ctx);
    report!("{} ok=true", line(&ctx, "final"));
    0
}
