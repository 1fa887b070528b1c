//! Writes the seed inputs of every fuzz target into `fuzz/corpus/<target>/`:
//! `cargo run -p hush-fuzz --example seeds`. Fuzzing grows the corpus from there.
use std::path::PathBuf;

use hush_proto::frame;
use hush_proto::pb::{self, client_frame::Body, server_frame::Body as Answer};
use prost::Message;

fn client(id: u64, body: Body) -> pb::ClientFrame {
    pb::ClientFrame {
        request_id: id,
        body: Some(body),
    }
}

fn requests() -> Vec<pb::ClientFrame> {
    let id16 = vec![7u8; 16];
    vec![
        client(
            1,
            Body::Hello(pb::Hello {
                versions: vec![1],
                client: "seed".into(),
            }),
        ),
        client(
            2,
            Body::Ping(pb::Ping {
                payload: b"p".to_vec().into(),
            }),
        ),
        client(
            3,
            Body::Authenticate(pb::Authenticate {
                session_token: vec![1; 32].into(),
            }),
        ),
        client(
            4,
            Body::Fetch(pb::Fetch {
                after_id: 0,
                limit: 100,
                follow: true,
            }),
        ),
        client(
            5,
            Body::Ack(pb::Ack {
                ids: vec![1, 2, 3],
                missed_seen: 1,
            }),
        ),
        client(
            6,
            Body::Send(pb::Send {
                group_id: id16.clone().into(),
                epoch: 1,
                ciphertext: vec![0xab; 64].into(),
                client_message_id: id16.clone().into(),
            }),
        ),
        client(
            7,
            Body::ClaimKeyPackages(pb::ClaimKeyPackages {
                usernames: vec!["ann".into(), "ben".into()],
            }),
        ),
        client(
            8,
            Body::FindGroup(pb::FindGroup {
                name: "team".into(),
            }),
        ),
        client(
            9,
            Body::LookupDevices(pb::LookupDevices {
                device_ids: vec![id16.clone().into()],
            }),
        ),
        client(10, Body::Whoami(pb::WhoAmI {})),
    ]
}

fn answers() -> Vec<pb::ServerFrame> {
    let entry = pb::MailboxEntry {
        id: 1,
        group_id: vec![7; 16].into(),
        kind: pb::EntryKind::Application.into(),
        payload: vec![1, 2, 3].into(),
        sender_device: vec![8; 16].into(),
        group_seq: 4,
        stored_at_ms: 5,
    };
    vec![
        pb::ServerFrame {
            request_id: 1,
            body: Some(Answer::HelloOk(pb::HelloOk {
                version: 1,
                server: "hushd".into(),
                registration: "open".into(),
            })),
        },
        pb::ServerFrame {
            request_id: 2,
            body: Some(Answer::Error(pb::Error {
                code: pb::ErrorCode::MailboxFull.into(),
                message: "full".into(),
                fatal: false,
                retry_after_secs: 0,
            })),
        },
        pb::ServerFrame {
            request_id: 3,
            body: Some(Answer::Mailbox(pb::Mailbox {
                entries: vec![entry.clone()],
                missed: 2,
                more: true,
            })),
        },
        pb::ServerFrame {
            request_id: 0,
            body: Some(Answer::Delivery(pb::Mailbox {
                entries: vec![entry],
                missed: 0,
                more: false,
            })),
        },
        pb::ServerFrame {
            request_id: 4,
            body: Some(Answer::Sent(pb::Sent {
                group_seq: 1,
                stored_at_ms: 2,
                undelivered: vec![vec![9; 16].into()],
            })),
        },
    ]
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn main() {
    let reqs = requests();
    let mut stream = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        let body = r.encode_to_vec();
        write("request", &format!("seed-{i:02}"), &body);
        let framed = frame::encode(r);
        write("frame", &format!("seed-{i:02}"), &framed);
        stream.extend_from_slice(&framed);
    }
    for (i, a) in answers().iter().enumerate() {
        write("response", &format!("seed-{i:02}"), &a.encode_to_vec());
    }
    let content = hush_proto::content::Content {
        message_id: hush_proto::ids::MessageId::from_bytes([3; 16]),
        seq: 1,
        sent_at_ms: 1,
        body: hush_proto::content::ContentBody::Text("hello".into()),
    };
    write("content", "seed-00", &content.encode());
    write(
        "content",
        "seed-01",
        &pb::GroupState {
            name: "team".into(),
            admins: vec!["ann".into()],
            joinable: false,
            deleted: false,
        }
        .encode_to_vec(),
    );
    // Sessions: a whole conversation, an oversized length, a cut frame, no hello.
    write("session", "seed-00", &stream);
    write(
        "session",
        "seed-01",
        &[&frame::encode(&reqs[0])[..], &[0xff, 0xff, 0xff, 0xff]].concat(),
    );
    write("session", "seed-02", &stream[..stream.len() - 3]);
    write("session", "seed-03", &frame::encode(&reqs[3]));
}
