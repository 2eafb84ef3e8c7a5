//! The JSON codec is JSON-RPC 2.0's `params` / `result` byte for byte: a typed call of a
//! `#[codec(json)]` method, caught by a plain transport server standing in for a bridge, carries
//! exactly the `params` a JSON-RPC request of the same call holds, and the bridge's `result`
//! decodes as the typed answer. Error codes map as docs/rpc.md §10 says.

mod common;

use std::sync::{Arc, Mutex};

use common::engine::*;
use common::*;
use ferry_rpc::code;
use ferry_rpc::envelope::{CodecId, Envelope, MessageKind};
use ferry_rpc::json_rpc::{self, error_code};

#[test]
fn json_bodies_are_json_rpc_params_and_results() {
    let dir = TestDir::new("jsonrpc");
    let seen: Arc<Mutex<Vec<u8>>> = Arc::default();
    let hover_id = ferry_rpc::method_id("Engine", "hover");
    let _bridge = {
        let seen = seen.clone();
        ferry_transport::Server::bind(
            "rpc-jsonrpc",
            server_config(dir.path()),
            move |req: ferry_transport::Request<'_>| {
                let (env, body) = Envelope::read(req.payload()).unwrap();
                assert_eq!(
                    (env.kind, env.codec, env.method),
                    (MessageKind::Call, CodecId::Json, hover_id)
                );
                *seen.lock().unwrap() = body.to_vec();
                // What a JSON-RPC peer would answer, as the bridge would forward it.
                let answer: json_rpc::Response<serde_json::Value> = serde_json::from_str(
                    r#"{"jsonrpc":"2.0","id":1,"result":{"markdown":"**from json-rpc**"}}"#,
                )
                .unwrap();
                let mut out = Envelope::new(MessageKind::Response, CodecId::Json, hover_id)
                    .to_bytes()
                    .to_vec();
                serde_json::to_writer(&mut out, &answer.result.unwrap()).unwrap();
                let _ = req.respond(&out);
            },
        )
        .unwrap()
    };
    let client = engine_client(&dir, "rpc-jsonrpc");
    let params = HoverRequest {
        path: "src/lib.rs".into(),
        line: 12,
    };
    let hover = client.hover(&params).unwrap();
    assert_eq!(hover.markdown, "**from json-rpc**");

    let request = json_rpc::request(Some(1), "hover", &params);
    let text = serde_json::to_string(&request).unwrap();
    assert_eq!(
        text,
        r#"{"jsonrpc":"2.0","id":1,"method":"hover","params":{"path":"src/lib.rs","line":12}}"#
    );
    // The bytes the typed call carried are the request's `params`, as they stand in its text.
    let carried = String::from_utf8(seen.lock().unwrap().clone()).unwrap();
    assert_eq!(
        text,
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"hover","params":{carried}}}"#)
    );
}

#[test]
fn cancellation_progress_and_error_codes_map_to_json_rpc() {
    assert_eq!(
        serde_json::to_string(&json_rpc::cancel_request(7)).unwrap(),
        r#"{"jsonrpc":"2.0","method":"$/cancelRequest","params":{"id":7}}"#
    );
    assert_eq!(
        serde_json::to_string(&json_rpc::progress(7, Token("tok".into()))).unwrap(),
        r#"{"jsonrpc":"2.0","method":"$/progress","params":{"token":7,"value":"tok"}}"#
    );
    assert_eq!(error_code(code::UNKNOWN_METHOD), -32601);
    assert_eq!(error_code(code::BAD_REQUEST), -32602);
    assert_eq!(error_code(code::BAD_ENVELOPE), -32600);
    assert_eq!(error_code(code::BAD_RESPONSE), -32603);
    assert_eq!(error_code(code::DEADLINE_EXCEEDED), -32800);
    assert_eq!(error_code(2), -32800);
    assert_eq!(error_code(0x8000_0000 + 42), 42);
    assert_eq!(error_code(5), -32603);
}
