//! Encrypted backups of a home's history (issue 14), sans-IO: the keys, how they are
//! wrapped, the numbered chunks and the signed head that make a restore detect a
//! missing, reordered, replayed, foreign or rolled-back chunk. What goes into a chunk
//! (history, conversation list; never MLS epoch secrets, see ADR 0005) and where it is
//! stored is the client's business.
//!
//! - [`BackupKey`]: random, 32 bytes; every chunk is sealed under it with
//!   ChaCha20-Poly1305, a random nonce, and associated data binding the account and
//!   the chunk's number.
//! - It is kept on the server only wrapped ([`wrap`]): under a key derived (HKDF) from
//!   the OPAQUE export key (so the password opens it) and under a [`RecoveryKey`]
//!   printed once for the user (Crockford base32 with a checksum).
//! - [`Head`]: the number of chunks and a hash chain over them, signed by the account
//!   key; a [`Restore`] checks each chunk against it, and the client's remembered count
//!   catches a server that serves an older, validly signed head.
use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::account::{AccountKey, AccountPublicKey};

const NONCE_LEN: usize = 12;
const CHUNK_AAD: &[u8] = b"hush backup chunk v1\0";
const WRAP_INFO: &[u8] = b"hush backup wrap v1\0";
const HEAD_CONTEXT: &[u8] = b"hush backup head v1\0";
const CHAIN_LABEL: &[u8] = b"hush backup chain v1\0";
const RECOVERY_CHECK: &[u8] = b"hush recovery key v1\0";
/// Crockford's base32: no I, L, O or U, so a key read aloud or retyped survives.
const BASE32: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// What a backup or a restore found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    #[error("chunk {index} is missing (the next one came instead)")]
    Missing { index: u64 },
    #[error("chunk {index} came again or out of order")]
    Replayed { index: u64 },
    #[error(
        "chunk {index} does not open with this backup's key: it is damaged or from another backup"
    )]
    Foreign { index: u64 },
    #[error("the backup ends after {got} of {want} chunks")]
    Truncated { got: u64, want: u64 },
    #[error("the chunks are not the ones the signed head names")]
    Tampered,
    #[error("the backup's head is not signed by this account's key")]
    BadSignature,
    #[error(
        "the server offers an older backup ({got} chunks) than this device last saw ({want}): it was rolled back"
    )]
    RolledBack { got: u64, want: u64 },
    #[error("the wrapped backup key does not open with this secret")]
    WrongSecret,
    #[error("malformed {0}")]
    Malformed(&'static str),
    #[error("a recovery key has {want} characters (not counting dashes and spaces), not {got}")]
    RecoveryLength { got: usize, want: usize },
    #[error("{0:?} is not a character of a recovery key")]
    RecoveryCharacter(char),
    #[error("the recovery key has a typo: its checksum does not match")]
    RecoveryChecksum,
}

macro_rules! secret_key {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name(Zeroizing<[u8; 32]>);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(redacted)"))
            }
        }

        impl $name {
            pub fn generate() -> Self {
                let mut k = Zeroizing::new([0u8; 32]);
                rand::rngs::OsRng.fill_bytes(k.as_mut());
                $name(k)
            }

            pub fn from_slice(bytes: &[u8]) -> Result<Self, BackupError> {
                let k: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| BackupError::Malformed(stringify!($name)))?;
                Ok($name(Zeroizing::new(k)))
            }

            pub fn expose(&self) -> &[u8; 32] {
                &self.0
            }
        }
    };
}

secret_key!(
    /// The key every chunk of one account's backup is sealed under.
    BackupKey
);
secret_key!(
    /// The user's second way to the backup key, shown once: [`RecoveryKey::display`].
    RecoveryKey
);

fn recovery_checksum(key: &[u8; 32]) -> [u8; 2] {
    let d = Sha256::new()
        .chain_update(RECOVERY_CHECK)
        .chain_update(key)
        .finalize();
    [d[0], d[1]]
}

/// Characters of a displayed recovery key, without dashes: 34 bytes in base32.
const RECOVERY_CHARS: usize = (34usize * 8).div_ceil(5);

