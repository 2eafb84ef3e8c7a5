//! One connection's data path, shared by client and server: the two rings in the connection's
//! shared memory, framing into them (with fragmentation), and the wake-up protocol.
//!
//! Sleep tokens (what a sleeper stores in its ring sleep word; the waker reads it back from the
//! ring's `Wake` and treats it as untrusted bits):
//! - [`TOKEN_FUTEX`]: threads of the sleeper's process block on the word itself (futex; macOS:
//!   `os_sync_wait_on_address`); the waker calls `wake_all` on it.
//! - [`TOKEN_DOORBELL`]: the sleeper polls its doorbell (eventfd; macOS: a pipe); the waker
//!   rings it.
//!
//! Unknown bits are ignored: a hostile peer can make us issue a spurious wake, nothing more.
//!
//! Windows has no wait on a word that another process can wake (`WaitOnAddress` works within
//! one process). There a `TOKEN_FUTEX` sleeper blocks on the word with `WaitOnAddress`, and the
//! waker rings the sleeper's doorbell instead of waking the word; whoever waits on that
//! doorbell in the sleeper's process (the client's monitor thread, the server's worker) then
//! wakes the word's sleepers in-process ([`Tx::relay_wakes`], [`RxWord::wake_all`]): one more
//! thread hop, on the path where the sleeper had already given up spinning.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ferry_frame::{
    DecodeLimits, Event, Flags, HEADER_LEN, Kind, Limits, Reassembler, ReassemblyLimits,
};
use ferry_notify::{Doorbell, NotifyError, WaitOutcome, WaitPolicy};
use ferry_ring::{Consumer, Producer, Region, ReserveError, SleepPrep, Wake};

use crate::error::Error;
use crate::metrics::{LinkCounters, SideCounters};
use crate::sys::SharedMemory;

/// Sleeper blocks on the futex of the sleep word.
pub(crate) const TOKEN_FUTEX: u32 = 1;
/// Sleeper polls its doorbell.
pub(crate) const TOKEN_DOORBELL: u32 = 2;

/// How long one blocking wait slice lasts before the waiter re-checks that the peer is alive.
pub(crate) const WAIT_SLICE: Duration = Duration::from_millis(5);

/// Largest payload of one fragment: small enough that several fit in the ring, so that other
/// messages interleave with a large one and the receiver drains while the sender writes.
pub(crate) fn fragment_payload(capacity: usize, max_record: usize) -> usize {
    (capacity / 4)
        .min(max_record)
        .saturating_sub(HEADER_LEN)
        .max(1)
}

/// A ring's share of the connection's memory.
#[derive(Debug, Clone)]
pub(crate) struct RingSlice {
    mem: Arc<SharedMemory>,
    offset: usize,
    len: usize,
}

// SAFETY: `offset + len <= mem.len()` (checked in `Layout::slices`), the mapping lives as long as
// the `Arc`, is never remapped, and starts page-aligned, so `offset` (a multiple of 128) keeps
// the ring's 128-byte alignment.
unsafe impl Region for RingSlice {
    fn as_ptr(&self) -> *mut u8 {
        // SAFETY: in bounds of the mapping, see the impl's comment.
        unsafe { self.mem.as_ptr().add(self.offset) }
    }
    fn len(&self) -> usize {
        self.len
    }
}

/// Where the two rings sit in a connection's memory: client → server first, then server →
/// client, each at a 4096-byte boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub c2s_capacity: usize,
    pub s2c_capacity: usize,
    pub c2s_offset: usize,
    pub s2c_offset: usize,
    pub total: usize,
}

const PAGE: usize = 4096;

impl Layout {
    /// The layout for the agreed limits, or why the ring sizes are unusable.
    pub(crate) fn new(limits: &Limits) -> Result<Self, String> {
        let c2s = limits.client_to_server_ring_bytes as usize;
        let s2c = limits.server_to_client_ring_bytes as usize;
        for (what, cap) in [
            ("client_to_server_ring_bytes", c2s),
            ("server_to_client_ring_bytes", s2c),
        ] {
            if !cap.is_power_of_two() || !(MIN_RING..=MAX_RING).contains(&cap) {
                return Err(format!(
                    "{what} = {cap}: ring sizes must be powers of two between {MIN_RING} and {MAX_RING}"
                ));
            }
        }
        let c2s_len = ferry_ring::region_size(c2s);
        let s2c_offset = c2s_len.next_multiple_of(PAGE);
        let s2c_len = ferry_ring::region_size(s2c);
        Ok(Layout {
            c2s_capacity: c2s,
            s2c_capacity: s2c,
            c2s_offset: 0,
            s2c_offset,
            total: (s2c_offset + s2c_len).next_multiple_of(PAGE),
        })
    }

