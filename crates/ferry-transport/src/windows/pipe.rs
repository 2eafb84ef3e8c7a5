//! The control pipe: the server's [`PipeListener`] (its instances, their security descriptor,
//! accepting), the client's [`connect`], [`Pipe`], one connected end with overlapped reads
//! and writes under a timeout, and [`HangupWatch`], which signals an event when the peer hangs
//! up after the handshake.
//!
//! Binding: the first instance is created with `FILE_FLAG_FIRST_PIPE_INSTANCE`, which fails if
//! the name exists at all. Before that, and again if the creation fails, the listener looks at
//! the existing pipe by connecting to it as a client and opening the process serving it: one of
//! ours ([`Error::AlreadyRunning`]), or someone else's, or one that refuses us access
//! ([`Error::PipeSquatted`]). That probe is an ordinary connection that hangs up before its
//! `Hello`; a live server counts it as a failed handshake. (The look comes first because Wine
//! ignores `FILE_FLAG_FIRST_PIPE_INSTANCE`; on Windows the flag closes the race between the
//! look and the creation.)
//!
//! Every instance carries a security descriptor whose DACL has a single entry: the current
//! user's SID, `FILE_ALL_ACCESS`. No other user (no `Everyone`, no anonymous logon) can open
//! the pipe or create instances of it; `PIPE_REJECT_REMOTE_CLIENTS` refuses connections from
//! other machines. The listener always keeps one instance open, so the name never lapses while
//! the server lives.
//!
//! All pipe handles are overlapped: a read, write or accept waits on an event with a timeout,
//! and a waiting accept also wakes on the listener's stop event, so [`PipeListener::stop`] ends
//! the accept loop at once. An operation that times out or is stopped is cancelled
//! (`CancelIoEx`) and reaped before the call returns, so no buffer is left in the kernel's
//! hands.

use std::cell::UnsafeCell;
use std::os::windows::io::{AsHandle, AsRawHandle, BorrowedHandle, OwnedHandle};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{
    ERROR_ACCESS_DENIED, ERROR_ALREADY_EXISTS, ERROR_BROKEN_PIPE, ERROR_FILE_NOT_FOUND,
    ERROR_IO_PENDING, ERROR_NO_DATA, ERROR_PIPE_BUSY, ERROR_PIPE_CONNECTED,
    ERROR_PIPE_NOT_CONNECTED, GENERIC_READ, GENERIC_WRITE, GetLastError, HANDLE, WAIT_OBJECT_0,
};
use windows_sys::Win32::Security::{
    ACCESS_ALLOWED_ACE, ACL, ACL_REVISION, AddAccessAllowedAce, InitializeAcl,
    InitializeSecurityDescriptor, PSECURITY_DESCRIPTOR, SECURITY_ATTRIBUTES, SECURITY_DESCRIPTOR,
    SetSecurityDescriptorDacl,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, FILE_ALL_ACCESS, FILE_FLAG_FIRST_PIPE_INSTANCE, FILE_FLAG_OVERLAPPED,
    OPEN_EXISTING, PIPE_ACCESS_DUPLEX, ReadFile, SECURITY_IDENTIFICATION, SECURITY_SQOS_PRESENT,
    WriteFile,
};
use windows_sys::Win32::System::IO::{CancelIoEx, GetOverlappedResult, OVERLAPPED};
use windows_sys::Win32::System::Pipes::{
    ConnectNamedPipe, CreateNamedPipeW, DisconnectNamedPipe, GetNamedPipeClientProcessId,
    GetNamedPipeServerProcessId, PIPE_READMODE_BYTE, PIPE_REJECT_REMOTE_CLIENTS, PIPE_TYPE_BYTE,
    PIPE_UNLIMITED_INSTANCES, PIPE_WAIT, PeekNamedPipe, WaitNamedPipeW,
};
use windows_sys::Win32::System::Threading::{SetEvent, WaitForSingleObject};

use super::identity::{PeerAccess, PeerProcess, Sid};
use super::overlapped::{Outcome, new_event, run_overlapped};
use super::{owned, pipe_name, to_wide};
use crate::error::Error;

/// Size of each instance's in and out buffers: control frames are small.
const PIPE_BUFFER: u32 = 64 * 1024;

