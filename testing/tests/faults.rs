//! Lost answers and killed clients (P423, P433, P441): a real `hushd` on port 0, real
//! TLS, and client engines in this process whose connections drop chosen answers
//! (`hush_client::faults`). After an answer to `CreateGroup`, `Commit` (add, remove,
//! leave), `Send` or `Ack` is lost, or the client is killed while waiting for it,
//! every conversation still works both ways, with no message lost or doubled.
mod inproc;

use std::path::Path;
use std::time::{Duration, Instant};

use hush_client::faults::{Action, Faults};
use hush_client::hush_proto::content::GroupName;
use hush_client::{Client, ClientOptions};
use hush_testing::Server;
use inproc::{register, security, send_eventually, sync_eventually, texts, to, user};

fn with(faults: &Faults) -> ClientOptions {
    ClientOptions {
        faults: faults.clone(),
        ..ClientOptions::default()
    }
}

/// ann and ben registered in fresh homes, each with its own fault rules.
async fn pair(
    server: &Server,
    dirs: &[tempfile::TempDir; 2],
    ann_faults: &Faults,
    ben_faults: &Faults,
) -> (Client, Client) {
    let ann = register(server, dirs[0].path(), "ann", with(ann_faults)).await;
    let ben = register(server, dirs[1].path(), "ben", with(ben_faults)).await;
    (ann, ben)
}

fn dirs2() -> [tempfile::TempDir; 2] {
    std::array::from_fn(|_| tempfile::tempdir().unwrap())
}

/// The users in `#team`, as `client`'s roster shows them.
async fn usernames(client: &Client) -> Vec<String> {
    client
        .members(&team())
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.username)
        .collect()
}

fn team() -> GroupName {
    GroupName::parse("#team").unwrap()
}

