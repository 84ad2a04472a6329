//! Herald's HTTP accept loop: every connection gets a header deadline and a
//! slot under the pending-connection caps, the loop backs off when the
//! process runs out of file descriptors, and shutdown reaches every
//! connection, not only WebSocket sessions.
//!
//! `axum::serve` offers none of these knobs, so this module drives hyper's
//! HTTP/1 connection directly (as linkerd's `serve.rs` does) and hands each
//! request to the axum [`Router`].

use std::{
    io,
    net::SocketAddr,
    pin::pin,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{Router, extract::ConnectInfo};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::Service;

use super::pending::{PendingLimits, PendingPermit, Refusal};

/// How long the accept loop sleeps after running out of descriptors or
/// memory: long enough not to spin, short enough that the listener resumes
/// soon after connections close.
const BACKOFF: Duration = Duration::from_millis(100);
/// Shortest time between two log lines about the same accept-loop trouble.
const LOG_EVERY: Duration = Duration::from_secs(1);
/// What a refused connection is told before it is closed. Written with a
/// single non-blocking `try_write`: a peer that reads nothing costs nothing.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\
    Content-Type: text/plain\r\nContent-Length: 25\r\n\r\ntoo many open connections";

/// The two steps of stopping a server.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Stop accepting and ask every connection to finish its request and close.
    pub graceful: CancellationToken,
    /// Drop every connection that is still open.
    pub force: CancellationToken,
}

/// One listener served by herald's accept loop.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    router: Router,
    pending: Arc<PendingLimits>,
    http: http1::Builder,
    name: &'static str,
}

impl Server {
    /// Serves `router` on `listener`, closing connections whose headers take
    /// longer than `header_read_timeout` and refusing connections past
    /// `max_pending` (in all) or `max_pending_per_ip` (per peer; `0`: no cap).
    /// `name` labels logs and metrics (`main`, `ops`).
    pub fn new(
        listener: TcpListener,
        router: Router,
        header_read_timeout: Duration,
        max_pending: usize,
        max_pending_per_ip: usize,
        name: &'static str,
    ) -> Self {
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout);
        Self {
            listener,
            router,
            pending: PendingLimits::new(max_pending, max_pending_per_ip),
            http,
            name,
        }
    }

    /// Accepts until `shutdown.graceful` fires, spawning each connection on
    /// `connections`. Returns when the listener is closed; the connections
    /// go on until they finish or `shutdown.force` fires.
    pub async fn run(self, connections: TaskTracker, shutdown: Shutdown) {
        let mut trouble = Throttle::default();
        loop {
            let accepted = tokio::select! {
                // Checked first, so that no connection is accepted after shutdown.
                biased;
                () = shutdown.graceful.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    self.accept_failed(&err, &mut trouble).await;
                    continue;
                }
            };
            match self.pending.try_acquire(peer.ip()) {
                Ok(permit) => {
                    let connection = self.connection(tcp, peer, permit, shutdown.clone());
                    connections.spawn(connection);
                }
                Err(refusal) => self.refuse(&tcp, refusal, &mut trouble),
            }
        }
        tracing::debug!(listener = self.name, "stopped accepting");
    }

    async fn accept_failed(&self, err: &io::Error, trouble: &mut Throttle) {
        let class = classify(err);
        if class == AcceptError::Transient {
            return;
        }
        if trouble.ready() {
            tracing::warn!(
                listener = self.name,
                error = %err,
                out_of_resources = class == AcceptError::Exhausted,
                pending = self.pending.count(),
                "cannot accept connections; backing off"
            );
        }
        // Without the pause an accept that fails at once (EMFILE) would spin
        // on a core until some descriptor is freed.
        tokio::time::sleep(BACKOFF).await;
    }

    fn refuse(&self, tcp: &TcpStream, refusal: Refusal, trouble: &mut Throttle) {
        metrics::counter!(
            crate::metrics::HTTP_CONNECTIONS_REFUSED,
            "listener" => self.name,
            "reason" => refusal.label(),
        )
        .increment(1);
        if trouble.ready() {
            tracing::warn!(
                listener = self.name,
                reason = refusal.label(),
                "refusing connections: too many that have not upgraded"
            );
        }
        if let Err(err) = tcp.try_write(REFUSED) {
            tracing::trace!(error = %err, "cannot tell a refused client why");
        }
    }

    fn connection(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        permit: PendingPermit,
        shutdown: Shutdown,
    ) -> impl Future<Output = ()> + Send + 'static {
        // Pushes are small and latency-bound: send each flush at once
        // instead of letting Nagle hold it for the previous segment's ACK.
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        let router = self.router.clone();
        let service = service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().call(request)
        });
        let http = self.http.clone();
        async move {
            let connection = http
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades();
            let mut connection = pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = shutdown.graceful.cancelled() => {
                    // Finishes a request in flight, closes an idle or
                    // half-read one; the force token bounds the rest.
                    connection.as_mut().graceful_shutdown();
                    tokio::select! {
                        result = connection.as_mut() => result,
                        () = shutdown.force.cancelled() => Ok(()),
                    }
                }
            };
            if let Err(err) = result {
                tracing::debug!(%peer, error = %err, "HTTP connection ended");
            }
            // The slot is held until here: after a WebSocket upgrade hyper's
            // connection future has ended, so only HTTP connections count.
            drop(permit);
        }
    }
}

