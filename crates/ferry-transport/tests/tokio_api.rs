//! The tokio API's smaller surfaces, server and client in this process: every way an async
//! handler answers (`Reply` from bytes, `()`, a `Result`; `respond_error`; a stream that fails),
//! what it learns about its request, the async client's accessors, a notification larger than
//! one ring record, and a stream dropped outside the runtime.

#![cfg(all(
    feature = "tokio",
    any(target_os = "linux", target_os = "macos", windows)
))]

mod common;

use std::time::Duration;

use common::*;
use ferry_transport::tokio::{AsyncClient, AsyncRequest, Reply, serve};
use ferry_transport::{Error, ErrorCode};
use futures_core::FusedStream;

const SERVICE: &str = "tokio-api";

async fn handle(mut req: AsyncRequest) -> Reply {
    match req.payload() {
        b"vec" => Reply::from(b"from a Vec".to_vec()),
        b"ok" => Ok::<_, (ErrorCode, String)>(b"from Ok".to_vec()).into(),
        b"err" => Err::<Vec<u8>, _>((ErrorCode(0x8000_0021), "from Err".to_owned())).into(),
        b"respond_error" => {
            assert!(!req.is_cancelled());
            req.respond_error(ErrorCode(0x8000_0022), "through the request")
                .await
                .unwrap();
            ().into()
        }
        b"who" => {
            let pid = req.connection().peer_pid();
            Reply::Bytes(pid.to_string().into_bytes())
        }
        b"failing stream" => {
            let stream = req.into_stream();
            stream.send(b"one").await.unwrap();
            stream
                .fail(ErrorCode(0x8000_0023), "the stream failed")
                .await
                .unwrap();
            Reply::Answered
        }
        b"endless" => {
            let stream = req.into_stream();
            tokio::spawn(async move {
                let mut i = 0u64;
                while stream.send(&pattern(i, 100)).await.is_ok() {
                    i += 1;
                }
            });
            Reply::Answered
        }
        _ => Reply::Bytes(req.take_payload()),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn remote(r: Result<impl std::fmt::Debug, Error>) -> (ErrorCode, String) {
    match r {
        Err(Error::Remote { code, message }) => (code, message),
        other => panic!("expected a remote error, got {other:?}"),
    }
}

#[test]
fn every_way_an_async_handler_answers() {
    let dir = TestDir::new("answers");
    let rt = runtime();
    let _server = rt
        .block_on(async {
            let mut cfg = server_config(dir.path());
            cfg.limits = small_rings(cfg.limits);
            serve(SERVICE, cfg, handle)
        })
        .unwrap();
    let mut cfg = client_config(dir.path());
    cfg.limits = small_rings(cfg.limits);
    let client = rt
        .block_on(AsyncClient::connect_with(SERVICE, cfg))
        .unwrap();
    rt.block_on(async {
        assert_eq!(&*client.call(b"vec").await.unwrap(), b"from a Vec");
        assert_eq!(&*client.call(b"ok").await.unwrap(), b"from Ok");
        assert_eq!(
            remote(client.call(b"err").await),
            (ErrorCode(0x8000_0021), "from Err".to_owned())
        );
        assert_eq!(
            remote(client.call(b"respond_error").await),
            (ErrorCode(0x8000_0022), "through the request".to_owned())
        );
        assert_eq!(
            &*client.call(b"who").await.unwrap(),
            std::process::id().to_string().as_bytes()
        );
        assert_eq!(&*client.call(b"echo").await.unwrap(), b"echo");

        let mut stream = client.stream(b"failing stream").await.unwrap();
        assert_eq!(stream.next_item().await.unwrap().unwrap(), b"one");
        assert!(!stream.is_terminated());
        assert_eq!(
            remote(stream.next_item().await),
            (ErrorCode(0x8000_0023), "the stream failed".to_owned())
        );
        assert!(stream.is_terminated(), "a failed stream is over");
        assert_eq!(stream.next_item().await.unwrap(), None);

        // A stream cancelled by its reader.
        let mut stream = client.stream(b"endless").await.unwrap();
        assert_eq!(stream.next_item().await.unwrap().unwrap(), pattern(0, 100));
        stream.cancel();
        assert_eq!(&*client.call(b"after").await.unwrap(), b"after");
    });
}

#[test]
fn the_async_client_accessors_and_a_notification_larger_than_a_record() {
    let dir = TestDir::new("accessors");
    // A blocking server counting notifications, the client async.
    let notified = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    struct Count(std::sync::Arc<std::sync::Mutex<Vec<usize>>>);
    impl ferry_transport::Handler for Count {
        fn on_request(&self, r: ferry_transport::Request<'_>) {
            let _ = r.respond(b"");
        }
        fn on_notification(&self, _: &ferry_transport::Connection, payload: &[u8]) {
            self.0.lock().unwrap().push(payload.len());
        }
    }
    let mut cfg = server_config(dir.path());
    cfg.limits = small_rings(cfg.limits);
    let _server = ferry_transport::Server::bind(SERVICE, cfg, Count(notified.clone())).unwrap();
    let rt = runtime();
    let mut cfg = client_config(dir.path());
    cfg.limits = small_rings(cfg.limits);
    let client = rt
        .block_on(AsyncClient::connect_with(SERVICE, cfg))
        .unwrap();
    assert!(client.is_connected());
    assert_eq!(
        client.limits().unwrap().client_to_server_ring_bytes,
        TEST_RING
    );
    assert!(client.blocking().is_connected());
    // Three times the ring: it goes in fragments, from the blocking pool.
    let big = pattern(7, 3 * TEST_RING as usize);
    rt.block_on(client.notify(&big)).unwrap();
    rt.block_on(client.notify(b"small")).unwrap();
    assert!(eventually(Duration::from_secs(5), || {
        *notified.lock().unwrap() == [big.len(), 5]
    }));
    client.close();
    assert!(!client.is_connected());
    // The next call connects again.
    let r = rt.block_on(client.call(b"after close")).map(|r| r.to_vec());
    assert_eq!(r.unwrap(), b"");
    assert!(client.is_connected());
    assert_eq!(client.stats().connects, 2);
}

#[test]
fn a_stream_dropped_outside_the_runtime_is_cancelled() {
    let dir = TestDir::new("outside");
    let rt = runtime();
    let server = rt
        .block_on(async { serve(SERVICE, server_config(dir.path()), handle) })
        .unwrap();
    let client = rt
        .block_on(AsyncClient::connect_with(
            SERVICE,
            client_config(dir.path()),
        ))
        .unwrap();
    let mut stream = rt.block_on(client.stream(b"endless")).unwrap();
    rt.block_on(async {
        assert_eq!(stream.next_item().await.unwrap().unwrap(), pattern(0, 100));
    });
    // Not inside `block_on`: no runtime to hand the Cancel to, so it is sent from here.
    drop(stream);
    assert!(
        eventually(Duration::from_secs(5), || metric(
            &server.metrics_text(),
            r#"ferry_server_messages_received_total{kind="cancel"}"#
        ) == Some(1.0)),
        "the server never got the Cancel"
    );
}

child_entry!(|role, dir| {
    assert_eq!(role, "default-dir");
    assert_eq!(std::env::var_os("FERRY_RUNTIME_DIR"), Some(dir.into()));
    let client = runtime()
        .block_on(AsyncClient::connect(SERVICE))
        .expect("connect with the default runtime directory");
    println!("CONNECTED {}", client.is_connected());
});

/// `FERRY_RUNTIME_DIR` is the default runtime directory on Linux and macOS only (Windows pipe
/// names have no directory).
#[cfg(unix)]
#[test]
fn async_connect_finds_the_server_in_the_default_runtime_directory() {
    let dir = TestDir::new("default-dir");
    let rt = runtime();
    let _server = rt
        .block_on(async { serve(SERVICE, server_config(dir.path()), handle) })
        .unwrap();
    let mut child = spawn("default-dir", dir.path(), &[]);
    assert_eq!(
        wait_line(&mut child, "CONNECTED ", Duration::from_secs(20)),
        "true"
    );
    assert!(child.wait().unwrap().success());
}
