//! A lock-free single-producer single-consumer ring of variable-length byte
//! records, living in memory shared with an untrusted peer process.
//!
//! ```
//! # #[cfg(feature = "alloc")] {
//! let (mut tx, mut rx) = ferry_ring::heap(4096)?;
//! let wake = tx.try_push(b"hello")?;
//! assert!(!wake.is_needed()); // nobody sleeps in this example
//!
//! let mut buf = [0u8; 64];
//! let (n, wake) = rx.try_pop_into(&mut buf)?.expect("one record");
//! assert_eq!(&buf[..n], b"hello");
//! assert!(!wake.is_needed());
//! assert!(rx.try_peek()?.is_none());
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Zero-copy use: [`Producer::try_reserve`] hands out a [`WriteGrant`] over
//! the ring's own bytes, [`Consumer::try_peek`] a [`ReadGrant`]. Batching:
//! [`WriteGrant::stage`] + [`Producer::publish`] and [`ReadGrant::consume`] +
//! [`Consumer::release_consumed`] touch the shared cursor once per batch.
//!
//! # What this crate is not
//!
//! - Not a transport: it does no I/O, reads no clock, makes no syscall and
//!   allocates nothing per record. It never waits: blocking on the sleep
//!   words is `ferry-notify`'s job, and mapping shared memory the
//!   transport's.
//! - Not multi-producer or multi-consumer.
//! - Not a framing or serialisation layer: a record is opaque bytes
//!   (`ferry-frame` gives them meaning).
//! - Not a defence of the payload's contents: a hostile peer cannot make a
//!   handle panic, hang or touch memory outside the region, but it can of
//!   course send wrong bytes, or change them while you read them.
//!
//! # Layout
//!
//! All integers little-endian (x86_64 and aarch64). Header words and
//! record words (the 8-byte word that starts each record) are accessed with
//! native atomics; payload bytes are plain bytes whose visibility is ordered
//! by the record words (Release store, Acquire load), and are copied out
//! before validation. The region must be [`REGION_ALIGN`]-aligned and at least
//! [`region_size`]`(capacity)` bytes.
//!
//! | offset | size | field | written by |
//! |---|---|---|---|
//! | 0 | 8 | `magic` = [`MAGIC`] (`"FERRYRNG"`) | [`init`] |
//! | 8 | 4 | `layout_version` = [`LAYOUT_VERSION`] | [`init`] |
//! | 12 | 4 | `capacity`: data bytes, power of two, 64 B ..= 1 GiB | [`init`] |
//! | 16 | 112 | reserved, zero | [`init`] |
//! | 128 | 8 | `tail`: byte cursor past the last published record | producer |
//! | 136 | 4 | `consumer_sleep`: token while the consumer sleeps, else 0 | consumer (producer clears) |
//! | 140 | 4 | `producer_attached`: 1 while a producer handle exists | producer |
//! | 144 | 4 | `fence_free`: nonzero while the producer publishes fence-free | producer |
//! | 148 | 108 | reserved, zero | [`init`] |
//! | 256 | 8 | `head`: byte cursor past the last released record | consumer |
//! | 264 | 4 | `producer_sleep`: token while the producer sleeps, else 0 | producer (consumer clears) |
//! | 268 | 4 | `consumer_attached`: 1 while a consumer handle exists | consumer |
//! | 272 | 4 | `fence_free`: nonzero while the consumer releases fence-free | consumer |
//! | 276 | 108 | reserved, zero | [`init`] |
//! | 384 = [`HEADER_SIZE`] | `capacity` | data area (record words and payload) | producer |
//!
//! `docs/protocol.md` §9–§10 specifies the same layout and protocol for
//! implementers in other languages, with test vectors (`tests/spec_ring_vectors.rs`
//! checks them against this crate).
//!
//! The three header lines are 128 bytes apart so that adjacent-line
//! prefetching does not make the producer and consumer lines share. Each
//! sleep word lives in the line of the side that *checks* it on every
//! publish or release (the waker), not of the side that sets it: the hot path
//! then touches only the caller's own line, and the sleeper writes the
//! peer's line only when it goes to sleep. (Layout version 1 had each sleep
//! word in its owner's line and paid a cache miss per publish.)
//!
//! Cursors are `u64` byte counts that only grow (they would take centuries
//! to wrap); a cursor's position in the data area is `cursor % capacity`.
//! Always `head <= tail <= head + capacity`, both multiples of 8.
//!
//! A record is an 8-byte record word (`len: u32` payload bytes, then
//! `tag: u32`, [`TAG_DATA`] or [`TAG_PADDING`]), then the payload, padded to
//! a multiple of 8. A record never crosses the end of the data area: if it
//! does not fit before the end, a PADDING record whose `len` reaches exactly
//! the end is written first and the record starts at offset 0. A payload is
//! at most [`max_record_len`]`(capacity)` = `capacity / 2 - 8` bytes, so a
//! maximal record plus padding (plus the terminator, below) always fits in
//! an empty ring.
//!
//! # Publication: the record word, not the tail (layout version 3)
//!
//! The consumer finds records by reading the record word at its head
//! (Acquire): 0 means "nothing published yet", anything else is a record
//! (validated as below). It never reads `tail` to find data, so per record
//! it touches only the lines holding the record, which it needs anyway, and
//! not the producer's cursor line (layout version 2 read `tail`, one more
//! cache line moving between the cores per record whenever the consumer had
//! caught up).
//!
//! To make "0 = nothing yet" true, the producer keeps the word where the
//! next record will start at 0: with each record it writes a zero
//! *terminator* word right after it (so a record needs 8 bytes of free space
//! beyond its own size), and it writes the record word that publishes last,
//! with Release. A batch (staged records) is published by storing the first
//! staged record's word last; the other words of the batch are written
//! before it (Relaxed). Stale bytes of earlier laps, which may look like
//! record words (payload is arbitrary), are therefore never read as records.
//! [`init`] zeroes the word at offset 0. `tail` is still stored (Release,
//! after the record word) for attach, [`Consumer::used_bytes`] and
//! diagnostics; `head` is still how the consumer frees space.
//!
//! # Trust
//!
//! Each side keeps its own cursor locally and never reads back the shared
//! copy of its own cursor after attach. The producer reads the consumer's
//! `head` and validates every read: 8-aligned, never backwards, and no
//! further than our published tail. The consumer validates every record
//! word it reads (known tag, `len <= max_record_len`, not crossing the end,
//! padding ending exactly at the end, and the record plus its terminator
//! within the `capacity` bytes the producer may fill past the head we
//! published); it never relies on `tail` (a forged tail changes nothing but
//! [`Consumer::used_bytes`], which reports 0 for an impossible one). Any violation returns [`Corrupted`] (or the
//! `Corrupted` variant of the operation's error) and poisons the handle:
//! every later operation fails the same way. [`Producer::corruption`] and
//! [`Consumer::corruption`] say what was seen.
//!
//! # Sleep/wake protocol (the contract with `ferry-notify`)
//!
//! Each side has a sleep word (kept in the peer's line, see above):
//! `consumer_sleep` (waiting for data) and `producer_sleep` (waiting for space). 0 means awake; a nonzero
//! *token* chosen by the sleeper means "asleep, wake me through mechanism
//! `token`".
//!
//! Sleeper (shown for the consumer; the producer's is symmetric with
//! [`Producer::prepare_sleep`], which also takes the payload length it
//! waits to fit):
//!
//! 1. [`Consumer::prepare_sleep`]`(token)`: `consumer_sleep.store(token,
//!    SeqCst)`; `fence(SeqCst)`; re-read the record word at the head
//!    (Acquire; the producer's side re-reads `head`). If data arrived, it
//!    stores 0 and returns [`SleepPrep::Ready`]: do not block.
//! 2. On [`SleepPrep::Sleep`]: block while `consumer_sleep_word() == token`
//!    (futex semantics: the check and the sleep are atomic with respect to
//!    a wake). Spurious returns are fine.
//! 3. After waking: [`Consumer::cancel_sleep`] (store 0) and retry the read.
//!
//! Waker (the producer after [`Producer::publish`] or a commit; the
//! consumer after a release): store the record word (producer) or `head`
//! (consumer) with Release; `fence(SeqCst)`; if
//! `consumer_sleep != 0`, reset it to 0 (compare-exchange) and return a
//! needed [`Wake`] carrying the token taken out. The caller must then wake the peer (e.g.
//! `futex_wake(consumer_sleep_word)`).
//!
//! Why no wake-up is lost: the two SeqCst fences order "store token; read
//! record word" against "store record word; read token", so at least one
//! side sees the other's store: either the sleeper sees the new record and
//! does not block,
//! or the waker sees the token. The waker resets the word to 0 *before*
//! waking, so a sleeper that has not blocked yet finds `word != token` and
//! returns at once. `tests/loom.rs` checks both directions, with
//! `LOOM_MAX_PREEMPTIONS=4` (what the gate runs). The waker resets the word
//! with a compare-exchange, not a swap: see `take_sleeper` for the loom false
//! positive a swap caused.
//!
//! # Fence-free publication
//!
//! The SeqCst fence after every publish is what the sleep protocol
//! needs, but it costs the publisher a wait for its store buffer to drain
//! (the record's cache lines, on their way from the consumer's core): on this
//! project's machine, 64-byte records one at a time ran at about half the
//! rate without it. [`Producer::set_fence_free`] (and
//! [`Consumer::set_fence_free`] for releases) drops it: a publish is then a
//! Release store, a compiler fence and the load of the sleep word. The
//! StoreLoad ordering becomes the sleeper's job: a handle preparing to sleep
//! stores its token, fences, reads the peer's `fence_free` word (offset 16
//! of the peer's line) and, if it is set, runs its [`HeavyBarrier`]
//! ([`Consumer::set_heavy_barrier`]) before re-checking. A heavy barrier
//! (Linux `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`, from
//! `ferry_notify::barrier`) makes every thread of every registered process
//! execute a full barrier, which turns the publisher's compiler fence into
//! the fence the sleep protocol needs; the proof above then holds unchanged. A
//! sleeper with no heavy barrier never sleeps on a fence-free peer
//! (`prepare_sleep` says `Ready`). Turning fence-free on stores the flag
//! and fences, so a sleeper that read the old flag is still seen by the
//! next publish. The loom models cannot inject a fence into another
//! thread: they keep the fence-free side's fence (the model of the heavy
//! barrier) and check the protocol around it.
//!
//! When it pays: one-way streams where the sleeper rarely sleeps (64-byte
//! records one at a time, `benches/ring_vs_peers.rs`: 65.6 against 48.1 M
//! records per second on this project's VM, with the write prefetch below).
//! When it does not: traffic where a side prepares to sleep often, as
//! request/response does: the
//! heavy barrier costs about a microsecond and its IPI stalls the peer's
//! CPU, so `ferry-transport` keeps its rings fenced (its 64-byte round trip
//! took 4.85 µs p50 fence-free against 0.89 µs fenced).
//!
//! Obligations: publish staged records before the producer sleeps, and
//! release consumed records before the consumer sleeps, or each may wait for
//! the other. The token comes back from shared memory: the waker must treat
//! it as untrusted.
//!
//! # Write prefetch
//!
//! After each record that fills a cache line or more (49 payload bytes and
//! up, with its 8-byte word), the producer prefetches for writing
//! (`prefetchw` on x86_64, `prfm pstl1keep` on aarch64; nothing
//! elsewhere) the two cache lines 1 KiB past its tail (a quarter of the
//! ring in rings under 4 KiB). Those lines were last read by the consumer
//! one lap earlier and still sit in its cache; without the hint the
//! producer's first store to each waits for the line to come back, and a
//! publish's SeqCst fence waits with it. A prefetch is only a hint: it
//! changes no memory, never faults, and the address is always inside the
//! data area. Smaller records share lines with their neighbours and skip
//! it (prefetching after every 8-byte record cost more than it saved).
//! Measured in `benches/ring_vs_peers.rs` on this project's 2-vCPU VM, 10
//! interleaved runs each, 64-byte records, medians: fence-free one per
//! publish 53.2 → 65.6 M/s, 32 per publish 102.8 → 111.1 M/s, fenced one per
//! publish unchanged (48.4 / 48.1 M/s; see below). In the experiments
//! before it, a `nop` of the same size in place of each prefetch gave 58
//! M/s fence-free where the prefetches gave 70: the gain is the prefetch,
//! not where it moved the code.
//!
//! What it cannot remove: when the consumer has caught up it reads the line
//! the next record goes to, and a fenced publish then waits for that line
//! to cross between the cores once per record, whatever is prefetched. That
//! wait, not the fence instruction (a few nanoseconds), is what one record
//! per fenced publish costs against fence-free publication or batches.
#![no_std]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

