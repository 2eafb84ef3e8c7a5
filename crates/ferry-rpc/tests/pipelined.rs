//! Pipelined typed calls: many calls started from one thread (`start_*`), their answers
//! collected in any order and matched to their requests, with every codec and raw bytes; a
//! dropped pending reply is cancelled on the server; a started call's deadline counts from its
//! start; a handler's typed error comes back through `wait`.

mod common;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use common::engine::*;
use common::*;
use ferry_rpc::{PendingReply, RpcError};

fn request<'a>(prefix: &'a str, suffix: &'a [u8]) -> CompletionRequest<'a> {
    CompletionRequest {
        path: "src/editor/buffer.rs",
        line: 42,
        column: 7,
        prefix,
        suffix,
    }
}

/// One started call of any method, with the answer it must get.
enum Started {
    Complete(PendingReply<CompletionList>, CompletionList),
    Score(PendingReply<Score>, Score),
    Hover(PendingReply<Hover>, Hover),
    Analyze(PendingReply<Vec<Diagnostic>>, Vec<Diagnostic>),
    Fail(PendingReply<u32>, u32),
}

impl Started {
    fn check(self) {
        match self {
            Started::Complete(p, want) => assert_eq!(p.wait().unwrap(), want),
            Started::Score(p, want) => assert_eq!(p.wait().unwrap(), want),
            Started::Hover(p, want) => assert_eq!(p.wait().unwrap(), want),
            Started::Analyze(p, want) => assert_eq!(p.wait().unwrap(), want),
            Started::Fail(p, code) => match p.wait() {
                Err(RpcError::Status { method, status }) => {
                    assert_eq!(method, "Engine.fail");
                    assert_eq!(status.code, code);
                    assert_eq!(status.message, format!("failing with {code} as asked"));
                }
                other => panic!("expected status {code}, got {other:?}"),
            },
        }
    }
}

/// Starts call `i`: a different method (and codec) by `i`, its argument derived from `i`.
fn start(client: &EngineClient, i: u32) -> Started {
    match i % 5 {
        0 => {
            let prefix = format!("p{i}_");
            let suffix = vec![b'x'; i as usize % 7];
            let req = request(&prefix, &suffix);
            Started::Complete(client.start_complete(&req).unwrap(), complete_answer(&req))
        }
        1 => {
            let req = ScoreRequest {
                words: vec![format!("w{i}"), "x".repeat(i as usize % 11)],
                weight: i,
            };
            let want = score_answer(req.words.iter().cloned(), req.weight);
            Started::Score(client.start_score(&req).unwrap(), want)
        }
        2 => {
            let req = HoverRequest {
                path: format!("src/f{i}.rs"),
                line: i,
            };
            let want = Hover {
                markdown: format!("**src/f{i}.rs**:{i}"),
            };
            Started::Hover(client.start_hover(&req).unwrap(), want)
        }
        3 => {
            let file = vec![(i % 251) as u8; i as usize];
            Started::Analyze(client.start_analyze(&file).unwrap(), analyze_answer(&file))
        }
        _ => Started::Fail(client.start_fail(&i).unwrap(), i),
    }
}

#[test]
fn many_calls_started_from_one_thread_get_their_own_answers_in_any_order() {
    let (_dir, _server, client) = blocking_engine("rpc-pipe-order");

    // Started together, collected in order.
    let started: Vec<Started> = (0..200).map(|i| start(&client, i)).collect();
    for s in started {
        s.check();
    }
    // Started together, collected newest first.
    let started: Vec<Started> = (200..400).map(|i| start(&client, i)).collect();
    for s in started.into_iter().rev() {
        s.check();
    }
    // A sliding window, as a pipelining caller keeps one: wait for the oldest, start another.
    let mut window: VecDeque<Started> = VecDeque::new();
    for i in 400..2400 {
        if window.len() == 32 {
            window.pop_front().expect("a full window").check();
        }
        window.push_back(start(&client, i));
    }
    window.into_iter().for_each(Started::check);

    // Pending replies go to other threads: collected there.
    let pending: Vec<(u32, PendingReply<Hover>)> = (0..16u32)
        .map(|i| {
            let req = HoverRequest {
                path: "t.rs".into(),
                line: i,
            };
            (i, client.start_hover(&req).unwrap())
        })
        .collect();
    std::thread::scope(|s| {
        for (i, p) in pending {
            s.spawn(move || {
                assert_eq!(p.wait().unwrap().markdown, format!("**t.rs**:{i}"));
            });
        }
    });
    // The connection is as good as before.
    assert_eq!(client.counters(&false).unwrap().changes, 0);
}

