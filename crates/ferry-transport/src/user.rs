//! Who a peer is, the same type on every platform: a uid on Unix, a user SID on Windows.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;
use crate::sys;

/// An operating-system user, as servers and clients check their peers: the effective uid on
/// Unix, the user SID of the process's token on Windows. Written `uid 1000` / `user S-1-5-...`;
/// parsed (`FromStr`) from a uid number on Unix, a SID string (`S-1-5-21-...`) on Windows.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct UserId(pub(crate) sys::UserId);

impl UserId {
    /// The user this process runs as.
    ///
    /// # Errors
    /// Windows: [`Error::Io`] when the process token cannot be read. (Never on Unix.)
    pub fn current() -> Result<UserId, Error> {
        #[cfg(unix)]
        return Ok(UserId(sys::current_user()));
        #[cfg(windows)]
        return crate::windows::identity::Sid::current_user().map(UserId);
    }

    /// Unix: the user with this uid.
    #[cfg(unix)]
    pub const fn from_uid(uid: u32) -> UserId {
        UserId(uid)
    }

    /// Unix: the uid.
    #[cfg(unix)]
    pub const fn uid(&self) -> u32 {
        self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&sys::user_text(&self.0))
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({self})")
    }
}

/// Why a string is not a user id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a user id (expected {expected})", expected = EXPECTED)]
pub struct UserIdParseError(String);

#[cfg(unix)]
const EXPECTED: &str = "a uid, such as 1000";
#[cfg(windows)]
const EXPECTED: &str = "a SID, such as S-1-5-21-1-2-3-1001";

impl FromStr for UserId {
    type Err = UserIdParseError;

    fn from_str(s: &str) -> Result<UserId, UserIdParseError> {
        #[cfg(unix)]
        let parsed = s.trim().parse::<u32>().ok();
        #[cfg(windows)]
        let parsed = s.trim().parse::<crate::windows::identity::Sid>().ok();
        parsed
            .map(UserId)
            .ok_or_else(|| UserIdParseError(s.to_owned()))
    }
}