    /// Splits a mapping of `self.total` bytes into the two ring regions.
    pub(crate) fn slices(&self, mem: &Arc<SharedMemory>) -> (RingSlice, RingSlice) {
        assert!(mem.len() >= self.total, "mapping smaller than the layout");
        let c2s = RingSlice {
            mem: mem.clone(),
            offset: self.c2s_offset,
            len: ferry_ring::region_size(self.c2s_capacity),
        };
        let s2c = RingSlice {
            mem: mem.clone(),
            offset: self.s2c_offset,
            len: ferry_ring::region_size(self.s2c_capacity),
        };
        (c2s, s2c)
    }
}

/// Smallest ring accepted.
pub const MIN_RING: usize = 4096;
/// Largest ring accepted.
pub const MAX_RING: usize = 1 << 30;

/// How long a word wait sleeps where word waits are unsupported (macOS before 14.4).
#[cfg(target_os = "macos")]
const WORD_POLL: Duration = Duration::from_millis(1);

/// Blocks while `word` holds `expected`, at most `timeout`: ferry-notify's word wait (Linux:
/// futex; macOS 14.4+: `os_sync_wait_on_address`; Windows: `WaitOnAddress`, which only threads
/// of this process wake, see the module docs). Where word waits are unsupported (macOS before
/// 14.4) it sleeps `WORD_POLL` instead and says "woken": every caller re-checks its condition
/// after a wait, so this only costs wake-up latency (up to a millisecond) and a few wake-ups
/// per second while waiting.
#[inline]
pub(crate) fn word_wait(
    word: &AtomicU32,
    expected: u32,
    timeout: Option<Duration>,
) -> Result<WaitOutcome, NotifyError> {
    #[cfg(windows)]
    return ferry_notify::word::wait_in_process(word, expected, timeout);
    #[cfg(target_os = "macos")]
    if !ferry_notify::word::is_supported() {
        std::thread::sleep(timeout.map_or(WORD_POLL, |t| t.min(WORD_POLL)));
        return Ok(WaitOutcome::Woken);
    }
    #[cfg(unix)]
    ferry_notify::word::wait(word, expected, timeout)
}

/// Wakes every thread blocked in [`word_wait`] on `word`: in either process on Linux and
/// macOS, in this process on Windows. Where word waits are unsupported (macOS before 14.4)
/// nobody blocks on the word (they sleep short slices, see [`word_wait`]), so there is nothing
/// to do.
#[inline]
pub(crate) fn word_wake_all(word: &AtomicU32) -> Result<(), NotifyError> {
    #[cfg(windows)]
    return ferry_notify::word::wake_all_in_process(word);
    #[cfg(target_os = "macos")]
    if !ferry_notify::word::is_supported() {
        return Ok(());
    }
    #[cfg(unix)]
    ferry_notify::word::wake_all(word)
}

/// Delivers a wake-up the ring asked for, counting it in `counters` (whose writer the caller
/// is: the producer lock's holder, or the incoming ring's).
#[inline]
pub(crate) fn deliver(
    wake: Wake,
    word: &AtomicU32,
    peer_bell: &Doorbell,
    counters: &SideCounters,
) -> Result<(), Error> {
    if !wake.is_needed() {
        return Ok(());
    }
    let t = wake.token();
    counters.woke(t & TOKEN_FUTEX != 0, t & TOKEN_DOORBELL != 0);
    #[cfg(unix)]
    {
        if t & TOKEN_FUTEX != 0 {
            word_wake_all(word)?;
        }
        if t & TOKEN_DOORBELL != 0 {
            peer_bell.ring()?;
        }
    }
    // Windows: the word's sleepers are in the peer's process; its doorbell's waiter wakes
    // them (see the module docs).
    #[cfg(windows)]
    if t & (TOKEN_FUTEX | TOKEN_DOORBELL) != 0 {
        let _ = word;
        peer_bell.ring()?;
    }
    Ok(())
}

