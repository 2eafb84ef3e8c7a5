//! The orchestrator's side of the child processes: spawning them, reading their lines, sending
//! them commands, sampling the server from `/proc`, and running the chaos schedule's faults.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use super::Options;
use super::checker::{Checker, Line, Sample, fmt_us, percentile};
use super::schedule::{Fault, HOSTILE_MODES, Rng};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
    Hostile,
    Churn,
    Probe,
    OtherUid,
}

impl Role {
    pub(super) fn name(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Client => "client",
            Role::Hostile => "hostile",
            Role::Churn => "churn",
            Role::Probe => "probe",
            Role::OtherUid => "otheruid",
        }
    }
}

/// What a probe is expected to see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Ok,
    /// A clear error (refused or timed out), never a hang or a crash.
    ClearError,
    /// Refused because the shared memory could not be created.
    ShmRefusal,
}

pub(super) struct Proc {
    pub(super) role: Role,
    /// Client id (honest clients), generation (server).
    pub(super) id: u64,
    pub(super) child: Child,
    pub(super) stdin: Option<ChildStdin>,
    pub(super) spawned: f64,
    pub(super) last_line: f64,
    /// We killed it (SIGKILL) or asked it to quit: its exit is expected.
    pub(super) ending: bool,
    pub(super) exited: bool,
    pub(super) stopped_since: Option<f64>,
    /// Ignore latency from this many more progress lines (it was stopped).
    pub(super) skip_lat: u32,
    pub(super) last_prog: Option<Line>,
    pub(super) final_line: Option<Line>,
    pub(super) expect: Option<Expect>,
    /// Server generations it lived through (clients).
    pub(super) server_gen_at_spawn: u64,
}

pub(super) struct Msg {
    pub(super) key: usize,
    pub(super) line: Option<String>,
}

/// Seconds the server has to report an `fdfill` done before the fault is given up.
const FDFILL_REPORT_WITHIN: f64 = 20.0;

pub(super) struct Soak {
    pub(super) opts: Options,
    pub(super) bin: PathBuf,
    pub(super) runtime: PathBuf,
    pub(super) out_dir: PathBuf,
    pub(super) stderr_log: PathBuf,
    pub(super) start: Instant,
    pub(super) procs: Vec<Proc>,
    pub(super) tx: Sender<Msg>,
    pub(super) rx: Receiver<Msg>,
    pub(super) c: Checker,
    pub(super) server_key: Option<usize>,
    pub(super) server_gen: u64,
    pub(super) next_client_id: u64,
    pub(super) rng: Rng,
    /// Time of the last server kill, until its successor says `ready`.
    pub(super) restarting_since: Option<f64>,
    pub(super) fault_active: Option<Fault>,
    pub(super) fault_steps: Vec<(f64, Step)>,
    pub(super) fault_ended: f64,
    /// When the fault in progress started.
    pub(super) fault_started: f64,
    pub(super) deck: Vec<Fault>,
    /// The faults drawn from the current deck so far.
    pub(super) drawn: Vec<Fault>,
    pub(super) hostile_modes: Vec<&'static str>,
    pub(super) server_fdfill: bool,
    pub(super) last_server_prog: Option<(f64, Line)>,
    pub(super) server_open: u64,
    pub(super) server_requests: (f64, u64),
}

