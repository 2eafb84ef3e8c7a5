//! Who is at the other end of the pipe: user SIDs, the peer's process, and the allow-list check
//! (the Windows analogue of comparing uids on Unix).
//!
//! A side learns the peer's process id from the pipe (`GetNamedPipeClientProcessId` on the
//! server, `GetNamedPipeServerProcessId` on the client), opens the process, and reads the user
//! SID of its primary token. A process id can be reused once its process has exited; opening
//! the process and *then* checking that the pipe is still connected closes that gap: the pipe
//! breaks when the process that held its other end exits, so a connected pipe means the
//! process opened is the one at the other end (unless it handed its pipe handle to another
//! process, which only a peer of an accepted user can do).
//!
//! The same [`PeerProcess`] handle then watches the peer: it is signalled the moment the
//! process exits, however it exits ([`PeerProcess::has_exited`], [`PeerProcess::wait_exit`]).
//! The server opens its client with `PROCESS_DUP_HANDLE` as well, to duplicate the connection's
//! handles into it ([`PeerProcess::duplicate_into`]).

use std::fmt;
use std::os::windows::io::{AsHandle, AsRawHandle, BorrowedHandle, OwnedHandle};
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use windows_sys::Win32::Foundation::{
    DUPLICATE_CLOSE_SOURCE, DuplicateHandle, HANDLE, WAIT_OBJECT_0, WAIT_TIMEOUT,
};
use windows_sys::Win32::Security::{
    GetLengthSid, GetTokenInformation, IsValidSid, PSID, TOKEN_QUERY, TOKEN_USER, TokenUser,
};
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, INFINITE, OpenProcess, OpenProcessToken, PROCESS_DUP_HANDLE,
    PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_SYNCHRONIZE, WaitForSingleObject,
};

use super::owned;
use crate::error::Error;

/// Most sub-authorities a SID has (`SID_MAX_SUB_AUTHORITIES`).
const MAX_SUB_AUTHORITIES: usize = 15;

/// A security identifier (a user or group): `S-1-5-21-…` in string form.
///
/// Pure data: parsed from and formatted to the standard string form, read from a token, and
/// laid out in the binary form Win32 takes ([`Sid::to_binary`]). Two SIDs are equal when all
/// their parts are, as `EqualSid` decides.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Sid {
    revision: u8,
    authority: [u8; 6],
    sub: Vec<u32>,
}

impl Sid {
    /// The user SID of this process's token (read once, then cached).
    ///
    /// # Errors
    /// [`Error::Io`] when the token cannot be read (which would be a broken system).
    pub fn current_user() -> Result<Sid, Error> {
        static ME: OnceLock<Result<Sid, (String, i32)>> = OnceLock::new();
        let got = ME.get_or_init(|| {
            // SAFETY: no preconditions; the pseudo-handle of this process needs no closing and
            // is valid for the whole call.
            let me = unsafe { GetCurrentProcess() };
            token_user_of(me).map_err(|e| match e {
                Error::Io { what, source } => (what, source.raw_os_error().unwrap_or(0)),
                other => (other.to_string(), 0),
            })
        });
        match got {
            Ok(sid) => Ok(sid.clone()),
            Err((what, code)) => Err(Error::Io {
                what: what.clone(),
                source: std::io::Error::from_raw_os_error(*code),
            }),
        }
    }

    /// The user SID of the process behind `process` (opened with at least
    /// `PROCESS_QUERY_LIMITED_INFORMATION`).
    ///
    /// # Errors
    /// [`Error::Io`] when the token cannot be opened or read.
    pub fn of_process(process: BorrowedHandle<'_>) -> Result<Sid, Error> {
        token_user_of(process.as_raw_handle() as HANDLE)
    }

