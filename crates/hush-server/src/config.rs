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

/// Resource limits, each bounding what one peer can make the server spend.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time allowed for the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Time from connect until the connection must have authenticated.
    pub auth_timeout: Duration,
    /// Largest frame after authentication (P101).
    pub max_frame_len: usize,
    /// Largest frame before authentication (P101).
    pub max_pre_auth_frame_len: usize,
    /// Unproven logins of an account within `login_window` before further ones are
    /// slowed down (never refused, P320).
    pub login_failures_per_account: u32,
    /// Failed logins allowed per source address within `login_window` (P320).
    pub login_failures_per_address: u32,
    pub login_window: Duration,
    /// Concurrent connections; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// How long a graceful shutdown waits for sessions to close.
    pub shutdown_grace: Duration,
    /// New accounts one source address may create per hour in open registration
    /// (enough for a team behind one NAT, too few for bulk accounts).
    pub registrations_per_address_per_hour: u32,
    /// How often open sessions are checked for a revoked device or a disabled or
    /// deleted user (their sessions then end).
    pub session_recheck: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            tls_handshake_timeout: Duration::from_secs(10),
            auth_timeout: Duration::from_secs(30),
            max_frame_len: hush_proto::frame::MAX_FRAME_LEN,
            max_pre_auth_frame_len: hush_proto::frame::MAX_PRE_AUTH_FRAME_LEN,
            login_failures_per_account: 10,
            login_failures_per_address: 30,
            login_window: Duration::from_secs(300),
            max_connections: 20_000,
            shutdown_grace: Duration::from_secs(5),
            session_recheck: Duration::from_secs(2),
            registrations_per_address_per_hour: 20,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    pub registration: RegistrationMode,
    pub limits: Limits,
}
