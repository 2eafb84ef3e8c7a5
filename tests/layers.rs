//! The layers compose through the facade: frames encoded in place in a ring record (the
//! transport's zero-copy send path) decode on the consumer side, across the wrap, with the
//! sleep handshake telling the producer when the consumer must be woken.

use std::num::NonZeroU32;

use ferry::frame::{DecodeLimits, Flags, HEADER_LEN, Kind, decode, encode_header_in_place};
use ferry::ring::{self, SleepPrep};

#[test]
fn frames_travel_zero_copy_through_a_ring_across_the_wrap() {
    let (mut p, mut c) = ring::heap(4096).unwrap();
    let limits = DecodeLimits::new(4096);
    for i in 0..500u64 {
        let len = (i as usize * 37) % 700;
        let mut grant = p.try_reserve(HEADER_LEN + len).unwrap();
        let buf = grant.as_mut_slice();
        for (j, b) in buf[HEADER_LEN..].iter_mut().enumerate() {
            *b = (i as usize + j) as u8;
        }
        encode_header_in_place(buf, Kind::Request, Flags::NONE, i, len).unwrap();
        let _ = grant.commit();

        let record = c.try_peek().unwrap().expect("a record");
        let frame = decode(record.as_slice(), &limits).expect("a valid frame");
        assert_eq!(frame.header.kind(), Kind::Request);
        assert_eq!(frame.header.correlation_id(), i);
        assert_eq!(frame.payload.len(), len);
        assert!(
            frame
                .payload
                .iter()
                .enumerate()
                .all(|(j, &b)| b == (i as usize + j) as u8)
        );
        let _ = record.release();
    }
}

#[test]
fn a_sleeping_consumer_is_reported_to_the_producer_exactly_once() {
    let (mut p, mut c) = ring::heap(1024).unwrap();
    let token = NonZeroU32::new(2).unwrap();
    assert_eq!(c.prepare_sleep(token).unwrap(), SleepPrep::Sleep);
    let mut frame = [0u8; HEADER_LEN];
    encode_header_in_place(&mut frame, Kind::Ping, Flags::NONE, 1, 0).unwrap();
    let first = p.try_push(&frame).unwrap();
    assert!(
        first.is_needed() && first.token() == 2,
        "the first publish must wake the sleeper"
    );
    let second = p.try_push(&frame).unwrap();
    assert!(
        !second.is_needed(),
        "the token was taken: no second wake-up"
    );
}
