//! Replays the committed fuzz corpus through every target on stable Rust, and checks
//! the codec round-trips arbitrary frames.
use std::path::PathBuf;

use proptest::prelude::*;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            out.push((path, bytes));
        }
    }
    out
}

#[test]
fn every_corpus_input_passes_every_target_without_panicking() {
    for (name, target) in hush_fuzz::TARGETS {
        let inputs = corpus(name);
        assert!(!inputs.is_empty(), "no corpus for {name}");
        for (path, bytes) in inputs {
            let run = std::panic::catch_unwind(|| target(&bytes));
            assert!(run.is_ok(), "{name} panicked on {}", path.display());
        }
    }
}

fn any_frame() -> impl Strategy<Value = hush_proto::pb::ClientFrame> {
    use hush_proto::pb::{self, client_frame::Body};
    let body = prop_oneof![
        any::<Vec<u8>>().prop_map(|p| Body::Ping(pb::Ping { payload: p.into() })),
        (any::<u64>(), any::<u32>()).prop_map(|(after_id, limit)| Body::Fetch(pb::Fetch {
            after_id,
            limit,
            follow: after_id % 2 == 0
        })),
        (proptest::collection::vec(any::<u64>(), 0..50), any::<u32>())
            .prop_map(|(ids, missed_seen)| Body::Ack(pb::Ack { ids, missed_seen })),
        (
            any::<Vec<u8>>(),
            any::<u64>(),
            any::<Vec<u8>>(),
            any::<Vec<u8>>()
        )
            .prop_map(|(g, epoch, c, id)| Body::Send(pb::Send {
                group_id: g.into(),
                epoch,
                ciphertext: c.into(),
                client_message_id: id.into(),
            })),
        (proptest::collection::vec(any::<u32>(), 0..20), ".{0,40}")
            .prop_map(|(versions, client)| { Body::Hello(pb::Hello { versions, client }) }),
    ];
    (any::<u64>(), proptest::option::of(body))
        .prop_map(|(request_id, body)| hush_proto::pb::ClientFrame { request_id, body })
}

proptest! {
    #[test]
    fn the_frame_codec_round_trips(f in any_frame()) {
        let framed = hush_proto::frame::encode(&f);
        let (len, body) = framed.split_at(hush_proto::frame::LENGTH_PREFIX);
        prop_assert_eq!(u32::from_be_bytes(len.try_into().unwrap()) as usize, body.len());
        let back: hush_proto::pb::ClientFrame =
            hush_proto::frame::decode(body, usize::MAX).unwrap();
        prop_assert_eq!(back, f);
    }

    #[test]
    fn the_request_target_takes_any_bytes(bytes in any::<Vec<u8>>()) {
        hush_fuzz::request(&bytes);
        hush_fuzz::response(&bytes);
        hush_fuzz::content(&bytes);
        hush_fuzz::frame(&bytes);
    }
}
