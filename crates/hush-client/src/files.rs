//! Files (P560–P564): sealed on this device with a fresh key (hush-crypto `file`),
//! uploaded over a second connection so chat never waits behind a transfer, and
//! offered inside the MLS conversation, so only its members at send time get the key.
//! Uploads and downloads resume from the last confirmed byte; memory stays bounded
//! (one piece and one chunk) whatever the file's size; a download is written to a
//! partial file beside its target and renamed only once its digest matched.
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use hush_crypto::file::{
    CHUNK, FileError, FileKey, Opener, SEALED_CHUNK, Sealer, chunks, sealed_size,
};
use hush_proto::content::{ContentBody, FileOffer};
use hush_proto::ids::{FileId, GroupId, SessionToken};
use hush_proto::pb::{self, client_frame::Body};
use hush_proto::response::Response;
use rusqlite::{OptionalExtension, params};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::connection::{Connection, unexpected};
use crate::events::Event;
use crate::home::{Home, home_err};
use crate::trust::{FirstUse, KnownServers};
use crate::{Client, ClientError, Target};

/// How far a transfer got, in plaintext bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
}

/// Called after every piece; `Break` stops the transfer (it resumes later).
pub type OnProgress<'a> = &'a mut (dyn FnMut(Progress) -> ControlFlow<()> + Send);

/// A file sent: its id, and the offer as it now stands in history.
#[derive(Debug, Clone)]
pub struct SentFile {
    pub file_id: FileId,
    pub name: String,
    pub size: u64,
    /// Plaintext bytes the server already held from an interrupted earlier try.
    pub resumed_from: u64,
    pub event: Event,
}

/// A file saved.
#[derive(Debug, Clone)]
pub struct SavedFile {
    pub file_id: FileId,
    pub path: PathBuf,
    pub size: u64,
    /// Plaintext bytes a partial file from an interrupted earlier try held.
    pub resumed_from: u64,
}

/// A file offer as `hush files` lists it.
#[derive(Debug, Clone)]
pub struct Offered {
    pub event: Event,
    /// Where this home saved it, if it did.
    pub saved_to: Option<String>,
}

/// `1.5 MiB`, `300 KiB`, `10 bytes`.
pub fn human_size(n: u64) -> String {
    hush_proto::human_bytes(n)
}

/// Control characters and bidirectional overrides: a peer's name must not hide its
/// real extension (`report\u{202E}fdp.exe` shows as `reportexe.pdf`).
fn unsafe_char(c: char) -> bool {
    c.is_control() || crate::events::is_bidi_control(c)
}

/// An offered name as it may be shown: control characters and bidi overrides replaced.
pub fn display_name(name: &str) -> String {
    name.chars()
        .map(|c| if unsafe_char(c) { '?' } else { c })
        .collect()
}

/// P563: the offered name reduced to one plain file name: no directory part (either
/// separator), no control characters or bidirectional overrides, no leading dots,
/// never `.` or `..` or empty. Whatever a peer writes, the file lands inside the
/// chosen directory under a name that reads as what it is.
pub fn safe_file_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let clean: String = last
        .chars()
        .filter(|c| !unsafe_char(*c))
        .collect::<String>()
        .trim()
        .trim_start_matches('.')
        .to_owned();
    if clean.is_empty() {
        "file".to_owned()
    } else {
        clean
    }
}

/// A media type from the file name's extension (the offer's hint; never trusted).
pub fn media_type_of(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "md" | "log" => "text/plain",
        "pdf" => "application/pdf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "tar" => "application/x-tar",
        "json" => "application/json",
        "html" | "htm" => "text/html",
        "csv" => "text/csv",
        "mp3" => "audio/mpeg",
        "mp4" => "video/mp4",
        _ => "application/octet-stream",
    }
}

/// Records an offer (sent or received) in the caller's transaction.
pub(crate) fn remember_offer(
    home: &Home,
    group: GroupId,
    message_id: &str,
    f: &FileOffer,
) -> Result<(), ClientError> {
    home.db()
        .execute(
            "INSERT OR IGNORE INTO file_offers
             (message_id, file_id, group_id, name, size, media_type, key, sha256)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                message_id,
                f.file_id.as_bytes().as_slice(),
                group.as_bytes().as_slice(),
                f.name,
                i64::try_from(f.size).unwrap_or(i64::MAX),
                f.media_type,
                f.key.as_slice(),
                f.sha256.as_slice()
            ],
        )
        .map_err(home_err)?;
    Ok(())
}

