//! Channels (P550-P556), files (P560-P564), backups (P570-P573) and sealed GroupInfos
//! (P535, P536).
use hush_proto::ids::{DeviceId, FileId, GroupId, UserId};
use hush_store::{
    BackupRecord, ChannelRecord, ChannelUpdate, FileRecord, NewBackupChunk, NewFile, Quota,
    StoreError,
};
use sqlx::PgConnection;

use crate::messaging::is_channel;
use crate::{big, corrupt, unbig};

type ChannelRow = (
    [u8; 16],
    String,
    Option<String>,
    Option<Vec<u8>>,
    Vec<u8>,
    i64,
    i64,
);

/// P550: channels, by name; only the one called `name` if given.
pub(crate) async fn channels(
    c: &mut PgConnection,
    name: Option<&str>,
) -> Result<Vec<ChannelRecord>, StoreError> {
    let rows = rows!(
        c,
        ChannelRow,
        "SELECT ch.group_id, n.name, ch.password_hash, ch.totp_secret, ch.group_info, g.epoch,
                (SELECT COUNT(DISTINCT d.user_id) FROM group_members m
                 JOIN devices d ON d.device_id = m.device_id WHERE m.group_id = ch.group_id)
         FROM channels ch JOIN groups g ON g.group_id = ch.group_id
         JOIN group_names n ON n.group_id = ch.group_id
         WHERE $1::text IS NULL OR n.name = $1 ORDER BY n.name",
        name
    );
    let mut out = Vec::with_capacity(rows.len());
    for (gid, name, password_hash, totp_secret, group_info, epoch, members) in rows {
        let admins = all!(
            c,
            [u8; 16],
            "SELECT user_id FROM channel_admins WHERE group_id = $1 ORDER BY user_id",
            gid
        );
        out.push(ChannelRecord {
            group_id: GroupId::from_bytes(gid),
            name,
            password_hash,
            totp_secret,
            group_info,
            epoch: unbig(epoch),
            admins: admins.into_iter().map(UserId::from_bytes).collect(),
            members: u32::try_from(members).unwrap_or(u32::MAX),
        });
    }
    Ok(out)
}

pub(crate) async fn grant_channel_join(
    c: &mut PgConnection,
    group: &GroupId,
    device: &DeviceId,
    totp_step: Option<(UserId, u64)>,
    expires_ms: i64,
) -> Result<bool, StoreError> {
    if !is_channel(c, group).await? {
        return Err(StoreError::GroupNotFound);
    }
    let gid = group.as_bytes();
    if let Some((user, step)) = totp_step {
        let step = big(step);
        let fresh = exec!(
            c,
            "INSERT INTO channel_totp_steps (group_id, user_id, step) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            gid,
            user.as_bytes(),
            step
        );
        if fresh == 0 {
            return Ok(false);
        }
        exec!(
            c,
            "DELETE FROM channel_totp_steps WHERE group_id = $1 AND user_id = $2 AND step < $3 - 2",
            gid,
            user.as_bytes(),
            step
        );
    }
    exec!(
        c,
        "INSERT INTO channel_grants (group_id, device_id, expires_at) VALUES ($1, $2, $3)
         ON CONFLICT (group_id, device_id) DO UPDATE SET expires_at = EXCLUDED.expires_at",
        gid,
        device.as_bytes(),
        expires_ms
    );
    Ok(true)
}

pub(crate) async fn update_channel(
    c: &mut PgConnection,
    group: &GroupId,
    u: &ChannelUpdate,
) -> Result<(), StoreError> {
    if !is_channel(c, group).await? {
        return Err(StoreError::GroupNotFound);
    }
    let gid = group.as_bytes();
    if let Some(p) = &u.password_hash {
        exec!(
            c,
            "UPDATE channels SET password_hash = $2 WHERE group_id = $1",
            gid,
            p.as_deref()
        );
    }
    if let Some(t) = &u.totp_secret {
        exec!(
            c,
            "UPDATE channels SET totp_secret = $2 WHERE group_id = $1",
            gid,
            t.as_deref()
        );
        exec!(c, "DELETE FROM channel_totp_steps WHERE group_id = $1", gid);
    }
    if let Some(admins) = &u.admins {
        exec!(c, "DELETE FROM channel_admins WHERE group_id = $1", gid);
        let ids: Vec<[u8; 16]> = admins.iter().map(|a| *a.as_bytes()).collect();
        exec!(
            c,
            "INSERT INTO channel_admins (group_id, user_id)
             SELECT $1, user_id FROM users WHERE user_id = ANY($2) ON CONFLICT DO NOTHING",
            gid,
            ids
        );
    }
    Ok(())
}

