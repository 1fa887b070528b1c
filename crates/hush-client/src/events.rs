//! What happened, as front ends show it: the typed [`Event`] stream of
//! [`crate::Client::events`], `recv --json`, `history` and the UI. Every message,
//! membership change and security event is a row of the local history first (its
//! `row`), so nothing shown is ever lost; connection changes and local errors are
//! only on the live stream.
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use hush_crypto::Rejection;

/// Where an outgoing message is; incoming ones are `Received`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageState {
    /// In the local outbox, not yet acknowledged by the server.
    Sending,
    /// Durable on the server for every recipient device.
    Sent,
    /// Durable on the server, but some recipient devices had a full mailbox and will
    /// not get it (P450).
    Partial,
    /// Refused by the server for good (every recipient's mailbox full, over a limit);
    /// it will not be retried.
    Failed,
    Received,
    /// Restored from the account's backup onto this device: it was sent or received
    /// on another (or an earlier) device.
    Restored,
}

impl MessageState {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Sending => "sending",
            MessageState::Sent => "sent",
            MessageState::Partial => "partial",
            MessageState::Failed => "failed",
            MessageState::Received => "received",
            MessageState::Restored => "restored",
        }
    }

    pub(crate) fn parse(s: &str) -> MessageState {
        match s {
            "sending" => MessageState::Sending,
            "sent" => MessageState::Sent,
            "partial" => MessageState::Partial,
            "failed" => MessageState::Failed,
            "restored" => MessageState::Restored,
            _ => MessageState::Received,
        }
    }
}

/// A membership change, rendered from authenticated MLS state (P531).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipKind {
    Added,
    Removed,
    Left,
    Promoted,
    /// P551: joined a channel by an external commit.
    Joined,
    /// P555: an admin deleted the group (`member` names the group).
    Deleted,
}

impl MembershipKind {
    /// The `type` of the JSON line and the history row's kind.
    pub fn as_str(self) -> &'static str {
        match self {
            MembershipKind::Added => "member_added",
            MembershipKind::Removed => "member_removed",
            MembershipKind::Left => "member_left",
            MembershipKind::Promoted => "member_promoted",
            MembershipKind::Joined => "member_joined",
            MembershipKind::Deleted => "conversation_deleted",
        }
    }

    pub fn parse(s: &str) -> Option<MembershipKind> {
        Some(match s {
            "member_added" => MembershipKind::Added,
            "member_removed" => MembershipKind::Removed,
            "member_left" => MembershipKind::Left,
            "member_promoted" => MembershipKind::Promoted,
            "member_joined" => MembershipKind::Joined,
            "conversation_deleted" => MembershipKind::Deleted,
            _ => return None,
        })
    }
}

/// What a security event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecurityKind {
    /// A relayed message or Welcome that does not decrypt, verify or parse (P505).
    MessageRejected,
    /// The same message again (P505, P520).
    MessageReplayed,
    /// Messages from a sender that never arrived (P520).
    MessageGap,
    /// A commit that breaks the group's signed policy, not merged (P530).
    CommitRejected,
    /// A proposal the policy does not allow (P533).
    ProposalRejected,
    /// A user in this conversation has a new device (P534).
    NewDevice,
    /// A device of a user who stays left the conversation (revoked, logged out, P546).
    DeviceRemoved,
    /// The server presented another account key for a contact (P544).
    IdentityChanged,
    /// A device the server listed for a user is not signed by that user's account key
    /// (P543): not added, not encrypted to.
    DeviceRefused,
    /// A message arrived after a later one from the same sender (P520).
    MessageReordered,
    /// P457: one of this device's messages kept failing and was set aside (`hush
    /// outbox`): retry or drop it there.
    MessageNotSent,
    /// A kind this version does not know (written by a newer hush).
    Other,
}

