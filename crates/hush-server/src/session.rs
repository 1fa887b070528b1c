//! One connection's protocol loop: hello, then registration, login or session resume,
//! then authenticated requests. Generic over the byte stream, so tests drive it over
//! an in-memory pipe.
//!
//! Rules enforced here (docs/protocol.md): P101/P102 oversized, truncated or
//! undecodable frames end the connection after an `Error` frame; P201–P203 hello and
//! version negotiation; P110 every answer echoes its request id; P205 a connection
//! must authenticate within `auth_timeout`; P106 authenticated connections per account;
//! P107 requests per connection per second; P108 an authenticated connection idle for
//! `idle_timeout`, or a frame started and not finished within `frame_read_timeout`, is
//! closed.
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, SinkExt, StreamExt};
use hush_proto::pb::{self, server_frame::Body};
use hush_proto::request::{Request, validate};
use hush_proto::{ClientFrameIn, ErrorCode, ProtoError, SUPPORTED_VERSIONS, frame};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::ServerState;
use crate::accounts::{self, Authenticated, PendingLogin, PendingRegistration, Refusal};
use crate::hub::Signal;
use crate::limits::{RequestBudget, Slot};
use crate::messaging;

/// The connection's place in its account's count of connections (P106).
type AccountSlot = Option<Slot<hush_proto::ids::UserId>>;

enum Phase {
    AwaitHello,
    Unauthenticated,
    Registering(PendingRegistration),
    LoggingIn(Box<PendingLogin>),
    Authenticated {
        auth: Authenticated,
        token_digest: [u8; 32],
    },
}

/// What handling one request produced.
struct Reply {
    body: Body,
    /// Close the connection after sending.
    close: bool,
}

impl Reply {
    fn ok(body: Body) -> Self {
        Reply { body, close: false }
    }
}

fn error_body(
    code: ErrorCode,
    message: impl Into<String>,
    fatal: bool,
    retry_after_secs: u32,
) -> Body {
    Body::Error(pb::Error {
        code: code.into(),
        message: message.into(),
        fatal,
        retry_after_secs,
    })
}

fn refusal(r: Refusal) -> Reply {
    Reply::ok(error_body(r.code, r.message, false, r.retry_after_secs))
}

fn fatal(code: ErrorCode, message: impl Into<String>) -> Reply {
    Reply {
        body: error_body(code, message, true, 0),
        close: true,
    }
}

fn codec(max: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(frame::LENGTH_PREFIX)
        .max_frame_length(max)
        .new_codec()
}

