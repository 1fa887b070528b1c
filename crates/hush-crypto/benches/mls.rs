//! MLS as each client runs it per message: a 256-byte application message encrypted
//! by one member of a two-member group and decrypted by the other (ciphersuite
//! 0x0001, PrivateMessage); and what the relay spends per commit (P438): checking a
//! removal against the public state of a 2-, 50- and 200-device group.
//! `cargo bench -p hush-crypto`.
use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use hush_crypto::account::AccountKey;
use hush_crypto::conversation::{Conversation, Incoming};
use hush_crypto::identity::{Identity, validate_key_package};
use hush_proto::ids::{DeviceId, GroupId};
use openmls_rust_crypto::OpenMlsRustCrypto;

fn device(n: u8) -> (OpenMlsRustCrypto, Identity) {
    let p = OpenMlsRustCrypto::default();
    let account = AccountKey::generate();
    let id = Identity::generate(&p, DeviceId::from_bytes([n; 16]), &account, 1).unwrap();
    (p, id)
}

/// Alice's and Bob's providers, identities and views of one two-member group.
struct Pair {
    ap: OpenMlsRustCrypto,
    alice: Identity,
    a: Conversation,
    bp: OpenMlsRustCrypto,
    b: Conversation,
}

fn pair() -> Pair {
    let (ap, alice) = device(1);
    let (bp, bob) = device(2);
    let kp = bob.key_packages(&bp, 1).unwrap().remove(0);
    let (kp, _) = validate_key_package(&ap, &kp, bob.device()).unwrap();
    let mut a = Conversation::create(&ap, &alice, GroupId::from_bytes([9; 16])).unwrap();
    let added = a.add(&ap, &alice, &[kp]).unwrap();
    a.merge_pending(&ap).unwrap();
    let b = Conversation::join(&bp, &added.welcome).unwrap();
    Pair {
        ap,
        alice,
        a,
        bp,
        b,
    }
}

fn mls(c: &mut Criterion) {
    // Bob never reads what the encryption bench sends: the decryption bench has a
    // group of its own (MLS bounds how far ahead a message may be).
    let Pair {
        ap, alice, mut a, ..
    } = pair();
    let text = [0x61u8; 256];

    let mut g = c.benchmark_group("mls");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encrypt 256 B", |bench| {
        bench.iter(|| black_box(a.encrypt(&ap, &alice, black_box(&text)).unwrap()))
    });
    let Pair {
        ap,
        alice,
        mut a,
        bp,
        mut b,
    } = pair();
    g.bench_function("decrypt 256 B", |bench| {
        bench.iter_batched(
            || a.encrypt(&ap, &alice, &text).unwrap(),
            |ct| match b.process(&bp, &ct).unwrap() {
                Incoming::Application { plaintext, .. } => black_box(plaintext),
                _ => unreachable!("an application message"),
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// A group of `n` devices made by device 0, the server's view of it (from the GroupInfo
/// of epoch 1) and a commit removing the last device, not merged.
fn relay_case(n: u8) -> (Vec<u8>, GroupId, Vec<u8>) {
    let gid = GroupId::from_bytes([n; 16]);
    let (ap, alice) = device(0);
    let mut kps = Vec::new();
    let mut last = alice.device();
    for i in 1..n {
        let (p, id) = device(i);
        let kp = id.key_packages(&p, 1).unwrap().remove(0);
        kps.push(validate_key_package(&ap, &kp, id.device()).unwrap().0);
        last = id.device();
    }
    let mut a = Conversation::create(&ap, &alice, gid).unwrap();
    a.add(&ap, &alice, &kps).unwrap();
    a.merge_pending(&ap).unwrap();
    let info = a.take_group_info().unwrap();
    let state = hush_crypto::relay::open_group_info(&info, gid)
        .unwrap()
        .state;
    let commit = a.remove(&ap, &alice, &[last]).unwrap();
    (state, gid, commit)
}

fn relay(c: &mut Criterion) {
    let mut g = c.benchmark_group("relay");
    g.throughput(Throughput::Elements(1));
    for n in [2u8, 50, 200] {
        let (state, gid, commit) = relay_case(n);
        g.bench_function(format!("check a commit, {n} devices"), |bench| {
            bench.iter(|| {
                black_box(hush_crypto::relay::check_commit(&state, gid, &commit, &[]).unwrap())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, mls, relay);
criterion_main!(benches);
