//! hushd: the hush relay server. Parses flags and the config file, sets up logging,
//! opens the chosen storage backend, and runs `hush_server::serve` until SIGINT or
//! SIGTERM. Administrative subcommands act on the same data dir or database, and work
//! while a server runs.
//!
//! Modules: `config` (file, flags, defaults → `Settings`), `admin` (user and invite
//! subcommands).
/// `println!` that ends quietly when the reader of stdout went away (`| head`),
/// instead of panicking (`hush_clidoc::print_line`). Defined before the modules, so
/// it is the `println!` of the whole crate.
macro_rules! println {
    () => {
        hush_clidoc::print_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        hush_clidoc::print_line(format_args!($($arg)*))
    };
}

mod admin;
mod config;
mod migrate;

/// mimalloc returns freed memory to the system (glibc's arenas kept what closed
/// sessions used) and is faster on the relay's small allocations (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use hush_server::{OsEntropy, ServerState, SystemClock, TlsIdentity};
use hush_store::Store;
use hush_store_postgres::{PgStore, PoolConfig};
use hush_store_sqlite::SqliteStore;

use crate::config::{Database, DatabaseUrl, Overrides, RawConfig, Settings};

const EXIT_STATUS: &str = "0 when stopped by SIGINT or SIGTERM, or when a subcommand succeeded; 1 on any error (one `error: ...` line on stderr); 2 on a usage error.";

#[derive(Parser, Debug)]
#[command(
    name = "hushd",
    version,
    about = "The hush relay server: stores and forwards end-to-end encrypted messages it cannot read."
)]
struct Cli {
    /// Address to listen on [default: 127.0.0.1:5535].
    #[arg(long, global = true, value_name = "ADDR")]
    listen: Option<String>,
    /// Data directory, created on first start [default: ./hushd-data].
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// TOML config file; flags override it (see `hushd config example`).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// sqlite:PATH (default: hushd.db in the data dir) or postgres://... (a cluster).
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "HUSHD_DATABASE_URL",
        hide_env_values = true
    )]
    database_url: Option<DatabaseUrl>,
    /// Who may register: open, invite or closed [default: open].
    #[arg(long, global = true, value_name = "MODE")]
    registration: Option<String>,
    /// Log filter, e.g. info or debug [default: info; env RUST_LOG].
    #[arg(long, global = true, value_name = "FILTER")]
    log: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the server key fingerprint that clients pin, and exit.
    Fingerprint,
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Invite codes for `--registration invite`.
    Invite {
        #[command(subcommand)]
        command: admin::InviteCommand,
    },
    /// Manage accounts.
    User {
        #[command(subcommand)]
        command: admin::UserCommand,
    },
    /// Copy a single-node server's SQLite database into an empty PostgreSQL database
    /// for a cluster: every account, device, key package, group, queued message,
    /// backup and secret, and the data dir's TLS identity, so clients carry on.
    Migrate {
        /// The SQLite database: sqlite:PATH (stop its server first).
        #[arg(long, value_name = "URL")]
        from: DatabaseUrl,
        /// The PostgreSQL database: postgres://... (must hold no accounts yet).
        #[arg(long, value_name = "URL")]
        to: DatabaseUrl,
    },
    /// Print the manual page (roff): `hushd man | man -l -`.
    Man {
        /// Write hushd.1 into this directory instead.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Print a shell completion script: `hushd completions bash`.
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: hush_clidoc::Shell,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Print an example config file with every setting at its default.
    Example,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        // A reader that went away (`hushd man | head`) is no failure.
        if hush_clidoc::is_broken_pipe(e.as_ref()) {
            return;
        }
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn settings(cli: &Cli) -> anyhow::Result<Settings> {
    let raw = match &cli.config {
        Some(path) => config::load_file(path)?,
        None => RawConfig::default(),
    };
    config::resolve(
        raw,
        Overrides {
            listen: cli.listen.clone(),
            data_dir: cli.data_dir.clone(),
            database_url: cli.database_url.clone(),
            registration: cli.registration.clone(),
            log: cli.log.clone(),
        },
    )
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(Command::Config {
        command: ConfigCommand::Example,
    }) = &cli.command
    {
        print!("{}", config::example());
        return Ok(());
    }
    // From the clap definitions: no data dir, no config.
    match &cli.command {
        Some(Command::Man { out_dir }) => {
            use clap::CommandFactory;
            hush_clidoc::man_command(&Cli::command(), Some(EXIT_STATUS), out_dir.as_deref())
                .context("writing the manual page")?;
            return Ok(());
        }
        Some(Command::Completions { shell }) => {
            use clap::CommandFactory;
            hush_clidoc::completions(&Cli::command(), *shell, &mut std::io::stdout())
                .context("writing the completion script")?;
            return Ok(());
        }
        _ => {}
    }
    let settings = settings(&cli)?;
    // Operator subcommands print their own results; only problems are logged.
    init_logging(if cli.command.is_none() {
        &settings.log
    } else {
        "warn"
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        None => runtime.block_on(serve(settings)),
        Some(Command::Fingerprint) => {
            let identity = runtime.block_on(existing_identity(&settings))?;
            println!("fingerprint {}", identity.fingerprint());
            Ok(())
        }
        Some(Command::Invite { command }) => {
            admin::check_invite(&command)?;
            let store = runtime.block_on(existing_store(&settings))?;
            runtime.block_on(admin::invite(store.as_ref(), command))
        }
        Some(Command::User { command }) => {
            let store = runtime.block_on(existing_store(&settings))?;
            runtime.block_on(admin::user(store.as_ref(), command))
        }
        Some(Command::Migrate { from, to }) => runtime.block_on(migrate::run(&from, &to)),
        Some(Command::Config { .. } | Command::Man { .. } | Command::Completions { .. }) => Ok(()),
    }
}

fn init_logging(filter: &str) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| filter.to_owned());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Creates the data dir if needed and keeps it owner-only, whoever made it: it holds
/// the OPAQUE server setup, which enables offline password guessing.
fn ensure_data_dir(settings: &Settings) -> anyhow::Result<()> {
    let dir = &settings.data_dir;
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating data dir {}", dir.display()))?;
        tracing::info!(path = %dir.display(), "created data dir");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", dir.display()))?;
    }
    Ok(())
}

