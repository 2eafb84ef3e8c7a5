//! One test per `DecodeError` / `EncodeError` variant, plus the order of checks.

use ferry_frame::{
    DecodeError, DecodeLimits, EncodeError, Flags, Frame, HEADER_LEN, Kind, MAGIC,
    MAX_SUPPORTED_VERSION, crc, decode, decode_header, encode, encode_header_in_place, offset,
};

fn frame_bytes(kind: Kind, flags: Flags, id: u64, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0; HEADER_LEN + payload.len()];
    buf[HEADER_LEN..].copy_from_slice(payload);
    encode_header_in_place(&mut buf, kind, flags, id, payload.len()).unwrap();
    buf
}

/// Rewrites the CRC after a header edit, so only the edited field is wrong.
fn fix_crc(buf: &mut [u8]) {
    buf[offset::CRC..offset::CRC + 4].fill(0);
    let c = crc::crc32c(buf);
    buf[offset::CRC..offset::CRC + 4].copy_from_slice(&c.to_le_bytes());
}

fn lim() -> DecodeLimits {
    DecodeLimits::default()
}

#[test]
fn truncated_header() {
    let good = frame_bytes(Kind::Ping, Flags::NONE, 1, b"");
    for len in 0..HEADER_LEN {
        assert_eq!(
            decode(&good[..len], &lim()),
            Err(DecodeError::Truncated {
                needed: HEADER_LEN,
                got: len
            })
        );
    }
}

#[test]
fn truncated_payload() {
    let good = frame_bytes(Kind::Request, Flags::NONE, 1, b"abcdef");
    let e = decode(&good[..good.len() - 1], &lim()).unwrap_err();
    assert_eq!(
        e,
        DecodeError::Truncated {
            needed: HEADER_LEN + 6,
            got: HEADER_LEN + 5
        }
    );
    let msg = e.to_string();
    assert!(msg.contains("30") && msg.contains("29"), "{msg}");
}

#[test]
fn trailing_bytes() {
    let mut buf = frame_bytes(Kind::Request, Flags::NONE, 1, b"abc");
    buf.extend_from_slice(&[0, 0]);
    let e = decode(&buf, &lim()).unwrap_err();
    assert_eq!(
        e,
        DecodeError::TrailingBytes {
            frame_len: HEADER_LEN + 3,
            extra: 2
        }
    );
    assert!(e.to_string().contains("exactly one frame"));
}

#[test]
fn bad_magic() {
    let mut buf = frame_bytes(Kind::Request, Flags::NONE, 1, b"");
    buf[0] = b'X';
    let e = decode(&buf, &lim()).unwrap_err();
    assert_eq!(e, DecodeError::BadMagic { found: 0x7958 });
    assert!(e.to_string().contains("0x7958"));
    assert_eq!(MAGIC.to_le_bytes(), *b"Fy");
}

#[test]
fn unsupported_version() {
    for v in [0u8, MAX_SUPPORTED_VERSION + 1, 0xFF] {
        let mut buf = frame_bytes(Kind::Request, Flags::NONE, 1, b"");
        buf[offset::VERSION] = v;
        fix_crc(&mut buf);
        let e = decode(&buf, &lim()).unwrap_err();
        assert_eq!(e, DecodeError::UnsupportedVersion { found: v });
        assert!(e.to_string().contains(&format!("version {v}")));
    }
}

#[test]
fn unknown_kind() {
    for k in 0..=u8::MAX {
        let mut buf = frame_bytes(Kind::Request, Flags::NONE, 1, b"");
        buf[offset::KIND] = k;
        fix_crc(&mut buf);
        match Kind::from_u8(k) {
            Some(kind) => {
                let got = decode(&buf, &lim()).map(|f| f.header.kind());
                // Cancel etc. have no restriction on an empty, flagless frame.
                assert_eq!(got, Ok(kind));
            }
            None => assert_eq!(
                decode(&buf, &lim()),
                Err(DecodeError::UnknownKind { found: k })
            ),
        }
    }
}

#[test]
fn reserved_flags() {
    for bit in 2..16 {
        let mut buf = frame_bytes(Kind::Request, Flags::NONE, 1, b"");
        let flags = 1u16 << bit;
        buf[offset::FLAGS..offset::FLAGS + 2].copy_from_slice(&flags.to_le_bytes());
        fix_crc(&mut buf);
        let e = decode(&buf, &lim()).unwrap_err();
        assert_eq!(e, DecodeError::ReservedFlags { flags });
        assert!(e.to_string().contains(&format!("0x{flags:04X}")));
    }
}

