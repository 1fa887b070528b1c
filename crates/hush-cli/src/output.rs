//! What `hush` prints: plain text for people, one JSON object per line for scripts.
use std::io::Write;

use hush_client::events::{Event, rfc3339};
use hush_client::history::Chat;
use hush_client::hush_proto::fingerprint::Fingerprint;
use hush_client::hush_proto::response::Account;
use serde_json::json;

pub fn whoami_json(a: &Account, server: &str, fingerprint: Fingerprint) -> String {
    json!({
        "username": a.username.as_str(),
        "user_id": a.user_id.to_string(),
        "device": a.device_id.to_string(),
        "display_name": a.display_name,
        "email": a.email,
        "admin": a.admin,
        "server": server,
        "fingerprint": fingerprint.to_string(),
    })
    .to_string()
}

pub fn whoami_text(a: &Account, server: &str) -> String {
    let mut s = a.username.to_string();
    if let Some(d) = &a.display_name {
        s.push_str(&format!(" ({d})"));
    }
    s.push_str(&format!(" on {server}, device {}", a.device_id));
    if a.admin {
        s.push_str(", admin");
    }
    s
}

/// Prints one event and flushes, so `--follow` output reaches pipes at once.
pub fn event(e: &Event, json: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", e.to_json())?;
    } else {
        writeln!(out, "{}", e.to_text())?;
    }
    out.flush()
}

pub fn chat(c: &Chat, json: bool) -> String {
    if json {
        json!({
            "conversation": c.name,
            "kind": c.kind,
            "unread": c.unread,
            "messages": c.messages,
            "last_activity": c.last_activity_ms.map(rfc3339),
        })
        .to_string()
    } else {
        let unread = if c.unread > 0 {
            format!(" ({} unread)", c.unread)
        } else {
            String::new()
        };
        format!("{}{unread}", c.name)
    }
}

pub fn member(m: &hush_client::Member, as_json: bool) -> String {
    if as_json {
        json!({"username": m.username, "admin": m.admin, "devices": m.devices}).to_string()
    } else if m.admin {
        format!("{} (admin)", m.username)
    } else {
        m.username.clone()
    }
}
