//! File encryption, sans-IO: the STREAM construction (Hoang, Reyhanitabar, Rogaway,
//! Vizár, "Online Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance",
//! CRYPTO 2015) over ChaCha20-Poly1305, with a fresh random key per file (P560).
//!
//! A file of `size` bytes is cut into chunks of [`CHUNK`] bytes (the last one shorter,
//! or empty for an empty file). Chunk `i` is sealed under the file's key with the nonce
//! `0^7 ‖ i (u32, big-endian) ‖ last (1 byte: 1 for the final chunk, else 0)` and the
//! associated data `"hush file chunk v1\0" ‖ file id (16) ‖ size (u64, big-endian)`.
//! A chunk moved to another place, repeated, taken from another file, flipped, or a
//! stream cut short (the final chunk's flag is missing) does not open. The key, the
//! plaintext's SHA-256, its name, size and media type travel only inside the MLS
//! conversation (the file offer), never to the server.
//!
//! Memory is one chunk at a time whatever the file's size: the caller reads a chunk,
//! seals (or opens) it, and writes it out.
use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Plaintext bytes per chunk.
pub const CHUNK: usize = 64 * 1024;
/// Poly1305 tag bytes added to each chunk.
pub const TAG: usize = 16;
/// The largest sealed chunk.
pub const SEALED_CHUNK: usize = CHUNK + TAG;

const AAD_LABEL: &[u8] = b"hush file chunk v1\0";

/// A file's key: 32 random bytes, never shown.
#[derive(Clone)]
pub struct FileKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for FileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FileKey(..)")
    }
}

impl FileKey {
    pub fn generate() -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::thread_rng().fill_bytes(key.as_mut());
        FileKey(key)
    }

    pub fn from_slice(bytes: &[u8]) -> Result<Self, FileError> {
        let key: [u8; 32] = bytes.try_into().map_err(|_| FileError::BadKey)?;
        Ok(FileKey(Zeroizing::new(key)))
    }

    /// The raw key, to put in a file offer.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(Key::from_slice(self.0.as_ref()))
    }
}

/// What was wrong with a sealed file: the place a front end reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    #[error("a file key must be 32 bytes")]
    BadKey,
    /// A chunk did not open: flipped, moved, repeated or from another file.
    #[error("chunk {chunk} of the file was altered, moved or taken from another file")]
    Tampered { chunk: u64 },
    /// A chunk of the wrong length: the stream was cut or padded.
    #[error("chunk {chunk} is {got} bytes where {want} were expected")]
    Length { chunk: u64, got: usize, want: usize },
    /// The stream ended before its final chunk.
    #[error("the file is truncated: {got} of {want} chunks")]
    Truncated { got: u64, want: u64 },
    /// More chunks than the file has.
    #[error("the file has more chunks than its {want}")]
    TooLong { want: u64 },
    /// Every chunk opened, but the plaintext is not the one offered.
    #[error("the file's SHA-256 is not the one its sender offered")]
    Digest,
    /// The caller handed a plaintext chunk of the wrong size (a local bug).
    #[error("plaintext chunk {chunk} is {got} bytes where {want} were expected")]
    Plaintext { chunk: u64, got: usize, want: usize },
}

/// How many chunks a file of `size` bytes has (an empty file has one, empty).
pub fn chunks(size: u64) -> u64 {
    size.div_ceil(CHUNK as u64).max(1)
}

/// The sealed size of a file of `size` bytes: what the server stores.
pub fn sealed_size(size: u64) -> u64 {
    size + chunks(size) * TAG as u64
}

/// Plaintext bytes in chunk `index` of a file of `size` bytes.
fn plain_len(size: u64, index: u64) -> usize {
    let start = index * CHUNK as u64;
    size.saturating_sub(start).min(CHUNK as u64) as usize
}

fn nonce(index: u64, last: bool) -> Result<[u8; 12], FileError> {
    let i = u32::try_from(index).map_err(|_| FileError::TooLong {
        want: u64::from(u32::MAX),
    })?;
    let mut n = [0u8; 12];
    n[7..11].copy_from_slice(&i.to_be_bytes());
    n[11] = u8::from(last);
    Ok(n)
}

fn aad(file_id: &[u8; 16], size: u64) -> Vec<u8> {
    let mut a = Vec::with_capacity(AAD_LABEL.len() + 24);
    a.extend_from_slice(AAD_LABEL);
    a.extend_from_slice(file_id);
    a.extend_from_slice(&size.to_be_bytes());
    a
}

