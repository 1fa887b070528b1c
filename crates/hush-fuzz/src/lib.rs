//! The bodies of the fuzz targets: each takes arbitrary bytes and must neither panic
//! nor grow without bound. `fuzz/` (cargo-fuzz, libFuzzer) calls them with generated
//! inputs; this crate's tests replay the committed corpus (`fuzz/corpus/<target>/`) on
//! stable Rust, so every input that ever found a bug stays a regression test.
//!
//! Targets: [`frame`] (the frame codec), [`request`] (every request validator),
//! [`response`] (the response validator), [`content`] (decrypted content and group
//! state decoders), [`session`] (a whole server session over an in-memory store).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hush_proto::{ClientFrameIn, ServerFrameIn, frame};
use hush_server::{Limits, OsEntropy, ServerConfig, ServerState, SystemClock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target, by the name of its corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("frame", frame),
    ("request", request),
    ("response", response),
    ("content", content),
    ("session", session),
];

/// The frame codec: a length prefix and a body, both arbitrary.
pub fn frame(data: &[u8]) {
    let Some((len, body)) = data.split_first_chunk::<4>() else {
        return;
    };
    let max = u32::from_be_bytes(*len) as usize;
    let _ = frame::decode::<ClientFrameIn>(body, max);
    let _ = frame::decode::<ServerFrameIn>(body, max);
}

/// Decoding then validating a client frame, as the server does with every request.
pub fn request(data: &[u8]) {
    if let Ok(raw) = frame::decode::<ClientFrameIn>(data, frame::MAX_FRAME_LEN) {
        let _ = hush_proto::request::validate(raw);
    }
}

/// Decoding then validating a server frame, as the client does with every answer.
pub fn response(data: &[u8]) {
    if let Ok(raw) = frame::decode::<ServerFrameIn>(data, frame::MAX_FRAME_LEN) {
        let _ = hush_proto::response::validate(raw);
    }
}

/// What a peer puts inside MLS: message content and named-group state.
pub fn content(data: &[u8]) {
    let _ = hush_proto::content::Content::decode(data);
    let _ = hush_proto::content::GroupState::decode(data);
}

/// The runtime every session input runs on.
fn runtime() -> Option<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()
    })
    .as_ref()
}

/// A fresh server on an empty in-memory store, so no input inherits another's
/// accounts and memory stays bounded over millions of inputs.
async fn server() -> Option<Arc<ServerState>> {
    let config = ServerConfig {
        limits: Limits {
            auth_timeout: Duration::from_secs(2),
            frame_read_timeout: Duration::from_secs(1),
            ..Limits::default()
        },
        ..ServerConfig::default()
    };
    ServerState::new(
        Arc::new(hush_store::memory::MemoryStore::new()),
        config,
        Arc::new(SystemClock),
        Arc::new(OsEntropy),
    )
    .await
    .ok()
    .map(Arc::new)
}

/// Arbitrary client bytes into a real server session (over an in-memory pipe and
/// store): it must answer or close, never panic, and its answers stay bounded.
pub fn session(data: &[u8]) {
    let Some(rt) = runtime() else {
        return;
    };
    rt.block_on(async {
        let Some(state) = server().await else {
            return;
        };
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (server_read, server_write) = tokio::io::split(server);
        let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let peer = SocketAddr::from(([127, 0, 0, 1], 40_000));
        let session = tokio::spawn(hush_server::session::run(
            server_read,
            server_write,
            peer,
            state,
            stop_rx,
        ));
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let input = data.to_vec();
        let writer = tokio::spawn(async move {
            let _ = client_write.write_all(&input).await;
            let _ = client_write.shutdown().await;
        });
        // Read everything the server says until it closes; its answers are bounded.
        let mut answered = 0usize;
        let mut buf = vec![0u8; 16 * 1024];
        let drained = tokio::time::timeout(Duration::from_secs(10), async {
            while let Ok(n) = client_read.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                answered += n;
            }
        })
        .await;
        assert!(drained.is_ok(), "the session neither answered nor closed");
        assert!(
            answered <= 64 * 1024 * 1024,
            "answers out of proportion: {answered} bytes"
        );
        let _ = writer.await;
        let _ = session.await;
    });
}
