//! Random ring operations interleaved with random writes into the shared
//! region (header and data), standing in for a hostile peer.
//!
//! Checks: nothing panics or touches memory outside the region; once a handle
//! reports corruption it stays poisoned; and while nothing was scribbled,
//! the ring behaves exactly like a FIFO model.
#![no_main]

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Arc;

use arbitrary::Arbitrary;
use ferry_ring::{PopError, Region, ReserveError, SleepPrep, heap, region_size};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Op {
    Push(u16),
    Stage(u16),
    CommitLen(u16, u16),
    Abandon(u16),
    Publish,
    Pop,
    PopInto(u16),
    Peek,
    Consume,
    ReleaseConsumed,
    ConsumerSleep(u32),
    ProducerSleep(u16, u32),
    CancelSleeps,
    /// A hostile write of `bytes` at `offset` (modulo the region size).
    Scribble {
        offset: u32,
        bytes: Vec<u8>,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    cap_shift: u8,
    ops: Vec<Op>,
}

fn payload(seq: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seq as usize).wrapping_mul(13).wrapping_add(i) as u8)
        .collect()
}

fuzz_target!(|input: Input| {
    let cap = 64usize << (input.cap_shift % 5);
    let (mut p, mut c) = heap(cap).unwrap();
    let region = Arc::clone(p.region());
    let size = region_size(cap);
    assert!(region.len() >= size);
    let max = p.max_record_len();

    let mut scribbled = false;
    let mut staged: Vec<Vec<u8>> = Vec::new();
    let mut published: VecDeque<Vec<u8>> = VecDeque::new();
    let mut seq = 0u32;

    for op in input.ops {
        let (p_was, c_was) = (p.is_corrupted(), c.is_corrupted());
        let clean = !scribbled;
        match op {
            Op::Push(len) | Op::Stage(len) | Op::CommitLen(len, _) | Op::Abandon(len) => {
                let len = usize::from(len) % (max + 16);
                seq += 1;
                let data = payload(seq, len);
                match p.try_reserve(len) {
                    Ok(mut g) => {
                        assert!(len <= max);
                        g.as_mut_slice().copy_from_slice(&data);
                        match op {
                            Op::Push(_) => {
                                let _ = g.commit();
                                staged.push(data);
                                published.extend(staged.drain(..));
                            }
                            Op::Stage(_) => {
                                g.stage();
                                staged.push(data);
                            }
                            Op::CommitLen(_, n) => {
                                let n = usize::from(n) % (len + 1);
                                let _ = g.commit_len(n);
                                staged.push(data[..n].to_vec());
                                published.extend(staged.drain(..));
                            }
                            _ => drop(g),
                        }
                    }
                    Err(ReserveError::TooLarge { len: l, max: m }) => {
                        assert!(l == len && m == max && len > max)
                    }
                    Err(ReserveError::Full) => assert!(len <= max),
                    Err(ReserveError::Corrupted) => assert!(p.is_corrupted()),
                }
            }
            Op::Publish => {
                let _ = p.publish();
                if !p.is_corrupted() {
                    published.extend(staged.drain(..));
                }
            }
            Op::Pop => match c.try_pop_vec() {
                Ok(Some((v, _))) => {
                    if clean {
                        assert_eq!(Some(v), published.pop_front());
                    }
                }
                Ok(None) => {
                    if clean {
                        assert!(published.is_empty());
                    }
                }
                Err(_) => assert!(c.is_corrupted()),
            },
            Op::PopInto(n) => {
                let mut buf = vec![0u8; usize::from(n) % (max + 1)];
                match c.try_pop_into(&mut buf) {
                    Ok(Some((k, _))) => {
                        if clean {
                            assert_eq!(Some(&buf[..k]), published.pop_front().as_deref());
                        }
                    }
                    Ok(None) => {
                        if clean {
                            assert!(published.is_empty());
                        }
                    }
                    Err(PopError::BufferTooSmall { needed }) => {
                        assert!(needed > buf.len());
                        if clean {
                            assert_eq!(Some(needed), published.front().map(Vec::len));
                        }
                    }
                    Err(PopError::Corrupted) => assert!(c.is_corrupted()),
                }
            }
            Op::Peek => match c.try_peek() {
                Ok(g) => {
                    if clean {
                        assert_eq!(g.map(|g| g.as_slice().to_vec()).as_ref(), published.front());
                    }
                }
                Err(_) => assert!(c.is_corrupted()),
            },
            Op::Consume => match c.try_peek() {
                Ok(Some(g)) => {
                    let v = g.as_slice().to_vec();
                    g.consume();
                    if clean {
                        assert_eq!(Some(v), published.pop_front());
                    }
                }
                Ok(None) => {}
                Err(_) => assert!(c.is_corrupted()),
            },
            Op::ReleaseConsumed => {
                let _ = c.release_consumed();
            }
            Op::ConsumerSleep(t) => {
                if let Some(t) = NonZeroU32::new(t) {
                    match c.prepare_sleep(t) {
                        Ok(SleepPrep::Sleep) => {
                            if clean {
                                assert!(published.is_empty());
                            }
                        }
                        Ok(SleepPrep::Ready) => {}
                        Err(_) => assert!(c.is_corrupted()),
                    }
                }
            }
            Op::ProducerSleep(len, t) => {
                if let Some(t) = NonZeroU32::new(t) {
                    match p.prepare_sleep(usize::from(len) % (max + 16), t) {
                        Ok(_) => {}
                        Err(ReserveError::Corrupted) => assert!(p.is_corrupted()),
                        Err(ReserveError::TooLarge { .. }) => {}
                        Err(ReserveError::Full) => panic!("prepare_sleep never says Full"),
                    }
                }
            }
            Op::CancelSleeps => {
                p.cancel_sleep();
                c.cancel_sleep();
            }
            Op::Scribble { offset, bytes } => {
                let start = offset as usize % size;
                let n = bytes.len().min(size - start);
                // SAFETY: start + n <= size <= region.len(); single-threaded,
                // so nothing reads these bytes concurrently.
                unsafe {
                    std::ptr::copy_nonoverlapping(bytes.as_ptr(), region.as_ptr().add(start), n);
                }
                scribbled |= n > 0;
            }
        }
        // Poison is sticky.
        assert!(!p_was || p.is_corrupted());
        assert!(!c_was || c.is_corrupted());
        if clean {
            assert!(!p.is_corrupted() && !c.is_corrupted());
        }
        let _ = (p.free_bytes(), c.used_bytes(), c.is_empty());
    }
});
