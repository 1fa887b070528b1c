//! Local history: conversations, messages and security events as stored in the home.
//! Reads need no network; `recv` streams rows not yet streamed, `history` pages a
//! conversation, `chats` counts unread.
use rusqlite::{Connection, OptionalExtension, params};

use crate::ClientError;
use crate::events::{Event, MembershipKind, MessageState, SecurityKind, rejection_from_str};
use crate::home::{Home, home_err};

/// A conversation with its unread count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chat {
    pub name: String,
    pub kind: String,
    pub unread: u32,
    pub messages: u32,
    pub last_activity_ms: Option<i64>,
}

const SELECT: &str = "SELECT h.id, h.kind, h.message_id, h.sender, h.device, h.sent_at, h.text,
        h.outgoing, h.state, COALESCE(c.name, lower(hex(h.group_id))), h.rejection,
        lower(hex(f.file_id)), f.size, f.media_type,
        h.text = (SELECT username FROM account WHERE id = 1)
    FROM history h LEFT JOIN conversations c ON c.group_id = h.group_id
    LEFT JOIN file_offers f ON h.kind = 'file' AND f.message_id = h.message_id";

fn rows(
    db: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Event>, ClientError> {
    let mut stmt = db.prepare_cached(sql).map_err(home_err)?;
    let mapped = stmt
        .query_map(params, |r| {
            let row: i64 = r.get(0)?;
            let kind: String = r.get(1)?;
            let message_id: Option<String> = r.get(2)?;
            let sender: Option<String> = r.get(3)?;
            let device: Option<String> = r.get(4)?;
            let at: i64 = r.get(5)?;
            let text: String = r.get(6)?;
            let outgoing: bool = r.get(7)?;
            let state: String = r.get(8)?;
            let conversation: String = r.get(9)?;
            let rejection: Option<String> = r.get(10)?;
            let file: (Option<String>, Option<i64>, Option<String>) =
                (r.get(11)?, r.get(12)?, r.get(13)?);
            let you: Option<bool> = r.get(14)?;
            Ok(if let Some(kind) = MembershipKind::parse(&kind) {
                Event::Membership {
                    row,
                    conversation,
                    kind,
                    member: text,
                    by: sender.unwrap_or_default(),
                    at_ms: at,
                    you: you.unwrap_or(false) && kind != MembershipKind::Deleted,
                }
            } else if let ("file", (Some(file_id), Some(size), Some(media_type))) =
                (kind.as_str(), file)
            {
                Event::File {
                    row,
                    id: message_id.unwrap_or_default(),
                    conversation,
                    from: sender.unwrap_or_default(),
                    device: device.unwrap_or_default(),
                    sent_at_ms: at,
                    file_id,
                    name: text,
                    size: size.max(0) as u64,
                    media_type,
                    outgoing,
                    state: MessageState::parse(&state),
                }
            } else if kind == "message" {
                Event::Message {
                    row,
                    id: message_id.unwrap_or_default(),
                    conversation,
                    from: sender.unwrap_or_default(),
                    device: device.unwrap_or_default(),
                    sent_at_ms: at,
                    text,
                    outgoing,
                    state: MessageState::parse(&state),
                }
            } else {
                Event::Security {
                    row,
                    conversation,
                    kind: SecurityKind::parse(&kind),
                    rejection: rejection.as_deref().and_then(rejection_from_str),
                    from: sender,
                    device,
                    at_ms: at,
                    reason: text,
                }
            })
        })
        .map_err(home_err)?;
    mapped.collect::<Result<Vec<_>, _>>().map_err(home_err)
}

/// The event of one history row.
pub fn by_row(home: &Home, row: i64) -> Result<Event, ClientError> {
    rows(home.db(), &format!("{SELECT} WHERE h.id = ?1"), [row])?
        .pop()
        .ok_or_else(|| ClientError::Home(format!("history row {row} is missing")))
}

/// Events not yet handed to the `recv` stream, oldest first.
pub fn unstreamed(home: &Home) -> Result<Vec<Event>, ClientError> {
    rows(
        home.db(),
        &format!("{SELECT} WHERE h.streamed = 0 ORDER BY h.id"),
        [],
    )
}

/// Events after history row `row`, oldest first (what the engine publishes).
pub fn after(home: &Home, row: i64) -> Result<Vec<Event>, ClientError> {
    rows(
        home.db(),
        &format!("{SELECT} WHERE h.id > ?1 ORDER BY h.id"),
        [row],
    )
}

/// The newest history row id (0 for none).
pub fn last_row(home: &Home) -> Result<i64, ClientError> {
    home.db()
        .query_row("SELECT COALESCE(MAX(id), 0) FROM history", [], |r| r.get(0))
        .map_err(home_err)
}

/// Marks events as streamed and read.
pub fn mark_streamed(home: &Home, rows: &[i64]) -> Result<(), ClientError> {
    let db = home.db();
    let mut stmt = db
        .prepare_cached("UPDATE history SET streamed = 1, unread = 0 WHERE id = ?1")
        .map_err(home_err)?;
    for row in rows {
        stmt.execute([row]).map_err(home_err)?;
    }
    Ok(())
}

/// The newest `limit` events of a conversation, oldest first; marks them read.
pub fn conversation(home: &Home, name: &str, limit: u32) -> Result<Vec<Event>, ClientError> {
    let db = home.db();
    let group: Option<Vec<u8>> = db
        .query_row(
            "SELECT group_id FROM conversations WHERE name = ?1",
            [name],
            |r| r.get(0),
        )
        .optional()
        .map_err(home_err)?;
    let group =
        group.ok_or_else(|| ClientError::Invalid(format!("no conversation with {name}")))?;
    let mut events = rows(
        db,
        &format!("{SELECT} WHERE h.group_id = ?1 ORDER BY h.id DESC LIMIT ?2"),
        params![group, limit],
    )?;
    events.reverse();
    db.execute(
        "UPDATE history SET unread = 0 WHERE group_id = ?1 AND unread = 1",
        [&group],
    )
    .map_err(home_err)?;
    Ok(events)
}

/// Every conversation with its unread count, most recently active first.
pub fn chats(home: &Home) -> Result<Vec<Chat>, ClientError> {
    let db = home.db();
    let mut stmt = db
        .prepare_cached(
            "SELECT c.name, c.kind,
                    COALESCE(SUM(h.unread), 0), COUNT(h.id), MAX(h.sent_at)
             FROM conversations c LEFT JOIN history h ON h.group_id = c.group_id
             WHERE c.kind <> 'left'
             GROUP BY c.group_id
             ORDER BY MAX(h.id) IS NULL, MAX(h.id) DESC, c.name",
        )
        .map_err(home_err)?;
    let mapped = stmt
        .query_map([], |r| {
            Ok(Chat {
                name: r.get(0)?,
                kind: r.get(1)?,
                unread: r.get(2)?,
                messages: r.get(3)?,
                last_activity_ms: r.get(4)?,
            })
        })
        .map_err(home_err)?;
    mapped.collect::<Result<Vec<_>, _>>().map_err(home_err)
}

/// P457: a message waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// The message id (`hush outbox retry|drop ID`).
    pub id: String,
    pub conversation: String,
    /// The text (or a file's name), as history shows it.
    pub text: String,
    pub written_at_ms: i64,
    /// Runs that failed to send it.
    pub attempts: u32,
    /// Kept out of the automatic retries until `hush outbox retry`.
    pub set_aside: bool,
    pub last_error: Option<String>,
}

