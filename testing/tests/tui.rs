//! The real `hush tui` inside tmux against a real hushd: type a message, see it arrive
//! in a second client, and see a reply arrive live.
use std::process::Command;
use std::time::{Duration, Instant};

use hush_testing::{Client, Server, bin, ok, texts};

const PW: &str = "correct horse battery";

/// tmux on a socket of its own, so tests never touch a developer's sessions.
fn tmux(args: &[&str]) -> std::process::Output {
    Command::new("tmux")
        .args(["-L", "hush-tests"])
        .args(args)
        .output()
        .expect("run tmux")
}

fn screen(session: &str) -> String {
    String::from_utf8_lossy(&tmux(&["capture-pane", "-t", session, "-p"]).stdout).into_owned()
}

fn wait_for(session: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = screen(session);
        if s.contains(needle) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} never appeared on screen:\n{s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Session(String);

impl Drop for Session {
    fn drop(&mut self) {
        let _ = tmux(&["kill-session", "-t", &self.0]);
    }
}

#[test]
fn tui_in_tmux_sends_and_receives_live() {
    if Command::new("tmux").arg("-V").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install tmux (.ci/run does)"
        );
        eprintln!("skipped: tmux is not installed");
        return;
    }
    let server = Server::start(&[]);
    let addr = server.addr.clone();
    let ann = Client::new();
    ok(&ann.register(&server, "ann", PW, &[]));
    let ben = Client::new();
    ok(&ben.register(&server, "ben", PW, &[]));

    let name = format!("hush-tui-{}", std::process::id());
    let command = format!(
        "{} --home {} tui",
        bin("hush").display(),
        ann.home.path().display()
    );
    let out = tmux(&[
        "new-session",
        "-d",
        "-s",
        &name,
        "-x",
        "80",
        "-y",
        "24",
        &command,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _guard = Session(name.clone());
    wait_for(&name, "online");

    tmux(&["send-keys", "-t", &name, "/msg ben", "Enter"]);
    wait_for(&name, "to ben");
    tmux(&["send-keys", "-t", &name, "hello from the tui", "Enter"]);
    wait_for(&name, "ann: hello from the tui");
    assert_eq!(texts(&ben.recv(10)), ["hello from the tui"]);

    // A reply arrives live, without touching the keyboard.
    ben.send("ann", "right back at you");
    let s = wait_for(&name, "ben: right back at you");
    assert!(s.contains("ann @ 127.0.0.1:"), "status line:\n{s}");

    // Channels: the lobby was offered at start; /join makes ann its first member, and
    // a channel with a password asks for it at the input line, without showing it.
    tmux(&["send-keys", "-t", &name, "/join #lobby", "Enter"]);
    wait_for(&name, "you joined #lobby");
    ok(&ben.run("", &["channel", "join", "lobby"]));
    wait_for(&name, "ben joined");
    ok(&ben.run_env(
        PW,
        &[("HUSH_CHANNEL_PASSWORD", "ops secret")],
        &["channel", "create", "ops"],
    ));
    tmux(&["send-keys", "-t", &name, "/join #ops", "Enter"]);
    wait_for(&name, "password for #ops");
    tmux(&["send-keys", "-t", &name, "ops secret", "Enter"]);
    let s = wait_for(&name, "you joined #ops");
    assert!(!s.contains("ops secret"), "the password was drawn:\n{s}");
    tmux(&["send-keys", "-t", &name, "/part", "Enter"]);
    wait_for(&name, "you left #ops");
    tmux(&["send-keys", "-t", &name, "/msg ben", "Enter"]);
    wait_for(&name, "to ben");

    // The server goes away: the status line says so; it comes back: the UI reconnects
    // by itself and what was sent meanwhile arrives once.
    let (_, data) = server.stop();
    wait_for(&name, "offline");
    let server = Server::start_in(data, &addr, &[]);
    ben.send("ann", "after the restart");
    let s = wait_for(&name, "ben: after the restart");
    assert_eq!(s.matches("after the restart").count(), 1, "{s}");
    wait_for(&name, "online");

    tmux(&["send-keys", "-t", &name, "/exit", "Enter"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tmux(&["has-session", "-t", &name]).status.success() {
        assert!(Instant::now() < deadline, "hush tui did not exit on /exit");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The UI logged to its file, not to the terminal.
    assert!(ann.home.path().join("hush.log").exists());
    drop(server);
}
