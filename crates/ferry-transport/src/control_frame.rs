//! Frames on a control channel (the Unix socket or the Windows pipe): the one way both read and
//! write them. A frame is read as 24 header bytes, validated with a payload limit before its
//! buffer is allocated, then its payload, then checked whole (`ferry-frame`'s codec).

use ferry_frame::{DecodeLimits, Flags, HEADER_LEN, Header, Kind};

use crate::error::Error;

/// What the messages call the channel, and what they say when it closes mid-frame.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Channel {
    /// "control socket", "control pipe".
    pub(crate) name: &'static str,
    /// The error for a peer that closed the channel in the middle of a frame.
    pub(crate) closed_mid_frame: &'static str,
}

/// One frame (header + payload), encoded.
///
/// # Errors
/// [`Error::Protocol`] if the frame cannot be encoded (a payload over the codec's limit).
pub(crate) fn encode(kind: Kind, correlation_id: u64, payload: &[u8]) -> Result<Vec<u8>, Error> {
    let mut buf = vec![0u8; HEADER_LEN + payload.len()];
    buf[HEADER_LEN..].copy_from_slice(payload);
    ferry_frame::encode_header_in_place(&mut buf, kind, Flags::NONE, correlation_id, payload.len())
        .map_err(|e| Error::Protocol(format!("cannot encode a {kind:?} frame: {e}")))?;
    Ok(buf)
}

/// Reads one frame with `read_some` (which returns how many bytes it read, 0 at the end of
/// the stream), its payload at most `max_payload` bytes. `Ok(None)`: the stream ended before
/// any byte of a frame.
///
/// # Errors
/// [`Error::Protocol`] for a bad frame; [`Error::Closed`] (`channel.closed_mid_frame`) when
/// the stream ends inside one; `read_some`'s errors.
pub(crate) fn read(
    channel: Channel,
    max_payload: usize,
    mut read_some: impl FnMut(&mut [u8]) -> Result<usize, Error>,
) -> Result<Option<(Header, Vec<u8>)>, Error> {
    let mut head = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = read_some(&mut head[got..])?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(Error::Closed(channel.closed_mid_frame));
        }
        got += n;
    }
    let bad = |e| Error::Protocol(format!("bad frame on the {}: {e}", channel.name));
    let limits = DecodeLimits::new(u32::try_from(max_payload).unwrap_or(u32::MAX));
    let header = ferry_frame::decode_header(&head, &limits).map_err(bad)?;
    let len = header.payload_len() as usize;
    let mut frame = vec![0u8; HEADER_LEN + len];
    frame[..HEADER_LEN].copy_from_slice(&head);
    let mut at = HEADER_LEN;
    while at < frame.len() {
        let n = read_some(&mut frame[at..])?;
        if n == 0 {
            return Err(Error::Closed(channel.closed_mid_frame));
        }
        at += n;
    }
    let header = ferry_frame::decode(&frame, &limits).map_err(bad)?.header;
    frame.drain(..HEADER_LEN);
    Ok(Some((header, frame)))
}
