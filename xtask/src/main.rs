//! Ferry's project automation, run as `cargo xtask <command>` (an alias in `.cargo/config.toml`).
//!
//! - `cargo xtask ci`: the whole CI gate (fmt, clippy on four targets, tests with coverage floors,
//!   docs, loom, miri, a fuzz smoke run, Windows tests under Wine). See [`ci`].
//! - `cargo xtask bench-gate`: Ferry against the alternatives with real processes, gates from
//!   `benches/gates.toml` (Linux; `--wine`: the Windows build under Wine). See [`bench_gate`].
//! - `cargo xtask soak`: many client processes against one server, with a seeded schedule of
//!   faults, every invariant checked (Linux). See [`soak`].
//!
//! Shaped like rust-analyzer's xtask: this file only parses flags and hands each command to its
//! own module. It has no dependencies so that it builds in seconds on a fresh CI machine.

#[cfg(target_os = "linux")]
mod bench_gate;
mod ci;
mod cmd;
#[cfg(target_os = "linux")]
mod conformance;
mod coverage;
#[cfg(target_os = "linux")]
mod json;
#[cfg(target_os = "linux")]
mod soak;
mod tests_output;
mod wine;
mod workspace;

use std::process::ExitCode;

use ci::{Options, Step};

const HELP: &str = "\
cargo xtask <COMMAND>

Commands:
  ci            run the CI gate: fmt, clippy, test (+coverage), doc, conformance, loom, miri,
                fuzz, wine, soak, bench
  bench-gate    Ferry vs Unix socket, TCP, pipe, Node.js: real processes, gates (Linux);
                with --wine: the Windows build under Wine vs named pipe, TCP, pipe
  soak          many client processes against one server, with faults; every invariant
                checked (Linux): soak [--duration 60s|10m|30m] [--clients N] [--chaos] [--seed N]
  help          print this message

Options of `ci`:
  --no-coverage         run plain `cargo test --workspace` instead of `cargo llvm-cov`
  --skip <STEP>         skip a step (repeatable)
  --only <STEP>         run only the named step(s) (repeatable)
  --fuzz-seconds <N>    seconds of fuzzing per fuzz target (default 20)

Steps, in order: fmt, clippy, test, doc, conformance, loom, miri, fuzz, wine, soak, bench.
The last line of a run that reached the tests is `N passed, M failed` (host test run).

Options of `bench-gate`:
  --quick              CI mode: 1 run, 20k samples, Ferry + Unix socket; timing gates not enforced
  --runs <N>           runs of every scenario (default 3; gates use the median)
  --samples <N>        timed round trips per latency run (default 200000)
  --pin <S>,<C>        pin the server to CPU S and the client to CPU C
  --peers all          also measure iceoryx2 (polling and blocking; slow to compile)
  --wine               build ferry-bench for x86_64-pc-windows-gnu and run every process under
                       Wine (prefix target/wineprefix, as the CI's wine step): Ferry vs named pipe,
                       TCP loopback, anonymous pipe; plus scale and reconnect. Report in
                       target/bench-gate/wine/, headed 'measured under Wine, not on Windows'.
                       No gate applies; it fails only if a run breaks or a call goes unanswered.
                       Default 20000 samples (--quick: 5000); --runs, --samples, --quick apply
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(("soak", rest)) = args.split_first().map(|(c, r)| (c.as_str(), r)) {
        #[cfg(target_os = "linux")]
        return soak::run(rest);
        #[cfg(not(target_os = "linux"))]
        {
            let _ = rest;
            eprintln!(
                "xtask soak: runs on Linux only (the soak's processes read /proc and signal each other)"
            );
            return ExitCode::from(2);
        }
    }
    match parse(&args) {
        Ok(Command::Ci(options)) => ci::run(&options),
        #[cfg(target_os = "linux")]
        Ok(Command::BenchGate(args)) => match bench_gate::parse(&args) {
            Ok(options) => bench_gate::run(&options),
            Err(message) => {
                eprintln!("xtask: {message}\n\n{HELP}");
                ExitCode::from(2)
            }
        },
        #[cfg(not(target_os = "linux"))]
        Ok(Command::BenchGate(_)) => {
            eprintln!(
                "xtask bench-gate: runs on Linux hosts only (the Windows build is measured from Linux with --wine)"
            );
            ExitCode::from(2)
        }
        Ok(Command::Help) => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("xtask: {message}\n\n{HELP}");
            ExitCode::from(2)
        }
    }
}