/// `SECURITY_DESCRIPTOR_REVISION` (winnt.h); windows-sys has it only in a large feature.
const SECURITY_DESCRIPTOR_REVISION: u32 = 1;

/// Which end of the pipe this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The server's end (an instance the listener accepted a client on).
    Server,
    /// The client's end.
    Client,
}

/// One connected end of a control pipe.
#[derive(Debug)]
pub struct Pipe {
    handle: OwnedHandle,
    end: End,
    timeout: Mutex<Option<Duration>>,
}

impl Pipe {
    fn new(handle: OwnedHandle, end: End) -> Self {
        Self {
            handle,
            end,
            timeout: Mutex::new(None),
        }
    }

    /// Which end this is.
    pub fn end(&self) -> End {
        self.end
    }

    /// Limits how long each later [`read`](Self::read) and [`write_all`](Self::write_all) may
    /// wait (`None`: no limit, the default).
    pub fn set_timeout(&self, timeout: Option<Duration>) {
        *lock(&self.timeout) = timeout;
    }

    /// The limit set with [`set_timeout`](Self::set_timeout).
    pub fn timeout(&self) -> Option<Duration> {
        *lock(&self.timeout)
    }

    /// Reads at most `buf.len()` bytes; `Ok(0)` means the peer closed its end.
    ///
    /// # Errors
    /// [`Error::Timeout`] when nothing arrived within the timeout; [`Error::Io`] for other
    /// failures.
    pub fn read(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let timeout = self.timeout();
        let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        let ptr = buf.as_mut_ptr();
        let outcome = run_overlapped(self.raw(), timeout, None, |ov| {
            // SAFETY: `ptr` is valid for writes of `len` bytes (it is `buf`, borrowed for the
            // whole of `run_overlapped`, which returns only after the operation completed or
            // was cancelled and reaped); `ov` is the live OVERLAPPED of this operation.
            unsafe { ReadFile(self.raw(), ptr, len, core::ptr::null_mut(), ov) }
        })?;
        match outcome {
            Outcome::Done(n) => Ok(n as usize),
            Outcome::Failed(ERROR_BROKEN_PIPE | ERROR_PIPE_NOT_CONNECTED | ERROR_NO_DATA) => Ok(0),
            Outcome::Failed(code) => Err(Error::io(
                "reading from the control pipe",
                std::io::Error::from_raw_os_error(code as i32),
            )),
            Outcome::TimedOut | Outcome::Stopped => {
                Err(Error::Timeout(timeout.unwrap_or_default()))
            }
        }
    }

    /// Writes all of `buf`.
    ///
    /// # Errors
    /// [`Error::Closed`] when the peer closed its end; [`Error::Timeout`] when the peer does
    /// not read within the timeout; [`Error::Io`] for other failures.
    pub fn write_all(&self, mut buf: &[u8]) -> Result<(), Error> {
        let timeout = self.timeout();
        while !buf.is_empty() {
            let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
            let ptr = buf.as_ptr();
            let outcome = run_overlapped(self.raw(), timeout, None, |ov| {
                // SAFETY: `ptr` is valid for reads of `len` bytes for the whole of
                // `run_overlapped` (see `read`); `ov` is this operation's OVERLAPPED.
                unsafe { WriteFile(self.raw(), ptr, len, core::ptr::null_mut(), ov) }
            })?;
            match outcome {
                Outcome::Done(0) => return Err(Error::Closed("the peer closed the control pipe")),
                Outcome::Done(n) => buf = &buf[(n as usize).min(buf.len())..],
                Outcome::Failed(ERROR_BROKEN_PIPE | ERROR_PIPE_NOT_CONNECTED | ERROR_NO_DATA) => {
                    return Err(Error::Closed("the peer closed the control pipe"));
                }
                Outcome::Failed(code) => {
                    return Err(Error::io(
                        "writing to the control pipe",
                        std::io::Error::from_raw_os_error(code as i32),
                    ));
                }
                Outcome::TimedOut | Outcome::Stopped => {
                    return Err(Error::Timeout(timeout.unwrap_or_default()));
                }
            }
        }
        Ok(())
    }