/// Runs one connection until the peer leaves, breaks a rule, or the server shuts down.
///
/// The loop's own future is what every idle connection keeps (its task): it holds
/// only the connection's state and the futures it waits on. Whatever handles a
/// request or reads the store is boxed, so it exists only while it runs.
pub async fn run<R, W>(
    reader: R,
    writer: W,
    peer: SocketAddr,
    state: Arc<ServerState>,
    mut shutdown: watch::Receiver<bool>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let limits = &state.config.limits;
    let mut frames_in = FramedRead::new(reader, codec(limits.max_pre_auth_frame_len));
    let mut frames_out = FramedWrite::new(writer, codec(limits.max_frame_len));
    let auth_deadline = Instant::now() + limits.auth_timeout;
    let check_every = (limits.frame_read_timeout.min(limits.idle_timeout) / 4)
        .max(std::time::Duration::from_millis(50));
    // One timer for every deadline: the periodic checks, and authentication's.
    let mut timer = Box::pin(tokio::time::sleep_until(
        (Instant::now() + check_every).min(auth_deadline),
    ));
    let mut conn = Conn {
        budget: RequestBudget::new(
            limits.requests_per_second,
            limits.request_burst,
            Instant::now().into_std(),
        ),
        state: Arc::clone(&state),
        peer,
        phase: Phase::AwaitHello,
        account_slot: None,
        over_budget_logged: false,
        wake: None,
        follow: None,
        inflight: FuturesOrdered::new(),
    };
    // P108: when the last whole frame arrived, and since when a partial one has waited.
    let mut last_frame = Instant::now();
    let mut partial_since: Option<Instant> = None;
    // Answers written but not yet flushed: one TLS write carries all that is ready.
    let mut unflushed = false;

    loop {
        let pull_ready = conn.follow.as_ref().is_some_and(Follow::ready);
        let follower = conn.follow.as_ref().map(|f| Arc::clone(&f.follower));
        if unflushed && !pull_ready && !next_frame_buffered(frames_in.read_buffer()) {
            if let Err(e) = SinkExt::<Bytes>::flush(&mut frames_out).await {
                tracing::debug!(%peer, error = %e, "peer went away");
                break;
            }
            unflushed = false;
        }
        if !unflushed {
            // About to wait: an idle session keeps no codec buffers (they are
            // allocated again, frame-sized, when bytes come).
            shrink_when_empty(frames_in.read_buffer_mut());
            shrink_when_empty(frames_out.write_buffer_mut());
        }
        let authenticated = matches!(conn.phase, Phase::Authenticated { .. });
        // Every branch is synchronous: what needs to wait is done below, boxed.
        let event = tokio::select! {
            _ = shutdown.changed() => Event::fatal(ErrorCode::ShuttingDown, "the server is shutting down"),
            Some(revoked) = mailbox_changed(&mut conn.wake) => {
                if revoked {
                    tracing::info!(%peer, "closing: the device's session is no longer valid");
                    Event::fatal(
                        ErrorCode::Unauthenticated,
                        "this device's session ended: the device was revoked or logged out, or its account was disabled or deleted",
                    )
                } else if conn.follow.is_some() {
                    // The hub hands this connection what committed (below).
                    Event::Continue
                } else {
                    Event::answer(0, Reply::ok(Body::MailboxChanged(pb::MailboxChanged {})))
                }
            }
            Some(done) = conn.inflight.next(), if !conn.inflight.is_empty() => conn.answered(done),
            () = handed_over(follower.as_deref()), if follower.is_some() => {
                if let Some(f) = conn.follow.as_mut() {
                    f.take();
                }
                Event::Continue
            }
            () = std::future::ready(()), if pull_ready => Event::Pull,
            () = &mut timer => {
                let now = Instant::now();
                let next = now + check_every;
                timer.as_mut().reset(if authenticated { next } else { next.min(auth_deadline) });
                if frames_in.read_buffer().is_empty() {
                    partial_since = None;
                } else {
                    partial_since.get_or_insert(now);
                }
                if !authenticated && now >= auth_deadline {
                    tracing::info!(%peer, "closing: did not authenticate in time");
                    Event::fatal(ErrorCode::Timeout, format!(
                        "authenticate within {} s of connecting", limits.auth_timeout.as_secs()
                    ))
                } else if partial_since.is_some_and(|t| now.saturating_duration_since(t) > limits.frame_read_timeout) {
                    tracing::info!(%peer, buffered = frames_in.read_buffer().len(), "closing: a frame did not arrive in time");
                    Event::fatal(ErrorCode::Timeout, format!(
                        "a frame must arrive whole within {} s", limits.frame_read_timeout.as_secs()
                    ))
                } else if authenticated && now.saturating_duration_since(last_frame) > limits.idle_timeout && conn.inflight.is_empty() {
                    tracing::debug!(%peer, "closing: idle");
                    Event::fatal(ErrorCode::Timeout, format!(
                        "no request for {} s; ping to stay connected", limits.idle_timeout.as_secs()
                    ))
                } else {
                    Event::Continue
                }
            }
            next = frames_in.next(), if conn.inflight.len() < MAX_IN_FLIGHT => match next {
                None => Event::Closed,
                Some(Err(e)) => {
                    let too_big = e
                        .get_ref()
                        .is_some_and(|inner| inner.is::<tokio_util::codec::LengthDelimitedCodecError>());
                    let clean_eof = frames_in.read_buffer().is_empty()
                        && matches!(e.kind(), std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset);
                    if clean_eof {
                        // Left between frames without a TLS close_notify: not an attack.
                        tracing::debug!(%peer, error = %e, "peer left abruptly");
                        Event::Closed
                    } else if too_big {
                        let max = frames_in.decoder().max_frame_length();
                        tracing::warn!(%peer, max, "closing: oversized frame");
                        Event::fatal(ErrorCode::FrameTooLarge, format!("frame exceeds the limit of {max} bytes"))
                    } else {
                        tracing::warn!(%peer, error = %e, "closing: truncated frame or read error");
                        Event::fatal(ErrorCode::MalformedFrame, "truncated frame")
                    }
                }
                Some(Ok(bytes)) => {
                    last_frame = Instant::now();
                    partial_since = None;
                    Event::Frame(bytes)
                }
            },
        };
        let (encoded, close) = match event {
            Event::Write { frame, close } => (frame, close),
            Event::Continue => continue,
            Event::Closed => break,
            Event::Pull => match Box::pin(conn.pull()).await {
                Some(Event::Write { frame, close }) => (frame, close),
                _ => continue,
            },
            Event::Frame(bytes) => match Box::pin(conn.on_frame(&bytes, &mut frames_out)).await {
                Ok(Some((frame, close))) => (frame, close),
                Ok(None) => continue,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "peer went away");
                    return;
                }
            },
        };
        if let (Phase::Authenticated { auth, .. }, false) = (&conn.phase, authenticated) {
            frames_in
                .decoder_mut()
                .set_max_frame_length(limits.max_frame_len);
            conn.wake = state
                .hub
                .subscribe(auth.device_id)
                .map(|rx| (auth.device_id, rx));
        }
        if let Err(e) = frames_out.feed(encoded).await {
            tracing::debug!(%peer, error = %e, "peer went away");
            return;
        }
        unflushed = true;
        if close {
            break;
        }
        // Answers that completed meanwhile go in the same write.
        while let Some(Some(done)) = conn.inflight.next().now_or_never() {
            let Event::Write { frame, .. } = conn.answered(done) else {
                continue;
            };
            if let Err(e) = frames_out.feed(frame).await {
                tracing::debug!(%peer, error = %e, "peer went away");
                return;
            }
        }
    }
    // Flush and send TLS close_notify; the peer may already be gone.
    let _ = SinkExt::<Bytes>::close(&mut frames_out).await;
}

