//! The fast path of delivery over raw frames against a real hushd: entries pushed to a
//! following connection (P443), its window of unacknowledged entries, and several
//! sends in flight on one connection answered by request id in arrival order (P110).
mod inproc;
mod raw;

use std::collections::HashMap;
use std::time::Duration;

use hush_proto::pb::{self, client_frame::Body, server_frame::Body as Answer};
use hush_testing::Server;
use inproc::register;
use raw::{Stream, authenticate, connect, read_frame, request};
use tokio::io::AsyncWriteExt;

/// P443: most pushed entries a connection may leave unacknowledged.
const WINDOW: usize = 1_000;

fn device_of(dir: &std::path::Path) -> Vec<u8> {
    hush_client::home::Home::open(dir)
        .unwrap()
        .account()
        .unwrap()
        .unwrap()
        .device_id
        .as_bytes()
        .to_vec()
}

/// ann and ben, registered and closed; a raw authenticated connection for each, and
/// a 1:1 group ann created with a stand-in Welcome (nobody decrypts here).
async fn pair(server: &Server) -> ([tempfile::TempDir; 2], Stream, Stream, Vec<u8>) {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    for (dir, name) in dirs.iter().zip(["ann", "ben"]) {
        register(server, dir.path(), name, Default::default())
            .await
            .close()
            .await;
    }
    let mut ann = connect(server).await;
    authenticate(&mut ann, dirs[0].path()).await;
    let mut ben = connect(server).await;
    authenticate(&mut ben, dirs[1].path()).await;
    let group = vec![7u8; 16];
    ann.write_all(&request(
        3,
        Body::CreateGroup(pb::CreateGroup {
            channel: None,
            group_id: group.clone().into(),
            name: String::new(),
            direct_peer: "ben".into(),
            welcome: vec![0u8; 8].into(),
            members: vec![
                device_of(dirs[0].path()).into(),
                device_of(dirs[1].path()).into(),
            ],
            client_key: Default::default(),
            group_info: Default::default(),
        }),
    ))
    .await
    .unwrap();
    let f = read_frame(&mut ann).await.unwrap();
    assert!(
        matches!(f.body, Some(Answer::GroupCreated(_))),
        "group created: {f:?}"
    );
    (dirs, ann, ben, group)
}

fn send(id: u64, group: &[u8], text: &str) -> bytes::Bytes {
    let mut client_id = [0u8; 16];
    client_id[..8].copy_from_slice(&id.to_be_bytes());
    request(
        id,
        Body::Send(pb::Send {
            group_id: group.to_vec().into(),
            epoch: 1,
            ciphertext: text.as_bytes().to_vec().into(),
            client_message_id: client_id.to_vec().into(),
        }),
    )
}

/// Writes the sends `ids` in one write, then reads their answers: request id to
/// `group_seq`.
async fn send_all(s: &mut Stream, group: &[u8], ids: std::ops::Range<u64>) -> HashMap<u64, u64> {
    let mut bytes = Vec::new();
    for id in ids.clone() {
        bytes.extend_from_slice(&send(id, group, &format!("m{id}")));
    }
    s.write_all(&bytes).await.unwrap();
    let mut seqs = HashMap::new();
    for _ in ids.clone() {
        let f = read_frame(s).await.unwrap();
        let Some(Answer::Sent(sent)) = f.body else {
            panic!("expected Sent, got {f:?}");
        };
        assert!(ids.contains(&f.request_id), "answers echo a request id");
        assert!(seqs.insert(f.request_id, sent.group_seq).is_none());
    }
    seqs
}

/// The answer to request `id`, passing over the wake-ups (P442) pushed before it.
async fn answer(s: &mut Stream, id: u64) -> Option<Answer> {
    loop {
        let f = read_frame(s).await.unwrap();
        match f.body {
            Some(Answer::MailboxChanged(_)) if f.request_id == 0 => continue,
            body => {
                assert_eq!(f.request_id, id, "{body:?}");
                return body;
            }
        }
    }
}

fn follow(id: u64) -> bytes::Bytes {
    request(
        id,
        Body::Fetch(pb::Fetch {
            after_id: 0,
            limit: 500,
            follow: true,
        }),
    )
}

fn ack(id: u64, ids: &[u64]) -> bytes::Bytes {
    request(
        id,
        Body::Ack(pb::Ack {
            ids: ids.to_vec(),
            missed_seen: 0,
        }),
    )
}

/// Reads pushed entries until none came for `quiet`: every frame must be a push.
async fn pushed(s: &mut Stream, quiet: Duration) -> Vec<pb::MailboxEntry> {
    let mut out = Vec::new();
    while let Ok(Some(f)) = tokio::time::timeout(quiet, read_frame(s)).await {
        assert_eq!(f.request_id, 0, "pushes carry request id 0: {f:?}");
        match f.body {
            Some(Answer::Delivery(d)) => out.extend(d.entries),
            other => panic!("a following connection is pushed entries, not {other:?}"),
        }
    }
    out
}

