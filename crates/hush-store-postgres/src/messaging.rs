//! Groups, commits, messages, mailboxes and held invitations (P420-P462).
use std::collections::HashMap;

use futures::StreamExt as _;
use hush_proto::ids::{DeviceId, GroupId, HandshakeKey, UserId};
use hush_proto::response::{Entry, EntryKind};
use hush_store::{
    Delivered, GroupRecord, HeldRequest, MailboxPage, NewCommit, NewGroup, NewMessage, Pruned,
    Quota, Quotas, StoreError,
};
use sqlx::PgConnection;

use crate::accounts::{device_exists, user_of};
use crate::{Outbox, big, corrupt, unbig, username};

fn ids(devices: &[DeviceId]) -> Vec<[u8; 16]> {
    devices.iter().map(|d| *d.as_bytes()).collect()
}

/// P423, P433: the first result of a handshake retried with the same client key.
async fn earlier_handshake(
    c: &mut PgConnection,
    sender: &DeviceId,
    key: Option<&HandshakeKey>,
) -> Result<Option<Delivered>, StoreError> {
    let Some(key) = key else { return Ok(None) };
    let row = row!(
        c,
        (i64, i64, i64),
        "SELECT epoch, group_seq, stored_at FROM handshakes
         WHERE sender_device = $1 AND client_key = $2",
        sender.as_bytes(),
        key.as_bytes().as_slice()
    );
    Ok(row.map(|(epoch, seq, at)| Delivered {
        epoch: unbig(epoch),
        group_seq: unbig(seq),
        stored_at_ms: at,
        recipients: Vec::new(),
        undelivered: Vec::new(),
        held: Vec::new(),
    }))
}

async fn record_handshake(
    c: &mut PgConnection,
    sender: &DeviceId,
    key: Option<&HandshakeKey>,
    group: &GroupId,
    done: &Delivered,
) -> Result<(), StoreError> {
    let Some(key) = key else { return Ok(()) };
    exec!(
        c,
        "INSERT INTO handshakes (sender_device, client_key, group_id, epoch, group_seq, stored_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
        sender.as_bytes(),
        key.as_bytes().as_slice(),
        group.as_bytes(),
        big(done.epoch),
        big(done.group_seq),
        done.stored_at_ms
    );
    Ok(())
}

pub(crate) async fn members_of(
    c: &mut PgConnection,
    group: &GroupId,
) -> Result<Vec<DeviceId>, StoreError> {
    let rows = all!(
        c,
        [u8; 16],
        "SELECT device_id FROM group_members WHERE group_id = $1 ORDER BY device_id",
        group.as_bytes()
    );
    Ok(rows.into_iter().map(DeviceId::from_bytes).collect())
}

pub(crate) async fn is_channel(c: &mut PgConnection, group: &GroupId) -> Result<bool, StoreError> {
    Ok(one!(
        c,
        bool,
        "SELECT EXISTS (SELECT 1 FROM channels WHERE group_id = $1)",
        group.as_bytes()
    ))
}

/// The group's epoch, locked for this transaction, whether `device` is a member,
/// and the other members in id order. The members are read by a statement after the
/// lock's, so at `READ COMMITTED` they are what the last holder of the lock left.
async fn group_state(
    c: &mut PgConnection,
    group: &GroupId,
    device: &DeviceId,
) -> Result<(u64, bool, Vec<DeviceId>), StoreError> {
    let epoch = opt!(
        c,
        i64,
        "SELECT epoch FROM groups WHERE group_id = $1 FOR UPDATE",
        group.as_bytes()
    )
    .ok_or(StoreError::GroupNotFound)?;
    let mut others = members_of(c, group).await?;
    let before = others.len();
    others.retain(|d| d != device);
    Ok((unbig(epoch), others.len() < before, others))
}

/// P460: whether `user` takes Welcomes from `sender` without asking (see the SQLite
/// adapter for the rule).
async fn accepts_welcomes(
    c: &mut PgConnection,
    user: &[u8; 16],
    sender: &[u8; 16],
    group: &GroupId,
) -> Result<bool, StoreError> {
    if user == sender {
        return Ok(true);
    }
    Ok(one!(
        c,
        bool,
        "SELECT EXISTS (SELECT 1 FROM consent WHERE user_id = $1 AND peer_id = $2)
         OR EXISTS (
            SELECT 1 FROM devices da JOIN group_members a ON a.device_id = da.device_id
            JOIN group_members b ON b.group_id = a.group_id
            JOIN devices db ON db.device_id = b.device_id
            WHERE da.user_id = $1 AND db.user_id = $2 AND a.group_id <> $3
              AND a.group_id NOT IN (SELECT group_id FROM direct_groups)
              AND NOT EXISTS (SELECT 1 FROM held h WHERE h.group_id = a.group_id
                              AND h.device_id IN (a.device_id, b.device_id)))",
        user,
        sender,
        group.as_bytes()
    ))
}

