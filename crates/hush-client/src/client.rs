//! [`Client`]: the handle every front end uses. Owned, `Send + Sync`, cheap to clone;
//! each call is a message to the home's engine ([`crate::engine`]), which runs it on its
//! own thread, one at a time, and answers. [`Client::events`] is the typed stream of
//! what happens (messages, membership, security events, connection state).
//!
//! The engine keeps running while any handle lives; [`Client::close`] ends it
//! cleanly (TLS close_notify), dropping the last handle ends it too.
use std::path::{Path, PathBuf};

use futures::future::LocalBoxFuture;
use hush_proto::content::GroupName;
use hush_proto::fingerprint::Fingerprint;
use hush_proto::ids::Username;
use hush_proto::response::Account;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use zeroize::Zeroizing;

use crate::ClientError;
use crate::account::{self, Profile};
use crate::connection::{Connection, FaultRules};
use crate::engine::{Engine, Job, transport};
use crate::events::{ConnectionState, Event};
use crate::groups::Member;
use crate::history::{self, Chat};
use crate::home::{Home, StoredAccount};
use crate::identities::{Contact, Verification};
use crate::trust::FirstUse;
use hush_proto::ids::DeviceId;
use hush_proto::response::DeviceInfo;

/// Commands waiting for the engine; senders wait when it is busy.
const QUEUE: usize = 64;
/// Events kept for a slow reader of [`Client::events`] before it misses some.
const EVENT_BUFFER: usize = 4096;

/// How to open a client.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Never connect: only local commands (history, chats) work. For reading a home
    /// without waiting on the network.
    pub offline: bool,
    /// The passphrase of a home encrypted at rest; given to a new or plaintext home,
    /// it encrypts it (ADR 0006).
    pub unlock: crate::home::Unlock,
    /// Test-only: answers to drop (see [`crate::faults`]).
    #[cfg(feature = "fault-injection")]
    pub faults: crate::faults::Faults,
}

impl ClientOptions {
    /// Options for a client that never connects.
    // The fields differ with the test-only feature, so the update is needed there.
    #[allow(clippy::needless_update)]
    pub fn offline() -> ClientOptions {
        ClientOptions {
            offline: true,
            ..ClientOptions::default()
        }
    }

    fn fault_rules(&self) -> FaultRules {
        #[cfg(feature = "fault-injection")]
        {
            self.faults.clone()
        }
        #[cfg(not(feature = "fault-injection"))]
        {
            FaultRules::default()
        }
    }
}

/// Where a conversation is addressed: a user (1:1) or `#name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    User(Username),
    Group(GroupName),
}

impl Target {
    pub fn parse(s: &str) -> Result<Target, ClientError> {
        if s.starts_with('#') {
            GroupName::parse(s)
                .map(Target::Group)
                .map_err(|e| ClientError::Invalid(e.to_string()))
        } else {
            Username::parse(s)
                .map(Target::User)
                .map_err(|e| ClientError::Invalid(e.to_string()))
        }
    }

    /// The conversation's name in history (`alice`, `#team`).
    pub fn name(&self) -> String {
        match self {
            Target::User(u) => u.to_string(),
            Target::Group(g) => g.to_string(),
        }
    }
}

/// A membership change of a named group.
#[derive(Debug, Clone, Copy)]
enum Change {
    Create,
    Add,
    Remove,
    Promote,
}

/// This device's account as the server sees it, and the server.
#[derive(Debug, Clone)]
pub struct WhoAmI {
    pub account: Account,
    pub server: String,
    pub fingerprint: Fingerprint,
    /// P543: set when the server publishes an account key for this user that is not
    /// this account's own (someone may be posing as it).
    pub warning: Option<String>,
}

/// A new account or device to create on the home's first connection.
pub enum Enrolment {
    Register {
        username: Username,
        password: Zeroizing<Vec<u8>>,
        invite: Option<String>,
        profile: Profile,
    },
    Login {
        username: Username,
        password: Zeroizing<Vec<u8>>,
        device_name: Option<String>,
        /// P330: for an account with two-factor login on.
        second_factor: Option<hush_proto::ids::SecondFactor>,
    },
}