impl RecoveryKey {
    /// `XXXXX-XXXXX-...`: the key and a 16-bit checksum in Crockford base32, in groups
    /// of five.
    pub fn display(&self) -> String {
        let mut bytes = self.0.to_vec();
        bytes.extend_from_slice(&recovery_checksum(&self.0));
        let mut chars = Vec::with_capacity(RECOVERY_CHARS);
        let (mut acc, mut bits) = (0u32, 0u32);
        for b in bytes {
            acc = (acc << 8) | u32::from(b);
            bits += 8;
            while bits >= 5 {
                bits -= 5;
                chars.push(BASE32[((acc >> bits) & 31) as usize] as char);
            }
        }
        if bits > 0 {
            chars.push(BASE32[((acc << (5 - bits)) & 31) as usize] as char);
        }
        chars
            .chunks(5)
            .map(|g| g.iter().collect::<String>())
            .collect::<Vec<_>>()
            .join("-")
    }

    /// Reads what [`RecoveryKey::display`] printed, forgiving case, dashes, spaces and
    /// the look-alikes O (0) and I, L (1); a typo fails the checksum.
    pub fn parse(s: &str) -> Result<RecoveryKey, BackupError> {
        let mut values = Vec::with_capacity(RECOVERY_CHARS);
        for c in s.chars().filter(|c| !c.is_whitespace() && *c != '-') {
            let c = match c.to_ascii_uppercase() {
                'O' => '0',
                'I' | 'L' => '1',
                c => c,
            };
            let v = BASE32
                .iter()
                .position(|b| *b as char == c)
                .ok_or(BackupError::RecoveryCharacter(c))?;
            values.push(v as u32);
        }
        if values.len() != RECOVERY_CHARS {
            return Err(BackupError::RecoveryLength {
                got: values.len(),
                want: RECOVERY_CHARS,
            });
        }
        let mut bytes = Vec::with_capacity(34);
        let (mut acc, mut bits) = (0u32, 0u32);
        for v in values {
            acc = (acc << 5) | v;
            bits += 5;
            if bits >= 8 {
                bits -= 8;
                bytes.push((acc >> bits) as u8);
            }
        }
        let (key, check) = bytes.split_at(32);
        let key: [u8; 32] = key
            .try_into()
            .map_err(|_| BackupError::Malformed("recovery key"))?;
        if check != recovery_checksum(&key) {
            return Err(BackupError::RecoveryChecksum);
        }
        Ok(RecoveryKey(Zeroizing::new(key)))
    }
}

/// Which secret a wrapped backup key opens with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrap {
    /// The OPAQUE export key of a login (the password route).
    Password,
    Recovery,
}

impl Wrap {
    fn label(self) -> &'static [u8] {
        match self {
            Wrap::Password => b"password",
            Wrap::Recovery => b"recovery",
        }
    }
}

fn wrap_cipher(secret: &[u8], how: Wrap) -> Result<ChaCha20Poly1305, BackupError> {
    let hk = hkdf::Hkdf::<Sha256>::new(None, secret);
    let mut key = Zeroizing::new([0u8; 32]);
    let info = [WRAP_INFO, how.label()].concat();
    hk.expand(&info, key.as_mut())
        .map_err(|_| BackupError::Malformed("wrapping secret"))?;
    Ok(ChaCha20Poly1305::new(Key::from_slice(key.as_ref())))
}

fn wrap_aad(account: &AccountPublicKey, how: Wrap) -> Vec<u8> {
    [WRAP_INFO, how.label(), account.as_bytes()].concat()
}

/// Seals the backup key under `secret` (the export key, or the recovery key's bytes),
/// bound to the account, for the server to keep.
pub fn wrap(
    key: &BackupKey,
    secret: &[u8],
    how: Wrap,
    account: &AccountPublicKey,
) -> Result<Vec<u8>, BackupError> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let sealed = wrap_cipher(secret, how)?
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: key.expose(),
                aad: &wrap_aad(account, how),
            },
        )
        .map_err(|_| BackupError::Malformed("backup key"))?;
    Ok([nonce.as_slice(), &sealed].concat())
}

/// Opens what [`wrap`] sealed.
pub fn unwrap(
    wrapped: &[u8],
    secret: &[u8],
    how: Wrap,
    account: &AccountPublicKey,
) -> Result<BackupKey, BackupError> {
    if wrapped.len() <= NONCE_LEN {
        return Err(BackupError::Malformed("wrapped backup key"));
    }
    let (nonce, body) = wrapped.split_at(NONCE_LEN);
    let plain = Zeroizing::new(
        wrap_cipher(secret, how)?
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: &wrap_aad(account, how),
                },
            )
            .map_err(|_| BackupError::WrongSecret)?,
    );
    BackupKey::from_slice(&plain)
}

