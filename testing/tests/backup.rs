//! Encrypted backups (P570–P573, ADR 0005) and homes encrypted at rest (ADR 0006)
//! through a real hushd and real hush processes: a restore onto a fresh home
//! reproduces history, the recovery key alone opens the backup, tampered, truncated
//! and rolled-back backups are caught, the server's data dir and an encrypted home
//! hold no plaintext, and passphrases are checked.
use std::path::Path;

use hush_testing::{Client, Server, fails, files_below, find_bytes, json_lines, ok, registered};

const PW: &str = "correct horse battery";
const MARKER: &str = "BACKUP-PLAINTEXT-MARKER-7e2a";
const PASSPHRASE: &str = "a long home passphrase";

/// (from, sent_at, text, outgoing) of each message in `hush history TARGET --json`.
fn history(c: &Client, target: &str, env: &[(&str, &str)]) -> Vec<(String, String, String)> {
    let out = ok(&c.run_env(PW, env, &["history", target, "--json"]));
    json_lines(&out)
        .into_iter()
        .filter(|e| e["type"] == "message")
        .map(|e| {
            (
                e["from"].as_str().unwrap_or_default().to_owned(),
                e["sent_at"].as_str().unwrap_or_default().to_owned(),
                e["text"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// The home has no conversation with ben (nothing was restored).
#[track_caller]
/// No message in the home's history with ben. (The device may be in the
/// conversation already: a new device joins its account's conversations, P536, but
/// what was said before it came is only in the backup.)
fn no_history(c: &Client, why: &str) {
    let out = c.run(PW, &["history", "ben", "--json"]);
    if out.status.success() {
        let events = json_lines(&String::from_utf8_lossy(&out.stdout));
        assert!(
            !events.iter().any(|e| e["type"] == "message"),
            "{why}: {events:?}"
        );
    } else {
        fails(&out, 1, "no conversation");
    }
}

fn states(c: &Client, target: &str) -> Vec<String> {
    let out = ok(&c.run(PW, &["history", target, "--json"]));
    json_lines(&out)
        .into_iter()
        .filter(|e| e["type"] == "message")
        .map(|e| e["state"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// ann and ben talk; ann's backup then holds the conversation.
fn conversation(server: &Server) -> (Client, Client) {
    let mut cs = registered(server, &["ann", "ben"], PW).into_iter();
    let (ann, ben) = (cs.next().unwrap(), cs.next().unwrap());
    ok(&ann.run(PW, &["send", "ben", &format!("first {MARKER}")]));
    ok(&ben.run(PW, &["recv"]));
    ok(&ben.run(PW, &["send", "ann", "second, from ben"]));
    ok(&ann.run(PW, &["recv"]));
    ok(&ann.run(PW, &["send", "ben", "third"]));
    ok(&ann.run(PW, &["backup", "now"]));
    (ann, ben)
}

fn login_restore(server: &Server, extra: &[&str]) -> (Client, std::process::Output) {
    let fresh = Client::new();
    let mut args = vec![
        "login",
        "--server",
        &server.addr,
        "--username",
        "ann",
        "--server-fingerprint",
        &server.fingerprint,
    ];
    args.extend_from_slice(extra);
    let out = fresh.run(PW, &args);
    (fresh, out)
}

fn recovery_key_of(register_output: &str) -> String {
    register_output
        .lines()
        .find_map(|l| l.strip_prefix("recovery key: "))
        .expect("register prints the recovery key")
        .trim()
        .to_owned()
}

fn server_db(server: &Server) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(server.data_dir().join("hushd.db")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    db
}

#[test]
fn a_backup_restored_onto_a_fresh_home_reproduces_the_history() {
    let server = Server::start(&[]);
    let (ann, _ben) = conversation(&server);
    let before = history(&ann, "ben", &[]);
    assert_eq!(before.len(), 3, "{before:?}");
    let status = json_lines(&ok(&ann.run(PW, &["backup", "status", "--json"])));
    assert_eq!(status[0]["complete"], true, "{status:?}");
    assert!(status[0]["chunks"].as_u64().unwrap() >= 1);

    let (fresh, out) = login_restore(&server, &["--restore"]);
    let said = ok(&out);
    assert!(said.contains("restored"), "{said}");
    assert_eq!(
        history(&fresh, "ben", &[]),
        before,
        "same messages, order, senders and times"
    );
    assert!(
        states(&fresh, "ben").iter().all(|s| s == "restored"),
        "marked as restored"
    );
    // Restoring again adds nothing twice.
    ok(&fresh.run(PW, &["backup", "restore"]));
    assert_eq!(history(&fresh, "ben", &[]), before);
    // The server never held the history in the clear.
    assert_eq!(find_bytes(&server.data_dir(), MARKER.as_bytes()), None);
}

#[test]
fn the_recovery_key_alone_opens_the_backup_and_a_wrong_one_is_refused() {
    let server = Server::start(&[]);
    let ann = Client::new();
    let key = recovery_key_of(&ok(&ann.register(&server, "ann", PW, &[])));
    let ben = Client::new();
    ok(&ben.register(&server, "ben", PW, &[]));
    ok(&ann.run(PW, &["send", "ben", "kept by the recovery key"]));
    ok(&ann.run(PW, &["backup", "now"]));
    let want = history(&ann, "ben", &[]);

    let (fresh, out) = login_restore(&server, &["--no-restore"]);
    ok(&out);
    no_history(&fresh, "not restored yet");
    // A typo fails the checksum; another valid key does not open the backup.
    let mut typo = key.clone().into_bytes();
    typo[0] = if typo[0] == b'A' { b'B' } else { b'A' };
    let typo = String::from_utf8(typo).unwrap();
    fails(
        &fresh.run(PW, &["backup", "restore", "--recovery-key", &typo]),
        2,
        "checksum",
    );
    let other = recovery_key_of(&ok(&Client::new().register(&server, "cat", PW, &[])));
    fails(
        &fresh.run(PW, &["backup", "restore", "--recovery-key", &other]),
        12,
        "does not open",
    );
    let out = fresh.run_env(
        PW,
        &[("HUSH_RECOVERY_KEY", &key.to_lowercase())],
        &["backup", "restore", "--recovery-key"],
    );
    ok(&out);
    assert_eq!(history(&fresh, "ben", &[]), want);
}

#[test]
fn tampered_truncated_and_rolled_back_backups_are_caught() {
    let server = Server::start(&[]);
    let (ann, ben) = conversation(&server);
    let db = server_db(&server);
    let ann_id: Vec<u8> = db
        .query_row(
            "SELECT user_id FROM users WHERE username = 'ann'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    // The head as it was, validly signed: a server may keep it to roll back to.
    let (old_head, old_count): (Vec<u8>, i64) = db
        .query_row(
            "SELECT head, count FROM backups WHERE user_id = ?1",
            [&ann_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    // A later chunk.
    ok(&ben.run(PW, &["send", "ann", "fourth"]));
    ok(&ann.run(PW, &["recv"]));
    ok(&ann.run(PW, &["backup", "now"]));
    let count: i64 = db
        .query_row(
            "SELECT count FROM backups WHERE user_id = ?1",
            [&ann_id],
            |r| r.get(0),
        )
        .unwrap();
    assert!(count > old_count, "{count} chunks");
    let first: Vec<u8> = db
        .query_row(
            "SELECT chunk FROM backup_chunks WHERE user_id = ?1 AND idx = 0",
            [&ann_id],
            |r| r.get(0),
        )
        .unwrap();

    // Tampered: one flipped byte in chunk 0.
    let mut flipped = first.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 1;
    db.execute(
        "UPDATE backup_chunks SET chunk = ?1 WHERE user_id = ?2 AND idx = 0",
        rusqlite::params![flipped, ann_id],
    )
    .unwrap();
    let (fresh, out) = login_restore(&server, &["--restore"]);
    fails(&out, 12, "chunk 0");
    no_history(&fresh, "nothing restored from a tampered backup");
    db.execute(
        "UPDATE backup_chunks SET chunk = ?1 WHERE user_id = ?2 AND idx = 0",
        rusqlite::params![first, ann_id],
    )
    .unwrap();

    // Truncated: the last chunk gone, the head still naming it.
    db.execute(
        "DELETE FROM backup_chunks WHERE user_id = ?1 AND idx = ?2",
        rusqlite::params![ann_id, count - 1],
    )
    .unwrap();
    fails(&fresh.run(PW, &["backup", "restore"]), 12, "ends after");
    no_history(&fresh, "nothing restored from a truncated backup");

    // Rolled back: the older head, validly signed, but ann's home remembers more.
    db.execute(
        "UPDATE backups SET head = ?1, count = ?2 WHERE user_id = ?3",
        rusqlite::params![old_head, old_count, ann_id],
    )
    .unwrap();
    db.execute(
        "DELETE FROM backup_chunks WHERE user_id = ?1 AND idx >= ?2",
        rusqlite::params![ann_id, old_count],
    )
    .unwrap();
    fails(&ann.run(PW, &["backup", "status"]), 12, "rolled back");
    fails(&ann.run(PW, &["backup", "restore"]), 12, "rolled back");
    fails(&ann.run(PW, &["backup", "now"]), 12, "rolled back");
}

fn token_of(dir: &Path, passphrase: &str) -> Vec<u8> {
    let home = hush_client::home::Home::open_with(
        dir,
        &hush_client::home::Unlock::Passphrase(zeroize::Zeroizing::new(passphrase.into())),
    )
    .unwrap();
    home.account().unwrap().unwrap().token.expose().to_vec()
}

#[test]
fn an_encrypted_home_holds_no_plaintext_and_wants_its_passphrase() {
    let server = Server::start(&[]);
    let ann = Client::new();
    let env = [("HUSH_PASSPHRASE", PASSPHRASE)];
    ok(&ann.run_env(
        PW,
        &env,
        &[
            "register",
            "--server",
            &server.addr,
            "--username",
            "ann",
            "--server-fingerprint",
            &server.fingerprint,
        ],
    ));
    let ben = Client::new();
    ok(&ben.register(&server, "ben", PW, &["--no-passphrase"]));
    ok(&ben.run(PW, &["send", "ann", &format!("to ann {MARKER}")]));
    ok(&ann.run_env(PW, &env, &["recv"]));
    ok(&ann.run_env(PW, &env, &["send", "ben", &format!("reply {MARKER}")]));
    assert_eq!(history(&ann, "ben", &env).len(), 2);

    let token = token_of(ann.home.path(), PASSPHRASE);
    assert_eq!(
        find_bytes(ann.home.path(), MARKER.as_bytes()),
        None,
        "no history in the clear"
    );
    assert_eq!(find_bytes(ann.home.path(), &token), None, "no raw token");
    assert!(
        files_below(ann.home.path())
            .iter()
            .any(|p| p.ends_with("hush.key")),
        "the sealed key file"
    );
    // The plaintext home, for contrast, holds both.
    assert!(find_bytes(ben.home.path(), MARKER.as_bytes()).is_some());

    fails(&ann.run(PW, &["whoami"]), 11, "encrypted");
    fails(
        &ann.run_env(PW, &[("HUSH_PASSPHRASE", "not it")], &["whoami"]),
        11,
        "wrong passphrase",
    );
    ok(&ann.run_env(PW, &env, &["whoami"]));
    assert_eq!(
        history(&ann, "ben", &env).len(),
        2,
        "untouched by the refusals"
    );
}

#[test]
fn a_plaintext_home_is_encrypted_in_place() {
    let server = Server::start(&[]);
    let mut cs = registered(&server, &["ann", "ben"], PW).into_iter();
    let (ann, ben) = (cs.next().unwrap(), cs.next().unwrap());
    ok(&ann.run(PW, &["send", "ben", &format!("before {MARKER}")]));
    ok(&ben.run(PW, &["recv"]));
    let before = history(&ben, "ann", &[]);
    let env = [("HUSH_PASSPHRASE", PASSPHRASE)];
    let out = ok(&ben.run_env(PW, &env, &["home", "encrypt"]));
    assert!(out.contains("now encrypted"), "{out}");
    assert_eq!(find_bytes(ben.home.path(), MARKER.as_bytes()), None);
    fails(&ben.run(PW, &["history", "ann"]), 11, "encrypted");
    assert_eq!(history(&ben, "ann", &env), before);
    fails(&ben.run_env(PW, &env, &["home", "encrypt"]), 1, "already");
    // It still chats.
    ok(&ann.run(PW, &["send", "ben", "after"]));
    ok(&ben.run_env(PW, &env, &["recv"]));
    assert_eq!(history(&ben, "ann", &env).len(), 2);
}

#[test]
fn new_history_reaches_the_backup_without_being_asked() {
    let server = Server::start(&[]);
    let mut cs = registered(&server, &["ann", "ben"], PW).into_iter();
    let (ann, ben) = (cs.next().unwrap(), cs.next().unwrap());
    ok(&ann.run(PW, &["send", "ben", "goes up by itself"]));
    ok(&ben.run(PW, &["recv"]));
    for (who, c) in [("ann", &ann), ("ben", &ben)] {
        let s = json_lines(&ok(&c.run(PW, &["backup", "status", "--json"])));
        assert_eq!(s[0]["complete"], true, "{who}: {s:?}");
        assert_eq!(s[0]["waiting"], 0, "{who}: {s:?}");
        assert!(s[0]["chunks"].as_u64().unwrap() >= 1, "{who}: {s:?}");
        assert_eq!(s[0]["recovery_key"], true, "{who}: {s:?}");
    }
    let (fresh, out) = login_restore(&server, &["--restore"]);
    ok(&out);
    assert_eq!(history(&fresh, "ben", &[]), history(&ann, "ben", &[]));
}
