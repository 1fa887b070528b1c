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
    ok(&Client::new().register(&server, "ann", PW, &[]));
    let ben = Client::new();
    ok(&ben.register(&server, "ben", PW, &[]));

    ok(&server.admin(&["user", "promote", "ben"]));
    assert_eq!(ben.whoami().unwrap()["admin"], true);
    let list = ok(&server.admin(&["user", "list", "--json"]));
    let rows: Vec<serde_json::Value> = list
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["username"], "ann");
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

#[test]
fn failed_logins_are_rate_limited_per_account() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hushd.toml");
    std::fs::write(
        &config,
        "[limits]\nlogin_failures_per_account = 3\nlogin_window_secs = 600\n",
    )
    .unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    ok(&Client::new().register(&server, "ann", PW, &[]));
    let c = Client::new();
    for _ in 0..3 {
        fails(
            &c.login(&server, "ann", "guess"),
            3,
            "wrong username or password",
        );
    }
    fails(&c.login(&server, "ann", PW), 3, "too many failed logins");
    // Another account is not locked by ann's failures.
    ok(&Client::new().register(&server, "ben", PW, &[]));
    ok(&Client::new().login(&server, "ben", PW));
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
