//! What the typed client needs of a transport, and its implementation over
//! `ferry-transport`. The client side of this crate names `ferry_transport` here only, so that
//! another transport (a network one) is one more implementation of [`Transport`] and
//! [`AsyncTransport`], with no change to service code.

use std::future::Future;
use std::time::Duration;

use ferry_transport::tokio::{AsyncClient, AsyncStream};
use ferry_transport::{Client as FerryClient, Error, Response, Stream};

/// The blocking operations: call, stream, notify; cancel is dropping what they return (a
/// timed-out call is cancelled by the transport). Pushes arrive through the callback given
/// when connecting.
pub trait Transport: Send + Sync + 'static {
    /// An answer: its bytes.
    type Answer: std::ops::Deref<Target = [u8]>;
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
    /// Sends `request` and returns its stream of items.
    fn stream(&self, request: &[u8]) -> Result<Self::Items, Error>;
    /// Sends a notification.
    fn notify(&self, payload: &[u8]) -> Result<(), Error>;
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
    type Items = Stream;
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
    fn stream(&self, request: &[u8]) -> Result<Stream, Error> {
        FerryClient::stream(self, request)
    }
    fn notify(&self, payload: &[u8]) -> Result<(), Error> {
        FerryClient::notify(self, payload)
    }
}

impl ItemSource for Stream {
    fn next_into(&mut self, out: &mut Vec<u8>) -> Result<bool, Error> {
        Stream::next_into(self, out)
    }
}

impl AsyncTransport for AsyncClient {
    type Answer = Response;
    type Items = AsyncStream;
    async fn call(&self, request: &[u8], timeout: Option<Duration>) -> Result<Response, Error> {
        match timeout {
            None => AsyncClient::call(self, request).await,
            Some(t) => AsyncClient::call_timeout(self, request, t).await,
        }
    }
    async fn stream(&self, request: &[u8]) -> Result<AsyncStream, Error> {
        AsyncClient::stream(self, request).await
    }
    async fn notify(&self, payload: &[u8]) -> Result<(), Error> {
        AsyncClient::notify(self, payload).await
    }
}
