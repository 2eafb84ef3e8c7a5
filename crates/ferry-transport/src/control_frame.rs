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

/// What [`PartialFrame::feed`] got to.
#[cfg(unix)]
#[derive(Debug)]
pub(crate) enum Fed {
    /// The frame is not complete yet: call again when the channel is readable.
    Incomplete,
    /// The stream ended before any byte of a frame.
    Ended,
    /// A whole, validated frame.
    Frame(Header, Vec<u8>),
}

/// One frame read a piece at a time from a non-blocking channel, as [`read`] reads it whole
/// (the server's acceptor serves many handshakes at once this way, each reading only what has
/// arrived). Holds at most the frame's bytes: 24 before the header is validated, then
/// `HEADER_LEN + payload_len` with the payload limit checked first.
#[cfg(unix)]
#[derive(Debug)]
pub(crate) struct PartialFrame {
    buf: Vec<u8>,
    got: usize,
    max_payload: usize,
}

#[cfg(unix)]
impl PartialFrame {
    /// Nothing read yet; the payload may be up to `max_payload` bytes.
    pub(crate) fn new(max_payload: usize) -> Self {
        PartialFrame {
            buf: vec![0u8; HEADER_LEN],
            got: 0,
            max_payload,
        }
    }

    /// Reads what `read_some` has now: it returns `Ok(Some(n))` for `n` bytes read (0 at the end
    /// of the stream), `Ok(None)` when nothing more has arrived.
    ///
    /// # Errors
    /// As [`read`].
    pub(crate) fn feed(
        &mut self,
        channel: Channel,
        mut read_some: impl FnMut(&mut [u8]) -> Result<Option<usize>, Error>,
    ) -> Result<Fed, Error> {
        let bad = |e| Error::Protocol(format!("bad frame on the {}: {e}", channel.name));
        let limits = DecodeLimits::new(u32::try_from(self.max_payload).unwrap_or(u32::MAX));
        loop {
            if self.got == self.buf.len() {
                if self.got == HEADER_LEN {
                    let header = ferry_frame::decode_header(&self.buf, &limits).map_err(bad)?;
                    self.buf
                        .resize(HEADER_LEN + header.payload_len() as usize, 0);
                }
                if self.got == self.buf.len() {
                    let mut frame = std::mem::take(&mut self.buf);
                    let header = ferry_frame::decode(&frame, &limits).map_err(bad)?.header;
                    frame.drain(..HEADER_LEN);
                    return Ok(Fed::Frame(header, frame));
                }
            }
            match read_some(&mut self.buf[self.got..])? {
                None => return Ok(Fed::Incomplete),
                Some(0) if self.got == 0 => return Ok(Fed::Ended),
                Some(0) => return Err(Error::Closed(channel.closed_mid_frame)),
                Some(n) => self.got += n,
            }
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    const CHANNEL: Channel = Channel {
        name: "test channel",
        closed_mid_frame: "closed mid-frame",
    };

    /// Feeds `bytes` in pieces of `step`, with "nothing yet" between them.
    fn feed_in_pieces(bytes: &[u8], step: usize, max: usize) -> Result<Fed, Error> {
        let mut p = PartialFrame::new(max);
        let mut at = 0;
        let mut pause = false;
        loop {
            let r = p.feed(CHANNEL, |buf| {
                if pause {
                    pause = false;
                    return Ok(None);
                }
                pause = true;
                let n = buf.len().min(step).min(bytes.len() - at);
                buf[..n].copy_from_slice(&bytes[at..at + n]);
                at += n;
                Ok(Some(n))
            })?;
            match r {
                Fed::Incomplete => continue,
                other => return Ok(other),
            }
        }
    }

    #[test]
    fn a_frame_arriving_a_byte_at_a_time_is_read_whole() {
        let bytes = encode(Kind::Hello, 0, b"hello there").unwrap();
        for step in [1, 5, 24, 100] {
            match feed_in_pieces(&bytes, step, 1024).unwrap() {
                Fed::Frame(h, payload) => {
                    assert_eq!(h.kind(), Kind::Hello);
                    assert_eq!(payload, b"hello there");
                }
                other => panic!("step {step}: {other:?}"),
            }
        }
    }

    #[test]
    fn an_oversized_header_is_refused_before_its_payload_is_read() {
        let bytes = encode(Kind::Hello, 0, &[0u8; 100]).unwrap();
        let e = feed_in_pieces(&bytes[..HEADER_LEN], 7, 99).unwrap_err();
        assert!(matches!(e, Error::Protocol(_)), "{e}");
    }

    #[test]
    fn the_end_of_the_stream_before_or_inside_a_frame() {
        assert!(matches!(feed_in_pieces(&[], 1, 10), Ok(Fed::Ended)));
        let bytes = encode(Kind::Hello, 0, b"abc").unwrap();
        let e = feed_in_pieces(&bytes[..HEADER_LEN + 1], 4, 10).unwrap_err();
        assert!(matches!(e, Error::Closed("closed mid-frame")), "{e}");
    }
}
