//! Records passed to and from a [`Store`](crate::Store).
use std::fmt;

use hush_proto::ids::{DeviceId, GroupId, HandshakeKey, UserId, Username};

/// A new device and its session.
#[derive(Debug, Clone)]
pub struct NewDevice {
    pub device_id: DeviceId,
    pub name: Option<String>,
    /// SHA-256 of the device's session token; the token itself is never stored.
    pub token_digest: [u8; 32],
    pub created_at: i64,
}

/// A user to create.
#[derive(Clone)]
pub struct NewUser {
    pub user_id: UserId,
    pub username: Username,
    pub display_name: Option<String>,
    pub email: Option<String>,
    /// The OPAQUE password file (RFC 9807 registration record).
    pub password_file: Vec<u8>,
    pub created_at: i64,
    pub device: NewDevice,
    /// Digest of the invite this registration consumes.
    pub invite: Option<[u8; 32]>,
    /// P540: the account's public key, published to contacts.
    pub account_key: [u8; 32],
    /// P542: the account's secret key sealed by the client; opaque to the server.
    pub sealed_account_key: Vec<u8>,
}

impl fmt::Debug for NewUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewUser")
            .field("user_id", &self.user_id)
            .field("username", &self.username)
            .field("device", &self.device.device_id)
            .finish_non_exhaustive()
    }
}

/// A stored user.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub user_id: UserId,
    pub username: Username,
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub password_file: Vec<u8>,
    pub admin: bool,
    pub disabled: bool,
    pub created_at: i64,
    /// `None` for accounts made before account keys (P540).
    pub account_key: Option<[u8; 32]>,
    pub sealed_account_key: Option<Vec<u8>>,
}

/// P330: an account's active two-factor login.
#[derive(Clone, PartialEq, Eq)]
pub struct TwoFactor {
    /// The RFC 6238 secret the server checks codes with.
    pub secret: Vec<u8>,
    /// The last time step a code was accepted for (codes of it or earlier are
    /// refused).
    pub last_step: u64,
    /// Recovery codes left.
    pub recovery_left: u32,
}

impl fmt::Debug for TwoFactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwoFactor")
            .field("last_step", &self.last_step)
            .field("recovery_left", &self.recovery_left)
            .finish_non_exhaustive()
    }
}

/// A device of an account as its owner lists it (P546).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    pub device_id: DeviceId,
    pub name: Option<String>,
    pub created_at: i64,
    pub last_seen: Option<i64>,
}

/// Who owns a device, with the account key the server publishes for that user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub device: DeviceId,
    pub username: Username,
    pub account_key: Option<[u8; 32]>,
}

impl fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserRecord")
            .field("user_id", &self.user_id)
            .field("username", &self.username)
            .field("admin", &self.admin)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// A user as listed for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    pub user_id: UserId,
    pub username: Username,
    pub display_name: Option<String>,
    pub admin: bool,
    pub disabled: bool,
    pub devices: u32,
    pub created_at: i64,
}

/// The device and user behind a session token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub device_id: DeviceId,
    pub user_id: UserId,
    pub username: Username,
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub admin: bool,
    pub disabled: bool,
    pub created_at: i64,
}

/// An invite to create.
#[derive(Debug, Clone)]
pub struct NewInvite {
    /// SHA-256 of the code; the code itself is shown once and never stored.
    pub digest: [u8; 32],
    pub uses: u32,
    /// Unix seconds; `None` never expires.
    pub expires_at: Option<i64>,
    pub created_at: i64,
}

/// A group its creator registers, with the Welcome for every other member.
#[derive(Debug, Clone)]
pub struct NewGroup {
    pub group_id: GroupId,
    pub creator: DeviceId,
    /// For a 1:1 conversation: the two users, in any order. At most one per pair.
    pub direct: Option<(UserId, UserId)>,
    /// For a named group: its name without '#', unique on the server.
    pub name: Option<String>,
    /// Every device in the group after the creation commit, the creator's included.
    pub members: Vec<DeviceId>,
    pub welcome: Option<Vec<u8>>,
    pub now_ms: i64,
    /// P423: a retry with the same key from the same creator returns the first result.
    pub client_key: Option<HandshakeKey>,
    pub quotas: Quotas,
    /// P550: a channel (named groups only); the creator's user administers it.
    pub channel: Option<NewChannel>,
    /// P438: the group's public MLS state at epoch 1, as the server checked it.
    pub public_state: Option<Vec<u8>>,
}

/// P550: what makes a new named group a channel.
#[derive(Clone, PartialEq, Eq)]
pub struct NewChannel {
    /// The argon2id hash (PHC string) of the password; `None`: open.
    pub password_hash: Option<String>,
    /// The RFC 6238 secret joiners' codes are checked with; `None`: no code.
    pub totp_secret: Option<Vec<u8>>,
    /// P552: the signed GroupInfo of the group's current epoch.
    pub group_info: Vec<u8>,
}