/// P460: `user` accepts Welcomes from `peer` from now on.
async fn record_consent(
    c: &mut PgConnection,
    user: &[u8; 16],
    peer: &[u8; 16],
) -> Result<(), StoreError> {
    if user == peer {
        return Ok(());
    }
    exec!(
        c,
        "INSERT INTO consent (user_id, peer_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        user,
        peer
    );
    Ok(())
}

/// Locks the mailboxes of `devices` (creating their usage rows) in device order and
/// returns their (entries, bytes). Entry ids are taken only under this lock, so the
/// ids of one mailbox commit in increasing order whatever the number of writers:
/// a reader that saw id n never later finds a smaller one appear (P443).
async fn lock_mailboxes(
    c: &mut PgConnection,
    devices: &[DeviceId],
) -> Result<HashMap<[u8; 16], (u64, u64)>, StoreError> {
    if devices.is_empty() {
        return Ok(HashMap::new());
    }
    let mut sorted = ids(devices);
    sorted.sort();
    sorted.dedup();
    exec!(
        c,
        "INSERT INTO mailbox_usage (device_id)
         SELECT d FROM unnest($1::bytea[]) AS t(d) WHERE d IN (SELECT device_id FROM devices)
         ON CONFLICT DO NOTHING",
        &sorted
    );
    let rows = rows!(
        c,
        ([u8; 16], i64, i64),
        "SELECT device_id, entries, bytes FROM mailbox_usage
         WHERE device_id = ANY($1) ORDER BY device_id FOR UPDATE",
        &sorted
    );
    Ok(rows
        .into_iter()
        .map(|(d, e, b)| (d, (unbig(e), unbig(b))))
        .collect())
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

/// Where one stored message went.
struct Enqueued {
    seq: u64,
    undelivered: Vec<DeviceId>,
    held: Vec<DeviceId>,
    sender_user: Option<[u8; 16]>,
}

async fn insert_message(
    c: &mut PgConnection,
    m: &Outgoing<'_>,
    seq: u64,
    sender_user: Option<&[u8; 16]>,
    payload: &[u8],
) -> Result<i64, StoreError> {
    Ok(one!(
        c,
        i64,
        "INSERT INTO messages (group_id, kind, sender_device, group_seq, payload, stored_at, size, sender_user)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        m.group.as_bytes(),
        i32::from(m.kind),
        m.sender.as_bytes(),
        big(seq),
        payload,
        m.now_ms,
        big(payload.len() as u64),
        sender_user
    ))
}

async fn deliver(
    c: &mut PgConnection,
    devices: &[DeviceId],
    message: i64,
) -> Result<(), StoreError> {
    if devices.is_empty() {
        return Ok(());
    }
    exec!(
        c,
        "INSERT INTO deliveries (device_id, message_id)
         SELECT d, $2 FROM unnest($1::bytea[]) WITH ORDINALITY AS t(d, n) ORDER BY n",
        ids(devices),
        message
    );
    Ok(())
}

/// Stores one message for its recipients within the quotas (P450, P452), holding it
/// for devices with an unanswered invitation to the group (P460). A message left with
/// no recipient is not stored. Every device that got an entry is named in `out`.
async fn enqueue(
    c: &mut PgConnection,
    m: Outgoing<'_>,
    out: &mut Outbox,
) -> Result<Enqueued, StoreError> {
    let size = m.payload.len() as u64;
    let sender = row!(
        c,
        ([u8; 16], i64),
        "SELECT o.user_id, COALESCE(s.bytes, 0) FROM device_owners o
         LEFT JOIN user_storage s ON s.user_id = o.user_id WHERE o.device_id = $1",
        m.sender.as_bytes()
    );
    let sender_user = sender.map(|(user, _)| user);
    if let Some((_, used)) = sender
        && unbig(used).saturating_add(size) > m.quotas.user_bytes
    {
        return Err(StoreError::QuotaExceeded {
            quota: Quota::UserBytes,
            limit: m.quotas.user_bytes,
        });
    }
    let seq = one!(
        c,
        i64,
        "UPDATE groups SET next_seq = next_seq + 1 WHERE group_id = $1 RETURNING next_seq - 1",
        m.group.as_bytes()
    );
    let seq = unbig(seq);
    let usage = lock_mailboxes(c, m.recipients).await?;
    let mut recipients: Vec<DeviceId> = m.recipients.to_vec();
    let mut undelivered = Vec::new();
    if m.kind == EntryKind::Application {
        let mut room = Vec::with_capacity(recipients.len());
        for d in recipients {
            let (entries, bytes) = usage.get(d.as_bytes()).copied().unwrap_or((0, 0));
            let full = entries.saturating_add(1) > m.quotas.mailbox_entries
                || bytes.saturating_add(size) > m.quotas.mailbox_bytes;
            if full {
                undelivered.push(d);
            } else {
                room.push(d);
            }
        }
        if room.is_empty() && !undelivered.is_empty() {
            return Err(StoreError::MailboxFull);
        }
        if !undelivered.is_empty() {
            exec!(
                c,
                "UPDATE mailbox_usage SET missed = missed + 1 WHERE device_id = ANY($1)",
                ids(&undelivered)
            );
        }
        recipients = room;
    }
    // P460: who gets it held, and for whose invitation.
    let mut hold: Vec<(DeviceId, [u8; 16])> = Vec::new();
    let mut invited: Vec<DeviceId> = Vec::new();
    let (direct, any_held) = row!(
        c,
        (bool, bool),
        "SELECT EXISTS (SELECT 1 FROM direct_groups WHERE group_id = $1),
                EXISTS (SELECT 1 FROM held WHERE group_id = $1)",
        m.group.as_bytes()
    )
    .unwrap_or((false, false));
    if m.kind == EntryKind::Welcome && !direct {
        if let Some(sender) = &sender_user {
            let mut decided: Vec<([u8; 16], bool)> = Vec::new();
            let mut to = Vec::new();
            for d in recipients {
                let Some(owner) = user_of(c, &d).await? else {
                    continue;
                };
                let accepts = match decided.iter().find(|(u, _)| *u == owner) {
                    Some((_, a)) => *a,
                    None => {
                        let a = accepts_welcomes(c, &owner, sender, m.group).await?;
                        decided.push((owner, a));
                        a
                    }
                };
                if accepts {
                    to.push(d);
                } else {
                    invited.push(d);
                    hold.push((d, *sender));
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
                let pending = one!(
                    c,
                    i64,
                    "SELECT COUNT(DISTINCT h.group_id) FROM held h
                     JOIN devices d ON d.device_id = h.device_id WHERE d.user_id = $1",
                    owner
                );
                if unbig(pending) >= m.quotas.requests_per_user {
                    return Err(StoreError::QuotaExceeded {
                        quota: Quota::Requests,
                        limit: m.quotas.requests_per_user,
                    });
                }
            }
            recipients = to;
        }
    } else {
        if any_held {
            let mut to = Vec::new();
            for d in recipients {
                let inviter = opt!(
                    c,
                    [u8; 16],
                    "SELECT inviter FROM held WHERE device_id = $1 AND group_id = $2 LIMIT 1",
                    d.as_bytes(),
                    m.group.as_bytes()
                );
                match inviter {
                    Some(i) => hold.push((d, i)),
                    None => to.push(d),
                }
            }
            recipients = to;
        }
    }
    let held: Vec<DeviceId> = hold.iter().map(|(d, _)| *d).collect();
    if recipients.is_empty() && hold.is_empty() {
        return Ok(Enqueued {
            seq,
            undelivered,
            held,
            sender_user,
        });
    }
    let message = insert_message(c, &m, seq, sender_user.as_ref(), m.payload).await?;
    deliver(c, &recipients, message).await?;
    out.wake(recipients.iter().copied());
    for (d, inviter) in &hold {
        exec!(
            c,
            "INSERT INTO held (device_id, group_id, message_id, inviter, stored_at)
             VALUES ($1, $2, $3, $4, $5)",
            d.as_bytes(),
            m.group.as_bytes(),
            message,
            inviter,
            m.now_ms
        );
    }
    // P460: the invited devices are told who asked, so their users can answer.
    if !invited.is_empty()
        && let Some(sender) = &sender_user
    {
        let name = one!(
            c,
            String,
            "SELECT username FROM users WHERE user_id = $1",
            sender
        );
        let notice = Outgoing {
            kind: EntryKind::Request,
            ..m
        };
        let id = insert_message(c, &notice, seq, None, name.as_bytes()).await?;
        deliver(c, &invited, id).await?;
        out.wake(invited.iter().copied());
    }
    Ok(Enqueued {
        seq,
        undelivered,
        held,
        sender_user,
    })
}

/// `QuotaExceeded` if the group holds more than `max` devices.
async fn check_group_size(
    c: &mut PgConnection,
    group: &GroupId,
    max: u64,
) -> Result<(), StoreError> {
    let n = one!(
        c,
        i64,
        "SELECT COUNT(*) FROM group_members WHERE group_id = $1",
        group.as_bytes()
    );
    if unbig(n) > max {
        return Err(StoreError::QuotaExceeded {
            quota: Quota::GroupMembers,
            limit: max,
        });
    }
    Ok(())
}

pub(crate) async fn create_group(
    c: &mut PgConnection,
    g: &NewGroup,
    out: &mut Outbox,
) -> Result<Delivered, StoreError> {
    if let Some(first) = earlier_handshake(c, &g.creator, g.client_key.as_ref()).await? {
        return Ok(first);
    }
    let gid = g.group_id.as_bytes();
    if one!(
        c,
        bool,
        "SELECT EXISTS (SELECT 1 FROM groups WHERE group_id = $1)",
        gid
    ) {
        return Err(StoreError::GroupExists);
    }
    let direct = g.direct.map(|(a, b)| if a <= b { (a, b) } else { (b, a) });
    if let Some((a, b)) = direct
        && one!(
            c,
            bool,
            "SELECT EXISTS (SELECT 1 FROM direct_groups WHERE user_a = $1 AND user_b = $2)",
            a.as_bytes(),
            b.as_bytes()
        )
    {
        return Err(StoreError::GroupExists);
    }
    if let Some(name) = &g.name
        && one!(
            c,
            bool,
            "SELECT EXISTS (SELECT 1 FROM group_names WHERE name = $1)",
            name.as_str()
        )
    {
        return Err(StoreError::GroupExists);
    }
    if !g.members.contains(&g.creator) {
        return Err(StoreError::NotAMember);
    }
    if g.members.len() as u64 > g.quotas.group_members {
        return Err(StoreError::QuotaExceeded {
            quota: Quota::GroupMembers,
            limit: g.quotas.group_members,
        });
    }
    for d in &g.members {
        if !device_exists(c, d).await? {
            return Err(StoreError::DeviceNotFound(*d));
        }
    }
    let creator_user = opt!(
        c,
        [u8; 16],
        "SELECT user_id FROM devices WHERE device_id = $1",
        g.creator.as_bytes()
    );
    if let Some(user) = &creator_user {
        let recent = one!(
            c,
            i64,
            "SELECT COUNT(*) FROM groups WHERE created_by = $1 AND created_at > $2",
            user,
            g.now_ms - 3_600_000
        );
        if unbig(recent) >= g.quotas.groups_per_hour {
            return Err(StoreError::QuotaExceeded {
                quota: Quota::GroupsPerHour,
                limit: g.quotas.groups_per_hour,
            });
        }
    }
    exec!(
        c,
        "INSERT INTO groups (group_id, epoch, next_seq, created_at, created_by)
         VALUES ($1, 1, 1, $2, $3)",
        gid,
        g.now_ms,
        creator_user
    );
    exec!(
        c,
        "INSERT INTO group_members (group_id, device_id) SELECT $1, d FROM unnest($2::bytea[]) AS t(d)
         ON CONFLICT DO NOTHING",
        gid,
        ids(&g.members)
    );
    if let Some(state) = &g.public_state {
        exec!(
            c,
            "INSERT INTO group_states (group_id, state) VALUES ($1, $2)",
            gid,
            state.as_slice()
        );
    }
    if let Some(name) = &g.name {
        exec!(
            c,
            "INSERT INTO group_names (name, group_id) VALUES ($1, $2)",
            name.as_str(),
            gid
        );
        if let Some(ch) = &g.channel {
            exec!(
                c,
                "INSERT INTO channels (group_id, password_hash, totp_secret, group_info)
                 VALUES ($1, $2, $3, $4)",
                gid,
                ch.password_hash.as_deref(),
                ch.totp_secret.as_deref(),
                ch.group_info.as_slice()
            );
            if let Some(user) = &creator_user {
                exec!(
                    c,
                    "INSERT INTO channel_admins (group_id, user_id) VALUES ($1, $2)",
                    gid,
                    user
                );
            }
        }
    }
    if let Some((a, b)) = direct {
        exec!(
            c,
            "INSERT INTO direct_groups (user_a, user_b, group_id) VALUES ($1, $2, $3)",
            a.as_bytes(),
            b.as_bytes(),
            gid
        );
    }
    let recipients: Vec<DeviceId> = g
        .members
        .iter()
        .copied()
        .filter(|d| *d != g.creator)
        .collect();
    let sent = match &g.welcome {
        Some(w) => Some(
            enqueue(
                c,
                Outgoing {
                    group: &g.group_id,
                    kind: EntryKind::Welcome,
                    sender: &g.creator,
                    payload: w,
                    recipients: &recipients,
                    now_ms: g.now_ms,
                    quotas: &g.quotas,
                },
                out,
            )
            .await?,
        ),
        None => None,
    };
    // P460: whoever the creator brought in may invite the creator.
    if let Some(creator) = &creator_user {
        for d in &recipients {
            if let Some(owner) = user_of(c, d).await? {
                record_consent(c, creator, &owner).await?;
            }
        }
    }
    let done = Delivered {
        epoch: 1,
        group_seq: sent.as_ref().map_or(0, |s| s.seq),
        stored_at_ms: g.now_ms,
        recipients,
        undelivered: Vec::new(),
        held: sent.map(|s| s.held).unwrap_or_default(),
    };
    record_handshake(c, &g.creator, g.client_key.as_ref(), &g.group_id, &done).await?;
    Ok(done)
}

pub(crate) async fn group(
    c: &mut PgConnection,
    group: &GroupId,
) -> Result<Option<GroupRecord>, StoreError> {
    let epoch = opt!(
        c,
        i64,
        "SELECT epoch FROM groups WHERE group_id = $1",
        group.as_bytes()
    );
    let Some(epoch) = epoch else { return Ok(None) };
    Ok(Some(GroupRecord {
        group_id: *group,
        epoch: unbig(epoch),
        members: members_of(c, group).await?,
        channel: is_channel(c, group).await?,
    }))
}

pub(crate) async fn public_state(
    c: &mut PgConnection,
    group: &GroupId,
) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(opt!(
        c,
        Vec<u8>,
        "SELECT state FROM group_states WHERE group_id = $1",
        group.as_bytes()
    ))
}

pub(crate) async fn named_group(
    c: &mut PgConnection,
    name: &str,
) -> Result<Option<GroupId>, StoreError> {
    let id = opt!(
        c,
        [u8; 16],
        "SELECT group_id FROM group_names WHERE name = $1",
        name
    );
    Ok(id.map(GroupId::from_bytes))
}

pub(crate) async fn direct_group(
    c: &mut PgConnection,
    a: &UserId,
    b: &UserId,
) -> Result<Option<GroupId>, StoreError> {
    let (a, b) = if a <= b { (a, b) } else { (b, a) };
    let id = opt!(
        c,
        [u8; 16],
        "SELECT group_id FROM direct_groups WHERE user_a = $1 AND user_b = $2",
        a.as_bytes(),
        b.as_bytes()
    );
    Ok(id.map(GroupId::from_bytes))
}

pub(crate) async fn accept_commit(
    c: &mut PgConnection,
    m: &NewCommit,
    out: &mut Outbox,
) -> Result<Delivered, StoreError> {
    if let Some(first) = earlier_handshake(c, &m.sender, m.client_key.as_ref()).await? {
        return Ok(first);
    }
    let (epoch, member, recipients) = group_state(c, &m.group_id, &m.sender).await?;
    let gid = m.group_id.as_bytes();
    let granted = m.external
        && !member
        && one!(
            c,
            bool,
            // P553: a channel's grant; P536: a new device of a member's user.
            "SELECT EXISTS (SELECT 1 FROM channel_grants
               WHERE group_id = $1 AND device_id = $2 AND expires_at > $3)
             OR EXISTS (SELECT 1 FROM group_members gm
               JOIN devices d ON d.device_id = gm.device_id
               WHERE gm.group_id = $1 AND gm.device_id <> $2
                 AND d.user_id = (SELECT user_id FROM devices WHERE device_id = $2))",
            gid,
            m.sender.as_bytes(),
            m.now_ms
        );
    // P537: a member's external commit replacing its own leaf.
    let resync = member && m.added == [m.sender] && m.removed == [m.sender];
    if !(granted || resync || (!m.external && member)) {
        return Err(StoreError::NotAMember);
    }
    if epoch != m.epoch {
        return Err(StoreError::StaleEpoch { current: epoch });
    }
    for d in &m.added {
        if !device_exists(c, d).await? {
            return Err(StoreError::DeviceNotFound(*d));
        }
    }
    let commit = enqueue(
        c,
        Outgoing {
            group: &m.group_id,
            kind: EntryKind::Handshake,
            sender: &m.sender,
            payload: &m.commit,
            recipients: &recipients,
            now_ms: m.now_ms,
            quotas: &m.quotas,
        },
        out,
    )
    .await?;
    let seq = commit.seq;
    let mut held = commit.held;
    if let Some(w) = &m.welcome {
        let welcome = enqueue(
            c,
            Outgoing {
                group: &m.group_id,
                kind: EntryKind::Welcome,
                sender: &m.sender,
                payload: w,
                recipients: &m.added,
                now_ms: m.now_ms,
                quotas: &m.quotas,
            },
            out,
        )
        .await?;
        held.extend(welcome.held);
    }
    if let Some(sender) = user_of(c, &m.sender).await? {
        for d in &m.added {
            if let Some(owner) = user_of(c, d).await? {
                record_consent(c, &sender, &owner).await?;
            }
        }
    }
    if m.external {
        exec!(
            c,
            "DELETE FROM channel_grants WHERE group_id = $1 AND device_id = $2",
            gid,
            m.sender.as_bytes()
        );
    }
    match &m.public_state {
        Some(state) => exec!(
            c,
            "INSERT INTO group_states (group_id, state) VALUES ($1, $2)
             ON CONFLICT (group_id) DO UPDATE SET state = excluded.state",
            gid,
            state.as_slice()
        ),
        None => exec!(c, "DELETE FROM group_states WHERE group_id = $1", gid),
    };
    if let Some(info) = &m.group_info {
        exec!(
            c,
            "UPDATE channels SET group_info = $2 WHERE group_id = $1",
            gid,
            info.as_slice()
        );
    }
    if !m.added.is_empty() {
        exec!(
            c,
            "INSERT INTO group_members (group_id, device_id) SELECT $1, d FROM unnest($2::bytea[]) AS t(d)
             ON CONFLICT DO NOTHING",
            gid,
            ids(&m.added)
        );
    }
    let gone: Vec<DeviceId> = m
        .removed
        .iter()
        .copied()
        .filter(|d| !m.added.contains(d))
        .collect();
    if !gone.is_empty() {
        exec!(
            c,
            "DELETE FROM group_members WHERE group_id = $1 AND device_id = ANY($2)",
            gid,
            ids(&gone)
        );
    }
    check_group_size(c, &m.group_id, m.quotas.group_members).await?;
    exec!(
        c,
        "UPDATE groups SET epoch = epoch + 1 WHERE group_id = $1",
        gid
    );
    let mut wake = recipients;
    wake.extend(m.added.iter().copied());
    let done = Delivered {
        epoch: epoch + 1,
        group_seq: seq,
        stored_at_ms: m.now_ms,
        recipients: wake,
        undelivered: Vec::new(),
        held,
    };
    record_handshake(c, &m.sender, m.client_key.as_ref(), &m.group_id, &done).await?;
    Ok(done)
}

