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
