//! Frames over the Unix-domain control socket, with descriptors attached (`SCM_RIGHTS`), and the
//! peer's credentials (`SO_PEERCRED`; macOS: `getpeereid`).
//!
//! The control socket carries the handshake (`Hello` → `Welcome` + descriptors, or `Refuse`) and
//! then stays open for the connection's life: its hang-up is how each side learns, within
//! microseconds and even after `SIGKILL`, that the other is gone.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use ferry_frame::{Header, Kind};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use crate::control_frame::{self, Channel};
use crate::error::Error;

/// Most descriptors one control frame may carry (the `Welcome` carries the most: the shared
/// memory and two doorbells, one descriptor each on Linux and two each on macOS, where a
/// doorbell is a pipe).
#[cfg(target_os = "linux")]
pub const MAX_FDS: usize = 4;
/// Most descriptors one control frame may carry (the `Welcome` carries the most: the shared
/// memory and two doorbells, one descriptor each on Linux and two each on macOS, where a
/// doorbell is a pipe).
#[cfg(target_os = "macos")]
pub const MAX_FDS: usize = 5;
/// Largest payload accepted on the control socket.
pub const MAX_CONTROL_PAYLOAD: usize = 1 << 20;

/// Credentials of the process at the other end of a Unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// Process id.
    pub pid: i32,
    /// Effective user id.
    pub uid: u32,
}

/// Reads the credentials the kernel recorded for the peer of `sock` (`SO_PEERCRED`).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn peer_cred(sock: &UnixStream) -> Result<PeerCred, Error> {
    let cred =
        rustix::net::sockopt::socket_peercred(sock).map_err(|e| Error::io("SO_PEERCRED", e))?;
    Ok(PeerCred {
        pid: cred.pid.as_raw_nonzero().get(),
        uid: cred.uid.as_raw(),
    })
}

/// Reads the credentials of the peer of `sock` (macOS: `getpeereid` for the effective uid,
/// `LOCAL_PEERPID` for the pid).
#[cfg(target_os = "macos")]
pub fn peer_cred(sock: &UnixStream) -> Result<PeerCred, Error> {
    use std::os::fd::AsRawFd;
    let fd = sock.as_raw_fd();
    let (mut uid, mut gid): (libc::uid_t, libc::gid_t) = (0, 0);
    // SAFETY: `fd` is a socket descriptor owned by `sock` for the duration of the call, and
    // `uid`/`gid` are valid for writes of their types.
    if unsafe { libc::getpeereid(fd, &mut uid, &mut gid) } != 0 {
        return Err(Error::io("getpeereid", std::io::Error::last_os_error()));
    }
    let mut pid: libc::pid_t = 0;
    let mut len = std::mem::size_of::<libc::pid_t>() as libc::socklen_t;
    // SAFETY: as above; `pid` is valid for writes of `len` bytes, which `getsockopt` honours.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_LOCAL,
            libc::LOCAL_PEERPID,
            (&raw mut pid).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(Error::io("LOCAL_PEERPID", std::io::Error::last_os_error()));
    }
    Ok(PeerCred { pid, uid })
}

/// Sends one frame (header + payload) with `fds` attached.
pub fn send_frame(
    sock: &UnixStream,
    kind: Kind,
    correlation_id: u64,
    payload: &[u8],
    fds: &[BorrowedFd<'_>],
) -> Result<(), Error> {
    let buf = control_frame::encode(kind, correlation_id, payload)?;
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() {
        assert!(
            fds.len() <= MAX_FDS,
            "at most {MAX_FDS} descriptors per control frame"
        );
        let pushed = control.push(SendAncillaryMessage::ScmRights(fds));
        debug_assert!(pushed, "cmsg buffer sized for MAX_FDS");
    }
    // A peer that went away must give us EPIPE, not SIGPIPE: Linux says so per call, macOS per
    // socket.
    #[cfg(target_os = "linux")]
    let flags = SendFlags::NOSIGNAL;
    #[cfg(not(target_os = "linux"))]
    let flags = {
        rustix::net::sockopt::set_socket_nosigpipe(sock, true)
            .map_err(|e| Error::io("SO_NOSIGPIPE", e))?;
        SendFlags::empty()
    };
    let mut sent = 0;
    while sent < buf.len() {
        let iov = [IoSlice::new(&buf[sent..])];
        let n = if sent == 0 {
            rustix::net::sendmsg(sock, &iov, &mut control, flags)
        } else {
            rustix::net::sendmsg(sock, &iov, &mut SendAncillaryBuffer::default(), flags)
        };
        match n {
            Ok(0) => return Err(Error::Closed("the peer closed the control socket")),
            Ok(n) => sent += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::PIPE | rustix::io::Errno::CONNRESET) => {
                return Err(Error::Closed("the peer closed the control socket"));
            }
            Err(e) => return Err(Error::io("sending on the control socket", e)),
        }
    }
    Ok(())
}