fn texts(entries: &[pb::MailboxEntry]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e.kind() == pb::EntryKind::Application)
        .map(|e| String::from_utf8_lossy(&e.payload).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p443_a_following_connection_is_pushed_each_entry_once_in_order() {
    let server = Server::start(&[]);
    let (dirs, mut ann, mut ben, group) = pair(&server).await;
    ben.write_all(&follow(5)).await.unwrap();
    let Some(Answer::Mailbox(first)) = answer(&mut ben, 5).await else {
        panic!("the answer to Fetch is the first page");
    };
    assert_eq!(first.entries.len(), 1, "the Welcome");
    assert!(!first.more);

    for (i, text) in ["one", "two", "three"].iter().enumerate() {
        ann.write_all(&send(10 + i as u64, &group, text))
            .await
            .unwrap();
        let f = read_frame(&mut ann).await.unwrap();
        assert!(matches!(f.body, Some(Answer::Sent(_))), "{f:?}");
    }
    let got = pushed(&mut ben, Duration::from_millis(500)).await;
    assert_eq!(
        texts(&got),
        ["one", "two", "three"],
        "pushed, in order, once"
    );
    assert!(got.windows(2).all(|w| w[0].id < w[1].id));

    let mut ids: Vec<u64> = first.entries.iter().map(|e| e.id).collect();
    ids.extend(got.iter().map(|e| e.id));
    ben.write_all(&ack(6, &ids)).await.unwrap();
    let f = read_frame(&mut ben).await.unwrap();
    assert_eq!(
        (f.request_id, f.body),
        (6, Some(Answer::Acked(pb::Acked {})))
    );
    // Acked means gone: another connection of ben's finds nothing.
    let mut again = connect(&server).await;
    authenticate(&mut again, dirs[1].path()).await;
    again
        .write_all(&request(
            3,
            Body::Fetch(pb::Fetch {
                after_id: 0,
                limit: 100,
                follow: false,
            }),
        ))
        .await
        .unwrap();
    let f = read_frame(&mut again).await.unwrap();
    let Some(Answer::Mailbox(rest)) = f.body else {
        panic!("{f:?}");
    };
    assert!(rest.entries.is_empty(), "nothing left: {rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p443_pushing_stops_at_the_window_and_goes_on_as_entries_are_acked() {
    let server = Server::start(&[]);
    let (_dirs, mut ann, mut ben, group) = pair(&server).await;
    let total = 1_200u64;
    for start in (0..total).step_by(100) {
        send_all(&mut ann, &group, 100 + start..100 + start + 100).await;
    }
    ben.write_all(&follow(5)).await.unwrap();
    let Some(Answer::Mailbox(first)) = answer(&mut ben, 5).await else {
        panic!("the answer to Fetch is the first page");
    };
    assert_eq!(first.entries.len(), 500, "a page of `limit` entries");
    assert!(first.more, "more wait");
    let mut all = first.entries;
    all.extend(pushed(&mut ben, Duration::from_millis(500)).await);
    assert_eq!(
        all.len(),
        WINDOW,
        "the server pushes up to its window of unacknowledged entries, then waits"
    );

    let ids: Vec<u64> = all[..400].iter().map(|e| e.id).collect();
    ben.write_all(&ack(6, &ids)).await.unwrap();
    let mut rest = Vec::new();
    // The Acked answer and the pushes it allows, in either order.
    let mut acked = false;
    while let Ok(Some(f)) =
        tokio::time::timeout(Duration::from_millis(500), read_frame(&mut ben)).await
    {
        match f.body {
            Some(Answer::Acked(_)) => acked = true,
            Some(Answer::Delivery(d)) => rest.extend(d.entries),
            other => panic!("{other:?}"),
        }
    }
    assert!(acked);
    assert_eq!(rest.len(), 201, "the rest (1,200 messages and the Welcome)");
    all.extend(rest);
    let expected: Vec<String> = (0..total).map(|i| format!("m{}", 100 + i)).collect();
    assert_eq!(texts(&all), expected, "every message once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p110_sends_in_flight_together_are_answered_by_id_and_stored_in_arrival_order() {
    let server = Server::start(&[]);
    let (_dirs, mut ann, mut ben, group) = pair(&server).await;
    let seqs = send_all(&mut ann, &group, 100..160).await;
    let mut by_request: Vec<(u64, u64)> = seqs.into_iter().collect();
    by_request.sort();
    assert!(
        by_request.windows(2).all(|w| w[0].1 < w[1].1),
        "group_seq follows the order the requests arrived in: {by_request:?}"
    );
    ben.write_all(&follow(5)).await.unwrap();
    let Some(Answer::Mailbox(page)) = answer(&mut ben, 5).await else {
        panic!("the answer to Fetch is the first page");
    };
    let expected: Vec<String> = (100..160).map(|i| format!("m{i}")).collect();
    assert_eq!(texts(&page.entries), expected);
}
