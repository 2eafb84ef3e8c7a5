//! The results of the sleep/wake protocol.

use core::num::NonZeroU32;

/// Whether the peer declared itself asleep and must be woken, returned by
/// every operation that publishes a cursor.
///
/// When [`is_needed`](Wake::is_needed), the publishing side has already
/// reset the peer's sleep word to 0; the caller must now wake the peer
/// through the mechanism identified by [`token`](Wake::token) (e.g.
/// `futex_wake` on the sleep word). Dropping a needed `Wake` loses the
/// wake-up, hence `#[must_use]`.
#[must_use = "a needed Wake must be delivered or the peer may sleep forever"]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Wake {
    token: Option<NonZeroU32>,
}

impl Wake {
    /// No wake-up needed.
    pub const NONE: Wake = Wake { token: None };

    #[inline]
    pub(crate) fn from_token(token: u32) -> Wake {
        Wake {
            token: NonZeroU32::new(token),
        }
    }

    /// Whether the peer must be woken.
    #[inline]
    #[must_use]
    pub fn is_needed(&self) -> bool {
        self.token.is_some()
    }

    /// The nonzero token the sleeper stored, or 0 if no wake-up is needed.
    ///
    /// It comes from shared memory: treat it as untrusted (the transport
    /// maps it to a wake mechanism and ignores unknown values).
    #[inline]
    #[must_use]
    pub fn token(&self) -> u32 {
        self.token.map_or(0, NonZeroU32::get)
    }

    /// Combines two results: needed if either is (keeps the later token).
    #[inline]
    pub fn or(self, later: Wake) -> Wake {
        if later.is_needed() { later } else { self }
    }
}

/// Outcome of `prepare_sleep`.
#[must_use = "on Sleep the caller must block on the sleep word, on Ready it must not"]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SleepPrep {
    /// The condition already holds (data or space available); the sleep word
    /// is clear. Do not block: retry the operation.
    Ready,
    /// The sleep word now holds the token and the condition did not hold after
    /// the fence: block while the word equals the token, then call
    /// `cancel_sleep` and retry.
    Sleep,
}
