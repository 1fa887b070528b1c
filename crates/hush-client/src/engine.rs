//! The engine: the one task that owns a home's database and its connection. It
//! connects, authenticates, settles recorded handshakes, syncs the mailbox, flushes
//! the outbox, reconnects with backoff, keeps the link alive with pings, and runs the
//! commands front ends send it through [`crate::Client`], one at a time. New history
//! rows are published on the event stream as they commit.
//!
//! It runs on a thread of its own with a single-threaded runtime: rusqlite connections
//! are `Send` but not `Sync`, so every use of the database stays on that thread and
//! front ends talk to it by message. No network I/O happens inside a local
//! transaction ([`Home::write`]), so a command or the engine itself can be stopped at
//! any await without leaving half a change behind.
use std::rc::Rc;
use std::time::Duration;

use futures::future::LocalBoxFuture;
use hush_crypto::identity::Identity;
use hush_proto::ErrorCode;
use hush_proto::pb::{self, client_frame::Body};
use hush_proto::response::{Account, Response};
use tokio::sync::{broadcast, mpsc, watch};

use crate::ClientError;
use crate::connection::{Connection, FaultRules, unexpected};
use crate::events::{ConnectionState, Event};
use crate::home::Home;
use crate::messaging::{Messenger, load_identity};
use crate::trust::FirstUse;

const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A ping after this long without traffic keeps NATs and the server's idle timer happy.
const KEEPALIVE: Duration = Duration::from_secs(30);
/// Pause before retrying a sync that failed locally (not the network).
const LOCAL_RETRY: Duration = Duration::from_secs(2);
/// New history waits this long for more before it is backed up (one chunk per batch).
const BACKUP_DELAY: Duration = Duration::from_secs(5);
/// How long closing waits for the last backup.
const BACKUP_ON_CLOSE: Duration = Duration::from_secs(5);

/// A command for the engine: runs on the engine's thread with the engine borrowed.
pub(crate) type Job = Box<dyn for<'a> FnOnce(&'a mut Engine) -> LocalBoxFuture<'a, ()> + Send>;

/// An authenticated session.
pub(crate) struct Live {
    pub conn: Connection,
    pub account: Account,
    pub identity: Identity,
}

pub(crate) struct Engine {
    pub(crate) home: Home,
    pub(crate) faults: FaultRules,
    /// Never connects (local commands only).
    offline_only: bool,
    live: Option<Rc<Live>>,
    /// Why the engine is not online, for commands that need the server.
    offline: Option<ClientError>,
    /// Set by a command that saw the connection fail; the engine reconnects.
    pub(crate) broken: bool,
    /// Set when the engine should stop (logout, close).
    pub(crate) stopping: bool,
    events: broadcast::Sender<Event>,
    state: watch::Sender<ConnectionState>,
    /// The newest history row published on the event stream.
    published: i64,
    /// The recovery key made at registration, until the front end takes it to show.
    pub(crate) fresh_recovery: Option<hush_crypto::backup::RecoveryKey>,
    /// When new history is due for the backup (P572).
    backup_due: Option<tokio::time::Instant>,
}

/// Errors after which reconnecting cannot help: the engine stops trying.
fn fatal(e: &ClientError) -> bool {
    match e {
        ClientError::FingerprintChanged { .. }
        | ClientError::FingerprintMismatch { .. }
        | ClientError::UnknownServer { .. }
        | ClientError::NoAccount
        | ClientError::Home(_) => true,
        ClientError::Server(s) => matches!(
            s.code,
            ErrorCode::AuthFailed
                | ErrorCode::AccountDisabled
                | ErrorCode::Unauthenticated
                | ErrorCode::Forbidden
                | ErrorCode::UnsupportedVersion
        ),
        _ => false,
    }
}

/// Errors that mean the connection is no longer usable.
pub(crate) fn transport(e: &ClientError) -> bool {
    e.is_transport()
}

/// A copy of an error for the many commands that fail for the same reason.
fn again(e: &ClientError) -> ClientError {
    match e {
        ClientError::Unreachable { server, reason } => ClientError::Unreachable {
            server: server.clone(),
            reason: reason.clone(),
        },
        ClientError::Disconnected(r) => ClientError::Disconnected(r.clone()),
        ClientError::Timeout(s) => ClientError::Timeout(*s),
        ClientError::NoAccount => ClientError::NoAccount,
        ClientError::Server(s) => ClientError::Server(s.clone()),
        ClientError::WrongPassword => ClientError::WrongPassword,
        ClientError::FingerprintChanged {
            server,
            pinned,
            presented,
            known_servers,
        } => ClientError::FingerprintChanged {
            server: server.clone(),
            pinned: *pinned,
            presented: *presented,
            known_servers: known_servers.clone(),
        },
        other => ClientError::Invalid(other.to_string()),
    }
}

