//! The adaptive wait policy (spin, then yield, then park) and the process-wide spin governor.

use core::cell::Cell;
use core::sync::atomic::{AtomicUsize, Ordering};
use core::time::Duration;
use std::time::Instant;

use crate::{NotifyError, WaitOutcome};

/// Spin iterations in the default [`WaitPolicy`].
///
/// Chosen by measurement with `cargo bench -p ferry-notify --bench wake_latency` (which prints
/// the cost of one spin iteration; `FERRY_BENCH_SWEEP=1` adds rows for other budgets and
/// `FERRY_BENCH_PIN=same|split` fixes the placement of the two processes). On the 2-vCPU AMD
/// EPYC development VM one iteration (`spin_loop`, i.e. `PAUSE`, plus an acquire load) costs
/// 25–30 ns, a yield ~0.3 µs when nothing else is runnable, and a blocking futex round trip
/// 5–15 µs (55 µs and more across CPUs under load). 512 iterations, with a yield every
/// [`SPIN_YIELD_EVERY`], is roughly 10–25 µs of spinning: about what one blocking round trip
/// costs (the classic "spin as long as blocking would cost" rule), so a reply within that window
/// is seen in well under a microsecond and a late one costs at most about twice the optimum.
/// Measured round trips with this default: 0.13–0.4 µs p50 and < 1 µs p99 with the processes on
/// two CPUs; ~4.5 µs p50 and ~6 µs p99 with both on one CPU (where pure spinning without the
/// interleaved yields cost 220 µs p50 and 5 ms p99).
pub const DEFAULT_SPIN: u32 = 512;

/// `yield_now` calls in the default [`WaitPolicy`], after spinning and before parking.
///
/// A yield costs one system call (~0.3 µs) when nothing else wants the CPU; a few of them
/// catch a peer that was just preempted on the same CPU, without giving away whole time slices.
pub const DEFAULT_YIELDS: u32 = 8;

/// During the spin phase of [`WaitPolicy::Adaptive`], [`std::thread::yield_now`] is called
/// after every this many iterations.
///
/// When the peer waits for *our* CPU (both processes on one core, or more runnable threads
/// than cores), pure spinning burns the whole budget, or the whole time slice, before the peer
/// can reply. Measured on the development VM with both processes pinned to one CPU: spinning
/// 4096 iterations without yields gave 220 µs p50 / 5 ms p99 round trips; yielding every 16
/// gave 4.5 µs / 6 µs, while costing nothing measurable when the processes run on two CPUs
/// (every 64 gave 7 µs / 17 µs on one CPU).
pub const SPIN_YIELD_EVERY: u32 = 16;

/// A thread whose learned spin budget fell to nothing still spins `spin / 8` iterations on
/// every this many adaptive waits, to find out whether spinning pays again.
pub const PROBE_EVERY: u32 = 16;

/// How often (in spin iterations) the clock is read to check a deadline while spinning.
const DEADLINE_CHECK_EVERY: u32 = 256;

/// How a waiter waits for its condition: spin, yield, park, or a mix.
///
/// The driver is [`WaitPolicy::wait_until`]. The default is
/// `Adaptive { spin: DEFAULT_SPIN, yields: DEFAULT_YIELDS }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaitPolicy {
    /// Spin until the condition holds or the deadline passes; never yield, never park.
    ///
    /// Lowest latency, burns a whole CPU while waiting, and ignores the spin governor: use only
    /// when each side owns a core.
    Spin,
    /// Never spin: announce the sleep and park at once. Costs no CPU while waiting; every
    /// wake-up pays the OS round trip.
    ParkOnly,
    /// Spin up to `spin` times with [`core::hint::spin_loop`] (yielding every
    /// [`SPIN_YIELD_EVERY`] iterations, so a peer waiting for this CPU gets it), then call
    /// [`std::thread::yield_now`] up to `yields` times, then park. Spinning is skipped when
    /// the [spin governor](spinning_threads) says enough threads already spin.
    ///
    /// The budget is *learned* per thread (see [`SpinLearner`], [`learned_spin_budget`]): a wait whose spin
    /// ran out without the condition turning true halves the thread's budget for the next
    /// waits (down to none, and no yields either: park at once), a wait that spinning served
    /// doubles it back (up to `spin`). So when spinning stops paying (the peer is slow, or
    /// there are more runnable threads than CPUs and a yield hands away a whole time slice),
    /// the waiter behaves like [`WaitPolicy::ParkOnly`] instead of burning the CPU the peer
    /// needs; every [`PROBE_EVERY`]th wait spins a little again to notice when spinning would
    /// pay once more.
    Adaptive {
        /// Spin iterations before yielding.
        spin: u32,
        /// Yields before parking.
        yields: u32,
    },
}

