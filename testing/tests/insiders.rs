//! Issue 29: a member of a group attacks it from the inside. A junk commit, or a valid
//! commit whose routing header lies, must not move the group's epoch or cut anyone
//! off (P438); one conversation that can no longer send never blocks the others
//! (P457). Real `hushd`, in-process engines, and raw connections for the attacker.
mod inproc;

use hush_client::connection::Connection;
use hush_client::events::{Event, MessageState, SecurityKind};
use hush_client::faults::Faults;
use hush_client::hush_proto::ErrorCode;
use hush_client::hush_proto::content::GroupName;
use hush_client::hush_proto::pb::{self, client_frame::Body};
use hush_client::hush_proto::response::Response;
use hush_client::{Client, ClientOptions};
use hush_testing::Server;
use inproc::{dirs, raw, register, texts, to, user};

async fn device(client: &Client) -> Vec<u8> {
    client
        .stored_account()
        .await
        .unwrap()
        .device_id
        .as_bytes()
        .to_vec()
}

/// The server's group id and epoch of `#name`.
async fn group_of(conn: &Connection, name: &str) -> (Vec<u8>, u64) {
    let found = conn
        .request(Body::FindGroup(pb::FindGroup { name: name.into() }))
        .await
        .unwrap();
    let Response::DirectGroup(g) = found else {
        panic!("{found:?}")
    };
    let g = g.expect("the group exists");
    (g.0.as_bytes().to_vec(), g.1)
}

fn code(r: &Result<Response, hush_client::ClientError>) -> Option<ErrorCode> {
    r.as_ref().err().and_then(|e| e.server_code())
}

