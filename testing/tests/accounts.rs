//! Accounts end to end: real hushd, real hush, real TLS and SQLite.
use hush_testing::{Client, Server, fails, find_bytes, ok};

const PW: &str = "correct horse battery";

#[test]
fn register_whoami_and_login_as_a_second_device() {
    let server = Server::start(&[]);
    let ann = Client::new();
    let out = ok(&ann.register(
        &server,
        "ann",
        PW,
        &["--display-name", "Ann A", "--email", "ann@example.org"],
    ));
    assert!(out.contains("registered ann"), "{out}");

    let me = ann.whoami().unwrap();
    assert_eq!(me["username"], "ann");
    assert_eq!(me["display_name"], "Ann A");
    assert_eq!(me["email"], "ann@example.org");
    assert_eq!(me["fingerprint"], server.fingerprint.as_str());

    let laptop = Client::new();
    ok(&laptop.login(&server, "ann", PW));
    let other = laptop.whoami().unwrap();
    assert_eq!(other["username"], "ann");
    assert_eq!(other["user_id"], me["user_id"], "same account");
    assert_ne!(other["device"], me["device"], "a login is a new device");

    let text = ok(&ann.run("", &["whoami"]));
    assert!(text.starts_with("ann (Ann A) on "), "{text}");
}

#[test]
fn wrong_password_and_unknown_user_are_refused_alike() {
    let server = Server::start(&[]);
    ok(&Client::new().register(&server, "ann", PW, &[]));
    let thief = Client::new();
    fails(
        &thief.login(&server, "ann", "not the password"),
        3,
        "wrong username or password",
    );
    fails(
        &thief.login(&server, "nobody", PW),
        3,
        "wrong username or password",
    );
    assert!(thief.whoami().is_err(), "a failed login stores no account");
}

#[test]
fn duplicate_username_is_refused() {
    let server = Server::start(&[]);
    ok(&Client::new().register(&server, "ann", PW, &[]));
    fails(
        &Client::new().register(&server, "ann", "another password", &[]),
        1,
        "taken",
    );
}

#[test]
fn usernames_follow_the_rules_with_clear_errors() {
    let server = Server::start(&[]);
    let c = Client::new();
    fails(&c.register(&server, "Ann", PW, &[]), 1, "lowercase letters");
    fails(&c.register(&server, "an", PW, &[]), 1, "3 to 32");
    fails(&c.register(&server, &"a".repeat(33), PW, &[]), 1, "3 to 32");
    ok(&c.register(&server, "a.b-c_9", PW, &[]));
}

#[test]
fn invite_mode_needs_a_valid_unused_unexpired_invite() {
    let server = Server::start(&["--registration", "invite"]);
    fails(
        &Client::new().register(&server, "ann", PW, &[]),
        1,
        "invite code",
    );
    fails(
        &Client::new().register(&server, "ann", PW, &["--invite", "made-up-code"]),
        1,
        "unknown, expired or used up",
    );

    let code = ok(&server.admin(&["invite", "create", "--uses", "1"]))
        .trim()
        .to_owned();
    ok(&Client::new().register(&server, "ann", PW, &["--invite", &code]));
    fails(
        &Client::new().register(&server, "ben", PW, &["--invite", &code]),
        1,
        "unknown, expired or used up",
    );

    let expiring = ok(&server.admin(&["invite", "create", "--expires", "1s"]))
        .trim()
        .to_owned();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    fails(
        &Client::new().register(&server, "cat", PW, &["--invite", &expiring]),
        1,
        "unknown, expired or used up",
    );

    let two = ok(&server.admin(&["invite", "create", "--uses", "2", "--expires", "1h"]))
        .trim()
        .to_owned();
    ok(&Client::new().register(&server, "dan", PW, &["--invite", &two]));
    ok(&Client::new().register(&server, "eve", PW, &["--invite", &two]));
    fails(
        &Client::new().register(&server, "fay", PW, &["--invite", &two]),
        1,
        "used up",
    );
}

#[test]
fn closed_mode_refuses_registration_but_allows_login() {
    let data = tempfile::tempdir().unwrap();
    let open = Server::start_in(data, "127.0.0.1:0", &[]);
    ok(&Client::new().register(&open, "ann", PW, &[]));
    let (_, data) = open.stop();
    let closed = Server::start_in(data, "127.0.0.1:0", &["--registration", "closed"]);
    fails(
        &Client::new().register(&closed, "ben", PW, &[]),
        1,
        "does not accept new accounts",
    );
    ok(&Client::new().login(&closed, "ann", PW));
}