impl Default for WaitPolicy {
    fn default() -> Self {
        Self::Adaptive {
            spin: DEFAULT_SPIN,
            yields: DEFAULT_YIELDS,
        }
    }
}

/// A wait policy's name that [`WaitPolicy`]'s [`FromStr`](core::str::FromStr) does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseWaitPolicyError {
    name: String,
}

impl core::fmt::Display for ParseWaitPolicyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "unknown wait policy `{}`: use `adaptive` (the default: spin, yield, then park), \
             `park` (park at once) or `spin` (spin only)",
            self.name
        )
    }
}

impl std::error::Error for ParseWaitPolicyError {}

/// Parses the names used on command lines and in environment variables (`FERRY_POLICY`):
/// `adaptive` (the default policy), `park` ([`WaitPolicy::ParkOnly`]), `spin`
/// ([`WaitPolicy::Spin`]).
///
/// ```
/// use ferry_notify::WaitPolicy;
///
/// assert_eq!("park".parse(), Ok(WaitPolicy::ParkOnly));
/// assert_eq!("adaptive".parse(), Ok(WaitPolicy::default()));
/// assert!("sleepy".parse::<WaitPolicy>().is_err());
/// ```
impl core::str::FromStr for WaitPolicy {
    type Err = ParseWaitPolicyError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "adaptive" => Ok(Self::default()),
            "park" => Ok(Self::ParkOnly),
            "spin" => Ok(Self::Spin),
            other => Err(ParseWaitPolicyError {
                name: other.to_owned(),
            }),
        }
    }
}

impl WaitPolicy {
    /// Waits until `ready()` returns `true` or `deadline` passes.
    ///
    /// The closures carry the sleep protocol (see the [crate docs](crate#the-sleep-protocol)):
    ///
    /// * `ready()`: is the condition true now? (For a ring: is it non-empty?) Called often;
    ///   must be cheap and must not block.
    /// * `prepare_sleep()`: announce the sleep (store the nonzero token into the shared sleep
    ///   word with `SeqCst`, fence) and re-check the condition. Return `true` to go to sleep,
    ///   `false` if the condition became true meanwhile (then the caller should also retract
    ///   its token, e.g. by swapping the word back to 0).
    /// * `park(timeout)`: block while the sleep word still holds the token, for at most
    ///   `timeout` (`None` = no limit), e.g. `|t| parker.park(&word, TOKEN, t)`.
    ///
    /// After `park` returns, `ready()` is checked and, if still false, the sleep is announced
    /// and parked again (spurious wake-ups are absorbed here; spinning is not repeated).
    ///
    /// Returns [`WaitOutcome::Woken`] once `ready()` returned `true`, or
    /// [`WaitOutcome::TimedOut`] when the deadline passed first (`ready()` is checked one last
    /// time before giving up). On a timeout the token may still be in the sleep word; a later
    /// wake from the peer then only costs one stray wake-up.
    ///
    /// Allocation-free. Reads the clock only when `deadline` is `Some`.
    ///
    /// # Errors
    ///
    /// Whatever `park` returns as an error, unchanged.
    pub fn wait_until<R, S, P>(
        &self,
        mut ready: R,
        mut prepare_sleep: S,
        mut park: P,
        deadline: Option<Instant>,
    ) -> Result<WaitOutcome, NotifyError>
    where
        R: FnMut() -> bool,
        S: FnMut() -> bool,
        P: FnMut(Option<Duration>) -> Result<WaitOutcome, NotifyError>,
    {
        if ready() {
            return Ok(WaitOutcome::Woken);
        }
        let (spin, yields) = match *self {
            Self::Spin => return spin_forever(&mut ready, deadline),
            Self::ParkOnly => (0, 0),
            Self::Adaptive { spin, yields } => (spin, yields),
        };

        let budget = learned(|l| {
            l.start_spell();
            l.budget(spin)
        });
        let mut spun_out = false;
        if budget > 0
            && let Some(_slot) = SpinSlot::acquire()
        {
            match spin_bounded(&mut ready, budget, SPIN_YIELD_EVERY, deadline) {
                Phase::Ready => {
                    learned(|l| l.paid(spin, budget));
                    return Ok(WaitOutcome::Woken);
                }
                Phase::Expired => return Ok(WaitOutcome::TimedOut),
                Phase::Exhausted => {
                    learned(|l| l.did_not_pay(budget));
                    spun_out = true;
                }
            }
        }
        // Yielding only helps when spinning does (a peer just preempted on this CPU); once the
        // learned budget is gone, park at once.
        let yields = if budget == 0 || (spun_out && learned(|l| l.is_exhausted())) {
            0
        } else {
            yields
        };

        for _ in 0..yields {
            std::thread::yield_now();
            if ready() {
                return Ok(WaitOutcome::Woken);
            }
            if expired(deadline) {
                return Ok(timed_out_unless_ready(&mut ready));
            }
        }

        loop {
            if !prepare_sleep() {
                if ready() {
                    return Ok(WaitOutcome::Woken);
                }
                // The caller saw something that was not `ready()` (a stray state); go round
                // again, bounded by the deadline.
                if expired(deadline) {
                    return Ok(timed_out_unless_ready(&mut ready));
                }
                continue;
            }
            let timeout = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Ok(timed_out_unless_ready(&mut ready)),
                },
            };
            // Woken or timed out, the answer comes from `ready()` and the deadline.
            let _outcome = park(timeout)?;
            if ready() {
                return Ok(WaitOutcome::Woken);
            }
            if expired(deadline) {
                return Ok(timed_out_unless_ready(&mut ready));
            }
        }
    }
}

