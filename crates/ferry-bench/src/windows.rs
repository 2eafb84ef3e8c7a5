//! What `ferry-bench` does the Windows way: pinning, the CPU a thread runs on, the shared clock
//! and memory readings through the Windows API; the named-pipe peer.
//!
//! Under Wine (how `cargo xtask bench-gate --wine` runs it) these calls are Wine's: the memory
//! figures are those of the Linux process that hosts the Windows program (Wine's own libraries
//! included), which is what Wine's `GetProcessMemoryInfo` reports.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::windows::io::{AsHandle as _, AsRawHandle as _, FromRawHandle as _, OwnedHandle};
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{
    ERROR_PIPE_BUSY, ERROR_PIPE_CONNECTED, FALSE, HANDLE, INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Storage::FileSystem::{FILE_FLAG_FIRST_PIPE_INSTANCE, PIPE_ACCESS_DUPLEX};
use windows_sys::Win32::System::Performance::{QueryPerformanceCounter, QueryPerformanceFrequency};
use windows_sys::Win32::System::Pipes::{
    ConnectNamedPipe, CreateNamedPipeW, PIPE_READMODE_BYTE, PIPE_REJECT_REMOTE_CLIENTS,
    PIPE_TYPE_BYTE, PIPE_UNLIMITED_INSTANCES, PIPE_WAIT,
};
use windows_sys::Win32::System::ProcessStatus::{K32GetProcessMemoryInfo, PROCESS_MEMORY_COUNTERS};
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, GetCurrentProcessorNumber, SetProcessAffinityMask,
};

use crate::measure;
use crate::opts::Opts;
use crate::wire::{self, Stream};

/// The `serve` kind of the OS's local stream peer.
pub const LOCAL_STREAM: &str = "npipe";

/// The client transports that connect to a local stream server.
pub const LOCAL_PEERS: &[&str] = &["npipe"];

/// The current process's pseudo-handle (valid for as long as the process runs; not closed).
fn current_process() -> HANDLE {
    // SAFETY: no arguments, no preconditions.
    unsafe { GetCurrentProcess() }
}

