//! What `hush` prints: plain text for people, one JSON object per line for scripts.
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