/// What one turn of a connection's loop does next. Small: it is all the loop keeps
/// of what woke it.
enum Event {
    /// Write this encoded frame (then close, if asked).
    Write { frame: Bytes, close: bool },
    /// Nothing to write.
    Continue,
    /// The peer left: flush what is written and end.
    Closed,
    /// A following connection may be pushed more.
    Pull,
    /// A whole frame arrived.
    Frame(bytes::BytesMut),
}

impl Event {
    /// Encoded here, before anything waits, so the loop keeps no frame.
    fn answer(request_id: u64, reply: Reply) -> Event {
        let close = reply.close;
        Event::Write {
            frame: encode(request_id, reply),
            close,
        }
    }

    fn fatal(code: ErrorCode, message: impl Into<String>) -> Event {
        Event::answer(0, fatal(code, message))
    }
}

/// A connection's protocol state, apart from its frames in and out.
struct Conn {
    state: Arc<ServerState>,
    peer: SocketAddr,
    phase: Phase,
    account_slot: AccountSlot,
    budget: RequestBudget,
    over_budget_logged: bool,
    /// Set once authenticated: changes when this device's mailbox gets entries.
    wake: Option<(hush_proto::ids::DeviceId, watch::Receiver<Signal>)>,
    /// P443: set once the client asked to follow its mailbox.
    follow: Option<Follow>,
    /// Sends and acks waiting for their commit, answered as each completes (P110).
    inflight: FuturesOrdered<InFlight>,
}

impl Conn {
    /// A pipelined request completed: its answer.
    fn answered(&mut self, done: Done) -> Event {
        if let Some(f) = self.follow.as_mut() {
            f.acked(done.acked);
        }
        Event::answer(done.request_id, done.reply)
    }

    /// The next push to a following connection, if there is one.
    async fn pull(&mut self) -> Option<Event> {
        let (Some(f), Some((device, _))) = (self.follow.as_mut(), self.wake.as_ref()) else {
            return None;
        };
        match f.pull(&self.state, *device).await {
            Ok(Some(body)) => Some(Event::answer(0, Reply::ok(body))),
            Ok(None) => None,
            Err(r) => {
                tracing::warn!(peer = %self.peer, reason = %r.message, "closing: could not read the mailbox to push it");
                Some(Event::answer(
                    0,
                    Reply {
                        close: true,
                        ..refusal(r)
                    },
                ))
            }
        }
    }