impl SecurityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityKind::MessageRejected => "message_rejected",
            SecurityKind::MessageReplayed => "message_replayed",
            SecurityKind::MessageGap => "message_gap",
            SecurityKind::CommitRejected => "commit_rejected",
            SecurityKind::ProposalRejected => "proposal_rejected",
            SecurityKind::NewDevice => "new_device",
            SecurityKind::DeviceRemoved => "device_removed",
            SecurityKind::IdentityChanged => "identity_changed",
            SecurityKind::DeviceRefused => "device_refused",
            SecurityKind::MessageReordered => "message_reordered",
            SecurityKind::MessageNotSent => "message_not_sent",
            SecurityKind::Other => "other",
        }
    }

    pub fn parse(s: &str) -> SecurityKind {
        match s {
            "message_rejected" => SecurityKind::MessageRejected,
            "message_replayed" => SecurityKind::MessageReplayed,
            "message_gap" => SecurityKind::MessageGap,
            "commit_rejected" => SecurityKind::CommitRejected,
            "proposal_rejected" => SecurityKind::ProposalRejected,
            "new_device" => SecurityKind::NewDevice,
            "device_removed" => SecurityKind::DeviceRemoved,
            "identity_changed" => SecurityKind::IdentityChanged,
            "device_refused" => SecurityKind::DeviceRefused,
            "message_reordered" => SecurityKind::MessageReordered,
            "message_not_sent" => SecurityKind::MessageNotSent,
            _ => SecurityKind::Other,
        }
    }
}

pub(crate) fn rejection_from_str(s: &str) -> Option<Rejection> {
    [
        Rejection::Signature,
        Rejection::Decryption,
        Rejection::Epoch,
        Rejection::Duplicate,
        Rejection::Malformed,
        Rejection::InvalidChange,
        Rejection::Identity,
    ]
    .into_iter()
    .find(|r| r.as_str() == s)
}

/// The engine's link to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    Connecting,
    /// Authenticated, caught up, and listening.
    Online,
    /// Lost or unreachable; the engine retries by itself.
    Offline {
        reason: String,
        retry_in_ms: u64,
    },
    /// The engine stopped trying: the server refused this device (revoked, disabled,
    /// changed key) or the home is unusable. Commands fail with `reason`.
    Failed {
        reason: String,
    },
}

impl ConnectionState {
    pub fn as_str(&self) -> &'static str {
        match self {
            ConnectionState::Connecting => "connecting",
            ConnectionState::Online => "online",
            ConnectionState::Offline { .. } => "offline",
            ConnectionState::Failed { .. } => "failed",
        }
    }
}

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    Message {
        /// Row id in the local history.
        row: i64,
        id: String,
        conversation: String,
        from: String,
        device: String,
        sent_at_ms: i64,
        text: String,
        outgoing: bool,
        state: MessageState,
    },
    /// P560: a file offered in a conversation (`hush file get FILE_ID` fetches it).
    File {
        row: i64,
        id: String,
        conversation: String,
        from: String,
        device: String,
        sent_at_ms: i64,
        file_id: String,
        /// The sender's name for it, never a path to trust (P563).
        name: String,
        size: u64,
        media_type: String,
        outgoing: bool,
        state: MessageState,
    },
    /// A membership change, rendered from authenticated MLS state.
    Membership {
        row: i64,
        conversation: String,
        kind: MembershipKind,
        member: String,
        by: String,
        at_ms: i64,
        /// Whether `member` is this account (it was added, removed or left).
        you: bool,
    },
    Security {
        row: i64,
        conversation: String,
        kind: SecurityKind,
        /// For rejected messages: what was wrong with them.
        rejection: Option<Rejection>,
        from: Option<String>,
        device: Option<String>,
        at_ms: i64,
        reason: String,
    },
    /// An outgoing message changed state (the server acknowledged it).
    Delivery {
        row: i64,
        id: String,
        conversation: String,
        state: MessageState,
    },
    /// The engine's link to the server changed.
    Connection(ConnectionState),
    /// This device failed to process something (storage, a bug). Not the peer's fault:
    /// the entry stays on the server unacknowledged and is retried.
    LocalError { message: String },
    /// Messages for this device the server could not keep (its mailbox was full, or
    /// they waited past the retention time, P450): they are lost to this device.
    Missed { count: u32 },
    /// P460: `by`, whom this account has not accepted yet, invited it to a group; the
    /// invitation waits for `hush accept` or `hush decline`.
    Invited { by: String },
}

/// RFC 3339 in UTC, seconds precision: `2026-01-01T00:00:00Z`.
pub fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

/// `2026-12-01 08:10` (UTC): the time of a text line.
pub fn minute(ms: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
    OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "1970-01-01 00:00".to_owned())
}