impl std::fmt::Debug for Enrolment {
    // The password never reaches Debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Enrolment::Register { username, .. } => {
                write!(f, "Register {{ username: {username}, .. }}")
            }
            Enrolment::Login { username, .. } => write!(f, "Login {{ username: {username}, .. }}"),
        }
    }
}

struct Shared {
    jobs: mpsc::Sender<Job>,
    events: broadcast::Sender<Event>,
    /// Subscribed before the engine started: the first [`Client::events`] caller gets
    /// it, and with it every event since the start (a catch-up right after opening).
    first_events: std::sync::Mutex<Option<broadcast::Receiver<Event>>>,
    state: watch::Receiver<ConnectionState>,
    done: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    #[cfg(feature = "fault-injection")]
    kill: std::sync::Mutex<Option<oneshot::Sender<()>>>,
}

/// The handle to one home's engine.
#[derive(Clone)]
pub struct Client {
    shared: std::sync::Arc<Shared>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("state", &*self.shared.state.borrow())
            .finish()
    }
}

/// The live event stream of one subscriber.
pub struct Events {
    rx: broadcast::Receiver<Event>,
}

impl Events {
    /// The next event; `None` once the engine has stopped. A reader too slow to keep
    /// up gets a [`Event::LocalError`] saying how many it missed (they are in history).
    pub async fn next(&mut self) -> Option<Event> {
        match self.rx.recv().await {
            Ok(e) => Some(e),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(Event::LocalError {
                message: format!("{n} events were missed; they are in the history"),
            }),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

impl Client {
    /// Opens the home at `dir` (which must hold an account) and starts its engine,
    /// which connects in the background.
    pub async fn open(dir: &Path, options: ClientOptions) -> Result<Client, ClientError> {
        Self::start(dir.to_owned(), options, None).await
    }

    /// Creates an account (or, for a login, a new device) on `server` in the empty home
    /// at `dir`, then starts its engine on that session. `first_use` decides whether an
    /// unknown server key is trusted; nothing is sent to a server that is not.
    pub async fn enrol(
        dir: &Path,
        server: &str,
        first_use: FirstUse,
        enrolment: Enrolment,
        options: ClientOptions,
    ) -> Result<(Client, Account), ClientError> {
        let server = server.to_owned();
        let (tx, rx) = oneshot::channel();
        let init: Job = Box::new(move |engine: &mut Engine| -> LocalBoxFuture<'_, ()> {
            Box::pin(async move {
                let r = enrol(engine, &server, &first_use, enrolment).await;
                let _ = tx.send(r);
            })
        });
        // What this enrolment adds to the home is taken away again if it fails, so
        // the home is left as it was and a retry starts clean.
        let before = home_entries(dir);
        let client = Self::start(dir.to_owned(), options, Some(init)).await?;
        let failed = match rx.await {
            Ok(Ok(account)) => return Ok((client, account)),
            Ok(Err(e)) => e,
            Err(_) => ClientError::Home("the engine stopped".into()),
        };
        client.close().await;
        remove_made_home(dir, before);
        Err(failed)
    }

    async fn start(
        dir: PathBuf,
        options: ClientOptions,
        init: Option<Job>,
    ) -> Result<Client, ClientError> {
        let (jobs_tx, jobs_rx) = mpsc::channel(QUEUE);
        let (events_tx, first_events) = broadcast::channel(EVENT_BUFFER);
        let (state_tx, state_rx) = watch::channel(ConnectionState::Connecting);
        let (opened_tx, opened_rx) = oneshot::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        #[cfg(feature = "fault-injection")]
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        let events = events_tx.clone();
        let faults = options.fault_rules();
        let offline = options.offline;
        let unlock = options.unlock.clone();
        let spawned = std::thread::Builder::new()
            .name("hush-engine".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = opened_tx
                            .send(Err(ClientError::Home(format!("starting the engine: {e}"))));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let engine = Home::open_with(&dir, &unlock).and_then(|home| {
                        if init.is_none() && home.account()?.is_none() {
                            return Err(ClientError::NoAccount);
                        }
                        Engine::new(home, faults, offline, events, state_tx)
                    });
                    let mut engine = match engine {
                        Ok(e) => {
                            let _ = opened_tx.send(Ok(()));
                            e
                        }
                        Err(e) => {
                            let _ = opened_tx.send(Err(e));
                            return;
                        }
                    };
                    let run = async move {
                        if let Some(init) = init {
                            init(&mut engine).await;
                        }
                        engine.run(jobs_rx).await;
                    };
                    #[cfg(feature = "fault-injection")]
                    tokio::select! {
                        _ = run => {}
                        // Killed: stop at whatever await the engine is in, as a
                        // process killed mid-request would.
                        _ = kill_rx => tracing::warn!("engine killed"),
                    }
                    #[cfg(not(feature = "fault-injection"))]
                    run.await;
                });
                let _ = done_tx.send(());
            });
        if let Err(e) = spawned {
            return Err(ClientError::Home(format!("starting the engine: {e}")));
        }
        opened_rx
            .await
            .map_err(|_| ClientError::Home("the engine stopped while opening".into()))??;
        Ok(Client {
            shared: std::sync::Arc::new(Shared {
                jobs: jobs_tx,
                events: events_tx,
                first_events: std::sync::Mutex::new(Some(first_events)),
                state: state_rx,
                done: std::sync::Mutex::new(Some(done_rx)),
                #[cfg(feature = "fault-injection")]
                kill: std::sync::Mutex::new(Some(kill_tx)),
            }),
        })
    }

    /// Runs `f` on the engine and returns its answer. A transport failure marks the
    /// connection for a reconnect; what it was doing is finished or undone then.
    pub(crate) async fn call<T, F>(&self, f: F) -> Result<T, ClientError>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(&'a mut Engine) -> LocalBoxFuture<'a, Result<T, ClientError>>
            + Send
            + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |engine: &mut Engine| -> LocalBoxFuture<'_, ()> {
            Box::pin(async move {
                let result = f(engine).await;
                if let Err(e) = &result
                    && transport(e)
                {
                    engine.broken = true;
                }
                let _ = tx.send(result);
            })
        });
        let stopped = || ClientError::Home("the client engine has stopped".into());
        self.shared.jobs.send(job).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Every event from now on.
    /// The live event stream. The first subscriber also gets what happened between
    /// opening and subscribing; later ones start now.
    pub fn events(&self) -> Events {
        let first = self
            .shared
            .first_events
            .lock()
            .ok()
            .and_then(|mut f| f.take());
        Events {
            rx: first.unwrap_or_else(|| self.shared.events.subscribe()),
        }
    }

    /// The connection state now.
    pub fn state(&self) -> ConnectionState {
        self.shared.state.borrow().clone()
    }

    /// Waits until the connection state satisfies `pred`; returns that state, or the
    /// last one if the engine stopped first.
    pub async fn wait_for_state(&self, pred: impl Fn(&ConnectionState) -> bool) -> ConnectionState {
        let mut rx = self.shared.state.clone();
        let found = rx.wait_for(|s| pred(s)).await.map(|s| s.clone());
        found.unwrap_or_else(|_| rx.borrow().clone())
    }

    /// The account stored in this home (no network).
    pub async fn stored_account(&self) -> Result<StoredAccount, ClientError> {
        self.call(|e| Box::pin(async move { e.home.account()?.ok_or(ClientError::NoAccount) }))
            .await
    }

    /// Sends `text` to a user or `#group`; returns the message's event once the server
    /// holds it durably.
    pub async fn send(&self, target: &Target, text: &str) -> Result<Event, ClientError> {
        let target = target.clone();
        let text = text.to_owned();
        self.call(move |e| {
            Box::pin(async move {
                let row = send_now(e, &target, &text).await?;
                history::by_row(&e.home, row)
            })
        })
        .await
    }

    /// Like [`Client::send`], but while the engine is offline a message to a
    /// conversation this home already has goes to the durable outbox and is returned
    /// as `sending`; it is sent once the engine reconnects, and an [`Event::Delivery`]
    /// reports its new state. For front ends that show pending lines (the TUI).
    pub async fn send_or_queue(&self, target: &Target, text: &str) -> Result<Event, ClientError> {
        let target = target.clone();
        let text = text.to_owned();
        self.call(move |e| {
            Box::pin(async move {
                let row = match e.live() {
                    Ok(_) => send_now(e, &target, &text).await?,
                    Err(err) if err.is_transport() => e.queue(&target, &text)?,
                    Err(err) => return Err(err),
                };
                history::by_row(&e.home, row)
            })
        })
        .await
    }

    /// Whether the server has an account called `name`; a user this home has a
    /// conversation with exists without asking.
    pub async fn user_exists(&self, name: &Username) -> Result<bool, ClientError> {
        let name = name.clone();
        self.call(move |e| {
            Box::pin(async move {
                if crate::messaging::local_conversation(&e.home, name.as_str(), "direct")?.is_some()
                {
                    return Ok(true);
                }
                let live = e.live()?;
                let asked = live
                    .conn
                    .request(hush_proto::pb::client_frame::Body::FindDirect(
                        hush_proto::pb::FindDirect {
                            peer: name.to_string(),
                        },
                    ))
                    .await;
                match asked {
                    Ok(_) => Ok(true),
                    Err(ClientError::Server(s)) if s.code == hush_proto::ErrorCode::NotFound => {
                        Ok(false)
                    }
                    Err(err) => Err(err),
                }
            })
        })
        .await
    }

    /// Fetches and processes the mailbox now; returns how many events it added.
    pub async fn sync(&self) -> Result<usize, ClientError> {
        self.call(|e| Box::pin(async move { e.catch_up().await }))
            .await
    }

    /// Creates `#name` with this user as admin and `members` in it.
    pub async fn create_group(
        &self,
        name: &GroupName,
        members: &[Username],
    ) -> Result<(), ClientError> {
        self.change(Change::Create, name, members).await
    }

    /// Adds every device of `users` to `#name` (admins only).
    pub async fn add_members(
        &self,
        name: &GroupName,
        users: &[Username],
    ) -> Result<(), ClientError> {
        self.change(Change::Add, name, users).await
    }

    /// Removes every device of `users` from `#name` (admins only).
    pub async fn remove_members(
        &self,
        name: &GroupName,
        users: &[Username],
    ) -> Result<(), ClientError> {
        self.change(Change::Remove, name, users).await
    }

    /// Makes `users` admins of `#name` (admins only).
    pub async fn promote(&self, name: &GroupName, users: &[Username]) -> Result<(), ClientError> {
        self.change(Change::Promote, name, users).await
    }

    async fn change(
        &self,
        change: Change,
        name: &GroupName,
        users: &[Username],
    ) -> Result<(), ClientError> {
        let (name, users) = (name.clone(), users.to_vec());
        self.call(move |e| {
            Box::pin(async move {
                let live = e.live()?;
                let m = e.messenger(&live);
                match change {
                    Change::Create => m.create_group(&name, &users, None).await,
                    Change::Add => m.add_members(&name, &users).await,
                    Change::Remove => m.remove_members(&name, &users).await,
                    Change::Promote => m.promote(&name, &users).await,
                }
            })
        })
        .await
    }

    /// P550: creates the channel `#name` with this user as its admin; with a code,
    /// what authenticator apps need to add it.
    pub async fn create_channel(
        &self,
        name: &GroupName,
        access: crate::channels::ChannelAccess,
    ) -> Result<Option<account::TotpSetup>, ClientError> {
        let name = name.clone();
        self.call(move |e| {
            Box::pin(async move {
                let live = e.live()?;
                e.messenger(&live).create_channel(&name, &access).await
            })
        })
        .await
    }

    /// P553: joins the channel `#name` (password and code when it needs them).
    pub async fn join_channel(
        &self,
        name: &GroupName,
        password: Option<hush_proto::ids::ChannelPassword>,
        code: Option<hush_proto::ids::TotpCode>,
    ) -> Result<(), ClientError> {
        let name = name.clone();
        self.call(move |e| {
            Box::pin(async move {
                let live = e.live()?;
                e.messenger(&live)
                    .join_channel(&name, password.as_ref(), code.as_ref())
                    .await
            })
        })
        .await
    }

    /// P554: the server's channels.
    pub async fn channels(&self) -> Result<Vec<hush_proto::response::ChannelSummary>, ClientError> {
        self.call(|e| {
            Box::pin(async move {
                let live = e.live()?;
                e.messenger(&live).channels().await
            })
        })
        .await
    }

    /// P555: a new password or code secret for `#name` (admins only).
    pub async fn update_channel(
        &self,
        name: &GroupName,
        change: crate::channels::ChannelChange,
    ) -> Result<Option<account::TotpSetup>, ClientError> {
        let name = name.clone();
        self.call(move |e| {
            Box::pin(async move {
                let live = e.live()?;
                e.messenger(&live).update_channel(&name, &change).await
            })
        })
        .await
    }

    /// P555: removes every other member and deletes `#name` from the server.
    pub async fn delete_channel(&self, name: &GroupName) -> Result<(), ClientError> {
        let name = name.clone();
        self.call(move |e| {
            Box::pin(async move {
                let live = e.live()?;
                e.messenger(&live).delete_channel(&name).await
            })
        })
        .await
    }

    /// Leaves `#name`. The last admin must make someone else an admin first.
    pub async fn leave(&self, name: &GroupName) -> Result<(), ClientError> {
        let name = name.clone();
        self.call(move |e| {
            Box::pin(async move {
                let live = e.live()?;
                e.messenger(&live).leave(&name).await
            })
        })
        .await
    }

    /// The safety number with `user` (P545); with `confirm`, marks the contact verified
    /// (accepting a changed key after the user compared the new number).
    pub async fn verify(
        &self,
        user: &Username,
        confirm: bool,
    ) -> Result<Verification, ClientError> {
        let user = user.clone();
        self.call(move |e| {
            Box::pin(async move {
                let live = e.live()?;
                e.messenger(&live).verify(&user, confirm).await
            })
        })
        .await
    }

    /// P461: invitations to groups from people this account has not accepted yet.
    pub async fn requests(&self) -> Result<Vec<hush_proto::response::PendingRequest>, ClientError> {
        self.call(|e| {
            Box::pin(async move {
                let live = e.live()?;
                e.messenger(&live).requests().await
            })
        })
        .await
    }

    /// P463: whose group invitations this device accepts without asking.
    pub async fn invitation_policy(&self) -> Result<crate::home::InvitationPolicy, ClientError> {
        self.call(|e| Box::pin(async move { e.home.invitation_policy() }))
            .await
    }

    pub async fn set_invitation_policy(
        &self,
        policy: crate::home::InvitationPolicy,
    ) -> Result<(), ClientError> {
        self.call(move |e| {
            Box::pin(async move { e.home.set_setting("invitations", policy.as_str()) })
        })
        .await
    }

    /// P462: accepts `inviter`'s invitations (joining what was held) or declines them.
    pub async fn answer_request(
        &self,
        inviter: &Username,
        accept: bool,
    ) -> Result<(), ClientError> {
        let inviter = inviter.clone();
        self.call(move |e| {
            Box::pin(async move {
                let live = e.live()?;
                e.messenger(&live).answer_request(&inviter, accept).await
            })
        })
        .await
    }

    /// P457: the messages waiting in the outbox (no network).
    pub async fn outbox(&self) -> Result<Vec<history::OutboxEntry>, ClientError> {
        self.call(|e| Box::pin(async move { history::outbox(&e.home) }))
            .await
    }

    /// P457: puts a set-aside outbox message back in line and tries it at once.
    pub async fn outbox_retry(&self, id: &str) -> Result<(), ClientError> {
        let id = hush_proto::ids::MessageId::parse_hex(id).map_err(|_| {
            ClientError::Invalid(format!(
                "{id:?} is not a message id (32 hex digits, from `hush outbox`)"
            ))
        })?;
        self.call(move |e| {
            Box::pin(async move {
                let live = e.live()?;
                e.messenger(&live).outbox_retry(id).await
            })
        })
        .await
    }

    /// P457: drops a message from the outbox (no network); it stays in history as
    /// failed.
    pub async fn outbox_drop(&self, id: &str) -> Result<(), ClientError> {
        let id = id.to_owned();
        self.call(move |e| Box::pin(async move { history::outbox_drop(&e.home, &id) }))
            .await
    }

    /// This account's devices (P546).
    pub async fn devices(&self) -> Result<Vec<DeviceInfo>, ClientError> {
        self.call(|e| {
            Box::pin(async move {
                let live = e.live()?;
                e.messenger(&live).my_devices().await
            })
        })
        .await
    }

    /// Removes another device of this account from every conversation and deletes it
    /// on the server; its sessions end at once (P546).
    pub async fn revoke_device(&self, device: DeviceId) -> Result<(), ClientError> {
        self.call(move |e| {
            Box::pin(async move {
                let live = e.live()?;
                e.messenger(&live).revoke(device).await
            })
        })
        .await
    }

    /// P333: starts turning two-factor login on: the new secret, as an otpauth URI for
    /// an authenticator app. Nothing changes until [`Client::two_factor_confirm`].
    pub async fn two_factor_enable(&self) -> Result<account::TotpSetup, ClientError> {
        self.call(|e| {
            Box::pin(async move {
                let live = e.live()?;
                let secret = account::totp_enable(&live.conn).await?;
                let label = account::totp_label(live.account.username.as_str(), live.conn.server());
                Ok(account::TotpSetup::new(secret.expose(), &label))
            })
        })
        .await
    }

    /// P333: a code from the new secret turns two-factor login on; the recovery codes
    /// are shown once.
    pub async fn two_factor_confirm(
        &self,
        code: hush_proto::ids::TotpCode,
    ) -> Result<Vec<hush_proto::ids::RecoveryCode>, ClientError> {
        self.call(move |e| {
            Box::pin(async move {
                let live = e.live()?;
                account::totp_confirm(&live.conn, &code).await
            })
        })
        .await
    }

    /// P334: turns two-factor login off, with a code or a recovery code.
    pub async fn two_factor_disable(
        &self,
        factor: hush_proto::ids::SecondFactor,
    ) -> Result<(), ClientError> {
        self.call(move |e| {
            Box::pin(async move {
                let live = e.live()?;
                account::totp_disable(&live.conn, &factor).await
            })
        })
        .await
    }

    /// Pinned contacts, for front ends that mark verified ones (no network).
    pub async fn contacts(&self) -> Result<Vec<Contact>, ClientError> {
        self.call(|e| Box::pin(async move { e.home.contacts() }))
            .await
    }

    /// The roster of `#name`, from MLS state.
    pub async fn members(&self, name: &GroupName) -> Result<Vec<Member>, ClientError> {
        let name = name.clone();
        self.call(move |e| {
            Box::pin(async move {
                let live = e.live()?;
                e.messenger(&live).members(&name).await
            })
        })
        .await
    }

    /// The newest `limit` events of a conversation, oldest first (no network); marks
    /// them read.
    pub async fn history(&self, conversation: &str, limit: u32) -> Result<Vec<Event>, ClientError> {
        let name = conversation.to_owned();
        self.call(move |e| Box::pin(async move { history::conversation(&e.home, &name, limit) }))
            .await
    }

    /// Every conversation with its unread count (no network).
    pub async fn chats(&self) -> Result<Vec<Chat>, ClientError> {
        self.call(|e| Box::pin(async move { history::chats(&e.home) }))
            .await
    }

    /// History events not yet handed to a `recv` stream, oldest first.
    pub async fn unstreamed(&self) -> Result<Vec<Event>, ClientError> {
        self.call(|e| Box::pin(async move { history::unstreamed(&e.home) }))
            .await
    }

    /// Marks history rows as handed out (and read).
    pub async fn mark_streamed(&self, rows: Vec<i64>) -> Result<(), ClientError> {
        self.call(move |e| Box::pin(async move { history::mark_streamed(&e.home, &rows) }))
            .await
    }

    /// The server's current view of this device's account.
    pub async fn whoami(&self) -> Result<WhoAmI, ClientError> {
        self.call(|e| {
            Box::pin(async move {
                let live = e.live()?;
                let account = account::whoami(&live.conn).await?;
                let warning = e.messenger(&live).own_identity_warning().await?;
                Ok(WhoAmI {
                    account,
                    server: live.conn.server().to_owned(),
                    fingerprint: live.conn.info().fingerprint,
                    warning,
                })
            })
        })
        .await
    }

    /// Asks the server to shut down (server admins only, P601).
    pub async fn admin_shutdown(&self) -> Result<String, ClientError> {
        self.call(|e| {
            Box::pin(async move {
                let live = e.live()?;
                account::admin_shutdown(&live.conn).await?;
                Ok(live.conn.server().to_owned())
            })
        })
        .await
    }

    /// Logs this device out: it proposes its removal from every conversation, ends its
    /// session on the server and forgets the account locally; the engine stops. With
    /// `force`, the account is forgotten locally even if the server cannot be told
    /// (the error is returned as a warning in `Ok(Some(..))`).
    pub async fn logout(&self, force: bool) -> Result<Option<ClientError>, ClientError> {
        self.call(move |e| {
            Box::pin(async move {
                let told = async {
                    let live = e.live()?;
                    let m = e.messenger(&live);
                    // What waits in the outbox goes first: a logout must not drop a
                    // message the user was told would be sent.
                    m.flush_outbox().await?;
                    let waiting = m.outbox_len()?;
                    if waiting > 0 && !force {
                        return Err(ClientError::Invalid(format!(
                            "{waiting} message(s) could not be sent yet and would be lost; \
                             try again when they can go, or log out with --force to drop them"
                        )));
                    }
                    m.leave_all_for_logout().await?;
                    account::logout(&live.conn).await
                }
                .await;
                let warning = match told {
                    Ok(()) => None,
                    Err(err) if force => Some(err),
                    Err(err) => return Err(err),
                };
                e.home.clear_account()?;
                e.stopping = true;
                Ok(warning)
            })
        })
        .await
    }

    /// Stops the engine cleanly and waits for it (TLS close_notify to the server).
    pub async fn close(self) {
        let _ = self
            .call(|e| {
                Box::pin(async move {
                    e.stopping = true;
                    Ok(())
                })
            })
            .await;
        self.join().await;
    }

    async fn join(&self) {
        let done = self.shared.done.lock().ok().and_then(|mut d| d.take());
        if let Some(done) = done {
            let _ = tokio::task::spawn_blocking(move || done.recv()).await;
        }
    }

    /// Test-only: a modified client that commits the removal of devices from `#name`
    /// without checking it may; every honest member must refuse the commit (P530).
    #[cfg(feature = "fault-injection")]
    pub async fn remove_devices_unchecked(
        &self,
        name: &GroupName,
        devices: &[hush_proto::ids::DeviceId],
    ) -> Result<(), ClientError> {
        let (name, devices) = (name.clone(), devices.to_vec());
        self.call(move |e| {
            Box::pin(async move {
                let live = e.live()?;
                let m = e.messenger(&live);
                let group = m.group_id(&name)?;
                m.remove_devices(group, &devices, Default::default())
                    .await
                    .map(|_| ())
            })
        })
        .await
    }

    /// Test-only: a modified client that adds every device of `intruder` to its 1:1
    /// conversation with `peer`; the peer must refuse the commit (P543).
    #[cfg(feature = "fault-injection")]
    pub async fn add_to_direct_unchecked(
        &self,
        peer: &Username,
        intruder: &Username,
    ) -> Result<(), ClientError> {
        let (peer, intruder) = (peer.clone(), intruder.clone());
        self.call(move |e| {
            Box::pin(async move {
                let live = e.live()?;
                let m = e.messenger(&live);
                let group = m.direct(&peer).await?;
                let (kps, devices) = m.key_packages(std::slice::from_ref(&intruder)).await?;
                let provider = m.provider();
                let mut kps = Some(kps);
                m.commit(
                    group,
                    async || Ok(()),
                    |conv, ()| {
                        let a = conv.add(&provider, m.identity, &kps.take().unwrap_or_default())?;
                        Ok(Some(crate::groups::Built {
                            commit: a.commit,
                            welcome: Some(a.welcome),
                            added: devices.clone(),
                            removed: Vec::new(),
                            effects: Default::default(),
                        }))
                    },
                )
                .await
                .map(|_| ())
            })
        })
        .await
    }

    /// Test-only: stops the engine wherever it is, as `kill -9` would stop a process
    /// (local transactions are never open across an await, so none is left half done).
    #[cfg(feature = "fault-injection")]
    pub async fn kill(self) {
        let kill = self.shared.kill.lock().ok().and_then(|mut k| k.take());
        if let Some(kill) = kill {
            let _ = kill.send(());
        }
        self.join().await;
    }
}

