//! What the client and the server need from the operating system, behind one interface with
//! an implementation per family: Unix (Linux, macOS: a Unix-domain control socket, descriptors
//! passed with `SCM_RIGHTS`, uids) and Windows (a named pipe, handles duplicated into the
//! client, SIDs). `client/`, `server/`, `handshake/` and `link.rs` use only these items, so the data
//! path, the handshake's negotiation, reconnection and the worker loop are one code for every
//! platform.
//!
//! Each implementation provides, with the same names and signatures:
//! - [`SharedMemory`], [`Poller`], [`Events`], [`Interest`] (the per-OS modules' types);
//! - [`Endpoint`]: where a service's control channel lives ([`Endpoint::resolve`]);
//! - [`UserId`] and [`Peer`]: who is at the other end;
//! - [`Control`]: one control channel: the handshake's frames, the hand-over of the
//!   connection's memory and doorbells, and afterwards its hang-up, which is how each side
//!   learns that the other is gone;
//! - [`Listener`]: the server's bound control channel;
//! - [`wait_hangup_or_bell`]: the client monitor's wait;
//! - [`raise_fd_limit`], [`release_free_memory`].

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use self::unix::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(crate) use self::windows::*;

/// What the monitor's wait found (see [`wait_hangup_or_bell`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MonitorWake {
    /// The control channel says the peer may be gone (confirm with [`Control::hung_up`]).
    pub(crate) control: bool,
    /// The doorbell rang (and was drained by the wait).
    pub(crate) bell: bool,
}