    /// The binary form (what `PSID` points to), in 4-byte words so that it is aligned as Win32
    /// expects.
    pub fn to_binary(&self) -> Vec<u32> {
        let mut bytes = Vec::with_capacity(8 + 4 * self.sub.len());
        bytes.push(self.revision);
        // At most MAX_SUB_AUTHORITIES (15): fits in a byte.
        bytes.push(self.sub.len() as u8);
        bytes.extend_from_slice(&self.authority);
        for s in &self.sub {
            bytes.extend_from_slice(&s.to_le_bytes());
        }
        bytes
            .chunks_exact(4)
            .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    /// Length of the binary form in bytes.
    pub fn binary_len(&self) -> usize {
        8 + 4 * self.sub.len()
    }

    /// Reads a binary SID of `len` bytes.
    fn from_binary(bytes: &[u8]) -> Option<Sid> {
        let (&revision, rest) = bytes.split_first()?;
        let (&count, rest) = rest.split_first()?;
        let count = usize::from(count);
        if revision != 1 || count > MAX_SUB_AUTHORITIES || rest.len() != 6 + 4 * count {
            return None;
        }
        let mut authority = [0u8; 6];
        authority.copy_from_slice(&rest[..6]);
        let sub = rest[6..]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Some(Sid {
            revision,
            authority,
            sub,
        })
    }

    fn authority_value(&self) -> u64 {
        self.authority
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
    }
}

impl fmt::Display for Sid {
    /// The standard string form: `S-1-5-21-…`; an identifier authority of 2^32 or more is
    /// written in hex (`0x…`, 12 digits), as `ConvertSidToStringSidW` does.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = self.authority_value();
        write!(f, "S-{}-", self.revision)?;
        if auth >= 1 << 32 {
            write!(f, "0x{auth:012X}")?;
        } else {
            write!(f, "{auth}")?;
        }
        for s in &self.sub {
            write!(f, "-{s}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sid({self})")
    }
}

/// Why a string is not a SID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidParseError(String);

impl fmt::Display for SidParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a SID (expected `S-1-<authority>-<sub-authority>...`, at most {MAX_SUB_AUTHORITIES} sub-authorities)",
            self.0
        )
    }
}

impl std::error::Error for SidParseError {}

impl FromStr for Sid {
    type Err = SidParseError;

    /// Parses the standard string form (`S-1-5-32-544`, `S-1-0x123456789ABC-1`).
    fn from_str(text: &str) -> Result<Sid, SidParseError> {
        let bad = || SidParseError(text.chars().take(200).collect());
        let mut parts = text.split('-');
        if !matches!(parts.next(), Some("S" | "s")) {
            return Err(bad());
        }
        let revision: u8 = parts.next().and_then(|r| r.parse().ok()).ok_or_else(bad)?;
        if revision != 1 {
            return Err(bad());
        }
        let auth = parts.next().ok_or_else(bad)?;
        let auth = match auth.strip_prefix("0x").or_else(|| auth.strip_prefix("0X")) {
            Some(hex) => u64::from_str_radix(hex, 16).map_err(|_| bad())?,
            None => auth.parse::<u64>().map_err(|_| bad())?,
        };
        if auth >= 1 << 48 {
            return Err(bad());
        }
        let mut authority = [0u8; 6];
        authority.copy_from_slice(&auth.to_be_bytes()[2..]);
        let sub = parts
            .map(|p| p.parse::<u32>().map_err(|_| bad()))
            .collect::<Result<Vec<_>, _>>()?;
        if sub.len() > MAX_SUB_AUTHORITIES {
            return Err(bad());
        }
        Ok(Sid {
            revision,
            authority,
            sub,
        })
    }
}

