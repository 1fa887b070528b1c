//! One TLS connection to a server: the pinned handshake, protocol hello, and requests
//! matched to answers by request id, so several may be in flight at once (P110).
//! Frames the server sends unasked (request id 0) never queue: a `MailboxChanged` sets
//! a pending flag ([`Connection::mailbox_changed`]), so an undrained push can never
//! block the reader (P442).
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hush_proto::fingerprint::Fingerprint;
use hush_proto::pb::{self, client_frame::Body};
use hush_proto::response::{Response, validate};
use hush_proto::{ErrorCode, PROTOCOL_VERSION, ServerFrameIn, frame};
use rustls::pki_types::ServerName;
use tokio::io::WriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::ClientError;
use crate::trust::{FirstUse, KnownServers, RecordingVerifier};

/// The port hushd listens on by default.
pub const DEFAULT_PORT: u16 = 5535;
/// ALPN id, as the server expects.
pub const ALPN: &[u8] = b"hush/1";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How often, and for how long at most each time, a rate-limited request is retried.
const RATE_LIMIT_RETRIES: usize = 5;
const MAX_RATE_LIMIT_WAIT_SECS: u32 = 5;

/// The fault rules a connection obeys: none outside tests.
#[cfg(feature = "fault-injection")]
pub(crate) type FaultRules = crate::faults::Faults;
#[cfg(not(feature = "fault-injection"))]
pub(crate) type FaultRules = NoFaults;

/// Outside tests a connection drops no answers.
#[cfg(not(feature = "fault-injection"))]
#[derive(Debug, Clone, Default)]
pub(crate) struct NoFaults;

/// Waiters by request id; `None` once the connection is gone, so no new waiter hangs.
type Pending = Arc<Mutex<Option<HashMap<u64, oneshot::Sender<Response>>>>>;

/// `HOST:PORT` as written in `known_servers`; a missing port means 5535.
pub fn normalize_server(server: &str) -> Result<(String, String, u16), ClientError> {
    let server = server.trim();
    let bad = || ClientError::Invalid(format!("server {server:?} must look like HOST:PORT"));
    if server.is_empty() || server.contains(char::is_whitespace) || server.contains('/') {
        return Err(bad());
    }
    let (host, port) = if let Some(rest) = server.strip_prefix('[') {
        // [v6]:port or [v6]
        let (h, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if after.is_empty() => DEFAULT_PORT,
            None => return Err(bad()),
        };
        (h.to_owned(), port)
    } else {
        match server.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h.to_owned(), p.parse().map_err(|_| bad())?),
            Some(_) => return Err(bad()),
            None => (server.to_owned(), DEFAULT_PORT),
        }
    };
    if host.is_empty() {
        return Err(bad());
    }
    let display = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Ok((display, host, port))
}

/// A server given as one address or a cluster's comma-separated addresses
/// (`a:5535,b:5535`): the display name it is pinned under (every address
/// normalized, in the order given) and each address's host and port.
pub fn normalize_servers(servers: &str) -> Result<(String, Vec<(String, u16)>), ClientError> {
    let mut display = Vec::new();
    let mut addresses = Vec::new();
    for one in servers.split(',') {
        let (d, host, port) = normalize_server(one)?;
        if !display.contains(&d) {
            display.push(d);
            addresses.push((host, port));
        }
    }
    Ok((display.join(","), addresses))
}

/// What the server said in its hello.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub version: u32,
    pub software: String,
    pub registration: String,
    pub fingerprint: Fingerprint,
}

/// TCP, then the TLS 1.3 handshake (ALPN `hush/1`): the server's display name, the
/// stream, and the key it presented (its handshake signature checked; nothing sent).
async fn tls_handshake(
    server: &str,
) -> Result<
    (
        String,
        tokio_rustls::client::TlsStream<TcpStream>,
        Fingerprint,
    ),
    ClientError,
