//! Checks what `docs/protocol.md` says about the ring against the ring itself: the header
//! offsets of §9.1–§9.2 and the `ring` vectors of §14.2–§14.3, parsed out of the spec, in both
//! directions. Encode: a producer writing the vector's records leaves exactly the vector's
//! bytes in the data area (and the documented tail, and takes the documented sleep token).
//! Decode: a consumer given the vector's bytes (unspecified bytes filled with garbage) reads
//! exactly the vector's records, and nothing after them.

mod common;

use std::num::NonZeroU32;
use std::sync::Arc;

use common::{data, peek_u32, peek_u64, poke_u32, poke_u64};
use ferry_ring::{Consumer, HEADER_SIZE, HeapRegion, Producer, Region, SleepPrep};

const SPEC: &str = include_str!("../../../docs/protocol.md");

/// What the spec leaves unspecified is filled with this in both directions.
const GARBAGE: u8 = 0xEE;

/// Offsets of §9.1–§9.2, as the spec's tables give them.
const MAGIC: usize = 0;
const LAYOUT_VERSION: usize = 8;
const CAPACITY: usize = 12;
const TAIL: usize = 128;
const CONSUMER_SLEEP: usize = 136;
const PRODUCER_ATTACHED: usize = 140;
const PRODUCER_FENCE_FREE: usize = 144;
const HEAD: usize = 256;
const PRODUCER_SLEEP: usize = 264;
const CONSUMER_ATTACHED: usize = 268;
const CONSUMER_FENCE_FREE: usize = 272;

#[derive(Debug)]
struct RingVector {
    name: String,
    capacity: usize,
    head: u64,
    tail: u64,
    records: Vec<Vec<u8>>,
    stale: Vec<(usize, usize)>,
    consumer_sleep: Option<u32>,
    /// The data area from offset 0; `None` for `..` (unspecified).
    bytes: Vec<Option<u8>>,
}

fn parse_hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap_or_else(|_| panic!("bad hex byte {b:?}")))
        .collect()
}

fn ring_vectors() -> Vec<RingVector> {
    let mut out = Vec::new();
    let mut lines = SPEC.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "```ring" {
            continue;
        }
        let mut v = RingVector {
            name: String::new(),
            capacity: 0,
            head: 0,
            tail: 0,
            records: Vec::new(),
            stale: Vec::new(),
            consumer_sleep: None,
            bytes: Vec::new(),
        };
        for l in lines.by_ref() {
            if l.trim() == "```" {
                break;
            }
            if let Some(meta) = l.strip_prefix('#') {
                let (k, val) = meta.split_once(':').expect("`# key: value`");
                let val = val.trim();
                match k.trim() {
                    "name" => v.name = val.to_owned(),
                    "capacity" => v.capacity = val.parse().unwrap(),
                    "head" => v.head = val.parse().unwrap(),
                    "tail" => v.tail = val.parse().unwrap(),
                    "record" => v.records.push(parse_hex(val)),
                    "consumer_sleep" => v.consumer_sleep = Some(val.parse().unwrap()),
                    "stale" => {
                        let (a, b) = val.split_once("..").expect("`start..end`");
                        v.stale.push((a.parse().unwrap(), b.parse().unwrap()));
                    }
                    // The frame a record carries: checked by ferry-frame's spec_vectors.rs.
                    "kind" | "correlation_id" | "payload" => {}
                    other => panic!("ring vector {}: unknown field `{other}`", v.name),
                }
            } else {
                v.bytes.extend(l.split_whitespace().map(|b| {
                    (b != "..").then(|| {
                        u8::from_str_radix(b, 16).unwrap_or_else(|_| panic!("bad byte {b:?}"))
                    })
                }));
            }
        }
        assert!(!v.name.is_empty(), "ring block without `# name:`");
        assert!(
            v.bytes.len().is_multiple_of(8),
            "{}: whole words only",
            v.name
        );
        out.push(v);
    }
    out
}

