//! The typed client's machinery, shared by every generated client: encoding a request into its
//! envelope, sending it through the transport, reading the answer's envelope and decoding it.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use ferry_transport::ClientConfig;
use ferry_transport::tokio::AsyncClient as FerryAsyncClient;
use futures_core::Stream as _;

use crate::codec::{self, CodecError};
use crate::envelope::{ENVELOPE_LEN, Envelope, FLAG_ACCEPTS_LZ4, FLAG_LZ4, MessageKind};
use crate::error::RpcError;
use crate::link::{AsyncTransport, ItemSource, PendingAnswer, Transport};
use crate::{Method, RpcConfig};

/// How the body of a request is produced: appended to the buffer (after the envelope).
pub type Encoder<'a> = &'a mut dyn FnMut(&mut Vec<u8>) -> Result<(), CodecError>;

/// How an item of a stream is decoded.
pub type ItemDecoder<T> = fn(&[u8]) -> Result<T, CodecError>;

/// How the answer of a started call ([`Client::start_call`]) is decoded.
pub type AnswerDecoder<R> = fn(&[u8]) -> Result<R, CodecError>;

thread_local! {
    /// The buffers a request is encoded (and compressed) in, reused: no allocation per call
    /// once they have grown.
    static BUFFERS: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Whether the peer said it decodes lz4, and this side's settings; shared by the clones of one
/// client.
#[derive(Debug)]
pub(crate) struct Negotiation {
    pub(crate) config: RpcConfig,
    pub(crate) peer_accepts_lz4: AtomicBool,
}

impl Negotiation {
    pub(crate) fn new(config: RpcConfig) -> Negotiation {
        Negotiation {
            config,
            peer_accepts_lz4: AtomicBool::new(false),
        }
    }

    /// The flags this side sets on what it sends.
    pub(crate) fn own_flags(&self) -> u8 {
        if self.config.accept_lz4 {
            FLAG_ACCEPTS_LZ4
        } else {
            0
        }
    }

    /// Builds envelope + body for `method` in a per-thread buffer, compressed when both sides
    /// allow it and the body is above the threshold, and hands the bytes to `send`.
    pub(crate) fn with_message<R>(
        &self,
        mut env: Envelope,
        encode: Encoder<'_>,
        what: &'static str,
        method: &'static Method,
        send: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, RpcError> {
        let (mut buf, mut packed) = BUFFERS.with(|b| std::mem::take(&mut *b.borrow_mut()));
        buf.clear();
        buf.resize(ENVELOPE_LEN, 0);
        let r = match encode(&mut buf) {
            Err(e) => Err(RpcError::Encode {
                method: method.qualified,
                what,
                message: e.0,
            }),
            Ok(()) => {
                env.flags |= self.own_flags();
                let body_len = buf.len() - ENVELOPE_LEN;
                let compress = self.config.compress_above.is_some_and(|t| body_len > t)
                    && self.peer_accepts_lz4.load(Ordering::Relaxed)
                    && u32::try_from(body_len).is_ok();
                if compress {
                    env.flags |= FLAG_LZ4;
                    env.uncompressed_len = body_len as u32;
                    let mut c = std::mem::take(&mut packed);
                    codec::lz4_compress(&buf[ENVELOPE_LEN..], &mut c);
                    packed.clear();
                    packed.resize(ENVELOPE_LEN, 0);
                    packed.extend_from_slice(&c);
                    env.write(&mut packed);
                    Ok(send(&packed))
                } else {
                    env.write(&mut buf);
                    Ok(send(&buf))
                }
            }
        };
        BUFFERS.with(|b| *b.borrow_mut() = (buf, packed));
        r
    }

    /// Reads an answer's (or item's, or push's) envelope, checks it is of `kind` for `method`,
    /// notes whether the peer decodes lz4, and gives `decode` the body (decompressed if it was
    /// compressed).
    pub(crate) fn open<R>(
        &self,
        message: &[u8],
        kind: MessageKind,
        method: &'static Method,
        decode: impl FnOnce(&[u8]) -> Result<R, CodecError>,
    ) -> Result<R, RpcError> {
        let bad = |message: String| RpcError::BadResponse {
            method: method.qualified,
            message,
        };
        let (env, body) = Envelope::read(message)?;
        if env.kind != kind || env.method != method.id {
            return Err(bad(format!(
                "expected a {kind:?} of method id {:#010x}, got a {:?} of method id {:#010x}",
                method.id, env.kind, env.method
            )));
        }
        if env.flags & FLAG_ACCEPTS_LZ4 != 0 {
            self.peer_accepts_lz4.store(true, Ordering::Relaxed);
        }
        if env.codec != method.codec {
            return Err(bad(format!(
                "encoded with {} where the method uses {}",
                env.codec.name(),
                method.codec.name()
            )));
        }
        if env.flags & FLAG_LZ4 != 0 {
            if !self.config.accept_lz4 {
                return Err(bad("compressed, but this side did not accept lz4".into()));
            }
            let mut out = Vec::new();
            codec::lz4_decompress(
                body,
                env.uncompressed_len as usize,
                self.config.max_decompressed,
                &mut out,
            )
            .map_err(|e| bad(e.0))?;
            return decode(&out).map_err(|e| bad(e.0));
        }
        decode(body).map_err(|e| bad(e.0))
    }
}

fn budget(timeout: Option<Duration>) -> u32 {
    timeout.map_or(0, |t| {
        u32::try_from(t.as_micros()).unwrap_or(u32::MAX).max(1)
    })
}

fn request_envelope(method: &Method, kind: MessageKind, timeout: Option<Duration>) -> Envelope {
    let codec = if method.raw_request {
        crate::CodecId::Raw
    } else {
        method.codec
    };
    let mut env = Envelope::new(kind, codec, method.id);
    env.budget_us = budget(timeout);
    env
}

/// A typed client's connection: cheap to clone, `Send + Sync`, one connection shared by every
/// clone, thread and task. Generated clients wrap it.
pub struct Client<T: Transport = ferry_transport::Client> {
    link: Arc<T>,
    neg: Arc<Negotiation>,
}

impl<T: Transport> Clone for Client<T> {
    fn clone(&self) -> Self {
        Client {
            link: self.link.clone(),
            neg: self.neg.clone(),
        }
    }
}

impl<T: Transport> std::fmt::Debug for Client<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.neg.config)
            .finish_non_exhaustive()
    }
}