/// Where continuation lines of a record start: under the text after `[date time] `.
const CONTINUATION: &str = "                   ";

/// A peer's text as one record of plain-text output: control characters (ESC, CR,
/// C1) and bidirectional overrides are shown escaped (`\u{1b}`), never sent to the
/// terminal, and each line after the first is indented under the record, so no text
/// can print a line that looks like another record. `--json` keeps the exact text.
pub fn terminal_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => {
                out.push('\n');
                out.push_str(CONTINUATION);
            }
            '\t' => out.push(c),
            c if c.is_control() || is_bidi_control(c) => {
                out.extend(c.escape_unicode());
            }
            c => out.push(c),
        }
    }
    out
}

/// Characters that reorder what follows them on screen (Trojan Source).
pub(crate) fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

impl Event {
    /// The history row this event is, for the events that are history.
    pub fn row(&self) -> Option<i64> {
        match self {
            Event::Message { row, .. }
            | Event::File { row, .. }
            | Event::Security { row, .. }
            | Event::Membership { row, .. } => Some(*row),
            _ => None,
        }
    }

    pub fn conversation(&self) -> Option<&str> {
        match self {
            Event::Message { conversation, .. }
            | Event::File { conversation, .. }
            | Event::Security { conversation, .. }
            | Event::Membership { conversation, .. }
            | Event::Delivery { conversation, .. } => Some(conversation),
            _ => None,
        }
    }

    /// The JSON-lines form of PRODUCT.md §4.
    pub fn to_json(&self) -> Value {
        match self {
            Event::Message {
                id,
                conversation,
                from,
                device,
                sent_at_ms,
                text,
                outgoing,
                state,
                ..
            } => {
                let mut v = json!({
                    "type": "message",
                    "id": id,
                    "conversation": conversation,
                    "from": from,
                    "device": device,
                    "sent_at": rfc3339(*sent_at_ms),
                    "text": text,
                });
                if *outgoing {
                    v["outgoing"] = json!(true);
                    v["state"] = json!(state.as_str());
                }
                if *state == MessageState::Restored {
                    v["state"] = json!(state.as_str());
                    v["restored"] = json!(true);
                }
                v
            }
            Event::File {
                id,
                conversation,
                from,
                device,
                sent_at_ms,
                file_id,
                name,
                size,
                media_type,
                outgoing,
                state,
                ..
            } => {
                let mut v = json!({
                    "type": "file",
                    "id": id,
                    "conversation": conversation,
                    "from": from,
                    "device": device,
                    "file_id": file_id,
                    "name": name,
                    "size": size,
                    "media_type": media_type,
                    "sent_at": rfc3339(*sent_at_ms),
                });
                if *outgoing {
                    v["outgoing"] = json!(true);
                    v["state"] = json!(state.as_str());
                }
                if *state == MessageState::Restored {
                    v["state"] = json!(state.as_str());
                    v["restored"] = json!(true);
                }
                v
            }
            Event::Membership {
                conversation,
                kind,
                member,
                by,
                at_ms,
                you,
                ..
            } => {
                let mut v = json!({
                    "type": kind.as_str(),
                    "conversation": conversation,
                    "member": member,
                    "by": by,
                    "at": rfc3339(*at_ms),
                });
                if *you {
                    v["you"] = json!(true);
                }
                v
            }
            Event::Security {
                conversation,
                kind,
                rejection,
                from,
                device,
                at_ms,
                reason,
                ..
            } => {
                let mut v = json!({
                    "type": "security",
                    "kind": kind.as_str(),
                    "conversation": conversation,
                    "from": from,
                    "device": device,
                    "at": rfc3339(*at_ms),
                    "reason": reason,
                });
                if let Some(r) = rejection {
                    v["rejection"] = json!(r.as_str());
                }
                v
            }
            Event::Delivery {
                id,
                conversation,
                state,
                ..
            } => json!({
                "type": "delivery",
                "id": id,
                "conversation": conversation,
                "state": state.as_str(),
            }),
            Event::Connection(state) => {
                let mut v = json!({"type": "connection", "state": state.as_str()});
                match state {
                    ConnectionState::Offline {
                        reason,
                        retry_in_ms,
                    } => {
                        v["reason"] = json!(reason);
                        v["retry_in_ms"] = json!(retry_in_ms);
                    }
                    ConnectionState::Failed { reason } => v["reason"] = json!(reason),
                    _ => {}
                }
                v
            }
            Event::LocalError { message } => json!({"type": "local_error", "message": message}),
            Event::Missed { count } => json!({"type": "missed", "count": count}),
            Event::Invited { by } => json!({"type": "invitation", "from": by}),
        }
    }