    /// Handles one whole frame: the encoded answer and whether to close after it, or
    /// nothing to write yet (a pipelined request, answered when it commits). An error
    /// means the peer went away while earlier answers were written.
    async fn on_frame<W>(
        &mut self,
        bytes: &[u8],
        frames_out: &mut FramedWrite<W, LengthDelimitedCodec>,
    ) -> std::io::Result<Option<(Bytes, bool)>>
    where
        W: AsyncWrite + Unpin,
    {
        let peer = self.peer;
        let (request_id, reply) = match frame::decode::<ClientFrameIn>(bytes, usize::MAX) {
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing: undecodable frame");
                (0, fatal(e.code(), e.to_string()))
            }
            Ok(raw) => match validate(raw) {
                Err(rejected) => {
                    tracing::info!(%peer, error = %rejected.error, "rejected an invalid request");
                    let reply = match rejected.error {
                        ProtoError::Invalid { .. } => Reply::ok(error_body(
                            rejected.error.code(),
                            rejected.error.to_string(),
                            false,
                            0,
                        )),
                        other => fatal(other.code(), other.to_string()),
                    };
                    (rejected.request_id, reply)
                }
                Ok(req) => match self.budget.take(Instant::now().into_std()) {
                    Err(wait) => {
                        if !self.over_budget_logged {
                            tracing::info!(%peer, "refusing requests: over the per-connection rate");
                            self.over_budget_logged = true;
                        }
                        (
                            req.id,
                            Reply::ok(error_body(
                                ErrorCode::RateLimited,
                                "too many requests on this connection; slow down",
                                false,
                                u32::try_from(wait.as_secs()).unwrap_or(u32::MAX).max(1),
                            )),
                        )
                    }
                    Ok(()) => {
                        self.over_budget_logged = false;
                        tracing::debug!(%peer, kind = req.body.kind(), id = req.id, "request");
                        match self.request(req.id, req.body, frames_out).await? {
                            Some(answer) => answer,
                            None => return Ok(None),
                        }
                    }
                },
            },
        };
        let close = reply.close;
        Ok(Some((encode(request_id, reply), close)))
    }

    /// One valid request within the connection's budget.
    async fn request<W>(
        &mut self,
        id: u64,
        body: Request,
        frames_out: &mut FramedWrite<W, LengthDelimitedCodec>,
    ) -> std::io::Result<Option<(u64, Reply)>>
    where
        W: AsyncWrite + Unpin,
    {
        if let (Phase::Authenticated { auth, .. }, Request::Send { .. } | Request::Ack { .. }) =
            (&self.phase, &body)
        {
            // Submitted to the store now, in arrival order; answered when its
            // commit is.
            let mut fut = pipelined(Arc::clone(&self.state), auth.clone(), id, body);
            return Ok(match futures::poll!(fut.as_mut()) {
                std::task::Poll::Ready(done) => {
                    if let Some(f) = self.follow.as_mut() {
                        f.acked(done.acked);
                    }
                    Some((done.request_id, done.reply))
                }
                std::task::Poll::Pending => {
                    // Driven by a task of its own from here: a write holds store
                    // resources (a PostgreSQL connection and row locks) until it
                    // ends, so it must not wait on this loop, which may itself be
                    // waiting for the store (a push) or for a slow reader.
                    self.inflight.push_back(spawned(id, fut));
                    None
                }
            });
        }
        let following = match body {
            Request::Fetch {
                after_id,
                follow: true,
                ..
            } => Some(after_id),
            _ => None,
        };
        // Handed what commits from now on, before the page is read, so nothing
        // falls between (P443).
        let follower = match (following, self.wake.as_ref()) {
            (Some(_), Some((device, _))) => {
                self.follow = None;
                Some(Followed::new(Arc::clone(&self.state.hub), *device))
            }
            _ => None,
        };
        if !self.inflight.is_empty() {
            // Everything else sees the effect of every earlier request: answer
            // those first.
            finish_in_flight(&mut self.inflight, frames_out, &mut self.follow).await?;
        }
        let reply = dispatch(
            &self.state,
            self.peer,
            &mut self.phase,
            &mut self.account_slot,
            body,
        )
        .await;
        if let (Some(after_id), Some(followed), Body::Mailbox(page)) =
            (following, follower, &reply.body)
        {
            self.follow = Some(Follow::after(after_id, page, followed));
        }
        Ok(Some((id, reply)))
    }
}

impl Drop for Conn {
    /// Leaves the hub: the connection no longer waits on its device's mailbox.
    fn drop(&mut self) {
        if let Some((device, rx)) = self.wake.take() {
            drop(rx);
            self.state.hub.release(device);
        }
    }
}

/// Most sends and acks one connection may have waiting for their commit; beyond,
/// the connection is not read until one completes.
const MAX_IN_FLIGHT: usize = 64;

/// Most entries pushed to a following connection and not yet acknowledged on it
/// (P443); beyond, pushing waits for acks.
const FOLLOW_WINDOW: usize = 1_000;

/// A request handled beside others: its answer, and how many entries it acked.
struct Done {
    request_id: u64,
    reply: Reply,
    acked: usize,
}

type InFlight = std::pin::Pin<Box<dyn std::future::Future<Output = Done> + Send>>;

/// A send or an ack, owning what it needs so that several run at once. The store
/// takes the write when the future is first polled, so writes keep arrival order.
fn pipelined(
    state: Arc<ServerState>,
    auth: Authenticated,
    request_id: u64,
    body: Request,
) -> InFlight {
    Box::pin(async move {
        let (result, acked) = match body {
            Request::Send {
                group_id,
                epoch,
                ciphertext,
                client_message_id,
            } => (
                messaging::send(
                    &state,
                    &auth,
                    group_id,
                    epoch,
                    ciphertext,
                    client_message_id,
                )
                .await,
                0,
            ),
            Request::Ack { ids, missed_seen } => {
                let n = ids.len();
                let r = messaging::ack(&state, &auth, ids, missed_seen).await;
                let acked = if r.is_ok() { n } else { 0 };
                (r, acked)
            }
            _ => (
                Err(Refusal::new(ErrorCode::Internal, "not a pipelined request")),
                0,
            ),
        };
        Done {
            request_id,
            reply: match result {
                Ok(body) => Reply::ok(body),
                Err(r) => refusal(r),
            },
            acked,
        }
    })
}

/// `fut` run to its end by a task of its own, whatever becomes of the connection
/// (a write that started commits or fails whole; its answer is then dropped).
fn spawned(request_id: u64, fut: InFlight) -> InFlight {
    let task = tokio::spawn(fut);
    Box::pin(async move {
        match task.await {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(error = %e, "a pipelined request's task failed");
                Done {
                    request_id,
                    reply: fatal(ErrorCode::Internal, "internal error"),
                    acked: 0,
                }
            }
        }
    })
}

fn encode(request_id: u64, reply: Reply) -> Bytes {
    frame::encode_body(&pb::ServerFrame {
        request_id,
        body: Some(reply.body),
    })
}

