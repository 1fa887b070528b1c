//! Channels end to end (P550–P556), with real `hushd` and `hush` processes: a password
//! and an authenticator code (computed here, from the printed URI, by the tests' own
//! RFC 6238 implementation) admit a user, who joins by an MLS external commit; members
//! see every join from their roster; a joiner reads only what follows its join.
use hush_testing::totp::{secret_of, step_now, totp};
use hush_testing::{Client, Server, fails, ok, texts};

const PW: &str = "correct horse battery";
const CHANNEL_PW: &str = "the channel's own secret";

fn with_password(password: &str) -> [(&str, &str); 1] {
    [("HUSH_CHANNEL_PASSWORD", password)]
}

/// `hush channel join` with the channel password `password` and `extra` arguments.
fn join(c: &Client, name: &str, password: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["channel", "join", name];
    args.extend_from_slice(extra);
    c.run_env(PW, &with_password(password), &args)
}

fn members_joined(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "member_joined")
        .map(|e| e["member"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn a_password_and_a_code_admit_a_member_who_reads_only_what_follows() {
    let server = Server::with_limits("login_failures_per_account = 4");
    let v = hush_testing::registered(&server, &["ann", "ben", "cat"], PW);
    let (ann, ben, cat) = (&v[0], &v[1], &v[2]);

    let created = ok(&ann.run_env(
        PW,
        &with_password(CHANNEL_PW),
        &["channel", "create", "team", "--totp"],
    ));
    let mut lines = created.lines();
    assert_eq!(lines.next(), Some("created #team"));
    let uri = lines.next().expect("the otpauth URI");
    assert!(
        uri.starts_with("otpauth://totp/hush:%23team@127.0.0.1"),
        "{uri}"
    );
    for param in ["issuer=hush", "algorithm=SHA1", "digits=6", "period=30"] {
        assert!(uri.contains(param), "{uri} lacks {param}");
    }
    let secret = secret_of(uri);
    let code = |step: u64| totp(&secret, step);

    let listed = ok(&ben.run("", &["channel", "list", "--json"]));
    let team: serde_json::Value = listed
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|c| c["name"] == "#team")
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(team["members"], 1);
    assert_eq!(team["password"], true);
    assert_eq!(team["totp"], true);

    // Bad input, each with its own error and exit code; nothing is joined.
    fails(
        &join(ben, "#nowhere", CHANNEL_PW, &[]),
        1,
        "no channel called #nowhere",
    );
    fails(
        &join(ben, "team", "not it", &["--code", &code(step_now())]),
        9,
        "not the password",
    );
    fails(
        &join(ben, "team", CHANNEL_PW, &[]),
        8,
        "needs the current code",
    );
    fails(
        &join(ben, "team", CHANNEL_PW, &["--code", "12345"]),
        8,
        "6 digits",
    );
    let wrong = format!(
        "{:06}",
        (code(step_now()).parse::<u32>().unwrap() + 1) % 1_000_000
    );
    fails(
        &join(ben, "team", CHANNEL_PW, &["--code", &wrong]),
        8,
        "not the current code",
    );
    fails(
        &join(
            ben,
            "team",
            &"x".repeat(1025),
            &["--code", &code(step_now())],
        ),
        1,
        "1 to 1024 bytes",
    );

    // cat joins; ann sees it from the MLS roster.
    ok(&join(
        cat,
        "#team",
        CHANNEL_PW,
        &["--code", &code(step_now())],
    ));
    assert_eq!(members_joined(&ann.recv(5)), ["cat"]);
    fails(
        &join(cat, "team", CHANNEL_PW, &["--code", &code(step_now())]),
        1,
        "already in #team",
    );
    ann.send("#team", "before ben");
    assert_eq!(texts(&cat.recv(5)), ["before ben"]);

    // ben joins with a code computed from the URI; a second device of ben's is in
    // the channel by itself (P536: from the GroupInfo ben's first device keeps for his
    // account), so it needs no code. (A code's step is used once per user: the store's
    // conformance suite.)
    let step = step_now();
    ok(&join(ben, "team", CHANNEL_PW, &["--code", &code(step)]));
    let ben2 = Client::new();
    ok(&ben2.login(&server, "ben", PW));
    fails(
        &join(&ben2, "team", CHANNEL_PW, &["--code", &code(step)]),
        1,
        "already in #team",
    );
    assert_eq!(members_joined(&ann.recv(5)), ["ben"]);
    assert_eq!(members_joined(&cat.recv(5)), ["ben"]);

    ann.send("#team", "after ben");
    let seen = ben.recv(5);
    assert_eq!(
        texts(&seen),
        ["after ben"],
        "a joiner reads only what follows"
    );
    assert_eq!(texts(&cat.recv(5)), ["after ben"]);
    let members = ok(&ann.run("", &["group", "members", "#team"]));
    assert!(members.starts_with("#team: 3 members"), "{members}");
    cat.send("#team", "hi ben");
    assert_eq!(texts(&ben.recv(5)), ["hi ben"]);
    // A member leaving is seen by the others, from the roster as well.
    ok(&cat.run("", &["group", "leave", "#team"]));
    ann.send("#team", "bye cat");
    let events = ben.recv(5);
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "member_left" && e["member"] == "cat"),
        "{events:?}"
    );

    // Wrong guesses are limited per user: past the limit even the right ones wait.
    // (A join without the code is told so before anything is checked or counted.)
    let dan = Client::new();
    ok(&dan.register(&server, "dan", PW, &[]));
    for _ in 0..4 {
        fails(
            &join(&dan, "team", "wrong", &["--code", &code(step_now())]),
            9,
            "not the password",
        );
    }
    fails(
        &join(&dan, "team", CHANNEL_PW, &["--code", &code(step_now())]),
        10,
        "too many",
    );
}

