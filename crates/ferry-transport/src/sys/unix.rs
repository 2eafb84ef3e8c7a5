//! Unix (Linux, macOS): the control channel is a Unix-domain socket in a private per-user
//! directory; the connection's memory and doorbells travel as descriptors (`SCM_RIGHTS`) with
//! the `Welcome`; a peer is its uid (`SO_PEERCRED`; macOS: `getpeereid`); the control socket's
//! hang-up says the peer is gone.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use ferry_frame::{Header, Kind};
use ferry_notify::Doorbell;

use super::MonitorWake;
use crate::control_frame::{Fed, PartialFrame};
use crate::error::Error;
use crate::unix::control::{self, peer_cred};
use crate::unix::listener::BoundSocket;
pub(crate) use crate::unix::poller::{Events, Interest, Poller};
use crate::unix::service_dir::{self, ServicePaths};
pub(crate) use crate::unix::shm::SharedMemory;

/// Where a service's control socket lives.
pub(crate) type Endpoint = ServicePaths;

/// A user: an effective uid.
pub(crate) type UserId = u32;

/// The effective uid of this process.
pub(crate) fn current_user() -> UserId {
    rustix::process::geteuid().as_raw()
}

/// The users a server accepts by default: its own effective uid.
pub(crate) fn default_allowed_users() -> Vec<UserId> {
    vec![current_user()]
}

/// A user as messages name it: `uid 1000`.
pub(crate) fn user_text(user: &UserId) -> String {
    format!("uid {user}")
}

/// The service `name`'s paths, in `runtime_dir` or the default runtime directory.
///
/// # Errors
/// [`Error::InvalidServiceName`], [`Error::SocketPathTooLong`].
pub(crate) fn resolve(name: &str, runtime_dir: Option<&Path>) -> Result<Endpoint, Error> {
    match runtime_dir {
        Some(dir) => service_dir::resolve_in(dir, name),
        None => service_dir::resolve(name),
    }
}

/// The endpoint as logs show it: the socket's path.
pub(crate) fn endpoint_text(endpoint: &Endpoint) -> String {
    endpoint.socket.display().to_string()
}

/// Who is at the other end of a control channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Peer {
    /// Its process id.
    pub(crate) pid: i32,
    /// Its effective uid.
    pub(crate) user: UserId,
}

/// An error saying that the peer at the other end runs as a user not in `allowed`.
pub(crate) fn not_allowed(side: &'static str, peer: &Peer, allowed: &[UserId]) -> Error {
    Error::PeerNotAllowed {
        side,
        pid: peer.pid as u32,
        user: crate::UserId(peer.user),
        allowed: allowed.iter().map(|&u| crate::UserId(u)).collect(),
    }
}

/// One frame received on the control channel, with the descriptors that came with it.
#[derive(Debug)]
pub(crate) struct Incoming {
    /// The validated header.
    pub(crate) header: Header,
    /// The payload.
    pub(crate) payload: Vec<u8>,
    fds: Vec<OwnedFd>,
}

impl Incoming {
    /// A frame read without descriptors (a handshake's first frame).
    pub(crate) fn new(header: Header, payload: Vec<u8>) -> Self {
        Incoming {
            header,
            payload,
            fds: Vec::new(),
        }
    }
}

impl From<control::ControlFrame> for Incoming {
    fn from(f: control::ControlFrame) -> Self {
        Incoming {
            header: f.header,
            payload: f.payload,
            fds: f.fds,
        }
    }
}

/// One connection's control channel: a connected Unix-domain socket.
#[derive(Debug)]
pub(crate) struct Control {
    sock: UnixStream,
}

