//! Multi-device and membership in everyday use, end to end with real `hush` processes:
//! each test is named after a bug it fixed (P520, P533, P534).
use hush_testing::{Client, Server, fails, json_lines, ok, texts};

const PW: &str = "correct horse battery";

fn users(server: &Server, names: &[&str]) -> Vec<Client> {
    hush_testing::registered(server, names, PW)
}

fn kinds(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "security")
        .map(|e| e["kind"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn members(c: &Client, group: &str) -> Vec<String> {
    json_lines(&ok(&c.run("", &["group", "members", group, "--json"])))
        .iter()
        .map(|m| m["username"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn after_a_second_login_the_first_message_reaches_both_devices_without_a_false_gap() {
    let server = Server::start(&[]);
    let v = users(&server, &["ann", "ben"]);
    let (ann, ben) = (&v[0], &v[1]);
    ann.send("ben", "before");
    ben.recv(5);
    let ben2 = Client::new();
    ok(&ben2.login(&server, "ben", PW));

    // ann's next send first adds ben's new device to their conversation.
    ann.send("ben", "first after login");
    ann.send("ben", "second after login");
    let events = ben2.recv(5);
    assert_eq!(
        texts(&events),
        ["first after login", "second after login"],
        "{events:?}"
    );
    assert!(
        !kinds(&events).contains(&"message_gap".to_owned()),
        "{events:?}"
    );
    let old = ben.recv(5);
    assert_eq!(texts(&old), ["first after login", "second after login"]);
    assert!(!kinds(&old).contains(&"message_gap".to_owned()), "{old:?}");
    // Both of ben's devices answer, and ann reads both.
    ben2.send("ann", "from the new one");
    ben.send("ann", "from the old one");
    let got = texts(&ann.recv(5));
    assert!(got.contains(&"from the new one".to_owned()), "{got:?}");
    assert!(got.contains(&"from the old one".to_owned()), "{got:?}");
}

#[test]
fn the_one_to_one_partner_of_a_user_who_adds_a_device_sees_new_device() {
    let server = Server::start(&[]);
    let v = users(&server, &["ann", "ben"]);
    let (ann, ben) = (&v[0], &v[1]);
    ann.send("ben", "hi");
    ben.recv(5);
    let ben2 = Client::new();
    ok(&ben2.login(&server, "ben", PW));
    // ben's old device adopts the new one into the 1:1 conversation (P534)...
    ben.recv(2);
    // ...and ann, the partner, is told.
    let events = ann.recv(5);
    let new: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "new_device")
        .collect();
    assert_eq!(new.len(), 1, "{events:?}");
    assert_eq!(new[0]["from"], "ben");
    assert_eq!(new[0]["conversation"], "ben");
}

#[test]
fn a_new_group_member_gets_no_false_gap_for_messages_before_it_joined() {
    let server = Server::start(&[]);
    let v = users(&server, &["ann", "ben", "cat"]);
    let (ann, ben, cat) = (&v[0], &v[1], &v[2]);
    ok(&ann.run("", &["group", "create", "team", "--members", "ben"]));
    for i in 0..3 {
        ann.send("#team", &format!("early {i}"));
        ben.send("#team", &format!("ben early {i}"));
    }
    ok(&ann.run("", &["group", "add", "team", "cat"]));
    ann.send("#team", "welcome cat");
    ben.send("#team", "hi cat");
    let events = cat.recv(5);
    assert_eq!(texts(&events), ["welcome cat", "hi cat"], "{events:?}");
    assert!(kinds(&events).is_empty(), "{events:?}");
}

#[test]
fn a_peer_who_logs_out_right_after_sending_leaves_no_ghost_conversation() {
    let server = Server::start(&[]);
    let v = users(&server, &["ann", "ben"]);
    let (ann, ben) = (&v[0], &v[1]);
    ben.send("ann", "hi, and bye");
    ok(&ben.run("", &["logout"]));

    let events = ann.recv(5);
    let msg = events
        .iter()
        .find(|e| e["type"] == "message")
        .expect("the message");
    assert_eq!(msg["conversation"], "ben", "{events:?}");
    assert_eq!(msg["from"], "ben");
    let chats = json_lines(&ok(&ann.run("", &["chats", "--json"])));
    let names: Vec<_> = chats.iter().map(|c| c["conversation"].clone()).collect();
    assert_eq!(names, ["ben"], "no ghost conversation: {chats:?}");
    // Replying works (ben has no device now), and reaches ben's next login.
    ann.send("ben", "are you there?");
    let ben2 = Client::new();
    ok(&ben2.login(&server, "ben", PW));
    ann.send("ben", "welcome back");
    assert_eq!(texts(&ben2.recv(5)), ["welcome back"]);
}

#[test]
fn logout_removes_the_device_from_every_conversation() {
    let server = Server::start(&[]);
    let v = users(&server, &["ann", "ben", "cat"]);
    let (ann, ben, cat) = (&v[0], &v[1], &v[2]);
    ok(&ann.run("", &["group", "create", "team", "--members", "ben,cat"]));
    ann.send("ben", "direct");
    ben.recv(5);
    cat.recv(5);
    let ben2 = Client::new();
    ok(&ben2.login(&server, "ben", PW));
    ben.recv(2); // adopts the new device everywhere
    ok(&ben2.run("", &["logout"]));

    // The next message in each conversation commits the removal first.
    ann.send("#team", "after logout");
    ann.send("ben", "direct after logout");
    let team = json_lines(&ok(&ann.run("", &["group", "members", "#team", "--json"])));
    let bens: Vec<_> = team.iter().filter(|m| m["username"] == "ben").collect();
    assert_eq!(bens.len(), 1, "{team:?}");
    assert_eq!(
        bens[0]["devices"], 1,
        "the logged-out device left: {team:?}"
    );
    assert_eq!(texts(&ben.recv(5)), ["after logout", "direct after logout"]);
    assert_eq!(texts(&cat.recv(5)), ["after logout"]);
}

#[test]
fn the_last_admin_cannot_leave_without_a_successor_and_a_left_group_leaves_chats() {
    let server = Server::start(&[]);
    let v = users(&server, &["ann", "ben", "cat"]);
    let (ann, ben, cat) = (&v[0], &v[1], &v[2]);
    ok(&ann.run("", &["group", "create", "team", "--members", "ben"]));
    fails(&ann.run("", &["group", "leave", "team"]), 1, "only admin");
    fails(
        &ann.run("", &["group", "leave", "team", "--successor", "cat"]),
        1,
        "cat is not in #team",
    );
    assert!(
        ann.run("", &["chats", "--json"]).status.success()
            && String::from_utf8_lossy(&ann.run("", &["chats"]).stdout).contains("#team"),
        "a refused leave leaves nothing half done"
    );
    ok(&ann.run("", &["group", "leave", "team", "--successor", "ben"]));
    let chats = json_lines(&ok(&ann.run("", &["chats", "--json"])));
    assert!(
        !chats.iter().any(|c| c["conversation"] == "#team"),
        "{chats:?}"
    );
    let events = ben.recv(5);
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "member_left" && e["member"] == "ann"),
        "{events:?}"
    );
    // The group is not orphaned: ben administers it.
    ok(&ben.run("", &["group", "add", "team", "cat"]));
    ben.send("#team", "hello cat");
    assert_eq!(texts(&cat.recv(5)), ["hello cat"]);
    assert_eq!(members(ben, "#team"), ["ben", "cat"]);
}
