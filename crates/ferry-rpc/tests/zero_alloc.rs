//! Zero heap allocations per typed call in steady state, counted: a counting global allocator
//! sees every allocation of this process, where the server (its worker threads: envelope,
//! decoding, the handler's answer, encoding) and the client (encoding, the call, decoding the
//! answer) both run. Requests borrow (`&str`, `&[u8]` with postcard) or are read in place
//! (rkyv, validated), and raw bytes. The same for pipelined calls (`start_*`, a window of them
//! in flight from one thread).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::*;
use ferry_rpc::{Context, PendingReply, Status};
use serde::{Deserialize, Serialize};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static COUNTING: AtomicBool = AtomicBool::new(false);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> u64 {
    let before = ALLOCS.load(Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    f();
    COUNTING.store(false, Ordering::SeqCst);
    ALLOCS.load(Ordering::SeqCst) - before
}

#[derive(Serialize, Deserialize, Debug)]
pub struct Lookup<'a> {
    pub path: &'a str,
    pub prefix: &'a str,
    pub data: &'a [u8],
    pub line: u32,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Hit {
    pub line: u32,
    pub len: u32,
    pub sum: u64,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
pub struct Frame {
    pub id: u64,
    pub name: String,
    pub samples: Vec<u32>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
pub struct Summary {
    pub id: u64,
    pub total: u64,
}

#[ferry_rpc::service]
pub trait Hot {
    fn lookup(req: Lookup<'_>) -> Hit;
    #[codec(rkyv)]
    fn summarize(frame: Frame) -> Summary;
    fn checksum(bytes: &[u8]) -> u64;
}

struct HotEngine;

impl Hot for HotEngine {
    fn lookup(&self, _cx: &Context<'_>, req: Lookup<'_>) -> Result<Hit, Status> {
        Ok(Hit {
            line: req.line,
            len: (req.path.len() + req.prefix.len()) as u32,
            sum: req.data.iter().map(|&b| u64::from(b)).sum(),
        })
    }
    fn summarize(
        &self,
        _cx: &Context<'_>,
        frame: &ferry_rpc::codec::Archived<Frame>,
    ) -> Result<Summary, Status> {
        Ok(Summary {
            id: frame.id.to_native(),
            total: frame
                .samples
                .iter()
                .map(|s| u64::from(s.to_native()))
                .sum::<u64>()
                + frame.name.len() as u64,
        })
    }
    fn checksum(&self, _cx: &Context<'_>, bytes: &[u8]) -> Result<u64, Status> {
        Ok(bytes.iter().map(|&b| u64::from(b)).sum())
    }
}

/// `HotEngine` served as `name` in a fresh directory, and a client of it.
fn hot(name: &str) -> (TestDir, ferry_rpc::Server, HotClient) {
    let dir = TestDir::new(name);
    let server = serve(&dir, name, HotServer::new(HotEngine));
    let client = HotClient::from_client(connect(&dir, name));
    (dir, server, client)
}

/// The calls' inputs: a file's bytes, 2 KiB of prefix, an rkyv frame.
fn inputs() -> (Vec<u8>, String, Frame) {
    let frame = Frame {
        id: 7,
        name: "frame".into(),
        samples: (0..64).collect(),
    };
    (vec![3u8; 512], "x".repeat(2048), frame)
}

fn lookup<'a>(prefix: &'a str, data: &'a [u8]) -> Lookup<'a> {
    Lookup {
        path: "src/main.rs",
        prefix,
        data,
        line: 9,
    }
}

/// The answers to [`lookup`], `summarize` and `checksum` with [`inputs`].
const HIT: Hit = Hit {
    line: 9,
    len: 2059,
    sum: 1536,
};
const SUMMARY: Summary = Summary {
    id: 7,
    total: 2016 + 5,
};
const CHECKSUM: u64 = 1536;

#[test]
fn typed_calls_with_borrowed_and_rkyv_types_allocate_nothing_in_steady_state() {
    let (_dir, _server, client) = hot("rpc-alloc");
    let (data, prefix, frame) = inputs();
    let round = || {
        assert_eq!(client.lookup(&lookup(&prefix, &data)).unwrap(), HIT);
        assert_eq!(client.summarize(&frame).unwrap(), SUMMARY);
        assert_eq!(client.checksum(&data).unwrap(), CHECKSUM);
    };
    // Warm up: buffers, the call table, the rkyv arena, lazily created thread-locals.
    for _ in 0..200 {
        round();
    }
    let n = allocations_during(|| {
        for _ in 0..1000 {
            round();
        }
    });
    assert_eq!(n, 0, "{n} allocations in 3000 typed calls");
}

#[test]
fn pipelined_typed_calls_allocate_nothing_in_steady_state() {
    let (_dir, _server, client) = hot("rpc-alloc-pipe");
    let (data, prefix, frame) = inputs();
    let lookup = lookup(&prefix, &data);
    const WINDOW: usize = 16;
    let mut lookups = std::collections::VecDeque::with_capacity(WINDOW);
    let mut summaries = std::collections::VecDeque::with_capacity(WINDOW);
    let mut checksums = std::collections::VecDeque::with_capacity(WINDOW);
    // Keeps a window of each method in flight for `rounds` rounds (waits for the oldest three,
    // starts three more), then drains it in the same order.
    let mut run = |rounds: usize| {
        for round in 0..rounds + WINDOW {
            if lookups.len() == WINDOW || round >= rounds {
                let hit = lookups.pop_front().map(PendingReply::wait);
                assert_eq!(hit.unwrap().unwrap(), HIT);
                let s = summaries.pop_front().map(PendingReply::wait);
                assert_eq!(s.unwrap().unwrap(), SUMMARY);
                let sum = checksums.pop_front().map(PendingReply::wait);
                assert_eq!(sum.unwrap().unwrap(), CHECKSUM);
            }
            if round < rounds {
                lookups.push_back(client.start_lookup(&lookup).unwrap());
                summaries.push_back(client.start_summarize(&frame).unwrap());
                checksums.push_back(client.start_checksum(&data).unwrap());
            }
        }
        assert!(lookups.is_empty() && summaries.is_empty() && checksums.is_empty());
    };
    // Warm up: buffers, the call table, the rkyv arena, lazily created thread-locals, and the
    // transport's answer slots (each keeps the largest answer it held; which slot gets which
    // answer depends on the order calls start and end, the same in every run).
    run(300);
    run(300);
    let n = allocations_during(|| run(1000));
    assert_eq!(n, 0, "{n} allocations in 3000 pipelined typed calls");
}
