//! Readiness polling for the Windows server's workers: the counterpart of `unix::poller`
//! (epoll), for waitable *handles* (doorbell events, the hang-up watch's event, process
//! handles), any number of them (`WaitForMultipleObjects` stops at 64).
//!
//! One I/O completion port per poller, and one thread-pool wait per registered handle
//! (`RegisterWaitForSingleObject` with `WT_EXECUTEINWAITTHREAD`): when the handle is
//! signalled, the pool's wait thread runs [`fired`], which only posts the registration's token
//! to the port (`PostQueuedCompletionStatus`). [`Poller::wait`] takes what the port holds
//! (`GetQueuedCompletionStatusEx`) into an [`Events`] buffer reserved up front, so a wait
//! allocates nothing. [`Poller::post`] queues a token directly, to wake a worker.
//!
//! Unlike epoll's level-triggered registrations, each *signal* is reported once:
//!
//! - [`Interest::Readable`], for an auto-reset event (a doorbell): the wait thread's wait
//!   consumes the signal (resets the event) and the registration repeats, so every time the
//!   event is set (while not already set) one token is queued. The worker need not drain the
//!   event; draining it anyway finds it reset.
//! - [`Interest::ReadableOrHangUp`], for a handle that stays signalled (a manual-reset event, a
//!   process handle): `WT_EXECUTEONLYONCE`, reported once; reporting it again at every wait as
//!   epoll would is pointless (the caller tears the connection down).
//!
//! [`Poller::delete`] ends a registration with `UnregisterWaitEx(.., INVALID_HANDLE_VALUE)`,
//! which returns once the callback is not running and will not run again; tokens it queued
//! before may still come out of a later wait, so callers must tolerate stale tokens (as they
//! would a spurious doorbell). Dropping the poller ends every registration the same way before
//! it closes the port.
//!
//! See [RegisterWaitForSingleObject](https://learn.microsoft.com/en-us/windows/win32/api/winbase/nf-winbase-registerwaitforsingleobject),
//! [GetQueuedCompletionStatusEx](https://learn.microsoft.com/en-us/windows/win32/fileio/getqueuedcompletionstatusex-func).

use std::collections::HashMap;
use std::ffi::c_void;
use std::io;
use std::mem::ManuallyDrop;
use std::os::windows::io::{AsHandle, AsRawHandle, OwnedHandle};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use windows_sys::Win32::Foundation::{HANDLE, INVALID_HANDLE_VALUE, WAIT_TIMEOUT};
use windows_sys::Win32::System::IO::{
    CreateIoCompletionPort, GetQueuedCompletionStatusEx, OVERLAPPED_ENTRY,
    PostQueuedCompletionStatus,
};
use windows_sys::Win32::System::Threading::{
    INFINITE, RegisterWaitForSingleObject, UnregisterWaitEx, WT_EXECUTEINWAITTHREAD,
    WT_EXECUTEONLYONCE,
};

use super::overlapped::millis;
use super::owned;

// Tokens travel as completion keys (`usize`): every 64-bit Windows target keeps them whole.
const _: () = assert!(usize::BITS == u64::BITS);

/// What a registration waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interest {
    /// An auto-reset event (a doorbell): each time it is signalled, one event is reported (the
    /// registration repeats).
    Readable,
    /// A handle that stays signalled once signalled (a manual-reset event, a process handle):
    /// reported once.
    ReadableOrHangUp,
}

/// An I/O completion port and the thread-pool waits that post to it. `Send + Sync`: workers
/// may add, delete and post from any thread while one of them waits.
pub(crate) struct Poller {
    /// Closed by `drop` once every registration has ended.
    port: ManuallyDrop<OwnedHandle>,
    /// The registrations, by the registered handle's value (as epoll keys them by descriptor).
    registrations: Mutex<HashMap<usize, Registration>>,
}

/// What the callback of one registration reads. Boxed, so its address (the callback's
/// context) stays put while the map moves; freed only once the wait is unregistered.
struct Context {
    port: HANDLE,
    token: u64,
}

/// One thread-pool wait and its callback's context.
struct Registration {
    /// The wait object `RegisterWaitForSingleObject` returned.
    wait: HANDLE,
    context: Box<Context>,
}

