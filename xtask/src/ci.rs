//! `cargo xtask ci`: the gate every change must pass, locally and in CI (`bash .ci/run`).
//!
//! Steps, in order (each can be skipped with `--skip <step>` or picked with `--only <step>`):
//!
//! | step     | what it runs |
//! | -------- | ------------ |
//! | `fmt`    | `cargo fmt --all --check` (also in each cargo-fuzz dir) |
//! | `clippy` | `cargo clippy --workspace --all-targets --all-features -- -D warnings`, for the host and [`CROSS_TARGETS`] |
//! | `test`   | `cargo llvm-cov --workspace --all-features --lcov` (the workspace test run, with coverage floors), then the doc tests; `--no-coverage`: plain `cargo test --workspace --all-features` |
//! | `doc`    | `RUSTDOCFLAGS='-D warnings' cargo doc --workspace --no-deps --all-features` |
//! | `conformance` | `conformance/python/client.py` (a second implementation, written from `docs/protocol.md`) against the `conformance_server` example (Linux hosts) |
//! | `loom`   | `RUSTFLAGS='--cfg loom' cargo test --release --test loom` for each crate with `tests/loom.rs` |
//! | `miri`   | `cargo +nightly miri test` for [`MIRI_CRATES`] |
//! | `fuzz`   | `cargo +nightly fuzz build`, then `fuzz run` each target for `--fuzz-seconds`, in every `crates/*/fuzz` |
//! | `wine`   | the [`crate::wine::WINE_CRATES`] tests for `x86_64-pc-windows-gnu` under Wine (Linux hosts) |
//! | `soak`   | `cargo xtask soak --duration 60s --chaos --seed `[`SOAK_SEED`], then the same with a fresh random seed (printed with its reproduce line): the soak server, 8 clients and the fault schedule for a minute each, every invariant checked (Linux hosts) |
//! | `bench`  | `cargo xtask bench-gate --quick`: real processes, the report written, the gates that do not depend on timing enforced (Linux hosts) |
//!
//! The run ends with a table of steps and, when the tests ran, a last line `N passed, M failed`
//! for the host test run (CI reads it).

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::Instant;

use crate::cmd::{Cmd, Failure};
use crate::coverage::{self, FLOORS_FILE, RAISING_FLOORS};
use crate::tests_output::TestCounts;
use crate::wine;
use crate::workspace::{Workspace, host_triple};

/// Targets clippy also checks, besides the host (a host that is one of them checks it once).
pub const CROSS_TARGETS: &[&str] = &[
    "x86_64-pc-windows-gnu",
    "x86_64-apple-darwin",
    "aarch64-apple-darwin",
];

/// Stand-in C compiler for clippy on Apple targets from a non-Apple host (see the script).
const CHECK_CC: &str = ".ci/check-cc";

/// Crates whose tests also run under Miri. Names not (yet) in the workspace are skipped.
pub const MIRI_CRATES: &[&str] = &["ferry-ring"];

/// Strict provenance keeps the ring's pointer arithmetic on provenance-preserving APIs.
/// Isolation is off because proptest reads the working directory (for its failure-persistence
/// file) and aborts under an isolated Miri; the tests use no other host state.
/// Weak-memory emulation is off because Miri (nightly 2026-05-19) panics inside it
/// (`concurrency/weak_memory.rs`, an internal compiler error, not a UB report) on
/// `tests/stress.rs` since ring layout v3: a record word is an atomic in one lap and plain
/// payload bytes in another. Miri still checks data races, provenance and UB on every test;
/// the only multi-threaded test is `stress.rs`, and weak orderings of the ring protocol are
/// what the loom models explore.
pub const MIRIFLAGS: &str =
    "-Zmiri-strict-provenance -Zmiri-disable-isolation -Zmiri-disable-weak-memory-emulation";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Fmt,
    Clippy,
    Test,
    Doc,
    Conformance,
    Loom,
    Miri,
    Fuzz,
    Wine,
    Soak,
    Bench,
}

