//! The server's storage port: what `hush-server` needs from a database, in the server's
//! own words. One method is one transaction. Adapters (`hush-store-sqlite`,
//! `hush-store-postgres`) implement [`Store`]; [`memory::MemoryStore`] is the reference
//! implementation; [`conformance`] is the suite every backend must pass.
//!
//! Modules: [`model`] (records passed in and out), [`memory`], [`conformance`], [`dump`]
//! (plain rows for copying a database between adapters), and
//! [`blob`], the port for sealed file bytes (`BlobStore`) with its adapters.
//! A new storage operation: add it to [`Store`] with its doc (what it guarantees),
//! implement it in every adapter, and add its checks to [`conformance`].
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod blob;
pub mod conformance;
pub mod dump;
pub mod memory;
pub mod model;

use async_trait::async_trait;
use hush_proto::ids::{DeviceId, GroupId, UserId, Username};

pub use model::*;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("username is already taken")]
    UsernameTaken,
    #[error("invite code is unknown, expired or used up")]
    InviteInvalid,
    #[error("no such user")]
    UserNotFound,
    #[error("the group is at epoch {current}; catch up and retry")]
    StaleEpoch { current: u64 },
    #[error("that group already exists")]
    GroupExists,
    #[error("no such group")]
    GroupNotFound,
    #[error("this device is not a member of the group")]
    NotAMember,
    #[error("unknown device {0}")]
    DeviceNotFound(DeviceId),
    /// P450: every recipient's mailbox is full; nothing was stored.
    #[error("the recipient's mailbox is full")]
    MailboxFull,
    /// P452: the request would exceed `quota` (at most `limit`).
    #[error("limit reached: at most {limit} {quota}")]
    QuotaExceeded { quota: Quota, limit: u64 },
    /// P451: the disk (or the database's size limit) is full; nothing was stored.
    #[error("the server's storage is full")]
    StorageFull,
    /// P572: the backup holds `count` chunks, not the index appended; nothing stored.
    #[error("the backup already holds {count} chunks")]
    BackupConflict { count: u64 },
    /// The backend failed (I/O, corruption, lost connection); the operation did not
    /// take effect.
    #[error("storage backend: {0}")]
    Backend(#[source] BackendError),
}

impl StoreError {
    /// A lasting backend failure described by `context` (a corrupt record, a bug).
    pub fn backend(context: impl Into<String>) -> Self {
        StoreError::Backend(BackendError {
            context: context.into(),
            retryable: false,
            source: None,
        })
    }

    /// A backend failure caused by `source`; `retryable` if the same operation may
    /// succeed when tried again (a busy database, a lost connection, a failover).
    pub fn backend_from(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
        retryable: bool,
    ) -> Self {
        StoreError::Backend(BackendError {
            context: context.into(),
            retryable,
            source: Some(Box::new(source)),
        })
    }

    /// Whether trying the same operation again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Backend(b) if b.retryable)
            || matches!(self, StoreError::StorageFull)
    }
}

/// Why a backend failed, with the backend's own error kept as the source.
#[derive(Debug)]
pub struct BackendError {
    context: String,
    retryable: bool,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl BackendError {
    pub fn retryable(&self) -> bool {
        self.retryable
    }
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Some(s) => write!(f, "{}: {s}", self.context),
            None => f.write_str(&self.context),
        }
    }
}

impl std::error::Error for BackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// Told by the store, as each write that queued mailbox entries commits, which
/// devices got entries: the relay wakes them, and pushes what is handed over to
/// following connections without reading it back (P443).
///
/// Contract (checked by [`conformance::run`]): for every committed write that adds
/// entries to a mailbox (`create_group`, `accept_commit`, `enqueue_message`,
/// `answer_request`), the store calls [`CommitListener::committed`] exactly once,
/// after the commit and before any later write's call, naming every device that got
/// an entry, either in `entries` (the entry itself) or in `woken` (read it from the
/// store). Calls come in commit order, so an entry handed over is never ahead of an
/// earlier one that was not. Naming a device that got nothing is allowed.
pub trait CommitListener: Send + Sync {
    /// Must not block: it runs on the store's commit path.
    fn committed(&self, entries: &[(DeviceId, hush_proto::response::Entry)], woken: &[DeviceId]);

    /// The sessions of these devices must end now: a device was revoked or logged
    /// out, or its user disabled or deleted, by this node, another node of a
    /// cluster, or `hushd user ...` (P546). A store that cannot tell (SQLite across
    /// processes) never calls it; the periodic session recheck still ends them.
    fn revoked(&self, _devices: &[DeviceId]) {}