#[test]
fn a_disabled_user_is_refused_until_enabled() {
    let server = Server::start(&[]);
    let ann = Client::new();
    ok(&ann.register(&server, "ann", PW, &[]));

    // The admin command acts on the data dir while the server runs.
    let out = ok(&server.admin(&["user", "disable", "ann"]));
    assert!(out.contains("ann disabled"), "{out}");
    fails(&Client::new().login(&server, "ann", PW), 3, "disabled");
    let refused = ann.whoami().unwrap_err();
    fails(&refused, 3, "disabled");

    ok(&server.admin(&["user", "enable", "ann"]));
    assert_eq!(ann.whoami().unwrap()["username"], "ann");
    ok(&Client::new().login(&server, "ann", PW));
}

#[test]
fn operators_list_promote_demote_and_delete_users() {
    let server = Server::start(&[]);
    let ann = Client::new();
    let first = ok(&ann.register(&server, "ann", PW, &[]));
    // A fresh server's first account administers it, and is told so.
    assert!(first.contains("first account on this server"), "{first}");
    assert_eq!(ann.whoami().unwrap()["admin"], true);
    let ben = Client::new();
    let second = ok(&ben.register(&server, "ben", PW, &[]));
    assert!(!second.contains("administers"), "{second}");
    assert_eq!(ben.whoami().unwrap()["admin"], false);

    ok(&server.admin(&["user", "promote", "ben"]));
    assert_eq!(ben.whoami().unwrap()["admin"], true);
    let list = ok(&server.admin(&["user", "list", "--json"]));
    let rows: Vec<serde_json::Value> = list
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["username"], "ann");
    assert_eq!(rows[0]["admin"], true);
    assert_eq!(rows[1]["admin"], true);
    ok(&server.admin(&["user", "demote", "ben"]));
    assert_eq!(ben.whoami().unwrap()["admin"], false);

    ok(&server.admin(&["user", "delete", "ben"]));
    fails(&ben.whoami().unwrap_err(), 3, "log in again");
    let missing = server.admin(&["user", "delete", "ben"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no user named"));
}

#[test]
fn logout_ends_the_device_session() {
    let server = Server::start(&[]);
    let ann = Client::new();
    ok(&ann.register(&server, "ann", PW, &[]));
    let token_file = ann.home.path().join("hush.db");
    assert!(token_file.exists());
    ok(&ann.run("", &["logout"]));
    fails(&ann.whoami().unwrap_err(), 3, "not logged in");
    // The same home can log in again as a new device.
    ok(&ann.login(&server, "ann", PW));
}

/// P320: an attacker's guesses slow an account's logins down but never lock its user
/// out; an address that keeps guessing gets no more challenges; token resumes are never
/// blocked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guesses_do_not_lock_the_real_user_out_but_stop_the_guesser() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hushd.toml");
    std::fs::write(
        &config,
        "[limits]\nlogin_failures_per_account = 2\nlogin_failures_per_address = 5\nlogin_window_secs = 600\n",
    )
    .unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let ann = Client::new();
    ok(&ann.register(&server, "ann", PW, &[]));

    // The guesser, from 127.0.0.2, starts logins it never finishes (each one an
    // offline guess), until its address is refused.
    let mut refused = false;
    for _ in 0..8 {
        match guess(&server.addr, "ann").await {
            Guess::Challenged => {}
            Guess::Refused => {
                refused = true;
                break;
            }
        }
    }
    assert!(refused, "the guessing address is stopped");
    // The real user, from 127.0.0.1, still logs in (slowed, not locked) and resumes.
    ok(&Client::new().login(&server, "ann", PW));
    ok(&ann.run("", &["whoami"]));
    assert!(
        server
            .log()
            .iter()
            .any(|l| l.contains("slowing down logins")),
        "the account's logins were slowed"
    );
}

enum Guess {
    Challenged,
    Refused,
}

/// One unfinished OPAQUE login for `user` from 127.0.0.2.
async fn guess(addr: &str, user: &str) -> Guess {
    use hush_client::hush_proto::auth::OpaqueSuite;
    use hush_client::hush_proto::pb::{self, client_frame::Body, server_frame};
    use prost::Message;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let tcp = socket.connect(addr.parse().unwrap()).await.unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(hush_client::trust::RecordingVerifier::new(&provider))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"hush/1".to_vec()];
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let mut rng = opaque_ke::rand::rngs::OsRng;
    let start = opaque_ke::ClientLogin::<OpaqueSuite>::start(&mut rng, b"a wrong guess").unwrap();
    for (id, body) in [
        (
            1,
            Body::Hello(pb::Hello {
                versions: vec![1],
                client: "guesser".into(),
            }),
        ),
        (
            2,
            Body::LoginStart(pb::LoginStart {
                username: user.into(),
                credential_request: start.message.serialize().to_vec().into(),
            }),
        ),
    ] {
        let frame = pb::ClientFrame {
            request_id: id,
            body: Some(body),
        };
        s.write_all(&hush_client::hush_proto::frame::encode(&frame))
            .await
            .unwrap();
    }
    for _ in 0..2 {
        let len = s.read_u32().await.unwrap() as usize;
        let mut buf = vec![0; len];
        s.read_exact(&mut buf).await.unwrap();
        let f = pb::ServerFrame::decode(&buf[..]).unwrap();
        match f.body {
            Some(server_frame::Body::LoginChallenge(_)) => return Guess::Challenged,
            Some(server_frame::Body::Error(e)) => {
                assert_eq!(e.code, pb::ErrorCode::RateLimited as i32, "{e:?}");
                return Guess::Refused;
            }
            _ => {}
        }
    }
    panic!("no answer to LoginStart")
}

