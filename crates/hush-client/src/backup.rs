//! Encrypted backups of this home on the server (P570–P573, ADR 0005): what a person
//! reads (history, file offers, the conversation list, contacts and verified marks),
//! never MLS state, the session token or key packages.
//!
//! - The backup key is random, kept in the home (`backup_state`) and on the server
//!   only wrapped: under the OPAQUE export key of a login and under a recovery key
//!   shown once (`hush_crypto::backup`).
//! - Uploads are incremental: each chunk holds the history rows committed since the
//!   last one (only settled rows: a message still sending waits) and, when it
//!   changed, the conversation list. The engine uploads in the background a little
//!   after new rows, and when it closes; `hush backup now` does it at once.
//! - Every chunk is numbered and sealed; the head (count and hash chain) is signed by
//!   the account key. This home remembers the count it last wrote or restored, so a
//!   server serving an older backup is caught. A restore checks every chunk before it
//!   writes anything, then adds the history as restored rows ahead of what the home
//!   already has.
use std::ops::ControlFlow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hush_crypto::account::{AccountKey, AccountPublicKey};
use hush_crypto::backup::{BackupError, BackupKey, Chain, Head, Restore, Wrap, seal_chunk};
use hush_proto::ErrorCode;
use hush_proto::pb::{self, client_frame::Body};
use hush_proto::response::{BackupSummary, Response};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use hush_crypto::backup::RecoveryKey;

use crate::ClientError;
use crate::connection::{Connection, unexpected};
use crate::files::{OnProgress, Progress};
use crate::home::{Home, home_err};
use crate::messaging::now_ms;

/// History rows per chunk at most, and the plaintext size a chunk aims to stay under
/// (a chunk may be 1 MiB sealed).
const ROWS_PER_CHUNK: usize = 2_000;
const CHUNK_TARGET: usize = 512 * 1024;
/// Chunks one `backup now` uploads at most before it returns (the rest go next time).
const CHUNKS_PER_RUN: usize = 64;
/// Appends lost to another device of the account before giving up for now.
const CONFLICT_RETRIES: usize = 3;

/// What a chunk holds, as JSON inside the seal.
#[derive(Debug, Serialize, Deserialize)]
struct ChunkBody {
    v: u32,
    #[serde(default)]
    history: Vec<Row>,
    #[serde(default)]
    list: Option<List>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Row {
    group: String,
    kind: String,
    message_id: Option<String>,
    sender: Option<String>,
    device: Option<String>,
    sent_at: i64,
    text: String,
    outgoing: bool,
    state: String,
    rejection: Option<String>,
    file: Option<Offer>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Offer {
    file_id: String,
    name: String,
    size: i64,
    media_type: String,
    key: String,
    sha256: String,
    saved_to: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct List {
    conversations: Vec<ConversationRow>,
    contacts: Vec<Contact>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct ConversationRow {
    group: String,
    name: String,
    kind: String,
    created_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Contact {
    username: String,
    account_key: String,
    first_seen: i64,
    verified: bool,
    changed_key: Option<String>,
}

/// This home's side of the backup.
struct State {
    key: BackupKey,
    /// Chunks this home last wrote or restored (the rollback check).
    count: u64,
    /// The newest history row already in the backup.
    backed_up: i64,
    /// Digest of the conversation list last uploaded.
    list_digest: Option<Vec<u8>>,
    last_ms: Option<i64>,
    restored_ms: Option<i64>,
}

/// What `hush backup status` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupStatus {
    /// This home has the backup key (backups are on).
    pub enabled: bool,
    /// Chunks on the server, and their bytes.
    pub chunks: u64,
    pub bytes: u64,
    /// When the newest chunk was written (by the account key's signed head).
    pub last_backup_ms: Option<i64>,
    /// History rows not in the backup yet (0: the backup is complete).
    pub waiting: u64,
    pub recovery_key_set: bool,
    /// When this home last restored from the backup.
    pub restored_ms: Option<i64>,
}

impl BackupStatus {
    pub fn complete(&self) -> bool {
        self.enabled && self.waiting == 0
    }
}

/// What one upload did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Uploaded {
    pub chunks: u64,
    pub rows: u64,
    pub bytes: u64,
}

/// What a restore added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restored {
    pub chunks: u64,
    pub rows: u64,
    pub conversations: u64,
}

fn malformed(what: &'static str) -> ClientError {
    ClientError::Backup(BackupError::Malformed(what))
}

fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

fn unb64(s: &str) -> Result<Vec<u8>, ClientError> {
    B64.decode(s).map_err(|_| malformed("backup contents"))
}

/// The account's backup key, if this home holds it (P571).
pub(crate) fn stored_key(home: &Home) -> Result<Option<BackupKey>, ClientError> {
    Ok(load_state(home)?.map(|s| s.key))
}

fn load_state(home: &Home) -> Result<Option<State>, ClientError> {
    let row = home
        .db()
        .query_row(
            "SELECT key, count, backed_up, list_digest, last_ms, restored_ms
             FROM backup_state WHERE id = 1",
            [],
            |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<Vec<u8>>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                ))
            },
        )
        .optional()
        .map_err(home_err)?;
    row.map(
        |(key, count, backed_up, list_digest, last_ms, restored_ms)| {
            Ok(State {
                key: BackupKey::from_slice(&key)
                    .map_err(|_| home_err("the home's backup key is damaged"))?,
                count: count.max(0) as u64,
                backed_up,
                list_digest,
                last_ms,
                restored_ms,
            })
        },
    )
    .transpose()
}

