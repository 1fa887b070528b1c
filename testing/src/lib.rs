//! Support for end-to-end tests: start the real `hushd` on port 0 in a temporary data
//! dir, and run the real `hush` against it in temporary homes.
//!
//! The binaries are the ones `cargo test --workspace` builds into the target dir next
//! to the test executable (override with `HUSHD_BIN` / `HUSH_BIN`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tempfile::TempDir;

/// Path of a workspace binary.
pub fn bin(name: &str) -> PathBuf {
    let var = format!("{}_BIN", name.to_uppercase());
    if let Ok(p) = std::env::var(&var) {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test-exe> → target/<profile>/<name>
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} not found: build the workspace first (`cargo test --workspace` does) or set {var}",
        path.display()
    );
    path
}

/// A running `hushd` with its own data dir; stopped with SIGTERM when dropped.
pub struct Server {
    child: Option<Child>,
    pub addr: String,
    pub fingerprint: String,
    data: TempDir,
    stderr: mpsc::Receiver<String>,
    /// Every log line read so far.
    seen: std::sync::Mutex<Vec<String>>,
}

impl Server {
    /// Starts `hushd --listen 127.0.0.1:0` with `extra` flags in a fresh data dir.
    pub fn start(extra: &[&str]) -> Server {
        let data = tempfile::tempdir().unwrap();
        Self::start_in(data, "127.0.0.1:0", extra)
    }

    /// Starts `hushd` with a config file holding `[limits]` `limits` (TOML lines).
    pub fn with_limits(limits: &str) -> Server {
        Self::with_limits_in(tempfile::tempdir().unwrap(), limits)
    }

    /// As [`with_limits`](Self::with_limits), in the data dir `data`.
    pub fn with_limits_in(data: TempDir, limits: &str) -> Server {
        let config = data.path().join("hushd.toml");
        std::fs::write(&config, format!("[limits]\n{limits}\n")).unwrap();
        let config = config.to_str().unwrap().to_owned();
        Self::start_in(data, "127.0.0.1:0", &["--config", &config])
    }

