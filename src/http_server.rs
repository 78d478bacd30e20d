//! Serving HTTP/1.1 on a listener with the limits a public endpoint needs: a bound on the
//! time a client may take to send a request's head and its body, an idle keep-alive timeout,
//! and a maximum number of concurrent connections. Every listener of a node goes through
//! [`serve`]: the catalog API, the control-plane voter and the embedded S3 endpoint.
//!
//! How each limit works:
//!
//! - **Header read timeout.** A new connection must deliver a complete request head within
//!   `header_read_timeout` of being accepted; on a kept-alive connection the clock starts at
//!   the first byte of the next request. A client that is late is disconnected (no answer:
//!   it has not said what it wants yet). hyper's own `header_read_timeout` (with a
//!   [`TokioTimer`]) is set too, to `header_read_timeout + idle_timeout`, as a backstop: it
//!   runs from the end of the previous answer, so it never cuts a connection these rules keep.
//! - **Body read timeout.** The body is wrapped in a [`TimedBody`]: with [`BodyTimeout::Total`]
//!   the whole body must arrive within the timeout from the end of the head; with
//!   [`BodyTimeout::BetweenReads`] (large uploads, the embedded S3 endpoint) each part of it
//!   within the timeout of the previous one. A late body fails the read, and whatever the
//!   handler answered is replaced by the listener's timeout answer (the catalog: 408 in the
//!   Iceberg error model) with `Connection: close`.
//! - **Idle timeout.** A kept-alive connection without a request in progress is closed after
//!   `idle_timeout`.
//! - **Connection limit.** At most `max_connections` connections are served at once. Beyond
//!   that the listener stops accepting: new connections wait in the kernel's accept backlog
//!   (and are served as soon as a slot frees), as HAProxy's `maxconn`, Go's
//!   `netutil.LimitListener` and Tomcat's `maxConnections` do. Waiting clients keep their own
//!   connect/read timeouts, a burst is absorbed instead of refused, and once the backlog is
//!   full the kernel pushes back on new connections by itself. Closing the extra connections
//!   at once would turn every short burst into errors that clients retry immediately, which
//!   makes an overload worse.
//!
//! Shutdown: when the token fires the listener is closed, every connection is asked to finish
//! its request in progress and close ([`hyper::server::conn::http1::Connection::graceful_shutdown`]),
//! and [`serve`] returns once all are closed, or after `shutdown_grace`, when the remaining
//! ones are cut.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderMap, HeaderValue, CONNECTION, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Largest accepted `max_connections` (a tokio semaphore holds far more; this is a sanity bound).
pub const MAX_CONNECTIONS_LIMIT: usize = 1_000_000;

/// How long a request body may take to arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyTimeout {
    /// The whole body must arrive within this time of the end of the request head.
    Total(Duration),
    /// Each part of the body must arrive within this time of the previous one (or of the
    /// head): uploads of any size at any steady rate, but no stalls.
    BetweenReads(Duration),
}

impl BodyTimeout {
    fn duration(self) -> Duration {
        match self {
            BodyTimeout::Total(d) | BodyTimeout::BetweenReads(d) => d,
        }
    }
}

/// The limits of one listener; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    pub header_read_timeout: Duration,
    pub body_timeout: BodyTimeout,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// How long shutdown waits for connections to finish their request in progress.
    pub shutdown_grace: Duration,
}

/// `catalog.header_read_timeout_ms` default.
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// `catalog.body_read_timeout_ms` default.
pub const DEFAULT_BODY_READ_TIMEOUT_MS: u64 = 60_000;
/// `catalog.idle_timeout_ms` default: longer than the 90 s for which reqwest (the
/// region-to-region client) keeps an idle pooled connection, so that side closes first.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 120_000;
/// `catalog.max_connections` default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: Duration::from_millis(DEFAULT_HEADER_READ_TIMEOUT_MS),
            body_timeout: BodyTimeout::Total(Duration::from_millis(DEFAULT_BODY_READ_TIMEOUT_MS)),
            idle_timeout: Duration::from_millis(DEFAULT_IDLE_TIMEOUT_MS),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

impl HttpLimits {
    /// The limits of the catalog listener, from `[catalog]`.
    pub fn from_catalog(c: &crate::config::CatalogSection) -> HttpLimits {
        HttpLimits {
            header_read_timeout: Duration::from_millis(c.header_read_timeout_ms),
            body_timeout: BodyTimeout::Total(Duration::from_millis(c.body_read_timeout_ms)),
            idle_timeout: Duration::from_millis(c.idle_timeout_ms),
            max_connections: c.max_connections,
            ..HttpLimits::default()
        }
    }