pub(crate) async fn enqueue_message(
    c: &mut PgConnection,
    m: &NewMessage,
    out: &mut Outbox,
) -> Result<Delivered, StoreError> {
    let sender = m.sender.as_bytes();
    let earlier = row!(
        c,
        (i64, i64, i64),
        "SELECT epoch, group_seq, stored_at FROM sent_messages
         WHERE sender_device = $1 AND client_message_id = $2",
        sender,
        m.client_message_id.as_slice()
    );
    if let Some((epoch, seq, at)) = earlier {
        return Ok(Delivered {
            epoch: unbig(epoch),
            group_seq: unbig(seq),
            stored_at_ms: at,
            recipients: Vec::new(),
            undelivered: Vec::new(),
            held: Vec::new(),
        });
    }
    let (epoch, member, recipients) = group_state(c, &m.group_id, &m.sender).await?;
    if !member {
        return Err(StoreError::NotAMember);
    }
    if epoch != m.epoch {
        return Err(StoreError::StaleEpoch { current: epoch });
    }
    let sent = enqueue(
        c,
        Outgoing {
            group: &m.group_id,
            kind: EntryKind::Application,
            sender: &m.sender,
            payload: &m.ciphertext,
            recipients: &recipients,
            now_ms: m.now_ms,
            quotas: &m.quotas,
        },
        out,
    )
    .await?;
    // Woken too: their missed count went up (P450).
    out.wake(sent.undelivered.iter().copied());
    let recipients = recipients
        .into_iter()
        .filter(|d| !sent.undelivered.contains(d) && !sent.held.contains(d))
        .collect();
    // P460: writing in a 1:1 accepts the other's invitations (one statement: it
    // is on every send).
    if let Some(me) = sent.sender_user {
        exec!(
            c,
            "INSERT INTO consent (user_id, peer_id)
             SELECT $2, other FROM (
                SELECT CASE WHEN user_a = $2 THEN user_b ELSE user_a END AS other
                FROM direct_groups WHERE group_id = $1) AS pair
             WHERE other <> $2
             ON CONFLICT DO NOTHING",
            m.group_id.as_bytes(),
            &me
        );
    }
    exec!(
        c,
        "INSERT INTO sent_messages (sender_device, client_message_id, epoch, group_seq, stored_at)
         VALUES ($1, $2, $3, $4, $5)",
        sender,
        m.client_message_id.as_slice(),
        big(epoch),
        big(sent.seq),
        m.now_ms
    );
    Ok(Delivered {
        epoch,
        group_seq: sent.seq,
        stored_at_ms: m.now_ms,
        recipients,
        undelivered: sent.undelivered,
        held: sent.held,
    })
}

