//! `cargo xtask soak`: many client processes against one server, for a while, with faults.
//!
//! ```text
//! cargo xtask soak [--duration 60s|10m|30m] [--clients N] [--chaos] [--seed N]
//! ```
//!
//! Builds `ferry-soak` in release, starts its server and `--clients` honest clients (each a
//! seeded mix of calls, 64 KiB–16 MiB files, streams, cancellations and notifications both ways,
//! see `crates/ferry-soak`), and supervises them. With `--chaos`, after a warm-up, it injects
//! faults one at a time from a seeded schedule (see [`Fault`]). It samples the server's RSS, open
//! descriptors and mappings from `/proc`, checks the invariants (see `Checker::violation` and its callers), prints a
//! summary table, writes `target/soak/report.json` and `target/soak/soak.svg`, and exits
//! non-zero naming every violation and the seed.
//!
//! Children report in lines of `kind key=value ...` on stdout; the orchestrator sends them
//! commands on stdin (`quit`; `fdfill`/`fdfree`/`fsize on|off` for the server).
//!
//! Modules: [`schedule`] (the seeded random numbers and the faults), [`checker`] (the children's
//! report lines and every check on them), [`procs`] (spawning and supervising the children,
//! sampling the server, running the faults), [`report`] (summary table, JSON, plot).

mod checker;
mod procs;
mod report;
mod schedule;

use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use crate::cmd::Cmd;
use crate::workspace::Workspace;
use checker::{Checker, Line};
use procs::{Role, Soak};
use report::{report_json, summary, svg};
use schedule::{Fault, Rng};

pub const HELP: &str = "\
cargo xtask soak [--duration 60s|10m|30m] [--clients N] [--chaos] [--seed N]

  --duration D     how long to run (s, m or h suffix; default 60s)
  --clients N      honest client processes (default 8: each runs 3 busy threads, and this
                   machine class has 2 cores; 64 works but measures the scheduler)
  --chaos          inject faults: kill/restart clients and the server, SIGSTOP a client,
                   hostile clients, connection churn, the fd limit, another uid, failing
                   shared-memory creation
  --seed N         seed of the workload and fault schedule (default: from the clock; printed)
  --stall-secs N   an operation or process silent this long is a hang (default 20)
";

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub duration: Duration,
    pub clients: usize,
    pub chaos: bool,
    pub seed: u64,
    pub stall: Duration,
    /// Hidden: a deliberate server bug (`corrupt`, `dup`, `drop`, `droppush`, `leak`) to prove the
    /// checkers catch it.
    pub inject: Option<String>,
}

pub fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        duration: Duration::from_secs(60),
        clients: 8,
        chaos: false,
        seed: random_seed(),
        stall: Duration::from_secs(20),
        inject: None,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (arg.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("`{flag}` needs a value"))
        };
        match flag {
            "--duration" => o.duration = parse_duration(&value()?)?,
            "--clients" => {
                let v = value()?;
                o.clients = v
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("`--clients` wants a number > 0, got `{v}`"))?;
            }
            "--chaos" => o.chaos = true,
            "--seed" => {
                let v = value()?;
                o.seed = v
                    .parse()
                    .map_err(|_| format!("`--seed` wants a whole number, got `{v}`"))?;
            }
            "--stall-secs" => {
                let v = value()?;
                o.stall = Duration::from_secs(
                    v.parse()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| format!("`--stall-secs` wants a number > 0, got `{v}`"))?,
                );
            }
            "--inject-bug" => o.inject = Some(value()?),
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown option `{other}` for `soak`")),
        }
    }
    Ok(o)
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("`--duration` wants e.g. 60s, 10m or 1h, got `{s}`");
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(bad()),
    };
    if secs == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(secs))
}

/// A fresh seed from the clock (the default of `--seed`; CI's random soak).
pub fn random_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64 % 1_000_000_007)
        .unwrap_or(1)
}

pub fn run(args: &[String]) -> ExitCode {
    let opts = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("xtask soak: {e}\n");
            }
            eprint!("{HELP}");
            return ExitCode::from(2);
        }
    };
    if !cfg!(target_os = "linux") {
        eprintln!("xtask soak: Linux only (the soak's processes read /proc and signal each other)");
        return ExitCode::from(2);
    }
    let ws = match Workspace::discover() {
        Ok(ws) => ws,
        Err(e) => {
            eprintln!("xtask soak: {e}");
            return ExitCode::from(2);
        }
    };
    println!("xtask soak: building ferry-soak (release)");
    if let Err(f) = Cmd::cargo()
        .args(["build", "--release", "--quiet", "-p", "ferry-soak"])
        .run()
    {
        eprintln!("xtask soak: the build failed: {}", f.what);
        return ExitCode::FAILURE;
    }
    let bin = ws.target_dir.join("release/ferry-soak");
    let out_dir = ws.root.join("target/soak");
    let _ = fs::create_dir_all(&out_dir);
    let runtime = std::env::temp_dir().join(format!("ferry-soak-{}", std::process::id()));
    let _ = fs::remove_dir_all(&runtime);
    {
        use std::os::unix::fs::DirBuilderExt;
        if let Err(e) = fs::DirBuilder::new().mode(0o700).create(&runtime) {
            eprintln!("xtask soak: cannot create {}: {e}", runtime.display());
            return ExitCode::FAILURE;
        }
    }
    let code = soak(opts, bin, runtime.clone(), out_dir);
    let _ = fs::remove_dir_all(&runtime);
    code
}