impl Control {
    /// Client side: connects to the service's socket (its directory must be private) and checks
    /// that the server runs as this user; `side` names the asking side in that error. The
    /// socket's reads and writes give up after `timeout` until [`established`](Self::established).
    ///
    /// # Errors
    /// [`Error::NotRunning`] when nobody listens; [`Error::UnsafeDirectory`];
    /// [`Error::PeerNotAllowed`]; OS errors.
    pub(crate) fn connect(
        endpoint: &Endpoint,
        timeout: Duration,
        side: &'static str,
    ) -> Result<(Control, Peer), Error> {
        service_dir::check_private_dir(&endpoint.dir).map_err(|e| match e {
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Error::NotRunning {
                    endpoint: endpoint.socket.display().to_string(),
                }
            }
            other => other,
        })?;
        let sock = UnixStream::connect(&endpoint.socket).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                Error::NotRunning {
                    endpoint: endpoint.socket.display().to_string(),
                }
            }
            _ => Error::io(format!("connecting to {}", endpoint.socket.display()), e),
        })?;
        let control = Control { sock };
        control.set_timeout(Some(timeout))?;
        let peer = control.peer()?;
        let me = current_user();
        if peer.user != me {
            return Err(not_allowed(side, &peer, &[me]));
        }
        Ok((control, peer))
    }

    /// Who is at the other end (as the kernel recorded it at connect time).
    ///
    /// # Errors
    /// OS errors.
    pub(crate) fn peer(&self) -> Result<Peer, Error> {
        let cred = peer_cred(&self.sock)?;
        Ok(Peer {
            pid: cred.pid,
            user: cred.uid,
        })
    }

    /// The peer's process id, as the kernel recorded it.
    #[allow(
        dead_code,
        reason = "the Windows acceptor names the peer with it; Unix's knows it from `identify`"
    )]
    pub(crate) fn peer_pid(&self) -> Option<i32> {
        self.peer().ok().map(|p| p.pid)
    }

    /// Server side, before anything is read from the peer: nothing more to do on Unix (the
    /// kernel's record of the peer needs no handle to it).
    ///
    /// # Errors
    /// Never on Unix.
    pub(crate) fn identify(&mut self) -> Result<Peer, Error> {
        self.peer()
    }

    /// Server side: the handshake is read without waiting from now on (the acceptor serves many
    /// at once, see `acceptor`), or, with `timeout`, by blocking reads and writes that give up
    /// after it (a metrics query answered on its own thread).
    ///
    /// # Errors
    /// OS errors.
    pub(crate) fn set_handshake_mode(&self, timeout: Option<Duration>) -> Result<(), Error> {
        self.sock
            .set_nonblocking(timeout.is_none())
            .map_err(|e| Error::io("O_NONBLOCK", e))?;
        self.set_timeout(timeout)
    }

    /// Server side, a handshake in progress: reads what has arrived of the peer's first frame
    /// into `partial`, without waiting (after [`set_handshake_mode`](Self::set_handshake_mode)
    /// with `None`). Descriptors sent with it are closed.
    ///
    /// # Errors
    /// As `PartialFrame::feed`; OS errors.
    pub(crate) fn try_recv(&self, partial: &mut PartialFrame) -> Result<Fed, Error> {
        partial.feed(control::CHANNEL, |buf| {
            control::try_recv_some(&self.sock, buf)
        })
    }

    /// Limits how long each later read and write may wait (`None`: no limit).
    ///
    /// # Errors
    /// OS errors.
    pub(crate) fn set_timeout(&self, timeout: Option<Duration>) -> Result<(), Error> {
        self.sock
            .set_read_timeout(timeout)
            .map_err(|e| Error::io("SO_RCVTIMEO", e))?;
        self.sock
            .set_write_timeout(timeout)
            .map_err(|e| Error::io("SO_SNDTIMEO", e))
    }

    /// Sends one frame.
    ///
    /// # Errors
    /// As `unix::control::send_frame`.
    pub(crate) fn send(&self, kind: Kind, id: u64, payload: &[u8]) -> Result<(), Error> {
        control::send_frame(&self.sock, kind, id, payload, &[])
    }

    /// Receives one frame (`None`: the peer hung up before one began).
    ///
    /// # Errors
    /// As `unix::control::recv_frame`.
    pub(crate) fn recv(&self) -> Result<Option<Incoming>, Error> {
        Ok(control::recv_frame(&self.sock)?.map(Incoming::from))
    }

    /// Receives one frame whose payload may be up to `max_payload` bytes.
    ///
    /// # Errors
    /// As `unix::control::recv_frame_limited`.
    pub(crate) fn recv_limited(&self, max_payload: usize) -> Result<Option<Incoming>, Error> {
        Ok(control::recv_frame_limited(&self.sock, max_payload)?.map(Incoming::from))
    }

    /// Server side: sends the `Welcome` with the connection's memory and both doorbells
    /// attached (docs/protocol.md §7.1).
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub(crate) fn send_welcome(
        &self,
        welcome: &[u8],
        mem: &SharedMemory,
        server_bell: &Doorbell,
        client_bell: &Doorbell,
    ) -> Result<(), Error> {
        control::send_frame(
            &self.sock,
            Kind::Welcome,
            0,
            welcome,
            &welcome_fds(mem.fd(), server_bell, client_bell),
        )
    }

    /// Client side: takes the connection's memory (checked to be `total` bytes) and the
    /// server's and the client's doorbells from the `Welcome` that brought them.
    ///
    /// # Errors
    /// [`Error::Protocol`] for the wrong number of descriptors; [`Error::BadSharedMemory`],
    /// [`Error::Notify`] for descriptors that are not what they should be.
    pub(crate) fn receive_connection(
        &self,
        welcome: Incoming,
        total: usize,
    ) -> Result<(SharedMemory, Doorbell, Doorbell), Error> {
        let (mem, server_bell, client_bell) = split_welcome_fds(welcome.fds)?;
        let mem = SharedMemory::open(mem, total)?;
        Ok((
            mem,
            bell_from_fds(server_bell)?,
            bell_from_fds(client_bell)?,
        ))
    }

    /// The handshake is over: no more timeouts; on the server's side the socket becomes
    /// non-blocking (its worker only checks it for a hang-up).
    ///
    /// # Errors
    /// OS errors.
    pub(crate) fn established(&mut self, server: bool) -> Result<(), Error> {
        self.set_timeout(None)?;
        if server {
            self.sock
                .set_nonblocking(true)
                .map_err(|e| Error::io("O_NONBLOCK", e))?;
        }
        Ok(())
    }

    /// Whether the peer hung up (or wrote something, which after the handshake ends the
    /// connection as well), without waiting.
    pub(crate) fn hung_up(&self) -> bool {
        use rustix::event::PollFd;
        let mut fds = [PollFd::new(&self.sock, CONTROL_EVENTS)];
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
            && control_hung_up(&self.sock)
    }

    /// What a poller watches for the peer's hang-up (with `Interest::ReadableOrHangUp`).
    pub(crate) fn watch(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// Ends the conversation: the peer sees a hang-up at once.
    pub(crate) fn shutdown(&self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }
}