> {
    let (display, addresses) = normalize_servers(server)?;
    // A cluster's nodes in turn, and every address a host name resolves to (tokio's
    // connect tries them in order), until one answers. Only an unreachable node is
    // passed over: a node that answers with the wrong key fails the connection.
    let mut failures = Vec::new();
    let mut reached = None;
    for (host, port) in &addresses {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host.as_str(), *port)))
            .await
        {
            Ok(Ok(tcp)) => {
                reached = Some((host.clone(), tcp));
                break;
            }
            Ok(Err(e)) => failures.push(format!("{host}:{port}: {e}")),
            Err(_) => failures.push(format!("{host}:{port}: timed out")),
        }
        if addresses.len() > 1 {
            tracing::info!(node = %format!("{host}:{port}"), "node unreachable; trying the next");
        }
    }
    let Some((host, tcp)) = reached else {
        let reason = if addresses.len() == 1 {
            failures
                .pop()
                .and_then(|f| f.split_once(": ").map(|(_, r)| r.to_owned()))
                .unwrap_or_default()
        } else {
            format!("no node answered ({})", failures.join("; "))
        };
        return Err(ClientError::Unreachable {
            server: display,
            reason,
        });
    };
    let unreachable = |reason: String| ClientError::Unreachable {
        server: display.clone(),
        reason,
    };
    let _ = tcp.set_nodelay(true);

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = RecordingVerifier::new(&provider);
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    let name = ServerName::try_from(host.clone())
        .map_err(|_| ClientError::Invalid(format!("{host:?} is not a valid host name")))?;
    let tls = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .map_err(|_| unreachable("TLS handshake timed out".into()))?
    .map_err(|e| ClientError::Tls(format!("handshake with {display} failed: {e}")))?;
    let presented = verifier
        .presented()
        .ok_or_else(|| ClientError::Tls("the server presented no certificate".into()))?;
    Ok((display, tls, presented))
}

/// The key fingerprint `server` presents, read from a TLS handshake that sends
/// nothing else: for showing an unknown server's key before anything (a password)
/// is asked for.
pub async fn probe(server: &str) -> Result<(String, Fingerprint), ClientError> {
    let (display, tls, presented) = tls_handshake(server).await?;
    drop(tls);
    Ok((display, presented))
}

pub struct Connection {
    server: String,
    info: ServerInfo,
    writer: tokio::sync::Mutex<FramedWrite<WriteHalf<TlsStream<TcpStream>>, LengthDelimitedCodec>>,
    pending: Pending,
    closed_reason: Arc<Mutex<Option<String>>>,
    next_id: AtomicU64,
    /// Set by a `MailboxChanged` push; many pushes fold into one permit.
    wake: Arc<Notify>,
    deliveries: tokio::sync::Mutex<mpsc::UnboundedReceiver<Delivery>>,
    closed: watch::Receiver<bool>,
    #[cfg(feature = "fault-injection")]
    faults: crate::faults::Faults,
    reader: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(frame::LENGTH_PREFIX)
        .max_frame_length(frame::MAX_FRAME_LEN)
        .new_codec()
}

impl Connection {
    /// Connects, checks the server key against the home's pins, and says hello.
    pub async fn connect(
        server: &str,
        known: &KnownServers,
        first_use: &FirstUse,
    ) -> Result<Connection, ClientError> {
        Self::connect_with(server, known, first_use, Default::default()).await
    }

