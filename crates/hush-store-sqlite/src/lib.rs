//! The SQLite adapter of the hush storage port: the default, single-node backend.
//!
//! One database file in WAL mode with `synchronous=FULL`, so a method that returned
//! `Ok` survives a power cut. Other processes (`hushd user ...`) may open the same file
//! while the server runs; SQLite's locking and a busy timeout serialise them.
//!
//! Modules: [`migrations`] (schema files, applied in order, never edited once shipped).
//! A new operation: implement the new `Store` method here as one transaction.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod backups;
pub mod export;
mod files;
pub mod migrations;
mod pool;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pool::Durability;

use async_trait::async_trait;
use hush_proto::ids::{DeviceId, GroupId, HandshakeKey, UserId, Username};
use hush_proto::response::{Entry, EntryKind};
use hush_store::{
    ChannelRecord, ChannelUpdate, Claimed, CommitListener, Delivered, DeviceRecord, GroupRecord,
    HeldRequest, MailboxPage, NewCommit, NewDevice, NewGroup, NewInvite, NewMessage, NewUser,
    Owner, Pruned, Quota, Quotas, Session, Store, StoreError, TwoFactor, UserRecord, UserSummary,
};
use rusqlite::{Connection, OptionalExtension, params};

/// A [`Store`] on one SQLite file: a writer thread with group commit and a few
/// reader threads (`pool`).
#[derive(Clone)]
pub struct SqliteStore {
    pool: Arc<pool::Pool>,
    /// Told of committed entries, on the writer's thread (P443).
    listener: Arc<std::sync::RwLock<Option<Arc<dyn CommitListener>>>>,
}

/// Reader connections (WAL readers run beside the writer).
const READERS: usize = 2;

fn connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(backend)?;
    // Every statement of the adapter stays prepared.
    conn.set_prepared_statement_cache_capacity(256);
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(backend)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;",
    )
    .map_err(backend)?;
    Ok(conn)
}

/// Free pages given back to the file system per retention pass (P453), 4 KiB each: a
/// pass never holds the writer for long, and a large drain shrinks over a few passes.
const VACUUM_PAGES: u32 = 20_000;

/// Puts the database in `auto_vacuum = INCREMENTAL`, so retention can give freed pages
/// back (a large drain otherwise leaves the file at its largest for good). A database
/// made before needs one `VACUUM` to switch; if that cannot run now (no room for the
/// copy), it stays as it was and this is tried again at the next start.
fn incremental_vacuum_on(conn: &Connection) {
    let mode: i64 = conn
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .unwrap_or(2);
    if mode == 2 {
        return;
    }
    tracing::info!(
        "switching the database to incremental vacuum (once; a large database takes a while)"
    );
    if let Err(e) = conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;") {
        tracing::warn!(error = %e, "the database could not be switched to incremental vacuum yet");
    }
}

/// A SQLite failure as a store error: a full disk or database is `StorageFull`
/// (P451); a busy or locked database may pass, so it is retryable.
fn backend(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode as C;
    match e.sqlite_error_code() {
        Some(C::DiskFull) => StoreError::StorageFull,
        Some(C::DatabaseBusy | C::DatabaseLocked) => StoreError::backend_from("sqlite", e, true),
        _ => StoreError::backend_from("sqlite", e, false),
    }
}

/// `query_row` on a statement prepared once per connection (parsing SQL was a
/// visible share of a send's CPU).
fn cached_row<T, P, F>(conn: &Connection, sql: &str, params: P, f: F) -> rusqlite::Result<T>
where
    P: rusqlite::Params,
    F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
{
    conn.prepare_cached(sql)?.query_row(params, f)
}

/// `execute` on a statement prepared once per connection.
fn cached_exec<P: rusqlite::Params>(
    conn: &Connection,
    sql: &str,
    params: P,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// A stored record that does not parse: corruption or a bug, never retryable.
fn corrupt(what: &str) -> StoreError {
    StoreError::backend(format!("corrupt record: {what}"))
}

impl SqliteStore {
    /// Opens the database like [`open`](Self::open), refusing writes that would grow
    /// it past `max_bytes` (0: no limit) with `StorageFull` (P451). Deleting (acks,
    /// retention) needs no room, so mailboxes still drain at the limit.
    pub fn open_limited(path: &Path, max_bytes: u64) -> Result<Self, StoreError> {
        let mut writer = connection(path)?;
        migrations::apply(&mut writer)?;
        restrict(path)?;
        incremental_vacuum_on(&writer);
        if max_bytes > 0 {
            let page: i64 = writer
                .query_row("PRAGMA page_size", [], |r| r.get(0))
                .map_err(backend)?;
            let pages = (max_bytes / page.max(512) as u64).max(1);
            let set: i64 = writer
                .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
                    r.get(0)
                })
                .map_err(backend)?;
            tracing::info!(max_bytes, pages = set, "database size limited");
        }
        let readers = (0..READERS)
            .map(|_| connection(path))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SqliteStore {
            pool: Arc::new(pool::Pool::start(writer, readers)?),
            listener: Arc::default(),
        })
    }

    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_limited(path, 0)
    }

    /// Runs `f`, a write that may queue entries, and tells the listener what it
    /// queued once it committed, in commit order.
    async fn run_reported<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<(T, Published), StoreError> + Send + 'static,
    {
        let listener = Arc::clone(&self.listener);
        self.pool
            .write_then(Durability::Full, f, move |published: Published| {
                if published.entries.is_empty() && published.woken.is_empty() {
                    return;
                }
                if let Ok(l) = listener.read()
                    && let Some(l) = l.as_ref()
                {
                    l.committed(&published.entries, &published.woken);
                }
            })
            .await
    }

    /// Runs `f` as one write (group-committed, `pool`).
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.pool.write(f).await
    }

    /// Runs `f`, which only reads, on a reader connection.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.pool.read(f).await
    }
}

fn id16(bytes: Vec<u8>) -> Result<[u8; 16], StoreError> {
    <[u8; 16]>::try_from(bytes.as_slice()).map_err(|_| corrupt("stored id is not 16 bytes"))
}

/// The database and its WAL files are the owner's only: they hold the OPAQUE server
/// setup (offline password guessing) and every account's records.
fn restrict(path: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let Some(name) = name else { return Ok(()) };
        for suffix in ["", "-wal", "-shm"] {
            let p = path.with_file_name(format!("{name}{suffix}"));
            if p.exists() {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).map_err(
                    |e| StoreError::backend_from(format!("restricting {}", p.display()), e, false),
                )?;
            }
        }
    }
    Ok(())
}

fn key32(bytes: Vec<u8>) -> Result<[u8; 32], StoreError> {
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| corrupt("stored account key is not 32 bytes"))
}

fn username(s: String) -> Result<Username, StoreError> {
    Username::parse(&s).map_err(|_| corrupt("stored username"))
}

fn user_id_of(conn: &Connection, name: &Username) -> Result<Vec<u8>, StoreError> {
    cached_row(
        conn,
        "SELECT user_id FROM users WHERE username = ?1",
        [name.as_str()],
        |r| r.get(0),
    )
    .optional()
    .map_err(backend)?
    .ok_or(StoreError::UserNotFound)
}

fn insert_device(conn: &Connection, user: &[u8], d: &NewDevice) -> Result<(), StoreError> {
    cached_exec(
        conn,
        "INSERT INTO devices (device_id, user_id, name, token_digest, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            d.device_id.as_bytes().as_slice(),
            user,
            d.name,
            d.token_digest.as_slice(),
            d.created_at
        ],
    )
    .map_err(backend)?;
    cached_exec(
        conn,
        "INSERT OR IGNORE INTO device_owners (device_id, user_id) VALUES (?1, ?2)",
        params![d.device_id.as_bytes().as_slice(), user],
    )
    .map_err(backend)?;
    Ok(())
}

/// P423, P433: the first result of a handshake retried with the same client key.
fn earlier_handshake(
    conn: &Connection,
    sender: &DeviceId,
    key: Option<&HandshakeKey>,
) -> Result<Option<Delivered>, StoreError> {
    let Some(key) = key else { return Ok(None) };
    let row: Option<(i64, i64, i64)> = cached_row(
        conn,
        "SELECT epoch, group_seq, stored_at FROM handshakes
             WHERE sender_device = ?1 AND client_key = ?2",
        params![sender.as_bytes().as_slice(), key.as_bytes().as_slice()],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .optional()
    .map_err(backend)?;
    Ok(row.map(|(epoch, seq, at)| Delivered {
        epoch: epoch as u64,
        group_seq: seq as u64,
        stored_at_ms: at,
        recipients: Vec::new(),
        undelivered: Vec::new(),
        held: Vec::new(),
    }))
}

fn record_handshake(
    conn: &Connection,
    sender: &DeviceId,
    key: Option<&HandshakeKey>,
    group: &GroupId,
    done: &Delivered,
) -> Result<(), StoreError> {
    let Some(key) = key else { return Ok(()) };
    cached_exec(
        conn,
        "INSERT INTO handshakes (sender_device, client_key, group_id, epoch, group_seq, stored_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            sender.as_bytes().as_slice(),
            key.as_bytes().as_slice(),
            group.as_bytes().as_slice(),
            done.epoch as i64,
            done.group_seq as i64,
            done.stored_at_ms
        ],
    )
    .map_err(backend)?;
    Ok(())
}

fn set_flag(
    conn: &Connection,
    column: &str,
    name: &Username,
    value: bool,
) -> Result<(), StoreError> {
    // `column` is one of two literals chosen below, never input.
    let sql = format!("UPDATE users SET {column} = ?1 WHERE username = ?2");
    let changed = cached_exec(conn, &sql, params![value, name.as_str()]).map_err(backend)?;
    if changed == 0 {
        return Err(StoreError::UserNotFound);
    }
    Ok(())
}

fn kind_code(kind: EntryKind) -> i64 {
    i32::from(kind) as i64
}

