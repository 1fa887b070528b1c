//! The blob port: where sealed file bytes live (P560). Blobs are opaque (the server
//! cannot read them: files are sealed by the client, `hush-crypto::file`), written
//! once by appending, in order, from the last confirmed byte, so an interrupted upload
//! resumes instead of starting over; read back in bounded pieces; deleted. Who may
//! read or write a blob, sizes and quotas are the [`crate::Store`]'s (transactional);
//! this port only keeps bytes. Adapters: [`MemoryBlobs`] (tests) and [`FsBlobs`]
//! (files in the data dir, the default); [`conformance`] is what both pass.
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use hush_proto::ids::FileId;

/// The largest piece [`BlobStore::read`] returns at once.
pub const MAX_READ: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    #[error("no such blob")]
    NotFound,
    /// An append not at the blob's end: resume from `have`.
    #[error("the blob holds {have} bytes; append from there")]
    Offset { have: u64 },
    /// An append to a blob that was sealed already, or a read of one still uploading.
    #[error("the blob is {0}")]
    State(&'static str),
    #[error("blob storage: {0}")]
    Io(#[from] std::io::Error),
}

/// How far a blob got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobStatus {
    /// Bytes held, each confirmed (durable) before its append returned.
    pub len: u64,
    /// Complete: no more appends, readable.
    pub sealed: bool,
}

#[async_trait]
pub trait BlobStore: Send + Sync {
    /// How far `id` got, or `None` if there is no such blob.
    async fn status(&self, id: FileId) -> Result<Option<BlobStatus>, BlobError>;
    /// Appends `data` to the unsealed blob `id` (created by an append at offset 0),
    /// which must hold exactly `offset` bytes; the bytes are durable when it returns
    /// the new length.
    async fn append(&self, id: FileId, offset: u64, data: &[u8]) -> Result<u64, BlobError>;
    /// Ends the upload: the blob is readable and never changes again.
    async fn seal(&self, id: FileId) -> Result<(), BlobError>;
    /// Up to `len` (at most [`MAX_READ`]) bytes of the sealed blob `id` from
    /// `offset`; fewer only at its end.
    async fn read(&self, id: FileId, offset: u64, len: u64) -> Result<Vec<u8>, BlobError>;
    /// Removes the blob, sealed or not; deleting a missing blob is not an error.
    async fn delete(&self, id: FileId) -> Result<(), BlobError>;
    /// Every blob held, for sweeping blobs the store no longer knows.
    async fn list(&self) -> Result<Vec<FileId>, BlobError>;
}

/// Blobs in memory, for tests.
#[derive(Default)]
pub struct MemoryBlobs {
    blobs: Mutex<HashMap<FileId, (Vec<u8>, bool)>>,
}

impl MemoryBlobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FileId, (Vec<u8>, bool)>> {
        // A panic while holding the lock leaves plain bytes behind: still usable.
        self.blobs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl BlobStore for MemoryBlobs {
    async fn status(&self, id: FileId) -> Result<Option<BlobStatus>, BlobError> {
        Ok(self.lock().get(&id).map(|(b, s)| BlobStatus {
            len: b.len() as u64,
            sealed: *s,
        }))
    }

    async fn append(&self, id: FileId, offset: u64, data: &[u8]) -> Result<u64, BlobError> {
        let mut blobs = self.lock();
        if offset == 0 && !blobs.contains_key(&id) {
            blobs.insert(id, (Vec::new(), false));
        }
        let (bytes, sealed) = blobs.get_mut(&id).ok_or(BlobError::NotFound)?;
        if *sealed {
            return Err(BlobError::State("sealed"));
        }
        if bytes.len() as u64 != offset {
            return Err(BlobError::Offset {
                have: bytes.len() as u64,
            });
        }
        bytes.extend_from_slice(data);
        Ok(bytes.len() as u64)
    }

    async fn seal(&self, id: FileId) -> Result<(), BlobError> {
        let mut blobs = self.lock();
        let (_, sealed) = blobs.get_mut(&id).ok_or(BlobError::NotFound)?;
        *sealed = true;
        Ok(())
    }

    async fn read(&self, id: FileId, offset: u64, len: u64) -> Result<Vec<u8>, BlobError> {
        let blobs = self.lock();
        let (bytes, sealed) = blobs.get(&id).ok_or(BlobError::NotFound)?;
        if !*sealed {
            return Err(BlobError::State("still uploading"));
        }
        let start = (offset as usize).min(bytes.len());
        let end = start
            .saturating_add(len.min(MAX_READ) as usize)
            .min(bytes.len());
        Ok(bytes[start..end].to_vec())
    }

    async fn delete(&self, id: FileId) -> Result<(), BlobError> {
        self.lock().remove(&id);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<FileId>, BlobError> {
        Ok(self.lock().keys().copied().collect())
    }
}

/// Blobs as files in a directory (`DATA/blobs`): `ID.part` while uploading, `ID` once
/// sealed (a rename, so a sealed blob is whole). Names are the id's hex digits only,
/// so no id reaches outside the directory.
pub struct FsBlobs {
    dir: PathBuf,
    /// Appends to one blob are serialised (the offset check and the write are one step).
    writing: tokio::sync::Mutex<()>,
}

impl FsBlobs {
    /// Opens (creating) the directory.
    pub fn open(dir: &Path) -> Result<FsBlobs, BlobError> {
        std::fs::create_dir_all(dir)?;
        Ok(FsBlobs {
            dir: dir.to_owned(),
            writing: tokio::sync::Mutex::new(()),
        })
    }

    fn sealed_path(&self, id: FileId) -> PathBuf {
        self.dir.join(id.to_string())
    }

    fn part_path(&self, id: FileId) -> PathBuf {
        self.dir.join(format!("{id}.part"))
    }

    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> Result<T, BlobError> + Send + 'static,
    ) -> Result<T, BlobError> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| BlobError::Io(std::io::Error::other(e.to_string())))?
    }
}

