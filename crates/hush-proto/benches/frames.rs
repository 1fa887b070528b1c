//! The frame codec on the relay's hot path: a `Send` decoded and validated as the
//! server does, and a `Delivery` of a page of entries encoded and validated as the
//! client does. `cargo bench -p hush-proto`.
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hush_proto::pb::{self, client_frame::Body, server_frame::Body as Answer};
use hush_proto::{ClientFrameIn, ServerFrameIn, frame};

fn send_frame(payload: usize) -> Vec<u8> {
    frame::encode_body(&pb::ClientFrame {
        request_id: 42,
        body: Some(Body::Send(pb::Send {
            group_id: vec![7u8; 16].into(),
            epoch: 3,
            ciphertext: vec![0xa5; payload].into(),
            client_message_id: vec![1u8; 16].into(),
        })),
    })
    .to_vec()
}

fn delivery(entries: usize, payload: usize) -> pb::ServerFrame {
    let entry = |id: u64| pb::MailboxEntry {
        id,
        group_id: vec![7u8; 16].into(),
        kind: pb::EntryKind::Application.into(),
        payload: vec![0xa5; payload].into(),
        sender_device: vec![2u8; 16].into(),
        group_seq: id,
        stored_at_ms: 1_700_000_000_000,
    };
    pb::ServerFrame {
        request_id: 0,
        body: Some(Answer::Delivery(pb::Mailbox {
            entries: (1..=entries as u64).map(entry).collect(),
            missed: 0,
            more: false,
        })),
    }
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("frames");
    let send = send_frame(256);
    g.throughput(Throughput::Elements(1));
    g.bench_function("send 256 B: decode and validate (server)", |b| {
        b.iter(|| {
            let raw = frame::decode::<ClientFrameIn>(black_box(&send), frame::MAX_FRAME_LEN)
                .unwrap_or_default();
            black_box(hush_proto::request::validate(raw).is_ok())
        })
    });
    let one = delivery(1, 256);
    g.bench_function("delivery of 1 entry: encode (server)", |b| {
        b.iter(|| black_box(frame::encode_body(black_box(&one))))
    });
    let page = delivery(64, 256);
    let encoded = frame::encode_body(&page).to_vec();
    g.throughput(Throughput::Elements(64));
    g.bench_function("delivery of 64 entries: encode (server)", |b| {
        b.iter(|| black_box(frame::encode_body(black_box(&page))))
    });
    g.bench_function(
        "delivery of 64 entries: decode and validate (client)",
        |b| {
            b.iter(|| {
                let raw = frame::decode::<ServerFrameIn>(black_box(&encoded), frame::MAX_FRAME_LEN)
                    .unwrap_or_default();
                black_box(hush_proto::response::validate(raw).is_ok())
            })
        },
    );
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
