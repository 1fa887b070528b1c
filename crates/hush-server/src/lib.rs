//! The hush relay as a library: TLS transport, per-connection sessions, OPAQUE accounts,
//! rate limits and administration. It knows sockets and TLS; it knows no SQL (storage is
//! the [`hush_store::Store`] port) and no MLS (messages are opaque bytes).
//!
//! Modules:
//! - [`identity`]: the server's TLS key and certificate, created on first start, and
//!   its pinned fingerprint.
//! - [`transport`]: [`serve`] accepts TCP, runs the TLS 1.3 handshake and hands each
//!   connection to a session; graceful shutdown.
//! - [`session`]: the per-connection protocol loop, generic over any byte stream.
//! - [`accounts`]: OPAQUE registration and login, sessions, invites.
//! - [`messaging`]: key packages, groups, mailboxes (opaque MLS bytes only).
//! - [`files`]: sealed file bytes in the blob store, their recipients and quotas.
//! - [`hub`]: wake-ups of connected devices when their mailbox fills.
//! - [`limits`]: rate limits and connection caps.
//! - [`reserve`]: room kept on the disk so acks work when it fills.
//! - [`config`]: [`ServerConfig`] and [`RegistrationMode`].
//! - [`clock`]: injected time and randomness.
//!
//! A new request: validate it in `hush-proto`, then handle it in `session::dispatch`,
//! putting its logic in the module of its domain noun.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod accounts;
pub mod backups;
pub mod channels;
pub mod clock;
pub mod config;
pub mod files;
pub mod hub;
pub mod identity;
pub mod limits;
pub mod messaging;
pub mod reserve;
pub mod session;
pub mod transport;
pub mod two_factor;

use std::sync::Arc;

use hush_store::Store;

pub use clock::{Clock, Entropy, OsEntropy, SystemClock};
pub use config::{Limits, RegistrationMode, ServerConfig};
pub use identity::TlsIdentity;
pub use transport::{prune_once, serve};

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error("storage: {0}")]
    Store(#[from] hush_store::StoreError),
    #[error("TLS identity: {0}")]
    Identity(String),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("internal: {0}")]
    Internal(String),
}

/// Everything sessions share.
pub struct ServerState {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) config: ServerConfig,
    pub(crate) accounts: accounts::Accounts,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) entropy: Arc<dyn Entropy>,
    pub(crate) hub: Arc<hub::Hub>,
    /// Set when an admin asks the server to stop (P601).
    pub(crate) stop_requested: tokio::sync::watch::Sender<bool>,
    /// Key package claims per device (P411).
    pub(crate) claims: limits::FailureLimiter<hush_proto::ids::DeviceId>,
    /// Claims per (claiming user, claimed user) in the last hour (P411).
    pub(crate) claims_per_target:
        limits::FailureLimiter<(hush_proto::ids::UserId, hush_proto::ids::UserId)>,
    /// Open connections per source address and authenticated ones per account (P106).
    pub(crate) per_address: Arc<limits::Occupancy<std::net::IpAddr>>,
    pub(crate) per_account: Arc<limits::Occupancy<hush_proto::ids::UserId>>,
    /// P451: room kept on the disk for acks when it fills.
    pub(crate) reserve: reserve::Reserve,
    /// P560: sealed file bytes.
    pub(crate) blobs: Arc<dyn hush_store::blob::BlobStore>,
    /// P553: Argon2id hashes running now (each takes 19 MiB), capped server-wide.
    pub(crate) hashing: Arc<tokio::sync::Semaphore>,
}

impl ServerState {
    /// Builds the shared state, loading (or creating on first start) the server-wide
    /// OPAQUE key from the store so every node of a cluster shares it.
    pub async fn new(
        store: Arc<dyn Store>,
        config: ServerConfig,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
    ) -> Result<Self, ServerError> {
        let accounts = accounts::Accounts::load(store.as_ref(), entropy.as_ref(), &config).await?;
        let claims =
            limits::FailureLimiter::new(config.limits.key_package_claims_per_minute, 60, 100_000);
        // The store tells the hub of every committed entry, in commit order (P443).
        let hub = Arc::new(hub::Hub::default());
        store.set_listener(hub.clone());
        let claims_per_target = limits::FailureLimiter::new(
            config.limits.key_package_claims_per_target_per_hour,
            3600,
            100_000,
        );
        let hashing = Arc::new(tokio::sync::Semaphore::new(
            config.limits.concurrent_password_hashes.max(1) as usize,
        ));
        Ok(ServerState {
            hashing,
            store,
            config,
            accounts,
            clock,
            entropy,
            hub,
            stop_requested: tokio::sync::watch::channel(false).0,
            claims,
            claims_per_target,
            per_address: Arc::default(),
            per_account: Arc::default(),
            reserve: reserve::Reserve::none(),
            blobs: Arc::new(hush_store::blob::MemoryBlobs::default()),
        })
    }

    /// Keeps `limits.storage_reserve_bytes` free at `path`, on the database's disk
    /// (P451).
    pub fn with_storage_reserve(mut self, path: std::path::PathBuf) -> Self {
        self.reserve = reserve::Reserve::at(path, self.config.limits.storage_reserve_bytes);
        self
    }

    /// Keeps file bytes in `blobs` (in memory otherwise: tests only).
    pub fn with_blobs(mut self, blobs: Arc<dyn hush_store::blob::BlobStore>) -> Self {
        self.blobs = blobs;
        self
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }
}
