//! `hush-bench`: a load generator for a real `hushd` over the real protocol (TLS,
//! OPAQUE accounts, frames). It starts the server itself (optionally pinned to a CPU)
//! or measures one given by address and pid, and reports delivered messages per
//! second, server CPU microseconds per delivery (utime + stime from /proc), server RSS
//! and delivery latency percentiles, as one JSON line and a table. It counts lost and
//! duplicated messages, which must be zero: it exits non-zero otherwise.
//!
//! Scenarios (`docs/benchmarks.md`): `direct` (pairs of connected clients, 1:1, at a
//! fixed offered rate), `group`, `offline`, `idle`, `login`; each against one node on
//! SQLite or `--nodes N` sharing PostgreSQL (`--database-url`). Payloads are opaque: raw sends at the group's epoch, receivers
//! acknowledge without decrypting, so the relay's cost is what is measured.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod measure;
mod scenario;
mod server;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "hush-bench", about = "Load generator for hushd")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// Connected clients (an even number: they talk in pairs).
    #[arg(long, default_value_t = 20)]
    pub clients: usize,
    /// Offered messages per second, all clients together.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 256)]
    pub payload: usize,
    /// `group`: members per group (`--clients` is a multiple of it).
    #[arg(long, default_value_t = 50)]
    pub group_size: usize,
    /// `direct`: messages go through the real client library (MLS, local history,
    /// outbox) instead of raw opaque sends (`--payload` is then ignored).
    #[arg(long)]
    pub mls: bool,
    /// Sends each client keeps in flight (pipelined, answered by request id).
    #[arg(long, default_value_t = 16)]
    pub in_flight: usize,
    /// How receivers get entries: pushed to a following connection (P443) or fetched
    /// after each wake-up (P442).
    #[arg(long, value_enum, default_value_t = Delivery::Push)]
    pub delivery: Delivery,
    /// Receivers acknowledge after this many entries (or 2 ms, whichever is first).
    #[arg(long, default_value_t = 64)]
    pub ack_batch: usize,
    /// The hushd binary to start (default: next to this one).
    #[arg(long)]
    pub hushd: Option<std::path::PathBuf>,
    /// hushd nodes to start, on one PostgreSQL database (needs --database-url when
    /// more than one); clients are spread over them round robin.
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// PostgreSQL for the started nodes (`postgres://user@host/db`): the run makes a
    /// fresh schema in it and drops it afterwards. Without it, one node on SQLite.
    #[arg(long, env = "HUSH_BENCH_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<hush_store_postgres::url::DatabaseUrl>,
    /// Pin the started hushd to this CPU (taskset).
    #[arg(long)]
    pub server_cpu: Option<usize>,
    /// Measure a running server at this address instead (with --server-pid).
    #[arg(long, requires = "server_pid")]
    pub server: Option<String>,
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Its fingerprint, when given by address.
    #[arg(long)]
    pub fingerprint: Option<String>,
    /// Print only the JSON line.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Push,
    Fetch,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Pairs of connected clients sending 1:1 to each other.
    Direct(Common),
    /// Senders queue rate × seconds messages for partners that are not reading, then
    /// the partners drain them: the durable store rate and the drain rate.
    Offline(Common),
    /// `--clients` authenticated sessions that do nothing: server memory per session.
    Idle(Common),
    /// Groups of `--group-size`: one sender each, every other member receives.
    Group(Common),
    /// OPAQUE logins: complete ones (server CPU per login), then `LoginStart` only.
    Login(Common),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let result = rt.block_on(async {
        match cli.scenario {
            Scenario::Direct(c) if c.mls => scenario::direct_mls(&c).await,
            Scenario::Direct(c) => scenario::direct(&c).await,
            Scenario::Offline(c) => scenario::offline(&c).await,
            Scenario::Idle(c) => scenario::idle(&c).await,
            Scenario::Group(c) => scenario::group(&c).await,
            Scenario::Login(c) => scenario::login(&c).await,
        }
    });
    match result {
        Ok(report) => {
            println!("{}", report.json());
            let json_only = match &report.common {
                Some(c) => c.json,
                None => false,
            };
            if !json_only {
                eprintln!("{}", report.table());
            }
            if report.lost > 0 || report.duplicated > 0 {
                eprintln!(
                    "error: {} lost and {} duplicated messages",
                    report.lost, report.duplicated
                );
                return std::process::ExitCode::from(2);
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
