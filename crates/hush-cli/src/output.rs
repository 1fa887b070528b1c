//! What `hush` prints: plain text for people, one JSON object per line for scripts.
use std::io::Write;

use hush_client::events::{Event, rfc3339};
use hush_client::history::Chat;
use hush_client::hush_proto::fingerprint::Fingerprint;
use hush_client::hush_proto::response::Account;
use serde_json::json;

pub fn whoami_json(
    a: &Account,
    server: &str,
    fingerprint: Fingerprint,
    warning: &Option<String>,
) -> String {
    json!({
        "warning": warning,
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

/// A message waiting in the outbox (P457); a peer never wrote any of it, but the
/// text is escaped like any other.
pub fn outbox_entry(e: &hush_client::history::OutboxEntry, json: bool) -> String {
    if json {
        json!({
            "id": e.id,
            "conversation": e.conversation,
            "text": e.text,
            "written_at": rfc3339(e.written_at_ms),
            "attempts": e.attempts,
            "set_aside": e.set_aside,
            "last_error": e.last_error,
        })
        .to_string()
    } else {
        let state = match (&e.last_error, e.set_aside) {
            (Some(err), true) => format!("set aside after {} tries: {err}", e.attempts),
            (Some(err), false) => format!("waiting ({} failed: {err})", e.attempts),
            (None, _) => "waiting".to_owned(),
        };
        hush_client::events::terminal_safe(&format!(
            "{} to {}: {} [{state}]",
            e.id, e.conversation, e.text
        ))
    }
}

/// The heading of `hush group members`: `#team: 5 members`.
pub fn member_count(name: &impl std::fmt::Display, n: usize) -> String {
    format!("{name}: {n} member{}", if n == 1 { "" } else { "s" })
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

/// `hush verify`: the safety number, or its JSON form.
pub fn verification(v: &hush_client::Verification, as_json: bool) -> String {
    if as_json {
        json!({
            "user": v.user,
            "safety_number": v.safety_number,
            "verified": v.verified,
            "key_changed": v.key_changed,
        })
        .to_string()
    } else {
        let state = if v.key_changed {
            format!(
                "{}'s account key CHANGED: compare this new number with {} before `hush verify {} --confirm`",
                v.user, v.user, v.user
            )
        } else if v.verified {
            "verified".to_owned()
        } else {
            format!(
                "not verified: compare it with {} in person, then run `hush verify {} --confirm`",
                v.user, v.user
            )
        };
        format!(
            "safety number with {}:\n  {}\n{state}",
            v.user, v.safety_number
        )
    }
}

/// The safety number as a QR code in terminal block characters.
pub fn qr(number: &str) -> Option<String> {
    qr_of(&number.replace(' ', ""))
}

/// `text` as a QR code in terminal block characters (two modules per character
/// cell, with the quiet zone scanners need).
pub fn qr_of(text: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::unicode::Dense1x2>()
            .quiet_zone(true)
            .build(),
    )
}

/// `hush devices`: one device per line.
/// One waiting invitation (P461).
pub fn request(r: &hush_client::hush_proto::response::PendingRequest, as_json: bool) -> String {
    if as_json {
        json!({
            "from": r.inviter.as_str(),
            "groups": r.groups,
            "since": rfc3339(r.since_ms),
        })
        .to_string()
    } else {
        format!(
            "{} invited you to {} group{} (since {}): hush accept {} / hush decline {}",
            r.inviter,
            r.groups,
            if r.groups == 1 { "" } else { "s" },
            rfc3339(r.since_ms),
            r.inviter,
            r.inviter,
        )
    }
}

pub fn device(d: &hush_client::hush_proto::response::DeviceInfo, as_json: bool) -> String {
    if as_json {
        json!({
            "device": d.device.to_string(),
            "name": d.name,
            "created": rfc3339(d.created_at * 1000),
            "last_seen": d.last_seen.map(|s| rfc3339(s * 1000)),
            "current": d.current,
        })
        .to_string()
    } else {
        format!(
            "{}{}  {}  created {}  last seen {}",
            d.device,
            if d.current { " (this device)" } else { "" },
            d.name.as_deref().unwrap_or("-"),
            rfc3339(d.created_at * 1000),
            d.last_seen
                .map(|s| rfc3339(s * 1000))
                .unwrap_or_else(|| "never".into()),
        )
    }
}

#[cfg(test)]
mod tests {
    /// Reads terminal block characters back into modules (two rows per character,
    /// `█ ▀ ▄` and space), scaled up, and decodes them as a camera would.
    fn decode(drawn: &str) -> Result<String, String> {
        let rows: Vec<Vec<char>> = drawn.lines().map(|l| l.chars().collect()).collect();
        let width = rows.iter().map(Vec::len).max().unwrap_or(0);
        let scale = 6;
        let (w, h) = (width * scale, rows.len() * 2 * scale);
        let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| {
            let (col, row) = (x / scale, y / scale);
            let c = rows[row / 2].get(col).copied().unwrap_or(' ');
            let upper = row % 2 == 0;
            // The block characters draw ink; a space shows the background.
            let ink = match c {
                '█' => true,
                '▀' => upper,
                '▄' => !upper,
                _ => false,
            };
            if ink { 0 } else { 255 }
        });
        let grids = img.detect_grids();
        let grid = grids.first().ok_or("no QR code found")?;
        grid.decode()
            .map(|(_, text)| text)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_terminal_qr_decodes_to_the_printed_uri() {
        let uri = "otpauth://totp/hush:ann@chat.example?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=hush&algorithm=SHA1&digits=6&period=30";
        let drawn = super::qr_of(uri).unwrap();
        assert_eq!(decode(&drawn).unwrap(), uri);
    }
}