impl fmt::Debug for NewChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewChannel")
            .field("password", &self.password_hash.is_some())
            .field("totp", &self.totp_secret.is_some())
            .finish_non_exhaustive()
    }
}

/// A channel as the server keeps it (P550).
#[derive(Clone, PartialEq, Eq)]
pub struct ChannelRecord {
    pub group_id: GroupId,
    pub name: String,
    pub password_hash: Option<String>,
    pub totp_secret: Option<Vec<u8>>,
    pub group_info: Vec<u8>,
    /// The group's epoch (the GroupInfo's, when every commit published one).
    pub epoch: u64,
    /// Users allowed to change the channel on the server (P555).
    pub admins: Vec<UserId>,
    /// Users with a device in the group.
    pub members: u32,
}

impl fmt::Debug for ChannelRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelRecord")
            .field("group_id", &self.group_id)
            .field("name", &self.name)
            .field("password", &self.password_hash.is_some())
            .field("totp", &self.totp_secret.is_some())
            .field("epoch", &self.epoch)
            .field("members", &self.members)
            .finish_non_exhaustive()
    }
}

/// P555: what an admin changes; `None` leaves a part as it is.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ChannelUpdate {
    pub password_hash: Option<Option<String>>,
    pub totp_secret: Option<Option<Vec<u8>>>,
    pub admins: Option<Vec<UserId>>,
}

impl fmt::Debug for ChannelUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelUpdate")
            .field("password", &self.password_hash.is_some())
            .field("totp", &self.totp_secret.is_some())
            .field("admins", &self.admins)
            .finish()
    }
}

/// A commit taking a group from `epoch` to `epoch + 1`.
#[derive(Debug, Clone)]
pub struct NewCommit {
    pub group_id: GroupId,
    pub epoch: u64,
    pub sender: DeviceId,
    pub commit: Vec<u8>,
    pub welcome: Option<Vec<u8>>,
    pub added: Vec<DeviceId>,
    pub removed: Vec<DeviceId>,
    pub now_ms: i64,
    /// P433: a retry with the same key from the same sender returns the first result,
    /// whatever the group's epoch is by then.
    pub client_key: Option<HandshakeKey>,
    pub quotas: Quotas,
    /// P552: a channel's GroupInfo for the new epoch, kept for joiners.
    pub group_info: Option<Vec<u8>>,
    /// P553: the sender joins by this commit; it needs a join grant instead of
    /// membership, and the grant is used up.
    pub external: bool,
    /// P438: the group's public MLS state after the commit, as the server checked it;
    /// replaces the kept one (`None` forgets it).
    pub public_state: Option<Vec<u8>>,
}

/// An application message for a group's current epoch.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub group_id: GroupId,
    pub epoch: u64,
    pub sender: DeviceId,
    /// The sender's idempotency key: a retry returns the first delivery.
    pub client_message_id: [u8; 16],
    pub ciphertext: Vec<u8>,
    pub now_ms: i64,
    pub quotas: Quotas,
}

/// Where a stored message went: the devices to wake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub epoch: u64,
    pub group_seq: u64,
    pub stored_at_ms: i64,
    pub recipients: Vec<DeviceId>,
    /// P450: recipients of an application message whose mailbox was full; the message
    /// was not stored for them (their `missed` count went up).
    pub undelivered: Vec<DeviceId>,
    /// P460: recipients whose entry is held until their user answers an invitation.
    pub held: Vec<DeviceId>,
}

/// Limits a store enforces inside the transaction that would break them (P450–P452),
/// so concurrent requests cannot overshoot them together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Entries a device's mailbox may hold before application messages skip it.
    /// Handshakes (commits, Welcomes) are never skipped: a group must not stall on
    /// one member's full mailbox. They count towards the usage all the same.
    pub mailbox_entries: u64,
    /// Payload bytes a device's mailbox may hold, as `mailbox_entries`.
    pub mailbox_bytes: u64,
    /// Payload bytes of the undelivered messages a user's devices sent (each message
    /// counted once, whatever its number of recipients): `QuotaExceeded` beyond it.
    pub user_bytes: u64,
    /// Devices a group may hold after a creation or commit.
    pub group_members: u64,
    /// Groups one user's devices may create in any hour.
    pub groups_per_hour: u64,
    /// P460: groups a user may have pending invitations to (held Welcomes) ...
    pub requests_per_user: u64,
    /// ... and the largest Welcome such an invitation may carry.
    pub request_bytes: u64,
}

