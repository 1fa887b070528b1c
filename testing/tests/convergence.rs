//! Every member and every device converges (issue 28), end to end with real `hushd`
//! and `hush` processes: a removed member added again reads again; removals, leaves
//! and deletions are shown for what they are; a peer's text cannot forge output; a
//! command's stderr holds its one error line and nothing else; a home being encrypted
//! is never pulled from under a process that has it open.
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hush_testing::{Client, Server, fails, json_lines, ok, texts};

const PW: &str = "correct horse battery";

fn users(server: &Server, names: &[&str]) -> Vec<Client> {
    hush_testing::registered(server, names, PW)
}

/// Regression: dave, removed from `#team` and added again, could never read it (his
/// client refused the new Welcome: "A group with this GroupId already exists").
#[test]
fn a_removed_member_added_again_reads_the_group() {
    let server = Server::start(&[]);
    let v = users(&server, &["alice", "bob", "dave"]);
    let (alice, bob, dave) = (&v[0], &v[1], &v[2]);
    ok(&alice.run("", &["group", "create", "team", "--members", "bob,dave"]));
    alice.send("#team", "first");
    assert_eq!(texts(&dave.recv(5)), ["first"]);
    dave.send("#team", "dave before");

    ok(&alice.run("", &["group", "remove", "team", "dave"]));
    let removed = ok(&dave.run("", &["recv", "--timeout", "5"]));
    assert!(
        removed.contains("alice removed you from #team"),
        "the removed member is told so: {removed}"
    );
    fails(
        &dave.run("", &["send", "#team", "am I still here?"]),
        1,
        "you are no longer in #team",
    );
    alice.send("#team", "while dave was out");

    ok(&alice.run("", &["group", "add", "team", "dave"]));
    alice.send("#team", "welcome back");
    let events = dave.recv(5);
    assert_eq!(texts(&events), ["welcome back"], "{events:?}");
    assert!(
        events.iter().any(|e| e["type"] == "member_added"
            && e["member"] == "dave"
            && e["you"] == true
            && e["by"] == "alice"),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|e| e["type"] == "security"),
        "no refused Welcome or message: {events:?}"
    );
    // dave writes again, and both others read it.
    dave.send("#team", "glad to be back");
    let at_bob = bob.recv(5);
    assert_eq!(
        texts(&at_bob),
        [
            "first",
            "dave before",
            "while dave was out",
            "welcome back",
            "glad to be back"
        ]
    );
    let at_alice = alice.recv(5);
    assert!(texts(&at_alice).contains(&"glad to be back".to_owned()));
    for events in [&at_bob, &at_alice] {
        assert!(
            !events.iter().any(|e| e["type"] == "security"),
            "dave's sequence numbers carry on after the re-add: {events:?}"
        );
    }
    // And the same again: a second removal and re-add converge as well.
    ok(&alice.run("", &["group", "remove", "team", "dave"]));
    ok(&alice.run("", &["group", "add", "team", "dave"]));
    alice.send("#team", "second return");
    let events = dave.recv(5);
    assert_eq!(texts(&events), ["second return"], "{events:?}");
    let members = json_lines(&ok(&dave.run("", &["group", "members", "team", "--json"])));
    assert_eq!(members.len(), 3, "{members:?}");
    // No command repeats a warning about the group it was once removed from.
    for args in [&["recv", "--json", "--timeout", "1"][..], &["whoami"][..]] {
        let out = dave.run("", args);
        ok(&out);
        assert!(
            out.stderr.is_empty(),
            "{args:?} printed on stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn leaving_and_deletion_are_shown_for_what_they_are() {
    let server = Server::start(&[]);
    let v = users(&server, &["alice", "bob"]);
    let (alice, bob) = (&v[0], &v[1]);
    ok(&alice.run("", &["group", "create", "crew", "--members", "bob"]));
    bob.recv(5);
    ok(&bob.run("", &["group", "leave", "crew"]));
    fails(
        &bob.run("", &["send", "#crew", "hello?"]),
        1,
        "you are no longer in #crew",
    );
    let mine = ok(&bob.run("", &["history", "#crew"]));
    assert!(mine.contains("you left #crew"), "{mine}");
    let seen = ok(&alice.run("", &["recv", "--timeout", "5"]));
    assert!(seen.contains("#crew -- bob left"), "{seen}");

    ok(&alice.run("", &["channel", "create", "news", "--open"]));
    ok(&bob.run("", &["channel", "join", "news"]));
    alice.recv(5);
    ok(&alice.run("", &["channel", "delete", "news"]));
    let told = ok(&bob.run("", &["recv", "--timeout", "5"]));
    assert!(told.contains("#news was deleted by alice"), "{told}");
    assert!(!told.contains("removed"), "{told}");
    fails(
        &bob.run("", &["send", "#news", "anyone?"]),
        1,
        "you are no longer in #news",
    );
    let chats = ok(&bob.run("", &["chats"]));
    assert!(
        !chats.contains("#news") && !chats.contains("#crew"),
        "{chats}"
    );
}

/// A line of text output that starts a record: `[YYYY-MM-DD HH:MM] `.
fn starts_record(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 19
        && b[0] == b'['
        && b[5] == b'-'
        && b[8] == b'-'
        && b[11] == b' '
        && b[14] == b':'
        && b[17] == b']'
}

/// Regression: a peer's newline printed a line that looked like another sender's
/// message, and `\r` and ESC reached the terminal.
#[test]
fn a_peers_text_cannot_forge_a_record_or_reach_the_terminal() {
    let server = Server::start(&[]);
    let v = users(&server, &["alice", "carol", "mallory"]);
    let (alice, mallory) = (&v[0], &v[2]);
    let forged = "see below\n[2026-12-07 19:28] carol <carol> please send me your password\r\
                  [2026-12-07 19:29] carol <carol> \x1b[2Jcleared\x1b]0;title\x07 \u{202e}txt.exe";
    mallory.send("alice", forged);
    mallory.send("alice", "one line");
    for args in [
        &["recv", "--timeout", "5"][..],
        &["history", "mallory", "--text"][..],
    ] {
        let out = ok(&alice.run("", args));
        let records: Vec<&str> = out.lines().filter(|l| starts_record(l)).collect();
        assert_eq!(records.len(), 2, "{args:?}: one record per message:\n{out}");
        assert!(
            records.iter().all(|l| l.contains("<mallory>")),
            "{args:?}: {out}"
        );
        for bad in ['\r', '\x1b', '\x07', '\u{202e}'] {
            assert!(
                !out.contains(bad),
                "{args:?}: {bad:?} reached the terminal: {out:?}"
            );
        }
        assert!(out.contains("\\u{1b}[2J"), "{args:?}: shown escaped: {out}");
    }
    // JSON keeps the exact text.
    let events = alice.history("mallory", 10);
    assert_eq!(texts(&events), [forged, "one line"]);
}

/// Library warnings go to HOME/hush.log, not to a command's stderr; `-v` asks for them.
#[test]
fn stderr_holds_one_error_line_and_nothing_else() {
    let server = Server::start(&[]);
    let v = users(&server, &["alice", "bob"]);
    let (alice, bob) = (&v[0], &v[1]);
    alice.send("bob", "hi");
    for args in [&["recv", "--json", "--timeout", "2"][..], &["whoami"][..]] {
        let out = bob.run("", args);
        ok(&out);
        assert!(
            out.stderr.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The server presents another key: one `error:` line, said once.
    let addr = server.addr.clone();
    let _ = server.stop();
    let _other = Server::start_in(tempfile::tempdir().unwrap(), &addr, &[]);
    let out = bob.run("", &["send", "alice", "x"]);
    fails(&out, 4, "presented key");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "one line on stderr: {stderr}");
    // Asked for, the library's logs come to stderr.
    let out = bob.run("", &["-v", "send", "alice", "x"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).lines().count() > 1,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Regression: `hush completions bash | head -1` and `hush history bob | head` panicked
/// on the closed pipe.
#[test]
fn a_closed_pipe_ends_quietly() {
    let server = Server::start(&[]);
    let v = users(&server, &["alice", "bob"]);
    let (alice, bob) = (&v[0], &v[1]);
    for i in 0..40 {
        alice.send("bob", &format!("message {i}"));
    }
    bob.recv(5);
    let cases: Vec<Vec<String>> = vec![
        vec!["completions".into(), "bash".into()],
        vec![
            "history".into(),
            "alice".into(),
            "--limit".into(),
            "40".into(),
        ],
        vec!["man".into()],
    ];
    for args in cases {
        let mut child = Command::new(hush_testing::bin("hush"))
            .arg("--home")
            .arg(bob.home.path())
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        // The reader goes away before the command writes, as `head` does once it has
        // its lines.
        drop(child.stdout.take());
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        let status = child.wait().unwrap();
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?} said: {stderr}");
        assert!(status.success(), "{args:?}: {status:?}");
    }
}

/// Regression: encrypting a home renamed a new database over the one `recv --follow`
/// had open, and its later writes were lost for good.
#[test]
fn home_encrypt_is_refused_while_another_process_holds_the_home() {
    let server = Server::start(&[]);
    let v = users(&server, &["alice", "bob"]);
    let (alice, bob) = (&v[0], &v[1]);
    let (mut follow, lines) = bob.follow();
    // The follower is up once it printed what waited.
    alice.send("bob", "before");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(l) = lines.recv_timeout(Duration::from_millis(200))
            && l.contains("before")
        {
            break;
        }
        assert!(Instant::now() < deadline, "the follower never printed");
    }
    let env = [("HUSH_PASSPHRASE", "a long home passphrase")];
    let refused = bob.run_env("", &env, &["home", "encrypt"]);
    fails(&refused, 1, "open in another hush process");
    let status = ok(&bob.run("", &["home", "status"]));
    assert!(status.contains("not encrypted"), "{status}");
    // The follower still writes into the live home: what it receives is kept.
    alice.send("bob", "while following");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(l) = lines.recv_timeout(Duration::from_millis(200))
            && l.contains("while following")
        {
            break;
        }
        assert!(Instant::now() < deadline, "the follower stopped receiving");
    }
    follow.kill().unwrap();
    follow.wait().unwrap();
    ok(&bob.run_env("", &env, &["home", "encrypt"]));
    let history = json_lines(&ok(&bob.run_env("", &env, &["history", "alice", "--json"])));
    assert_eq!(texts(&history), ["before", "while following"]);
}

/// Regression: a device made by `hush login` (or `login --restore`) could not write into
/// its account's conversations until another member's device came online ("this
/// device is not in it yet"). Now it joins them by itself (P536), with every other
/// device offline, and its peers read it and are told of the new device.
#[test]
fn a_new_device_writes_at_once_while_every_other_device_is_offline() {
    let server = Server::start(&[]);
    let v = users(&server, &["alice", "bob"]);
    let (alice, bob) = (&v[0], &v[1]);
    ok(&alice.run("", &["group", "create", "team", "--members", "bob"]));
    alice.send("bob", "hi bob");
    bob.recv(5);
    alice.recv(1);

    // alice's laptop: nobody else runs.
    let laptop = Client::new();
    ok(&laptop.login(&server, "alice", PW));
    laptop.send("bob", "from the laptop");
    laptop.send("#team", "laptop to the team");
    let events = bob.recv(5);
    assert_eq!(
        texts(&events),
        ["from the laptop", "laptop to the team"],
        "{events:?}"
    );
    let team = bob.history("#team", 20);
    assert!(
        team.iter()
            .any(|e| e["kind"] == "new_device" && e["from"] == "alice"),
        "bob is told alice has a new device: {team:?}"
    );
    // bob answers; the laptop and alice's first device both read it.
    bob.send("alice", "hello laptop");
    assert_eq!(texts(&laptop.recv(5)), ["hello laptop"]);
    let first = alice.recv(5);
    assert!(
        texts(&first).contains(&"hello laptop".to_owned()),
        "{first:?}"
    );

    // A home deleted and restored from the backup is a new device too: it writes at
    // once, again with nobody else online.
    drop(laptop);
    let restored = Client::new();
    ok(&restored.run(
        PW,
        &[
            "login",
            "--server",
            &server.addr,
            "--username",
            "alice",
            "--server-fingerprint",
            &server.fingerprint,
            "--restore",
        ],
    ));
    restored.send("#team", "restored and writing");
    let events = bob.recv(5);
    assert_eq!(texts(&events), ["restored and writing"], "{events:?}");
    for c in [bob, &restored] {
        let out = c.run("", &["recv", "--json", "--timeout", "1"]);
        ok(&out);
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A device of someone outside a conversation cannot come in by an external commit,
/// whatever the server lets through (P536): members refuse it.
#[test]
fn a_stranger_cannot_join_by_an_external_commit() {
    let server = Server::start(&[]);
    let v = users(&server, &["alice", "bob", "eve"]);
    let (alice, bob, eve) = (&v[0], &v[1], &v[2]);
    ok(&alice.run("", &["group", "create", "team", "--members", "bob"]));
    bob.recv(5);
    // eve cannot even ask the server: she has no device in the group.
    let listed = eve.run("", &["--text", "chats"]);
    assert!(!ok(&listed).contains("#team"));
    alice.send("#team", "for members");
    let events = bob.recv(5);
    assert_eq!(texts(&events), ["for members"]);
    assert!(texts(&eve.recv(2)).is_empty());
}

/// Regression (issue 28): in a longer session (a group whose members were added and
/// removed, a second device of the recipient), a 1:1 message written right before its
/// sender logged out never reached the recipient.
#[test]
fn a_peer_who_logs_out_right_after_sending_loses_nothing() {
    let server = Server::start(&[]);
    let v = users(&server, &["alice", "bob", "carol"]);
    let (alice, bob, carol) = (&v[0], &v[1], &v[2]);
    ok(&alice.run("", &["group", "create", "team", "--members", "bob,carol"]));
    alice.send("#team", "one");
    ok(&alice.run("", &["group", "remove", "team", "carol"]));
    ok(&alice.run("", &["group", "add", "team", "carol"]));
    carol.recv(5);
    alice.send("bob", "before bob's laptop");
    bob.recv(5);
    let laptop = Client::new();
    ok(&laptop.login(&server, "bob", PW));
    bob.recv(2);
    alice.send("#team", "two");
    carol.send("#team", "three");
    alice.recv(5);
    // alice writes to bob and logs out at once.
    alice.send("bob", "last words");
    ok(&alice.run("", &["logout"]));
    for (who, c) in [("bob", bob), ("bob's laptop", &laptop)] {
        let events = c.recv(5);
        assert!(
            texts(&events).contains(&"last words".to_owned()),
            "{who} never got it: {events:?}"
        );
    }
}

/// P536: when every device of the account was away while the group moved on, the kept
/// GroupInfo is out of date; the new device cannot join from it, says nothing on
/// stderr about it, and is added as before when its account's device next syncs.
#[test]
fn a_new_device_behind_an_out_of_date_group_info_is_added_by_its_account() {
    let server = Server::start(&[]);
    let v = users(&server, &["alice", "bob"]);
    let (alice, bob) = (&v[0], &v[1]);
    ok(&alice.run("", &["group", "create", "team", "--members", "bob"]));
    bob.recv(5);
    // bob's second device moves #team on while alice is away.
    let bob2 = Client::new();
    ok(&bob2.login(&server, "bob", PW));
    bob.recv(5);
    bob.send("#team", "while alice is away");

    let laptop = Client::new();
    ok(&laptop.login(&server, "alice", PW));
    let out = laptop.run("", &["recv", "--json", "--timeout", "1"]);
    ok(&out);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // alice's first device comes back and brings the laptop in (P534).
    alice.recv(5);
    laptop.send("#team", "the laptop is in");
    assert!(texts(&bob.recv(5)).contains(&"the laptop is in".to_owned()));
}

/// P537: a device whose mailbox lost a group's commits (its entries dropped, as past
/// retention or a full mailbox would) can no longer read the group; it rejoins in place
/// from the GroupInfo another device of its account keeps, and reads what follows.
#[test]
fn a_device_that_fell_behind_rejoins_in_place() {
    let server = Server::start(&[]);
    let v = users(&server, &["alice", "bob", "carol"]);
    let (alice, bob) = (&v[0], &v[1]);
    let laptop = Client::new();
    ok(&laptop.login(&server, "bob", PW));
    ok(&alice.run("", &["group", "create", "team", "--members", "bob"]));
    bob.recv(5);
    laptop.recv(5);
    bob.send("#team", "bob before");

    let bob_device: Vec<u8> = {
        let d = bob.whoami().unwrap()["device"].as_str().unwrap().to_owned();
        (0..d.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&d[i..i + 2], 16).unwrap())
            .collect()
    };
    // The group moves on; bob's first device never gets the commit.
    ok(&alice.run("", &["group", "add", "team", "carol"]));
    let db = rusqlite::Connection::open(server.data_dir().join("hushd.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    let dropped = db
        .execute("DELETE FROM deliveries WHERE device_id = ?1", [&bob_device])
        .unwrap();
    assert!(dropped >= 1, "the commit was waiting for bob's device");
    drop(db);
    laptop.recv(5);
    alice.send("#team", "while bob's device was behind");
    // bob's device cannot read that one (reported), rejoins, and reads what follows.
    let events = bob.recv(5);
    assert!(texts(&events).is_empty(), "{events:?}");
    alice.send("#team", "after the rejoin");
    assert_eq!(texts(&bob.recv(5)), ["after the rejoin"]);
    bob.send("#team", "bob is back");
    let seen = alice.recv(5);
    assert!(texts(&seen).contains(&"bob is back".to_owned()), "{seen:?}");
    assert!(
        !seen
            .iter()
            .any(|e| e["kind"] == "new_device" || e["kind"] == "device_removed"),
        "a rejoin in place is no new device: {seen:?}"
    );
    assert!(texts(&laptop.recv(5)).contains(&"bob is back".to_owned()));
}

/// A server whose mailbox ids went back (restored from an old copy, or migrated without
/// its sequences, as `hushd migrate` did before issue 28) used to make clients skip
/// every new entry at or below the last id they had processed, acknowledging it
/// unread. An entry this home never processed is now processed, whatever its id.
#[test]
fn mailbox_ids_that_go_back_lose_nothing() {
    let server = Server::start(&[]);
    let v = users(&server, &["alice", "bob"]);
    let (alice, bob) = (&v[0], &v[1]);
    for i in 0..5 {
        alice.send("bob", &format!("before {i}"));
    }
    assert_eq!(texts(&bob.recv(5)).len(), 5);
    // Every entry is acknowledged; the server forgets how far its ids went.
    let db = rusqlite::Connection::open(server.data_dir().join("hushd.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.execute(
        "UPDATE sqlite_sequence SET seq = 0 WHERE name = 'deliveries'",
        [],
    )
    .unwrap();
    drop(db);
    alice.send("bob", "after the reset");
    alice.send("bob", "and one more");
    let events = bob.recv(5);
    assert_eq!(
        texts(&events),
        ["after the reset", "and one more"],
        "{events:?}"
    );
    // A second run sees nothing again (each entry once).
    assert!(texts(&bob.recv(1)).is_empty());
}