    /// [`Connection::connect`] with the client's fault rules (tests only).
    pub(crate) async fn connect_with(
        server: &str,
        known: &KnownServers,
        first_use: &FirstUse,
        faults: FaultRules,
    ) -> Result<Connection, ClientError> {
        #[cfg(not(feature = "fault-injection"))]
        let NoFaults = faults;
        let (display, tls, presented) = tls_handshake(server).await?;
        // Nothing has been sent yet: refuse before the first request if the key is wrong.
        known.check(&display, presented, first_use)?;

        let (read_half, write_half) = tokio::io::split(tls);
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        let closed_reason = Arc::new(Mutex::new(None));
        let wake = Arc::new(Notify::new());
        let (closed_tx, closed_rx) = watch::channel(false);
        let (deliveries_tx, deliveries_rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_loop(
            FramedRead::new(read_half, codec()),
            Reader {
                pending: Arc::clone(&pending),
                closed_reason: Arc::clone(&closed_reason),
                wake: Arc::clone(&wake),
                deliveries: deliveries_tx,
                closed: closed_tx,
                #[cfg(feature = "fault-injection")]
                faults: faults.clone(),
            },
        ));
        let mut conn = Connection {
            server: display,
            info: ServerInfo {
                version: 0,
                software: String::new(),
                registration: String::new(),
                fingerprint: presented,
            },
            writer: tokio::sync::Mutex::new(FramedWrite::new(write_half, codec())),
            pending,
            closed_reason,
            next_id: AtomicU64::new(1),
            wake,
            deliveries: tokio::sync::Mutex::new(deliveries_rx),
            closed: closed_rx,
            #[cfg(feature = "fault-injection")]
            faults,
            reader,
        };
        let hello = Body::Hello(pb::Hello {
            versions: vec![PROTOCOL_VERSION],
            client: format!("hush {}", env!("CARGO_PKG_VERSION")),
        });
        match conn.request(hello).await? {
            Response::HelloOk {
                version,
                server,
                registration,
            } => {
                conn.info.version = version;
                conn.info.software = server;
                conn.info.registration = registration;
            }
            other => return Err(unexpected(&other)),
        }
        Ok(conn)
    }

    /// The server as `HOST:PORT`.
    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn info(&self) -> &ServerInfo {
        &self.info
    }

    /// Resolves when the server said the mailbox changed since the last call (P442).
    /// Pushes that came while nobody waited are kept as one pending wake-up.
    pub async fn mailbox_changed(&self) {
        self.wake.notified().await
    }

    /// The next entries pushed after a `Fetch{follow: true}` (P443); `None` once the
    /// connection closed.
    pub async fn delivery(&self) -> Option<Delivery> {
        self.deliveries.lock().await.recv().await
    }

    /// Sets the pending wake-up by hand (to retry a sync).
    pub fn mark_mailbox_changed(&self) {
        self.wake.notify_one();
    }

    /// Why the connection closed, if it said.
    pub fn closed_reason(&self) -> Option<String> {
        self.closed_reason.lock().ok().and_then(|r| r.clone())
    }

    /// Resolves once the connection is gone (closed by either side or failed).
    pub async fn closed(&self) {
        let mut rx = self.closed.clone();
        let _ = rx.wait_for(|c| *c).await;
    }

    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// The test-only seam that drops chosen answers (see [`crate::faults`]).
    #[cfg(feature = "fault-injection")]
    pub fn faults(&self) -> &crate::faults::Faults {
        &self.faults
    }

    /// Sends one request and waits for its answer. A server `Error` answer becomes
    /// [`ClientError::Server`].
    pub async fn request(&self, body: Body) -> Result<Response, ClientError> {
        // P107: a connection over its request rate is told how long to wait; a short
        // wait is taken here, so a busy but honest client just slows down.
        for _ in 0..RATE_LIMIT_RETRIES {
            match self.request_once(body.clone()).await {
                // P109: the same for storage that is briefly unavailable.
                Err(ClientError::Server(e))
                    if matches!(e.code, ErrorCode::RateLimited | ErrorCode::Unavailable)
                        && !e.fatal
                        && e.retry_after_secs <= MAX_RATE_LIMIT_WAIT_SECS =>
                {
                    tracing::debug!(wait = e.retry_after_secs, "rate limited; waiting");
                    tokio::time::sleep(Duration::from_secs(u64::from(e.retry_after_secs.max(1))))
                        .await;
                }
                other => return other,
            }
        }
        self.request_once(body).await
    }

    async fn request_once(&self, body: Body) -> Result<Response, ClientError> {
        #[cfg(feature = "fault-injection")]
        let body = {
            let mut body = body;
            self.faults.on_request(&mut body);
            body
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let registered = match self.pending.lock() {
            Ok(mut p) => p.as_mut().map(|p| p.insert(id, tx)).is_some(),
            Err(_) => false,
        };
        if !registered {
            return Err(self.disconnected());
        }
        let frame = pb::ClientFrame {
            request_id: id,
            body: Some(body),
        };
        let sent = self
            .writer
            .lock()
            .await
            .send(frame::encode_body(&frame))
            .await;
        if sent.is_err() {
            self.forget(id);
            return Err(self.disconnected());
        }
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Err(_) => {
                self.forget(id);
                Err(ClientError::Timeout(REQUEST_TIMEOUT.as_secs()))
            }
            Ok(Err(_)) => Err(self.disconnected()),
            Ok(Ok(Response::Error(e))) => Err(ClientError::Server(e)),
            Ok(Ok(r)) => Ok(r),
        }
    }

