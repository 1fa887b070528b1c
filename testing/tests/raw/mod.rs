//! Raw frames over a real TLS connection to a real hushd, for tests that play a
//! hostile or broken client.
#![allow(dead_code)]
use std::sync::Arc;

use bytes::Bytes;
use hush_client::trust::RecordingVerifier;
use hush_proto::pb::{self, client_frame::Body, server_frame};
use hush_proto::{ErrorCode, frame};
use hush_testing::Server;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

pub type Stream = TlsStream<TcpStream>;

pub async fn connect(server: &Server) -> TlsStream<TcpStream> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(RecordingVerifier::new(&provider))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"hush/1".to_vec()];
    let tcp = TcpStream::connect(&server.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap()
}

pub fn request(id: u64, body: Body) -> Bytes {
    frame::encode(&pb::ClientFrame {
        request_id: id,
        body: Some(body),
    })
}

pub fn hello(versions: Vec<u32>) -> Body {
    Body::Hello(pb::Hello {
        versions,
        client: "frames-test".into(),
    })
}

/// Reads one frame, or `None` at end of stream.
pub async fn read_frame(s: &mut TlsStream<TcpStream>) -> Option<pb::ServerFrame> {
    let mut len = [0u8; 4];
    if s.read_exact(&mut len).await.is_err() {
        return None;
    }
    let mut body = vec![0; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await.ok()?;
    Some(pb::ServerFrame::decode(body.as_slice()).unwrap())
}

/// Expects a fatal error frame with `code`, then the end of the connection.
pub async fn expect_fatal(s: &mut TlsStream<TcpStream>, code: ErrorCode) -> String {
    let f = read_frame(s)
        .await
        .expect("an error frame before the close");
    let Some(server_frame::Body::Error(e)) = f.body else {
        panic!("expected an error frame, got {f:?}");
    };
    assert_eq!(e.code(), code, "{}", e.message);
    assert!(e.fatal);
    assert!(
        read_frame(s).await.is_none(),
        "connection closed after the error"
    );
    e.message
}

pub async fn say_hello(s: &mut TlsStream<TcpStream>) {
    s.write_all(&request(1, hello(vec![1]))).await.unwrap();
    let f = read_frame(s).await.unwrap();
    assert_eq!(f.request_id, 1);
    assert!(
        matches!(f.body, Some(server_frame::Body::HelloOk(_))),
        "{f:?}"
    );
}

pub async fn ping(s: &mut TlsStream<TcpStream>, id: u64) {
    let payload = Bytes::from(format!("ping {id}"));
    s.write_all(&request(
        id,
        Body::Ping(pb::Ping {
            payload: payload.clone(),
        }),
    ))
    .await
    .unwrap();
    let f = read_frame(s).await.unwrap();
    assert_eq!(f.request_id, id, "answers echo the request id");
    assert_eq!(f.body, Some(server_frame::Body::Pong(pb::Pong { payload })));
}

/// Hello, then resumes the session of the account stored in the home `dir`.
pub async fn authenticate(s: &mut TlsStream<TcpStream>, dir: &std::path::Path) {
    say_hello(s).await;
    let f = resume(s, dir).await;
    assert!(
        matches!(f.body, Some(server_frame::Body::Authenticated(_))),
        "{f:?}"
    );
}

/// Sends `Authenticate` with the session token stored in the home `dir`; the answer.
pub async fn resume(s: &mut TlsStream<TcpStream>, dir: &std::path::Path) -> pb::ServerFrame {
    let token = hush_client::home::Home::open(dir)
        .unwrap()
        .account()
        .unwrap()
        .unwrap()
        .token;
    s.write_all(&request(
        2,
        Body::Authenticate(pb::Authenticate {
            session_token: token.expose().to_vec().into(),
        }),
    ))
    .await
    .unwrap();
    read_frame(s).await.unwrap()
}