#[test]
fn reserved_field_nonzero() {
    let mut buf = frame_bytes(Kind::Request, Flags::NONE, 1, b"");
    buf[offset::RESERVED] = 1;
    fix_crc(&mut buf);
    assert_eq!(
        decode(&buf, &lim()),
        Err(DecodeError::ReservedNonZero { found: 1 })
    );
}

#[test]
fn flags_not_allowed_on_control_kinds() {
    for kind in Kind::ALL.into_iter().filter(|k| !k.is_fragmentable()) {
        for flags in [Flags::MORE, Flags::ABORT] {
            let mut buf = frame_bytes(kind, Flags::NONE, 1, b"");
            buf[offset::FLAGS..offset::FLAGS + 2].copy_from_slice(&flags.bits().to_le_bytes());
            fix_crc(&mut buf);
            assert_eq!(
                decode(&buf, &lim()),
                Err(DecodeError::FlagsNotAllowed { kind, flags }),
                "{kind}"
            );
            assert_eq!(
                encode_header_in_place(&mut buf, kind, flags, 1, 0),
                Err(EncodeError::FlagsNotAllowed { kind, flags })
            );
        }
    }
}

#[test]
fn more_and_abort_together_rejected() {
    let both = Flags::MORE | Flags::ABORT;
    let mut buf = frame_bytes(Kind::Request, Flags::NONE, 1, b"");
    buf[offset::FLAGS..offset::FLAGS + 2].copy_from_slice(&both.bits().to_le_bytes());
    fix_crc(&mut buf);
    let e = decode(&buf, &lim()).unwrap_err();
    assert_eq!(
        e,
        DecodeError::FlagsNotAllowed {
            kind: Kind::Request,
            flags: both
        }
    );
    assert!(e.to_string().contains("MORE ABORT"), "{e}");
    assert!(matches!(
        Frame::new(Kind::Request, both, 1, b""),
        Err(EncodeError::FlagsNotAllowed { .. })
    ));
}

#[test]
fn payload_not_allowed_on_cancel_and_abort() {
    for (kind, flags) in [(Kind::Cancel, Flags::NONE), (Kind::Response, Flags::ABORT)] {
        // Build a valid empty frame, then give it a payload.
        let mut buf = frame_bytes(kind, flags, 1, b"");
        buf[offset::PAYLOAD_LEN] = 1;
        buf.push(0);
        fix_crc(&mut buf);
        assert_eq!(
            decode(&buf, &lim()),
            Err(DecodeError::PayloadNotAllowed {
                kind,
                flags,
                len: 1
            })
        );
        assert_eq!(
            Frame::new(kind, flags, 1, b"x"),
            Err(EncodeError::PayloadNotAllowed {
                kind,
                flags,
                len: 1
            })
        );
    }
}

#[test]
fn payload_over_limit() {
    let buf = frame_bytes(Kind::Request, Flags::NONE, 1, &[7; 100]);
    assert!(decode(&buf, &DecodeLimits::new(100)).is_ok());
    let e = decode(&buf, &DecodeLimits::new(99)).unwrap_err();
    assert_eq!(e, DecodeError::PayloadTooLarge { len: 100, max: 99 });
    assert!(e.to_string().contains("100") && e.to_string().contains("99"));
    // The limit is checked from the header alone, before the payload is needed.
    assert_eq!(
        decode_header(&buf[..HEADER_LEN], &DecodeLimits::new(99)),
        Err(DecodeError::PayloadTooLarge { len: 100, max: 99 })
    );
}