/// The incoming ring's sleep word, reachable without the `Rx` lock (which the thread sleeping
/// on the word holds): what a doorbell's waiter wakes in-process on Windows.
#[cfg(windows)]
#[derive(Debug)]
pub(crate) struct RxWord {
    /// Keeps the mapping holding `word` alive.
    _ring: RingSlice,
    word: std::ptr::NonNull<AtomicU32>,
}

// SAFETY: `word` points into the mapping `_ring` keeps alive; it is only used as a shared
// reference to an atomic, which any thread may hold.
#[cfg(windows)]
unsafe impl Send for RxWord {}
// SAFETY: as for `Send`: only `&AtomicU32` is ever made from the pointer.
#[cfg(windows)]
unsafe impl Sync for RxWord {}

#[cfg(windows)]
impl RxWord {
    /// The consumer sleep word of `rx`, whose ring lives in `ring`.
    pub(crate) fn new(ring: RingSlice, rx: &Rx) -> Self {
        RxWord {
            _ring: ring,
            word: std::ptr::NonNull::from(rx.consumer.consumer_sleep_word()),
        }
    }

    /// Wakes the threads of this process sleeping on the word.
    pub(crate) fn wake_all(&self) {
        // SAFETY: the word lies in the mapping `_ring` keeps alive for as long as `self`.
        let word = unsafe { self.word.as_ref() };
        let _ = word_wake_all(word);
    }
}

/// Whether the connection still stands; shared by everything that waits on it.
#[derive(Debug, Default)]
pub(crate) struct Liveness {
    closed: AtomicBool,
    reason: Mutex<Option<&'static str>>,
}

impl Liveness {
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
    pub(crate) fn close(&self, reason: &'static str) {
        let mut r = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_none() {
            *r = Some(reason);
        }
        self.closed.store(true, Ordering::Release);
    }
    pub(crate) fn error(&self) -> Error {
        let r = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        Error::Closed(r.unwrap_or("the connection was closed"))
    }
}

/// Accounting that keeps a sender within the receiver's reassembly limits: at most
/// `max_partial_messages` fragmented messages at once, whose sizes add up to at most
/// `max_buffered_bytes`; and never two fragmented messages with the same `(kind, id)` at once
/// (the receiver reassembles by that key: the items of one stream, sent from several threads,
/// would be merged).
#[derive(Debug)]
struct FragmentBudget {
    state: Mutex<BudgetState>,
    cv: Condvar,
    max_messages: usize,
    max_bytes: usize,
}

/// What [`FragmentBudget`] has handed out.
#[derive(Debug)]
struct BudgetState {
    messages: usize,
    bytes: usize,
    /// `(kind, id)` of each fragmented message being sent (capacity `max_messages`, reserved
    /// up front: no allocation per message).
    keys: Vec<(Kind, u64)>,
}

impl BudgetState {
    /// Takes budget for a message of `bytes` (already capped) keyed `key`, if free now.
    fn take(&mut self, key: (Kind, u64), bytes: usize, b: &FragmentBudget) -> bool {
        if self.messages < b.max_messages
            && self.bytes + bytes <= b.max_bytes
            && !self.keys.contains(&key)
        {
            self.messages += 1;
            self.bytes += bytes;
            self.keys.push(key);
            true
        } else {
            false
        }
    }
}

/// How far a message sent with [`Tx::try_send_from`] has got.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Payload bytes already in the ring.
    pub sent: usize,
    /// Whether the message holds fragment budget (between its first and last fragment).
    pub budget: bool,
}

/// The sending half: the producer of the outgoing ring.
#[derive(Debug)]
pub(crate) struct Tx {
    producer: Mutex<Producer<RingSlice>>,
    peer_bell: Doorbell,
    budget: FragmentBudget,
    max_message: usize,
    fragment: usize,
    policy: WaitPolicy,
    /// Message ids for fragmented notifications (see [`Tx::send`]).
    next_note_id: AtomicU64,
    /// The connection's counters; `sent` is written under the producer lock only.
    metrics: Arc<LinkCounters>,
    /// Our own side's doorbell (client: the one its monitor thread sleeps on), rung before a
    /// sender sleeps for ring space. The peer may be waiting to send us its answers before it
    /// reads more of ours; while every caller of ours is stuck sending, nobody would read them
    /// (a caller disarms the idle reader while it works). The ring wakes the monitor, which
    /// reads the incoming ring, so both directions keep moving.
    own_bell: Option<Doorbell>,
}