fn chunk_aad(account: &AccountPublicKey, index: u64) -> Vec<u8> {
    [CHUNK_AAD, account.as_bytes(), &index.to_be_bytes()].concat()
}

/// Seals chunk `index` (numbered from 0) of the account's backup.
pub fn seal_chunk(
    key: &BackupKey,
    account: &AccountPublicKey,
    index: u64,
    plaintext: &[u8],
) -> Result<Vec<u8>, BackupError> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let sealed = ChaCha20Poly1305::new(Key::from_slice(key.expose()))
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &chunk_aad(account, index),
            },
        )
        .map_err(|_| BackupError::Malformed("chunk"))?;
    Ok([nonce.as_slice(), &sealed].concat())
}

fn open_chunk(
    key: &BackupKey,
    account: &AccountPublicKey,
    index: u64,
    sealed: &[u8],
) -> Result<Vec<u8>, BackupError> {
    if sealed.len() <= NONCE_LEN {
        return Err(BackupError::Foreign { index });
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    ChaCha20Poly1305::new(Key::from_slice(key.expose()))
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: body,
                aad: &chunk_aad(account, index),
            },
        )
        .map_err(|_| BackupError::Foreign { index })
}

const GROUP_INFO_INFO: &[u8] = b"hush group info seal v1\0";

/// P535: the key sealing GroupInfos for the account's own devices, apart from the
/// chunks' (HKDF of the backup key).
fn group_info_cipher(key: &BackupKey) -> Result<ChaCha20Poly1305, BackupError> {
    let hk = hkdf::Hkdf::<Sha256>::new(None, key.expose());
    let mut derived = Zeroizing::new([0u8; 32]);
    hk.expand(GROUP_INFO_INFO, derived.as_mut())
        .map_err(|_| BackupError::Malformed("group info key"))?;
    Ok(ChaCha20Poly1305::new(Key::from_slice(derived.as_ref())))
}

fn group_info_aad(account: &AccountPublicKey, group: &[u8], epoch: u64) -> Vec<u8> {
    [
        GROUP_INFO_INFO,
        account.as_bytes(),
        group,
        &epoch.to_be_bytes(),
    ]
    .concat()
}

/// P535: seals a group's GroupInfo of `epoch` for the account's devices (which hold
/// the backup key), bound to the account, the group and the epoch, so the server can
/// neither read it nor pass it off as another group's or epoch's.
pub fn seal_group_info(
    key: &BackupKey,
    account: &AccountPublicKey,
    group: &[u8],
    epoch: u64,
    info: &[u8],
) -> Result<Vec<u8>, BackupError> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let sealed = group_info_cipher(key)?
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: info,
                aad: &group_info_aad(account, group, epoch),
            },
        )
        .map_err(|_| BackupError::Malformed("group info"))?;
    Ok([nonce.as_slice(), &sealed].concat())
}

/// Opens what [`seal_group_info`] sealed for this group and epoch.
pub fn open_group_info(
    key: &BackupKey,
    account: &AccountPublicKey,
    group: &[u8],
    epoch: u64,
    sealed: &[u8],
) -> Result<Vec<u8>, BackupError> {
    if sealed.len() <= NONCE_LEN {
        return Err(BackupError::Malformed("sealed group info"));
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    group_info_cipher(key)?
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: body,
                aad: &group_info_aad(account, group, epoch),
            },
        )
        .map_err(|_| BackupError::WrongSecret)
}

/// The hash chain over sealed chunks, in order: what a head commits to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chain {
    pub count: u64,
    pub digest: [u8; 32],
}

impl Default for Chain {
    fn default() -> Self {
        Chain {
            count: 0,
            digest: Sha256::digest(CHAIN_LABEL).into(),
        }
    }
}

impl Chain {
    /// The chain after the next sealed chunk.
    pub fn then(self, sealed: &[u8]) -> Chain {
        Chain {
            count: self.count + 1,
            digest: Sha256::new()
                .chain_update(self.digest)
                .chain_update(self.count.to_be_bytes())
                .chain_update(sealed)
                .finalize()
                .into(),
        }
    }
}