/// Takes chunk `next`'s plaintext into `hash` without sealing or opening it.
fn hash_only(
    size: u64,
    next: &mut u64,
    hash: &mut Sha256,
    plaintext: &[u8],
) -> Result<(), FileError> {
    let want = chunks(size);
    if *next >= want {
        return Err(FileError::TooLong { want });
    }
    let expected = plain_len(size, *next);
    if plaintext.len() != expected {
        return Err(FileError::Plaintext {
            chunk: *next,
            got: plaintext.len(),
            want: expected,
        });
    }
    hash.update(plaintext);
    *next += 1;
    Ok(())
}

/// Seals a file chunk by chunk, hashing the plaintext on the way.
pub struct Sealer {
    cipher: ChaCha20Poly1305,
    aad: Vec<u8>,
    size: u64,
    next: u64,
    hash: Sha256,
}

impl Sealer {
    /// Files up to 2^32 chunks (256 TiB) are sealed; the caller limits them far below.
    pub fn new(key: &FileKey, file_id: [u8; 16], size: u64) -> Self {
        Sealer {
            cipher: key.cipher(),
            aad: aad(&file_id, size),
            size,
            next: 0,
            hash: Sha256::new(),
        }
    }

    /// How many plaintext bytes the next chunk must have (0 once done, or for an
    /// empty file's one chunk).
    pub fn next_len(&self) -> usize {
        plain_len(self.size, self.next)
    }

    /// Whether every chunk was sealed.
    pub fn done(&self) -> bool {
        self.next >= chunks(self.size)
    }

    /// Seals the next chunk, which must be [`Sealer::next_len`] bytes.
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, FileError> {
        let want = chunks(self.size);
        if self.next >= want {
            return Err(FileError::TooLong { want });
        }
        let expected = plain_len(self.size, self.next);
        if plaintext.len() != expected {
            return Err(FileError::Plaintext {
                chunk: self.next,
                got: plaintext.len(),
                want: expected,
            });
        }
        let last = self.next + 1 == want;
        let n = nonce(self.next, last)?;
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&n),
                Payload {
                    msg: plaintext,
                    aad: &self.aad,
                },
            )
            .map_err(|_| FileError::Plaintext {
                chunk: self.next,
                got: plaintext.len(),
                want: expected,
            })?;
        self.hash.update(plaintext);
        self.next += 1;
        Ok(sealed)
    }

    /// Takes the next chunk's plaintext into the digest without sealing it: resuming an
    /// upload whose first chunks the server already holds.
    pub fn skip(&mut self, plaintext: &[u8]) -> Result<(), FileError> {
        hash_only(self.size, &mut self.next, &mut self.hash, plaintext)
    }

    /// Chunks sealed (or skipped) so far.
    pub fn sealed(&self) -> u64 {
        self.next
    }

    /// The plaintext's SHA-256, once every chunk is sealed.
    pub fn finish(self) -> Result<[u8; 32], FileError> {
        let want = chunks(self.size);
        if self.next < want {
            return Err(FileError::Truncated {
                got: self.next,
                want,
            });
        }
        Ok(self.hash.finalize().into())
    }
}

/// Opens a sealed file chunk by chunk, in order, and checks its SHA-256 at the end.
pub struct Opener {
    cipher: ChaCha20Poly1305,
    aad: Vec<u8>,
    size: u64,
    next: u64,
    hash: Sha256,
}

impl Opener {
    pub fn new(key: &FileKey, file_id: [u8; 16], size: u64) -> Self {
        Opener {
            cipher: key.cipher(),
            aad: aad(&file_id, size),
            size,
            next: 0,
            hash: Sha256::new(),
        }
    }

    /// The sealed length of the next chunk (what to read from the blob).
    pub fn next_sealed_len(&self) -> usize {
        plain_len(self.size, self.next) + TAG
    }

    /// Chunks opened so far.
    pub fn opened(&self) -> u64 {
        self.next
    }

    /// Whether every chunk was opened.
    pub fn done(&self) -> bool {
        self.next >= chunks(self.size)
    }