impl Tx {
    /// Sets the doorbell rung before a sender sleeps for ring space (see the field).
    pub(crate) fn with_own_bell(mut self, bell: Doorbell) -> Self {
        self.own_bell = Some(bell);
        self
    }

    pub(crate) fn new(
        producer: Producer<RingSlice>,
        peer_bell: Doorbell,
        limits: &Limits,
        policy: WaitPolicy,
        metrics: Arc<LinkCounters>,
    ) -> Self {
        // The rings stay fenced (ferry-ring's default): fence-free publication
        // moves the cost to every `prepare_sleep` (a membarrier, whose IPI also
        // stalls the peer's spinning CPU), and request/response traffic
        // prepares to sleep often: measured with fence-free rings, the 64 B
        // echo round trip went from 0.89 to 4.85 µs p50 on this project's VM.
        let fragment = fragment_payload(producer.capacity(), producer.max_record_len());
        Tx {
            producer: Mutex::new(producer),
            peer_bell,
            budget: FragmentBudget {
                state: Mutex::new(BudgetState {
                    messages: 0,
                    bytes: 0,
                    keys: Vec::with_capacity(limits.max_partial_messages as usize),
                }),
                cv: Condvar::new(),
                max_messages: limits.max_partial_messages as usize,
                max_bytes: limits.max_buffered_bytes as usize,
            },
            max_message: limits.max_message_size as usize,
            fragment,
            policy,
            next_note_id: AtomicU64::new(1),
            metrics,
            own_bell: None,
        }
    }

    /// Largest payload that goes as one frame (the zero-copy path).
    pub(crate) fn max_single(&self) -> usize {
        self.fragment
    }

    fn lock(&self) -> MutexGuard<'_, Producer<RingSlice>> {
        self.producer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends one message: one frame when it fits, fragments otherwise. Waits for ring space
    /// (never drops, never buffers) until `deadline`.
    pub(crate) fn send(
        &self,
        kind: Kind,
        id: u64,
        payload: &[u8],
        deadline: Option<Instant>,
        live: &Liveness,
    ) -> Result<(), Error> {
        if payload.len() > self.max_message {
            return Err(Error::TooLarge {
                len: payload.len(),
                max: self.max_message,
            });
        }
        if payload.len() <= self.fragment {
            return self.send_with(
                kind,
                Flags::NONE,
                id,
                payload.len(),
                deadline,
                live,
                |buf| buf.copy_from_slice(payload),
            );
        }
        // Fragments of one message are keyed by (kind, id) at the receiver, so two fragmented
        // notifications sent at once (from two threads, both with id 0) would be merged into
        // one. The protocol wants a message id unique among the sender's partial messages:
        // give every fragmented notification its own (odd, so never 0).
        let id = if kind == Kind::Notification && id == 0 {
            self.next_note_id.fetch_add(2, Ordering::Relaxed) | 1
        } else {
            id
        };
        self.acquire_budget((kind, id), payload.len(), deadline, live)?;
        let result = (|| {
            let mut chunks = payload.chunks(self.fragment).peekable();
            while let Some(chunk) = chunks.next() {
                let flags = if chunks.peek().is_some() {
                    Flags::MORE
                } else {
                    Flags::NONE
                };
                self.send_with(kind, flags, id, chunk.len(), deadline, live, |buf| {
                    buf.copy_from_slice(chunk)
                })?;
            }
            Ok(())
        })();
        if result.is_err() && !live.is_closed() {
            // Tell the receiver to drop what it buffered of this message.
            let _ = self.send_with(kind, Flags::ABORT, id, 0, None, live, |_| {});
        }
        self.release_budget((kind, id), payload.len());
        result
    }

    /// Sends a single-frame message if it fits now: `Ok(false)` when the ring is full.
    pub(crate) fn try_send(
        &self,
        kind: Kind,
        id: u64,
        payload: &[u8],
        live: &Liveness,
    ) -> Result<bool, Error> {
        self.try_send_frame(kind, Flags::NONE, id, payload, live)
    }

