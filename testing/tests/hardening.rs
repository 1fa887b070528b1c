//! The server under ordinary and hostile load (P440): a mailbox of any size drains,
//! whoever filled it.
mod inproc;

use hush_client::events::{Event, SecurityKind};
use hush_client::hush_proto::pb::{self, client_frame::Body};
use hush_client::hush_proto::response::Response;
use hush_client::{Client, ClientOptions};
use hush_testing::Server;
use inproc::{dirs, raw, register, texts, to};

async fn rejected(client: &Client, conversation: &str) -> usize {
    client
        .history(conversation, 1000)
        .await
        .unwrap()
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::Security {
                    kind: SecurityKind::MessageRejected,
                    ..
                }
            )
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seventy_five_ordinary_60_kb_messages_to_an_offline_user_all_arrive() {
    let server = Server::start(&[]);
    let d = dirs::<2>();
    let ann = register(&server, d[0].path(), "ann", Default::default()).await;
    let ben = register(&server, d[1].path(), "ben", Default::default()).await;
    ann.send(&to("ben"), "hello").await.unwrap();
    ben.close().await;
    let big = "x".repeat(60_000);
    for i in 0..75 {
        ann.send(&to("ben"), &format!("{i} {big}")).await.unwrap();
    }
    // Over 4.5 MB waits for ben: it drains a page at a time.
    let ben = Client::open(d[1].path(), ClientOptions::default())
        .await
        .unwrap();
    ben.sync().await.unwrap();
    let got = texts(&ben, "ann").await;
    assert_eq!(got.len(), 76, "every message, once");
    assert!(
        got[1..]
            .iter()
            .enumerate()
            .all(|(i, t)| t.starts_with(&format!("{i} ")))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_partner_sending_huge_junk_cannot_lock_the_mailbox() {
    let server = Server::start(&[]);
    let d = dirs::<2>();
    let ann = register(&server, d[0].path(), "ann", Default::default()).await;
    let ben = register(&server, d[1].path(), "ben", Default::default()).await;
    ann.send(&to("ben"), "hello").await.unwrap();
    ben.close().await;
    // A modified client of ann's sends five 1 MiB ciphertexts (the largest message this
    // server takes) into their conversation: more than one answer can carry.
    let conn = raw(&server, d[0].path()).await;
    let Response::DirectGroup(Some((group, epoch))) = conn
        .request(Body::FindDirect(pb::FindDirect { peer: "ben".into() }))
        .await
        .unwrap()
    else {
        panic!("no conversation")
    };
    for i in 0..5u8 {
        let sent = conn
            .request(Body::Send(pb::Send {
                group_id: group.as_bytes().to_vec().into(),
                epoch,
                ciphertext: vec![i; 1024 * 1024].into(),
                client_message_id: vec![i; 16].into(),
            }))
            .await;
        assert!(matches!(sent, Ok(Response::Sent { .. })), "{sent:?}");
    }
    // One past the message limit is refused up front.
    let too_big = conn
        .request(Body::Send(pb::Send {
            group_id: group.as_bytes().to_vec().into(),
            epoch,
            ciphertext: vec![9; 1024 * 1024 + 1].into(),
            client_message_id: vec![9; 16].into(),
        }))
        .await;
    assert!(
        too_big.as_ref().is_err_and(
            |e| e.server_code() == Some(hush_client::hush_proto::ErrorCode::InvalidArgument)
        ),
        "{too_big:?}"
    );
    conn.close().await;
    ann.send(&to("ben"), "after the junk").await.unwrap();

    let ben = Client::open(d[1].path(), ClientOptions::default())
        .await
        .unwrap();
    ben.sync().await.unwrap();
    assert_eq!(texts(&ben, "ann").await, ["hello", "after the junk"]);
    assert_eq!(rejected(&ben, "ann").await, 5, "the junk is reported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_creating_groups_with_junk_welcomes_cannot_lock_the_mailbox() {
    let server = Server::start(&[]);
    let d = dirs::<3>();
    let ann = register(&server, d[0].path(), "ann", Default::default()).await;
    let ben = register(&server, d[1].path(), "ben", Default::default()).await;
    let mallory = register(&server, d[2].path(), "mallory", Default::default()).await;
    let ben_device = ben.stored_account().await.unwrap().device_id;
    let mallory_device = mallory.stored_account().await.unwrap().device_id;
    ben.close().await;
    mallory.close().await;
    let conn = raw(&server, d[2].path()).await;
    let junk = |i: u8, len: usize| {
        Body::CreateGroup(pb::CreateGroup {
            channel: None,
            group_id: vec![i + 1; 16].into(),
            direct_peer: String::new(),
            name: String::new(),
            welcome: vec![i; len].into(),
            members: vec![
                mallory_device.as_bytes().to_vec().into(),
                ben_device.as_bytes().to_vec().into(),
            ],
            client_key: Default::default(),
            group_info: Default::default(),
        })
    };
    // An invitation from a stranger is held, and capped in size (P460).
    let huge = conn.request(junk(9, 3 * 1024 * 1024)).await;
    assert!(
        huge.as_ref().is_err_and(
            |e| e.server_code() == Some(hush_client::hush_proto::ErrorCode::QuotaExceeded)
        ),
        "{huge:?}"
    );
    for i in 0..2u8 {
        let created = conn.request(junk(i, 400 * 1024)).await;
        assert!(
            matches!(created, Ok(Response::GroupCreated { .. })),
            "{created:?}"
        );
    }
    conn.close().await;
    ann.send(&to("ben"), "real mail").await.unwrap();

    let ben = Client::open(d[1].path(), ClientOptions::default())
        .await
        .unwrap();
    ben.sync().await.unwrap();
    assert_eq!(texts(&ben, "ann").await, ["real mail"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p110_ping_keeps_the_session() {
    let server = Server::start(&[]);
    let d = dirs::<1>();
    register(&server, d[0].path(), "ann", Default::default())
        .await
        .close()
        .await;
    let conn = raw(&server, d[0].path()).await;
    for _ in 0..3 {
        let pong = conn
            .request(Body::Ping(pb::Ping {
                payload: b"still there?".to_vec().into(),
            }))
            .await
            .unwrap();
        assert!(matches!(pong, Response::Pong(_)));
    }
    // Still authenticated: an authenticated request works.
    let me = conn.request(Body::Whoami(pb::WhoAmI {})).await.unwrap();
    assert!(matches!(me, Response::Account(_)), "{me:?}");
}

#[cfg(unix)]
#[test]
fn the_data_dir_and_database_are_owner_only_even_if_the_dir_existed() {
    use std::os::unix::fs::PermissionsExt;
    let data = tempfile::tempdir().unwrap();
    let srv = data.path().join("srv");
    std::fs::create_dir(&srv).unwrap();
    std::fs::set_permissions(&srv, std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = Server::start_in(data, "127.0.0.1:0", &[]);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&server.data_dir()), 0o700);
    assert_eq!(mode(&server.data_dir().join("hushd.db")), 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_or_deleting_a_user_ends_its_open_sessions_at_once() {
    use hush_client::events::ConnectionState;
    let server = Server::start(&[]);
    let d = dirs::<2>();
    let ann = register(&server, d[0].path(), "ann", Default::default()).await;
    let ben = register(&server, d[1].path(), "ben", Default::default()).await;
    assert_eq!(ann.state(), ConnectionState::Online);
    let failed = |c: Client| async move {
        tokio::time::timeout(
            std::time::Duration::from_secs(15),
            c.wait_for_state(|s| matches!(s, ConnectionState::Failed { .. })),
        )
        .await
        .expect("the open session ends")
    };
    hush_testing::ok(&server.admin(&["user", "disable", "ann"]));
    let state = failed(ann.clone()).await;
    assert!(format!("{state:?}").contains("disabled"), "{state:?}");
    assert!(ann.whoami().await.is_err());
    hush_testing::ok(&server.admin(&["user", "delete", "ben"]));
    failed(ben.clone()).await;
    assert!(ben.whoami().await.is_err());
}