fn len_of(path: &Path) -> Result<Option<u64>, BlobError> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(m.len())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[async_trait]
impl BlobStore for FsBlobs {
    async fn status(&self, id: FileId) -> Result<Option<BlobStatus>, BlobError> {
        let (sealed, part) = (self.sealed_path(id), self.part_path(id));
        Self::blocking(move || {
            if let Some(len) = len_of(&sealed)? {
                return Ok(Some(BlobStatus { len, sealed: true }));
            }
            Ok(len_of(&part)?.map(|len| BlobStatus { len, sealed: false }))
        })
        .await
    }

    async fn append(&self, id: FileId, offset: u64, data: &[u8]) -> Result<u64, BlobError> {
        let _one = self.writing.lock().await;
        let (sealed, part) = (self.sealed_path(id), self.part_path(id));
        let data = data.to_vec();
        Self::blocking(move || {
            if len_of(&sealed)?.is_some() {
                return Err(BlobError::State("sealed"));
            }
            let mut file = match std::fs::OpenOptions::new().write(true).open(&part) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && offset == 0 => {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&part)?
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(BlobError::NotFound);
                }
                Err(e) => return Err(e.into()),
            };
            let have = file.metadata()?.len();
            if have != offset {
                return Err(BlobError::Offset { have });
            }
            file.seek(SeekFrom::Start(offset))?;
            file.write_all(&data)?;
            file.sync_data()?;
            Ok(offset + data.len() as u64)
        })
        .await
    }

    async fn seal(&self, id: FileId) -> Result<(), BlobError> {
        let _one = self.writing.lock().await;
        let (sealed, part, dir) = (self.sealed_path(id), self.part_path(id), self.dir.clone());
        Self::blocking(move || {
            if len_of(&sealed)?.is_some() {
                return Ok(());
            }
            if len_of(&part)?.is_none() {
                return Err(BlobError::NotFound);
            }
            std::fs::rename(&part, &sealed)?;
            // The rename itself is durable once the directory is.
            std::fs::File::open(&dir)?.sync_all()?;
            Ok(())
        })
        .await
    }

    async fn read(&self, id: FileId, offset: u64, len: u64) -> Result<Vec<u8>, BlobError> {
        let (sealed, part) = (self.sealed_path(id), self.part_path(id));
        Self::blocking(move || {
            let mut file = match std::fs::File::open(&sealed) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(if len_of(&part)?.is_some() {
                        BlobError::State("still uploading")
                    } else {
                        BlobError::NotFound
                    });
                }
                Err(e) => return Err(e.into()),
            };
            file.seek(SeekFrom::Start(offset))?;
            let mut out = Vec::new();
            file.take(len.min(MAX_READ)).read_to_end(&mut out)?;
            Ok(out)
        })
        .await
    }

    async fn delete(&self, id: FileId) -> Result<(), BlobError> {
        let _one = self.writing.lock().await;
        let (sealed, part) = (self.sealed_path(id), self.part_path(id));
        Self::blocking(move || {
            for p in [sealed, part] {
                match std::fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(())
        })
        .await
    }

    async fn list(&self) -> Result<Vec<FileId>, BlobError> {
        let dir = self.dir.clone();
        Self::blocking(move || {
            let mut ids = Vec::new();
            for entry in std::fs::read_dir(&dir)? {
                let name = entry?.file_name();
                let name = name.to_string_lossy();
                let hex = name.strip_suffix(".part").unwrap_or(&name);
                // Anything else in the directory is not a blob of ours.
                if let Ok(id) = FileId::parse_hex(hex)
                    && !ids.contains(&id)
                {
                    ids.push(id);
                }
            }
            Ok(ids)
        })
        .await
    }
}

