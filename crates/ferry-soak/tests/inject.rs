//! The soak's checkers catch a server that corrupts, duplicates or drops what it sends: run the
//! real soak server with a deliberate bug and one honest client, and wait for the client to
//! report the violation. (`cargo xtask soak --inject-bug ...` does the same end to end and exits
//! non-zero; see xtask/src/soak/.)

#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn spawn(dir: &std::path::Path, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ferry-soak"))
        .args(args)
        .env("FERRY_RUNTIME_DIR", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn ferry-soak")
}

/// Lines of a child's stdout, on a channel.
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    rx
}

fn caught(bug: &str, want: &str) {
    let dir = std::env::temp_dir().join(format!("ferry-soak-inject-{}-{bug}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut server = spawn(&dir, &["server", &format!("inject={bug}")]);
    let server_lines = lines(&mut server);
    let ready = server_lines.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(ready.starts_with("ready"), "{ready}");
    let mut client = spawn(&dir, &["client", "id=1", "seed=7"]);
    let client_lines = lines(&mut client);
    let mut found = None;
    while let Ok(l) = client_lines.recv_timeout(Duration::from_secs(60)) {
        if l.starts_with("violation") {
            found = Some(l);
            break;
        }
    }
    for mut c in [client, server] {
        let _ = c.stdin.take().map(|mut s| s.write_all(b"quit\n"));
        let _ = c.kill();
        let _ = c.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
    let line = found.unwrap_or_else(|| panic!("inject={bug}: no violation reported"));
    assert!(line.contains(want), "inject={bug}: {line}");
}

#[test]
fn a_corrupted_answer_is_caught() {
    caught("corrupt", "kind=corrupt_answer");
}

#[test]
fn a_duplicated_answer_is_caught() {
    caught("dup", "kind=wrong_answer");
}

#[test]
fn a_lost_push_is_caught() {
    caught("droppush", "kind=push_lost");
}