    /// The process id of the other end, as the pipe recorded it when it connected
    /// (`GetNamedPipeClientProcessId` on the server's end, `GetNamedPipeServerProcessId` on the
    /// client's).
    ///
    /// # Errors
    /// [`Error::Io`] if the pipe does not say (it is not connected).
    pub fn peer_pid(&self) -> Result<u32, Error> {
        let mut pid = 0u32;
        let (ok, what) = match self.end {
            // SAFETY: our live pipe handle; `pid` is a valid out pointer.
            End::Server => (
                unsafe { GetNamedPipeClientProcessId(self.raw(), &mut pid) },
                "GetNamedPipeClientProcessId",
            ),
            // SAFETY: as above.
            End::Client => (
                unsafe { GetNamedPipeServerProcessId(self.raw(), &mut pid) },
                "GetNamedPipeServerProcessId",
            ),
        };
        if ok == 0 {
            return Err(Error::io(what, std::io::Error::last_os_error()));
        }
        Ok(pid)
    }

    /// Opens the process at the other end and reads its user: the server's view of a client
    /// ([`PeerAccess::WatchAndGrant`], to duplicate handles into it) or the client's view of
    /// the server ([`PeerAccess::Watch`]). Checks afterwards that the pipe is still connected,
    /// so the process opened is the one that connected (its id cannot have been reused while
    /// its end of the pipe is open).
    ///
    /// # Errors
    /// [`Error::Closed`] if the peer hung up meanwhile; [`Error::Io`] if its process cannot be
    /// opened or its token read.
    pub fn peer_process(&self, access: PeerAccess) -> Result<PeerProcess, Error> {
        let pid = self.peer_pid()?;
        let peer = PeerProcess::open(pid, access)?;
        if self.is_broken() {
            return Err(Error::Closed(
                "the peer hung up while its identity was being checked",
            ));
        }
        Ok(peer)
    }

    /// Whether the pipe is broken: the peer closed its end or exited (`PeekNamedPipe` fails,
    /// with `ERROR_BROKEN_PIPE` for a peer that is gone). One system call that never waits:
    /// cheap enough to poll every few milliseconds.
    pub fn is_broken(&self) -> bool {
        let mut avail = 0u32;
        // SAFETY: our live pipe handle; a zero-length peek with a null buffer is allowed;
        // `avail` is a valid out pointer.
        let ok = unsafe {
            PeekNamedPipe(
                self.raw(),
                core::ptr::null_mut(),
                0,
                core::ptr::null_mut(),
                &mut avail,
                core::ptr::null_mut(),
            )
        };
        // Any failure (broken, disconnected, closing) means the pipe can no longer be used.
        ok == 0
    }

    /// Ends the conversation without closing the handle, as `shutdown` does on a socket.
    ///
    /// On the server's end: `DisconnectNamedPipe`, which breaks the client's end at once (its
    /// pending and later reads fail with a broken pipe, its [`HangupWatch`] fires) and discards
    /// what it had not read; pending operations on this end fail too. Disconnecting an end
    /// whose client already left is not an error.
    ///
    /// On the client's end a pipe cannot be disconnected short of closing it: this cancels the
    /// operations pending on this end (`CancelIoEx` on the handle: a waiting
    /// [`read`](Self::read) or [`write_all`](Self::write_all) fails, this end's
    /// [`HangupWatch`] fires), and the server learns nothing until the handle is closed (drop
    /// every `Arc` of the pipe, watches included).
    ///
    /// # Errors
    /// [`Error::Io`] if `DisconnectNamedPipe` fails for another reason than the client having
    /// left.
    pub fn disconnect(&self) -> Result<(), Error> {
        match self.end {
            End::Server => {
                // SAFETY: our live pipe handle, the server's end of an instance.
                if unsafe { DisconnectNamedPipe(self.raw()) } == 0 {
                    // SAFETY: reads the calling thread's last-error value.
                    let code = unsafe { GetLastError() };
                    if code != ERROR_PIPE_NOT_CONNECTED {
                        return Err(Error::io(
                            "disconnecting the control pipe",
                            std::io::Error::from_raw_os_error(code as i32),
                        ));
                    }
                }
            }
            End::Client => {
                // SAFETY: our live pipe handle; a null OVERLAPPED cancels every operation
                // pending on it. Failing (ERROR_NOT_FOUND: nothing pending) is fine.
                unsafe { CancelIoEx(self.raw(), core::ptr::null()) };
            }
        }
        Ok(())
    }

    fn raw(&self) -> HANDLE {
        self.handle.as_raw_handle() as HANDLE
    }
}