fn list_dev_shm() -> Vec<String> {
    fs::read_dir("/dev/shm").map_or(Vec::new(), |d| {
        d.flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    })
}

fn soak(opts: Options, bin: PathBuf, runtime: PathBuf, out_dir: PathBuf) -> ExitCode {
    let (tx, rx) = channel();
    let stderr_log = out_dir.join("children.stderr");
    let _ = fs::remove_file(&stderr_log);
    let shm_before = list_dev_shm();
    println!(
        "xtask soak: {} clients for {:?}{}, seed {} (reproduce: cargo xtask soak --duration {}s --clients {}{} --seed {})",
        opts.clients,
        opts.duration,
        if opts.chaos { " with chaos" } else { "" },
        opts.seed,
        opts.duration.as_secs(),
        opts.clients,
        if opts.chaos { " --chaos" } else { "" },
        opts.seed
    );
    let mut s = Soak {
        rng: Rng::new(opts.seed),
        opts,
        bin,
        runtime,
        out_dir,
        stderr_log,
        start: Instant::now(),
        procs: Vec::new(),
        tx,
        rx,
        c: Checker::default(),
        server_key: None,
        server_gen: 0,
        next_client_id: 0,
        restarting_since: None,
        fault_active: None,
        fault_steps: Vec::new(),
        fault_ended: 0.0,
        fault_started: 0.0,
        deck: Vec::new(),
        drawn: Vec::new(),
        hostile_modes: Vec::new(),
        server_fdfill: false,
        last_server_prog: None,
        server_open: 0,
        server_requests: (0.0, 0),
    };
    s.spawn_server();
    // Wait for the server before the clients (they would retry, but the first window would
    // count as a fault).
    let ready_by = Instant::now() + Duration::from_secs(10);
    while Instant::now() < ready_by && s.last_server_prog.is_none() {
        s.drain(Duration::from_millis(50));
        s.check_exits();
        if s.server_key.is_none_or(|k| s.procs[k].exited) {
            break;
        }
    }
    for _ in 0..s.opts.clients {
        s.spawn_client();
    }
    let duration = s.opts.duration.as_secs_f64();
    let warmup = (duration * 0.15).clamp(5.0, 60.0);
    let progress_every = if duration > 300.0 { 10.0 } else { 2.0 };
    let (mut next_sample, mut next_progress, mut next_fault) = (1.0, progress_every, warmup);
    while s.now() < duration {
        s.drain(Duration::from_millis(20));
        s.check_exits();
        let t = s.now();
        if t >= next_sample {
            next_sample += 1.0;
            s.sample();
            s.check_stalls();
        }
        if t >= next_progress {
            next_progress += progress_every;
            s.progress();
        }
        s.run_fault_steps();
        // Faults stop a few seconds before the end so the last samples are steady.
        if s.opts.chaos && s.fault_active.is_none() && t >= next_fault && t < duration - 8.0 {
            if let Some(f) = s.next_fault() {
                s.start_fault(f);
            }
            next_fault = t + s.rng.ms(500, 3000).as_secs_f64();
        }
        if s.fault_active.is_none() && s.fault_steps.is_empty() {
            next_fault = next_fault.max(s.fault_ended);
        }
    }
    // Let a fault in progress finish (a stopped client continues, limits are lifted).
    while s.fault_active.is_some() {
        s.drain(Duration::from_millis(20));
        s.check_exits();
        s.run_fault_steps();
    }
    println!("xtask soak: stopping clients");
    s.quit_all(
        &[
            Role::Client,
            Role::Hostile,
            Role::Churn,
            Role::Probe,
            Role::OtherUid,
        ],
        Duration::from_secs(15),
    );
    println!("xtask soak: stopping the server");
    s.quit_all(&[Role::Server], Duration::from_secs(15));
    finish(s, shm_before)
}

