//! The hushd command line as PRODUCT.md §4 names it. (Declaring an integration test
//! here also makes `cargo test --workspace` build the hushd binary that `testing/`
//! drives.)
use std::process::Command;

fn hushd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hushd"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn help_names_the_contract_flags_and_subcommands() {
    let out = hushd(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for name in [
        "--listen",
        "--data-dir",
        "--config",
        "--database-url",
        "--registration",
        "fingerprint",
        "invite",
        "user",
        "config",
    ] {
        assert!(help.contains(name), "--help lacks {name}:\n{help}");
    }
}

#[test]
fn bad_flags_give_one_error_line_and_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let out = hushd(&["--data-dir", data, "--registration", "maybe", "fingerprint"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("open, invite or closed"),
        "{err}"
    );

    let out = hushd(&[
        "--data-dir",
        data,
        "--database-url",
        "mysql://x",
        "user",
        "list",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sqlite:PATH or postgres://"));

    let out = hushd(&["--data-dir", data, "invite", "create", "--expires", "soon"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("like 24h"));
}

#[test]
fn a_database_password_never_reaches_the_output() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1: the connection fails, and the error names the URL.
    let out = hushd(&[
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--database-url",
        "postgres://hush:s3cret-pw@127.0.0.1:1/hush",
        "user",
        "list",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("postgres://hush:***@127.0.0.1:1/hush"),
        "{err}"
    );
    assert!(!err.contains("s3cret-pw"), "{err}");
}

#[test]
fn operator_commands_never_make_a_data_dir_a_key_or_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("not-the-server");
    let data = missing.to_str().unwrap();
    let out = hushd(&["--data-dir", data, "fingerprint"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: no server key at ") && err.contains("not-the-server"),
        "{err}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).is_empty(),
        "no fingerprint printed"
    );
    for args in [&["user", "list"][..], &["invite", "create"]] {
        let out = hushd(&[&["--data-dir", data][..], args].concat());
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("error: no database at "), "{args:?}: {err}");
    }
    assert!(!missing.exists(), "nothing was created");
}