impl AsHandle for Pipe {
    fn as_handle(&self) -> BorrowedHandle<'_> {
        self.handle.as_handle()
    }
}

/// A pending one-byte overlapped read on a control pipe, with a manual-reset event that becomes
/// signalled when the read completes: the peer closed its end, exited, or wrote something
/// (which after the handshake is a protocol violation, handled the same way: the connection
/// ends), or this end was [disconnected](Pipe::disconnect).
///
/// The Windows counterpart of polling the control socket for `EPOLLRDHUP` on Linux: register
/// [`event`](Self::event) with the server's poller (`Interest::ReadableOrHangUp`), or wait on
/// it. Start it once the handshake is over: nothing else may read from the pipe afterwards (a
/// byte would go to whichever read is pending).
///
/// The watch holds the pipe (an `Arc`), so its handle stays open while the read is pending;
/// dropping the watch cancels the read (`CancelIoEx`) and waits for the cancellation before it
/// frees the read's `OVERLAPPED` and buffer. The pipe stays usable afterwards.
pub struct HangupWatch {
    pipe: Arc<Pipe>,
    /// Manual-reset; the read's completion event.
    event: OwnedHandle,
    /// The read's OVERLAPPED and buffer, at a stable heap address the kernel writes to while
    /// the read is pending; only ever reached through raw pointers.
    io: Box<UnsafeCell<WatchIo>>,
    /// Whether a read is outstanding (it returned `ERROR_IO_PENDING`), so `drop` must cancel
    /// and reap it.
    pending: bool,
}

/// `repr(C)` with the OVERLAPPED first, so a pointer to the block is one to its OVERLAPPED.
#[repr(C)]
struct WatchIo {
    overlapped: OVERLAPPED,
    buf: [u8; 1],
}

impl WatchIo {
    /// The OVERLAPPED and the buffer of the block at `block`, as raw pointers (no reference
    /// is made: the kernel may be writing to them).
    fn parts(block: *mut WatchIo) -> (*mut OVERLAPPED, *mut u8) {
        let buf = block
            .cast::<u8>()
            .wrapping_add(core::mem::offset_of!(WatchIo, buf));
        (block.cast::<OVERLAPPED>(), buf)
    }
}

// SAFETY: the raw pointers inside (the OVERLAPPED's event handle, the boxed I/O block) are
// used by no thread but the one dropping the watch; `pipe` and `event` are Send handles.
unsafe impl Send for HangupWatch {}
// SAFETY: `&self` methods only wait on `event` (a kernel handle, safe to share); the I/O block
// is touched by `start` and `drop` only, which own the watch.
unsafe impl Sync for HangupWatch {}

impl HangupWatch {
    /// Starts the read on `pipe`. If the peer is gone already, the watch is signalled at once.
    ///
    /// # Errors
    /// [`Error::Io`] if the event cannot be created or the read fails for another reason than
    /// a broken or disconnected pipe.
    pub fn start(pipe: Arc<Pipe>) -> Result<HangupWatch, Error> {
        let event = new_event()?;
        let io = Box::new(UnsafeCell::new(WatchIo {
            overlapped: OVERLAPPED {
                hEvent: event.as_raw_handle() as HANDLE,
                ..OVERLAPPED::default()
            },
            buf: [0],
        }));
        let (ov, buf) = WatchIo::parts(io.get());
        // SAFETY: `ov` and `buf` (one byte) point into the boxed I/O block, which lives at this
        // address until `drop` has reaped the read; nothing else references it. The pipe
        // handle stays open as long as the watch holds `pipe`.
        let done = unsafe { ReadFile(pipe.raw(), buf, 1, core::ptr::null_mut(), ov) } != 0;
        let mut watch = HangupWatch {
            pipe,
            event,
            io,
            pending: false,
        };
        if done {
            // A byte was there already: completed at once.
            watch.signal();
            return Ok(watch);
        }
        // SAFETY: reads the calling thread's last-error value, set by ReadFile.
        match unsafe { GetLastError() } {
            ERROR_IO_PENDING => watch.pending = true,
            ERROR_BROKEN_PIPE | ERROR_PIPE_NOT_CONNECTED | ERROR_NO_DATA => watch.signal(),
            code => {
                return Err(Error::io(
                    "starting the hang-up watch's read on the control pipe",
                    std::io::Error::from_raw_os_error(code as i32),
                ));
            }
        }
        Ok(watch)
    }

