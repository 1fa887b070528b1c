//! Account identities the server cannot forge (P540–P546). Each account has an Ed25519
//! account key made on its first device; every device's MLS credential is a
//! [`DeviceCertificate`]: the device id, the account's public key, a creation time, and
//! the account key's signature over those and the device's MLS signature key. Clients
//! decide who a device belongs to from that signature and their pin of the account
//! key, never from the server's word.
//!
//! The account key travels to a user's new devices sealed under a key derived from the
//! OPAQUE export key ([`AccountKey::seal`]), which the server never learns.
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use hush_proto::ids::DeviceId;
use rand::RngCore;
use sha2::{Digest, Sha256, Sha512};
use zeroize::Zeroizing;

use crate::{CryptoError, Rejection};

/// Domain separation for the device certificate signature (P541).
const CERT_CONTEXT: &[u8] = b"hush device certificate v1\0";
/// HKDF info for the account key seal (P542, ADR 0003).
const SEAL_INFO: &[u8] = b"hush account key seal v1";
/// Associated data prefix of the seal.
const SEAL_AAD: &[u8] = b"hush sealed account key v1\0";
const CERT_VERSION: u8 = 1;
/// Encoded certificate: version, device id, account key, created_at, signature.
pub const CERTIFICATE_LEN: usize = 1 + 16 + 32 + 8 + 64;
const NONCE_LEN: usize = 12;

fn identity_err(detail: impl Into<String>) -> CryptoError {
    CryptoError::Rejected {
        reason: Rejection::Identity,
        detail: detail.into(),
    }
}

/// An account's public key: what contacts pin and safety numbers are made of.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountPublicKey([u8; 32]);

impl AccountPublicKey {
    pub fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        let b: [u8; 32] = bytes.try_into().map_err(|_| {
            identity_err(format!("an account key is 32 bytes, not {}", bytes.len()))
        })?;
        VerifyingKey::from_bytes(&b).map_err(|e| identity_err(format!("account key: {e}")))?;
        Ok(AccountPublicKey(b))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether `signature` is this account's over `msg` (for records other modules
    /// define, each with its own context prefix in `msg`).
    pub(crate) fn verifies(&self, msg: &[u8], signature: &[u8; 64]) -> bool {
        self.verifying()
            .is_ok_and(|k| k.verify(msg, &Signature::from_bytes(signature)).is_ok())
    }

    /// P547: whether `statement` is this account's signed revocation of `device`.
    pub fn revoked(&self, device: DeviceId, statement: &[u8]) -> bool {
        <[u8; 64]>::try_from(statement)
            .is_ok_and(|sig| self.verifies(&revocation_message(self, device), &sig))
    }

    fn verifying(&self) -> Result<VerifyingKey, CryptoError> {
        VerifyingKey::from_bytes(&self.0).map_err(|e| identity_err(format!("account key: {e}")))
    }
}

fn revocation_message(account: &AccountPublicKey, device: DeviceId) -> Vec<u8> {
    [
        &b"hush device revocation v1\0"[..],
        account.as_bytes(),
        device.as_bytes(),
    ]
    .concat()
}

impl std::fmt::Display for AccountPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for AccountPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccountPublicKey({self})")
    }
}

/// An account's secret key. Zeroized on drop; never in `Debug` output.
pub struct AccountKey {
    signing: SigningKey,
}

impl std::fmt::Debug for AccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccountKey({}, secret redacted)", self.public())
    }
}