/// A callback for the server's pushes: the envelope and the (still encoded) body.
pub type PushCallback = Arc<dyn Fn(&[u8]) + Send + Sync>;

impl Client {
    /// Connects to service `name`; `pushes` receives the server's pushes (the generated
    /// `*Pushes` adapter), if any.
    ///
    /// # Errors
    /// As `ferry_transport::Client::connect_with`.
    pub fn connect(
        name: &str,
        mut config: ClientConfig,
        rpc: RpcConfig,
        pushes: Option<PushCallback>,
    ) -> Result<Client, RpcError> {
        if let Some(p) = pushes {
            config.on_notification = Some(Arc::new(move |bytes: &[u8]| p(bytes)));
        }
        let link = ferry_transport::Client::connect_with(name, config)?;
        Ok(Client::over(link, rpc))
    }

    /// The transport client underneath (for its stats and metrics).
    pub fn transport(&self) -> &ferry_transport::Client {
        &self.link
    }
}

impl<T: Transport> Client<T> {
    /// A typed client over `link`.
    pub fn over(link: T, rpc: RpcConfig) -> Client<T> {
        Client {
            link: Arc::new(link),
            neg: Arc::new(Negotiation::new(rpc)),
        }
    }

    /// Calls `method` with the body `encode` writes; decodes the answer with `decode`.
    ///
    /// # Errors
    /// [`RpcError`]: the transport's failure, the server's typed error, or a bad answer.
    pub fn call<R>(
        &self,
        method: &'static Method,
        timeout: Option<Duration>,
        encode: Encoder<'_>,
        decode: impl FnOnce(&[u8]) -> Result<R, CodecError>,
    ) -> Result<R, RpcError> {
        let env = request_envelope(method, MessageKind::Call, timeout);
        let answer = self
            .neg
            .with_message(env, encode, "request", method, |bytes| {
                self.link.call(bytes, timeout)
            })?
            .map_err(|e| method.error(e))?;
        self.neg
            .open(&answer, MessageKind::Response, method, decode)
    }