impl Step {
    pub const ALL: [Step; 11] = [
        Step::Fmt,
        Step::Clippy,
        Step::Test,
        Step::Doc,
        Step::Conformance,
        Step::Loom,
        Step::Miri,
        Step::Fuzz,
        Step::Wine,
        Step::Soak,
        Step::Bench,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::Fmt => "fmt",
            Step::Clippy => "clippy",
            Step::Test => "test",
            Step::Doc => "doc",
            Step::Conformance => "conformance",
            Step::Loom => "loom",
            Step::Miri => "miri",
            Step::Fuzz => "fuzz",
            Step::Wine => "wine",
            Step::Soak => "soak",
            Step::Bench => "bench",
        }
    }

    pub fn parse(name: &str) -> Result<Step, String> {
        Step::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Step::ALL.iter().map(|s| s.name()).collect();
                format!("unknown step `{name}`; the steps are: {}", names.join(", "))
            })
    }
}

#[derive(Debug, PartialEq)]
pub struct Options {
    pub coverage: bool,
    pub skip: Vec<Step>,
    pub only: Vec<Step>,
    pub fuzz_seconds: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            coverage: true,
            skip: Vec::new(),
            only: Vec::new(),
            fuzz_seconds: 20,
        }
    }
}

impl Options {
    pub fn selected(&self, step: Step) -> bool {
        (self.only.is_empty() || self.only.contains(&step)) && !self.skip.contains(&step)
    }
}

/// What a step reports when it did not fail.
pub enum Outcome {
    /// It ran; a short note for the summary table.
    Done(String),
    /// There was nothing for it to do here (and why).
    Skipped(String),
}

/// What the steps share.
pub struct Ctx<'a> {
    pub ws: Workspace,
    pub options: &'a Options,
    pub host: String,
    pub host_tests: Option<TestCounts>,
    pub wine_tests: Option<TestCounts>,
}

struct Row {
    step: Step,
    status: &'static str,
    seconds: f64,
    note: String,
}

