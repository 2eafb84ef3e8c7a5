//! Windows: the control channel is a named pipe restricted to the current user
//! (`windows::pipe`); the connection's memory and doorbells are duplicated into the client and
//! named in a `Handles` frame after the `Welcome` (`windows::control`); a peer is the user SID
//! of its process's token (`windows::identity`); a pending one-byte read on the pipe
//! (`HangupWatch`) says the peer is gone.

use std::os::windows::io::{AsRawHandle, BorrowedHandle};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ferry_frame::{Header, Kind};
use ferry_notify::Doorbell;
use windows_sys::Win32::Foundation::{HANDLE, WAIT_OBJECT_0};
use windows_sys::Win32::System::Threading::{INFINITE, WaitForMultipleObjects};

use super::MonitorWake;
use crate::error::Error;
use crate::windows::control::{
    self, ConnectionHandles, connection_grants, recv_handles, send_handles,
};
use crate::windows::identity::{PeerAccess, PeerProcess, Sid};
use crate::windows::pipe::{HangupWatch, Pipe, PipeListener, connect_pipe};
use crate::windows::pipe_name;
pub(crate) use crate::windows::poller::{Events, Interest, Poller};
pub(crate) use crate::windows::shm::SharedMemory;

/// Where a service's control pipe lives.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// `\\.\pipe\ferry-<user SID>-<name>`, or with a scope, `...ferry-<SID>@<hash>-<name>`.
    pub(crate) pipe: String,
}

/// A user: the user SID of a process's token.
pub(crate) type UserId = Sid;

/// The users a server accepts by default: the user this process runs as; an empty list if its
/// token cannot be read (which would be a broken system: every peer is then refused, with an
/// error naming its SID).
pub(crate) fn default_allowed_users() -> Vec<UserId> {
    Sid::current_user().map(|me| vec![me]).unwrap_or_default()
}

/// A user as messages name it: `user S-1-5-21-...`.
pub(crate) fn user_text(user: &UserId) -> String {
    format!("user {user}")
}

/// The pipe of service `name` of the current user, scoped by `runtime_dir` if given (see
/// `ClientConfig::runtime_dir`).
///
/// # Errors
/// [`Error::InvalidServiceName`]; [`Error::Io`] if the user's SID cannot be read.
pub(crate) fn resolve(name: &str, runtime_dir: Option<&Path>) -> Result<Endpoint, Error> {
    Ok(Endpoint {
        pipe: pipe_name::resolve_scoped(&Sid::current_user()?, name, runtime_dir)?,
    })
}

/// The endpoint as logs show it: the pipe's name.
pub(crate) fn endpoint_text(endpoint: &Endpoint) -> String {
    endpoint.pipe.clone()
}

/// Who is at the other end of a control channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Peer {
    /// Its process id.
    pub(crate) pid: i32,
    /// Its user.
    pub(crate) user: UserId,
}

impl Peer {
    fn of(process: &PeerProcess) -> Peer {
        Peer {
            pid: i32::try_from(process.pid()).unwrap_or(i32::MAX),
            user: process.sid().clone(),
        }
    }
}

/// One frame received on the control channel.
#[derive(Debug)]
pub(crate) struct Incoming {
    /// The validated header.
    pub(crate) header: Header,
    /// The payload.
    pub(crate) payload: Vec<u8>,
}

impl From<control::ControlFrame> for Incoming {
    fn from(f: control::ControlFrame) -> Self {
        Incoming {
            header: f.header,
            payload: f.payload,
        }
    }
}

/// One connection's control channel: a connected pipe, the peer's process once identified,
/// and once the handshake is over, the watch that says the peer hung up.
#[derive(Debug)]
pub(crate) struct Control {
    pipe: Arc<Pipe>,
    peer: Option<PeerProcess>,
    watch: Option<HangupWatch>,
}

impl Control {
    fn new(pipe: Pipe) -> Control {
        Control {
            pipe: Arc::new(pipe),
            peer: None,
            watch: None,
        }
    }