#[test]
fn huge_announced_length_is_rejected_not_trusted() {
    let mut buf = frame_bytes(Kind::Request, Flags::NONE, 1, b"");
    buf[offset::PAYLOAD_LEN..offset::PAYLOAD_LEN + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let limits = DecodeLimits::new(u32::MAX);
    assert_eq!(
        decode(&buf, &limits),
        Err(DecodeError::Truncated {
            needed: HEADER_LEN + u32::MAX as usize,
            got: HEADER_LEN
        })
    );
}

#[test]
fn crc_mismatch_anywhere() {
    let good = frame_bytes(Kind::Response, Flags::NONE, 0xDEAD_BEEF, b"payload!");
    // Flip one bit in the CRC-covered fields that the earlier checks do not catch.
    let positions = (offset::CORRELATION_ID..good.len()).chain(offset::CRC..offset::CRC + 4);
    for pos in positions {
        let mut buf = good.clone();
        buf[pos] ^= 0x10;
        match decode(&buf, &lim()) {
            Err(DecodeError::CrcMismatch { expected, computed }) => {
                assert_ne!(expected, computed);
            }
            other => panic!("byte {pos}: {other:?}"),
        }
    }
    let mut buf = good.clone();
    buf[HEADER_LEN] ^= 1;
    let e = decode(&buf, &lim()).unwrap_err();
    assert!(e.to_string().contains("CRC32C mismatch"), "{e}");
}

#[test]
fn decode_header_reports_frame_len() {
    let buf = frame_bytes(Kind::StreamItem, Flags::MORE, 9, b"12345");
    let h = decode_header(&buf[..HEADER_LEN], &lim()).unwrap();
    assert_eq!(h.frame_len(), buf.len());
    assert!(h.is_more() && !h.is_abort());
    assert_eq!(h.version(), ferry_frame::VERSION);
    assert_eq!(
        decode_header(&buf[..10], &lim()),
        Err(DecodeError::Truncated {
            needed: HEADER_LEN,
            got: 10
        })
    );
}

#[test]
fn encode_buffer_too_small_writes_nothing() {
    let f = Frame::new(Kind::Request, Flags::NONE, 1, b"abc").unwrap();
    let mut out = [0xEEu8; HEADER_LEN + 2];
    assert_eq!(
        encode(&f, &mut out),
        Err(EncodeError::BufferTooSmall {
            needed: HEADER_LEN + 3,
            got: HEADER_LEN + 2
        })
    );
    assert!(out.iter().all(|&b| b == 0xEE));
    assert_eq!(
        encode_header_in_place(&mut out, Kind::Request, Flags::NONE, 1, 3),
        Err(EncodeError::BufferTooSmall {
            needed: HEADER_LEN + 3,
            got: HEADER_LEN + 2
        })
    );
    assert!(out.iter().all(|&b| b == 0xEE));
}

#[test]
fn encode_length_mismatch() {
    let a = Frame::new(Kind::Request, Flags::NONE, 1, b"abc").unwrap();
    let bad = Frame {
        header: a.header,
        payload: b"ab",
    };
    let mut out = [0u8; 64];
    assert_eq!(
        encode(&bad, &mut out),
        Err(EncodeError::LengthMismatch {
            header: 3,
            payload: 2
        })
    );
}

#[test]
fn encode_payload_too_large() {
    let too_big = u32::MAX as usize + 1;
    let e = encode_header_in_place(&mut [], Kind::Request, Flags::NONE, 1, too_big).unwrap_err();
    assert_eq!(e, EncodeError::PayloadTooLarge { len: too_big });
    assert!(e.to_string().contains("fragments"));
}

#[test]
fn in_place_leaves_bytes_after_the_frame_alone() {
    let mut buf = [0x77u8; HEADER_LEN + 8];
    buf[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(b"abcd");
    let n = encode_header_in_place(&mut buf, Kind::Notification, Flags::NONE, 3, 4).unwrap();
    assert_eq!(n, HEADER_LEN + 4);
    assert_eq!(&buf[n..], &[0x77; 4]);
    let f = decode(&buf[..n], &lim()).unwrap();
    assert_eq!(f.payload, b"abcd");
}

#[test]
fn every_error_message_says_what_to_do() {
    let errors = [
        DecodeError::Truncated { needed: 1, got: 0 },
        DecodeError::TrailingBytes {
            frame_len: 24,
            extra: 1,
        },
        DecodeError::BadMagic { found: 0 },
        DecodeError::UnsupportedVersion { found: 9 },
        DecodeError::UnknownKind { found: 0x55 },
        DecodeError::ReservedFlags { flags: 4 },
        DecodeError::ReservedNonZero { found: 1 },
        DecodeError::FlagsNotAllowed {
            kind: Kind::Ping,
            flags: Flags::MORE,
        },
        DecodeError::PayloadNotAllowed {
            kind: Kind::Cancel,
            flags: Flags::NONE,
            len: 3,
        },
        DecodeError::PayloadTooLarge { len: 2, max: 1 },
        DecodeError::CrcMismatch {
            expected: 1,
            computed: 2,
        },
    ];
    let advice = [
        "close",
        "pass",
        "read",
        "fix",
        "raise",
        "drop",
        "upgrade",
        "ring record",
    ];
    for e in errors {
        let msg = e.to_string();
        assert!(
            advice.iter().any(|a| msg.contains(a)),
            "no advice in: {msg}"
        );
    }
}