impl AccountKey {
    pub fn generate() -> AccountKey {
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(seed.as_mut());
        AccountKey {
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// From the 32 secret bytes [`AccountKey::secret`] gave.
    pub fn from_secret(bytes: &[u8]) -> Result<AccountKey, CryptoError> {
        let b: Zeroizing<[u8; 32]> = Zeroizing::new(
            bytes
                .try_into()
                .map_err(|_| CryptoError::Storage("a stored account key is damaged".into()))?,
        );
        Ok(AccountKey {
            signing: SigningKey::from_bytes(&b),
        })
    }

    pub fn secret(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    pub fn public(&self) -> AccountPublicKey {
        AccountPublicKey(self.signing.verifying_key().to_bytes())
    }

    /// Signs `msg`, which must start with a context of its own record kind.
    pub(crate) fn sign_raw(&self, msg: &[u8]) -> [u8; 64] {
        self.signing.sign(msg).to_bytes()
    }

    /// P547: the statement that `device` no longer belongs to this account; every
    /// client that sees it never adds that device again, whatever a server lists.
    pub fn revoke(&self, device: DeviceId) -> Vec<u8> {
        self.sign_raw(&revocation_message(&self.public(), device))
            .to_vec()
    }

    /// Signs a device's certificate (P541).
    pub fn certify(
        &self,
        device: DeviceId,
        signature_key: &[u8],
        created_at: u64,
    ) -> DeviceCertificate {
        let account = self.public();
        let msg = cert_message(device, &account, created_at, signature_key);
        DeviceCertificate {
            device,
            account,
            created_at,
            signature: self.signing.sign(&msg).to_bytes(),
        }
    }

    /// Seals this key for the server under the OPAQUE export key (P542): only someone
    /// who knows the password can open it, and the server never can.
    pub fn seal(&self, export_key: &[u8], username: &str) -> Result<Vec<u8>, CryptoError> {
        let cipher = seal_cipher(export_key)?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let secret = self.secret();
        let aad = seal_aad(username, &self.public());
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret.as_ref(),
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::Internal("sealing the account key".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens a sealed account key and checks it is the account's published key.
    pub fn open(
        sealed: &[u8],
        export_key: &[u8],
        username: &str,
        public: &AccountPublicKey,
    ) -> Result<AccountKey, CryptoError> {
        if sealed.len() <= NONCE_LEN {
            return Err(identity_err("the sealed account key is too short"));
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let cipher = seal_cipher(export_key)?;
        let aad = seal_aad(username, public);
        let secret = Zeroizing::new(
            cipher
                .decrypt(
                    Nonce::from_slice(nonce),
                    Payload {
                        msg: body,
                        aad: &aad,
                    },
                )
                .map_err(|_| identity_err("the sealed account key does not open"))?,
        );
        let key = AccountKey::from_secret(&secret)?;
        if key.public() != *public {
            return Err(identity_err(
                "the sealed account key is not the account's published key",
            ));
        }
        Ok(key)
    }
}

fn seal_cipher(export_key: &[u8]) -> Result<ChaCha20Poly1305, CryptoError> {
    let hk = hkdf::Hkdf::<Sha256>::new(None, export_key);
    let mut key = Zeroizing::new([0u8; 32]);
    hk.expand(SEAL_INFO, key.as_mut())
        .map_err(|_| CryptoError::Internal("deriving the seal key".into()))?;
    Ok(ChaCha20Poly1305::new(Key::from_slice(key.as_ref())))
}

fn seal_aad(username: &str, public: &AccountPublicKey) -> Vec<u8> {
    let mut aad = SEAL_AAD.to_vec();
    aad.extend_from_slice(public.as_bytes());
    aad.extend_from_slice(username.as_bytes());
    aad
}

fn cert_message(
    device: DeviceId,
    account: &AccountPublicKey,
    created_at: u64,
    signature_key: &[u8],
) -> Vec<u8> {
    let mut msg = CERT_CONTEXT.to_vec();
    msg.extend_from_slice(device.as_bytes());
    msg.extend_from_slice(account.as_bytes());
    msg.extend_from_slice(&created_at.to_be_bytes());
    msg.extend_from_slice(&(signature_key.len() as u16).to_be_bytes());
    msg.extend_from_slice(signature_key);
    msg
}

/// A device's credential (P541): which account vouches for it.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceCertificate {
    pub device: DeviceId,
    pub account: AccountPublicKey,
    /// Unix seconds.
    pub created_at: u64,
    signature: [u8; 64],
}

impl std::fmt::Debug for DeviceCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCertificate")
            .field("device", &self.device)
            .field("account", &self.account)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

impl DeviceCertificate {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CERTIFICATE_LEN);
        out.push(CERT_VERSION);
        out.extend_from_slice(self.device.as_bytes());
        out.extend_from_slice(self.account.as_bytes());
        out.extend_from_slice(&self.created_at.to_be_bytes());
        out.extend_from_slice(&self.signature);
        out
    }

    /// Parses a certificate (not yet verified).
    pub fn decode(bytes: &[u8]) -> Result<DeviceCertificate, CryptoError> {
        if bytes.len() != CERTIFICATE_LEN || bytes[0] != CERT_VERSION {
            return Err(identity_err(
                "the credential is not a hush device certificate (an account made before \
                 account keys, or a forgery)",
            ));
        }
        let device =
            DeviceId::from_slice(&bytes[1..17]).map_err(|e| identity_err(e.to_string()))?;
        let account = AccountPublicKey::from_slice(&bytes[17..49])?;
        let mut at = [0u8; 8];
        at.copy_from_slice(&bytes[49..57]);
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&bytes[57..121]);
        Ok(DeviceCertificate {
            device,
            account,
            created_at: u64::from_be_bytes(at),
            signature,
        })
    }

    /// Checks the account key signed this device and its MLS signature key.
    pub fn verify(&self, signature_key: &[u8]) -> Result<(), CryptoError> {
        let msg = cert_message(self.device, &self.account, self.created_at, signature_key);
        self.account
            .verifying()?
            .verify(&msg, &Signature::from_bytes(&self.signature))
            .map_err(|_| {
                identity_err(format!(
                    "device {} is not signed by the account key it names",
                    self.device
                ))
            })
    }
}

/// The safety number of two accounts (P545): 60 digits in 12 groups of 5, the same on
/// both sides. Each side contributes 30 digits from 5,200 rounds of SHA-512 over a
/// version, its account key and its username (as Signal does); the lower half comes
/// first, so the order of the arguments does not matter.
pub fn safety_number(
    a_user: &str,
    a_key: &AccountPublicKey,
    b_user: &str,
    b_key: &AccountPublicKey,
) -> String {
    let mut halves = [half(a_user, a_key), half(b_user, b_key)];
    halves.sort();
    let digits = halves.concat();
    digits
        .as_bytes()
        .chunks(5)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn half(user: &str, key: &AccountPublicKey) -> String {
    let mut hash = Sha512::new()
        .chain_update([0u8, 0])
        .chain_update(key.as_bytes())
        .chain_update(user.as_bytes())
        .finalize();
    for _ in 0..5200 {
        hash = Sha512::new()
            .chain_update(hash)
            .chain_update(key.as_bytes())
            .finalize();
    }
    hash[..30]
        .chunks(5)
        .map(|c| {
            let n = c.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            format!("{:05}", n % 100_000)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p547_a_revocation_names_one_device_of_one_account() {
        let acct = AccountKey::generate();
        let (d, e) = (DeviceId::from_bytes([1; 16]), DeviceId::from_bytes([2; 16]));
        let statement = acct.revoke(d);
        assert!(acct.public().revoked(d, &statement));
        assert!(!acct.public().revoked(e, &statement), "another device");
        assert!(
            !AccountKey::generate().public().revoked(d, &statement),
            "another account"
        );
        assert!(!acct.public().revoked(d, &statement[..63]));
        assert!(!acct.public().revoked(d, &[0u8; 64]));
    }

    #[test]
    fn p541_certificates_verify_only_with_their_signature_key() {
        let acct = AccountKey::generate();
        let d = DeviceId::from_bytes([7; 16]);
        let cert = acct.certify(d, b"sigkey", 42);
        let back = DeviceCertificate::decode(&cert.encode()).unwrap();
        assert_eq!(back, cert);
        back.verify(b"sigkey").unwrap();
        assert!(
            back.verify(b"other key").is_err(),
            "bound to the device key"
        );
        // Another account cannot vouch in this account's name.
        let other = AccountKey::generate();
        let mut forged = other.certify(d, b"sigkey", 42).encode();
        forged[17..49].copy_from_slice(acct.public().as_bytes());
        assert!(
            DeviceCertificate::decode(&forged)
                .unwrap()
                .verify(b"sigkey")
                .is_err()
        );
        assert!(
            DeviceCertificate::decode(&[0u8; 16]).is_err(),
            "old credentials"
        );
    }

    #[test]
    fn p542_the_seal_opens_only_with_the_same_export_key_and_account() {
        let acct = AccountKey::generate();
        let sealed = acct.seal(b"export key one", "ann").unwrap();
        let opened = AccountKey::open(&sealed, b"export key one", "ann", &acct.public()).unwrap();
        assert_eq!(opened.public(), acct.public());
        assert!(AccountKey::open(&sealed, b"export key two", "ann", &acct.public()).is_err());
        assert!(AccountKey::open(&sealed, b"export key one", "bob", &acct.public()).is_err());
        let other = AccountKey::generate().public();
        assert!(AccountKey::open(&sealed, b"export key one", "ann", &other).is_err());
        let mut flipped = sealed.clone();
        flipped[20] ^= 1;
        assert!(AccountKey::open(&flipped, b"export key one", "ann", &acct.public()).is_err());
        assert!(!format!("{acct:?}").contains(&format!("{:?}", acct.secret().as_ref())));
    }

    #[test]
    fn p545_safety_numbers_match_on_both_sides_and_change_with_a_key() {
        let (a, b) = (
            AccountKey::generate().public(),
            AccountKey::generate().public(),
        );
        let n = safety_number("ann", &a, "ben", &b);
        assert_eq!(n, safety_number("ben", &b, "ann", &a));
        let groups: Vec<&str> = n.split(' ').collect();
        assert_eq!(groups.len(), 12);
        assert!(
            groups
                .iter()
                .all(|g| g.len() == 5 && g.bytes().all(|c| c.is_ascii_digit()))
        );
        let c = AccountKey::generate().public();
        assert_ne!(n, safety_number("ann", &a, "ben", &c));
    }
}
