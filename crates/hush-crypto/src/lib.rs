//! Client-side cryptography for hush, sans-IO: MLS (RFC 9420) through openmls, with
//! ciphersuite `MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519`. Storage and randomness
//! come from the caller's [`OpenMlsProvider`]; nothing here touches a file or socket.
//!
//! Modules:
//! - [`identity`]: a device's signature key and credential, and its key packages.
//! - [`conversation`]: one MLS group: create, add members, join from a Welcome,
//!   encrypt, and process what the server relays.
//!
//! A new MLS operation: a method on [`conversation::Conversation`] that returns the bytes
//! to send and leaves the caller to commit its storage transaction.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod conversation;
pub mod identity;

pub use openmls;
pub use openmls::prelude::OpenMlsProvider;

use openmls::prelude::Ciphersuite;

/// The one ciphersuite hush speaks (0x0001).
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// Why a cryptographic operation failed. Peer-caused failures (bad ciphertext, bad key
/// package) are `Rejected`; they are reported, never panicked on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// Bytes from a peer or the server that do not verify or decrypt.
    #[error("{0}")]
    Rejected(String),
    /// A message whose ratchet generation was already used: delivered again.
    #[error("{0}")]
    Replayed(String),
    /// The local MLS state could not be read or written.
    #[error("MLS storage: {0}")]
    Storage(String),
    /// The group or key this needs is not in local storage.
    #[error("{0}")]
    Missing(String),
    #[error("internal MLS error: {0}")]
    Internal(String),
}

pub(crate) fn rejected(what: &str, e: impl std::fmt::Display) -> CryptoError {
    CryptoError::Rejected(format!("{what}: {e}"))
}

pub(crate) fn internal(what: &str, e: impl std::fmt::Debug) -> CryptoError {
    CryptoError::Internal(format!("{what}: {e:?}"))
}
