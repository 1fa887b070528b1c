//! Crash safety: `kill -9` of hushd while two clients send and receive, again and again.
//! Every message the server acknowledged is delivered exactly once, in order; nothing
//! is duplicated, whatever was in flight at the kill.
mod inproc;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hush_client::Client;
use hush_client::events::ConnectionState;
use hush_testing::{Server, free_port};
use inproc::{register, texts, to};

const ROUNDS: usize = 5;
/// Acknowledged messages between two kills.
const PER_ROUND: usize = 8;

/// Sends `prefix0`, `prefix1`, ... to `peer` until told to stop, one attempt each;
/// records the numbers the server acknowledged.
fn keep_sending(
    client: Client,
    peer: &'static str,
    prefix: &'static str,
    acked: Arc<Mutex<Vec<usize>>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let target = to(peer);
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
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
fn numbers(got: &[String], prefix: &str) -> Vec<usize> {
    got.iter()
        .filter_map(|t| t.strip_prefix(prefix)?.parse().ok())
        .collect()
}

async fn online(client: &Client) {
    tokio::time::timeout(
        Duration::from_secs(60),
        client.wait_for_state(|s| *s == ConnectionState::Online),
    )
    .await
    .expect("the client reconnected");
}

fn check(received: &[usize], acked: &[usize], who: &str) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_while_sending_and_receiving_loses_and_duplicates_nothing() {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut server = Server::start_in(tempfile::tempdir().unwrap(), &addr, &[]);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ann = register(&server, da.path(), "ann", Default::default()).await;
    let ben = register(&server, db.path(), "ben", Default::default()).await;
    ann.send(&to("ben"), "start").await.unwrap();
    ben.sync().await.unwrap();

    let (acked_a, acked_b) = (Arc::default(), Arc::default());
    let stop = Arc::new(AtomicBool::new(false));
    let senders = [
        keep_sending(
            ann.clone(),
            "ben",
            "a",
            Arc::clone(&acked_a),
            Arc::clone(&stop),
        ),
        keep_sending(
            ben.clone(),
            "ann",
            "b",
            Arc::clone(&acked_b),
            Arc::clone(&stop),
        ),
    ];
    for round in 1..=ROUNDS {
        // Kill once both have had this round's messages acknowledged, while they go on.
        let want = round * PER_ROUND;
        for _ in 0..600 {
            let (a, b) = (acked_a.lock().unwrap().len(), acked_b.lock().unwrap().len());
            if a >= want && b >= want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let data = server.kill();
        server = Server::start_in(data, &addr, &[]);
        online(&ann).await;
        online(&ben).await;
    }
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    // Whatever waited in an outbox goes out now; then both read everything.
    for _ in 0..3 {
        inproc::sync_eventually(&ann).await;
        inproc::sync_eventually(&ben).await;
    }
    let acked_a = acked_a.lock().unwrap().clone();
    let acked_b = acked_b.lock().unwrap().clone();
    assert!(acked_a.len() >= ROUNDS * PER_ROUND && acked_b.len() >= ROUNDS * PER_ROUND);
    check(&numbers(&texts(&ben, "ann").await, "a"), &acked_a, "ben");
    check(&numbers(&texts(&ann, "ben").await, "b"), &acked_b, "ann");
    drop(server);
}