#[test]
fn the_lobby_and_what_admins_change() {
    let server = Server::start(&[]);
    let v = hush_testing::registered(&server, &["ann", "ben", "cat"], PW);
    let (ann, ben, cat) = (&v[0], &v[1], &v[2]);

    // A fresh server offers an open lobby; the first to join makes it.
    let listed = ok(&ann.run("", &["channel", "list"]));
    assert!(
        listed.contains("#lobby: 0 members, open, the lobby"),
        "{listed}"
    );
    // ben (not a server admin) joins first; the lobby is still not his.
    ok(&ben.run("", &["channel", "join", "lobby"]));
    ok(&ann.run("", &["channel", "join", "#lobby"]));
    assert_eq!(members_joined(&ben.recv(5)), ["ann"]);
    let refused = ben.run("", &["channel", "delete", "lobby"]);
    assert!(!refused.status.success(), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("only admins"),
        "{refused:?}"
    );
    assert!(
        ok(&cat.run("", &["channel", "list"])).contains("#lobby: 2 members"),
        "the lobby stays"
    );
    fails(
        &ann.run_env(
            PW,
            &with_password("x"),
            &["channel", "set", "lobby", "--password"],
        ),
        1,
        "lobby",
    );
    fails(
        &ann.run("", &["group", "create", "lobby"]),
        1,
        "already exists",
    );

    // An open channel gets a password; only admins change it.
    ok(&ann.run("", &["channel", "create", "ops", "--open"]));
    ok(&ben.run("", &["channel", "join", "ops"]));
    ok(&ann.run_env(
        PW,
        &with_password("new one"),
        &["channel", "set", "ops", "--password"],
    ));
    fails(&join(cat, "ops", "wrong", &[]), 9, "not the password");
    fails(
        &ben.run("", &["channel", "set", "ops", "--open"]),
        3,
        "only admins",
    );
    ok(&ann.run("", &["group", "promote", "#ops", "ben"]));
    let rotated = ok(&ben.run("", &["channel", "set", "ops", "--rotate-totp"]));
    let secret = secret_of(rotated.lines().nth(1).expect("the new URI"));
    ok(&join(
        cat,
        "ops",
        "new one",
        &["--code", &totp(&secret, step_now())],
    ));
    let listed = ok(&cat.run("", &["channel", "list"]));
    assert!(
        listed.contains("#ops: 3 members, password + code"),
        "{listed}"
    );

    // Deleting removes every member (they see it for what it is) and the channel.
    ann.recv(5);
    cat.recv(5);
    ok(&ann.run("", &["channel", "delete", "ops"]));
    let events = cat.recv(5);
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "conversation_deleted" && e["by"] == "ann"),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|e| e["type"] == "member_removed"),
        "a deletion is not shown as a removal: {events:?}"
    );
    fails(
        &cat.run("", &["send", "#ops", "still there?"]),
        1,
        "no longer in #ops",
    );
    let listed = ok(&cat.run("", &["channel", "list"]));
    assert!(!listed.contains("#ops"), "{listed}");
}