/// ann (admin), ben and cal in #team; each has read the Welcome.
async fn team(server: &Server, d: &[tempfile::TempDir], ann_options: ClientOptions) -> [Client; 3] {
    let ann = register(server, d[0].path(), "ann", ann_options).await;
    let ben = register(server, d[1].path(), "ben", Default::default()).await;
    let cal = register(server, d[2].path(), "cal", Default::default()).await;
    ann.create_group(
        &GroupName::parse("team").unwrap(),
        &[user("ben"), user("cal")],
    )
    .await
    .unwrap();
    ben.sync().await.unwrap();
    cal.sync().await.unwrap();
    [ann, ben, cal]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_junk_commit_moves_nothing_and_everyone_keeps_chatting() {
    let server = Server::start(&[]);
    let d = dirs::<3>();
    let [ann, ben, cal] = team(&server, &d, Default::default()).await;
    let (ann_dev, ben_dev) = (device(&ann).await, device(&ben).await);
    cal.close().await;

    // cal, a plain member, sends commits at the current epoch that remove ann's and
    // ben's devices: junk bytes, and an application-sized blob.
    let conn = raw(&server, d[2].path()).await;
    let (group, epoch) = group_of(&conn, "team").await;
    for (i, junk) in [
        vec![0u8; 64],
        vec![7u8; 4096],
        b"\x00\x01\x00\x01junk".to_vec(),
    ]
    .into_iter()
    .enumerate()
    {
        let attempt = conn
            .request(Body::Commit(pb::Commit {
                group_id: group.clone().into(),
                epoch,
                commit: junk.into(),
                removed: vec![ann_dev.clone().into(), ben_dev.clone().into()],
                client_key: vec![i as u8 + 1; 16].into(),
                ..Default::default()
            }))
            .await;
        assert_eq!(
            code(&attempt),
            Some(ErrorCode::InvalidArgument),
            "{attempt:?}"
        );
    }
    // Nothing moved: the group is at the same epoch, with the same members.
    assert_eq!(group_of(&conn, "team").await.1, epoch);
    conn.close().await;

    // The honest members keep chatting, in #team and elsewhere.
    ann.send(&to("#team"), "still here").await.unwrap();
    ben.sync().await.unwrap();
    assert_eq!(texts(&ben, "#team").await, ["still here"]);
    ben.send(&to("#team"), "me too").await.unwrap();
    ben.send(&to("ann"), "and 1:1").await.unwrap();
    ann.sync().await.unwrap();
    assert_eq!(texts(&ann, "#team").await, ["still here", "me too"]);
    assert_eq!(texts(&ann, "ben").await, ["and 1:1"]);
    let cal = Client::open(d[2].path(), ClientOptions::default())
        .await
        .unwrap();
    cal.sync().await.unwrap();
    assert_eq!(texts(&cal, "#team").await, ["still here", "me too"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_commit_whose_routing_header_lies_is_refused() {
    let server = Server::start(&[]);
    let d = dirs::<4>();
    let faults = Faults::default();
    let [ann, ben, cal] = team(
        &server,
        &d,
        ClientOptions {
            faults: faults.clone(),
            ..Default::default()
        },
    )
    .await;
    let dan = register(&server, d[3].path(), "dan", Default::default()).await;
    let (ben_dev, dan_dev) = (device(&ben).await, device(&dan).await);
    let team = GroupName::parse("team").unwrap();

    // ann's client, modified, adds dan in a valid MLS commit but claims it also
    // removes ben: the server reads what the commit does and refuses the lie.
    faults.rewrite_next_commit(move |c| c.removed = vec![ben_dev.clone().into()]);
    let lie = ann.add_members(&team, &[user("dan")]).await;
    assert!(
        lie.as_ref()
            .is_err_and(|e| e.server_code() == Some(ErrorCode::InvalidArgument)),
        "{lie:?}"
    );
    // ... and one that claims to add nobody (the Welcome would go nowhere) and
    // another device instead.
    let cal_dev = device(&cal).await;
    faults.rewrite_next_commit(move |c| c.added = vec![cal_dev.clone().into()]);
    let lie = ann.add_members(&team, &[user("dan")]).await;
    assert!(
        lie.as_ref()
            .is_err_and(|e| e.server_code() == Some(ErrorCode::InvalidArgument)),
        "{lie:?}"
    );
    // The honest add goes through; ben was never cut off.
    ann.add_members(&team, &[user("dan")]).await.unwrap();
    ann.send(&to("#team"), "welcome dan").await.unwrap();
    for c in [&ben, &cal, &dan] {
        c.sync().await.unwrap();
        assert_eq!(texts(c, "#team").await, ["welcome dan"]);
    }
    let members = ann.members(&team).await.unwrap();
    assert_eq!(members.len(), 4, "{members:?}");
    let _ = dan_dev;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_that_cannot_send_never_blocks_the_others() {
    let server = Server::start(&[]);
    let d = dirs::<3>();
    let [ann, ben, cal] = team(&server, &d, Default::default()).await;
    cal.close().await;
    ann.send(&to("ben"), "hi ben").await.unwrap();
    ben.sync().await.unwrap();

    // The server's #team moves to an epoch no client can reach (what a junk commit
    // did before P438): ben's message there can never go.
    let (group, _) = group_of(&raw(&server, d[1].path()).await, "team").await;
    let db = rusqlite::Connection::open(server.data_dir().join("hushd.db")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    db.execute(
        "UPDATE groups SET epoch = epoch + 5 WHERE group_id = ?1",
        [&group],
    )
    .unwrap();
    let stuck = ben.send(&to("#team"), "into the void").await;
    assert!(stuck.is_err(), "{stuck:?}");

    // Every other conversation still works, and so does reading, run after run; the
    // stuck message is set aside after three runs, reported, and listed.
    for i in 0..4 {
        ben.send(&to("ann"), &format!("1:1 number {i}"))
            .await
            .unwrap();
        ben.sync().await.unwrap();
    }
    ann.send(&to("ben"), "got them").await.unwrap();
    ben.sync().await.unwrap();
    assert_eq!(texts(&ben, "ann").await.last().unwrap(), "got them");
    let outbox = ben.outbox().await.unwrap();
    assert_eq!(outbox.len(), 1, "{outbox:?}");
    assert!(outbox[0].set_aside, "{outbox:?}");
    assert_eq!(outbox[0].conversation, "#team");
    assert_eq!(outbox[0].text, "into the void");
    assert!(outbox[0].last_error.is_some());
    let history = ben.history("#team", 100).await.unwrap();
    assert!(
        history.iter().any(|e| matches!(
            e,
            Event::Security {
                kind: SecurityKind::MessageNotSent,
                ..
            }
        )),
        "{history:?}"
    );
    // A retry fails the same way and keeps it aside; a drop takes it out, and history
    // keeps it as failed.
    assert!(ben.outbox_retry(&outbox[0].id).await.is_err());
    assert!(ben.outbox().await.unwrap()[0].set_aside);
    ben.outbox_drop(&outbox[0].id).await.unwrap();
    assert!(ben.outbox().await.unwrap().is_empty());
    assert!(ben.outbox_drop(&outbox[0].id).await.is_err());
    let failed = ben
        .history("#team", 100)
        .await
        .unwrap()
        .into_iter()
        .any(|e| {
            matches!(e, Event::Message { ref text, state: MessageState::Failed, .. } if text == "into the void")
        });
    assert!(failed);
    ann.sync().await.unwrap();
    let got: Vec<String> = texts(&ann, "ben")
        .await
        .into_iter()
        .filter(|t| t.starts_with("1:1"))
        .collect();
    assert_eq!(
        got,
        [
            "1:1 number 0",
            "1:1 number 1",
            "1:1 number 2",
            "1:1 number 3"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_token_alone_cannot_break_the_accounts_backup() {
    let server = Server::start(&[]);
    let d = dirs::<3>();
    let ann = register(&server, d[0].path(), "ann", Default::default()).await;
    let ben = register(&server, d[1].path(), "ben", Default::default()).await;
    ben.send(&to("ann"), "kept safe").await.unwrap();
    ann.sync().await.unwrap();
    ann.backup_now().await.unwrap();
    let count = ann.backup_status().await.unwrap();

    // Someone holding ann's session token (not her password or account key) tries to
    // store a junk head and junk wrapped keys.
    let conn = raw(&server, d[0].path()).await;
    let info = conn
        .request(Body::BackupStatus(pb::BackupStatus {}))
        .await
        .unwrap();
    let Response::BackupInfo(info) = info else {
        panic!("{info:?}")
    };
    let junk_head = conn
        .request(Body::BackupAppend(pb::BackupAppend {
            index: info.count,
            chunk: vec![1u8; 100].into(),
            head: vec![2u8; 8 + 32 + 8 + 64].into(),
        }))
        .await;
    assert_eq!(
        code(&junk_head),
        Some(ErrorCode::InvalidArgument),
        "{junk_head:?}"
    );
    for signature in [Vec::new(), vec![3u8; 64]] {
        let junk_keys = conn
            .request(Body::BackupKeys(pb::BackupKeys {
                wrapped_password: vec![4u8; 80].into(),
                wrapped_recovery: vec![5u8; 80].into(),
                signature: signature.into(),
            }))
            .await;
        assert_eq!(
            code(&junk_keys),
            Some(ErrorCode::InvalidArgument),
            "{junk_keys:?}"
        );
    }
    conn.close().await;

    // The backup goes on, and a new device restores it with the password.
    ben.send(&to("ann"), "and this").await.unwrap();
    ann.sync().await.unwrap();
    ann.backup_now().await.unwrap();
    assert!(ann.backup_status().await.unwrap().chunks > count.chunks);
    let fresh = inproc::login(&server, d[2].path(), "ann", Default::default()).await;
    fresh
        .restore_backup(None, &mut |_| std::ops::ControlFlow::Continue(()))
        .await
        .unwrap();
    let got = texts(&fresh, "ben").await;
    assert!(got.contains(&"kept safe".to_string()), "{got:?}");
    assert!(got.contains(&"and this".to_string()), "{got:?}");
}

/// Copies `table`'s rows where `column = key` (every column), to put them back later.
fn rows_of(
    db: &rusqlite::Connection,
    table: &str,
    column: &str,
    key: &[u8],
) -> Vec<Vec<rusqlite::types::Value>> {
    let mut stmt = db
        .prepare(&format!("SELECT * FROM {table} WHERE {column} = ?1"))
        .unwrap();
    let n = stmt.column_count();
    stmt.query_map([key], |r| {
        (0..n)
            .map(|i| r.get::<_, rusqlite::types::Value>(i))
            .collect()
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn put_back(db: &rusqlite::Connection, table: &str, rows: &[Vec<rusqlite::types::Value>]) {
    for row in rows {
        let marks = vec!["?"; row.len()].join(", ");
        db.execute(
            &format!("INSERT OR REPLACE INTO {table} VALUES ({marks})"),
            rusqlite::params_from_iter(row.iter()),
        )
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_the_operator_brings_back_reads_nothing_new() {
    let server = Server::start(&[]);
    let d = dirs::<3>();
    let ann = register(&server, d[0].path(), "ann", Default::default()).await;
    let ben = register(&server, d[1].path(), "ben", Default::default()).await;
    let ann2 = inproc::login(&server, d[2].path(), "ann", Default::default()).await;
    let gone = ann2.stored_account().await.unwrap().device_id;
    ben.send(&to("ann"), "before").await.unwrap();
    ann.sync().await.unwrap();
    ann2.sync().await.unwrap();
    assert_eq!(texts(&ann2, "ben").await, ["before"]);
    ann2.close().await;

    // The operator keeps the device's rows, ann revokes it, the operator puts them back.
    let db = rusqlite::Connection::open(server.data_dir().join("hushd.db")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    let key = gone.as_bytes().to_vec();
    let saved = [
        ("devices", rows_of(&db, "devices", "device_id", &key)),
        (
            "device_owners",
            rows_of(&db, "device_owners", "device_id", &key),
        ),
        (
            "key_packages",
            rows_of(&db, "key_packages", "device_id", &key),
        ),
    ];
    ann.revoke_device(gone).await.unwrap();
    for (table, rows) in &saved {
        put_back(&db, table, rows);
    }

    // Neither ann's devices nor ben add it back, in old conversations or new ones.
    ann.sync().await.unwrap();
    ben.sync().await.unwrap();
    ben.send(&to("ann"), "after").await.unwrap();
    ann.create_group(&GroupName::parse("fresh").unwrap(), &[user("ben")])
        .await
        .unwrap();
    ann.send(&to("#fresh"), "new group").await.unwrap();
    let members = ann
        .members(&GroupName::parse("fresh").unwrap())
        .await
        .unwrap();
    let ann_devices = members
        .iter()
        .find(|m| m.username == "ann")
        .unwrap()
        .devices;
    assert_eq!(ann_devices, 1, "{members:?}");
    let mut got = Vec::new();
    for _ in 0..50 {
        ann.sync().await.unwrap();
        got = texts(&ann, "ben").await;
        if got.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        got,
        ["before", "after"],
        "{:?}",
        inproc::security(&ann, "ben").await
    );

    // The device itself: its session is refused, and nothing new reached it.
    let back = Client::open(d[2].path(), ClientOptions::default())
        .await
        .unwrap();
    assert!(back.sync().await.is_err(), "a revoked device cannot resume");
    back.close().await;
    let offline = Client::open(d[2].path(), ClientOptions::offline())
        .await
        .unwrap();
    assert_eq!(texts(&offline, "ben").await, ["before"]);
    let chats = offline.chats().await.unwrap();
    assert!(chats.iter().all(|c| c.name != "#fresh"), "{chats:?}");

    // Even with the server's record of the revocation deleted too, ann's devices and
    // ben remember it.
    db.execute("DELETE FROM revocations", []).unwrap();
    ann.sync().await.unwrap();
    ben.sync().await.unwrap();
    let members = ann
        .members(&GroupName::parse("fresh").unwrap())
        .await
        .unwrap();
    assert_eq!(
        members
            .iter()
            .find(|m| m.username == "ann")
            .unwrap()
            .devices,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_swapped_before_first_contact_is_noticed_by_its_owner() {
    let server = Server::start(&[]);
    let d = dirs::<1>();
    let ann = register(&server, d[0].path(), "ann", Default::default()).await;
    assert_eq!(ann.whoami().await.unwrap().warning, None);
    // The operator publishes another account key for ann before she talks to anyone.
    let db = rusqlite::Connection::open(server.data_dir().join("hushd.db")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    db.execute(
        "UPDATE users SET account_key = ?1 WHERE username = 'ann'",
        [hush_crypto_key()],
    )
    .unwrap();
    let warning = ann.whoami().await.unwrap().warning;
    assert!(
        warning
            .as_deref()
            .is_some_and(|w| w.contains("posing as you")),
        "{warning:?}"
    );
}

/// A valid Ed25519 public key that is not ann's.
fn hush_crypto_key() -> Vec<u8> {
    // The Ed25519 base point: a valid curve point, nobody's account.
    let mut k = vec![0x58u8];
    k.extend([0x66u8; 31]);
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_piece_past_an_empty_files_start_is_a_clear_refusal() {
    let server = Server::start(&[]);
    let d = dirs::<2>();
    let ann = register(&server, d[0].path(), "ann", Default::default()).await;
    let _ben = register(&server, d[1].path(), "ben", Default::default()).await;
    ann.send(&to("ben"), "hi").await.unwrap();
    ann.close().await;
    let conn = raw(&server, d[0].path()).await;
    let found = conn
        .request(Body::FindDirect(pb::FindDirect { peer: "ben".into() }))
        .await
        .unwrap();
    let Response::DirectGroup(Some((group, _))) = found else {
        panic!("{found:?}")
    };
    let created = conn
        .request(Body::FileCreate(pb::FileCreate {
            group_id: group.as_bytes().to_vec().into(),
            size: 1000,
        }))
        .await
        .unwrap();
    let Response::FileCreated { file_id, .. } = created else {
        panic!("{created:?}")
    };
    let piece = conn
        .request(Body::FileUpload(pb::FileUpload {
            file_id: file_id.as_bytes().to_vec().into(),
            offset: 100,
            data: vec![1u8; 100].into(),
        }))
        .await;
    assert_eq!(code(&piece), Some(ErrorCode::InvalidArgument), "{piece:?}");
    let message = piece.unwrap_err().to_string();
    assert!(message.contains("holds 0 bytes"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_keys_the_server_did_not_take_at_registration_go_up_later() {
    let server = Server::start(&[]);
    let d = dirs::<2>();
    let faults = Faults::default();
    // The server refuses the registration's BackupKeys (as when its storage was full):
    // the account exists, the wraps wait on the device.
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = refused.clone();
    faults.rewrite_next(move |body| match body {
        Body::BackupKeys(k) => {
            k.signature = vec![0u8; 64].into();
            seen.store(true, std::sync::atomic::Ordering::SeqCst);
            true
        }
        _ => false,
    });
    let ann = register(
        &server,
        d[0].path(),
        "ann",
        ClientOptions {
            faults: faults.clone(),
            ..Default::default()
        },
    )
    .await;
    assert!(refused.load(std::sync::atomic::Ordering::SeqCst));
    ann.sync().await.unwrap();
    ann.close().await;
    // A new device opens the account's backup key with the password: the wraps are
    // on the server.
    let second = inproc::login(&server, d[1].path(), "ann", Default::default()).await;
    let status = second.backup_status().await.unwrap();
    assert!(status.enabled, "{status:?}");
    assert!(status.recovery_key_set, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ghost_device_listed_before_the_first_conversation_is_noticed_by_its_owner() {
    let server = Server::start(&[]);
    let d = dirs::<2>();
    let ann = register(&server, d[0].path(), "ann", Default::default()).await;
    let mallory = register(&server, d[1].path(), "mallory", Default::default()).await;
    let ghost = mallory.stored_account().await.unwrap().device_id;
    mallory.close().await;
    assert_eq!(ann.whoami().await.unwrap().warning, None);
    // The operator lists mallory's device (certified by mallory's key) as ann's.
    let db = rusqlite::Connection::open(server.data_dir().join("hushd.db")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    for table in ["devices", "device_owners"] {
        db.execute(
            &format!(
                "UPDATE {table} SET user_id = (SELECT user_id FROM users WHERE username = 'ann')
                 WHERE device_id = ?1"
            ),
            [ghost.as_bytes().as_slice()],
        )
        .unwrap();
    }
    let warning = ann.whoami().await.unwrap().warning;
    assert!(
        warning
            .as_deref()
            .is_some_and(|w| w.contains(&ghost.to_string()) && w.contains("never")),
        "{warning:?}"
    );
    assert_eq!(
        ann.whoami().await.unwrap().warning,
        warning,
        "said again while the server lists it"
    );
}
