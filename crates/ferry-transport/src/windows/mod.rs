//! Windows control plane: the counterpart of `unix` (service name → named pipe, bound pipe,
//! control frames, shared memory), tested under Wine. The crate's `Client` and `Server` use it
//! through `sys/windows.rs`.
//!
//! The pieces, and what each one guarantees:
//!
//! - [`pipe_name`]: a service name (validated as on Unix) maps to
//!   `\\.\pipe\ferry-<user SID>-<name>`, so two users' services never share a name.
//! - [`pipe`]: the server's [`PipeListener`](pipe::PipeListener) creates the first instance
//!   with `FILE_FLAG_FIRST_PIPE_INSTANCE` (whoever created the name first owns it: a squatter
//!   makes `bind` fail with [`Error::PipeSquatted`], a live server
//!   of ours with [`Error::AlreadyRunning`]),
//!   `PIPE_REJECT_REMOTE_CLIENTS`, and a DACL with one entry granting the current user's SID
//!   (no one else can open the pipe or add instances to it). Accepting is overlapped, so
//!   [`PipeListener::stop`](pipe::PipeListener::stop) ends a waiting accept at once. The
//!   client connects with `SECURITY_IDENTIFICATION` (the server may identify it, not act as
//!   it).
//! - [`identity`]: user SIDs, and the peer's process ([`PeerProcess`](identity::PeerProcess),
//!   found with `GetNamedPipeClientProcessId` / `GetNamedPipeServerProcessId`), whose token's
//!   user SID each side compares with its own or an allow-list (the analogue of the uid check
//!   on Unix). The process handle is also how a side learns, at once, that the peer exited.
//! - [`control`]: frames over the pipe with the `ferry-frame` codec (as `unix::control` does
//!   over the socket), the `Handles` frame (the server duplicates the shared memory and the
//!   doorbells into the client with `DuplicateHandle` and sends their values; the client checks
//!   each one is what it claims), and [`peer_gone`](control::peer_gone), cheap enough to poll
//!   every few milliseconds.
//! - [`pipe::HangupWatch`]: after the handshake, a pending one-byte read on the control pipe
//!   whose event fires when the peer closes, exits or (a protocol violation) writes; and
//!   [`Pipe::disconnect`](pipe::Pipe::disconnect), the server's `shutdown`, which fires the
//!   client's watch at once.
//! - `poller` (crate-private): the server workers' wait on any number of handles (doorbells,
//!   watches, process handles): an I/O completion port fed by thread-pool waits, the
//!   counterpart of `unix::poller`'s epoll.
//! - [`shm`]: a connection's memory, an unnamed pagefile-backed file mapping; nothing names it,
//!   so only the processes holding a handle can map it.
//!
//! The doorbells are `ferry_notify::Doorbell`s backed by unnamed events
//! (`Doorbell::new_unnamed`, `Doorbell::from_owned_handle`).
//!
//! What Wine cannot show: everything runs as one user there, so a peer of another user, a
//! squatter, and the DACL's effect are not exercised end to end; the allow-list comparison is
//! unit-tested with a foreign SID instead.

pub mod control;
pub mod identity;
mod overlapped;
pub mod pipe;
pub mod pipe_name;
pub(crate) mod poller;
pub mod shm;

use std::os::windows::io::{FromRawHandle, OwnedHandle, RawHandle};

use windows_sys::Win32::Foundation::{GetHandleInformation, HANDLE, INVALID_HANDLE_VALUE};

use crate::error::Error;

/// `s` as a NUL-terminated UTF-16 string.
pub(crate) fn to_wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(Some(0)).collect()
}

/// Takes ownership of a handle an API just returned, or returns the thread's last OS error if it
/// returned null or `INVALID_HANDLE_VALUE` (which APIs use for failure).
///
/// # Safety
/// `raw` must be the return value of a call that creates or opens a handle the caller owns
/// (`CreateEventW`, `CreateNamedPipeW`, `OpenProcess`, ...), made just before on this thread.
pub(crate) unsafe fn owned(raw: HANDLE) -> std::io::Result<OwnedHandle> {
    if raw.is_null() || raw == INVALID_HANDLE_VALUE {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the caller guarantees `raw` is a fresh handle it owns; it is valid (checked above).
    Ok(unsafe { OwnedHandle::from_raw_handle(raw as RawHandle) })
}

/// Takes ownership of a handle the server duplicated into this process, given the value it
/// sent (a validated `Handles` entry). The value must be open in this process; what object it
/// is, is for the caller to check (`SharedMemory::open`, `Doorbell::from_owned_handle`).
///
/// The value comes from the peer. A server that lies about it could make this process adopt a
/// handle it already owns elsewhere; but the server was identified as an accepted user's
/// process before anything was read from it, and such a process holds `PROCESS_DUP_HANDLE` on
/// this one anyway (it could close or replace any of our handles directly). The checks here and
/// in the callers catch broken or confused servers, not a hostile one of the same user.
pub(crate) fn adopt_handle(value: u64) -> Result<OwnedHandle, Error> {
    let raw = usize::try_from(value).unwrap_or(usize::MAX) as HANDLE;
    let mut flags = 0u32;
    // SAFETY: GetHandleInformation only looks the value up in this process's handle table and
    // writes `flags`; any value is allowed.
    if unsafe { GetHandleInformation(raw, &mut flags) } == 0 {
        return Err(Error::Protocol(format!(
            "the server sent handle {value:#x}, which is not open in this process"
        )));
    }
    // SAFETY: `raw` is an open handle of this process (checked above) that the server created
    // with DuplicateHandle for us to own (protocol §5.5); nothing else in this process knows
    // its value. See the function's docs for a server that lies.
    Ok(unsafe { OwnedHandle::from_raw_handle(raw as RawHandle) })
}
