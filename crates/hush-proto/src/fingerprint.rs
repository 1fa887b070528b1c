//! Server key fingerprints: `SHA256:` and the unpadded standard base64 of the SHA-256
//! of the server certificate's SubjectPublicKeyInfo (P401), as SSH prints host keys.
//! Pinning the public key rather than the certificate lets an operator renew the
//! certificate without breaking every client's pin.
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use sha2::{Digest, Sha256};

use crate::ProtoError;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded SubjectPublicKeyInfo.
    pub fn of_spki(spki_der: &[u8]) -> Self {
        Fingerprint(Sha256::digest(spki_der).into())
    }

    /// Parses `SHA256:<base64>`; padding is accepted and ignored.
    pub fn parse(s: &str) -> Result<Self, ProtoError> {
        let bad = || {
            ProtoError::invalid(
                "fingerprint",
                "must look like SHA256:<43 base64 characters>",
            )
        };
        let b64 = s.trim().strip_prefix("SHA256:").ok_or_else(bad)?;
        let bytes = STANDARD_NO_PAD
            .decode(b64.trim_end_matches('='))
            .map_err(|_| bad())?;
        <[u8; 32]>::try_from(bytes.as_slice())
            .map(Fingerprint)
            .map_err(|_| bad())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SHA256:{}", STANDARD_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p401_round_trips_and_rejects_junk() {
        let fp = Fingerprint::of_spki(b"some key");
        let text = fp.to_string();
        assert!(
            text.starts_with("SHA256:") && text.len() == 7 + 43,
            "{text}"
        );
        assert_eq!(Fingerprint::parse(&text).unwrap(), fp);
        assert_eq!(Fingerprint::parse(&format!("{text}=")).unwrap(), fp);
        for bad in ["", "SHA256:", "MD5:abc", "SHA256:!!!!", "SHA256:AAAA"] {
            assert!(Fingerprint::parse(bad).is_err(), "{bad}");
        }
    }
}