// SAFETY: `wait` is a thread-pool wait object, which any thread may unregister; `context` is
// only read (by callbacks, through a raw pointer) until the registration is ended, and its
// `port` is a kernel handle value usable from any thread.
unsafe impl Send for Registration {}

impl Registration {
    /// Ends the wait: once this returns, the callback is not running and never runs again, and
    /// the context is freed. Should the OS refuse, the context is leaked rather than freed
    /// under a callback that may still run.
    fn end(self) -> io::Result<()> {
        let Registration { wait, context } = self;
        // SAFETY: `wait` came from RegisterWaitForSingleObject and is unregistered once (this
        // consumes the registration). INVALID_HANDLE_VALUE makes the call wait for a running
        // callback; it is never made from a callback (they only post).
        if unsafe { UnregisterWaitEx(wait, INVALID_HANDLE_VALUE) } == 0 {
            let e = io::Error::last_os_error();
            Box::leak(context);
            return Err(io::Error::new(
                e.kind(),
                format!("UnregisterWaitEx failed (its callback's context is leaked): {e}"),
            ));
        }
        drop(context);
        Ok(())
    }
}

/// The callback of every registration, run on a thread-pool wait thread when the handle is
/// signalled: queues the registration's token on the poller's port.
unsafe extern "system" fn fired(context: *mut c_void, _timed_out: bool) {
    // SAFETY: `context` is the address of the registration's boxed `Context`, which is freed
    // only after UnregisterWaitEx has returned for this wait, i.e. after this call returned.
    let context = unsafe { &*context.cast::<Context>() };
    // SAFETY: `context.port` is the poller's port, closed only after every registration has
    // ended (see `Drop for Poller`). A failure (no memory for the packet) loses this one
    // report; there is no one to tell from here.
    unsafe {
        PostQueuedCompletionStatus(context.port, 0, context.token as usize, core::ptr::null())
    };
}

