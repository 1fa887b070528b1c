//! A cluster: several real `hushd` processes on loopback ports sharing one PostgreSQL
//! database (`HUSH_TEST_DATABASE_URL`, each test in a schema of its own), with
//! in-process clients on different nodes. Skipped, saying so, without the variable.
mod inproc;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hush_client::Client;
use hush_client::events::ConnectionState;
use hush_client::hush_proto::content::GroupName;
use hush_client::hush_proto::ids::Username;
use hush_store_postgres::scratch::Scratch;
use hush_testing::Server;
use inproc::{check, keep_sending, numbers, online, register_via, texts, to};

/// `n` nodes on one database. Sessions are rechecked only every ten minutes, so a
/// cut-off seen sooner came over the wake-up bus.
fn nodes(scratch: &Scratch, n: usize) -> (Vec<Server>, tempfile::TempDir) {
    nodes_with(scratch, n, "")
}

/// `n` nodes with more `[limits]` lines.
fn nodes_with(scratch: &Scratch, n: usize, limits: &str) -> (Vec<Server>, tempfile::TempDir) {
    let conf = tempfile::tempdir().unwrap();
    let path = conf.path().join("hushd.toml");
    std::fs::write(
        &path,
        format!(
            "database_url = {:?}\n[limits]\nsession_recheck_secs = 600\n{limits}",
            scratch.url()
        ),
    )
    .unwrap();
    let path = path.to_str().unwrap().to_owned();
    let servers: Vec<Server> = (0..n)
        .map(|_| Server::start(&["--config", &path]))
        .collect();
    (servers, conf)
}

/// Waits (up to `secs`) until `client`'s history with `conversation` holds `text`,
/// without asking it to sync: only a live push brings it.
async fn pushed(client: &Client, conversation: &str, text: &str, secs: u64) {
    for _ in 0..secs * 20 {
        if texts(client, conversation).await.iter().any(|t| t == text) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{text:?} not pushed into {conversation:?}: {:?}",
        texts(client, conversation).await
    );
}

