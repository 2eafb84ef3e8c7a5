//! Auto-reset events: named ones in the per-session `Local\` namespace, and unnamed ones that
//! the transport hands to the peer with `DuplicateHandle`.
//!
//! Names are `Local\ferry-<user SID>-<32 hex digits>`: the SID keeps two users' objects
//! apart (and [`validate_name`] refuses to open a name with another SID), the 128 random bits
//! (from the OS generator behind `std`'s `RandomState`) keep connections apart and make names
//! unguessable. Creating fails rather than reuses an existing object (`ERROR_ALREADY_EXISTS`),
//! so a squatter cannot hand us its event.
//!
//! An unnamed event has no name another process could guess or open: only a process the owner
//! duplicates the handle into can use it. A handle received that way is checked to be an event
//! (`NtQueryObject`'s type name) before it becomes a doorbell.
//!
//! `WaitOnAddress` only works within one process, hence events.
//! See [CreateEventW](https://learn.microsoft.com/en-us/windows/win32/api/synchapi/nf-synchapi-createeventw),
//! [OpenEventW](https://learn.microsoft.com/en-us/windows/win32/api/synchapi/nf-synchapi-openeventw),
//! [WaitForSingleObject](https://learn.microsoft.com/en-us/windows/win32/api/synchapi/nf-synchapi-waitforsingleobject).

use core::time::Duration;
use std::hash::{BuildHasher, Hasher};
use std::os::windows::io::{
    AsHandle, AsRawHandle, BorrowedHandle, FromRawHandle, OwnedHandle, RawHandle,
};
use std::sync::OnceLock;

use windows_sys::Wdk::Foundation::{NtQueryObject, ObjectTypeInformation};
use windows_sys::Win32::Foundation::{
    ERROR_ALREADY_EXISTS, ERROR_INVALID_HANDLE, GetLastError, HANDLE, LocalFree, UNICODE_STRING,
    WAIT_OBJECT_0, WAIT_TIMEOUT,
};
use windows_sys::Win32::Security::Authorization::ConvertSidToStringSidW;
use windows_sys::Win32::Security::{GetTokenInformation, TOKEN_QUERY, TOKEN_USER, TokenUser};
use windows_sys::Win32::System::Threading::{
    CreateEventW, EVENT_MODIFY_STATE, GetCurrentProcess, OpenEventW, OpenProcessToken,
    SYNCHRONIZATION_SYNCHRONIZE, SetEvent, WaitForSingleObject,
};

use crate::{NotifyError, SetupError, WaitOutcome};

const WHAT: &str = "a named event";
const NAMESPACE: &str = "Local\\ferry-";
/// Hex digits of randomness at the end of a name.
const RANDOM_HEX: usize = 32;

#[derive(Debug)]
pub(crate) struct Event {
    handle: OwnedHandle,
    name: String,
}

impl Event {
    /// Creates a fresh auto-reset, non-signalled event with a new random name.
    pub(crate) fn create_named() -> Result<Self, SetupError> {
        let sid = user_sid()?;
        // A collision with an existing name is astronomically unlikely; retry a few times in
        // case of a squatter rather than fail at once.
        for _ in 0..4 {
            let name = format!("{NAMESPACE}{sid}-{}", random_hex());
            let wide = to_wide(&name);
            // SAFETY: `wide` is NUL-terminated and outlives the call; null security attributes
            // mean the default DACL of our token (only us, SYSTEM and admins).
            let raw = unsafe { CreateEventW(core::ptr::null(), 0, 0, wide.as_ptr()) };
            if raw.is_null() {
                return Err(SetupError::from_io(
                    "CreateEventW",
                    WHAT,
                    std::io::Error::last_os_error(),
                ));
            }
            // SAFETY: reads the calling thread's last-error value, set by CreateEventW.
            let existed = unsafe { GetLastError() } == ERROR_ALREADY_EXISTS;
            // SAFETY: `raw` is a valid handle we own (non-null return of CreateEventW).
            let handle = unsafe { OwnedHandle::from_raw_handle(raw as RawHandle) };
            if existed {
                drop(handle);
                continue;
            }
            return Ok(Self { handle, name });
        }
        Err(SetupError::invalid_name(
            NAMESPACE,
            "every freshly generated event name already existed; another process may be \
             squatting on this user's ferry names",
        ))
    }

