//! A client that moves its consumer cursor of the server's ring (`head`, which the server's
//! producer reads to know how much space the client has freed) backwards.
//!
//! The server's producer validates every `head` it reads against the last one it read: a head
//! below that one is `CursorBackwards`, the connection is closed as a protocol violation. A head
//! moved back, but not below anything the server has read, is indistinguishable from a client
//! that has not read that far yet: the ring only looks fuller to the server. These tests show
//! both: the first case is detected and only the liar's connection closes; in the second only the
//! liar's answers stall (the server keeps one pending answer for it and never blocks its worker),
//! and an honest client on the same worker is served throughout.

#![cfg(any(target_os = "linux", target_os = "macos"))]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use ferry_frame::{DecodeLimits, Hello, Kind};
use ferry_ring::{Consumer, Producer};
use ferry_transport::Client;

/// Offsets of the producer's `tail` and the consumer's `head` in a ring's header (see
/// `ferry_ring`'s layout table).
const TAIL_OFFSET: usize = 128;
const HEAD_OFFSET: usize = 256;
/// Request payload: answers are as large, so a few dozen fill the server's ring.
const PAYLOAD: usize = 1000;

/// The liar: a hand-made connection with a producer on its client → server ring and a
/// consumer on the server → client ring, both views of its mapping.
struct Liar {
    // Before `conn`: dropped first, while the mapping they view is still there.
    tx: Producer<RawRing>,
    rx: Consumer<RawRing>,
    conn: RawConnection,
    s2c_off: usize,
    next_id: u64,
}

impl Liar {
    fn connect(dir: &TestDir, service: &str) -> Liar {
        let conn = raw_handshake(
            dir.path(),
            service,
            Hello::new(small_rings(ferry_frame::Limits::default())),
        )
        .expect("handshake");
        let (tx, rx) = conn.rings();
        let s2c_off = conn.s2c_offset();
        Liar {
            tx,
            rx,
            conn,
            s2c_off,
            next_id: 1,
        }
    }

    /// Writes one request, if the ring has room, and rings the server.
    fn request(&mut self) -> bool {
        let frame = frame(Kind::Request, self.next_id, &[7u8; PAYLOAD]);
        let sent = self.tx.try_push(&frame).is_ok();
        if sent {
            self.next_id += 1;
        }
        let _ = self.conn.server_bell.ring();
        sent
    }

    /// Reads (and releases) every answer there is; how many.
    fn read_answers(&mut self) -> usize {
        let mut buf = vec![0u8; 64 << 10];
        let mut n = 0;
        while let Ok(Some((len, _))) = self.rx.try_pop_into(&mut buf) {
            let frame = ferry_frame::decode(&buf[..len], &DecodeLimits::default()).expect("frame");
            assert_eq!(frame.header.kind(), Kind::Response);
            n += 1;
        }
        let _ = self.conn.server_bell.ring();
        n
    }

    /// Sends `count` requests and reads their answers, a window at a time.
    fn round_trips(&mut self, count: usize) {
        let (mut sent, mut got) = (0, 0);
        let deadline = Instant::now() + Duration::from_secs(20);
        while got < count {
            assert!(Instant::now() < deadline, "{got} of {count} answers");
            while sent < count && sent < got + 16 && self.request() {
                sent += 1;
            }
            got += self.read_answers();
            std::thread::yield_now();
        }
    }

    /// The consumer cursor of the server's ring as the server reads it.
    fn head(&self) -> u64 {
        let p = self
            .conn
            .mem
            .as_ptr()
            .wrapping_add(self.s2c_off + HEAD_OFFSET);
        // SAFETY: in bounds of the live mapping (checked in `connect`), 8-aligned.
        unsafe { p.cast::<u64>().read_volatile() }
    }

    /// The server's producer cursor of that ring: where it has written up to.
    fn tail(&self) -> u64 {
        let p = self
            .conn
            .mem
            .as_ptr()
            .wrapping_add(self.s2c_off + TAIL_OFFSET);
        // SAFETY: as in `head`.
        unsafe { p.cast::<u64>().read_volatile() }
    }

