//! The real `hush` on a terminal (tmux) against a real hushd: the TUI sends, receives
//! live, keeps lines typed offline and pages back through long history; `register`
//! asks about an unknown server's key before it asks for a password.
mod inproc;

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

/// Whether tmux is here; CI must have it.
fn have_tmux() -> bool {
    if Command::new("tmux").arg("-V").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install tmux (.ci/run does)"
        );
        eprintln!("skipped: tmux is not installed");
        return false;
    }
    true
}

/// Starts `hush --home HOME tui` in a detached tmux session of `width`x`height`.
fn start_tui(home: &std::path::Path, tag: &str, width: u16, height: u16) -> Session {
    let command = format!("{} --home {} tui", bin("hush").display(), home.display());
    start_in_tmux(&command, tag, width, height)
}

/// Runs a shell `command` in a detached tmux session of `width`x`height`.
fn start_in_tmux(command: &str, tag: &str, width: u16, height: u16) -> Session {
    let name = format!("hush-tui-{tag}-{}", std::process::id());
    let out = tmux(&[
        "new-session",
        "-d",
        "-s",
        &name,
        "-x",
        &width.to_string(),
        "-y",
        &height.to_string(),
        command,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Session(name)
}

/// At 80x24: 500 messages, paged back to the very first (older history loads on
/// demand as the top is reached) and back to the newest with End.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tui_in_tmux_scrolls_back_through_500_messages() {
    if !have_tmux() {
        return;
    }
    let server = Server::start(&[]);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ann = inproc::register(&server, da.path(), "ann", Default::default()).await;
    let ben = inproc::register(&server, db.path(), "ben", Default::default()).await;
    for i in 0..500 {
        ben.send(&inproc::to("ann"), &format!("line {i:03}"))
            .await
            .unwrap();
    }
    ann.sync().await.unwrap();
    ann.close().await;

    let session = start_tui(da.path(), "scroll", 80, 24);
    let name = session.0.clone();
    tokio::task::spawn_blocking(move || {
        wait_for(&name, "online");
        // Alt-2: the second conversation in the list, without typing a "2".
        tmux(&["send-keys", "-t", &name, "M-2"]);
        let s = wait_for(&name, "line 499");
        assert!(s.contains("ben: not verified"), "{s}");
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut pages = 0;
        loop {
            let s = screen(&name);
            if s.contains("line 000") && s.contains("the beginning of this conversation") {
                assert!(s.contains("more below"), "{s}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "never reached the first message:\n{s}"
            );
            tmux(&["send-keys", "-t", &name, "PPage"]);
            pages += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(pages >= 500 / 22, "{pages} pages for 500 lines");
        tmux(&["send-keys", "-t", &name, "End"]);
        let s = wait_for(&name, "line 499");
        assert!(!s.contains("more below"), "{s}");
        let input_row = s.lines().nth(21).unwrap_or_default();
        assert!(!input_row.contains('2'), "Alt-2 typed into the input:\n{s}");
        tmux(&["send-keys", "-t", &name, "C-c"]);
    })
    .await
    .unwrap();
    drop(session);
    ben.close().await;
}

#[test]
fn tui_in_tmux_sends_and_receives_live() {
    if !have_tmux() {
        return;
    }
    let server = Server::start(&[]);
    let addr = server.addr.clone();
    let ann = Client::new();
    ok(&ann.register(&server, "ann", PW, &[]));
    let ben = Client::new();
    ok(&ben.register(&server, "ben", PW, &[]));

    let guard = start_tui(ann.home.path(), "live", 80, 24);
    let name = guard.0.clone();
    wait_for(&name, "online");

    tmux(&["send-keys", "-t", &name, "/msg ben", "Enter"]);
    wait_for(&name, "to ben");
    tmux(&["send-keys", "-t", &name, "hello from the tui", "Enter"]);
    wait_for(&name, "<ann> hello from the tui");
    assert_eq!(texts(&ben.recv(10)), ["hello from the tui"]);

    // A reply arrives live, without touching the keyboard.
    ben.send("ann", "right back at you");
    let s = wait_for(&name, "<ben> right back at you");
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

    // The server goes away: the status line says so, and a line typed meanwhile waits
    // in the outbox as pending; it comes back: the UI reconnects by itself, the line
    // goes out, and what was sent meanwhile arrives once.
    let (_, data) = server.stop();
    wait_for(&name, "offline");
    tmux(&["send-keys", "-t", &name, "typed while offline", "Enter"]);
    let s = wait_for(&name, "<ann> typed while offline (sending…)");
    assert!(s.contains("1 unsent"), "{s}");
    let server = Server::start_in(data, &addr, &[]);
    ben.send("ann", "after the restart");
    let s = wait_for(&name, "<ben> after the restart");
    assert_eq!(s.matches("after the restart").count(), 1, "{s}");
    wait_for(&name, "online");
    let deadline = Instant::now() + Duration::from_secs(20);
    while screen(&name).contains("sending…") {
        assert!(Instant::now() < deadline, "the pending line was never sent");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(texts(&ben.recv(10)), ["typed while offline"]);

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

/// PRODUCT.md §4: on a terminal, an unknown server's fingerprint is shown and trust
/// asked before the password; declining exits 4 with nothing typed in vain and the
/// home left empty; accepting goes on to the password.
#[test]
fn register_asks_about_the_server_key_before_the_password() {
    if !have_tmux() {
        return;
    }
    let server = Server::start(&[]);
    let home = tempfile::tempdir().unwrap();
    let command = format!(
        "{} --home {} register --server {} --username zed; echo exit=$?; sleep 60",
        bin("hush").display(),
        home.path().display(),
        server.addr
    );
    {
        let session = start_in_tmux(&command, "decline", 100, 30);
        let s = wait_for(&session.0, "Trust this server? [y/N]");
        assert!(s.contains(&server.fingerprint), "{s}");
        assert!(
            !s.contains("Password"),
            "asked for the password first:\n{s}"
        );
        tmux(&["send-keys", "-t", &session.0, "n", "Enter"]);
        let s = wait_for(&session.0, "exit=");
        assert!(s.contains("exit=4"), "{s}");
        assert!(s.contains("not trusted"), "{s}");
        assert!(!s.contains("Password"), "{s}");
        assert!(
            hush_testing::files_below(home.path()).is_empty(),
            "declining left files in the home"
        );
    }
    let session = start_in_tmux(&command, "accept", 100, 30);
    wait_for(&session.0, "Trust this server? [y/N]");
    tmux(&["send-keys", "-t", &session.0, "y", "Enter"]);
    wait_for(&session.0, "Password:");
    tmux(&["send-keys", "-t", &session.0, PW, "Enter"]);
    wait_for(&session.0, "Password again:");
    tmux(&["send-keys", "-t", &session.0, PW, "Enter"]);
    // On a terminal the home's passphrase is asked for (no echo), twice.
    wait_for(&session.0, "Passphrase to encrypt this home");
    tmux(&["send-keys", "-t", &session.0, "tmux home phrase", "Enter"]);
    wait_for(&session.0, "The same passphrase again:");
    tmux(&["send-keys", "-t", &session.0, "tmux home phrase", "Enter"]);
    let s = wait_for(&session.0, "exit=");
    assert!(s.contains("registered zed") && s.contains("exit=0"), "{s}");
    assert!(s.contains("recovery key: "), "{s}");
    assert!(
        !s.contains("tmux home phrase"),
        "the passphrase was echoed:\n{s}"
    );
    assert!(hush_client::home::is_encrypted(home.path()));
}

/// `/file` sends in the background while the UI stays live; an offer that arrives is
/// drawn with its id, and `/save` writes it where asked (P560).
#[test]
fn tui_in_tmux_sends_and_saves_files() {
    if !have_tmux() {
        return;
    }
    let server = Server::start(&[]);
    let ann = Client::new();
    ok(&ann.register(&server, "ann", PW, &[]));
    let ben = Client::new();
    ok(&ben.register(&server, "ben", PW, &[]));
    let work = tempfile::tempdir().unwrap();
    let outgoing = work.path().join("notes.txt");
    std::fs::write(&outgoing, "from the tui").unwrap();

    let guard = start_tui(ann.home.path(), "files", 100, 30);
    let name = guard.0.clone();
    wait_for(&name, "online");
    tmux(&["send-keys", "-t", &name, "/msg ben", "Enter"]);
    wait_for(&name, "to ben");
    tmux(&["send-keys", "-t", &name, "here it comes", "Enter"]);
    wait_for(&name, "<ann> here it comes");
    let command = format!("/file {}", outgoing.display());
    tmux(&["send-keys", "-t", &name, &command, "Enter"]);
    wait_for(&name, "sent file");
    wait_for(&name, "notes.txt (12 bytes)");
    let offer = ben
        .recv(10)
        .into_iter()
        .find(|e| e["type"] == "file")
        .expect("ben got the offer");
    assert_eq!(offer["name"], "notes.txt");

    let back = work.path().join("reply.txt");
    std::fs::write(&back, "from the cli").unwrap();
    ok(&ben.run("", &["file", "send", "ann", back.to_str().unwrap()]));
    wait_for(&name, "reply.txt (12 bytes) · /save");
    let into = tempfile::tempdir().unwrap();
    let command = format!("/save 1 {}", into.path().display());
    tmux(&["send-keys", "-t", &name, &command, "Enter"]);
    wait_for(&name, "saved ");
    assert_eq!(
        std::fs::read_to_string(into.path().join("reply.txt")).unwrap(),
        "from the cli"
    );
    tmux(&["send-keys", "-t", &name, "C-c"]);
}