type EntryRow = (i64, [u8; 16], i32, Vec<u8>, [u8; 16], i64, i64);

pub(crate) async fn fetch_mailbox(
    c: &mut PgConnection,
    device: &DeviceId,
    after_id: u64,
    limit: u32,
    max_bytes: usize,
) -> Result<MailboxPage, StoreError> {
    let missed = one!(
        c,
        i64,
        "SELECT COALESCE((SELECT missed FROM mailbox_usage WHERE device_id = $1), 0)",
        device.as_bytes()
    );
    let mut stream = sqlx::query_as::<_, EntryRow>(
        "SELECT d.id, m.group_id, m.kind, m.payload, m.sender_device, m.group_seq, m.stored_at
         FROM deliveries d JOIN messages m ON m.id = d.message_id
         WHERE d.device_id = $1 AND d.id > $2 ORDER BY d.id LIMIT $3",
    )
    .bind(device.as_bytes())
    .bind(big(after_id))
    .bind(i64::from(limit) + 1)
    .fetch(&mut *c);
    let mut entries = Vec::new();
    let mut bytes = 0usize;
    let mut more = false;
    while let Some(row) = stream.next().await {
        let (id, group, kind, payload, sender, seq, at) = row.map_err(crate::pg)?;
        bytes = bytes
            .saturating_add(payload.len())
            .saturating_add(hush_proto::frame::ENTRY_OVERHEAD);
        if entries.len() == limit as usize || (bytes > max_bytes && !entries.is_empty()) {
            more = true;
            break;
        }
        entries.push(Entry {
            id: unbig(id),
            group_id: GroupId::from_bytes(group),
            kind: EntryKind::try_from(kind).map_err(|_| corrupt("stored entry kind"))?,
            payload: payload.into(),
            sender_device: DeviceId::from_bytes(sender),
            group_seq: unbig(seq),
            stored_at_ms: at,
        });
    }
    Ok(MailboxPage {
        entries,
        missed: u32::try_from(missed.max(0)).unwrap_or(u32::MAX),
        more,
    })
}

