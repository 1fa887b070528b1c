//! Every limit of `[limits]` exceeded against a real hushd (P106–P108, P411, P450–P453):
//! each is refused with a clear code, nothing acknowledged is lost, and the user can
//! go on once the cause is gone.
mod inproc;
mod raw;

use std::time::Duration;

use hush_client::events::{Event, MessageState};
use hush_client::hush_proto::ErrorCode;
use hush_client::hush_proto::content::GroupName;
use hush_client::{Client, ClientOptions};
use hush_proto::pb::{self, client_frame::Body, server_frame};
use hush_testing::Server;
use inproc::{login, register, texts, to, user};
use raw::{authenticate, connect, read_frame, request, say_hello};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn dirs<const N: usize>() -> [tempfile::TempDir; N] {
    std::array::from_fn(|_| tempfile::tempdir().unwrap())
}

fn team() -> GroupName {
    GroupName::parse("#team").unwrap()
}

fn code(r: &Result<impl std::fmt::Debug, hush_client::ClientError>) -> Option<ErrorCode> {
    r.as_ref().err().and_then(|e| e.server_code())
}

/// The state of the newest outgoing message of ours with `text` in `conversation`.
async fn state_of(client: &Client, conversation: &str, text: &str) -> MessageState {
    client
        .history(conversation, 1000)
        .await
        .unwrap()
        .into_iter()
        .rev()
        .find_map(|e| match e {
            Event::Message {
                text: t,
                outgoing: true,
                state,
                ..
            } if t == text => Some(state),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no outgoing {text:?}"))
}

/// Sends `text` (numbered if `numbered`) to `peer` until the server refuses one, at
/// most `max` times; the texts it accepted and the refusal.
async fn send_until_refused(
    client: &Client,
    peer: &str,
    text: &str,
    numbered: bool,
    max: usize,
) -> (Vec<String>, hush_client::ClientError) {
    let mut accepted = Vec::new();
    loop {
        assert!(
            accepted.len() < max,
            "no limit was reached in {max} messages"
        );
        let t = if numbered {
            format!("{text}{}", accepted.len())
        } else {
            text.to_owned()
        };
        match client.send(&to(peer), &t).await {
            Ok(_) => accepted.push(t),
            Err(e) => return (accepted, e),
        }
    }
}

/// ann and ben, ben having read ann's first message and gone offline.
async fn ann_and_offline_ben(server: &Server, d: &[tempfile::TempDir; 2]) -> Client {
    let ann = register(server, d[0].path(), "ann", Default::default()).await;
    let ben = register(server, d[1].path(), "ben", Default::default()).await;
    ann.send(&to("ben"), "hi").await.unwrap();
    ben.sync().await.unwrap();
    ben.close().await;
    ann
}

async fn reopen(dir: &std::path::Path) -> Client {
    let client = Client::open(dir, ClientOptions::default()).await.unwrap();
    client.sync().await.unwrap();
    client
}

/// Waits (bounded) for the first `Missed` event of a freshly opened client.
async fn missed(client: &Client) -> u32 {
    let mut events = client.events();
    let wait = async {
        loop {
            match events.next().await {
                Some(Event::Missed { count }) => return count,
                Some(_) => {}
                None => panic!("engine stopped"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .expect("told about the missed messages")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p450_a_full_mailbox_refuses_a_direct_message_clearly_then_drains() {
    let server = Server::with_limits("mailbox_max_entries = 4");
    let d = dirs::<2>();
    let ann = ann_and_offline_ben(&server, &d).await;
    let (sent, e) = send_until_refused(&ann, "ben", "m", true, 10).await;
    assert_eq!(e.server_code(), Some(ErrorCode::MailboxFull), "{e}");
    assert!(e.to_string().contains("mailbox is full"), "{e}");
    let refused = format!("m{}", sent.len());
    assert_eq!(state_of(&ann, "ben", &refused).await, MessageState::Failed);
    assert!(!sent.is_empty());
    assert!(
        server.wait_for_log("limit reached"),
        "the refusal is logged with its reason"
    );

    let ben = reopen(d[1].path()).await;
    let mut expected = vec!["hi".to_string()];
    expected.extend(sent);
    assert_eq!(
        texts(&ben, "ann").await,
        expected,
        "every accepted message, in order"
    );
    ann.send(&to("ben"), "after").await.unwrap();
    ben.sync().await.unwrap();
    assert_eq!(texts(&ben, "ann").await.last().unwrap(), "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p450_in_a_group_a_full_device_is_skipped_the_sender_told_and_the_device_too() {
    let server = Server::with_limits("mailbox_max_entries = 3");
    let d = dirs::<3>();
    let ann = register(&server, d[0].path(), "ann", Default::default()).await;
    let ben = register(&server, d[1].path(), "ben", Default::default()).await;
    let cat = register(&server, d[2].path(), "cat", Default::default()).await;
    ann.create_group(&team(), &[user("ben"), user("cat")])
        .await
        .unwrap();
    ben.sync().await.unwrap();
    cat.sync().await.unwrap();
    cat.close().await;
    let mut partial = Vec::new();
    for i in 0..6 {
        let text = format!("t{i}");
        ann.send(&to("#team"), &text).await.unwrap();
        ben.sync().await.unwrap();
        if state_of(&ann, "#team", &text).await == MessageState::Partial {
            partial.push(text);
        }
    }
    assert!(partial.len() >= 3, "cat's mailbox filled: {partial:?}");
    assert_eq!(texts(&ben, "#team").await.len(), 6, "ben got everything");

    let cat = Client::open(d[2].path(), ClientOptions::default())
        .await
        .unwrap();
    assert_eq!(missed(&cat).await as usize, partial.len());
    cat.sync().await.unwrap();
    let got = texts(&cat, "#team").await;
    assert_eq!(got.len(), 6 - partial.len(), "what fitted arrived: {got:?}");
    assert!(got.iter().all(|t| !partial.contains(t)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p452_account_storage_is_bounded_and_freed_as_recipients_read() {
    let server = Server::with_limits("account_storage_bytes = 60000");
    let d = dirs::<2>();
    let ann = ann_and_offline_ben(&server, &d).await;
    let big = "x".repeat(10_000);
    let (accepted, e) = send_until_refused(&ann, "ben", &big, false, 20).await;
    assert_eq!(e.server_code(), Some(ErrorCode::QuotaExceeded), "{e}");
    assert!(e.to_string().contains("stored bytes"), "{e}");
    let ben = reopen(d[1].path()).await;
    assert_eq!(texts(&ben, "ann").await.len(), 1 + accepted.len());
    ann.send(&to("ben"), &big)
        .await
        .expect("read messages free the sender's storage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p452_devices_per_account() {
    let server = Server::with_limits("devices_per_account = 2");
    let d = dirs::<3>();
    let _first = register(&server, d[0].path(), "ann", Default::default()).await;
    let _second = login(&server, d[1].path(), "ann", Default::default()).await;
    let third = hush_client::Client::enrol(
        d[2].path(),
        &server.addr,
        hush_client::trust::FirstUse::Expect(
            hush_client::hush_proto::fingerprint::Fingerprint::parse(&server.fingerprint).unwrap(),
        ),
        hush_client::Enrolment::Login {
            username: user("ann"),
            password: zeroize::Zeroizing::new(inproc::PASSWORD.to_vec()),
            device_name: None,
            second_factor: None,
        },
        Default::default(),
    )
    .await;
    assert_eq!(code(&third), Some(ErrorCode::QuotaExceeded));
    let message = third.err().unwrap().to_string();
    assert!(message.contains("revoke"), "says what to do: {message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p452_group_size_and_groups_per_hour() {
    let server = Server::with_limits("group_max_devices = 2\ngroups_per_account_per_hour = 2");
    let d = dirs::<3>();
    let ann = register(&server, d[0].path(), "ann", Default::default()).await;
    let _ben = register(&server, d[1].path(), "ben", Default::default()).await;
    let _cat = register(&server, d[2].path(), "cat", Default::default()).await;
    let crowded = ann.create_group(&team(), &[user("ben"), user("cat")]).await;
    assert_eq!(
        code(&crowded),
        Some(ErrorCode::QuotaExceeded),
        "{crowded:?}"
    );
    ann.create_group(&team(), &[user("ben")]).await.unwrap();
    let over = ann.add_members(&team(), &[user("cat")]).await;
    assert_eq!(code(&over), Some(ErrorCode::QuotaExceeded), "{over:?}");
    // The 1:1 with ben was not created: #team was the first group, this the second.
    ann.send(&to("ben"), "hi").await.unwrap();
    let third = ann.send(&to("cat"), "hi").await;
    assert_eq!(code(&third), Some(ErrorCode::RateLimited), "{third:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p411_one_claim_naming_a_user_many_times_takes_one_package_each() {
    let server = Server::start(&[]);
    let d = dirs::<2>();
    let _ann = register(&server, d[0].path(), "ann", Default::default()).await;
    let _ben = register(&server, d[1].path(), "ben", Default::default()).await;
    let mut s = connect(&server).await;
    authenticate(&mut s, d[0].path()).await;
    let claim = Body::ClaimKeyPackages(pb::ClaimKeyPackages {
        usernames: vec!["ben".into(); 60],
    });
    s.write_all(&request(3, claim)).await.unwrap();
    let f = read_frame(&mut s).await.unwrap();
    let Some(server_frame::Body::KeyPackages(kp)) = f.body else {
        panic!("{f:?}")
    };
    assert_eq!(kp.packages.len(), 1, "ben has one device: one package");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p107_requests_over_the_connection_rate_are_refused_then_allowed_again() {
    let server = Server::with_limits("requests_per_second = 1\nrequest_burst = 3");
    let mut s = connect(&server).await;
    say_hello(&mut s).await;
    let mut batch = Vec::new();
    for id in 10..20 {
        batch.extend_from_slice(&request(
            id,
            Body::Ping(pb::Ping {
                payload: Default::default(),
            }),
        ));
    }
    s.write_all(&batch).await.unwrap();
    let mut limited = 0;
    for _ in 10..20 {
        let f = read_frame(&mut s).await.unwrap();
        if let Some(server_frame::Body::Error(e)) = f.body {
            assert_eq!(e.code(), ErrorCode::RateLimited);
            assert!(!e.fatal && e.retry_after_secs >= 1);
            limited += 1;
        }
    }
    // The hello took a token: at most 2 of the burst and one per second are left.
    assert!(limited >= 5, "{limited} of 10 refused");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    raw::ping(&mut s, 30).await;
}

/// Resumes `dir`'s session on a new connection, retrying while the account is at its
/// connection cap (a just-closed connection is released by the server a moment later).
async fn resume_when_free(server: &Server, dir: &std::path::Path) -> raw::Stream {
    for _ in 0..100 {
        let mut s = connect(server).await;
        say_hello(&mut s).await;
        let f = raw::resume(&mut s, dir).await;
        if matches!(f.body, Some(server_frame::Body::Authenticated(_))) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the account's connections were never released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p106_connections_per_account() {
    let server = Server::with_limits("connections_per_account = 1");
    let d = dirs::<1>();
    let ann = register(&server, d[0].path(), "ann", Default::default()).await;
    ann.close().await;
    let first = resume_when_free(&server, d[0].path()).await;
    let mut second = connect(&server).await;
    say_hello(&mut second).await;
    let f = raw::resume(&mut second, d[0].path()).await;
    let Some(server_frame::Body::Error(e)) = f.body else {
        panic!("{f:?}")
    };
    assert_eq!(e.code(), ErrorCode::RateLimited, "{}", e.message);
    assert!(e.message.contains("connections"), "{}", e.message);
    assert!(!e.fatal, "the connection may try again");
    drop(first);
    drop(second);
    // Once the first is gone, the account may connect again.
    let _again = resume_when_free(&server, d[0].path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p106_connections_per_address() {
    let server = Server::with_limits("connections_per_address = 3");
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut s = connect(&server).await;
        say_hello(&mut s).await;
        open.push(s);
    }
    // A fourth from this address is dropped before TLS.
    let mut tcp = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "dropped without a handshake: {read:?}"
    );
    assert!(
        server.wait_for_log("too many from this address"),
        "logged with its reason"
    );
    for (i, s) in open.iter_mut().enumerate() {
        raw::ping(s, 50 + i as u64).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p108_idle_and_slow_frames_are_closed() {
    let server = Server::with_limits("idle_timeout_secs = 1\nframe_read_timeout_secs = 1");
    let d = dirs::<1>();
    let ann = register(&server, d[0].path(), "ann", Default::default()).await;
    ann.close().await;
    let mut idle = connect(&server).await;
    authenticate(&mut idle, d[0].path()).await;
    let message = raw::expect_fatal(&mut idle, ErrorCode::Timeout).await;
    assert!(message.contains("ping"), "{message}");

    let mut slow = connect(&server).await;
    say_hello(&mut slow).await;
    // Announces 1000 bytes, sends 10, and stalls.
    slow.write_all(&1000u32.to_be_bytes()).await.unwrap();
    slow.write_all(&[0u8; 10]).await.unwrap();
    slow.flush().await.unwrap();
    let message = raw::expect_fatal(&mut slow, ErrorCode::Timeout).await;
    assert!(message.contains("frame"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p453_undelivered_messages_expire_and_the_device_is_told() {
    let server = Server::with_limits("retention_secs = 3\nprune_interval_secs = 1");
    let d = dirs::<2>();
    let ann = register(&server, d[0].path(), "ann", Default::default()).await;
    let ben = register(&server, d[1].path(), "ben", Default::default()).await;
    ann.send(&to("ben"), "kept").await.unwrap();
    ben.sync().await.unwrap();
    ben.close().await;
    ann.send(&to("ben"), "expires").await.unwrap();
    // Wait for a retention pass to have run past the message's age.
    assert!(server.wait_for_log("expired=1"), "no retention pass");
    let ben = Client::open(d[1].path(), ClientOptions::default())
        .await
        .unwrap();
    assert_eq!(missed(&ben).await, 1);
    ben.sync().await.unwrap();
    assert_eq!(texts(&ben, "ann").await, ["kept"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p451_a_full_database_refuses_sends_clearly_and_still_drains() {
    // Room for the accounts and a few dozen 60 KB messages.
    let server = Server::with_limits("database_max_bytes = 1500000");
    let d = dirs::<2>();
    let ann = ann_and_offline_ben(&server, &d).await;
    let (sent, e) = send_until_refused(&ann, "ben", &"y".repeat(60_000), false, 100).await;
    let accepted = 1 + sent.len();
    assert_eq!(e.server_code(), Some(ErrorCode::StorageFull), "{e}");
    assert!(e.to_string().contains("storage is full"), "{e}");
    let ben = reopen(d[1].path()).await;
    assert_eq!(
        texts(&ben, "ann").await.len(),
        accepted,
        "every accepted message arrived; acks worked on a full disk"
    );
    // The refused message waited in ann's outbox and goes out once there is room.
    ann.send(&to("ben"), "room again").await.unwrap();
    ben.sync().await.unwrap();
    let got = texts(&ben, "ann").await;
    assert_eq!(got.len(), accepted + 2, "the waiting one and the new one");
    assert_eq!(got.last().unwrap(), "room again");
}

/// A small tmpfs mounted for one test; unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts `size` (like `6m`) at `dir`; `None` where mounting is not allowed.
    fn mount(dir: &std::path::Path, size: &str) -> Option<Tmpfs> {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p451_a_really_full_disk_refuses_sends_and_still_drains() {
    let data = tempfile::tempdir().unwrap();
    let Some(_disk) = Tmpfs::mount(data.path(), "16m") else {
        eprintln!(
            "skipped: mounting a small tmpfs needs root (the database cap test covers the rest)"
        );
        return;
    };
    let server = Server::with_limits_in(data, "storage_reserve_bytes = 2000000");
    let d = dirs::<2>();
    let ann = ann_and_offline_ben(&server, &d).await;
    let (sent, e) = send_until_refused(&ann, "ben", &"z".repeat(60_000), false, 400).await;
    assert_eq!(e.server_code(), Some(ErrorCode::StorageFull), "{e}");
    assert!(
        server.wait_for_log("released the reserve"),
        "the reserve was given back"
    );
    let refused_again = ann.send(&to("ben"), "still full?").await;
    assert_eq!(code(&refused_again), Some(ErrorCode::StorageFull));
    let ben = reopen(d[1].path()).await;
    assert_eq!(
        texts(&ben, "ann").await.len(),
        1 + sent.len(),
        "everything acknowledged arrived: acks work on a full disk"
    );
}