    /// Sets the event for a read that is over without having been pending.
    fn signal(&self) {
        // SAFETY: our live event.
        unsafe { SetEvent(self.event.as_raw_handle() as HANDLE) };
    }

    /// The event to wait on: signalled once the read completed, and it stays signalled.
    pub fn event(&self) -> BorrowedHandle<'_> {
        self.event.as_handle()
    }

    /// Whether the read completed: the peer hung up (or wrote, or this end was disconnected).
    /// One system call that never waits.
    pub fn hung_up(&self) -> bool {
        // SAFETY: our live event; a zero timeout only polls.
        unsafe { WaitForSingleObject(self.event.as_raw_handle() as HANDLE, 0) == WAIT_OBJECT_0 }
    }

    /// The pipe watched.
    pub fn pipe(&self) -> &Arc<Pipe> {
        &self.pipe
    }
}

impl AsHandle for HangupWatch {
    /// The [`event`](HangupWatch::event).
    fn as_handle(&self) -> BorrowedHandle<'_> {
        self.event()
    }
}

impl Drop for HangupWatch {
    fn drop(&mut self) {
        if !self.pending {
            return;
        }
        let (ov, _) = WatchIo::parts(self.io.get());
        // SAFETY: the pipe is open (held by `self.pipe`) and `ov` is the OVERLAPPED of its
        // pending read. Failing (ERROR_NOT_FOUND: the read completed already) is fine: the
        // wait below returns at once then.
        unsafe { CancelIoEx(self.pipe.raw(), ov) };
        let mut n = 0u32;
        // SAFETY: as above; waits until the kernel is done with the OVERLAPPED and the buffer
        // (completed or cancelled), after which the box may be freed. `n` is a valid out
        // pointer. Its result does not matter: either way the read is over.
        unsafe { GetOverlappedResult(self.pipe.raw(), ov, &mut n, 1) };
    }
}

impl std::fmt::Debug for HangupWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HangupWatch")
            .field("end", &self.pipe.end())
            .field("hung_up", &self.hung_up())
            .finish()
    }
}

/// Connects to the pipe of service `service` of the current user, waiting up to `timeout`
/// while every instance is busy.
///
/// # Errors
/// As [`connect_pipe`], and [`Error::InvalidServiceName`] for a bad name.
pub fn connect(service: &str, timeout: Duration) -> Result<Pipe, Error> {
    connect_pipe(&pipe_name::resolve(service)?, timeout)
}

/// Connects to the pipe named `pipe` (`\\.\pipe\...`), waiting up to `timeout` while every
/// instance is busy. The client identifies itself only at `SECURITY_IDENTIFICATION` level: the
/// server may learn who it is, but cannot act as it.
///
/// # Errors
/// [`Error::NotRunning`] when nothing serves the name; [`Error::PipeSquatted`] when the pipe
/// refuses us access (a Ferry server of ours would grant it); [`Error::Timeout`] when every
/// instance stayed busy; [`Error::Io`] otherwise.
pub fn connect_pipe(pipe: &str, timeout: Duration) -> Result<Pipe, Error> {
    let wide = to_wide(pipe);
    let deadline = Instant::now() + timeout;
    loop {
        match open_client(&wide) {
            Ok(handle) => return Ok(Pipe::new(handle, End::Client)),
            Err(ERROR_FILE_NOT_FOUND) => {
                return Err(Error::NotRunning {
                    endpoint: pipe.to_owned(),
                });
            }
            Err(ERROR_ACCESS_DENIED) => {
                return Err(Error::PipeSquatted {
                    pipe: pipe.to_owned(),
                    why: "it refuses you access, which a Ferry server of your user never does \
                          (unless this process runs at a lower integrity level than the server)"
                        .into(),
                });
            }
            Err(ERROR_PIPE_BUSY) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Error::Timeout(timeout));
                }
                let ms = u32::try_from(left.as_millis().clamp(1, 100)).unwrap_or(100);
                // SAFETY: `wide` is NUL-terminated and outlives the call. Its result does not
                // matter: the loop tries again either way.
                unsafe { WaitNamedPipeW(wide.as_ptr(), ms) };
            }
            Err(code) => {
                return Err(Error::io(
                    format!("opening the named pipe {pipe}"),
                    std::io::Error::from_raw_os_error(code as i32),
                ));
            }
        }
    }
}