/// A region for `capacity` whose data area is all garbage, then `words` (data offset, byte
/// or garbage) written over it, with the header made by `ferry_ring::init` and both cursors
/// at `head` / `tail`.
fn region_with(
    capacity: usize,
    head: u64,
    tail: u64,
    bytes: &[(usize, Option<u8>)],
) -> Arc<HeapRegion> {
    let region = Arc::new(HeapRegion::for_capacity(capacity));
    ferry_ring::init(&region, capacity).unwrap();
    let mut area = vec![GARBAGE; capacity];
    for &(off, b) in bytes {
        area[off] = b.unwrap_or(GARBAGE);
    }
    for (i, word) in area.chunks_exact(8).enumerate() {
        poke_u64(
            &*region,
            data(i * 8),
            u64::from_le_bytes(word.try_into().unwrap()),
        );
    }
    poke_u64(&*region, HEAD, head);
    poke_u64(&*region, TAIL, tail);
    region
}

fn data_area(region: &HeapRegion, capacity: usize) -> Vec<u8> {
    (0..capacity / 8)
        .flat_map(|i| peek_u64(region, data(i * 8)).to_le_bytes())
        .collect()
}

#[test]
fn spec_has_the_ring_vectors() {
    let names: Vec<String> = ring_vectors().into_iter().map(|v| v.name).collect();
    for required in [
        "data-record",
        "padding-at-the-wrap",
        "terminator",
        "example-request",
        "example-response",
    ] {
        assert!(
            names.iter().any(|n| n == required),
            "missing ring vector {required}"
        );
    }
}

#[test]
fn a_producer_writes_exactly_the_vector_bytes() {
    for v in ring_vectors() {
        let stale: Vec<(usize, Option<u8>)> = v
            .stale
            .iter()
            .flat_map(|&(a, b)| (a..b).map(|off| (off, v.bytes[off])))
            .collect();
        let region = region_with(v.capacity, v.head, v.head, &stale);
        // The word at the tail of an honest ring is the terminator (§9.3).
        poke_u64(&*region, data(v.head as usize % v.capacity), 0);
        if let Some(token) = v.consumer_sleep {
            poke_u32(&*region, CONSUMER_SLEEP, token);
        }
        let mut producer = Producer::attach(region.clone()).unwrap();
        let mut woke = 0;
        for r in &v.records {
            let wake = producer.try_push(r).unwrap();
            if wake.is_needed() {
                woke = wake.token();
            }
        }
        let area = data_area(&region, v.capacity);
        for (off, want) in v.bytes.iter().enumerate() {
            if let Some(want) = want {
                assert_eq!(area[off], *want, "{}: data byte {off}", v.name);
            }
        }
        assert_eq!(peek_u64(&*region, TAIL), v.tail, "{}: tail", v.name);
        assert_eq!(
            woke,
            v.consumer_sleep.unwrap_or(0),
            "{}: wake token",
            v.name
        );
        assert_eq!(
            peek_u32(&*region, CONSUMER_SLEEP),
            0,
            "{}: sleep word reset",
            v.name
        );
    }
}

#[test]
fn a_consumer_reads_exactly_the_vector_records() {
    for v in ring_vectors() {
        let shown: Vec<(usize, Option<u8>)> = v.bytes.iter().copied().enumerate().collect();
        let region = region_with(v.capacity, v.head, v.tail, &shown);
        let mut consumer = Consumer::attach(region.clone()).unwrap();
        for (i, want) in v.records.iter().enumerate() {
            let (got, _wake) = consumer
                .try_pop_vec()
                .unwrap_or_else(|_| panic!("{}: record {i} rejected", v.name))
                .unwrap_or_else(|| panic!("{}: record {i} missing", v.name));
            assert_eq!(&got, want, "{}: record {i}", v.name);
        }
        assert!(
            consumer.try_peek().unwrap().is_none(),
            "{}: read past the terminator",
            v.name
        );
        assert_eq!(
            peek_u64(&*region, HEAD),
            v.tail,
            "{}: released head",
            v.name
        );
    }
}

