//! What happened, as front ends show it: the `recv --json` stream, `history`, the UI.
//! Every event is a row of the local history first, so nothing printed is ever lost.
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// One history row as an event.
#[derive(Debug, Clone, PartialEq, Eq)]
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
        /// `sending` until the server acknowledged it, then `sent`; `received`.
        state: String,
    },
    /// A membership change, rendered from authenticated MLS state.
    Membership {
        row: i64,
        conversation: String,
        /// `member_added`, `member_removed`, `member_left` or `member_promoted`.
        kind: String,
        member: String,
        by: String,
        at_ms: i64,
    },
    Security {
        row: i64,
        conversation: String,
        /// `message_rejected`, `message_replayed`, `message_gap`, ...
        kind: String,
        from: Option<String>,
        device: Option<String>,
        at_ms: i64,
        reason: String,
    },
}

/// RFC 3339 in UTC, seconds precision: `2026-01-01T00:00:00Z`.
pub fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

impl Event {
    pub fn row(&self) -> i64 {
        match self {
            Event::Message { row, .. }
            | Event::Security { row, .. }
            | Event::Membership { row, .. } => *row,
        }
    }

    pub fn conversation(&self) -> &str {
        match self {
            Event::Message { conversation, .. }
            | Event::Security { conversation, .. }
            | Event::Membership { conversation, .. } => conversation,
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
                    v["state"] = json!(state);
                }
                v
            }
            Event::Membership {
                conversation,
                kind,
                member,
                by,
                at_ms,
                ..
            } => json!({
                "type": kind,
                "conversation": conversation,
                "member": member,
                "by": by,
                "at": rfc3339(*at_ms),
            }),
            Event::Security {
                conversation,
                kind,
                from,
                device,
                at_ms,
                reason,
                ..
            } => json!({
                "type": "security",
                "kind": kind,
                "conversation": conversation,
                "from": from,
                "device": device,
                "at": rfc3339(*at_ms),
                "reason": reason,
            }),
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
                ..
            } => {
                let when = rfc3339(*sent_at_ms);
                if conversation == from {
                    format!("[{when}] {from}: {text}")
                } else {
                    format!("[{when}] {conversation} <{from}> {text}")
                }
            }
            Event::Membership {
                conversation,
                kind,
                member,
                by,
                at_ms,
                ..
            } => {
                let what = match kind.as_str() {
                    "member_added" => format!("{by} added {member}"),
                    "member_left" => format!("{member} left"),
                    "member_promoted" => format!("{by} made {member} an admin"),
                    _ => format!("{by} removed {member}"),
                };
                format!("[{}] {conversation} -- {what}", rfc3339(*at_ms))
            }
            Event::Security {
                conversation,
                kind,
                reason,
                at_ms,
                ..
            } => format!(
                "[{}] {conversation} !! security ({kind}): {reason}",
                rfc3339(*at_ms)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            state: "received".into(),
        };
        let v = e.to_json();
        assert_eq!(v["type"], "message");
        assert_eq!(v["sent_at"], "2026-01-01T00:00:00Z");
        for k in ["id", "conversation", "from", "device", "text"] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert!(v.get("outgoing").is_none());
        assert_eq!(e.to_text(), "[2026-01-01T00:00:00Z] alice: hi");
    }
}
