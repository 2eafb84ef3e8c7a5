//! `ferry::ring` against its peers, in process, producer and consumer on two
//! threads, both spinning.
//!
//! - `ring_one_way/<size>/<impl>`: one-way throughput of `<size>`-byte
//!   messages (8 B, 64 B, 1 KiB). Each iteration moves `MSGS_PER_ITER`
//!   messages from a producer thread to a consumer thread, which copies each
//!   one out. Throughput is messages (elements) per second.
//!   - `ferry`: a 64 KiB ring, one record per message: `try_reserve` + copy +
//!     `commit` (one record-word store and a SeqCst fence per message, the
//!     default); consumer `try_peek` + copy + `release` (one head store and a
//!     fence per message).
//!   - `ferry_fence_free`: the same with both handles fence-free
//!     (`set_fence_free`, the heavy barrier from `ferry::notify::barrier`):
//!     no fence per message; a side about to sleep would run `membarrier`
//!     instead (nobody sleeps here). An opt-in mode: the transport stays
//!     fenced (see `ferry-ring`'s "Fence-free publication"). This is the
//!     row to hold against `rtrb`, which has no sleep handshake at all: a
//!     fence-free ferry ring whose sleeper has no heavy barrier is exactly a
//!     spin-only ring (its `prepare_sleep` always says `Ready`), and the
//!     fenced `ferry` row is what the ability to sleep costs per record.
//!   - `ferry_batch32`: the same ring, 32 records staged per `publish`, 32
//!     consumed per `release_consumed`.
//!   - `rtrb`: `rtrb::RingBuffer<[u8; N]>` (fixed-size array elements, not
//!     length-prefixed bytes), as many slots as fit in 64 KiB, `push`/`pop`.
//!   - `crossbeam`: `crossbeam_channel::bounded::<[u8; N]>` with the same
//!     number of slots.
//! - `ring_round_trip/64B/<impl>`: ping-pong latency over two queues (one per
//!   direction) between two threads, one 64-byte message each way per
//!   iteration.
//!
//! Placement: on Linux the measuring (producer, pinging) thread is pinned to CPU 0 and the other
//! to CPU 1, for every implementation: on the 2-vCPU development VM the scheduler otherwise
//! sometimes puts both spinning threads on one CPU, and such a run measures time slicing (the
//! same implementation then moved between 14 and 47 M messages/s from one run to the next).
//! `FERRY_BENCH_NO_PIN=1` turns pinning off.
//!
//! Run: `CARGO_TARGET_DIR=target-ring cargo bench --bench ring_vs_peers`.

use std::hint::{black_box, spin_loop};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use ferry::ring::{self, ReserveError};

const MSGS_PER_ITER: u64 = 10_000;
const RING_BYTES: usize = 64 * 1024;