impl Engine {
    pub(crate) fn new(
        home: Home,
        faults: FaultRules,
        offline_only: bool,
        events: broadcast::Sender<Event>,
        state: watch::Sender<ConnectionState>,
    ) -> Result<Engine, ClientError> {
        let published = crate::history::last_row(&home)?;
        Ok(Engine {
            home,
            faults,
            live: None,
            offline: offline_only.then(|| {
                ClientError::Invalid("this command does not connect to the server".into())
            }),
            offline_only,
            broken: false,
            stopping: false,
            events,
            state,
            published,
            fresh_recovery: None,
            backup_due: None,
        })
    }

    /// The session, or why there is none.
    pub(crate) fn live(&self) -> Result<Rc<Live>, ClientError> {
        match (&self.live, &self.offline) {
            (Some(l), _) if !self.broken && !l.conn.is_closed() => Ok(Rc::clone(l)),
            (_, Some(e)) => Err(again(e)),
            _ => Err(ClientError::Disconnected(None)),
        }
    }

    pub(crate) fn messenger<'a>(&'a self, live: &'a Live) -> Messenger<'a> {
        Messenger {
            home: &self.home,
            conn: &live.conn,
            account: &live.account,
            identity: &live.identity,
            events: &self.events,
        }
    }

    fn set_state(&self, s: ConnectionState) {
        if *self.state.borrow() != s {
            tracing::debug!(state = s.as_str(), "connection state");
            self.state.send_replace(s.clone());
            let _ = self.events.send(Event::Connection(s));
        }
    }

    pub(crate) fn emit(&self, e: Event) {
        let _ = self.events.send(e);
    }

    /// Rows committed so far are not published (restored history is not news).
    pub(crate) fn skip_published(&mut self) -> Result<(), ClientError> {
        self.published = self.published.max(crate::history::last_row(&self.home)?);
        Ok(())
    }

    /// Uploads new history to the backup; a failure is logged and shown, never fatal.
    pub(crate) async fn back_up(&mut self) {
        self.backup_due = None;
        let Some(live) = self.live.clone() else {
            return;
        };
        match crate::backup::upload(&self.home, &live.conn).await {
            Ok(_) => {}
            Err(e) if transport(&e) => {
                tracing::info!(error = %e, "backup postponed: the connection dropped");
            }
            Err(e @ ClientError::Backup(_)) => {
                tracing::warn!(error = %e, "backup refused");
                self.emit(Event::LocalError {
                    message: e.to_string(),
                });
            }
            Err(e) => tracing::warn!(error = %e, "backup failed; it is tried again later"),
        }
    }

    /// The last backup before the engine closes, if history waits for one.
    async fn back_up_before_closing(&mut self) {
        if matches!(self.home.account(), Ok(Some(_)))
            && matches!(crate::backup::pending(&self.home), Ok(true))
            && tokio::time::timeout(BACKUP_ON_CLOSE, self.back_up())
                .await
                .is_err()
        {
            tracing::info!("closing before the backup finished; it goes next time");
        }
    }

    /// Publishes every history row committed since the last call.
    pub(crate) fn publish(&mut self) {
        match crate::history::after(&self.home, self.published) {
            Ok(events) => {
                if !events.is_empty() && self.live.is_some() && self.backup_due.is_none() {
                    self.backup_due = Some(tokio::time::Instant::now() + BACKUP_DELAY);
                }
                for e in events {
                    if let Some(row) = e.row() {
                        self.published = self.published.max(row);
                    }
                    let _ = self.events.send(e);
                }
            }
            Err(e) => self.emit(Event::LocalError {
                message: format!("reading history: {e}"),
            }),
        }
    }

