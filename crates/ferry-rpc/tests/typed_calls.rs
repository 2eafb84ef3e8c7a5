//! Every method kind and every codec, client and server in separate processes: calls
//! (postcard with borrowed fields, rkyv, JSON), a stream, raw bytes in, a notification, a push,
//! an application error; blocking and async clients against blocking and async servers; one
//! client shared by several threads.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::engine::*;
use common::*;
use ferry_rpc::{RpcConfig, RpcError};

const SERVICE: &str = "rpc-typed";

#[test]
#[ignore = "entry point of the child processes"]
fn child_entry() {
    let Some((role, dir)) = child_role() else {
        return;
    };
    match role.as_str() {
        "server" => {
            let _server = ferry_rpc::serve(
                SERVICE,
                server_config(&dir),
                RpcConfig::default(),
                EngineServer::new(TestEngine::default()),
            )
            .expect("serve");
            println!("READY");
            std::thread::sleep(Duration::from_secs(3600));
        }
        "async-server" => {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            let _server = rt.block_on(async {
                ferry_rpc::serve_async(
                    SERVICE,
                    server_config(&dir),
                    RpcConfig::default(),
                    AsyncEngineServer::new(AsyncTestEngine::default()),
                )
                .expect("serve_async")
            });
            println!("READY");
            rt.block_on(async { tokio::time::sleep(Duration::from_secs(3600)).await });
        }
        other => panic!("unknown role {other}"),
    }
}

fn start(role: &str, dir: &TestDir) -> ChildGuard {
    let mut child = spawn(role, dir.path(), &[]);
    wait_line(&mut child, "READY", Duration::from_secs(20));
    ChildGuard(child)
}

#[derive(Default)]
struct Pushes {
    seen: Arc<AtomicU64>,
    last_version: Arc<AtomicU64>,
}

impl EnginePushes for Pushes {
    fn reanalyzed(&self, ev: Reanalyzed) {
        assert_eq!(ev.path, "src/lib.rs");
        self.last_version.store(ev.version, Ordering::SeqCst);
        self.seen.fetch_add(1, Ordering::SeqCst);
    }
}

fn request<'a>(prefix: &'a str, suffix: &'a [u8]) -> CompletionRequest<'a> {
    CompletionRequest {
        path: "src/editor/buffer.rs",
        line: 42,
        column: 7,
        prefix,
        suffix,
    }
}

fn exercise_blocking(dir: &TestDir) {
    let seen = Arc::new(AtomicU64::new(0));
    let last_version = Arc::new(AtomicU64::new(0));
    let client = EngineClient::connect_with_pushes(
        SERVICE,
        client_config(dir.path()),
        RpcConfig::default(),
        Pushes {
            seen: seen.clone(),
            last_version: last_version.clone(),
        },
    )
    .expect("connect");

    // Call, postcard, borrowed request fields.
    let prefix = "fn ma".repeat(400); // 2 KiB of code
    let suffix = vec![b'}'; 512];
    let req = request(&prefix, &suffix);
    assert_eq!(client.complete(&req).unwrap(), complete_answer(&req));

    // Stream.
    let tokens: Vec<Token> = client
        .chat(&ChatRequest {
            prompt: "hi".into(),
            tokens: 500,
            pace_ms: 0,
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(tokens.len(), 500);
    assert_eq!(tokens[0], Token("hi-0".into()));
    assert_eq!(tokens[499], Token("hi-499".into()));

    // Raw bytes in (1 MiB, more than one ring record: fragmented), postcard out.
    let file: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    assert_eq!(client.analyze(&file).unwrap(), analyze_answer(&file));

    // rkyv both ways.
    let words: Vec<String> = ["alpha", "be", "gamma-delta"].map(String::from).to_vec();
    let score = client
        .score(&ScoreRequest {
            words: words.clone(),
            weight: 3,
        })
        .unwrap();
    assert_eq!(score, score_answer(words.into_iter(), 3));

    // JSON both ways.
    let hover = client
        .hover(&HoverRequest {
            path: "a.rs".into(),
            line: 9,
        })
        .unwrap();
    assert_eq!(hover.markdown, "**a.rs**:9");

    // Notifications, in order, each answered by a push.
    let before = client.counters(&true).unwrap().changes;
    assert_eq!(before, 0);
    for v in 1..=100 {
        client
            .did_change(&ChangeEvent {
                path: "src/lib.rs".into(),
                version: v,
            })
            .unwrap();
    }
    assert!(eventually(Duration::from_secs(5), || client
        .counters(&false)
        .unwrap()
        .changes
        == 100));
    let counters = client.counters(&false).unwrap();
    assert_eq!((counters.last_version, counters.out_of_order), (100, 0));
    assert!(eventually(Duration::from_secs(5), || seen
        .load(Ordering::SeqCst)
        == 100));
    assert_eq!(last_version.load(Ordering::SeqCst), 100);

    // An application error, typed.
    match client.fail(&17) {
        Err(RpcError::Status { method, status }) => {
            assert_eq!(method, "Engine.fail");
            assert_eq!(status.code, 17);
            assert_eq!(status.message, "failing with 17 as asked");
        }
        other => panic!("expected a status, got {other:?}"),
    }

    // One connection shared by several threads.
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let client = client.clone();
            s.spawn(move || {
                for i in 0..200u32 {
                    let prefix = format!("t{t}i{i}");
                    let req = request(&prefix, b"x");
                    assert_eq!(client.complete(&req).unwrap(), complete_answer(&req));
                }
            });
        }
    });
}