/// What `poll` watches the control socket for: readable, and on Linux the peer's shutdown
/// (`POLLRDHUP`). macOS has no `POLLRDHUP`; there the peer's close makes the socket readable
/// (end of stream). Either way [`control_hung_up`] then tells a hang-up from a spurious wake.
#[cfg(target_os = "linux")]
const CONTROL_EVENTS: rustix::event::PollFlags =
    rustix::event::PollFlags::IN.union(rustix::event::PollFlags::RDHUP);
#[cfg(target_os = "macos")]
const CONTROL_EVENTS: rustix::event::PollFlags = rustix::event::PollFlags::IN;

/// For a control socket that polled readable: whether the peer is gone. Neither side sends
/// anything on it after the handshake, so a non-blocking read that does not say "try again"
/// means end of stream (or an error): the peer process exited or closed its end.
pub(crate) fn control_hung_up(control: impl AsFd) -> bool {
    let mut b = [0u8; 1];
    !matches!(
        rustix::net::recv(control, &mut b, rustix::net::RecvFlags::DONTWAIT),
        Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR)
    )
}

/// The client monitor's wait: until the control socket says the server may be gone, or the
/// doorbell rings (drained here). `Err` when waiting itself fails (the monitor stops).
pub(crate) fn wait_hangup_or_bell(control: &Control, bell: &Doorbell) -> Result<MonitorWake, ()> {
    use rustix::event::{PollFd, PollFlags};
    let mut fds = [
        PollFd::new(&control.sock, CONTROL_EVENTS),
        PollFd::new(bell, PollFlags::IN),
    ];
    match rustix::event::poll(&mut fds, None) {
        Ok(_) => {}
        Err(rustix::io::Errno::INTR) => return Ok(MonitorWake::default()),
        Err(_) => return Err(()),
    }
    let hup = fds[0].revents();
    let rang = fds[1].revents().contains(PollFlags::IN);
    if rang {
        let _ = bell.drain();
    }
    Ok(MonitorWake {
        control: hup.intersects(CONTROL_EVENTS | PollFlags::HUP | PollFlags::ERR),
        bell: rang,
    })
}