    /// Starts `hushd` on `listen` in an existing data dir.
    pub fn start_in(data: TempDir, listen: &str, extra: &[&str]) -> Server {
        let mut child = Command::new(bin("hushd"))
            .arg("--listen")
            .arg(listen)
            .arg("--data-dir")
            .arg(data.path().join("srv"))
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hushd");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (line_tx, line_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (err_tx, err_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = err_tx.send(line);
            }
        });
        let mut addr = None;
        let mut fingerprint = None;
        while addr.is_none() || fingerprint.is_none() {
            let line = line_rx
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| {
                    let log: Vec<String> = err_rx.try_iter().collect();
                    panic!(
                        "hushd did not print its address and fingerprint; log:\n{}",
                        log.join("\n")
                    )
                });
            if let Some(a) = line.strip_prefix("listening on ") {
                addr = Some(a.trim().to_owned());
            } else if let Some(f) = line.strip_prefix("fingerprint ") {
                fingerprint = Some(f.trim().to_owned());
            }
        }
        Server {
            child: Some(child),
            addr: addr.unwrap(),
            fingerprint: fingerprint.unwrap(),
            data,
            stderr: err_rx,
            seen: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The hushd process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The server's data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.data.path().join("srv")
    }

    /// Runs `hushd <args>` against this server's data dir (admin commands).
    pub fn admin(&self, args: &[&str]) -> Output {
        Command::new(bin("hushd"))
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(args)
            .output()
            .expect("run hushd admin command")
    }

    /// Every log line written so far.
    pub fn log(&self) -> Vec<String> {
        let mut seen = self.seen.lock().unwrap();
        seen.extend(self.stderr.try_iter());
        seen.clone()
    }

    /// Waits (up to 30 s) for a log line containing `needle`; whether one came.
    pub fn wait_for_log(&self, needle: &str) -> bool {
        for _ in 0..300 {
            if self.log().iter().any(|l| l.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Stops the server with SIGTERM, returning its exit status and its data dir.
    pub fn stop(mut self) -> (std::process::ExitStatus, TempDir) {
        let status = self.terminate();
        let data = std::mem::replace(&mut self.data, tempfile::tempdir().unwrap());
        (status, data)
    }

    /// Kills the server with SIGKILL (no shutdown at all), returning its data dir.
    pub fn kill(mut self) -> TempDir {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        std::mem::replace(&mut self.data, tempfile::tempdir().unwrap())
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        for _ in 0..100 {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        panic!("hushd did not exit within 5 s of SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A port on 127.0.0.1 that was free a moment ago, for a server that must come back
/// at the same address after a restart.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `hush` home.
pub struct Client {
    pub home: TempDir,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    pub fn new() -> Client {
        Client {
            home: tempfile::tempdir().unwrap(),
        }
    }

    /// Runs `hush --home HOME <args>` with `HUSH_PASSWORD` set to `password`.
    pub fn run(&self, password: &str, args: &[&str]) -> Output {
        self.run_env(password, &[], args)
    }

    /// [`Client::run`] with more environment variables.
    pub fn run_env(&self, password: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
        Command::new(bin("hush"))
            .arg("--home")
            .arg(self.home.path())
            .args(args)
            .envs(env.iter().copied())
            .env("HUSH_PASSWORD", password)
            .env_remove("HUSH_HOME")
            .stdin(Stdio::null())
            .output()
            .expect("run hush")
    }

    /// `hush register` pinning the server's fingerprint.
    pub fn register(
        &self,
        server: &Server,
        username: &str,
        password: &str,
        extra: &[&str],
    ) -> Output {
        let mut args = vec![
            "register",
            "--server",
            &server.addr,
            "--username",
            username,
            "--server-fingerprint",
            &server.fingerprint,
        ];
        args.extend_from_slice(extra);
        self.run(password, &args)
    }

    /// `hush login` pinning the server's fingerprint.
    pub fn login(&self, server: &Server, username: &str, password: &str) -> Output {
        self.run(
            password,
            &[
                "login",
                "--server",
                &server.addr,
                "--username",
                username,
                "--server-fingerprint",
                &server.fingerprint,
            ],
        )
    }

    /// `hush recv --follow --json` in the background, with its stdout lines.
    pub fn follow(&self) -> (Child, mpsc::Receiver<String>) {
        let mut child = Command::new(bin("hush"))
            .arg("--home")
            .arg(self.home.path())
            .args(["recv", "--follow", "--json"])
            .env_remove("HUSH_HOME")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run hush recv --follow");
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        (child, rx)
    }

    /// `hush send TO TEXT`, asserting success.
    #[track_caller]
    pub fn send(&self, to: &str, text: &str) {
        ok(&self.run("", &["send", to, text]));
    }

    /// `hush recv --json --timeout SECS`, parsed.
    #[track_caller]
    pub fn recv(&self, timeout_secs: u32) -> Vec<serde_json::Value> {
        let out = self.run(
            "",
            &["recv", "--json", "--timeout", &timeout_secs.to_string()],
        );
        json_lines(&ok(&out))
    }

    /// `hush history PEER --json --limit N`, parsed.
    #[track_caller]
    pub fn history(&self, peer: &str, limit: u32) -> Vec<serde_json::Value> {
        let out = self.run(
            "",
            &["history", peer, "--json", "--limit", &limit.to_string()],
        );
        json_lines(&ok(&out))
    }

    /// `hush whoami --json`, parsed.
    pub fn whoami(&self) -> Result<serde_json::Value, Output> {
        let out = self.run("", &["whoami", "--json"]);
        if out.status.success() {
            Ok(serde_json::from_slice(&out.stdout).expect("whoami --json prints JSON"))
        } else {
            Err(out)
        }
    }
}

/// One registered home per name, in order.
#[track_caller]
pub fn registered(server: &Server, names: &[&str], password: &str) -> Vec<Client> {
    names
        .iter()
        .map(|n| {
            let c = Client::new();
            ok(&c.register(server, n, password, &[]));
            c
        })
        .collect()
}

/// Asserts a command succeeded, showing its output if not.
#[track_caller]
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts a command failed with `code` and an `error: ...` line containing `needle`.
#[track_caller]
pub fn fails(out: &Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit {code}; stdout: {} stderr: {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no `error:` line in stderr: {stderr}"));
    assert!(
        line.to_lowercase().contains(&needle.to_lowercase()),
        "error line {line:?} does not mention {needle:?}"
    );
}

/// Every file below `dir`, recursively.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().map_while(Result::ok) {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Whether `needle` occurs in any file below `dir`; returns the first such file.
pub fn find_bytes(dir: &Path, needle: &[u8]) -> Option<PathBuf> {
    files_below(dir).into_iter().find(|p| {
        std::fs::read(p)
            .map(|data| data.windows(needle.len()).any(|w| w == needle))
            .unwrap_or(false)
    })
}

/// Parses one JSON object per line.
#[track_caller]
pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The texts of the `message` events, in order.
pub fn texts(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "message")
        .map(|e| e["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// An RFC 6238 implementation of the tests' own (HMAC-SHA-1 from the `hmac` crate), so
/// the server's codes are checked against something it does not share.
pub mod totp {
    use hmac::{Hmac, Mac};

    /// RFC 4648 base32 without padding, as otpauth URIs carry secrets.
    pub fn base32_decode(s: &str) -> Vec<u8> {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let mut out = Vec::new();
        let (mut bits, mut n) = (0u32, 0);
        for c in s.trim_end_matches('=').bytes() {
            let v = ALPHABET
                .iter()
                .position(|&a| a == c.to_ascii_uppercase())
                .expect("base32 character") as u32;
            bits = (bits << 5) | v;
            n += 5;
            if n >= 8 {
                n -= 8;
                out.push((bits >> n) as u8);
            }
        }
        out
    }

    /// RFC 6238 with SHA-1, 6 digits, for time step `step`.
    pub fn totp(secret: &[u8], step: u64) -> String {
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret).unwrap();
        mac.update(&step.to_be_bytes());
        let h = mac.finalize().into_bytes();
        let offset = usize::from(h[19] & 0x0f);
        let bin = u32::from_be_bytes([
            h[offset] & 0x7f,
            h[offset + 1],
            h[offset + 2],
            h[offset + 3],
        ]);
        format!("{:06}", bin % 1_000_000)
    }

    pub fn step_now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            / 30
    }

    /// The secret of an `otpauth://` URI.
    pub fn secret_of(uri: &str) -> Vec<u8> {
        let secret = uri
            .split(['?', '&'])
            .find_map(|p| p.strip_prefix("secret="))
            .expect("a secret in the URI");
        base32_decode(secret)
    }
}

/// Peak resident memory of process `pid` (`VmHWM`), in KiB; `None` once it is gone.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
