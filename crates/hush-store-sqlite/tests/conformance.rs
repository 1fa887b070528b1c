//! The storage conformance suite against a real SQLite file.
use hush_store::Store;
use hush_store_sqlite::SqliteStore;

#[tokio::test]
async fn sqlite_store_passes_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("hush.db")).unwrap();
    hush_store::conformance::run(&store).await;
}

#[tokio::test]
async fn data_survives_reopen_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hush.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        store.secret_or_init("k", vec![5]).await.unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.secret_or_init("k", vec![6]).await.unwrap(), vec![5]);
}

#[test]
fn refuses_a_database_from_a_newer_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hush.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 999).unwrap();
    }
    let err = SqliteStore::open(&path).err().unwrap().to_string();
    assert!(err.contains("newer"), "{err}");
}

#[cfg(unix)]
#[test]
fn the_database_is_owner_only_even_if_it_was_not() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hushd.db");
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _store = SqliteStore::open(&path).unwrap();
    for p in [path.clone(), dir.path().join("hushd.db-wal")] {
        if p.exists() {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
    }
}

#[tokio::test]
async fn the_database_shrinks_after_a_large_drain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hush.db");
    let store = SqliteStore::open(&path).unwrap();
    hush_store::conformance::fill_and_drain(&store, 200).await;
    let pages = |store_path: &std::path::Path| -> (i64, i64) {
        let c = rusqlite::Connection::open(store_path).unwrap();
        let count: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
        let free: i64 = c
            .query_row("PRAGMA freelist_count", [], |r| r.get(0))
            .unwrap();
        (count, free)
    };
    let (before, free) = pages(&path);
    assert!(free > 1000, "the drain freed pages ({free} of {before})");
    // The retention pass gives the free pages back to the file system.
    store.prune(0, 0).await.unwrap();
    let (after, free) = pages(&path);
    assert!(after < before / 2, "{after} pages of {before} remain");
    assert!(free < 100, "{free} free pages remain");
}

#[tokio::test]
async fn a_full_database_refuses_writes_but_drains() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_limited(&dir.path().join("hush.db"), 2 * 1024 * 1024).unwrap();
    hush_store::conformance::drains_when_full(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_store_keeps_its_guarantees_under_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("hush.db")).unwrap();
    hush_store::conformance::run_concurrent(&store).await;
}