/// A bound service: its control socket (and lock file).
#[derive(Debug)]
pub(crate) struct Listener {
    bound: BoundSocket,
}

impl Listener {
    /// Binds the service's control socket.
    ///
    /// # Errors
    /// As `BoundSocket::bind`.
    pub(crate) fn bind(endpoint: Endpoint) -> Result<Self, Error> {
        let bound = BoundSocket::bind(endpoint)?;
        bound
            .listener()
            .set_nonblocking(true)
            .map_err(|e| Error::io("O_NONBLOCK on the listening socket", e))?;
        Ok(Listener { bound })
    }

    /// Where the service lives.
    pub(crate) fn endpoint(&self) -> &Endpoint {
        self.bound.paths()
    }

    /// The next client, without waiting (the listening socket is non-blocking: the acceptor
    /// waits for it in its poller, see [`watch`](Self::watch)). `None` when none is waiting, accepting failed (the failure is waited out
    /// briefly when it was for lack of descriptors, so a pending connection is not spun on) or
    /// the listener was stopped.
    pub(crate) fn accept(&self) -> Option<Control> {
        match self.bound.listener().accept() {
            Ok((sock, _)) => Some(Control { sock }),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
            Err(e) => {
                // EMFILE/ENFILE: no descriptor for the new socket. Existing connections keep
                // working; back off briefly so we do not spin on the pending connection.
                let code = e.raw_os_error();
                if code == Some(rustix::io::Errno::MFILE.raw_os_error())
                    || code == Some(rustix::io::Errno::NFILE.raw_os_error())
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                None
            }
        }
    }

    /// What the acceptor's poller watches for new clients.
    pub(crate) fn watch(&self) -> BorrowedFd<'_> {
        self.bound.listener().as_fd()
    }

    /// Stops accepting for good (the acceptor is woken by its own doorbell).
    pub(crate) fn stop(&self) {
        let _ = rustix::net::shutdown(self.bound.listener(), rustix::net::Shutdown::Both);
    }
}

/// Gives the memory the allocator keeps free back to the OS: called by a server worker when its
/// last connection closed, so that a server at rest does not hold the buffers of the traffic it
/// served (glibc keeps freed blocks in each thread's arena, and after a large block it raises
/// its mmap threshold, so 1 MiB messages' buffers stay in the heap). Once per worker going
/// idle, never on the data path. glibc only; elsewhere nothing is done.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn release_free_memory() {
    unsafe extern "C" {
        /// glibc's `malloc_trim(3)`.
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: `malloc_trim` takes no pointer and only walks the allocator's own arenas under
    // their locks; it is safe to call from any thread at any time.
    let _ = unsafe { malloc_trim(0) };
}

/// Nothing to do off glibc (see the glibc version).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn release_free_memory() {}

/// Raises the soft open-file limit to the hard limit (each connection holds 4 descriptors; 7 on
/// macOS, where a doorbell is a pipe).
#[cfg(target_os = "linux")]
pub(crate) fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        lim.current = lim.maximum;
        let _ = setrlimit(Resource::Nofile, lim);
    }
}