/// Keeps `key` as this home's backup key (counts start over only for a new key).
pub(crate) fn save_key(home: &Home, key: &BackupKey) -> Result<(), ClientError> {
    home.db()
        .execute(
            "INSERT INTO backup_state (id, key) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET key = excluded.key",
            [key.expose().as_slice()],
        )
        .map_err(home_err)?;
    Ok(())
}

fn account_key(home: &Home) -> Result<AccountKey, ClientError> {
    home.account_key()?
        .ok_or_else(|| home_err("this home has no account key"))
}

/// P570: the server's record of the backup.
pub(crate) async fn server_status(conn: &Connection) -> Result<BackupSummary, ClientError> {
    match conn
        .request(Body::BackupStatus(pb::BackupStatus {}))
        .await?
    {
        Response::BackupInfo(s) => Ok(s),
        other => Err(unexpected(&other)),
    }
}

/// P571: signed by the account key, which the server checks.
async fn set_keys(
    conn: &Connection,
    account: &AccountKey,
    password: Option<Vec<u8>>,
    recovery: Option<Vec<u8>>,
) -> Result<(), ClientError> {
    let (password, recovery) = (password.unwrap_or_default(), recovery.unwrap_or_default());
    let signature = hush_crypto::backup::sign_keys(account, &password, &recovery);
    match conn
        .request(Body::BackupKeys(pb::BackupKeys {
            wrapped_password: password.into(),
            wrapped_recovery: recovery.into(),
            signature: signature.into(),
        }))
        .await?
    {
        Response::BackupKeysSet => Ok(()),
        other => Err(unexpected(&other)),
    }
}

/// At registration: a new backup key, wrapped under the export key and a new
/// recovery key, which is returned to be shown once.
pub(crate) async fn set_up(
    home: &Home,
    conn: &Connection,
    export_key: &[u8],
    account: &AccountKey,
) -> Result<RecoveryKey, ClientError> {
    let key = BackupKey::generate();
    let recovery = RecoveryKey::generate();
    let public = account.public();
    let by_password = hush_crypto::backup::wrap(&key, export_key, Wrap::Password, &public)?;
    let by_recovery = hush_crypto::backup::wrap(&key, recovery.expose(), Wrap::Recovery, &public)?;
    // Kept first, with the wraps still to hand over: an account the server made while
    // it could not keep the wraps (storage full) gets them on a later connection.
    save_key(home, &key)?;
    home.db()
        .execute(
            "UPDATE backup_state SET pending_password = ?1, pending_recovery = ?2 WHERE id = 1",
            [by_password.as_slice(), by_recovery.as_slice()],
        )
        .map_err(home_err)?;
    if let Err(e) = send_pending_keys(home, conn, account).await {
        tracing::warn!(error = %e, "the backup keys wait on this device until the server can keep them");
    }
    Ok(recovery)
}