fn io(what: &str, path: &Path, e: std::io::Error) -> ClientError {
    ClientError::Invalid(format!("{what} {}: {e}", path.display()))
}

fn crypto(e: FileError) -> ClientError {
    ClientError::Crypto(e.to_string())
}

/// Where this home's server is and the session to open a transfer connection with.
struct Session {
    dir: PathBuf,
    server: String,
    token: SessionToken,
}

fn session(home: &Home) -> Result<Session, ClientError> {
    let stored = home.account()?.ok_or(ClientError::NoAccount)?;
    Ok(Session {
        dir: home.dir().to_owned(),
        server: stored.server,
        token: stored.token,
    })
}

/// A second connection for one transfer, authenticated with the device's session.
async fn open(s: &Session) -> Result<Connection, ClientError> {
    let conn =
        Connection::connect(&s.server, &KnownServers::new(&s.dir), &FirstUse::Refuse).await?;
    match conn
        .request(Body::Authenticate(pb::Authenticate {
            session_token: s.token.expose().to_vec().into(),
        }))
        .await?
    {
        Response::Authenticated(_) => Ok(conn),
        other => Err(unexpected(&other)),
    }
}

/// Plaintext bytes covered by `sealed` bytes of a file of `size` (for progress).
fn plain_done(sealed: u64, size: u64) -> u64 {
    let total = sealed_size(size);
    if total == 0 {
        return 0;
    }
    ((u128::from(sealed) * u128::from(size)) / u128::from(total)) as u64
}

/// An upload this home began: what makes resuming it seal the same bytes.
struct Upload {
    file_id: FileId,
    key: FileKey,
}

struct UploadPlan {
    session: Session,
    group: GroupId,
    earlier: Option<Upload>,
}

fn path_key(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn modified_ms(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Streams the sealed file from the server's `have` bytes on; returns the plaintext's
/// SHA-256. Holds one piece and one chunk in memory.
async fn push(
    conn: &Connection,
    up: &Upload,
    path: &Path,
    size: u64,
    have: u64,
    max_piece: usize,
    on: OnProgress<'_>,
) -> Result<[u8; 32], ClientError> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| io("opening", path, e))?;
    let mut sealer = Sealer::new(&up.key, *up.file_id.as_bytes(), size);
    let start = (have / SEALED_CHUNK as u64).min(chunks(size) - 1);
    let mut buf = vec![0u8; CHUNK];
    let changed = |e: std::io::Error| {
        ClientError::Invalid(format!(
            "{} changed while it was being sent ({e}); send it again",
            path.display()
        ))
    };
    for _ in 0..start {
        let n = sealer.next_len();
        file.read_exact(&mut buf[..n]).await.map_err(changed)?;
        sealer.skip(&buf[..n]).map_err(crypto)?;
    }
    let mut pos = start * SEALED_CHUNK as u64;
    let mut skip = have - pos;
    let mut pending: Vec<u8> = Vec::with_capacity(max_piece + SEALED_CHUNK);
    let total = sealed_size(size);
    while !sealer.done() {
        let n = sealer.next_len();
        file.read_exact(&mut buf[..n]).await.map_err(changed)?;
        let sealed = sealer.seal(&buf[..n]).map_err(crypto)?;
        let k = (skip as usize).min(sealed.len());
        skip -= k as u64;
        pos += k as u64;
        pending.extend_from_slice(&sealed[k..]);
        let last = sealer.done();
        while pending.len() >= max_piece || (last && !pending.is_empty()) {
            let take = pending.len().min(max_piece);
            let piece: Vec<u8> = pending.drain(..take).collect();
            let answer = conn
                .request(Body::FileUpload(pb::FileUpload {
                    file_id: up.file_id.as_bytes().to_vec().into(),
                    offset: pos,
                    data: piece.into(),
                }))
                .await?;
            let Response::FileUploaded { received, .. } = answer else {
                return Err(unexpected(&answer));
            };
            pos += take as u64;
            if received != pos {
                return Err(ClientError::Protocol(format!(
                    "the server says it holds {received} bytes, not {pos}"
                )));
            }
            let step = on(Progress {
                done: plain_done(pos, size),
                total: size,
            });
            if step.is_break() && pos < total {
                return Err(ClientError::Interrupted);
            }
        }
    }
    let mut rest = [0u8; 1];
    if file.read(&mut rest).await.map_err(changed)? != 0 {
        return Err(ClientError::Invalid(format!(
            "{} grew while it was being sent; send it again",
            path.display()
        )));
    }
    sealer.finish().map_err(crypto)
}

