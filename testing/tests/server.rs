//! hushd as an operator meets it: start, identity, trust, restart, shutdown.
use hush_testing::{Client, Server, bin, fails, ok};

const PW: &str = "correct horse battery";

#[test]
fn identity_persists_across_restarts_and_fingerprint_command_agrees() {
    let server = Server::start(&[]);
    let fp = server.fingerprint.clone();
    assert!(fp.starts_with("SHA256:") && fp.len() == 50, "{fp}");
    let printed = ok(&server.admin(&["fingerprint"]));
    assert_eq!(printed.trim(), format!("fingerprint {fp}"));
    let (status, data) = server.stop();
    assert!(
        status.success(),
        "SIGTERM is a graceful shutdown: {status:?}"
    );
    let again = Server::start_in(data, "127.0.0.1:0", &[]);
    assert_eq!(again.fingerprint, fp);
}

#[test]
fn a_changed_server_key_is_a_hard_error_naming_both_fingerprints() {
    let first = Server::start(&[]);
    let addr = first.addr.clone();
    let old_fp = first.fingerprint.clone();
    let ann = Client::new();
    ok(&ann.register(&first, "ann", PW, &[]));
    drop(first);

    // Another server (another key) appears at the same address.
    let impostor = Server::start_in(tempfile::tempdir().unwrap(), &addr, &[]);
    assert_ne!(impostor.fingerprint, old_fp);
    let out = ann.whoami().unwrap_err();
    fails(&out, 4, "may be an attack");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&old_fp) && stderr.contains(&impostor.fingerprint),
        "{stderr}"
    );
    // Even --trust-new-server does not override a pin.
    let forced = ann.run("", &["--trust-new-server", "whoami"]);
    fails(&forced, 4, "may be an attack");
}

#[test]
fn a_wrong_expected_fingerprint_or_an_unknown_server_is_refused() {
    let server = Server::start(&[]);
    let c = Client::new();
    let wrong = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let out = c.run(
        PW,
        &[
            "register",
            "--server",
            &server.addr,
            "--username",
            "ann",
            "--server-fingerprint",
            wrong,
        ],
    );
    fails(&out, 4, "not the expected");
    let out = c.run(
        PW,
        &["register", "--server", &server.addr, "--username", "ann"],
    );
    fails(&out, 4, &server.fingerprint);
    // Nothing was sent: the username is still free.
    ok(&c.run(
        PW,
        &[
            "register",
            "--server",
            &server.addr,
            "--username",
            "ann",
            "--trust-new-server",
        ],
    ));
    assert_eq!(
        c.whoami().unwrap()["fingerprint"],
        server.fingerprint.as_str()
    );
}

#[test]
fn unreachable_server_and_missing_account_have_distinct_exit_codes() {
    let c = Client::new();
    fails(&c.whoami().unwrap_err(), 3, "not logged in");
    let out = c.run(
        PW,
        &[
            "login",
            "--server",
            "127.0.0.1:1",
            "--username",
            "ann",
            "--trust-new-server",
        ],
    );
    fails(&out, 5, "cannot reach");
    let out = c.run(PW, &["send", "ben", "hi"]);
    fails(&out, 3, "not logged in");
    let out = c.run(PW, &["file", "send", "ben", "notes.txt"]);
    fails(&out, 3, "not logged in");
    fails(&c.run(PW, &["files"]), 3, "not logged in");
    fails(&c.run(PW, &["backup", "now"]), 3, "not logged in");
    // Usage errors are 2: a malformed fingerprint, an unknown flag or subcommand.
    let out = c.run(
        PW,
        &[
            "login",
            "--username",
            "ann",
            "--server-fingerprint",
            "SHA256:short",
        ],
    );
    fails(&out, 2, "--server-fingerprint");
    fails(&c.run(PW, &["whoami", "--jsn"]), 2, "--jsn");
    fails(&c.run(PW, &["frobnicate"]), 2, "frobnicate");
}

#[test]
fn config_example_is_valid_and_bad_config_is_explained() {
    let example = std::process::Command::new(bin("hushd"))
        .args(["config", "example"])
        .output()
        .unwrap();
    let text = ok(&example);
    assert!(text.contains("listen = \"127.0.0.1:5535\""), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hushd.toml");
    std::fs::write(&path, text.replace("127.0.0.1:5535", "127.0.0.1:0")).unwrap();
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    assert!(server.addr.starts_with("127.0.0.1:"));

    std::fs::write(&path, "listen = 5\n").unwrap();
    let bad = std::process::Command::new(bin("hushd"))
        .args(["--config", path.to_str().unwrap(), "fingerprint"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).starts_with("error: "));
}

#[test]
fn only_a_server_admin_can_shut_the_server_down() {
    let mut server = Server::start(&[]);
    let ann = Client::new();
    ok(&ann.register(&server, "ann", PW, &[]));
    let ben = Client::new();
    ok(&ben.register(&server, "ben", PW, &[]));
    fails(
        &ben.run("", &["admin", "shutdown"]),
        3,
        "only server admins",
    );
    assert!(server.is_running());
    ok(&server.admin(&["user", "promote", "ann"]));
    let out = ok(&ann.run("", &["admin", "shutdown"]));
    assert!(out.contains("shutting down"), "{out}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while server.is_running() {
        assert!(std::time::Instant::now() < deadline, "hushd kept running");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    fails(&ben.run("", &["admin", "kick", "ben"]), 6, "not available");
}
