//! Two-factor login end to end (P330–P334), with real `hushd` and `hush` processes.
//! Codes are computed here by an RFC 6238 implementation of our own (HMAC-SHA-1 from
//! the `hmac` crate) from the secret in the URI `hush 2fa enable` printed, so the
//! server's TOTP code is checked against something it does not share.
use hush_testing::totp::{base32_decode, secret_of, step_now, totp};
use hush_testing::{Client, Server, fails, ok};

const PW: &str = "correct horse battery staple";

#[test]
fn rfc6238_vectors_for_the_independent_implementation() {
    let secret = b"12345678901234567890";
    assert_eq!(totp(secret, 59 / 30), "287082");
    assert_eq!(totp(secret, 1_111_111_109 / 30), "081804");
    assert_eq!(totp(secret, 20_000_000_000 / 30), "353130");
    assert_eq!(base32_decode("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"), secret);
}

fn login(server: &Server, extra: &[&str]) -> (Client, std::process::Output) {
    login_with(server, PW, extra)
}

/// `hush login` as tfa from a new home, with `password`.
fn login_with(server: &Server, password: &str, extra: &[&str]) -> (Client, std::process::Output) {
    let c = Client::new();
    let mut args = vec![
        "login",
        "--server",
        &server.addr,
        "--username",
        "tfa",
        "--server-fingerprint",
        &server.fingerprint,
    ];
    args.extend_from_slice(extra);
    let out = c.run(password, &args);
    (c, out)
}

#[test]
fn two_factor_login_with_codes_and_recovery_codes() {
    // A low limit, so the test reaches it.
    let server = Server::with_limits("login_failures_per_account = 4");
    let alice = Client::new();
    ok(&alice.register(&server, "tfa", PW, &[]));

    // Not interactive: enable needs --uri-only.
    fails(&alice.run(PW, &["2fa", "enable"]), 1, "--uri-only");
    // Confirming before enabling: nothing waits.
    fails(
        &alice.run(PW, &["2fa", "confirm", "123456"]),
        1,
        "hush 2fa enable",
    );

    let uri = ok(&alice.run(PW, &["2fa", "enable", "--uri-only"]));
    let uri = uri.trim();
    assert!(
        uri.starts_with("otpauth://totp/hush:tfa@127.0.0.1"),
        "{uri}"
    );
    for param in ["issuer=hush", "algorithm=SHA1", "digits=6", "period=30"] {
        assert!(uri.contains(param), "{uri} lacks {param}");
    }
    let secret = secret_of(uri);
    let secret_b32 = uri
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("secret="))
        .unwrap_or_default();
    assert_eq!(secret.len(), 20);

    // A code of the wrong length, and a wrong code, do not turn it on.
    fails(&alice.run(PW, &["2fa", "confirm", "12345"]), 1, "6 digits");
    let wrong = format!(
        "{:06}",
        (totp(&secret, step_now()).parse::<u32>().unwrap() + 1) % 1_000_000
    );
    fails(&alice.run(PW, &["2fa", "confirm", &wrong]), 8, "wrong code");
    let confirmed = ok(&alice.run(PW, &["2fa", "confirm", &totp(&secret, step_now())]));
    assert!(confirmed.contains("two-factor login is on"), "{confirmed}");
    let recovery: Vec<String> = confirmed
        .lines()
        .filter_map(|l| l.strip_prefix("  "))
        .map(str::to_owned)
        .collect();
    assert_eq!(recovery.len(), 10, "{confirmed}");
    assert!(
        recovery
            .iter()
            .all(|r| r.len() == 17 && r.matches('-').count() == 2)
    );
    // Enabling twice is refused while it is on.
    fails(
        &alice.run(PW, &["2fa", "enable", "--uri-only"]),
        1,
        "already on",
    );

    // A login without a code says what it needs; wrong or malformed ones are refused.
    let (_, out) = login(&server, &[]);
    fails(&out, 8, "two-factor");
    let (_, out) = login(&server, &["--code", "12ab"]);
    fails(&out, 8, "recovery code");
    // The wrong password is still the password's error, whatever the code.
    let (_, out) = login_with(&server, "not the password", &["--code", "000000"]);
    fails(&out, 3, "wrong username or password");

    // The next step's code works (±1 step of skew), once.
    let code = totp(&secret, step_now() + 1);
    let (device, out) = login(&server, &["--code", &code]);
    assert!(ok(&out).contains("logged in as tfa"));
    assert_eq!(device.whoami().unwrap()["username"], "tfa");
    let (_, out) = login(&server, &["--code", &code]);
    fails(&out, 8, "code");

    // A recovery code works once, in any case and with or without dashes.
    let first = recovery[0].to_uppercase().replace('-', "");
    let (_, out) = login(&server, &["--code", &first]);
    ok(&out);
    let (_, out) = login(&server, &["--code", &recovery[0]]);
    fails(&out, 8, "recovery code");

    // Wrong codes are rate limited per account (the wrong confirm and the two replays
    // above count too): past the limit even a right one waits.
    let mut limited = false;
    for _ in 0..4 {
        let (_, out) = login(&server, &["--code", &wrong_now(&secret)]);
        match out.status.code() {
            Some(8) => {}
            Some(3) => {
                fails(&out, 3, "too many wrong codes");
                limited = true;
                break;
            }
            other => panic!("exit {other:?}: {}", String::from_utf8_lossy(&out.stderr)),
        }
    }
    assert!(limited, "wrong codes were never rate limited");
    let (_, out) = login(&server, &["--code", &recovery[1]]);
    fails(&out, 3, "too many wrong codes");

    // Turning it off takes a code or a recovery code (not a wrong one).
    fails(&alice.run(PW, &["2fa", "disable"]), 1, "--code");
    assert!(
        server
            .log()
            .iter()
            .all(|l| !l.contains(&recovery[2]) && !l.contains(secret_b32)),
        "secrets never reach the server's log"
    );
}

/// A 6-digit code that matches none of the steps the server accepts now.
fn wrong_now(secret: &[u8]) -> String {
    let near: Vec<String> = (step_now() - 1..=step_now() + 2)
        .map(|s| totp(secret, s))
        .collect();
    (0..1_000_000u32)
        .map(|n| format!("{n:06}"))
        .find(|c| !near.contains(c))
        .unwrap()
}

#[test]
fn two_factor_can_be_turned_off_and_login_needs_only_the_password_again() {
    let server = Server::start(&[]);
    let alice = Client::new();
    ok(&alice.register(&server, "tfa", PW, &[]));
    let uri = ok(&alice.run(PW, &["2fa", "enable", "--uri-only"]));
    let secret = secret_of(uri.trim());
    let confirmed = ok(&alice.run(PW, &["2fa", "confirm", &totp(&secret, step_now())]));
    let recovery = confirmed
        .lines()
        .filter_map(|l| l.strip_prefix("  "))
        .next()
        .unwrap()
        .to_owned();
    fails(
        &alice.run(PW, &["2fa", "disable", "--code", "abcde-fghjk-mnpqr"]),
        8,
        "recovery code",
    );
    let off = ok(&alice.run(PW, &["2fa", "disable", "--code", &recovery]));
    assert!(off.contains("two-factor login is off"));
    let (_, out) = login(&server, &[]);
    ok(&out);
    fails(
        &alice.run(PW, &["2fa", "disable", "--code", "123456"]),
        1,
        "not on",
    );
}
