//! The tokio API against servers in separate processes: async calls from many tasks, async
//! streams, cancellation by dropping futures and streams, the async server answering blocking
//! and async clients, server death; and the zero-copy `call_with` / `respond_with`.

#![cfg(all(
    any(target_os = "linux", target_os = "macos", windows),
    feature = "tokio"
))]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use ferry_transport::ErrorCode;
use ferry_transport::tokio::{AsyncClient, AsyncRequest, AsyncStreamReceiver, Reply, serve};
use ferry_transport::{Client, ClientConfig, Error, Request, Server};

const SERVICE: &str = "tk";

/// Cancellations the server observed (in the server process).
static CANCELLED: AtomicU64 = AtomicU64::new(0);

fn transform(data: &[u8]) -> Vec<u8> {
    data.iter().map(|b| b.wrapping_add(1)).collect()
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn stream_request(count: u32, size: u32) -> Vec<u8> {
    let mut req = vec![b'S'];
    req.extend(count.to_le_bytes());
    req.extend(size.to_le_bytes());
    req
}

/// The blocking server's handler: the first payload byte selects what to do.
fn handle(req: Request<'_>) {
    let payload = req.payload();
    let (op, rest) = payload.split_first().map_or((0, &[][..]), |(o, r)| (*o, r));
    match op {
        b'E' => {
            let out = transform(rest);
            let _ = req.respond(&out);
        }
        // Zero-copy answer: `len` bytes of pattern(seed), written in place.
        b'Z' => {
            let len = u32_at(rest, 0) as usize;
            let seed = u64::from(u32_at(rest, 4));
            let _ = req.respond_with(len, |buf| buf.copy_from_slice(&pattern(seed, len)));
        }
        b'S' => {
            let count = u32_at(rest, 0);
            let size = u32_at(rest, 4) as usize;
            let stream = req.into_stream();
            std::thread::spawn(move || {
                for i in 0..count {
                    if stream.send(&pattern(u64::from(i), size)).is_err() {
                        if stream.is_cancelled() {
                            CANCELLED.fetch_add(1, Ordering::SeqCst);
                        }
                        return;
                    }
                }
                let _ = stream.finish();
            });
        }
        // A stream of one item that then stays open until cancelled.
        b'T' => {
            let stream = req.into_stream();
            std::thread::spawn(move || {
                let _ = stream.send(b"first");
                while !stream.is_cancelled() {
                    std::thread::sleep(Duration::from_millis(1));
                }
            });
        }
        b'W' => {
            let responder = req.into_responder();
            std::thread::spawn(move || {
                let end = Instant::now() + Duration::from_secs(20);
                while !responder.is_cancelled() && Instant::now() < end {
                    std::thread::sleep(Duration::from_millis(1));
                }
                if responder.is_cancelled() {
                    CANCELLED.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        b'Q' => {
            let _ = req.respond(&CANCELLED.load(Ordering::SeqCst).to_le_bytes());
        }
        _ => {
            let _ = req.respond_error(ErrorCode(0x8000_0002), "unknown op");
        }
    }
}

/// The async server's handler.
async fn handle_async(mut req: AsyncRequest) -> Reply {
    let payload = req.take_payload();
    let (op, rest) = payload.split_first().map_or((0, &[][..]), |(o, r)| (*o, r));
    match op {
        b'E' => Reply::Bytes(transform(rest)),
        b'X' => Reply::Error {
            code: ErrorCode(0x8000_0001),
            message: String::from_utf8_lossy(rest).into_owned(),
        },
        // Answers through the request after yielding to the runtime a few times.
        b'R' => {
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            req.respond(&transform(rest)).await.unwrap();
            Reply::Answered
        }
        b'D' => Reply::Answered, // dropped without an answer
        b'S' => {
            let count = u32_at(rest, 0);
            let size = u32_at(rest, 4) as usize;
            let stream = req.into_stream();
            tokio::spawn(async move {
                for i in 0..count {
                    if stream.send(&pattern(u64::from(i), size)).await.is_err() {
                        break;
                    }
                }
                if stream.is_cancelled() {
                    CANCELLED.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                let _ = stream.finish().await;
            });
            Reply::Answered
        }
        // An endless stream that stops when the client cancels it (observed via `cancelled`).
        b'I' => {
            let stream = req.into_stream();
            tokio::spawn(async move {
                let mut i = 0u64;
                loop {
                    let item = pattern(i, 64);
                    tokio::select! {
                        () = stream.cancelled() => break,
                        r = stream.send(&item) => if r.is_err() { break },
                    }
                    i += 1;
                    if i.is_multiple_of(64) {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                if stream.is_cancelled() {
                    CANCELLED.fetch_add(1, Ordering::SeqCst);
                }
            });
            Reply::Answered
        }
        // Waits for cancellation, then counts it.
        b'W' => {
            tokio::select! {
                () = req.cancelled() => {
                    CANCELLED.fetch_add(1, Ordering::SeqCst);
                    Reply::Answered
                }
                () = tokio::time::sleep(Duration::from_secs(20)) => Reply::Bytes(b"late".to_vec()),
            }
        }
        b'Q' => Reply::Bytes(CANCELLED.load(Ordering::SeqCst).to_le_bytes().to_vec()),
        _ => Reply::Error {
            code: ErrorCode(0x8000_0002),
            message: "unknown op".into(),
        },
    }
}

child_entry!(|role, dir| {
    let mut cfg = server_config(&dir);
    cfg.limits = small_rings(cfg.limits);
    match role {
        "server" => serve_until_stopped(Server::bind(SERVICE, cfg, handle).expect("bind")),
        "async-server" => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                serve_until_stopped(serve(SERVICE, cfg, handle_async).expect("serve"))
            });
        }
        other => panic!("unknown role {other}"),
    }
});

fn start(dir: &TestDir, role: &str) -> std::process::Child {
    start_child(role, dir.path())
}

fn config(dir: &TestDir) -> ClientConfig {
    let mut cfg = client_config(dir.path());
    cfg.limits = small_rings(cfg.limits);
    cfg
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn cancellations(client: &AsyncClient) -> u64 {
    u64::from_le_bytes(client.call(b"Q").await.unwrap()[..8].try_into().unwrap())
}

async fn eventually_async(timeout: Duration, mut cond: impl AsyncFnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cond().await
}

#[test]
fn many_tasks_each_get_their_own_answer() {
    let dir = TestDir::new("tasks");
    let mut server = start(&dir, "server");
    runtime().block_on(async {
        let client = AsyncClient::connect_with(SERVICE, config(&dir))
            .await
            .unwrap();
        let tasks: Vec<_> = (0..64u64)
            .map(|t| {
                let client = client.clone();
                tokio::spawn(async move {
                    for i in 0..200u64 {
                        let data = pattern(t * 1_000_000 + i, ((t + i) % 300) as usize);
                        let mut req = vec![b'E'];
                        req.extend_from_slice(&data);
                        let resp = client.call(&req).await.expect("call");
                        assert!(
                            *resp == *transform(&data),
                            "task {t} call {i} got someone else's answer"
                        );
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(client.stats().calls_ok, 64 * 200);
        assert_eq!(client.stats().calls_failed, 0);
        // Fragmented requests and answers (larger than a ring) go through the blocking pool.
        let big = pattern(7, 3 * TEST_RING as usize + 5);
        let mut req = vec![b'E'];
        req.extend_from_slice(&big);
        assert!(*client.call(&req).await.unwrap() == *transform(&big));
        // Notifications go out too (one-way; the next call proves the connection is fine).
        client.notify(b"hello").await.unwrap();
        assert_eq!(&*client.call(b"Eab").await.unwrap(), b"bc");
    });
    stop_child(&mut server);
}

#[test]
fn async_and_blocking_callers_share_one_client() {
    let dir = TestDir::new("mixed");
    let mut server = start(&dir, "server");
    let client = Client::connect_with(SERVICE, config(&dir)).unwrap();
    let blocking: Vec<_> = (0..3u64)
        .map(|t| {
            let client = client.clone();
            std::thread::spawn(move || {
                for i in 0..2000u64 {
                    let data = pattern(t << 40 | i, (i % 100) as usize);
                    let mut req = vec![b'E'];
                    req.extend_from_slice(&data);
                    assert!(*client.call(&req).unwrap() == *transform(&data));
                }
            })
        })
        .collect();
    let async_client = AsyncClient::from(client.clone());
    runtime().block_on(async {
        let tasks: Vec<_> = (0..8u64)
            .map(|t| {
                let client = async_client.clone();
                tokio::spawn(async move {
                    for i in 0..1000u64 {
                        let data = pattern(t << 50 | i, (i % 200) as usize);
                        let mut req = vec![b'E'];
                        req.extend_from_slice(&data);
                        assert!(*client.call(&req).await.unwrap() == *transform(&data));
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    for t in blocking {
        t.join().unwrap();
    }
    assert_eq!(client.stats().calls_ok, 6000 + 8000);
    stop_child(&mut server);
}

async fn read_all(stream: &mut AsyncStreamReceiver, size: usize, slow: bool) -> u64 {
    let mut n = 0u64;
    while let Some(item) = stream.next_item().await.transpose() {
        let item = item.expect("stream item");
        assert!(item == pattern(n, size), "stream item {n}");
        n += 1;
        if slow && n.is_multiple_of(256) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    n
}

#[test]
fn async_streams_deliver_every_item_then_end() {
    let dir = TestDir::new("stream");
    let mut server = start(&dir, "server");
    runtime().block_on(async {
        let client = AsyncClient::connect_with(SERVICE, config(&dir))
            .await
            .unwrap();
        let mut stream = client.stream(&stream_request(100, 1000)).await.unwrap();
        assert_eq!(read_all(&mut stream, 1000, false).await, 100);
        // The end is sticky.
        assert_eq!(stream.next_item().await.unwrap(), None);
        // A stream far larger than the client's queue, read slowly: backpressure, no loss.
        let mut stream = client.stream(&stream_request(6000, 1000)).await.unwrap();
        assert_eq!(read_all(&mut stream, 1000, true).await, 6000);
        // futures_core::Stream: poll it through the trait.
        let mut stream = client.stream(&stream_request(10, 8)).await.unwrap();
        let mut n = 0;
        while let Some(item) = std::future::poll_fn(|cx| {
            futures_core::Stream::poll_next(std::pin::Pin::new(&mut stream), cx)
        })
        .await
        {
            assert_eq!(item.unwrap(), pattern(n, 8));
            n += 1;
        }
        assert_eq!(n, 10);
        // Calls still work, and every slot came back.
        assert_eq!(&*client.call(b"Exy").await.unwrap(), b"yz");
    });
    stop_child(&mut server);
}

#[test]
fn dropping_a_call_future_frees_its_slot_and_cancels_it() {
    let dir = TestDir::new("dropcall");
    let mut server = start(&dir, "server");
    let mut cfg = config(&dir);
    cfg.max_in_flight = 4;
    runtime().block_on(async {
        let client = AsyncClient::connect_with(SERVICE, cfg).await.unwrap();
        let before = cancellations(&client).await;
        // 20 calls the server never answers, each dropped mid-flight: 5 times the slots.
        for _ in 0..20 {
            let r = tokio::time::timeout(Duration::from_millis(5), client.call(b"W")).await;
            assert!(r.is_err(), "the call must still be pending when dropped");
        }
        // call_timeout drops its call the same way and says so.
        match client.call_timeout(b"W", Duration::from_millis(5)).await {
            Err(Error::Timeout(_)) => {}
            other => panic!("expected a timeout, got {other:?}"),
        }
        // The server saw every cancellation.
        assert!(
            eventually_async(Duration::from_secs(10), async || cancellations(&client)
                .await
                == before + 21)
            .await,
            "the server observed {} of 21 cancellations",
            cancellations(&client).await - before
        );
        // No slot leaked: 40 more calls than there are slots, 4 at a time.
        let calls: Vec<_> = (0..40u8)
            .map(|i| {
                let c = client.clone();
                tokio::spawn(async move { c.call(&[b'E', i]).await.map(|r| r.to_vec()) })
            })
            .collect();
        for (i, c) in calls.into_iter().enumerate() {
            assert_eq!(c.await.unwrap().unwrap(), vec![i as u8 + 1]);
        }
        assert_eq!(client.stats().calls_failed, 21);
    });
    stop_child(&mut server);
}

#[test]
fn dropping_an_async_stream_cancels_it_on_the_server() {
    let dir = TestDir::new("dropstream");
    let mut server = start(&dir, "async-server");
    runtime().block_on(async {
        let client = AsyncClient::connect_with(SERVICE, config(&dir))
            .await
            .unwrap();
        let before = cancellations(&client).await;
        let mut stream = client.stream(b"I").await.unwrap();
        for i in 0..100 {
            assert_eq!(stream.next_item().await.unwrap().unwrap(), pattern(i, 64));
        }
        drop(stream);
        assert!(
            eventually_async(Duration::from_secs(10), async || cancellations(&client)
                .await
                == before + 1)
            .await,
            "the async handler did not observe the stream's cancellation"
        );
        // The connection is still healthy.
        assert_eq!(&*client.call(b"Eab").await.unwrap(), b"bc");
    });
    stop_child(&mut server);
}

#[test]
fn async_server_answers_blocking_and_async_clients() {
    let dir = TestDir::new("aserver");
    let mut server = start(&dir, "async-server");
    // A blocking client.
    let client = Client::connect_with(SERVICE, config(&dir)).unwrap();
    assert_eq!(&*client.call(b"Eabc").unwrap(), b"bcd");
    assert_eq!(&*client.call(b"Rabc").unwrap(), b"bcd");
    match client.call(b"Xno such method") {
        Err(Error::Remote { code, message }) => {
            assert_eq!(code, ErrorCode(0x8000_0001));
            assert_eq!(message, "no such method");
        }
        other => panic!("expected a remote error, got {other:?}"),
    }
    assert!(
        matches!(
            client.call(b"D"),
            Err(Error::Remote {
                code: ErrorCode::HANDLER_FAILED,
                ..
            })
        ),
        "a request the async handler drops is answered with an error"
    );
    let mut stream = client.stream(&stream_request(50, 100)).unwrap();
    let mut n = 0;
    while let Some(item) = stream.next_item().unwrap() {
        assert_eq!(item, pattern(n, 100));
        n += 1;
    }
    assert_eq!(n, 50);
    // Large answers go out in fragments.
    let big = pattern(3, 2 * TEST_RING as usize);
    let mut req = vec![b'E'];
    req.extend_from_slice(&big);
    assert!(*client.call(&req).unwrap() == *transform(&big));
    // A blocking caller's timeout reaches the async handler as a cancellation.
    let q = |c: &Client| u64::from_le_bytes(c.call(b"Q").unwrap()[..8].try_into().unwrap());
    let before = q(&client);
    assert!(matches!(
        client.call_timeout(b"W", Duration::from_millis(20)),
        Err(Error::Timeout(_))
    ));
    assert!(eventually(Duration::from_secs(10), || q(&client) == before + 1));

    // Async clients, many at once.
    runtime().block_on(async {
        let client = AsyncClient::connect_with(SERVICE, config(&dir))
            .await
            .unwrap();
        let tasks: Vec<_> = (0..32u64)
            .map(|t| {
                let client = client.clone();
                tokio::spawn(async move {
                    for i in 0..100u64 {
                        let data = pattern(t << 20 | i, (i % 50) as usize);
                        let mut req = vec![if i % 2 == 0 { b'E' } else { b'R' }];
                        req.extend_from_slice(&data);
                        assert!(*client.call(&req).await.unwrap() == *transform(&data));
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let mut stream = client.stream(&stream_request(3000, 500)).await.unwrap();
        assert_eq!(read_all(&mut stream, 500, true).await, 3000);
        // A dropped async call reaches the async handler as a cancellation.
        let before = cancellations(&client).await;
        assert!(
            tokio::time::timeout(Duration::from_millis(20), client.call(b"W"))
                .await
                .is_err()
        );
        assert!(
            eventually_async(Duration::from_secs(10), async || cancellations(&client)
                .await
                == before + 1)
            .await
        );
    });
    stop_child(&mut server);
}

#[test]
fn server_death_fails_pending_async_calls() {
    let dir = TestDir::new("death");
    let mut server = start(&dir, "server");
    let rt = runtime();
    let mut cfg = config(&dir);
    cfg.reconnect = false;
    let client = rt
        .block_on(AsyncClient::connect_with(SERVICE, cfg))
        .unwrap();
    let pending: Vec<_> = (0..8)
        .map(|_| {
            let c = client.clone();
            rt.spawn(async move { c.call(b"W").await.map(|r| r.to_vec()) })
        })
        .collect();
    let mut stream = rt.block_on(client.stream(b"T")).unwrap();
    let first = rt.block_on(async { stream.next_item().await.unwrap().unwrap() });
    assert_eq!(first, b"first");
    // Kill the server once it holds the 8 calls and the stream: all in flight.
    assert!(
        eventually(Duration::from_secs(10), || server_metric(
            dir.path(),
            SERVICE,
            "ferry_server_requests_in_flight"
        ) == 9.0),
        "the server never had the 8 calls and the stream in flight"
    );
    let killed = Instant::now();
    kill9(&mut server);
    rt.block_on(async {
        for p in pending {
            let r = tokio::time::timeout(Duration::from_secs(5), p)
                .await
                .expect("a pending async call hung after the server died")
                .unwrap();
            match r {
                Err(Error::Closed(why)) => assert!(why.contains("server"), "{why}"),
                other => panic!("expected Closed, got {other:?}"),
            }
        }
        // The open stream ends with the same clear error.
        let end = tokio::time::timeout(Duration::from_secs(5), stream.next_item())
            .await
            .expect("the stream hung after the server died");
        assert!(matches!(end, Err(Error::Closed(_))), "stream end: {end:?}");
        // New calls fail at once, saying why.
        assert!(matches!(client.call(b"Ex").await, Err(Error::Closed(_))));
    });
    println!(
        "pending async calls failed {:?} after SIGKILL",
        killed.elapsed()
    );
}

#[test]
fn zero_copy_call_with_and_respond_with() {
    let dir = TestDir::new("zerocopy");
    let mut server = start(&dir, "server");
    let client = Client::connect_with(SERVICE, config(&dir)).unwrap();
    let ring = TEST_RING as usize;
    // call_with: the request is written in place; sizes from one record to fragments.
    for size in [0usize, 1, 1000, ring / 4 - 64, ring - 1, 3 * ring + 7] {
        let data = pattern(size as u64, size);
        let resp = client
            .call_with(size + 1, |buf| {
                assert_eq!(buf.len(), size + 1, "fill gets exactly len bytes");
                buf[0] = b'E';
                buf[1..].copy_from_slice(&data);
            })
            .unwrap();
        assert!(*resp == *transform(&data), "call_with of {size} bytes");
    }
    // respond_with: the answer is written in place; in one record, and fragmented.
    for (size, seed) in [(0u32, 1u32), (1, 2), (4000, 3), (3 * TEST_RING + 1, 4)] {
        let mut req = vec![b'Z'];
        req.extend(size.to_le_bytes());
        req.extend(seed.to_le_bytes());
        let resp = client.call(&req).unwrap();
        assert!(
            *resp == *pattern(u64::from(seed), size as usize),
            "respond_with of {size} bytes"
        );
    }
    // Many in-place answers while the ring is busy (some find it full and are staged).
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let c = client.clone();
            std::thread::spawn(move || {
                for i in 0..200u32 {
                    let size = (i * 97 + t * 13) % 20_000;
                    let mut req = vec![b'Z'];
                    req.extend(size.to_le_bytes());
                    req.extend((t * 1000 + i).to_le_bytes());
                    let resp = c.call(&req).unwrap();
                    assert!(*resp == *pattern(u64::from(t * 1000 + i), size as usize));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // The async call_with.
    runtime().block_on(async {
        let client = AsyncClient::from(client.clone());
        for size in [5usize, 3 * ring] {
            let data = pattern(9, size);
            let resp = client
                .call_with(size + 1, |buf| {
                    buf[0] = b'E';
                    buf[1..].copy_from_slice(&data);
                })
                .await
                .unwrap();
            assert!(
                *resp == *transform(&data),
                "async call_with of {size} bytes"
            );
        }
    });
    stop_child(&mut server);
}

#[test]
fn serve_outside_a_runtime_says_so() {
    let dir = TestDir::new("nort");
    match serve(
        "nort",
        server_config(dir.path()),
        |_req: AsyncRequest| async { Reply::Answered },
    ) {
        Err(e) => assert!(
            e.to_string().contains("inside a tokio runtime"),
            "unclear error: {e}"
        ),
        Ok(_) => panic!("serve must refuse to start outside a runtime"),
    }
}