    /// Starts a call of `method` with the body `encode` writes and returns at once, without
    /// waiting for the answer: collect it with [`PendingReply::wait`], which decodes it with
    /// `decode`. Many calls can be in flight from one thread this way (pipelining: keep a window
    /// of started calls, wait for the oldest, start another), up to the transport's limit
    /// (`ClientConfig::max_in_flight` for Ferry's; starting one more waits for a free slot).
    ///
    /// The request is encoded as [`call`](Self::call) encodes it (same buffers, compression,
    /// envelope); `timeout` is the call's deadline, counted from now: the server sees it, and
    /// [`PendingReply::wait`] fails with a timeout (cancelling the call) once it has passed.
    /// Dropping the [`PendingReply`] without waiting cancels the call on the server.
    ///
    /// # Errors
    /// As [`call`](Self::call), for encoding and sending the request.
    pub fn start_call<R>(
        &self,
        method: &'static Method,
        timeout: Option<Duration>,
        encode: Encoder<'_>,
        decode: AnswerDecoder<R>,
    ) -> Result<PendingReply<R, T>, RpcError> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let env = request_envelope(method, MessageKind::Call, timeout);
        let pending = self
            .neg
            .with_message(env, encode, "request", method, |bytes| {
                self.link.start_call(bytes)
            })?
            .map_err(|e| method.error(e))?;
        Ok(PendingReply {
            pending,
            decode,
            method,
            neg: self.neg.clone(),
            deadline,
        })
    }

    /// Calls `method` with `body` as it is (raw bytes), written straight into the transport's
    /// record when it fits one (`call_with`); decodes the answer with `decode`.
    ///
    /// # Errors
    /// As [`call`](Self::call).
    pub fn call_raw<R>(
        &self,
        method: &'static Method,
        timeout: Option<Duration>,
        body: &[u8],
        decode: impl FnOnce(&[u8]) -> Result<R, CodecError>,
    ) -> Result<R, RpcError> {
        let mut env = Envelope::new(MessageKind::Call, crate::CodecId::Raw, method.id);
        env.budget_us = budget(timeout);
        env.flags = self.neg.own_flags();
        let answer = self
            .link
            .call_with(
                ENVELOPE_LEN + body.len(),
                &mut |dst: &mut [u8]| {
                    env.write(dst);
                    dst[ENVELOPE_LEN..].copy_from_slice(body);
                },
                timeout,
            )
            .map_err(|e| method.error(e))?;
        self.neg
            .open(&answer, MessageKind::Response, method, decode)
    }

    /// Starts a streamed call of `method`; items are decoded with `decode`.
    ///
    /// # Errors
    /// As [`call`](Self::call), for sending the request.
    pub fn stream<I>(
        &self,
        method: &'static Method,
        timeout: Option<Duration>,
        encode: Encoder<'_>,
        decode: ItemDecoder<I>,
    ) -> Result<TypedStream<I, T>, RpcError> {
        let env = request_envelope(method, MessageKind::Stream, timeout);
        let items = self
            .neg
            .with_message(env, encode, "request", method, |bytes| {
                self.link.stream(bytes)
            })?
            .map_err(|e| method.error(e))?;
        Ok(TypedStream {
            items: Some(items),
            buf: Vec::new(),
            decode,
            method,
            neg: self.neg.clone(),
            deadline: timeout.map(|t| (Instant::now() + t, t)),
        })
    }

    /// Sends a notification of `method`.
    ///
    /// # Errors
    /// The transport's failure, or a value that does not encode.
    pub fn notify(&self, method: &'static Method, encode: Encoder<'_>) -> Result<(), RpcError> {
        let env = Envelope::new(MessageKind::Notification, method.codec, method.id);
        self.neg
            .with_message(env, encode, "notification", method, |bytes| {
                self.link.notify(bytes)
            })?
            .map_err(RpcError::Transport)
    }
}

/// The typed items of a streamed call: an iterator of `Result<item, RpcError>`. Dropping it
/// before its end cancels the stream on the server.
pub struct TypedStream<I, T: Transport = ferry_transport::Client> {
    items: Option<T::Items>,
    buf: Vec<u8>,
    decode: ItemDecoder<I>,
    method: &'static Method,
    neg: Arc<Negotiation>,
    deadline: Option<(Instant, Duration)>,
}

impl<I, T: Transport> std::fmt::Debug for TypedStream<I, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedStream")
            .field("method", &self.method.qualified)
            .field("finished", &self.items.is_none())
            .finish_non_exhaustive()
    }
}

impl<I, T: Transport> TypedStream<I, T> {
    /// Stops the stream (cancels it on the server).
    pub fn cancel(mut self) {
        self.items = None;
    }
}

impl<I, T: Transport> Iterator for TypedStream<I, T> {
    type Item = Result<I, RpcError>;

