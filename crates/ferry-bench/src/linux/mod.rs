//! What `ferry-bench` does the Linux way: pinning, the CPU a thread runs on, the shared clock
//! and memory readings (rustix, `/proc`); the Unix-domain socket peer; the iceoryx2 peer.

#[cfg(feature = "iceoryx2")]
pub mod iox;

use std::fs::File;
use std::os::fd::AsFd as _;
use std::os::unix::net::{UnixListener, UnixStream};

use crate::measure;
use crate::opts::Opts;
use crate::wire::{self, Stream};

/// The `serve` kind of the OS's local stream peer.
pub const LOCAL_STREAM: &str = "uds";

/// The client transports that connect to a local stream server: ours and Node.js's.
pub const LOCAL_PEERS: &[&str] = &["uds", "node"];

/// Pins the calling process to CPU `cpu`.
pub fn pin(cpu: usize) -> Result<(), String> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set)
        .map_err(|e| format!("pinning to CPU {cpu} failed: {e} (does the machine have it?)"))
}

/// The CPU this thread runs on now (the harness records placement with it).
pub fn current_cpu() -> usize {
    rustix::thread::sched_getcpu()
}

/// `CLOCK_MONOTONIC` in nanoseconds: the same clock in every process, so the harness can
/// subtract one process's timestamp from another's.
pub fn monotonic_ns() -> u128 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u128::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000 + u128::try_from(t.tv_nsec).unwrap_or(0)
}

/// `key=value` pairs of this process's memory, from `/proc/self/status` (kB).
pub fn memory() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    format!(
        "rss_anon_kb={} vm_rss_kb={} rss_shmem_kb={} vm_hwm_kb={}",
        field("RssAnon"),
        field("VmRSS"),
        field("RssShmem"),
        field("VmHWM")
    )
}

/// `serve uds --path P`: accept connections on a Unix-domain socket, one echo thread each.
pub fn serve_local(opts: &Opts) -> Result<(), String> {
    let path = opts.path("path")?;
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .map_err(|e| format!("binding the Unix socket {}: {e}", path.display()))?;
    println!(
        "ready t_ns={} path={}",
        measure::monotonic_ns(),
        path.display()
    );
    std::thread::spawn(|| measure::serve_stdin(String::new));
    for stream in listener.incoming() {
        let stream = stream.map_err(|e| format!("accepting: {e}"))?;
        let w = stream.try_clone().map_err(|e| e.to_string())?;
        wire::spawn_echo((Box::new(stream), Box::new(w)));
    }
    Ok(())
}

/// Connects to the Unix socket at `--path`.
pub fn connect_local(opts: &Opts) -> Result<Stream, String> {
    let path = opts.path("path")?;
    let s =
        UnixStream::connect(&path).map_err(|e| format!("connecting to {}: {e}", path.display()))?;
    let w = s.try_clone().map_err(|e| e.to_string())?;
    Ok((Box::new(s), Box::new(w)))
}

/// This process's stdin and stdout as unbuffered files (the pipe echo child's ends).
pub fn stdio_files() -> Result<(File, File), String> {
    let stdin = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| e.to_string())?;
    let stdout = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| e.to_string())?;
    Ok((File::from(stdin), File::from(stdout)))
}
