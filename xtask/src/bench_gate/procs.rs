//! The processes a bench-gate run starts: spawned with piped stdin/stdout, read line by line
//! with timeouts, killed when dropped (so a failed run leaves nothing behind).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

pub struct Proc {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Proc {
    pub fn spawn(name: impl Into<String>, mut command: Command) -> Result<Proc, String> {
        let name = name.into();
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("could not start {name} ({command:?}): {e}"))?;
        let stdout = child.stdout.take().ok_or("child without stdout")?;
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Proc {
            name,
            child,
            stdin,
            lines,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads lines until one starts with `word` (then a space or the end); lines before it are
    /// ignored. Fails, naming the process, on timeout or when the process ends first.
    pub fn expect(&mut self, word: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let rest = line.strip_prefix(word);
                    if rest.is_some_and(|r| r.is_empty() || r.starts_with(' ')) {
                        return Ok(line);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "{} printed no `{word}` line within {timeout:?}",
                        self.name
                    ));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self
                        .child
                        .wait()
                        .map_or_else(|e| e.to_string(), |s| s.to_string());
                    return Err(format!(
                        "{} ended ({status}) before printing a `{word}` line (its stderr is above)",
                        self.name
                    ));
                }
            }
        }
    }

    pub fn send(&mut self, line: &str) -> Result<(), String> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| format!("{}'s stdin is closed", self.name))?;
        writeln!(stdin, "{line}").map_err(|e| format!("writing to {}: {e}", self.name))
    }

    /// Asks a server for its `stats` line.
    pub fn stats(&mut self) -> Result<Fields, String> {
        self.send("stats")?;
        self.expect("stats", Duration::from_secs(10))
            .map(|l| Fields::parse(&l))
    }

    /// Waits up to `timeout` for the process to exit by itself; kills it after that.
    pub fn finish(mut self, timeout: Duration) -> Result<(), String> {
        self.stdin = None;
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => return Err(format!("{} exited with {status}", self.name)),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(None) => return Err(format!("{} did not exit within {timeout:?}", self.name)),
                Err(e) => return Err(format!("waiting for {}: {e}", self.name)),
            }
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The `key=value` words of one line.
#[derive(Debug, Clone, Default)]
pub struct Fields(pub BTreeMap<String, String>);

impl Fields {
    pub fn parse(line: &str) -> Fields {
        Fields(
            line.split_whitespace()
                .filter_map(|w| w.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    pub fn num(&self, key: &str) -> Option<u64> {
        self.0.get(key)?.parse().ok()
    }

    pub fn need(&self, key: &str) -> Result<u64, String> {
        self.num(key)
            .ok_or_else(|| format!("expected a number `{key}=` in {:?}", self.0))
    }
}

/// The CPU the busiest thread of `pid` last ran on (field 39 of `/proc/<pid>/task/*/stat`),
/// where "busiest" is the most user + system time: the thread that did the measured work.
pub fn busiest_thread_cpu(pid: u32) -> Option<u32> {
    let mut best: Option<(u64, u32)> = None;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The command name (field 2) may hold spaces; fields are counted after its `)`.
        let Some(after) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
            continue;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        // `after` starts at field 3: field n is fields[n - 3].
        let (Some(utime), Some(stime), Some(cpu)) = (
            fields.get(11).and_then(|v| v.parse::<u64>().ok()),
            fields.get(12).and_then(|v| v.parse::<u64>().ok()),
            fields.get(36).and_then(|v| v.parse::<u32>().ok()),
        ) else {
            continue;
        };
        if best.is_none_or(|(t, _)| utime + stime > t) {
            best = Some((utime + stime, cpu));
        }
    }
    best.map(|(_, cpu)| cpu)
}