/// One `CreateFileW` on the client side; the Win32 error code on failure.
fn open_client(wide: &[u16]) -> Result<OwnedHandle, u32> {
    // SAFETY: `wide` is NUL-terminated and outlives the call; no security attributes, no
    // template.
    let raw = unsafe {
        CreateFileW(
            wide.as_ptr(),
            GENERIC_READ | GENERIC_WRITE,
            0,
            core::ptr::null(),
            OPEN_EXISTING,
            FILE_FLAG_OVERLAPPED | SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION,
            core::ptr::null_mut(),
        )
    };
    // SAFETY: `raw` was just returned by CreateFileW on this thread.
    unsafe { owned(raw) }.map_err(|e| e.raw_os_error().unwrap_or(0) as u32)
}

/// The security descriptor of every instance: a DACL with one entry, the current user.
struct PipeSecurity {
    descriptor: Box<SECURITY_DESCRIPTOR>,
    // The DACL the descriptor points to; u64 elements keep it aligned.
    _acl: Box<[u64]>,
}

// SAFETY: the descriptor's only pointer is to `_acl`, a heap block owned by this struct that is
// never written after construction; Win32 only reads both. Moving the struct moves the boxes,
// not their contents.
unsafe impl Send for PipeSecurity {}
// SAFETY: as above: shared access only ever reads.
unsafe impl Sync for PipeSecurity {}

impl std::fmt::Debug for PipeSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PipeSecurity(DACL: current user only)")
    }
}

impl PipeSecurity {
    fn for_user(sid: &Sid) -> Result<Self, Error> {
        let fail = |op: &str| {
            Error::io(
                format!("building the pipe's DACL: {op}"),
                std::io::Error::last_os_error(),
            )
        };
        let sid_words = sid.to_binary();
        // ACL header, then one ACCESS_ALLOWED_ACE whose last field (SidStart, 4 bytes) is the
        // start of the SID. A multiple of 4, as InitializeAcl requires.
        let acl_len = size_of::<ACL>() + size_of::<ACCESS_ALLOWED_ACE>() - size_of::<u32>()
            + sid.binary_len();
        let mut acl = vec![0u64; acl_len.div_ceil(8)].into_boxed_slice();
        let acl_ptr = acl.as_mut_ptr().cast::<ACL>();
        // SAFETY: `acl_ptr` points to at least `acl_len` writable, 8-byte aligned bytes.
        if unsafe { InitializeAcl(acl_ptr, acl_len as u32, ACL_REVISION) } == 0 {
            return Err(fail("InitializeAcl"));
        }
        // SAFETY: `acl_ptr` is the ACL initialized above, with room for exactly this entry;
        // `sid_words` is a valid binary SID (4-byte aligned) that AddAccessAllowedAce copies.
        if unsafe {
            AddAccessAllowedAce(
                acl_ptr,
                ACL_REVISION,
                FILE_ALL_ACCESS,
                sid_words.as_ptr().cast_mut().cast(),
            )
        } == 0
        {
            return Err(fail("AddAccessAllowedAce"));
        }
        let mut descriptor = Box::new(SECURITY_DESCRIPTOR::default());
        let sd: PSECURITY_DESCRIPTOR = (&raw mut *descriptor).cast();
        // SAFETY: `sd` points to a writable SECURITY_DESCRIPTOR.
        if unsafe { InitializeSecurityDescriptor(sd, SECURITY_DESCRIPTOR_REVISION) } == 0 {
            return Err(fail("InitializeSecurityDescriptor"));
        }
        // SAFETY: `sd` is initialized; `acl_ptr` is a valid ACL that lives as long as the
        // descriptor (both are owned by the returned struct).
        if unsafe { SetSecurityDescriptorDacl(sd, 1, acl_ptr, 0) } == 0 {
            return Err(fail("SetSecurityDescriptorDacl"));
        }
        Ok(Self {
            descriptor,
            _acl: acl,
        })
    }

    fn attributes(&self) -> SECURITY_ATTRIBUTES {
        SECURITY_ATTRIBUTES {
            nLength: size_of::<SECURITY_ATTRIBUTES>() as u32,
            lpSecurityDescriptor: (&raw const *self.descriptor).cast_mut().cast(),
            bInheritHandle: 0,
        }
    }
}