/// One frame received on the control socket.
#[derive(Debug)]
pub struct ControlFrame {
    /// The validated header.
    pub header: Header,
    /// The payload bytes.
    pub payload: Vec<u8>,
    /// Descriptors that arrived with the frame.
    pub fds: Vec<OwnedFd>,
}

/// Receives one frame, validating it completely (magic, version, kind, CRC, length limit).
///
/// Returns `Ok(None)` on a clean end of stream before any byte of a frame.
pub fn recv_frame(sock: &UnixStream) -> Result<Option<ControlFrame>, Error> {
    recv_frame_limited(sock, MAX_CONTROL_PAYLOAD)
}

/// Like [`recv_frame`] with another limit on the payload (checked on the header, before the
/// payload is read or its buffer allocated): for the metrics reply, which may exceed
/// [`MAX_CONTROL_PAYLOAD`].
pub fn recv_frame_limited(
    sock: &UnixStream,
    max_payload: usize,
) -> Result<Option<ControlFrame>, Error> {
    let mut fds = Vec::new();
    let frame = control_frame::read(CHANNEL, max_payload, |buf| recv_some(sock, buf, &mut fds))?;
    Ok(frame.map(|(header, payload)| ControlFrame {
        header,
        payload,
        fds,
    }))
}

/// The control socket, as the errors of [`recv_frame`] name it.
pub(crate) const CHANNEL: Channel = Channel {
    name: "control socket",
    closed_mid_frame: "the peer closed the control socket in the middle of a frame",
};

/// Reads what has arrived on a non-blocking socket (`Ok(None)`: nothing yet, `Ok(Some(0))`: end
/// of stream). Descriptors that came with it are closed.
///
/// # Errors
/// [`Error::Protocol`] for more descriptors than a frame may carry; OS errors.
pub(crate) fn try_recv_some(sock: &UnixStream, buf: &mut [u8]) -> Result<Option<usize>, Error> {
    match recv_some(sock, buf, &mut Vec::new()) {
        Ok(n) => Ok(Some(n)),
        Err(Error::Timeout(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

fn recv_some(sock: &UnixStream, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> Result<usize, Error> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    // Received descriptors are close-on-exec: atomically on Linux, right after receipt on macOS
    // (which has no MSG_CMSG_CLOEXEC).
    #[cfg(target_os = "linux")]
    let flags = RecvFlags::CMSG_CLOEXEC;
    #[cfg(not(target_os = "linux"))]
    let flags = RecvFlags::empty();
    loop {
        let mut iov = [IoSliceMut::new(buf)];
        match rustix::net::recvmsg(sock.as_fd(), &mut iov, &mut control, flags) {
            Ok(msg) => {
                for m in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(rights) = m {
                        for fd in rights {
                            #[cfg(not(target_os = "linux"))]
                            let _ = rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC);
                            if fds.len() < MAX_FDS {
                                fds.push(fd);
                            } // else: dropped (closed) here, never leaked.
                        }
                    }
                }
                if msg.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
                    return Err(Error::Protocol(
                        "the peer sent more descriptors than a control frame may carry".into(),
                    ));
                }
                return Ok(msg.bytes);
            }
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) => {
                return Err(Error::Timeout(
                    sock.read_timeout().ok().flatten().unwrap_or_default(),
                ));
            }
            Err(rustix::io::Errno::CONNRESET) => return Ok(0),
            Err(e) => return Err(Error::io("receiving on the control socket", e)),
        }
    }
}