enum Phase {
    Ready,
    Expired,
    Exhausted,
}

fn expired(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

fn timed_out_unless_ready(ready: &mut impl FnMut() -> bool) -> WaitOutcome {
    if ready() {
        WaitOutcome::Woken
    } else {
        WaitOutcome::TimedOut
    }
}

fn spin_bounded(
    ready: &mut impl FnMut() -> bool,
    budget: u32,
    yield_every: u32,
    deadline: Option<Instant>,
) -> Phase {
    for i in 1..=budget {
        core::hint::spin_loop();
        if ready() {
            return Phase::Ready;
        }
        if yield_every != 0 && i % yield_every == 0 {
            std::thread::yield_now();
        }
        if i % DEADLINE_CHECK_EVERY == 0 && expired(deadline) {
            return match timed_out_unless_ready(ready) {
                WaitOutcome::Woken => Phase::Ready,
                WaitOutcome::TimedOut => Phase::Expired,
            };
        }
    }
    Phase::Exhausted
}

fn spin_forever(
    ready: &mut impl FnMut() -> bool,
    deadline: Option<Instant>,
) -> Result<WaitOutcome, NotifyError> {
    loop {
        match spin_bounded(ready, u32::MAX, 0, deadline) {
            Phase::Ready => return Ok(WaitOutcome::Woken),
            Phase::Expired => return Ok(WaitOutcome::TimedOut),
            Phase::Exhausted => {}
        }
    }
}

/// The learned-spin rule of [`WaitPolicy::Adaptive`], in one place: what a waiter has learned
/// about spinning, as a plain value (no OS, no clock, no atomics).
///
/// Each thread's adaptive waits keep one (thread-local, in [`WaitPolicy::wait_until`]); the
/// transport's server workers keep one each for their spin between idle rounds. The rule:
/// a spell (one wait, one idle stretch) whose spin ran out without work halves the budget,
/// down to nothing; a spell that spinning served doubles it back (at least 32, at most the
/// policy's `spin`). A budget below an eighth of the policy's spins `spin / 8` on every
/// [`PROBE_EVERY`]th spell, to notice when spinning would pay again.
///
/// ```
/// use ferry_notify::policy::SpinLearner;
///
/// let mut learner = SpinLearner::new();
/// assert_eq!(learner.budget(512), 512); // nothing learned yet: the policy's own budget
/// learner.did_not_pay(512);
/// assert_eq!(learner.learned(), Some(256));
/// learner.paid(512, 256);
/// assert_eq!(learner.learned(), Some(512));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpinLearner {
    /// Spin iterations for the next spell; `u32::MAX` = not learned yet (use the policy's own
    /// budget).
    learned: u32,
    /// Spells started, for the periodic probe.
    spells: u32,
}

impl Default for SpinLearner {
    fn default() -> Self {
        Self::new()
    }
}

