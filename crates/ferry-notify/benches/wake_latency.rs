//! Two-process wake-up round-trip latency: `cargo bench -p ferry-notify --bench wake_latency`.
//!
//! The bench re-executes itself as the child process (environment `FERRY_BENCH_CHILD`), shares
//! a memfd page and two eventfds with it by inheritance, and ping-pongs a sequence number:
//! the parent publishes `ping = i`, the child waits for it and publishes `pong = i`, the
//! parent waits for that. One sample = one round trip, measured by the parent. Mechanisms:
//!
//! * `spin`: `WaitPolicy::Spin` (both sides busy-poll; the floor).
//! * `adaptive`: `WaitPolicy::default()` with a futex `Parker` (what Ferry uses by default).
//! * `park-only futex`: `WaitPolicy::ParkOnly` with a futex `Parker` (every wait sleeps).
//! * `raw futex`: no policy and no sleep word: every message is a `FUTEX_WAKE` on the counter
//!   and every wait a `FUTEX_WAIT` on it; the baseline for park-only.
//! * `park-only eventfd`: `WaitPolicy::ParkOnly` with a `Doorbell` in each direction.
//! * `unix socket`: a `UnixStream` pair, 64-byte messages, blocking reads.
//!
//! Also printed: the cost of one spin iteration (which sets the default spin budget), the CPU
//! each process ran on and the load average. Linux only.