    /// Sends as much of a message as fits now, continuing from `progress`, without ever
    /// waiting: `Ok(true)` once the whole message is out. A fragmented message takes its share
    /// of the receiver's reassembly budget when its first fragment goes, and gives it back with
    /// the last one.
    pub(crate) fn try_send_from(
        &self,
        kind: Kind,
        id: u64,
        payload: &[u8],
        progress: &mut Progress,
        live: &Liveness,
    ) -> Result<bool, Error> {
        if payload.len() <= self.fragment {
            return self.try_send(kind, id, payload, live);
        }
        if payload.len() > self.max_message {
            return Err(Error::TooLarge {
                len: payload.len(),
                max: self.max_message,
            });
        }
        if !progress.budget {
            if !self.try_acquire_budget((kind, id), payload.len()) {
                return Ok(false);
            }
            progress.budget = true;
        }
        while progress.sent < payload.len() {
            let end = (progress.sent + self.fragment).min(payload.len());
            let flags = if end < payload.len() {
                Flags::MORE
            } else {
                Flags::NONE
            };
            match self.try_send_frame(kind, flags, id, &payload[progress.sent..end], live) {
                Ok(true) => progress.sent = end,
                Ok(false) => return Ok(false),
                Err(e) => {
                    self.release_budget((kind, id), payload.len());
                    progress.budget = false;
                    return Err(e);
                }
            }
        }
        self.release_budget((kind, id), payload.len());
        progress.budget = false;
        Ok(true)
    }

    fn try_send_frame(
        &self,
        kind: Kind,
        flags: Flags,
        id: u64,
        payload: &[u8],
        live: &Liveness,
    ) -> Result<bool, Error> {
        self.try_send_with(kind, flags, id, payload.len(), live, |buf| {
            buf.copy_from_slice(payload)
        })
        .map(|sent| sent.is_ok())
    }

    /// Writes one frame of `len` payload bytes, filled in place by `fill`, if the ring has
    /// room now (never waits): `Ok(Err(fill))` hands `fill` back when the ring is full.
    pub(crate) fn try_send_with<F: FnOnce(&mut [u8])>(
        &self,
        kind: Kind,
        flags: Flags,
        id: u64,
        len: usize,
        live: &Liveness,
        fill: F,
    ) -> Result<Result<(), F>, Error> {
        let r = self.write_frame(kind, flags, id, len, live, fill)?;
        if r.is_err() {
            self.metrics.sent.ring_full();
        }
        Ok(r)
    }

    /// The one place a frame is written: reserves room for a frame of `len` payload bytes, has
    /// `fill` write the payload in place, encodes the header, commits, and wakes the consumer if
    /// it sleeps. `Ok(Err(fill))` hands `fill` back when the ring is full (not counted here).
    #[inline]
    fn write_frame<F: FnOnce(&mut [u8])>(
        &self,
        kind: Kind,
        flags: Flags,
        id: u64,
        len: usize,
        live: &Liveness,
        fill: F,
    ) -> Result<Result<(), F>, Error> {
        if live.is_closed() {
            return Err(live.error());
        }
        let mut p = self.lock();
        match p.try_reserve(HEADER_LEN + len) {
            Ok(mut grant) => {
                let buf = grant.as_mut_slice();
                fill(&mut buf[HEADER_LEN..]);
                ferry_frame::encode_header_in_place(buf, kind, flags, id, len)
                    .map_err(|e| Error::Protocol(format!("encoding a {kind:?} frame: {e}")))?;
                let wake = grant.commit();
                let sent = &self.metrics.sent;
                sent.frame(
                    kind,
                    len,
                    !flags.contains(Flags::MORE) && !flags.contains(Flags::ABORT),
                );
                deliver(wake, p.peer_sleep_word(), &self.peer_bell, sent)?;
                Ok(Ok(()))
            }
            Err(ReserveError::Full) => Ok(Err(fill)),
            Err(ReserveError::TooLarge { len, max }) => Err(Error::TooLarge { len, max }),
            Err(ReserveError::Corrupted) => {
                live.close("the peer corrupted the outgoing ring");
                Err(Error::Protocol(
                    "the outgoing ring's cursors are corrupted".into(),
                ))
            }
        }
    }