/// Raises the soft open-file limit as far as macOS allows (each connection holds 7
/// descriptors: a doorbell is a pipe). macOS refuses a soft limit above `OPEN_MAX` with EINVAL
/// and usually reports an unlimited hard limit, so the target is `min(OPEN_MAX, hard limit)`,
/// as its setrlimit(2) page says.
#[cfg(target_os = "macos")]
pub(crate) fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    /// `OPEN_MAX` of `<sys/syslimits.h>`.
    const OPEN_MAX: u64 = 10240;
    let mut lim = getrlimit(Resource::Nofile);
    let target = lim.maximum.map_or(OPEN_MAX, |hard| hard.min(OPEN_MAX));
    if lim.current.is_some_and(|soft| soft < target) {
        lim.current = Some(target);
        let _ = setrlimit(Resource::Nofile, lim);
    }
}

/// Descriptors one doorbell travels as (`SCM_RIGHTS`, in the `Welcome`): Linux, its eventfd;
/// macOS, its pipe's read end, then its write end.
#[cfg(target_os = "linux")]
const BELL_FDS: usize = 1;
/// Descriptors one doorbell travels as (`SCM_RIGHTS`, in the `Welcome`): Linux, its eventfd;
/// macOS, its pipe's read end, then its write end.
#[cfg(target_os = "macos")]
const BELL_FDS: usize = 2;

/// Descriptors the `Welcome` carries, in this order: the shared memory, the server's doorbell
/// ([`BELL_FDS`] of them), the client's doorbell (as many). See docs/protocol.md.
const WELCOME_FDS: usize = 1 + 2 * BELL_FDS;
const _: () = assert!(WELCOME_FDS <= crate::unix::control::MAX_FDS);

/// The descriptors a doorbell is sent as.
#[cfg(target_os = "linux")]
fn bell_fds(bell: &Doorbell) -> [BorrowedFd<'_>; BELL_FDS] {
    [bell.as_fd()]
}

/// The descriptors a doorbell is sent as: whoever waits on it needs the read end, whoever rings
/// it the write end, and the client does both with its own.
#[cfg(target_os = "macos")]
fn bell_fds(bell: &Doorbell) -> [BorrowedFd<'_>; BELL_FDS] {
    [bell.as_fd(), bell.write_fd()]
}

/// The `Welcome`'s descriptors, in wire order.
fn welcome_fds<'a>(
    mem: BorrowedFd<'a>,
    server_bell: &'a Doorbell,
    client_bell: &'a Doorbell,
) -> [BorrowedFd<'a>; WELCOME_FDS] {
    let mut fds = [mem; WELCOME_FDS];
    fds[1..=BELL_FDS].copy_from_slice(&bell_fds(server_bell));
    fds[1 + BELL_FDS..].copy_from_slice(&bell_fds(client_bell));
    fds
}

/// Splits the descriptors a `Welcome` brought into the shared memory's, the server doorbell's
/// and the client doorbell's.
///
/// # Errors
/// [`Error::Protocol`] when the server sent another number of descriptors than
/// [`WELCOME_FDS`] (they are all closed).
#[allow(clippy::type_complexity)]
fn split_welcome_fds(
    fds: Vec<OwnedFd>,
) -> Result<(OwnedFd, [OwnedFd; BELL_FDS], [OwnedFd; BELL_FDS]), Error> {
    let fds: [OwnedFd; WELCOME_FDS] = fds.try_into().map_err(|fds: Vec<OwnedFd>| {
        Error::Protocol(format!(
            "Welcome carried {} descriptors, expected {WELCOME_FDS}",
            fds.len()
        ))
    })?;
    #[cfg(target_os = "linux")]
    let [mem, server, client] = fds;
    #[cfg(target_os = "linux")]
    let (server, client) = ([server], [client]);
    #[cfg(target_os = "macos")]
    let [mem, server_read, server_write, client_read, client_write] = fds;
    #[cfg(target_os = "macos")]
    let (server, client) = ([server_read, server_write], [client_read, client_write]);
    Ok((mem, server, client))
}

/// Rebuilds a doorbell from the descriptors the peer sent for it.
///
/// # Errors
/// [`Error::Notify`] when the descriptor is not an eventfd.
#[cfg(target_os = "linux")]
fn bell_from_fds(fds: [OwnedFd; BELL_FDS]) -> Result<Doorbell, Error> {
    let [fd] = fds;
    Ok(Doorbell::from_owned_fd(fd)?)
}