pub fn run(options: &Options) -> ExitCode {
    let ws = match Workspace::discover() {
        Ok(ws) => ws,
        Err(e) => {
            eprintln!("xtask ci: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = std::env::set_current_dir(&ws.root) {
        eprintln!(
            "xtask ci: cannot enter the workspace root {}: {e}",
            ws.root.display()
        );
        return ExitCode::from(2);
    }
    let Some(host) = host_triple() else {
        eprintln!("xtask ci: `rustc -vV` did not say the host triple; is rustc installed?");
        return ExitCode::from(2);
    };
    let mut ctx = Ctx {
        ws,
        options,
        host,
        host_tests: None,
        wine_tests: None,
    };
    let steps: Vec<Step> = Step::ALL
        .into_iter()
        .filter(|&s| options.selected(s))
        .collect();
    let crates: Vec<&str> = ctx.ws.crates.iter().map(|c| c.name.as_str()).collect();
    println!(
        "xtask ci on {}: steps {}; crates {}",
        ctx.host,
        steps
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(", "),
        crates.join(", ")
    );

    let start = Instant::now();
    let mut rows = Vec::new();
    let mut failure = None;
    for (i, &step) in steps.iter().enumerate() {
        println!(
            "\n==> [{}/{}] {} (at +{:.0}s)",
            i + 1,
            steps.len(),
            step.name(),
            start.elapsed().as_secs_f64()
        );
        let _ = std::io::stdout().flush();
        let t0 = Instant::now();
        let result = match step {
            Step::Fmt => fmt(&ctx),
            Step::Clippy => clippy(&ctx),
            Step::Test => test(&mut ctx),
            Step::Doc => doc(),
            Step::Conformance => conformance(&ctx),
            Step::Loom => loom(&ctx),
            Step::Miri => miri(&ctx),
            Step::Fuzz => fuzz(&ctx),
            Step::Wine => wine::run(&mut ctx),
            Step::Soak => soak(),
            Step::Bench => bench(),
        };
        let seconds = t0.elapsed().as_secs_f64();
        let (status, note) = match result {
            Ok(Outcome::Done(note)) => ("ok", note),
            Ok(Outcome::Skipped(why)) => ("skipped", why),
            Err(f) => {
                failure = Some((step, f));
                ("FAILED", String::new())
            }
        };
        println!("<== {} {status} in {seconds:.1}s", step.name());
        rows.push(Row {
            step,
            status,
            seconds,
            note,
        });
        if failure.is_some() {
            break;
        }
    }

    println!(
        "\n{}",
        summary(&rows, &steps, start.elapsed().as_secs_f64())
    );
    if let Some(wine) = ctx.wine_tests {
        println!("wine tests: {wine}");
    }
    if let Some((step, f)) = &failure {
        let mut message = format!("xtask ci: step `{}` failed: {}", step.name(), f.what);
        if let Some(reproduce) = &f.reproduce {
            let _ = write!(message, "\n  reproduce with: {reproduce}");
        }
        if let Some(hint) = &f.hint {
            let _ = write!(message, "\n  hint: {hint}");
        }
        let _ = write!(
            message,
            "\n  rerun just this step: cargo xtask ci --only {}",
            step.name()
        );
        println!("{message}");
    }
    // The last line: the host test run's totals, in the form CI reads.
    if let Some(tests) = ctx.host_tests {
        println!("{} passed, {} failed", tests.passed, tests.failed);
    }
    if failure.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn summary(rows: &[Row], steps: &[Step], total: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:<8} {:<8} {:>8}  note", "step", "status", "seconds");
    for &step in steps {
        match rows.iter().find(|r| r.step == step) {
            Some(r) => {
                let _ = writeln!(
                    out,
                    "{:<8} {:<8} {:>8.1}  {}",
                    step.name(),
                    r.status,
                    r.seconds,
                    r.note
                );
            }
            None => {
                let _ = writeln!(out, "{:<8} {:<8} {:>8}", step.name(), "not run", "-");
            }
        }
    }
    let _ = write!(out, "{:<8} {:<8} {total:>8.1}", "total", "");
    out
}

fn fmt(ctx: &Ctx) -> Result<Outcome, Failure> {
    let hint = "run `cargo fmt --all` and commit the result";
    Cmd::cargo()
        .args(["fmt", "--all", "--check"])
        .run()
        .map_err(|f| f.hint(hint))?;
    let mut checked = vec!["workspace".to_owned()];
    for fuzz in ctx.ws.crates.iter().filter_map(|c| c.fuzz.as_ref()) {
        let manifest = format!("{}/Cargo.toml", fuzz.dir);
        Cmd::cargo()
            .args(["fmt", "--all", "--check", "--manifest-path", &manifest])
            .run()
            .map_err(|f| f.hint(format!("run `cargo fmt --all --manifest-path {manifest}`")))?;
        checked.push(fuzz.dir.clone());
    }
    Ok(Outcome::Done(checked.join(", ")))
}

fn clippy(ctx: &Ctx) -> Result<Outcome, Failure> {
    let base = ["clippy", "--workspace", "--all-targets", "--all-features"];
    Cmd::cargo()
        .args(base)
        .args(["--", "-D", "warnings"])
        .run()?;
    let mut checked = vec![ctx.host.clone()];
    let mut skipped = Vec::new();
    for &target in CROSS_TARGETS.iter().filter(|&&t| t != ctx.host) {
        let apple = target.contains("-apple-");
        let mut cmd = Cmd::cargo();
        if apple && !ctx.host.contains("-apple-") {
            if !cfg!(unix) {
                // The stand-in below is a shell script; Linux and macOS lint these targets.
                skipped.push(target);
                continue;
            }
            // Build scripts compile C for the target (criterion's `alloca`); clippy links
            // nothing, so a host compiler stands in for the Apple toolchain we do not have.
            // Absolute: build scripts run in their own directories.
            let stand_in = ctx.ws.root.join(CHECK_CC).to_string_lossy().into_owned();
            cmd = cmd.env(&format!("CC_{}", target.replace('-', "_")), stand_in);
        }
        cmd.args(base)
            .args(["--target", target, "--", "-D", "warnings"])
            .run()
            .map_err(|f| {
                let compiler = if apple {
                    CHECK_CC
                } else {
                    "x86_64-w64-mingw32-gcc (gcc-mingw-w64-x86-64)"
                };
                f.hint(format!(
                "if it cannot find crate `core`/`std`: `rustup target add {target}`; if a build \
                 script cannot compile C for it: {compiler} must work (.ci/run installs both)"
            ))
            })?;
        checked.push(target.to_owned());
    }
    let mut note = checked.join(", ");
    if !skipped.is_empty() {
        let _ = write!(note, "; not on this host: {}", skipped.join(", "));
    }
    Ok(Outcome::Done(note))
}

fn test(ctx: &mut Ctx) -> Result<Outcome, Failure> {
    if !ctx.options.coverage {
        let (output, outcome) = Cmd::cargo()
            .args(["test", "--workspace", "--all-features"])
            .run_tee();
        let mut counts = TestCounts::parse(&output);
        ctx.host_tests = Some(counts);
        outcome?;
        tests_ran(counts)?;
        let root = root_only_tests(&mut counts)?;
        ctx.host_tests = Some(counts);
        return Ok(Outcome::Done(format!("{counts}; {root}; no coverage")));
    }

    if !Cmd::cargo().args(["llvm-cov", "--version"]).probe() {
        return Err(Failure::new("`cargo llvm-cov` is not installed").hint(
            "`cargo install cargo-llvm-cov --locked` and `rustup component add llvm-tools-preview` \
             (.ci/run does both), or pass `--no-coverage` for a plain `cargo test --workspace`",
        ));
    }
    let lcov = ctx.ws.target_dir.join("llvm-cov/lcov.info");
    if let Some(dir) = lcov.parent() {
        let _ = fs::create_dir_all(dir);
    }
    let _ = fs::remove_file(&lcov);
    // `cargo llvm-cov` runs `cargo test --tests`, which builds no examples (and it cleans the
    // workspace's artifacts out of its own target directory): the tests that run an example
    // (ferry-transport's `tests/example_shutdown.rs`) find them through FERRY_EXAMPLES_DIR.
    // They are plain debug builds in the workspace's target directory (the conformance step
    // builds one of them there too).
    Cmd::cargo()
        .args([
            "build",
            "--package",
            "ferry-transport",
            "--examples",
            "--all-features",
        ])
        .run()?;
    let examples_dir = ctx.ws.target_dir.join("debug/examples");
    let (output, outcome) = Cmd::cargo()
        .env("FERRY_EXAMPLES_DIR", examples_dir.to_string_lossy())
        .args([
            "llvm-cov",
            "--workspace",
            "--all-features",
            "--lcov",
            "--output-path",
            &ctx.ws.show(&lcov),
        ])
        .run_tee();
    let mut counts = TestCounts::parse(&output);
    ctx.host_tests = Some(counts);
    outcome?;
    // llvm-cov leaves doc tests out (collecting their coverage needs nightly): run them here.
    let (output, outcome) = Cmd::cargo()
        .args(["test", "--workspace", "--doc", "--all-features"])
        .run_tee();
    counts += TestCounts::parse(&output);
    ctx.host_tests = Some(counts);
    outcome?;
    tests_ran(counts)?;
    let root = root_only_tests(&mut counts)?;
    ctx.host_tests = Some(counts);
    println!("\n  tests: {counts}; {root}");

    let text = fs::read_to_string(&lcov).map_err(|e| {
        Failure::new(format!(
            "cargo llvm-cov wrote no report at {}: {e}",
            lcov.display()
        ))
    })?;
    let groups = coverage::group(&coverage::parse_lcov(&text), &ctx.ws);
    let floors = match fs::read_to_string(ctx.ws.root.join(FLOORS_FILE)) {
        Ok(text) => coverage::parse_floors(&text).map_err(Failure::new)?,
        Err(e) => {
            println!("  warning: cannot read {FLOORS_FILE} ({e}); no floors enforced");
            Default::default()
        }
    };
    let report = coverage::check(&groups, &floors);
    println!("\n{}", report.table);
    for warning in &report.warnings {
        println!("  warning: {warning}");
    }
    println!("\n{RAISING_FLOORS}");
    if !report.below_floor.is_empty() {
        return Err(Failure::new(format!(
            "line coverage fell below a floor:\n    {}",
            report.below_floor.join("\n    ")
        ))
        .hint("add tests for the new uncovered lines (`cargo llvm-cov --open -p <crate>` shows them); never lower a floor"));
    }
    Ok(Outcome::Done(format!("{counts}; coverage floors met")))
}

/// Tests that need root (they switch to another uid) are `#[ignore]`d, so that a developer's run
/// shows them as ignored rather than passing; run them here when we are root (CI is). Adds what
/// ran to `counts`; returns a note for the summary.
fn root_only_tests(counts: &mut TestCounts) -> Result<String, Failure> {
    const TEST: &str = "another_uid_is_refused_and_the_owner_is_still_served";
    if !cfg!(target_os = "linux") {
        return Ok("root-only tests: Linux only".to_owned());
    }
    let uid = fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1).map(str::to_owned))
    });
    if uid.as_deref() != Some("0") {
        return Ok("root-only tests: ignored (not root)".to_owned());
    }
    let (output, outcome) = Cmd::cargo()
        .args([
            "test",
            "-p",
            "ferry-transport",
            "--all-features",
            "--test",
            "other_uid",
            "--",
            "--ignored",
            "--exact",
            TEST,
        ])
        .run_tee();
    let ran = TestCounts::parse(&output);
    outcome?;
    if ran.passed != 1 {
        return Err(Failure::new(format!(
            "the root-only test {TEST} did not run ({ran})"
        )));
    }
    *counts += ran;
    Ok("root-only tests: 1 passed as root".to_owned())
}

