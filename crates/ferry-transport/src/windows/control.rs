//! Frames over the control pipe, the `Handles` exchange, and whether the peer is gone.
//!
//! The pipe carries the handshake (`Hello` → `Welcome` + `Handles`, or `Refuse`) with the
//! `ferry-frame` codec exactly as the Unix control socket does: read 24 header bytes, validate
//! the header (with a payload limit, before allocating), read the payload, check the whole
//! frame. Then it stays open for the connection's life: it breaking, or the peer's process
//! handle being signalled, is how a side learns that the other is gone ([`peer_gone`]).
//!
//! Handles cannot ride along with a frame as descriptors do with `SCM_RIGHTS`: the server
//! duplicates them into the client ([`send_handles`]) and sends their values in a `Handles`
//! frame (`docs/protocol.md` §5.5); the client decodes it ([`recv_handles`]), adopts the
//! handles ([`ConnectionHandles::adopt`]) and checks each is what its role claims
//! (`SharedMemory::open` for the section, `Doorbell::from_owned_handle` for the events).

use std::os::windows::io::{AsHandle, BorrowedHandle, OwnedHandle};

use ferry_frame::{HandleEntry, HandleRole, Handles, Header, Kind};
use windows_sys::Win32::System::Threading::{EVENT_MODIFY_STATE, SYNCHRONIZATION_SYNCHRONIZE};

use super::adopt_handle;
use super::identity::PeerProcess;
use super::pipe::Pipe;
use super::shm::{CLIENT_ACCESS, SharedMemory};
use crate::control_frame::{self, Channel};
use crate::error::Error;

/// Largest payload accepted on the control pipe.
pub const MAX_CONTROL_PAYLOAD: usize = 1 << 20;

/// The rights a doorbell's duplicate carries: set it, wait on it.
pub const DOORBELL_ACCESS: u32 = EVENT_MODIFY_STATE | SYNCHRONIZATION_SYNCHRONIZE;

/// Sends one frame (header + payload).
///
/// # Errors
/// [`Error::Protocol`] if the frame cannot be encoded; [`Error::Closed`], [`Error::Timeout`] or
/// [`Error::Io`] from the pipe.
pub fn send_frame(
    pipe: &Pipe,
    kind: Kind,
    correlation_id: u64,
    payload: &[u8],
) -> Result<(), Error> {
    pipe.write_all(&control_frame::encode(kind, correlation_id, payload)?)
}

/// One frame received on the control pipe.
#[derive(Debug)]
pub struct ControlFrame {
    /// The validated header.
    pub header: Header,
    /// The payload bytes.
    pub payload: Vec<u8>,
}

/// Receives one frame, validating it completely (magic, version, kind, CRC, length limit).
///
/// Returns `Ok(None)` on a clean end of stream before any byte of a frame.
///
/// # Errors
/// [`Error::Protocol`] for a bad frame; [`Error::Closed`] when the peer hung up in the middle
/// of one; [`Error::Timeout`] (the pipe's timeout) or [`Error::Io`] from the pipe.
pub fn recv_frame(pipe: &Pipe) -> Result<Option<ControlFrame>, Error> {
    recv_frame_limited(pipe, MAX_CONTROL_PAYLOAD)
}

/// Like [`recv_frame`] with another limit on the payload (checked on the header, before the
/// payload is read or its buffer allocated).
///
/// # Errors
/// As [`recv_frame`].
pub fn recv_frame_limited(pipe: &Pipe, max_payload: usize) -> Result<Option<ControlFrame>, Error> {
    let channel = Channel {
        name: "control pipe",
        closed_mid_frame: "the peer closed the control pipe in the middle of a frame",
    };
    let frame = control_frame::read(channel, max_payload, |buf| pipe.read(buf))?;
    Ok(frame.map(|(header, payload)| ControlFrame { header, payload }))
}