async fn exercise_async(dir: &TestDir) {
    let client =
        EngineAsyncClient::connect_with(SERVICE, client_config(dir.path()), RpcConfig::default())
            .await
            .expect("connect");
    let req = request("fn ma", b"}");
    assert_eq!(client.complete(&req).await.unwrap(), complete_answer(&req));
    let mut stream = client
        .chat(&ChatRequest {
            prompt: "yo".into(),
            tokens: 50,
            pace_ms: 0,
        })
        .await
        .unwrap();
    let mut n = 0;
    while let Some(t) = stream.next().await {
        assert_eq!(t.unwrap(), Token(format!("yo-{n}")));
        n += 1;
    }
    assert_eq!(n, 50);
    let file = vec![7u8; 100_000];
    assert_eq!(client.analyze(&file).await.unwrap(), analyze_answer(&file));
    let score = client
        .score(&ScoreRequest {
            words: vec!["x".into(), "yyy".into()],
            weight: 2,
        })
        .await
        .unwrap();
    assert_eq!(score.total, 8);
    assert_eq!(score.longest, "yyy");
    let hover = client
        .hover(&HoverRequest {
            path: "b.rs".into(),
            line: 1,
        })
        .await
        .unwrap();
    assert_eq!(hover.markdown, "**b.rs**:1");
    client
        .did_change(&ChangeEvent {
            path: "src/lib.rs".into(),
            version: 99,
        })
        .await
        .unwrap();
    let mut last = 0;
    for _ in 0..2500 {
        last = client.counters(&false).await.unwrap().last_version;
        if last == 99 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(last, 99);
    assert!(matches!(
        client.fail(&3).await,
        Err(RpcError::Status { .. })
    ));
    // Many tasks over one connection.
    let mut tasks = Vec::new();
    for t in 0..16u32 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50u32 {
                let prefix = format!("t{t}i{i}");
                let req = request(&prefix, b"");
                assert_eq!(client.complete(&req).await.unwrap(), complete_answer(&req));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[test]
fn clients_are_send_sync_and_cheap_to_clone() {
    fn shared<T: Send + Sync + Clone + 'static>() {}
    shared::<EngineClient>();
    shared::<EngineAsyncClient>();
    shared::<EnginePusher>();
    shared::<ferry_rpc::Client>();
    shared::<ferry_rpc::AsyncClient>();
}

#[test]
fn blocking_client_against_blocking_server() {
    let dir = TestDir::new("bb");
    let _server = start("server", &dir);
    exercise_blocking(&dir);
}

#[test]
fn blocking_client_against_async_server() {
    let dir = TestDir::new("ba");
    let _server = start("async-server", &dir);
    exercise_blocking(&dir);
}

#[test]
fn async_client_against_both_servers() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for role in ["server", "async-server"] {
        let dir = TestDir::new("ab");
        let _server = start(role, &dir);
        rt.block_on(exercise_async(&dir));
    }
}