    /// Moves that cursor to `head`, behind the consumer's back.
    fn forge_head(&self, head: u64) {
        let p = self
            .conn
            .mem
            .as_ptr()
            .wrapping_add(self.s2c_off + HEAD_OFFSET);
        // SAFETY: as in `head`; lying to the server is the point.
        unsafe { p.cast::<u64>().write_volatile(head) };
    }
}

/// An honest client calling in a loop until told to stop; returns its calls' count and their
/// slowest round trip.
fn honest_calls(client: Client, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(u64, Duration)> {
    std::thread::spawn(move || {
        let (mut n, mut worst) = (0u64, Duration::ZERO);
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            let r = client
                .call_timeout(b"abc", Duration::from_secs(5))
                .expect("the honest client's call is answered");
            worst = worst.max(t.elapsed());
            assert_eq!(&r[..], b"bcd");
            n += 1;
        }
        (n, worst)
    })
}

#[test]
fn a_head_moved_below_what_the_server_read_closes_only_that_connection() {
    let dir = TestDir::new("rewind-below");
    let server = echo_plus_one_server(&dir, "rewindbelow");
    let honest = Client::connect_with("rewindbelow", client_config(dir.path())).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let calls = honest_calls(honest, stop.clone());
    let mut liar = Liar::connect(&dir, "rewindbelow");
    // Two laps of the 64 KiB ring: the server has had to re-read our head (it does when its
    // cached free space runs out), so it has seen one well past the start.
    liar.round_trips(2 * TEST_RING as usize / PAYLOAD);
    let head = liar.head();
    assert!(
        head > 2 * (PAYLOAD as u64),
        "the client consumed: head {head}"
    );
    liar.forge_head(0);
    // Make the server need space again: it re-reads the head, finds it went backwards.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.stats().protocol_errors == 0 {
        assert!(
            Instant::now() < deadline,
            "the server did not notice the head moved backwards"
        );
        liar.request();
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(eventually(Duration::from_secs(5), || {
        server.stats().connections_open == 1
    }));
    stop.store(true, Ordering::Relaxed);
    let (n, _) = calls.join().expect("the honest client never failed");
    assert!(n > 0);
    assert_eq!(server.stats().protocol_errors, 1);
}

#[test]
fn a_head_moved_back_within_what_the_server_saw_stalls_only_the_liar() {
    let dir = TestDir::new("rewind-within");
    let server = echo_plus_one_server(&dir, "rewindwithin");
    let mut liar = Liar::connect(&dir, "rewindwithin");
    // Less than a lap: the server had room from the start and never re-read our head, so the
    // start (0) is the last head it knows; going back there is no lie it can see.
    liar.round_trips(16);
    let read = liar.head();
    assert!(read > 0);
    liar.forge_head(0);
    // Requests without reading: the server answers into what it believes is a ring we never
    // read, until it believes it full; then it keeps one pending answer and reads no more.
    let honest = Client::connect_with("rewindwithin", client_config(dir.path())).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let calls = honest_calls(honest, stop.clone());
    for _ in 0..300 {
        liar.request();
        std::thread::sleep(Duration::from_millis(1));
    }
    // The liar is a slow reader, not a violation the server can see: both connections are open.
    assert_eq!(server.stats().connections_open, 2);
    // The honest client, served by the same (only) worker throughout, was unaffected.
    stop.store(true, Ordering::Relaxed);
    let (n, worst) = calls.join().expect("the honest client never failed");
    assert!(n >= 50, "only {n} honest calls in 300 ms");
    assert!(
        worst < Duration::from_secs(1),
        "an honest call took {worst:?} while the liar stalled"
    );
    assert_eq!(server.stats().protocol_errors, 0);
    // What the lie cost: the server wrote into what it believed free from the forged head
    // (0) on: never past one lap from there, so `read` bytes of ring were lost to the liar.
    let tail = liar.tail();
    assert!(
        tail <= u64::from(TEST_RING),
        "the server wrote up to {tail}, past a lap from the forged head"
    );
    assert!(
        tail > read + (u64::from(TEST_RING) - read) / 2,
        "the server stopped at {tail} (the liar had read {read})"
    );
    assert!(liar.read_answers() > 0);
    // Reading releases the real head (ahead of the forged one: fine for the server), and the
    // connection goes on.
    liar.round_trips(100);
    assert_eq!(server.stats().protocol_errors, 0);
}