pub(crate) async fn delete_channel(
    c: &mut PgConnection,
    group: &GroupId,
) -> Result<(), StoreError> {
    if !is_channel(c, group).await? {
        return Err(StoreError::GroupNotFound);
    }
    // The group takes its name, members and channel rows; queued entries stay.
    exec!(
        c,
        "DELETE FROM groups WHERE group_id = $1",
        group.as_bytes()
    );
    Ok(())
}

pub(crate) async fn create_file(
    c: &mut PgConnection,
    f: &NewFile,
) -> Result<FileRecord, StoreError> {
    let gid = f.group_id.as_bytes();
    if !one!(
        c,
        bool,
        "SELECT EXISTS (SELECT 1 FROM groups WHERE group_id = $1)",
        gid
    ) {
        return Err(StoreError::GroupNotFound);
    }
    if !one!(
        c,
        bool,
        "SELECT EXISTS (SELECT 1 FROM group_members WHERE group_id = $1 AND device_id = $2)",
        gid,
        f.uploader.as_bytes()
    ) {
        return Err(StoreError::NotAMember);
    }
    let user = opt!(
        c,
        [u8; 16],
        "SELECT user_id FROM devices WHERE device_id = $1",
        f.uploader.as_bytes()
    )
    .ok_or(StoreError::DeviceNotFound(f.uploader))?;
    if f.size > f.max_file_bytes {
        return Err(StoreError::QuotaExceeded {
            quota: Quota::FileSize,
            limit: f.max_file_bytes,
        });
    }
    let held = one!(
        c,
        i64,
        "SELECT COALESCE(SUM(size), 0)::BIGINT FROM files WHERE uploader_user = $1",
        user
    );
    if unbig(held).saturating_add(f.size) > f.user_file_bytes {
        return Err(StoreError::QuotaExceeded {
            quota: Quota::FileBytes,
            limit: f.user_file_bytes,
        });
    }
    let fid = f.file_id.as_bytes();
    exec!(
        c,
        "INSERT INTO files (file_id, group_id, uploader, uploader_user, size, created_ms)
         VALUES ($1, $2, $3, $4, $5, $6)",
        fid,
        gid,
        f.uploader.as_bytes(),
        user,
        big(f.size),
        f.now_ms
    );
    exec!(
        c,
        "INSERT INTO file_recipients (file_id, device_id)
         SELECT $1, device_id FROM group_members WHERE group_id = $2 AND device_id <> $3",
        fid,
        gid,
        f.uploader.as_bytes()
    );
    file(c, &f.file_id)
        .await?
        .ok_or_else(|| corrupt("a file just written"))
}

pub(crate) async fn file(
    c: &mut PgConnection,
    id: &FileId,
) -> Result<Option<FileRecord>, StoreError> {
    let fid = id.as_bytes();
    let row = row!(
        c,
        ([u8; 16], [u8; 16], [u8; 16], i64, i64, bool),
        "SELECT group_id, uploader, uploader_user, size, created_ms, complete
         FROM files WHERE file_id = $1",
        fid
    );
    let Some((group, uploader, user, size, created_ms, complete)) = row else {
        return Ok(None);
    };
    let rows = rows!(
        c,
        ([u8; 16], bool),
        "SELECT device_id, fetched FROM file_recipients WHERE file_id = $1 ORDER BY device_id",
        fid
    );
    let recipients = rows.iter().map(|(d, _)| DeviceId::from_bytes(*d)).collect();
    let fetched = rows
        .iter()
        .filter(|(_, done)| *done)
        .map(|(d, _)| DeviceId::from_bytes(*d))
        .collect();
    Ok(Some(FileRecord {
        file_id: *id,
        group_id: GroupId::from_bytes(group),
        uploader: DeviceId::from_bytes(uploader),
        uploader_user: UserId::from_bytes(user),
        size: u64::try_from(size).map_err(|_| corrupt("a file's size"))?,
        created_ms,
        complete,
        recipients,
        fetched,
    }))
}