/// What every [`BlobStore`] must do. A failed check panics: this is test support.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub mod conformance {
    use super::*;

    fn id(n: u8) -> FileId {
        FileId::from_bytes([n; 16])
    }

    /// Runs every check against `blobs`, which must start empty.
    pub async fn run(blobs: &dyn BlobStore) {
        appends_resume_from_the_confirmed_end(blobs).await;
        sealed_blobs_read_in_bounded_pieces_and_never_change(blobs).await;
        delete_and_list(blobs).await;
    }

    async fn appends_resume_from_the_confirmed_end(blobs: &dyn BlobStore) {
        let a = id(1);
        assert!(blobs.status(a).await.unwrap().is_none());
        assert!(matches!(
            blobs.append(a, 5, b"x").await,
            Err(BlobError::NotFound)
        ));
        assert_eq!(blobs.append(a, 0, b"hello ").await.unwrap(), 6);
        // A retried append (its answer was lost) is told where to go on from.
        assert!(matches!(
            blobs.append(a, 0, b"hello ").await,
            Err(BlobError::Offset { have: 6 })
        ));
        assert!(matches!(
            blobs.append(a, 9, b"x").await,
            Err(BlobError::Offset { have: 6 })
        ));
        assert_eq!(
            blobs.status(a).await.unwrap(),
            Some(BlobStatus {
                len: 6,
                sealed: false
            })
        );
        assert!(matches!(
            blobs.read(a, 0, 6).await,
            Err(BlobError::State(_))
        ));
        assert_eq!(blobs.append(a, 6, b"world").await.unwrap(), 11);
        blobs.seal(a).await.unwrap();
        blobs.seal(a).await.unwrap();
        assert_eq!(
            blobs.status(a).await.unwrap(),
            Some(BlobStatus {
                len: 11,
                sealed: true
            })
        );
        assert!(matches!(
            blobs.append(a, 11, b"!").await,
            Err(BlobError::State(_))
        ));
        assert!(matches!(blobs.seal(id(9)).await, Err(BlobError::NotFound)));
    }

    async fn sealed_blobs_read_in_bounded_pieces_and_never_change(blobs: &dyn BlobStore) {
        let b = id(2);
        let big: Vec<u8> = (0..(MAX_READ as usize + 1000)).map(|i| i as u8).collect();
        blobs.append(b, 0, &big[..700_000]).await.unwrap();
        blobs.append(b, 700_000, &big[700_000..]).await.unwrap();
        blobs.seal(b).await.unwrap();
        let first = blobs.read(b, 0, u64::MAX).await.unwrap();
        assert_eq!(first.len() as u64, MAX_READ, "bounded");
        let rest = blobs.read(b, MAX_READ, MAX_READ).await.unwrap();
        assert_eq!([first, rest].concat(), big);
        assert!(
            blobs
                .read(b, big.len() as u64 + 5, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(blobs.read(b, 10, 3).await.unwrap(), &big[10..13]);
        assert!(matches!(
            blobs.read(id(8), 0, 1).await,
            Err(BlobError::NotFound)
        ));
    }

    async fn delete_and_list(blobs: &dyn BlobStore) {
        let c = id(3);
        blobs.append(c, 0, b"partial").await.unwrap();
        let mut listed = blobs.list().await.unwrap();
        listed.sort();
        assert_eq!(listed, [id(1), id(2), id(3)]);
        for x in [id(1), id(2), c, id(7)] {
            blobs.delete(x).await.unwrap();
        }
        assert!(blobs.list().await.unwrap().is_empty());
        assert!(blobs.status(c).await.unwrap().is_none());
        // Deleted, the id may be uploaded afresh.
        assert_eq!(blobs.append(c, 0, b"new").await.unwrap(), 3);
        blobs.delete(c).await.unwrap();
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[tokio::test]
        async fn memory_blobs_conform() {
            run(&MemoryBlobs::default()).await;
        }

        #[tokio::test]
        async fn file_blobs_conform_and_ignore_strangers() {
            let dir =
                std::env::temp_dir().join(format!("hush-blobs-{}-{}", std::process::id(), line!()));
            let _ = std::fs::remove_dir_all(&dir);
            let blobs = FsBlobs::open(&dir).unwrap();
            std::fs::write(dir.join("README"), "not a blob").unwrap();
            run(&blobs).await;
            // A sealed blob is a file named by its id; nothing else was made.
            blobs.append(id(4), 0, b"abc").await.unwrap();
            blobs.seal(id(4)).await.unwrap();
            let mut names: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            assert_eq!(names, ["04040404040404040404040404040404", "README"]);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