#[test]
fn the_password_reaches_no_file_of_the_server() {
    let marker = "Zebra-Marker-Password-7781";
    let server = Server::start(&["--log", "debug"]);
    let ann = Client::new();
    ok(&ann.register(&server, "ann", marker, &[]));
    ok(&Client::new().login(&server, "ann", marker));
    fails(
        &Client::new().login(&server, "ann", "Zebra-Wrong-Password"),
        3,
        "wrong",
    );
    let log = server.log().join("\n");
    let (status, data) = server.stop();
    assert!(status.success());
    let dir = data.path().join("srv");
    assert!(dir.join("hushd.db").exists());
    assert_eq!(
        find_bytes(&dir, marker.as_bytes()),
        None,
        "password found on the server"
    );
    assert_eq!(find_bytes(&dir, b"Zebra-Wrong"), None);
    assert!(!log.contains("Zebra"), "password in the server log");
    // The client keeps no password either, only its device token.
    assert_eq!(find_bytes(ann.home.path(), marker.as_bytes()), None);
}

#[test]
fn open_registration_is_limited_per_address_per_hour() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hushd.toml");
    std::fs::write(
        &config,
        "[limits]\nregistrations_per_address_per_hour = 2\n",
    )
    .unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    ok(&Client::new().register(&server, "one", PW, &[]));
    ok(&Client::new().register(&server, "two", PW, &[]));
    fails(
        &Client::new().register(&server, "three", PW, &[]),
        3,
        "too many new accounts",
    );
    // Logging in is not registering.
    ok(&Client::new().login(&server, "one", PW));
}

#[test]
fn a_failed_register_or_login_leaves_the_home_as_it_was() {
    let server = Server::start(&[]);
    ok(&Client::new().register(&server, "ann", PW, &[]));
    let home = Client::new();
    // Nobody listens there.
    let port = hush_testing::free_port();
    let out = home.run(
        PW,
        &[
            "register",
            "--server",
            &format!("127.0.0.1:{port}"),
            "--username",
            "ben",
            "--trust-new-server",
        ],
    );
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("WARN"),
        "one error line, no log noise: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        hush_testing::files_below(home.home.path()),
        Vec::<std::path::PathBuf>::new()
    );
    fails(
        &home.login(&server, "ann", "not the password"),
        3,
        "wrong username or password",
    );
    assert_eq!(
        hush_testing::files_below(home.home.path()),
        Vec::<std::path::PathBuf>::new()
    );
    // A file of the user's own stays; then the home works as usual.
    std::fs::write(home.home.path().join("notes.txt"), "mine").unwrap();
    fails(&home.login(&server, "ann", "not the password"), 3, "wrong");
    assert_eq!(hush_testing::files_below(home.home.path()).len(), 1);
    ok(&home.login(&server, "ann", PW));
    assert_eq!(home.whoami().unwrap()["username"], "ann");
}

#[test]
fn the_home_config_file_supplies_the_server_and_username() {
    let server = Server::start(&[]);
    let ann = Client::new();
    std::fs::write(
        ann.home.path().join("hush.toml"),
        format!("server = \"{}\"\nusername = \"cfg_ann\"\n", server.addr),
    )
    .unwrap();
    let out = ok(&ann.run(
        PW,
        &["register", "--server-fingerprint", &server.fingerprint],
    ));
    assert!(
        out.contains(&format!("registered cfg_ann on {}", server.addr)),
        "{out}"
    );

    // The file's username, a flag's server.
    let laptop = Client::new();
    std::fs::write(
        laptop.home.path().join("hush.toml"),
        "username = \"cfg_ann\"\n",
    )
    .unwrap();
    ok(&laptop.run(
        PW,
        &[
            "login",
            "--server",
            &server.addr,
            "--server-fingerprint",
            &server.fingerprint,
        ],
    ));
    assert_eq!(laptop.whoami().unwrap()["username"], "cfg_ann");

    // Without a username anywhere, and not on a terminal: said so.
    let other = Client::new();
    fails(
        &other.run(
            PW,
            &["login", "--server", &server.addr, "--trust-new-server"],
        ),
        1,
        "--username is required",
    );
    // A broken file is named, with what is wrong in it.
    std::fs::write(other.home.path().join("hush.toml"), "sever = \"x\"\n").unwrap();
    fails(
        &other.run(
            PW,
            &["login", "--username", "cfg_ann", "--trust-new-server"],
        ),
        1,
        "hush.toml",
    );
    let err = String::from_utf8_lossy(
        &other
            .run(
                PW,
                &["login", "--username", "cfg_ann", "--trust-new-server"],
            )
            .stderr,
    )
    .into_owned();
    assert!(err.contains("unknown field `sever`"), "{err}");
}