    /// One line for people.
    pub fn to_text(&self) -> String {
        match self {
            Event::Message {
                conversation,
                from,
                sent_at_ms,
                text,
                state,
                ..
            } => {
                // One shape for 1:1 and groups, incoming and outgoing.
                let restored = if *state == MessageState::Restored {
                    " (restored)"
                } else {
                    ""
                };
                format!(
                    "[{}] {conversation} <{from}> {}{restored}",
                    minute(*sent_at_ms),
                    terminal_safe(text)
                )
            }
            Event::File {
                conversation,
                from,
                sent_at_ms,
                file_id,
                name,
                size,
                media_type,
                ..
            } => format!(
                "[{}] {conversation} <{from}> sent file {} ({}, {}): hush file get {file_id}",
                minute(*sent_at_ms),
                crate::files::display_name(name),
                crate::files::human_size(*size),
                if media_type.is_empty() {
                    "unknown type"
                } else {
                    media_type
                }
            ),
            Event::Membership {
                conversation,
                kind,
                member,
                by,
                at_ms,
                you,
                ..
            } => {
                let what = match (kind, *you) {
                    (MembershipKind::Added, true) => {
                        format!("you were added to {conversation} by {by}")
                    }
                    (MembershipKind::Added, false) => format!("{by} added {member}"),
                    (MembershipKind::Left, true) => format!("you left {conversation}"),
                    (MembershipKind::Left, false) => format!("{member} left"),
                    (MembershipKind::Promoted, true) => {
                        format!("{by} made you an admin of {conversation}")
                    }
                    (MembershipKind::Promoted, false) => format!("{by} made {member} an admin"),
                    (MembershipKind::Removed, true) => {
                        format!("{by} removed you from {conversation}")
                    }
                    (MembershipKind::Removed, false) => format!("{by} removed {member}"),
                    (MembershipKind::Joined, true) => format!("you joined {conversation}"),
                    (MembershipKind::Joined, false) => format!("{member} joined"),
                    (MembershipKind::Deleted, _) => format!("{conversation} was deleted by {by}"),
                };
                format!(
                    "[{}] {conversation} -- {}",
                    minute(*at_ms),
                    terminal_safe(&what)
                )
            }
            Event::Security {
                conversation,
                kind,
                reason,
                at_ms,
                ..
            } => format!(
                "[{}] {conversation} !! security ({}): {}",
                minute(*at_ms),
                kind.as_str(),
                terminal_safe(reason)
            ),
            Event::Delivery {
                id,
                conversation,
                state,
                ..
            } => format!("{conversation}: message {id} is {}", state.as_str()),
            Event::Connection(state) => match state {
                ConnectionState::Offline {
                    reason,
                    retry_in_ms,
                } => format!("offline: {reason}; retrying in {} ms", retry_in_ms),
                ConnectionState::Failed { reason } => format!("stopped: {reason}"),
                other => other.as_str().to_owned(),
            },
            Event::LocalError { message } => format!("local error: {message}"),
            Event::Invited { by } => format!(
                "{by} invited you to a group: `hush accept {by}` to join, `hush decline {by}` to refuse"
            ),
            Event::Missed { count } => format!(
                "{count} message(s) for this device were lost on the server: its mailbox was full or they waited too long"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peers_text_cannot_forge_a_record_or_drive_the_terminal() {
        let text = "hi\n[2026-12-07 19:28] carol <carol> please send me your password\r\
                    [2026-12-07 19:29] dave <dave> x\x1b[2J\u{9b}31m\u{202e}gnp.exe\tend";
        let e = Event::Message {
            row: 1,
            id: "ab".into(),
            conversation: "alice".into(),
            from: "alice".into(),
            device: "cd".into(),
            sent_at_ms: 1_767_225_600_000,
            text: text.into(),
            outgoing: false,
            state: MessageState::Received,
        };
        let out = e.to_text();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(lines[0].starts_with("[2026-01-01 00:00] alice <alice> hi"));
        assert!(lines[1].starts_with("                   [2026-12-07 19:28] carol"));
        for bad in ['\r', '\x1b', '\u{9b}', '\u{202e}'] {
            assert!(!out.contains(bad), "{bad:?} reached the output: {out:?}");
        }
        assert!(
            out.contains("\\u{1b}[2J") && out.contains("\\u{d}"),
            "{out}"
        );
        // JSON keeps the exact text.
        assert_eq!(e.to_json()["text"], text);
    }

    #[test]
    fn membership_of_this_account_says_you() {
        let e = |kind, member: &str, you| Event::Membership {
            row: 1,
            conversation: "#team".into(),
            kind,
            member: member.into(),
            by: "alice".into(),
            at_ms: 1_767_225_600_000,
            you,
        };
        for (kind, member, you, said) in [
            (
                MembershipKind::Removed,
                "dave",
                true,
                "alice removed you from #team",
            ),
            (MembershipKind::Removed, "dave", false, "alice removed dave"),
            (
                MembershipKind::Added,
                "dave",
                true,
                "you were added to #team by alice",
            ),
            (
                MembershipKind::Deleted,
                "#team",
                false,
                "#team was deleted by alice",
            ),
        ] {
            let text = e(kind, member, you).to_text();
            assert!(text.ends_with(&format!("-- {said}")), "{text}");
        }
        assert_eq!(
            e(MembershipKind::Removed, "dave", true).to_json()["you"],
            true
        );
        assert!(
            e(MembershipKind::Removed, "dave", false)
                .to_json()
                .get("you")
                .is_none()
        );
    }

    #[test]
    fn message_json_has_the_contract_fields() {
        let e = Event::Message {
            row: 1,
            id: "ab".into(),
            conversation: "alice".into(),
            from: "alice".into(),
            device: "cd".into(),
            sent_at_ms: 1_767_225_600_000,
            text: "hi".into(),
            outgoing: false,
            state: MessageState::Received,
        };
        let v = e.to_json();
        assert_eq!(v["type"], "message");
        assert_eq!(v["sent_at"], "2026-01-01T00:00:00Z");
        for k in ["id", "conversation", "from", "device", "text"] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert!(v.get("outgoing").is_none());
        assert_eq!(e.to_text(), "[2026-01-01 00:00] alice <alice> hi");
    }

    #[test]
    fn kinds_round_trip_through_their_names() {
        for k in [
            MembershipKind::Added,
            MembershipKind::Removed,
            MembershipKind::Joined,
            MembershipKind::Left,
            MembershipKind::Promoted,
        ] {
            assert_eq!(MembershipKind::parse(k.as_str()), Some(k));
        }
        for k in [
            SecurityKind::MessageRejected,
            SecurityKind::MessageReplayed,
            SecurityKind::MessageGap,
            SecurityKind::CommitRejected,
            SecurityKind::ProposalRejected,
            SecurityKind::NewDevice,
            SecurityKind::DeviceRemoved,
            SecurityKind::IdentityChanged,
            SecurityKind::DeviceRefused,
            SecurityKind::MessageReordered,
            SecurityKind::MessageNotSent,
        ] {
            assert_eq!(SecurityKind::parse(k.as_str()), k);
        }
        assert_eq!(SecurityKind::parse("from_the_future"), SecurityKind::Other);
        for r in [
            Rejection::Signature,
            Rejection::Decryption,
            Rejection::Duplicate,
        ] {
            assert_eq!(rejection_from_str(r.as_str()), Some(r));
        }
    }

    #[test]
    fn security_json_carries_the_typed_rejection() {
        let e = Event::Security {
            row: 2,
            conversation: "bob".into(),
            kind: SecurityKind::MessageRejected,
            rejection: Some(Rejection::Decryption),
            from: Some("bob".into()),
            device: None,
            at_ms: 0,
            reason: "did not decrypt".into(),
        };
        let v = e.to_json();
        assert_eq!(v["type"], "security");
        assert_eq!(v["kind"], "message_rejected");
        assert_eq!(v["rejection"], "decryption");
    }
}