    /// Opens the event the peer created (the name is validated first).
    pub(crate) fn open_named(name: &str) -> Result<Self, SetupError> {
        validate_name(name)?;
        let wide = to_wide(name);
        // SAFETY: `wide` is NUL-terminated and outlives the call.
        let raw = unsafe {
            OpenEventW(
                EVENT_MODIFY_STATE | SYNCHRONIZATION_SYNCHRONIZE,
                0,
                wide.as_ptr(),
            )
        };
        if raw.is_null() {
            return Err(SetupError::from_open(
                "OpenEventW",
                WHAT,
                name,
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: `raw` is a valid handle we own (non-null return of OpenEventW).
        let handle = unsafe { OwnedHandle::from_raw_handle(raw as RawHandle) };
        Ok(Self {
            handle,
            name: name.to_owned(),
        })
    }

    /// Creates an unnamed auto-reset, non-signalled event.
    pub(crate) fn create_unnamed() -> Result<Self, SetupError> {
        // SAFETY: null security attributes (default DACL of our token) and a null name (an
        // anonymous event); no pointers are retained.
        let raw = unsafe { CreateEventW(core::ptr::null(), 0, 0, core::ptr::null()) };
        if raw.is_null() {
            return Err(SetupError::from_io(
                "CreateEventW",
                "an event",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: `raw` is a valid handle we own (non-null return of CreateEventW).
        let handle = unsafe { OwnedHandle::from_raw_handle(raw as RawHandle) };
        Ok(Self {
            handle,
            name: String::new(),
        })
    }

    /// Adopts a handle received from the peer (duplicated into this process) after checking
    /// that it refers to an event.
    pub(crate) fn from_owned_handle(handle: OwnedHandle) -> Result<Self, SetupError> {
        let kind = object_type_name(&handle)?;
        if kind != "Event" {
            return Err(SetupError::NotADoorbell {
                found: format!("a handle to a {kind} object, not an Event"),
            });
        }
        Ok(Self {
            handle,
            name: String::new(),
        })
    }

    pub(crate) fn into_handle(self) -> OwnedHandle {
        self.handle
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn try_clone(&self) -> Result<Self, SetupError> {
        let handle = self
            .handle
            .try_clone()
            .map_err(|e| SetupError::from_io("DuplicateHandle", WHAT, e))?;
        Ok(Self {
            handle,
            name: self.name.clone(),
        })
    }

    fn raw(&self) -> HANDLE {
        self.handle.as_raw_handle() as HANDLE
    }

    /// `SetEvent`: wakes one waiter, or latches until the next wait.
    pub(crate) fn set(&self) -> Result<(), NotifyError> {
        // SAFETY: `self.handle` is a live event handle with EVENT_MODIFY_STATE access.
        if unsafe { SetEvent(self.raw()) } == 0 {
            return Err(last_notify_error());
        }
        Ok(())
    }

    pub(crate) fn ring(&self) -> Result<(), NotifyError> {
        self.set()
    }

    /// `WaitForSingleObject`; an auto-reset event resets itself when the wait succeeds.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> Result<WaitOutcome, NotifyError> {
        let ms = super::millis(timeout);
        // SAFETY: `self.handle` is a live event handle with SYNCHRONIZE access.
        match unsafe { WaitForSingleObject(self.raw(), ms) } {
            WAIT_OBJECT_0 => Ok(WaitOutcome::Woken),
            WAIT_TIMEOUT => Ok(WaitOutcome::TimedOut),
            _ => Err(last_notify_error()),
        }
    }

    pub(crate) fn drain(&self) -> Result<bool, NotifyError> {
        self.wait(Some(Duration::ZERO))
            .map(|o| o == WaitOutcome::Woken)
    }
}

impl AsHandle for Event {
    fn as_handle(&self) -> BorrowedHandle<'_> {
        self.handle.as_handle()
    }
}

impl AsRawHandle for Event {
    fn as_raw_handle(&self) -> RawHandle {
        self.handle.as_raw_handle()
    }
}

/// The kernel object type of `handle` (`Event`, `Section`, `Process`, `File`, ...), from
/// `NtQueryObject(ObjectTypeInformation)`.
fn object_type_name(handle: &OwnedHandle) -> Result<String, SetupError> {
    // OBJECT_TYPE_INFORMATION starts with the UNICODE_STRING type name, whose buffer follows
    // the structure in our buffer; 1 KiB holds it with room to spare. u64 elements give the
    // buffer the alignment of the structure.
    let mut buf = [0u64; 128];
    let mut got = 0u32;
    // SAFETY: `handle` is a live handle; `buf` is writable for the size passed and `got` is a
    // valid out pointer. The call writes within the buffer only.
    let status = unsafe {
        NtQueryObject(
            handle.as_raw_handle() as HANDLE,
            ObjectTypeInformation,
            buf.as_mut_ptr().cast(),
            size_of_val(&buf) as u32,
            &mut got,
        )
    };
    if status < 0 {
        return Err(SetupError::Os {
            op: "NtQueryObject(ObjectTypeInformation)",
            source: std::io::Error::other(format!("NTSTATUS {:#010x}", status as u32)),
        });
    }
    // SAFETY: on success the buffer starts with a UNICODE_STRING (the buffer is 8-byte
    // aligned, enough for it); reading it copies two integers and a pointer.
    let name: UNICODE_STRING = unsafe { buf.as_ptr().cast::<UNICODE_STRING>().read() };
    let start = buf.as_ptr() as usize;
    let end = start + size_of_val(&buf);
    let at = name.Buffer as usize;
    let len = usize::from(name.Length / 2);
    // The name must lie inside our buffer; anything else would be a broken kernel answer.
    if name.Buffer.is_null() || at < start || at + len * 2 > end || !at.is_multiple_of(2) {
        return Err(SetupError::Os {
            op: "NtQueryObject(ObjectTypeInformation)",
            source: std::io::Error::other("the type name is outside the buffer"),
        });
    }
    // SAFETY: `name.Buffer` points to `len` u16s inside `buf` (checked above), which is alive
    // and not written while the slice exists.
    let wide = unsafe { core::slice::from_raw_parts(name.Buffer.cast_const(), len) };
    Ok(String::from_utf16_lossy(wide))
}

fn last_notify_error() -> NotifyError {
    // SAFETY: reads the calling thread's last-error value.
    match unsafe { GetLastError() } {
        ERROR_INVALID_HANDLE => NotifyError::InvalidObject,
        code => NotifyError::Os(code as i32),
    }
}

fn to_wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(Some(0)).collect()
}

/// 128 bits from the OS random generator that seeds `RandomState`, as 32 hex digits.
fn random_hex() -> String {
    let a = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(a);
    let b = h.finish();
    format!("{a:016x}{b:016x}")
}

/// The current user's SID as a string (`S-1-5-21-...`), computed once.
fn user_sid() -> Result<&'static str, SetupError> {
    static SID: OnceLock<Result<String, (&'static str, i32)>> = OnceLock::new();
    match SID.get_or_init(query_user_sid) {
        Ok(s) => Ok(s),
        Err((op, code)) => Err(SetupError::Os {
            op,
            source: std::io::Error::from_raw_os_error(*code),
        }),
    }
}

fn last_code() -> i32 {
    // SAFETY: reads the calling thread's last-error value.
    unsafe { GetLastError() as i32 }
}

fn query_user_sid() -> Result<String, (&'static str, i32)> {
    let mut token: HANDLE = core::ptr::null_mut();
    // SAFETY: no preconditions; returns a pseudo-handle that needs no closing.
    let me = unsafe { GetCurrentProcess() };
    // SAFETY: `me` is our process pseudo-handle; `token` is a valid out pointer.
    if unsafe { OpenProcessToken(me, TOKEN_QUERY, &mut token) } == 0 {
        return Err(("OpenProcessToken", last_code()));
    }
    // SAFETY: `token` is the valid handle just returned, owned by us from here on.
    let token = unsafe { OwnedHandle::from_raw_handle(token as RawHandle) };
    // TOKEN_USER plus the SID it points to; 256 bytes is far more than any SID needs
    // (SECURITY_MAX_SID_SIZE is 68). u64 elements give the buffer pointer alignment.
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
        return Err(("GetTokenInformation", last_code()));
    }
    // SAFETY: on success the buffer starts with a TOKEN_USER (the buffer is 8-byte aligned,
    // enough for it), whose SID pointer points into the same buffer.
    let sid = unsafe { (*buf.as_ptr().cast::<TOKEN_USER>()).User.Sid };
    let mut wide: *mut u16 = core::ptr::null_mut();
    // SAFETY: `sid` is a valid SID (see above); `wide` is a valid out pointer.
    if unsafe { ConvertSidToStringSidW(sid, &mut wide) } == 0 {
        return Err(("ConvertSidToStringSidW", last_code()));
    }
    let mut n = 0;
    // SAFETY: on success `wide` is a NUL-terminated UTF-16 string allocated by LocalAlloc;
    // we read up to its terminator only.
    while unsafe { *wide.wrapping_add(n) } != 0 {
        n += 1;
    }
    // SAFETY: `wide` is valid for `n` u16 reads (counted above).
    let s = String::from_utf16_lossy(unsafe { core::slice::from_raw_parts(wide, n) });
    // SAFETY: `wide` was allocated by ConvertSidToStringSidW with LocalAlloc and is not used
    // after this.
    unsafe { LocalFree(wide.cast()) };
    Ok(s)
}

/// Checks that `name` is one of ours: `Local\ferry-<this user's SID>-<32 lowercase hex>`.
pub(crate) fn validate_name(name: &str) -> Result<(), SetupError> {
    let rest = name
        .strip_prefix(NAMESPACE)
        .ok_or_else(|| SetupError::invalid_name(name, "does not start with `Local\\ferry-`"))?;
    let sid = user_sid()?;
    let rest = rest
        .strip_prefix(sid)
        .and_then(|r| r.strip_prefix('-'))
        .ok_or_else(|| SetupError::invalid_name(name, "not created by this user (SID differs)"))?;
    if rest.len() != RANDOM_HEX || !rest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(SetupError::invalid_name(
            name,
            "the random part is not 32 lowercase hex digits",
        ));
    }
    Ok(())
}
