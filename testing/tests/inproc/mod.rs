//! In-process clients for end-to-end tests: the real `hushd` binary on port 0, real
//! TLS, and `hush_client::Client` engines in the test process, so a test can drop
//! chosen answers (the `fault-injection` seam) and kill an engine mid-request.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use hush_client::account::Profile;
use hush_client::events::Event;
use hush_client::hush_proto::fingerprint::Fingerprint;
use hush_client::hush_proto::ids::Username;
use hush_client::trust::FirstUse;
use hush_client::{Client, ClientOptions, Enrolment, Target};
use hush_testing::Server;

pub const PASSWORD: &[u8] = b"a long enough password";

pub fn user(name: &str) -> Username {
    Username::parse(name).unwrap()
}

pub fn to(target: &str) -> Target {
    Target::parse(target).unwrap()
}

/// `N` empty homes.
pub fn dirs<const N: usize>() -> [tempfile::TempDir; N] {
    std::array::from_fn(|_| tempfile::tempdir().unwrap())
}

/// A raw authenticated connection for the account in `dir`: a modified client, or
/// someone holding that device's session token.
pub async fn raw(server: &Server, dir: &Path) -> hush_client::connection::Connection {
    use hush_client::hush_proto::pb::{self, client_frame::Body};
    let token = hush_client::home::Home::open(dir)
        .unwrap()
        .account()
        .unwrap()
        .unwrap()
        .token;
    let fp = Fingerprint::parse(&server.fingerprint).unwrap();
    let conn = hush_client::connection::Connection::connect(
        &server.addr,
        &hush_client::trust::KnownServers::new(dir),
        &FirstUse::Expect(fp),
    )
    .await
    .unwrap();
    let answer = conn
        .request(Body::Authenticate(pb::Authenticate {
            session_token: token.expose().to_vec().into(),
        }))
        .await
        .unwrap();
    assert!(matches!(
        answer,
        hush_client::hush_proto::response::Response::Authenticated(_)
    ));
    conn
}

pub fn pin(server: &Server) -> FirstUse {
    FirstUse::Expect(Fingerprint::parse(&server.fingerprint).unwrap())
}

/// Registers `name` in the empty home `dir`; returns once its key packages are out.
pub async fn register(server: &Server, dir: &Path, name: &str, options: ClientOptions) -> Client {
    register_via(server, &server.addr, dir, name, options).await
}

/// [`register`] through `addresses` (a cluster's `a:5535,b:5535`), pinning
/// `server`'s key.
pub async fn register_via(
    server: &Server,
    addresses: &str,
    dir: &Path,
    name: &str,
    options: ClientOptions,
) -> Client {
    let (client, _) = Client::enrol(
        dir,
        addresses,
        pin(server),
        Enrolment::Register {
            username: user(name),
            password: zeroize::Zeroizing::new(PASSWORD.to_vec()),
            invite: None,
            profile: Profile::default(),
        },
        options,
    )
    .await
    .unwrap();
    client.sync().await.unwrap();
    client
}

/// Logs `name` in from the empty home `dir` (a new device).
pub async fn login(server: &Server, dir: &Path, name: &str, options: ClientOptions) -> Client {
    let (client, _) = Client::enrol(
        dir,
        &server.addr,
        pin(server),
        Enrolment::Login {
            username: user(name),
            password: zeroize::Zeroizing::new(PASSWORD.to_vec()),
            device_name: None,
            second_factor: None,
        },
        options,
    )
    .await
    .unwrap();
    client.sync().await.unwrap();
    client
}

/// Runs `op` until it succeeds, while the engine reconnects after an injected fault.
async fn eventually<T, F, Fut>(what: &str, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, hush_client::ClientError>>,
{
    let mut last = None;
    for _ in 0..50 {
        match op().await {
            Ok(v) => return v,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("could not {what}: {last:?}");
}

pub async fn send_eventually(client: &Client, target: &str, text: &str) {
    let t = to(target);
    eventually(&format!("send {text:?} to {target}"), || {
        client.send(&t, text)
    })
    .await;
}

pub async fn sync_eventually(client: &Client) {
    eventually("sync", || client.sync()).await;
}

/// A conversation's history (no network).
async fn events(client: &Client, conversation: &str) -> Vec<Event> {
    client.history(conversation, 10_000).await.unwrap()
}

/// The texts of a conversation's messages, oldest first.
pub async fn texts(client: &Client, conversation: &str) -> Vec<String> {
    events(client, conversation)
        .await
        .into_iter()
        .filter_map(|e| match e {
            Event::Message { text, .. } => Some(text),
            _ => None,
        })
        .collect()
}

/// The kinds of the security events in a conversation.
pub async fn security(client: &Client, conversation: &str) -> Vec<String> {
    events(client, conversation)
        .await
        .into_iter()
        .filter_map(|e| match e {
            Event::Security { kind, reason, .. } => Some(format!("{}: {reason}", kind.as_str())),
            _ => None,
        })
        .collect()
}

/// Sends `prefix0`, `prefix1`, ... to `peer` until told to stop, one attempt each;
/// records the numbers the server acknowledged.
pub fn keep_sending(
    client: Client,
    peer: &'static str,
    prefix: &'static str,
    acked: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let target = to(peer);
        let mut i = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            match client.send(&target, &format!("{prefix}{i}")).await {
                Ok(_) => acked.lock().unwrap().push(i),
                // In flight at a kill, or the server is down: not acknowledged. If it
                // was written to the outbox, it goes out later, once.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
            i += 1;
        }
    })
}

/// The numbers of `prefix` messages in `got`, in the order received.
pub fn numbers(got: &[String], prefix: &str) -> Vec<usize> {
    got.iter()
        .filter_map(|t| t.strip_prefix(prefix)?.parse().ok())
        .collect()
}

pub async fn online(client: &Client) {
    tokio::time::timeout(
        Duration::from_secs(60),
        client.wait_for_state(|s| *s == hush_client::events::ConnectionState::Online),
    )
    .await
    .expect("the client reconnected");
}

pub fn check(received: &[usize], acked: &[usize], who: &str) {
    let mut sorted = received.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        received.len(),
        "{who}: nothing twice: {received:?}"
    );
    assert!(
        received.windows(2).all(|w| w[0] < w[1]),
        "{who}: in order: {received:?}"
    );
    for n in acked {
        assert!(
            received.contains(n),
            "{who}: acknowledged message {n} lost; got {received:?}"
        );
    }
}