    /// Client side: connects to the service's pipe and checks that the server's process runs
    /// as this user; `side` names the asking side in that error. Reads and writes give up after
    /// `timeout` until [`established`](Self::established).
    ///
    /// # Errors
    /// [`Error::NotRunning`] when nobody serves the pipe; [`Error::PipeSquatted`];
    /// [`Error::PeerNotAllowed`]; OS errors.
    pub(crate) fn connect(
        endpoint: &Endpoint,
        timeout: Duration,
        side: &'static str,
    ) -> Result<(Control, Peer), Error> {
        let pipe = connect_pipe(&endpoint.pipe, timeout)?;
        pipe.set_timeout(Some(timeout));
        let server = pipe.peer_process(PeerAccess::Watch)?;
        server.check_allowed(side, std::slice::from_ref(&Sid::current_user()?))?;
        let peer = Peer::of(&server);
        let mut control = Control::new(pipe);
        control.peer = Some(server);
        Ok((control, peer))
    }

    /// The peer's process id, as the pipe recorded it.
    pub(crate) fn peer_pid(&self) -> Option<i32> {
        self.pipe
            .peer_pid()
            .ok()
            .map(|pid| i32::try_from(pid).unwrap_or(i32::MAX))
    }

    /// Server side, before anything is read from the peer: opens the client's process (with
    /// the right to duplicate the connection's handles into it) and reads its user.
    ///
    /// # Errors
    /// [`Error::Closed`] if the client hung up meanwhile; [`Error::Io`] if its process cannot
    /// be opened.
    pub(crate) fn identify(&mut self) -> Result<Peer, Error> {
        let client = self.pipe.peer_process(PeerAccess::WatchAndGrant)?;
        let peer = Peer::of(&client);
        self.peer = Some(client);
        Ok(peer)
    }

    /// Limits how long each later read and write may wait (`None`: no limit).
    ///
    /// # Errors
    /// Never on Windows.
    pub(crate) fn set_timeout(&self, timeout: Option<Duration>) -> Result<(), Error> {
        self.pipe.set_timeout(timeout);
        Ok(())
    }

    /// Sends one frame.
    ///
    /// # Errors
    /// As `windows::control::send_frame`.
    pub(crate) fn send(&self, kind: Kind, id: u64, payload: &[u8]) -> Result<(), Error> {
        control::send_frame(&self.pipe, kind, id, payload)
    }

    /// Receives one frame (`None`: the peer hung up before one began).
    ///
    /// # Errors
    /// As `windows::control::recv_frame`.
    pub(crate) fn recv(&self) -> Result<Option<Incoming>, Error> {
        Ok(control::recv_frame(&self.pipe)?.map(Incoming::from))
    }

    /// Receives one frame whose payload may be up to `max_payload` bytes.
    ///
    /// # Errors
    /// As `windows::control::recv_frame_limited`.
    pub(crate) fn recv_limited(&self, max_payload: usize) -> Result<Option<Incoming>, Error> {
        Ok(control::recv_frame_limited(&self.pipe, max_payload)?.map(Incoming::from))
    }

    /// Server side: sends the `Welcome`, then duplicates the connection's memory and both
    /// doorbells into the client and names them in a `Handles` frame (docs/protocol.md §5.5).
    ///
    /// # Errors
    /// [`Error::Io`] when duplicating fails; the pipe's errors.
    pub(crate) fn send_welcome(
        &self,
        welcome: &[u8],
        mem: &SharedMemory,
        server_bell: &Doorbell,
        client_bell: &Doorbell,
    ) -> Result<(), Error> {
        let client = self.peer.as_ref().ok_or(Error::Closed(
            "the client was not identified before the Welcome",
        ))?;
        self.send(Kind::Welcome, 0, welcome)?;
        send_handles(
            &self.pipe,
            client,
            &connection_grants(mem, server_bell, client_bell),
        )?;
        Ok(())
    }

    /// Client side: receives the `Handles` frame that follows the `Welcome` and takes the
    /// connection's memory (checked to be a section of at least `total` bytes) and the server's
    /// and the client's doorbells (checked to be events).
    ///
    /// # Errors
    /// [`Error::Protocol`] for a missing or malformed `Handles` frame or a handle that is not
    /// open here; [`Error::BadSharedMemory`], [`Error::Notify`] for handles that are not what
    /// their role says.
    pub(crate) fn receive_connection(
        &self,
        welcome: Incoming,
        total: usize,
    ) -> Result<(SharedMemory, Doorbell, Doorbell), Error> {
        let _ = welcome;
        let handles = ConnectionHandles::adopt(&recv_handles(&self.pipe)?)?;
        let mem = SharedMemory::open(handles.shared_memory, total)?;
        let server_bell = Doorbell::from_owned_handle(handles.server_doorbell)?;
        let client_bell = Doorbell::from_owned_handle(handles.client_doorbell)?;
        Ok((mem, server_bell, client_bell))
    }