/// A handle the server gives the client: what it is for, the handle in the server, and the
/// rights the client's duplicate gets.
#[derive(Debug, Clone, Copy)]
pub struct Grant<'a> {
    /// What the handle is for.
    pub role: HandleRole,
    /// The server's handle.
    pub handle: BorrowedHandle<'a>,
    /// The access the duplicate carries (`shm::CLIENT_ACCESS`, [`DOORBELL_ACCESS`]).
    pub access: u32,
}

/// The three grants of a connection, in the roles the client adopts them in
/// ([`ConnectionHandles::adopt`]): the section holding both rings, the server's doorbell, the
/// client's doorbell.
pub fn connection_grants<'a>(
    mem: &'a SharedMemory,
    server_bell: &'a ferry_notify::Doorbell,
    client_bell: &'a ferry_notify::Doorbell,
) -> [Grant<'a>; 3] {
    [
        Grant {
            role: HandleRole::SharedMemory,
            handle: mem.handle(),
            access: CLIENT_ACCESS,
        },
        Grant {
            role: HandleRole::ServerDoorbell,
            handle: server_bell.as_handle(),
            access: DOORBELL_ACCESS,
        },
        Grant {
            role: HandleRole::ClientDoorbell,
            handle: client_bell.as_handle(),
            access: DOORBELL_ACCESS,
        },
    ]
}