    fn next(&mut self) -> Option<Self::Item> {
        let items = self.items.as_mut()?;
        if let Some((d, t)) = self.deadline
            && Instant::now() >= d
        {
            self.items = None; // cancels on the server
            return Some(Err(RpcError::Transport(ferry_transport::Error::Timeout(t))));
        }
        match items.next_into(&mut self.buf) {
            Ok(true) => {
                let r = self
                    .neg
                    .open(&self.buf, MessageKind::StreamItem, self.method, self.decode);
                if r.is_err() {
                    self.items = None;
                }
                Some(r)
            }
            Ok(false) => {
                self.items = None;
                None
            }
            Err(e) => {
                self.items = None;
                Some(Err(self.method.error(e)))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// async

/// The async twin of [`Client`] (tokio): cheap to clone, `Send + Sync`, and it may share its
/// connection with a blocking [`Client`].
pub struct AsyncClient<T: AsyncTransport = FerryAsyncClient> {
    link: Arc<T>,
    neg: Arc<Negotiation>,
}

impl<T: AsyncTransport> Clone for AsyncClient<T> {
    fn clone(&self) -> Self {
        AsyncClient {
            link: self.link.clone(),
            neg: self.neg.clone(),
        }
    }
}

impl<T: AsyncTransport> std::fmt::Debug for AsyncClient<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncClient")
            .field("config", &self.neg.config)
            .finish_non_exhaustive()
    }
}

/// A typed call started with [`Client::start_call`] (or a generated client's `start_*`
/// method) whose answer has not been collected yet.
///
/// [`wait`](Self::wait) collects and decodes the answer. Dropping it without waiting cancels
/// the call: the transport frees its slot at once (a late answer is discarded) and tells the
/// server, whose handler sees the cancellation (`Context::is_cancelled`).
#[must_use = "dropping a PendingReply cancels the call"]
pub struct PendingReply<R, T: Transport = ferry_transport::Client> {
    pending: T::Pending,
    decode: AnswerDecoder<R>,
    method: &'static Method,
    neg: Arc<Negotiation>,
    /// The call's deadline, from when it started.
    deadline: Option<Instant>,
}

impl<R, T: Transport> std::fmt::Debug for PendingReply<R, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingReply")
            .field("method", &self.method.qualified)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl<R, T: Transport> PendingReply<R, T> {
    /// Waits for the answer and decodes it. With a deadline (the client's timeout when the
    /// call started, counted from then), waits only until it, then cancels the call and fails
    /// with [`RpcError::Transport`]`(`[`Error::Timeout`](ferry_transport::Error::Timeout)`)`
    /// (or [`RpcError::DeadlineExceeded`] when the server's side of the deadline fired first).
    ///
    /// # Errors
    /// As [`Client::call`]: the transport's failure, the server's typed error, or a bad answer.
    pub fn wait(self) -> Result<R, RpcError> {
        let PendingReply {
            pending,
            decode,
            method,
            neg,
            deadline,
        } = self;
        let answer = match deadline {
            None => pending.wait(),
            Some(d) => pending.wait_timeout(d.saturating_duration_since(Instant::now())),
        }
        .map_err(|e| method.error(e))?;
        neg.open(&answer, MessageKind::Response, method, decode)
    }

    /// The method called.
    pub fn method(&self) -> &'static Method {
        self.method
    }

    /// When the call's deadline passes, if it has one.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

impl AsyncClient {
    /// Connects to service `name` (the handshake runs on tokio's blocking pool).
    ///
    /// # Errors
    /// As `ferry_transport::tokio::AsyncClient::connect_with`.
    pub async fn connect(
        name: &str,
        mut config: ClientConfig,
        rpc: RpcConfig,
        pushes: Option<PushCallback>,
    ) -> Result<AsyncClient, RpcError> {
        if let Some(p) = pushes {
            config.on_notification = Some(Arc::new(move |bytes: &[u8]| p(bytes)));
        }
        let link = FerryAsyncClient::connect_with(name, config).await?;
        Ok(AsyncClient::over(link, rpc))
    }

    /// An async client over the connection of a blocking one (same negotiation).
    pub fn from_blocking(client: &Client) -> AsyncClient {
        AsyncClient {
            link: Arc::new(FerryAsyncClient::from(client.transport().clone())),
            neg: client.neg.clone(),
        }
    }
}

impl<T: AsyncTransport> AsyncClient<T> {
    /// A typed async client over `link`.
    pub fn over(link: T, rpc: RpcConfig) -> AsyncClient<T> {
        AsyncClient {
            link: Arc::new(link),
            neg: Arc::new(Negotiation::new(rpc)),
        }
    }

    fn encode_owned(
        &self,
        env: Envelope,
        encode: Encoder<'_>,
        what: &'static str,
        method: &'static Method,
    ) -> Result<Vec<u8>, RpcError> {
        self.neg
            .with_message(env, encode, what, method, <[u8]>::to_vec)
    }

    /// As [`Client::call`]; dropping the future cancels the call on the server. The request
    /// is encoded before the future is returned (so the future holds bytes, not the value).
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn call<'s, R: Send + 's>(
        &'s self,
        method: &'static Method,
        timeout: Option<Duration>,
        encode: Encoder<'_>,
        decode: impl FnOnce(&[u8]) -> Result<R, CodecError> + Send + 's,
    ) -> impl Future<Output = Result<R, RpcError>> + Send + 's {
        let env = request_envelope(method, MessageKind::Call, timeout);
        let bytes = self.encode_owned(env, encode, "request", method);
        async move {
            let bytes = bytes?;
            let answer = self
                .link
                .call(&bytes, timeout)
                .await
                .map_err(|e| method.error(e))?;
            self.neg
                .open(&answer, MessageKind::Response, method, decode)
        }
    }

    /// As [`Client::stream`]; dropping the stream cancels it on the server.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn stream<'s, I: 's>(
        &'s self,
        method: &'static Method,
        timeout: Option<Duration>,
        encode: Encoder<'_>,
        decode: ItemDecoder<I>,
    ) -> impl Future<Output = Result<AsyncTypedStream<I, T>, RpcError>> + Send + 's {
        let env = request_envelope(method, MessageKind::Stream, timeout);
        let bytes = self.encode_owned(env, encode, "request", method);
        async move {
            let bytes = bytes?;
            let items = self
                .link
                .stream(&bytes)
                .await
                .map_err(|e| method.error(e))?;
            Ok(AsyncTypedStream {
                items: Some(items),
                decode,
                method,
                neg: self.neg.clone(),
            })
        }
    }

    /// As [`Client::notify`].
    ///
    /// # Errors
    /// As [`Client::notify`].
    pub fn notify<'s>(
        &'s self,
        method: &'static Method,
        encode: Encoder<'_>,
    ) -> impl Future<Output = Result<(), RpcError>> + Send + 's {
        let env = Envelope::new(MessageKind::Notification, method.codec, method.id);
        let bytes = self.encode_owned(env, encode, "notification", method);
        async move { self.link.notify(&bytes?).await.map_err(RpcError::Transport) }
    }
}