/// A test step that ran no test is a broken gate, not a pass.
fn tests_ran(counts: TestCounts) -> Result<(), Failure> {
    if counts.suites == 0 {
        return Err(Failure::new(
            "the test run printed no `test result:` line: no test ran",
        ));
    }
    Ok(())
}

fn doc() -> Result<Outcome, Failure> {
    Cmd::cargo()
        .env("RUSTDOCFLAGS", "-D warnings")
        .args(["doc", "--workspace", "--no-deps", "--all-features"])
        .run()?;
    // The libraries' Windows docs too (their cfg'd items and links differ there).
    Cmd::cargo()
        .env("RUSTDOCFLAGS", "-D warnings")
        .args(["doc", "--no-deps", "--all-features"])
        .args(["--target", crate::wine::WINDOWS_TARGET])
        .args(["-p", "ferry-ring", "-p", "ferry-frame"])
        .args(["-p", "ferry-notify", "-p", "ferry-transport"])
        .run()?;
    Ok(Outcome::Done(format!(
        "linux; {} (libraries)",
        crate::wine::WINDOWS_TARGET
    )))
}

/// The Python client of `conformance/python/` against the real server.
#[cfg(target_os = "linux")]
fn conformance(ctx: &Ctx) -> Result<Outcome, Failure> {
    crate::conformance::run(&ctx.ws).map(Outcome::Done)
}

