//! lz4 compression above a threshold, negotiated: the first request goes uncompressed (the
//! client does not know yet whether the server accepts lz4), later ones compressed, and answers
//! too; a side that does not accept lz4 never receives it. What was sent is read from the
//! transport's byte counters.

mod common;

use common::engine::*;
use common::*;
use ferry_rpc::RpcConfig;

/// The bytes this client sent in requests, from the transport's metrics text.
fn request_bytes(client: &EngineClient) -> u64 {
    let text = client.client().transport().metrics_text();
    text.lines()
        .find(|l| l.starts_with("ferry_client_sent_bytes_total{") && l.contains("request"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no request byte counter in:\n{text}"))
}

fn file() -> Vec<u8> {
    // 1 MiB of source-like text: compresses well.
    b"fn main() { println!(\"hello\"); }\n"
        .iter()
        .copied()
        .cycle()
        .take(1 << 20)
        .collect()
}

#[test]
fn bodies_above_the_threshold_are_compressed_once_the_peer_accepts_lz4() {
    let dir = TestDir::new("lz4");
    let _server = ferry_rpc::serve(
        "rpc-lz4",
        server_config(dir.path()),
        RpcConfig::compressing_above(4096),
        EngineServer::new(TestEngine::default()),
    )
    .unwrap();
    let client = EngineClient::connect_with(
        "rpc-lz4",
        client_config(dir.path()),
        RpcConfig::compressing_above(4096),
    )
    .unwrap();
    let file = file();
    let before = request_bytes(&client);
    assert_eq!(client.analyze(&file).unwrap(), analyze_answer(&file));
    let first = request_bytes(&client) - before;
    assert!(
        first > 1 << 20,
        "the first request goes as it is ({first} bytes)"
    );
    // Raw bytes go in place (call_with), uncompressed; a postcard body above the threshold is
    // compressed now that the server said it accepts lz4.
    let text = String::from_utf8(file.clone()).unwrap();
    let before = request_bytes(&client);
    let req = CompletionRequest {
        path: "big.rs",
        line: 1,
        column: 1,
        prefix: &text,
        suffix: b"",
    };
    assert_eq!(client.complete(&req).unwrap(), complete_answer(&req));
    let compressed = request_bytes(&client) - before;
    assert!(
        compressed < 64 << 10,
        "a 1 MiB compressible body took {compressed} bytes"
    );
    // A streamed answer's items and the notification path still work alongside.
    let n = client
        .chat(&ChatRequest {
            prompt: text[..10_000].to_owned(),
            tokens: 3,
            pace_ms: 0,
        })
        .unwrap()
        .count();
    assert_eq!(n, 3);
}

#[test]
fn a_side_that_refuses_lz4_never_receives_it() {
    let dir = TestDir::new("lz4-off");
    let _server = ferry_rpc::serve(
        "rpc-lz4-off",
        server_config(dir.path()),
        RpcConfig {
            accept_lz4: false,
            ..RpcConfig::compressing_above(4096)
        },
        EngineServer::new(TestEngine::default()),
    )
    .unwrap();
    let client = EngineClient::connect_with(
        "rpc-lz4-off",
        client_config(dir.path()),
        RpcConfig::compressing_above(4096),
    )
    .unwrap();
    let text = String::from_utf8(file()).unwrap();
    let req = CompletionRequest {
        path: "big.rs",
        line: 1,
        column: 1,
        prefix: &text,
        suffix: b"",
    };
    for _ in 0..3 {
        let before = request_bytes(&client);
        assert_eq!(client.complete(&req).unwrap(), complete_answer(&req));
        assert!(request_bytes(&client) - before > 1 << 20);
    }
}