fn finish(mut s: Soak, shm_before: Vec<String>) -> ExitCode {
    let seed = s.opts.seed;
    // Nothing left behind.
    let left: Vec<String> = fs::read_dir(&s.runtime).map_or(Vec::new(), |d| {
        d.flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    });
    if !left.is_empty() {
        s.c.violation(format!(
            "left_behind: {} still holds {left:?} after the server exited",
            s.runtime.display()
        ));
    }
    let new_shm: Vec<String> = list_dev_shm()
        .into_iter()
        .filter(|n| !shm_before.contains(n))
        .collect();
    if !new_shm.is_empty() {
        s.c.violation(format!("left_behind: new files in /dev/shm: {new_shm:?}"));
    }
    if s.c.server_finals.is_empty() {
        s.c.violation("server_no_final: the last server did not report a clean shutdown".into());
    }
    // Panics anywhere in the children.
    if let Ok(text) = fs::read_to_string(&s.stderr_log) {
        for l in text.lines().filter(|l| l.contains("panicked")).take(5) {
            s.c.violation(format!("panic: {l}"));
        }
    }
    // Notifications: a client that lived and ended within one server generation, with one
    // connection and no error, must have had every notification it sent arrive.
    let finals: Vec<(u64, Line, u64)> = s
        .procs
        .iter()
        .filter(|p| p.role == Role::Client)
        .filter_map(|p| {
            p.final_line
                .clone()
                .map(|l| (p.id, l, p.server_gen_at_spawn))
        })
        .collect();
    for (id, l, generation) in finals {
        if generation != s.server_gen || l.num("connects") != 1 || l.num("errors") != 0 {
            continue;
        }
        match s.c.server_disc.get(&id) {
            Some(&(notes, _)) if notes == l.num("notes") => {}
            Some(&(notes, last)) => s.c.violation(format!(
                "notes_lost: client {id} sent {} notifications, the server saw {notes} (last seq {last})",
                l.num("notes")
            )),
            None if l.num("notes") > 0 => s.c.violation(format!(
                "notes_lost: client {id} sent {} notifications, the server never reported its disconnect",
                l.num("notes")
            )),
            None => {}
        }
    }
    let min_span = (s.opts.duration.as_secs_f64() * 0.3).max(20.0);
    s.c.check_growth(min_span);
    s.c.check_hostile_latency();
    if s.opts.chaos {
        for f in Fault::ALL {
            if f != Fault::KillServer && !s.c.faults.contains_key(f.name()) {
                s.c.fault_notes
                    .push(format!("{}: not reached in this run's time", f.name()));
            }
        }
    }
    let table = summary(&s);
    println!("\n{table}");
    let json = report_json(&s);
    let _ = fs::write(s.out_dir.join("report.json"), json);
    let _ = fs::write(s.out_dir.join("soak.svg"), svg(&s));
    println!(
        "report: {}, plot: {}",
        s.out_dir.join("report.json").display(),
        s.out_dir.join("soak.svg").display()
    );
    if s.c.violations.is_empty() {
        println!("xtask soak: passed (seed {seed})");
        ExitCode::SUCCESS
    } else {
        println!(
            "xtask soak: FAILED with {} violation(s) (seed {seed}):",
            s.c.violations.len()
        );
        for v in &s.c.violations {
            println!("  - {v}");
        }
        println!(
            "reproduce: cargo xtask soak --duration {}s --clients {}{} --seed {seed}{}",
            s.opts.duration.as_secs(),
            s.opts.clients,
            if s.opts.chaos { " --chaos" } else { "" },
            s.opts
                .inject
                .as_ref()
                .map_or(String::new(), |b| format!(" --inject-bug {b}"))
        );
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn flags_parse() {
        let o = parse(&args("--duration 10m --clients 64 --chaos --seed 42")).unwrap();
        assert_eq!(o.duration, Duration::from_secs(600));
        assert_eq!((o.clients, o.chaos, o.seed), (64, true, 42));
        assert_eq!(
            parse(&args("--duration=30m")).unwrap().duration.as_secs(),
            1800
        );
        assert_eq!(parse_duration("45").unwrap().as_secs(), 45);
        assert!(parse(&args("--duration 10x")).is_err());
        assert!(parse(&args("--clients 0")).is_err());
        assert!(parse(&args("--frobnicate")).is_err());
        assert!(parse(&args("--seed")).is_err());
    }

    /// End to end: a soak server that keeps 1 KiB per request (`--inject-bug leak`) fails the
    /// run with an RSS growth violation. Ignored by default (a release build and a 40 s run):
    /// `cargo test -p xtask -- --ignored an_injected_leak_fails_the_soak`.
    #[test]
    #[ignore = "runs a 40 s soak"]
    fn an_injected_leak_fails_the_soak() {
        let args: Vec<String> = ["--duration", "40s", "--seed", "2", "--inject-bug", "leak"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        assert_eq!(run(&args), ExitCode::FAILURE, "the leaking server passed");
        let ws = Workspace::discover().unwrap();
        let report = fs::read_to_string(ws.root.join("target/soak/report.json")).unwrap();
        assert!(
            report.contains("rss grew"),
            "no RSS growth violation in the report: {report}"
        );
    }
}