    /// Closes the connection cleanly (TLS close_notify), so the server sees a goodbye
    /// rather than a dropped line.
    pub async fn close(self) {
        let mut writer = self.writer.lock().await;
        let _ = SinkExt::<Bytes>::close(&mut *writer).await;
    }

    fn forget(&self, id: u64) {
        if let Ok(mut p) = self.pending.lock()
            && let Some(p) = p.as_mut()
        {
            p.remove(&id);
        }
    }

    fn disconnected(&self) -> ClientError {
        ClientError::Disconnected(self.closed_reason.lock().ok().and_then(|r| r.clone()))
    }
}

/// An answer of the wrong kind.
pub fn unexpected(r: &Response) -> ClientError {
    ClientError::Protocol(format!("unexpected answer {}", r.kind()))
}

/// What the reader task shares with the connection.
struct Reader {
    pending: Pending,
    closed_reason: Arc<Mutex<Option<String>>>,
    wake: Arc<Notify>,
    deliveries: mpsc::UnboundedSender<Delivery>,
    closed: watch::Sender<bool>,
    #[cfg(feature = "fault-injection")]
    faults: crate::faults::Faults,
}

/// Entries the server pushed to a following connection (P443), oldest first.
#[derive(Debug)]
pub struct Delivery {
    pub entries: Vec<hush_proto::response::Entry>,
    /// P450: messages this device missed that it has not yet noted.
    pub missed: u32,
}

