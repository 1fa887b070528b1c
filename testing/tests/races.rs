//! Issue 29: limits that parallel requests cannot race past, and guesses that cost
//! the server bounded memory. Real `hushd`, raw connections with real device tokens.
mod inproc;

use hush_client::channels::ChannelAccess;
use hush_client::connection::Connection;
use hush_client::home::Home;
use hush_client::hush_proto::ErrorCode;
use hush_client::hush_proto::content::GroupName;
use hush_client::hush_proto::fingerprint::Fingerprint;
use hush_client::hush_proto::ids::ChannelPassword;
use hush_client::hush_proto::pb::{self, client_frame::Body};
use hush_client::hush_proto::response::Response;
use hush_client::trust::{FirstUse, KnownServers};
use hush_testing::{Server, peak_rss_kib};
use inproc::{dirs, raw, register};

fn code(r: &Result<Response, hush_client::ClientError>) -> Option<ErrorCode> {
    r.as_ref().err().and_then(|e| e.server_code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_channel_password_guesses_are_all_counted_and_memory_stays_bounded() {
    // A login window long enough that no count expires during the test; 10 guesses
    // per user and 30 per address (the defaults).
    let server = Server::with_limits("login_window_secs = 3600");
    let d = dirs::<5>();
    let owner = register(&server, d[0].path(), "owner", Default::default()).await;
    owner
        .create_channel(
            &GroupName::parse("vault").unwrap(),
            ChannelAccess {
                password: Some(ChannelPassword::parse("the right one").unwrap()),
                totp: false,
            },
        )
        .await
        .unwrap();
    owner.close().await;
    let mut guessers = Vec::new();
    for (i, dir) in d[1..].iter().enumerate() {
        register(
            &server,
            dir.path(),
            &format!("guesser{i}"),
            Default::default(),
        )
        .await
        .close()
        .await;
        guessers.push(dir.path().to_owned());
    }
    let before = peak_rss_kib(server.pid().unwrap()).unwrap();

    // 4 accounts x 32 connections, every guess at once.
    let mut conns = Vec::new();
    for dir in &guessers {
        for _ in 0..32 {
            conns.push(raw(&server, dir).await);
        }
    }
    let guesses = conns.into_iter().enumerate().map(|(i, conn)| {
        tokio::spawn(async move {
            let answer = conn
                .request(Body::JoinChannel(pb::JoinChannel {
                    name: "vault".into(),
                    password: format!("guess {i}"),
                    code: String::new(),
                }))
                .await;
            code(&answer)
        })
    });
    let mut wrong = 0;
    let mut limited = 0;
    for g in guesses {
        match g.await.unwrap() {
            Some(ErrorCode::ChannelPasswordWrong) => wrong += 1,
            Some(ErrorCode::RateLimited) => limited += 1,
            other => panic!("unexpected answer to a wrong guess: {other:?}"),
        }
    }
    assert_eq!(wrong + limited, 128);
    // Each guess was counted before it was checked: no more than the address's 30
    // (and each user's 10) were ever hashed and found wrong.
    assert!(wrong <= 30, "{wrong} wrong guesses were checked");
    assert!(wrong >= 1, "some guesses were checked");
    let after = peak_rss_kib(server.pid().unwrap()).unwrap();
    // At most `concurrent_password_hashes` (4) hashes of 19 MiB run at once.
    assert!(
        after.saturating_sub(before) < 200 * 1024,
        "peak memory grew by {} KiB",
        after - before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_creation_counts_against_the_hourly_quota_and_a_junk_group_info_is_refused() {
    let server = Server::with_limits("groups_per_account_per_hour = 3");
    let d = dirs::<1>();
    let maker = register(&server, d[0].path(), "maker", Default::default()).await;
    let access = || ChannelAccess {
        password: Some(ChannelPassword::parse("a password to hash").unwrap()),
        totp: false,
    };
    for i in 0..3 {
        maker
            .create_channel(&GroupName::parse(&format!("chan{i}")).unwrap(), access())
            .await
            .unwrap();
    }
    let over = maker
        .create_channel(&GroupName::parse("chan3").unwrap(), access())
        .await;
    assert_eq!(
        over.as_ref().err().and_then(|e| e.server_code()),
        Some(ErrorCode::RateLimited),
        "{over:?}"
    );
    maker.close().await;

    // A channel whose GroupInfo is junk is refused before anything is kept.
    let conn = raw(&server, d[0].path()).await;
    let me = Home::open(d[0].path())
        .unwrap()
        .account()
        .unwrap()
        .unwrap()
        .device_id;
    let created = conn
        .request(Body::CreateGroup(pb::CreateGroup {
            group_id: vec![9; 16].into(),
            name: "junkinfo".into(),
            members: vec![me.as_bytes().to_vec().into()],
            channel: Some(pb::ChannelSettings {
                open: true,
                group_info: vec![0u8; 32].into(),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await;
    assert_eq!(
        code(&created),
        Some(ErrorCode::InvalidArgument),
        "{created:?}"
    );
}

/// A connection that has said hello and nothing else.
async fn anonymous(server: &Server, dir: &std::path::Path) -> Connection {
    let fp = Fingerprint::parse(&server.fingerprint).unwrap();
    Connection::connect(&server.addr, &KnownServers::new(dir), &FirstUse::Expect(fp))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_works_after_many_unknown_ones_from_its_address() {
    let server = Server::start(&[]);
    let d = dirs::<2>();
    register(&server, d[0].path(), "ann", Default::default())
        .await
        .close()
        .await;
    // 40 unknown tokens from this address (the limit is 30 a window).
    let mut limited = 0;
    for i in 0..40u8 {
        let conn = anonymous(&server, d[1].path()).await;
        let answer = conn
            .request(Body::Authenticate(pb::Authenticate {
                session_token: vec![i; 32].into(),
            }))
            .await;
        match code(&answer) {
            Some(ErrorCode::Unauthenticated) => {}
            Some(ErrorCode::RateLimited) => limited += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(limited >= 10, "junk tokens are limited ({limited})");
    // ann's real token still resumes her device from the same address.
    let conn = raw(&server, d[0].path()).await;
    let who = conn.request(Body::Whoami(pb::WhoAmI {})).await;
    assert!(matches!(who, Ok(Response::Account(_))), "{who:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_registrations_stop_at_the_limit() {
    let server = Server::with_limits("registrations_per_address_per_hour = 5");
    let d: Vec<tempfile::TempDir> = (0..12).map(|_| tempfile::tempdir().unwrap()).collect();
    let tries = d.iter().enumerate().map(|(i, dir)| {
        let dir = dir.path().to_owned();
        let addr = server.addr.clone();
        let pin = inproc::pin(&server);
        tokio::spawn(async move {
            hush_client::Client::enrol(
                &dir,
                &addr,
                pin,
                hush_client::Enrolment::Register {
                    username: inproc::user(&format!("racer{i}")),
                    password: zeroize::Zeroizing::new(inproc::PASSWORD.to_vec()),
                    invite: None,
                    profile: Default::default(),
                },
                Default::default(),
            )
            .await
            .map(|(c, _)| c)
        })
    });
    let mut made = 0;
    for t in tries {
        match t.await.unwrap() {
            Ok(c) => {
                made += 1;
                c.close().await;
            }
            Err(e) => assert_eq!(e.server_code(), Some(ErrorCode::RateLimited), "{e}"),
        }
    }
    assert_eq!(made, 5, "exactly the limit registered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_logins_for_names_nobody_has_leaves_the_store_small() {
    let server = Server::with_limits("login_failures_per_address = 100000");
    let d = dirs::<1>();
    let conn = anonymous(&server, d[0].path()).await;
    let mut rng = opaque_ke::rand::rngs::OsRng;
    for i in 0..400 {
        let start = opaque_ke::ClientLogin::<hush_client::hush_proto::auth::OpaqueSuite>::start(
            &mut rng, b"a guess",
        )
        .unwrap();
        let answer = conn
            .request(Body::LoginStart(pb::LoginStart {
                username: format!("nobody{i}"),
                credential_request: start.message.serialize().to_vec().into(),
            }))
            .await;
        assert!(
            matches!(answer, Ok(Response::LoginChallenge(_))),
            "{answer:?}"
        );
    }
    let db = rusqlite::Connection::open(server.data_dir().join("hushd.db")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    let rows: i64 = db
        .query_row("SELECT COUNT(*) FROM failures", [], |r| r.get(0))
        .unwrap();
    assert!(rows < 5, "{rows} failure rows for names nobody has");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_account_cannot_drain_another_users_key_packages() {
    let server = Server::with_limits("key_package_claims_per_target_per_hour = 5");
    let d = dirs::<3>();
    register(&server, d[0].path(), "victim", Default::default())
        .await
        .close()
        .await;
    register(&server, d[1].path(), "drainer", Default::default())
        .await
        .close()
        .await;
    register(&server, d[2].path(), "friend", Default::default())
        .await
        .close()
        .await;
    let claim = || {
        Body::ClaimKeyPackages(pb::ClaimKeyPackages {
            usernames: vec!["victim".into()],
        })
    };
    let drainer = raw(&server, d[1].path()).await;
    for _ in 0..5 {
        let got = drainer.request(claim()).await;
        assert!(matches!(got, Ok(Response::KeyPackages(_))), "{got:?}");
    }
    let refused = drainer.request(claim()).await;
    assert_eq!(code(&refused), Some(ErrorCode::RateLimited), "{refused:?}");
    // Others still get the victim's packages.
    let friend = raw(&server, d[2].path()).await;
    let got = friend.request(claim()).await;
    assert!(matches!(got, Ok(Response::KeyPackages(p)) if !p.is_empty()));
}
