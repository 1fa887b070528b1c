//! The store's hot path on a real SQLite file (WAL, `synchronous = FULL`): a message
//! enqueued for one recipient (alone, and 64 at once, which one group commit takes),
//! a page of the mailbox fetched, and entries acknowledged. `cargo bench -p
//! hush-store-sqlite`. Each durable write includes its commit's fsync, so the numbers
//! depend on the disk as much as on the code.
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use hush_proto::ids::{DeviceId, GroupId, UserId, Username};
use hush_store::{NewDevice, NewGroup, NewMessage, NewUser, Quotas, Store};
use hush_store_sqlite::SqliteStore;

const SENDER: [u8; 16] = [1; 16];
const RECIPIENT: [u8; 16] = [2; 16];
const GROUP: [u8; 16] = [9; 16];

fn user(n: u8, name: &str) -> NewUser {
    NewUser {
        user_id: UserId::from_bytes([n; 16]),
        username: Username::parse(name).unwrap(),
        display_name: None,
        email: None,
        password_file: vec![n; 64],
        created_at: 1_000,
        device: NewDevice {
            device_id: DeviceId::from_bytes([n; 16]),
            name: None,
            token_digest: [n; 32],
            created_at: 1_000,
        },
        invite: None,
        account_key: [n; 32],
        sealed_account_key: vec![n; 60],
    }
}

/// A store with two users and their 1:1 group.
fn setup(rt: &tokio::runtime::Runtime) -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("bench.db")).unwrap();
    rt.block_on(async {
        store.create_user(user(1, "ann")).await.unwrap();
        store.create_user(user(2, "ben")).await.unwrap();
        store
            .create_group(NewGroup {
                channel: None,
                group_id: GroupId::from_bytes(GROUP),
                creator: DeviceId::from_bytes(SENDER),
                direct: Some((UserId::from_bytes([1; 16]), UserId::from_bytes([2; 16]))),
                name: None,
                members: vec![
                    DeviceId::from_bytes(SENDER),
                    DeviceId::from_bytes(RECIPIENT),
                ],
                welcome: Some(vec![0; 8]),
                now_ms: 1_000,
                client_key: None,
                quotas: Quotas::UNLIMITED,
                public_state: None,
            })
            .await
            .unwrap();
    });
    (dir, store)
}

fn message(n: u64) -> NewMessage {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&n.to_be_bytes());
    NewMessage {
        group_id: GroupId::from_bytes(GROUP),
        epoch: 1,
        sender: DeviceId::from_bytes(SENDER),
        client_message_id: id,
        ciphertext: vec![0xa5; 256],
        now_ms: 2_000,
        quotas: Quotas::UNLIMITED,
    }
}

fn store(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_dir, store) = setup(&rt);
    let next = AtomicU64::new(0);
    let mut g = c.benchmark_group("sqlite store");
    g.sample_size(30);
    g.throughput(Throughput::Elements(1));
    g.bench_function("enqueue one message (a commit of its own)", |b| {
        b.iter(|| {
            let n = next.fetch_add(1, Ordering::Relaxed);
            rt.block_on(store.enqueue_message(message(n))).unwrap()
        })
    });
    g.throughput(Throughput::Elements(64));
    g.bench_function("enqueue 64 messages at once (group commit)", |b| {
        b.iter(|| {
            let base = next.fetch_add(64, Ordering::Relaxed);
            rt.block_on(futures::future::try_join_all(
                (0..64).map(|i| store.enqueue_message(message(base + i))),
            ))
            .unwrap()
        })
    });
    let recipient = DeviceId::from_bytes(RECIPIENT);
    g.throughput(Throughput::Elements(100));
    g.bench_function("fetch a page of 100 entries", |b| {
        b.iter(|| {
            rt.block_on(store.fetch_mailbox(recipient, 0, 100, 1 << 20))
                .unwrap()
        })
    });
    g.throughput(Throughput::Elements(64));
    g.bench_function("acknowledge 64 entries", |b| {
        b.iter_batched(
            || {
                // Whatever is queued: refilled when the mailbox runs low.
                let page = rt
                    .block_on(store.fetch_mailbox(recipient, 0, 64, 1 << 20))
                    .unwrap();
                if page.entries.len() < 64 {
                    let base = next.fetch_add(256, Ordering::Relaxed);
                    rt.block_on(futures::future::try_join_all(
                        (0..256).map(|i| store.enqueue_message(message(base + i))),
                    ))
                    .unwrap();
                }
                rt.block_on(store.fetch_mailbox(recipient, 0, 64, 1 << 20))
                    .unwrap()
                    .entries
                    .iter()
                    .map(|e| e.id)
                    .collect::<Vec<_>>()
            },
            |ids| rt.block_on(store.ack(recipient, &ids, 0)).unwrap(),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, store);
criterion_main!(benches);