    /// Writes one frame of `len` payload bytes, filled in place by `fill`, waiting for ring
    /// space until `deadline`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn send_with<F: FnOnce(&mut [u8])>(
        &self,
        kind: Kind,
        flags: Flags,
        id: u64,
        len: usize,
        deadline: Option<Instant>,
        live: &Liveness,
        fill: F,
    ) -> Result<(), Error> {
        let mut fill = fill;
        let token = NonZeroU32::new(TOKEN_FUTEX).expect("nonzero");
        let mut found_full = false;
        loop {
            fill = match self.write_frame(kind, flags, id, len, live, fill)? {
                Ok(()) => return Ok(()),
                Err(fill) => fill,
            };
            // Counted once per send, however long it then waits.
            if !found_full {
                found_full = true;
                self.metrics.sent.ring_full();
            }
            // Full: spin/yield first, then sleep on the producer word until the consumer frees
            // space (it wakes TOKEN_FUTEX sleepers with wake_all).
            let need = HEADER_LEN + len;
            let outcome = self.policy.wait_until(
                || self.lock().can_reserve(need) || live.is_closed(),
                || {
                    let mut p = self.lock();
                    matches!(p.prepare_sleep(need, token), Ok(SleepPrep::Sleep))
                },
                |timeout| {
                    if let Some(bell) = &self.own_bell {
                        let _ = bell.ring();
                    }
                    let slice = timeout.map_or(WAIT_SLICE, |t| t.min(WAIT_SLICE));
                    let word = {
                        let p = self.lock();
                        p.producer_sleep_word() as *const AtomicU32
                    };
                    // SAFETY: the word lives in the mapping, which `self.producer` keeps alive
                    // for as long as `self` lives; we only use it for the duration of this call.
                    let word = unsafe { &*word };
                    let r = word_wait(word, TOKEN_FUTEX, Some(slice));
                    self.lock().cancel_sleep();
                    r
                },
                deadline,
            )?;
            if outcome == ferry_notify::WaitOutcome::TimedOut {
                return Err(Error::Timeout(deadline.map_or(Duration::ZERO, |d| {
                    d.saturating_duration_since(Instant::now())
                })));
            }
        }
    }

    fn acquire_budget(
        &self,
        key: (Kind, u64),
        bytes: usize,
        deadline: Option<Instant>,
        live: &Liveness,
    ) -> Result<(), Error> {
        let b = &self.budget;
        let bytes = bytes.min(b.max_bytes);
        let mut st = b.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if st.take(key, bytes, b) {
                return Ok(());
            }
            if live.is_closed() {
                return Err(live.error());
            }
            let wait = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::Timeout(Duration::ZERO));
                    }
                    left.min(WAIT_SLICE)
                }
                None => WAIT_SLICE,
            };
            st =
                b.cv.wait_timeout(st, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
        }
    }

    /// Takes fragment budget for a message of `bytes` if it is free now.
    fn try_acquire_budget(&self, key: (Kind, u64), bytes: usize) -> bool {
        let b = &self.budget;
        let bytes = bytes.min(b.max_bytes);
        b.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(key, bytes, b)
    }

    fn release_budget(&self, key: (Kind, u64), bytes: usize) {
        let b = &self.budget;
        let bytes = bytes.min(b.max_bytes);
        let mut st = b.state.lock().unwrap_or_else(|e| e.into_inner());
        st.messages -= 1;
        st.bytes -= bytes;
        if let Some(i) = st.keys.iter().position(|k| *k == key) {
            st.keys.swap_remove(i);
        }
        drop(st);
        b.cv.notify_all();
    }

    /// The server's worker, about to sleep while an answer waits for ring space: asks the
    /// client to ring this connection's doorbell (which the worker polls) as soon as it frees
    /// room for the answer's next frame, `payload` bytes. The token has both bits (docs/protocol.md
    /// §10.3): a responder thread of ours that also waits for space on this word (token 1) is
    /// still woken. Without it the worker could only look again after a timeout: a 1 MiB answer,
    /// sent fragment by fragment as the client drains the ring, took ~6 ms instead of ~0.5.
    /// `false` when the room is there already (send now, do not sleep).
    pub(crate) fn arm_for_space(&self, payload: usize) -> bool {
        let token = NonZeroU32::new(TOKEN_FUTEX | TOKEN_DOORBELL).expect("nonzero");
        let need = HEADER_LEN + payload.min(self.fragment);
        matches!(self.lock().prepare_sleep(need, token), Ok(SleepPrep::Sleep))
    }

    /// Windows: wakes the threads of this process sleeping for ring space; called by the
    /// doorbell's waiter, which the consumer rang instead of waking the word (see the module
    /// docs).
    #[cfg(windows)]
    pub(crate) fn relay_wakes(&self) {
        let _ = word_wake_all(self.lock().producer_sleep_word());
    }

    /// Wakes every thread blocked on ring space (used when the connection closes).
    pub(crate) fn wake_waiters(&self) {
        let p = self.lock();
        p.cancel_sleep();
        let _ = word_wake_all(p.producer_sleep_word());
        drop(p);
        self.budget.cv.notify_all();
    }
}