/// Server side: duplicates each grant into the client's process and sends their values in a
/// `Handles` frame. If anything fails before the frame is out, the duplicates are closed in the
/// client again, so a failed handshake leaks nothing there.
///
/// `client` must have been opened with `PeerAccess::WatchAndGrant`.
///
/// # Errors
/// [`Error::Protocol`] for a grant list the frame cannot carry (none, more than 4, a role
/// twice); [`Error::Io`] when duplicating fails; the pipe's errors when sending fails.
pub fn send_handles(
    pipe: &Pipe,
    client: &PeerProcess,
    grants: &[Grant<'_>],
) -> Result<Handles, Error> {
    if grants.is_empty() || grants.len() > Handles::MAX_HANDLES {
        return Err(Error::Protocol(format!(
            "cannot send {} handles: a Handles frame carries 1 to {}",
            grants.len(),
            Handles::MAX_HANDLES
        )));
    }
    let mut entries = Vec::with_capacity(grants.len());
    let undo = |entries: &[HandleEntry]| {
        for e in entries {
            let _ = client.close_in_peer(e.value);
        }
    };
    for g in grants {
        match client.duplicate_into(g.handle, g.access) {
            Ok(value) => entries.push(HandleEntry {
                role: g.role,
                value,
            }),
            Err(e) => {
                undo(&entries);
                return Err(e);
            }
        }
    }
    let handles = match Handles::new(&entries) {
        Ok(h) => h,
        Err(e) => {
            undo(&entries);
            return Err(Error::Protocol(format!("cannot send these handles: {e}")));
        }
    };
    let (bytes, len) = handles.to_bytes();
    if let Err(e) = send_frame(pipe, Kind::Handles, 0, &bytes[..len]) {
        undo(&entries);
        return Err(e);
    }
    Ok(handles)
}

/// Client side: receives the `Handles` frame that follows the `Welcome`, validated (count,
/// roles, values; see [`Handles::decode`]). The handles are not adopted yet.
///
/// # Errors
/// [`Error::Closed`] if the server hung up instead; [`Error::Protocol`] for another frame or a
/// malformed payload; the pipe's errors.
pub fn recv_handles(pipe: &Pipe) -> Result<Handles, Error> {
    let Some(frame) = recv_frame(pipe)? else {
        return Err(Error::Closed(
            "the server hung up before sending the connection's handles",
        ));
    };
    if frame.header.kind() != Kind::Handles {
        return Err(Error::Protocol(format!(
            "expected a Handles frame after the Welcome, got {}",
            frame.header.kind()
        )));
    }
    Handles::decode(&frame.payload).map_err(|e| Error::Protocol(format!("bad Handles frame: {e}")))
}

/// The three handles of a connection, owned by the client once adopted.
#[derive(Debug)]
pub struct ConnectionHandles {
    /// The section holding both rings (check it with `SharedMemory::open`).
    pub shared_memory: OwnedHandle,
    /// The event the server waits on (check it with `Doorbell::from_owned_handle`).
    pub server_doorbell: OwnedHandle,
    /// The event the client waits on (idem).
    pub client_doorbell: OwnedHandle,
}

impl ConnectionHandles {
    /// Adopts the handles of a validated `Handles` payload, which must list exactly the
    /// shared memory and the two doorbells, each open in this process.
    ///
    /// # Errors
    /// [`Error::Protocol`] naming the missing role, the extra handles, or a value that is not
    /// an open handle here (handles already adopted are closed again).
    pub fn adopt(handles: &Handles) -> Result<Self, Error> {
        let need = |role: HandleRole| {
            handles.get(role).ok_or_else(|| {
                Error::Protocol(format!("the Handles frame lacks the {role:?} handle"))
            })
        };
        let (mem, server, client) = (
            need(HandleRole::SharedMemory)?,
            need(HandleRole::ServerDoorbell)?,
            need(HandleRole::ClientDoorbell)?,
        );
        if handles.entries().len() != 3 {
            return Err(Error::Protocol(format!(
                "the Handles frame carries {} handles, expected 3 (shared memory, two doorbells)",
                handles.entries().len()
            )));
        }
        Ok(Self {
            shared_memory: adopt_handle(mem)?,
            server_doorbell: adopt_handle(server)?,
            client_doorbell: adopt_handle(client)?,
        })
    }
}

/// Whether the peer is gone: its process exited (its handle is signalled) or the pipe broke.
/// Two system calls, neither of which waits: cheap enough to poll every few milliseconds.
pub fn peer_gone(pipe: &Pipe, peer: &PeerProcess) -> bool {
    peer.has_exited() || pipe.is_broken()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::windows::identity::PeerAccess;
    use crate::windows::pipe::{PipeListener, connect};
    use crate::windows::shm::SharedMemory;
    use ferry_notify::Doorbell;
    use std::time::Duration;

    fn pair(tag: &str) -> (PipeListener, Pipe, Pipe) {
        let service = format!("unit-control-{tag}-{}", std::process::id());
        let listener = PipeListener::bind(&service).expect("bind");
        let client = connect(&service, Duration::from_secs(5)).expect("connect");
        let server = listener
            .accept(Some(Duration::from_secs(5)))
            .expect("accept")
            .expect("not stopped");
        server.set_timeout(Some(Duration::from_secs(5)));
        client.set_timeout(Some(Duration::from_secs(5)));
        (listener, server, client)
    }

    #[test]
    fn frames_cross_the_pipe_and_bad_ones_are_refused() {
        let (_l, server, client) = pair("frames");
        send_frame(&client, Kind::Ping, 7, b"abc").expect("send");
        let f = recv_frame(&server).expect("recv").expect("a frame");
        assert_eq!(f.header.kind(), Kind::Ping);
        assert_eq!(f.header.correlation_id(), 7);
        assert_eq!(f.payload, b"abc");
        // Over the limit: refused on the header, before the payload is read.
        send_frame(&client, Kind::Ping, 8, &[0u8; 100]).expect("send");
        let err = recv_frame_limited(&server, 10).expect_err("too large");
        assert!(matches!(err, Error::Protocol(_)), "{err}");
        // Garbage: a protocol error naming the pipe.
        let (_l, server, client) = pair("garbage");
        client.write_all(&[0xEE; 24]).expect("write");
        let err = recv_frame(&server).expect_err("garbage");
        assert!(
            err.to_string().contains("bad frame on the control pipe"),
            "{err}"
        );
        // A clean end of stream between frames, and one in the middle of a frame.
        let (_l, server, client) = pair("eof");
        drop(client);
        assert!(recv_frame(&server).expect("eof").is_none());
        let (_l, server, client) = pair("mid");
        client.write_all(&[0x46, 0x79, 1]).expect("write");
        drop(client);
        let err = recv_frame(&server).expect_err("cut short");
        assert!(matches!(err, Error::Closed(_)), "{err}");
    }

    #[test]
    fn handles_reach_the_client_and_are_checked() {
        let (_l, server, client) = pair("handles");
        let peer = server
            .peer_process(PeerAccess::WatchAndGrant)
            .expect("client process");
        let mem = SharedMemory::create(64 * 1024).expect("memory");
        let s_bell = Doorbell::new_unnamed().expect("bell");
        let c_bell = Doorbell::new_unnamed().expect("bell");
        let sent = send_handles(&server, &peer, &connection_grants(&mem, &s_bell, &c_bell))
            .expect("send handles");
        let got = recv_handles(&client).expect("recv handles");
        assert_eq!(got, sent);
        let adopted = ConnectionHandles::adopt(&got).expect("adopt");
        let their_mem = SharedMemory::open(adopted.shared_memory, 64 * 1024).expect("map");
        let their_s = Doorbell::from_owned_handle(adopted.server_doorbell).expect("event");
        let their_c = Doorbell::from_owned_handle(adopted.client_doorbell).expect("event");
        their_s.ring().expect("ring");
        assert_eq!(s_bell.drain(), Ok(true));
        c_bell.ring().expect("ring");
        assert_eq!(their_c.drain(), Ok(true));
        // SAFETY: both views are 64 KiB of live shared memory, used by this test only.
        unsafe { mem.as_ptr().write_volatile(42) };
        // SAFETY: as above.
        assert_eq!(unsafe { their_mem.as_ptr().read_volatile() }, 42);
    }

    #[test]
    fn a_wrong_handles_frame_is_a_clear_protocol_error() {
        let (_l, server, client) = pair("wrong");
        // Another kind where Handles belongs.
        send_frame(&server, Kind::Ping, 0, b"").expect("send");
        let err = recv_handles(&client).expect_err("not Handles");
        assert!(
            err.to_string().contains("expected a Handles frame"),
            "{err}"
        );
        // A value that is not open in this process.
        let bogus = Handles::new(&[
            HandleEntry {
                role: HandleRole::SharedMemory,
                value: 0x7FFF_FFF0,
            },
            HandleEntry {
                role: HandleRole::ServerDoorbell,
                value: 0x7FFF_FFF4,
            },
            HandleEntry {
                role: HandleRole::ClientDoorbell,
                value: 0x7FFF_FFF8,
            },
        ])
        .unwrap();
        let err = ConnectionHandles::adopt(&bogus).expect_err("not open");
        assert!(
            err.to_string().contains("not open in this process"),
            "{err}"
        );
        // A role missing.
        let short = Handles::new(&[HandleEntry {
            role: HandleRole::SharedMemory,
            value: 4,
        }])
        .unwrap();
        let err = ConnectionHandles::adopt(&short).expect_err("missing");
        assert!(
            err.to_string().contains("lacks the ServerDoorbell"),
            "{err}"
        );
        // A malformed payload.
        let (_l, server, client) = pair("malformed");
        send_frame(&server, Kind::Handles, 0, &[9, 0, 0, 0, 0, 0, 0, 0]).expect("send");
        let err = recv_handles(&client).expect_err("bad count");
        assert!(err.to_string().contains("bad Handles frame"), "{err}");
    }

    #[test]
    fn liveness_follows_the_pipe() {
        let (_l, server, client) = pair("alive");
        let peer = server
            .peer_process(PeerAccess::Watch)
            .expect("client process");
        assert!(!peer_gone(&server, &peer));
        drop(client);
        assert!(
            peer_gone(&server, &peer),
            "a closed pipe means the peer is gone"
        );
    }
}
