//! Every connection makes progress or is closed.
//!
//! hyper's header timeout covers an HTTP/1 request head, but not the bytes before hyper-util
//! has told HTTP/1 from HTTP/2, nor an HTTP/2 connection (pings and window updates keep one
//! busy without ever completing a request), nor a client that stops reading a response. So
//! each connection's socket is wrapped in [`Watched`], which fails the connection when:
//!
//! - no request is in flight and none has begun within the idle timeout of the connection
//!   opening or of the last request ending (the first-bytes deadline, idle keep-alive and
//!   HTTP/2 connections included); a request in flight is bounded by its own limits instead
//!   (body timeouts, the plugin's deadline);
//! - a write has waited on the client for longer than the write timeout (it stopped reading).
//!
//! A request counts as in flight from the moment hyper hands it to the service until its
//! response body is finished or dropped ([`InFlight`]), so a long streamed response or a
//! live log stream keeps its connection.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// What one connection's requests tell its socket.
#[derive(Debug)]
pub struct Connection {
    in_flight: AtomicUsize,
    /// When the connection last had no request in flight (opened, or its last request ended).
    idle_since: Mutex<Instant>,
}

impl Connection {
    /// A connection just opened.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        })
    }

    /// Marks a request as begun; it ends when the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// When the connection must see a new request by, if none is in flight.
    fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = *self
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Some(since + timeout)
    }
}

/// A request in flight on its connection; dropped with the response body (or with the
/// request, if it never got a response).
#[derive(Debug)]
pub struct InFlight(Arc<Connection>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut since = self
            .0
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            *since = Instant::now();
        }
    }
}

/// A response body that keeps its request in flight until it is finished or dropped.
pub struct TrackedBody<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> TrackedBody<B> {
    /// `inner`, holding `in_flight` as long as it lives.
    pub fn new(inner: B, in_flight: InFlight) -> Self {
        Self {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A socket failing with `TimedOut` when its connection stops making progress (see the
/// module docs).
pub struct Watched<S> {
    inner: S,
    connection: Arc<Connection>,
    idle_timeout: Duration,
    write_timeout: Duration,
    idle: Pin<Box<Sleep>>,
    /// Armed while a write waits on the client.
    write_stall: Option<Pin<Box<Sleep>>>,
}

impl<S> Watched<S> {
    /// Watches `inner`, the socket of `connection`.
    pub fn new(
        inner: S,
        connection: Arc<Connection>,
        idle_timeout: Duration,
        write_timeout: Duration,
    ) -> Self {
        Self {
            inner,
            connection,
            idle_timeout,
            write_timeout,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            write_stall: None,
        }
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_string())
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if polled.is_pending()
            && let Some(deadline) = this.connection.idle_deadline(this.idle_timeout)
        {
            if this.idle.deadline() != deadline {
                this.idle.as_mut().reset(deadline);
            }
            if this.idle.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(timed_out("no request within the idle timeout")));
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> Watched<S> {
    /// Keeps the write-stall timer: armed while writes wait, cleared when one goes through.
    fn watch_write<T>(&mut self, cx: &mut Context<'_>, polled: Poll<T>) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.write_stall = None;
            return polled.map(Ok);
        }
        let timeout = self.write_timeout;
        let stall = self
            .write_stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if stall.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(timed_out("the client stopped reading")));
        }
        Poll::Pending
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        self.watch_write(cx, polled)
            .map(|r| r.and_then(|inner| inner))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch_write(cx, polled)
            .map(|r| r.and_then(|inner| inner))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch_write(cx, polled)
            .map(|r| r.and_then(|inner| inner))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_while_no_request_is_in_flight() {
        let connection = Connection::new();
        let timeout = Duration::from_secs(10);
        let opened = Instant::now();
        assert_eq!(connection.idle_deadline(timeout), Some(opened + timeout));
        let first = connection.begin();
        let second = connection.begin();
        assert_eq!(connection.idle_deadline(timeout), None);
        tokio::time::advance(Duration::from_secs(30)).await;
        drop(first);
        assert_eq!(connection.idle_deadline(timeout), None);
        drop(second);
        // The idle clock starts again when the last request ends, not when the socket opened.
        assert_eq!(
            connection.idle_deadline(timeout),
            Some(opened + Duration::from_secs(30) + timeout)
        );
    }
}