    /// Writes a message into the outbox of a conversation this home already has, with
    /// no server: the engine sends it once connected, and its `Delivery` event says so.
    /// A conversation that does not exist here yet needs the server to be started.
    pub(crate) fn queue(&self, target: &crate::Target, text: &str) -> Result<i64, ClientError> {
        crate::messaging::check_text(text)?;
        let stored = self.home.account()?.ok_or(ClientError::NoAccount)?;
        let (name, kind) = match target {
            crate::Target::User(u) => (u.to_string(), "direct"),
            crate::Target::Group(g) => (g.to_string(), "group"),
        };
        let group = crate::messaging::local_conversation(&self.home, &name, kind)?.ok_or_else(
            || match self.offline.as_ref() {
                Some(why) => ClientError::Invalid(format!(
                    "not sent: a conversation with {name} can only be started online ({why})"
                )),
                None => ClientError::Disconnected(None),
            },
        )?;
        let account = Account {
            user_id: stored.user_id,
            username: stored.username.clone(),
            display_name: stored.display_name.clone(),
            email: stored.email.clone(),
            device_id: stored.device_id,
            admin: false,
            created_at: stored.created_at,
        };
        let identity = load_identity(&self.home, &account)?;
        let (_, row) = crate::messaging::compose(
            &self.home,
            &identity,
            &stored.username,
            stored.device_id,
            group,
            &hush_proto::content::ContentBody::Text(text.to_owned()),
        )?;
        Ok(row)
    }

    /// Adopts a session made outside the engine (registration, login).
    pub(crate) fn adopt(&mut self, conn: Connection, account: Account) -> Result<(), ClientError> {
        let identity = load_identity(&self.home, &account)?;
        self.live = Some(Rc::new(Live {
            conn,
            account,
            identity,
        }));
        self.offline = None;
        self.broken = false;
        Ok(())
    }

    async fn connect(&mut self) -> Result<(), ClientError> {
        let stored = self.home.account()?.ok_or(ClientError::NoAccount)?;
        // The server is pinned already; an unknown key here is refused, not trusted.
        let conn = Connection::connect_with(
            &stored.server,
            self.home.known_servers(),
            &FirstUse::Refuse,
            self.faults.clone(),
        )
        .await?;
        let answer = conn
            .request(Body::Authenticate(pb::Authenticate {
                session_token: stored.token.expose().to_vec().into(),
            }))
            .await?;
        let account = match answer {
            Response::Authenticated(account) => account,
            other => return Err(unexpected(&other)),
        };
        self.adopt(conn, account)
    }

