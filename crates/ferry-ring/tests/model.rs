//! Proptest: random operation sequences against a `VecDeque` model that also
//! tracks the cursors, so `Full` is predicted exactly (terminator word
//! included).
#![cfg(not(loom))] // loom atomics only work inside loom::model: see tests/loom.rs

use std::collections::VecDeque;

use ferry_ring::{PopError, ReserveError, TAG_DATA, heap, max_record_len};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Push(usize),
    Stage(usize),
    /// Reserve `.0`, commit the first `.1`% of it.
    CommitLen(usize, u8),
    Abandon(usize),
    Publish,
    Pop,
    PopInto(usize),
    Peek,
    Consume,
    ReleaseConsumed,
}

fn op(max: usize) -> impl Strategy<Value = Op> {
    let len = 0..=max + 8; // a few too large on purpose
    prop_oneof![
        4 => len.clone().prop_map(Op::Push),
        2 => len.clone().prop_map(Op::Stage),
        1 => (len.clone(), 0..=100u8).prop_map(|(l, f)| Op::CommitLen(l, f)),
        1 => len.prop_map(Op::Abandon),
        2 => Just(Op::Publish),
        4 => Just(Op::Pop),
        1 => (0..=max).prop_map(Op::PopInto),
        1 => Just(Op::Peek),
        2 => Just(Op::Consume),
        1 => Just(Op::ReleaseConsumed),
    ]
}

/// The model: records with the cursor advance each one costs (padding included).
#[derive(Default)]
struct Model {
    cap: u64,
    tail: u64,
    pub_tail: u64,
    head: u64,
    pub_head: u64,
    /// (payload, padding before it, record size).
    staged: Vec<(Vec<u8>, u64, u64)>,
    published: VecDeque<(Vec<u8>, u64, u64)>,
    seq: u64,
}

impl Model {
    fn rec(len: usize) -> u64 {
        8 + (len as u64).div_ceil(8) * 8
    }
    /// (bytes needed, padding bytes) for a `len` reservation at the tail.
    fn need(&self, len: usize) -> (u64, u64) {
        let to_end = self.cap - self.tail % self.cap;
        let rec = Self::rec(len);
        if rec <= to_end {
            (rec, 0)
        } else {
            (to_end + rec, to_end)
        }
    }
    /// Whether the record fits with the 8-byte zero word (terminator) that
    /// must follow it.
    fn fits(&self, len: usize) -> bool {
        self.cap - (self.tail - self.pub_head) >= self.need(len).0 + 8
    }
    /// Every other payload is made of valid-looking DATA record words: if
    /// the consumer ever read a stale payload word as a record word (a broken
    /// terminator), it would find phantom records and differ from the model.
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        self.seq += 1;
        if self.seq.is_multiple_of(2) {
            let word = 8u64 | (u64::from(TAG_DATA) << 32);
            (0..len).map(|i| word.to_le_bytes()[i % 8]).collect()
        } else {
            (0..len)
                .map(|i| (self.seq as usize * 7 + i) as u8)
                .collect()
        }
    }
    /// Records a reservation of `len` committed with `n` bytes.
    fn add(&mut self, len: usize, data: Vec<u8>) {
        let (_, pad) = self.need(len);
        let rec = Self::rec(data.len());
        self.tail += pad + rec;
        self.staged.push((data, pad, rec));
    }
    fn publish(&mut self) {
        self.pub_tail = self.tail;
        self.published.extend(self.staged.drain(..));
    }
    /// A peek at the front record skips (consumes) the padding before it.
    fn touch_front(&mut self) {
        if let Some(f) = self.published.front_mut() {
            self.head += f.1;
            f.1 = 0;
        }
    }
    fn consumed_front(&mut self) -> Option<Vec<u8>> {
        self.touch_front();
        let (d, _, rec) = self.published.pop_front()?;
        self.head += rec;
        Some(d)
    }
}