/// The identity this node presents: the operator's files, else for a cluster the
/// one kept in the shared database (ADR 0007), else the data dir's own.
async fn identity(settings: &Settings, store: &dyn Store) -> anyhow::Result<TlsIdentity> {
    ensure_data_dir(settings)?;
    Ok(match (&settings.tls, &settings.database) {
        (Some((cert, key)), _) => TlsIdentity::from_files(cert, key)?,
        (None, Database::Postgres(_)) => TlsIdentity::shared(store).await?,
        (None, Database::Sqlite(_)) => TlsIdentity::load_or_create(&settings.data_dir)?,
    })
}

/// The server's own key, for `hushd fingerprint`: never made here, so an operator
/// pointed at the wrong directory is told so instead of handed a new key's
/// fingerprint.
async fn existing_identity(settings: &Settings) -> anyhow::Result<TlsIdentity> {
    if let Some((cert, key)) = &settings.tls {
        return Ok(TlsIdentity::from_files(cert, key)?);
    }
    if let Database::Postgres(url) = &settings.database {
        let store = postgres(url, settings).await?;
        let Some(pem) = store.secret(hush_server::identity::SHARED_SECRET).await? else {
            bail!(
                "the database at {url} holds no cluster identity yet: the first node to start makes it"
            );
        };
        return Ok(TlsIdentity::from_pem(&pem)?);
    }
    let (cert, key) = TlsIdentity::default_paths(&settings.data_dir);
    if !cert.exists() || !key.exists() {
        bail!(
            "no server key at {}: give the --data-dir (or --config) the server runs with; hushd makes the key on its first start",
            cert.display()
        );
    }
    Ok(TlsIdentity::load_or_create(&settings.data_dir)?)
}