/// Pins the calling process to CPU `cpu` (`SetProcessAffinityMask`).
pub fn pin(cpu: usize) -> Result<(), String> {
    let mask = 1usize
        .checked_shl(u32::try_from(cpu).unwrap_or(u32::MAX))
        .ok_or_else(|| format!("CPU {cpu} is beyond this process's affinity mask"))?;
    // SAFETY: the current process's pseudo-handle is always valid; the mask is a plain integer.
    let ok = unsafe { SetProcessAffinityMask(current_process(), mask) };
    if ok == FALSE {
        return Err(format!(
            "pinning to CPU {cpu} failed: {} (does the machine have it?)",
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// The CPU this thread runs on now (the harness records placement with it).
pub fn current_cpu() -> usize {
    // SAFETY: no arguments, no preconditions.
    unsafe { GetCurrentProcessorNumber() as usize }
}

/// The performance counter in nanoseconds: the same clock in every process of the machine, so
/// the harness can subtract one process's timestamp from another's.
pub fn monotonic_ns() -> u128 {
    let (mut count, mut frequency) = (0i64, 0i64);
    // SAFETY: both calls write one `i64` through a pointer to a live local; they cannot fail
    // on Windows XP and later.
    unsafe {
        QueryPerformanceCounter(&mut count);
    }
    // SAFETY: as above.
    unsafe {
        QueryPerformanceFrequency(&mut frequency);
    }
    let (count, frequency) = (
        u128::try_from(count).unwrap_or(0),
        u128::try_from(frequency).unwrap_or(0).max(1),
    );
    count * 1_000_000_000 / frequency
}

/// `key=value` pairs of this process's memory (KiB), from `GetProcessMemoryInfo`:
/// `pagefile_kb` (`PagefileUsage`, the commit charge: private memory), `working_set_kb`,
/// `peak_working_set_kb`. All zero if the call fails. (`PrivateUsage`, the same figure on
/// Windows, is left out: Wine 8 leaves it 0. Wine fills `PagefileUsage` with the host
/// process's `RssAnon` + `VmSwap` and the working set with its `VmRSS`.)
pub fn memory() -> String {
    let mut counters = PROCESS_MEMORY_COUNTERS {
        cb: size_of::<PROCESS_MEMORY_COUNTERS>() as u32,
        ..PROCESS_MEMORY_COUNTERS::default()
    };
    // SAFETY: `counters` is a live `PROCESS_MEMORY_COUNTERS` whose `cb` says its size; the
    // pseudo-handle of the current process is always valid.
    let ok = unsafe { K32GetProcessMemoryInfo(current_process(), &mut counters, counters.cb) };
    if ok == FALSE {
        counters = PROCESS_MEMORY_COUNTERS::default();
    }
    format!(
        "pagefile_kb={} working_set_kb={} peak_working_set_kb={}",
        counters.PagefileUsage / 1024,
        counters.WorkingSetSize / 1024,
        counters.PeakWorkingSetSize / 1024
    )
}

/// NUL-terminated UTF-16, for the `W` functions.
fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

/// One instance of the byte-mode, blocking named pipe `name`; the first one must be the first
/// instance of that name (so a stale server is noticed rather than shared).
fn pipe_instance(name: &[u16], first: bool) -> Result<OwnedHandle, String> {
    let mode = PIPE_ACCESS_DUPLEX
        | if first {
            FILE_FLAG_FIRST_PIPE_INSTANCE
        } else {
            0
        };
    // SAFETY: `name` is NUL-terminated UTF-16 that outlives the call; no security attributes
    // (the default: the creator's user and the system).
    let handle = unsafe {
        CreateNamedPipeW(
            name.as_ptr(),
            mode,
            PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS,
            PIPE_UNLIMITED_INSTANCES,
            64 << 10,
            64 << 10,
            0,
            std::ptr::null(),
        )
    };
    if handle == INVALID_HANDLE_VALUE {
        return Err(format!(
            "creating the named pipe: {}",
            io::Error::last_os_error()
        ));
    }
    // SAFETY: a valid handle that nothing else owns.
    Ok(unsafe { OwnedHandle::from_raw_handle(handle) })
}

/// `serve npipe --path \\.\pipe\NAME`: a byte-mode named pipe, one instance and one echo
/// thread per connection (the instance for the next client is created as soon as one connects).
pub fn serve_local(opts: &Opts) -> Result<(), String> {
    let path = opts.str("path")?;
    let name = wide(path);
    let mut waiting = pipe_instance(&name, true)?;
    println!("ready t_ns={} path={path}", measure::monotonic_ns());
    std::thread::spawn(|| measure::serve_stdin(String::new));
    loop {
        // SAFETY: `waiting` is a pipe instance opened for blocking I/O (no overlapped structure
        // is needed); it stays open across the call.
        let ok = unsafe { ConnectNamedPipe(waiting.as_raw_handle(), std::ptr::null_mut()) };
        if ok == FALSE {
            let e = io::Error::last_os_error();
            // A client that opened the instance between its creation and this call.
            if e.raw_os_error() != Some(ERROR_PIPE_CONNECTED as i32) {
                return Err(format!("waiting for a named-pipe client: {e}"));
            }
        }
        let connected = std::mem::replace(&mut waiting, pipe_instance(&name, false)?);
        let r = File::from(connected);
        let w = r.try_clone().map_err(|e| e.to_string())?;
        wire::spawn_echo((Box::new(r), Box::new(w)));
    }
}

/// Opens the named pipe at `--path`, waiting up to 10 s for a free instance.
pub fn connect_local(opts: &Opts) -> Result<Stream, String> {
    let path = opts.str("path")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let file = loop {
        match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => break file,
            Err(e)
                if Instant::now() < deadline
                    && (e.kind() == io::ErrorKind::NotFound
                        || e.raw_os_error() == Some(ERROR_PIPE_BUSY as i32)) =>
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(format!("opening the named pipe {path}: {e}")),
        }
    };
    let w = file.try_clone().map_err(|e| e.to_string())?;
    Ok((Box::new(file), Box::new(w)))
}

/// This process's stdin and stdout as unbuffered files (the pipe echo child's ends).
pub fn stdio_files() -> Result<(File, File), String> {
    let stdin = io::stdin()
        .as_handle()
        .try_clone_to_owned()
        .map_err(|e| e.to_string())?;
    let stdout = io::stdout()
        .as_handle()
        .try_clone_to_owned()
        .map_err(|e| e.to_string())?;
    Ok((File::from(stdin), File::from(stdout)))
}