#[cfg(not(target_os = "linux"))]
fn conformance(_ctx: &Ctx) -> Result<Outcome, Failure> {
    Ok(Outcome::Skipped(
        "the Python conformance client speaks the Linux transport only".into(),
    ))
}

/// The gate's fixed soak seed: a failure reproduces with the command the failure names (a soak
/// is still not fully deterministic: it races real processes). Each run also soaks a fresh
/// random seed (see [`soak`]), so that the gate does not keep proving the same schedule.
#[cfg(target_os = "linux")]
pub const SOAK_SEED: u64 = 1;

/// Two one-minute chaos soaks (`cargo xtask soak`): seed [`SOAK_SEED`], then a fresh random seed
/// (printed with the command that reproduces it before it starts). Each run's report is kept
/// in `target/soak/seed-<N>/`. Fails on any violation of either, naming the seeds that failed.
#[cfg(target_os = "linux")]
fn soak() -> Result<Outcome, Failure> {
    let ws = Workspace::discover().map_err(Failure::new)?;
    let random = loop {
        let s = crate::soak::random_seed();
        if s != SOAK_SEED {
            break s;
        }
    };
    let mut failed = Vec::new();
    for (what, seed) in [("fixed", SOAK_SEED), ("random", random)] {
        let args: Vec<String> = ["--duration", "60s", "--chaos", "--seed"]
            .iter()
            .map(|s| (*s).to_owned())
            .chain([seed.to_string()])
            .collect();
        let reproduce = format!("cargo xtask soak {}", args.join(" "));
        println!("xtask ci: soak with the {what} seed {seed} (reproduce: {reproduce})");
        let passed = crate::soak::run(&args) == ExitCode::SUCCESS;
        let kept = ws.root.join(format!("target/soak/seed-{seed}"));
        let _ = fs::create_dir_all(&kept);
        for f in ["report.json", "soak.svg"] {
            let _ = fs::copy(ws.root.join("target/soak").join(f), kept.join(f));
        }
        if !passed {
            failed.push((seed, reproduce));
        }
    }
    if failed.is_empty() {
        return Ok(Outcome::Done(format!(
            "60 s chaos soaks, seeds {SOAK_SEED} and {random} (random): no violation"
        )));
    }
    let seeds: Vec<String> = failed.iter().map(|(s, _)| s.to_string()).collect();
    let mut f = Failure::new(format!(
        "the 60 s chaos soak failed with seed(s) {} (of {SOAK_SEED} and the random {random}): see the violations it printed above",
        seeds.join(", ")
    ))
    .hint("read target/soak/seed-<N>/report.json (violations, faults, server samples) and soak.svg");
    f.reproduce = Some(
        failed
            .iter()
            .map(|(_, r)| r.as_str())
            .collect::<Vec<_>>()
            .join("; "),
    );
    Err(f)
}