    /// Opens the next chunk.
    pub fn open(&mut self, sealed: &[u8]) -> Result<Vec<u8>, FileError> {
        let want = chunks(self.size);
        if self.next >= want {
            return Err(FileError::TooLong { want });
        }
        let expected = self.next_sealed_len();
        if sealed.len() != expected {
            return Err(FileError::Length {
                chunk: self.next,
                got: sealed.len(),
                want: expected,
            });
        }
        let last = self.next + 1 == want;
        let n = nonce(self.next, last)?;
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(&n),
                Payload {
                    msg: sealed,
                    aad: &self.aad,
                },
            )
            .map_err(|_| FileError::Tampered { chunk: self.next })?;
        self.hash.update(&plain);
        self.next += 1;
        Ok(plain)
    }

    /// Takes the next chunk's plaintext, opened earlier (a download resumed from its
    /// partial file), into the digest. The digest check at [`Opener::finish`] still
    /// covers it.
    pub fn skip(&mut self, plaintext: &[u8]) -> Result<(), FileError> {
        hash_only(self.size, &mut self.next, &mut self.hash, plaintext)
    }

    /// The plaintext length of the next chunk.
    pub fn next_len(&self) -> usize {
        plain_len(self.size, self.next)
    }

    /// Checks that the whole file arrived and is the one offered (`sha256`).
    pub fn finish(self, sha256: &[u8; 32]) -> Result<(), FileError> {
        let want = chunks(self.size);
        if self.next < want {
            return Err(FileError::Truncated {
                got: self.next,
                want,
            });
        }
        let got: [u8; 32] = self.hash.finalize().into();
        if &got != sha256 {
            return Err(FileError::Digest);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: [u8; 16] = [7; 16];

    fn plaintext(size: usize) -> Vec<u8> {
        (0..size).map(|i| (i * 31 % 251) as u8).collect()
    }

    /// Seals `data`: the sealed chunks and the digest.
    fn seal(key: &FileKey, id: [u8; 16], data: &[u8]) -> (Vec<Vec<u8>>, [u8; 32]) {
        let mut s = Sealer::new(key, id, data.len() as u64);
        let mut out = Vec::new();
        let mut at = 0;
        while !s.done() {
            let n = s.next_len();
            out.push(s.seal(&data[at..at + n]).unwrap());
            at += n;
        }
        (out, s.finish().unwrap())
    }

    fn open(
        key: &FileKey,
        id: [u8; 16],
        size: usize,
        chunks: &[Vec<u8>],
        digest: &[u8; 32],
    ) -> Result<Vec<u8>, FileError> {
        let mut o = Opener::new(key, id, size as u64);
        let mut out = Vec::new();
        for c in chunks {
            out.extend(o.open(c)?);
        }
        o.finish(digest)?;
        Ok(out)
    }

    #[test]
    fn round_trips_at_every_boundary() {
        let key = FileKey::generate();
        for size in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 17] {
            let data = plaintext(size);
            let (sealed, digest) = seal(&key, ID, &data);
            assert_eq!(sealed.len() as u64, chunks(size as u64), "{size}");
            let total: usize = sealed.iter().map(Vec::len).sum();
            assert_eq!(total as u64, sealed_size(size as u64), "{size}");
            assert_eq!(open(&key, ID, size, &sealed, &digest).unwrap(), data);
            let want: [u8; 32] = Sha256::digest(&data).into();
            assert_eq!(digest, want);
        }
    }

    #[test]
    fn a_flipped_byte_anywhere_is_refused_with_its_chunk() {
        let key = FileKey::generate();
        let data = plaintext(2 * CHUNK + 100);
        let (sealed, digest) = seal(&key, ID, &data);
        for (chunk, at) in [(0, 0), (0, CHUNK + 3), (1, 500), (2, 115)] {
            let mut bad = sealed.clone();
            bad[chunk][at] ^= 0x01;
            assert_eq!(
                open(&key, ID, data.len(), &bad, &digest),
                Err(FileError::Tampered {
                    chunk: chunk as u64
                })
            );
        }
    }

    #[test]
    fn truncated_reordered_duplicated_and_swapped_chunks_are_refused() {
        let key = FileKey::generate();
        let data = plaintext(3 * CHUNK + 9);
        let size = data.len();
        let (sealed, digest) = seal(&key, ID, &data);

        // The final chunk dropped: the stream ends early.
        assert_eq!(
            open(&key, ID, size, &sealed[..3], &digest),
            Err(FileError::Truncated { got: 3, want: 4 })
        );
        // Cut mid-chunk.
        let mut cut = sealed.clone();
        cut[3].truncate(5);
        assert!(matches!(
            open(&key, ID, size, &cut, &digest),
            Err(FileError::Length { chunk: 3, .. })
        ));
        // Reordered.
        let mut swapped = sealed.clone();
        swapped.swap(0, 1);
        assert_eq!(
            open(&key, ID, size, &swapped, &digest),
            Err(FileError::Tampered { chunk: 0 })
        );
        // Duplicated in place of the next one.
        let mut dup = sealed.clone();
        dup[2] = dup[1].clone();
        assert_eq!(
            open(&key, ID, size, &dup, &digest),
            Err(FileError::Tampered { chunk: 2 })
        );
        // An extra chunk after the end.
        let mut long = sealed.clone();
        long.push(sealed[3].clone());
        assert!(matches!(
            open(&key, ID, size, &long, &digest),
            Err(FileError::TooLong { .. })
        ));
        // A file claiming to be shorter (a cut before a full chunk) fails: the last
        // flag and the size are authenticated.
        let short = 3 * CHUNK;
        assert_eq!(
            open(&key, ID, short, &sealed[..3], &digest),
            Err(FileError::Tampered { chunk: 0 })
        );

        // A chunk of another file, under the same key (a bug) or another key.
        let other = plaintext(3 * CHUNK + 9);
        let (theirs, _) = seal(&key, [9; 16], &other);
        let mut mixed = sealed.clone();
        mixed[1] = theirs[1].clone();
        assert_eq!(
            open(&key, ID, size, &mixed, &digest),
            Err(FileError::Tampered { chunk: 1 })
        );
        let (theirs, _) = seal(&FileKey::generate(), ID, &other);
        let mut mixed = sealed.clone();
        mixed[2] = theirs[2].clone();
        assert_eq!(
            open(&key, ID, size, &mixed, &digest),
            Err(FileError::Tampered { chunk: 2 })
        );
        // The right chunks, the wrong offered digest.
        assert_eq!(
            open(&key, ID, size, &sealed, &[0; 32]),
            Err(FileError::Digest)
        );
        // The wrong key.
        assert_eq!(
            open(&FileKey::generate(), ID, size, &sealed, &digest),
            Err(FileError::Tampered { chunk: 0 })
        );
    }

    #[test]
    fn the_sealer_refuses_misuse_and_keys_stay_secret() {
        let key = FileKey::generate();
        let mut s = Sealer::new(&key, ID, 10);
        assert!(matches!(s.seal(&[0; 9]), Err(FileError::Plaintext { .. })));
        s.seal(&[0; 10]).unwrap();
        assert!(matches!(s.seal(&[]), Err(FileError::TooLong { .. })));
        assert!(Sealer::new(&key, ID, 10).finish().is_err());
        assert_eq!(format!("{key:?}"), "FileKey(..)");
        assert_eq!(
            FileKey::from_slice(&[1; 31]).unwrap_err(),
            FileError::BadKey
        );
        let again = FileKey::from_slice(key.expose()).unwrap();
        assert_eq!(again.expose(), key.expose());
    }

    #[test]
    fn skipped_chunks_resume_sealing_and_opening_with_the_same_digest() {
        let key = FileKey::generate();
        let data = plaintext(3 * CHUNK + 10);
        let (sealed, digest) = seal(&key, ID, &data);
        // An upload resumed after two chunks seals the rest identically.
        let mut resumed = Sealer::new(&key, ID, data.len() as u64);
        let mut rest = Vec::new();
        for (i, piece) in data.chunks(CHUNK).enumerate() {
            if i < 2 {
                resumed.skip(piece).unwrap();
            } else {
                rest.push(resumed.seal(piece).unwrap());
            }
        }
        assert_eq!(resumed.sealed(), 4);
        assert_eq!(resumed.finish().unwrap(), digest);
        assert_eq!(rest, sealed[2..].to_vec());
        // A download resumed after one chunk opens the rest and checks the whole digest.
        let mut opener = Opener::new(&key, ID, data.len() as u64);
        opener.skip(&data[..CHUNK]).unwrap();
        for s in &sealed[1..] {
            opener.open(s).unwrap();
        }
        opener.finish(&digest).unwrap();
        // A partial file that was not what was opened fails the digest.
        let mut wrong = Opener::new(&key, ID, data.len() as u64);
        wrong.skip(&vec![0u8; CHUNK]).unwrap();
        for s in &sealed[1..] {
            wrong.open(s).unwrap();
        }
        assert!(matches!(wrong.finish(&digest), Err(FileError::Digest)));
        assert!(Opener::new(&key, ID, 5).skip(&[0; 4]).is_err());
    }
}
