//! Reassembler behaviour: interleaving, abort, cancel, limits, memory accounting.

use std::borrow::Cow;

use ferry_frame::{
    Event, Flags, Frame, Kind, Limits, Message, Reassembler, ReassemblyError, ReassemblyLimits,
};
use proptest::prelude::*;

fn f(kind: Kind, flags: Flags, id: u64, payload: &[u8]) -> Frame<'_> {
    Frame::new(kind, flags, id, payload).unwrap()
}

fn lim(msg: usize, partials: usize, buffered: usize) -> ReassemblyLimits {
    ReassemblyLimits {
        max_message_size: msg,
        max_partial_messages: partials,
        max_buffered_bytes: buffered,
    }
}

fn owned(kind: Kind, id: u64, payload: &[u8]) -> Event<'static> {
    Event::Message(Message {
        kind,
        correlation_id: id,
        payload: Cow::Owned(payload.to_vec()),
    })
}

#[test]
fn single_frame_is_borrowed_without_buffering() {
    let mut r = Reassembler::new(ReassemblyLimits::default());
    let payload = b"hello".to_vec();
    match r.push(f(Kind::Request, Flags::NONE, 1, &payload)).unwrap() {
        Event::Message(m) => {
            assert!(matches!(m.payload, Cow::Borrowed(_)));
            assert_eq!(&*m.payload, b"hello");
            assert_eq!((m.kind, m.correlation_id), (Kind::Request, 1));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!((r.partial_count(), r.held_bytes()), (0, 0));
}

#[test]
fn interleaved_fragments_reassemble_separately() {
    let mut r = Reassembler::new(ReassemblyLimits::default());
    assert_eq!(
        r.push(f(Kind::Request, Flags::MORE, 1, b"big-")).unwrap(),
        Event::Pending
    );
    assert_eq!(
        r.push(f(Kind::Notification, Flags::MORE, 1, b"n1-"))
            .unwrap(),
        Event::Pending
    );
    // Same id, different kind: a different message.
    assert_eq!(
        r.push(f(Kind::Response, Flags::MORE, 1, b"r-")).unwrap(),
        Event::Pending
    );
    assert_eq!(r.partial_count(), 3);
    // A small call passes between fragments.
    assert!(matches!(
        r.push(f(Kind::Ping, Flags::NONE, 9, b"")).unwrap(),
        Event::Message(_)
    ));
    assert_eq!(
        r.push(f(Kind::Request, Flags::MORE, 1, b"")).unwrap(),
        Event::Pending
    );
    assert_eq!(
        r.push(f(Kind::Request, Flags::NONE, 1, b"upload")).unwrap(),
        owned(Kind::Request, 1, b"big-upload")
    );
    assert_eq!(
        r.push(f(Kind::Notification, Flags::NONE, 1, b"end"))
            .unwrap(),
        owned(Kind::Notification, 1, b"n1-end")
    );
    assert_eq!(r.partial_count(), 1);
    assert_eq!(r.buffered_bytes(), 2);
    assert!(r.held_bytes() >= r.buffered_bytes());
    r.clear();
    assert_eq!(
        (r.partial_count(), r.held_bytes(), r.buffered_bytes()),
        (0, 0, 0)
    );
}

#[test]
fn abort_discards_partial() {
    let mut r = Reassembler::new(ReassemblyLimits::default());
    r.push(f(Kind::StreamItem, Flags::MORE, 4, b"abcd"))
        .unwrap();
    assert_eq!(
        r.push(f(Kind::StreamItem, Flags::ABORT, 4, b"")).unwrap(),
        Event::Aborted {
            kind: Kind::StreamItem,
            correlation_id: 4,
            discarded: 4
        }
    );
    assert_eq!((r.partial_count(), r.held_bytes()), (0, 0));
    // Abort of nothing is harmless.
    assert_eq!(
        r.push(f(Kind::StreamItem, Flags::ABORT, 4, b"")).unwrap(),
        Event::Aborted {
            kind: Kind::StreamItem,
            correlation_id: 4,
            discarded: 0
        }
    );
    // The next message with that key starts fresh.
    assert_eq!(
        r.push(f(Kind::StreamItem, Flags::NONE, 4, b"new")).unwrap(),
        Event::Message(Message {
            kind: Kind::StreamItem,
            correlation_id: 4,
            payload: Cow::Borrowed(b"new")
        })
    );
}

#[test]
fn cancel_discards_partial_request_only() {
    let mut r = Reassembler::new(ReassemblyLimits::default());
    r.push(f(Kind::Request, Flags::MORE, 8, b"req")).unwrap();
    r.push(f(Kind::Response, Flags::MORE, 8, b"resp")).unwrap();
    match r.push(f(Kind::Cancel, Flags::NONE, 8, b"")).unwrap() {
        Event::Message(m) => assert_eq!((m.kind, m.correlation_id), (Kind::Cancel, 8)),
        other => panic!("{other:?}"),
    }
    assert_eq!(r.partial_count(), 1);
    assert_eq!(r.discard(Kind::Request, 8), 0);
    assert_eq!(r.discard(Kind::Response, 8), 4);
    assert_eq!((r.partial_count(), r.held_bytes()), (0, 0));
}

#[test]
fn message_too_large_single_and_fragmented() {
    let mut r = Reassembler::new(lim(10, 4, 100));
    let e = r
        .push(f(Kind::Request, Flags::NONE, 1, &[0; 11]))
        .unwrap_err();
    assert_eq!(
        e,
        ReassemblyError::MessageTooLarge {
            kind: Kind::Request,
            correlation_id: 1,
            size: 11,
            max: 10
        }
    );
    r.push(f(Kind::Request, Flags::MORE, 2, &[0; 6])).unwrap();
    let e = r
        .push(f(Kind::Request, Flags::MORE, 2, &[0; 5]))
        .unwrap_err();
    assert_eq!(
        e,
        ReassemblyError::MessageTooLarge {
            kind: Kind::Request,
            correlation_id: 2,
            size: 11,
            max: 10
        }
    );
    assert!(e.to_string().contains("11") && e.to_string().contains("max message size"));
    assert_eq!((r.partial_count(), r.held_bytes()), (0, 0));
    // Exactly at the limit is fine.
    r.push(f(Kind::Request, Flags::MORE, 3, &[1; 6])).unwrap();
    assert_eq!(
        r.push(f(Kind::Request, Flags::NONE, 3, &[1; 4])).unwrap(),
        owned(Kind::Request, 3, &[1; 10])
    );
}

#[test]
fn too_many_partials() {
    let mut r = Reassembler::new(lim(100, 2, 1000));
    r.push(f(Kind::Request, Flags::MORE, 1, b"a")).unwrap();
    r.push(f(Kind::Request, Flags::MORE, 2, b"b")).unwrap();
    let e = r.push(f(Kind::Request, Flags::MORE, 3, b"c")).unwrap_err();
    assert_eq!(
        e,
        ReassemblyError::TooManyPartials {
            kind: Kind::Request,
            correlation_id: 3,
            max: 2
        }
    );
    assert!(e.to_string().contains("max_partial_messages"));
    // Existing partials continue; single frames still pass.
    r.push(f(Kind::Request, Flags::MORE, 1, b"a")).unwrap();
    assert!(matches!(
        r.push(f(Kind::Request, Flags::NONE, 4, b"d")).unwrap(),
        Event::Message(_)
    ));
    assert_eq!(r.partial_count(), 2);
}

#[test]
fn buffer_full() {
    let mut r = Reassembler::new(lim(100, 8, 10));
    r.push(f(Kind::Request, Flags::MORE, 1, &[0; 6])).unwrap();
    let e = r
        .push(f(Kind::Response, Flags::MORE, 1, &[0; 5]))
        .unwrap_err();
    assert_eq!(
        e,
        ReassemblyError::BufferFull {
            kind: Kind::Response,
            correlation_id: 1,
            held: 6,
            needed: 5,
            max: 10
        }
    );
    assert!(e.to_string().contains("max_buffered_bytes"));
    assert_eq!(r.partial_count(), 1);
    assert!(r.held_bytes() <= 10);
    // Exactly filling the budget works.
    r.push(f(Kind::Response, Flags::MORE, 1, &[0; 4])).unwrap();
    assert_eq!(r.buffered_bytes(), 10);
    assert!(r.held_bytes() <= 10);
}

#[test]
fn slack_from_growth_is_reclaimed_before_refusing() {
    // Grow one partial geometrically, then use the rest of the budget elsewhere:
    // the sender stays within max_buffered_bytes of payload, so this must succeed.
    let mut r = Reassembler::new(lim(1000, 4, 1000));
    for _ in 0..3 {
        r.push(f(Kind::Request, Flags::MORE, 1, &[0; 100])).unwrap();
    }
    assert!(
        r.held_bytes() > r.buffered_bytes(),
        "geometric growth left slack"
    );
    r.push(f(Kind::Request, Flags::MORE, 2, &[0; 700])).unwrap();
    assert_eq!(r.buffered_bytes(), 1000);
    assert!(r.held_bytes() <= 1000);
}

#[test]
fn limits_from_handshake() {
    let l = Limits::default();
    let rl = ReassemblyLimits::from(l);
    assert_eq!(rl.max_message_size, l.max_message_size as usize);
    assert_eq!(rl.max_partial_messages, l.max_partial_messages as usize);
    assert_eq!(rl.max_buffered_bytes, l.max_buffered_bytes as usize);
    assert_eq!(ReassemblyLimits::default(), rl);
    assert_eq!(Reassembler::new(rl).limits(), &rl);
}

#[derive(Debug, Clone)]
struct Op {
    kind: u8,
    id: u8,
    flags: u8,
    len: usize,
}

fn op() -> impl Strategy<Value = Op> {
    (0u8..4, 0u8..6, 0u8..4, 0usize..200).prop_map(|(kind, id, flags, len)| Op {
        kind,
        id,
        flags,
        len,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Against a simple model: memory never exceeds the limit, and every
    /// completed message is the concatenation of its fragments.
    #[test]
    fn matches_model_and_respects_budget(ops in proptest::collection::vec(op(), 0..200)) {
        use std::collections::BTreeMap;
        let limits = lim(500, 3, 700);
        let mut r = Reassembler::new(limits);
        let mut model: BTreeMap<(Kind, u64), Vec<u8>> = BTreeMap::new();
        let kinds = [Kind::Request, Kind::Response, Kind::StreamItem, Kind::Cancel];
        for (n, o) in ops.iter().enumerate() {
            let kind = kinds[o.kind as usize];
            let id = u64::from(o.id);
            let flags = if kind == Kind::Cancel { Flags::NONE } else {
                [Flags::NONE, Flags::MORE, Flags::MORE, Flags::ABORT][o.flags as usize]
            };
            let len = if kind == Kind::Cancel || flags == Flags::ABORT { 0 } else { o.len };
            let payload = vec![n as u8; len];
            let result = r.push(f(kind, flags, id, &payload));
            let key = (kind, id);
            match result {
                Ok(Event::Aborted { discarded, .. }) => {
                    prop_assert_eq!(discarded, model.remove(&key).map_or(0, |v| v.len()));
                }
                Ok(Event::Pending) => {
                    model.entry(key).or_default().extend_from_slice(&payload);
                }
                Ok(Event::Message(m)) => {
                    if kind == Kind::Cancel {
                        model.remove(&(Kind::Request, id));
                    }
                    let mut expect = model.remove(&key).unwrap_or_default();
                    expect.extend_from_slice(&payload);
                    prop_assert_eq!(&*m.payload, &expect[..]);
                }
                Err(ReassemblyError::TooManyPartials { .. }) => {
                    prop_assert!(!model.contains_key(&key));
                    prop_assert_eq!(model.len(), limits.max_partial_messages);
                }
                Err(ReassemblyError::MessageTooLarge { size, .. }) => {
                    let had = model.remove(&key).map_or(0, |v| v.len());
                    prop_assert_eq!(size, had + len);
                    prop_assert!(size > limits.max_message_size);
                }
                Err(ReassemblyError::BufferFull { .. }) => {
                    let had = model.remove(&key).map_or(0, |v| v.len());
                    let total: usize = model.values().map(Vec::len).sum();
                    prop_assert!(total + had + len > limits.max_buffered_bytes);
                }
                Err(e) => prop_assert!(false, "unexpected {e}"),
            }
            prop_assert!(r.held_bytes() <= limits.max_buffered_bytes);
            prop_assert!(r.partial_count() <= limits.max_partial_messages);
            prop_assert_eq!(r.partial_count(), model.len());
            prop_assert_eq!(r.buffered_bytes(), model.values().map(Vec::len).sum::<usize>());
        }
    }
}
