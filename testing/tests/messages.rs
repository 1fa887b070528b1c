//! End-to-end encrypted direct messages through a real hushd, with real hush processes
//! (and, for volume, the client library in-process against the same real server).
mod inproc;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hush_testing::{Client, Server, bin, find_bytes, ok, texts};

const PW: &str = "correct horse battery";

fn pair(server: &Server) -> (Client, Client) {
    let ann = Client::new();
    ok(&ann.register(server, "ann", PW, &[]));
    let ben = Client::new();
    ok(&ben.register(server, "ben", PW, &[]));
    (ann, ben)
}

#[test]
fn offline_recipient_gets_every_message_in_order() {
    let server = Server::start(&[]);
    let (ann, ben) = pair(&server);
    let sent: Vec<String> = (1..=5).map(|i| format!("message {i}")).collect();
    for t in &sent {
        ann.send("ben", t);
    }
    // Ben was offline the whole time; now he comes online.
    let events = ben.recv(5);
    assert_eq!(texts(&events), sent);
    for e in &events {
        assert_eq!(e["type"], "message");
        assert_eq!(e["from"], "ann");
        assert_eq!(e["conversation"], "ann");
        assert_eq!(e["id"].as_str().unwrap().len(), 32);
        assert!(e["sent_at"].as_str().unwrap().ends_with('Z'));
    }
    // Acknowledged messages are gone from the server: a second recv has nothing.
    assert!(texts(&ben.recv(0)).is_empty());
    // Ben answers; the same conversation carries it.
    ben.send("ann", "got them");
    assert_eq!(texts(&ann.recv(5)), ["got them"]);
}

#[test]
fn history_shows_both_sides_in_order_and_chats_count_unread() {
    let server = Server::start(&[]);
    let (ann, ben) = pair(&server);
    ann.send("ben", "one");
    ben.send("ann", "two");
    ann.send("ben", "three");
    // Ben's `send` already fetched "one"; recv prints it and "three".
    assert_eq!(texts(&ben.recv(5)), ["one", "three"]);

    let history = ben.history("ann", 100);
    assert_eq!(texts(&history), ["one", "two", "three"]);
    let from: Vec<&str> = history
        .iter()
        .map(|e| e["from"].as_str().unwrap())
        .collect();
    assert_eq!(from, ["ann", "ben", "ann"]);
    assert_eq!(
        texts(&ben.history("ann", 2)),
        ["two", "three"],
        "--limit keeps the newest"
    );

    ben.send("ann", "four");
    let chats = hush_testing::json_lines(&ok(&ann.run("", &["chats", "--json"])));
    assert_eq!(chats.len(), 1);
    assert_eq!(chats[0]["conversation"], "ben");
    assert_eq!(
        chats[0]["unread"], 2,
        "two and four not yet read: {chats:?}"
    );
    assert_eq!(
        texts(&ann.history("ben", 100)),
        ["one", "two", "three", "four"]
    );
    let chats = hush_testing::json_lines(&ok(&ann.run("", &["chats", "--json"])));
    assert_eq!(chats[0]["unread"], 0, "history marks read");
}