pub(crate) async fn complete_file(c: &mut PgConnection, id: &FileId) -> Result<(), StoreError> {
    exec!(
        c,
        "UPDATE files SET complete = TRUE WHERE file_id = $1",
        id.as_bytes()
    );
    Ok(())
}

pub(crate) async fn file_fetched(
    c: &mut PgConnection,
    id: &FileId,
    device: &DeviceId,
) -> Result<bool, StoreError> {
    let fid = id.as_bytes();
    exec!(
        c,
        "UPDATE file_recipients SET fetched = TRUE WHERE file_id = $1 AND device_id = $2",
        fid,
        device.as_bytes()
    );
    let left = opt!(
        c,
        i64,
        "SELECT (SELECT COUNT(*) FROM file_recipients WHERE file_id = $1 AND NOT fetched)
         FROM files WHERE file_id = $1",
        fid
    );
    if left == Some(0) {
        delete_file(c, id).await?;
        return Ok(true);
    }
    Ok(false)
}

pub(crate) async fn delete_file(c: &mut PgConnection, id: &FileId) -> Result<bool, StoreError> {
    let n = exec!(c, "DELETE FROM files WHERE file_id = $1", id.as_bytes());
    Ok(n > 0)
}

pub(crate) async fn expire_files(
    c: &mut PgConnection,
    before_ms: i64,
) -> Result<Vec<FileId>, StoreError> {
    let mut ids = all!(
        c,
        [u8; 16],
        "DELETE FROM files WHERE created_ms < $1 RETURNING file_id",
        before_ms
    );
    ids.sort();
    Ok(ids.into_iter().map(FileId::from_bytes).collect())
}

async fn ensure_backup(c: &mut PgConnection, user: &UserId) -> Result<(), StoreError> {
    if !crate::accounts::user_exists(c, user).await? {
        return Err(StoreError::UserNotFound);
    }
    exec!(
        c,
        "INSERT INTO backups (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING",
        user.as_bytes()
    );
    Ok(())
}

pub(crate) async fn backup(
    c: &mut PgConnection,
    user: &UserId,
) -> Result<Option<BackupRecord>, StoreError> {
    let row = row!(
        c,
        (i64, Vec<u8>, i64, i64, Option<Vec<u8>>, Option<Vec<u8>>),
        "SELECT count, head, bytes, updated_ms, wrapped_password, wrapped_recovery
         FROM backups WHERE user_id = $1",
        user.as_bytes()
    );
    Ok(row.map(
        |(count, head, bytes, updated_ms, wrapped_password, wrapped_recovery)| BackupRecord {
            count: unbig(count),
            head,
            bytes: unbig(bytes),
            updated_ms,
            wrapped_password,
            wrapped_recovery,
        },
    ))
}

pub(crate) async fn set_backup_keys(
    c: &mut PgConnection,
    user: &UserId,
    wrapped_password: Option<&[u8]>,
    wrapped_recovery: Option<&[u8]>,
) -> Result<(), StoreError> {
    ensure_backup(c, user).await?;
    exec!(
        c,
        "UPDATE backups SET wrapped_password = COALESCE($2, wrapped_password),
                            wrapped_recovery = COALESCE($3, wrapped_recovery)
         WHERE user_id = $1",
        user.as_bytes(),
        wrapped_password,
        wrapped_recovery
    );
    Ok(())
}

pub(crate) async fn append_backup(
    c: &mut PgConnection,
    ch: &NewBackupChunk,
) -> Result<u64, StoreError> {
    ensure_backup(c, &ch.user).await?;
    let uid = ch.user.as_bytes();
    let (count, bytes) = row!(
        c,
        (i64, i64),
        "SELECT count, bytes FROM backups WHERE user_id = $1 FOR UPDATE",
        uid
    )
    .ok_or_else(|| corrupt("a backup row just made"))?;
    let count = unbig(count);
    if ch.index != count {
        return Err(StoreError::BackupConflict { count });
    }
    let total = unbig(bytes).saturating_add(ch.chunk.len() as u64);
    if total > ch.max_bytes {
        return Err(StoreError::QuotaExceeded {
            quota: Quota::BackupBytes,
            limit: ch.max_bytes,
        });
    }
    exec!(
        c,
        "INSERT INTO backup_chunks (user_id, idx, chunk) VALUES ($1, $2, $3)",
        uid,
        big(ch.index),
        ch.chunk.as_slice()
    );
    exec!(
        c,
        "UPDATE backups SET count = $2, head = $3, bytes = $4, updated_ms = $5 WHERE user_id = $1",
        uid,
        big(count + 1),
        ch.head.as_slice(),
        big(total),
        ch.now_ms
    );
    Ok(count + 1)
}