mod consumer;
mod error;
mod fences;
mod layout;
mod producer;
mod raw;
mod region;
pub mod sync;
mod wake;

pub use consumer::{Consumer, ReadGrant};
pub use error::{AttachError, Corrupted, Corruption, PopError, PushError, ReserveError, Side};
pub use fences::HeavyBarrier;
pub use layout::{
    ConsumerLine, HEADER_SIZE, IdentityLine, LAYOUT_VERSION, MAGIC, MAX_CAPACITY, MIN_CAPACITY,
    ProducerLine, RECORD_HEADER_SIZE, REGION_ALIGN, RingHeader, TAG_DATA, TAG_PADDING,
    max_record_len, region_size,
};
pub use producer::{Producer, WriteGrant};
#[cfg(feature = "alloc")]
pub use region::HeapRegion;
pub use region::Region;
pub use wake::{SleepPrep, Wake};

/// Writes a fresh header (both cursors 0, sleep words 0) for a ring whose
/// data area holds `capacity` bytes. Call it once, before either side
/// attaches; the data area is left as is (it is never read before being
/// written).
///
/// Must not run concurrently with an attach to the same region.
///
/// # Errors
///
/// [`AttachError`] if the region is misaligned or smaller than
/// [`region_size`]`(capacity)`, if `capacity` is not a power of two in
/// [`MIN_CAPACITY`]`..=`[`MAX_CAPACITY`], or if the region already holds a
/// ring with a handle attached.
pub fn init<R: Region>(region: &R, capacity: usize) -> Result<(), AttachError> {
    raw::init(region, capacity)
}

/// A heap-backed ring for tests and in-process use: allocates a
/// [`HeapRegion`], initialises it and attaches both ends.
///
/// # Errors
///
/// [`AttachError::BadCapacity`] if `capacity` is not a power of two in
/// [`MIN_CAPACITY`]`..=`[`MAX_CAPACITY`].
#[cfg(feature = "alloc")]
#[allow(clippy::type_complexity)]
pub fn heap(
    capacity: usize,
) -> Result<
    (
        Producer<alloc::sync::Arc<HeapRegion>>,
        Consumer<alloc::sync::Arc<HeapRegion>>,
    ),
    AttachError,
> {
    if !layout::capacity_ok(capacity as u64) {
        return Err(AttachError::BadCapacity {
            capacity: capacity as u64,
        });
    }
    let region = alloc::sync::Arc::new(HeapRegion::for_capacity(capacity));
    init(&region, capacity)?;
    let producer = Producer::attach(alloc::sync::Arc::clone(&region))?;
    let consumer = Consumer::attach(region)?;
    Ok((producer, consumer))
}