/// A file of `len` patterned bytes in `dir`.
fn a_file(dir: &std::path::Path, len: usize) -> (std::path::PathBuf, Vec<u8>) {
    let data: Vec<u8> = (0..len as u64).map(|i| (i * 31 % 251) as u8).collect();
    let path = dir.join("notes.bin");
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

/// `receiver` downloads the file `id` (through whatever node it is on) into `dir`:
/// the bytes it saved.
async fn received_file(
    receiver: &Client,
    id: hush_client::hush_proto::ids::FileId,
    dir: &std::path::Path,
) -> Vec<u8> {
    inproc::sync_eventually(receiver).await;
    let saved = receiver
        .get_file(id, Some(dir), false, &mut |_| {
            std::ops::ControlFlow::Continue(())
        })
        .await
        .unwrap();
    std::fs::read(saved.path).unwrap()
}

fn names(list: &[&str]) -> Vec<Username> {
    list.iter().map(|n| Username::parse(n).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_share_accounts_groups_live_pushes_and_cut_offs() {
    let Some(db) = Scratch::new("three_nodes_share_accounts_groups_live_pushes_and_cut_offs").await
    else {
        return;
    };
    let (n, _conf) = nodes(&db, 3);
    assert!(
        n.iter().all(|s| s.fingerprint == n[0].fingerprint),
        "every node presents the cluster's one identity: {:?}",
        n.iter().map(|s| &s.fingerprint).collect::<Vec<_>>()
    );
    let d: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let alice = register_via(&n[0], &n[0].addr, d[0].path(), "alice", Default::default()).await;
    let bob = register_via(&n[2], &n[2].addr, d[1].path(), "bob", Default::default()).await;
    let carol = register_via(&n[1], &n[1].addr, d[2].path(), "carol", Default::default()).await;

    // 1:1 across nodes, both ways, pushed live.
    alice.send(&to("bob"), "hi bob, from node 1").await.unwrap();
    pushed(&bob, "alice", "hi bob, from node 1", 10).await;
    bob.send(&to("alice"), "hi alice, from node 3")
        .await
        .unwrap();
    pushed(&alice, "bob", "hi alice, from node 3", 10).await;

    // A group spanning the three nodes.
    let trio = GroupName::parse("trio").unwrap();
    alice
        .create_group(&trio, &names(&["bob", "carol"]))
        .await
        .unwrap();
    carol.sync().await.unwrap();
    bob.sync().await.unwrap();
    carol.send(&to("#trio"), "carol on node 2").await.unwrap();
    pushed(&alice, "#trio", "carol on node 2", 10).await;
    pushed(&bob, "#trio", "carol on node 2", 10).await;
    bob.send(&to("#trio"), "bob on node 3").await.unwrap();
    pushed(&alice, "#trio", "bob on node 3", 10).await;
    pushed(&carol, "#trio", "bob on node 3", 10).await;

    // A file uploaded through node 1 downloads through node 3.
    let work = tempfile::tempdir().unwrap();
    let (path, data) = a_file(work.path(), 3 * 1024 * 1024 + 17);
    let sent = alice
        .send_file(&to("bob"), &path, None, &mut |_| {
            std::ops::ControlFlow::Continue(())
        })
        .await
        .unwrap();
    let down = tempfile::tempdir().unwrap();
    assert_eq!(
        received_file(&bob, sent.file_id, down.path()).await,
        data,
        "the same bytes through another node"
    );

    // Disabled through node 1 (an operator command, a process of its own): carol's
    // session on node 2 ends at once, long before any recheck.
    hush_testing::ok(&n[0].admin(&["--database-url", &db.url(), "user", "disable", "carol"]));
    let state = tokio::time::timeout(
        Duration::from_secs(10),
        carol.wait_for_state(|s| matches!(s, ConnectionState::Failed { .. })),
    )
    .await
    .expect("carol is cut off on her node");
    assert!(format!("{state:?}").contains("disabled"), "{state:?}");
    // The others carry on.
    alice.send(&to("bob"), "still here").await.unwrap();
    pushed(&bob, "alice", "still here", 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_node_s_clients_fail_over_and_lose_nothing() {
    let Some(db) = Scratch::new("a_killed_node_s_clients_fail_over_and_lose_nothing").await else {
        return;
    };
    let (mut n, _conf) = nodes(&db, 2);
    let (one, two) = (n[0].addr.clone(), n[1].addr.clone());
    let (da, db_) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // ann prefers node 1, ben node 2; each knows both.
    let ann = register_via(
        &n[0],
        &format!("{one},{two}"),
        da.path(),
        "ann",
        Default::default(),
    )
    .await;
    let ben = register_via(
        &n[1],
        &format!("{two},{one}"),
        db_.path(),
        "ben",
        Default::default(),
    )
    .await;
    ann.send(&to("ben"), "start").await.unwrap();
    ben.sync().await.unwrap();

    let (acked_a, acked_b) = (Arc::default(), Arc::default());
    let stop = Arc::new(AtomicBool::new(false));
    let senders = [
        keep_sending(
            ann.clone(),
            "ben",
            "a",
            Arc::clone(&acked_a),
            Arc::clone(&stop),
        ),
        keep_sending(
            ben.clone(),
            "ann",
            "b",
            Arc::clone(&acked_b),
            Arc::clone(&stop),
        ),
    ];
    let acked = |a: &Arc<std::sync::Mutex<Vec<usize>>>| a.lock().unwrap().len();
    for _ in 0..600 {
        if acked(&acked_a) >= 10 && acked(&acked_b) >= 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // kill -9 of ben's node in the middle of traffic.
    drop(n.pop().unwrap().kill());
    let before = (acked(&acked_a), acked(&acked_b));
    tokio::time::sleep(Duration::from_millis(300)).await;
    online(&ben).await;
    // Both go on acknowledging through node 1.
    for _ in 0..600 {
        if acked(&acked_a) >= before.0 + 10 && acked(&acked_b) >= before.1 + 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    assert!(
        acked(&acked_b) >= before.1 + 10,
        "ben kept sending through the other node"
    );
    for _ in 0..3 {
        inproc::sync_eventually(&ann).await;
        inproc::sync_eventually(&ben).await;
    }
    let acked_a = acked_a.lock().unwrap().clone();
    let acked_b = acked_b.lock().unwrap().clone();
    check(&numbers(&texts(&ben, "ann").await, "a"), &acked_a, "ben");
    check(&numbers(&texts(&ann, "ben").await, "b"), &acked_b, "ann");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commits_from_two_nodes_converge() {
    let Some(db) = Scratch::new("concurrent_commits_from_two_nodes_converge").await else {
        return;
    };
    let (n, _conf) = nodes(&db, 2);
    let d: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let ann = register_via(&n[0], &n[0].addr, d[0].path(), "ann", Default::default()).await;
    let ben = register_via(&n[1], &n[1].addr, d[1].path(), "ben", Default::default()).await;
    let dan = register_via(&n[0], &n[0].addr, d[2].path(), "dan", Default::default()).await;
    let eve = register_via(&n[1], &n[1].addr, d[3].path(), "eve", Default::default()).await;
    let team = GroupName::parse("team").unwrap();
    ann.create_group(&team, &names(&["ben"])).await.unwrap();
    ann.promote(&team, &names(&["ben"])).await.unwrap();
    ben.sync().await.unwrap();
    // Two admins on two nodes commit at one epoch: one wins, the other catches up
    // and commits again.
    let (dan_, eve_) = (names(&["dan"]), names(&["eve"]));
    let (a, b) = tokio::join!(ann.add_members(&team, &dan_), ben.add_members(&team, &eve_));
    a.unwrap();
    b.unwrap();
    let all = [&ann, &ben, &dan, &eve];
    for c in all {
        c.sync().await.unwrap();
    }
    for (i, c) in all.iter().enumerate() {
        c.send(&to("#team"), &format!("from {i}")).await.unwrap();
    }
    for c in all {
        for i in 0..4 {
            pushed(c, "#team", &format!("from {i}"), 10).await;
        }
        let members = c.members(&team).await.unwrap();
        assert_eq!(members.len(), 4, "ann, ben, dan and eve: {members:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migration_from_a_populated_sqlite_server_keeps_every_conversation() {
    let Some(db) =
        Scratch::new("migration_from_a_populated_sqlite_server_keeps_every_conversation").await
    else {
        return;
    };
    // A single node on SQLite, with history, a group, and a message still queued.
    let addr = format!("127.0.0.1:{}", hush_testing::free_port());
    let single = Server::start_in(tempfile::tempdir().unwrap(), &addr, &[]);
    let d: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let ann = register_via(&single, &addr, d[0].path(), "ann", Default::default()).await;
    let ben = register_via(&single, &addr, d[1].path(), "ben", Default::default()).await;
    let cat = register_via(&single, &addr, d[2].path(), "cat", Default::default()).await;
    ann.send(&to("ben"), "before the move").await.unwrap();
    ben.sync().await.unwrap();
    ben.send(&to("ann"), "reply before").await.unwrap();
    let trio = GroupName::parse("trio").unwrap();
    ann.create_group(&trio, &names(&["ben", "cat"]))
        .await
        .unwrap();
    ben.sync().await.unwrap();
    cat.sync().await.unwrap();
    ben.close().await;
    ann.send(&to("ben"), "queued for ben").await.unwrap();
    // A file whose bytes are in the single node's data dir.
    let work = tempfile::tempdir().unwrap();
    let (path, file) = a_file(work.path(), 1024 * 1024 + 5);
    let sent = ann
        .send_file(&to("ben"), &path, None, &mut |_| {
            std::ops::ControlFlow::Continue(())
        })
        .await
        .unwrap();
    ann.close().await;
    cat.close().await;
    let old_fingerprint = single.fingerprint.clone();
    let (status, data) = single.stop();
    assert!(status.success());
    let sqlite = format!("sqlite:{}", data.path().join("srv/hushd.db").display());

    let migrate = |to: &str| {
        std::process::Command::new(hush_testing::bin("hushd"))
            .args(["migrate", "--from", &sqlite, "--to", to])
            .output()
            .unwrap()
    };
    let report = hush_testing::ok(&migrate(&db.url()));
    for line in ["users 3", "devices 3", "groups 2", "group_names 1"] {
        assert!(report.lines().any(|l| l == line), "{line:?} in:\n{report}");
    }
    assert!(report.contains(&old_fingerprint), "{report}");
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("file bytes ") && l.ends_with(" (1 files)")),
        "the file's sealed bytes were copied:\n{report}"
    );
    // Never into a database that holds accounts.
    let again = migrate(&db.url());
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("empty"),
        "{again:?}"
    );

    // A cluster node at the old address, on the database: same key, same accounts.
    let conf = tempfile::tempdir().unwrap();
    let path = conf.path().join("hushd.toml");
    std::fs::write(&path, format!("database_url = {:?}\n", db.url())).unwrap();
    let node = Server::start_in(
        tempfile::tempdir().unwrap(),
        &addr,
        &["--config", path.to_str().unwrap()],
    );
    assert_eq!(node.fingerprint, old_fingerprint, "clients keep their pin");
    let ann = Client::open(d[0].path(), Default::default()).await.unwrap();
    let ben = Client::open(d[1].path(), Default::default()).await.unwrap();
    let cat = Client::open(d[2].path(), Default::default()).await.unwrap();
    for c in [&ann, &ben, &cat] {
        inproc::sync_eventually(c).await;
    }
    assert_eq!(
        texts(&ben, "ann").await,
        ["before the move", "reply before", "queued for ben"],
        "the queued message came through the migration"
    );
    let down = tempfile::tempdir().unwrap();
    assert_eq!(
        received_file(&ben, sent.file_id, down.path()).await,
        file,
        "the file's bytes came through the migration"
    );
    ben.send(&to("ann"), "after the move").await.unwrap();
    pushed(&ann, "ben", "after the move", 10).await;
    ann.send(&to("ben"), "and back").await.unwrap();
    pushed(&ben, "ann", "and back", 10).await;
    cat.send(&to("#trio"), "the group still works")
        .await
        .unwrap();
    pushed(&ann, "#trio", "the group still works", 10).await;
    pushed(&ben, "#trio", "the group still works", 10).await;
}

/// Regression (issue 28): with every mailbox drained at the time of the move, the
/// cluster handed out mailbox ids from 1 again, below the ids clients had processed, so
/// the next message was answered `sent` and the recipient skipped it for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migration_with_nothing_waiting_then_chat_both_ways() {
    let Some(db) = Scratch::new("migration_with_nothing_waiting_then_chat_both_ways").await else {
        return;
    };
    let addr = format!("127.0.0.1:{}", hush_testing::free_port());
    let single = Server::start_in(tempfile::tempdir().unwrap(), &addr, &[]);
    let d: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let ann = register_via(&single, &addr, d[0].path(), "ann", Default::default()).await;
    let ben = register_via(&single, &addr, d[1].path(), "ben", Default::default()).await;
    for i in 0..5 {
        ann.send(&to("ben"), &format!("before {i}")).await.unwrap();
        ben.sync().await.unwrap();
        ben.send(&to("ann"), &format!("reply {i}")).await.unwrap();
        ann.sync().await.unwrap();
    }
    ann.close().await;
    ben.close().await;
    let (status, data) = single.stop();
    assert!(status.success());
    let sqlite = format!("sqlite:{}", data.path().join("srv/hushd.db").display());
    let report = hush_testing::ok(
        &std::process::Command::new(hush_testing::bin("hushd"))
            .args(["migrate", "--from", &sqlite, "--to", &db.url()])
            .output()
            .unwrap(),
    );
    assert!(report.lines().any(|l| l == "deliveries 0"), "{report}");

    let conf = tempfile::tempdir().unwrap();
    let path = conf.path().join("hushd.toml");
    std::fs::write(&path, format!("database_url = {:?}\n", db.url())).unwrap();
    let _node = Server::start_in(
        tempfile::tempdir().unwrap(),
        &addr,
        &["--config", path.to_str().unwrap()],
    );
    let ann = Client::open(d[0].path(), Default::default()).await.unwrap();
    let ben = Client::open(d[1].path(), Default::default()).await.unwrap();
    for c in [&ann, &ben] {
        inproc::sync_eventually(c).await;
    }
    for i in 0..3 {
        ann.send(&to("ben"), &format!("after {i}")).await.unwrap();
        ben.sync().await.unwrap();
        ben.send(&to("ann"), &format!("answer {i}")).await.unwrap();
        ann.sync().await.unwrap();
    }
    let got = texts(&ben, "ann").await;
    assert_eq!(
        got.iter().filter(|t| t.starts_with("after ")).count(),
        3,
        "ben got every message sent after the move: {got:?}"
    );
    let got = texts(&ann, "ben").await;
    assert_eq!(
        got.iter().filter(|t| t.starts_with("answer ")).count(),
        3,
        "ann got every message sent after the move: {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registrations_per_address_are_counted_across_the_nodes() {
    let Some(db) = Scratch::new("registrations_per_address_are_counted_across_the_nodes").await
    else {
        return;
    };
    let (n, _conf) = nodes_with(&db, 2, "registrations_per_address_per_hour = 2\n");
    let d: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    register_via(&n[0], &n[0].addr, d[0].path(), "one", Default::default()).await;
    register_via(&n[1], &n[1].addr, d[1].path(), "two", Default::default()).await;
    // The third from the same address, through the first node again: refused,
    // although that node made only one.
    let third = hush_client::Client::enrol(
        d[2].path(),
        &n[0].addr,
        inproc::pin(&n[0]),
        hush_client::Enrolment::Register {
            username: Username::parse("three").unwrap(),
            password: zeroize::Zeroizing::new(b"correct horse battery".to_vec()),
            invite: None,
            profile: Default::default(),
        },
        Default::default(),
    )
    .await;
    let Err(err) = third else {
        panic!("the third registration from one address is refused");
    };
    assert!(err.to_string().contains("too many new accounts"), "{err}");
}