/// Waits until the fault fired (the engine is then stuck on the swallowed answer).
async fn fired(faults: &Faults, answer: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !faults.fired().iter().any(|f| f == answer) {
        assert!(
            Instant::now() < deadline,
            "the fault on {answer} never fired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `op` on a clone of `client` until its answer is swallowed, then kills the
/// engine, as `kill -9` would stop a process waiting for that answer.
async fn killed_during<F, Fut>(client: Client, faults: &Faults, answer: &str, op: F)
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    faults.drop_next(answer, Action::Swallow);
    let task = tokio::spawn(op(client.clone()));
    fired(faults, answer).await;
    client.kill().await;
    task.await.unwrap();
}

async fn reopen(dir: &Path) -> Client {
    Client::open(dir, ClientOptions::default()).await.unwrap()
}

async fn assert_clean(clients: &[(&Client, &str)]) {
    for (c, conversation) in clients {
        let s = security(c, conversation).await;
        assert!(s.is_empty(), "{conversation}: {s:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_create_group_answer_is_settled_and_both_sides_talk() {
    let server = Server::start(&[]);
    let dirs = dirs2();
    let faults = Faults::default();
    let (ann, ben) = pair(&server, &dirs, &faults, &Faults::default()).await;

    faults.drop_next("group_created", Action::Cut);
    let lost = ann.send(&to("ben"), "one").await;
    assert!(lost.is_err(), "the answer never came: {lost:?}");
    assert_eq!(faults.fired(), ["group_created"]);
    // The engine reconnects, resends the recorded creation ("already accepted"), and
    // the pair can talk: before the fix they never could again.
    send_eventually(&ann, "ben", "two").await;
    ben.sync().await.unwrap();
    assert_eq!(texts(&ben, "ann").await, ["two"]);
    ben.send(&to("ann"), "three").await.unwrap();
    ann.sync().await.unwrap();
    assert_eq!(texts(&ann, "ben").await, ["two", "three"]);
    assert_clean(&[(&ann, "ben"), (&ben, "ann")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_killed_while_creating_a_conversation_recovers_on_restart() {
    let server = Server::start(&[]);
    let dirs = dirs2();
    let faults = Faults::default();
    let (ann, ben) = pair(&server, &dirs, &faults, &Faults::default()).await;

    killed_during(ann, &faults, "group_created", |c| async move {
        assert!(c.send(&to("ben"), "lost with the process").await.is_err());
    })
    .await;
    let ann = reopen(dirs[0].path()).await;
    send_eventually(&ann, "ben", "after restart").await;
    ben.sync().await.unwrap();
    assert_eq!(texts(&ben, "ann").await, ["after restart"]);
    ben.send(&to("ann"), "reply").await.unwrap();
    ann.sync().await.unwrap();
    assert_eq!(texts(&ann, "ben").await, ["after restart", "reply"]);
    assert_clean(&[(&ann, "ben"), (&ben, "ann")]).await;
}

/// ann (admin, with the faults), ben and cat; `#team` holds ann and ben.
async fn trio(server: &Server, dirs: &[tempfile::TempDir; 3], faults: &Faults) -> [Client; 3] {
    let ann = register(server, dirs[0].path(), "ann", with(faults)).await;
    let ben = register(server, dirs[1].path(), "ben", Default::default()).await;
    let cat = register(server, dirs[2].path(), "cat", Default::default()).await;
    ann.create_group(&team(), &[user("ben")]).await.unwrap();
    ben.sync().await.unwrap();
    [ann, ben, cat]
}

fn dirs3() -> [tempfile::TempDir; 3] {
    std::array::from_fn(|_| tempfile::tempdir().unwrap())
}

/// Everyone in `members` sends once and everyone sees every message, exactly once.
async fn all_talk(members: &[&Client], round: &str) {
    for (i, c) in members.iter().enumerate() {
        send_eventually(c, "#team", &format!("{round} {i}")).await;
        for other in members {
            sync_eventually(other).await;
        }
    }
    for c in members {
        let got = texts(c, "#team").await;
        for i in 0..members.len() {
            let want = format!("{round} {i}");
            assert_eq!(
                got.iter().filter(|t| **t == want).count(),
                1,
                "{want:?} exactly once in {got:?}"
            );
        }
        let s = security(c, "#team").await;
        assert!(s.is_empty(), "{s:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_commit_answer_for_an_add_is_settled() {
    let server = Server::start(&[]);
    let dirs = dirs3();
    let faults = Faults::default();
    let [ann, ben, cat] = trio(&server, &dirs, &faults).await;

    faults.drop_next("commit_accepted", Action::Cut);
    assert!(ann.add_members(&team(), &[user("cat")]).await.is_err());
    // The server took the commit: once settled, cat is in and all three talk.
    sync_eventually(&ann).await;
    cat.sync().await.unwrap();
    all_talk(&[&ann, &ben, &cat], "after add").await;
    let members = ann.members(&team()).await.unwrap();
    assert_eq!(members.len(), 3, "{members:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_killed_while_committing_an_add_recovers_on_restart() {
    let server = Server::start(&[]);
    let dirs = dirs3();
    let faults = Faults::default();
    let [ann, ben, cat] = trio(&server, &dirs, &faults).await;

    killed_during(ann, &faults, "commit_accepted", |c| async move {
        assert!(c.add_members(&team(), &[user("cat")]).await.is_err());
    })
    .await;
    let ann = reopen(dirs[0].path()).await;
    sync_eventually(&ann).await;
    cat.sync().await.unwrap();
    all_talk(&[&ann, &ben, &cat], "after add").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_commit_answer_for_a_removal_is_settled() {
    let server = Server::start(&[]);
    let dirs = dirs3();
    let faults = Faults::default();
    let [ann, ben, cat] = trio(&server, &dirs, &faults).await;
    ann.add_members(&team(), &[user("cat")]).await.unwrap();
    ben.sync().await.unwrap();
    cat.sync().await.unwrap();

    faults.drop_next("commit_accepted", Action::Cut);
    assert!(ann.remove_members(&team(), &[user("cat")]).await.is_err());
    sync_eventually(&ann).await;
    all_talk(&[&ann, &ben], "after removal").await;
    let members = usernames(&ben).await;
    assert_eq!(members, ["ann", "ben"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_killed_while_committing_a_removal_recovers_on_restart() {
    let server = Server::start(&[]);
    let dirs = dirs3();
    let faults = Faults::default();
    let [ann, ben, cat] = trio(&server, &dirs, &faults).await;
    ann.add_members(&team(), &[user("cat")]).await.unwrap();
    ben.sync().await.unwrap();
    cat.sync().await.unwrap();

    killed_during(ann, &faults, "commit_accepted", |c| async move {
        assert!(c.remove_members(&team(), &[user("ben")]).await.is_err());
    })
    .await;
    let ann = reopen(dirs[0].path()).await;
    sync_eventually(&ann).await;
    let members = usernames(&ann).await;
    assert_eq!(members, ["ann", "cat"]);
    all_talk(&[&ann, &cat], "after removal").await;
    ben.sync().await.unwrap();
    assert!(
        !texts(&ben, "#team")
            .await
            .iter()
            .any(|t| t.starts_with("after removal")),
        "the removed member reads nothing new"
    );
}

/// Regression (issue 28): a removed member added again never read the group. Here the
/// removal and the add are each killed mid-way and finished on restart; the member
/// (who reads the removal only after both) still ends up in the group, reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_and_added_again_while_the_admin_is_killed_reads_the_group() {
    let server = Server::start(&[]);
    let dirs = dirs3();
    let faults = Faults::default();
    let [ann, ben, cat] = trio(&server, &dirs, &faults).await;
    ann.add_members(&team(), &[user("cat")]).await.unwrap();
    cat.sync().await.unwrap();
    all_talk(&[&ann, &ben, &cat], "before").await;

    killed_during(ann, &faults, "commit_accepted", |c| async move {
        assert!(c.remove_members(&team(), &[user("cat")]).await.is_err());
    })
    .await;
    // Fresh rules: `fired` counts what fired before.
    let faults = Faults::default();
    let ann = Client::open(dirs[0].path(), with(&faults)).await.unwrap();
    sync_eventually(&ann).await;
    assert_eq!(usernames(&ann).await, ["ann", "ben"]);
    killed_during(ann, &faults, "commit_accepted", |c| async move {
        assert!(c.add_members(&team(), &[user("cat")]).await.is_err());
    })
    .await;
    let ann = reopen(dirs[0].path()).await;
    sync_eventually(&ann).await;
    assert_eq!(usernames(&ann).await, ["ann", "ben", "cat"]);
    // cat reads the removal and the new Welcome in one go.
    sync_eventually(&cat).await;
    sync_eventually(&ben).await;
    all_talk(&[&ann, &ben, &cat], "after").await;
    assert_eq!(usernames(&cat).await, ["ann", "ben", "cat"]);
}

/// Regression (issue 28): after a session of adds and removals with killed clients and
/// a second device of the recipient, a 1:1 message written right before its sender
/// logged out must reach every device of the recipient.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_right_before_logging_out_reaches_every_device() {
    let server = Server::start(&[]);
    let dirs = dirs3();
    let faults = Faults::default();
    let [ann, ben, cat] = trio(&server, &dirs, &faults).await;
    ann.add_members(&team(), &[user("cat")]).await.unwrap();
    cat.sync().await.unwrap();
    ann.send(&to("ben"), "hello ben").await.unwrap();
    ben.sync().await.unwrap();
    killed_during(ann, &faults, "commit_accepted", |c| async move {
        assert!(c.remove_members(&team(), &[user("cat")]).await.is_err());
    })
    .await;
    // ben's laptop comes while ann is away.
    let laptop_dir = tempfile::tempdir().unwrap();
    let laptop = inproc::login(&server, laptop_dir.path(), "ben", Default::default()).await;
    let faults = Faults::default();
    let ann = Client::open(dirs[0].path(), with(&faults)).await.unwrap();
    sync_eventually(&ann).await;
    killed_during(ann, &faults, "commit_accepted", |c| async move {
        assert!(c.add_members(&team(), &[user("cat")]).await.is_err());
    })
    .await;
    let ann = reopen(dirs[0].path()).await;
    sync_eventually(&ann).await;
    send_eventually(&cat, "#team", "cat is back").await;
    // ann writes to ben and logs out at once.
    ann.send(&to("ben"), "last words").await.unwrap();
    assert!(ann.logout(false).await.unwrap().is_none());
    for (who, c) in [("ben", &ben), ("ben's laptop", &laptop)] {
        sync_eventually(c).await;
        let got = texts(c, "ann").await;
        assert!(
            got.iter().any(|t| t == "last words"),
            "{who} never got it: {got:?} {:?}",
            security(c, "ann").await
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answers_while_leaving_and_committing_the_departure() {
    let server = Server::start(&[]);
    let dirs = dirs3();
    let ann_faults = Faults::default();
    let ben_faults = Faults::default();
    let ann = register(&server, dirs[0].path(), "ann", with(&ann_faults)).await;
    let ben = register(&server, dirs[1].path(), "ben", with(&ben_faults)).await;
    let cat = register(&server, dirs[2].path(), "cat", Default::default()).await;
    ann.create_group(&team(), &[user("ben"), user("cat")])
        .await
        .unwrap();
    ben.sync().await.unwrap();
    cat.sync().await.unwrap();

    // ben's leave: the answer to its removal proposal is lost; the engine sends it
    // again (same message id) once reconnected.
    ben_faults.drop_next("sent", Action::Cut);
    assert!(ben.leave(&team()).await.is_err());
    sync_eventually(&ben).await;
    assert!(
        !ben.chats().await.unwrap().iter().any(|c| c.name == "#team"),
        "a left group leaves chats"
    );
    // ann commits the departure before her next message; that answer is lost too.
    sync_eventually(&ann).await;
    ann_faults.drop_next("commit_accepted", Action::Cut);
    assert!(ann.send(&to("#team"), "lost").await.is_err());
    cat.sync().await.unwrap();
    all_talk(&[&ann, &cat], "after leave").await;
    let members = usernames(&cat).await;
    assert_eq!(members, ["ann", "cat"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_send_answer_delivers_once() {
    let server = Server::start(&[]);
    let dirs = dirs2();
    let faults = Faults::default();
    let (ann, ben) = pair(&server, &dirs, &faults, &Faults::default()).await;
    ann.send(&to("ben"), "first").await.unwrap();

    faults.drop_next("sent", Action::Cut);
    assert!(ann.send(&to("ben"), "second").await.is_err());
    // The outbox is flushed on reconnect with the same message id: stored once.
    sync_eventually(&ann).await;
    send_eventually(&ann, "ben", "third").await;
    ben.sync().await.unwrap();
    assert_eq!(texts(&ben, "ann").await, ["first", "second", "third"]);
    assert_clean(&[(&ben, "ann")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_killed_while_sending_delivers_once_after_restart() {
    let server = Server::start(&[]);
    let dirs = dirs2();
    let faults = Faults::default();
    let (ann, ben) = pair(&server, &dirs, &faults, &Faults::default()).await;
    ann.send(&to("ben"), "first").await.unwrap();

    killed_during(ann, &faults, "sent", |c| async move {
        assert!(c.send(&to("ben"), "in flight").await.is_err());
    })
    .await;
    let ann = reopen(dirs[0].path()).await;
    sync_eventually(&ann).await;
    ben.sync().await.unwrap();
    assert_eq!(texts(&ben, "ann").await, ["first", "in flight"]);
    ben.send(&to("ann"), "got both").await.unwrap();
    ann.sync().await.unwrap();
    assert_eq!(texts(&ann, "ben").await, ["first", "in flight", "got both"]);
    assert_clean(&[(&ann, "ben"), (&ben, "ann")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_acks_and_a_client_killed_while_acking_process_nothing_twice() {
    let server = Server::start(&[]);
    let dirs = dirs2();
    let faults = Faults::default();
    let (ann, ben) = pair(&server, &dirs, &Faults::default(), &faults).await;
    ann.send(&to("ben"), "a1").await.unwrap();
    ann.send(&to("ben"), "a2").await.unwrap();

    faults.drop_next("acked", Action::Cut);
    // The cut ack is this sync's, or the background sync's that a wake-up started
    // first: either way the entries were processed and their ack lost.
    let _ = ben.sync().await;
    sync_eventually(&ben).await;
    assert!(
        faults.fired().iter().any(|f| f.contains("acked")),
        "an ack was lost: {:?}",
        faults.fired()
    );
    assert_eq!(texts(&ben, "ann").await, ["a1", "a2"]);

    ann.send(&to("ben"), "a3").await.unwrap();
    killed_during(ben, &faults, "acked", |c| async move {
        assert!(c.sync().await.is_err());
    })
    .await;
    let ben = reopen(dirs[1].path()).await;
    sync_eventually(&ben).await;
    assert_eq!(texts(&ben, "ann").await, ["a1", "a2", "a3"]);
    ben.send(&to("ann"), "b1").await.unwrap();
    ann.sync().await.unwrap();
    assert_eq!(texts(&ann, "ben").await, ["a1", "a2", "a3", "b1"]);
    assert_clean(&[(&ann, "ben"), (&ben, "ann")]).await;
}

/// Two processes on one home: `hush recv --follow` keeps running while `hush send`
/// runs beside it (no network request is ever awaited inside a local transaction, so
/// neither holds the database's write lock for long).
#[test]
fn recv_follow_and_send_share_one_home() {
    let server = Server::start(&[]);
    let ann = hush_testing::Client::new();
    let ben = hush_testing::Client::new();
    hush_testing::ok(&ann.register(&server, "ann", "correct horse battery", &[]));
    hush_testing::ok(&ben.register(&server, "ben", "correct horse battery", &[]));
    ann.send("ben", "hello ben");

    let (mut follow, rx) = ben.follow();
    let mut seen = Vec::new();
    let mut expect = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !seen.iter().any(|t: &String| t == want) {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).expect("printed live");
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if let Some(t) = v["text"].as_str() {
                seen.push(t.to_owned());
            }
        }
    };
    expect("hello ben");
    for i in 0..5 {
        // Sends from ben's home while its recv --follow runs.
        ben.send("ann", &format!("reply {i}"));
        ann.send("ben", &format!("more {i}"));
        expect(&format!("more {i}"));
    }
    follow.kill().unwrap();
    follow.wait().unwrap();
    let got = hush_testing::texts(&ann.recv(5));
    for i in 0..5 {
        assert!(got.contains(&format!("reply {i}")), "{got:?}");
    }
    let history = hush_testing::texts(&ben.history("ann", 100));
    let count = |t: &str| history.iter().filter(|h| *h == t).count();
    assert_eq!(count("hello ben"), 1, "{history:?}");
    for i in 0..5 {
        assert_eq!(count(&format!("more {i}")), 1, "{history:?}");
        assert_eq!(count(&format!("reply {i}")), 1, "{history:?}");
    }
}

/// A local failure while processing an entry (here: the home's database refuses the
/// write) is this device's fault: it is reported as a local error, never as the
/// peer's `message_rejected`, and the entry stays on the server until it is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_failure_is_not_the_peers_fault_and_loses_nothing() {
    let server = Server::start(&[]);
    let dirs = dirs2();
    let (ann, ben) = pair(&server, &dirs, &Faults::default(), &Faults::default()).await;
    ann.send(&to("ben"), "m1").await.unwrap();
    ben.sync().await.unwrap();

    let home_db = rusqlite::Connection::open(dirs[1].path().join("hush.db")).unwrap();
    home_db.busy_timeout(Duration::from_secs(5)).unwrap();
    home_db
        .execute_batch(
            "CREATE TRIGGER disk_on_fire BEFORE INSERT ON history
             WHEN NEW.kind = 'message' BEGIN SELECT RAISE(ABORT, 'disk on fire'); END;",
        )
        .unwrap();
    let mut events = ben.events();
    ann.send(&to("ben"), "m2").await.unwrap();
    let failed = ben.sync().await;
    assert!(
        failed
            .as_ref()
            .is_err_and(|e| e.to_string().contains("disk on fire")),
        "{failed:?}"
    );
    let mut local_errors = 0;
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(500), events.next()).await {
        match e {
            hush_client::events::Event::LocalError { message } => {
                assert!(message.contains("disk on fire"), "{message}");
                local_errors += 1;
            }
            hush_client::events::Event::Security { .. } => panic!("blamed on the peer: {e:?}"),
            _ => {}
        }
    }
    assert!(local_errors > 0, "the engine reported its own failure");
    home_db.execute_batch("DROP TRIGGER disk_on_fire;").unwrap();
    drop(home_db);

    // Not acked: the next sync stores it, once, with nothing blamed on ann.
    sync_eventually(&ben).await;
    assert_eq!(texts(&ben, "ann").await, ["m1", "m2"]);
    assert_clean(&[(&ben, "ann")]).await;
    // And the conversation goes on both ways.
    ben.send(&to("ann"), "b1").await.unwrap();
    ann.sync().await.unwrap();
    assert_eq!(texts(&ann, "ben").await, ["m1", "m2", "b1"]);
}
