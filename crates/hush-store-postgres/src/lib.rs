//! The PostgreSQL adapter of the hush storage port: several `hushd` nodes on one
//! database (docs/operators/cluster.md).
//!
//! Every write runs as one `SERIALIZABLE` transaction and is retried whole inside the
//! adapter when PostgreSQL aborts it for a conflict with another node's write (a
//! serialization failure or a deadlock), so of two commits at one epoch exactly one
//! wins and the other sees the new epoch. A failure at `COMMIT` itself (a lost
//! connection) is not retried here, since the commit may have happened: the caller
//! gets a retryable error and the client's idempotency key makes its retry safe.
//!
//! Wake-ups cross nodes on the database itself ([`wakeups`]): a write that queued
//! entries issues `NOTIFY` inside its transaction, so every node hears of it exactly
//! when it commits, and each node's LISTEN task wakes the devices connected to it.
//!
//! Modules: [`migrations`] (schema files, applied in order under an advisory lock),
//! [`wakeups`] (the LISTEN/NOTIFY bus), `queries` (the SQL helpers), `messaging`
//! (groups, mailboxes), `accounts` (users, devices, two-factor, key packages),
//! `extras` (channels, files, backups). A new operation: implement the new `Store`
//! method as one `write` or `read`, mirroring the SQLite adapter's semantics.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

#[macro_use]
mod queries;
mod accounts;
pub mod blobs;
mod extras;
pub mod import;
mod messaging;
pub mod migrations;
pub mod scratch;
pub mod url;
pub mod wakeups;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hush_proto::ids::{DeviceId, FileId, GroupId, UserId, Username};
use hush_store::{
    BackupRecord, ChannelRecord, ChannelUpdate, Claimed, CommitListener, Delivered, DeviceRecord,
    FileRecord, GroupRecord, HeldRequest, MailboxPage, NewBackupChunk, NewCommit, NewDevice,
    NewFile, NewGroup, NewInvite, NewMessage, NewUser, Owner, Pruned, Session, Store, StoreError,
    TwoFactor, UserRecord, UserSummary,
};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

pub use wakeups::NodeId;

/// How often a write aborted for a conflict with a concurrent one is tried again.
pub(crate) const ATTEMPTS: u32 = 12;

/// How the pool is sized and how long a request waits for a connection.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub max_connections: u32,
    /// Past this, an operation fails as `Backend` (retryable): the client is told
    /// `UNAVAILABLE` and tries again.
    pub acquire_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// A [`Store`] on a PostgreSQL database shared by every node of a cluster.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    bus: Arc<wakeups::Bus>,
}

/// What one write tells the other nodes and this node's listener once it commits.
#[derive(Default)]
pub(crate) struct Outbox {
    /// Devices whose mailboxes got entries (P442, P443).
    pub woken: Vec<DeviceId>,
    /// Devices whose sessions must end (P546): revoked, user disabled or deleted.
    pub revoked: Vec<DeviceId>,
}

impl Outbox {
    pub(crate) fn wake(&mut self, devices: impl IntoIterator<Item = DeviceId>) {
        for d in devices {
            if !self.woken.contains(&d) {
                self.woken.push(d);
            }
        }
    }
}

/// A PostgreSQL failure as a store error. Conflicts with concurrent transactions,
/// lost connections and an exhausted pool may pass (retryable); a full disk is
/// `StorageFull` (P451).
pub(crate) fn pg(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) => {
            let code = d.code().map(|c| c.into_owned()).unwrap_or_default();
            match code.as_str() {
                // disk_full, insufficient_resources, out_of_memory
                "53100" | "53000" | "53200" => StoreError::StorageFull,
                // serialization_failure, deadlock_detected, unique_violation (a
                // concurrent insert of the same key: the retry sees it), and the
                // server going away (admin_shutdown, crash_shutdown, cannot_connect_now).
                "40001" | "40P01" | "23505" | "57P01" | "57P02" | "57P03" => {
                    StoreError::backend_from("postgres", e, true)
                }
                _ => StoreError::backend_from("postgres", e, false),
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_) => StoreError::backend_from("postgres", e, true),
        _ => StoreError::backend_from("postgres", e, false),
    }
}