pub(crate) async fn ack(
    c: &mut PgConnection,
    device: &DeviceId,
    ids: &[u64],
    missed_seen: u32,
) -> Result<(), StoreError> {
    let ids: Vec<i64> = ids.iter().map(|i| big(*i)).collect();
    // The deliveries_uncount trigger locks each message before it deletes one with
    // its last entry (migration 0002); taken here first, in id order, so two acks
    // of shared messages wait for each other instead of deadlocking.
    exec!(
        c,
        "SELECT id FROM messages WHERE id IN (
            SELECT message_id FROM deliveries WHERE device_id = $1 AND id = ANY($2))
         ORDER BY id FOR UPDATE",
        device.as_bytes(),
        &ids
    );
    // The deliveries_uncount trigger deletes a message with its last entry.
    exec!(
        c,
        "DELETE FROM deliveries WHERE device_id = $1 AND id = ANY($2)",
        device.as_bytes(),
        ids
    );
    if missed_seen > 0 {
        exec!(
            c,
            "UPDATE mailbox_usage SET missed = GREATEST(missed - $1, 0) WHERE device_id = $2",
            i64::from(missed_seen),
            device.as_bytes()
        );
    }
    Ok(())
}

pub(crate) async fn requests(
    c: &mut PgConnection,
    user: &UserId,
) -> Result<Vec<HeldRequest>, StoreError> {
    let rows = rows!(
        c,
        ([u8; 16], String, i64, i64),
        "SELECT h.inviter, u.username, COUNT(DISTINCT h.group_id), MIN(h.stored_at)
         FROM held h JOIN devices d ON d.device_id = h.device_id
         JOIN users u ON u.user_id = h.inviter
         WHERE d.user_id = $1 GROUP BY h.inviter, u.username ORDER BY MIN(h.stored_at)",
        user.as_bytes()
    );
    rows.into_iter()
        .map(|(inviter, name, groups, since)| {
            Ok(HeldRequest {
                inviter: UserId::from_bytes(inviter),
                inviter_name: username(name)?,
                groups: u32::try_from(groups.max(0)).unwrap_or(u32::MAX),
                since_ms: since,
            })
        })
        .collect()
}