/// Waits for every request in flight and writes their answers, in order.
async fn finish_in_flight<W>(
    inflight: &mut FuturesOrdered<InFlight>,
    frames_out: &mut FramedWrite<W, LengthDelimitedCodec>,
    follow: &mut Option<Follow>,
) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    while let Some(done) = inflight.next().await {
        if let Some(f) = follow.as_mut() {
            f.acked(done.acked);
        }
        frames_out.feed(encode(done.request_id, done.reply)).await?;
    }
    Ok(())
}

/// Resolves when the hub handed `follower` something; never without one.
async fn handed_over(follower: Option<&crate::hub::Follower>) {
    match follower {
        Some(f) => f.notified().await,
        None => std::future::pending().await,
    }
}

/// A connection's place among its device's followers in the hub; left on drop.
struct Followed {
    hub: Arc<crate::hub::Hub>,
    device: hush_proto::ids::DeviceId,
    follower: Arc<crate::hub::Follower>,
}

impl Followed {
    fn new(hub: Arc<crate::hub::Hub>, device: hush_proto::ids::DeviceId) -> Self {
        let follower = hub.follow(device);
        Followed {
            hub,
            device,
            follower,
        }
    }
}

impl Drop for Followed {
    fn drop(&mut self) {
        self.hub.unfollow(self.device, &self.follower);
    }
}

impl std::ops::Deref for Followed {
    type Target = Arc<crate::hub::Follower>;
    fn deref(&self) -> &Self::Target {
        &self.follower
    }
}

/// Most entries a following connection keeps handed over and not yet pushed (its
/// window full); beyond, it reads them from the store when the window opens.
const QUEUED_MAX: usize = 2 * FOLLOW_WINDOW;

/// P443: what a following connection has been pushed, and what waits for it.
struct Follow {
    /// The last entry id answered or pushed on this connection.
    cursor: u64,
    /// Entries pushed and not acknowledged on this connection since.
    unacked: usize,
    /// The store may hold entries after `cursor` that were not handed over.
    pending: bool,
    /// The missed count last told, so an unchanged one is not pushed again.
    missed: u32,
    /// Entries handed over by the hub after `cursor`, in commit order.
    queued: std::collections::VecDeque<hush_proto::response::Entry>,
    follower: Followed,
}

impl Follow {
    /// Starts following: `page` answered a `Fetch{after_id, follow}` read after
    /// `follower` was registered.
    fn after(after_id: u64, page: &pb::Mailbox, follower: Followed) -> Follow {
        let mut f = Follow {
            cursor: page.entries.last().map_or(after_id, |e| e.id),
            unacked: page.entries.len(),
            pending: page.more,
            missed: page.missed,
            queued: Default::default(),
            follower,
        };
        // What committed while the page was read is in both: skipped by id.
        f.take();
        f
    }

    fn ready(&self) -> bool {
        self.unacked < FOLLOW_WINDOW && (self.pending || !self.queued.is_empty())
    }

    fn acked(&mut self, n: usize) {
        self.unacked = self.unacked.saturating_sub(n);
    }

    /// Takes what the hub handed over since the last look.
    fn take(&mut self) {
        let taken = self.follower.take();
        if taken.read {
            // Something was not handed over: the store has it all, in order.
            self.pending = true;
        }
        if self.pending {
            // Committed, so the store read that comes next returns them.
            self.queued.clear();
            return;
        }
        let last = self.queued.back().map_or(self.cursor, |e| e.id);
        self.queued
            .extend(taken.entries.into_iter().filter(|e| e.id > last));
        if self.queued.len() > QUEUED_MAX {
            self.queued.clear();
            self.pending = true;
        }
    }

    /// The next push, as the window allows: handed-over entries, or entries read
    /// after the cursor (with the missed count when it changed); `None` when there
    /// is nothing new.
    async fn pull(
        &mut self,
        state: &ServerState,
        device: hush_proto::ids::DeviceId,
    ) -> Result<Option<Body>, Refusal> {
        let room = FOLLOW_WINDOW.saturating_sub(self.unacked);
        let limit = room.min(hush_proto::request::MAX_FETCH as usize);
        if !self.pending {
            let budget = messaging::answer_budget(state);
            let mut entries = Vec::new();
            let mut bytes = 0usize;
            while let Some(e) = self.queued.front() {
                let size = e.payload.len() + hush_proto::frame::ENTRY_OVERHEAD;
                if entries.len() >= limit || (!entries.is_empty() && bytes + size > budget) {
                    break;
                }
                bytes += size;
                if let Some(e) = self.queued.pop_front() {
                    self.cursor = e.id;
                    entries.push(e.to_pb());
                }
            }
            if entries.is_empty() {
                return Ok(None);
            }
            self.unacked += entries.len();
            return Ok(Some(Body::Delivery(pb::Mailbox {
                entries,
                missed: 0,
                more: !self.queued.is_empty(),
            })));
        }
        self.queued.clear();
        let limit = u32::try_from(limit).unwrap_or(u32::MAX);
        let page = messaging::page(state, device, self.cursor, limit).await?;
        self.pending = page.more;
        if page.entries.is_empty() && page.missed == self.missed {
            return Ok(None);
        }
        if let Some(last) = page.entries.last() {
            self.cursor = last.id;
        }
        self.unacked += page.entries.len();
        self.missed = page.missed;
        Ok(Some(Body::Delivery(page)))
    }
}

