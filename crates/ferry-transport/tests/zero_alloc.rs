//! Zero heap allocations per message in steady state, counted: a counting global allocator
//! sees every allocation of this process, where both the server (its worker thread) and the
//! client (the calling thread, its reader) run, metrics (counters, round-trip histogram)
//! included.

#![cfg(any(target_os = "linux", target_os = "macos", windows))]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::*;
use ferry_transport::{Client, Request, Server};

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

/// Counts allocations made while `f` runs.
fn allocations_during(f: impl FnOnce()) -> u64 {
    let before = ALLOCS.load(Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    f();
    COUNTING.store(false, Ordering::SeqCst);
    ALLOCS.load(Ordering::SeqCst) - before
}

#[test]
fn calls_and_notifications_allocate_nothing_in_steady_state() {
    let dir = TestDir::new("alloc");
    let server = Server::bind("alloc", server_config(dir.path()), |r: Request<'_>| {
        let mut out = [0u8; 64];
        out.copy_from_slice(&r.payload()[..64]);
        out[0] = out[0].wrapping_add(1);
        let _ = r.respond(&out);
    })
    .unwrap();
    let mut cfg = client_config(dir.path());
    cfg.round_trip_sample_every = 1; // every call goes through the histogram
    let client = Client::connect_with("alloc", cfg).unwrap();
    let mut msg = [7u8; 64];
    // Warm up: slots, buffers and the reassembler reach their steady-state capacity.
    for i in 0..2000u32 {
        msg[1..5].copy_from_slice(&i.to_le_bytes());
        let r = client.call(&msg).unwrap();
        assert_eq!(r[0], 8);
        client.notify(&msg).unwrap();
    }
    const N: u32 = 20_000;
    let mut checked = 0u32;
    let allocs = allocations_during(|| {
        for i in 0..N {
            msg[1..5].copy_from_slice(&i.to_le_bytes());
            let r = client.call(&msg).unwrap();
            if r[0] == 8 && r[1..5] == i.to_le_bytes() {
                checked += 1;
            }
            client.notify(&msg).unwrap();
        }
    });
    assert_eq!(
        checked, N,
        "every response was the answer to its own request"
    );
    println!("{allocs} allocations over {N} calls + {N} notifications (64 B)");
    assert_eq!(
        allocs, 0,
        "heap allocations during {N} steady-state calls and notifications"
    );
    // The counted loop went through the metrics path (per-connection counters on both sides,
    // the round-trip histogram): every message is in the metrics, so the zero above covers it.
    // (Rendering the text allocates; it is not per message.)
    client.call(&msg).unwrap(); // answered after the server read every notification before it
    let total = u64::from(2000 + N + 1);
    let client_text = client.metrics_text();
    for series in [
        format!("ferry_client_calls_total{{outcome=\"ok\"}} {total}"),
        format!("ferry_client_round_trip_seconds_count {total}"),
        format!("ferry_client_messages_sent_total{{kind=\"request\"}} {total}"),
        format!(
            "ferry_client_sent_bytes_total{{kind=\"request\"}} {}",
            total * 64
        ),
        format!(
            "ferry_client_messages_sent_total{{kind=\"notification\"}} {}",
            total - 1
        ),
    ] {
        assert!(
            client_text.lines().any(|l| l == series),
            "client metrics lack {series:?}"
        );
    }
    let server_text = server.metrics_text();
    for series in [
        format!("ferry_server_messages_received_total{{kind=\"request\"}} {total}"),
        format!("ferry_server_messages_sent_total{{kind=\"response\"}} {total}"),
        format!(
            "ferry_server_received_bytes_total{{kind=\"notification\"}} {}",
            (total - 1) * 64
        ),
    ] {
        assert!(
            server_text.lines().any(|l| l == series),
            "server metrics lack {series:?}"
        );
    }
    drop(client);
    server.shutdown();
}