#[test]
fn without_a_server_flag_or_file_the_default_is_127_0_0_1_5535() {
    let c = Client::new();
    let out = c.run(PW, &["login", "--username", "ann", "--trust-new-server"]);
    let err = String::from_utf8_lossy(&out.stderr);
    // Nothing listens there in the tests (every server binds port 0).
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("127.0.0.1:5535"), "{err}");
}

#[test]
fn the_home_config_file_sets_output_defaults_that_flags_override() {
    let server = Server::start(&[]);
    let clients = hush_testing::registered(&server, &["ann", "ben"], PW);
    let (ann, ben) = (&clients[0], &clients[1]);
    for t in ["one", "two", "three"] {
        ann.send("ben", t);
    }
    ok(&ben.run("", &["recv", "--timeout", "5"]));
    std::fs::write(
        ben.home.path().join("hush.toml"),
        "output = \"json\"\nhistory_limit = 2\n",
    )
    .unwrap();
    // JSON without --json, and the file's count without --limit.
    let out = ok(&ben.run("", &["history", "ann"]));
    let lines = hush_testing::json_lines(&out);
    assert_eq!(hush_testing::texts(&lines), ["two", "three"], "{out}");
    let who = ok(&ben.run("", &["whoami"]));
    assert_eq!(hush_testing::json_lines(&who)[0]["username"], "ben");
    // Flags win: --text and --limit.
    let out = ok(&ben.run("", &["--text", "history", "ann", "--limit", "3"]));
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.lines().all(|l| l.contains("<ann> ")), "{out}");
    // A command without --json is untouched.
    let out = ok(&ben.run("", &["send", "ann", "hi"]));
    assert!(!out.trim_start().starts_with('{'), "{out}");
}

/// `hush man`, `hushd man` and `hush completions SHELL` come from the flags, need no
/// home or data dir, and create none.
#[test]
fn manual_pages_and_completions_need_no_home() {
    let scratch = tempfile::tempdir().unwrap();
    let home = scratch.path().join("never-made");
    let run = |bin: &str, args: &[&str]| {
        let out = std::process::Command::new(hush_testing::bin(bin))
            .args(args)
            .env("HUSH_HOME", &home)
            .current_dir(scratch.path())
            .output()
            .unwrap();
        ok(&out)
    };
    let page = run("hush", &["man"]);
    assert!(page.contains(".TH hush 1"), "{page}");
    for needle in [
        "register",
        "\\-\\-server\\-fingerprint",
        ".SS \"hush channel join\"",
        "EXIT STATUS",
        "authentication refused",
    ] {
        assert!(page.contains(needle), "{needle} missing from hush(1)");
    }
    let page = run("hushd", &["man"]);
    assert!(
        page.contains(".TH hushd 1") && page.contains("fingerprint"),
        "{page}"
    );
    assert!(page.contains(".SS \"hushd user disable\""), "{page}");
    for shell in ["bash", "zsh", "fish"] {
        let script = run("hush", &["completions", shell]);
        assert!(
            script.contains("register") && script.contains("channel"),
            "{shell}: {script}"
        );
    }
    assert!(run("hushd", &["completions", "bash"]).contains("fingerprint"));
    let dir = scratch.path().join("man");
    let said = run("hush", &["man", "--out-dir", dir.to_str().unwrap()]);
    assert!(said.contains("hush.1"), "{said}");
    assert!(
        std::fs::read_to_string(dir.join("hush.1"))
            .unwrap()
            .contains(".TH hush 1")
    );
    fails(
        &std::process::Command::new(hush_testing::bin("hush"))
            .args(["completions", "tcsh"])
            .output()
            .unwrap(),
        2,
        "tcsh",
    );
    assert!(!home.exists(), "a home was made");
    assert!(
        !scratch.path().join("hushd-data").exists(),
        "a data dir was made"
    );
}
