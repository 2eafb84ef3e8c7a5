//! The envelope and method ids as docs/rpc.md specifies them: the example bytes, FNV-1a ids,
//! and every malformed envelope refused with a message.

use ferry_rpc::envelope::{
    CodecId, ENVELOPE_LEN, Envelope, FLAG_ACCEPTS_LZ4, FLAG_LZ4, MessageKind, assert_unique_ids,
};
use ferry_rpc::{RpcError, method_id};

#[test]
fn method_ids_are_fnv1a_of_service_dot_method() {
    assert_eq!(method_id("Engine", "complete"), 0xec2b_907c);
    // FNV-1a of the empty string is the offset basis; of "." alone, one round.
    assert_eq!(
        method_id("", ""),
        (0x811c_9dc5u32 ^ u32::from(b'.')).wrapping_mul(0x0100_0193)
    );
    assert_ne!(
        method_id("Engine", "complete"),
        method_id("Engine", "completes")
    );
    assert_ne!(
        method_id("Engine", "complete"),
        method_id("Engin", "ecomplete")
    );
    const IDS: [u32; 2] = [method_id("A", "x"), method_id("A", "y")];
    const _: () = assert_unique_ids("A", &IDS);
}

#[test]
#[should_panic(expected = "same method id")]
fn duplicate_ids_are_refused() {
    // In a const item (as the macro emits) this is a compile error; at run time, a panic.
    assert_unique_ids("A", &[1, 2, 1]);
}

#[test]
fn the_documented_example_encodes_byte_for_byte() {
    let mut env = Envelope::new(
        MessageKind::Call,
        CodecId::Postcard,
        method_id("Engine", "complete"),
    );
    env.flags = FLAG_ACCEPTS_LZ4;
    env.budget_us = 2_000_000;
    let bytes = env.to_bytes();
    assert_eq!(
        bytes,
        [
            0x01, 0x00, 0x01, 0x02, 0x7c, 0x90, 0x2b, 0xec, 0x80, 0x84, 0x1e, 0x00, 0, 0, 0, 0
        ]
    );
    let mut message = bytes.to_vec();
    message.extend_from_slice(b"body");
    let (back, body) = Envelope::read(&message).unwrap();
    assert_eq!(back, env);
    assert_eq!(body, b"body");
    assert_eq!(ENVELOPE_LEN, 16);
}

#[test]
fn malformed_envelopes_are_refused_with_a_reason() {
    let good = Envelope::new(MessageKind::Response, CodecId::Json, 7).to_bytes();
    let refuse = |bytes: &[u8], why: &str| match Envelope::read(bytes) {
        Err(RpcError::BadEnvelope(m)) => assert!(m.contains(why), "{m:?} should say {why:?}"),
        other => panic!("expected BadEnvelope({why}), got {other:?}"),
    };
    refuse(&good[..15], "shorter than the 16-byte envelope");
    let mut b = good;
    b[0] = 2;
    refuse(&b, "version 2");
    let mut b = good;
    b[1] = 6;
    refuse(&b, "unknown message kind 6");
    let mut b = good;
    b[2] = 4;
    refuse(&b, "unknown codec id 4");
    let mut b = good;
    b[3] = 0x04;
    refuse(&b, "unknown flags");
    let mut b = good;
    b[12] = 1;
    refuse(&b, "not compressed");
    let mut b = good;
    b[3] = FLAG_LZ4;
    b[12] = 1;
    assert!(Envelope::read(&b).is_ok());
}
