//! An arbitrary sequence of frames (arbitrary kinds, flags, ids, sizes) through
//! the Reassembler with small limits. Must never panic, never hold more memory
//! than configured (by its own accounting), and every completed message must be
//! the concatenation of its fragments (checked against a simple model).
#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use ferry_frame::{
    DecodeLimits, Event, Flags, HEADER_LEN, Kind, Reassembler, ReassemblyError, ReassemblyLimits,
    decode, encode_header_in_place,
};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Step {
    kind: u8,
    flags: u8,
    id: u8,
    len: u16,
    fill: u8,
    /// Occasionally: simulate a connection close.
    clear: bool,
}

#[derive(Debug, Arbitrary)]
struct Input {
    max_message_size: u16,
    max_partial_messages: u8,
    max_buffered_bytes: u16,
    steps: Vec<Step>,
}

fuzz_target!(|input: Input| {
    let limits = ReassemblyLimits {
        max_message_size: usize::from(input.max_message_size % 4096),
        max_partial_messages: usize::from(input.max_partial_messages % 8),
        max_buffered_bytes: usize::from(input.max_buffered_bytes % 8192),
    };
    let mut r = Reassembler::new(limits);
    let mut model: BTreeMap<(Kind, u64), Vec<u8>> = BTreeMap::new();
    let mut buf = Vec::new();
    for step in input.steps.iter().take(512) {
        if step.clear {
            r.clear();
            model.clear();
            assert_eq!((r.partial_count(), r.held_bytes()), (0, 0));
            continue;
        }
        let kind = Kind::ALL[usize::from(step.kind) % Kind::ALL.len()];
        let Some(flags) = Flags::from_bits(u16::from(step.flags & 3)) else {
            continue;
        };
        let id = u64::from(step.id % 8);
        let len = usize::from(step.len % 2048);
        buf.clear();
        buf.resize(HEADER_LEN + len, step.fill);
        // Invalid kind/flag/length combinations are refused by the encoder (and
        // would be by the decoder); the Reassembler only ever sees valid frames.
        if encode_header_in_place(&mut buf, kind, flags, id, len).is_err() {
            continue;
        }
        let frame = decode(&buf, &DecodeLimits::default()).expect("valid frame decodes");
        let key = (kind, id);
        match r.push(frame) {
            Ok(Event::Pending) => model
                .entry(key)
                .or_default()
                .extend_from_slice(frame.payload),
            Ok(Event::Aborted { discarded, .. }) => {
                assert_eq!(discarded, model.remove(&key).map_or(0, |v| v.len()));
            }
            Ok(Event::Message(m)) => {
                if kind == Kind::Cancel {
                    model.remove(&(Kind::Request, id));
                }
                let mut expect = model.remove(&key).unwrap_or_default();
                expect.extend_from_slice(frame.payload);
                assert_eq!(&*m.payload, &expect[..]);
                assert!(m.payload.len() <= limits.max_message_size);
            }
            Err(ReassemblyError::TooManyPartials { .. }) => {
                assert!(!model.contains_key(&key));
            }
            Err(_) => {
                model.remove(&key);
            }
        }
        assert!(
            r.held_bytes() <= limits.max_buffered_bytes,
            "held {} > max {}",
            r.held_bytes(),
            limits.max_buffered_bytes
        );
        assert!(r.buffered_bytes() <= r.held_bytes());
        assert!(r.partial_count() <= limits.max_partial_messages);
        assert_eq!(r.partial_count(), model.len());
    }
});
