//! Crash safety: `kill -9` of hushd while two clients send and receive, again and again.
//! Every message the server acknowledged is delivered exactly once, in order; nothing
//! is duplicated, whatever was in flight at the kill.
mod inproc;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hush_testing::{Server, free_port};
use inproc::{check, keep_sending, numbers, online, register, texts, to};

const ROUNDS: usize = 5;
/// Acknowledged messages between two kills.
const PER_ROUND: usize = 8;

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
