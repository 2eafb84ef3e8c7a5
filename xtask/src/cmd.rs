//! Running commands: a small builder that can show itself as a shell line (to tell people how
//! to reproduce a failure) and can stream a command's stdout while keeping a copy to parse.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// Why a step failed: what happened, how to reproduce it, and optionally what to do about it.
#[derive(Debug)]
pub struct Failure {
    pub what: String,
    pub reproduce: Option<String>,
    pub hint: Option<String>,
}

impl Failure {
    pub fn new(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            reproduce: None,
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// A command to run from the workspace root.
#[derive(Debug, Clone)]
pub struct Cmd {
    program: OsString,
    /// How the program is shown in a reproduce line (`cargo`, not `/root/.rustup/.../cargo`).
    shown: String,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    env_remove: Vec<String>,
}

impl Cmd {
    pub fn new(program: &str) -> Self {
        Self {
            program: program.into(),
            shown: program.to_owned(),
            args: Vec::new(),
            envs: Vec::new(),
            env_remove: Vec::new(),
        }
    }

    /// The cargo that runs this xtask (`$CARGO`, set by `cargo run`), falling back to `cargo`.
    pub fn cargo() -> Self {
        let mut cmd = Self::new("cargo");
        if let Some(cargo) = std::env::var_os("CARGO") {
            cmd.program = cargo;
        }
        cmd
    }

    /// `cargo +nightly`, through the rustup proxy on `PATH`: `$CARGO` is the stable toolchain's
    /// own binary, which does not understand `+toolchain`. The proxy sets `RUSTUP_TOOLCHAIN` for
    /// its children, so an inherited one (from `cargo xtask` itself) is dropped first.
    pub fn nightly_cargo() -> Self {
        let mut cmd = Self::new("cargo").arg("+nightly");
        cmd.env_remove.push("RUSTUP_TOOLCHAIN".to_owned());
        cmd
    }

    pub fn arg(mut self, arg: impl AsRef<str>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<str>) -> Self {
        self.envs.push((key.to_owned(), value.as_ref().to_owned()));
        self
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        for key in &self.env_remove {
            command.env_remove(key);
        }
        command.envs(self.envs.iter().map(|(k, v)| (k, v)));
        command
    }

    fn started(&self) {
        println!("  $ {self}");
        let _ = io::stdout().flush();
    }

    fn spawn_error(&self, error: &io::Error) -> Failure {
        let mut failure = Failure::new(format!("could not start `{}`: {error}", self.shown));
        failure.reproduce = Some(self.to_string());
        failure
    }

    fn exit_error(&self, status: ExitStatus) -> Failure {
        let mut failure = Failure::new(format!("`{}` failed ({status})", self.short()));
        failure.reproduce = Some(self.to_string());
        failure
    }

    /// The program and its first two words, for one-line messages.
    fn short(&self) -> String {
        let mut words = vec![self.shown.clone()];
        words.extend(self.args.iter().take(2).cloned());
        words.join(" ")
    }

    /// Runs with inherited stdio; a non-zero exit is a [`Failure`] naming the command.
    pub fn run(&self) -> Result<(), Failure> {
        self.started();
        let status = self.command().status().map_err(|e| self.spawn_error(&e))?;
        if status.success() {
            Ok(())
        } else {
            Err(self.exit_error(status))
        }
    }

    /// Runs quietly and returns whether it exited with status 0 (for probing tools).
    pub fn probe(&self) -> bool {
        self.command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Runs quietly and returns its stdout if it exited with status 0.
    pub fn read(&self) -> Option<String> {
        let output = self
            .command()
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Runs with stdout and stderr merged into one stream (so cargo's `Running …` lines and the
    /// test binaries' output keep their order), forwarded to our stdout line by line and also
    /// captured. Returns the capture whether or not the command succeeded (a failed test run
    /// still has counts to report) together with the outcome.
    pub fn run_tee(&self) -> (String, Result<(), Failure>) {
        self.started();
        let spawned = io::pipe().and_then(|(reader, writer)| {
            let mut command = self.command();
            command.stdout(writer.try_clone()?).stderr(writer);
            // `command` drops at the end of this closure, closing our copies of the write end.
            command.spawn().map(|child| (child, reader))
        });
        let (mut child, reader) = match spawned {
            Ok(spawned) => spawned,
            Err(e) => return (String::new(), Err(self.spawn_error(&e))),
        };
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        thread::spawn(move || {
            let mut reader = BufReader::new(reader);
            loop {
                let mut line = Vec::new();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let mut captured = Vec::new();
        let mut out = io::stdout();
        let mut exited: Option<(ExitStatus, Instant)> = None;
        let mut wait_error = None;
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let _ = out.write_all(&line);
                    let _ = out.flush();
                    captured.extend_from_slice(&line);
                }
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => match exited {
                    // A process the command left behind (a wineserver, say) may hold the pipe
                    // open: once the command itself is gone and the pipe is quiet, stop reading.
                    Some((_, at)) if at.elapsed() > GRACE_AFTER_EXIT => break,
                    Some(_) => {}
                    None => match child.try_wait() {
                        Ok(Some(status)) => exited = Some((status, Instant::now())),
                        Ok(None) => {}
                        Err(e) => {
                            wait_error = Some(e);
                            break;
                        }
                    },
                },
            }
        }
        let status = match (exited, wait_error) {
            (Some((status, _)), _) => Ok(status),
            (None, Some(e)) => Err(e),
            (None, None) => child.wait(),
        };
        let captured = String::from_utf8_lossy(&captured).into_owned();
        let outcome = match status {
            Ok(status) if status.success() => Ok(()),
            Ok(status) => Err(self.exit_error(status)),
            Err(e) => Err(Failure::new(format!("waiting for `{}`: {e}", self.short()))),
        };
        (captured, outcome)
    }
}

/// How long [`Cmd::run_tee`] keeps reading after the command exited while something still holds
/// its output pipe open.
const GRACE_AFTER_EXIT: Duration = Duration::from_secs(2);

/// Shows the command as a POSIX shell line: `ENV='v' cargo args…`.
impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut words = Vec::new();
        for (key, value) in &self.envs {
            words.push(format!("{key}={}", quote(value)));
        }
        words.push(quote(&self.shown));
        words.extend(self.args.iter().map(|a| quote(a)));
        f.write_str(&words.join(" "))
    }
}

fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:+,@%".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Whether `program` is an executable file on `PATH`.
pub fn on_path(program: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| is_executable(&dir.join(program)))
}

fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        path.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        path.is_file() || path.with_extension("exe").is_file()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_a_copy_pasteable_shell_line() {
        let cmd = Cmd::new("cargo")
            .args(["test", "-p", "ferry-ring", "--target-dir", "target/loom"])
            .env("RUSTFLAGS", "--cfg loom")
            .env("LOOM_MAX_PREEMPTIONS", "3");
        assert_eq!(
            cmd.to_string(),
            "RUSTFLAGS='--cfg loom' LOOM_MAX_PREEMPTIONS=3 cargo test -p ferry-ring --target-dir target/loom"
        );
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn nightly_goes_through_the_rustup_proxy() {
        let cmd = Cmd::nightly_cargo().args(["miri", "test"]);
        assert_eq!(cmd.to_string(), "cargo +nightly miri test");
        assert_eq!(cmd.program, OsString::from("cargo"));
    }

    #[cfg(unix)]
    #[test]
    fn run_reports_exit_status_and_tee_keeps_stdout() {
        assert!(Cmd::new("true").run().is_ok());
        let failure = Cmd::new("false").run().unwrap_err();
        assert!(failure.what.contains("false"), "{}", failure.what);
        assert_eq!(failure.reproduce.as_deref(), Some("false"));

        let (out, outcome) = Cmd::new("sh")
            .args(["-c", "echo one; echo two; exit 3"])
            .run_tee();
        assert_eq!(out, "one\ntwo\n");
        assert!(outcome.is_err());

        let missing = Cmd::new("/nonexistent/ferry-xtask-tool").run().unwrap_err();
        assert!(missing.what.contains("could not start"), "{}", missing.what);
        assert!(on_path("sh"));
        assert!(!on_path("ferry-xtask-no-such-tool"));
    }
}