    /// The same limits for a listener that takes large uploads (the embedded S3 endpoint):
    /// the body timeout bounds each pause in the body rather than the whole of it.
    pub fn for_uploads(self) -> HttpLimits {
        HttpLimits {
            body_timeout: BodyTimeout::BetweenReads(self.body_timeout.duration()),
            ..self
        }
    }
}

/// Warns when `max_connections` is above the process's open-file limit: the listener would
/// run out of file descriptors (accept fails, and so do the node's own outgoing connections)
/// before it reaches its connection limit.
pub fn warn_if_above_open_file_limit(max_connections: usize) {
    use nix::sys::resource::{getrlimit, Resource};
    if let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if u64::try_from(max_connections).unwrap_or(u64::MAX) >= soft {
            tracing::warn!(
                max_connections,
                open_file_limit = soft,
                "catalog.max_connections is not below the open-file limit: raise `ulimit -n` \
                 (e.g. LimitNOFILE in systemd) or lower catalog.max_connections"
            );
        }
    }
}

/// Builds the answer that replaces a handler's answer when the request body timed out. It
/// gets the handler's answer headers (to copy e.g. its `x-request-id`).
pub type TimeoutAnswer = fn(&HeaderMap, Duration) -> Response<Full<Bytes>>;

/// 408 in the Iceberg error model, with the request id of the replaced answer.
pub fn iceberg_timeout_answer(replaced: &HeaderMap, timeout: Duration) -> Response<Full<Bytes>> {
    let id = replaced.get(crate::api::request_id::HEADER).cloned();
    let mut message = format!(
        "The request body was not received within {} ms",
        timeout.as_millis()
    );
    if let Some(id) = id.as_ref().and_then(|v| v.to_str().ok()) {
        message.push_str(&format!("; request id {id}"));
    }
    let body = serde_json::json!({"error": {
        "message": message,
        "type": "RequestTimeoutException",
        "code": 408,
    }});
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = StatusCode::REQUEST_TIMEOUT;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(id) = id {
        resp.headers_mut()
            .insert(crate::api::request_id::HEADER, id);
    }
    resp
}

/// S3's own answer to a stalled upload (`RequestTimeout`, 400).
pub fn s3_timeout_answer(_replaced: &HeaderMap, _timeout: Duration) -> Response<Full<Bytes>> {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>RequestTimeout</Code>\
                <Message>Your socket connection to the server was not read from or written to \
                within the timeout period.</Message></Error>";
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = StatusCode::BAD_REQUEST;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    resp
}

/// Serves `service` on `listener` with `limits` until `shutdown` fires, then drains (see the
/// module documentation). `name` names the listener in logs.
pub async fn serve<S, B>(
    name: &'static str,
    listener: TcpListener,
    service: S,
    limits: HttpLimits,
    timeout_answer: TimeoutAnswer,
    shutdown: CancellationToken,
) where
    S: tower::Service<Request<TimedBody>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let max = limits.max_connections.clamp(1, MAX_CONNECTIONS_LIMIT);
    let slots = Arc::new(Semaphore::new(max));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(limits.header_read_timeout + limits.idle_timeout);
    let http = Arc::new(http);
    // Fired after the grace period: cut the connections still open.
    let cut = CancellationToken::new();
    let mut warned_full: Option<Instant> = None;
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if warned_full.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    warned_full = Some(Instant::now());
                    tracing::warn!(
                        listener = name,
                        max_connections = max,
                        "connection limit reached: new connections wait in the accept backlog"
                    );
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    () = shutdown.cancelled() => break,
                }
            }
        };
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // E.g. out of file descriptors: wait instead of spinning.
                    tracing::error!(listener = name, error = %e, "accept failed");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        () = shutdown.cancelled() => break,
                    }
                }
            },
            () = shutdown.cancelled() => break,
        };
        // Small answers must not wait for Nagle's timer.
        let _ = socket.set_nodelay(true);
        let conn = Connection {
            http: http.clone(),
            service: service.clone(),
            limits,
            timeout_answer,
            shutdown: shutdown.clone(),
            cut: cut.clone(),
        };
        tokio::spawn(async move {
            conn.run(socket).await;
            drop(slot);
        });
    }
    // Stop accepting: connections still in the backlog are refused rather than left waiting.
    drop(listener);
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.shutdown_grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            listener = name,
            open = max.saturating_sub(slots.available_permits()),
            "connections still open after the shutdown grace period: closing them"
        );
        cut.cancel();
    }
}

/// Accept errors that concern one connection only (axum's `serve` skips the same ones).
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// One accepted connection and what it needs to serve it.
struct Connection<S> {
    http: Arc<hyper::server::conn::http1::Builder>,
    service: S,
    limits: HttpLimits,
    timeout_answer: TimeoutAnswer,
    shutdown: CancellationToken,
    cut: CancellationToken,
}