impl Poller {
    /// A new poller, with no registrations.
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: INVALID_HANDLE_VALUE with no existing port creates a new port not associated
        // with any file; nothing is retained.
        let raw =
            unsafe { CreateIoCompletionPort(INVALID_HANDLE_VALUE, core::ptr::null_mut(), 0, 0) };
        // SAFETY: `raw` was just returned by CreateIoCompletionPort on this thread.
        let port = unsafe { owned(raw) }.map_err(|e| with_op("CreateIoCompletionPort", &e))?;
        Ok(Poller {
            port: ManuallyDrop::new(port),
            registrations: Mutex::new(HashMap::new()),
        })
    }

    fn port(&self) -> HANDLE {
        self.port.as_raw_handle() as HANDLE
    }

    /// Registers `handle`, reported with `token`. The handle must stay open until
    /// [`delete`](Self::delete), and have `SYNCHRONIZE` access.
    ///
    /// # Errors
    /// [`io::ErrorKind::AlreadyExists`] if `handle` is registered already; the OS error of
    /// `RegisterWaitForSingleObject` otherwise.
    pub(crate) fn add(
        &self,
        handle: impl AsHandle,
        token: u64,
        interest: Interest,
    ) -> io::Result<()> {
        let raw = handle.as_handle().as_raw_handle() as HANDLE;
        let key = raw as usize;
        let mut registrations = lock(&self.registrations);
        if registrations.contains_key(&key) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("handle {key:#x} is already registered with this poller"),
            ));
        }
        let context = Box::new(Context {
            port: self.port(),
            token,
        });
        let flags = WT_EXECUTEINWAITTHREAD
            | match interest {
                Interest::Readable => 0,
                Interest::ReadableOrHangUp => WT_EXECUTEONLYONCE,
            };
        let mut wait: HANDLE = core::ptr::null_mut();
        // SAFETY: `raw` is a live handle (borrowed for the call; the caller keeps it open
        // until `delete`); `wait` is a valid out pointer; the context is the boxed `Context`,
        // which outlives every callback (it is freed by `Registration::end`).
        let ok = unsafe {
            RegisterWaitForSingleObject(
                &mut wait,
                raw,
                Some(fired),
                (&raw const *context).cast(),
                INFINITE,
                flags,
            )
        };
        if ok == 0 {
            return Err(with_op(
                format_args!("RegisterWaitForSingleObject on handle {key:#x}"),
                &io::Error::last_os_error(),
            ));
        }
        registrations.insert(key, Registration { wait, context });
        Ok(())
    }

    /// Removes `handle`'s registration (found by handle value, like epoll): once this returns,
    /// its callback will not run again. Tokens it queued before may still be reported by a
    /// later [`wait`](Self::wait): callers tolerate stale tokens. Blocks while the callback
    /// runs (it only posts, so briefly).
    ///
    /// # Errors
    /// [`io::ErrorKind::NotFound`] if `handle` is not registered; the OS error of
    /// `UnregisterWaitEx` otherwise.
    pub(crate) fn delete(&self, handle: impl AsHandle) -> io::Result<()> {
        let key = handle.as_handle().as_raw_handle() as usize;
        let registration = lock(&self.registrations).remove(&key).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("handle {key:#x} is not registered with this poller"),
            )
        })?;
        // Outside the lock: other registrations may come and go while this one ends.
        registration.end()
    }

    /// Queues `token` as if a registration fired (wakes a thread waiting in
    /// [`wait`](Self::wait)). The server's workers do not use it yet: their inbox is a doorbell
    /// on every OS (one thread-pool hop more on Windows, only when a connection is handed over).
    ///
    /// # Errors
    /// The OS error of `PostQueuedCompletionStatus` (out of memory).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn post(&self, token: u64) -> io::Result<()> {
        // SAFETY: our live port; a null OVERLAPPED is allowed (it is only passed through).
        if unsafe { PostQueuedCompletionStatus(self.port(), 0, token as usize, core::ptr::null()) }
            == 0
        {
            return Err(with_op(
                "PostQueuedCompletionStatus",
                &io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Waits until something is reported or `timeout` passes (`None`: no limit; milliseconds,
    /// rounded up), replacing `events`' contents with what was reported (at most its capacity;
    /// the rest stays queued for the next wait). Timing out is `Ok` with no events.
    ///
    /// # Errors
    /// The OS error of `GetQueuedCompletionStatusEx`.
    pub(crate) fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        events.len = 0;
        let capacity = u32::try_from(events.entries.len()).unwrap_or(u32::MAX);
        let mut removed = 0u32;
        // SAFETY: our live port; `entries` is writable for `capacity` entries; `removed` is a
        // valid out pointer; not alertable (no APCs run in here).
        let ok = unsafe {
            GetQueuedCompletionStatusEx(
                self.port(),
                events.entries.as_mut_ptr(),
                capacity,
                &mut removed,
                millis(timeout),
                0,
            )
        };
        if ok == 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(WAIT_TIMEOUT as i32) {
                return Ok(());
            }
            return Err(with_op("GetQueuedCompletionStatusEx", &e));
        }
        events.len = (removed as usize).min(events.entries.len());
        Ok(())
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        let registrations: Vec<Registration> =
            lock(&self.registrations).drain().map(|(_, r)| r).collect();
        let mut all_ended = true;
        for registration in registrations {
            all_ended &= registration.end().is_ok();
        }
        if all_ended {
            // SAFETY: `self.port` is dropped once, here, and not used afterwards; no callback
            // can post to it any more (every registration ended).
            unsafe { ManuallyDrop::drop(&mut self.port) };
        }
        // Else a callback may still post to the port: its handle stays open (leaked), so that
        // the value is not reused under it. Short of a broken OS this never happens.
    }
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller")
            .field("port", &*self.port)
            .field("registrations", &lock(&self.registrations).len())
            .finish()
    }
}

/// What one [`Poller::wait`] found.
pub(crate) struct Events {
    /// Room for one wait's entries, reserved up front.
    entries: Box<[OVERLAPPED_ENTRY]>,
    /// How many of `entries` the last wait filled.
    len: usize,
}

// SAFETY: the entries' OVERLAPPED pointers are always null here (nothing but posted tokens
// reaches the port) and are never dereferenced; the rest is plain integers.
unsafe impl Send for Events {}