/// The server's database, for the operator subcommands: never created here.
async fn existing_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    if let Database::Sqlite(path) = &settings.database
        && !path.exists()
    {
        bail!(
            "no database at {}: give the --data-dir (or --config) the server runs with; hushd creates it on its first start",
            path.display()
        );
    }
    open_store(settings).await
}

/// Connects to the cluster's database (applying its migrations).
async fn postgres(url: &DatabaseUrl, settings: &Settings) -> anyhow::Result<PgStore> {
    PgStore::connect(
        url.expose(),
        PoolConfig {
            max_connections: settings.database_pool,
            ..PoolConfig::default()
        },
    )
    .await
    .with_context(|| format!("connecting to {url}"))
}

async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    ensure_data_dir(settings)?;
    match &settings.database {
        Database::Sqlite(path) => {
            let store = SqliteStore::open_limited(path, settings.server.limits.database_max_bytes)
                .with_context(|| format!("opening database {}", path.display()))?;
            Ok(Arc::new(store))
        }
        Database::Postgres(url) => Ok(Arc::new(postgres(url, settings).await?)),
    }
}

/// The store and the blob store (P560) the server runs on: on PostgreSQL both live
/// in the cluster's database, so a file taken by one node is read through any;
/// on SQLite the bytes are files in the data dir.
async fn open_storage(
    settings: &Settings,
) -> anyhow::Result<(Arc<dyn Store>, Arc<dyn hush_store::blob::BlobStore>)> {
    if let Database::Postgres(url) = &settings.database {
        ensure_data_dir(settings)?;
        let store = postgres(url, settings).await?;
        let blobs = Arc::new(store.blobs());
        return Ok((Arc::new(store), blobs));
    }
    let store = open_store(settings).await?;
    let blobs_dir = settings.data_dir.join("blobs");
    let blobs = hush_store::blob::FsBlobs::open(&blobs_dir)
        .with_context(|| format!("opening the file store {}", blobs_dir.display()))?;
    Ok((store, Arc::new(blobs)))
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let (store, blobs) = open_storage(&settings).await?;
    let identity = identity(&settings, store.as_ref()).await?;
    let mut state = ServerState::new(
        store,
        settings.server.clone(),
        Arc::new(SystemClock),
        Arc::new(OsEntropy),
    )
    .await
    .context("initialising the server")?;
    if let Database::Sqlite(path) = &settings.database {
        // P451: room on the database's own disk, for acks when it fills.
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(&settings.data_dir);
        state = state.with_storage_reserve(dir.join("hushd.reserve"));
    }
    let state = state.with_blobs(blobs);
    let listener = hush_server::transport::bind(settings.listen)
        .await
        .with_context(|| format!("binding {}", settings.listen))?;
    let local = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {local}")?;
        writeln!(out, "fingerprint {}", identity.fingerprint())?;
        out.flush()?;
    }
    tracing::info!(
        address = %local,
        registration = %settings.server.registration,
        data_dir = %settings.data_dir.display(),
        database = %match &settings.database {
            Database::Sqlite(p) => format!("sqlite:{}", p.display()),
            Database::Postgres(url) => url.redacted(),
        },
        "hushd started"
    );
    hush_server::serve(
        listener,
        Arc::new(state),
        identity.server_config()?,
        shutdown_signal(),
    )
    .await?;
    tracing::info!("hushd stopped");
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutdown requested");
}

#[cfg(test)]
mod cli_tests {
    use clap::CommandFactory;

    /// Every flag, argument and subcommand of hushd says what it is for.
    #[test]
    fn every_argument_has_help_text() {
        hush_clidoc::assert_help(&super::Cli::command());
    }
}