/// The signed statement of what the backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub chain: Chain,
    /// When it was written (the client's clock, Unix ms): shown by `backup status`.
    pub written_ms: i64,
}

impl Head {
    fn message(&self, account: &AccountPublicKey) -> Vec<u8> {
        [
            HEAD_CONTEXT,
            account.as_bytes(),
            &self.chain.count.to_be_bytes(),
            &self.chain.digest,
            &self.written_ms.to_be_bytes(),
        ]
        .concat()
    }

    /// The head and the account key's signature, for the server to keep.
    pub fn sign(&self, key: &AccountKey) -> Vec<u8> {
        let sig = key.sign_raw(&self.message(&key.public()));
        [
            &self.chain.count.to_be_bytes()[..],
            &self.chain.digest,
            &self.written_ms.to_be_bytes(),
            &sig,
        ]
        .concat()
    }

    /// Reads a signed head, checking the signature is `account`'s.
    pub fn verify(signed: &[u8], account: &AccountPublicKey) -> Result<Head, BackupError> {
        if signed.len() != 8 + 32 + 8 + 64 {
            return Err(BackupError::Malformed("backup head"));
        }
        let (count, rest) = signed.split_at(8);
        let (digest, rest) = rest.split_at(32);
        let (written, sig) = rest.split_at(8);
        let bad = || BackupError::Malformed("backup head");
        let head = Head {
            chain: Chain {
                count: u64::from_be_bytes(count.try_into().map_err(|_| bad())?),
                digest: digest.try_into().map_err(|_| bad())?,
            },
            written_ms: i64::from_be_bytes(written.try_into().map_err(|_| bad())?),
        };
        let sig: [u8; 64] = sig.try_into().map_err(|_| bad())?;
        if !account.verifies(&head.message(account), &sig) {
            return Err(BackupError::BadSignature);
        }
        Ok(head)
    }
}

/// P571: what the account key signs to replace the wrapped backup keys, so that a
/// session token alone cannot (the server checks it against the published key).
fn keys_message(account: &AccountPublicKey, password: &[u8], recovery: &[u8]) -> Vec<u8> {
    [
        &b"hush backup keys v1"[..],
        account.as_bytes(),
        &Sha256::digest(password),
        &Sha256::digest(recovery),
    ]
    .concat()
}

/// Signs the wrapped keys sent in one `BackupKeys` (an absent one as empty).
pub fn sign_keys(key: &AccountKey, password: &[u8], recovery: &[u8]) -> Vec<u8> {
    key.sign_raw(&keys_message(&key.public(), password, recovery))
        .to_vec()
}

/// The server's check of [`sign_keys`].
pub fn verify_keys(
    account: &AccountPublicKey,
    password: &[u8],
    recovery: &[u8],
    signature: &[u8],
) -> bool {
    <[u8; 64]>::try_from(signature)
        .is_ok_and(|sig| account.verifies(&keys_message(account, password, recovery), &sig))
}

/// P572: the server's check of an appended chunk: `signed` must be a head the
/// account key signed naming exactly the chain of the stored chunks (`previous`, the
/// head it holds, none before the first) followed by `sealed`.
pub fn verify_append(
    account: &AccountPublicKey,
    previous: Option<&[u8]>,
    sealed: &[u8],
    signed: &[u8],
) -> Result<Head, BackupError> {
    let base = match previous {
        None | Some([]) => Chain::default(),
        Some(p) => Head::verify(p, account)?.chain,
    };
    let head = Head::verify(signed, account)?;
    if head.chain != base.then(sealed) {
        return Err(BackupError::Tampered);
    }
    Ok(head)
}

/// Checks a backup chunk by chunk against its signed head while opening it.
pub struct Restore {
    key: BackupKey,
    account: AccountPublicKey,
    head: Head,
    chain: Chain,
}

impl Restore {
    /// `last_seen`: the chunk count this device last wrote or restored, if it
    /// remembers one; a head with fewer chunks is a rollback.
    pub fn new(
        key: BackupKey,
        account: AccountPublicKey,
        head: Head,
        last_seen: Option<u64>,
    ) -> Result<Restore, BackupError> {
        if let Some(want) = last_seen
            && head.chain.count < want
        {
            return Err(BackupError::RolledBack {
                got: head.chain.count,
                want,
            });
        }
        Ok(Restore {
            key,
            account,
            head,
            chain: Chain::default(),
        })
    }

