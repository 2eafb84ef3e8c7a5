//! Bad input gets a typed error answer and the connection stays up: an unknown method, a body
//! that does not decode as the method's type (postcard, rkyv, JSON), a malformed envelope, a
//! request of the wrong kind, a compression bomb. Blocking and async servers.

mod common;

use common::engine::*;
use ferry_rpc::envelope::{CodecId, Envelope, FLAG_LZ4, MessageKind};
use ferry_rpc::{RpcError, code};

/// A newer definition of the same service: one method more.
mod newer {
    #[ferry_rpc::service]
    pub trait Engine {
        fn brand_new(x: u32) -> u32;
        #[notification]
        fn new_note(x: u32);
    }
}

fn raw_call(client: &EngineClient, bytes: &[u8]) -> (u32, String) {
    match client.client().transport().call(bytes) {
        Err(ferry_transport::Error::Remote { code, message }) => (code.0, message),
        Ok(r) => panic!("expected an error answer, got {} bytes", r.len()),
        Err(e) => panic!("expected an error answer, got {e}"),
    }
}

fn message(kind: MessageKind, codec: CodecId, method: u32, body: &[u8]) -> Vec<u8> {
    let mut m = Envelope::new(kind, codec, method).to_bytes().to_vec();
    m.extend_from_slice(body);
    m
}

fn still_up(client: &EngineClient) {
    let req = CompletionRequest {
        path: "p",
        line: 1,
        column: 2,
        prefix: "x",
        suffix: b"",
    };
    assert_eq!(client.complete(&req).unwrap(), complete_answer(&req));
}

fn exercise(client: &EngineClient) {
    let complete = ferry_rpc::method_id("Engine", "complete");

    // Unknown method: a typed error naming the method, its id and the service.
    let newer = newer::EngineClient::from_client(client.client().clone());
    match newer.brand_new(&1) {
        Err(RpcError::UnknownMethod {
            service,
            method,
            id,
        }) => {
            assert_eq!((service, method), ("Engine", "brand_new"));
            assert_eq!(id, ferry_rpc::method_id("Engine", "brand_new"));
            let text = newer.brand_new(&1).unwrap_err().to_string();
            assert!(
                text.contains("brand_new") && text.contains("Engine"),
                "{text}"
            );
        }
        other => panic!("expected UnknownMethod, got {other:?}"),
    }
    // An unknown notification is dropped; the connection goes on.
    newer.new_note(&5).unwrap();
    still_up(client);
    let (c, m) = raw_call(
        client,
        &message(MessageKind::Call, CodecId::Postcard, 0xdead_beef, b""),
    );
    assert_eq!(c, code::UNKNOWN_METHOD);
    assert!(m.contains("Engine") && m.contains("0xdeadbeef"), "{m}");

    // A postcard body that is not a CompletionRequest: a string of invalid UTF-8.
    let (c, m) = raw_call(
        client,
        &message(
            MessageKind::Call,
            CodecId::Postcard,
            complete,
            &[3, 0xff, 0xfe, 0xfd],
        ),
    );
    assert_eq!(c, code::BAD_REQUEST);
    assert!(
        m.contains("Engine.complete") && m.contains("CompletionRequest"),
        "{m}"
    );
    // A length running past the end.
    let (c, _) = raw_call(
        client,
        &message(
            MessageKind::Call,
            CodecId::Postcard,
            complete,
            &[0x80, 0x80, 0x04, b'a'],
        ),
    );
    assert_eq!(c, code::BAD_REQUEST);
    still_up(client);

    // rkyv: bytes that are not a valid archive of ScoreRequest.
    let score = ferry_rpc::method_id("Engine", "score");
    for junk in [vec![], vec![0xffu8; 7], vec![0xa5u8; 64]] {
        let (c, m) = raw_call(
            client,
            &message(MessageKind::Call, CodecId::Rkyv, score, &junk),
        );
        assert_eq!(c, code::BAD_REQUEST, "{m}");
        assert!(m.contains("Engine.score"), "{m}");
    }
    // JSON: not JSON, and JSON of the wrong shape.
    let hover = ferry_rpc::method_id("Engine", "hover");
    for junk in [&b"{not json"[..], br#"{"path": 3}"#] {
        let (c, m) = raw_call(
            client,
            &message(MessageKind::Call, CodecId::Json, hover, junk),
        );
        assert_eq!(c, code::BAD_REQUEST, "{m}");
        assert!(m.contains("Engine.hover") && m.contains("json"), "{m}");
    }
    // The wrong codec for the method.
    let (c, m) = raw_call(
        client,
        &message(MessageKind::Call, CodecId::Json, complete, b"{}"),
    );
    assert_eq!(c, code::BAD_REQUEST);
    assert!(m.contains("postcard"), "{m}");
    // A call to a stream method.
    let chat = ferry_rpc::method_id("Engine", "chat");
    let (c, m) = raw_call(
        client,
        &message(MessageKind::Call, CodecId::Postcard, chat, &[0, 0, 0]),
    );
    assert_eq!(c, code::BAD_REQUEST);
    assert!(m.contains("Engine.chat"), "{m}");
    still_up(client);

    // Malformed envelopes.
    let (c, m) = raw_call(client, b"short");
    assert_eq!(c, code::BAD_ENVELOPE);
    assert!(m.contains("shorter than"), "{m}");
    let mut bad = message(MessageKind::Call, CodecId::Postcard, complete, b"");
    bad[0] = 9;
    assert_eq!(raw_call(client, &bad).0, code::BAD_ENVELOPE);
    let mut bad = message(MessageKind::Call, CodecId::Postcard, complete, b"");
    bad[2] = 77;
    assert_eq!(raw_call(client, &bad).0, code::BAD_ENVELOPE);
    let mut bad = message(MessageKind::Call, CodecId::Postcard, complete, b"");
    bad[3] = 0x80;
    assert_eq!(raw_call(client, &bad).0, code::BAD_ENVELOPE);
    let bad = message(MessageKind::Response, CodecId::Postcard, complete, b"");
    assert_eq!(raw_call(client, &bad).0, code::BAD_ENVELOPE);

    // A compression bomb: 40 bytes that claim 3 GiB once decompressed. Refused before any
    // allocation, with the limit named.
    let mut env = Envelope::new(
        MessageKind::Call,
        CodecId::Raw,
        ferry_rpc::method_id("Engine", "analyze"),
    );
    env.flags = FLAG_LZ4;
    env.uncompressed_len = 3 << 30;
    let mut bomb = env.to_bytes().to_vec();
    bomb.extend_from_slice(&[
        0x1f, 0, 1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    ]);
    let (c, m) = raw_call(client, &bomb);
    assert_eq!(c, code::BAD_ENVELOPE);
    assert!(m.contains("max_decompressed"), "{m}");
    // Compressed data that does not come to the size it claims.
    env.uncompressed_len = 1000;
    let mut liar = env.to_bytes().to_vec();
    liar.extend_from_slice(&[0x50, b'a', b'b', b'c', b'd', b'e']);
    assert_eq!(raw_call(client, &liar).0, code::BAD_ENVELOPE);

    still_up(client);
}

#[test]
fn blocking_server_answers_bad_input_with_typed_errors() {
    let (_dir, _server, client) = blocking_engine("rpc-bad");
    exercise(&client);
}

#[test]
fn async_server_answers_bad_input_with_typed_errors() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_dir, _server, client) = async_engine(&rt, "rpc-bad-async");
    exercise(&client);
}