#[test]
fn stdin_text_and_bad_targets() {
    let server = Server::start(&[]);
    let (ann, ben) = pair(&server);
    let mut child = Command::new(bin("hush"))
        .args([
            "--home",
            ann.home.path().to_str().unwrap(),
            "send",
            "ben",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"line one\nline two\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(texts(&ben.recv(5)), ["line one\nline two"]);

    hush_testing::fails(
        &ann.run("", &["send", "nobody", "hi"]),
        1,
        "no user named nobody",
    );
    hush_testing::fails(&ann.run("", &["send", "ann", "hi"]), 1, "yourself");
    hush_testing::fails(
        &ann.run("", &["send", "#team", "hi"]),
        1,
        "not in a group called #team",
    );
    hush_testing::fails(
        &ann.run("", &["history", "zed", "--json"]),
        1,
        "no conversation",
    );
}

#[test]
fn nothing_is_lost_across_a_server_restart() {
    let server = Server::start(&[]);
    let addr = server.addr.clone();
    let (ann, ben) = pair(&server);
    ann.send("ben", "before restart");
    let (status, data) = server.stop();
    assert!(status.success());
    let server = Server::start_in(data, &addr, &[]);
    ann.send("ben", "after restart");
    assert_eq!(texts(&ben.recv(5)), ["before restart", "after restart"]);
    drop(server);
}

#[test]
fn the_server_never_holds_a_readable_message() {
    let marker = "Xylophone-Marker-Word-4417";
    let server = Server::start(&["--log", "debug"]);
    let (ann, ben) = pair(&server);
    ann.send("ben", &format!("secret {marker} inside"));
    // Stored for ben, not yet fetched: database and WAL hold it, as ciphertext.
    let data = server.data_dir();
    assert_eq!(
        find_bytes(&data, marker.as_bytes()),
        None,
        "plaintext on the server"
    );
    assert_eq!(texts(&ben.recv(5)), [format!("secret {marker} inside")]);
    let log = server.log().join("\n");
    let (_, data) = server.stop();
    assert_eq!(
        find_bytes(data.path(), marker.as_bytes()),
        None,
        "plaintext on the server"
    );
    assert!(!log.contains(marker), "plaintext in the server log");
}

#[test]
fn a_replayed_ciphertext_is_rejected_and_reported() {
    let server = Server::start(&[]);
    let (ann, ben) = pair(&server);
    ann.send("ben", "pay 10 coins");
    // A malicious server (or anyone with its database) delivers the same ciphertext
    // again, as a new mailbox entry.
    let db = rusqlite::Connection::open(server.data_dir().join("hushd.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    let copied = db
        .execute(
            "INSERT INTO deliveries (device_id, message_id)
             SELECT d.device_id, d.message_id FROM deliveries d JOIN messages m ON m.id = d.message_id
             WHERE m.kind = 3",
            [],
        )
        .unwrap();
    assert_eq!(copied, 1);
    drop(db);

    let events = ben.recv(5);
    assert_eq!(
        texts(&events),
        ["pay 10 coins"],
        "delivered once: {events:?}"
    );
    let alerts: Vec<_> = events.iter().filter(|e| e["type"] == "security").collect();
    assert_eq!(alerts.len(), 1, "{events:?}");
    assert_eq!(
        alerts[0]["kind"], "message_replayed",
        "{}",
        alerts[0]["reason"]
    );
    assert_eq!(alerts[0]["conversation"], "ann");
    assert!(alerts[0]["reason"].as_str().unwrap().contains("replay"));
    // It stays in history, never silently dropped.
    let history = ben.history("ann", 10);
    assert!(
        history
            .iter()
            .any(|e| e["type"] == "security" && e["kind"] == "message_replayed")
    );
}

#[test]
fn a_receiving_client_restarts_mid_conversation_and_continues() {
    let server = Server::start(&[]);
    let (ann, ben) = pair(&server);
    let follow = |ben: &Client| ben.follow();
    let take = |rx: &std::sync::mpsc::Receiver<String>, n: usize| -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut got = Vec::new();
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).expect("message arrives live");
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            got.push(v["text"].as_str().unwrap().to_owned());
        }
        got
    };

    let (mut first, rx) = follow(&ben);
    ann.send("ben", "one");
    ann.send("ben", "two");
    assert_eq!(take(&rx, 2), ["one", "two"], "pushed live");
    std::thread::sleep(Duration::from_millis(200));
    first.kill().unwrap(); // like a crash: no goodbye
    first.wait().unwrap();

    ann.send("ben", "three");
    let (mut second, rx) = follow(&ben);
    ann.send("ben", "four");
    assert_eq!(take(&rx, 2), ["three", "four"]);
    second.kill().unwrap();
    second.wait().unwrap();
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "nothing printed twice"
    );
    assert_eq!(
        texts(&ben.history("ann", 10)),
        ["one", "two", "three", "four"]
    );
}

/// 1,000 messages each way through the real server, via the client engine: none
/// lost, none duplicated, both histories in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_messages_each_way() {
    const N: usize = 1000;
    let server = Server::start(&[]);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ann = inproc::register(&server, da.path(), "ann", Default::default()).await;
    let ben = inproc::register(&server, db.path(), "ben", Default::default()).await;
    let (to_ben, to_ann) = (inproc::to("ben"), inproc::to("ann"));
    for i in 0..N {
        ann.send(&to_ben, &format!("a{i}")).await.unwrap();
        ben.send(&to_ann, &format!("b{i}")).await.unwrap();
    }
    ann.sync().await.unwrap();
    ben.sync().await.unwrap();

    let expected: Vec<String> = (0..N)
        .flat_map(|i| [format!("a{i}"), format!("b{i}")])
        .collect();
    for (client, peer) in [(&ann, "ben"), (&ben, "ann")] {
        let got = inproc::texts(client, peer).await;
        assert_eq!(got.len(), 2 * N, "{peer}: every message exactly once");
        assert_eq!(got, expected, "{peer}: in order");
        assert!(
            inproc::security(client, peer).await.is_empty(),
            "no security events"
        );
    }
}

