//! Account keys end to end with in-process engines (P542, P546): a new device gets the
//! account key only through the password, and a revoked device's open session ends at
//! once.
mod inproc;

use std::time::Duration;

use hush_client::events::ConnectionState;
use hush_client::{Client, ClientError, Enrolment};
use hush_testing::Server;
use inproc::{PASSWORD, login, register, texts, to, user};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_is_cut_off_at_once() {
    let server = Server::start(&[]);
    let dirs: [tempfile::TempDir; 3] = std::array::from_fn(|_| tempfile::tempdir().unwrap());
    let ann = register(&server, dirs[0].path(), "ann", Default::default()).await;
    let ben = register(&server, dirs[1].path(), "ben", Default::default()).await;
    ben.send(&to("ann"), "hello").await.unwrap();
    ann.sync().await.unwrap();
    let ann2 = login(&server, dirs[2].path(), "ann", Default::default()).await;
    ann.sync().await.unwrap();
    let second = ann2.stored_account().await.unwrap().device_id;
    assert!(ann2.state() == ConnectionState::Online);

    ann.revoke_device(second).await.unwrap();
    let state = tokio::time::timeout(
        Duration::from_secs(10),
        ann2.wait_for_state(|s| matches!(s, ConnectionState::Failed { .. })),
    )
    .await
    .expect("the open session ends at once");
    assert!(matches!(state, ConnectionState::Failed { .. }), "{state:?}");
    assert!(ann2.whoami().await.is_err());
    let devices = ann.devices().await.unwrap();
    assert_eq!(devices.len(), 1);
    assert!(devices[0].current);
    // The conversation goes on without the revoked device.
    ben.send(&to("ann"), "still here").await.unwrap();
    ann.sync().await.unwrap();
    assert_eq!(texts(&ann, "ben").await, ["hello", "still here"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_sealed_account_key_does_not_open_on_login() {
    let server = Server::start(&[]);
    let dirs: [tempfile::TempDir; 2] = std::array::from_fn(|_| tempfile::tempdir().unwrap());
    let ann = register(&server, dirs[0].path(), "ann", Default::default()).await;
    ann.close().await;
    {
        let db = rusqlite::Connection::open(server.data_dir().join("hushd.db")).unwrap();
        db.busy_timeout(Duration::from_secs(5)).unwrap();
        let sealed: Vec<u8> = db
            .query_row(
                "SELECT sealed_account_key FROM users WHERE username = 'ann'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(sealed.len() > 32, "sealed, not the bare key");
        let mut flipped = sealed.clone();
        flipped[20] ^= 1;
        db.execute(
            "UPDATE users SET sealed_account_key = ?1 WHERE username = 'ann'",
            [flipped],
        )
        .unwrap();
    }
    let fp = hush_client::hush_proto::fingerprint::Fingerprint::parse(&server.fingerprint).unwrap();
    let failed = Client::enrol(
        dirs[1].path(),
        &server.addr,
        hush_client::trust::FirstUse::Expect(fp),
        Enrolment::Login {
            username: user("ann"),
            password: zeroize::Zeroizing::new(PASSWORD.to_vec()),
            device_name: None,
            second_factor: None,
        },
        Default::default(),
    )
    .await;
    match failed {
        Err(ClientError::Crypto(m)) => assert!(m.contains("does not open"), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// P543: a 1:1 conversation holds only its two accounts' devices; a (modified) client
/// that adds a third account's device has its commit refused by the peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_to_one_commit_adding_a_third_account_is_refused() {
    let server = Server::start(&[]);
    let dirs: [tempfile::TempDir; 3] = std::array::from_fn(|_| tempfile::tempdir().unwrap());
    let ann = register(&server, dirs[0].path(), "ann", Default::default()).await;
    let ben = register(&server, dirs[1].path(), "ben", Default::default()).await;
    let _mal = register(&server, dirs[2].path(), "mal", Default::default()).await;
    ann.send(&to("ben"), "just us").await.unwrap();
    ben.sync().await.unwrap();
    ann.add_to_direct_unchecked(&user("ben"), &user("mal"))
        .await
        .unwrap();
    ben.sync().await.unwrap();
    let rejected: Vec<String> = ben
        .history("ann", 100)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e {
            hush_client::events::Event::Security {
                kind: hush_client::events::SecurityKind::CommitRejected,
                reason,
                ..
            } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(rejected[0].contains("neither account"), "{rejected:?}");
}