/// What to do about a failed `accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AcceptError {
    /// The failure belongs to one incoming connection: accept the next at once.
    Transient,
    /// The process or system is out of descriptors or memory: back off.
    Exhausted,
    /// Anything else: log and back off, so an unknown error cannot spin.
    Other,
}

/// Sorts an `accept` error into [`AcceptError`].
pub(crate) fn classify(err: &io::Error) -> AcceptError {
    let exhausted = [libc::EMFILE, libc::ENFILE, libc::ENOMEM, libc::ENOBUFS];
    if err
        .raw_os_error()
        .is_some_and(|code| exhausted.contains(&code))
    {
        return AcceptError::Exhausted;
    }
    match err.kind() {
        io::ErrorKind::ConnectionAborted
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionRefused
        | io::ErrorKind::Interrupted
        | io::ErrorKind::WouldBlock
        | io::ErrorKind::TimedOut => AcceptError::Transient,
        io::ErrorKind::OutOfMemory => AcceptError::Exhausted,
        _ => AcceptError::Other,
    }
}

/// Lets one log line through per [`LOG_EVERY`]: a flood must not flood the log.
#[derive(Debug, Default)]
struct Throttle {
    last: Option<Instant>,
}

impl Throttle {
    fn ready(&mut self) -> bool {
        let now = Instant::now();
        let ready = self.last.is_none_or(|last| now - last >= LOG_EVERY);
        if ready {
            self.last = Some(now);
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_descriptors_or_memory_backs_off() {
        for code in [libc::EMFILE, libc::ENFILE, libc::ENOMEM, libc::ENOBUFS] {
            let err = io::Error::from_raw_os_error(code);
            assert_eq!(classify(&err), AcceptError::Exhausted, "{err}");
        }
        assert_eq!(
            classify(&io::Error::from(io::ErrorKind::OutOfMemory)),
            AcceptError::Exhausted
        );
    }

    #[test]
    fn a_failure_of_one_connection_does_not_back_off() {
        for code in [libc::ECONNABORTED, libc::EINTR, libc::EAGAIN] {
            let err = io::Error::from_raw_os_error(code);
            assert_eq!(classify(&err), AcceptError::Transient, "{err}");
        }
        let err = io::Error::from_raw_os_error(libc::EINVAL);
        assert_eq!(classify(&err), AcceptError::Other);
    }

    #[test]
    fn the_refusal_is_a_well_formed_response() {
        let text = std::str::from_utf8(REFUSED).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length = head
            .split("\r\n")
            .find_map(|line| line.strip_prefix("Content-Length: "))
            .unwrap();
        assert_eq!(length.parse::<usize>().unwrap(), body.len());
    }

    #[test]
    fn the_throttle_lets_one_line_through_per_second() {
        let mut throttle = Throttle::default();
        assert!(throttle.ready());
        assert!(!throttle.ready());
        throttle.last = Instant::now().checked_sub(LOG_EVERY);
        assert!(throttle.ready());
    }
}