/// The header tables of §9.1–§9.2: what `init` writes, and which word each handle operation
/// touches.
#[test]
fn the_header_is_where_the_spec_says() {
    let capacity = 4096;
    let region = Arc::new(HeapRegion::for_capacity(capacity));
    // Garbage first: init must write every header byte.
    for off in (0..HEADER_SIZE).step_by(8) {
        poke_u64(&*region, off, u64::MAX);
    }
    ferry_ring::init(&region, capacity).unwrap();
    assert_eq!(HEADER_SIZE, 384);
    assert_eq!(peek_u64(&*region, MAGIC).to_le_bytes(), *b"FERRYRNG");
    assert_eq!(peek_u64(&*region, MAGIC), 0x474E_5259_5252_4546);
    assert_eq!(peek_u32(&*region, LAYOUT_VERSION), 3);
    assert_eq!(peek_u32(&*region, CAPACITY), capacity as u32);
    for off in (16..HEADER_SIZE).step_by(4) {
        assert_eq!(peek_u32(&*region, off), 0, "header byte {off} after init");
    }
    assert_eq!(
        peek_u64(&*region, data(0)),
        0,
        "the first record word after init"
    );

    let mut producer = Producer::attach(region.clone()).unwrap();
    let mut consumer = Consumer::attach(region.clone()).unwrap();
    assert_eq!(peek_u32(&*region, PRODUCER_ATTACHED), 1);
    assert_eq!(peek_u32(&*region, CONSUMER_ATTACHED), 1);
    producer.set_fence_free(true);
    consumer.set_fence_free(true);
    assert_eq!(peek_u32(&*region, PRODUCER_FENCE_FREE), 1);
    assert_eq!(peek_u32(&*region, CONSUMER_FENCE_FREE), 1);
    producer.set_fence_free(false);
    consumer.set_fence_free(false);
    assert_eq!(peek_u32(&*region, PRODUCER_FENCE_FREE), 0);
    assert_eq!(peek_u32(&*region, CONSUMER_FENCE_FREE), 0);

    // The consumer's sleep word is in the producer line, the producer's in the consumer line.
    let token = NonZeroU32::new(2).unwrap();
    assert_eq!(consumer.prepare_sleep(token).unwrap(), SleepPrep::Sleep);
    assert_eq!(peek_u32(&*region, CONSUMER_SLEEP), 2);
    assert_eq!(producer.try_push(b"x").unwrap().token(), 2);
    assert_eq!(peek_u32(&*region, CONSUMER_SLEEP), 0);
    assert_eq!(peek_u64(&*region, TAIL), 16);

    let big = producer.max_record_len();
    assert_eq!(big, capacity / 2 - 8, "§9.4");
    let _ = producer.try_push(&vec![0; big]).unwrap();
    let token = NonZeroU32::new(1).unwrap();
    assert_eq!(
        producer.prepare_sleep(big, token).unwrap(),
        SleepPrep::Sleep
    );
    assert_eq!(peek_u32(&*region, PRODUCER_SLEEP), 1);
    let (_, wake) = consumer.try_pop_vec().unwrap().unwrap();
    assert_eq!(wake.token(), 1, "a release wakes a sleeping producer");
    assert_eq!(peek_u32(&*region, PRODUCER_SLEEP), 0);
    let _ = consumer.try_pop_vec().unwrap().unwrap();
    assert_eq!(peek_u64(&*region, HEAD), peek_u64(&*region, TAIL));
    drop(producer);
    drop(consumer);
    assert_eq!(peek_u32(&*region, PRODUCER_ATTACHED), 0);
    assert_eq!(peek_u32(&*region, CONSUMER_ATTACHED), 0);
    let _ = region.len();
}