/// P457: the outbox, oldest first.
pub fn outbox(home: &Home) -> Result<Vec<OutboxEntry>, ClientError> {
    let db = home.db();
    let mut stmt = db
        .prepare_cached(
            "SELECT o.message_id, COALESCE(c.name, lower(hex(o.group_id))), COALESCE(h.text, ''),
                    COALESCE(h.sent_at, 0), o.attempts, o.set_aside, o.last_error
             FROM outbox o
             LEFT JOIN conversations c ON c.group_id = o.group_id
             LEFT JOIN history h ON h.outgoing = 1 AND h.message_id = lower(hex(o.message_id))
             ORDER BY o.rowid",
        )
        .map_err(home_err)?;
    let mapped = stmt
        .query_map([], |r| {
            let id: Vec<u8> = r.get(0)?;
            Ok(OutboxEntry {
                id: id.iter().map(|b| format!("{b:02x}")).collect(),
                conversation: r.get(1)?,
                text: r.get(2)?,
                written_at_ms: r.get(3)?,
                attempts: r.get(4)?,
                set_aside: r.get(5)?,
                last_error: r.get(6)?,
            })
        })
        .map_err(home_err)?;
    mapped.collect::<Result<Vec<_>, _>>().map_err(home_err)
}

/// P457: drops a message from the outbox (no network); its history row says failed.
pub fn outbox_drop(home: &Home, id: &str) -> Result<(), ClientError> {
    let id = hush_proto::ids::MessageId::parse_hex(id).map_err(|_| {
        ClientError::Invalid(format!(
            "{id:?} is not a message id (32 hex digits, from `hush outbox`)"
        ))
    })?;
    let db = home.db();
    home.write(|| {
        let n = db
            .execute(
                "DELETE FROM outbox WHERE message_id = ?1",
                [id.as_bytes().as_slice()],
            )
            .map_err(home_err)?;
        if n == 0 {
            return Err(ClientError::Invalid(format!(
                "no message {id} waits in the outbox"
            )));
        }
        db.execute(
            "UPDATE history SET state = 'failed' WHERE message_id = ?1 AND outgoing = 1",
            [id.to_string()],
        )
        .map_err(home_err)?;
        Ok(())
    })
}