/// Whether a failed attempt is one PostgreSQL aborted for a concurrent transaction
/// (nothing of it took effect, so it is run again).
fn conflict(e: &StoreError) -> bool {
    let StoreError::Backend(b) = e else {
        return false;
    };
    if !b.retryable() {
        return false;
    }
    let mut source = std::error::Error::source(b);
    while let Some(s) = source {
        if let Some(sqlx::Error::Database(d)) = s.downcast_ref::<sqlx::Error>() {
            return matches!(d.code().as_deref(), Some("40001" | "40P01" | "23505"));
        }
        source = s.source();
    }
    false
}

/// A stored record that does not parse: corruption or a bug, never retryable.
pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::backend(format!("corrupt record: {what}"))
}

/// A count or size for a BIGINT column.
pub(crate) fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A BIGINT column's count or size.
pub(crate) fn unbig(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

pub(crate) fn username(s: String) -> Result<Username, StoreError> {
    Username::parse(&s).map_err(|_| corrupt("stored username"))
}

impl PgStore {
    /// Connects to `url` (`postgres://user[:password]@host[:port]/db`), applies
    /// pending migrations and starts this node's LISTEN task.
    pub async fn connect(url: &str, pool: PoolConfig) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(|e| StoreError::backend_from("parsing the database URL", e, false))?;
        Self::connect_with(options, pool).await
    }

    /// Like [`connect`](Self::connect) with parsed options (tests use them to put
    /// each run in its own schema via `search_path`).
    pub async fn connect_with(
        options: PgConnectOptions,
        pool: PoolConfig,
    ) -> Result<Self, StoreError> {
        let options = options.application_name("hushd");
        let pool = PgPoolOptions::new()
            .max_connections(pool.max_connections.max(2))
            .acquire_timeout(pool.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(pg)?;
        migrations::apply(&pool).await?;
        let bus = wakeups::Bus::start(pool.clone()).await?;
        Ok(PgStore { pool, bus })
    }

    /// The blob port on this database: file bytes every node can read.
    pub fn blobs(&self) -> blobs::PgBlobs {
        blobs::PgBlobs {
            pool: self.pool.clone(),
        }
    }

    /// This process's id on the wake-up bus.
    pub fn node(&self) -> NodeId {
        self.bus.node()
    }

    /// Whether the database holds no account, group or message (what
    /// `hushd migrate` writes into).
    pub async fn is_empty(&self) -> Result<bool, StoreError> {
        read_tx!(self, |c| Ok::<_, StoreError>(one!(
            c,
            bool,
            "SELECT NOT EXISTS (SELECT 1 FROM users)
                    AND NOT EXISTS (SELECT 1 FROM groups)
                    AND NOT EXISTS (SELECT 1 FROM messages)"
        )))
    }

    /// The server-wide secret called `name`, if one was stored (never makes one).
    pub async fn secret(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        read_tx!(self, |c| Ok::<_, StoreError>(opt!(
            c,
            Vec<u8>,
            "SELECT value FROM server_secrets WHERE name = $1",
            name
        )))
    }

    /// The pool, for `hushd migrate` (which copies rows in bulk).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Begins a write: one serializable transaction.
    pub(crate) async fn begin(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        self.pool
            .begin_with("BEGIN ISOLATION LEVEL SERIALIZABLE")
            .await
            .map_err(pg)
    }

    /// Begins a write that serialises itself by row locks instead (the hot paths:
    /// sends and acks). Under `SERIALIZABLE` every two sends to one group conflict
    /// (both move its sequence) and all but one are run again; here the second
    /// waits for the group's row lock and then reads what the first committed.
    /// Such a transaction must lock (`FOR UPDATE`) every row whose value it checks
    /// before writing on the strength of it.
    pub(crate) async fn begin_locked(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        self.pool
            .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await
            .map_err(pg)
    }

    /// Begins a read: one consistent snapshot.
    pub(crate) async fn begin_read(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        self.pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(pg)
    }

    /// Ends attempt `attempt` of a write that ran (`ran`): issues its wake-ups inside
    /// the transaction, commits, and reports them to this node's listener. An attempt
    /// PostgreSQL aborted for a concurrent transaction is run again (`Again`); a
    /// failure at `COMMIT` for any other reason (a lost connection) is not, since it
    /// may have committed.
    pub(crate) async fn finish<T>(
        &self,
        ran: Result<(sqlx::Transaction<'static, sqlx::Postgres>, T), StoreError>,
        outbox: &Outbox,
        attempt: u32,
    ) -> Step<T> {
        let again = |e: &StoreError| attempt < ATTEMPTS && conflict(e);
        let (mut tx, value) = match ran {
            Ok(ran) => ran,
            Err(e) if again(&e) => {
                backoff(attempt).await;
                return Step::Again;
            }
            Err(e) => return Step::Done(Err(e)),
        };
        if let Err(e) = self.bus.publish(&mut tx, outbox).await {
            return Step::Done(Err(e));
        }
        match tx.commit().await.map_err(pg) {
            Ok(()) => {
                self.bus.report(outbox);
                Step::Done(Ok(value))
            }
            Err(e) if again(&e) => {
                backoff(attempt).await;
                Step::Again
            }
            Err(e) => Step::Done(Err(e)),
        }
    }
}

/// What became of one attempt at a write.
pub(crate) enum Step<T> {
    Done(Result<T, StoreError>),
    Again,
}

/// A short, growing, jittered pause before trying a conflicting write again.
pub(crate) async fn backoff(attempt: u32) {
    let base = 2u64.saturating_pow(attempt.min(8));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let jitter = u64::from(nanos) % base;
    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
}

#[async_trait]
impl Store for PgStore {
    fn set_listener(&self, listener: Arc<dyn CommitListener>) {
        self.bus.set_listener(listener);
    }

    async fn secret_or_init(&self, name: &str, init: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        write_tx!(self, |c, _| accounts::secret_or_init(c, name, &init).await)
    }

    async fn create_user(&self, user: NewUser) -> Result<bool, StoreError> {
        write_tx!(self, |c, _| accounts::create_user(c, &user).await)
    }

    async fn user_by_name(&self, name: &Username) -> Result<Option<UserRecord>, StoreError> {
        read_tx!(self, |c| accounts::user_by_name(c, name).await)
    }

    async fn add_device(
        &self,
        user: UserId,
        device: NewDevice,
        max_devices: u64,
    ) -> Result<(), StoreError> {
        write_tx!(self, |c, _| accounts::add_device(
            c,
            &user,
            &device,
            max_devices
        )
        .await)
    }

    async fn session(&self, token_digest: &[u8; 32]) -> Result<Option<Session>, StoreError> {
        read_tx!(self, |c| accounts::session(c, token_digest).await)
    }

    async fn remove_device(&self, device: DeviceId) -> Result<(), StoreError> {
        write_tx!(self, |c, out| accounts::remove_device(c, &device, out)
            .await)
    }

    async fn create_invite(&self, invite: NewInvite) -> Result<(), StoreError> {
        write_tx!(self, |c, _| accounts::create_invite(c, &invite).await)
    }

    async fn invite_usable(&self, digest: &[u8; 32], now: i64) -> Result<bool, StoreError> {
        read_tx!(self, |c| accounts::invite_usable(c, digest, now).await)
    }

    async fn list_users(&self) -> Result<Vec<UserSummary>, StoreError> {
        read_tx!(self, |c| accounts::list_users(c).await)
    }

    async fn set_disabled(&self, name: &Username, disabled: bool) -> Result<(), StoreError> {
        write_tx!(self, |c, out| accounts::set_disabled(
            c, name, disabled, out
        )
        .await)
    }

    async fn set_admin(&self, name: &Username, admin: bool) -> Result<(), StoreError> {
        write_tx!(self, |c, _| accounts::set_admin(c, name, admin).await)
    }

    async fn delete_user(&self, name: &Username) -> Result<(), StoreError> {
        write_tx!(self, |c, out| accounts::delete_user(c, name, out).await)
    }

    async fn two_factor(&self, user: UserId) -> Result<Option<TwoFactor>, StoreError> {
        read_tx!(self, |c| accounts::two_factor(c, &user).await)
    }

    async fn set_pending_totp(&self, user: UserId, secret: Vec<u8>) -> Result<(), StoreError> {
        write_tx!(self, |c, _| accounts::set_pending_totp(c, &user, &secret)
            .await)
    }

    async fn pending_totp(&self, user: UserId) -> Result<Option<Vec<u8>>, StoreError> {
        read_tx!(self, |c| accounts::pending_totp(c, &user).await)
    }

    async fn enable_two_factor(
        &self,
        user: UserId,
        secret: &[u8],
        step: u64,
        recovery: Vec<[u8; 32]>,
    ) -> Result<bool, StoreError> {
        write_tx!(self, |c, _| {
            accounts::enable_two_factor(c, &user, secret, step, &recovery).await
        })
    }

    async fn disable_two_factor(&self, user: UserId) -> Result<(), StoreError> {
        write_tx!(self, |c, _| accounts::disable_two_factor(c, &user).await)
    }

    async fn use_totp_step(&self, user: UserId, step: u64) -> Result<bool, StoreError> {
        let Ok(step) = i64::try_from(step) else {
            return Ok(false);
        };
        write_tx!(self, |c, _| accounts::use_totp_step(c, &user, step).await)
    }

    async fn use_recovery_code(&self, user: UserId, digest: &[u8; 32]) -> Result<bool, StoreError> {
        write_tx!(self, |c, _| accounts::use_recovery_code(c, &user, digest)
            .await)
    }

    async fn publish_key_packages(
        &self,
        device: DeviceId,
        packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
        max: u32,
    ) -> Result<u32, StoreError> {
        write_tx!(self, |c, _| {
            accounts::publish_key_packages(c, &device, &packages, last_resort.as_deref(), max).await
        })
    }

    async fn key_package_count(&self, device: DeviceId) -> Result<u32, StoreError> {
        read_tx!(self, |c| accounts::key_package_count(c, &device).await)
    }

    async fn claim_key_packages(&self, users: &[UserId]) -> Result<Vec<Claimed>, StoreError> {
        write_tx!(self, |c, _| accounts::claim_key_packages(c, users).await)
    }

    async fn add_revocation(
        &self,
        user: UserId,
        device: DeviceId,
        statement: Vec<u8>,
    ) -> Result<(), StoreError> {
        write_tx!(self, |c, _| accounts::add_revocation(
            c, &user, &device, &statement
        )
        .await)
    }

    async fn revocations(&self, user: UserId) -> Result<Vec<(DeviceId, Vec<u8>)>, StoreError> {
        read_tx!(self, |c| accounts::revocations(c, &user).await)
    }

    async fn devices_of(&self, user: UserId) -> Result<Vec<DeviceId>, StoreError> {
        read_tx!(self, |c| accounts::devices_of(c, &user).await)
    }

    async fn device_owners(&self, devices: &[DeviceId]) -> Result<Vec<Owner>, StoreError> {
        read_tx!(self, |c| accounts::device_owners(c, devices).await)
    }

    async fn device_records(&self, user: UserId) -> Result<Vec<DeviceRecord>, StoreError> {
        read_tx!(self, |c| accounts::device_records(c, &user).await)
    }

    async fn live_devices(&self, devices: &[DeviceId]) -> Result<Vec<DeviceId>, StoreError> {
        read_tx!(self, |c| accounts::live_devices(c, devices).await)
    }

    async fn touch_device(&self, device: DeviceId, now: i64) -> Result<(), StoreError> {
        write_tx!(self, |c, _| accounts::touch_device(c, &device, now).await)
    }

    async fn create_group(&self, group: NewGroup) -> Result<Delivered, StoreError> {
        write_tx!(self, |c, out| messaging::create_group(c, &group, out).await)
    }

    async fn group(&self, group: GroupId) -> Result<Option<GroupRecord>, StoreError> {
        read_tx!(self, |c| messaging::group(c, &group).await)
    }

    async fn public_state(&self, group: GroupId) -> Result<Option<Vec<u8>>, StoreError> {
        read_tx!(self, |c| messaging::public_state(c, &group).await)
    }

    async fn channel(&self, name: &str) -> Result<Option<ChannelRecord>, StoreError> {
        read_tx!(self, |c| Ok(extras::channels(c, Some(name)).await?.pop()))
    }

    async fn channels(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        read_tx!(self, |c| extras::channels(c, None).await)
    }

    async fn grant_channel_join(
        &self,
        group: GroupId,
        device: DeviceId,
        totp_step: Option<(UserId, u64)>,
        expires_ms: i64,
    ) -> Result<bool, StoreError> {
        write_tx!(self, |c, _| {
            extras::grant_channel_join(c, &group, &device, totp_step, expires_ms).await
        })
    }

    async fn update_channel(
        &self,
        group: GroupId,
        update: ChannelUpdate,
    ) -> Result<(), StoreError> {
        write_tx!(self, |c, _| extras::update_channel(c, &group, &update)
            .await)
    }

    async fn delete_channel(&self, group: GroupId) -> Result<(), StoreError> {
        write_tx!(self, |c, _| extras::delete_channel(c, &group).await)
    }

    async fn named_group(&self, name: &str) -> Result<Option<GroupId>, StoreError> {
        read_tx!(self, |c| messaging::named_group(c, name).await)
    }

    async fn direct_group(&self, a: UserId, b: UserId) -> Result<Option<GroupId>, StoreError> {
        read_tx!(self, |c| messaging::direct_group(c, &a, &b).await)
    }

    async fn accept_commit(&self, commit: NewCommit) -> Result<Delivered, StoreError> {
        write_tx!(self, |c, out| messaging::accept_commit(c, &commit, out)
            .await)
    }

    async fn enqueue_message(&self, msg: NewMessage) -> Result<Delivered, StoreError> {
        write_tx!(self, begin_locked, |c, out| messaging::enqueue_message(
            c, &msg, out
        )
        .await)
    }

    async fn fetch_mailbox(
        &self,
        device: DeviceId,
        after_id: u64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<MailboxPage, StoreError> {
        read_tx!(self, |c| messaging::fetch_mailbox(
            c, &device, after_id, limit, max_bytes
        )
        .await)
    }

    async fn ack(&self, device: DeviceId, ids: &[u64], missed_seen: u32) -> Result<(), StoreError> {
        write_tx!(self, begin_locked, |c, _| messaging::ack(
            c,
            &device,
            ids,
            missed_seen
        )
        .await)
    }

    async fn requests(&self, user: UserId) -> Result<Vec<HeldRequest>, StoreError> {
        read_tx!(self, |c| messaging::requests(c, &user).await)
    }

    async fn answer_request(
        &self,
        user: UserId,
        inviter: UserId,
        accept: bool,
    ) -> Result<Vec<DeviceId>, StoreError> {
        write_tx!(self, |c, out| messaging::answer_request(
            c, &user, &inviter, accept, out
        )
        .await)
    }

    async fn create_file(&self, file: NewFile) -> Result<FileRecord, StoreError> {
        write_tx!(self, |c, _| extras::create_file(c, &file).await)
    }

    async fn file(&self, id: FileId) -> Result<Option<FileRecord>, StoreError> {
        read_tx!(self, |c| extras::file(c, &id).await)
    }

    async fn complete_file(&self, id: FileId) -> Result<(), StoreError> {
        write_tx!(self, |c, _| extras::complete_file(c, &id).await)
    }

    async fn file_fetched(&self, id: FileId, device: DeviceId) -> Result<bool, StoreError> {
        write_tx!(self, |c, _| extras::file_fetched(c, &id, &device).await)
    }

    async fn delete_file(&self, id: FileId) -> Result<bool, StoreError> {
        write_tx!(self, |c, _| extras::delete_file(c, &id).await)
    }

    async fn expire_files(&self, before_ms: i64) -> Result<Vec<FileId>, StoreError> {
        write_tx!(self, |c, _| extras::expire_files(c, before_ms).await)
    }

    async fn put_group_info(
        &self,
        device: DeviceId,
        group: GroupId,
        epoch: u64,
        sealed: Vec<u8>,
    ) -> Result<(), StoreError> {
        write_tx!(self, |c, _| extras::put_group_info(
            c, &device, &group, epoch, &sealed
        )
        .await)
    }

    async fn group_info(
        &self,
        user: UserId,
        group: GroupId,
    ) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        read_tx!(self, |c| extras::group_info(c, &user, &group).await)
    }

    async fn group_infos(
        &self,
        device: DeviceId,
    ) -> Result<Vec<(GroupId, u64, Vec<u8>)>, StoreError> {
        read_tx!(self, |c| extras::group_infos(c, &device).await)
    }

    async fn backup(&self, user: UserId) -> Result<Option<BackupRecord>, StoreError> {
        read_tx!(self, |c| extras::backup(c, &user).await)
    }

    async fn set_backup_keys(
        &self,
        user: UserId,
        wrapped_password: Option<Vec<u8>>,
        wrapped_recovery: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        write_tx!(self, |c, _| {
            extras::set_backup_keys(
                c,
                &user,
                wrapped_password.as_deref(),
                wrapped_recovery.as_deref(),
            )
            .await
        })
    }

    async fn append_backup(&self, chunk: NewBackupChunk) -> Result<u64, StoreError> {
        write_tx!(self, |c, _| extras::append_backup(c, &chunk).await)
    }

    async fn backup_chunks(
        &self,
        user: UserId,
        from: u64,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        read_tx!(self, |c| extras::backup_chunks(c, &user, from, max_bytes)
            .await)
    }

    async fn count_failures(
        &self,
        kind: &str,
        key: &[u8],
        add: u32,
        now: i64,
        window_secs: i64,
    ) -> Result<hush_store::FailureCount, StoreError> {
        if add == 0 {
            // A read: no window begins.
            let held = read_tx!(self, |c| Ok::<_, StoreError>(row!(
                c,
                (i64, i64),
                "SELECT count, since FROM failures
                 WHERE kind = $1 AND key = $2 AND $3 < since + $4",
                kind,
                key,
                now,
                window_secs
            )))?;
            let (count, since) = held.unwrap_or((0, now));
            return Ok(hush_store::FailureCount {
                count: u32::try_from(count).unwrap_or(u32::MAX),
                since,
            });
        }
        write_tx!(self, |c, _| async {
            let (count, since) = row!(
                c,
                (i64, i64),
                "INSERT INTO failures (kind, key, count, since) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (kind, key) DO UPDATE SET
                     count = CASE WHEN $4 >= failures.since + $5 THEN $3
                                  ELSE failures.count + $3 END,
                     since = CASE WHEN $4 >= failures.since + $5 THEN $4
                                  ELSE failures.since END
                 RETURNING count, since",
                kind,
                key,
                i64::from(add),
                now,
                window_secs
            )
            .ok_or_else(|| corrupt("a failure count just written"))?;
            Ok::<_, StoreError>(hush_store::FailureCount {
                count: u32::try_from(count).unwrap_or(u32::MAX),
                since,
            })
        }
        .await)
    }

    async fn clear_failures(&self, kind: &str, key: &[u8]) -> Result<(), StoreError> {
        write_tx!(self, |c, _| async {
            exec!(
                c,
                "DELETE FROM failures WHERE kind = $1 AND key = $2",
                kind,
                key
            );
            Ok::<_, StoreError>(())
        }
        .await)
    }

    async fn prune(
        &self,
        expire_before_ms: i64,
        idempotency_before_ms: i64,
    ) -> Result<Pruned, StoreError> {
        let mut pruned = Pruned::default();
        // One transaction per batch: a large expiry never holds locks for long.
        loop {
            let expired = write_tx!(self, |c, _| messaging::expire_batch(c, expire_before_ms)
                .await)?;
            if expired == 0 {
                break;
            }
            pruned.expired_entries += expired;
        }
        write_tx!(self, |c, _| {
            messaging::prune_rest(c, expire_before_ms, idempotency_before_ms, &mut pruned).await
        })?;
        Ok(pruned)
    }
}