    /// Everything a fresh session does before it is online: settle handshakes, catch
    /// up, finish leaves, adopt devices, top up key packages, send the outbox.
    pub(crate) async fn catch_up(&mut self) -> Result<usize, ClientError> {
        let live = self.live()?;
        let m = self.messenger(&live);
        let mut added = m.sync().await?;
        // P543, P547: this account's own published key and revocations, checked even
        // with no conversation yet.
        match m.own_identity_warning().await {
            Ok(Some(warning)) => {
                tracing::error!(%warning, "this account's published key is not its own");
                self.emit(Event::LocalError { message: warning });
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not check this account's published key"),
        }
        // P571: backup keys made while the server could not keep them go now.
        if let Some(account) = self.home.account_key()?
            && let Err(e) = crate::backup::send_pending_keys(&self.home, &live.conn, &account).await
        {
            tracing::warn!(error = %e, "the backup keys still wait on this device");
        }
        // P536: a new device joins its account's conversations by itself.
        if m.join_own_conversations().await? + m.resync_conversations().await? > 0 {
            added += m.sync().await?;
        }
        m.flush_outbox().await?;
        Ok(added)
    }

    async fn close_connection(&mut self) {
        if let Some(live) = self.live.take()
            && let Ok(live) = Rc::try_unwrap(live)
        {
            live.conn.close().await;
        }
    }

    /// Runs until every [`crate::Client`] handle is gone or the engine is stopped.
    pub(crate) async fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        if self.offline_only {
            self.serve_offline(&mut jobs, None).await;
            return;
        }
        let mut backoff = BACKOFF_FIRST;
        loop {
            if self.stopping {
                self.close_connection().await;
                return;
            }
            if self.live.is_none() {
                self.set_state(ConnectionState::Connecting);
                if let Err(e) = self.connect().await {
                    if fatal(&e) {
                        // A home without an account (an enrolment that failed) has
                        // nothing to reconnect: not worth a warning.
                        if matches!(e, ClientError::NoAccount) {
                            tracing::debug!(error = %e, "not reconnecting");
                        } else {
                            tracing::warn!(error = %e, "not reconnecting");
                        }
                        self.set_state(ConnectionState::Failed {
                            reason: e.to_string(),
                        });
                        self.offline = Some(e);
                        self.serve_offline(&mut jobs, None).await;
                        self.close_connection().await;
                        return;
                    }
                    self.offline = Some(e);
                }
            }
            if self.live.is_some() {
                let caught_up = match self.catch_up().await {
                    Err(e) if transport(&e) => Err(e),
                    Err(e) => {
                        // Our storage or code failed on an entry: it stays unacked and
                        // is retried (the wake-up below); the device still goes online
                        // to send and receive.
                        tracing::warn!(error = %e, "catching up failed locally");
                        self.emit(Event::LocalError {
                            message: format!("catching up: {e}"),
                        });
                        if let Some(live) = &self.live {
                            live.conn.mark_mailbox_changed();
                        }
                        Ok(())
                    }
                    Ok(_) => Ok(()),
                };
                self.publish();
                match caught_up {
                    Ok(()) => {
                        backoff = BACKOFF_FIRST;
                        self.set_state(ConnectionState::Online);
                        let reason = self.serve_online(&mut jobs).await;
                        self.live = None;
                        match reason {
                            // Every handle is gone, or the engine was stopped.
                            None => return,
                            Some(e) => self.offline = Some(e),
                        }
                    }
                    Err(e) => {
                        self.live = None;
                        self.offline = Some(e);
                    }
                }
            }
            if self.stopping {
                return;
            }
            let reason = self
                .offline
                .as_ref()
                .map(|e| e.to_string())
                .unwrap_or_else(|| "disconnected".into());
            tracing::info!(%reason, retry_in_ms = backoff.as_millis() as u64, "offline");
            self.set_state(ConnectionState::Offline {
                reason,
                retry_in_ms: backoff.as_millis() as u64,
            });
            if !self.serve_offline(&mut jobs, Some(backoff)).await {
                return;
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Serves commands without a connection until `wait` passes (forever if `None`).
    /// Returns false when every handle is gone.
    async fn serve_offline(
        &mut self,
        jobs: &mut mpsc::Receiver<Job>,
        wait: Option<Duration>,
    ) -> bool {
        let sleep = tokio::time::sleep(wait.unwrap_or(Duration::from_secs(u32::MAX as u64)));
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep, if wait.is_some() => return true,
                job = jobs.recv() => match job {
                    None => return false,
                    Some(job) => {
                        job(self).await;
                        self.publish();
                        if self.stopping {
                            return false;
                        }
                        // A command (login) may have brought a session.
                        if self.live.is_some() && !self.broken {
                            return true;
                        }
                    }
                },
            }
        }
    }

    /// Serves commands and wake-ups while connected. Returns why the connection ended,
    /// or `None` when the engine should stop.
    async fn serve_online(&mut self, jobs: &mut mpsc::Receiver<Job>) -> Option<ClientError> {
        let live = self.live.clone()?;
        let mut idle = tokio::time::interval(KEEPALIVE);
        idle.reset();
        loop {
            let backup_due = self.backup_due;
            tokio::select! {
                job = jobs.recv() => match job {
                    None => {
                        self.back_up_before_closing().await;
                        drop(live);
                        self.close_connection().await;
                        return None;
                    }
                    Some(job) => {
                        job(self).await;
                        self.publish();
                        idle.reset();
                        if self.stopping {
                            if self.live.is_some() {
                                self.back_up_before_closing().await;
                            }
                            drop(live);
                            self.close_connection().await;
                            return None;
                        }
                        if self.live.is_none() {
                            return Some(ClientError::Disconnected(None));
                        }
                    }
                },
                _ = live.conn.mailbox_changed() => {
                    let m = self.messenger(&live);
                    let synced = m.sync().await;
                    self.publish();
                    idle.reset();
                    match synced {
                        Ok(_) => {}
                        Err(e) if transport(&e) => return Some(e),
                        Err(e) => {
                            // Our storage or code failed: nothing was acked, so the
                            // entries come again; say so, and try again shortly.
                            tracing::warn!(error = %e, "sync failed locally");
                            self.emit(Event::LocalError { message: e.to_string() });
                            tokio::time::sleep(LOCAL_RETRY).await;
                            live.conn.mark_mailbox_changed();
                        }
                    }
                }
                _ = live.conn.closed() => {
                    return Some(ClientError::Disconnected(live.conn.closed_reason()));
                }
                _ = tokio::time::sleep_until(backup_due.unwrap_or_else(tokio::time::Instant::now)),
                    if backup_due.is_some() => {
                    self.back_up().await;
                    idle.reset();
                }
                _ = idle.tick() => {
                    let ping = live
                        .conn
                        .request(Body::Ping(pb::Ping { payload: Default::default() }))
                        .await;
                    if let Err(e) = ping {
                        return Some(e);
                    }
                }
            }
            if self.broken {
                self.broken = false;
                return Some(ClientError::Disconnected(Some(
                    "a request failed; reconnecting".into(),
                )));
            }
        }
    }
}