    /// The handshake is over: no more timeouts, and from now on a pending read watches for the
    /// peer's hang-up.
    ///
    /// # Errors
    /// [`Error::Io`] if the read cannot be started.
    pub(crate) fn established(&mut self, server: bool) -> Result<(), Error> {
        let _ = server;
        self.pipe.set_timeout(None);
        self.watch = Some(HangupWatch::start(self.pipe.clone())?);
        Ok(())
    }

    /// Whether the peer hung up (or wrote something, which after the handshake ends the
    /// connection as well), without waiting.
    pub(crate) fn hung_up(&self) -> bool {
        match &self.watch {
            Some(w) => w.hung_up(),
            None => self.pipe.is_broken(),
        }
    }

    /// What a poller watches for the peer's hang-up (with `Interest::ReadableOrHangUp`): the
    /// watch's event, signalled once the pending read completes.
    ///
    /// # Panics
    /// Before [`established`](Self::established) (a bug in this crate: every connection is
    /// established before it is watched).
    pub(crate) fn watch(&self) -> BorrowedHandle<'_> {
        self.watch
            .as_ref()
            .expect("a connection is established before it is watched")
            .event()
    }

    /// Ends the conversation: on the server's end the pipe is disconnected, so the client's
    /// watch fires at once; a client's end cannot be disconnected without closing it (its
    /// `Goodbye` travels in the ring, and its handle closes with the connection).
    pub(crate) fn shutdown(&self) {
        let _ = self.pipe.disconnect();
    }
}

/// The client monitor's wait: until the watch says the server may be gone, or the doorbell
/// rings (its auto-reset event is consumed by the wait). `Err` when waiting itself fails (the
/// monitor stops).
pub(crate) fn wait_hangup_or_bell(control: &Control, bell: &Doorbell) -> Result<MonitorWake, ()> {
    let Some(watch) = &control.watch else {
        return Err(());
    };
    let handles: [HANDLE; 2] = [
        watch.event().as_raw_handle() as HANDLE,
        bell.as_raw_handle() as HANDLE,
    ];
    // SAFETY: both handles are live for the call (borrowed from `control` and `bell`), the
    // array holds exactly the count passed.
    let r = unsafe { WaitForMultipleObjects(2, handles.as_ptr(), 0, INFINITE) };
    match r {
        x if x == WAIT_OBJECT_0 => Ok(MonitorWake {
            control: true,
            bell: false,
        }),
        x if x == WAIT_OBJECT_0 + 1 => Ok(MonitorWake {
            control: false,
            bell: true,
        }),
        _ => Err(()),
    }
}

/// A bound service: its pipe.
#[derive(Debug)]
pub(crate) struct Listener {
    pipe: PipeListener,
    endpoint: Endpoint,
}

impl Listener {
    /// Binds the service's pipe.
    ///
    /// # Errors
    /// As `PipeListener::bind_pipe`: [`Error::AlreadyRunning`], [`Error::PipeSquatted`], OS
    /// errors.
    pub(crate) fn bind(endpoint: Endpoint) -> Result<Self, Error> {
        Ok(Listener {
            pipe: PipeListener::bind_pipe(endpoint.pipe.clone())?,
            endpoint,
        })
    }

    /// Where the service lives.
    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Waits for the next client. `None` once stopped, or when accepting failed (waited out
    /// briefly, so a failing system is not spun on).
    pub(crate) fn accept(&self) -> Option<Control> {
        match self.pipe.accept(None) {
            Ok(Some(pipe)) => Some(Control::new(pipe)),
            Ok(None) => None,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(5));
                None
            }
        }
    }

    /// Wakes a thread blocked in [`accept`](Self::accept) for good.
    pub(crate) fn stop(&self) {
        self.pipe.stop();
    }
}

/// Nothing to raise on Windows: handles have no per-process soft limit.
pub(crate) fn raise_fd_limit() {}

/// Nothing to do: the Windows heap gives large freed blocks back itself.
pub(crate) fn release_free_memory() {}
