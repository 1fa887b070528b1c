//! The server's side of an OPAQUE login (`LoginStart`: the OPRF evaluation and the
//! key exchange's first message) for a registered account, the CPU that bounds
//! logins per core. The client's side (argon2) is not measured here. `cargo bench -p
//! hush-server`.
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hush_proto::auth::OpaqueSuite;
use hush_proto::auth::opaque_ke::rand::rngs::OsRng;
use hush_proto::auth::opaque_ke::{
    ClientLogin, ClientRegistration, ClientRegistrationFinishParameters, ServerLogin,
    ServerLoginParameters, ServerRegistration, ServerSetup,
};

fn opaque(c: &mut Criterion) {
    let setup = ServerSetup::<OpaqueSuite>::new(&mut OsRng);
    let password = b"benchmark password, long enough";
    let username = b"ann";
    // One registration, as `RegisterStart`/`RegisterFinish` do it.
    let start = ClientRegistration::<OpaqueSuite>::start(&mut OsRng, password).unwrap();
    let response = ServerRegistration::<OpaqueSuite>::start(&setup, start.message, username)
        .unwrap()
        .message;
    let upload = start
        .state
        .finish(
            &mut OsRng,
            password,
            response,
            ClientRegistrationFinishParameters::default(),
        )
        .unwrap()
        .message;
    let file = ServerRegistration::<OpaqueSuite>::finish(upload);
    let request = ClientLogin::<OpaqueSuite>::start(&mut OsRng, password)
        .unwrap()
        .message;

    let mut g = c.benchmark_group("opaque");
    g.throughput(Throughput::Elements(1));
    g.bench_function("login start (server)", |b| {
        b.iter(|| {
            black_box(
                ServerLogin::start(
                    &mut OsRng,
                    &setup,
                    Some(file.clone()),
                    request.clone(),
                    username,
                    ServerLoginParameters::default(),
                )
                .unwrap(),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, opaque);
criterion_main!(benches);