/// The typed items of an async streamed call: a [`futures_core::Stream`] of
/// `Result<item, RpcError>`. Dropping it before its end cancels the stream on the server.
pub struct AsyncTypedStream<I, T: AsyncTransport = FerryAsyncClient> {
    items: Option<T::Items>,
    decode: ItemDecoder<I>,
    method: &'static Method,
    neg: Arc<Negotiation>,
}

impl<I, T: AsyncTransport> std::fmt::Debug for AsyncTypedStream<I, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncTypedStream")
            .field("method", &self.method.qualified)
            .finish_non_exhaustive()
    }
}

impl<I, T: AsyncTransport> AsyncTypedStream<I, T> {
    /// The next item, `None` at the end.
    pub async fn next(&mut self) -> Option<Result<I, RpcError>> {
        std::future::poll_fn(|cx| self.poll_item(cx)).await
    }

    fn poll_item(&mut self, cx: &mut TaskContext<'_>) -> Poll<Option<Result<I, RpcError>>> {
        let Some(items) = self.items.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(items).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                self.items = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(bytes))) => {
                let r = self
                    .neg
                    .open(&bytes, MessageKind::StreamItem, self.method, self.decode);
                if r.is_err() {
                    self.items = None;
                }
                Poll::Ready(Some(r))
            }
            Poll::Ready(Some(Err(e))) => {
                self.items = None;
                Poll::Ready(Some(Err(self.method.error(e))))
            }
        }
    }
}

impl<I, T: AsyncTransport> futures_core::Stream for AsyncTypedStream<I, T> {
    type Item = Result<I, RpcError>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_item(cx)
    }
}
