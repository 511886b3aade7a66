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
//! - a write has waited on the client for longer than the write timeout (it stopped reading);
//! - a response body frame has waited that long to be sent: an HTTP/2 client that never opens
//!   its flow-control window stops the response without ever blocking a socket write.
//!
//! A request counts as in flight from the moment hyper hands it to the service until its
//! response body is finished or dropped ([`InFlight`]), so a long streamed response or a
//! live log stream keeps its connection.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// What one connection's requests tell its socket.
#[derive(Debug)]
pub(super) struct Connection {
    in_flight: AtomicUsize,
    /// When the connection last had no request in flight (opened, or its last request ended).
    idle_since: Mutex<Instant>,
    /// Response bodies with a frame handed to hyper and not yet taken up, by body, since when.
    sending: Mutex<Vec<(u64, Instant)>>,
    next_body: AtomicU64,
    /// The task reading the socket, woken when the connection turns idle so it arms its idle
    /// timer (an HTTP/2 stream ends in a task of its own).
    reader: Mutex<Option<Waker>>,
}

impl Connection {
    /// A connection just opened.
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            sending: Mutex::new(Vec::new()),
            next_body: AtomicU64::new(0),
            reader: Mutex::new(None),
        })
    }

    /// Marks a request as begun; it ends when the guard is dropped.
    pub(super) fn begin(self: &Arc<Self>) -> InFlight {
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

    /// When the oldest response frame waiting to be sent has waited too long.
    fn send_deadline(&self, timeout: Duration) -> Option<Instant> {
        let sending = self.sending.lock().unwrap_or_else(PoisonError::into_inner);
        sending.iter().map(|(_, since)| *since + timeout).min()
    }

    /// Records whether `body` has a frame waiting to be sent. The reader is not woken: its
    /// timer re-reads the deadline whenever it fires, and a waiting HTTP/2 frame is noticed by
    /// the next keep-alive ping at the latest (an HTTP/1 write that waits has its own timer).
    fn sending(&self, body: u64, waiting: bool) {
        let mut sending = self.sending.lock().unwrap_or_else(PoisonError::into_inner);
        if sending.is_empty() && !waiting {
            return;
        }
        sending.retain(|(id, _)| *id != body);
        if waiting {
            sending.push((body, Instant::now()));
        }
    }

    fn wake_reader(&self) {
        let reader = self.reader.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(waker) = reader.as_ref() {
            waker.wake_by_ref();
        }
    }

    /// Keeps `waker` as the reader's; returns whether it is another task's than before.
    fn set_reader(&self, waker: &Waker) -> bool {
        let mut reader = self.reader.lock().unwrap_or_else(PoisonError::into_inner);
        if reader.as_ref().is_some_and(|w| w.will_wake(waker)) {
            return false;
        }
        *reader = Some(waker.clone());
        true
    }
}

/// A request in flight on its connection; dropped with the response body (or with the
/// request, if it never got a response).
#[derive(Debug)]
pub(super) struct InFlight(Arc<Connection>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut since = self
            .0
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            *since = Instant::now();
            drop(since);
            // The connection is idle now: its reader must arm the idle timer.
            self.0.wake_reader();
        }
    }
}

/// A response body that keeps its request in flight until it is finished or dropped, and
/// tells its connection while a frame it produced waits to be sent.
pub(super) struct TrackedBody<B> {
    inner: B,
    id: u64,
    in_flight: InFlight,
}

impl<B> TrackedBody<B> {
    /// `inner`, holding `in_flight` as long as it lives.
    pub(super) fn new(inner: B, in_flight: InFlight) -> Self {
        Self {
            inner,
            id: in_flight.0.next_body.fetch_add(1, Ordering::Relaxed),
            in_flight,
        }
    }
}

impl<B> Drop for TrackedBody<B> {
    fn drop(&mut self) {
        self.in_flight.0.sending(self.id, false);
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        // Asked for the next frame: the last one was taken up.
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let waiting = matches!(&polled, Poll::Ready(Some(Ok(frame))) if frame.is_data());
        this.in_flight.0.sending(this.id, waiting);
        polled
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
pub(super) struct Watched<S> {
    inner: S,
    connection: Arc<Connection>,
    idle_timeout: Duration,
    write_timeout: Duration,
    idle: Pin<Box<Sleep>>,
    /// Whether `idle` was polled (so holds the reader's waker) since it was last armed: a
    /// read that finds nothing to do then leaves it alone instead of polling it again, which
    /// costs a visit to the timer wheel on every request of a busy connection.
    idle_registered: bool,
    /// Armed while a write waits on the client.
    write_stall: Option<Pin<Box<Sleep>>>,
}

impl<S> Watched<S> {
    /// Watches `inner`, the socket of `connection`.
    pub(super) fn new(
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
            idle_registered: false,
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
        if polled.is_ready() {
            return polled;
        }
        if this.connection.set_reader(cx.waker()) {
            this.idle_registered = false;
        }
        let idle = this.connection.idle_deadline(this.idle_timeout);
        let send = this.connection.send_deadline(this.write_timeout);
        let Some(deadline) = idle.into_iter().chain(send).min() else {
            return polled;
        };
        // The timer is moved only when it would fire too late: one armed earlier fires, finds
        // the deadline not reached and is re-armed, which costs one wake-up per timeout
        // instead of a timer reset on every request of a busy keep-alive connection.
        if this.idle.is_elapsed() || this.idle.deadline() > deadline {
            this.idle.as_mut().reset(deadline);
            this.idle_registered = false;
        }
        if this.idle_registered {
            return polled;
        }
        this.idle_registered = true;
        while this.idle.as_mut().poll(cx).is_ready() {
            if Instant::now() >= deadline {
                let why = if send == Some(deadline) {
                    "the client took no response data within the write timeout"
                } else {
                    "no request within the idle timeout"
                };
                return Poll::Ready(Err(timed_out(why)));
            }
            this.idle.as_mut().reset(deadline);
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

    #[tokio::test(start_paused = true)]
    async fn a_response_frame_waiting_to_be_sent_has_a_deadline_until_the_next_is_asked_for() {
        use http_body_util::BodyExt;
        let connection = Connection::new();
        let timeout = Duration::from_secs(10);
        let (sender, frames) = tokio::sync::mpsc::channel(4);
        let send = |data: &'static [u8]| {
            let frame = http_body::Frame::data(bytes::Bytes::from_static(data));
            sender.try_send(Ok::<_, std::convert::Infallible>(frame))
        };
        let frames = tokio_stream::wrappers::ReceiverStream::new(frames);
        let mut body =
            TrackedBody::new(http_body_util::StreamBody::new(frames), connection.begin());
        send(b"a").unwrap();
        assert_eq!(connection.send_deadline(timeout), None);
        let handed = Instant::now();
        let frame = body.frame().await.unwrap().unwrap();
        assert!(frame.is_data());
        // hyper holds the frame (an HTTP/2 window at zero): the deadline runs.
        assert_eq!(connection.send_deadline(timeout), Some(handed + timeout));
        // Asked for the next: the frame went out. Waiting on the application is not a stall.
        tokio::time::advance(Duration::from_secs(1)).await;
        let next = tokio::time::timeout(Duration::from_millis(10), body.frame()).await;
        assert!(next.is_err());
        assert_eq!(connection.send_deadline(timeout), None);
        send(b"b").unwrap();
        body.frame().await.unwrap().unwrap();
        assert!(connection.send_deadline(timeout).is_some());
        drop(body);
        assert_eq!(connection.send_deadline(timeout), None);
    }
}
