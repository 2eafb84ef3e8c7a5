//! Two real processes ping-pong through each wake-up mechanism.
//!
//! The parent test spawns this same binary again (`--exact child_entry --ignored`) with the
//! shared page (Linux: an inherited memfd; Windows: a named section) and the mechanism named
//! in the environment. Each side publishes a sequence number, then wakes the peer only if the
//! peer announced a sleep (the sleep protocol); a lost wake-up shows up as a wait that runs
//! into its 20 s deadline and fails the test.

mod common;

use std::sync::atomic::Ordering::{Acquire, Release, SeqCst};
use std::sync::atomic::{AtomicU32, fence};
use std::time::{Duration, Instant};

use common::{Shared, create_shared, spawn_child};
use ferry_notify::{Doorbell, NotifyError, Parker, ParkerSpec, Unparker, WaitOutcome, WaitPolicy};

const ENV_MECH: &str = "FERRY_NOTIFY_TEST_MECH";
const ENV_ITERS: &str = "FERRY_NOTIFY_TEST_ITERS";
const ENV_PARENT_SPEC: &str = "FERRY_NOTIFY_TEST_PARENT_SPEC";
const ENV_BELL_PARENT: &str = "FERRY_NOTIFY_TEST_BELL_PARENT";
const ENV_BELL_CHILD: &str = "FERRY_NOTIFY_TEST_BELL_CHILD";

/// Token stored in a sleep word: "wake me through my parker / futex word / doorbell".
const TOKEN_PARKER: u32 = 1;
const TOKEN_DOORBELL: u32 = 2;

/// Per-wait deadline: far above any scheduling delay, so hitting it means a lost wake-up.
const LOST_WAKEUP: Duration = Duration::from_secs(20);

/// Blocking round trips cost 5–60 µs, so 100k of them take a few seconds even in debug.
const BLOCKING_ITERS: u32 = 100_000;
/// The adaptive policy mostly spins: 100k round trips take well under a second.
const ADAPTIVE_ITERS: u32 = 100_000;

type ParkFn<'a> =
    Box<dyn Fn(&AtomicU32, Option<Duration>) -> Result<WaitOutcome, NotifyError> + 'a>;
type WakeFn<'a> = Box<dyn Fn(&AtomicU32) -> Result<(), NotifyError> + 'a>;

/// One side of the ping-pong.
struct Side<'a> {
    policy: WaitPolicy,
    token: u32,
    my_sleep: &'a AtomicU32,
    peer_sleep: &'a AtomicU32,
    park: ParkFn<'a>,
    wake_peer: WakeFn<'a>,
}

impl Side<'_> {
    /// Publishes `value` and wakes the peer if it sleeps.
    fn send(&self, counter: &AtomicU32, value: u32) {
        counter.store(value, Release);
        fence(SeqCst);
        if self.peer_sleep.load(SeqCst) != 0 && self.peer_sleep.swap(0, SeqCst) != 0 {
            (self.wake_peer)(self.peer_sleep).expect("wake peer");
        }
    }

    /// Waits until `counter >= value`.
    fn recv(&self, counter: &AtomicU32, value: u32) -> WaitOutcome {
        let deadline = Instant::now() + LOST_WAKEUP;
        self.policy
            .wait_until(
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
                Some(deadline),
            )
            .expect("wait")
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mech {
    /// `ferry_notify::word` (Linux futex / macOS os_sync), park-only.
    Word,
    /// `Parker`/`Unparker`, park-only.
    Parker,
    /// `Doorbell` in each direction, park-only.
    Doorbell,
    /// `Parker`/`Unparker` with the default adaptive policy.
    Adaptive,
    /// Child sets up, reports ready, and then hangs (to be killed).
    Hang,
}

impl Mech {
    fn name(self) -> &'static str {
        match self {
            Mech::Word => "word",
            Mech::Parker => "parker",
            Mech::Doorbell => "doorbell",
            Mech::Adaptive => "adaptive",
            Mech::Hang => "hang",
        }
    }
    fn from_name(s: &str) -> Mech {
        [
            Mech::Word,
            Mech::Parker,
            Mech::Doorbell,
            Mech::Adaptive,
            Mech::Hang,
        ]
        .into_iter()
        .find(|m| m.name() == s)
        .expect("known mechanism")
    }
    fn policy(self) -> WaitPolicy {
        if self == Mech::Adaptive {
            WaitPolicy::default()
        } else {
            WaitPolicy::ParkOnly
        }
    }
}