impl Events {
    /// Room for `capacity` events per wait (at least one), reserved now.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Events {
            entries: vec![OVERLAPPED_ENTRY::default(); capacity.max(1)].into_boxed_slice(),
            len: 0,
        }
    }

    /// The tokens the last wait reported.
    #[inline]
    pub(crate) fn tokens(&self) -> impl Iterator<Item = u64> + '_ {
        self.entries[..self.len]
            .iter()
            .map(|e| e.lpCompletionKey as u64)
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("ready", &self.len)
            .field("capacity", &self.entries.len())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `e` with `op` named in its message, its kind kept.
fn with_op(op: impl std::fmt::Display, e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{op} failed: {e}"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::io::Read;
    use std::os::windows::io::BorrowedHandle;
    use std::process::{Command, Stdio};
    use std::sync::Arc;
    use std::time::Instant;

    use ferry_notify::Doorbell;
    use windows_sys::Win32::Foundation::WAIT_OBJECT_0;
    use windows_sys::Win32::System::Threading::{CreateEventW, SetEvent, WaitForSingleObject};

    use super::*;

    /// Collects tokens until `want` of them came or 10 s passed, then waits `quiet` more and
    /// adds whatever else comes (which the caller expects to be nothing).
    fn collect(poller: &Poller, events: &mut Events, want: usize, quiet: Duration) -> Vec<u64> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while got.len() < want {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            poller.wait(events, Some(left)).expect("wait");
            got.extend(events.tokens());
        }
        poller.wait(events, Some(quiet)).expect("wait");
        got.extend(events.tokens());
        got
    }

    /// A manual-reset, non-signalled, unnamed event.
    fn manual_reset_event() -> OwnedHandle {
        // SAFETY: null attributes and name; nothing is retained.
        let raw = unsafe { CreateEventW(core::ptr::null(), 1, 0, core::ptr::null()) };
        // SAFETY: `raw` was just returned by CreateEventW on this thread.
        unsafe { owned(raw) }.expect("CreateEventW")
    }

    fn set(event: BorrowedHandle<'_>) {
        // SAFETY: a live event handle, borrowed for the call.
        assert_ne!(unsafe { SetEvent(event.as_raw_handle() as HANDLE) }, 0);
    }

    /// Whether `handle` is signalled now (for an auto-reset event this consumes the signal).
    fn signalled(handle: BorrowedHandle<'_>) -> bool {
        // SAFETY: a live waitable handle, borrowed for the call; a zero timeout only polls.
        unsafe { WaitForSingleObject(handle.as_raw_handle() as HANDLE, 0) == WAIT_OBJECT_0 }
    }

    #[test]
    fn the_poller_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        fn sendable<T: Send>() {}
        shareable::<Poller>();
        sendable::<Events>();
    }

    #[test]
    fn a_thousand_doorbells_report_exactly_the_signalled_ones_with_their_tokens() {
        const N: usize = 1000;
        const BASE: u64 = 1 << 40;
        let poller = Poller::new().expect("poller");
        let bells: Vec<Doorbell> = (0..N)
            .map(|_| Doorbell::new_unnamed().expect("doorbell"))
            .collect();
        for (i, bell) in bells.iter().enumerate() {
            poller
                .add(bell, BASE + i as u64, Interest::Readable)
                .expect("add");
        }
        let chosen: BTreeSet<usize> = (0..N).filter(|i| i % 7 == 3 || *i == N - 1).collect();
        let started = Instant::now();
        for &i in &chosen {
            bells[i].ring().expect("ring");
        }
        let mut events = Events::with_capacity(64);
        let got = collect(
            &poller,
            &mut events,
            chosen.len(),
            Duration::from_millis(200),
        );
        let took = started.elapsed();
        let want: Vec<u64> = chosen.iter().map(|&i| BASE + i as u64).collect();
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            want,
            "{} reported for {} signalled (after {took:?})",
            got.len(),
            chosen.len()
        );
        // The waits consumed the signals: the doorbells are reset.
        assert!(chosen.iter().all(|&i| !signalled(bells[i].as_handle())));
        for bell in &bells {
            poller.delete(bell).expect("delete");
        }
    }

    #[test]
    fn a_repeating_registration_reports_every_signal() {
        let poller = Poller::new().expect("poller");
        let bell = Doorbell::new_unnamed().expect("doorbell");
        poller.add(&bell, 5, Interest::Readable).expect("add");
        let mut events = Events::with_capacity(8);
        for round in 0..3 {
            bell.ring().expect("ring");
            let got = collect(&poller, &mut events, 1, Duration::from_millis(50));
            assert_eq!(got, [5], "round {round}");
        }
        poller.delete(&bell).expect("delete");
    }

    #[test]
    fn a_once_registration_reports_a_handle_that_stays_signalled_once() {
        let poller = Poller::new().expect("poller");
        let event = manual_reset_event();
        poller
            .add(&event, 9, Interest::ReadableOrHangUp)
            .expect("add");
        let mut events = Events::with_capacity(8);
        poller
            .wait(&mut events, Some(Duration::from_millis(50)))
            .expect("wait");
        assert_eq!(events.tokens().count(), 0, "reported before it was set");
        set(event.as_handle());
        let got = collect(&poller, &mut events, 1, Duration::from_millis(300));
        assert_eq!(got, [9]);
        assert!(signalled(event.as_handle()), "the event stays set");
        poller.delete(&event).expect("delete");
    }

    #[test]
    fn after_delete_a_signal_is_not_reported_and_not_consumed() {
        let poller = Poller::new().expect("poller");
        let bell = Doorbell::new_unnamed().expect("doorbell");
        let mut events = Events::with_capacity(8);
        poller.add(&bell, 1, Interest::Readable).expect("add");
        poller.delete(&bell).expect("delete");
        bell.ring().expect("ring");
        poller
            .wait(&mut events, Some(Duration::from_millis(100)))
            .expect("wait");
        assert_eq!(events.tokens().count(), 0);
        // Nobody waits on it any more: the signal is still there.
        assert!(signalled(bell.as_handle()));
        // And the handle can be registered again, with another token.
        poller.add(&bell, 2, Interest::Readable).expect("add again");
        bell.ring().expect("ring");
        assert_eq!(
            collect(&poller, &mut events, 1, Duration::from_millis(50)),
            [2]
        );
    }

    #[test]
    fn deleting_or_adding_twice_is_an_error_not_a_panic() {
        let poller = Poller::new().expect("poller");
        let bell = Doorbell::new_unnamed().expect("doorbell");
        let err = poller.delete(&bell).expect_err("never registered");
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        assert!(err.to_string().contains("not registered"), "{err}");
        poller.add(&bell, 1, Interest::Readable).expect("add");
        let err = poller
            .add(&bell, 2, Interest::Readable)
            .expect_err("registered twice");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
        poller.delete(&bell).expect("delete");
        let err = poller.delete(&bell).expect_err("deleted already");
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    }

    #[test]
    fn a_post_is_reported_and_wakes_a_blocked_wait() {
        let poller = Arc::new(Poller::new().expect("poller"));
        let mut events = Events::with_capacity(8);
        poller.post(u64::MAX).expect("post");
        poller
            .wait(&mut events, Some(Duration::ZERO))
            .expect("wait");
        assert_eq!(events.tokens().collect::<Vec<_>>(), [u64::MAX]);

        let p = poller.clone();
        let waiter = std::thread::spawn(move || {
            let mut events = Events::with_capacity(8);
            let started = Instant::now();
            p.wait(&mut events, None).expect("wait");
            (events.tokens().collect::<Vec<_>>(), started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(50));
        poller.post(77).expect("post");
        let (got, took) = waiter.join().expect("waiter");
        assert_eq!(got, [77]);
        assert!(took < Duration::from_secs(5), "woken after {took:?}");
    }

    #[test]
    fn a_wait_that_times_out_is_ok_and_empties_the_events() {
        let poller = Poller::new().expect("poller");
        let mut events = Events::with_capacity(4);
        poller.post(3).expect("post");
        poller.wait(&mut events, None).expect("wait");
        assert_eq!(events.tokens().count(), 1);
        let started = Instant::now();
        poller
            .wait(&mut events, Some(Duration::from_millis(50)))
            .expect("a timeout is not an error");
        let took = started.elapsed();
        assert_eq!(
            events.tokens().count(),
            0,
            "the last wait's tokens are gone"
        );
        // Millisecond timers may end a wait a tick early.
        assert!(took >= Duration::from_millis(40), "returned after {took:?}");
    }

    #[test]
    fn a_wait_takes_at_most_the_capacity_and_leaves_the_rest_queued() {
        let poller = Poller::new().expect("poller");
        let mut events = Events::with_capacity(2);
        for t in 0..5 {
            poller.post(t).expect("post");
        }
        let mut got = Vec::new();
        for want in [2, 2, 1] {
            poller
                .wait(&mut events, Some(Duration::ZERO))
                .expect("wait");
            assert_eq!(events.tokens().count(), want);
            got.extend(events.tokens());
        }
        assert_eq!(got, [0, 1, 2, 3, 4], "a port is first in, first out");
    }

    #[test]
    fn dropping_the_poller_ends_every_registration() {
        let bells: Vec<Doorbell> = (0..100)
            .map(|_| Doorbell::new_unnamed().expect("doorbell"))
            .collect();
        let poller = Poller::new().expect("poller");
        for (i, bell) in bells.iter().enumerate() {
            poller.add(bell, i as u64, Interest::Readable).expect("add");
        }
        // Signals racing with the drop: callbacks may be running while it unregisters.
        for bell in &bells[..50] {
            bell.ring().expect("ring");
        }
        drop(poller);
        for bell in &bells {
            bell.ring().expect("ring");
        }
        std::thread::sleep(Duration::from_millis(50));
        // Nothing waits on the doorbells any more: every signal stays.
        assert!(bells.iter().all(|b| signalled(b.as_handle())));
    }

    /// Environment variable that makes [`child_waits_for_stdin_to_close`] block.
    const CHILD_ENV: &str = "FERRY_POLLER_TEST_CHILD";

    /// Not a test: the child of [`a_process_handle_is_reported_once_when_the_process_exits`].
    /// Blocks until its stdin closes, then exits.
    #[test]
    #[ignore = "child process entry point, run by a_process_handle_is_reported_once_when_the_process_exits"]
    fn child_waits_for_stdin_to_close() {
        if std::env::var_os(CHILD_ENV).is_some() {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        }
    }

    #[test]
    fn a_process_handle_is_reported_once_when_the_process_exits() {
        let mut child = Command::new(std::env::current_exe().expect("current_exe"))
            .args([
                "--exact",
                "windows::poller::tests::child_waits_for_stdin_to_close",
                "--ignored",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn the child");
        let poller = Poller::new().expect("poller");
        poller
            .add(&child, 42, Interest::ReadableOrHangUp)
            .expect("add the process handle");
        let mut events = Events::with_capacity(4);
        poller
            .wait(&mut events, Some(Duration::from_millis(100)))
            .expect("wait");
        assert_eq!(events.tokens().count(), 0, "reported while the child runs");
        drop(child.stdin.take());
        let started = Instant::now();
        let got = collect(&poller, &mut events, 1, Duration::from_millis(100));
        let took = started.elapsed();
        assert_eq!(got, [42], "after {took:?}");
        let status = child.wait().expect("child exit");
        assert!(status.success(), "{status}");
        poller.delete(&child).expect("delete");
    }

    #[test]
    fn a_hang_up_watch_on_a_control_pipe_is_reported_when_the_client_leaves() {
        use crate::windows::pipe::{HangupWatch, PipeListener, connect};
        let service = format!("unit-poller-watch-{}", std::process::id());
        let listener = PipeListener::bind(&service).expect("bind");
        let client = connect(&service, Duration::from_secs(5)).expect("connect");
        let server = listener
            .accept(Some(Duration::from_secs(5)))
            .expect("accept")
            .expect("not stopped");
        let watch = HangupWatch::start(Arc::new(server)).expect("watch");
        let poller = Poller::new().expect("poller");
        poller
            .add(&watch, 11, Interest::ReadableOrHangUp)
            .expect("add the watch");
        let mut events = Events::with_capacity(4);
        poller
            .wait(&mut events, Some(Duration::from_millis(100)))
            .expect("wait");
        assert_eq!(
            events.tokens().count(),
            0,
            "reported while the client is there"
        );
        drop(client);
        let got = collect(&poller, &mut events, 1, Duration::from_millis(100));
        assert_eq!(got, [11]);
        assert!(watch.hung_up());
        poller.delete(&watch).expect("delete");
    }
}