impl<S, B> Connection<S>
where
    S: tower::Service<Request<TimedBody>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    async fn run(self, socket: TcpStream) {
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(WatchedStream {
            inner: socket,
            activity: activity.clone(),
        });
        let service = self.service;
        let body_timeout = self.limits.body_timeout;
        let timeout_answer = self.timeout_answer;
        let watched = activity.clone();
        let handler = hyper::service::service_fn(move |req: Request<Incoming>| {
            handle(
                req,
                service.clone(),
                watched.clone(),
                body_timeout,
                timeout_answer,
            )
        });
        let conn = self.http.serve_connection(io, handler);
        tokio::pin!(conn);
        let mut closing = false;
        loop {
            let deadline = activity.deadline(&self.limits);
            let expired = async {
                match deadline {
                    Some((at, _)) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                served = conn.as_mut() => {
                    if let Err(e) = served {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                () = activity.changed.notified() => {}
                () = expired => {
                    // Re-check: a request may have started while the timer fired.
                    if let Some((at, why)) = activity.deadline(&self.limits) {
                        if at <= Instant::now() {
                            tracing::debug!(reason = why, "closing connection");
                            return;
                        }
                    }
                }
                () = self.shutdown.cancelled(), if !closing => {
                    if activity.awaiting_head() {
                        // No request to finish: a half-sent head is not one.
                        return;
                    }
                    // Finish the request in progress (or the answer being written), then close.
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                () = self.cut.cancelled() => return,
            }
        }
    }
}

/// Serves one request: counts it in flight, bounds its body, and swaps the answer for the
/// timeout answer when the body came too late.
async fn handle<S, B>(
    req: Request<Incoming>,
    service: S,
    activity: Arc<Activity>,
    body_timeout: BodyTimeout,
    timeout_answer: TimeoutAnswer,
) -> Result<Response<GuardedBody<Either<B, Full<Bytes>>>>, BoxError>
where
    S: tower::Service<Request<TimedBody>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let guard = InFlight::enter(activity);
    let timed_out = Arc::new(AtomicBool::new(false));
    let req = req.map(|body| TimedBody::new(body, body_timeout, timed_out.clone()));
    let resp = tower::ServiceExt::oneshot(service, req)
        .await
        .map_err(Into::into)?;
    let resp = if timed_out.load(Ordering::Acquire) {
        let mut late = timeout_answer(resp.headers(), body_timeout.duration());
        late.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        late.map(Either::Right)
    } else {
        resp.map(Either::Left)
    };
    Ok(resp.map(|body| GuardedBody {
        inner: body,
        guard: Some(guard),
    }))
}

/// What a connection is doing, for its timeouts.
struct Activity {
    state: Mutex<ActivityState>,
    /// Signalled when the deadline may have moved (a request started or ended, a head began).
    changed: Notify,
}

struct ActivityState {
    /// Requests handed to the service and not answered yet.
    in_flight: usize,
    /// When the head of the next request began to arrive (or the connection was accepted).
    head_started: Option<Instant>,
    /// When the last request was answered.
    idle_since: Instant,
}

impl Activity {
    fn new() -> Activity {
        let now = Instant::now();
        Activity {
            state: Mutex::new(ActivityState {
                in_flight: 0,
                // A new connection owes its first request's head from the start.
                head_started: Some(now),
                idle_since: now,
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When the connection is to be closed, and why; none while a request is in progress.
    fn deadline(&self, limits: &HttpLimits) -> Option<(Instant, &'static str)> {
        let s = self.lock();
        if s.in_flight > 0 {
            None
        } else if let Some(t) = s.head_started {
            Some((
                t + limits.header_read_timeout,
                "request head not received within header_read_timeout",
            ))
        } else {
            Some((s.idle_since + limits.idle_timeout, "idle_timeout"))
        }
    }

    /// True when no request is in progress and the next one's head is due (not yet complete).
    fn awaiting_head(&self) -> bool {
        let s = self.lock();
        s.in_flight == 0 && s.head_started.is_some()
    }

    fn bytes_read(&self) {
        let mut s = self.lock();
        if s.in_flight == 0 && s.head_started.is_none() {
            s.head_started = Some(Instant::now());
            drop(s);
            self.changed.notify_one();
        }
    }
}

/// A request being served; its drop (the answer sent, or abandoned) ends it.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn enter(activity: Arc<Activity>) -> InFlight {
        {
            let mut s = activity.lock();
            s.in_flight += 1;
            s.head_started = None;
        }
        activity.changed.notify_one();
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        {
            let mut s = self.0.lock();
            s.in_flight = s.in_flight.saturating_sub(1);
            s.idle_since = Instant::now();
        }
        self.0.changed.notify_one();
    }
}

/// The socket, noting when the bytes of a new request arrive.
struct WatchedStream {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for WatchedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Why reading a request body failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("{0}")]
    Read(#[from] hyper::Error),
    #[error("request body not received within {} ms", .0.as_millis())]
    TimedOut(Duration),
}

/// A request body with a deadline ([`BodyTimeout`]).
pub struct TimedBody {
    inner: Incoming,
    timeout: BodyTimeout,
    /// When the body (Total) or its next part (BetweenReads) is due.
    due: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
    timed_out: Arc<AtomicBool>,
    failed: bool,
}

impl TimedBody {
    fn new(inner: Incoming, timeout: BodyTimeout, timed_out: Arc<AtomicBool>) -> TimedBody {
        TimedBody {
            inner,
            timeout,
            due: Instant::now() + timeout.duration(),
            sleep: None,
            timed_out,
            failed: false,
        }
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let BodyTimeout::BetweenReads(d) = this.timeout {
                    this.due = Instant::now() + d;
                    if let Some(sleep) = this.sleep.as_mut() {
                        sleep.as_mut().reset(this.due);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.failed = true;
                Poll::Ready(Some(Err(BodyError::Read(e))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let due = this.due;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.failed = true;
                        this.timed_out.store(true, Ordering::Release);
                        Poll::Ready(Some(Err(BodyError::TimedOut(this.timeout.duration()))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An answer body that keeps its request counted in flight until it is sent (or dropped).
pub struct GuardedBody<B> {
    inner: B,
    guard: Option<InFlight>,
}

impl<B> Body for GuardedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn parse(env: &[(&str, &str)]) -> Result<Config, String> {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>();
        Config::parse(crate::dev::US_EAST_1_TOML, "x", env).map_err(|e| e.to_string())
    }

    #[test]
    fn catalog_limits_have_safe_defaults_and_env_overrides() {
        let c = parse(&[]).unwrap();
        assert_eq!(HttpLimits::from_catalog(&c.catalog), HttpLimits::default());
        let l = HttpLimits::default();
        assert_eq!(l.header_read_timeout, Duration::from_secs(10));
        assert_eq!(l.body_timeout, BodyTimeout::Total(Duration::from_secs(60)));
        assert_eq!(l.idle_timeout, Duration::from_secs(120));
        assert_eq!(l.max_connections, 10_000);
        let c = parse(&[
            ("PANGOLIN_CATALOG__HEADER_READ_TIMEOUT_MS", "500"),
            ("PANGOLIN_CATALOG__BODY_READ_TIMEOUT_MS", "1500"),
            ("PANGOLIN_CATALOG__IDLE_TIMEOUT_MS", "2500"),
            ("PANGOLIN_CATALOG__MAX_CONNECTIONS", "3"),
        ])
        .unwrap();
        let l = HttpLimits::from_catalog(&c.catalog);
        assert_eq!(l.header_read_timeout, Duration::from_millis(500));
        assert_eq!(
            l.body_timeout,
            BodyTimeout::Total(Duration::from_millis(1500))
        );
        assert_eq!(l.idle_timeout, Duration::from_millis(2500));
        assert_eq!(l.max_connections, 3);
        assert_eq!(
            l.for_uploads().body_timeout,
            BodyTimeout::BetweenReads(Duration::from_millis(1500))
        );
    }

    #[test]
    fn out_of_range_limits_are_refused_by_name() {
        for (key, value, named) in [
            (
                "PANGOLIN_CATALOG__HEADER_READ_TIMEOUT_MS",
                "0",
                "catalog.header_read_timeout_ms",
            ),
            (
                "PANGOLIN_CATALOG__BODY_READ_TIMEOUT_MS",
                "99",
                "catalog.body_read_timeout_ms",
            ),
            (
                "PANGOLIN_CATALOG__IDLE_TIMEOUT_MS",
                "3600001",
                "catalog.idle_timeout_ms",
            ),
            (
                "PANGOLIN_CATALOG__MAX_CONNECTIONS",
                "0",
                "catalog.max_connections",
            ),
        ] {
            let err = parse(&[(key, value)]).unwrap_err();
            assert!(err.contains(named), "{key}={value}: {err}");
        }
    }

    #[test]
    fn the_iceberg_timeout_answer_is_a_408_error_model_with_the_request_id() {
        let mut replaced = HeaderMap::new();
        replaced.insert(
            crate::api::request_id::HEADER,
            HeaderValue::from_static("abc-123"),
        );
        let resp = iceberg_timeout_answer(&replaced, Duration::from_millis(1500));
        assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(resp.headers()[crate::api::request_id::HEADER], "abc-123");
        let body = resp.into_body();
        let bytes = futures::executor::block_on(http_body_util::BodyExt::collect(body))
            .unwrap()
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["error"]["code"], 408);
        assert_eq!(v["error"]["type"], "RequestTimeoutException");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("1500 ms") && message.contains("abc-123"),
            "{message}"
        );
    }
}