#[derive(Debug, PartialEq)]
enum Command {
    Ci(Options),
    /// The raw arguments; `bench_gate::parse` reads them.
    BenchGate(Vec<String>),
    Help,
}

fn parse(args: &[String]) -> Result<Command, String> {
    let Some((command, rest)) = args.split_first() else {
        return Ok(Command::Help);
    };
    match command.as_str() {
        "ci" => parse_ci(rest).map(Command::Ci),
        "bench-gate" => Ok(Command::BenchGate(rest.to_vec())),
        "help" | "--help" | "-h" => Ok(Command::Help),
        other => Err(format!("unknown command `{other}`")),
    }
}

fn parse_ci(args: &[String]) -> Result<Options, String> {
    let mut options = Options::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_owned())),
            _ => (arg.as_str(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next().cloned())
                .ok_or_else(|| format!("`{name}` needs a value"))
        };
        match flag {
            "--no-coverage" => options.coverage = false,
            "--skip" => options.skip.push(Step::parse(&value("--skip")?)?),
            "--only" => options.only.push(Step::parse(&value("--only")?)?),
            "--fuzz-seconds" => {
                let raw = value("--fuzz-seconds")?;
                options.fuzz_seconds = raw.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                    format!("`--fuzz-seconds` wants a whole number of seconds > 0, got `{raw}`")
                })?;
            }
            other => return Err(format!("unknown option `{other}` for `ci`")),
        }
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn ci_defaults_run_everything_with_coverage() {
        let Command::Ci(options) = parse(&args("ci")).unwrap() else {
            panic!("`ci` did not parse as the ci command");
        };
        assert!(options.coverage);
        assert!(options.skip.is_empty() && options.only.is_empty());
        assert_eq!(options.fuzz_seconds, 20);
        assert!(Step::ALL.iter().all(|&step| options.selected(step)));
    }

    #[test]
    fn ci_flags_parse_in_both_spellings() {
        let parsed = parse(&args(
            "ci --no-coverage --skip wine --skip=miri --fuzz-seconds=5",
        ))
        .unwrap();
        let Command::Ci(options) = parsed else {
            panic!("expected the ci command, got {parsed:?}");
        };
        assert!(!options.coverage);
        assert_eq!(options.skip, vec![Step::Wine, Step::Miri]);
        assert_eq!(options.fuzz_seconds, 5);
        assert!(!options.selected(Step::Wine));
        assert!(options.selected(Step::Fmt));
    }

    #[test]
    fn only_selects_just_the_named_steps() {
        let Command::Ci(options) = parse(&args("ci --only fmt --only doc")).unwrap() else {
            panic!("expected the ci command");
        };
        let selected: Vec<Step> = Step::ALL
            .into_iter()
            .filter(|&s| options.selected(s))
            .collect();
        assert_eq!(selected, vec![Step::Fmt, Step::Doc]);
    }

    #[test]
    fn bad_input_is_an_error_not_a_default() {
        assert!(parse(&args("ci --skip nope")).unwrap_err().contains("nope"));
        assert!(parse(&args("ci --fuzz-seconds 0")).is_err());
        assert!(parse(&args("ci --fuzz-seconds")).is_err());
        assert!(parse(&args("ci --frobnicate")).is_err());
        assert!(parse(&args("deploy")).is_err());
        assert_eq!(
            parse(&args("bench-gate --quick")).unwrap(),
            Command::BenchGate(args("--quick"))
        );
        assert_eq!(parse(&[]).unwrap(), Command::Help);
    }
}