impl SpinLearner {
    /// A learner that has learned nothing yet.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            learned: u32::MAX,
            spells: 0,
        }
    }

    /// Counts the start of a new spell (for the periodic probe of [`budget`](Self::budget)).
    #[inline]
    pub fn start_spell(&mut self) {
        self.spells = self.spells.wrapping_add(1);
    }

    /// The spin budget of the current spell under a policy spinning at most `max`: what was
    /// learned, or `max / 8` when that is less and this spell is a probe.
    #[inline]
    #[must_use]
    pub fn budget(&self, max: u32) -> u32 {
        let learned = self.learned.min(max);
        if learned < max / 8 && self.spells.is_multiple_of(PROBE_EVERY) {
            max / 8
        } else {
            learned
        }
    }

    /// Spinning `budget` iterations found the condition (or work): double the budget (at least
    /// 32, at most `max`).
    #[inline]
    pub fn paid(&mut self, max: u32, budget: u32) {
        let current = self.learned.min(max);
        self.learned = current.max(budget.saturating_mul(2).max(32)).min(max);
    }

    /// Spinning `budget` iterations did not find it (the waiter went to sleep): halve the
    /// budget, to nothing below 32.
    #[inline]
    pub fn did_not_pay(&mut self, budget: u32) {
        let current = self.learned.min(budget);
        self.learned = if current < 32 { 0 } else { current / 2 };
    }

    /// The learned budget; `None` before anything was learned.
    #[must_use]
    pub fn learned(&self) -> Option<u32> {
        Some(self.learned).filter(|&b| b != u32::MAX)
    }

    /// Whether spinning stopped paying altogether (the budget is 0: park at once, yield no
    /// more, apart from the periodic probe).
    #[must_use]
    pub fn is_exhausted(&self) -> bool {
        self.learned == 0
    }
}

thread_local! {
    /// What this thread's adaptive waits have learned.
    static LEARNED: Cell<SpinLearner> = const { Cell::new(SpinLearner::new()) };
}

/// Runs `f` on this thread's learner.
#[inline]
fn learned<T>(f: impl FnOnce(&mut SpinLearner) -> T) -> T {
    LEARNED.with(|cell| {
        let mut learner = cell.get();
        let r = f(&mut learner);
        cell.set(learner);
        r
    })
}

/// The spin budget this thread's next [`WaitPolicy::Adaptive`] wait starts from: `None`
/// before its first adaptive wait that spun, then what spinning taught it (see
/// [`WaitPolicy::Adaptive`]; `Some(0)` means it parks at once, apart from the periodic probe).
pub fn learned_spin_budget() -> Option<u32> {
    learned(|l| l.learned())
}

/// Threads of this process spinning in [`WaitPolicy::wait_until`] right now.
static SPINNERS: AtomicUsize = AtomicUsize::new(0);
/// Cached spin limit; 0 = not computed yet.
static SPIN_LIMIT: AtomicUsize = AtomicUsize::new(0);

/// Number of threads of this process currently spinning in an adaptive wait.
///
/// The spin governor lets at most [`spin_limit`] threads spin at once; further adaptive
/// waiters skip the spin phase and go straight to yielding and parking, so that a server with
/// 1000 connections on 2 cores does not burn the CPU its peers need. The governor counts this
/// process only; two processes can each spin up to the limit.
pub fn spinning_threads() -> usize {
    SPINNERS.load(Ordering::Relaxed)
}

/// The most threads of this process that may spin at once:
/// [`std::thread::available_parallelism`] (1 if it cannot be determined).
pub fn spin_limit() -> usize {
    match SPIN_LIMIT.load(Ordering::Relaxed) {
        0 => {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            SPIN_LIMIT.store(n, Ordering::Relaxed);
            n
        }
        n => n,
    }
}

/// A counted place among the spinners; released on drop.
pub(crate) struct SpinSlot(());

impl SpinSlot {
    pub(crate) fn acquire() -> Option<Self> {
        let limit = spin_limit();
        if SPINNERS.fetch_add(1, Ordering::Relaxed) >= limit {
            SPINNERS.fetch_sub(1, Ordering::Relaxed);
            None
        } else {
            Some(Self(()))
        }
    }
}

