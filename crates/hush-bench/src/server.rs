//! The server under test: `hushd` nodes this run starts (fresh data dirs, limits
//! opened up so the load generator is not refused; with `--database-url`, a fresh
//! PostgreSQL schema they share), or one already running.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};

use hush_store_postgres::scratch::Scratch;

use crate::{Common, measure};

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

/// The hushd node(s) under test: one on SQLite by default, `--nodes N` on one
/// PostgreSQL database (a fresh schema of `--database-url`, dropped afterwards).
pub struct Server {
    pub nodes: Vec<Node>,
    pub fingerprint: String,
    /// The cluster's schema, when the nodes share PostgreSQL.
    pub database: Option<Scratch>,
    _data: Option<tempfile::TempDir>,
}

/// One hushd process.
pub struct Node {
    pub addr: String,
    pub pid: u32,
    child: Option<Child>,
}

impl Server {
    /// The node the `i`th client uses: clients are spread round robin.
    pub fn addr(&self, i: usize) -> &str {
        &self.nodes[i % self.nodes.len()].addr
    }

    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.pid).collect()
    }

    /// Where the nodes keep their data.
    pub fn kind(&self) -> &'static str {
        if self.database.is_some() {
            "postgresql"
        } else {
            "sqlite"
        }
    }

    /// CPU and memory of every node together.
    pub fn sample(&self) -> anyhow::Result<measure::ProcessSample> {
        measure::sample_all(&self.pids())
    }
}

impl Drop for Node {
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

impl Drop for Server {
    fn drop(&mut self) {
        // The nodes stop before their schema is dropped.
        self.nodes.clear();
    }
}

fn hushd_next_to_us() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("no directory for this binary")?;
    Ok(dir.join(format!("hushd{}", std::env::consts::EXE_SUFFIX)))
}

pub async fn start(c: &Common) -> anyhow::Result<Server> {
    if let (Some(addr), Some(pid)) = (&c.server, c.server_pid) {
        let Some(fingerprint) = c.fingerprint.clone() else {
            bail!("--server needs --fingerprint as well");
        };
        return Ok(Server {
            nodes: vec![Node {
                addr: addr.clone(),
                pid,
                child: None,
            }],
            fingerprint,
            database: None,
            _data: None,
        });
    }
    if c.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let database = match &c.database_url {
        Some(url) => Some(
            Scratch::in_database(url.expose(), "bench")
                .await
                .context("making a fresh schema in --database-url")?,
        ),
        None if c.nodes > 1 => bail!("--nodes {} needs --database-url postgres://...", c.nodes),
        None => None,
    };
    let hushd = match &c.hushd {
        Some(p) => p.clone(),
        None => hushd_next_to_us()?,
    };
    let data = tempfile::tempdir()?;
    let config = data.path().join("bench.toml");
    std::fs::write(&config, OPEN_LIMITS)?;
    let mut server = Server {
        nodes: Vec::with_capacity(c.nodes),
        fingerprint: String::new(),
        database,
        _data: None,
    };
    // One after the other: the first node makes the schema and the cluster's TLS
    // identity, the others find both.
    for n in 0..c.nodes {
        let (node, fingerprint) = start_node(
            c,
            &hushd,
            &data.path().join(format!("node{n}")),
            &config,
            server.database.as_ref().map(|d| d.url()),
        )?;
        if n > 0 && fingerprint != server.fingerprint {
            bail!("node {n} presents another TLS identity than node 0");
        }
        server.fingerprint = fingerprint;
        server.nodes.push(node);
    }
    server._data = Some(data);
    Ok(server)
}

fn start_node(
    c: &Common,
    hushd: &Path,
    data_dir: &Path,
    config: &Path,
    database_url: Option<String>,
) -> anyhow::Result<(Node, String)> {
    let mut cmd = match c.server_cpu {
        Some(cpu) => {
            let mut t = Command::new("taskset");
            t.arg("-c").arg(cpu.to_string()).arg(hushd);
            t
        }
        None => Command::new(hushd),
    };
    cmd.arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--config")
        .arg(config)
        .arg("--log")
        .arg(std::env::var("HUSH_BENCH_HUSHD_LOG").unwrap_or_else(|_| "warn".into()));
    if let Some(url) = database_url {
        // Through the environment, so the URL is not on a command line.
        cmd.env("HUSHD_DATABASE_URL", url);
    }
    let mut child = cmd
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
    // hushd's later lines are not read: drain them, so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok((
        Node {
            addr: addr.unwrap_or_default(),
            pid: child.id(),
            child: Some(child),
        },
        fingerprint.unwrap_or_default(),
    ))
}
