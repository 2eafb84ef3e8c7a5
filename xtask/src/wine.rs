//! The Windows tests, built for `x86_64-pc-windows-gnu` and run under Wine on a Linux host
//! (`.cargo/config.toml` sets `runner = "wine"` for that target).

use std::path::Path;

use crate::ci::{Ctx, Outcome};
use crate::cmd::{Cmd, Failure, on_path};
use crate::tests_output::TestCounts;

/// Crates whose tests run under Wine. Names not (yet) in the workspace are skipped.
pub const WINE_CRATES: &[&str] = &["ferry-notify", "ferry-ring", "ferry-transport", "ferry-rpc"];

pub const WINDOWS_TARGET: &str = "x86_64-pc-windows-gnu";

/// The script (copied from the workplace's tools) that makes a prefix able to run Rust binaries.
const SETUP_SCRIPT: &str = ".ci/wine/setup-prefix.sh";

/// Checks that Wine and MinGW are installed and makes (or reuses) the prefix
/// `<target>/wineprefix`, which the Wine tests and `bench-gate --wine` share; returns its path.
/// `wine_does` says what Wine is needed for and `or` how else to go on, for the error message.
pub fn prepare(target_dir: &Path, wine_does: &str, or: &str) -> Result<String, Failure> {
    for (tool, why) in [
        ("wine", wine_does),
        (
            "x86_64-w64-mingw32-gcc",
            "builds the prefix's bcryptprimitives.dll",
        ),
    ] {
        if !on_path(tool) {
            return Err(
                Failure::new(format!("`{tool}` ({why}) is not installed")).hint(format!(
                    "`bash .ci/run` installs it (apt-get install wine wine64 \
                     gcc-mingw-w64-x86-64){or}"
                )),
            );
        }
    }
    let prefix = target_dir.join("wineprefix");
    let prefix = prefix.to_string_lossy().into_owned();
    Cmd::new("sh")
        .arg(SETUP_SCRIPT)
        .env("WINEPREFIX", &prefix)
        .run()?;
    Ok(prefix)
}

/// Stops the prefix's wineserver, so that it does not stay behind holding the terminal (it
/// would exit on its own a few seconds later).
pub fn stop_server(prefix: &str) {
    let _ = Cmd::new("wineserver")
        .arg("-k")
        .env("WINEPREFIX", prefix)
        .probe();
}

pub fn run(ctx: &mut Ctx) -> Result<Outcome, Failure> {
    if !cfg!(target_os = "linux") {
        return Ok(Outcome::Skipped(
            "not a Linux host: the Windows tests run natively there".into(),
        ));
    }
    let crates = ctx.ws.present(WINE_CRATES);
    if crates.is_empty() {
        return Ok(Outcome::Skipped(format!(
            "none of {WINE_CRATES:?} is in the workspace"
        )));
    }
    let prefix = prepare(
        &ctx.ws.target_dir,
        "runs the tests",
        "; or skip this step with `--skip wine`",
    )?;

    let mut test = Cmd::cargo()
        .env("WINEPREFIX", &prefix)
        .env("WINEDEBUG", "-all")
        .args(["test", "--target", WINDOWS_TARGET])
        // The transport's async API and its tests (tests/tokio.rs) run under Wine too.
        .args(["--features", "ferry-transport/tokio"]);
    for krate in &crates {
        test = test.args(["-p", krate]);
    }
    let (output, outcome) = test.run_tee();
    let counts = TestCounts::parse(&output);
    ctx.wine_tests = Some(counts);
    stop_server(&prefix);
    outcome.map_err(|f| {
        f.hint(format!(
            "if it says the `{WINDOWS_TARGET}` target may not be installed: \
             `rustup target add {WINDOWS_TARGET}` (.ci/run does)"
        ))
    })?;
    if counts.suites == 0 {
        return Err(Failure::new(
            "the Wine test run printed no `test result:` line",
        ));
    }
    println!("  wine: {counts}");
    Ok(Outcome::Done(format!(
        "{}: {} passed, {} ignored",
        crates.join(" "),
        counts.passed,
        counts.ignored
    )))
}