#[derive(Debug, Clone)]
pub(super) enum Step {
    ServerCmd(&'static str),
    Probe(Expect),
    Cont(usize),
    SpawnServer,
    End,
}

impl Soak {
    pub(super) fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    pub(super) fn spawn(&mut self, role: Role, args: &[String]) -> Option<usize> {
        let err = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_log)
            .ok();
        let mut cmd = Command::new(&self.bin);
        if role == Role::Server {
            // glibc keeps up to 40 MiB of freed thread stacks mapped for reuse: the first
            // connection churn (the soak server starts a push thread per connection) left ~40
            // more mappings (and their touched pages) for good, which the growth check cannot
            // tell from a leak. Without the cache a finished thread's stack is unmapped. (The
            // server also fixes glibc's mmap threshold and arena count; see its `main`.)
            cmd.env("GLIBC_TUNABLES", "glibc.pthread.stack_cache_size=0");
        }
        cmd.arg(role.name())
            .args(args)
            .env("FERRY_RUNTIME_DIR", &self.runtime)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err.map_or(Stdio::inherit(), Stdio::from));
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                self.c.violation(format!(
                    "spawn_failed: {} could not start: {e}",
                    role.name()
                ));
                return None;
            }
        };
        let key = self.procs.len();
        let out = child.stdout.take().expect("piped");
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx
                    .send(Msg {
                        key,
                        line: Some(line),
                    })
                    .is_err()
                {
                    return;
                }
            }
            let _ = tx.send(Msg { key, line: None });
        });
        let now = self.now();
        let id = args
            .iter()
            .find_map(|a| a.strip_prefix("id="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(self.server_gen);
        self.procs.push(Proc {
            role,
            id,
            stdin: child.stdin.take(),
            child,
            spawned: now,
            last_line: now,
            ending: false,
            exited: false,
            stopped_since: None,
            skip_lat: 0,
            last_prog: None,
            final_line: None,
            expect: None,
            server_gen_at_spawn: self.server_gen,
        });
        Some(key)
    }

    pub(super) fn spawn_server(&mut self) {
        self.server_gen += 1;
        let mut args = vec![format!("generation={}", self.server_gen)];
        if let Some(bug) = &self.opts.inject {
            args.push(format!("inject={bug}"));
        }
        self.server_key = self.spawn(Role::Server, &args);
        self.server_open = 0;
        self.server_requests = (self.now(), 0);
        self.last_server_prog = None;
    }

    pub(super) fn spawn_client(&mut self) {
        self.next_client_id += 1;
        let id = self.next_client_id;
        let seed = self.opts.seed.wrapping_mul(1_000_003).wrapping_add(id);
        self.spawn(Role::Client, &[format!("id={id}"), format!("seed={seed}")]);
    }

    pub(super) fn send(&mut self, key: usize, cmd: &str) {
        if let Some(stdin) = self.procs[key].stdin.as_mut() {
            let _ = writeln!(stdin, "{cmd}");
            let _ = stdin.flush();
        }
    }

    pub(super) fn live_clients(&self) -> Vec<usize> {
        (0..self.procs.len())
            .filter(|&k| {
                let p = &self.procs[k];
                p.role == Role::Client && !p.exited && !p.ending
            })
            .collect()
    }

    pub(super) fn signal(&mut self, key: usize, sig: &str) {
        let pid = self.procs[key].child.id().to_string();
        let _ = Command::new("kill").args([sig, &pid]).status();
    }

    pub(super) fn handle(&mut self, key: usize, text: &str) {
        let t = self.now();
        let l = Line::parse(text);
        self.procs[key].last_line = t;
        let role = self.procs[key].role;
        let id = self.procs[key].id;
        match (role, l.kind.as_str()) {
            (_, "violation") => self.c.violation(format!(
                "{}: reported by {} {id}: {}",
                l.get("kind"),
                role.name(),
                l.get("msg")
            )),
            (Role::Server, "ready") => {
                if let Some(since) = self.restarting_since.take() {
                    // Errors are expected from the kill until clients have reconnected: the
                    // window opened (without an end) at the kill closes 3 s from now.
                    for w in self.c.windows.iter_mut().filter(|w| w.1.is_infinite()) {
                        w.1 = t + 3.0;
                    }
                    self.c.fault_notes.push(format!(
                        "server restarted in {:.0} ms",
                        (t - since) * 1000.0
                    ));
                }
            }
            (Role::Server, "prog") => {
                self.server_open = l.num("open");
                let req = l.num("requests");
                if req > self.server_requests.1 {
                    self.server_requests = (t, req);
                }
                self.last_server_prog = Some((t, l));
            }
            (Role::Server, "disc") => {
                self.c.server_disc.insert(
                    l.num("client"),
                    (l.num("notes"), l.get("note_last").parse().unwrap_or(-1)),
                );
            }
            (Role::Server, "final") => self.c.server_finals.push(l.clone()),
            (Role::Server, "fdfill") => {
                self.c.fault_notes.push(format!(
                    "fd limit: server held {} extra descriptors (limit {}) after {:.2} s",
                    l.get("held"),
                    l.get("limit"),
                    t - self.fault_started
                ));
                if self.fault_active == Some(Fault::FdLimit) {
                    // The fill is done: probe now (a clear error), free, probe again (served).
                    self.fault_steps.retain(|s| !matches!(s.1, Step::End));
                    self.fault_steps
                        .push((t + 0.1, Step::Probe(Expect::ClearError)));
                    self.fault_steps.push((t + 3.2, Step::ServerCmd("fdfree")));
                    self.fault_steps.push((t + 3.5, Step::Probe(Expect::Ok)));
                    self.fault_steps.push((t + 5.7, Step::End));
                    if let Some(w) = self.c.windows.last_mut() {
                        w.1 = t + 5.7;
                    }
                }
            }
            (Role::Client, "prog") | (Role::Client, "final") => {
                let p = &mut self.procs[key];
                let skip = p.stopped_since.is_some() || p.skip_lat > 0;
                if p.skip_lat > 0 && p.stopped_since.is_none() {
                    p.skip_lat -= 1;
                }
                let busy = l.num("busy_ms");
                if busy > self.opts.stall.as_millis() as u64 && p.stopped_since.is_none() {
                    self.c.violation(format!(
                        "stalled_call: client {id} has had an operation in flight for {busy} ms"
                    ));
                }
                if !skip {
                    self.c.add_latency(t as u64, &l);
                }
                self.c.totals.insert(id, l.clone());
                if l.kind == "final" {
                    self.procs[key].final_line = Some(l);
                } else {
                    self.procs[key].last_prog = Some(l);
                }
            }
            (Role::Client, "err") => {
                let p = &self.procs[key];
                let stopped = p.stopped_since.is_some() || p.skip_lat > 0;
                self.c.client_error(t, &l, stopped);
            }
            (Role::Churn, "err") | (Role::Probe, "err") => {
                *self
                    .c
                    .errors
                    .entry(format!("{}/{}", role.name(), l.get("kind")))
                    .or_default() += 1;
                if !self.c.in_window(t) && self.fault_active != Some(Fault::FdLimit) {
                    self.c.violation(format!(
                        "unexpected_error: {} failed with {} outside any fault window: {}",
                        role.name(),
                        l.get("kind"),
                        l.get("msg")
                    ));
                }
            }
            (Role::Churn, "churn") => self.c.fault_notes.push(format!(
                "churn: {} connections ok, {} errors",
                l.get("ok"),
                l.get("errors")
            )),
            (Role::Hostile, "hostile") => {
                let mode = l.get("mode").to_owned();
                let outcome = l.get("outcome");
                if matches!(outcome, "cut_off" | "refused" | "closed") {
                    self.c
                        .hostile_outcomes
                        .entry(format!("{mode}/{outcome}"))
                        .or_default()
                        .push(l.num("ms"));
                } else {
                    self.c.violation(format!(
                        "hostile_not_cut_off: hostile client ({mode}): {}",
                        l.get("msg")
                    ));
                }
            }
            (Role::Probe, "probe") => {
                let expect = self.procs[key].expect.unwrap_or(Expect::Ok);
                let result = l.get("result");
                let kind = l.get("kind");
                *self
                    .c
                    .errors
                    .entry(format!(
                        "probe/{result}{}{kind}",
                        if kind.is_empty() { "" } else { "/" }
                    ))
                    .or_default() += 1;
                let ok = match expect {
                    Expect::Ok => result == "ok",
                    Expect::ClearError => result == "err" && matches!(kind, "refused" | "timeout"),
                    Expect::ShmRefusal => {
                        result == "err" && kind == "refused" && l.get("msg").contains("ftruncate")
                    }
                };
                if !ok {
                    self.c.violation(format!(
                        "probe: expected {expect:?} during {:?}, got {result} {kind} {}",
                        self.fault_active,
                        l.get("msg")
                    ));
                }
            }
            (Role::OtherUid, "otheruid") => {
                if l.get("outcome") == "skipped" {
                    self.c
                        .fault_notes
                        .push(format!("other uid: not injected: {}", l.get("msg")));
                } else {
                    let (lib, raw) = (l.get("lib"), l.get("raw"));
                    self.c
                        .fault_notes
                        .push(format!("other uid: library {lib}; raw Hello {raw}"));
                    if lib == "connected" || !raw.starts_with("refused:") {
                        self.c.violation(format!(
                            "other_uid_not_refused: uid 65534 got library={lib} raw={raw}"
                        ));
                    }
                }
            }
            _ => {}
        }
    }

    pub(super) fn check_exits(&mut self) {
        let t = self.now();
        for key in 0..self.procs.len() {
            if self.procs[key].exited {
                continue;
            }
            let Ok(Some(status)) = self.procs[key].child.try_wait() else {
                continue;
            };
            let p = &mut self.procs[key];
            p.exited = true;
            if p.ending {
                continue;
            }
            let (role, id) = (p.role, p.id);
            match role {
                Role::Server => self.c.violation(format!(
                    "server_crashed: server generation {id} exited on its own at {t:.1}s ({status})"
                )),
                Role::Client => self.c.violation(format!(
                    "client_exited: client {id} exited on its own at {t:.1}s ({status})"
                )),
                _ if !status.success() => self
                    .c
                    .violation(format!("{}_failed: exited with {status}", role.name())),
                _ => {}
            }
        }
    }

    pub(super) fn sample(&mut self) {
        let Some(key) = self.server_key else { return };
        if self.procs[key].exited || self.restarting_since.is_some() {
            return;
        }
        let pid = self.procs[key].child.id();
        let rss_kb = fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0);
        let fds = fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count()) as u64;
        let maps =
            fs::read_to_string(format!("/proc/{pid}/maps")).map_or(0, |s| s.lines().count()) as u64;
        let t = self.now();
        // Steady: the server serves exactly the honest clients (no hostile, churn or probe
        // connection, no client missing) and holds no fd-limit filler.
        let aux_alive = self
            .procs
            .iter()
            .any(|p| !p.exited && !matches!(p.role, Role::Server | Role::Client));
        let steady = !aux_alive
            && !self.server_fdfill
            && self.server_open == self.live_clients().len() as u64;
        self.c.samples.push(Sample {
            t,
            generation: self.server_gen,
            rss_kb,
            fds,
            maps,
            steady,
        });
        let sec = t as u64;
        if self.fault_active == Some(Fault::Hostile) {
            self.c.hostile_secs.push(sec);
        } else if steady && self.fault_active.is_none() {
            self.c.quiet_secs.push(sec);
        }
    }

    pub(super) fn check_stalls(&mut self) {
        let t = self.now();
        let stall = self.opts.stall.as_secs_f64();
        for key in self.live_clients() {
            let p = &self.procs[key];
            if p.stopped_since.is_none() && t - p.last_line > stall && t - p.spawned > stall {
                let id = p.id;
                self.procs[key].last_line = t; // report once per stall period
                self.c.violation(format!(
                    "client_silent: client {id} printed nothing for {stall:.0}s"
                ));
            }
        }
        if let Some(key) = self.server_key
            && !self.procs[key].exited
            && self.restarting_since.is_none()
        {
            if t - self.procs[key].last_line > stall {
                self.procs[key].last_line = t;
                self.c.violation(format!(
                    "server_hang: the server printed nothing for {stall:.0}s"
                ));
            }
            let any_running = self
                .live_clients()
                .iter()
                .any(|&k| self.procs[k].stopped_since.is_none());
            if any_running && t - self.server_requests.0 > stall {
                self.server_requests.0 = t;
                self.c.violation(format!(
                    "server_stalled: no request served for {stall:.0}s while clients were running"
                ));
            }
        }
    }

    pub(super) fn next_fault(&mut self) -> Option<Fault> {
        let t = self.now();
        let d = self.opts.duration.as_secs_f64();
        loop {
            if self.deck.is_empty() {
                let mut deck = Fault::ALL.to_vec();
                self.rng.shuffle(&mut deck);
                // Server restarts early in the run, so the last server lives long enough for
                // the growth check (and always once in the first round).
                if let Some(i) = deck.iter().position(|&f| f == Fault::KillServer) {
                    let f = deck.remove(i);
                    let at = self.rng.below(3) as usize;
                    deck.insert(deck.len().saturating_sub(1 + at), f);
                }
                // Popped from the end: the kill comes early; a second hostile round comes last.
                deck.insert(0, Fault::Hostile);
                self.deck = deck;
                self.drawn.clear();
            }
            let f = self.deck.pop()?;
            if f == Fault::KillServer && t > d * 0.3 {
                continue;
            }
            if f == Fault::KillServer {
                // The new server has met none of this round's faults: those drawn before the
                // kill come again later in the round, so that it meets every kind early in its
                // life (the growth check's baseline begins after the first of each kind, see
                // `Checker::check_growth`). The round's closing Hostile stays last.
                for g in std::mem::take(&mut self.drawn) {
                    let at = 1 + self.rng.below(self.deck.len() as u64) as usize;
                    self.deck.insert(at.min(self.deck.len()), g);
                }
            } else {
                self.drawn.push(f);
            }
            return Some(f);
        }
    }

    pub(super) fn start_fault(&mut self, f: Fault) {
        let t = self.now();
        self.fault_started = t;
        *self.c.faults.entry(f.name().to_owned()).or_default() += 1;
        self.c
            .fault_log
            .push((f.name().to_owned(), t, f64::INFINITY));
        self.fault_active = Some(f);
        self.fault_steps.clear();
        let server = self.server_key;
        match f {
            Fault::KillClient => {
                let live = self.live_clients();
                if !live.is_empty() {
                    let k = live[self.rng.below(live.len() as u64) as usize];
                    self.procs[k].ending = true;
                    let _ = self.procs[k].child.kill();
                    self.spawn_client();
                }
                self.fault_steps.push((t + 1.0, Step::End));
            }
            Fault::KillServer => {
                if let Some(k) = server {
                    self.procs[k].ending = true;
                    let _ = self.procs[k].child.kill();
                    let _ = self.procs[k].child.wait();
                    self.procs[k].exited = true;
                }
                self.restarting_since = Some(t);
                self.c.windows.push((t, f64::INFINITY));
                let wait = self.rng.ms(0, 500).as_secs_f64();
                self.fault_steps.push((t + wait, Step::SpawnServer));
                self.fault_steps.push((t + wait + 3.0, Step::End));
            }
            Fault::StopClient => {
                let live = self.live_clients();
                if !live.is_empty() {
                    let k = live[self.rng.below(live.len() as u64) as usize];
                    self.signal(k, "-STOP");
                    self.procs[k].stopped_since = Some(t);
                    let d = self.rng.ms(500, 3000).as_secs_f64();
                    self.fault_steps.push((t + d, Step::Cont(k)));
                    self.fault_steps.push((t + d + 1.0, Step::End));
                } else {
                    self.fault_steps.push((t, Step::End));
                }
            }
            Fault::Hostile => {
                for _ in 0..3 {
                    if self.hostile_modes.is_empty() {
                        let mut m = HOSTILE_MODES.to_vec();
                        self.rng.shuffle(&mut m);
                        self.hostile_modes = m;
                    }
                    let mode = self.hostile_modes.pop().expect("refilled");
                    *self.c.faults.entry(format!("hostile:{mode}")).or_default() += 1;
                    let seed = self.rng.next_u64();
                    self.spawn(
                        Role::Hostile,
                        &[format!("mode={mode}"), format!("seed={seed}")],
                    );
                }
                self.fault_steps.push((t + 6.0, Step::End));
            }
            Fault::Churn => {
                let seed = self.rng.next_u64();
                let id = (1u64 << 31) + (self.rng.below(1 << 20) << 8);
                self.spawn(
                    Role::Churn,
                    &["ms=2000".into(), format!("seed={seed}"), format!("id={id}")],
                );
                self.fault_steps.push((t + 3.0, Step::End));
            }
            Fault::FdLimit => {
                self.server_fdfill = true;
                self.fault_steps.push((t, Step::ServerCmd("fdfill")));
                // The rest is scheduled when the server reports the fill done (`fdfill` line,
                // see `handle`): opening ~20 000 descriptors can take more than a second on a
                // loaded machine (the descriptor table grows by doubling, and in a threaded
                // process each growth waits for an RCU grace period), and a probe at a fixed
                // 0.3 s raced it and found descriptors to spare. If no report comes, the fault
                // ends here.
                self.fault_steps.push((t + FDFILL_REPORT_WITHIN, Step::End));
            }
            Fault::OtherUid => {
                self.spawn(Role::OtherUid, &[]);
                self.fault_steps.push((t + 2.0, Step::End));
            }
            Fault::ShmLimit => {
                self.fault_steps.push((t, Step::ServerCmd("fsize on")));
                self.fault_steps
                    .push((t + 0.2, Step::Probe(Expect::ShmRefusal)));
                self.fault_steps
                    .push((t + 2.0, Step::ServerCmd("fsize off")));
                self.fault_steps.push((t + 2.2, Step::Probe(Expect::Ok)));
                self.fault_steps.push((t + 4.0, Step::End));
            }
        }
        // Windows in which connection-level errors of new connections are expected.
        if matches!(f, Fault::FdLimit | Fault::ShmLimit) {
            let end = self.fault_steps.iter().map(|s| s.0).fold(t, f64::max);
            self.c.windows.push((t, end));
        }
    }

    pub(super) fn run_fault_steps(&mut self) {
        let t = self.now();
        while let Some(i) = self.fault_steps.iter().position(|s| s.0 <= t) {
            let (_, step) = self.fault_steps.remove(i);
            match step {
                Step::ServerCmd(cmd) => {
                    if cmd == "fdfree" {
                        self.server_fdfill = false;
                    }
                    if let Some(k) = self.server_key {
                        self.send(k, cmd);
                    }
                }
                Step::Probe(expect) => {
                    if let Some(k) = self.spawn(Role::Probe, &["timeout_ms=2000".into()]) {
                        self.procs[k].expect = Some(expect);
                    }
                }
                Step::Cont(k) => {
                    self.signal(k, "-CONT");
                    self.procs[k].stopped_since = None;
                    self.procs[k].skip_lat = 2;
                    self.procs[k].last_line = t;
                }
                Step::SpawnServer => self.spawn_server(),
                Step::End => {
                    if let Some(last) = self.c.fault_log.last_mut() {
                        last.2 = t;
                    }
                    self.fault_active = None;
                    self.fault_ended = t;
                    self.fault_steps.clear();
                    break;
                }
            }
        }
    }

    pub(super) fn progress(&self) {
        let t = self.now();
        let mut calls = 0;
        let mut files = 0;
        let mut items = 0;
        for l in self.c.totals.values() {
            calls += l.num("calls");
            files += l.num("files");
            items += l.num("items");
        }
        let recent: BTreeMap<u32, u64> = self
            .c
            .lat
            .range((t as u64).saturating_sub(5)..)
            .flat_map(|(_, h)| h.iter().map(|(&b, &n)| (b, n)))
            .fold(BTreeMap::new(), |mut m, (b, n)| {
                *m.entry(b).or_default() += n;
                m
            });
        let s = self.c.samples.last();
        println!(
            "[{:>5.0}s/{:.0}s] calls {calls} files {files} items {items} | p99 {} | rss {:.1} MiB fds {} maps {} | faults {} | {} | violations {}",
            t,
            self.opts.duration.as_secs_f64(),
            percentile(&recent, 0.99).map_or("-".into(), fmt_us),
            s.map_or(0.0, |s| s.rss_kb as f64 / 1024.0),
            s.map_or(0, |s| s.fds),
            s.map_or(0, |s| s.maps),
            self.c
                .faults
                .iter()
                .filter(|(k, _)| !k.contains(':'))
                .map(|(_, n)| n)
                .sum::<u64>(),
            self.fault_active.map_or("quiet", Fault::name),
            self.c.violations.len()
        );
    }

    pub(super) fn drain(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Msg {
                    key,
                    line: Some(line),
                }) => self.handle(key, &line),
                Ok(Msg { line: None, .. }) => {}
                Err(_) => break,
            }
        }
    }

    /// Asks every live process of `roles` to quit and waits up to `within` for them.
    pub(super) fn quit_all(&mut self, roles: &[Role], within: Duration) {
        let keys: Vec<usize> = (0..self.procs.len())
            .filter(|&k| roles.contains(&self.procs[k].role) && !self.procs[k].exited)
            .collect();
        for &k in &keys {
            if self.procs[k].stopped_since.take().is_some() {
                self.signal(k, "-CONT");
            }
            self.procs[k].ending = true;
            self.send(k, "quit");
            self.procs[k].stdin = None;
        }
        let end = Instant::now() + within;
        while Instant::now() < end && keys.iter().any(|&k| !self.procs[k].exited) {
            self.drain(Duration::from_millis(20));
            for &k in &keys {
                if !self.procs[k].exited
                    && let Ok(Some(_)) = self.procs[k].child.try_wait()
                {
                    self.procs[k].exited = true;
                }
            }
        }
        for &k in &keys {
            if !self.procs[k].exited {
                let p = &self.procs[k];
                self.c.violation(format!(
                    "no_clean_exit: {} {} did not exit within {within:?} of `quit`",
                    p.role.name(),
                    p.id
                ));
                let _ = self.procs[k].child.kill();
                let _ = self.procs[k].child.wait();
                self.procs[k].exited = true;
            }
        }
        self.drain(Duration::from_millis(50));
    }
}