/// Hands the server wrapped keys this home made but could not send yet (P571).
pub(crate) async fn send_pending_keys(
    home: &Home,
    conn: &Connection,
    account: &AccountKey,
) -> Result<(), ClientError> {
    type Wraps = (Option<Vec<u8>>, Option<Vec<u8>>);
    let pending: Option<Wraps> = home
        .db()
        .query_row(
            "SELECT pending_password, pending_recovery FROM backup_state WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(home_err)?;
    let Some((password, recovery)) = pending.filter(|(p, r)| p.is_some() || r.is_some()) else {
        return Ok(());
    };
    set_keys(conn, account, password, recovery).await?;
    home.db()
        .execute(
            "UPDATE backup_state SET pending_password = NULL, pending_recovery = NULL WHERE id = 1",
            [],
        )
        .map_err(home_err)?;
    tracing::info!("the backup keys are on the server now");
    Ok(())
}

/// At login: the account's backup key, opened with the export key of this login (or
/// made now, for an account that had none yet). `None` when the server holds only a
/// recovery wrap: `hush backup restore --recovery-key` opens it then.
pub(crate) async fn adopt_key(
    home: &Home,
    conn: &Connection,
    export_key: &[u8],
    account: &AccountKey,
) -> Result<Option<BackupKey>, ClientError> {
    let public = account.public();
    let summary = server_status(conn).await?;
    let key = match (&summary.wrapped_password, &summary.wrapped_recovery) {
        (Some(wrapped), _) => {
            hush_crypto::backup::unwrap(wrapped, export_key, Wrap::Password, &public)?
        }
        (None, Some(_)) => return Ok(None),
        (None, None) => {
            let key = BackupKey::generate();
            let wrapped = hush_crypto::backup::wrap(&key, export_key, Wrap::Password, &public)?;
            set_keys(conn, account, Some(wrapped), None).await?;
            key
        }
    };
    save_key(home, &key)?;
    Ok(Some(key))
}

/// A new recovery key for the backup key this home holds; the old one stops working.
pub(crate) async fn new_recovery_key(
    home: &Home,
    conn: &Connection,
) -> Result<RecoveryKey, ClientError> {
    let state = load_state(home)?.ok_or_else(not_enabled)?;
    let account = account_key(home)?;
    let recovery = RecoveryKey::generate();
    let wrapped = hush_crypto::backup::wrap(
        &state.key,
        recovery.expose(),
        Wrap::Recovery,
        &account.public(),
    )?;
    set_keys(conn, &account, None, Some(wrapped)).await?;
    Ok(recovery)
}

fn not_enabled() -> ClientError {
    ClientError::Invalid(
        "this home has no backup key: log in again on this home, or restore with \
         `hush backup restore --recovery-key`"
            .into(),
    )
}

/// The backup key opened with the recovery key (which is then this home's too).
pub(crate) async fn key_from_recovery(
    home: &Home,
    conn: &Connection,
    recovery: &RecoveryKey,
) -> Result<BackupKey, ClientError> {
    let account = account_key(home)?;
    let summary = server_status(conn).await?;
    let wrapped = summary.wrapped_recovery.ok_or_else(|| {
        ClientError::Invalid(
            "the server holds no recovery-key copy of this account's backup key".into(),
        )
    })?;
    let key = hush_crypto::backup::unwrap(
        &wrapped,
        recovery.expose(),
        Wrap::Recovery,
        &account.public(),
    )?;
    save_key(home, &key)?;
    Ok(key)
}

/// The chain to append to: the server's, checked against the account key and this
/// home's memory of how far the backup got.
fn chain_on_server(
    summary: &BackupSummary,
    account: &AccountPublicKey,
    remembered: u64,
) -> Result<Chain, ClientError> {
    let Some(head) = &summary.head else {
        if remembered > 0 {
            return Err(BackupError::RolledBack {
                got: 0,
                want: remembered,
            }
            .into());
        }
        return Ok(Chain::default());
    };
    let head = Head::verify(head, account)?;
    if head.chain.count != summary.count {
        return Err(BackupError::Tampered.into());
    }
    if head.chain.count < remembered {
        return Err(BackupError::RolledBack {
            got: head.chain.count,
            want: remembered,
        }
        .into());
    }
    Ok(head.chain)
}

/// The conversation list and contacts as they stand.
fn current_list(home: &Home) -> Result<List, ClientError> {
    let db = home.db();
    let mut stmt = db
        .prepare_cached("SELECT group_id, name, kind, created_at FROM conversations ORDER BY name")
        .map_err(home_err)?;
    let conversations = stmt
        .query_map([], |r| {
            Ok(ConversationRow {
                group: b64(&r.get::<_, Vec<u8>>(0)?),
                name: r.get(1)?,
                kind: r.get(2)?,
                created_at: r.get(3)?,
            })
        })
        .map_err(home_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(home_err)?;
    let mut stmt = db
        .prepare_cached(
            "SELECT username, account_key, first_seen, verified, changed_key
             FROM contacts ORDER BY username",
        )
        .map_err(home_err)?;
    let contacts = stmt
        .query_map([], |r| {
            Ok(Contact {
                username: r.get(0)?,
                account_key: b64(&r.get::<_, Vec<u8>>(1)?),
                first_seen: r.get(2)?,
                verified: r.get(3)?,
                changed_key: r.get::<_, Option<Vec<u8>>>(4)?.map(|k| b64(&k)),
            })
        })
        .map_err(home_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(home_err)?;
    Ok(List {
        conversations,
        contacts,
    })
}

fn digest_of(list: &List) -> Result<Vec<u8>, ClientError> {
    let bytes = serde_json::to_vec(list).map_err(|e| home_err(format!("backup list: {e}")))?;
    Ok(Sha256::digest(bytes).to_vec())
}

/// The newest row that may go into a backup: rows still sending wait.
fn settled_until(home: &Home) -> Result<i64, ClientError> {
    home.db()
        .query_row(
            "SELECT COALESCE((SELECT MIN(id) - 1 FROM history WHERE state = 'sending'),
                             (SELECT MAX(id) FROM history), 0)",
            [],
            |r| r.get(0),
        )
        .map_err(home_err)
}

/// History rows after `after` up to `until`, at most `limit`.
fn rows_after(
    home: &Home,
    after: i64,
    until: i64,
    limit: usize,
) -> Result<Vec<(i64, Row)>, ClientError> {
    let mut stmt = home
        .db()
        .prepare_cached(
            "SELECT h.id, h.group_id, h.kind, h.message_id, h.sender, h.device, h.sent_at,
                    h.text, h.outgoing, h.state, h.rejection,
                    f.file_id, f.name, f.size, f.media_type, f.key, f.sha256, f.saved_to
             FROM history h
             LEFT JOIN file_offers f ON h.kind = 'file' AND f.message_id = h.message_id
             WHERE h.id > ?1 AND h.id <= ?2 ORDER BY h.id LIMIT ?3",
        )
        .map_err(home_err)?;
    stmt.query_map(params![after, until, limit as i64], |r| {
        let file = match r.get::<_, Option<Vec<u8>>>(11)? {
            Some(file_id) => Some(Offer {
                file_id: b64(&file_id),
                name: r.get(12)?,
                size: r.get(13)?,
                media_type: r.get(14)?,
                key: b64(&r.get::<_, Vec<u8>>(15)?),
                sha256: b64(&r.get::<_, Vec<u8>>(16)?),
                saved_to: r.get(17)?,
            }),
            None => None,
        };
        Ok((
            r.get(0)?,
            Row {
                group: b64(&r.get::<_, Vec<u8>>(1)?),
                kind: r.get(2)?,
                message_id: r.get(3)?,
                sender: r.get(4)?,
                device: r.get(5)?,
                sent_at: r.get(6)?,
                text: r.get(7)?,
                outgoing: r.get(8)?,
                state: r.get(9)?,
                rejection: r.get(10)?,
                file,
            },
        ))
    })
    .map_err(home_err)?
    .collect::<Result<Vec<_>, _>>()
    .map_err(home_err)
}

/// A chunk's plaintext, the last row it holds, the list digest it brings, its rows.
struct NextChunk(Vec<u8>, i64, Option<Vec<u8>>, u64);

/// The next chunk to upload: its plaintext, the last row it holds and the list
/// digest it brings; `None` when the backup has everything.
fn next_chunk(home: &Home, state: &State) -> Result<Option<NextChunk>, ClientError> {
    let list = current_list(home)?;
    let digest = digest_of(&list)?;
    let list_changed = state.list_digest.as_deref() != Some(digest.as_slice());
    let until = settled_until(home)?;
    let mut rows = rows_after(home, state.backed_up, until, ROWS_PER_CHUNK)?;
    if rows.is_empty() && !list_changed {
        return Ok(None);
    }
    loop {
        let last = rows.last().map_or(state.backed_up, |(id, _)| *id);
        let body = ChunkBody {
            v: 1,
            history: rows.iter().map(|(_, r)| r.clone()).collect(),
            list: list_changed.then(|| list.clone()),
        };
        let bytes = serde_json::to_vec(&body).map_err(|e| home_err(format!("backup: {e}")))?;
        if bytes.len() <= CHUNK_TARGET || rows.len() <= 1 {
            let n = rows.len() as u64;
            return Ok(Some(NextChunk(
                bytes,
                last,
                list_changed.then_some(digest),
                n,
            )));
        }
        rows.truncate(rows.len() / 2);
    }
}

/// Uploads what the backup does not have yet (P572). Does nothing on a home without
/// a backup key.
pub(crate) async fn upload(home: &Home, conn: &Connection) -> Result<Uploaded, ClientError> {
    let Some(mut state) = load_state(home)? else {
        return Ok(Uploaded::default());
    };
    let account = account_key(home)?;
    let public = account.public();
    let mut done = Uploaded::default();
    for _ in 0..CHUNKS_PER_RUN {
        let Some(NextChunk(plain, last_row, digest, rows)) = next_chunk(home, &state)? else {
            break;
        };
        let mut tries = 0;
        let count = loop {
            let summary = server_status(conn).await?;
            let base = chain_on_server(&summary, &public, state.count)?;
            let index = base.count;
            let sealed = seal_chunk(&state.key, &public, index, &plain)?;
            let head = Head {
                chain: base.then(&sealed),
                written_ms: now_ms(),
            }
            .sign(&account);
            let size = sealed.len() as u64;
            match conn
                .request(Body::BackupAppend(pb::BackupAppend {
                    index,
                    chunk: sealed.into(),
                    head: head.into(),
                }))
                .await
            {
                Ok(Response::BackupAppended { count }) => {
                    done.bytes += size;
                    break count;
                }
                Ok(other) => return Err(unexpected(&other)),
                Err(ClientError::Server(e))
                    if e.code == ErrorCode::BackupConflict && tries < CONFLICT_RETRIES =>
                {
                    // Another device of the account appended first: append after it.
                    tries += 1;
                }
                Err(e) => return Err(e),
            }
        };
        let now = now_ms();
        home.db()
            .execute(
                "UPDATE backup_state SET count = ?1, backed_up = ?2,
                        list_digest = COALESCE(?3, list_digest), last_ms = ?4
                 WHERE id = 1",
                params![count as i64, last_row, digest, now],
            )
            .map_err(home_err)?;
        state.count = count;
        state.backed_up = last_row;
        if let Some(d) = digest {
            state.list_digest = Some(d);
        }
        state.last_ms = Some(now);
        done.chunks += 1;
        done.rows += rows;
    }
    if done.chunks > 0 {
        tracing::info!(
            chunks = done.chunks,
            rows = done.rows,
            bytes = done.bytes,
            "backed up"
        );
    }
    Ok(done)
}

/// Whether history waits for a backup (the engine's cue to upload).
pub(crate) fn pending(home: &Home) -> Result<bool, ClientError> {
    let Some(state) = load_state(home)? else {
        return Ok(false);
    };
    Ok(settled_until(home)? > state.backed_up)
}

/// P570: the backup as the server holds it and as this home sees it.
pub(crate) async fn status(home: &Home, conn: &Connection) -> Result<BackupStatus, ClientError> {
    let state = load_state(home)?;
    let summary = server_status(conn).await?;
    let account = account_key(home)?;
    let remembered = state.as_ref().map_or(0, |s| s.count);
    chain_on_server(&summary, &account.public(), remembered)?;
    let last_backup_ms = match &summary.head {
        Some(h) => Some(Head::verify(h, &account.public())?.written_ms),
        None => None,
    };
    let waiting = match &state {
        Some(s) => home
            .db()
            .query_row(
                "SELECT COUNT(*) FROM history WHERE id > ?1",
                [s.backed_up],
                |r| r.get::<_, i64>(0),
            )
            .map_err(home_err)?
            .max(0) as u64,
        None => 0,
    };
    Ok(BackupStatus {
        enabled: state.is_some(),
        chunks: summary.count,
        bytes: summary.bytes,
        last_backup_ms,
        waiting,
        recovery_key_set: summary.wrapped_recovery.is_some(),
        restored_ms: state.and_then(|s| s.restored_ms),
    })
}

/// Downloads and checks the whole backup, then adds it to the home (P573). Nothing
/// is written unless every chunk checked out.
pub(crate) async fn restore(
    home: &Home,
    conn: &Connection,
    key: BackupKey,
    on: OnProgress<'_>,
) -> Result<Restored, ClientError> {
    let account = account_key(home)?.public();
    let summary = server_status(conn).await?;
    let Some(head) = &summary.head else {
        return Err(ClientError::Invalid(
            "there is no backup of this account on the server yet".into(),
        ));
    };
    let head = Head::verify(head, &account)?;
    let remembered = load_state(home)?.map(|s| s.count).filter(|c| *c > 0);
    let total = head.chain.count;
    let mut check = Restore::new(key, account, head, remembered)?;
    let mut rows = Vec::new();
    let mut list = None;
    let mut from = 0u64;
    loop {
        let chunks = match conn
            .request(Body::BackupFetch(pb::BackupFetch { from }))
            .await?
        {
            Response::BackupChunks(c) => c,
            other => return Err(unexpected(&other)),
        };
        if chunks.is_empty() {
            break;
        }
        for (index, sealed) in chunks {
            let plain = check.next(index, &sealed)?;
            let body: ChunkBody =
                serde_json::from_slice(&plain).map_err(|_| malformed("backup chunk"))?;
            if body.v != 1 {
                return Err(malformed("backup chunk version"));
            }
            rows.extend(body.history);
            if body.list.is_some() {
                list = body.list;
            }
            from = index + 1;
        }
        if on(Progress { done: from, total }).is_break() {
            return Err(ClientError::Interrupted);
        }
    }
    let head = check.finish()?;
    let restored = apply(home, rows, list)?;
    let last = crate::history::last_row(home)?;
    let digest = digest_of(&current_list(home)?)?;
    home.db()
        .execute(
            "UPDATE backup_state SET count = MAX(count, ?1), backed_up = MAX(backed_up, ?2),
                    list_digest = ?3, restored_ms = ?4
             WHERE id = 1",
            params![head.chain.count as i64, last, digest, now_ms()],
        )
        .map_err(home_err)?;
    tracing::info!(
        chunks = head.chain.count,
        rows = restored.rows,
        "restored the backup"
    );
    Ok(Restored {
        chunks: head.chain.count,
        ..restored
    })
}

/// Writes restored rows ahead of the home's history, in their order, in one
/// transaction; rows the home has already are skipped.
fn apply(home: &Home, rows: Vec<Row>, list: Option<List>) -> Result<Restored, ClientError> {
    let db = home.db();
    home.write(|| {
        let mut out = Restored::default();
        if let Some(list) = &list {
            for c in &list.conversations {
                // Conversations come back read-only until this device is added to
                // them again (as a new device); a Welcome then replaces the row.
                let kind = if c.kind == "left" { "left" } else { "restored" };
                out.conversations += db
                    .execute(
                        "INSERT OR IGNORE INTO conversations (group_id, name, kind, created_at)
                         VALUES (?1, ?2, ?3, ?4)",
                        params![unb64(&c.group)?, c.name, kind, c.created_at],
                    )
                    .map_err(home_err)? as u64;
            }
            for c in &list.contacts {
                let key = unb64(&c.account_key)?;
                let changed = c.changed_key.as_deref().map(unb64).transpose()?;
                db.execute(
                    "INSERT OR IGNORE INTO contacts
                     (username, account_key, first_seen, verified, changed_key)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![c.username, key, c.first_seen, c.verified, changed],
                )
                .map_err(home_err)?;
                if c.verified {
                    db.execute(
                        "UPDATE contacts SET verified = 1 WHERE username = ?1 AND account_key = ?2",
                        params![c.username, key],
                    )
                    .map_err(home_err)?;
                }
            }
        }
        let mut fresh = Vec::with_capacity(rows.len());
        for r in rows {
            let group = unb64(&r.group)?;
            let known: bool = match &r.message_id {
                Some(id) => db
                    .query_row(
                        "SELECT EXISTS(SELECT 1 FROM history WHERE message_id = ?1 AND group_id = ?2)",
                        params![id, group],
                        |x| x.get(0),
                    )
                    .map_err(home_err)?,
                None => db
                    .query_row(
                        "SELECT EXISTS(SELECT 1 FROM history WHERE group_id = ?1 AND kind = ?2
                                       AND sent_at = ?3 AND text = ?4)",
                        params![group, r.kind, r.sent_at, r.text],
                        |x| x.get(0),
                    )
                    .map_err(home_err)?,
            };
            if !known {
                fresh.push((group, r));
            }
        }
        // Ahead of every row the home has: restored history is older than anything
        // this device saw itself.
        let first: Option<i64> = db
            .query_row("SELECT MIN(id) FROM history", [], |r| r.get(0))
            .map_err(home_err)?;
        let start = match first {
            Some(min) => min - fresh.len() as i64,
            None => 1,
        };
        for (i, (group, r)) in fresh.iter().enumerate() {
            let state = match r.kind.as_str() {
                "message" | "file" => "restored",
                _ => r.state.as_str(),
            };
            db.execute(
                "INSERT INTO history (id, group_id, kind, message_id, sender, device, sent_at,
                                      text, outgoing, state, unread, streamed, rejection)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0, 1, ?11)",
                params![
                    start + i as i64,
                    group,
                    r.kind,
                    r.message_id,
                    r.sender,
                    r.device,
                    r.sent_at,
                    r.text,
                    r.outgoing,
                    state,
                    r.rejection
                ],
            )
            .map_err(home_err)?;
            if let (Some(f), Some(message_id)) = (&r.file, &r.message_id) {
                db.execute(
                    "INSERT OR IGNORE INTO file_offers
                     (message_id, file_id, group_id, name, size, media_type, key, sha256, saved_to)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL)",
                    params![
                        message_id,
                        unb64(&f.file_id)?,
                        group,
                        f.name,
                        f.size,
                        f.media_type,
                        unb64(&f.key)?,
                        unb64(&f.sha256)?
                    ],
                )
                .map_err(home_err)?;
            }
            out.rows += 1;
        }
        Ok(out)
    })
}