    /// Wake-ups may have been lost (a cluster's bus reconnected): every connected
    /// device should read its mailbox again.
    fn resync(&self) {}
}

/// The storage operations of the relay. Every method is atomic: it takes effect whole
/// and durably before it returns `Ok`, or not at all.
///
/// # Concurrency
/// Methods may be called concurrently from many sessions and, with a shared database,
/// many nodes. Each behaves as if it ran alone (serializable), so in particular
/// (checked by [`conformance::run_concurrent`]):
/// - two commits, or a commit and a message, for one group at one epoch: exactly one
///   commit wins, the others get `StaleEpoch` and change nothing;
/// - concurrent claims never hand out one one-time key package twice;
/// - concurrent publishes never leave a device with more than `max` packages, and
///   concurrent sends never overfill a mailbox or an account's storage quota;
/// - concurrent retries with one idempotency key (client message id, handshake client
///   key) store once and all get the first result;
/// - a failure (`Backend` with `retryable`, e.g. a serialization conflict or a lost
///   connection) means the operation did not take effect and may be retried whole.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Where committed entries are reported from now on ([`CommitListener`]).
    fn set_listener(&self, listener: std::sync::Arc<dyn CommitListener>);

    /// Returns the secret stored under `name`, storing `init` first if there is none.
    /// Used for server-wide keys (the OPAQUE server setup) that every node must share.
    async fn secret_or_init(&self, name: &str, init: Vec<u8>) -> Result<Vec<u8>, StoreError>;

    /// Creates a user with its first device. If `user.invite` is set, consumes one use
    /// of that invite in the same transaction and fails with `InviteInvalid` if it has
    /// none left or has expired at `user.created_at`. The first user of an empty store
    /// is made an admin in the same transaction (a fresh server's first account
    /// administers it); returns whether this one was.
    async fn create_user(&self, user: NewUser) -> Result<bool, StoreError>;

    async fn user_by_name(&self, name: &Username) -> Result<Option<UserRecord>, StoreError>;

    /// Adds a device (a new login) to an existing user, unless the user has
    /// `max_devices` already (`QuotaExceeded`).
    async fn add_device(
        &self,
        user: UserId,
        device: NewDevice,
        max_devices: u64,
    ) -> Result<(), StoreError>;

    /// The device and user a session token digest belongs to.
    async fn session(&self, token_digest: &[u8; 32]) -> Result<Option<Session>, StoreError>;

    /// Removes a device and its session (logout).
    async fn remove_device(&self, device: DeviceId) -> Result<(), StoreError>;

    /// P547: keeps the statement `user`'s account key signed that `device` is revoked
    /// (replacing one for the same device); kept with the user, never with the device.
    async fn add_revocation(
        &self,
        user: UserId,
        device: DeviceId,
        statement: Vec<u8>,
    ) -> Result<(), StoreError>;

    /// P547: `user`'s revocation statements, by device.
    async fn revocations(&self, user: UserId) -> Result<Vec<(DeviceId, Vec<u8>)>, StoreError>;

    async fn create_invite(&self, invite: NewInvite) -> Result<(), StoreError>;

    /// Whether an invite exists with uses left and is unexpired at `now` (Unix seconds).
    /// Does not consume it.
    async fn invite_usable(&self, digest: &[u8; 32], now: i64) -> Result<bool, StoreError>;

    /// Every user, ordered by username.
    async fn list_users(&self) -> Result<Vec<UserSummary>, StoreError>;

    async fn set_disabled(&self, name: &Username, disabled: bool) -> Result<(), StoreError>;

    async fn set_admin(&self, name: &Username, admin: bool) -> Result<(), StoreError>;

    /// Deletes a user, its devices and sessions.
    async fn delete_user(&self, name: &Username) -> Result<(), StoreError>;

    /// P330: the user's two-factor login, when it is on.
    async fn two_factor(&self, user: UserId) -> Result<Option<TwoFactor>, StoreError>;

    /// P333: keeps `secret` as the user's pending TOTP secret (replacing any pending
    /// one) until [`Store::enable_two_factor`] makes it active.
    async fn set_pending_totp(&self, user: UserId, secret: Vec<u8>) -> Result<(), StoreError>;

    /// The pending TOTP secret, if one waits for confirmation.
    async fn pending_totp(&self, user: UserId) -> Result<Option<Vec<u8>>, StoreError>;

    /// P333: makes the pending secret active, with `step` as its last used time step,
    /// and replaces the recovery codes by `recovery` (digests). `false` (and nothing
    /// changed) if the pending secret is no longer `secret`.
    async fn enable_two_factor(
        &self,
        user: UserId,
        secret: &[u8],
        step: u64,
        recovery: Vec<[u8; 32]>,
    ) -> Result<bool, StoreError>;

    /// Turns two-factor login off: the secret, any pending one and the recovery codes
    /// are deleted.
    async fn disable_two_factor(&self, user: UserId) -> Result<(), StoreError>;

    /// P332: records time step `step` as used if it is later than the last one used;
    /// `false` (a replay, or an older code) otherwise. Atomic: of two logins with the
    /// same code, one gets `true`.
    async fn use_totp_step(&self, user: UserId, step: u64) -> Result<bool, StoreError>;

    /// P332: deletes the recovery code with this digest; `false` if it was not there.
    async fn use_recovery_code(&self, user: UserId, digest: &[u8; 32]) -> Result<bool, StoreError>;

    /// Adds one-time key packages for a device and, if given, replaces its last-resort
    /// package. Returns how many one-time packages it now has. `QuotaExceeded` (and
    /// nothing added) if that would be more than `max`.
    async fn publish_key_packages(
        &self,
        device: DeviceId,
        packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
        max: u32,
    ) -> Result<u32, StoreError>;

    /// One-time key packages a device still has.
    async fn key_package_count(&self, device: DeviceId) -> Result<u32, StoreError>;

    /// One key package for each device of each of `users` that has any: a one-time
    /// package (consumed) or else the last-resort one (kept), all in one transaction.
    /// Users that do not exist (any more) get nothing.
    async fn claim_key_packages(&self, users: &[UserId]) -> Result<Vec<Claimed>, StoreError>;

    /// Every device of a user, in id order.
    async fn devices_of(&self, user: UserId) -> Result<Vec<DeviceId>, StoreError>;

    /// The users owning these devices (also devices since removed, P412), with their
    /// published account keys; unknown devices are left out.
    async fn device_owners(&self, devices: &[DeviceId]) -> Result<Vec<Owner>, StoreError>;

    /// A user's devices with their names and times (P546), in id order.
    async fn device_records(&self, user: UserId) -> Result<Vec<DeviceRecord>, StoreError>;

    /// Those of `devices` that still exist and whose user is not disabled: sessions of
    /// the others must end (a revoked device, a disabled or deleted user).
    async fn live_devices(&self, devices: &[DeviceId]) -> Result<Vec<DeviceId>, StoreError>;

    /// Records that a device authenticated at `now` (Unix seconds).
    async fn touch_device(&self, device: DeviceId, now: i64) -> Result<(), StoreError>;

    /// Registers a group at epoch 1 and queues its Welcome for every member but the
    /// creator (P460: for a named group, held as an invitation for each member whose
    /// user has not accepted the creator's user: never reached out to them, shares no
    /// named group with them, never accepted their request; past
    /// `quotas.requests_per_user` or `request_bytes`, `QuotaExceeded`). Records that
    /// the creator's user accepts Welcomes from every member's user. `GroupExists` if the id is taken or the direct pair has a group.
    /// `QuotaExceeded` past `quotas.group_members`, `groups_per_hour` (the creator's
    /// user's groups created in the hour before `now_ms`) or `user_bytes`.
    async fn create_group(&self, group: NewGroup) -> Result<Delivered, StoreError>;

    async fn group(&self, group: GroupId) -> Result<Option<GroupRecord>, StoreError>;

    /// P438: the group's public MLS state as the last accepted commit (or the creation)
    /// left it; `None` for a group made before P438 (or one that does not exist).
    async fn public_state(&self, group: GroupId) -> Result<Option<Vec<u8>>, StoreError>;

    /// P550: the channel called `name` (without '#'), if any.
    async fn channel(&self, name: &str) -> Result<Option<ChannelRecord>, StoreError>;

    /// P554: every channel, by name.
    async fn channels(&self) -> Result<Vec<ChannelRecord>, StoreError>;

    /// P553: lets `device` send one external commit into the channel `group` until
    /// `expires_ms` (replacing an earlier grant). With `totp_step`, records that the
    /// user used that time step of the channel's code, atomically: `false` (and no
    /// grant) if it was used before. `GroupNotFound` if the group is not a channel.
    async fn grant_channel_join(
        &self,
        group: GroupId,
        device: DeviceId,
        totp_step: Option<(UserId, u64)>,
        expires_ms: i64,
    ) -> Result<bool, StoreError>;

    /// P555: changes a channel's password, code secret or server-side admins.
    /// `GroupNotFound` if the group is not a channel.
    async fn update_channel(&self, group: GroupId, update: ChannelUpdate)
    -> Result<(), StoreError>;

    /// P555: removes a channel: its record and its group (name, members), atomically.
    /// Entries already queued (the admin's removal of the members) are still
    /// delivered. `GroupNotFound` if the group is not a channel.
    async fn delete_channel(&self, group: GroupId) -> Result<(), StoreError>;

    /// The named group called `name` (without '#'), if any.
    async fn named_group(&self, name: &str) -> Result<Option<GroupId>, StoreError>;

    /// The 1:1 group of two users, if any.
    async fn direct_group(&self, a: UserId, b: UserId) -> Result<Option<GroupId>, StoreError>;

    /// Accepts a commit if the group is at `commit.epoch` and the sender is a member, or,
    /// for an external commit, holds an unexpired join grant, which it uses up, or
    /// another device of its user is a member (P536), or is a member replacing its own
    /// leaf (P537: `added` and `removed` are the sender alone; it stays a member):
    /// queues it for every current member but the sender, the Welcome for the added
    /// devices, updates membership and moves the group to the next epoch, atomically.
    /// `QuotaExceeded` past `quotas.group_members` or `user_bytes`; mailbox quotas do
    /// not apply to handshakes. The Welcome follows the rule of `create_group`; a
    /// device whose invitation to this group is held gets the commit held too. A
    /// channel keeps `commit.group_info` as its GroupInfo. `commit.public_state`
    /// replaces the group's public state (P438), in the same transaction.
    async fn accept_commit(&self, commit: NewCommit) -> Result<Delivered, StoreError>;

    /// P535: keeps `sealed` as the GroupInfo of `group` at `epoch` for the user of
    /// `device`, replacing one of a lower or the same epoch (one of a higher epoch
    /// stays). `NotAMember` unless `device` is a member of `group`.
    async fn put_group_info(
        &self,
        device: DeviceId,
        group: GroupId,
        epoch: u64,
        sealed: Vec<u8>,
    ) -> Result<(), StoreError>;

    /// P537: the sealed GroupInfo kept for `user` of `group` (epoch, bytes), if a device
    /// of the user is a member of it.
    async fn group_info(
        &self,
        user: UserId,
        group: GroupId,
    ) -> Result<Option<(u64, Vec<u8>)>, StoreError>;

    /// P536: the sealed GroupInfos kept for the user of `device` (group, epoch, bytes),
    /// of the groups another device of that user is a member of and `device` is not
    /// (what a new device has to join).
    async fn group_infos(
        &self,
        device: DeviceId,
    ) -> Result<Vec<(GroupId, u64, Vec<u8>)>, StoreError>;

    /// Queues an application message for every member but the sender if the group is at
    /// `msg.epoch`. A retry with the same client message id returns the first delivery
    /// without queueing again. A recipient whose mailbox is at `quotas.mailbox_entries`
    /// or would pass `mailbox_bytes` is skipped, listed in `undelivered`, and its
    /// missed count goes up; `MailboxFull` if that leaves no recipient (nothing is
    /// stored). `QuotaExceeded` past `quotas.user_bytes`. A message with no recipient
    /// is not stored. A recipient whose invitation to the group is held gets it held
    /// (`held`). A message in a 1:1 records that its sender accepts Welcomes from the
    /// other user.
    async fn enqueue_message(&self, msg: NewMessage) -> Result<Delivered, StoreError>;

    /// A device's mailbox entries after `after_id`, oldest first: at most `limit`, and
    /// no more than fit in `max_bytes`, each entry counting its payload plus
    /// `hush_proto::frame::ENTRY_OVERHEAD`; the first entry is always returned (P440).
    /// Also the device's missed count (P450).
    async fn fetch_mailbox(
        &self,
        device: DeviceId,
        after_id: u64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<MailboxPage, StoreError>;

    /// Deletes entries from a device's mailbox (ids of other devices are ignored) and
    /// takes `missed_seen` off its missed count (not below zero). A message no entry
    /// refers to any more is deleted with its last entry. Needs little space: a
    /// device can drain its mailbox while the disk is full (P451).
    async fn ack(&self, device: DeviceId, ids: &[u64], missed_seen: u32) -> Result<(), StoreError>;

    /// P461: the invitations held for `user`, one per inviter, oldest first.
    async fn requests(&self, user: UserId) -> Result<Vec<HeldRequest>, StoreError>;

    /// P462: answers every invitation held for `user` from `inviter`. Accepting
    /// records that `user` accepts Welcomes from `inviter` and releases the held
    /// entries into the mailboxes in their order; declining drops them and takes the
    /// user's devices out of those groups. Returns the devices to wake (empty if there
    /// was nothing held).
    async fn answer_request(
        &self,
        user: UserId,
        inviter: UserId,
        accept: bool,
    ) -> Result<Vec<DeviceId>, StoreError>;

    /// P560: records a file for `file.group_id`, whose recipients are the group's
    /// devices but the uploader at this moment. `NotAMember` if the uploader is not in
    /// the group, `GroupNotFound`, `QuotaExceeded{FileSize}` past `max_file_bytes`,
    /// `QuotaExceeded{FileBytes}` if the uploader's user would then hold more than
    /// `user_file_bytes` in files (complete or not).
    async fn create_file(&self, file: NewFile) -> Result<FileRecord, StoreError>;

    async fn file(&self, id: hush_proto::ids::FileId) -> Result<Option<FileRecord>, StoreError>;

    /// P561: every byte of the file arrived.
    async fn complete_file(&self, id: hush_proto::ids::FileId) -> Result<(), StoreError>;

    /// P562: `device` (a recipient) has the file. Returns `true` when that was the
    /// last recipient: the record is gone and its bytes are the caller's to delete.
    async fn file_fetched(
        &self,
        id: hush_proto::ids::FileId,
        device: DeviceId,
    ) -> Result<bool, StoreError>;

    /// P562: forgets the file (its bytes are the caller's to delete); `false` if
    /// there was none.
    async fn delete_file(&self, id: hush_proto::ids::FileId) -> Result<bool, StoreError>;

    /// P564: forgets every file created before `before_ms` and returns their ids.
    async fn expire_files(
        &self,
        before_ms: i64,
    ) -> Result<Vec<hush_proto::ids::FileId>, StoreError>;

    /// P570: the user's backup; `None` when it has neither chunks nor keys.
    async fn backup(&self, user: UserId) -> Result<Option<BackupRecord>, StoreError>;

    /// P571: keeps the wrapped backup keys given (`None`: keep the one held).
    async fn set_backup_keys(
        &self,
        user: UserId,
        wrapped_password: Option<Vec<u8>>,
        wrapped_recovery: Option<Vec<u8>>,
    ) -> Result<(), StoreError>;

    /// P572: appends one chunk and makes its head current, atomically; returns the
    /// new count. `BackupConflict` unless `chunk.index` is the count held,
    /// `QuotaExceeded{BackupBytes}` past `chunk.max_bytes`.
    async fn append_backup(&self, chunk: NewBackupChunk) -> Result<u64, StoreError>;

    /// P573: chunks `from` on, in order, until `max_bytes` would be passed (at least
    /// one if there is one).
    async fn backup_chunks(
        &self,
        user: UserId,
        from: u64,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;

    /// Cluster-wide failure counts (P320, P332, P553): adds `add` failures to `key`'s
    /// count under `kind` and returns the count and when its window began. A window
    /// lasts `window_secs` from its first failure; a count whose window ended by `now`
    /// starts again at `add`. `add = 0` reads, beginning no window (no failure yet:
    /// count 0 since `now`). Atomic: concurrent adds all count.
    async fn count_failures(
        &self,
        kind: &str,
        key: &[u8],
        add: u32,
        now: i64,
        window_secs: i64,
    ) -> Result<FailureCount, StoreError>;

    /// Forgets `key`'s failures under `kind` (a proven login, a right code).
    async fn clear_failures(&self, kind: &str, key: &[u8]) -> Result<(), StoreError>;

    /// Retention (P453): removes undelivered entries stored before `expire_before_ms`
    /// (their devices' missed counts go up) and the idempotency records of sends and
    /// handshakes made before `idempotency_before_ms`.
    async fn prune(
        &self,
        expire_before_ms: i64,
        idempotency_before_ms: i64,
    ) -> Result<Pruned, StoreError>;
}
