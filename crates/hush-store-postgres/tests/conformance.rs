//! The storage conformance suite against a real PostgreSQL (`HUSH_TEST_DATABASE_URL`),
//! each test in a fresh schema; skipped, and saying so, without the variable.
use hush_store::Store;
use hush_store_postgres::scratch::Scratch;
use hush_store_postgres::{PgStore, PoolConfig};

async fn store(scratch: &Scratch) -> PgStore {
    PgStore::connect(&scratch.url(), PoolConfig::default())
        .await
        .expect("connect to the scratch schema")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_passes_conformance() {
    let Some(scratch) = Scratch::new("postgres_store_passes_conformance").await else {
        return;
    };
    hush_store::conformance::run(&store(&scratch).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_keeps_its_guarantees_under_concurrency() {
    let Some(scratch) = Scratch::new("postgres_store_keeps_its_guarantees_under_concurrency").await
    else {
        return;
    };
    hush_store::conformance::run_concurrent(&store(&scratch).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_on_one_database_keep_the_guarantees() {
    let Some(scratch) = Scratch::new("two_nodes_on_one_database_keep_the_guarantees").await else {
        return;
    };
    let a = store(&scratch).await;
    let b = store(&scratch).await;
    hush_store::conformance::run_concurrent_pair(&a, &b).await;
}

#[tokio::test]
async fn data_survives_reconnect_and_migrations_are_idempotent() {
    let Some(scratch) = Scratch::new("data_survives_reconnect").await else {
        return;
    };
    {
        let s = store(&scratch).await;
        assert!(s.is_empty().await.unwrap());
        s.secret_or_init("k", vec![5]).await.unwrap();
    }
    let s = store(&scratch).await;
    assert_eq!(s.secret_or_init("k", vec![6]).await.unwrap(), vec![5]);
}

#[tokio::test]
async fn refuses_a_database_from_a_newer_version() {
    let Some(scratch) = Scratch::new("refuses_a_newer_database").await else {
        return;
    };
    drop(store(&scratch).await);
    let pool = sqlx::PgPool::connect(&scratch.url()).await.unwrap();
    sqlx::query("INSERT INTO hush_schema (version, name) VALUES (999, 'future')")
        .execute(&pool)
        .await
        .unwrap();
    let err = PgStore::connect(&scratch.url(), PoolConfig::default())
        .await
        .err()
        .expect("a newer schema is refused")
        .to_string();
    assert!(err.contains("newer"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_ups_and_revocations_reach_the_other_nodes() {
    let Some(scratch) = Scratch::new("wake_ups_and_revocations_reach_the_other_nodes").await else {
        return;
    };
    let a = store(&scratch).await;
    let b = store(&scratch).await;
    assert_ne!(a.node(), b.node(), "every store is a node of its own");
    hush_store::conformance::wakes_across_nodes(&a, &b).await;
}

#[tokio::test]
async fn postgres_blobs_pass_the_blob_conformance() {
    let Some(scratch) = Scratch::new("postgres_blobs_pass_the_blob_conformance").await else {
        return;
    };
    let a = store(&scratch).await;
    hush_store::blob::conformance::run(&a.blobs()).await;
    // What one node took, another reads.
    let b = store(&scratch).await;
    let id = hush_proto::ids::FileId::from_bytes([9; 16]);
    let blobs = a.blobs();
    use hush_store::blob::BlobStore as _;
    blobs.append(id, 0, b"sealed ").await.unwrap();
    blobs.append(id, 7, b"bytes").await.unwrap();
    blobs.seal(id).await.unwrap();
    assert_eq!(b.blobs().read(id, 0, 100).await.unwrap(), b"sealed bytes");
    assert_eq!(b.blobs().read(id, 5, 4).await.unwrap(), b"d by");
}

/// Counts what a node's bus hands its hub.
#[derive(Default)]
struct Heard {
    woken: std::sync::Mutex<Vec<hush_proto::ids::DeviceId>>,
    resyncs: std::sync::atomic::AtomicUsize,
}

impl hush_store::CommitListener for Heard {
    fn committed(
        &self,
        _: &[(hush_proto::ids::DeviceId, hush_proto::response::Entry)],
        woken: &[hush_proto::ids::DeviceId],
    ) {
        self.woken.lock().unwrap().extend_from_slice(woken);
    }

    fn resync(&self) {
        self.resyncs
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_its_listen_connection_re_reads_and_hears_again() {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    let Some(scratch) = Scratch::new("a_node_that_lost_its_listen_connection").await else {
        return;
    };
    let a = store(&scratch).await;
    let b = store(&scratch).await;
    let heard = std::sync::Arc::new(Heard::default());
    a.set_listener(heard.clone());
    // The database drops every LISTEN connection of this cluster (a restart, a
    // network cut, an operator's pg_terminate_backend).
    let admin = sqlx::PgPool::connect(&scratch.url()).await.unwrap();
    let dropped: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE query LIKE 'LISTEN %' AND query LIKE '%' || current_schema() || '%'",
    )
    .fetch_all(&admin)
    .await
    .unwrap();
    assert_eq!(
        dropped.len(),
        2,
        "one LISTEN connection per node: {dropped:?}"
    );
    // Wake-ups said meanwhile may be lost: the node tells its hub to re-read.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while heard.resyncs.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no resync after the LISTEN connection was lost"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And it listens again: a write on the other node wakes it.
    let (creator, someone) = (
        hush_proto::ids::DeviceId::from_bytes([7; 16]),
        hush_proto::ids::DeviceId::from_bytes([8; 16]),
    );
    for (n, name) in [(7, "relisten_a"), (8, "relisten_b")] {
        b.create_user(hush_store::conformance::user(n, name))
            .await
            .unwrap();
    }
    let mut n = 0u8;
    loop {
        // Direct Welcomes to `someone` until one is heard (the LISTEN may take a
        // moment to come back).
        n += 1;
        b.create_group(hush_store::NewGroup {
            channel: None,
            group_id: hush_proto::ids::GroupId::from_bytes([n; 16]),
            creator,
            direct: None,
            name: None,
            members: vec![creator, someone],
            welcome: Some(vec![1; 8]),
            now_ms: 1,
            client_key: None,
            quotas: hush_store::Quotas::UNLIMITED,
            public_state: None,
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        if heard.woken.lock().unwrap().contains(&someone) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline + Duration::from_secs(10),
            "the node never heard the other again"
        );
    }
}