/// Parent's doorbells: (mine, the child's) plus env entries to hand them over.
fn doorbells_for_child() -> (Doorbell, Doorbell, Vec<(&'static str, String)>) {
    let parent_bell = Doorbell::new().expect("doorbell");
    let child_bell = Doorbell::new().expect("doorbell");
    #[cfg(target_os = "linux")]
    let env = {
        use std::os::fd::AsFd;
        vec![
            (ENV_BELL_PARENT, common::inheritable(parent_bell.as_fd())),
            (ENV_BELL_CHILD, common::inheritable(child_bell.as_fd())),
        ]
    };
    #[cfg(target_vendor = "apple")]
    let env = {
        use std::os::fd::AsFd;
        let both = |b: &Doorbell| {
            let r = common::inheritable(b.as_fd());
            format!("{r},{}", common::inheritable(b.write_fd()))
        };
        vec![
            (ENV_BELL_PARENT, both(&parent_bell)),
            (ENV_BELL_CHILD, both(&child_bell)),
        ]
    };
    #[cfg(windows)]
    let env = vec![
        (ENV_BELL_PARENT, parent_bell.name().to_owned()),
        (ENV_BELL_CHILD, child_bell.name().to_owned()),
    ];
    (parent_bell, child_bell, env)
}

fn child_doorbells() -> (Doorbell, Doorbell) {
    let var = |k| std::env::var(k).expect("doorbell env");
    #[cfg(target_os = "linux")]
    let open = |v: String| Doorbell::from_owned_fd(common::inherited(&v)).expect("doorbell fd");
    #[cfg(target_vendor = "apple")]
    let open = |v: String| {
        let (r, w) = v.split_once(',').expect("read,write");
        Doorbell::from_owned_fds(common::inherited(r), common::inherited(w)).expect("pipe fds")
    };
    #[cfg(windows)]
    let open = |v: String| Doorbell::open_named(&v).expect("open doorbell");
    (open(var(ENV_BELL_PARENT)), open(var(ENV_BELL_CHILD)))
}

/// Runs the parent side of `iters` round trips against a freshly spawned child.
fn ping_pong(mech: Mech, iters: u32) {
    let (shm, shm_env) = create_shared();
    let l = shm.layout();
    let mut env = vec![
        (ENV_MECH, mech.name().to_owned()),
        (ENV_ITERS, iters.to_string()),
    ];

    let parker = Parker::new().expect("parker");
    env.push((ENV_PARENT_SPEC, parker.spec().as_str().to_owned()));
    let (parent_bell, child_bell, bell_env) = doorbells_for_child();
    env.extend(bell_env);

    let mut child = spawn_child("child_entry", &shm_env, &env);
    let unparker = Unparker::open(&ParkerSpec::parse(&shm.read_child_spec()).expect("spec"))
        .expect("open child's parker");

    let side = match mech {
        Mech::Word => Side {
            policy: mech.policy(),
            token: TOKEN_PARKER,
            my_sleep: &l.parent_sleep.0,
            peer_sleep: &l.child_sleep.0,
            park: Box::new(|w, t| ferry_notify::word::wait(w, TOKEN_PARKER, t)),
            wake_peer: Box::new(ferry_notify::word::wake_one),
        },
        Mech::Parker | Mech::Adaptive => Side {
            policy: mech.policy(),
            token: TOKEN_PARKER,
            my_sleep: &l.parent_sleep.0,
            peer_sleep: &l.child_sleep.0,
            park: Box::new(|w, t| parker.park(w, TOKEN_PARKER, t)),
            wake_peer: Box::new(|w| unparker.unpark(w)),
        },
        Mech::Doorbell => Side {
            policy: mech.policy(),
            token: TOKEN_DOORBELL,
            my_sleep: &l.parent_sleep.0,
            peer_sleep: &l.child_sleep.0,
            park: Box::new(|_, t| parent_bell.wait(t)),
            wake_peer: Box::new(|_| child_bell.ring()),
        },
        Mech::Hang => unreachable!(),
    };

    let start = Instant::now();
    for i in 1..=iters {
        side.send(&l.ping.0, i);
        let r = side.recv(&l.pong.0, i);
        assert_eq!(
            r,
            WaitOutcome::Woken,
            "{mech:?}: lost wake-up at round trip {i}"
        );
    }
    let elapsed = start.elapsed();
    let status = child.wait().expect("wait for child");
    assert!(status.success(), "child failed: {status}");
    eprintln!(
        "{mech:?}: {iters} round trips in {elapsed:?} ({:?} each)",
        elapsed / iters
    );
}

#[test]
#[cfg(any(target_os = "linux", target_vendor = "apple"))]
fn word_ping_pong_between_processes() {
    if cfg!(target_os = "linux") {
        assert!(
            ferry_notify::word::is_supported(),
            "futex is always there on Linux"
        );
    } else if !ferry_notify::word::is_supported() {
        eprintln!("skipped: os_sync_wait_on_address needs macOS 14.4+");
        return;
    }
    ping_pong(Mech::Word, BLOCKING_ITERS);
}

#[test]
fn parker_ping_pong_between_processes() {
    ping_pong(Mech::Parker, BLOCKING_ITERS);
}

#[test]
fn doorbell_ping_pong_between_processes() {
    ping_pong(Mech::Doorbell, BLOCKING_ITERS);
}

#[test]
fn adaptive_ping_pong_between_processes() {
    ping_pong(Mech::Adaptive, ADAPTIVE_ITERS);
}

/// The child's half. Ignored so that it only runs when a parent test spawns it.
#[test]
#[ignore = "child process entry point, spawned by the other tests"]
fn child_entry() {
    let Some(shm) = common::child_shared() else {
        eprintln!("child_entry only runs as a child of the two-process tests");
        return;
    };
    run_child(&shm);
}

fn run_child(shm: &Shared) {
    let l = shm.layout();
    let mech = Mech::from_name(&std::env::var(ENV_MECH).expect("mechanism"));
    let iters: u32 = std::env::var(ENV_ITERS)
        .expect("iterations")
        .parse()
        .expect("number");
    let parker = Parker::new().expect("child parker");
    let spec = ParkerSpec::parse(&std::env::var(ENV_PARENT_SPEC).expect("parent spec"))
        .expect("valid spec");
    let unparker = Unparker::open(&spec).expect("open parent's parker");
    let (parent_bell, child_bell) = child_doorbells();
    shm.publish_child_spec(parker.spec().as_str().as_bytes());
    l.child_ready.0.store(1, SeqCst);

    let side = match mech {
        Mech::Hang => {
            // Wait to be killed; the bound only keeps a broken parent from leaking us forever.
            std::thread::sleep(Duration::from_secs(60));
            return;
        }
        Mech::Word => Side {
            policy: mech.policy(),
            token: TOKEN_PARKER,
            my_sleep: &l.child_sleep.0,
            peer_sleep: &l.parent_sleep.0,
            park: Box::new(|w, t| ferry_notify::word::wait(w, TOKEN_PARKER, t)),
            wake_peer: Box::new(ferry_notify::word::wake_one),
        },
        Mech::Parker | Mech::Adaptive => Side {
            policy: mech.policy(),
            token: TOKEN_PARKER,
            my_sleep: &l.child_sleep.0,
            peer_sleep: &l.parent_sleep.0,
            park: Box::new(|w, t| parker.park(w, TOKEN_PARKER, t)),
            wake_peer: Box::new(|w| unparker.unpark(w)),
        },
        Mech::Doorbell => Side {
            policy: mech.policy(),
            token: TOKEN_DOORBELL,
            my_sleep: &l.child_sleep.0,
            peer_sleep: &l.parent_sleep.0,
            park: Box::new(|_, t| child_bell.wait(t)),
            wake_peer: Box::new(|_| parent_bell.ring()),
        },
    };
    for i in 1..=iters {
        let r = side.recv(&l.ping.0, i);
        assert_eq!(r, WaitOutcome::Woken, "child {mech:?}: lost wake-up at {i}");
        side.send(&l.pong.0, i);
    }
}

/// Nobody wakes: every mechanism returns `TimedOut` after (not before) its timeout.
#[test]
fn waits_without_a_waker_time_out() {
    let timeout = Duration::from_millis(50);
    let word = AtomicU32::new(TOKEN_PARKER);
    let parker = Parker::new().expect("parker");
    let bell = Doorbell::new().expect("doorbell");
    type Wait<'a> = Box<dyn Fn() -> Result<WaitOutcome, NotifyError> + 'a>;
    let mut waits: Vec<(&str, Wait<'_>)> = vec![
        (
            "parker",
            Box::new(|| parker.park(&word, TOKEN_PARKER, Some(timeout))),
        ),
        ("doorbell", Box::new(|| bell.wait(Some(timeout)))),
        (
            "adaptive policy",
            Box::new(|| {
                WaitPolicy::default().wait_until(
                    || false,
                    || true,
                    |t| parker.park(&word, TOKEN_PARKER, t),
                    Some(Instant::now() + timeout),
                )
            }),
        ),
    ];
    if ferry_notify::word::is_supported() {
        waits.push((
            "word",
            Box::new(|| ferry_notify::word::wait(&word, TOKEN_PARKER, Some(timeout))),
        ));
    }
    for (name, wait) in waits {
        let t0 = Instant::now();
        assert_eq!(wait(), Ok(WaitOutcome::TimedOut), "{name}");
        assert!(
            t0.elapsed() >= timeout,
            "{name} returned early: {:?}",
            t0.elapsed()
        );
    }
}

/// The peer is killed while we wait for it: every wait returns on its timeout, none hangs.
#[test]
fn peer_killed_while_waiting() {
    let (shm, shm_env) = create_shared();
    let l = shm.layout();
    let parker = Parker::new().expect("parker");
    let (parent_bell, _child_bell, bell_env) = doorbells_for_child();
    let mut env = vec![
        (ENV_MECH, Mech::Hang.name().to_owned()),
        (ENV_ITERS, "0".into()),
    ];
    env.push((ENV_PARENT_SPEC, parker.spec().as_str().to_owned()));
    env.extend(bell_env);
    let mut child = spawn_child("child_entry", &shm_env, &env);
    let ready_by = Instant::now() + Duration::from_secs(30);
    while l.child_ready.0.load(SeqCst) == 0 {
        assert!(Instant::now() < ready_by, "child never got ready");
        std::thread::sleep(Duration::from_millis(1));
    }

    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        child.kill().expect("kill child");
        child.wait().expect("reap child")
    });
    let timeout = Duration::from_millis(300);
    let t0 = Instant::now();
    let r = WaitPolicy::default().wait_until(
        || l.pong.0.load(Acquire) != 0,
        || {
            l.parent_sleep.0.store(TOKEN_PARKER, SeqCst);
            l.pong.0.load(SeqCst) == 0
        },
        |t| parker.park(&l.parent_sleep.0, TOKEN_PARKER, t),
        Some(t0 + timeout),
    );
    assert_eq!(r, Ok(WaitOutcome::TimedOut));
    assert!(t0.elapsed() >= timeout);
    let status = killer.join().expect("killer thread");
    assert!(
        !status.success(),
        "the child was killed, not finished: {status}"
    );

    // After the peer is gone, the doorbell still answers with a timeout, not a hang.
    let t0 = Instant::now();
    assert_eq!(parent_bell.wait(Some(timeout)), Ok(WaitOutcome::TimedOut));
    assert!(t0.elapsed() >= timeout);
}