#[test]
fn a_dropped_pending_reply_is_cancelled_on_the_server() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Async handlers see a cancellation as it arrives (blocking call handlers only see their
    // deadline).
    let (_dir, _server, client) = async_engine(&rt, "rpc-pipe-drop");
    let pending = client.start_wait(&10_000).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || client
            .counters(&false)
            .unwrap()
            .waits_started
            == 1),
        "the handler never started"
    );
    let started = Instant::now();
    drop(pending);
    assert!(
        eventually(Duration::from_secs(5), || client
            .counters(&false)
            .unwrap()
            .waits_cancelled
            == 1),
        "the handler never saw the dropped pending reply"
    );
    assert!(started.elapsed() < Duration::from_secs(9));
    // Calls started after it are answered.
    let p = client.start_wait(&0).unwrap();
    let r = p.wait().unwrap();
    assert!(!r.cancelled);
}

#[test]
fn a_started_calls_deadline_counts_from_its_start() {
    let (_dir, _server, client) = blocking_engine("rpc-pipe-timeout");

    // A handler that stops at the 150 ms deadline; the caller gets a timeout.
    let begun = Instant::now();
    let r = client
        .with_timeout(Duration::from_millis(150))
        .start_wait(&10_000)
        .unwrap()
        .wait();
    assert!(timed_out(&r), "expected a timeout, got {r:?}");
    assert!(begun.elapsed() < Duration::from_secs(5));

    // The server's one worker runs a blocking handler for 4 s (no deadline); a call started
    // behind it with a 1 s deadline, waited for 1.5 s later, fails at once: its deadline had
    // passed before `wait`.
    let busy = client.start_wait(&4_000).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let timed = client
        .with_timeout(Duration::from_secs(1))
        .start_wait(&0)
        .unwrap();
    assert!(timed.deadline().is_some());
    std::thread::sleep(Duration::from_millis(1500));
    let waited = Instant::now();
    let r = timed.wait();
    assert!(
        matches!(
            r,
            Err(RpcError::Transport(ferry_transport::Error::Timeout(_)))
        ),
        "expected the client's timeout, got {r:?}"
    );
    assert!(
        waited.elapsed() < Duration::from_millis(700),
        "wait took {:?}: the deadline was not counted from the start",
        waited.elapsed()
    );
    // The call in front is still answered, and so are later ones.
    let report = busy.wait().unwrap();
    assert_eq!(report.budget_ms, None);
    assert_eq!(
        client
            .hover(&HoverRequest {
                path: "a".into(),
                line: 1
            })
            .unwrap()
            .markdown,
        "**a**:1"
    );
}

#[test]
fn pending_replies_are_send_and_a_typed_error_comes_back_through_wait() {
    fn assert_send<T: Send>(t: T) -> T {
        t
    }
    let (_dir, _server, client) = blocking_engine("rpc-pipe-error");
    let before = assert_send(client.start_hover(&HoverRequest {
        path: "b.rs".into(),
        line: 2,
    }))
    .unwrap();
    let failing = assert_send(client.start_fail(&23).unwrap());
    assert_eq!(failing.method().qualified, "Engine.fail");
    assert_eq!(failing.deadline(), None);
    let after = client.start_fail(&24).unwrap();
    match failing.wait() {
        Err(RpcError::Status { method, status }) => {
            assert_eq!(method, "Engine.fail");
            assert_eq!(status.code, 23);
            assert_eq!(status.message, "failing with 23 as asked");
        }
        other => panic!("expected a status, got {other:?}"),
    }
    assert_eq!(before.wait().unwrap().markdown, "**b.rs**:2");
    assert!(matches!(
        after.wait(),
        Err(RpcError::Status { status, .. }) if status.code == 24
    ));
}
