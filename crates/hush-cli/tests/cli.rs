//! The hush command line without a server. (Declaring an integration test here also
//! makes `cargo test --workspace` build the hush binary that `testing/` drives.)
use std::process::{Command, Stdio};

fn hush(home: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hush"))
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("HUSH_PASSWORD")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn help_lists_the_contract_commands() {
    let dir = tempfile::tempdir().unwrap();
    let out = hush(dir.path(), &["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for name in [
        "register",
        "login",
        "logout",
        "whoami",
        "send",
        "recv",
        "history",
        "chats",
        "--home",
        "--server-fingerprint",
        "--trust-new-server",
        "--password-stdin",
        "Exit codes",
    ] {
        assert!(help.contains(name), "--help lacks {name}:\n{help}");
    }
}

#[test]
fn without_a_terminal_a_password_source_is_required() {
    let dir = tempfile::tempdir().unwrap();
    let out = hush(
        dir.path(),
        &["register", "--server", "127.0.0.1:1", "--username", "ann"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("HUSH_PASSWORD"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one error line: {err}");
}

#[test]
fn a_malformed_fingerprint_flag_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hush"))
        .args([
            "--home",
            dir.path().to_str().unwrap(),
            "--server-fingerprint",
            "md5:xyz",
            "login",
            "--server",
            "127.0.0.1:1",
            "--username",
            "ann",
        ])
        .env("HUSH_PASSWORD", "whatever-password")
        .output()
        .unwrap();
    // A usage error (README: exit 2), and nothing written to the home.
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SHA256:"));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn password_stdin_reads_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hush"))
        .args([
            "--home",
            dir.path().to_str().unwrap(),
            "--password-stdin",
            "login",
            "--server",
            "127.0.0.1:1",
            "--username",
            "ann",
            "--trust-new-server",
        ])
        .env_remove("HUSH_PASSWORD")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"some password\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    // The password was accepted; the failure is the unreachable server.
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