fn run(cap: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let (mut p, mut c) = heap(cap).unwrap();
    let max = max_record_len(cap);
    let mut m = Model {
        cap: cap as u64,
        ..Model::default()
    };
    for op in ops {
        let too_large = |len: usize| ReserveError::TooLarge { len, max };
        match op {
            Op::Push(len) | Op::Stage(len) | Op::CommitLen(len, _) | Op::Abandon(len) => {
                let expect_err = if len > max {
                    Some(too_large(len))
                } else if !m.fits(len) {
                    Some(ReserveError::Full)
                } else {
                    None
                };
                let data = m.bytes(len);
                match p.try_reserve(len) {
                    Err(e) => prop_assert_eq!(Some(e), expect_err),
                    Ok(mut g) => {
                        prop_assert_eq!(expect_err, None);
                        prop_assert_eq!(g.len(), len);
                        g.as_mut_slice().copy_from_slice(&data);
                        match op {
                            Op::Push(_) => {
                                prop_assert!(!g.commit().is_needed());
                                m.add(len, data);
                                m.publish();
                            }
                            Op::Stage(_) => {
                                g.stage();
                                m.add(len, data);
                            }
                            Op::CommitLen(_, frac) => {
                                let n = len * usize::from(frac) / 100;
                                prop_assert!(!g.commit_len(n).is_needed());
                                m.add(len, data[..n].to_vec());
                                m.publish();
                            }
                            _ => drop(g),
                        }
                    }
                }
            }
            Op::Publish => {
                prop_assert!(!p.publish().is_needed());
                m.publish();
            }
            Op::Pop => {
                let got = c.try_pop_vec().unwrap().map(|(v, w)| {
                    assert!(!w.is_needed());
                    v
                });
                let want = m.consumed_front();
                if want.is_some() {
                    m.pub_head = m.head; // a pop releases everything consumed
                }
                prop_assert_eq!(got, want);
            }
            Op::PopInto(n) => {
                let mut buf = vec![0u8; n];
                m.touch_front();
                match m.published.front() {
                    None => prop_assert_eq!(c.try_pop_into(&mut buf), Ok(None)),
                    Some((d, _, _)) if d.len() > n => prop_assert_eq!(
                        c.try_pop_into(&mut buf),
                        Err(PopError::BufferTooSmall { needed: d.len() })
                    ),
                    Some(_) => {
                        let (k, w) = c.try_pop_into(&mut buf).unwrap().unwrap();
                        prop_assert!(!w.is_needed());
                        let want = m.consumed_front().unwrap();
                        m.pub_head = m.head;
                        prop_assert_eq!(&buf[..k], &want[..]);
                    }
                }
            }
            Op::Peek => {
                let got = c.try_peek().unwrap().map(|g| g.as_slice().to_vec());
                m.touch_front();
                prop_assert_eq!(got.as_ref(), m.published.front().map(|(d, _, _)| d));
            }
            Op::Consume => {
                let got = c.try_peek().unwrap().map(|g| {
                    let v = g.as_slice().to_vec();
                    g.consume();
                    v
                });
                prop_assert_eq!(got, m.consumed_front());
            }
            Op::ReleaseConsumed => {
                prop_assert!(!c.release_consumed().is_needed());
                m.pub_head = m.head;
            }
        }
        prop_assert_eq!(p.free_bytes() as u64, m.cap - (m.tail - m.pub_head));
        prop_assert_eq!(p.staged_bytes() as u64, m.tail - m.pub_tail);
        prop_assert_eq!(c.consumed_bytes() as u64, m.head - m.pub_head);
        prop_assert_eq!(c.used_bytes() as u64, m.pub_tail - m.head);
        prop_assert_eq!(c.is_empty(), m.published.is_empty());
        prop_assert!(!p.is_corrupted() && !c.is_corrupted());
    }
    Ok(())
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 256 },
        // No regression files (and no getcwd, which miri's isolation forbids).
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn ring_matches_model_cap_64(ops in proptest::collection::vec(op(max_record_len(64)), 1..if cfg!(miri) { 40 } else { 300 })) {
        run(64, ops)?;
    }

    #[test]
    fn ring_matches_model_cap_256(ops in proptest::collection::vec(op(max_record_len(256)), 1..if cfg!(miri) { 40 } else { 300 })) {
        run(256, ops)?;
    }
}