    /// Opens the chunk the server says is number `index`; it must be the next one.
    pub fn next(&mut self, index: u64, sealed: &[u8]) -> Result<Vec<u8>, BackupError> {
        let want = self.chain.count;
        if index > want {
            return Err(BackupError::Missing { index: want });
        }
        if index < want {
            return Err(BackupError::Replayed { index });
        }
        if want >= self.head.chain.count {
            return Err(BackupError::Tampered);
        }
        let plain = open_chunk(&self.key, &self.account, index, sealed)?;
        self.chain = self.chain.then(sealed);
        Ok(plain)
    }

    /// Checks that every chunk the head names arrived, and that they are its chunks.
    pub fn finish(self) -> Result<Head, BackupError> {
        if self.chain.count < self.head.chain.count {
            return Err(BackupError::Truncated {
                got: self.chain.count,
                want: self.head.chain.count,
            });
        }
        if self.chain != self.head.chain {
            return Err(BackupError::Tampered);
        }
        Ok(self.head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Made {
        account: AccountKey,
        key: BackupKey,
        chunks: Vec<Vec<u8>>,
        head: Vec<u8>,
    }

    fn backup(n: u64) -> Made {
        let account = AccountKey::generate();
        let key = BackupKey::generate();
        let mut chain = Chain::default();
        let mut chunks = Vec::new();
        for i in 0..n {
            let sealed =
                seal_chunk(&key, &account.public(), i, format!("chunk {i}").as_bytes()).unwrap();
            chain = chain.then(&sealed);
            chunks.push(sealed);
        }
        let head = Head {
            chain,
            written_ms: 1_700_000_000_000,
        }
        .sign(&account);
        Made {
            account,
            key,
            chunks,
            head,
        }
    }

    fn restore(
        m: &Made,
        order: &[(u64, usize)],
        last_seen: Option<u64>,
    ) -> Result<Vec<String>, BackupError> {
        let head = Head::verify(&m.head, &m.account.public())?;
        let mut r = Restore::new(m.key.clone(), m.account.public(), head, last_seen)?;
        let mut out = Vec::new();
        for (index, chunk) in order {
            let plain = r.next(*index, &m.chunks[*chunk])?;
            out.push(String::from_utf8(plain).unwrap());
        }
        r.finish()?;
        Ok(out)
    }

    #[test]
    fn a_backup_restores_in_order_and_says_what_is_wrong_otherwise() {
        let m = backup(3);
        assert_eq!(
            restore(&m, &[(0, 0), (1, 1), (2, 2)], Some(3)).unwrap(),
            ["chunk 0", "chunk 1", "chunk 2"]
        );
        assert_eq!(
            restore(&m, &[(0, 0), (2, 2)], None),
            Err(BackupError::Missing { index: 1 })
        );
        assert_eq!(
            restore(&m, &[(0, 0), (0, 0)], None),
            Err(BackupError::Replayed { index: 0 })
        );
        // The server relabels chunk 2 as chunk 1: its number is bound to it.
        assert_eq!(
            restore(&m, &[(0, 0), (1, 2)], None),
            Err(BackupError::Foreign { index: 1 })
        );
        assert_eq!(
            restore(&m, &[(0, 0), (1, 1)], None),
            Err(BackupError::Truncated { got: 2, want: 3 })
        );
        // A chunk of another account's backup.
        let other = backup(3);
        let mut mixed = backup(0);
        mixed.account = AccountKey::from_secret(m.account.secret().as_ref()).unwrap();
        mixed.key = m.key.clone();
        mixed.head = m.head.clone();
        mixed.chunks = vec![
            m.chunks[0].clone(),
            other.chunks[1].clone(),
            m.chunks[2].clone(),
        ];
        assert_eq!(
            restore(&mixed, &[(0, 0), (1, 1), (2, 2)], None),
            Err(BackupError::Foreign { index: 1 })
        );
    }

    #[test]
    fn rolled_back_and_forged_heads_are_detected() {
        let m = backup(2);
        assert_eq!(
            restore(&m, &[(0, 0), (1, 1)], Some(5)),
            Err(BackupError::RolledBack { got: 2, want: 5 })
        );
        let mut forged = m.head.clone();
        forged[7] ^= 1;
        assert_eq!(
            Head::verify(&forged, &m.account.public()),
            Err(BackupError::BadSignature)
        );
        let stranger = AccountKey::generate();
        assert_eq!(
            Head::verify(&m.head, &stranger.public()),
            Err(BackupError::BadSignature)
        );
        // A head the server signed itself cannot be made: one over other chunks
        // signed by the account still fails the chain.
        let mut swapped = backup(2);
        swapped.chunks = m.chunks.clone();
        swapped.key = m.key.clone();
        assert!(restore(&swapped, &[(0, 0), (1, 1)], None).is_err());
    }

    #[test]
    fn recovery_keys_survive_retyping_and_catch_typos() {
        let k = RecoveryKey::generate();
        let shown = k.display();
        assert_eq!(shown.replace('-', "").len(), RECOVERY_CHARS);
        assert!(shown.split('-').all(|g| g.len() <= 5));
        let back = RecoveryKey::parse(&shown.to_lowercase().replace('-', " ")).unwrap();
        assert_eq!(back.expose(), k.expose());
        // One character changed.
        let mut typo: Vec<char> = shown.chars().collect();
        typo[3] = if typo[3] == 'A' { 'B' } else { 'A' };
        let typo: String = typo.into_iter().collect();
        assert_eq!(
            RecoveryKey::parse(&typo).unwrap_err(),
            BackupError::RecoveryChecksum
        );
        assert!(matches!(
            RecoveryKey::parse("ABC"),
            Err(BackupError::RecoveryLength { .. })
        ));
        assert_eq!(
            RecoveryKey::parse(&shown.replacen(|c: char| c.is_ascii_alphanumeric(), "U", 1))
                .unwrap_err(),
            BackupError::RecoveryCharacter('U')
        );
        assert_eq!(format!("{k:?}"), "RecoveryKey(redacted)");
    }

    #[test]
    fn the_backup_key_opens_with_either_secret_and_nothing_else() {
        let account = AccountKey::generate().public();
        let key = BackupKey::generate();
        let recovery = RecoveryKey::generate();
        let export = [7u8; 64];
        let by_password = wrap(&key, &export, Wrap::Password, &account).unwrap();
        let by_recovery = wrap(&key, recovery.expose(), Wrap::Recovery, &account).unwrap();
        assert_eq!(
            unwrap(&by_password, &export, Wrap::Password, &account)
                .unwrap()
                .expose(),
            key.expose()
        );
        assert_eq!(
            unwrap(&by_recovery, recovery.expose(), Wrap::Recovery, &account)
                .unwrap()
                .expose(),
            key.expose()
        );
        assert_eq!(
            unwrap(&by_password, &[8u8; 64], Wrap::Password, &account).unwrap_err(),
            BackupError::WrongSecret
        );
        // A wrap is bound to its route and its account.
        assert!(unwrap(&by_recovery, recovery.expose(), Wrap::Password, &account).is_err());
        let other = AccountKey::generate().public();
        assert!(unwrap(&by_password, &export, Wrap::Password, &other).is_err());
    }
    #[test]
    fn p535_a_sealed_group_info_opens_only_for_its_account_group_and_epoch() {
        let key = BackupKey::generate();
        let account = AccountKey::generate().public();
        let sealed = seal_group_info(&key, &account, &[1; 16], 7, b"group info").unwrap();
        assert_eq!(
            open_group_info(&key, &account, &[1; 16], 7, &sealed).unwrap(),
            b"group info"
        );
        let other = AccountKey::generate().public();
        assert!(open_group_info(&key, &other, &[1; 16], 7, &sealed).is_err());
        assert!(open_group_info(&key, &account, &[2; 16], 7, &sealed).is_err());
        assert!(open_group_info(&key, &account, &[1; 16], 6, &sealed).is_err());
        assert!(open_group_info(&BackupKey::generate(), &account, &[1; 16], 7, &sealed).is_err());
        // Not a backup chunk either: another key derived from the same backup key.
        assert!(open_chunk(&key, &account, 0, &sealed).is_err());
    }
}
