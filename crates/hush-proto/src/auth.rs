//! The OPAQUE (RFC 9807) configuration shared by client and server.
//!
//! Ristretto255 for the OPRF and the key exchange, SHA-512, and Argon2id as the key
//! stretching function on the client. Changing any of these invalidates every stored
//! password file, so it is a protocol version change.
use opaque_ke::{CipherSuite, Ristretto255, TripleDh};

/// hush's OPAQUE cipher suite.
pub struct OpaqueSuite;

impl CipherSuite for OpaqueSuite {
    type OprfCs = Ristretto255;
    type KeyExchange = TripleDh<Ristretto255, sha2::Sha512>;
    /// Argon2id with the crate's defaults (19 MiB, 2 passes): the cost an operator pays
    /// per offline guess against a stolen password file.
    type Ksf = argon2::Argon2<'static>;
}

pub use opaque_ke;