/// Bytes held for partial (fragmented, not yet complete) messages by all the connections of one
/// server, against the budget `ServerConfig::max_partial_bytes`. Each server-side [`Rx`]
/// charges what its reassembler holds (allocated capacity) and gives it back as it shrinks,
/// when the connection closes, or when the `Rx` is dropped.
#[derive(Debug)]
pub(crate) struct PartialBudget {
    limit: usize,
    used: AtomicUsize,
}

impl Default for PartialBudget {
    /// No limit (a server sets its own with [`new`](Self::new)).
    fn default() -> Self {
        PartialBudget::new(usize::MAX)
    }
}

impl PartialBudget {
    pub(crate) fn new(limit: usize) -> Self {
        PartialBudget {
            limit,
            used: AtomicUsize::new(0),
        }
    }

    /// Bytes held now, all connections together.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `n` more bytes if they fit.
    fn charge(&self, n: usize) -> bool {
        let before = self.used.fetch_add(n, Ordering::AcqRel);
        if before.saturating_add(n) > self.limit {
            self.used.fetch_sub(n, Ordering::AcqRel);
            return false;
        }
        true
    }

    fn release(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// The receiving half: the consumer of the incoming ring and its reassembler.
#[derive(Debug)]
pub(crate) struct Rx {
    consumer: Consumer<RingSlice>,
    reassembler: Reassembler,
    /// Server side: the server-wide budget for partial messages, and what this `Rx` has
    /// charged to it.
    budget: Option<(Arc<PartialBudget>, usize)>,
    limits: DecodeLimits,
    peer_bell: Doorbell,
    /// The connection's counters; `received` is written by this `Rx`'s holder only.
    metrics: Arc<LinkCounters>,
}

/// Brings an `Rx`'s charge to the server's budget (if it has one) in line with what its
/// reassembler holds.
///
/// # Errors
/// [`Error::OverBudget`] when holding it would exceed the server-wide budget (every partial
/// message of the connection is then discarded).
fn account(
    reassembler: &mut Reassembler,
    budget: &mut Option<(Arc<PartialBudget>, usize)>,
) -> Result<(), Error> {
    let Some((b, charged)) = budget.as_mut() else {
        return Ok(());
    };
    let held = reassembler.held_bytes();
    if held > *charged {
        let wanted = held - *charged;
        if !b.charge(wanted) {
            let (used, limit) = (b.used(), b.limit);
            discard(reassembler, budget);
            return Err(Error::OverBudget {
                wanted,
                used,
                limit,
            });
        }
        *charged = held;
    } else if held < *charged {
        b.release(*charged - held);
        *charged = held;
    }
    Ok(())
}

/// Discards every partial message of a reassembler and gives its charge back.
fn discard(reassembler: &mut Reassembler, budget: &mut Option<(Arc<PartialBudget>, usize)>) {
    reassembler.clear();
    if let Some((b, charged)) = budget.as_mut() {
        b.release(std::mem::take(charged));
    }
}

impl Drop for Rx {
    fn drop(&mut self) {
        self.discard_partials();
    }
}

/// What [`Rx::poll`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Polled {
    /// Handled this many messages.
    Messages(usize),
    /// Nothing to read.
    Empty,
}

impl Rx {
    pub(crate) fn new(
        consumer: Consumer<RingSlice>,
        peer_bell: Doorbell,
        limits: &Limits,
        metrics: Arc<LinkCounters>,
    ) -> Self {
        let max_record = consumer.max_record_len();
        Rx {
            reassembler: Reassembler::new(ReassemblyLimits::from(*limits)),
            budget: None,
            limits: DecodeLimits::new((max_record.saturating_sub(HEADER_LEN)) as u32),
            consumer,
            peer_bell,
            metrics,
        }
    }