#[cfg(target_os = "linux")]
fn main() {
    linux::main();
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("wake_latency: this benchmark runs on Linux only");
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io::{Read, Write};
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
    use std::os::unix::net::UnixStream;
    use std::process::{Command, Stdio};
    use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
    use std::sync::atomic::{AtomicU32, fence};
    use std::time::{Duration, Instant};

    use ferry_notify::{Doorbell, NotifyError, Parker, WaitOutcome, WaitPolicy};
    use hdrhistogram::Histogram;
    use rustix::fs::{MemfdFlags, ftruncate, memfd_create};
    use rustix::mm::{MapFlags, ProtFlags, mmap};
    use rustix::thread::futex;

    const PAGE: usize = 4096;
    const TOKEN_PARKER: u32 = 1;
    const TOKEN_DOORBELL: u32 = 2;
    const MSG: usize = 64;

    #[repr(C, align(128))]
    struct Line(AtomicU32);

    #[repr(C)]
    struct Layout {
        ping: Line,
        pong: Line,
        parent_sleep: Line,
        child_sleep: Line,
        /// CPU the child ran on at the end, + 1 (0 = not reported).
        child_cpu: Line,
        /// Child CPU migrations seen during the run.
        child_migrations: Line,
    }

    const _: () = assert!(size_of::<Layout>() <= PAGE);

    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Mode {
        Spin,
        Adaptive,
        /// Adaptive with a given (spin, yields) budget; only with `FERRY_BENCH_SWEEP=1`.
        Sweep(u32, u32),
        ParkOnlyFutex,
        RawFutex,
        ParkOnlyEventfd,
        UnixSocket,
    }

    const MODES: [Mode; 6] = [
        Mode::Spin,
        Mode::Adaptive,
        Mode::ParkOnlyFutex,
        Mode::RawFutex,
        Mode::ParkOnlyEventfd,
        Mode::UnixSocket,
    ];

    impl Mode {
        fn name(self) -> &'static str {
            match self {
                Mode::Spin => "spin",
                Mode::Adaptive => "adaptive (default)",
                Mode::Sweep(..) => "adaptive",
                Mode::ParkOnlyFutex => "park-only futex",
                Mode::RawFutex => "raw futex (baseline)",
                Mode::ParkOnlyEventfd => "park-only eventfd",
                Mode::UnixSocket => "unix socket 64 B",
            }
        }
        /// (warm-up, measured) round trips: enough samples for p99.9, the whole run < 60 s.
        fn counts(self) -> (u32, u32) {
            match self {
                Mode::Spin | Mode::Adaptive => (20_000, 200_000),
                Mode::Sweep(..) => (5_000, 50_000),
                _ => (5_000, 50_000),
            }
        }
        fn policy(self) -> WaitPolicy {
            match self {
                Mode::Spin => WaitPolicy::Spin,
                Mode::Adaptive => WaitPolicy::default(),
                Mode::Sweep(spin, yields) => WaitPolicy::Adaptive { spin, yields },
                _ => WaitPolicy::ParkOnly,
            }
        }
    }

    fn layout(ptr: *mut u8) -> &'static Layout {
        // SAFETY: `ptr` is a live, page-aligned, zero-filled shared mapping of PAGE bytes that
        // is never unmapped; `Layout` (atomics only) fits in it and is valid for any bits.
        unsafe { &*ptr.cast::<Layout>() }
    }

    fn map(fd: &OwnedFd) -> *mut u8 {
        // SAFETY: a new shared mapping of a PAGE-long memfd at a kernel-chosen address.
        unsafe {
            mmap(
                core::ptr::null_mut(),
                PAGE,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )
        }
        .expect("mmap")
        .cast()
    }

    fn inheritable(fd: BorrowedFd<'_>) -> String {
        rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty()).expect("clear CLOEXEC");
        fd.as_raw_fd().to_string()
    }

    fn inherited(var: &str) -> OwnedFd {
        let raw: i32 = std::env::var(var)
            .expect("fd variable")
            .parse()
            .expect("fd number");
        // SAFETY: the parent cleared CLOEXEC on this descriptor and passed its number; nothing
        // else in this process owns it.
        unsafe { OwnedFd::from_raw_fd(raw) }
    }

    /// One side's view: how it sleeps, and how it wakes the other side.
    struct Side<'a, P, W> {
        policy: WaitPolicy,
        token: u32,
        my_sleep: &'a AtomicU32,
        peer_sleep: &'a AtomicU32,
        park: P,
        wake_peer: W,
    }

    impl<P, W> Side<'_, P, W>
    where
        P: Fn(&AtomicU32, Option<Duration>) -> Result<WaitOutcome, NotifyError>,
        W: Fn(&AtomicU32) -> Result<(), NotifyError>,
    {
        #[inline]
        fn send(&self, counter: &AtomicU32, value: u32) {
            counter.store(value, Release);
            fence(SeqCst);
            if self.peer_sleep.load(SeqCst) != 0 && self.peer_sleep.swap(0, SeqCst) != 0 {
                (self.wake_peer)(self.peer_sleep).expect("wake");
            }
        }

        #[inline]
        fn recv(&self, counter: &AtomicU32, value: u32) {
            let r = self.policy.wait_until(
                || counter.load(Acquire) >= value,
                || {
                    self.my_sleep.store(self.token, SeqCst);
                    fence(SeqCst);
                    if counter.load(SeqCst) >= value {
                        self.my_sleep.swap(0, SeqCst);
                        false
                    } else {
                        true
                    }
                },
                |t| (self.park)(self.my_sleep, t),
                None,
            );
            assert_eq!(r, Ok(WaitOutcome::Woken));
        }
    }

    /// Runs `n` round trips; `sample(i, start)` is called by the parent after each.
    fn drive<P, W>(
        side: &Side<'_, P, W>,
        l: &Layout,
        parent: bool,
        n: u32,
        hist: &mut Histogram<u64>,
        warm: u32,
    ) where
        P: Fn(&AtomicU32, Option<Duration>) -> Result<WaitOutcome, NotifyError>,
        W: Fn(&AtomicU32) -> Result<(), NotifyError>,
    {
        for i in 1..=n {
            if parent {
                let t0 = Instant::now();
                side.send(&l.ping.0, i);
                side.recv(&l.pong.0, i);
                let ns = t0.elapsed().as_nanos() as u64;
                if i > warm {
                    hist.saturating_record(ns.max(1));
                }
            } else {
                side.recv(&l.ping.0, i);
                side.send(&l.pong.0, i);
            }
        }
    }

    fn raw_futex_wait_for(counter: &AtomicU32, value: u32) {
        loop {
            let seen = counter.load(Acquire);
            if seen >= value {
                return;
            }
            match futex::wait(counter, futex::Flags::empty(), seen, None) {
                Ok(()) | Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => panic!("futex wait: {e}"),
            }
        }
    }

    fn raw_futex_send(counter: &AtomicU32, value: u32) {
        counter.store(value, Release);
        futex::wake(counter, futex::Flags::empty(), 1).expect("futex wake");
    }

    /// Both processes run this; `parent` decides the direction and who measures.
    fn run(
        mode: Mode,
        l: &Layout,
        bells: (&Doorbell, &Doorbell),
        uds: &mut UnixStream,
        parent: bool,
    ) -> Histogram<u64> {
        let (warm, measured) = mode.counts();
        let n = warm + measured;
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram");
        let (my_sleep, peer_sleep) = if parent {
            (&l.parent_sleep.0, &l.child_sleep.0)
        } else {
            (&l.child_sleep.0, &l.parent_sleep.0)
        };
        match mode {
            Mode::Spin | Mode::Adaptive | Mode::Sweep(..) | Mode::ParkOnlyFutex => {
                let parker = Parker::new().expect("parker");
                let unparker = parker.unparker().expect("unparker"); // futex: names no object
                let side = Side {
                    policy: mode.policy(),
                    token: TOKEN_PARKER,
                    my_sleep,
                    peer_sleep,
                    park: |w: &AtomicU32, t| parker.park(w, TOKEN_PARKER, t),
                    wake_peer: |w: &AtomicU32| unparker.unpark(w),
                };
                drive(&side, l, parent, n, &mut hist, warm);
            }
            Mode::ParkOnlyEventfd => {
                let (mine, peers) = if parent {
                    (bells.0, bells.1)
                } else {
                    (bells.1, bells.0)
                };
                let side = Side {
                    policy: mode.policy(),
                    token: TOKEN_DOORBELL,
                    my_sleep,
                    peer_sleep,
                    park: |_: &AtomicU32, t| mine.wait(t),
                    wake_peer: |_: &AtomicU32| peers.ring(),
                };
                drive(&side, l, parent, n, &mut hist, warm);
            }
            Mode::RawFutex => {
                for i in 1..=n {
                    if parent {
                        let t0 = Instant::now();
                        raw_futex_send(&l.ping.0, i);
                        raw_futex_wait_for(&l.pong.0, i);
                        if i > warm {
                            hist.saturating_record((t0.elapsed().as_nanos() as u64).max(1));
                        }
                    } else {
                        raw_futex_wait_for(&l.ping.0, i);
                        raw_futex_send(&l.pong.0, i);
                    }
                }
            }
            Mode::UnixSocket => {
                let mut buf = [0u8; MSG];
                for i in 1..=n {
                    if parent {
                        let t0 = Instant::now();
                        buf[..4].copy_from_slice(&i.to_le_bytes());
                        uds.write_all(&buf).expect("uds write");
                        uds.read_exact(&mut buf).expect("uds read");
                        if i > warm {
                            hist.saturating_record((t0.elapsed().as_nanos() as u64).max(1));
                        }
                    } else {
                        uds.read_exact(&mut buf).expect("uds read");
                        uds.write_all(&buf).expect("uds write");
                    }
                }
            }
        }
        hist
    }

    fn child(mode_name: &str) {
        let mode = if let Some(rest) = mode_name.strip_prefix("Sweep:") {
            let (a, b) = rest.split_once(':').expect("spin:yields");
            Mode::Sweep(a.parse().expect("spin"), b.parse().expect("yields"))
        } else {
            MODES
                .into_iter()
                .find(|m| format!("{m:?}") == mode_name)
                .expect("mode")
        };
        let shm = inherited("FERRY_BENCH_SHM");
        let l = layout(map(&shm));
        let bell_parent =
            Doorbell::from_owned_fd(inherited("FERRY_BENCH_BELL_PARENT")).expect("bell");
        let bell_child =
            Doorbell::from_owned_fd(inherited("FERRY_BENCH_BELL_CHILD")).expect("bell");
        let mut uds = UnixStream::from(inherited("FERRY_BENCH_UDS"));
        pin(false);
        let cpu0 = rustix::thread::sched_getcpu();
        run(mode, l, (&bell_parent, &bell_child), &mut uds, false);
        let cpu1 = rustix::thread::sched_getcpu();
        l.child_migrations.0.store(u32::from(cpu0 != cpu1), Relaxed);
        l.child_cpu.0.store(cpu1 as u32 + 1, SeqCst);
    }

    /// `FERRY_BENCH_PIN=same` pins both processes to CPU 0, `split` the parent to CPU 0 and
    /// the child to CPU 1; unset leaves placement to the scheduler.
    fn pin(parent: bool) {
        let cpu = match std::env::var("FERRY_BENCH_PIN").as_deref() {
            Ok("same") => 0,
            Ok("split") => usize::from(!parent),
            _ => return,
        };
        let mut set = rustix::thread::CpuSet::new();
        set.set(cpu);
        rustix::thread::sched_setaffinity(None, &set).expect("sched_setaffinity");
    }

    fn loadavg() -> String {
        std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "?".into())
    }

    /// Nanoseconds per spin iteration as the policy runs it (spin_loop + acquire load).
    fn spin_iteration_ns() -> f64 {
        let word = AtomicU32::new(0);
        let iters = 2_000_000u32;
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t0 = Instant::now();
            for _ in 0..iters {
                core::hint::spin_loop();
                if word.load(Acquire) == u32::MAX {
                    break;
                }
            }
            best = best.min(t0.elapsed().as_nanos() as f64 / f64::from(iters));
        }
        best
    }

    fn us(ns: u64) -> String {
        format!("{:.2}", ns as f64 / 1000.0)
    }

    pub(super) fn main() {
        if let Ok(mode) = std::env::var("FERRY_BENCH_CHILD") {
            child(&mode);
            return;
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        pin(true);
        if let Ok(p) = std::env::var("FERRY_BENCH_PIN") {
            println!("placement pinned: {p}");
        }
        println!("wake_latency: two processes, round trip = ping + pong");
        println!("CPUs available: {cpus}; load average before: {}", loadavg());
        let spin_ns = spin_iteration_ns();
        println!(
            "one spin iteration (spin_loop + acquire load): {spin_ns:.1} ns; default budget {} \
             iterations = ~{:.1} µs of spinning, then {} yields",
            ferry_notify::policy::DEFAULT_SPIN,
            spin_ns * f64::from(ferry_notify::policy::DEFAULT_SPIN) / 1000.0,
            ferry_notify::policy::DEFAULT_YIELDS,
        );
        println!();
        println!(
            "| mechanism | samples | p50 µs | p99 µs | p99.9 µs | max µs | mean µs | parent CPU | child CPU |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        let exe = std::env::current_exe().expect("current_exe");
        let mut p50s = Vec::new();
        let mut modes = MODES.to_vec();
        if std::env::var_os("FERRY_BENCH_SWEEP").is_some() {
            for spin in [0, 128, 512, 2048] {
                for yields in [0, 8] {
                    modes.push(Mode::Sweep(spin, yields));
                }
            }
        }
        for mode in modes {
            if mode == Mode::Spin && std::env::var("FERRY_BENCH_PIN").as_deref() == Ok("same") {
                // Two pure spinners on one CPU only progress at each scheduler tick.
                println!("| spin | skipped: both pinned to one CPU | | | | | | | |");
                continue;
            }
            let mode_env = match mode {
                Mode::Sweep(a, b) => format!("Sweep:{a}:{b}"),
                m => format!("{m:?}"),
            };
            let shm = memfd_create("ferry-bench", MemfdFlags::CLOEXEC).expect("memfd");
            ftruncate(&shm, PAGE as u64).expect("ftruncate");
            let l = layout(map(&shm));
            let bell_parent = Doorbell::new().expect("doorbell");
            let bell_child = Doorbell::new().expect("doorbell");
            let (mut uds, uds_child) = UnixStream::pair().expect("socketpair");
            let mut child = Command::new(&exe)
                .env("FERRY_BENCH_CHILD", mode_env)
                .env("FERRY_BENCH_SHM", inheritable(shm.as_fd()))
                .env("FERRY_BENCH_BELL_PARENT", inheritable(bell_parent.as_fd()))
                .env("FERRY_BENCH_BELL_CHILD", inheritable(bell_child.as_fd()))
                .env("FERRY_BENCH_UDS", inheritable(uds_child.as_fd()))
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn child");
            drop(uds_child);
            let hist = run(mode, l, (&bell_parent, &bell_child), &mut uds, true);
            let parent_cpu = rustix::thread::sched_getcpu();
            let status = child.wait().expect("child");
            assert!(status.success(), "child failed: {status}");
            let child_cpu = match l.child_cpu.0.load(SeqCst) {
                0 => "?".to_owned(),
                c => format!(
                    "{}{}",
                    c - 1,
                    if l.child_migrations.0.load(Relaxed) != 0 {
                        " (moved)"
                    } else {
                        ""
                    }
                ),
            };
            let name = match mode {
                Mode::Sweep(a, b) => format!("adaptive spin={a} yields={b}"),
                m => m.name().to_owned(),
            };
            println!(
                "| {} | {} | {} | {} | {} | {} | {:.2} | {} | {} |",
                name,
                hist.len(),
                us(hist.value_at_quantile(0.50)),
                us(hist.value_at_quantile(0.99)),
                us(hist.value_at_quantile(0.999)),
                us(hist.max()),
                hist.mean() / 1000.0,
                parent_cpu,
                child_cpu,
            );
            p50s.push((
                mode,
                hist.value_at_quantile(0.50),
                hist.value_at_quantile(0.99),
            ));
        }
        println!();
        let get = |m: Mode| {
            p50s.iter()
                .find(|x| x.0 == m)
                .map(|x| (x.1, x.2))
                .expect("mode ran")
        };
        let (po50, po99) = get(Mode::ParkOnlyFutex);
        let (raw50, raw99) = get(Mode::RawFutex);
        println!(
            "park-only futex / raw futex: p50 {:.2}x, p99 {:.2}x (target: within 1.5x)",
            po50 as f64 / raw50 as f64,
            po99 as f64 / raw99 as f64
        );
        let (ad50, ad99) = get(Mode::Adaptive);
        println!(
            "adaptive default: p50 {} µs (target <= 1), p99 {} µs (target <= 10)",
            us(ad50),
            us(ad99)
        );
        println!("load average after: {}", loadavg());
    }
}