/// A line written while the server is down waits in the durable outbox as `sending`;
/// once the engine reconnects it is sent, a `Delivery` event says so, and it arrives
/// once. A conversation that does not exist yet cannot be started offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_written_offline_is_sent_on_reconnect() {
    use hush_client::events::{ConnectionState, Event, MessageState};
    let server = Server::start(&[]);
    let addr = server.addr.clone();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ann = inproc::register(&server, da.path(), "ann", Default::default()).await;
    let ben = inproc::register(&server, db.path(), "ben", Default::default()).await;
    inproc::register(
        &server,
        tempfile::tempdir().unwrap().path(),
        "cat",
        Default::default(),
    )
    .await
    .close()
    .await;
    ann.send(&inproc::to("ben"), "online first").await.unwrap();

    let mut events = ann.events();
    let (_, data) = server.stop();
    tokio::time::timeout(
        Duration::from_secs(30),
        ann.wait_for_state(|s| matches!(s, ConnectionState::Offline { .. })),
    )
    .await
    .expect("ann's engine saw the server go");
    let queued = ann
        .send_or_queue(&inproc::to("ben"), "written offline")
        .await
        .unwrap();
    let Event::Message { state, id, .. } = &queued else {
        panic!("not a message: {queued:?}");
    };
    assert_eq!(*state, MessageState::Sending);
    let err = ann
        .send_or_queue(&inproc::to("cat"), "new conversation")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("only be started online"), "{err}");

    let server = Server::start_in(data, &addr, &[]);
    let delivered = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match events.next().await {
                Some(Event::Delivery {
                    id: d,
                    state,
                    conversation,
                    ..
                }) if d == *id => break (state, conversation),
                Some(_) => {}
                None => panic!("the event stream ended"),
            }
        }
    })
    .await
    .expect("the queued message was delivered after the reconnect");
    assert_eq!(delivered, (MessageState::Sent, "ben".to_owned()));
    let history = ann.history("ben", 10).await.unwrap();
    assert!(
        history
            .iter()
            .any(|e| matches!(e, Event::Message { text, state, .. }
            if text == "written offline" && *state == MessageState::Sent)),
        "{history:?}"
    );
    inproc::sync_eventually(&ben).await;
    assert_eq!(
        inproc::texts(&ben, "ann").await,
        ["online first", "written offline"]
    );
    drop(server);
}

#[test]
fn a_message_the_server_drops_is_reported_as_a_gap() {
    let server = Server::start(&[]);
    let (ann, ben) = pair(&server);
    for t in ["first", "second", "third"] {
        ann.send("ben", t);
    }
    // The server "loses" the middle message.
    let db = rusqlite::Connection::open(server.data_dir().join("hushd.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    let dropped = db
        .execute(
            "DELETE FROM deliveries WHERE message_id =
               (SELECT id FROM messages WHERE kind = 3 ORDER BY group_seq LIMIT 1 OFFSET 1)",
            [],
        )
        .unwrap();
    assert_eq!(dropped, 1);
    drop(db);

    let events = ben.recv(5);
    assert_eq!(texts(&events), ["first", "third"]);
    let gaps: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "message_gap")
        .collect();
    assert_eq!(gaps.len(), 1, "{events:?}");
    assert!(
        gaps[0]["reason"]
            .as_str()
            .unwrap()
            .contains("1 message(s) from ann"),
        "{}",
        gaps[0]
    );
}

/// P457: `hush outbox` lists what waits (text and JSON), and `drop` refuses an id it
/// does not hold with one clear error line.
#[test]
fn the_outbox_command_lists_and_drops() {
    let server = Server::start(&[]);
    let (ann, _ben) = pair(&server);
    assert_eq!(ok(&ann.run(PW, &["outbox"])).trim(), "the outbox is empty");
    assert_eq!(ok(&ann.run(PW, &["outbox", "--json"])).trim(), "");
    let out = ann.run(PW, &["outbox", "drop", &"ab".repeat(16)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no message"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let out = ann.run(PW, &["outbox", "retry", "not-an-id"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a message id"),
        "{out:?}"
    );
}
