//! Structured payloads: error payload, Hello, Welcome, negotiation.

use ferry_frame::{
    EncodeError, ErrorCode, ErrorPayload, Hello, Limits, MAX_SUPPORTED_VERSION,
    MIN_SUPPORTED_VERSION, PayloadError, ServerPolicy, Welcome, negotiate,
};
use proptest::prelude::*;

fn limits(base: u32) -> Limits {
    Limits {
        max_message_size: base,
        max_partial_messages: base + 1,
        max_buffered_bytes: base + 2,
        client_to_server_ring_bytes: base + 3,
        server_to_client_ring_bytes: base + 4,
    }
}

#[test]
fn error_payload_roundtrip_and_layout() {
    let e = ErrorPayload::new(ErrorCode::TIMEOUT, "took too long");
    let mut buf = [0u8; 64];
    let n = e.encode(&mut buf).unwrap();
    assert_eq!(n, 4 + "took too long".len());
    assert_eq!(&buf[..4], &7u32.to_le_bytes());
    assert_eq!(&buf[4..n], b"took too long");
    assert_eq!(ErrorPayload::decode(&buf[..n]).unwrap(), e);
    // Empty message is fine.
    assert_eq!(
        ErrorPayload::decode(&[1, 0, 0, 0]).unwrap(),
        ErrorPayload::new(ErrorCode::HANDLER_FAILED, "")
    );
}

#[test]
fn error_payload_errors() {
    for len in 0..4 {
        assert_eq!(
            ErrorPayload::decode(&[0; 3][..len]),
            Err(PayloadError::WrongLength {
                what: "error",
                expected: 4,
                got: len
            })
        );
    }
    let e = ErrorPayload::decode(&[0, 0, 0, 0, b'o', b'k', 0xFF]).unwrap_err();
    assert_eq!(e, PayloadError::InvalidUtf8 { valid_up_to: 2 });
    assert!(e.to_string().contains("UTF-8"));
    let mut small = [0xAAu8; 5];
    assert_eq!(
        ErrorPayload::new(ErrorCode::BUSY, "xy").encode(&mut small),
        Err(EncodeError::BufferTooSmall { needed: 6, got: 5 })
    );
    assert_eq!(small, [0xAA; 5]);
}