impl Drop for SpinSlot {
    fn drop(&mut self) {
        SPINNERS.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::sync::Mutex;

    /// Serialises the tests that may take spin slots, so the governor test sees exact counts.
    static SPIN_TESTS: Mutex<()> = Mutex::new(());

    fn lock() -> std::sync::MutexGuard<'static, ()> {
        SPIN_TESTS.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn never_park(_: Option<Duration>) -> Result<WaitOutcome, NotifyError> {
        panic!("must not park")
    }

    #[test]
    fn ready_at_once_returns_woken_without_parking() {
        let _serial = lock();
        for p in [
            WaitPolicy::Spin,
            WaitPolicy::ParkOnly,
            WaitPolicy::default(),
        ] {
            let r = p.wait_until(|| true, || panic!("must not sleep"), never_park, None);
            assert_eq!(r, Ok(WaitOutcome::Woken), "{p:?}");
        }
    }

    #[test]
    fn adaptive_sees_condition_during_spin() {
        let _serial = lock();
        let calls = Cell::new(0u32);
        let p = WaitPolicy::Adaptive {
            spin: 1000,
            yields: 0,
        };
        let r = p.wait_until(
            || {
                calls.set(calls.get() + 1);
                calls.get() == 10
            },
            || panic!("must not sleep"),
            never_park,
            None,
        );
        assert_eq!(r, Ok(WaitOutcome::Woken));
        assert_eq!(calls.get(), 10);
    }

    #[test]
    fn park_only_parks_first_and_rechecks() {
        let parked = Cell::new(0u32);
        let ready_calls = Cell::new(0u32);
        let r = WaitPolicy::ParkOnly.wait_until(
            || {
                ready_calls.set(ready_calls.get() + 1);
                parked.get() == 2
            },
            || true,
            |t| {
                assert_eq!(t, None);
                parked.set(parked.get() + 1);
                Ok(WaitOutcome::Woken)
            },
            None,
        );
        assert_eq!(r, Ok(WaitOutcome::Woken));
        assert_eq!(
            parked.get(),
            2,
            "a spurious wake-up must lead to a second park"
        );
        assert_eq!(ready_calls.get(), 3);
    }

    #[test]
    fn prepare_sleep_false_means_no_park() {
        let prepared = Cell::new(false);
        let r = WaitPolicy::ParkOnly.wait_until(
            || prepared.get(),
            || {
                prepared.set(true);
                false
            },
            never_park,
            None,
        );
        assert_eq!(r, Ok(WaitOutcome::Woken));
    }

    #[test]
    fn deadline_in_the_past_times_out_for_every_policy() {
        let _serial = lock();
        let past = Instant::now();
        for p in [
            WaitPolicy::Spin,
            WaitPolicy::ParkOnly,
            WaitPolicy::default(),
        ] {
            let r = p.wait_until(|| false, || true, never_park, Some(past));
            assert_eq!(r, Ok(WaitOutcome::TimedOut), "{p:?}");
        }
    }

    #[test]
    fn park_gets_the_remaining_time() {
        let deadline = Instant::now() + Duration::from_secs(60);
        let r = WaitPolicy::ParkOnly.wait_until(
            || false,
            || true,
            |t| {
                let t = t.expect("a deadline gives a timeout");
                assert!(
                    t <= Duration::from_secs(60) && t > Duration::from_secs(50),
                    "{t:?}"
                );
                Err(NotifyError::InvalidObject)
            },
            Some(deadline),
        );
        assert_eq!(
            r,
            Err(NotifyError::InvalidObject),
            "park errors pass through"
        );
    }

    /// An adaptive wait whose condition turns true after `spins` calls of `ready()` (or,
    /// with `None`, only after a park).
    fn wait_once(spins: Option<u32>) -> u32 {
        let calls = Cell::new(0u32);
        let parked = Cell::new(false);
        let r = WaitPolicy::Adaptive {
            spin: 512,
            yields: 4,
        }
        .wait_until(
            || {
                calls.set(calls.get() + 1);
                parked.get() || spins.is_some_and(|n| calls.get() > n)
            },
            || true,
            |_| {
                parked.set(true);
                Ok(WaitOutcome::Woken)
            },
            None,
        );
        assert_eq!(r, Ok(WaitOutcome::Woken));
        calls.get()
    }

    #[test]
    fn spinning_that_does_not_pay_is_unlearned_and_relearned() {
        let _serial = lock();
        assert_eq!(
            learned_spin_budget(),
            None,
            "a fresh thread has learned nothing"
        );
        // Conditions that only a park satisfies: the budget halves each time, to nothing.
        let first = wait_once(None);
        assert!(
            first > 512,
            "the first wait spins the whole budget, got {first} checks"
        );
        assert_eq!(learned_spin_budget(), Some(256));
        for _ in 0..6 {
            wait_once(None);
        }
        assert_eq!(learned_spin_budget(), Some(0));
        // With nothing left, a wait parks at once: one check before, one after the park
        // (no spinning, no yields).
        let calls: Vec<u32> = (0..PROBE_EVERY * 2).map(|_| wait_once(None)).collect();
        assert!(
            calls.iter().filter(|&&c| c == 2).count() >= calls.len() - 2,
            "an exhausted budget must park at once: {calls:?}"
        );
        assert!(
            calls.iter().any(|&c| c > 60),
            "every {PROBE_EVERY}th wait probes with a small spin: {calls:?}"
        );
        // When the condition turns true within a few spins again, the probe succeeds and the
        // budget grows back to the policy's.
        for _ in 0..PROBE_EVERY * 8 {
            wait_once(Some(10));
        }
        assert_eq!(learned_spin_budget(), Some(512));
    }

    #[test]
    fn learner_starts_from_the_policy_budget() {
        let l = SpinLearner::new();
        assert_eq!(l.learned(), None);
        assert_eq!(l.budget(512), 512);
        assert_eq!(l.budget(100), 100);
        assert!(!l.is_exhausted());
    }

    #[test]
    fn learner_halves_to_nothing_and_doubles_back() {
        let mut l = SpinLearner::new();
        let mut seen = Vec::new();
        for _ in 0..6 {
            l.start_spell();
            let b = l.budget(512);
            l.did_not_pay(b);
            seen.push(l.learned().unwrap());
        }
        // 512 halves to 256, 128, 64, 32, 16, then below 32 it drops to nothing.
        assert_eq!(seen, [256, 128, 64, 32, 16, 0]);
        assert!(l.is_exhausted());
        // Work found while spinning (a probe): at least 32, doubling, capped at the policy's.
        l.paid(512, 0);
        assert_eq!(l.learned(), Some(32));
        l.paid(512, 32);
        assert_eq!(l.learned(), Some(64));
        l.paid(512, 400);
        assert_eq!(l.learned(), Some(512));
        l.paid(512, 512);
        assert_eq!(l.learned(), Some(512), "never above the policy's budget");
    }

    #[test]
    fn an_exhausted_learner_probes_every_probe_every_spells() {
        let mut l = SpinLearner::new();
        while !l.is_exhausted() {
            l.did_not_pay(l.budget(512));
        }
        let budgets: Vec<u32> = (0..PROBE_EVERY * 3)
            .map(|_| {
                l.start_spell();
                l.budget(512)
            })
            .collect();
        let probes = budgets.iter().filter(|&&b| b == 512 / 8).count();
        assert_eq!(probes, 3, "{budgets:?}");
        assert_eq!(
            budgets.iter().filter(|&&b| b == 0).count(),
            budgets.len() - 3,
            "{budgets:?}"
        );
        // A budget of an eighth or more is never replaced by a probe.
        let mut l = SpinLearner::new();
        l.paid(512, 32); // learned 512 -> stays 512
        l.did_not_pay(128); // learned 64 = 512 / 8
        for _ in 0..PROBE_EVERY * 2 {
            l.start_spell();
            assert_eq!(l.budget(512), 64);
        }
    }

    #[test]
    fn wait_policy_parses_its_names() {
        assert_eq!("adaptive".parse(), Ok(WaitPolicy::default()));
        assert_eq!("park".parse(), Ok(WaitPolicy::ParkOnly));
        assert_eq!("spin".parse(), Ok(WaitPolicy::Spin));
        let e = "Spin".parse::<WaitPolicy>().unwrap_err();
        assert!(e.to_string().contains("`Spin`"), "{e}");
        assert!(e.to_string().contains("adaptive"), "{e}");
    }

    #[test]
    fn governor_makes_extra_waiters_skip_spinning() {
        let _serial = lock();
        // Take every slot, then check that an adaptive wait goes straight to parking.
        let slots: Vec<SpinSlot> = (0..spin_limit())
            .filter_map(|_| SpinSlot::acquire())
            .collect();
        assert!(
            SpinSlot::acquire().is_none(),
            "no slot may exceed the limit"
        );
        let ready_calls = Cell::new(0u32);
        let r = WaitPolicy::Adaptive {
            spin: 1_000_000,
            yields: 0,
        }
        .wait_until(
            || {
                ready_calls.set(ready_calls.get() + 1);
                ready_calls.get() > 2
            },
            || true,
            |_| Ok(WaitOutcome::Woken),
            None,
        );
        assert_eq!(r, Ok(WaitOutcome::Woken));
        assert_eq!(
            ready_calls.get(),
            3,
            "spinning would have called ready() far more often"
        );
        drop(slots);
        assert_eq!(spinning_threads(), 0, "slots are returned on drop");
    }
}