/// Rebuilds a doorbell from the descriptors the peer sent for it: a pipe's read end, then its
/// write end.
///
/// # Errors
/// [`Error::Protocol`] when the two are not a read end and a write end (in that order);
/// [`Error::Notify`] when they are not pipes.
#[cfg(target_os = "macos")]
fn bell_from_fds(fds: [OwnedFd; BELL_FDS]) -> Result<Doorbell, Error> {
    use rustix::fs::{OFlags, fcntl_getfl};
    let [read, write] = fds;
    let mode = |fd: &OwnedFd| {
        fcntl_getfl(fd)
            .map(|fl| fl & OFlags::RWMODE)
            .map_err(|e| Error::io("fcntl(F_GETFL) on a doorbell descriptor", e))
    };
    if mode(&read)? != OFlags::RDONLY || mode(&write)? != OFlags::WRONLY {
        return Err(Error::Protocol(
            "a doorbell's descriptors are not a pipe's read end and write end, in that order"
                .into(),
        ));
    }
    Ok(Doorbell::from_owned_fds(read, write)?)
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

    use super::*;

    /// What the server would send: duplicates of the Welcome's descriptors.
    fn sent(mem: BorrowedFd<'_>, server: &Doorbell, client: &Doorbell) -> Vec<OwnedFd> {
        welcome_fds(mem, server, client)
            .iter()
            .map(|fd| fd.try_clone_to_owned().unwrap())
            .collect()
    }

    #[test]
    fn the_welcome_descriptors_rebuild_both_doorbells() {
        let mem = std::fs::File::open("/dev/null").unwrap();
        let (server, client) = (Doorbell::new().unwrap(), Doorbell::new().unwrap());
        let fds = sent(mem.as_fd(), &server, &client);
        assert_eq!(fds.len(), WELCOME_FDS);
        let (_mem, server_fds, client_fds) = split_welcome_fds(fds).unwrap();
        let (server_rx, client_rx) = (
            bell_from_fds(server_fds).unwrap(),
            bell_from_fds(client_fds).unwrap(),
        );
        // Each rebuilt doorbell is the same doorbell: a ring on one side is seen on the other.
        server_rx.ring().unwrap();
        assert!(server.drain().unwrap());
        assert!(!client.drain().unwrap());
        client.ring().unwrap();
        assert!(client_rx.drain().unwrap());
    }

    #[test]
    fn a_wrong_number_of_descriptors_is_a_protocol_error() {
        let mem = std::fs::File::open("/dev/null").unwrap();
        let (server, client) = (Doorbell::new().unwrap(), Doorbell::new().unwrap());
        for n in [0, 1, WELCOME_FDS - 1, WELCOME_FDS + 1] {
            let mut fds = sent(mem.as_fd(), &server, &client);
            fds.truncate(n);
            while fds.len() < n {
                fds.push(mem.as_fd().try_clone_to_owned().unwrap());
            }
            match split_welcome_fds(fds) {
                Err(Error::Protocol(m)) => assert_eq!(
                    m,
                    format!("Welcome carried {n} descriptors, expected {WELCOME_FDS}")
                ),
                other => panic!("{n} descriptors: {other:?}"),
            }
        }
    }

    #[test]
    fn a_descriptor_that_is_no_doorbell_is_refused() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let fds: [OwnedFd; BELL_FDS] =
            std::array::from_fn(|_| file.as_fd().try_clone_to_owned().unwrap());
        assert!(bell_from_fds(fds).is_err());
    }

    /// macOS: a doorbell's pipe ends must come read end first.
    #[cfg(target_os = "macos")]
    #[test]
    fn swapped_pipe_ends_are_a_protocol_error() {
        let bell = Doorbell::new().unwrap();
        let [read, write] = bell_fds(&bell).map(|fd| fd.try_clone_to_owned().unwrap());
        assert!(matches!(
            bell_from_fds([write, read]),
            Err(Error::Protocol(_))
        ));
    }
}
