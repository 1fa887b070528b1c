//! Hostile bytes on a real TLS connection to a real hushd (docs/protocol.md P1xx, P2xx):
//! each bad connection gets an error frame and is closed; other connections are
//! unaffected.
mod raw;

use std::sync::Arc;

use bytes::Bytes;
use hush_client::trust::RecordingVerifier;
use hush_proto::pb::{self, client_frame::Body, server_frame};
use hush_proto::{ErrorCode, frame};
use hush_testing::Server;
use raw::{connect, expect_fatal, hello, ping, read_frame, request, say_hello};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test]
async fn bad_frames_close_only_their_own_connection() {
    let server = Server::start(&[]);
    let mut good = connect(&server).await;
    say_hello(&mut good).await;

    // P102: a length-delimited field whose length runs past the end of the frame.
    let mut bad = connect(&server).await;
    say_hello(&mut bad).await;
    bad.write_all(&[0, 0, 0, 3, 0x0a, 0xff, 0x01])
        .await
        .unwrap();
    expect_fatal(&mut bad, ErrorCode::MalformedFrame).await;

    // P101: a length over the pre-authentication limit is refused before its bytes come.
    let mut big = connect(&server).await;
    big.write_all(&(64 * 1024 * 1024u32).to_be_bytes())
        .await
        .unwrap();
    let msg = expect_fatal(&mut big, ErrorCode::FrameTooLarge).await;
    assert!(msg.contains("limit"), "{msg}");

    // P102: a frame cut short by the end of the stream.
    let mut cut = connect(&server).await;
    cut.write_all(&[0, 0, 0, 100, 1, 2, 3]).await.unwrap();
    cut.shutdown().await.unwrap();
    let msg = expect_fatal(&mut cut, ErrorCode::MalformedFrame).await;
    assert!(msg.contains("truncated"), "{msg}");

    // P103: a frame with no body.
    let mut empty = connect(&server).await;
    empty
        .write_all(&frame::encode(&pb::ClientFrame {
            request_id: 5,
            body: None,
        }))
        .await
        .unwrap();
    expect_fatal(&mut empty, ErrorCode::MalformedFrame).await;

    // The first connection never noticed.
    ping(&mut good, 2).await;
    ping(&mut good, 3).await;
    let mut fresh = connect(&server).await;
    say_hello(&mut fresh).await;
    ping(&mut fresh, 9).await;
}

#[tokio::test]
async fn p202_unknown_protocol_versions_are_refused_clearly() {
    let server = Server::start(&[]);
    let mut s = connect(&server).await;
    s.write_all(&request(1, hello(vec![99, 100])))
        .await
        .unwrap();
    let msg = expect_fatal(&mut s, ErrorCode::UnsupportedVersion).await;
    assert!(msg.contains("99") && msg.contains("[1]"), "{msg}");
}

#[tokio::test]
async fn p201_the_first_frame_must_be_hello() {
    let server = Server::start(&[]);
    let mut s = connect(&server).await;
    s.write_all(&request(1, Body::Whoami(pb::WhoAmI {})))
        .await
        .unwrap();
    expect_fatal(&mut s, ErrorCode::ProtocolViolation).await;
}

#[tokio::test]
async fn p301_invalid_fields_get_an_error_but_keep_the_connection() {
    let server = Server::start(&[]);
    let mut s = connect(&server).await;
    say_hello(&mut s).await;
    s.write_all(&request(
        7,
        Body::LoginStart(pb::LoginStart {
            username: "NOT VALID".into(),
            credential_request: Bytes::from_static(b"x"),
        }),
    ))
    .await
    .unwrap();
    let f = read_frame(&mut s).await.unwrap();
    assert_eq!(f.request_id, 7);
    let Some(server_frame::Body::Error(e)) = f.body else {
        panic!("{f:?}")
    };
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    assert!(!e.fatal);
    assert!(e.message.contains("username"), "{}", e.message);
    ping(&mut s, 8).await;
    // Not authenticated: account requests are refused, not served.
    s.write_all(&request(9, Body::Whoami(pb::WhoAmI {})))
        .await
        .unwrap();
    let f = read_frame(&mut s).await.unwrap();
    let Some(server_frame::Body::Error(e)) = f.body else {
        panic!("{f:?}")
    };
    assert_eq!(e.code(), ErrorCode::Unauthenticated);
}

#[tokio::test]
async fn p205_a_connection_that_never_authenticates_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hushd.toml");
    std::fs::write(&config, "[limits]\nauth_timeout_secs = 1\n").unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let mut s = connect(&server).await;
    say_hello(&mut s).await;
    let msg = expect_fatal(&mut s, ErrorCode::Timeout).await;
    assert!(msg.contains("authenticate"), "{msg}");
}

/// P100: a client that does not offer ALPN `hush/1` is not served.
#[tokio::test]
async fn p100_a_client_without_alpn_is_refused() {
    let server = Server::start(&[]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(RecordingVerifier::new(&provider))
        .with_no_client_auth();
    let tcp = TcpStream::connect(&server.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    // The handshake itself may finish; the server then closes without a word.
    if let Ok(mut s) = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
    {
        use tokio::io::AsyncWriteExt;
        let _ = s.write_all(&request(1, hello(vec![1]))).await;
        assert!(read_frame(&mut s).await.is_none(), "served without ALPN");
    }
    // With ALPN the same server answers.
    let mut ok = connect(&server).await;
    say_hello(&mut ok).await;
}