/// The names in `dir`, or `None` if it does not exist.
fn home_entries(dir: &Path) -> Option<std::collections::HashSet<std::ffi::OsString>> {
    let entries = std::fs::read_dir(dir).ok()?;
    Some(
        entries
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect(),
    )
}

/// Removes what a failed enrolment added to `dir`: the names not in `before`, and the
/// directory itself if it did not exist.
fn remove_made_home(dir: &Path, before: Option<std::collections::HashSet<std::ffi::OsString>>) {
    let removed = match before {
        None => std::fs::remove_dir_all(dir),
        Some(before) => std::fs::read_dir(dir).and_then(|entries| {
            for entry in entries {
                let entry = entry?;
                if before.contains(&entry.file_name()) {
                    continue;
                }
                let path = entry.path();
                if path.is_dir() {
                    std::fs::remove_dir_all(&path)?;
                } else {
                    std::fs::remove_file(&path)?;
                }
            }
            Ok(())
        }),
    };
    if let Err(e) = removed {
        tracing::warn!(home = %dir.display(), error = %e, "could not remove what a failed enrolment added to the home");
    }
}

/// Registration or login on the engine's thread: the OPAQUE exchange, the account
/// saved, and the session adopted by the engine.
async fn enrol(
    engine: &mut Engine,
    server: &str,
    first_use: &FirstUse,
    enrolment: Enrolment,
) -> Result<Account, ClientError> {
    if let Some(a) = engine.home.account()? {
        return Err(ClientError::Invalid(format!(
            "this home already holds {} on {}; run `hush logout` first or use another --home",
            a.username, a.server
        )));
    }
    let conn = Connection::connect_with(
        server,
        engine.home.known_servers(),
        first_use,
        engine.faults.clone(),
    )
    .await?;
    let registering = matches!(enrolment, Enrolment::Register { .. });
    let enrolled = match enrolment {
        Enrolment::Register {
            username,
            password,
            invite,
            profile,
        } => account::register(&conn, &username, password, invite, &profile).await?,
        Enrolment::Login {
            username,
            password,
            device_name,
            second_factor,
        } => {
            account::login(
                &conn,
                &username,
                password,
                device_name,
                second_factor.as_ref(),
            )
            .await?
        }
    };
    let account::Enrolled {
        account,
        token,
        account_key,
        export_key,
    } = enrolled;
    engine
        .home
        .save_account(&account::stored(conn.server(), &account, token))?;
    engine
        .home
        .save_account_key(account.username.as_str(), &account_key)?;
    // P571: the backup key. The account exists now either way: a server that cannot
    // keep backups leaves this device without them, and says why in the log.
    if registering {
        match crate::backup::set_up(&engine.home, &conn, &export_key, &account_key).await {
            Ok(recovery) => engine.fresh_recovery = Some(recovery),
            Err(e) => {
                tracing::warn!(error = %e, "backups are off: the backup key could not be stored")
            }
        }
    } else if let Err(e) =
        crate::backup::adopt_key(&engine.home, &conn, &export_key, &account_key).await
    {
        tracing::warn!(error = %e, "backups are off: the account's backup key did not open");
    }
    engine.adopt(conn, account.clone())?;
    Ok(account)
}

/// Sends over the live connection; the history row once the server holds it.
async fn send_now(e: &mut Engine, target: &Target, text: &str) -> Result<i64, ClientError> {
    let live = e.live()?;
    let m = e.messenger(&live);
    match target {
        Target::User(u) => m.send_text(u, text).await,
        Target::Group(g) => m.send_to_group(g, text).await,
    }
}
