//! P560–P564: file records and their recipients (the bytes are in the blob store).
use hush_proto::ids::{DeviceId, FileId, UserId};
use hush_store::{FileRecord, NewFile, Quota, StoreError};
use rusqlite::{Connection, OptionalExtension, params};

use crate::{backend, cached_exec, cached_row, corrupt, id16};

fn size_i64(size: u64) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}

pub(crate) fn create(conn: &Connection, f: &NewFile) -> Result<FileRecord, StoreError> {
    let gid = f.group_id.as_bytes().as_slice();
    let exists: bool = cached_row(
        conn,
        "SELECT EXISTS(SELECT 1 FROM groups WHERE group_id = ?1)",
        [gid],
        |r| r.get(0),
    )
    .map_err(backend)?;
    if !exists {
        return Err(StoreError::GroupNotFound);
    }
    let member: bool = cached_row(
        conn,
        "SELECT EXISTS(SELECT 1 FROM group_members WHERE group_id = ?1 AND device_id = ?2)",
        [gid, f.uploader.as_bytes().as_slice()],
        |r| r.get(0),
    )
    .map_err(backend)?;
    if !member {
        return Err(StoreError::NotAMember);
    }
    let user: Vec<u8> = cached_row(
        conn,
        "SELECT user_id FROM devices WHERE device_id = ?1",
        [f.uploader.as_bytes().as_slice()],
        |r| r.get(0),
    )
    .optional()
    .map_err(backend)?
    .ok_or(StoreError::DeviceNotFound(f.uploader))?;
    if f.size > f.max_file_bytes {
        return Err(StoreError::QuotaExceeded {
            quota: Quota::FileSize,
            limit: f.max_file_bytes,
        });
    }
    let held: i64 = cached_row(
        conn,
        "SELECT COALESCE(SUM(size), 0) FROM files WHERE uploader_user = ?1",
        [&user],
        |r| r.get(0),
    )
    .map_err(backend)?;
    if (held.max(0) as u64).saturating_add(f.size) > f.user_file_bytes {
        return Err(StoreError::QuotaExceeded {
            quota: Quota::FileBytes,
            limit: f.user_file_bytes,
        });
    }
    let fid = f.file_id.as_bytes().as_slice();
    cached_exec(
        conn,
        "INSERT INTO files (file_id, group_id, uploader, uploader_user, size, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            fid,
            gid,
            f.uploader.as_bytes().as_slice(),
            user,
            size_i64(f.size),
            f.now_ms
        ],
    )
    .map_err(backend)?;
    cached_exec(
        conn,
        "INSERT INTO file_recipients (file_id, device_id)
         SELECT ?1, device_id FROM group_members WHERE group_id = ?2 AND device_id <> ?3",
        params![fid, gid, f.uploader.as_bytes().as_slice()],
    )
    .map_err(backend)?;
    get(conn, f.file_id)?.ok_or_else(|| corrupt("a file just written"))
}

pub(crate) fn get(conn: &Connection, id: FileId) -> Result<Option<FileRecord>, StoreError> {
    let fid = id.as_bytes().as_slice();
    type Row = (Vec<u8>, Vec<u8>, Vec<u8>, i64, i64, bool);
    let row: Option<Row> = cached_row(
        conn,
        "SELECT group_id, uploader, uploader_user, size, created_ms, complete
         FROM files WHERE file_id = ?1",
        [fid],
        |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        },
    )
    .optional()
    .map_err(backend)?;
    let Some((group, uploader, user, size, created_ms, complete)) = row else {
        return Ok(None);
    };
    let mut stmt = conn
        .prepare_cached(
            "SELECT device_id, fetched FROM file_recipients WHERE file_id = ?1 ORDER BY device_id",
        )
        .map_err(backend)?;
    let rows = stmt
        .query_map([fid], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, bool>(1)?))
        })
        .map_err(backend)?;
    let (mut recipients, mut fetched) = (Vec::new(), Vec::new());
    for row in rows {
        let (device, done) = row.map_err(backend)?;
        let device = DeviceId::from_bytes(id16(device)?);
        recipients.push(device);
        if done {
            fetched.push(device);
        }
    }
    Ok(Some(FileRecord {
        file_id: id,
        group_id: hush_proto::ids::GroupId::from_bytes(id16(group)?),
        uploader: DeviceId::from_bytes(id16(uploader)?),
        uploader_user: UserId::from_bytes(id16(user)?),
        size: u64::try_from(size).map_err(|_| corrupt("a file's size"))?,
        created_ms,
        complete,
        recipients,
        fetched,
    }))
}

pub(crate) fn complete(conn: &Connection, id: FileId) -> Result<(), StoreError> {
    cached_exec(
        conn,
        "UPDATE files SET complete = 1 WHERE file_id = ?1",
        [id.as_bytes().as_slice()],
    )
    .map_err(backend)?;
    Ok(())
}

pub(crate) fn fetched(conn: &Connection, id: FileId, device: DeviceId) -> Result<bool, StoreError> {
    let fid = id.as_bytes().as_slice();
    cached_exec(
        conn,
        "UPDATE file_recipients SET fetched = 1 WHERE file_id = ?1 AND device_id = ?2",
        [fid, device.as_bytes().as_slice()],
    )
    .map_err(backend)?;
    let left: Option<i64> = cached_row(
        conn,
        "SELECT (SELECT COUNT(*) FROM file_recipients WHERE file_id = ?1 AND fetched = 0)
         FROM files WHERE file_id = ?1",
        [fid],
        |r| r.get(0),
    )
    .optional()
    .map_err(backend)?;
    if left == Some(0) {
        delete(conn, id)?;
        return Ok(true);
    }
    Ok(false)
}

pub(crate) fn delete(conn: &Connection, id: FileId) -> Result<bool, StoreError> {
    let n = cached_exec(
        conn,
        "DELETE FROM files WHERE file_id = ?1",
        [id.as_bytes().as_slice()],
    )
    .map_err(backend)?;
    Ok(n > 0)
}

pub(crate) fn expire(conn: &Connection, before_ms: i64) -> Result<Vec<FileId>, StoreError> {
    let mut stmt = conn
        .prepare_cached("DELETE FROM files WHERE created_ms < ?1 RETURNING file_id")
        .map_err(backend)?;
    let rows = stmt
        .query_map([before_ms], |r| r.get::<_, Vec<u8>>(0))
        .map_err(backend)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(FileId::from_bytes(id16(row.map_err(backend)?)?));
    }
    out.sort();
    Ok(out)
}
