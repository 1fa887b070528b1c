//! Records passed to and from a [`Store`](crate::Store).
use std::fmt;

use hush_proto::ids::{DeviceId, UserId, Username};

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