async fn read_loop<R>(mut frames: FramedRead<R, LengthDelimitedCodec>, r: Reader)
where
    R: tokio::io::AsyncRead + Unpin,
{
    let reason = loop {
        let bytes = match frames.next().await {
            None => break None,
            Some(Err(e)) => break Some(format!("read error: {e}")),
            Some(Ok(b)) => b,
        };
        let resp =
            match frame::decode::<ServerFrameIn>(&bytes, frame::MAX_FRAME_LEN).and_then(validate) {
                Ok(r) => r,
                Err(e) => break Some(format!("invalid frame from server: {e}")),
            };
        #[cfg(feature = "fault-injection")]
        match r.faults.on_answer(resp.body.kind()) {
            Some(crate::faults::Action::Cut) => {
                break Some("fault injected: connection cut".into());
            }
            Some(crate::faults::Action::Swallow) => continue,
            None => {}
        }
        if let Response::Error(e) = &resp.body
            && e.fatal
            && let Ok(mut reason) = r.closed_reason.lock()
        {
            *reason = Some(e.to_string());
        }
        let waiter = r
            .pending
            .lock()
            .ok()
            .and_then(|mut p| p.as_mut().and_then(|p| p.remove(&resp.request_id)));
        match waiter {
            Some(tx) => {
                let _ = tx.send(resp.body);
            }
            None if resp.request_id == 0 => match resp.body {
                // A flag, not a queue: a busy client never blocks this reader (P442).
                Response::MailboxChanged => r.wake.notify_one(),
                // A queue the server bounds: it pushes at most its window of
                // unacknowledged entries (P443).
                Response::Delivery {
                    entries, missed, ..
                } => {
                    let _ = r.deliveries.send(Delivery { entries, missed });
                }
                other => tracing::debug!(kind = other.kind(), "ignoring an unasked frame"),
            },
            None => tracing::debug!(id = resp.request_id, "answer to a forgotten request"),
        }
    };
    if let Some(reason) = reason {
        tracing::debug!(%reason, "connection closed");
        if let Ok(mut r) = r.closed_reason.lock() {
            r.get_or_insert(reason);
        }
    }
    // Dropping the senders wakes every waiter with "disconnected".
    if let Ok(mut p) = r.pending.lock() {
        *p = None;
    }
    let _ = r.closed.send(true);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Regression: the push queue (1,024 slots) blocked the reader when nobody drained
    /// it, so answers stopped arriving. Pushes now fold into one pending wake-up.
    #[tokio::test]
    async fn an_undrained_push_queue_never_blocks_the_reader() {
        let (mut server, client) = tokio::io::duplex(1 << 20);
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        let (answer_tx, answer_rx) = oneshot::channel();
        pending
            .lock()
            .unwrap()
            .as_mut()
            .unwrap()
            .insert(7, answer_tx);
        let wake = Arc::new(Notify::new());
        let (closed_tx, mut closed_rx) = watch::channel(false);
        let reader = tokio::spawn(read_loop(
            FramedRead::new(client, codec()),
            Reader {
                pending: Arc::clone(&pending),
                closed_reason: Arc::new(Mutex::new(None)),
                wake: Arc::clone(&wake),
                deliveries: mpsc::unbounded_channel().0,
                closed: closed_tx,
                #[cfg(feature = "fault-injection")]
                faults: Default::default(),
            },
        ));
        let frame = |id: u64, body| {
            let f = pb::ServerFrame {
                request_id: id,
                body: Some(body),
            };
            frame::encode(&f)
        };
        for _ in 0..5_000 {
            let push = frame(
                0,
                pb::server_frame::Body::MailboxChanged(pb::MailboxChanged {}),
            );
            server.write_all(&push).await.unwrap();
        }
        let pong = frame(
            7,
            pb::server_frame::Body::Pong(pb::Pong {
                payload: Bytes::from_static(b"x"),
            }),
        );
        server.write_all(&pong).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(10), answer_rx)
            .await
            .expect("the answer arrives behind 5,000 undrained pushes")
            .unwrap();
        assert!(matches!(answer, Response::Pong(_)));
        // The pushes folded into one wake-up, not 5,000.
        tokio::time::timeout(Duration::from_secs(1), wake.notified())
            .await
            .expect("a pending wake-up");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), wake.notified())
                .await
                .is_err(),
            "only one"
        );
        drop(server);
        closed_rx.wait_for(|c| *c).await.unwrap();
        reader.await.unwrap();
    }

    #[test]
    fn cluster_address_lists_normalize() {
        let (display, addrs) = normalize_servers("a, b:6000 ,[::1],a:5535").unwrap();
        assert_eq!(
            display, "a:5535,b:6000,[::1]:5535",
            "normalized, repeats dropped"
        );
        assert_eq!(
            addrs,
            vec![("a".into(), 5535), ("b".into(), 6000), ("::1".into(), 5535)]
        );
        assert_eq!(normalize_servers("solo").unwrap().0, "solo:5535");
        for bad in ["a,", ",a", "a,,b", "a,b c"] {
            assert!(normalize_servers(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_down_node_is_passed_over() {
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_addr = dead.local_addr().unwrap();
        drop(dead);
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_addr = live.local_addr().unwrap();
        let accepted = tokio::spawn(async move { live.accept().await.is_ok() });
        // The live node speaks no TLS here: reaching it is what counts.
        let err = probe(&format!("{dead_addr},{live_addr}"))
            .await
            .err()
            .unwrap();
        assert!(accepted.await.unwrap(), "the second node was tried");
        assert!(!matches!(err, ClientError::Unreachable { .. }), "{err}");
        let err = probe(&format!("{dead_addr}")).await.err().unwrap();
        assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");
    }

    #[test]
    fn server_addresses_normalize() {
        assert_eq!(
            normalize_server("example.org").unwrap().0,
            "example.org:5535"
        );
        assert_eq!(normalize_server("127.0.0.1:9").unwrap().0, "127.0.0.1:9");
        assert_eq!(normalize_server("[::1]:7").unwrap().0, "[::1]:7");
        assert_eq!(normalize_server("[::1]").unwrap().1, "::1");
        for bad in ["", "a b", "h:notaport", "::1", "http://x", ":5"] {
            assert!(normalize_server(bad).is_err(), "{bad}");
        }
    }
}