/// What opening an offer needs.
struct Offer {
    message_id: String,
    file_id: FileId,
    name: String,
    size: u64,
    key: FileKey,
    sha256: [u8; 32],
}

/// The final path of a download: `output` if it names a file, inside it if it is a
/// directory, else the safe form of the offered name in the current directory.
fn destination(output: Option<&Path>, offered: &str) -> Result<PathBuf, ClientError> {
    let name = safe_file_name(offered);
    Ok(match output {
        Some(p) if p.is_dir() => p.join(name),
        Some(p) => p.to_owned(),
        None => std::env::current_dir()
            .map_err(|e| ClientError::Invalid(format!("the current directory: {e}")))?
            .join(name),
    })
}

fn part_path(dest: &Path, id: FileId) -> PathBuf {
    let dir = dest.parent().unwrap_or(Path::new("."));
    dir.join(format!(".hush-{id}.part"))
}

/// Opens the sealed file into `part` from what `part` already holds; `Ok(resumed)`
/// once the digest matched. A file that fails its checks is an error; the caller
/// removes the partial file then.
async fn pull(
    conn: &Connection,
    offer: &Offer,
    part: &Path,
    on: OnProgress<'_>,
) -> Result<u64, ClientError> {
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(part)
        .await
        .map_err(|e| io("creating", part, e))?;
    let held = file
        .metadata()
        .await
        .map_err(|e| io("reading", part, e))?
        .len();
    let size = offer.size;
    let mut opener = Opener::new(&offer.key, *offer.file_id.as_bytes(), size);
    // Whole chunks already written are taken as they are (the digest still covers
    // them); the last chunk is always fetched again.
    let start = (held / CHUNK as u64).min(chunks(size) - 1);
    file.set_len(start * CHUNK as u64)
        .await
        .map_err(|e| io("truncating", part, e))?;
    file.seek(std::io::SeekFrom::Start(0))
        .await
        .map_err(|e| io("reading", part, e))?;
    let mut buf = vec![0u8; CHUNK];
    for _ in 0..start {
        let n = opener.next_len();
        file.read_exact(&mut buf[..n])
            .await
            .map_err(|e| io("reading", part, e))?;
        opener.skip(&buf[..n]).map_err(crypto)?;
    }
    let resumed = start * CHUNK as u64;
    let total = sealed_size(size);
    let mut offset = start * SEALED_CHUNK as u64;
    let mut pending: Vec<u8> = Vec::new();
    while offset < total {
        let len = (total - offset).min(hush_proto::request::MAX_FILE_PIECE as u64) as u32;
        let answer = conn
            .request(Body::FileDownload(pb::FileDownload {
                file_id: offer.file_id.as_bytes().to_vec().into(),
                offset,
                len,
            }))
            .await?;
        let Response::FileData { offset: at, data } = answer else {
            return Err(unexpected(&answer));
        };
        if at != offset {
            return Err(ClientError::Protocol(
                "a file piece at the wrong offset".into(),
            ));
        }
        if data.is_empty() {
            return Err(crypto(FileError::Truncated {
                got: opener.opened(),
                want: chunks(size),
            }));
        }
        offset += data.len() as u64;
        pending.extend_from_slice(&data);
        while !opener.done() && pending.len() >= opener.next_sealed_len() {
            let n = opener.next_sealed_len();
            let plain = opener.open(&pending[..n]).map_err(crypto)?;
            pending.drain(..n);
            file.write_all(&plain)
                .await
                .map_err(|e| io("writing", part, e))?;
        }
        let step = on(Progress {
            done: plain_done(offset, size),
            total: size,
        });
        if step.is_break() && offset < total {
            file.flush().await.map_err(|e| io("writing", part, e))?;
            return Err(ClientError::Interrupted);
        }
    }
    if !pending.is_empty() {
        return Err(crypto(FileError::TooLong { want: chunks(size) }));
    }
    opener.finish(&offer.sha256).map_err(crypto)?;
    file.sync_all().await.map_err(|e| io("writing", part, e))?;
    Ok(resumed)
}

