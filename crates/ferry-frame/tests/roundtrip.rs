//! Property tests: every kind round-trips through encode/decode for payloads
//! from 0 B to 1 MiB, and decoding arbitrary bytes never panics.

use ferry_frame::{
    DecodeLimits, Flags, Frame, HEADER_LEN, Kind, decode, encode, encode_header_in_place,
};
use proptest::prelude::*;

fn kind() -> impl Strategy<Value = Kind> {
    proptest::sample::select(Kind::ALL.to_vec())
}

/// Flags that are valid for `kind` with a payload of `len` bytes.
fn valid_flags(kind: Kind, len: usize, pick: u8) -> Flags {
    if !kind.is_fragmentable() {
        return Flags::NONE;
    }
    match pick % 3 {
        0 => Flags::NONE,
        1 => Flags::MORE,
        _ if len == 0 => Flags::ABORT,
        _ => Flags::MORE,
    }
}

fn check_roundtrip(kind: Kind, pick: u8, id: u64, payload: &[u8]) -> Result<(), TestCaseError> {
    let payload = if kind == Kind::Cancel {
        &[][..]
    } else {
        payload
    };
    let flags = valid_flags(kind, payload.len(), pick);
    let payload = if flags.contains(Flags::ABORT) {
        &[][..]
    } else {
        payload
    };
    let frame = Frame::new(kind, flags, id, payload).unwrap();
    let mut buf = vec![0u8; frame.encoded_len()];
    prop_assert_eq!(encode(&frame, &mut buf).unwrap(), buf.len());
    let limits = DecodeLimits::new(u32::try_from(payload.len()).unwrap());
    let back = decode(&buf, &limits).unwrap();
    prop_assert_eq!(back, frame);
    prop_assert_eq!(back.header.kind(), kind);
    prop_assert_eq!(back.header.flags(), flags);
    prop_assert_eq!(back.header.correlation_id(), id);
    prop_assert_eq!(back.payload, payload);

    // The zero-copy path produces the same bytes.
    let mut in_place = vec![0u8; buf.len()];
    in_place[HEADER_LEN..].copy_from_slice(payload);
    encode_header_in_place(&mut in_place, kind, flags, id, payload.len()).unwrap();
    prop_assert_eq!(in_place, buf);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn small_payloads_roundtrip(
        kind in kind(),
        pick in any::<u8>(),
        id in any::<u64>(),
        payload in proptest::collection::vec(any::<u8>(), 0..=4096),
    ) {
        check_roundtrip(kind, pick, id, &payload)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..=256)) {
        // Must return, never panic; on success re-encoding reproduces the input.
        if let Ok(frame) = decode(&bytes, &DecodeLimits::default()) {
            let mut out = vec![0; bytes.len()];
            prop_assert_eq!(encode(&frame, &mut out), Ok(bytes.len()));
            prop_assert_eq!(out, bytes);
        }
    }

    #[test]
    fn single_bit_flips_are_detected(
        kind in kind(),
        id in any::<u64>(),
        payload in proptest::collection::vec(any::<u8>(), 1..=512),
        bit in any::<proptest::sample::Index>(),
    ) {
        let payload = if kind == Kind::Cancel { Vec::new() } else { payload };
        let frame = Frame::new(kind, Flags::NONE, id, &payload).unwrap();
        let mut buf = vec![0u8; frame.encoded_len()];
        encode(&frame, &mut buf).unwrap();
        let bit = bit.index(buf.len() * 8);
        buf[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(decode(&buf, &DecodeLimits::default()).is_err());
    }
}

proptest! {
    // Large payloads: few cases, the machine has two cores.
    #![proptest_config(ProptestConfig::with_cases(4))]

    #[test]
    fn large_payloads_roundtrip(
        kind in kind(),
        pick in any::<u8>(),
        id in any::<u64>(),
        len in (512 * 1024usize)..=(1024 * 1024),
        seed in any::<u8>(),
    ) {
        let payload: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
        check_roundtrip(kind, pick, id, &payload)?;
    }
}

#[test]
fn exactly_one_mebibyte_every_kind() {
    let payload: Vec<u8> = (0..1024 * 1024).map(|i: usize| (i % 251) as u8).collect();
    for kind in Kind::ALL {
        check_roundtrip(kind, 0, u64::MAX, &payload).unwrap();
    }
}
