//! The hush client library: everything a front end (the `hush` CLI, the terminal UI,
//! a bot) needs, so they all behave the same. Front ends use [`Client`] only: an owned
//! handle to the home's engine, with typed commands and a typed event stream.
//!
//! Modules:
//! - [`client`]: [`Client`], the handle, and its commands.
//! - `engine`: the task that owns the home and the connection: connect, authenticate,
//!   settle, sync, send the outbox, reconnect with backoff, keep alive, publish events.
//! - [`events`]: the typed [`events::Event`] stream (`recv --json` is its serialization).
//! - [`home`]: the client's home directory: the local database and the account in it.
//! - [`trust`]: server key pinning on first use (`known_servers`) and the TLS verifier.
//! - [`connection`]: one TLS connection with pipelined, id-matched requests.
//! - [`account`]: OPAQUE registration and login, whoami, logout.
//! - `messaging`: MLS identity and key packages, mailbox sync, sending via the outbox.
//! - `groups`: named groups, membership, the commit policy, a user's devices (P534).
//! - `handshake`: creations and commits recorded before they are sent (P423, P433).
//! - [`history`]: local conversations, messages and security events.
//! - `mls`: the openmls provider on the home's database.
//! - `faults` (feature `fault-injection`, tests only): drops chosen server answers.
//!
//! A new feature: a command on [`Client`] that runs a method of the engine's
//! `Messenger` (a module named for its domain noun), storing what it must in
//! [`home::Home`] inside `Home::write` and never awaiting the network inside it.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod account;
pub mod backup;
pub mod channels;
pub mod client;
pub mod connection;
mod engine;
pub mod events;
#[cfg(feature = "fault-injection")]
pub mod faults;
pub mod files;
mod groups;
mod handshake;
pub mod history;
pub mod home;
mod identities;
mod messaging;
mod mls;
mod rejoin;
mod sequence;
pub mod trust;

pub use client::{Client, ClientOptions, Enrolment, Events, Target, WhoAmI};
pub use groups::Member;
pub use identities::{Contact, Verification};

use hush_proto::ErrorCode;
use hush_proto::fingerprint::Fingerprint;
use hush_proto::response::ServerError;

pub use hush_proto;

impl From<hush_crypto::backup::BackupError> for ClientError {
    fn from(e: hush_crypto::backup::BackupError) -> Self {
        ClientError::Backup(e)
    }
}

/// Why a client operation failed. Front ends map these to messages and exit codes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("cannot reach {server}: {reason}")]
    Unreachable { server: String, reason: String },
    #[error(
        "the server at {server} presented key {presented}, but this home pinned {pinned}. \
         This may be an attack. If the operator really replaced the server key, remove the \
         line for {server} from {known_servers} and connect again."
    )]
    FingerprintChanged {
        server: String,
        pinned: Fingerprint,
        presented: Fingerprint,
        known_servers: String,
    },
    #[error("the server at {server} presented key {presented}, not the expected {expected}")]
    FingerprintMismatch {
        server: String,
        expected: Fingerprint,
        presented: Fingerprint,
    },
    #[error(
        "the server at {server} is not known yet; its key fingerprint is {presented}. \
         Check it with the operator (`hushd fingerprint`), then pass \
         --server-fingerprint {presented} (or --trust-new-server)"
    )]
    UnknownServer {
        server: String,
        presented: Fingerprint,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("wrong username or password")]
    WrongPassword,
    #[error("{0}")]
    Server(ServerError),
    #[error("the server sent an invalid frame: {0}")]
    Protocol(String),
    #[error("the connection to the server was lost{}", .0.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Disconnected(Option<String>),
    #[error("the server did not answer within {0} s")]
    Timeout(u64),
    #[error("{0}")]
    Home(String),
    #[error("not logged in: run `hush register` or `hush login` first")]
    NoAccount,
    #[error("{0}")]
    Invalid(String),
    #[error("encryption: {0}")]
    Crypto(String),
    /// A transfer stopped on request (Ctrl-C, a front end's cancel); what arrived is
    /// kept and the same command resumes it.
    #[error("the transfer was interrupted; run the same command again to resume it")]
    Interrupted,
    /// The home is encrypted at rest and no passphrase was given.
    #[error(
        "this home is encrypted: give its passphrase (HUSH_PASSPHRASE, --passphrase-stdin, or at the prompt on a terminal)"
    )]
    PassphraseNeeded,
    #[error("wrong passphrase for this home (nothing was changed)")]
    WrongPassphrase,
    /// The backup on the server failed a check (ADR 0005): nothing was restored.
    #[error("backup: {0}")]
    Backup(hush_crypto::backup::BackupError),
    #[error(
        "{user}'s account key changed since you verified it; nothing is sent until you \
         compare the new safety number with {user} and run `hush verify {user} --confirm`"
    )]
    IdentityChanged { user: String },
    /// Internal: devices whose owners must be looked up before a local transaction can
    /// finish; it is rolled back and run again. Never reaches a front end.
    #[doc(hidden)]
    #[error("internal: device owners unknown")]
    NeedLookup(
        Vec<(
            hush_proto::ids::DeviceId,
            Option<hush_crypto::account::AccountPublicKey>,
        )>,
    ),
}

impl ClientError {
    /// Whether the link to the server failed (unreachable, lost, no answer in time):
    /// the engine reconnects by itself, and the command may be tried again.
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            ClientError::Unreachable { .. }
                | ClientError::Disconnected(_)
                | ClientError::Timeout(_)
        )
    }

    /// The server's error code, if the server refused the request.
    pub fn server_code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server(e) => Some(e.code),
            _ => None,
        }
    }
}