pub(crate) async fn backup_chunks(
    c: &mut PgConnection,
    user: &UserId,
    from: u64,
    max_bytes: usize,
) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    let Ok(from) = i64::try_from(from) else {
        return Ok(Vec::new());
    };
    use futures::StreamExt as _;
    let mut stream = sqlx::query_as::<_, (i64, Vec<u8>)>(
        "SELECT idx, chunk FROM backup_chunks WHERE user_id = $1 AND idx >= $2 ORDER BY idx",
    )
    .bind(user.as_bytes())
    .bind(from)
    .fetch(&mut *c);
    let mut out = Vec::new();
    let mut total = 0usize;
    while let Some(row) = stream.next().await {
        let (idx, chunk) = row.map_err(crate::pg)?;
        if !out.is_empty() && total + chunk.len() > max_bytes {
            break;
        }
        total += chunk.len();
        out.push((unbig(idx), chunk));
    }
    Ok(out)
}

/// P535.
pub(crate) async fn put_group_info(
    c: &mut PgConnection,
    device: &DeviceId,
    group: &GroupId,
    epoch: u64,
    sealed: &[u8],
) -> Result<(), StoreError> {
    let member = opt!(
        c,
        bool,
        "SELECT EXISTS (SELECT 1 FROM group_members WHERE group_id = $1 AND device_id = $2)
         FROM groups WHERE group_id = $1",
        group.as_bytes(),
        device.as_bytes()
    )
    .ok_or(StoreError::GroupNotFound)?;
    if !member {
        return Err(StoreError::NotAMember);
    }
    exec!(
        c,
        "INSERT INTO group_infos (user_id, group_id, epoch, sealed)
         SELECT user_id, $2, $3, $4 FROM devices WHERE device_id = $1
         ON CONFLICT (user_id, group_id) DO UPDATE
           SET epoch = EXCLUDED.epoch, sealed = EXCLUDED.sealed
           WHERE EXCLUDED.epoch >= group_infos.epoch",
        device.as_bytes(),
        group.as_bytes(),
        big(epoch),
        sealed
    );
    Ok(())
}

/// P536.
pub(crate) async fn group_infos(
    c: &mut PgConnection,
    device: &DeviceId,
) -> Result<Vec<(GroupId, u64, Vec<u8>)>, StoreError> {
    let rows = rows!(
        c,
        ([u8; 16], i64, Vec<u8>),
        "SELECT gi.group_id, gi.epoch, gi.sealed FROM group_infos gi
         JOIN devices me ON me.device_id = $1 AND gi.user_id = me.user_id
         WHERE EXISTS (SELECT 1 FROM group_members gm
           JOIN devices d ON d.device_id = gm.device_id
           WHERE gm.group_id = gi.group_id AND d.user_id = me.user_id)
         AND NOT EXISTS (SELECT 1 FROM group_members gm
           WHERE gm.group_id = gi.group_id AND gm.device_id = $1)
         ORDER BY gi.group_id",
        device.as_bytes()
    );
    Ok(rows
        .into_iter()
        .map(|(g, epoch, sealed)| (GroupId::from_bytes(g), unbig(epoch), sealed))
        .collect())
}

/// P537.
pub(crate) async fn group_info(
    c: &mut PgConnection,
    user: &UserId,
    group: &GroupId,
) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
    let row = row!(
        c,
        (i64, Vec<u8>),
        "SELECT gi.epoch, gi.sealed FROM group_infos gi
         WHERE gi.user_id = $1 AND gi.group_id = $2 AND EXISTS (
           SELECT 1 FROM group_members gm JOIN devices d ON d.device_id = gm.device_id
           WHERE gm.group_id = $2 AND d.user_id = $1)",
        user.as_bytes(),
        group.as_bytes()
    );
    Ok(row.map(|(epoch, sealed)| (unbig(epoch), sealed)))
}