/// Buffers at most this big are kept while idle: small frames reuse them.
const KEEP_IDLE_BUFFER: usize = 512;

fn shrink_when_empty(buf: &mut bytes::BytesMut) {
    if buf.is_empty() && buf.capacity() > KEEP_IDLE_BUFFER {
        *buf = bytes::BytesMut::new();
    }
}

/// Whether `buf` holds a complete frame (its length prefix and its whole body).
fn next_frame_buffered(buf: &[u8]) -> bool {
    let Some(len) = buf.first_chunk::<{ frame::LENGTH_PREFIX }>() else {
        return false;
    };
    buf.len() - frame::LENGTH_PREFIX >= u32::from_be_bytes(*len) as usize
}

/// Resolves when the mailbox of the connection's device changed (false) or the device
/// was revoked (true); never before authentication.
async fn mailbox_changed(
    wake: &mut Option<(hush_proto::ids::DeviceId, watch::Receiver<Signal>)>,
) -> Option<bool> {
    match wake {
        Some((_, rx)) => {
            rx.changed().await.ok()?;
            Some(rx.borrow_and_update().revoked)
        }
        None => std::future::pending().await,
    }
}

async fn dispatch(
    st: &ServerState,
    peer: SocketAddr,
    phase: &mut Phase,
    slot: &mut AccountSlot,
    req: Request,
) -> Reply {
    match (std::mem::replace(phase, Phase::Unauthenticated), req) {
        (Phase::AwaitHello, Request::Hello { versions, client }) => {
            let Some(version) = SUPPORTED_VERSIONS
                .iter()
                .rev()
                .find(|v| versions.contains(v))
            else {
                tracing::info!(%peer, ?versions, "closing: no common protocol version");
                *phase = Phase::AwaitHello;
                return fatal(
                    ErrorCode::UnsupportedVersion,
                    format!(
                        "unsupported protocol version {versions:?}; this server speaks {SUPPORTED_VERSIONS:?}"
                    ),
                );
            };
            tracing::debug!(%peer, %client, version, "hello");
            Reply::ok(Body::HelloOk(pb::HelloOk {
                version: *version,
                server: format!("hushd {}", env!("CARGO_PKG_VERSION")),
                registration: st.config.registration.to_string(),
            }))
        }
        (Phase::AwaitHello, _) => fatal(
            ErrorCode::ProtocolViolation,
            "the first frame must be hello",
        ),
        (_, Request::Hello { .. }) => fatal(ErrorCode::ProtocolViolation, "hello sent twice"),
        (previous, Request::Ping { payload }) => {
            // A keep-alive changes nothing: the session stays where it was.
            *phase = previous;
            Reply::ok(Body::Pong(pb::Pong { payload }))
        }
        (
            Phase::Unauthenticated | Phase::Registering(_) | Phase::LoggingIn(_),
            Request::RegisterStart {
                username,
                request,
                invite,
            },
        ) => match accounts::register_start(st, peer.ip(), username, request, invite).await {
            Ok((response, pending)) => {
                *phase = Phase::Registering(pending);
                Reply::ok(Body::RegisterChallenge(pb::RegisterChallenge {
                    registration_response: Bytes::from(response.serialize().to_vec()),
                }))
            }
            Err(r) => refusal(r),
        },
        (
            Phase::Registering(pending),
            Request::RegisterFinish {
                upload,
                display_name,
                email,
                device_name,
                account_key,
                sealed_account_key,
            },
        ) => {
            let keys = accounts::AccountKeys {
                public: account_key,
                sealed: sealed_account_key,
            };
            match accounts::register_finish(
                st,
                pending,
                *upload,
                display_name,
                email,
                device_name,
                keys,
            )
            .await
            {
                Ok((account, token, auth)) => {
                    // A new account's first connection always counts (P106).
                    *slot = st.per_account.try_take(auth.user_id, usize::MAX);
                    *phase = Phase::Authenticated {
                        auth,
                        token_digest: token.digest(),
                    };
                    Reply::ok(Body::Registered(pb::Registered {
                        account: Some(account.to_pb()),
                        session_token: Bytes::copy_from_slice(token.expose()),
                    }))
                }
                Err(r) => refusal(r),
            }
        }
        (
            Phase::Unauthenticated | Phase::Registering(_) | Phase::LoggingIn(_),
            Request::LoginStart { username, request },
        ) => match accounts::login_start(st, peer.ip(), username, request).await {
            Ok((response, pending)) => {
                *phase = Phase::LoggingIn(Box::new(pending));
                Reply::ok(Body::LoginChallenge(pb::LoginChallenge {
                    credential_response: Bytes::from(response.serialize().to_vec()),
                }))
            }
            Err(r) => refusal(r),
        },
        (
            Phase::LoggingIn(pending),
            Request::LoginFinish {
                finalization,
                device_name,
                second_factor,
            },
        ) => match accounts::login_finish(st, *pending, finalization, device_name, second_factor)
            .await
        {
            Ok((account, token, auth, keys)) => {
                // The device exists now: its first connection is counted, not refused.
                *slot = st.per_account.try_take(auth.user_id, usize::MAX);
                *phase = Phase::Authenticated {
                    auth,
                    token_digest: token.digest(),
                };
                Reply::ok(Body::LoggedIn(pb::LoggedIn {
                    account: Some(account.to_pb()),
                    session_token: Bytes::copy_from_slice(token.expose()),
                    account_key: Bytes::copy_from_slice(keys.public.as_bytes()),
                    sealed_account_key: keys.sealed,
                }))
            }
            Err(r) => refusal(r),
        },
        (
            Phase::Unauthenticated | Phase::Registering(_) | Phase::LoggingIn(_),
            Request::Authenticate { token },
        ) => match accounts::authenticate(st, peer.ip(), &token).await {
            Ok(session) => {
                let max = st.config.limits.connections_per_account;
                let Some(taken) = st.per_account.try_take(session.user_id, max) else {
                    tracing::info!(%peer, user = %session.username, max, "refused a session: too many connections for the account");
                    return refusal(Refusal {
                        code: ErrorCode::RateLimited,
                        message: format!(
                            "this account has {max} connections open, the most allowed; close one"
                        ),
                        retry_after_secs: 10,
                    });
                };
                *slot = Some(taken);
                let account = accounts::account_of_session(&session);
                *phase = Phase::Authenticated {
                    auth: Authenticated {
                        user_id: session.user_id,
                        username: session.username,
                        device_id: session.device_id,
                    },
                    token_digest: token.digest(),
                };
                Reply::ok(Body::Authenticated(pb::Authenticated {
                    account: Some(account.to_pb()),
                }))
            }
            Err(r) => refusal(r),
        },
        (Phase::Authenticated { auth, token_digest }, Request::WhoAmI) => {
            let reply = match accounts::current(st, &auth, &token_digest).await {
                Ok(session) => Reply::ok(Body::Account(
                    accounts::account_of_session(&session).to_pb(),
                )),
                Err(r) => Reply {
                    close: true,
                    ..refusal(r)
                },
            };
            *phase = Phase::Authenticated { auth, token_digest };
            reply
        }
        (Phase::Authenticated { auth, .. }, Request::Logout) => {
            match st.store.remove_device(auth.device_id).await {
                Ok(()) => {
                    tracing::debug!(user = %auth.username, device = %auth.device_id, "logged out");
                    Reply {
                        body: Body::LoggedOut(pb::LoggedOut {}),
                        close: true,
                    }
                }
                Err(e) => refusal(e.into()),
            }
        }
        (Phase::Authenticated { auth, token_digest }, req) => {
            let result = match req {
                Request::PublishKeyPackages {
                    key_packages,
                    last_resort,
                } => messaging::publish_key_packages(st, &auth, key_packages, last_resort).await,
                Request::KeyPackageStatus => messaging::key_package_status(st, &auth).await,
                Request::ClaimKeyPackages { usernames } => {
                    messaging::claim_key_packages(st, &auth, usernames).await
                }
                Request::LookupDevices { devices } => messaging::lookup_devices(st, devices).await,
                Request::CreateGroup {
                    group_id,
                    name,
                    direct_peer,
                    welcome,
                    members,
                    client_key,
                    channel,
                    group_info,
                } => {
                    let g = messaging::CreateIn {
                        client_key,
                        group_id,
                        name,
                        direct_peer,
                        welcome,
                        members,
                        channel,
                        group_info,
                    };
                    messaging::create_group(st, &auth, g).await
                }
                Request::FindGroup { name } => messaging::find_group(st, name).await,
                Request::ListDevices { usernames } => messaging::list_devices(st, usernames).await,
                Request::AdminShutdown => match accounts::current(st, &auth, &token_digest).await {
                    Ok(s) if s.admin => {
                        tracing::warn!(user = %auth.username, "admin asked the server to shut down");
                        st.stop_requested.send_replace(true);
                        Ok(Body::ShutdownStarted(pb::ShutdownStarted {}))
                    }
                    Ok(_) => Err(Refusal::new(
                        ErrorCode::Forbidden,
                        "only server admins may do that",
                    )),
                    Err(r) => Err(r),
                },
                Request::FindDirect { peer } => messaging::find_direct(st, &auth, peer).await,
                Request::Commit {
                    group_id,
                    epoch,
                    commit,
                    welcome,
                    added,
                    removed,
                    client_key,
                    group_info,
                    external,
                    proposals,
                    base_group_info,
                } => {
                    let c = messaging::CommitIn {
                        group_id,
                        epoch,
                        commit,
                        welcome,
                        added,
                        removed,
                        client_key,
                        group_info,
                        external,
                        proposals,
                        base_group_info,
                    };
                    messaging::commit(st, &auth, c).await
                }
                Request::Send {
                    group_id,
                    epoch,
                    ciphertext,
                    client_message_id,
                } => {
                    messaging::send(st, &auth, group_id, epoch, ciphertext, client_message_id).await
                }
                Request::Fetch {
                    after_id, limit, ..
                } => messaging::fetch(st, &auth, after_id, limit).await,
                Request::Ack { ids, missed_seen } => {
                    messaging::ack(st, &auth, ids, missed_seen).await
                }
                Request::ListMyDevices => messaging::list_my_devices(st, &auth).await,
                Request::RevokeDevice { device, revocation } => {
                    messaging::revoke_device(st, &auth, device, revocation).await
                }
                Request::ListRequests => messaging::list_requests(st, &auth).await,
                Request::AnswerRequest { inviter, accept } => {
                    messaging::answer_request(st, &auth, inviter, accept).await
                }
                Request::TotpEnable => crate::two_factor::enable(st, &auth).await.map(|secret| {
                    Body::TotpSecret(pb::TotpSecret {
                        secret: Bytes::copy_from_slice(secret.expose()),
                    })
                }),
                Request::TotpConfirm { code } => crate::two_factor::confirm(st, &auth, &code)
                    .await
                    .map(|codes| {
                        Body::TotpEnabled(pb::TotpEnabled {
                            recovery_codes: codes.iter().map(|c| c.display()).collect(),
                        })
                    }),
                Request::TotpDisable { second_factor } => {
                    crate::two_factor::disable(st, &auth, &second_factor)
                        .await
                        .map(|()| Body::TotpDisabled(pb::TotpDisabled {}))
                }
                Request::JoinChannel {
                    name,
                    password,
                    code,
                } => crate::channels::join(st, &auth, peer.ip(), name, password, code).await,
                Request::ListChannels => crate::channels::list(st).await,
                Request::UpdateChannel {
                    name,
                    password,
                    totp_secret,
                    admins,
                } => crate::channels::update(st, &auth, name, password, totp_secret, admins).await,
                Request::DeleteChannel { name } => crate::channels::delete(st, &auth, name).await,
                Request::FileCreate { group_id, size } => {
                    crate::files::create(st, &auth, group_id, size).await
                }
                Request::FileUpload {
                    file_id,
                    offset,
                    data,
                } => crate::files::upload(st, &auth, file_id, offset, data).await,
                Request::FileStatus { file_id } => crate::files::status(st, &auth, file_id).await,
                Request::FileDownload {
                    file_id,
                    offset,
                    len,
                } => crate::files::download(st, &auth, file_id, offset, len).await,
                Request::FileFetched { file_id } => crate::files::fetched(st, &auth, file_id).await,
                Request::FileDelete { file_id } => crate::files::delete(st, &auth, file_id).await,
                Request::BackupStatus => crate::backups::status(st, &auth).await,
                Request::BackupKeys {
                    wrapped_password,
                    wrapped_recovery,
                    signature,
                } => {
                    crate::backups::keys(st, &auth, wrapped_password, wrapped_recovery, signature)
                        .await
                }
                Request::BackupAppend { index, chunk, head } => {
                    crate::backups::append(st, &auth, index, chunk, head).await
                }
                Request::BackupFetch { from } => crate::backups::fetch(st, &auth, from).await,
                Request::PutGroupInfo {
                    group_id,
                    epoch,
                    sealed,
                } => messaging::put_group_info(st, &auth, group_id, epoch, sealed).await,
                Request::ListGroupInfos => messaging::group_infos(st, &auth).await,
                Request::GetGroupInfo { group_id } => {
                    messaging::group_info(st, &auth, group_id).await
                }
                _ => Err(Refusal::new(
                    ErrorCode::ProtocolViolation,
                    "already authenticated",
                )),
            };
            *phase = Phase::Authenticated { auth, token_digest };
            match result {
                Ok(body) => Reply::ok(body),
                Err(r) => refusal(r),
            }
        }
        (previous, _) => {
            // Out-of-order step (e.g. RegisterFinish without RegisterStart); keep state.
            *phase = previous;
            refusal(Refusal::new(
                ErrorCode::Unauthenticated,
                "not authenticated, or this step is out of order",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::next_frame_buffered;

    #[test]
    fn a_buffered_frame_is_complete_only_with_its_whole_body() {
        assert!(!next_frame_buffered(&[]));
        assert!(!next_frame_buffered(&[0, 0, 0]));
        assert!(next_frame_buffered(&[0, 0, 0, 0]), "an empty body");
        assert!(!next_frame_buffered(&[0, 0, 0, 3, 1, 2]));
        assert!(next_frame_buffered(&[0, 0, 0, 3, 1, 2, 3, 9]));
    }
}