/// Pins the calling thread to `cpu` (Linux, unless `FERRY_BENCH_NO_PIN` is set; elsewhere it
/// does nothing). See the module docs.
fn pin(cpu: usize) {
    #[cfg(target_os = "linux")]
    if std::env::var_os("FERRY_BENCH_NO_PIN").is_none() {
        let mut set = rustix::thread::CpuSet::new();
        set.set(cpu);
        let _ = rustix::thread::sched_setaffinity(None, &set);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cpu;
}

/// Spins until `f` returns `Some`.
#[inline]
fn spin<T>(mut f: impl FnMut() -> Option<T>) -> T {
    loop {
        if let Some(v) = f() {
            return v;
        }
        spin_loop();
    }
}

fn one_way_ferry<const N: usize>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    batch: u64,
    fence_free: bool,
) {
    let name = match (batch, fence_free) {
        (1, false) => "ferry".to_string(),
        (1, true) => "ferry_fence_free".to_string(),
        (b, false) => format!("ferry_batch{b}"),
        (b, true) => format!("ferry_fence_free_batch{b}"),
    };
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let (mut p, mut c) = ring::heap(RING_BYTES).unwrap();
            if fence_free {
                assert!(
                    ferry::notify::barrier::register_fence_free(),
                    "membarrier GLOBAL_EXPEDITED is not available here"
                );
                p.set_heavy_barrier(ferry::notify::barrier::heavy_barrier());
                c.set_heavy_barrier(ferry::notify::barrier::heavy_barrier());
                p.set_fence_free(true);
                c.set_fence_free(true);
            }
            let total = iters * MSGS_PER_ITER;
            let msg = [0x5Au8; N];
            thread::scope(|s| {
                pin(0);
                let consumer = s.spawn(move || {
                    pin(1);
                    let mut buf = [0u8; N];
                    let mut n = 0;
                    while n < total {
                        spin(|| {
                            c.try_peek().unwrap().map(|g| {
                                buf.copy_from_slice(g.as_slice());
                                if batch == 1 {
                                    let _ = g.release();
                                } else {
                                    g.consume();
                                }
                            })
                        });
                        black_box(&buf);
                        n += 1;
                        if batch > 1 && (n % batch == 0 || c.try_peek().unwrap().is_none()) {
                            let _ = c.release_consumed();
                        }
                    }
                    let _ = c.release_consumed();
                });
                let start = Instant::now();
                let mut sent = 0;
                while sent < total {
                    match p.try_reserve(N) {
                        Ok(mut g) => {
                            g.as_mut_slice().copy_from_slice(&msg);
                            sent += 1;
                            if batch == 1 {
                                let _ = g.commit();
                            } else {
                                g.stage();
                                if sent % batch == 0 {
                                    let _ = p.publish();
                                }
                            }
                        }
                        Err(ReserveError::Full) => {
                            let _ = p.publish();
                            spin_loop();
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                let _ = p.publish();
                consumer.join().unwrap();
                start.elapsed()
            })
        });
    });
}

fn one_way_rtrb<const N: usize>(group: &mut BenchmarkGroup<'_, WallTime>) {
    group.bench_function("rtrb", |b| {
        b.iter_custom(|iters| {
            let (mut p, mut c) = rtrb::RingBuffer::<[u8; N]>::new(RING_BYTES / N);
            let total = iters * MSGS_PER_ITER;
            let msg = [0x5Au8; N];
            thread::scope(|s| {
                pin(0);
                let consumer = s.spawn(move || {
                    pin(1);
                    for _ in 0..total {
                        let m = spin(|| c.pop().ok());
                        black_box(&m);
                    }
                });
                let start = Instant::now();
                for _ in 0..total {
                    while p.push(msg).is_err() {
                        spin_loop();
                    }
                }
                consumer.join().unwrap();
                start.elapsed()
            })
        });
    });
}

fn one_way_crossbeam<const N: usize>(group: &mut BenchmarkGroup<'_, WallTime>) {
    group.bench_function("crossbeam", |b| {
        b.iter_custom(|iters| {
            let (tx, rx) = crossbeam_channel::bounded::<[u8; N]>(RING_BYTES / N);
            let total = iters * MSGS_PER_ITER;
            let msg = [0x5Au8; N];
            thread::scope(|s| {
                pin(0);
                let consumer = s.spawn(move || {
                    pin(1);
                    for _ in 0..total {
                        let m = spin(|| rx.try_recv().ok());
                        black_box(&m);
                    }
                });
                let start = Instant::now();
                for _ in 0..total {
                    while tx.try_send(msg).is_err() {
                        spin_loop();
                    }
                }
                consumer.join().unwrap();
                start.elapsed()
            })
        });
    });
}

fn one_way_size<const N: usize>(c: &mut Criterion, name: &str) {
    let mut group = c.benchmark_group(format!("ring_one_way/{name}"));
    group.throughput(Throughput::Elements(MSGS_PER_ITER));
    one_way_ferry::<N>(&mut group, 1, false);
    if cfg!(target_os = "linux") {
        one_way_ferry::<N>(&mut group, 1, true);
    }
    one_way_ferry::<N>(&mut group, 32, false);
    one_way_rtrb::<N>(&mut group);
    one_way_crossbeam::<N>(&mut group);
    group.finish();
}

