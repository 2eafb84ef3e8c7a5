//! Arbitrary bytes → decode. Must never panic; whatever decodes must re-encode
//! to the identical bytes, and the structured payload decoders must be total too.
#![no_main]

use ferry_frame::{
    DecodeError, DecodeLimits, ErrorPayload, HEADER_LEN, Hello, Kind, Welcome, crc, decode,
    decode_header, encode, offset,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check(data);
    // Random bytes almost never carry a valid CRC; patch it in so the fuzzer
    // also explores everything behind the CRC check.
    if data.len() >= HEADER_LEN {
        let mut patched = data.to_vec();
        patched[offset::CRC..offset::CRC + 4].fill(0);
        let c = crc::crc32c(&patched);
        patched[offset::CRC..offset::CRC + 4].copy_from_slice(&c.to_le_bytes());
        assert!(!matches!(
            decode(&patched, &DecodeLimits::default()),
            Err(DecodeError::CrcMismatch { .. })
        ));
        check(&patched);
    }
});

fn check(data: &[u8]) {
    // Small limit too, so the PayloadTooLarge path is reached.
    for limits in [DecodeLimits::default(), DecodeLimits::new(64)] {
        let header = decode_header(data, &limits);
        let Ok(frame) = decode(data, &limits) else {
            continue;
        };
        assert_eq!(header, Ok(frame.header));
        assert_eq!(frame.header.frame_len(), data.len());
        let mut out = vec![0u8; data.len()];
        assert_eq!(encode(&frame, &mut out), Ok(data.len()));
        assert_eq!(out, data, "re-encoding changed the bytes");

        match frame.header.kind() {
            Kind::Hello => {
                if let Ok(h) = Hello::decode(frame.payload) {
                    assert_eq!(&h.to_bytes()[..], frame.payload);
                }
            }
            Kind::Welcome => {
                if let Ok(w) = Welcome::decode(frame.payload) {
                    assert_eq!(&w.to_bytes()[..], frame.payload);
                }
            }
            Kind::ErrorResponse | Kind::Goodbye | Kind::Refuse => {
                if let Ok(e) = ErrorPayload::decode(frame.payload) {
                    let mut buf = vec![0u8; e.encoded_len()];
                    assert_eq!(e.encode(&mut buf), Ok(frame.payload.len()));
                    assert_eq!(buf, frame.payload);
                }
            }
            _ => {}
        }
    }
    // The payload decoders on raw bytes as well.
    let _ = Hello::decode(data);
    let _ = Welcome::decode(data);
    let _ = ErrorPayload::decode(data);
    let _ = ferry_frame::check_metrics_query(data);
    if let Ok(text) = ferry_frame::metrics_reply_text(data) {
        assert_eq!(text.as_bytes(), data);
    }
}