#[test]
fn error_code_names() {
    let named = [
        (ErrorCode::NORMAL, "NORMAL"),
        (ErrorCode::HANDLER_FAILED, "HANDLER_FAILED"),
        (ErrorCode::CANCELLED, "CANCELLED"),
        (ErrorCode::NOT_FOUND, "NOT_FOUND"),
        (ErrorCode::TOO_LARGE, "TOO_LARGE"),
        (ErrorCode::SHUTTING_DOWN, "SHUTTING_DOWN"),
        (ErrorCode::PROTOCOL_VIOLATION, "PROTOCOL_VIOLATION"),
        (ErrorCode::TIMEOUT, "TIMEOUT"),
        (ErrorCode::INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        (ErrorCode::BUSY, "BUSY"),
        (ErrorCode::VERSION_UNSUPPORTED, "VERSION_UNSUPPORTED"),
        (ErrorCode::LIMITS_UNACCEPTABLE, "LIMITS_UNACCEPTABLE"),
        (ErrorCode::REFUSED, "REFUSED"),
    ];
    for (code, name) in named {
        assert_eq!(code.name(), Some(name));
        assert_eq!(format!("{code:?}"), format!("ErrorCode::{name}"));
        assert_eq!(code.to_string(), format!("{name} ({})", code.0));
        assert!(!code.is_application());
    }
    let app = ErrorCode(0x8000_0001);
    assert!(app.is_application() && app.name().is_none());
    assert_eq!(format!("{app:?}"), "ErrorCode(0x80000001)");
    assert_eq!(app.to_string(), "0x80000001");
    assert!(!ErrorCode(0x7FFF_FFFF).is_application());
}

#[test]
fn hello_layout() {
    let h = Hello {
        min_version: 1,
        max_version: 3,
        limits: limits(0x0102_0304),
    };
    let b = h.to_bytes();
    assert_eq!(&b[..4], &[1, 3, 0, 0]);
    assert_eq!(&b[4..8], &0x0102_0304u32.to_le_bytes());
    assert_eq!(&b[20..24], &0x0102_0308u32.to_le_bytes());
    assert_eq!(Hello::decode(&b), Ok(h));
}

#[test]
fn hello_errors() {
    let good = Hello::new(Limits::default()).to_bytes();
    assert_eq!(
        Hello::decode(&good[..23]),
        Err(PayloadError::WrongLength {
            what: "Hello",
            expected: 24,
            got: 23
        })
    );
    let mut long = good.to_vec();
    long.push(0);
    assert!(matches!(
        Hello::decode(&long),
        Err(PayloadError::WrongLength { got: 25, .. })
    ));
    let mut b = good;
    b[3] = 1;
    assert_eq!(
        Hello::decode(&b),
        Err(PayloadError::ReservedNonZero {
            what: "Hello",
            field: "reserved",
            value: 0x100
        })
    );
    for (min, max) in [(0, 1), (2, 1), (0, 0)] {
        let mut b = good;
        b[0] = min;
        b[1] = max;
        assert_eq!(
            Hello::decode(&b),
            Err(PayloadError::BadVersion {
                what: "Hello",
                min,
                max
            })
        );
    }
    let fields = [
        "max_message_size",
        "max_partial_messages",
        "max_buffered_bytes",
        "client_to_server_ring_bytes",
        "server_to_client_ring_bytes",
    ];
    for (i, field) in fields.into_iter().enumerate() {
        let mut b = good;
        b[4 + 4 * i..8 + 4 * i].fill(0);
        let e = Hello::decode(&b).unwrap_err();
        assert_eq!(
            e,
            PayloadError::ZeroLimit {
                what: "Hello",
                field
            }
        );
        assert!(e.to_string().contains(field));
    }
}

#[test]
fn welcome_errors() {
    let good = Welcome {
        version: 1,
        limits: limits(10),
    }
    .to_bytes();
    assert_eq!(&good[..4], &[1, 0, 0, 0]);
    assert!(matches!(
        Welcome::decode(&good[..4]),
        Err(PayloadError::WrongLength {
            what: "Welcome",
            got: 4,
            ..
        })
    ));
    let mut b = good;
    b[1] = 9;
    assert_eq!(
        Welcome::decode(&b),
        Err(PayloadError::ReservedNonZero {
            what: "Welcome",
            field: "reserved0",
            value: 9
        })
    );
    let mut b = good;
    b[2] = 9;
    assert_eq!(
        Welcome::decode(&b),
        Err(PayloadError::ReservedNonZero {
            what: "Welcome",
            field: "reserved1",
            value: 9
        })
    );
    let mut b = good;
    b[0] = 0;
    assert!(matches!(
        Welcome::decode(&b),
        Err(PayloadError::BadVersion { .. })
    ));
    let mut b = good;
    b[12..16].fill(0);
    assert_eq!(
        Welcome::decode(&b),
        Err(PayloadError::ZeroLimit {
            what: "Welcome",
            field: "max_buffered_bytes"
        })
    );
}

#[test]
fn negotiation_picks_highest_common_version_and_lowest_limits() {
    let hello = Hello {
        min_version: 1,
        max_version: 5,
        limits: limits(100),
    };
    let mut server = ServerPolicy::new(limits(50));
    server.min_version = 2;
    server.max_version = 4;
    let w = negotiate(&hello, &server).unwrap();
    assert_eq!(w.version, 4);
    assert_eq!(w.limits, limits(50));
    assert_eq!(hello.check_welcome(&w), Ok(()));

    // Server allows more than asked: the request wins.
    let w = negotiate(&hello, &ServerPolicy::new(limits(1000))).unwrap();
    assert_eq!(w.limits, limits(100));
    assert_eq!(w.version, MAX_SUPPORTED_VERSION.min(5));
}

#[test]
fn negotiation_refusals() {
    let hello = Hello {
        min_version: 3,
        max_version: 4,
        limits: limits(100),
    };
    let server = ServerPolicy::new(limits(100));
    assert_eq!(server.min_version, MIN_SUPPORTED_VERSION);
    assert_eq!(
        negotiate(&hello, &server),
        Err(ErrorCode::VERSION_UNSUPPORTED)
    );

    let hello = Hello::new(limits(10));
    let mut server = ServerPolicy::new(limits(100));
    server.min_limits.client_to_server_ring_bytes = 4096;
    assert_eq!(
        negotiate(&hello, &server),
        Err(ErrorCode::LIMITS_UNACCEPTABLE)
    );
}

#[test]
fn client_rejects_bad_welcome() {
    let hello = Hello {
        min_version: 1,
        max_version: 2,
        limits: limits(100),
    };
    let bad_version = Welcome {
        version: 3,
        limits: limits(100),
    };
    assert_eq!(
        hello.check_welcome(&bad_version),
        Err(PayloadError::VersionNotOffered {
            chosen: 3,
            min: 1,
            max: 2
        })
    );
    let mut raised = limits(100);
    raised.server_to_client_ring_bytes += 1;
    let e = hello
        .check_welcome(&Welcome {
            version: 2,
            limits: raised,
        })
        .unwrap_err();
    assert_eq!(
        e,
        PayloadError::LimitRaised {
            field: "server_to_client_ring_bytes",
            requested: 104,
            agreed: 105
        }
    );
    assert!(e.to_string().contains("105"));
}

proptest! {
    #[test]
    fn hello_welcome_roundtrip(
        min in 1u8..=255, span in 0u8..=255,
        vals in proptest::array::uniform5(1u32..),
        version in 1u8..,
    ) {
        let l = Limits {
            max_message_size: vals[0],
            max_partial_messages: vals[1],
            max_buffered_bytes: vals[2],
            client_to_server_ring_bytes: vals[3],
            server_to_client_ring_bytes: vals[4],
        };
        let h = Hello { min_version: min, max_version: min.saturating_add(span), limits: l };
        prop_assert_eq!(Hello::decode(&h.to_bytes()), Ok(h));
        let w = Welcome { version, limits: l };
        prop_assert_eq!(Welcome::decode(&w.to_bytes()), Ok(w));
    }

    #[test]
    fn error_payload_roundtrip(code in any::<u32>(), msg in ".{0,64}") {
        let e = ErrorPayload::new(ErrorCode(code), &msg);
        let mut buf = vec![0; e.encoded_len()];
        prop_assert_eq!(e.encode(&mut buf), Ok(buf.len()));
        prop_assert_eq!(ErrorPayload::decode(&buf), Ok(e));
    }

    #[test]
    fn payload_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
        // Any outcome but a panic is acceptable; valid ones re-encode identically.
        if let Ok(h) = Hello::decode(&bytes) { prop_assert_eq!(&h.to_bytes()[..], &bytes[..]); }
        if let Ok(w) = Welcome::decode(&bytes) { prop_assert_eq!(&w.to_bytes()[..], &bytes[..]); }
        if let Ok(e) = ErrorPayload::decode(&bytes) { prop_assert_eq!(e.encoded_len(), bytes.len()); }
    }
}