fn one_way(c: &mut Criterion) {
    one_way_size::<8>(c, "8B");
    one_way_size::<64>(c, "64B");
    one_way_size::<1024>(c, "1KiB");
}

fn round_trip(c: &mut Criterion) {
    const N: usize = 64;
    let mut group = c.benchmark_group("ring_round_trip/64B");

    group.bench_function("ferry", |b| {
        b.iter_custom(|iters| {
            let (mut ping_tx, mut ping_rx) = ring::heap(RING_BYTES).unwrap();
            let (mut pong_tx, mut pong_rx) = ring::heap(RING_BYTES).unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let stop2 = Arc::clone(&stop);
            thread::scope(|s| {
                pin(0);
                s.spawn(move || {
                    pin(1);
                    let mut buf = [0u8; N];
                    while !stop2.load(Ordering::Relaxed) {
                        if let Some((n, _)) = ping_rx.try_pop_into(&mut buf).unwrap() {
                            let _ = pong_tx.try_push(&buf[..n]).unwrap();
                        } else {
                            spin_loop();
                        }
                    }
                });
                let msg = [1u8; N];
                let mut buf = [0u8; N];
                let start = Instant::now();
                for _ in 0..iters {
                    let _ = ping_tx.try_push(&msg).unwrap();
                    let (n, _no_sleeper) = spin(|| pong_rx.try_pop_into(&mut buf).unwrap());
                    black_box((n, &buf));
                }
                let elapsed = start.elapsed();
                stop.store(true, Ordering::Relaxed);
                elapsed
            })
        });
    });

    group.bench_function("rtrb", |b| {
        b.iter_custom(|iters| {
            let (mut ping_tx, mut ping_rx) = rtrb::RingBuffer::<[u8; N]>::new(RING_BYTES / N);
            let (mut pong_tx, mut pong_rx) = rtrb::RingBuffer::<[u8; N]>::new(RING_BYTES / N);
            let stop = Arc::new(AtomicBool::new(false));
            let stop2 = Arc::clone(&stop);
            thread::scope(|s| {
                pin(0);
                s.spawn(move || {
                    pin(1);
                    while !stop2.load(Ordering::Relaxed) {
                        if let Ok(m) = ping_rx.pop() {
                            pong_tx.push(m).unwrap();
                        } else {
                            spin_loop();
                        }
                    }
                });
                let msg = [1u8; N];
                let start = Instant::now();
                for _ in 0..iters {
                    ping_tx.push(msg).unwrap();
                    black_box(spin(|| pong_rx.pop().ok()));
                }
                let elapsed = start.elapsed();
                stop.store(true, Ordering::Relaxed);
                elapsed
            })
        });
    });

    group.bench_function("crossbeam", |b| {
        b.iter_custom(|iters| {
            let (ping_tx, ping_rx) = crossbeam_channel::bounded::<[u8; N]>(RING_BYTES / N);
            let (pong_tx, pong_rx) = crossbeam_channel::bounded::<[u8; N]>(RING_BYTES / N);
            let stop = Arc::new(AtomicBool::new(false));
            let stop2 = Arc::clone(&stop);
            thread::scope(|s| {
                pin(0);
                s.spawn(move || {
                    pin(1);
                    while !stop2.load(Ordering::Relaxed) {
                        if let Ok(m) = ping_rx.try_recv() {
                            pong_tx.send(m).unwrap();
                        } else {
                            spin_loop();
                        }
                    }
                });
                let msg = [1u8; N];
                let start = Instant::now();
                for _ in 0..iters {
                    ping_tx.send(msg).unwrap();
                    black_box(spin(|| pong_rx.try_recv().ok()));
                }
                let elapsed = start.elapsed();
                stop.store(true, Ordering::Relaxed);
                elapsed
            })
        });
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
}

criterion_group! {
    name = benches;
    config = config();
    targets = one_way, round_trip
}
criterion_main!(benches);
