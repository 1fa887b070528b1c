//! The key a client home is encrypted under at rest (issue 14, ADR 0006), sans-IO: a
//! random 256-bit [`HomeKey`] (SQLCipher's raw key), kept on disk only sealed under a
//! passphrase: Argon2id (64 MiB, 3 passes) over the passphrase and a random salt gives
//! the key of a ChaCha20-Poly1305 seal. The cost parameters travel with the sealed
//! key, so they can be raised later without breaking old homes; a wrong passphrase
//! fails the seal's tag, which is how it is told apart from a damaged file.
use std::fmt;

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use zeroize::Zeroizing;

const MAGIC: &[u8; 8] = b"hushkey1";
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const SEALED_LEN: usize = 8 + 12 + SALT_LEN + NONCE_LEN + 32 + 16;
/// Argon2id cost: 64 MiB of memory, 3 passes, one lane (OWASP's second option).
const M_COST_KIB: u32 = 64 * 1024;
const T_COST: u32 = 3;
const LANES: u32 = 1;
/// The most a sealed key may ask for, so a planted file cannot make opening a home
/// take gigabytes or minutes.
const MAX_M_COST_KIB: u32 = 1024 * 1024;
const MAX_T_COST: u32 = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HomeKeyError {
    #[error("wrong passphrase")]
    WrongPassphrase,
    #[error("the home's key file is damaged ({0})")]
    Malformed(&'static str),
}

/// The raw key of an encrypted home's database.
#[derive(Clone)]
pub struct HomeKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for HomeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HomeKey(redacted)")
    }
}

impl HomeKey {
    pub fn generate() -> HomeKey {
        let mut k = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(k.as_mut());
        HomeKey(k)
    }

    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key sealed under `passphrase`, for the home's key file.
    pub fn seal(&self, passphrase: &[u8]) -> Result<Vec<u8>, HomeKeyError> {
        let mut salt = [0u8; SALT_LEN];
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let header = header(M_COST_KIB, T_COST, LANES, &salt);
        let kek = stretch(passphrase, &salt, M_COST_KIB, T_COST, LANES)?;
        let sealed = ChaCha20Poly1305::new(Key::from_slice(kek.as_ref()))
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: self.expose(),
                    aad: &header,
                },
            )
            .map_err(|_| HomeKeyError::Malformed("sealing"))?;
        Ok([header.as_slice(), &nonce, &sealed].concat())
    }

    /// Opens what [`HomeKey::seal`] wrote.
    pub fn open(sealed: &[u8], passphrase: &[u8]) -> Result<HomeKey, HomeKeyError> {
        if sealed.len() != SEALED_LEN || !sealed.starts_with(MAGIC) {
            return Err(HomeKeyError::Malformed("not a hush key file"));
        }
        let word = |at: usize| {
            sealed
                .get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes)
                .ok_or(HomeKeyError::Malformed("short"))
        };
        let (m, t, p) = (word(8)?, word(12)?, word(16)?);
        if m > MAX_M_COST_KIB || t > MAX_T_COST || p == 0 || p > 16 {
            return Err(HomeKeyError::Malformed("unreasonable cost parameters"));
        }
        let header_len = 8 + 12 + SALT_LEN;
        let (header, rest) = sealed.split_at(header_len);
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let kek = stretch(passphrase, &header[20..], m, t, p)?;
        let plain = Zeroizing::new(
            ChaCha20Poly1305::new(Key::from_slice(kek.as_ref()))
                .decrypt(
                    Nonce::from_slice(nonce),
                    Payload {
                        msg: body,
                        aad: header,
                    },
                )
                .map_err(|_| HomeKeyError::WrongPassphrase)?,
        );
        let key: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| HomeKeyError::Malformed("key length"))?;
        Ok(HomeKey(Zeroizing::new(key)))
    }
}

fn header(m: u32, t: u32, p: u32, salt: &[u8; SALT_LEN]) -> Vec<u8> {
    [
        MAGIC.as_slice(),
        &m.to_be_bytes(),
        &t.to_be_bytes(),
        &p.to_be_bytes(),
        salt,
    ]
    .concat()
}

fn stretch(
    passphrase: &[u8],
    salt: &[u8],
    m: u32,
    t: u32,
    p: u32,
) -> Result<Zeroizing<[u8; 32]>, HomeKeyError> {
    let params =
        Params::new(m, t, p, Some(32)).map_err(|_| HomeKeyError::Malformed("cost parameters"))?;
    let mut out = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase, salt, out.as_mut())
        .map_err(|_| HomeKeyError::Malformed("salt"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_key_opens_with_its_passphrase_only() {
        let key = HomeKey::generate();
        let sealed = key.seal(b"correct horse").unwrap();
        assert_eq!(sealed.len(), SEALED_LEN);
        let back = HomeKey::open(&sealed, b"correct horse").unwrap();
        assert_eq!(back.expose(), key.expose());
        assert_eq!(
            HomeKey::open(&sealed, b"correct horsE").unwrap_err(),
            HomeKeyError::WrongPassphrase
        );
        assert!(
            !sealed.windows(32).any(|w| w == key.expose()),
            "never in the clear"
        );
        assert_eq!(format!("{key:?}"), "HomeKey(redacted)");
    }

    #[test]
    fn a_damaged_or_hostile_key_file_is_refused_without_work() {
        let sealed = HomeKey::generate().seal(b"pw").unwrap();
        let mut short = sealed.clone();
        short.pop();
        assert!(matches!(
            HomeKey::open(&short, b"pw"),
            Err(HomeKeyError::Malformed(_))
        ));
        let mut greedy = sealed.clone();
        greedy[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            HomeKey::open(&greedy, b"pw"),
            Err(HomeKeyError::Malformed(_))
        ));
        let mut flipped = sealed;
        flipped[SEALED_LEN - 1] ^= 1;
        assert_eq!(
            HomeKey::open(&flipped, b"pw").unwrap_err(),
            HomeKeyError::WrongPassphrase,
            "a flipped tag looks like a wrong passphrase: both fail the seal"
        );
    }
}