/// Reads the user SID of the token of `process`.
fn token_user_of(process: HANDLE) -> Result<Sid, Error> {
    let mut token: HANDLE = core::ptr::null_mut();
    // SAFETY: `process` is a live process handle (caller's contract); `token` is a valid out
    // pointer.
    if unsafe { OpenProcessToken(process, TOKEN_QUERY, &mut token) } == 0 {
        return Err(Error::io(
            "OpenProcessToken",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: OpenProcessToken succeeded: `token` is a fresh handle we own.
    let token = unsafe { owned(token) }.map_err(|e| Error::io("OpenProcessToken", e))?;
    // TOKEN_USER plus the SID it points to: at most 16 + 68 bytes (SECURITY_MAX_SID_SIZE is 68);
    // u64 elements give the buffer the structure's pointer alignment.
    let mut buf = [0u64; 32];
    let mut len = 0u32;
    // SAFETY: `buf` is writable for the size passed; `len` is a valid out pointer.
    let ok = unsafe {
        GetTokenInformation(
            token.as_raw_handle() as HANDLE,
            TokenUser,
            buf.as_mut_ptr().cast(),
            size_of_val(&buf) as u32,
            &mut len,
        )
    };
    if ok == 0 {
        return Err(Error::io(
            "GetTokenInformation(TokenUser)",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: on success the buffer starts with a TOKEN_USER (8-byte aligned, enough for it).
    let sid: PSID = unsafe { buf.as_ptr().cast::<TOKEN_USER>().read() }.User.Sid;
    // SAFETY: `sid` points into `buf` (the token's SID); IsValidSid only reads it.
    if sid.is_null() || unsafe { IsValidSid(sid) } == 0 {
        return Err(Error::io(
            "GetTokenInformation(TokenUser)",
            std::io::Error::other("the token's user SID is not valid"),
        ));
    }
    // SAFETY: `sid` is a valid SID (checked above); GetLengthSid only reads it.
    let sid_len = unsafe { GetLengthSid(sid) } as usize;
    let start = buf.as_ptr() as usize;
    let end = start + size_of_val(&buf);
    if (sid as usize) < start || sid as usize + sid_len > end {
        return Err(Error::io(
            "GetTokenInformation(TokenUser)",
            std::io::Error::other("the token's user SID lies outside the buffer"),
        ));
    }
    // SAFETY: the SID's `sid_len` bytes lie inside `buf` (checked above), which is alive and
    // not written while the slice exists.
    let bytes = unsafe { core::slice::from_raw_parts(sid.cast::<u8>().cast_const(), sid_len) };
    Sid::from_binary(bytes).ok_or_else(|| {
        Error::io(
            "GetTokenInformation(TokenUser)",
            std::io::Error::other("the token's user SID is malformed"),
        )
    })
}

/// Checks that `sid`, the user of peer process `pid`, is in `allowed`.
///
/// # Errors
/// [`Error::PeerNotAllowed`], naming the peer, its SID and the SIDs allowed.
pub fn check_allowed(
    side: &'static str,
    pid: u32,
    sid: &Sid,
    allowed: &[Sid],
) -> Result<(), Error> {
    if allowed.contains(sid) {
        return Ok(());
    }
    Err(Error::PeerNotAllowed {
        side,
        pid,
        user: crate::UserId(sid.clone()),
        allowed: allowed.iter().cloned().map(crate::UserId).collect(),
    })
}

/// What a side needs to do with its peer's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerAccess {
    /// Read its user and wait for its exit (`PROCESS_QUERY_LIMITED_INFORMATION | SYNCHRONIZE`):
    /// the client's view of the server.
    Watch,
    /// Also duplicate handles into it (`| PROCESS_DUP_HANDLE`): the server's view of a client.
    WatchAndGrant,
}

/// The process at the other end of a pipe, opened, with its user SID.
#[derive(Debug)]
pub struct PeerProcess {
    handle: OwnedHandle,
    pid: u32,
    sid: Sid,
}

impl PeerProcess {
    /// Opens process `pid` and reads its user SID.
    ///
    /// # Errors
    /// [`Error::Io`] when the process cannot be opened (gone, or a user whose processes we may
    /// not open) or its token cannot be read.
    pub fn open(pid: u32, access: PeerAccess) -> Result<Self, Error> {
        let mut rights = PROCESS_QUERY_LIMITED_INFORMATION | PROCESS_SYNCHRONIZE;
        if access == PeerAccess::WatchAndGrant {
            rights |= PROCESS_DUP_HANDLE;
        }
        // SAFETY: plain call; the returned handle (if any) is ours.
        let raw = unsafe { OpenProcess(rights, 0, pid) };
        // SAFETY: `raw` was just returned by OpenProcess on this thread.
        let handle = unsafe { owned(raw) }
            .map_err(|e| Error::io(format!("opening the peer's process {pid}"), e))?;
        let sid = Sid::of_process(handle.as_handle())?;
        Ok(Self { handle, pid, sid })
    }

    /// The peer's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The peer's user SID.
    pub fn sid(&self) -> &Sid {
        &self.sid
    }

    /// Checks the peer's user against `allowed` ([`check_allowed`]).
    ///
    /// # Errors
    /// [`Error::PeerNotAllowed`].
    pub fn check_allowed(&self, side: &'static str, allowed: &[Sid]) -> Result<(), Error> {
        check_allowed(side, self.pid, &self.sid, allowed)
    }

    /// Whether the process has exited (its handle is signalled). One system call, no waiting:
    /// cheap enough to poll every few milliseconds.
    pub fn has_exited(&self) -> bool {
        // SAFETY: `self.handle` is a live process handle with SYNCHRONIZE access.
        unsafe { WaitForSingleObject(self.raw(), 0) == WAIT_OBJECT_0 }
    }

    /// Waits until the process exits or `timeout` passes (`None`: no limit); returns whether it
    /// exited.
    ///
    /// # Errors
    /// [`Error::Io`] if the wait fails (which a live handle never does).
    pub fn wait_exit(&self, timeout: Option<Duration>) -> Result<bool, Error> {
        let ms = timeout.map_or(INFINITE, |d| {
            u32::try_from(d.as_nanos().div_ceil(1_000_000))
                .map_or(INFINITE - 1, |m| m.min(INFINITE - 1))
        });
        // SAFETY: `self.handle` is a live process handle with SYNCHRONIZE access.
        match unsafe { WaitForSingleObject(self.raw(), ms) } {
            WAIT_OBJECT_0 => Ok(true),
            WAIT_TIMEOUT => Ok(false),
            _ => Err(Error::io(
                "waiting for the peer's process",
                std::io::Error::last_os_error(),
            )),
        }
    }

    /// Duplicates `source` (a handle of this process) into the peer with exactly `access`
    /// rights, not inheritable; returns the new handle's value in the peer's process. Needs
    /// [`PeerAccess::WatchAndGrant`].
    ///
    /// The peer owns the new handle; until it has been told about it, undo with
    /// [`close_in_peer`](Self::close_in_peer).
    ///
    /// # Errors
    /// [`Error::Io`] when `DuplicateHandle` fails (the peer exited, handle limits, the access
    /// asked exceeds what `source` has).
    pub fn duplicate_into(&self, source: BorrowedHandle<'_>, access: u32) -> Result<u64, Error> {
        let mut target: HANDLE = core::ptr::null_mut();
        // SAFETY: no preconditions; the pseudo-handle needs no closing.
        let me = unsafe { GetCurrentProcess() };
        // SAFETY: the pseudo-handle of this process, `source` (live, borrowed for the call),
        // and our process handle of the peer are valid; `target` is a valid out pointer. The
        // new handle lives in the peer's handle table, not ours: nothing here owns it.
        let ok = unsafe {
            DuplicateHandle(
                me,
                source.as_raw_handle() as HANDLE,
                self.raw(),
                &mut target,
                access,
                0,
                0,
            )
        };
        if ok == 0 {
            return Err(Error::io(
                format!("duplicating a handle into process {}", self.pid),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(target as usize as u64)
    }

    /// Closes a handle [`duplicate_into`](Self::duplicate_into) gave the peer, which it has not
    /// been told about (a handshake that failed after duplicating).
    ///
    /// # Errors
    /// [`Error::Io`] when `DuplicateHandle(DUPLICATE_CLOSE_SOURCE)` fails (the peer exited:
    /// then its handles are gone anyway).
    pub fn close_in_peer(&self, value: u64) -> Result<(), Error> {
        // SAFETY: our process handle of the peer (with PROCESS_DUP_HANDLE) is live; `value` is
        // a handle *in the peer's table* that we created there; with no target process,
        // DuplicateHandle only closes it and touches nothing of ours.
        let ok = unsafe {
            DuplicateHandle(
                self.raw(),
                value as usize as HANDLE,
                core::ptr::null_mut(),
                core::ptr::null_mut(),
                0,
                0,
                DUPLICATE_CLOSE_SOURCE,
            )
        };
        if ok == 0 {
            return Err(Error::io(
                format!("closing a handle in process {}", self.pid),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    fn raw(&self) -> HANDLE {
        self.handle.as_raw_handle() as HANDLE
    }
}

impl AsHandle for PeerProcess {
    fn as_handle(&self) -> BorrowedHandle<'_> {
        self.handle.as_handle()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sid_strings_round_trip() {
        for text in [
            "S-1-5-18",
            "S-1-5-21-0-0-0-1000",
            "S-1-5-21-3623811015-3361044348-30300820-1013",
            "S-1-0x123456789ABC-1-2",
            "S-1-1-0",
        ] {
            let sid: Sid = text.parse().expect(text);
            assert_eq!(sid.to_string(), text);
            let words = sid.to_binary();
            assert_eq!(words.len() * 4, sid.binary_len());
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
            assert_eq!(Sid::from_binary(&bytes), Some(sid.clone()), "{text}");
        }
        let sid: Sid = "S-1-5-32-544".parse().unwrap();
        let bytes: Vec<u8> = sid
            .to_binary()
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .collect();
        assert_eq!(
            bytes,
            [1, 2, 0, 0, 0, 0, 0, 5, 32, 0, 0, 0, 0x20, 2, 0, 0],
            "the documented binary layout of BUILTIN\\Administrators"
        );
    }

    #[test]
    fn malformed_sids_are_refused() {
        let sixteen = format!("S-1-5{}", "-1".repeat(16));
        for bad in [
            "",
            "S",
            "S-1",
            "X-1-5-18",
            "S-2-5-18",
            "S-1-5-x",
            "S-1-5-4294967296",
            "S-1-0x1000000000000-1",
            sixteen.as_str(),
        ] {
            let err = bad.parse::<Sid>().expect_err(bad);
            assert!(err.to_string().contains("is not a SID"), "{err}");
        }
        assert_eq!(Sid::from_binary(&[1, 1, 0, 0, 0, 0, 0, 5]), None, "short");
        assert_eq!(
            Sid::from_binary(&[2, 0, 0, 0, 0, 0, 0, 5]),
            None,
            "revision"
        );
    }

    #[test]
    fn current_user_is_a_sid_and_stable() {
        let me = Sid::current_user().expect("current user");
        assert!(me.to_string().starts_with("S-1-"), "{me}");
        assert_eq!(Sid::current_user().expect("again"), me);
        // This process seen as a peer: the same user.
        let peer = PeerProcess::open(std::process::id(), PeerAccess::Watch).expect("open self");
        assert_eq!(peer.sid(), &me);
        assert_eq!(peer.pid(), std::process::id());
        assert!(!peer.has_exited());
        assert!(
            !peer
                .wait_exit(Some(Duration::from_millis(1)))
                .expect("wait")
        );
    }

    /// Under Wine every process runs as the same user, so the refusal of another user's peer is
    /// tested here, on the comparison itself, with a SID that is not ours.
    #[test]
    fn a_peer_of_another_user_is_refused_with_a_clear_error() {
        let me = Sid::current_user().expect("current user");
        let other: Sid = "S-1-5-21-1111111111-2222222222-3333333333-1001"
            .parse()
            .unwrap();
        assert_ne!(other, me);
        check_allowed("server", 42, &me, std::slice::from_ref(&me)).expect("own user allowed");
        let err = check_allowed("server", 42, &other, std::slice::from_ref(&me))
            .expect_err("another user is refused");
        let msg = err.to_string();
        assert!(
            msg.contains(
                "peer process 42 runs as user S-1-5-21-1111111111-2222222222-3333333333-1001"
            ),
            "{msg}"
        );
        assert!(msg.contains("not allowed to talk to this server"), "{msg}");
        assert!(msg.contains(&me.to_string()), "names who is allowed: {msg}");
        // An allow-list with both accepts both.
        let both = [me.clone(), other.clone()];
        check_allowed("client", 7, &other, &both).expect("allow-listed");
        // An empty allow-list refuses everyone.
        assert!(check_allowed("client", 7, &me, &[]).is_err());
    }

    #[test]
    fn opening_a_process_that_does_not_exist_fails_clearly() {
        // Process ids are multiples of 4 on Windows; this one is never handed out.
        let err = PeerProcess::open(u32::MAX - 2, PeerAccess::Watch).expect_err("no such process");
        assert!(
            err.to_string().contains("opening the peer's process"),
            "{err}"
        );
    }
}