/// The group's epoch and whether `device` is a member, or why not.
/// P550: the channel rows matching `filter` (on `n.name` or `c.group_id`), by name.
fn channel_rows(
    conn: &Connection,
    filter: &str,
    arg: &dyn rusqlite::ToSql,
) -> Result<Vec<ChannelRecord>, StoreError> {
    let sql = format!(
        "SELECT c.group_id, n.name, c.password_hash, c.totp_secret, c.group_info, g.epoch,
                (SELECT COUNT(DISTINCT d.user_id) FROM group_members m
                 JOIN devices d ON d.device_id = m.device_id WHERE m.group_id = c.group_id)
         FROM channels c JOIN groups g ON g.group_id = c.group_id
         JOIN group_names n ON n.group_id = c.group_id
         WHERE {filter} ORDER BY n.name"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(backend)?;
    let rows = stmt
        .query_map([arg], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<Vec<u8>>>(3)?,
                r.get::<_, Vec<u8>>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, i64>(6)?,
            ))
        })
        .map_err(backend)?;
    let mut out = Vec::new();
    for row in rows {
        let (gid, name, password_hash, totp_secret, group_info, epoch, members) =
            row.map_err(backend)?;
        let group_id = GroupId::from_bytes(id16(gid)?);
        let mut admins = Vec::new();
        let mut stmt = conn
            .prepare_cached(
                "SELECT user_id FROM channel_admins WHERE group_id = ?1 ORDER BY user_id",
            )
            .map_err(backend)?;
        let ids = stmt
            .query_map([group_id.as_bytes().as_slice()], |r| r.get::<_, Vec<u8>>(0))
            .map_err(backend)?;
        for id in ids {
            admins.push(UserId::from_bytes(id16(id.map_err(backend)?)?));
        }
        out.push(ChannelRecord {
            group_id,
            name,
            password_hash,
            totp_secret,
            group_info,
            epoch: u64::try_from(epoch).unwrap_or(0),
            admins,
            members: u32::try_from(members).unwrap_or(u32::MAX),
        });
    }
    Ok(out)
}

fn is_channel(conn: &Connection, group: &[u8]) -> Result<bool, StoreError> {
    cached_row(
        conn,
        "SELECT EXISTS (SELECT 1 FROM channels WHERE group_id = ?1)",
        [group],
        |r| r.get(0),
    )
    .map_err(backend)
}

fn group_state(
    conn: &Connection,
    group: &GroupId,
    device: &DeviceId,
) -> Result<(u64, bool), StoreError> {
    let epoch: Option<i64> = cached_row(
        conn,
        "SELECT epoch FROM groups WHERE group_id = ?1",
        [group.as_bytes().as_slice()],
        |r| r.get(0),
    )
    .optional()
    .map_err(backend)?;
    let epoch = epoch.ok_or(StoreError::GroupNotFound)?;
    let member: bool = cached_row(
        conn,
        "SELECT EXISTS (SELECT 1 FROM group_members WHERE group_id = ?1 AND device_id = ?2)",
        params![group.as_bytes().as_slice(), device.as_bytes().as_slice()],
        |r| r.get(0),
    )
    .map_err(backend)?;
    Ok((epoch as u64, member))
}

fn members_of(conn: &Connection, group: &GroupId) -> Result<Vec<DeviceId>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT device_id FROM group_members WHERE group_id = ?1 ORDER BY device_id",
        )
        .map_err(backend)?;
    let rows = stmt
        .query_map([group.as_bytes().as_slice()], |r| r.get::<_, Vec<u8>>(0))
        .map_err(backend)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(DeviceId::from_bytes(id16(row.map_err(backend)?)?));
    }
    Ok(out)
}

fn device_exists(conn: &Connection, device: &DeviceId) -> Result<bool, StoreError> {
    cached_row(
        conn,
        "SELECT EXISTS (SELECT 1 FROM devices WHERE device_id = ?1)",
        [device.as_bytes().as_slice()],
        |r| r.get(0),
    )
    .map_err(backend)
}

fn user_exists(conn: &Connection, user: &UserId) -> Result<bool, StoreError> {
    cached_row(
        conn,
        "SELECT EXISTS (SELECT 1 FROM users WHERE user_id = ?1)",
        [user.as_bytes().as_slice()],
        |r| r.get(0),
    )
    .map_err(backend)
}

/// One message to store.
#[derive(Clone, Copy)]
struct Outgoing<'a> {
    group: &'a GroupId,
    kind: EntryKind,
    sender: &'a DeviceId,
    payload: &'a [u8],
    recipients: &'a [DeviceId],
    now_ms: i64,
    quotas: &'a Quotas,
}

/// What one committed write tells the listener (P443).
#[derive(Default)]
struct Published {
    entries: Vec<(DeviceId, Entry)>,
    woken: Vec<DeviceId>,
}

impl Published {
    fn entries(entries: Vec<(DeviceId, Entry)>) -> Self {
        Published {
            entries,
            woken: Vec::new(),
        }
    }

    fn woken(woken: Vec<DeviceId>) -> Self {
        Published {
            entries: Vec::new(),
            woken,
        }
    }
}

/// Where one stored message went.
struct Enqueued {
    seq: u64,
    /// Skipped for a full mailbox (P450).
    undelivered: Vec<DeviceId>,
    /// Held until an invitation is answered (P460).
    held: Vec<DeviceId>,
    /// The sending device's user, looked up once for the caller too.
    sender_user: Option<Vec<u8>>,
    /// The entries queued, for the listener (P443).
    pushed: Vec<(DeviceId, Entry)>,
}

fn user_of(conn: &Connection, device: &DeviceId) -> Result<Option<Vec<u8>>, StoreError> {
    conn.prepare_cached("SELECT user_id FROM device_owners WHERE device_id = ?1")
        .and_then(|mut s| {
            s.query_row([device.as_bytes().as_slice()], |r| r.get(0))
                .optional()
        })
        .map_err(backend)
}

/// P460: whether `user` takes Welcomes from `sender` without asking: the same user,
/// consent recorded, or a named group both have joined (not just been invited to),
/// other than `group`.
fn accepts_welcomes(
    conn: &Connection,
    user: &[u8],
    sender: &[u8],
    group: &GroupId,
) -> Result<bool, StoreError> {
    if user == sender {
        return Ok(true);
    }
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM consent WHERE user_id = ?1 AND peer_id = ?2)
         OR EXISTS (
            SELECT 1 FROM devices da JOIN group_members a ON a.device_id = da.device_id
            JOIN group_members b ON b.group_id = a.group_id
            JOIN devices db ON db.device_id = b.device_id
            WHERE da.user_id = ?1 AND db.user_id = ?2 AND a.group_id != ?3
              AND a.group_id NOT IN (SELECT group_id FROM direct_groups)
              AND NOT EXISTS (SELECT 1 FROM held h WHERE h.group_id = a.group_id
                              AND h.device_id IN (a.device_id, b.device_id)))",
    )
    .and_then(|mut s| {
        s.query_row(params![user, sender, group.as_bytes().as_slice()], |r| {
            r.get(0)
        })
    })
    .map_err(backend)
}

/// P460: `user` accepts Welcomes from `peer` from now on.
fn record_consent(conn: &Connection, user: &[u8], peer: &[u8]) -> Result<(), StoreError> {
    if user == peer {
        return Ok(());
    }
    conn.prepare_cached("INSERT OR IGNORE INTO consent (user_id, peer_id) VALUES (?1, ?2)")
        .and_then(|mut s| s.execute(params![user, peer]))
        .map_err(backend)?;
    Ok(())
}

fn is_direct(conn: &Connection, group: &GroupId) -> Result<bool, StoreError> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM direct_groups WHERE group_id = ?1)")
        .and_then(|mut s| s.query_row([group.as_bytes().as_slice()], |r| r.get(0)))
        .map_err(backend)
}

