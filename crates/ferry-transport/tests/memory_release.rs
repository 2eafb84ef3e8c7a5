//! Buffers that grew for a large message do not stay at their high-water mark.
//!
//! A counting global allocator tracks the bytes this process holds live (allocated and not yet
//! freed), where both the server (its worker thread) and the client (slots, reader) run. After
//! a warm-up with small messages, a burst of large ones (16 MiB and 1 MiB requests, answers,
//! stream items and notifications both ways, from several threads at once, so that many call
//! slots see them) must leave live memory within a small bound of what it was before the burst:
//! the transport keeps no buffer larger than its retention threshold once a message is
//! delivered.

#![cfg(any(target_os = "linux", target_os = "macos", windows))]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use ferry_transport::{Client, Connection, Handler, Request};

struct Counting;

/// Bytes allocated and not yet freed, by this process.
static LIVE: AtomicI64 = AtomicI64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const MIB: usize = 1 << 20;
/// Large sizes of the burst: the largest message, and one just under the old per-slot limit.
const BIG: [usize; 2] = [16 * MIB - 64, MIB];

/// Answers `[op, size as u32 le]`: op 0 = a response of `size` bytes, 1 = a stream of three
/// items of `size` bytes, 2 = push a notification of `size` bytes then answer 8 bytes.
struct Burst;

impl Handler for Burst {
    fn on_request(&self, req: Request<'_>) {
        let p = req.payload();
        let size = u32::from_le_bytes([p[1], p[2], p[3], p[4]]) as usize;
        match p[0] {
            0 => {
                let _ = req.respond_with(size, |out| out.fill(0xA5));
            }
            1 => {
                let s = req.into_stream();
                std::thread::spawn(move || {
                    let item = vec![0x5A; size];
                    for _ in 0..3 {
                        if s.send(&item).is_err() {
                            return;
                        }
                    }
                    let _ = s.finish();
                });
            }
            _ => {
                let conn = req.connection();
                let out = vec![0x3C; size];
                std::thread::spawn(move || {
                    let _ = conn.notify(&out);
                });
                let _ = req.respond(&[0u8; 8]);
            }
        }
    }
    fn on_notification(&self, _conn: &Connection, _payload: &[u8]) {}
}

fn request(op: u8, size: usize, pad: usize) -> Vec<u8> {
    let mut r = vec![0u8; 5 + pad];
    r[0] = op;
    r[1..5].copy_from_slice(&(size as u32).to_le_bytes());
    r
}

/// Small traffic on every path the burst uses, so that steady-state buffers exist before the
/// baseline is taken.
fn small_round(client: &Client) {
    for op in [0u8, 1, 2] {
        match op {
            1 => {
                let mut s = client.stream(&request(1, 100, 0)).unwrap();
                let mut item = Vec::new();
                while s.next_into(&mut item).unwrap() {}
            }
            _ => drop(client.call(&request(op, 100, 0)).unwrap()),
        }
    }
}

fn live() -> i64 {
    LIVE.load(Ordering::SeqCst)
}

#[test]
fn large_messages_do_not_pin_their_buffers() {
    let dir = TestDir::new("memrel");
    let server = ferry_transport::Server::bind("memrel", server_config(dir.path()), Burst).unwrap();
    let notes = Arc::new(AtomicU64::new(0));
    let seen = notes.clone();
    let client = Client::connect_with(
        "memrel",
        client_config(dir.path()).with_on_notification(move |_p: &[u8]| {
            seen.fetch_add(1, Ordering::Relaxed);
        }),
    )
    .unwrap();
    for _ in 0..50 {
        small_round(&client);
    }
    std::thread::sleep(Duration::from_millis(200));
    let before = live();

    // The burst: 8 threads, each with several calls in flight (so that many slots see large
    // answers), large requests (server-side reassembly), streams and notifications.
    std::thread::scope(|s| {
        for t in 0..8usize {
            let client = &client;
            s.spawn(move || {
                for round in 0..3usize {
                    let size = BIG[(t + round) % BIG.len()];
                    // Several answers in flight at once from this thread.
                    let pending: Vec<_> = (0..3)
                        .map(|_| client.start_call(&request(0, size, 0)).unwrap())
                        .collect();
                    for p in pending {
                        assert_eq!(p.wait().unwrap().len(), size);
                    }
                    // A large request.
                    drop(client.call(&request(0, 16, size - 5)).unwrap());
                    // A stream of large items.
                    let mut st = client.stream(&request(1, size, 0)).unwrap();
                    let mut n = 0;
                    while let Some(item) = st.next_item().unwrap() {
                        assert_eq!(item.len(), size);
                        n += 1;
                    }
                    assert_eq!(n, 3);
                    // A large notification each way.
                    drop(client.call(&request(2, size, 0)).unwrap());
                    client.notify(&vec![1u8; size]).unwrap();
                }
            });
        }
    });
    assert!(eventually(Duration::from_secs(10), || notes
        .load(Ordering::Relaxed)
        >= 24));
    // Settle: small traffic again, so that every path has delivered its last large message.
    for _ in 0..50 {
        small_round(&client);
    }
    std::thread::sleep(Duration::from_millis(200));
    let after = live();
    let grew = after - before;
    println!(
        "live bytes: {:.2} MiB before the burst, {:.2} MiB after (+{:.2} MiB)",
        before as f64 / MIB as f64,
        after as f64 / MIB as f64,
        grew as f64 / MIB as f64
    );
    // Before the fix, 24 call slots each kept up to 1 MiB of answer buffer and streaming
    // slots up to 1 MiB of queue: tens of MiB. Now only buffers of at most the retention
    // threshold (64 KiB) stay, and the burst's slots got none that large.
    assert!(
        grew < MIB as i64,
        "live memory grew by {grew} bytes after a burst of large messages (before {before}, after {after})"
    );
    drop(client);
    drop(server);
}
