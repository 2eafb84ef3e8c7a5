//! Kind and Flags conversions and formatting.

use ferry_frame::{Flags, Kind};

#[test]
fn kind_wire_values_roundtrip() {
    for kind in Kind::ALL {
        let v: u8 = kind.into();
        assert_eq!(v, kind.as_u8());
        assert_eq!(Kind::try_from(v), Ok(kind));
        assert_eq!(Kind::from_u8(v), Some(kind));
    }
    let known: Vec<u8> = Kind::ALL.iter().map(|k| k.as_u8()).collect();
    for v in 0..=u8::MAX {
        if !known.contains(&v) {
            assert_eq!(Kind::try_from(v), Err(v));
        }
    }
}

#[test]
fn kind_classes() {
    for kind in Kind::ALL {
        let handshake = matches!(kind, Kind::Hello | Kind::Welcome | Kind::Refuse);
        assert_eq!(kind.is_handshake(), handshake, "{kind}");
        if handshake {
            assert!(!kind.is_fragmentable());
        }
        let control = handshake
            || matches!(
                kind,
                Kind::MetricsQuery | Kind::MetricsReply | Kind::Handles
            );
        assert_eq!(kind.is_control(), control, "{kind}");
        if control {
            assert!(!kind.is_fragmentable(), "{kind} must fit in one frame");
        }
    }
    assert_eq!(Kind::from_u8(0x13), Some(Kind::MetricsQuery));
    assert_eq!(Kind::from_u8(0x14), Some(Kind::MetricsReply));
    assert_eq!(Kind::MetricsReply.to_string(), "MetricsReply (0x14)");
    assert_eq!(Kind::from_u8(0x15), Some(Kind::Handles));
    assert_eq!(Kind::Handles.to_string(), "Handles (0x15)");
    assert!(!Kind::Handles.is_handshake());
    assert!(Kind::StreamItem.is_fragmentable());
    assert!(!Kind::Cancel.is_fragmentable());
    assert_eq!(Kind::ErrorResponse.to_string(), "ErrorResponse (0x03)");
}

#[test]
fn flags_bits() {
    assert!(Flags::NONE.is_empty());
    assert!(!Flags::MORE.is_empty());
    let both = Flags::MORE | Flags::ABORT;
    assert!(both.contains(Flags::MORE) && both.contains(Flags::ABORT));
    assert!(!Flags::MORE.contains(Flags::ABORT));
    assert_eq!(Flags::from_bits(3), Some(both));
    assert_eq!(Flags::from_bits(4), None);
    assert_eq!(Flags::from_bits(0x8000), None);
    assert_eq!(format!("{:?}", Flags::NONE), "Flags(0x0000)");
    assert_eq!(format!("{both:?}"), "Flags(0x0003 MORE ABORT)");
    assert_eq!(Flags::default(), Flags::NONE);
}