pub(crate) async fn answer_request(
    c: &mut PgConnection,
    user: &UserId,
    inviter: &UserId,
    accept: bool,
    out: &mut Outbox,
) -> Result<Vec<DeviceId>, StoreError> {
    let rows = rows!(
        c,
        (i64, [u8; 16], [u8; 16], i64),
        "SELECT h.id, h.device_id, h.group_id, h.message_id FROM held h
         JOIN devices d ON d.device_id = h.device_id
         WHERE d.user_id = $1 AND h.group_id IN (
            SELECT h2.group_id FROM held h2 JOIN devices d2 ON d2.device_id = h2.device_id
            WHERE d2.user_id = $1 AND h2.inviter = $2)
         ORDER BY h.id",
        user.as_bytes(),
        inviter.as_bytes()
    );
    let mut wake = Vec::new();
    if accept {
        record_consent(c, user.as_bytes(), inviter.as_bytes()).await?;
        let devices: Vec<DeviceId> = rows.iter().map(|r| DeviceId::from_bytes(r.1)).collect();
        lock_mailboxes(c, &devices).await?;
        for (id, device, _, message) in &rows {
            // Delivered first, so the message is never without an entry.
            exec!(
                c,
                "INSERT INTO deliveries (device_id, message_id) VALUES ($1, $2)",
                device,
                message
            );
            exec!(c, "DELETE FROM held WHERE id = $1", id);
            let d = DeviceId::from_bytes(*device);
            if !wake.contains(&d) {
                wake.push(d);
            }
        }
    } else {
        for (id, device, group, _) in &rows {
            exec!(c, "DELETE FROM held WHERE id = $1", id);
            exec!(
                c,
                "DELETE FROM group_members WHERE group_id = $1 AND device_id = $2",
                group,
                device
            );
        }
    }
    out.wake(wake.iter().copied());
    Ok(wake)
}

