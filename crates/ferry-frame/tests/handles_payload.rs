//! The Windows `Handles` payload: layout, round trip, and every rejection of untrusted bytes.

use ferry_frame::{EncodeError, HandleEntry, HandleRole, Handles, PayloadError};
use proptest::prelude::*;

fn entry(role: HandleRole, value: u64) -> HandleEntry {
    HandleEntry { role, value }
}

fn three() -> Handles {
    Handles::new(&[
        entry(HandleRole::SharedMemory, 0x40),
        entry(HandleRole::ServerDoorbell, 0x44),
        entry(HandleRole::ClientDoorbell, 0x7FFF_FFFC),
    ])
    .expect("valid handles")
}

#[test]
fn roundtrip_and_layout() {
    let h = three();
    let (bytes, len) = h.to_bytes();
    assert_eq!(len, 8 + 3 * 16);
    assert_eq!(&bytes[..8], &[3, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        &bytes[8..24],
        &[1, 0, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(&bytes[40..44], &[3, 0, 0, 0]);
    assert_eq!(&bytes[48..56], &0x7FFF_FFFCu64.to_le_bytes());
    let back = Handles::decode(&bytes[..len]).expect("decodes");
    assert_eq!(back, h);
    assert_eq!(back.get(HandleRole::ServerDoorbell), Some(0x44));
    assert_eq!(back.entries().len(), 3);
    let one = Handles::new(&[entry(HandleRole::ClientDoorbell, 4)]).unwrap();
    assert_eq!(one.get(HandleRole::SharedMemory), None);
    assert_eq!(one.encoded_len(), 24);
}

#[test]
fn encode_needs_room() {
    let h = three();
    let mut small = [0xAAu8; 10];
    assert_eq!(
        h.encode(&mut small),
        Err(EncodeError::BufferTooSmall {
            needed: 56,
            got: 10
        })
    );
    assert_eq!(small, [0xAA; 10], "nothing written on failure");
}

#[test]
fn construction_validates() {
    assert_eq!(
        Handles::new(&[]),
        Err(PayloadError::BadHandleCount { count: 0, max: 4 })
    );
    let five = [entry(HandleRole::SharedMemory, 4); 5];
    assert_eq!(
        Handles::new(&five),
        Err(PayloadError::BadHandleCount { count: 5, max: 4 })
    );
    assert_eq!(
        Handles::new(&[
            entry(HandleRole::SharedMemory, 4),
            entry(HandleRole::SharedMemory, 8)
        ]),
        Err(PayloadError::DuplicateHandleRole { role: 1 })
    );
    for bad in [0, 2, 1 << 31, u64::MAX, u64::MAX - 3] {
        assert_eq!(
            Handles::new(&[entry(HandleRole::ServerDoorbell, bad)]),
            Err(PayloadError::BadHandleValue {
                role: 2,
                value: bad
            }),
            "{bad:#x}"
        );
    }
}

#[test]
fn decode_rejects_malformed_payloads() {
    let (good, len) = three().to_bytes();
    let good = &good[..len];
    let with = |at: usize, b: u8| {
        let mut v = good.to_vec();
        v[at] = b;
        v
    };
    assert_eq!(
        Handles::decode(&[1, 0]),
        Err(PayloadError::WrongLength {
            what: "Handles",
            expected: 8,
            got: 2
        })
    );
    assert_eq!(
        Handles::decode(&with(0, 0)),
        Err(PayloadError::BadHandleCount { count: 0, max: 4 })
    );
    assert_eq!(
        Handles::decode(&with(0, 9)),
        Err(PayloadError::BadHandleCount { count: 9, max: 4 })
    );
    // A count that does not match the length, both ways.
    assert_eq!(
        Handles::decode(&with(0, 2)),
        Err(PayloadError::WrongLength {
            what: "Handles",
            expected: 40,
            got: 56
        })
    );
    assert_eq!(
        Handles::decode(&good[..55]),
        Err(PayloadError::WrongLength {
            what: "Handles",
            expected: 56,
            got: 55
        })
    );
    assert!(matches!(
        Handles::decode(&with(5, 1)),
        Err(PayloadError::ReservedNonZero {
            field: "reserved",
            ..
        })
    ));
    assert!(matches!(
        Handles::decode(&with(8 + 16 + 4, 1)),
        Err(PayloadError::ReservedNonZero {
            field: "entry reserved",
            ..
        })
    ));
    assert_eq!(
        Handles::decode(&with(8, 7)),
        Err(PayloadError::UnknownHandleRole { role: 7 })
    );
    assert_eq!(
        Handles::decode(&with(8 + 16, 1)),
        Err(PayloadError::DuplicateHandleRole { role: 1 })
    );
    let high = with(8 + 8 + 7, 0x80);
    let err = Handles::decode(&high).unwrap_err();
    assert!(
        matches!(err, PayloadError::BadHandleValue { role: 1, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("not a handle number"), "{err}");
    assert_eq!(
        Handles::decode(&with(8 + 8, 0x41)),
        Err(PayloadError::BadHandleValue {
            role: 1,
            value: 0x41
        })
    );
}

#[test]
fn roles_have_stable_wire_values() {
    for (role, v) in [
        (HandleRole::SharedMemory, 1),
        (HandleRole::ServerDoorbell, 2),
        (HandleRole::ClientDoorbell, 3),
    ] {
        assert_eq!(role.as_u32(), v);
        assert_eq!(HandleRole::from_u32(v), Some(role));
    }
    assert_eq!(HandleRole::from_u32(0), None);
    assert_eq!(HandleRole::from_u32(4), None);
}

proptest! {
    #[test]
    fn decode_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        // Any bytes: a valid payload that re-encodes to the same bytes, or an error.
        if let Ok(h) = Handles::decode(&bytes) {
            let (out, len) = h.to_bytes();
            prop_assert_eq!(&out[..len], &bytes[..]);
        }
    }
}