/// Stores one message for its recipients within the quotas (P450, P452), holding it
/// for devices with an unanswered invitation to the group (P460). A message left with
/// no recipient is not stored.
fn enqueue(conn: &Connection, m: Outgoing<'_>) -> Result<Enqueued, StoreError> {
    let size = m.payload.len() as u64;
    let sender_user = user_of(conn, m.sender)?;
    if let Some(user) = &sender_user {
        let used: i64 = conn
            .prepare_cached(
                "SELECT COALESCE((SELECT bytes FROM user_storage WHERE user_id = ?1), 0)",
            )
            .and_then(|mut s| s.query_row([user], |r| r.get(0)))
            .map_err(backend)?;
        if (used.max(0) as u64).saturating_add(size) > m.quotas.user_bytes {
            return Err(StoreError::QuotaExceeded {
                quota: Quota::UserBytes,
                limit: m.quotas.user_bytes,
            });
        }
    }
    let seq: i64 = conn
        .prepare_cached(
            "UPDATE groups SET next_seq = next_seq + 1 WHERE group_id = ?1 RETURNING next_seq - 1",
        )
        .and_then(|mut s| s.query_row([m.group.as_bytes().as_slice()], |r| r.get(0)))
        .map_err(backend)?;
    let mut recipients: Vec<DeviceId> = m.recipients.to_vec();
    let mut undelivered = Vec::new();
    if m.kind == EntryKind::Application {
        let mut usage = conn
            .prepare_cached("SELECT entries, bytes FROM mailbox_usage WHERE device_id = ?1")
            .map_err(backend)?;
        let mut room = Vec::with_capacity(recipients.len());
        for d in recipients {
            let (entries, bytes): (i64, i64) = usage
                .query_row([d.as_bytes().as_slice()], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(backend)?
                .unwrap_or((0, 0));
            let full = (entries.max(0) as u64).saturating_add(1) > m.quotas.mailbox_entries
                || (bytes.max(0) as u64).saturating_add(size) > m.quotas.mailbox_bytes;
            if full {
                undelivered.push(d);
            } else {
                room.push(d);
            }
        }
        if room.is_empty() && !undelivered.is_empty() {
            return Err(StoreError::MailboxFull);
        }
        let mut missed = conn
            .prepare_cached("UPDATE mailbox_usage SET missed = missed + 1 WHERE device_id = ?1")
            .map_err(backend)?;
        for d in &undelivered {
            missed.execute([d.as_bytes().as_slice()]).map_err(backend)?;
        }
        recipients = room;
    }
    // P460: who gets it held, and for whose invitation.
    let mut hold: Vec<(DeviceId, Vec<u8>)> = Vec::new();
    let mut invited: Vec<DeviceId> = Vec::new();
    if m.kind == EntryKind::Welcome && !is_direct(conn, m.group)? {
        if let Some(sender) = &sender_user {
            let mut decided: Vec<(Vec<u8>, bool)> = Vec::new();
            let mut deliver = Vec::new();
            for d in recipients {
                let Some(owner) = user_of(conn, &d)? else {
                    continue;
                };
                let accepts = match decided.iter().find(|(u, _)| *u == owner) {
                    Some((_, a)) => *a,
                    None => {
                        let a = accepts_welcomes(conn, &owner, sender, m.group)?;
                        decided.push((owner.clone(), a));
                        a
                    }
                };
                if accepts {
                    deliver.push(d);
                } else {
                    invited.push(d);
                    hold.push((d, sender.clone()));
                }
            }
            for (owner, accepts) in &decided {
                if *accepts {
                    continue;
                }
                if size > m.quotas.request_bytes {
                    return Err(StoreError::QuotaExceeded {
                        quota: Quota::RequestBytes,
                        limit: m.quotas.request_bytes,
                    });
                }
                let pending: i64 = conn
                    .prepare_cached(
                        "SELECT COUNT(DISTINCT h.group_id) FROM held h
                         JOIN devices d ON d.device_id = h.device_id WHERE d.user_id = ?1",
                    )
                    .and_then(|mut s| s.query_row([owner], |r| r.get(0)))
                    .map_err(backend)?;
                if pending.max(0) as u64 >= m.quotas.requests_per_user {
                    return Err(StoreError::QuotaExceeded {
                        quota: Quota::Requests,
                        limit: m.quotas.requests_per_user,
                    });
                }
            }
            recipients = deliver;
        }
    } else {
        let any_held: bool = conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM held WHERE group_id = ?1)")
            .and_then(|mut s| s.query_row([m.group.as_bytes().as_slice()], |r| r.get(0)))
            .map_err(backend)?;
        if any_held {
            let mut inviter_of = conn
                .prepare_cached(
                    "SELECT inviter FROM held WHERE device_id = ?1 AND group_id = ?2 LIMIT 1",
                )
                .map_err(backend)?;
            let mut deliver = Vec::new();
            for d in recipients {
                let inviter: Option<Vec<u8>> = inviter_of
                    .query_row(
                        params![d.as_bytes().as_slice(), m.group.as_bytes().as_slice()],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(backend)?;
                match inviter {
                    Some(i) => hold.push((d, i)),
                    None => deliver.push(d),
                }
            }
            recipients = deliver;
        }
    }
    let held: Vec<DeviceId> = hold.iter().map(|(d, _)| *d).collect();
    if recipients.is_empty() && hold.is_empty() {
        return Ok(Enqueued {
            seq: seq as u64,
            undelivered,
            held,
            sender_user,
            pushed: Vec::new(),
        });
    }
    let message = insert_message(conn, &m, seq, size, sender_user.as_deref(), m.payload)?;
    let mut stmt = conn
        .prepare_cached("INSERT INTO deliveries (device_id, message_id) VALUES (?1, ?2)")
        .map_err(backend)?;
    let mut pushed = Vec::with_capacity(recipients.len());
    // One copy of the payload, shared by every recipient's entry.
    let payload = bytes::Bytes::copy_from_slice(m.payload);
    for d in &recipients {
        stmt.execute(params![d.as_bytes().as_slice(), message])
            .map_err(backend)?;
        pushed.push((
            *d,
            Entry {
                id: conn.last_insert_rowid() as u64,
                group_id: *m.group,
                kind: m.kind,
                payload: payload.clone(),
                sender_device: *m.sender,
                group_seq: seq as u64,
                stored_at_ms: m.now_ms,
            },
        ));
    }
    let mut keep = conn
        .prepare_cached(
            "INSERT INTO held (device_id, group_id, message_id, inviter, stored_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(backend)?;
    for (d, inviter) in &hold {
        keep.execute(params![
            d.as_bytes().as_slice(),
            m.group.as_bytes().as_slice(),
            message,
            inviter,
            m.now_ms
        ])
        .map_err(backend)?;
    }
    // P460: the invited devices are told who asked, so their users can answer.
    if !invited.is_empty()
        && let Some(sender) = &sender_user
    {
        let name: String = cached_row(
            conn,
            "SELECT username FROM users WHERE user_id = ?1",
            [sender],
            |r| r.get(0),
        )
        .map_err(backend)?;
        let notice = Outgoing {
            kind: EntryKind::Request,
            ..m
        };
        let id = insert_message(conn, &notice, seq, name.len() as u64, None, name.as_bytes())?;
        let name = bytes::Bytes::from(name.into_bytes());
        for d in &invited {
            stmt.execute(params![d.as_bytes().as_slice(), id])
                .map_err(backend)?;
            pushed.push((
                *d,
                Entry {
                    id: conn.last_insert_rowid() as u64,
                    group_id: *m.group,
                    kind: EntryKind::Request,
                    payload: name.clone(),
                    sender_device: *m.sender,
                    group_seq: seq as u64,
                    stored_at_ms: m.now_ms,
                },
            ));
        }
    }
    Ok(Enqueued {
        seq: seq as u64,
        undelivered,
        held,
        sender_user,
        pushed,
    })
}

fn insert_message(
    conn: &Connection,
    m: &Outgoing<'_>,
    seq: i64,
    size: u64,
    sender_user: Option<&[u8]>,
    payload: &[u8],
) -> Result<i64, StoreError> {
    conn.prepare_cached(
        "INSERT INTO messages (group_id, kind, sender_device, group_seq, payload, stored_at, size, sender_user)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .and_then(|mut s| {
        s.execute(params![
            m.group.as_bytes().as_slice(),
            kind_code(m.kind),
            m.sender.as_bytes().as_slice(),
            seq,
            payload,
            m.now_ms,
            size as i64,
            sender_user
        ])
    })
    .map_err(backend)?;
    Ok(conn.last_insert_rowid())
}

/// `QuotaExceeded` if the group holds more than `max` devices.
fn check_group_size(conn: &Connection, group: &[u8], max: u64) -> Result<(), StoreError> {
    let n: i64 = cached_row(
        conn,
        "SELECT COUNT(*) FROM group_members WHERE group_id = ?1",
        [group],
        |r| r.get(0),
    )
    .map_err(backend)?;
    if n.max(0) as u64 > max {
        return Err(StoreError::QuotaExceeded {
            quota: Quota::GroupMembers,
            limit: max,
        });
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    fn set_listener(&self, listener: Arc<dyn CommitListener>) {
        if let Ok(mut l) = self.listener.write() {
            *l = Some(listener);
        }
    }

    async fn secret_or_init(&self, name: &str, init: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        let name = name.to_owned();
        self.run(move |conn| {
            // The pool runs every write in its own savepoint.
            let tx: &Connection = conn;
            cached_exec(
                tx,
                "INSERT INTO server_secrets (name, value) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![name, init],
            )
            .map_err(backend)?;
            let value: Vec<u8> = cached_row(
                tx,
                "SELECT value FROM server_secrets WHERE name = ?1",
                [&name],
                |r| r.get(0),
            )
            .map_err(backend)?;
            Ok(value)
        })
        .await
    }

    async fn create_user(&self, user: NewUser) -> Result<bool, StoreError> {
        self.run(move |conn| {
            // The pool runs every write in its own savepoint.
            let tx: &Connection = conn;
            let taken: bool = cached_row(tx,
                    "SELECT EXISTS (SELECT 1 FROM users WHERE username = ?1)",
                    [user.username.as_str()],
                    |r| r.get(0),
                )
                .map_err(backend)?;
            if taken {
                return Err(StoreError::UsernameTaken);
            }
            if let Some(digest) = user.invite {
                let used = cached_exec(tx,
                        "UPDATE invites SET uses_left = uses_left - 1
                         WHERE digest = ?1 AND uses_left > 0
                           AND (expires_at IS NULL OR expires_at > ?2)",
                        params![digest.as_slice(), user.created_at],
                    )
                    .map_err(backend)?;
                if used != 1 {
                    return Err(StoreError::InviteInvalid);
                }
            }
            let uid = user.user_id.as_bytes().as_slice();
            let first: bool = cached_row(tx, "SELECT NOT EXISTS (SELECT 1 FROM users)", [], |r| {
                r.get(0)
            })
            .map_err(backend)?;
            cached_exec(tx,
                "INSERT INTO users (user_id, username, display_name, email, password_file, created_at,
                                    account_key, sealed_account_key, admin)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    uid,
                    user.username.as_str(),
                    user.display_name,
                    user.email,
                    user.password_file,
                    user.created_at,
                    user.account_key.as_slice(),
                    user.sealed_account_key,
                    first
                ],
            )
            .map_err(backend)?;
            insert_device(tx, uid, &user.device)?;
            Ok(first)
        })
        .await
    }

    async fn user_by_name(&self, name: &Username) -> Result<Option<UserRecord>, StoreError> {
        let name = name.clone();
        self.read(move |conn| {
            let row = cached_row(
                conn,
                "SELECT user_id, display_name, email, password_file, admin, disabled, created_at,
                            account_key, sealed_account_key
                     FROM users WHERE username = ?1",
                [name.as_str()],
                |r| {
                    Ok((
                        (r.get::<_, Vec<u8>>(0)?, r.get(1)?, r.get(2)?, r.get(3)?),
                        (r.get(4)?, r.get(5)?, r.get(6)?),
                        (r.get::<_, Option<Vec<u8>>>(7)?, r.get(8)?),
                    ))
                },
            )
            .optional()
            .map_err(backend)?;
            row.map(
                |(
                    (id, display_name, email, password_file),
                    (admin, disabled, created_at),
                    (account_key, sealed_account_key),
                )| {
                    Ok(UserRecord {
                        user_id: UserId::from_bytes(id16(id)?),
                        username: name.clone(),
                        display_name,
                        email,
                        password_file,
                        admin,
                        disabled,
                        created_at,
                        account_key: account_key.map(key32).transpose()?,
                        sealed_account_key,
                    })
                },
            )
            .transpose()
        })
        .await
    }

    async fn add_device(
        &self,
        user: UserId,
        device: NewDevice,
        max_devices: u64,
    ) -> Result<(), StoreError> {
        self.run(move |conn| {
            // The pool runs every write in its own savepoint.
            let tx: &Connection = conn;
            if !user_exists(tx, &user)? {
                return Err(StoreError::UserNotFound);
            }
            let have: i64 = cached_row(
                tx,
                "SELECT COUNT(*) FROM devices WHERE user_id = ?1",
                [user.as_bytes().as_slice()],
                |r| r.get(0),
            )
            .map_err(backend)?;
            if have.max(0) as u64 >= max_devices {
                return Err(StoreError::QuotaExceeded {
                    quota: Quota::Devices,
                    limit: max_devices,
                });
            }
            insert_device(tx, user.as_bytes(), &device)?;
            Ok(())
        })
        .await
    }

    async fn session(&self, token_digest: &[u8; 32]) -> Result<Option<Session>, StoreError> {
        let digest = *token_digest;
        self.read(move |conn| {
            let row = cached_row(
                conn,
                "SELECT d.device_id, u.user_id, u.username, u.display_name, u.email,
                            u.admin, u.disabled, u.created_at
                     FROM devices d JOIN users u ON u.user_id = d.user_id
                     WHERE d.token_digest = ?1",
                [digest.as_slice()],
                |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, String>(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                    ))
                },
            )
            .optional()
            .map_err(backend)?;
            row.map(
                |(d, u, name, display_name, email, admin, disabled, created_at)| {
                    Ok(Session {
                        device_id: DeviceId::from_bytes(id16(d)?),
                        user_id: UserId::from_bytes(id16(u)?),
                        username: username(name)?,
                        display_name,
                        email,
                        admin,
                        disabled,
                        created_at,
                    })
                },
            )
            .transpose()
        })
        .await
    }

    async fn remove_device(&self, device: DeviceId) -> Result<(), StoreError> {
        self.run(move |conn| {
            cached_exec(
                conn,
                "DELETE FROM devices WHERE device_id = ?1",
                [device.as_bytes().as_slice()],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn add_revocation(
        &self,
        user: UserId,
        device: DeviceId,
        statement: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.run(move |conn| {
            cached_exec(
                conn,
                "INSERT INTO revocations (user_id, device_id, statement) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user_id, device_id) DO UPDATE SET statement = excluded.statement",
                params![
                    user.as_bytes().as_slice(),
                    device.as_bytes().as_slice(),
                    statement
                ],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn revocations(&self, user: UserId) -> Result<Vec<(DeviceId, Vec<u8>)>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT device_id, statement FROM revocations WHERE user_id = ?1 ORDER BY device_id",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map([user.as_bytes().as_slice()], |r| {
                    Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
                })
                .map_err(backend)?;
            let mut out = Vec::new();
            for row in rows {
                let (d, s) = row.map_err(backend)?;
                out.push((DeviceId::from_bytes(id16(d)?), s));
            }
            Ok(out)
        })
        .await
    }

    async fn create_invite(&self, invite: NewInvite) -> Result<(), StoreError> {
        self.run(move |conn| {
            cached_exec(conn,
                "INSERT INTO invites (digest, uses_left, expires_at, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![
                    invite.digest.as_slice(),
                    invite.uses,
                    invite.expires_at,
                    invite.created_at
                ],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn invite_usable(&self, digest: &[u8; 32], now: i64) -> Result<bool, StoreError> {
        let digest = *digest;
        self.read(move |conn| {
            cached_row(
                conn,
                "SELECT EXISTS (SELECT 1 FROM invites WHERE digest = ?1 AND uses_left > 0
                                AND (expires_at IS NULL OR expires_at > ?2))",
                params![digest.as_slice(), now],
                |r| r.get(0),
            )
            .map_err(backend)
        })
        .await
    }

    async fn list_users(&self) -> Result<Vec<UserSummary>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT u.user_id, u.username, u.display_name, u.admin, u.disabled, u.created_at,
                            (SELECT COUNT(*) FROM devices d WHERE d.user_id = u.user_id)
                     FROM users u ORDER BY u.username",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, String>(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                })
                .map_err(backend)?;
            let mut out = Vec::new();
            for row in rows {
                let (id, name, display_name, admin, disabled, created_at, devices) =
                    row.map_err(backend)?;
                out.push(UserSummary {
                    user_id: UserId::from_bytes(id16(id)?),
                    username: username(name)?,
                    display_name,
                    admin,
                    disabled,
                    devices,
                    created_at,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn set_disabled(&self, name: &Username, disabled: bool) -> Result<(), StoreError> {
        let name = name.clone();
        self.run(move |conn| set_flag(conn, "disabled", &name, disabled))
            .await
    }

    async fn set_admin(&self, name: &Username, admin: bool) -> Result<(), StoreError> {
        let name = name.clone();
        self.run(move |conn| set_flag(conn, "admin", &name, admin))
            .await
    }

    async fn delete_user(&self, name: &Username) -> Result<(), StoreError> {
        let name = name.clone();
        self.run(move |conn| {
            // The pool runs every write in its own savepoint.
            let tx: &Connection = conn;
            let id = user_id_of(tx, &name)?;
            cached_exec(tx, "DELETE FROM devices WHERE user_id = ?1", [&id]).map_err(backend)?;
            cached_exec(tx, "DELETE FROM users WHERE user_id = ?1", [&id]).map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn two_factor(&self, user: UserId) -> Result<Option<TwoFactor>, StoreError> {
        self.read(move |conn| {
            let row = cached_row(
                conn,
                "SELECT t.secret, t.last_step,
                        (SELECT COUNT(*) FROM recovery_codes r WHERE r.user_id = t.user_id)
                 FROM two_factor t WHERE t.user_id = ?1",
                [user.as_bytes().as_slice()],
                |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                },
            )
            .optional()
            .map_err(backend)?;
            Ok(row.map(|(secret, step, left)| TwoFactor {
                secret,
                last_step: u64::try_from(step).unwrap_or(0),
                recovery_left: u32::try_from(left).unwrap_or(u32::MAX),
            }))
        })
        .await
    }

    async fn set_pending_totp(&self, user: UserId, secret: Vec<u8>) -> Result<(), StoreError> {
        self.run(move |conn| {
            if !user_exists(conn, &user)? {
                return Err(StoreError::UserNotFound);
            }
            cached_exec(
                conn,
                "INSERT INTO pending_totp (user_id, secret) VALUES (?1, ?2)
                 ON CONFLICT (user_id) DO UPDATE SET secret = excluded.secret",
                params![user.as_bytes().as_slice(), secret],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn pending_totp(&self, user: UserId) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(move |conn| {
            cached_row(
                conn,
                "SELECT secret FROM pending_totp WHERE user_id = ?1",
                [user.as_bytes().as_slice()],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn enable_two_factor(
        &self,
        user: UserId,
        secret: &[u8],
        step: u64,
        recovery: Vec<[u8; 32]>,
    ) -> Result<bool, StoreError> {
        let secret = secret.to_vec();
        self.run(move |conn| {
            // The pool runs every write in its own savepoint.
            let tx: &Connection = conn;
            let uid = user.as_bytes().as_slice();
            let removed = cached_exec(
                tx,
                "DELETE FROM pending_totp WHERE user_id = ?1 AND secret = ?2",
                params![uid, secret],
            )
            .map_err(backend)?;
            if removed == 0 {
                return Ok(false);
            }
            let step =
                i64::try_from(step).map_err(|_| StoreError::backend("time step out of range"))?;
            cached_exec(
                tx,
                "INSERT INTO two_factor (user_id, secret, last_step) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user_id) DO UPDATE SET secret = excluded.secret,
                                                     last_step = excluded.last_step",
                params![uid, secret, step],
            )
            .map_err(backend)?;
            cached_exec(tx, "DELETE FROM recovery_codes WHERE user_id = ?1", [uid])
                .map_err(backend)?;
            for digest in &recovery {
                cached_exec(
                    tx,
                    "INSERT OR IGNORE INTO recovery_codes (user_id, digest) VALUES (?1, ?2)",
                    params![uid, digest.as_slice()],
                )
                .map_err(backend)?;
            }
            Ok(true)
        })
        .await
    }

    async fn disable_two_factor(&self, user: UserId) -> Result<(), StoreError> {
        self.run(move |conn| {
            let uid = user.as_bytes().as_slice();
            for sql in [
                "DELETE FROM two_factor WHERE user_id = ?1",
                "DELETE FROM pending_totp WHERE user_id = ?1",
                "DELETE FROM recovery_codes WHERE user_id = ?1",
            ] {
                cached_exec(conn, sql, [uid]).map_err(backend)?;
            }
            Ok(())
        })
        .await
    }

    async fn use_totp_step(&self, user: UserId, step: u64) -> Result<bool, StoreError> {
        let Ok(step) = i64::try_from(step) else {
            return Ok(false);
        };
        self.run(move |conn| {
            let updated = cached_exec(
                conn,
                "UPDATE two_factor SET last_step = ?2 WHERE user_id = ?1 AND last_step < ?2",
                params![user.as_bytes().as_slice(), step],
            )
            .map_err(backend)?;
            Ok(updated == 1)
        })
        .await
    }

    async fn use_recovery_code(&self, user: UserId, digest: &[u8; 32]) -> Result<bool, StoreError> {
        let digest = *digest;
        self.run(move |conn| {
            let removed = cached_exec(
                conn,
                "DELETE FROM recovery_codes WHERE user_id = ?1 AND digest = ?2",
                params![user.as_bytes().as_slice(), digest.as_slice()],
            )
            .map_err(backend)?;
            Ok(removed == 1)
        })
        .await
    }

    async fn publish_key_packages(
        &self,
        device: DeviceId,
        packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
        max: u32,
    ) -> Result<u32, StoreError> {
        self.run(move |conn| {
            // The pool runs every write in its own savepoint.
            let tx: &Connection = conn;
            if !device_exists(tx, &device)? {
                return Err(StoreError::DeviceNotFound(device));
            }
            let d = device.as_bytes().as_slice();
            let have: i64 = cached_row(tx,
                    "SELECT COUNT(*) FROM key_packages WHERE device_id = ?1 AND last_resort = 0",
                    [d],
                    |r| r.get(0),
                )
                .map_err(backend)?;
            if (have.max(0) as usize).saturating_add(packages.len()) > max as usize {
                return Err(StoreError::QuotaExceeded {
                    quota: Quota::KeyPackages,
                    limit: u64::from(max),
                });
            }
            {
                let mut stmt = tx
                    .prepare_cached("INSERT INTO key_packages (device_id, package, last_resort) VALUES (?1, ?2, 0)")
                    .map_err(backend)?;
                for p in &packages {
                    stmt.execute(params![d, p]).map_err(backend)?;
                }
            }
            if let Some(p) = last_resort {
                cached_exec(tx, "DELETE FROM key_packages WHERE device_id = ?1 AND last_resort = 1", [d])
                    .map_err(backend)?;
                cached_exec(tx,
                    "INSERT INTO key_packages (device_id, package, last_resort) VALUES (?1, ?2, 1)",
                    params![d, p],
                )
                .map_err(backend)?;
            }
            let n: u32 = cached_row(tx,
                    "SELECT COUNT(*) FROM key_packages WHERE device_id = ?1 AND last_resort = 0",
                    [d],
                    |r| r.get(0),
                )
                .map_err(backend)?;
            Ok(n)
        })
        .await
    }

    async fn key_package_count(&self, device: DeviceId) -> Result<u32, StoreError> {
        self.read(move |conn| {
            cached_row(
                conn,
                "SELECT COUNT(*) FROM key_packages WHERE device_id = ?1 AND last_resort = 0",
                [device.as_bytes().as_slice()],
                |r| r.get(0),
            )
            .map_err(backend)
        })
        .await
    }

    async fn claim_key_packages(&self, users: &[UserId]) -> Result<Vec<Claimed>, StoreError> {
        let users = users.to_vec();
        self.run(move |conn| {
            // The pool runs every write in its own savepoint.
            let tx: &Connection = conn;
            let mut out = Vec::new();
            {
                let mut devices_of = tx
                    .prepare_cached(
                        "SELECT device_id FROM devices WHERE user_id = ?1 ORDER BY device_id",
                    )
                    .map_err(backend)?;
                // A one-time package first (oldest), else the last-resort one.
                let mut pick = tx
                    .prepare_cached(
                        "SELECT id, package, last_resort FROM key_packages WHERE device_id = ?1
                         ORDER BY last_resort, id LIMIT 1",
                    )
                    .map_err(backend)?;
                let mut consume = tx
                    .prepare_cached("DELETE FROM key_packages WHERE id = ?1")
                    .map_err(backend)?;
                for user in users {
                    let devices: Vec<Vec<u8>> = devices_of
                        .query_map([user.as_bytes().as_slice()], |r| r.get(0))
                        .map_err(backend)?
                        .collect::<Result<_, _>>()
                        .map_err(backend)?;
                    for d in devices {
                        let row: Option<(i64, Vec<u8>, bool)> = pick
                            .query_row([&d], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                            .optional()
                            .map_err(backend)?;
                        if let Some((id, package, last_resort)) = row {
                            if !last_resort {
                                consume.execute([id]).map_err(backend)?;
                            }
                            out.push(Claimed {
                                user,
                                device: DeviceId::from_bytes(id16(d)?),
                                package,
                            });
                        }
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn devices_of(&self, user: UserId) -> Result<Vec<DeviceId>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT device_id FROM devices WHERE user_id = ?1 ORDER BY device_id",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map([user.as_bytes().as_slice()], |r| r.get::<_, Vec<u8>>(0))
                .map_err(backend)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(DeviceId::from_bytes(id16(row.map_err(backend)?)?));
            }
            Ok(out)
        })
        .await
    }

    async fn device_owners(&self, devices: &[DeviceId]) -> Result<Vec<Owner>, StoreError> {
        let devices = devices.to_vec();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT u.username, u.account_key FROM device_owners d
                     JOIN users u ON u.user_id = d.user_id
                     WHERE d.device_id = ?1",
                )
                .map_err(backend)?;
            let mut out = Vec::new();
            for d in devices {
                let row: Option<(String, Option<Vec<u8>>)> = stmt
                    .query_row([d.as_bytes().as_slice()], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
                    .map_err(backend)?;
                if let Some((name, key)) = row {
                    out.push(Owner {
                        device: d,
                        username: username(name)?,
                        account_key: key.map(key32).transpose()?,
                    });
                }
            }
            Ok(out)
        })
        .await
    }

    async fn device_records(&self, user: UserId) -> Result<Vec<DeviceRecord>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT device_id, name, created_at, last_seen FROM devices
                     WHERE user_id = ?1 ORDER BY device_id",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map([user.as_bytes().as_slice()], |r| {
                    Ok((r.get::<_, Vec<u8>>(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .map_err(backend)?;
            let mut out = Vec::new();
            for row in rows {
                let (id, name, created_at, last_seen) = row.map_err(backend)?;
                out.push(DeviceRecord {
                    device_id: DeviceId::from_bytes(id16(id)?),
                    name,
                    created_at,
                    last_seen,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn live_devices(&self, devices: &[DeviceId]) -> Result<Vec<DeviceId>, StoreError> {
        let devices = devices.to_vec();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT NOT u.disabled FROM devices d JOIN users u ON u.user_id = d.user_id
                     WHERE d.device_id = ?1",
                )
                .map_err(backend)?;
            let mut out = Vec::new();
            for d in devices {
                let live: Option<bool> = stmt
                    .query_row([d.as_bytes().as_slice()], |r| r.get(0))
                    .optional()
                    .map_err(backend)?;
                if live == Some(true) {
                    out.push(d);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn touch_device(&self, device: DeviceId, now: i64) -> Result<(), StoreError> {
        self.run(move |conn| {
            cached_exec(
                conn,
                "UPDATE devices SET last_seen = ?2 WHERE device_id = ?1",
                params![device.as_bytes().as_slice(), now],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn create_group(&self, g: NewGroup) -> Result<Delivered, StoreError> {
        self.run_reported(move |conn| {
            // The pool runs every write in its own savepoint.
            let tx: &Connection = conn;
            if let Some(first) = earlier_handshake(tx, &g.creator, g.client_key.as_ref())? {
                return Ok((first, Published::default()));
            }
            let gid = g.group_id.as_bytes().as_slice();
            let exists: bool = cached_row(tx, "SELECT EXISTS (SELECT 1 FROM groups WHERE group_id = ?1)", [gid], |r| r.get(0))
                .map_err(backend)?;
            if exists {
                return Err(StoreError::GroupExists);
            }
            let direct = g.direct.map(|(a, b)| if a <= b { (a, b) } else { (b, a) });
            if let Some((a, b)) = direct {
                let taken: bool = cached_row(tx,
                        "SELECT EXISTS (SELECT 1 FROM direct_groups WHERE user_a = ?1 AND user_b = ?2)",
                        params![a.as_bytes().as_slice(), b.as_bytes().as_slice()],
                        |r| r.get(0),
                    )
                    .map_err(backend)?;
                if taken {
                    return Err(StoreError::GroupExists);
                }
            }
            if let Some(name) = &g.name {
                let taken: bool = cached_row(tx, "SELECT EXISTS (SELECT 1 FROM group_names WHERE name = ?1)", [name], |r| r.get(0))
                    .map_err(backend)?;
                if taken {
                    return Err(StoreError::GroupExists);
                }
            }
            if !g.members.contains(&g.creator) {
                return Err(StoreError::NotAMember);
            }
            if g.members.len() as u64 > g.quotas.group_members {
                return Err(StoreError::QuotaExceeded { quota: Quota::GroupMembers, limit: g.quotas.group_members });
            }
            for d in &g.members {
                if !device_exists(tx, d)? {
                    return Err(StoreError::DeviceNotFound(*d));
                }
            }
            let creator_user: Option<Vec<u8>> = cached_row(tx, "SELECT user_id FROM devices WHERE device_id = ?1", [g.creator.as_bytes().as_slice()], |r| r.get(0))
                .optional()
                .map_err(backend)?;
            if let Some(user) = &creator_user {
                let recent: i64 = cached_row(tx,
                        "SELECT COUNT(*) FROM groups WHERE created_by = ?1 AND created_at > ?2",
                        params![user, g.now_ms - 3_600_000],
                        |r| r.get(0),
                    )
                    .map_err(backend)?;
                if recent.max(0) as u64 >= g.quotas.groups_per_hour {
                    return Err(StoreError::QuotaExceeded { quota: Quota::GroupsPerHour, limit: g.quotas.groups_per_hour });
                }
            }
            cached_exec(tx,
                "INSERT INTO groups (group_id, epoch, next_seq, created_at, created_by) VALUES (?1, 1, 1, ?2, ?3)",
                params![gid, g.now_ms, creator_user],
            )
            .map_err(backend)?;
            {
                let mut stmt = tx
                    .prepare_cached("INSERT INTO group_members (group_id, device_id) VALUES (?1, ?2)")
                    .map_err(backend)?;
                for d in &g.members {
                    stmt.execute(params![gid, d.as_bytes().as_slice()]).map_err(backend)?;
                }
            }
            if let Some(state) = &g.public_state {
                cached_exec(tx, "INSERT INTO group_states (group_id, state) VALUES (?1, ?2)", params![gid, state])
                    .map_err(backend)?;
            }
            if let Some(name) = &g.name {
                cached_exec(tx, "INSERT INTO group_names (name, group_id) VALUES (?1, ?2)", params![name, gid])
                    .map_err(backend)?;
                if let Some(c) = &g.channel {
                    cached_exec(tx,
                        "INSERT INTO channels (group_id, password_hash, totp_secret, group_info) VALUES (?1, ?2, ?3, ?4)",
                        params![gid, c.password_hash, c.totp_secret, c.group_info],
                    )
                    .map_err(backend)?;
                    if let Some(user) = &creator_user {
                        cached_exec(tx, "INSERT INTO channel_admins (group_id, user_id) VALUES (?1, ?2)", params![gid, user])
                            .map_err(backend)?;
                    }
                }
            }
            if let Some((a, b)) = direct {
                cached_exec(tx,
                    "INSERT INTO direct_groups (user_a, user_b, group_id) VALUES (?1, ?2, ?3)",
                    params![a.as_bytes().as_slice(), b.as_bytes().as_slice(), gid],
                )
                .map_err(backend)?;
            }
            let recipients: Vec<DeviceId> = g.members.iter().copied().filter(|d| *d != g.creator).collect();
            let out = match &g.welcome {
                Some(w) => enqueue(tx, Outgoing {
                    group: &g.group_id,
                    kind: EntryKind::Welcome,
                    sender: &g.creator,
                    payload: w,
                    recipients: &recipients,
                    now_ms: g.now_ms,
                    quotas: &g.quotas,
                })?,
                None => Enqueued {
                    seq: 0,
                    undelivered: Vec::new(),
                    held: Vec::new(),
                    sender_user: None,
                    pushed: Vec::new(),
                },
            };
            // P460: whoever the creator brought in may invite the creator.
            if let Some(creator) = &creator_user {
                for d in &recipients {
                    if let Some(owner) = user_of(tx, d)? {
                        record_consent(tx, creator, &owner)?;
                    }
                }
            }
            let done = Delivered {
                epoch: 1,
                group_seq: out.seq,
                stored_at_ms: g.now_ms,
                recipients,
                undelivered: Vec::new(),
                held: out.held,
            };
            record_handshake(tx, &g.creator, g.client_key.as_ref(), &g.group_id, &done)?;
            Ok((done, Published::entries(out.pushed)))
        })
        .await
    }

    async fn group(&self, group: GroupId) -> Result<Option<GroupRecord>, StoreError> {
        self.read(move |conn| {
            let epoch: Option<i64> = cached_row(
                conn,
                "SELECT epoch FROM groups WHERE group_id = ?1",
                [group.as_bytes().as_slice()],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)?;
            match epoch {
                None => Ok(None),
                Some(epoch) => Ok(Some(GroupRecord {
                    group_id: group,
                    epoch: epoch as u64,
                    members: members_of(conn, &group)?,
                    channel: is_channel(conn, group.as_bytes())?,
                })),
            }
        })
        .await
    }

    async fn public_state(&self, group: GroupId) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(move |conn| {
            cached_row(
                conn,
                "SELECT state FROM group_states WHERE group_id = ?1",
                [group.as_bytes().as_slice()],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn channel(&self, name: &str) -> Result<Option<ChannelRecord>, StoreError> {
        let name = name.to_owned();
        self.read(move |conn| Ok(channel_rows(conn, "n.name = ?1", &name)?.pop()))
            .await
    }

    async fn channels(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        self.read(move |conn| channel_rows(conn, "1 = ?1", &1))
            .await
    }

    async fn grant_channel_join(
        &self,
        group: GroupId,
        device: DeviceId,
        totp_step: Option<(UserId, u64)>,
        expires_ms: i64,
    ) -> Result<bool, StoreError> {
        self.run(move |conn| {
            let gid = group.as_bytes().as_slice();
            if !is_channel(conn, gid)? {
                return Err(StoreError::GroupNotFound);
            }
            if let Some((user, step)) = totp_step {
                let step = i64::try_from(step).unwrap_or(i64::MAX);
                let user = user.as_bytes().as_slice();
                let fresh = cached_exec(
                    conn,
                    "INSERT OR IGNORE INTO channel_totp_steps (group_id, user_id, step) VALUES (?1, ?2, ?3)",
                    params![gid, user, step],
                )
                .map_err(backend)?;
                if fresh == 0 {
                    return Ok(false);
                }
                cached_exec(
                    conn,
                    "DELETE FROM channel_totp_steps WHERE group_id = ?1 AND user_id = ?2 AND step < ?3 - 2",
                    params![gid, user, step],
                )
                .map_err(backend)?;
            }
            cached_exec(
                conn,
                "INSERT INTO channel_grants (group_id, device_id, expires_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (group_id, device_id) DO UPDATE SET expires_at = excluded.expires_at",
                params![gid, device.as_bytes().as_slice(), expires_ms],
            )
            .map_err(backend)?;
            Ok(true)
        })
        .await
    }

    async fn update_channel(&self, group: GroupId, u: ChannelUpdate) -> Result<(), StoreError> {
        self.run(move |conn| {
            let gid = group.as_bytes().as_slice();
            if !is_channel(conn, gid)? {
                return Err(StoreError::GroupNotFound);
            }
            if let Some(p) = &u.password_hash {
                cached_exec(
                    conn,
                    "UPDATE channels SET password_hash = ?2 WHERE group_id = ?1",
                    params![gid, p],
                )
                .map_err(backend)?;
            }
            if let Some(t) = &u.totp_secret {
                cached_exec(
                    conn,
                    "UPDATE channels SET totp_secret = ?2 WHERE group_id = ?1",
                    params![gid, t],
                )
                .map_err(backend)?;
                cached_exec(
                    conn,
                    "DELETE FROM channel_totp_steps WHERE group_id = ?1",
                    [gid],
                )
                .map_err(backend)?;
            }
            if let Some(admins) = &u.admins {
                cached_exec(
                    conn,
                    "DELETE FROM channel_admins WHERE group_id = ?1",
                    [gid],
                )
                .map_err(backend)?;
                for a in admins {
                    cached_exec(
                        conn,
                        "INSERT OR IGNORE INTO channel_admins (group_id, user_id)
                         SELECT ?1, user_id FROM users WHERE user_id = ?2",
                        params![gid, a.as_bytes().as_slice()],
                    )
                    .map_err(backend)?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn create_file(
        &self,
        file: hush_store::NewFile,
    ) -> Result<hush_store::FileRecord, StoreError> {
        self.run(move |conn| files::create(conn, &file)).await
    }

    async fn file(
        &self,
        id: hush_proto::ids::FileId,
    ) -> Result<Option<hush_store::FileRecord>, StoreError> {
        self.read(move |conn| files::get(conn, id)).await
    }

    async fn complete_file(&self, id: hush_proto::ids::FileId) -> Result<(), StoreError> {
        self.run(move |conn| files::complete(conn, id)).await
    }

    async fn file_fetched(
        &self,
        id: hush_proto::ids::FileId,
        device: DeviceId,
    ) -> Result<bool, StoreError> {
        self.run(move |conn| files::fetched(conn, id, device)).await
    }

    async fn delete_file(&self, id: hush_proto::ids::FileId) -> Result<bool, StoreError> {
        self.run(move |conn| files::delete(conn, id)).await
    }

    async fn expire_files(
        &self,
        before_ms: i64,
    ) -> Result<Vec<hush_proto::ids::FileId>, StoreError> {
        self.run(move |conn| files::expire(conn, before_ms)).await
    }

    async fn put_group_info(
        &self,
        device: DeviceId,
        group: GroupId,
        epoch: u64,
        sealed: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.run(move |conn| {
            let (_, member) = group_state(conn, &group, &device)?;
            if !member {
                return Err(StoreError::NotAMember);
            }
            cached_exec(
                conn,
                "INSERT INTO group_infos (user_id, group_id, epoch, sealed)
                 SELECT user_id, ?2, ?3, ?4 FROM devices WHERE device_id = ?1
                 ON CONFLICT (user_id, group_id) DO UPDATE
                   SET epoch = excluded.epoch, sealed = excluded.sealed
                   WHERE excluded.epoch >= group_infos.epoch",
                params![
                    device.as_bytes().as_slice(),
                    group.as_bytes().as_slice(),
                    i64::try_from(epoch).unwrap_or(i64::MAX),
                    sealed
                ],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn group_info(
        &self,
        user: UserId,
        group: GroupId,
    ) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        self.read(move |conn| {
            cached_row(
                conn,
                "SELECT gi.epoch, gi.sealed FROM group_infos gi
                 WHERE gi.user_id = ?1 AND gi.group_id = ?2 AND EXISTS (
                   SELECT 1 FROM group_members gm JOIN devices d ON d.device_id = gm.device_id
                   WHERE gm.group_id = ?2 AND d.user_id = ?1)",
                params![user.as_bytes().as_slice(), group.as_bytes().as_slice()],
                |r| {
                    Ok((
                        u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                        r.get::<_, Vec<u8>>(1)?,
                    ))
                },
            )
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn group_infos(
        &self,
        device: DeviceId,
    ) -> Result<Vec<(GroupId, u64, Vec<u8>)>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT gi.group_id, gi.epoch, gi.sealed FROM group_infos gi
                     JOIN devices me ON me.device_id = ?1 AND gi.user_id = me.user_id
                     WHERE EXISTS (SELECT 1 FROM group_members gm
                       JOIN devices d ON d.device_id = gm.device_id
                       WHERE gm.group_id = gi.group_id AND d.user_id = me.user_id)
                     AND NOT EXISTS (SELECT 1 FROM group_members gm
                       WHERE gm.group_id = gi.group_id AND gm.device_id = ?1)
                     ORDER BY gi.group_id",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map([device.as_bytes().as_slice()], |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                    ))
                })
                .map_err(backend)?;
            let mut out = Vec::new();
            for row in rows {
                let (g, epoch, sealed) = row.map_err(backend)?;
                out.push((
                    GroupId::from_bytes(id16(g)?),
                    u64::try_from(epoch).unwrap_or(0),
                    sealed,
                ));
            }
            Ok(out)
        })
        .await
    }

    async fn backup(&self, user: UserId) -> Result<Option<hush_store::BackupRecord>, StoreError> {
        self.read(move |conn| backups::get(conn, user)).await
    }

    async fn set_backup_keys(
        &self,
        user: UserId,
        wrapped_password: Option<Vec<u8>>,
        wrapped_recovery: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        self.run(move |conn| backups::set_keys(conn, user, wrapped_password, wrapped_recovery))
            .await
    }

    async fn append_backup(&self, chunk: hush_store::NewBackupChunk) -> Result<u64, StoreError> {
        self.run(move |conn| backups::append(conn, &chunk)).await
    }

    async fn backup_chunks(
        &self,
        user: UserId,
        from: u64,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.read(move |conn| backups::chunks(conn, user, from, max_bytes))
            .await
    }

    async fn delete_channel(&self, group: GroupId) -> Result<(), StoreError> {
        self.run(move |conn| {
            let gid = group.as_bytes().as_slice();
            if !is_channel(conn, gid)? {
                return Err(StoreError::GroupNotFound);
            }
            // The group takes its name, members and channel rows; queued entries stay
            // and are delivered.
            cached_exec(conn, "DELETE FROM groups WHERE group_id = ?1", [gid]).map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn named_group(&self, name: &str) -> Result<Option<GroupId>, StoreError> {
        let name = name.to_owned();
        self.read(move |conn| {
            let id: Option<Vec<u8>> = cached_row(
                conn,
                "SELECT group_id FROM group_names WHERE name = ?1",
                [&name],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)?;
            id.map(|id| Ok(GroupId::from_bytes(id16(id)?))).transpose()
        })
        .await
    }

    async fn direct_group(&self, a: UserId, b: UserId) -> Result<Option<GroupId>, StoreError> {
        let (a, b) = if a <= b { (a, b) } else { (b, a) };
        self.read(move |conn| {
            let id: Option<Vec<u8>> = cached_row(
                conn,
                "SELECT group_id FROM direct_groups WHERE user_a = ?1 AND user_b = ?2",
                params![a.as_bytes().as_slice(), b.as_bytes().as_slice()],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)?;
            id.map(|id| Ok(GroupId::from_bytes(id16(id)?))).transpose()
        })
        .await
    }

    async fn accept_commit(&self, c: NewCommit) -> Result<Delivered, StoreError> {
        self.run_reported(move |conn| {
            // The pool runs every write in its own savepoint.
            let tx: &Connection = conn;
            if let Some(first) = earlier_handshake(tx, &c.sender, c.client_key.as_ref())? {
                return Ok((first, Published::default()));
            }
            let (epoch, member) = group_state(tx, &c.group_id, &c.sender)?;
            let gid = c.group_id.as_bytes().as_slice();
            // P553: a channel's grant; P536: a new device of a member's user.
            let granted = c.external
                && !member
                && cached_row(
                    tx,
                    "SELECT EXISTS (SELECT 1 FROM channel_grants
                       WHERE group_id = ?1 AND device_id = ?2 AND expires_at > ?3)
                     OR EXISTS (SELECT 1 FROM group_members gm
                       JOIN devices d ON d.device_id = gm.device_id
                       WHERE gm.group_id = ?1 AND gm.device_id <> ?2
                         AND d.user_id = (SELECT user_id FROM devices WHERE device_id = ?2))",
                    params![gid, c.sender.as_bytes().as_slice(), c.now_ms],
                    |r| r.get::<_, bool>(0),
                )
                .map_err(backend)?;
            // P537: a member's external commit replacing its own leaf.
            let resync = member && c.added == [c.sender] && c.removed == [c.sender];
            if !(granted || resync || (!c.external && member)) {
                return Err(StoreError::NotAMember);
            }
            if epoch != c.epoch {
                return Err(StoreError::StaleEpoch { current: epoch });
            }
            for d in &c.added {
                if !device_exists(tx, d)? {
                    return Err(StoreError::DeviceNotFound(*d));
                }
            }
            let recipients: Vec<DeviceId> = members_of(tx, &c.group_id)?
                .into_iter()
                .filter(|d| *d != c.sender)
                .collect();
            let commit = enqueue(
                tx,
                Outgoing {
                    group: &c.group_id,
                    kind: EntryKind::Handshake,
                    sender: &c.sender,
                    payload: &c.commit,
                    recipients: &recipients,
                    now_ms: c.now_ms,
                    quotas: &c.quotas,
                },
            )?;
            let seq = commit.seq;
            let mut held = commit.held;
            let mut pushed = commit.pushed;
            if let Some(w) = &c.welcome {
                let welcome = enqueue(
                    tx,
                    Outgoing {
                        group: &c.group_id,
                        kind: EntryKind::Welcome,
                        sender: &c.sender,
                        payload: w,
                        recipients: &c.added,
                        now_ms: c.now_ms,
                        quotas: &c.quotas,
                    },
                )?;
                held.extend(welcome.held);
                pushed.extend(welcome.pushed);
            }
            if let Some(sender) = user_of(tx, &c.sender)? {
                for d in &c.added {
                    if let Some(owner) = user_of(tx, d)? {
                        record_consent(tx, &sender, &owner)?;
                    }
                }
            }
            if c.external {
                cached_exec(
                    tx,
                    "DELETE FROM channel_grants WHERE group_id = ?1 AND device_id = ?2",
                    params![gid, c.sender.as_bytes().as_slice()],
                )
                .map_err(backend)?;
            }
            match &c.public_state {
                Some(state) => cached_exec(
                    tx,
                    "INSERT INTO group_states (group_id, state) VALUES (?1, ?2)
                     ON CONFLICT (group_id) DO UPDATE SET state = excluded.state",
                    params![gid, state],
                ),
                None => cached_exec(
                    tx,
                    "DELETE FROM group_states WHERE group_id = ?1",
                    params![gid],
                ),
            }
            .map_err(backend)?;
            if let Some(info) = &c.group_info {
                cached_exec(
                    tx,
                    "UPDATE channels SET group_info = ?2 WHERE group_id = ?1",
                    params![gid, info],
                )
                .map_err(backend)?;
            }
            for d in &c.added {
                cached_exec(
                    tx,
                    "INSERT OR IGNORE INTO group_members (group_id, device_id) VALUES (?1, ?2)",
                    params![gid, d.as_bytes().as_slice()],
                )
                .map_err(backend)?;
            }
            for d in c.removed.iter().filter(|d| !c.added.contains(d)) {
                cached_exec(
                    tx,
                    "DELETE FROM group_members WHERE group_id = ?1 AND device_id = ?2",
                    params![gid, d.as_bytes().as_slice()],
                )
                .map_err(backend)?;
            }
            check_group_size(tx, gid, c.quotas.group_members)?;
            cached_exec(
                tx,
                "UPDATE groups SET epoch = epoch + 1 WHERE group_id = ?1",
                [gid],
            )
            .map_err(backend)?;
            let mut wake = recipients;
            wake.extend(c.added);
            let done = Delivered {
                epoch: epoch + 1,
                group_seq: seq,
                stored_at_ms: c.now_ms,
                recipients: wake,
                undelivered: Vec::new(),
                held,
            };
            record_handshake(tx, &c.sender, c.client_key.as_ref(), &c.group_id, &done)?;
            Ok((done, Published::entries(pushed)))
        })
        .await
    }
    async fn enqueue_message(&self, m: NewMessage) -> Result<Delivered, StoreError> {
        self.run_reported(move |conn| {
            // The pool runs every write in its own savepoint.
            let tx: &Connection = conn;
            let sender = m.sender.as_bytes().as_slice();
            let earlier: Option<(i64, i64, i64)> = cached_row(tx,
                    "SELECT epoch, group_seq, stored_at FROM sent_messages
                     WHERE sender_device = ?1 AND client_message_id = ?2",
                    params![sender, m.client_message_id.as_slice()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(backend)?;
            if let Some((epoch, seq, at)) = earlier {
                return Ok((
                    Delivered {
                        epoch: epoch as u64,
                        group_seq: seq as u64,
                        stored_at_ms: at,
                        recipients: Vec::new(),
                        undelivered: Vec::new(),
                        held: Vec::new(),
                    },
                    Published::default(),
                ));
            }
            let (epoch, member) = group_state(tx, &m.group_id, &m.sender)?;
            if !member {
                return Err(StoreError::NotAMember);
            }
            if epoch != m.epoch {
                return Err(StoreError::StaleEpoch { current: epoch });
            }
            let recipients: Vec<DeviceId> = members_of(tx, &m.group_id)?
                .into_iter()
                .filter(|d| *d != m.sender)
                .collect();
            let out = enqueue(
                tx,
                Outgoing {
                    group: &m.group_id,
                    kind: EntryKind::Application,
                    sender: &m.sender,
                    payload: &m.ciphertext,
                    recipients: &recipients,
                    now_ms: m.now_ms,
                    quotas: &m.quotas,
                },
            )?;
            let seq = out.seq;
            let recipients = recipients
                .into_iter()
                .filter(|d| !out.undelivered.contains(d) && !out.held.contains(d))
                .collect();
            // P460: writing in a 1:1 accepts the other's invitations.
            let pair: Option<(Vec<u8>, Vec<u8>)> = tx
                .prepare_cached("SELECT user_a, user_b FROM direct_groups WHERE group_id = ?1")
                .and_then(|mut s| {
                    s.query_row([m.group_id.as_bytes().as_slice()], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()
                })
                .map_err(backend)?;
            if let (Some((a, b)), Some(me)) = (pair, out.sender_user.clone()) {
                let other = if a == me { b } else { a };
                record_consent(tx, &me, &other)?;
            }
            cached_exec(tx,
                "INSERT INTO sent_messages (sender_device, client_message_id, epoch, group_seq, stored_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![sender, m.client_message_id.as_slice(), epoch as i64, seq as i64, m.now_ms],
            )
            .map_err(backend)?;
            Ok((
                Delivered {
                    epoch,
                    group_seq: seq,
                    stored_at_ms: m.now_ms,
                    recipients,
                    // Woken too: their missed count went up (P450).
                    undelivered: out.undelivered.clone(),
                    held: out.held,
                },
                Published {
                    entries: out.pushed,
                    woken: out.undelivered,
                },
            ))
        })
        .await
    }

    async fn fetch_mailbox(
        &self,
        device: DeviceId,
        after_id: u64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<MailboxPage, StoreError> {
        self.read(move |conn| {
            let missed: i64 = conn
                .prepare_cached("SELECT COALESCE((SELECT missed FROM mailbox_usage WHERE device_id = ?1), 0)")
                .and_then(|mut s| s.query_row([device.as_bytes().as_slice()], |r| r.get(0)))
                .map_err(backend)?;
            let mut stmt = conn
                .prepare_cached(
                    "SELECT d.id, m.group_id, m.kind, m.payload, m.sender_device, m.group_seq, m.stored_at
                     FROM deliveries d JOIN messages m ON m.id = d.message_id
                     WHERE d.device_id = ?1 AND d.id > ?2 ORDER BY d.id LIMIT ?3",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map(
                    params![device.as_bytes().as_slice(), after_id as i64, i64::from(limit) + 1],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, Vec<u8>>(1)?,
                            r.get::<_, i32>(2)?,
                            r.get::<_, Vec<u8>>(3)?,
                            r.get::<_, Vec<u8>>(4)?,
                            r.get::<_, i64>(5)?,
                            r.get::<_, i64>(6)?,
                        ))
                    },
                )
                .map_err(backend)?;
            let mut out = Vec::new();
            let mut bytes = 0usize;
            let mut more = false;
            for row in rows {
                let (id, group, kind, payload, sender, seq, at) = row.map_err(backend)?;
                // Rows stream: what does not fit is never held in memory past this one.
                bytes = bytes
                    .saturating_add(payload.len())
                    .saturating_add(hush_proto::frame::ENTRY_OVERHEAD);
                if out.len() == limit as usize || (bytes > max_bytes && !out.is_empty()) {
                    more = true;
                    break;
                }
                out.push(Entry {
                    id: id as u64,
                    group_id: GroupId::from_bytes(id16(group)?),
                    kind: EntryKind::try_from(kind).map_err(|_| corrupt("stored entry kind"))?,
                    payload: payload.into(),
                    sender_device: DeviceId::from_bytes(id16(sender)?),
                    group_seq: seq as u64,
                    stored_at_ms: at,
                });
            }
            Ok(MailboxPage {
                entries: out,
                missed: u32::try_from(missed.max(0)).unwrap_or(u32::MAX),
                more,
            })
        })
        .await
    }

    async fn ack(&self, device: DeviceId, ids: &[u64], missed_seen: u32) -> Result<(), StoreError> {
        let ids = ids.to_vec();
        // An ack a crash undoes only brings the entries again, and clients skip what
        // they processed (P441): it need not wait for an fsync of its own.
        self.pool
            .write_with(Durability::Relaxed, move |conn| {
                // The pool runs every write in its own savepoint.
                let tx: &Connection = conn;
                {
                    // The deliveries_uncount trigger deletes a message with its last entry.
                    let mut del = tx
                        .prepare_cached("DELETE FROM deliveries WHERE id = ?1 AND device_id = ?2")
                        .map_err(backend)?;
                    for id in ids {
                        del.execute(params![id as i64, device.as_bytes().as_slice()])
                            .map_err(backend)?;
                    }
                }
                if missed_seen > 0 {
                    cached_exec(
                    tx,
                    "UPDATE mailbox_usage SET missed = MAX(missed - ?1, 0) WHERE device_id = ?2",
                    params![missed_seen, device.as_bytes().as_slice()],
                )
                .map_err(backend)?;
                }
                Ok(())
            })
            .await
    }

    async fn requests(&self, user: UserId) -> Result<Vec<HeldRequest>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT h.inviter, u.username, COUNT(DISTINCT h.group_id), MIN(h.stored_at)
                     FROM held h JOIN devices d ON d.device_id = h.device_id
                     JOIN users u ON u.user_id = h.inviter
                     WHERE d.user_id = ?1 GROUP BY h.inviter, u.username ORDER BY MIN(h.stored_at)",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map([user.as_bytes().as_slice()], |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })
                .map_err(backend)?;
            let mut out = Vec::new();
            for row in rows {
                let (inviter, name, groups, since) = row.map_err(backend)?;
                out.push(HeldRequest {
                    inviter: UserId::from_bytes(id16(inviter)?),
                    inviter_name: username(name)?,
                    groups: u32::try_from(groups.max(0)).unwrap_or(u32::MAX),
                    since_ms: since,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn answer_request(
        &self,
        user: UserId,
        inviter: UserId,
        accept: bool,
    ) -> Result<Vec<DeviceId>, StoreError> {
        self.run_reported(move |conn| {
            // The pool runs every write in its own savepoint.
            let tx: &Connection = conn;
            let u = user.as_bytes().as_slice();
            let rows: Vec<(i64, Vec<u8>, Vec<u8>, i64)> = {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT h.id, h.device_id, h.group_id, h.message_id FROM held h
                         JOIN devices d ON d.device_id = h.device_id
                         WHERE d.user_id = ?1 AND h.group_id IN (
                            SELECT h2.group_id FROM held h2 JOIN devices d2 ON d2.device_id = h2.device_id
                            WHERE d2.user_id = ?1 AND h2.inviter = ?2)
                         ORDER BY h.id",
                    )
                    .map_err(backend)?;
                let mapped = stmt
                    .query_map(params![u, inviter.as_bytes().as_slice()], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })
                    .map_err(backend)?;
                mapped.collect::<Result<_, _>>().map_err(backend)?
            };
            let mut wake = Vec::new();
            if accept {
                record_consent(tx, u, inviter.as_bytes())?;
                for (id, device, _, message) in &rows {
                    // Delivered first, so the message is never without an entry.
                    cached_exec(tx,
                        "INSERT INTO deliveries (device_id, message_id) VALUES (?1, ?2)",
                        params![device, message],
                    )
                    .map_err(backend)?;
                    cached_exec(tx, "DELETE FROM held WHERE id = ?1", [id]).map_err(backend)?;
                    let d = DeviceId::from_bytes(id16(device.clone())?);
                    if !wake.contains(&d) {
                        wake.push(d);
                    }
                }
            } else {
                for (id, device, group, _) in &rows {
                    cached_exec(tx, "DELETE FROM held WHERE id = ?1", [id]).map_err(backend)?;
                    cached_exec(tx,
                        "DELETE FROM group_members WHERE group_id = ?1 AND device_id = ?2",
                        params![group, device],
                    )
                    .map_err(backend)?;
                }
            }
            let published = Published::woken(wake.clone());
            Ok((wake, published))
        })
        .await
    }

    async fn count_failures(
        &self,
        kind: &str,
        key: &[u8],
        add: u32,
        now: i64,
        window_secs: i64,
    ) -> Result<hush_store::FailureCount, StoreError> {
        let (kind, key) = (kind.to_owned(), key.to_vec());
        if add == 0 {
            // A read: no window begins.
            return self
                .read(move |conn| {
                    let held: Option<(i64, i64)> = conn
                        .prepare_cached(
                            "SELECT count, since FROM failures
                             WHERE kind = ?1 AND key = ?2 AND ?3 < since + ?4",
                        )
                        .and_then(|mut s| {
                            s.query_row(params![kind, key, now, window_secs], |r| {
                                Ok((r.get(0)?, r.get(1)?))
                            })
                            .optional()
                        })
                        .map_err(backend)?;
                    let (count, since) = held.unwrap_or((0, now));
                    Ok(hush_store::FailureCount {
                        count: u32::try_from(count).unwrap_or(u32::MAX),
                        since,
                    })
                })
                .await;
        }
        self.run(move |conn| {
            let (count, since): (i64, i64) = cached_row(
                conn,
                "INSERT INTO failures (kind, key, count, since) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (kind, key) DO UPDATE SET
                     count = CASE WHEN ?4 >= since + ?5 THEN ?3 ELSE count + ?3 END,
                     since = CASE WHEN ?4 >= since + ?5 THEN ?4 ELSE since END
                 RETURNING count, since",
                params![kind, key, i64::from(add), now, window_secs],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(backend)?;
            Ok(hush_store::FailureCount {
                count: u32::try_from(count).unwrap_or(u32::MAX),
                since,
            })
        })
        .await
    }

    async fn clear_failures(&self, kind: &str, key: &[u8]) -> Result<(), StoreError> {
        let (kind, key) = (kind.to_owned(), key.to_vec());
        self.run(move |conn| {
            cached_exec(
                conn,
                "DELETE FROM failures WHERE kind = ?1 AND key = ?2",
                params![kind, key],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn prune(
        &self,
        expire_before_ms: i64,
        idempotency_before_ms: i64,
    ) -> Result<Pruned, StoreError> {
        let mut pruned = Pruned::default();
        // One write per batch: a large expiry never holds the writer for long, and
        // sends and acks are committed between the batches.
        loop {
            let expired = self
                .run(move |conn| {
                    let tx = conn.savepoint().map_err(backend)?;
                    let batch: Vec<(i64, Vec<u8>)> = {
                        let mut stmt = tx
                            .prepare_cached(
                                "SELECT d.id, d.device_id FROM messages m JOIN deliveries d ON d.message_id = m.id
                                 WHERE m.stored_at < ?1 LIMIT 1000",
                            )
                            .map_err(backend)?;
                        let rows = stmt
                            .query_map([expire_before_ms], |r| Ok((r.get(0)?, r.get(1)?)))
                            .map_err(backend)?;
                        rows.collect::<Result<_, _>>().map_err(backend)?
                    };
                    {
                        let mut del = tx
                            .prepare_cached("DELETE FROM deliveries WHERE id = ?1")
                            .map_err(backend)?;
                        let mut missed = tx
                            .prepare_cached(
                                "UPDATE mailbox_usage SET missed = missed + 1 WHERE device_id = ?1",
                            )
                            .map_err(backend)?;
                        for (id, device) in &batch {
                            del.execute([id]).map_err(backend)?;
                            missed.execute([device]).map_err(backend)?;
                        }
                    }
                    tx.commit().map_err(backend)?;
                    Ok(batch.len() as u64)
                })
                .await?;
            if expired == 0 {
                break;
            }
            pruned.expired_entries += expired;
        }
        pruned.idempotency_records = self
            .run(move |conn| {
                let tx = conn.savepoint().map_err(backend)?;
                cached_exec(
                    &tx,
                    "DELETE FROM held WHERE stored_at < ?1",
                    [expire_before_ms],
                )
                .map_err(backend)?;
                // Left over from before messages were collected with their last entry.
                cached_exec(
                    &tx,
                    "DELETE FROM messages WHERE stored_at < ?1
                     AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = messages.id)
                     AND NOT EXISTS (SELECT 1 FROM held h WHERE h.message_id = messages.id)",
                    [expire_before_ms],
                )
                .map_err(backend)?;
                let sent = cached_exec(
                    &tx,
                    "DELETE FROM sent_messages WHERE stored_at < ?1",
                    [idempotency_before_ms],
                )
                .map_err(backend)?;
                let handshakes = cached_exec(
                    &tx,
                    "DELETE FROM handshakes WHERE stored_at < ?1",
                    [idempotency_before_ms],
                )
                .map_err(backend)?;
                tx.commit().map_err(backend)?;
                Ok((sent + handshakes) as u64)
            })
            .await?;
        // Freed pages go back to the file system, a bounded number per pass.
        self.run(|conn| {
            // The pragma frees one page per step: step it to the end.
            let mut stmt = conn
                .prepare(&format!("PRAGMA incremental_vacuum({VACUUM_PAGES})"))
                .map_err(backend)?;
            let mut rows = stmt.query([]).map_err(backend)?;
            while rows.next().map_err(backend)?.is_some() {}
            Ok(())
        })
        .await?;
        Ok(pruned)
    }
}
