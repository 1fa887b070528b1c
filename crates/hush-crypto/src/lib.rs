//! Client-side cryptography for hush, sans-IO: MLS (RFC 9420) through openmls, with
//! ciphersuite `MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519`. Storage and randomness
//! come from the caller's [`OpenMlsProvider`]; nothing here touches a file or socket.
//!
//! Modules:
//! - [`account`]: account keys, the device certificates they sign (every leaf's
//!   credential), the sealed copy for new devices, and safety numbers.
//! - [`identity`]: a device's signature key and credential, and its key packages.
//! - [`conversation`]: one MLS group: create, add members, join from a Welcome,
//!   encrypt, and process what the server relays.
//! - [`file`]: files sealed chunk by chunk (STREAM over ChaCha20-Poly1305) under a
//!   fresh key per file, for the server's blob store.
//!
//! A new MLS operation: a method on [`conversation::Conversation`] that returns the bytes
//! to send and leaves the caller to commit its storage transaction.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod account;
pub mod backup;
pub mod conversation;
pub mod file;
pub mod home;
pub mod identity;
pub mod relay;

pub use openmls;
pub use openmls::prelude::OpenMlsProvider;

use openmls::prelude::Ciphersuite;

/// The one ciphersuite hush speaks (0x0001).
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// What was wrong with bytes a peer or the server sent: the reason a front end can
/// branch on (P505).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rejection {
    /// A signature or membership tag did not verify.
    Signature,
    /// The ciphertext did not decrypt.
    Decryption,
    /// The message belongs to another epoch than the group's.
    Epoch,
    /// The message's secret was used already: the same message came again.
    Duplicate,
    /// The bytes do not parse, or are not what this place expects.
    Malformed,
    /// A commit or proposal that MLS itself refuses (bad tree, bad proposal set).
    InvalidChange,
    /// A device credential not signed by the account key it names, or an account key
    /// that is not the one pinned for that user (P541, P543).
    Identity,
}

impl Rejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Signature => "signature",
            Rejection::Decryption => "decryption",
            Rejection::Epoch => "epoch",
            Rejection::Duplicate => "duplicate",
            Rejection::Malformed => "malformed",
            Rejection::InvalidChange => "invalid_change",
            Rejection::Identity => "identity",
        }
    }
}

/// Why a cryptographic operation failed. Peer-caused failures (bad ciphertext, bad key
/// package) are `Rejected` with a typed reason; local failures (storage, library bugs)
/// are not the peer's fault and are never reported as such.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// Bytes from a peer or the server that do not verify or decrypt.
    #[error("{detail}")]
    Rejected { reason: Rejection, detail: String },
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
    CryptoError::Rejected {
        reason: Rejection::Malformed,
        detail: format!("{what}: {e}"),
    }
}

impl CryptoError {
    /// Whether the peer (or the server relaying it) is at fault, rather than this
    /// device's storage or code.
    pub fn peer_fault(&self) -> Option<Rejection> {
        match self {
            CryptoError::Rejected { reason, .. } => Some(*reason),
            CryptoError::Replayed(_) => Some(Rejection::Duplicate),
            _ => None,
        }
    }
}

pub(crate) fn malformed(detail: impl Into<String>) -> CryptoError {
    CryptoError::Rejected {
        reason: Rejection::Malformed,
        detail: detail.into(),
    }
}

pub(crate) fn internal(what: &str, e: impl std::fmt::Debug) -> CryptoError {
    CryptoError::Internal(format!("{what}: {e:?}"))
}