    /// Reads up to `budget` complete messages, calling `on_message(kind, flags, id, payload)`
    /// for each, then releases the space they used with one cursor store.
    ///
    /// # Errors
    /// [`Error::Protocol`] when the peer corrupted the ring or sent a bad frame; the caller
    /// must close the connection.
    pub(crate) fn poll(
        &mut self,
        budget: usize,
        mut on_message: impl FnMut(Kind, u64, &[u8]) -> bool,
    ) -> Result<Polled, Error> {
        let mut handled = 0;
        let result = loop {
            if handled >= budget {
                break Ok(());
            }
            let grant = match self.consumer.try_peek() {
                Ok(Some(g)) => g,
                Ok(None) => break Ok(()),
                Err(_) => {
                    break Err(Error::Protocol(format!(
                        "the incoming ring is corrupted ({})",
                        self.consumer
                            .corruption()
                            .map_or("unknown".into(), |c| c.to_string())
                    )));
                }
            };
            let frame = match ferry_frame::decode(grant.as_slice(), &self.limits) {
                Ok(f) => f,
                Err(e) => {
                    break Err(Error::Protocol(format!(
                        "bad frame in the incoming ring: {e}"
                    )));
                }
            };
            let event = self.reassembler.push(frame);
            if let Err(e) = account(&mut self.reassembler, &mut self.budget) {
                break Err(e);
            }
            match event {
                Ok(Event::Message(m)) => {
                    self.metrics.received.frame(m.kind, m.payload.len(), true);
                    let go_on = on_message(m.kind, m.correlation_id, &m.payload);
                    handled += 1;
                    if !go_on {
                        grant.consume();
                        break Ok(());
                    }
                }
                Ok(Event::Pending | Event::Aborted { .. }) => {}
                Err(e) => break Err(Error::Protocol(e.to_string())),
            }
            grant.consume();
        };
        let wake = self.consumer.release_consumed();
        deliver(
            wake,
            self.consumer.peer_sleep_word(),
            &self.peer_bell,
            &self.metrics.received,
        )?;
        result?;
        Ok(if handled == 0 {
            Polled::Empty
        } else {
            Polled::Messages(handled)
        })
    }

    /// Server side: charges what the reassembler holds to `budget` from now on.
    pub(crate) fn set_budget(&mut self, budget: Arc<PartialBudget>) {
        self.budget = Some((budget, 0));
    }

    /// Discards every partial message and gives its memory (and budget) back: the connection
    /// is closing.
    pub(crate) fn discard_partials(&mut self) {
        discard(&mut self.reassembler, &mut self.budget);
    }

    /// Announces that this side is going to sleep on `token`'s mechanism; `false` when data
    /// arrived meanwhile (do not sleep).
    pub(crate) fn prepare_sleep(&mut self, token: u32) -> Result<bool, Error> {
        let token = NonZeroU32::new(token).expect("tokens are nonzero");
        match self.consumer.prepare_sleep(token) {
            // The peer's tail is not how records are found; about to sleep is the time to
            // make sure it is not garbage (a broken or hostile peer).
            Ok(SleepPrep::Sleep) => match self.consumer.check_tail() {
                Ok(()) => Ok(true),
                Err(_) => {
                    self.consumer.cancel_sleep();
                    Err(self.corrupted())
                }
            },
            Ok(SleepPrep::Ready) => Ok(false),
            Err(_) => Err(self.corrupted()),
        }
    }

    /// The error for a corrupted incoming ring, naming what the ring saw.
    fn corrupted(&self) -> Error {
        match self.consumer.corruption() {
            Some(c) => Error::Protocol(format!("the incoming ring is corrupted: {c}")),
            None => Error::Protocol("the incoming ring is corrupted".into()),
        }
    }

    /// Blocks (futex) while this ring's sleep word holds `token`, at most `timeout`.
    pub(crate) fn wait_word(
        &self,
        token: u32,
        timeout: Duration,
    ) -> Result<ferry_notify::WaitOutcome, ferry_notify::NotifyError> {
        word_wait(self.consumer.consumer_sleep_word(), token, Some(timeout))
    }

    /// Retracts a prepared sleep.
    pub(crate) fn cancel_sleep(&self) {
        self.consumer.cancel_sleep();
    }

    /// Whether a record is waiting (cheap: cached cursor first).
    pub(crate) fn has_data(&self) -> bool {
        !self.consumer.is_empty()
    }
}
