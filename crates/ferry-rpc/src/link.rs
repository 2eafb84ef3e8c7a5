//! What the typed client needs of a transport, and its implementation over
//! `ferry-transport`. The client side of this crate names `ferry_transport` here only, so that
//! another transport (a network one) is one more implementation of [`Transport`] (with its
//! [`PendingAnswer`] and [`ItemSource`]) and [`AsyncTransport`], with no change to service code.

use std::future::Future;
use std::time::Duration;

use ferry_transport::tokio::{AsyncClient, AsyncStreamReceiver};
use ferry_transport::{Client as FerryClient, Error, PendingCall, Response, StreamReceiver};

/// The blocking operations: call, pipelined call, stream, notify; cancel is dropping what they
/// return (a timed-out call is cancelled by the transport). Pushes arrive through the callback
/// given when connecting.
///
/// Another transport implements it with its own answer type, a pending-call handle that
/// cancels the call when dropped unanswered ([`PendingAnswer`]), and a stream of items
/// ([`ItemSource`]).
pub trait Transport: Send + Sync + 'static {
    /// An answer: its bytes.
    type Answer: std::ops::Deref<Target = [u8]>;
    /// A call sent by [`start_call`](Self::start_call) whose answer is still to be collected.
    type Pending: PendingAnswer<Answer = Self::Answer>;
    /// A streamed answer; dropping it before its end cancels it.
    type Items: ItemSource;
    /// Sends `request`, waits for the answer (at most `timeout`, then cancels and fails).
    fn call(&self, request: &[u8], timeout: Option<Duration>) -> Result<Self::Answer, Error>;
    /// Like [`call`](Self::call) with the request written in place by `fill` (`len` bytes).
    fn call_with(
        &self,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
        timeout: Option<Duration>,
    ) -> Result<Self::Answer, Error>;
    /// Sends `request` and returns at once, without waiting for the answer: many calls can be
    /// in flight from one thread (pipelining). It may wait for the transport's room for one
    /// more call in flight (no deadline).
    fn start_call(&self, request: &[u8]) -> Result<Self::Pending, Error>;
    /// Sends `request` and returns its stream of items.
    fn stream(&self, request: &[u8]) -> Result<Self::Items, Error>;
    /// Sends a notification.
    fn notify(&self, payload: &[u8]) -> Result<(), Error>;
}

/// A call started with [`Transport::start_call`]. Dropping it before its answer was collected
/// must cancel the call (free what it holds on this side, tell the server, best effort); so
/// must a [`wait_timeout`](Self::wait_timeout) that times out.
pub trait PendingAnswer: Send {
    /// The answer's bytes.
    type Answer: std::ops::Deref<Target = [u8]>;
    /// Waits for the answer (no deadline).
    fn wait(self) -> Result<Self::Answer, Error>;
    /// Waits at most `timeout` for the answer; then cancels the call and fails with the
    /// transport's timeout error ([`Error::Timeout`]).
    fn wait_timeout(self, timeout: Duration) -> Result<Self::Answer, Error>;
}

/// The items of a streamed answer.
pub trait ItemSource: Send {
    /// Reads the next item into `out`; `false` at the end.
    fn next_into(&mut self, out: &mut Vec<u8>) -> Result<bool, Error>;
}

/// The async operations (same meaning as [`Transport`]'s).
pub trait AsyncTransport: Send + Sync + 'static {
    /// An answer.
    type Answer: std::ops::Deref<Target = [u8]> + Send;
    /// A streamed answer: a stream of items; dropping it cancels.
    type Items: futures_core::Stream<Item = Result<Vec<u8>, Error>> + Send + Unpin;
    /// Sends `request` and waits for the answer; dropping the future cancels the call.
    fn call(
        &self,
        request: &[u8],
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<Self::Answer, Error>> + Send;
    /// Sends `request` and returns its stream of items.
    fn stream(&self, request: &[u8]) -> impl Future<Output = Result<Self::Items, Error>> + Send;
    /// Sends a notification.
    fn notify(&self, payload: &[u8]) -> impl Future<Output = Result<(), Error>> + Send;
}

impl Transport for FerryClient {
    type Answer = Response;
    type Pending = PendingCall;
    type Items = StreamReceiver;
    fn call(&self, request: &[u8], timeout: Option<Duration>) -> Result<Response, Error> {
        match timeout {
            None => FerryClient::call(self, request),
            Some(t) => FerryClient::call_timeout(self, request, t),
        }
    }
    fn call_with(
        &self,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
        timeout: Option<Duration>,
    ) -> Result<Response, Error> {
        match timeout {
            None => FerryClient::call_with(self, len, fill),
            Some(t) => {
                // The transport's in-place call has no deadline: stage the bytes instead.
                let mut staged = vec![0u8; len];
                fill(&mut staged);
                FerryClient::call_timeout(self, &staged, t)
            }
        }
    }
    fn start_call(&self, request: &[u8]) -> Result<PendingCall, Error> {
        FerryClient::start_call(self, request)
    }
    fn stream(&self, request: &[u8]) -> Result<StreamReceiver, Error> {
        FerryClient::stream(self, request)
    }
    fn notify(&self, payload: &[u8]) -> Result<(), Error> {
        FerryClient::notify(self, payload)
    }
}

/// `ferry-transport`'s pending call: dropping it sends `Cancel` and frees its slot.
impl PendingAnswer for PendingCall {
    type Answer = Response;
    fn wait(self) -> Result<Response, Error> {
        PendingCall::wait(self)
    }
    fn wait_timeout(self, timeout: Duration) -> Result<Response, Error> {
        PendingCall::wait_timeout(self, timeout)
    }
}

impl ItemSource for StreamReceiver {
    fn next_into(&mut self, out: &mut Vec<u8>) -> Result<bool, Error> {
        StreamReceiver::next_into(self, out)
    }
}

impl AsyncTransport for AsyncClient {
    type Answer = Response;
    type Items = AsyncStreamReceiver;
    async fn call(&self, request: &[u8], timeout: Option<Duration>) -> Result<Response, Error> {
        match timeout {
            None => AsyncClient::call(self, request).await,
            Some(t) => AsyncClient::call_timeout(self, request, t).await,
        }
    }
    async fn stream(&self, request: &[u8]) -> Result<AsyncStreamReceiver, Error> {
        AsyncClient::stream(self, request).await
    }
    async fn notify(&self, payload: &[u8]) -> Result<(), Error> {
        AsyncClient::notify(self, payload).await
    }
}