impl crate::Client {
    /// `hush backup now`: uploads what the backup does not have yet.
    pub async fn backup_now(&self) -> Result<Uploaded, ClientError> {
        self.call(move |e| {
            Box::pin(async move {
                let live = e.live()?;
                if load_state(&e.home)?.is_none() {
                    return Err(not_enabled());
                }
                let done = upload(&e.home, &live.conn).await?;
                Ok(done)
            })
        })
        .await
    }

    /// `hush backup status`.
    pub async fn backup_status(&self) -> Result<BackupStatus, ClientError> {
        self.call(move |e| {
            Box::pin(async move {
                let live = e.live()?;
                status(&e.home, &live.conn).await
            })
        })
        .await
    }

    /// `hush backup recovery-key`: a new recovery key (shown once; the old one stops
    /// working).
    pub async fn new_recovery_key(&self) -> Result<RecoveryKey, ClientError> {
        self.call(move |e| {
            Box::pin(async move {
                let live = e.live()?;
                new_recovery_key(&e.home, &live.conn).await
            })
        })
        .await
    }

    /// The recovery key made when this home registered the account, once.
    pub async fn take_recovery_key(&self) -> Option<RecoveryKey> {
        self.call(move |e| Box::pin(async move { Ok(e.fresh_recovery.take()) }))
            .await
            .ok()
            .flatten()
    }

