//! A malicious operator who holds the server's database (P540–P546, P520): each attack
//! is made with SQL on the real `hushd`'s SQLite file, and each is detected and named
//! by the clients. SECURITY.md's table points here.
use std::time::Duration;

use hush_testing::{Client, Server, fails, json_lines, ok, registered, texts};

const PW: &str = "correct horse battery";

fn db(server: &Server) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(server.data_dir().join("hushd.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db
}

fn device_of(c: &Client) -> Vec<u8> {
    let hex = c.whoami().unwrap()["device"].as_str().unwrap().to_owned();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn security(events: &[serde_json::Value], kind: &str) -> Vec<serde_json::Value> {
    events
        .iter()
        .filter(|e| e["type"] == "security" && e["kind"] == kind)
        .cloned()
        .collect()
}

fn members(c: &Client, group: &str) -> Vec<(String, u64)> {
    json_lines(&ok(&c.run("", &["group", "members", group, "--json"])))
        .iter()
        .map(|m| {
            (
                m["username"].as_str().unwrap().to_owned(),
                m["devices"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The operator hands mallory's device to bob: its key packages are signed by
/// mallory's account key, not bob's.
fn assign_ghost(server: &Server, ghost: &Client, to: &str) {
    let dev = device_of(ghost);
    let db = db(server);
    for table in ["devices", "device_owners"] {
        let n = db
            .execute(
                &format!(
                    "UPDATE {table} SET user_id = (SELECT user_id FROM users WHERE username = ?1)
                     WHERE device_id = ?2"
                ),
                rusqlite::params![to, dev],
            )
            .unwrap();
        assert_eq!(n, 1, "{table}");
    }
}

#[test]
fn a_ghost_device_assigned_to_bob_is_never_added_or_encrypted_to() {
    let server = Server::start(&[]);
    let v = registered(&server, &["alice", "bob", "cat", "mallory"], PW);
    let (alice, bob, cat, mallory) = (&v[0], &v[1], &v[2], &v[3]);
    alice.send("bob", "before");
    ok(&alice.run("", &["group", "create", "team", "--members", "bob,cat"]));
    bob.recv(5);
    cat.recv(5);

    assign_ghost(&server, mallory, "bob");

    // alice's client (1:1 partner) and bob's own client both refuse the ghost.
    alice.send("bob", "secret for bob");
    alice.send("#team", "secret for the team");
    let alice_events = alice.history("bob", 50);
    let refused = security(&alice_events, "device_refused");
    assert_eq!(refused.len(), 1, "{alice_events:?}");
    assert_eq!(refused[0]["from"], "bob");
    let bob_events = bob.recv(5);
    assert!(
        texts(&bob_events).contains(&"secret for bob".to_owned()),
        "{bob_events:?}"
    );
    assert!(
        !security(&bob_events, "device_refused").is_empty(),
        "bob's own devices refuse to adopt it: {bob_events:?}"
    );
    assert_eq!(
        members(alice, "#team"),
        [("alice".into(), 1), ("bob".into(), 1), ("cat".into(), 1)],
        "no ghost in the roster"
    );
    // The ghost reads nothing.
    let ghost = mallory.recv(3);
    assert!(
        !format!("{ghost:?}").contains("secret"),
        "the ghost read a message: {ghost:?}"
    );
    // Later messages still flow, and the ghost is not retried.
    bob.send("alice", "all good");
    assert_eq!(texts(&alice.recv(5)), ["all good"]);
    let again = alice.history("bob", 50);
    assert_eq!(security(&again, "device_refused").len(), 1, "reported once");
}

#[test]
fn a_swapped_account_key_is_an_identity_change_and_blocks_a_verified_contact() {
    let server = Server::start(&[]);
    let v = registered(&server, &["alice", "bob", "mallory"], PW);
    let (alice, bob, mallory) = (&v[0], &v[1], &v[2]);
    alice.send("bob", "hi");
    bob.recv(5);
    let before = json_lines(&ok(&alice.run("", &["verify", "bob", "--json"])))[0].clone();
    let bobs = json_lines(&ok(&bob.run("", &["verify", "alice", "--json"])))[0].clone();
    assert_eq!(
        before["safety_number"], bobs["safety_number"],
        "the same safety number on both sides"
    );
    assert_eq!(
        before["safety_number"].as_str().unwrap().split(' ').count(),
        12
    );
    ok(&alice.run("", &["verify", "bob", "--confirm"]));

    // The operator publishes mallory's key as bob's and gives bob mallory's device.
    {
        let db = db(&server);
        db.execute(
            "UPDATE users SET account_key =
               (SELECT account_key FROM users WHERE username = 'mallory') WHERE username = 'bob'",
            [],
        )
        .unwrap();
    }
    assign_ghost(&server, mallory, "bob");

    // alice's next sync sees the change; sending to verified bob is refused (exit 7).
    let out = alice.run("", &["send", "bob", "are you still you?"]);
    fails(&out, 7, "account key changed");
    let history = alice.history("bob", 50);
    let changed = security(&history, "identity_changed");
    assert_eq!(changed.len(), 1, "{history:?}");
    assert_eq!(changed[0]["from"], "bob");
    let now = json_lines(&ok(&alice.run("", &["verify", "bob", "--json"])))[0].clone();
    assert_eq!(now["key_changed"], true);
    assert_eq!(now["verified"], false);
    assert_ne!(now["safety_number"], before["safety_number"]);
    // Nothing reached the ghost.
    assert!(!format!("{:?}", mallory.recv(3)).contains("still you"));
}

#[test]
fn swapped_mailbox_entries_lose_nothing_and_are_reported() {
    let server = Server::start(&[]);
    let v = registered(&server, &["alice", "bob"], PW);
    let (alice, bob) = (&v[0], &v[1]);
    alice.send("bob", "zero");
    bob.recv(5);
    alice.send("bob", "one");
    alice.send("bob", "two");
    // The operator swaps the order of bob's two waiting entries.
    {
        let db = db(&server);
        let ids: Vec<(i64, i64)> = db
            .prepare("SELECT id, message_id FROM deliveries ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(ids.len(), 2, "{ids:?}");
        db.execute(
            "UPDATE deliveries SET message_id = ?2 WHERE id = ?1",
            [ids[0].0, ids[1].1],
        )
        .unwrap();
        db.execute(
            "UPDATE deliveries SET message_id = ?2 WHERE id = ?1",
            [ids[1].0, ids[0].1],
        )
        .unwrap();
    }
    let events = bob.recv(5);
    assert_eq!(texts(&events), ["two", "one"], "both delivered: {events:?}");
    assert_eq!(security(&events, "message_gap").len(), 1, "{events:?}");
    assert_eq!(
        security(&events, "message_reordered").len(),
        1,
        "{events:?}"
    );
    assert!(
        security(&events, "message_replayed").is_empty(),
        "{events:?}"
    );
}

#[test]
fn revoking_a_device_removes_it_everywhere_and_ends_its_sessions() {
    let server = Server::start(&[]);
    let v = registered(&server, &["alice", "bob"], PW);
    let (alice, bob) = (&v[0], &v[1]);
    alice.send("bob", "hi");
    bob.recv(5);
    let bob2 = Client::new();
    ok(&bob2.login(&server, "bob", PW));
    bob.recv(2); // adopts bob2 into the 1:1
    let listed = json_lines(&ok(&bob.run("", &["devices", "--json"])));
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(
        listed.iter().filter(|d| d["current"] == true).count(),
        1,
        "{listed:?}"
    );
    let second = bob2.whoami().unwrap()["device"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(&bob.run("", &["devices", "revoke", &second]));

    // The revoked device is refused by the server (exit 3)...
    fails(&bob2.run("", &["whoami"]), 3, "");
    // ...and alice sees it leave; it reads nothing new.
    alice.send("bob", "after revoke");
    let history = alice.history("bob", 50);
    assert!(
        !security(&history, "device_removed").is_empty(),
        "{history:?}"
    );
    assert_eq!(
        json_lines(&ok(&bob.run("", &["devices", "--json"]))).len(),
        1
    );
    assert_eq!(texts(&bob.recv(5)), ["after revoke"]);
}
