//! The server under test: a `hushd` this run starts (fresh data dir, limits opened up
//! so the load generator is not refused), or one already running.
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};

use crate::Common;

/// Limits a benchmark must not hit (it measures the relay, not the guards).
const OPEN_LIMITS: &str = "[limits]
registrations_per_address_per_hour = 1000000
connections_per_address = 1000000
connections_per_account = 100000
devices_per_account = 1000000
login_failures_per_account = 1000000
login_failures_per_address = 1000000
requests_per_second = 10000000
request_burst = 10000000
mailbox_max_entries = 100000000
groups_per_account_per_hour = 100000000
key_package_claims_per_minute = 100000000
";

pub struct Server {
    pub addr: String,
    pub fingerprint: String,
    pub pid: u32,
    child: Option<Child>,
    _data: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // A graceful stop first (so a profiler under it writes its report).
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            for _ in 0..100 {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn hushd_next_to_us() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("no directory for this binary")?;
    Ok(dir.join(format!("hushd{}", std::env::consts::EXE_SUFFIX)))
}

pub fn start(c: &Common) -> anyhow::Result<Server> {
    if let (Some(addr), Some(pid)) = (&c.server, c.server_pid) {
        let Some(fingerprint) = c.fingerprint.clone() else {
            bail!("--server needs --fingerprint as well");
        };
        return Ok(Server {
            addr: addr.clone(),
            fingerprint,
            pid,
            child: None,
            _data: None,
        });
    }
    let hushd = match &c.hushd {
        Some(p) => p.clone(),
        None => hushd_next_to_us()?,
    };
    let data = tempfile::tempdir()?;
    let config = data.path().join("bench.toml");
    std::fs::write(&config, OPEN_LIMITS)?;
    let mut cmd = match c.server_cpu {
        Some(cpu) => {
            let mut t = Command::new("taskset");
            t.arg("-c").arg(cpu.to_string()).arg(&hushd);
            t
        }
        None => Command::new(&hushd),
    };
    let mut child = cmd
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data.path().join("srv"))
        .arg("--config")
        .arg(&config)
        .arg("--log")
        .arg("warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", hushd.display()))?;
    let stdout = child.stdout.take().context("no stdout from hushd")?;
    let mut lines = BufReader::new(stdout).lines();
    let (mut addr, mut fingerprint) = (None, None);
    while addr.is_none() || fingerprint.is_none() {
        let Some(line) = lines.next() else {
            bail!("hushd exited before saying where it listens");
        };
        let line = line?;
        if let Some(a) = line.strip_prefix("listening on ") {
            addr = Some(a.trim().to_owned());
        } else if let Some(f) = line.strip_prefix("fingerprint ") {
            fingerprint = Some(f.trim().to_owned());
        }
    }
    Ok(Server {
        addr: addr.unwrap_or_default(),
        fingerprint: fingerprint.unwrap_or_default(),
        pid: child.id(),
        child: Some(child),
        _data: Some(data),
    })
}
