//! The payloads of the control-socket metrics exchange: `MetricsQuery` (empty) and
//! `MetricsReply` (UTF-8 text, bounded). See `docs/protocol.md` §5.4.

use crate::payload::PayloadError;

/// Largest `MetricsReply` payload a querier accepts, and a server sends: 16 MiB.
///
/// A server whose metrics text would be longer answers `Refuse` with
/// [`ErrorCode::TOO_LARGE`](crate::ErrorCode::TOO_LARGE) instead.
pub const MAX_METRICS_REPLY: usize = 16 * 1024 * 1024;

/// Checks the payload of a `MetricsQuery`: it must be empty in this version.
///
/// # Errors
/// [`PayloadError::WrongLength`] when it is not empty.
pub fn check_metrics_query(payload: &[u8]) -> Result<(), PayloadError> {
    if payload.is_empty() {
        Ok(())
    } else {
        Err(PayloadError::WrongLength {
            what: "MetricsQuery",
            expected: 0,
            got: payload.len(),
        })
    }
}

/// The text of a `MetricsReply` payload, validated: at most [`MAX_METRICS_REPLY`] bytes of
/// UTF-8.
///
/// # Errors
/// [`PayloadError::TooLong`] when longer than [`MAX_METRICS_REPLY`];
/// [`PayloadError::InvalidUtf8`] when not UTF-8.
pub fn metrics_reply_text(payload: &[u8]) -> Result<&str, PayloadError> {
    if payload.len() > MAX_METRICS_REPLY {
        return Err(PayloadError::TooLong {
            what: "MetricsReply",
            max: MAX_METRICS_REPLY,
            got: payload.len(),
        });
    }
    core::str::from_utf8(payload).map_err(|e| PayloadError::InvalidUtf8 {
        valid_up_to: e.valid_up_to(),
    })
}