#[cfg(not(target_os = "linux"))]
fn soak() -> Result<Outcome, Failure> {
    Ok(Outcome::Skipped("the soak runs on Linux only".into()))
}

/// The short bench-gate run: real processes and the report, with the gates that do not depend
/// on timing enforced (a shared 2-core CI machine cannot hold timing gates honestly).
#[cfg(target_os = "linux")]
fn bench() -> Result<Outcome, Failure> {
    let options = crate::bench_gate::parse(&["--quick".to_owned()]).map_err(Failure::new)?;
    match crate::bench_gate::gate(&options) {
        Ok(missed) if missed.is_empty() => Ok(Outcome::Done(
            "quick run: report written, allocation/connection/memory gates pass".into(),
        )),
        Ok(missed) => Err(Failure::new(format!(
            "bench-gate --quick missed: {}",
            missed.join("; ")
        ))
        .hint("run `cargo xtask bench-gate --quick` and read target/bench-gate/report.md")),
        Err(e) => Err(Failure::new(format!(
            "bench-gate --quick did not complete: {e}"
        ))),
    }
}

#[cfg(not(target_os = "linux"))]
fn bench() -> Result<Outcome, Failure> {
    Ok(Outcome::Skipped("bench-gate runs on Linux only".into()))
}

fn loom(ctx: &Ctx) -> Result<Outcome, Failure> {
    let crates: Vec<&str> = ctx
        .ws
        .crates
        .iter()
        .filter(|c| c.has_loom_tests)
        .map(|c| c.name.as_str())
        .collect();
    if crates.is_empty() {
        return Ok(Outcome::Skipped("no crates/*/tests/loom.rs".into()));
    }
    let target_dir = ctx.ws.show(&ctx.ws.target_dir.join("loom"));
    let mut total = TestCounts::default();
    for krate in &crates {
        let (output, outcome) = Cmd::cargo()
            .env("RUSTFLAGS", "--cfg loom")
            // 4: every model passes in about 15 s (3 took 2 s, and missed nothing loom can
            // see, but 4 is where loom's false positive with a swap on the sleep word showed).
            .env("LOOM_MAX_PREEMPTIONS", "4")
            .args([
                "test",
                "-p",
                krate,
                "--release",
                "--test",
                "loom",
                "--target-dir",
                &target_dir,
            ])
            .run_tee();
        outcome?;
        let counts = TestCounts::parse(&output);
        if counts.passed == 0 {
            return Err(Failure::new(format!(
                "{krate}'s tests/loom.rs ran no test under --cfg loom (are they all #[ignore]d or cfg'd out?)"
            )));
        }
        total += counts;
    }
    Ok(Outcome::Done(format!(
        "{}: {} passed",
        crates.join(" "),
        total.passed
    )))
}

