//! The threads that run blocking stream handlers.
//!
//! A blocking stream handler runs off the transport's worker (so that the connection goes on
//! reading and sees the client's cancellation). Starting a thread for each stream put a thread
//! creation (stack mapping, clone, first scheduling) in front of every chat answer's first token;
//! the pool keeps threads that finished a stream waiting for the next one for [`LINGER`], so a
//! stream that starts while one is idle is handed over with one condition-variable wake-up. A
//! stream that finds no idle thread starts a new one: the pool never queues a stream behind
//! another (a stream may run for minutes), so the number of threads is the number of streams
//! running at once, which `RpcConfig::max_streams_per_connection` bounds per connection.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How long a thread with nothing to run waits for another stream before it exits.
pub(crate) const LINGER: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce() + Send>;

/// Threads for blocking stream handlers; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct StreamPool {
    state: Mutex<State>,
    work: Condvar,
}

#[derive(Default)]
struct State {
    /// Handed over, not yet taken by an idle thread (never more than `idle`).
    queue: VecDeque<Job>,
    /// Threads waiting in [`StreamPool::next`].
    idle: usize,
    /// Threads alive (running a stream or idle).
    threads: usize,
    /// The server is gone: idle threads exit now instead of after [`LINGER`].
    closed: bool,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("queued", &self.queue.len())
            .field("idle", &self.idle)
            .field("threads", &self.threads)
            .field("closed", &self.closed)
            .finish()
    }
}

impl StreamPool {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A job runs with the lock released, so a panic never poisons it with a broken state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `job` on an idle thread, or on a new one when none is idle.
    ///
    /// # Errors
    /// The OS refused a new thread; `job` was dropped unrun.
    pub(crate) fn run(
        self: &Arc<Self>,
        job: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<()> {
        let mut s = self.lock();
        if s.idle > s.queue.len() {
            s.queue.push_back(Box::new(job));
            drop(s);
            self.work.notify_one();
            return Ok(());
        }
        s.threads += 1;
        drop(s);
        let pool = self.clone();
        let spawned = std::thread::Builder::new()
            .name("ferry-rpc-stream".into())
            .spawn(move || {
                let _alive = Alive(&pool);
                job();
                while let Some(next) = pool.next() {
                    next();
                }
            });
        if spawned.is_err() {
            self.lock().threads -= 1;
        }
        spawned.map(drop)
    }

    /// Waits for the next job: `None` after [`LINGER`] without one, or once the pool closed.
    fn next(&self) -> Option<Job> {
        let mut s = self.lock();
        s.idle += 1;
        let job = loop {
            if let Some(job) = s.queue.pop_front() {
                break Some(job);
            }
            if s.closed {
                break None;
            }
            let (guard, wait) = self
                .work
                .wait_timeout(s, LINGER)
                .unwrap_or_else(|e| e.into_inner());
            s = guard;
            if wait.timed_out() && s.queue.is_empty() {
                break None;
            }
        };
        s.idle -= 1;
        job
    }

    /// Lets idle threads exit now; running streams finish, then their threads exit too.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.work.notify_all();
    }

    /// Threads alive: running a stream, or idle for less than [`LINGER`].
    #[cfg(test)]
    fn threads(&self) -> usize {
        self.lock().threads
    }
}

/// Counts a pool thread out when it ends, however it ends (a handler may panic).
struct Alive<'a>(&'a StreamPool);

impl Drop for Alive<'_> {
    fn drop(&mut self) {
        self.0.lock().threads -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Instant;

    fn wait_for(what: impl Fn() -> bool) -> bool {
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if what() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    #[test]
    fn an_idle_thread_takes_the_next_stream() {
        let pool = Arc::new(StreamPool::default());
        let (tx, rx) = mpsc::channel();
        let t = tx.clone();
        pool.run(move || t.send(std::thread::current().id()).unwrap())
            .unwrap();
        let first = rx.recv().unwrap();
        assert!(wait_for(|| pool.lock().idle == 1), "the thread went idle");
        pool.run(move || tx.send(std::thread::current().id()).unwrap())
            .unwrap();
        assert_eq!(
            rx.recv().unwrap(),
            first,
            "the idle thread ran the second job"
        );
        assert_eq!(pool.threads(), 1);
        pool.close();
        assert!(
            wait_for(|| pool.threads() == 0),
            "closing ends idle threads"
        );
    }

    #[test]
    fn a_stream_never_waits_behind_a_running_one() {
        let pool = Arc::new(StreamPool::default());
        let (release, blocked) = mpsc::channel::<()>();
        let (done, finished) = mpsc::channel();
        let d = done.clone();
        pool.run(move || {
            blocked.recv().unwrap();
            d.send(1).unwrap();
        })
        .unwrap();
        // The first job holds its thread until released; the second must run meanwhile.
        pool.run(move || done.send(2).unwrap()).unwrap();
        assert_eq!(finished.recv_timeout(Duration::from_secs(10)).unwrap(), 2);
        assert_eq!(pool.threads(), 2);
        release.send(()).unwrap();
        assert_eq!(finished.recv_timeout(Duration::from_secs(10)).unwrap(), 1);
        pool.close();
        assert!(wait_for(|| pool.threads() == 0));
    }

    #[test]
    fn a_panicking_handler_is_counted_out_and_the_pool_goes_on() {
        let pool = Arc::new(StreamPool::default());
        pool.run(|| panic!("a handler's bug")).unwrap();
        assert!(
            wait_for(|| pool.threads() == 0),
            "the panicked thread is gone"
        );
        let (tx, rx) = mpsc::channel();
        pool.run(move || tx.send(()).unwrap()).unwrap();
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        pool.close();
        assert!(wait_for(|| pool.threads() == 0));
    }
}