impl Quotas {
    /// No limits: for tests of other behaviour.
    pub const UNLIMITED: Quotas = Quotas {
        mailbox_entries: u64::MAX,
        mailbox_bytes: u64::MAX,
        user_bytes: u64::MAX,
        group_members: u64::MAX,
        groups_per_hour: u64::MAX,
        requests_per_user: u64::MAX,
        request_bytes: u64::MAX,
    };
}

/// A key package handed out by a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub user: UserId,
    pub device: DeviceId,
    pub package: Vec<u8>,
}

/// Which limit a request would have broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    KeyPackages,
    UserBytes,
    Devices,
    GroupMembers,
    GroupsPerHour,
    /// P460: pending invitations of the recipient ...
    Requests,
    /// ... or the size of one.
    RequestBytes,
    /// P560: the size of one file ...
    FileSize,
    /// ... or the bytes of all the files a user holds on the server.
    FileBytes,
    /// P572: the bytes of a user's encrypted backup.
    BackupBytes,
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Quota::KeyPackages => "stored key packages per device",
            Quota::UserBytes => "stored bytes of undelivered messages",
            Quota::Devices => "devices per account",
            Quota::GroupMembers => "devices per group",
            Quota::GroupsPerHour => "groups created per hour",
            Quota::Requests => "pending invitations from people not yet accepted",
            Quota::RequestBytes => "bytes in an invitation from someone not yet accepted",
            Quota::FileSize => "bytes in one file",
            Quota::FileBytes => "bytes of files held on the server per user",
            Quota::BackupBytes => "bytes of encrypted backup per user",
        })
    }
}

/// A device's mailbox after a fetch: its entries and the messages it missed.
#[derive(Debug, Clone, Default)]
pub struct MailboxPage {
    pub entries: Vec<hush_proto::response::Entry>,
    /// P450: messages not stored for this device (full mailbox, expired) that it has
    /// not yet acknowledged noticing.
    pub missed: u32,
    /// Entries after this page wait: the page was cut by `limit` or by bytes.
    pub more: bool,
}

/// A key's failures in its current window ([`crate::Store::count_failures`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FailureCount {
    pub count: u32,
    /// When the window began (Unix seconds).
    pub since: i64,
}

/// What one pass of retention removed (P453).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pruned {
    /// Undelivered mailbox entries past the retention time.
    pub expired_entries: u64,
    /// Idempotency records (sends and handshakes) past their window.
    pub idempotency_records: u64,
}

/// A group as the server tracks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    pub group_id: GroupId,
    pub epoch: u64,
    pub members: Vec<DeviceId>,
    /// P550: the group is a channel.
    pub channel: bool,
}

/// Invitations held for a user from one inviter (P461).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldRequest {
    pub inviter: UserId,
    pub inviter_name: Username,
    /// Groups the inviter asked the user into.
    pub groups: u32,
    /// When the oldest was held.
    pub since_ms: i64,
}

/// P560: a file to reserve room for.
#[derive(Debug, Clone)]
pub struct NewFile {
    pub file_id: hush_proto::ids::FileId,
    pub group_id: GroupId,
    /// The uploading device, which must be a member of `group_id`.
    pub uploader: DeviceId,
    /// Sealed bytes.
    pub size: u64,
    pub now_ms: i64,
    /// `QuotaExceeded{FileSize}` past it.
    pub max_file_bytes: u64,
    /// `QuotaExceeded{FileBytes}` if the uploader's user would hold more.
    pub user_file_bytes: u64,
}

/// P560: a file the server holds (or is receiving).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    pub file_id: hush_proto::ids::FileId,
    pub group_id: GroupId,
    pub uploader: DeviceId,
    pub uploader_user: UserId,
    pub size: u64,
    pub created_ms: i64,
    /// Every byte arrived.
    pub complete: bool,
    /// The group's other devices when it was created, by id.
    pub recipients: Vec<DeviceId>,
    /// Those of `recipients` that fetched it, by id.
    pub fetched: Vec<DeviceId>,
}

/// P572: the next chunk of a user's backup.
#[derive(Debug, Clone)]
pub struct NewBackupChunk {
    pub user: UserId,
    /// Must be the number of chunks held (`BackupConflict` otherwise).
    pub index: u64,
    pub chunk: Vec<u8>,
    /// The signed head naming the backup with this chunk; kept as the current one.
    pub head: Vec<u8>,
    pub now_ms: i64,
    /// `QuotaExceeded{BackupBytes}` if the backup would then hold more.
    pub max_bytes: u64,
}

/// P570: what the server holds of a user's backup (all of it opaque to the server).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupRecord {
    pub count: u64,
    /// Empty until the first chunk.
    pub head: Vec<u8>,
    pub bytes: u64,
    pub updated_ms: i64,
    pub wrapped_password: Option<Vec<u8>>,
    pub wrapped_recovery: Option<Vec<u8>>,
}