/// The server's side of a service's pipe: holds the name (one instance is always open) and
/// accepts clients.
#[derive(Debug)]
pub struct PipeListener {
    name: String,
    wide: Vec<u16>,
    security: PipeSecurity,
    /// The instance waiting for the next client (`None` only if creating it failed).
    waiting: Mutex<Option<OwnedHandle>>,
    /// Manual-reset event: set by [`stop`](Self::stop).
    stop: OwnedHandle,
}

impl PipeListener {
    /// Binds service `service` of the current user.
    ///
    /// # Errors
    /// As [`bind_pipe`](Self::bind_pipe), and [`Error::InvalidServiceName`].
    pub fn bind(service: &str) -> Result<Self, Error> {
        Self::bind_pipe(pipe_name::resolve(service)?)
    }

    /// Binds the pipe named `name` (`\\.\pipe\...`): creates its first instance, which fails if
    /// the name exists at all.
    ///
    /// # Errors
    /// [`Error::AlreadyRunning`] when a server of this user holds the name;
    /// [`Error::PipeSquatted`] when another user's process does, or the pipe refuses us;
    /// [`Error::Io`] otherwise.
    pub fn bind_pipe(name: String) -> Result<Self, Error> {
        let me = Sid::current_user()?;
        let listener = Self {
            wide: to_wide(&name),
            security: PipeSecurity::for_user(&me)?,
            waiting: Mutex::new(None),
            stop: new_event()?,
            name,
        };
        for _ in 0..4 {
            // Look first: Wine ignores FILE_FLAG_FIRST_PIPE_INSTANCE (it creates the instance
            // with FILE_OPEN_IF), so there the flag alone would let a second server share the
            // name. On Windows the flag closes the gap between this look and the creation.
            diagnose_taken(&listener.name, &me)?;
            match listener.create_instance(true) {
                Ok(h) => {
                    *lock(&listener.waiting) = Some(h);
                    return Ok(listener);
                }
                Err(e)
                    if matches!(
                        e.raw_os_error().map(|c| c as u32),
                        Some(ERROR_ACCESS_DENIED | ERROR_ALREADY_EXISTS | ERROR_PIPE_BUSY)
                    ) =>
                {
                    // The name exists: say whose it is (or bind again if it just went away).
                    diagnose_taken(&listener.name, &me)?;
                }
                Err(e) => {
                    return Err(Error::io(
                        format!("creating the named pipe {}", listener.name),
                        e,
                    ));
                }
            }
        }
        Err(Error::io(
            format!("creating the named pipe {}", listener.name),
            std::io::Error::other("the name kept appearing and vanishing while we bound it"),
        ))
    }