fn miri(ctx: &Ctx) -> Result<Outcome, Failure> {
    let crates = ctx.ws.present(MIRI_CRATES);
    if crates.is_empty() {
        return Ok(Outcome::Skipped(format!(
            "none of {MIRI_CRATES:?} is in the workspace"
        )));
    }
    if !Cmd::nightly_cargo().args(["miri", "--version"]).probe() {
        return Err(Failure::new("`cargo +nightly miri` is not installed").hint(
            "`rustup toolchain install nightly --profile minimal && rustup component add --toolchain \
             nightly miri rust-src` (.ci/run does)",
        ));
    }
    let mut cmd = Cmd::nightly_cargo()
        .env("MIRIFLAGS", MIRIFLAGS)
        .args(["miri", "test"]);
    for krate in &crates {
        cmd = cmd.args(["-p", krate]);
    }
    let (output, outcome) = cmd.run_tee();
    outcome?;
    let counts = TestCounts::parse(&output);
    tests_ran(counts)?;
    Ok(Outcome::Done(format!(
        "{}: {} passed, {} ignored",
        crates.join(" "),
        counts.passed,
        counts.ignored
    )))
}

fn fuzz(ctx: &Ctx) -> Result<Outcome, Failure> {
    let dirs: Vec<_> = ctx
        .ws
        .crates
        .iter()
        .filter_map(|c| c.fuzz.as_ref())
        .collect();
    if dirs.is_empty() {
        return Ok(Outcome::Skipped("no crates/*/fuzz".into()));
    }
    if !Cmd::nightly_cargo().args(["fuzz", "--version"]).probe() {
        return Err(Failure::new("`cargo +nightly fuzz` is not installed")
            .hint("`cargo install cargo-fuzz --locked` (.ci/run does)"));
    }
    let seconds = ctx.options.fuzz_seconds;
    let mut ran = Vec::new();
    for dir in &dirs {
        if dir.targets.is_empty() {
            return Err(Failure::new(format!(
                "{}/Cargo.toml declares no [[bin]] fuzz target (`cargo fuzz add <name>` makes one)",
                dir.dir
            )));
        }
        // Build every target first so that a compile error shows as such, not as a fuzz failure.
        Cmd::nightly_cargo()
            .args(["fuzz", "build", "--fuzz-dir", &dir.dir])
            .run()?;
        for target in &dir.targets {
            Cmd::nightly_cargo()
                .args(["fuzz", "run", target, "--fuzz-dir", &dir.dir, "--"])
                .arg(format!("-max_total_time={seconds}"))
                .arg("-rss_limit_mb=2048")
                .run()
                .map_err(|f| {
                    f.hint(format!(
                        "the crashing input is saved under {0}/artifacts/{target}/; replay it with \
                         `cargo +nightly fuzz run {target} --fuzz-dir {0} <that file>`",
                        dir.dir
                    ))
                })?;
            ran.push(target.as_str());
        }
    }
    Ok(Outcome::Done(format!(
        "{} targets x {seconds}s: {}",
        ran.len(),
        ran.join(" ")
    )))
}