    /// `hush backup restore` (and `login --restore`): checks the whole backup, then
    /// adds its history as restored rows. With `recovery`, the backup key is opened
    /// with the recovery key instead of the one this home holds.
    pub async fn restore_backup(
        &self,
        recovery: Option<RecoveryKey>,
        on: OnProgress<'_>,
    ) -> Result<Restored, ClientError> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Progress>();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = std::sync::Arc::clone(&stop);
        let job = self.call(move |e| {
            Box::pin(async move {
                let live = e.live()?;
                let key = match &recovery {
                    Some(r) => key_from_recovery(&e.home, &live.conn, r).await?,
                    None => load_state(&e.home)?.ok_or_else(not_enabled)?.key,
                };
                let mut report = move |p: Progress| {
                    let _ = tx.send(p);
                    if stopped.load(std::sync::atomic::Ordering::Relaxed) {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                };
                let restored = restore(&e.home, &live.conn, key, &mut report).await?;
                e.skip_published()?;
                Ok(restored)
            })
        });
        tokio::pin!(job);
        loop {
            tokio::select! {
                r = &mut job => return r,
                Some(p) = rx.recv() => {
                    if on(p).is_break() {
                        stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_body_round_trips_and_tolerates_missing_parts() {
        let body: ChunkBody = serde_json::from_str(r#"{"v":1}"#).unwrap();
        assert!(body.history.is_empty() && body.list.is_none());
        let row = Row {
            group: b64(&[1; 16]),
            kind: "message".into(),
            message_id: Some("m1".into()),
            sender: Some("ann".into()),
            device: None,
            sent_at: 5,
            text: "hi".into(),
            outgoing: false,
            state: "received".into(),
            rejection: None,
            file: None,
        };
        let bytes = serde_json::to_vec(&ChunkBody {
            v: 1,
            history: vec![row],
            list: None,
        })
        .unwrap();
        let back: ChunkBody = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back.history[0].text, "hi");
        assert!(unb64("not base64!").is_err());
    }
}
