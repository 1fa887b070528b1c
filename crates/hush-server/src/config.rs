//! Server settings that the relay logic consults. `hushd` resolves its file, flags and
//! defaults into one [`ServerConfig`].
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Who may create an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RegistrationMode {
    /// Anyone who can reach the server.
    #[default]
    Open,
    /// Only holders of an invite code from `hushd invite create`.
    Invite,
    /// Nobody; accounts exist already.
    Closed,
}

impl FromStr for RegistrationMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "open" => Ok(RegistrationMode::Open),
            "invite" => Ok(RegistrationMode::Invite),
            "closed" => Ok(RegistrationMode::Closed),
            other => Err(format!(
                "unknown registration mode {other:?}: expected open, invite or closed"
            )),
        }
    }
}

impl fmt::Display for RegistrationMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RegistrationMode::Open => "open",
            RegistrationMode::Invite => "invite",
            RegistrationMode::Closed => "closed",
        })
    }
}

/// Resource limits, each bounding what one peer can make the server spend. Read from
/// the `[limits]` table of hushd's config file (durations in whole seconds, under
/// `*_secs` names); [`Limits::documented`] describes each for `hushd config example`.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Time allowed for the TLS handshake.
    #[serde(rename = "tls_handshake_timeout_secs", with = "secs")]
    pub tls_handshake_timeout: Duration,
    /// Time from connect until the connection must have authenticated.
    #[serde(rename = "auth_timeout_secs", with = "secs")]
    pub auth_timeout: Duration,
    /// Largest frame after authentication (P101).
    #[serde(rename = "max_frame_bytes")]
    pub max_frame_len: usize,
    /// Largest frame before authentication (P101).
    #[serde(skip)]
    pub max_pre_auth_frame_len: usize,
    /// Largest application message ciphertext (P450).
    pub max_message_bytes: usize,
    /// Unproven logins of an account within `login_window` before further ones are
    /// slowed down (never refused, P320).
    pub login_failures_per_account: u32,
    /// Failed logins allowed per source address within `login_window` (P320).
    pub login_failures_per_address: u32,
    #[serde(rename = "login_window_secs", with = "secs")]
    pub login_window: Duration,
    /// Concurrent connections; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Concurrent connections from one source address (P106).
    pub connections_per_address: usize,
    /// Concurrent authenticated connections of one account (P106).
    pub connections_per_account: usize,
    /// Requests one connection may make per second on average (P107) ...
    pub requests_per_second: u32,
    /// ... and in a burst.
    pub request_burst: u32,
    /// An authenticated connection that sends nothing for this long is closed; clients
    /// ping every 30 s (P108).
    #[serde(rename = "idle_timeout_secs", with = "secs")]
    pub idle_timeout: Duration,
    /// A frame that has started arriving must be complete within this (P108).
    #[serde(rename = "frame_read_timeout_secs", with = "secs")]
    pub frame_read_timeout: Duration,
    /// How long a graceful shutdown waits for sessions to close.
    #[serde(rename = "shutdown_grace_secs", with = "secs")]
    pub shutdown_grace: Duration,
    /// New accounts one source address may create per hour in open registration
    /// (enough for a team behind one NAT, too few for bulk accounts).
    pub registrations_per_address_per_hour: u32,
    /// How often open sessions are checked for a revoked device or a disabled or
    /// deleted user (their sessions then end).
    #[serde(rename = "session_recheck_secs", with = "secs")]
    pub session_recheck: Duration,
    /// Entries one device's mailbox may hold (P450).
    pub mailbox_max_entries: u64,
    /// Payload bytes one device's mailbox may hold (P450).
    pub mailbox_max_bytes: u64,
    /// Payload bytes of undelivered messages one account may have stored (P452).
    pub account_storage_bytes: u64,
    /// Devices one account may have (P452).
    pub devices_per_account: u64,
    /// Devices one group may hold (P452).
    pub group_max_devices: u64,
    /// Groups one account may create per hour (P452).
    pub groups_per_account_per_hour: u64,
    /// Groups an account may have pending invitations to from people it has not
    /// accepted (P460).
    pub pending_invitations_per_account: u64,
    /// Largest Welcome such an invitation may carry (P460).
    pub invitation_max_bytes: u64,
    /// Key packages one device may claim per minute, each package counted (P411).
    pub key_package_claims_per_minute: u32,
    /// Claims naming one user that one account may make per hour (P411): nobody can
    /// drain another user's one-time key packages.
    pub key_package_claims_per_target_per_hour: u32,
    /// Undelivered messages are deleted after this long (P453).
    #[serde(rename = "retention_secs", with = "secs")]
    pub retention: Duration,
    /// A retried send or handshake is recognised for this long (P423, P431, P453).
    #[serde(rename = "idempotency_window_secs", with = "secs")]
    pub idempotency_window: Duration,
    /// How often retention runs.
    #[serde(rename = "prune_interval_secs", with = "secs")]
    pub prune_interval: Duration,
    /// Largest the SQLite database may grow, in bytes; 0 for no limit but the disk.
    /// Past it, writes are refused with STORAGE_FULL while reads and acks go on (P451).
    pub database_max_bytes: u64,
    /// Bytes kept free on the data dir's disk, given back when it fills so that
    /// reads and acks go on (P451); 0 for none.
    pub storage_reserve_bytes: u64,
    /// Largest file one upload may be, in sealed bytes (P560).
    pub max_file_bytes: u64,
    /// Bytes of files one account may hold on the server at once (P560).
    pub account_file_bytes: u64,
    /// A file is deleted this long after its upload began, fetched or not (P564).
    #[serde(rename = "file_retention_secs", with = "secs")]
    pub file_retention: Duration,
    /// Bytes of encrypted backup one account may keep on the server (P572).
    pub account_backup_bytes: u64,
    /// Channel password hashes (Argon2id, 19 MiB each) the server computes at once;
    /// past it a join or creation is refused with RATE_LIMITED (P553).
    pub concurrent_password_hashes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            tls_handshake_timeout: Duration::from_secs(10),
            auth_timeout: Duration::from_secs(30),
            max_frame_len: hush_proto::frame::MAX_FRAME_LEN,
            max_pre_auth_frame_len: hush_proto::frame::MAX_PRE_AUTH_FRAME_LEN,
            max_message_bytes: 1024 * 1024,
            login_failures_per_account: 10,
            login_failures_per_address: 30,
            login_window: Duration::from_secs(300),
            max_connections: 20_000,
            connections_per_address: 256,
            connections_per_account: 32,
            requests_per_second: 2_000,
            request_burst: 5_000,
            idle_timeout: Duration::from_secs(120),
            frame_read_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(5),
            session_recheck: Duration::from_secs(2),
            registrations_per_address_per_hour: 20,
            mailbox_max_entries: 10_000,
            mailbox_max_bytes: 256 * 1024 * 1024,
            account_storage_bytes: 1024 * 1024 * 1024,
            devices_per_account: 20,
            group_max_devices: 1_000,
            groups_per_account_per_hour: 60,
            concurrent_password_hashes: 4,
            pending_invitations_per_account: 20,
            invitation_max_bytes: 512 * 1024,
            key_package_claims_per_minute: 600,
            key_package_claims_per_target_per_hour: 120,
            retention: Duration::from_secs(30 * 86_400),
            idempotency_window: Duration::from_secs(7 * 86_400),
            prune_interval: Duration::from_secs(3_600),
            database_max_bytes: 0,
            storage_reserve_bytes: 16 * 1024 * 1024,
            max_file_bytes: 1024 * 1024 * 1024,
            account_file_bytes: 4 * 1024 * 1024 * 1024,
            file_retention: Duration::from_secs(30 * 86_400),
            account_backup_bytes: 1024 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// The store-enforced part (P450–P452).
    pub fn quotas(&self) -> hush_store::Quotas {
        hush_store::Quotas {
            mailbox_entries: self.mailbox_max_entries,
            mailbox_bytes: self.mailbox_max_bytes,
            user_bytes: self.account_storage_bytes,
            group_members: self.group_max_devices,
            groups_per_hour: self.groups_per_account_per_hour,
            requests_per_user: self.pending_invitations_per_account,
            request_bytes: self.invitation_max_bytes,
        }
    }

    /// Refuses settings that cannot work, naming the setting.
    pub fn validate(&self) -> Result<(), String> {
        let frame = 64 * 1024..=64 * 1024 * 1024;
        if !frame.contains(&self.max_frame_len) {
            return Err("limits.max_frame_bytes must be between 65536 and 67108864".into());
        }
        let budget = self
            .max_frame_len
            .saturating_sub(hush_proto::frame::ANSWER_ROOM + hush_proto::frame::ENTRY_OVERHEAD);
        if self.max_message_bytes == 0 || self.max_message_bytes > budget {
            return Err(format!(
                "limits.max_message_bytes must be between 1 and {budget} (what fits a frame of max_frame_bytes)"
            ));
        }
        for (name, v) in [
            ("max_connections", self.max_connections as u64),
            (
                "connections_per_address",
                self.connections_per_address as u64,
            ),
            (
                "connections_per_account",
                self.connections_per_account as u64,
            ),
            ("requests_per_second", u64::from(self.requests_per_second)),
            ("request_burst", u64::from(self.request_burst)),
            ("mailbox_max_entries", self.mailbox_max_entries),
            ("devices_per_account", self.devices_per_account),
            ("group_max_devices", self.group_max_devices),
            ("max_file_bytes", self.max_file_bytes),
            ("account_backup_bytes", self.account_backup_bytes),
            (
                "key_package_claims_per_minute",
                u64::from(self.key_package_claims_per_minute),
            ),
            (
                "key_package_claims_per_target_per_hour",
                u64::from(self.key_package_claims_per_target_per_hour),
            ),
            (
                "concurrent_password_hashes",
                u64::from(self.concurrent_password_hashes),
            ),
        ] {
            if v == 0 {
                return Err(format!("limits.{name} must be at least 1"));
            }
        }
        for (name, d) in [
            ("idle_timeout_secs", self.idle_timeout),
            ("frame_read_timeout_secs", self.frame_read_timeout),
            ("session_recheck_secs", self.session_recheck),
            ("prune_interval_secs", self.prune_interval),
            ("retention_secs", self.retention),
            ("idempotency_window_secs", self.idempotency_window),
            ("file_retention_secs", self.file_retention),
        ] {
            if d.is_zero() {
                return Err(format!("limits.{name} must be at least 1"));
            }
        }
        Ok(())
    }

    /// Every setting of `[limits]` with its meaning, in the order of the example.
    pub fn documented() -> &'static [(&'static str, &'static str)] {
        &[
            (
                "tls_handshake_timeout_secs",
                "Seconds allowed for the TLS handshake.",
            ),
            (
                "auth_timeout_secs",
                "Seconds a connection may take to authenticate.",
            ),
            (
                "max_frame_bytes",
                "Largest frame an authenticated client may send, in bytes.",
            ),
            (
                "max_message_bytes",
                "Largest message ciphertext, in bytes (at most what a frame holds).",
            ),
            (
                "login_failures_per_account",
                "Unproven logins of one account per window before each further one is slowed\n# down (half a second more each, at most 5 s; an account is never locked).",
            ),
            (
                "login_failures_per_address",
                "Unproven logins per source address per window before that address gets no\n# more challenges (valid session resumes are never blocked).",
            ),
            (
                "login_window_secs",
                "The window of the two login limits, in seconds.",
            ),
            ("max_connections", "Concurrent connections."),
            (
                "connections_per_address",
                "Concurrent connections from one source address (allow for a NAT).",
            ),
            (
                "connections_per_account",
                "Concurrent authenticated connections of one account.",
            ),
            (
                "requests_per_second",
                "Requests one connection may make per second, on average ...",
            ),
            (
                "request_burst",
                "... and in a burst; beyond, requests get RATE_LIMITED.",
            ),
            (
                "idle_timeout_secs",
                "Seconds an authenticated connection may stay silent (clients ping every 30 s).",
            ),
            (
                "frame_read_timeout_secs",
                "Seconds a started frame may take to arrive whole.",
            ),
            (
                "shutdown_grace_secs",
                "Seconds a graceful shutdown waits for sessions to close.",
            ),
            (
                "registrations_per_address_per_hour",
                "New accounts one address may create per hour with open registration.",
            ),
            (
                "session_recheck_secs",
                "Seconds between checks that end the sessions of revoked devices and of\n# disabled or deleted accounts.",
            ),
            (
                "mailbox_max_entries",
                "Entries one device's mailbox may hold. Past it (or past the bytes below),\n# messages skip that device and the sender is told (MAILBOX_FULL when no one\n# could take it); commits and Welcomes always get through.",
            ),
            (
                "mailbox_max_bytes",
                "Payload bytes one device's mailbox may hold.",
            ),
            (
                "account_storage_bytes",
                "Bytes of undelivered messages one account may have stored (QUOTA_EXCEEDED).",
            ),
            ("devices_per_account", "Devices one account may have."),
            ("group_max_devices", "Devices one group may hold."),
            (
                "groups_per_account_per_hour",
                "Groups one account may create per hour.",
            ),
            (
                "pending_invitations_per_account",
                "Groups an account may be invited to, and not yet have answered, by people it\n# has not accepted (`hush requests`); more invitations get QUOTA_EXCEEDED.",
            ),
            (
                "invitation_max_bytes",
                "Largest Welcome such an invitation may carry, in bytes.",
            ),
            (
                "key_package_claims_per_minute",
                "Key packages one device may claim per minute.",
            ),
            (
                "key_package_claims_per_target_per_hour",
                "Key package claims naming one other user that one account may make per hour.",
            ),
            (
                "concurrent_password_hashes",
                "Channel password hashes (Argon2id, 19 MiB each) the server runs at once; more are refused with RATE_LIMITED.",
            ),
            (
                "retention_secs",
                "Seconds an undelivered message is kept (the device is told it missed it).",
            ),
            (
                "idempotency_window_secs",
                "Seconds a retried send or handshake is recognised as a retry.",
            ),
            ("prune_interval_secs", "Seconds between retention passes."),
            (
                "database_max_bytes",
                "Largest the SQLite database may grow, in bytes (0: only the disk limits it).\n# Past it, writes get STORAGE_FULL; reads and acks go on.",
            ),
            (
                "storage_reserve_bytes",
                "Bytes kept free on the data dir's disk and given back when it fills, so reads\n# and acks go on while new messages get STORAGE_FULL (0: none).",
            ),
            (
                "max_file_bytes",
                "Largest file one upload may be, in bytes (sealed: 16 bytes more per 64 KiB).",
            ),
            (
                "account_file_bytes",
                "Bytes of files one account may hold on the server at once.",
            ),
            (
                "account_backup_bytes",
                "Bytes of encrypted backup one account may keep on the server.",
            ),
            (
                "file_retention_secs",
                "Seconds a file is kept after its upload began, whether or not every\n# recipient fetched it.",
            ),
        ]
    }
}

/// Durations as whole seconds in the config file.
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub registration: RegistrationMode,
    pub limits: Limits,
    /// P556: the open channel every new account is offered; `None`: no lobby.
    pub lobby: Option<hush_proto::content::GroupName>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            registration: RegistrationMode::default(),
            limits: Limits::default(),
            lobby: hush_proto::content::GroupName::parse("lobby").ok(),
        }
    }
}