    /// The pipe's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn create_instance(&self, first: bool) -> std::io::Result<OwnedHandle> {
        let mut open_mode = PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED;
        if first {
            open_mode |= FILE_FLAG_FIRST_PIPE_INSTANCE;
        }
        let sa = self.security.attributes();
        // SAFETY: `self.wide` is NUL-terminated; `sa` and the descriptor and DACL it points to
        // are alive for the call (owned by `self`).
        let raw = unsafe {
            CreateNamedPipeW(
                self.wide.as_ptr(),
                open_mode,
                PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS,
                PIPE_UNLIMITED_INSTANCES,
                PIPE_BUFFER,
                PIPE_BUFFER,
                0,
                &sa,
            )
        };
        // SAFETY: `raw` was just returned by CreateNamedPipeW on this thread.
        unsafe { owned(raw) }
    }

    /// Waits for the next client, up to `timeout` (`None`: no limit). Returns `Ok(None)` once
    /// [`stop`](Self::stop) has been called (at once if it already was).
    ///
    /// The connected pipe has no timeout set; the caller identifies the client
    /// ([`Pipe::peer_process`]) before trusting anything it sends.
    ///
    /// # Errors
    /// [`Error::Timeout`] when no client came in time; [`Error::Io`] when an instance cannot be
    /// created or waiting fails.
    pub fn accept(&self, timeout: Option<Duration>) -> Result<Option<Pipe>, Error> {
        let mut waiting = lock(&self.waiting);
        loop {
            if self.is_stopped() {
                return Ok(None);
            }
            let instance = match waiting.take() {
                Some(h) => h,
                None => self
                    .create_instance(false)
                    .map_err(|e| Error::io(format!("creating an instance of {}", self.name), e))?,
            };
            let raw = instance.as_raw_handle() as HANDLE;
            let outcome = run_overlapped(
                raw,
                timeout,
                Some(self.stop.as_raw_handle() as HANDLE),
                |ov| {
                    // SAFETY: `raw` is the live instance (owned by `instance` for the whole call);
                    // `ov` is this operation's OVERLAPPED.
                    unsafe { ConnectNamedPipe(raw, ov) }
                },
            );
            let outcome = match outcome {
                Ok(o) => o,
                Err(e) => {
                    *waiting = Some(instance);
                    return Err(e);
                }
            };
            match outcome {
                Outcome::Done(_) | Outcome::Failed(ERROR_PIPE_CONNECTED) => {
                    // Keep the name held and the next client served: a fresh instance now
                    // (if that fails, the next accept tries again).
                    *waiting = self.create_instance(false).ok();
                    return Ok(Some(Pipe::new(instance, End::Server)));
                }
                Outcome::Failed(ERROR_NO_DATA) => {
                    // A client connected and left before we looked: reset the instance.
                    // SAFETY: `raw` is our live instance.
                    unsafe { DisconnectNamedPipe(raw) };
                    *waiting = Some(instance);
                }
                Outcome::Stopped => {
                    *waiting = Some(instance);
                    return Ok(None);
                }
                Outcome::TimedOut => {
                    *waiting = Some(instance);
                    return Err(Error::Timeout(timeout.unwrap_or_default()));
                }
                Outcome::Failed(code) => {
                    // Replace the instance before dropping it, so the name is never released.
                    *waiting = Some(match self.create_instance(false) {
                        Ok(fresh) => fresh,
                        Err(_) => instance,
                    });
                    return Err(Error::io(
                        format!("waiting for a client on {}", self.name),
                        std::io::Error::from_raw_os_error(code as i32),
                    ));
                }
            }
        }
    }

    /// Ends the accept loop: a waiting [`accept`](Self::accept) returns `Ok(None)` at once, and
    /// so does every later one. Connected pipes are not affected.
    pub fn stop(&self) {
        // SAFETY: `self.stop` is our live event.
        unsafe { SetEvent(self.stop.as_raw_handle() as HANDLE) };
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn is_stopped(&self) -> bool {
        // SAFETY: `self.stop` is our live event; a zero timeout only polls it.
        unsafe { WaitForSingleObject(self.stop.as_raw_handle() as HANDLE, 0) == WAIT_OBJECT_0 }
    }
}

/// Says why the pipe `name` could not be created: `Ok(())` if it no longer exists (bind again),
/// else the error naming who holds it.
fn diagnose_taken(name: &str, me: &Sid) -> Result<(), Error> {
    match open_client(&to_wide(name)) {
        Ok(handle) => {
            let pipe = Pipe::new(handle, End::Client);
            let pid = pipe.peer_pid()?;
            match PeerProcess::open(pid, PeerAccess::Watch) {
                Ok(p) if p.sid() == me => Err(Error::AlreadyRunning {
                    endpoint: name.to_owned(),
                    pid: Some(pid),
                }),
                Ok(p) => Err(Error::PipeSquatted {
                    pipe: name.to_owned(),
                    why: format!(
                        "it is served by process {pid}, which runs as {}, not as you ({me})",
                        p.sid()
                    ),
                }),
                Err(e) => Err(Error::PipeSquatted {
                    pipe: name.to_owned(),
                    why: format!(
                        "it is served by process {pid}, which you cannot inspect ({e}), so it is \
                         not yours"
                    ),
                }),
            }
        }
        Err(ERROR_FILE_NOT_FOUND) => Ok(()),
        Err(ERROR_ACCESS_DENIED) => Err(Error::PipeSquatted {
            pipe: name.to_owned(),
            why: "it exists and refuses you access, which a Ferry server of your user never does"
                .into(),
        }),
        Err(ERROR_PIPE_BUSY) => Err(Error::AlreadyRunning {
            endpoint: name.to_owned(),
            pid: None,
        }),
        Err(code) => Err(Error::io(
            format!("inspecting the existing named pipe {name}"),
            std::io::Error::from_raw_os_error(code as i32),
        )),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