/// One batch of expiry (P453): at most 1,000 undelivered entries stored before
/// `before_ms`; their devices' missed counts go up. Returns how many went.
pub(crate) async fn expire_batch(c: &mut PgConnection, before_ms: i64) -> Result<u64, StoreError> {
    let batch = rows!(
        c,
        (i64, [u8; 16]),
        "SELECT d.id, d.device_id FROM messages m JOIN deliveries d ON d.message_id = m.id
         WHERE m.stored_at < $1 ORDER BY d.id LIMIT 1000",
        before_ms
    );
    for (id, device) in &batch {
        exec!(c, "DELETE FROM deliveries WHERE id = $1", id);
        exec!(
            c,
            "UPDATE mailbox_usage SET missed = missed + 1 WHERE device_id = $1",
            device
        );
    }
    Ok(batch.len() as u64)
}

/// The rest of retention (P453): held entries past expiry, and idempotency records.
pub(crate) async fn prune_rest(
    c: &mut PgConnection,
    expire_before_ms: i64,
    idempotency_before_ms: i64,
    pruned: &mut Pruned,
) -> Result<(), StoreError> {
    exec!(c, "DELETE FROM held WHERE stored_at < $1", expire_before_ms);
    let sent = exec!(
        c,
        "DELETE FROM sent_messages WHERE stored_at < $1",
        idempotency_before_ms
    );
    let handshakes = exec!(
        c,
        "DELETE FROM handshakes WHERE stored_at < $1",
        idempotency_before_ms
    );
    pruned.idempotency_records = sent + handshakes;
    Ok(())
}