fn load_offer(home: &Home, id: FileId) -> Result<Option<Offer>, ClientError> {
    type Row = (String, String, i64, Vec<u8>, Vec<u8>);
    let row: Option<Row> = home
        .db()
        .query_row(
            "SELECT message_id, name, size, key, sha256 FROM file_offers WHERE file_id = ?1
             ORDER BY rowid DESC LIMIT 1",
            [id.as_bytes().as_slice()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()
        .map_err(home_err)?;
    let Some((message_id, name, size, key, sha)) = row else {
        return Ok(None);
    };
    let damaged = || home_err("a stored file offer is damaged");
    Ok(Some(Offer {
        message_id,
        file_id: id,
        name,
        size: u64::try_from(size).map_err(|_| damaged())?,
        key: FileKey::from_slice(&key).map_err(|_| damaged())?,
        sha256: <[u8; 32]>::try_from(sha.as_slice()).map_err(|_| damaged())?,
    }))
}

impl Client {
    /// Seals `path`, uploads it over a connection of its own, and offers it in the
    /// conversation `target` (P560). An upload of the same file to the same
    /// conversation that was interrupted resumes where the server's copy ends. `name`
    /// offers it under another name than its own.
    pub async fn send_file(
        &self,
        target: &Target,
        path: &Path,
        name: Option<&str>,
        on: OnProgress<'_>,
    ) -> Result<SentFile, ClientError> {
        let meta = std::fs::metadata(path).map_err(|e| io("reading", path, e))?;
        if !meta.is_file() {
            return Err(ClientError::Invalid(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        let path = std::fs::canonicalize(path).map_err(|e| io("reading", path, e))?;
        let size = meta.len();
        let mtime = modified_ms(&meta);
        let name = match name {
            Some(n) => n.to_owned(),
            None => path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "file".into()),
        };
        if name.is_empty() || name.len() > hush_proto::content::MAX_FILE_NAME_LEN {
            return Err(ClientError::Invalid(format!(
                "a file name is 1 to {} bytes; rename it or pass --name",
                hush_proto::content::MAX_FILE_NAME_LEN
            )));
        }
        let key_path = path_key(&path);
        let plan = {
            let target = target.clone();
            let key_path = key_path.clone();
            self.call(move |e| {
                Box::pin(async move {
                    let live = e.live()?;
                    let m = e.messenger(&live);
                    m.flush_outbox().await?;
                    m.sync().await?;
                    let group = match &target {
                        Target::User(u) => {
                            m.check_not_blocked(&[u.to_string()])?;
                            m.direct(u).await?
                        }
                        Target::Group(g) => m.group_id(g)?,
                    };
                    let earlier: Option<(Vec<u8>, Vec<u8>)> = e
                        .home
                        .db()
                        .query_row(
                            "SELECT file_id, key FROM uploads
                             WHERE group_id = ?1 AND path = ?2 AND size = ?3 AND modified_ms = ?4",
                            params![
                                group.as_bytes().as_slice(),
                                key_path,
                                i64::try_from(size).unwrap_or(i64::MAX),
                                mtime
                            ],
                            |r| Ok((r.get(0)?, r.get(1)?)),
                        )
                        .optional()
                        .map_err(home_err)?;
                    let earlier = match earlier {
                        Some((id, key)) => Some(Upload {
                            file_id: FileId::from_slice(&id)
                                .map_err(|e| home_err(e.to_string()))?,
                            key: FileKey::from_slice(&key)
                                .map_err(|_| home_err("a stored upload key is damaged"))?,
                        }),
                        None => None,
                    };
                    Ok(UploadPlan {
                        session: session(&e.home)?,
                        group,
                        earlier,
                    })
                })
            })
            .await?
        };
        let conn = open(&plan.session).await?;
        let sealed = sealed_size(size);
        // A resumed upload asks how far the server got; one the server forgot
        // (expired) starts over under a new id.
        let mut resume = None;
        if let Some(up) = plan.earlier {
            match conn
                .request(Body::FileStatus(pb::FileStatus {
                    file_id: up.file_id.as_bytes().to_vec().into(),
                }))
                .await
            {
                Ok(Response::FileInfo { received, .. }) => resume = Some((up, received)),
                Ok(other) => return Err(unexpected(&other)),
                Err(ClientError::Server(s)) if s.code == hush_proto::ErrorCode::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let (up, have) = match resume {
            Some(r) => r,
            None => {
                let answer = conn
                    .request(Body::FileCreate(pb::FileCreate {
                        group_id: plan.group.as_bytes().to_vec().into(),
                        size: sealed,
                    }))
                    .await?;
                let Response::FileCreated { file_id, .. } = answer else {
                    return Err(unexpected(&answer));
                };
                let up = Upload {
                    file_id,
                    key: FileKey::generate(),
                };
                let record = (
                    file_id.as_bytes().to_vec(),
                    plan.group.as_bytes().to_vec(),
                    key_path.clone(),
                    up.key.expose().to_vec(),
                );
                self.call(move |e| {
                    Box::pin(async move {
                        // An earlier upload of this file the server forgot is
                        // replaced, not kept forever.
                        e.home
                            .db()
                            .execute(
                                "DELETE FROM uploads WHERE group_id = ?1 AND path = ?2",
                                params![record.1, record.2],
                            )
                            .map_err(home_err)?;
                        e.home
                            .db()
                            .execute(
                                "INSERT OR REPLACE INTO uploads
                                 (file_id, group_id, path, size, modified_ms, key, created_at)
                                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                                params![
                                    record.0,
                                    record.1,
                                    record.2,
                                    i64::try_from(size).unwrap_or(i64::MAX),
                                    mtime,
                                    record.3,
                                    crate::messaging::now_ms()
                                ],
                            )
                            .map_err(home_err)?;
                        Ok(())
                    })
                })
                .await?;
                (up, 0)
            }
        };
        let max_piece = hush_proto::request::MAX_FILE_PIECE;
        let sha256 = push(&conn, &up, &path, size, have, max_piece, on).await?;
        conn.close().await;
        let offer = FileOffer {
            file_id: up.file_id,
            key: *up.key.expose(),
            sha256,
            name: name.clone(),
            size,
            media_type: media_type_of(&path).to_owned(),
        };
        let target = target.clone();
        let event = self
            .call(move |e| {
                Box::pin(async move {
                    let live = e.live()?;
                    let m = e.messenger(&live);
                    let body = ContentBody::File(offer.clone());
                    let row = match &target {
                        Target::User(u) => m.send_direct(u, &body).await?,
                        Target::Group(g) => m.send_group_body(g, &body).await?,
                    };
                    e.home
                        .db()
                        .execute(
                            "DELETE FROM uploads WHERE file_id = ?1",
                            [offer.file_id.as_bytes().as_slice()],
                        )
                        .map_err(home_err)?;
                    crate::history::by_row(&e.home, row)
                })
            })
            .await?;
        Ok(SentFile {
            file_id: up.file_id,
            name,
            size,
            resumed_from: plain_done(have, size),
            event,
        })
    }

    /// Downloads, opens and checks an offered file, then writes it to `output` (a
    /// file, or a directory for the offered name made safe; the current directory by
    /// default). Refuses to replace an existing file unless `force`. A download that
    /// was interrupted resumes from its partial file; one that fails a check leaves
    /// nothing behind.
    pub async fn get_file(
        &self,
        id: FileId,
        output: Option<&Path>,
        force: bool,
        on: OnProgress<'_>,
    ) -> Result<SavedFile, ClientError> {
        let (offer, session) = self
            .call(move |e| {
                Box::pin(async move {
                    let offer = load_offer(&e.home, id)?.ok_or_else(|| {
                        ClientError::Invalid(format!(
                            "no file {id} was offered to this device (see `hush files`)"
                        ))
                    })?;
                    Ok((offer, session(&e.home)?))
                })
            })
            .await?;
        let dest = destination(output, &offer.name)?;
        if dest.exists() && !force {
            return Err(ClientError::Invalid(format!(
                "{} exists; pass --force to replace it, or --output another path",
                dest.display()
            )));
        }
        let part = part_path(&dest, id);
        let conn = open(&session).await?;
        let resumed = match pull(&conn, &offer, &part, on).await {
            Ok(r) => r,
            Err(e @ (ClientError::Crypto(_) | ClientError::Server(_))) => {
                // A file that fails its checks (or is gone) leaves nothing behind.
                let _ = std::fs::remove_file(&part);
                return Err(match e {
                    ClientError::Crypto(why) => ClientError::Crypto(format!(
                        "file {id} failed its integrity check ({why}); nothing was saved"
                    )),
                    other => other,
                });
            }
            Err(e) => return Err(e),
        };
        if dest.exists() && !force {
            let _ = std::fs::remove_file(&part);
            return Err(ClientError::Invalid(format!(
                "{} appeared meanwhile; pass --force to replace it",
                dest.display()
            )));
        }
        std::fs::rename(&part, &dest).map_err(|e| io("writing", &dest, e))?;
        // The server may delete the file once every recipient has it (P562).
        if let Err(e) = conn
            .request(Body::FileFetched(pb::FileFetched {
                file_id: id.as_bytes().to_vec().into(),
            }))
            .await
        {
            tracing::warn!(error = %e, "could not tell the server the file was fetched");
        }
        conn.close().await;
        let saved = dest.to_string_lossy().into_owned();
        let message_id = offer.message_id.clone();
        self.call(move |e| {
            Box::pin(async move {
                e.home
                    .db()
                    .execute(
                        "UPDATE file_offers SET saved_to = ?1 WHERE message_id = ?2",
                        params![saved, message_id],
                    )
                    .map_err(home_err)?;
                Ok(())
            })
        })
        .await?;
        Ok(SavedFile {
            file_id: id,
            path: dest,
            size: offer.size,
            resumed_from: resumed,
        })
    }

    /// The files offered in `conversation` (every conversation when `None`), oldest
    /// first.
    pub async fn files(&self, conversation: Option<String>) -> Result<Vec<Offered>, ClientError> {
        self.call(move |e| {
            Box::pin(async move {
                let mut stmt = e
                    .home
                    .db()
                    .prepare(
                        "SELECT h.id, f.saved_to FROM history h
                         JOIN file_offers f ON f.message_id = h.message_id
                         LEFT JOIN conversations c ON c.group_id = h.group_id
                         WHERE h.kind = 'file' AND (?1 IS NULL OR c.name = ?1)
                         ORDER BY h.id",
                    )
                    .map_err(home_err)?;
                let rows: Vec<(i64, Option<String>)> = stmt
                    .query_map([conversation], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(home_err)?
                    .collect::<Result<_, _>>()
                    .map_err(home_err)?;
                rows.into_iter()
                    .map(|(row, saved_to)| {
                        Ok(Offered {
                            event: crate::history::by_row(&e.home, row)?,
                            saved_to,
                        })
                    })
                    .collect()
            })
        })
        .await
    }

    /// P562: withdraws a file this account uploaded; the server deletes it at once.
    pub async fn delete_file(&self, id: FileId) -> Result<(), ClientError> {
        self.call(move |e| {
            Box::pin(async move {
                let live = e.live()?;
                match live
                    .conn
                    .request(Body::FileDelete(pb::FileDelete {
                        file_id: id.as_bytes().to_vec().into(),
                    }))
                    .await?
                {
                    Response::FileDeleted => Ok(()),
                    other => Err(unexpected(&other)),
                }
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p563_offered_names_never_leave_the_directory() {
        assert_eq!(safe_file_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_file_name("..\\..\\boot.ini"), "boot.ini");
        assert_eq!(safe_file_name("/abs/path/x.txt"), "x.txt");
        assert_eq!(safe_file_name(".."), "file");
        assert_eq!(safe_file_name("dir/"), "file");
        assert_eq!(safe_file_name(".bashrc"), "bashrc");
        assert_eq!(safe_file_name("a\u{7}b\nc"), "abc");
        assert_eq!(safe_file_name("report.pdf"), "report.pdf");
        assert_eq!(safe_file_name("report\u{202E}fdp.exe"), "reportfdp.exe");
        assert_eq!(safe_file_name("\u{2066}a\u{2069}.txt"), "a.txt");
        assert_eq!(display_name("x\u{202E}y"), "x?y");
        let dir = std::env::temp_dir();
        let dest = destination(Some(&dir), "../../etc/passwd").unwrap();
        assert_eq!(dest, dir.join("passwd"));
        assert_eq!(
            part_path(&dest, FileId::from_bytes([1; 16])).parent(),
            Some(dir.as_path())
        );
    }

    #[test]
    fn sizes_and_progress_read_plainly() {
        assert_eq!(human_size(10), "10 bytes");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(plain_done(sealed_size(1000), 1000), 1000);
        assert_eq!(plain_done(0, 1000), 0);
        assert_eq!(media_type_of(Path::new("a.PDF")), "application/pdf");
        assert_eq!(
            media_type_of(Path::new("noext")),
            "application/octet-stream"
        );
    }
}
