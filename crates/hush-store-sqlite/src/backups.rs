//! P570–P573: users' encrypted backups (opaque chunks, a signed head, wrapped keys).
use hush_proto::ids::UserId;
use hush_store::{BackupRecord, NewBackupChunk, Quota, StoreError};
use rusqlite::{Connection, OptionalExtension, params};

use crate::{backend, cached_exec, cached_row};

fn user_exists(conn: &Connection, user: &[u8]) -> Result<(), StoreError> {
    let exists: bool = cached_row(
        conn,
        "SELECT EXISTS(SELECT 1 FROM users WHERE user_id = ?1)",
        [user],
        |r| r.get(0),
    )
    .map_err(backend)?;
    if exists {
        Ok(())
    } else {
        Err(StoreError::UserNotFound)
    }
}

fn ensure_row(conn: &Connection, user: &[u8]) -> Result<(), StoreError> {
    user_exists(conn, user)?;
    cached_exec(
        conn,
        "INSERT INTO backups (user_id) VALUES (?1) ON CONFLICT (user_id) DO NOTHING",
        [user],
    )
    .map_err(backend)?;
    Ok(())
}

pub(crate) fn get(conn: &Connection, user: UserId) -> Result<Option<BackupRecord>, StoreError> {
    cached_row(
        conn,
        "SELECT count, head, bytes, updated_ms, wrapped_password, wrapped_recovery
         FROM backups WHERE user_id = ?1",
        [user.as_bytes().as_slice()],
        |r| {
            Ok(BackupRecord {
                count: r.get::<_, i64>(0)?.max(0) as u64,
                head: r.get(1)?,
                bytes: r.get::<_, i64>(2)?.max(0) as u64,
                updated_ms: r.get(3)?,
                wrapped_password: r.get(4)?,
                wrapped_recovery: r.get(5)?,
            })
        },
    )
    .optional()
    .map_err(backend)
}

pub(crate) fn set_keys(
    conn: &Connection,
    user: UserId,
    wrapped_password: Option<Vec<u8>>,
    wrapped_recovery: Option<Vec<u8>>,
) -> Result<(), StoreError> {
    let uid = user.as_bytes().as_slice();
    ensure_row(conn, uid)?;
    cached_exec(
        conn,
        "UPDATE backups SET wrapped_password = COALESCE(?2, wrapped_password),
                            wrapped_recovery = COALESCE(?3, wrapped_recovery)
         WHERE user_id = ?1",
        params![uid, wrapped_password, wrapped_recovery],
    )
    .map_err(backend)?;
    Ok(())
}

pub(crate) fn append(conn: &Connection, c: &NewBackupChunk) -> Result<u64, StoreError> {
    let uid = c.user.as_bytes().as_slice();
    ensure_row(conn, uid)?;
    let (count, bytes): (i64, i64) = cached_row(
        conn,
        "SELECT count, bytes FROM backups WHERE user_id = ?1",
        [uid],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .map_err(backend)?;
    let count = count.max(0) as u64;
    if c.index != count {
        return Err(StoreError::BackupConflict { count });
    }
    let total = (bytes.max(0) as u64).saturating_add(c.chunk.len() as u64);
    if total > c.max_bytes {
        return Err(StoreError::QuotaExceeded {
            quota: Quota::BackupBytes,
            limit: c.max_bytes,
        });
    }
    let index = i64::try_from(c.index).map_err(|_| StoreError::backend("backup index"))?;
    cached_exec(
        conn,
        "INSERT INTO backup_chunks (user_id, idx, chunk) VALUES (?1, ?2, ?3)",
        params![uid, index, c.chunk],
    )
    .map_err(backend)?;
    cached_exec(
        conn,
        "UPDATE backups SET count = ?2, head = ?3, bytes = ?4, updated_ms = ?5
         WHERE user_id = ?1",
        params![
            uid,
            index + 1,
            c.head,
            i64::try_from(total).unwrap_or(i64::MAX),
            c.now_ms
        ],
    )
    .map_err(backend)?;
    Ok(count + 1)
}

pub(crate) fn chunks(
    conn: &Connection,
    user: UserId,
    from: u64,
    max_bytes: usize,
) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    let Ok(from) = i64::try_from(from) else {
        return Ok(Vec::new());
    };
    let mut stmt = conn
        .prepare_cached(
            "SELECT idx, chunk FROM backup_chunks WHERE user_id = ?1 AND idx >= ?2 ORDER BY idx",
        )
        .map_err(backend)?;
    let mut rows = stmt
        .query(params![user.as_bytes().as_slice(), from])
        .map_err(backend)?;
    let mut out = Vec::new();
    let mut total = 0usize;
    while let Some(row) = rows.next().map_err(backend)? {
        let idx: i64 = row.get(0).map_err(backend)?;
        let chunk: Vec<u8> = row.get(1).map_err(backend)?;
        if !out.is_empty() && total + chunk.len() > max_bytes {
            break;
        }
        total += chunk.len();
        out.push((idx.max(0) as u64, chunk));
    }
    Ok(out)
}
