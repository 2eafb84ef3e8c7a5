//! Streamed answers.

use std::sync::Arc;
use std::time::Instant;

use ferry_frame::Kind;

use crate::error::Error;
use crate::link::WAIT_SLICE;
use crate::slots::{STREAM_QUEUE_BYTES, State};

use super::{Client, Conn};
use crate::error::decode_error;

/// A streamed answer: items arrive in order, then the stream ends.
#[derive(Debug)]
pub struct StreamReceiver {
    pub(crate) client: Client,
    pub(crate) index: u32,
    pub(crate) id: u64,
    pub(crate) conn: Arc<Conn>,
    pub(crate) finished: bool,
}

impl Client {
    /// Sends `request` and returns the stream of items the server answers with.
    ///
    /// # Errors
    /// As [`call`](Self::call) for sending the request.
    pub fn stream(&self, request: &[u8]) -> Result<StreamReceiver, Error> {
        let conn = self.connection(None, true)?;
        let (index, id) = self.shared.slots.acquire(true, None)?;
        if let Err(e) = conn.tx.send(Kind::Request, id, request, None, &conn.live) {
            self.shared.slots.release(index);
            return Err(e);
        }
        Ok(StreamReceiver {
            client: self.clone(),
            index,
            id,
            conn,
            finished: false,
        })
    }
}

impl StreamReceiver {
    /// The next item: `Ok(Some(bytes))`, `Ok(None)` at the end of the stream.
    ///
    /// # Errors
    /// [`Error::Remote`] if the server ended the stream with an error; [`Error::Closed`] if the
    /// connection was lost.
    pub fn next_item(&mut self) -> Result<Option<Vec<u8>>, Error> {
        let mut out = Vec::new();
        Ok(self.next_into(&mut out)?.then_some(out))
    }

    /// Like [`next_item`](Self::next_item) but fills `out` (cleared first) and returns whether
    /// an item was read: no allocation once `out` is large enough.
    ///
    /// # Errors
    /// As [`next_item`](Self::next_item).
    pub fn next_into(&mut self, out: &mut Vec<u8>) -> Result<bool, Error> {
        out.clear();
        if self.finished {
            return Ok(false);
        }
        let shared = &self.client.shared;
        let slot = shared.slots.get(self.index);
        loop {
            {
                let mut inner = slot.lock();
                if inner.items.len() >= 4 {
                    let mut len = [0u8; 4];
                    for (i, b) in inner.items.drain(..4).enumerate() {
                        len[i] = b;
                    }
                    let n = u32::from_le_bytes(len) as usize;
                    out.extend(inner.items.drain(..n));
                    crate::slots::trim_items(&mut inner);
                    if inner.over && inner.items.len() <= STREAM_QUEUE_BYTES {
                        shared.slots.set_over(&mut inner, false);
                    }
                    drop(inner);
                    slot.cv.notify_all(); // a reader blocked on our full queue may go on
                    return Ok(true);
                }
                match inner.state {
                    State::Done => {
                        self.finished = true;
                        if inner.kind == Kind::ErrorResponse {
                            let (code, message) = decode_error(&inner.buf);
                            return Err(Error::Remote { code, message });
                        }
                        return Ok(false);
                    }
                    State::Failed => {
                        self.finished = true;
                        return Err(Error::Closed(
                            inner.failure.unwrap_or("the connection was lost"),
                        ));
                    }
                    _ => {}
                }
            }
            self.client.wait_answer(&self.conn, self.index, None)?;
        }
    }

    /// Asks the server to stop the stream; items already sent are discarded.
    pub fn cancel(mut self) {
        self.cancel_inner();
    }

    pub(crate) fn cancel_inner(&mut self) {
        if !self.finished {
            self.finished = true;
            let _ = self.conn.tx.send(
                Kind::Cancel,
                self.id,
                &[],
                Some(Instant::now() + WAIT_SLICE),
                &self.conn.live,
            );
        }
    }
}

impl Drop for StreamReceiver {
    fn drop(&mut self) {
        self.cancel_inner();
        self.client.shared.slots.release(self.index);
    }
}
