//! Cancellation and deadlines reach the handler: a dropped stream or async call is cancelled on
//! the server and the handler sees it; a per-call deadline travels with the call, the handler
//! sees it, and a blocking handler stops at it.

mod common;

use std::time::{Duration, Instant};

use common::engine::*;
use common::*;
use ferry_rpc::{RpcConfig, RpcError};

fn slow_chat() -> ChatRequest {
    ChatRequest {
        prompt: "tok".into(),
        tokens: 100_000,
        pace_ms: 1,
    }
}

fn dropping_a_stream_cancels_its_handler(client: &EngineClient) {
    let mut stream = client.chat(&slow_chat()).unwrap();
    for i in 0..5 {
        assert_eq!(stream.next().unwrap().unwrap(), Token(format!("tok-{i}")));
    }
    drop(stream);
    assert!(
        eventually(Duration::from_secs(10), || client
            .counters(&false)
            .unwrap()
            .chats_cancelled
            == 1),
        "the handler never saw the cancellation"
    );
}

fn deadline_reaches_the_handler(client: &EngineClient) {
    // No deadline: the handler sees none.
    let r = client.wait(&0).unwrap();
    assert_eq!(r.budget_ms, None);
    assert!(!r.cancelled);
    // A deadline of 2 s: the handler sees what is left of it.
    let r = client
        .with_timeout(Duration::from_secs(2))
        .wait(&0)
        .unwrap();
    let left = r.budget_ms.expect("the handler sees the deadline");
    assert!((1000..=2000).contains(&left), "{left} ms left of 2000");
    assert!(!r.cancelled);
}

#[test]
fn blocking_server_sees_cancellations_and_deadlines() {
    let (_dir, _server, client) = blocking_engine("rpc-cancel");
    dropping_a_stream_cancels_its_handler(&client);
    deadline_reaches_the_handler(&client);

    // A blocking handler that would run 10 s stops at the caller's 150 ms deadline; the caller
    // gets a timeout.
    let started = Instant::now();
    let r = client
        .with_timeout(Duration::from_millis(150))
        .wait(&10_000);
    assert!(timed_out(&r), "expected a timeout, got {r:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(eventually(Duration::from_secs(5), || client
        .counters(&false)
        .unwrap()
        .waits_cancelled
        == 1));
    // A streamed call with a deadline ends with a timeout on the client, and the handler stops.
    let mut stream = client
        .with_timeout(Duration::from_millis(100))
        .chat(&slow_chat())
        .unwrap();
    // (How many items arrive before the deadline depends on the machine's load: none is fine.)
    let end = loop {
        match stream.next() {
            Some(Ok(_)) => {}
            Some(Err(e)) => break e,
            None => panic!("the stream ended without its deadline"),
        }
    };
    assert!(timed_out::<()>(&Err(end)));
    assert!(eventually(Duration::from_secs(10), || client
        .counters(&false)
        .unwrap()
        .chats_cancelled
        == 2));
}

#[test]
fn async_server_sees_cancellations_and_deadlines() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_dir, _server, client) = async_engine(&rt, "rpc-cancel-async");
    dropping_a_stream_cancels_its_handler(&client);
    deadline_reaches_the_handler(&client);

    // Dropping an async call's future cancels the call: the handler's `cancelled()` completes.
    let async_client = client.to_async();
    rt.block_on(async {
        let r = tokio::time::timeout(Duration::from_millis(100), async_client.wait(&10_000)).await;
        assert!(r.is_err(), "the call should still be running");
    });
    assert!(
        eventually(Duration::from_secs(5), || client
            .counters(&false)
            .unwrap()
            .waits_cancelled
            == 1),
        "the async handler never saw the dropped call"
    );
    // Dropping an async stream cancels it too.
    rt.block_on(async {
        let mut s = async_client.chat(&slow_chat()).await.unwrap();
        for i in 0..3 {
            assert_eq!(s.next().await.unwrap().unwrap(), Token(format!("tok-{i}")));
        }
    });
    assert!(eventually(Duration::from_secs(10), || client
        .counters(&false)
        .unwrap()
        .chats_cancelled
        == 2));
    // A deadline on an async call reaches the async handler, which stops at it.
    rt.block_on(async {
        let r = async_client
            .with_timeout(Duration::from_millis(150))
            .wait(&10_000)
            .await;
        assert!(timed_out(&r), "{r:?}");
    });
    assert!(eventually(Duration::from_secs(5), || client
        .counters(&false)
        .unwrap()
        .waits_cancelled
        == 2));
}

#[test]
fn a_connection_cannot_start_stream_threads_without_bound() {
    let dir = TestDir::new("stream-cap");
    let _server = ferry_rpc::serve(
        "rpc-stream-cap",
        server_config(dir.path()),
        RpcConfig {
            max_streams_per_connection: 4,
            ..RpcConfig::default()
        },
        EngineServer::new(TestEngine::default()),
    )
    .unwrap();
    let client = engine_client(&dir, "rpc-stream-cap");
    let mut running: Vec<_> = (0..4).map(|_| client.chat(&slow_chat()).unwrap()).collect();
    for s in &mut running {
        assert!(s.next().unwrap().is_ok());
    }
    let mut fifth = client.chat(&slow_chat()).unwrap();
    match fifth.next() {
        Some(Err(RpcError::Busy { method, message })) => {
            assert_eq!(method, "Engine.chat");
            assert!(message.contains("max_streams_per_connection"), "{message}");
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    // Calls still go through; once a stream ends, a new one may start.
    assert_eq!(client.counters(&false).unwrap().changes, 0);
    drop(running.pop());
    assert!(eventually(Duration::from_secs(10), || {
        let mut s = client.chat(&slow_chat()).unwrap();
        matches!(s.next(), Some(Ok(_)))
    }));
}
