//! `hush`: the scriptable hush client. Each subcommand is one call into `hush-client`;
//! this crate owns only argument parsing, password and trust prompts, output formats
//! and exit codes.
//!
//! Exit codes: 0 success; 1 other error; 2 usage; 3 authentication refused (wrong
//! password, disabled account, revoked device, not logged in); 4 server key not
//! trusted (unknown or changed fingerprint); 5 server unreachable or connection lost;
//! 6 command not available in this version yet; 7 refused because a verified contact's
//! account key changed (run `hush verify USER --confirm` after checking); 8 a second
//! factor (authenticator code) is missing, wrong or used; 9 a channel's password is
//! wrong or missing; 10 too many wrong channel passwords or codes (wait, then retry).
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

mod backup;
mod config;
mod files;
mod output;
mod prompt;
mod receive;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use hush_client::account::Profile;
use hush_client::events::Event;
use hush_client::hush_proto::ErrorCode;
use hush_client::hush_proto::content::GroupName;
use hush_client::hush_proto::fingerprint::Fingerprint;
use hush_client::hush_proto::ids::{
    ChannelPassword, DeviceId, RecoveryCode, SecondFactor, TotpCode, Username,
};
use hush_client::hush_proto::response::Account;
use hush_client::trust::FirstUse;
use hush_client::{Client, ClientError, ClientOptions, Enrolment, Target};
use std::io::IsTerminal;

const EXIT_CODES: &str = "Exit codes: 0 ok, 1 error, 2 usage, 3 authentication refused, 4 server key not trusted, 5 server unreachable, 6 not available yet, 7 a verified contact's key changed, 8 code missing/wrong/used, 9 channel password wrong, 10 too many wrong channel attempts, 11 the home's passphrase is missing or wrong, 12 the backup on the server failed its check (tampered, truncated or rolled back).";

#[derive(Parser, Debug)]
#[command(
    name = "hush",
    version,
    about = "End-to-end encrypted chat client for hushd servers.",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args, Debug)]
struct Global {
    /// The client's home: one account on one server [env: HUSH_HOME; default: the platform data dir].
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "HUSH_HOME",
        hide_env = true
    )]
    home: Option<PathBuf>,
    /// Pin this server key fingerprint on first connection (SHA256:...).
    #[arg(long, global = true, value_name = "FINGERPRINT")]
    server_fingerprint: Option<String>,
    /// Accept the server's key on first connection without asking.
    #[arg(long, global = true)]
    trust_new_server: bool,
    /// Read the password as one line of standard input (otherwise HUSH_PASSWORD, or a prompt).
    #[arg(long, global = true)]
    password_stdin: bool,
    /// Read the passphrase of an encrypted home as one line of standard input (after the
    /// password when both are read); otherwise HUSH_PASSPHRASE, or a prompt.
    #[arg(long, global = true)]
    passphrase_stdin: bool,
    /// Print text even where HOME/hush.toml sets `output = "json"`.
    #[arg(long = "text", global = true)]
    text_output: bool,
    /// Log to stderr: -v warnings and what the client does, -vv details. Without it
    /// (and without HUSH_LOG or RUST_LOG) warnings go to HOME/hush.log only.
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create an account on a server; this home becomes its first device.
    Register {
        /// The server, as HOST:PORT [default: `server` in HOME/hush.toml, else
        /// 127.0.0.1:5535].
        #[arg(long, value_name = "HOST:PORT")]
        server: Option<String>,
        /// 3-32 of a-z 0-9 _ . - (asked for, with a suggestion, on a terminal).
        #[arg(long)]
        username: Option<String>,
        /// The name contacts see next to your username.
        #[arg(long, value_name = "TEXT")]
        display_name: Option<String>,
        /// An e-mail address kept with the account (optional).
        #[arg(long)]
        email: Option<String>,
        /// Invite code, for servers that require one.
        #[arg(long, value_name = "CODE")]
        invite: Option<String>,
        /// Keep this home unencrypted at rest (file permissions only protect it).
        #[arg(long)]
        no_passphrase: bool,
    },
    /// Log in to an existing account; this home becomes a new device.
    Login {
        /// The server, as HOST:PORT [default: `server` in HOME/hush.toml, else
        /// 127.0.0.1:5535].
        #[arg(long, value_name = "HOST:PORT")]
        server: Option<String>,
        /// The account's username [default: `username` in HOME/hush.toml].
        #[arg(long)]
        username: Option<String>,
        /// With two-factor login on: the authenticator code, or a recovery code (asked
        /// on a terminal when needed and not given).
        #[arg(long)]
        code: Option<String>,
        /// Restore the account's history from its encrypted backup, without asking.
        #[arg(long, conflicts_with = "no_restore")]
        restore: bool,
        /// Do not restore (and do not ask).
        #[arg(long)]
        no_restore: bool,
        /// Keep this home unencrypted at rest (file permissions only protect it).
        #[arg(long)]
        no_passphrase: bool,
    },
    /// End this device's session and forget the account in this home.
    Logout {
        /// Forget the account locally even if the server cannot be reached, dropping
        /// messages that could not be sent yet.
        #[arg(long)]
        force: bool,
    },
    /// Show the account of this home.
    Whoami {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Send an end-to-end encrypted message.
    Send {
        /// A username (1:1 conversation), or #name (a group or channel).
        target: String,
        /// The message; "-" reads it from standard input.
        text: String,
    },
    /// Fetch, decrypt, print and acknowledge new messages.
    Recv {
        /// Keep running and print messages as they arrive.
        #[arg(long)]
        follow: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Wait up to this many seconds for a message when none is waiting (with
        /// --follow: stop after this long).
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
    },
    /// Show a conversation's local history, newest last.
    History {
        /// A username (1:1 conversation) or #name (group).
        target: String,
        /// How many of the newest messages [default: `history_limit` in HOME/hush.toml,
        /// else 100].
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// List conversations with unread counts.
    Chats {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// The interactive client (also what `hush` alone starts on a terminal).
    Tui,
    /// Print a shell completion script: `hush completions bash > /etc/bash_completion.d/hush`.
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: hush_clidoc::Shell,
    },
    /// Print the manual page (roff): `hush man | man -l -`.
    Man {
        /// Write hush.1 into this directory instead.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Server administration (server admins only; checked by the server).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Named groups (#name): create, add, remove, leave, members.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// Compare safety numbers with a contact; --confirm marks it verified.
    Verify {
        /// The contact's username.
        user: String,
        /// Mark the contact verified (after comparing the number in person or by QR).
        #[arg(long)]
        confirm: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// List this account's devices, or revoke one.
    Devices {
        #[command(subcommand)]
        command: Option<DevicesCommand>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Messages waiting to be sent; retry or drop one that was set aside after it
    /// kept failing.
    Outbox {
        #[command(subcommand)]
        command: Option<OutboxCommand>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Group invitations from people you have not accepted yet (they wait for you).
    Requests {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Accept USER's group invitations: join them now, and accept USER's from now on.
    Accept {
        /// Whose invitations to accept.
        user: String,
    },
    /// Decline USER's group invitations: they are dropped and you leave those groups.
    Decline {
        /// Whose invitations to decline.
        user: String,
    },
    /// Whose group invitations this device accepts by itself: everyone (the default)
    /// or known (only people you wrote to, added, or accepted; others wait in
    /// `hush requests`). Without an argument, shows the setting.
    Invitations {
        /// `everyone` or `known`; without it, the setting is shown.
        policy: Option<String>,
    },
    /// Two-factor login with an authenticator app (TOTP): enable, confirm, disable.
    #[command(name = "2fa", subcommand)]
    TwoFa(TwoFaCommand),
    /// Channels: groups anyone with the password (and the authenticator code) joins.
    #[command(subcommand)]
    Channel(ChannelCommand),
    /// Files, end-to-end encrypted: send, get, delete.
    #[command(subcommand)]
    File(FileCommand),
    /// The files offered in a conversation (every conversation without TARGET).
    Files {
        /// A username or #name.
        target: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// The account's encrypted backup on the server: now, status, restore, recovery-key.
    #[command(subcommand)]
    Backup(BackupCommand),
    /// This home on disk: encrypt it at rest, or say whether it is.
    #[command(subcommand)]
    Home(HomeCommand),
}

#[derive(Subcommand, Debug)]
enum BackupCommand {
    /// Upload the history the backup does not have yet (it also goes up by itself a
    /// few seconds after new messages, and when hush closes).
    Now,
    /// The last backup's time and size, and whether it holds everything.
    Status {
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Check the whole backup, then add its history to this home (marked as restored).
    Restore {
        /// Open the backup with the recovery key (given here, or from HUSH_RECOVERY_KEY,
        /// a prompt, or one line of standard input) instead of this home's key.
        #[arg(long, value_name = "KEY", num_args = 0..=1)]
        recovery_key: Option<Option<String>>,
    },
    /// Make a new recovery key (shown once); the old one stops opening the backup.
    RecoveryKey,
}

#[derive(Subcommand, Debug)]
enum HomeCommand {
    /// Encrypt this home at rest under a passphrase (asked twice on a terminal, or
    /// HUSH_PASSPHRASE, or --passphrase-stdin).
    Encrypt,
    /// Whether this home is encrypted at rest.
    Status {
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum FileCommand {
    /// Encrypt PATH, upload it and offer it in TARGET's conversation (a user or
    /// #name). Sending the same file there again after an interruption resumes.
    Send {
        /// A username (1:1 conversation), or #name (a group or channel).
        target: String,
        /// The file to send.
        path: std::path::PathBuf,
        /// Offer it under this name instead of its own.
        #[arg(long)]
        name: Option<String>,
        /// One JSON object instead of the sentence; no progress bar.
        #[arg(long)]
        json: bool,
    },
    /// Download, decrypt and check an offered file, then write it: under its offered
    /// name (made safe) in the current directory unless --output says otherwise.
    Get {
        /// The id `hush recv` or `hush files` shows.
        file_id: String,
        /// A file to write, or a directory to write into.
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
        /// Replace a file that exists.
        #[arg(long)]
        force: bool,
        /// One JSON object instead of the sentence; no progress bar.
        #[arg(long)]
        json: bool,
    },
    /// Delete a file you uploaded from the server (recipients can no longer fetch it).
    Delete {
        /// The file's id.
        file_id: String,
    },
}

#[derive(Subcommand, Debug)]
enum ChannelCommand {
    /// Create #NAME; you become its admin. The password comes from
    /// HUSH_CHANNEL_PASSWORD, --password-stdin or a prompt.
    Create {
        /// The channel, as #name or name.
        name: String,
        /// Joining also needs the current code of an authenticator app (TOTP).
        #[arg(long)]
        totp: bool,
        /// No password: anyone on the server may join.
        #[arg(long)]
        open: bool,
        /// Read the channel password from one line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Join #NAME (password as for create; the code is asked on a terminal).
    Join {
        /// The channel, as #name or name.
        name: String,
        /// The 6-digit code the channel's authenticator entry shows now.
        #[arg(long)]
        code: Option<String>,
        /// Read the channel password from one line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List the server's channels: name, members, what joining needs.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Change what joining #NAME needs (admins only).
    Set {
        /// The channel, as #name or name.
        name: String,
        /// Set a new password (from HUSH_CHANNEL_PASSWORD, --password-stdin or a prompt).
        #[arg(long)]
        password: bool,
        /// Remove the password: anyone on the server may join.
        #[arg(long, conflicts_with = "password")]
        open: bool,
        /// A new authenticator secret; prints its otpauth URI.
        #[arg(long)]
        rotate_totp: bool,
        /// Stop asking joiners for a code.
        #[arg(long, conflicts_with = "rotate_totp")]
        no_totp: bool,
        /// Read the new password from one line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove every member and delete #NAME from the server (admins only).
    Delete {
        /// The channel, as #name or name.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum TwoFaCommand {
    /// Show a new secret (otpauth URI, and a QR code on a terminal) for an
    /// authenticator app, then ask for a code from it to turn two-factor login on.
    Enable {
        /// Only print the URI; confirm later with `hush 2fa confirm CODE`.
        #[arg(long)]
        uri_only: bool,
    },
    /// Turn two-factor login on with a code from the secret `enable` showed; prints
    /// the recovery codes, once.
    Confirm {
        /// The 6-digit code the app shows now.
        code: String,
    },
    /// Turn two-factor login off (needs a current code or a recovery code).
    Disable {
        /// A 6-digit code or a recovery code; asked on a terminal if missing.
        #[arg(long)]
        code: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum DevicesCommand {
    /// Remove a device from every conversation and end its sessions at once.
    Revoke {
        /// The device id, as `hush devices` lists it.
        device: String,
    },
}

#[derive(Subcommand, Debug)]
enum OutboxCommand {
    /// Put a set-aside message back in line and try to send it now.
    Retry {
        /// The message id, as `hush outbox` lists it.
        id: String,
    },
    /// Drop a message from the outbox; history keeps it, marked failed.
    Drop {
        /// The message id, as `hush outbox` lists it.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Stop the server gracefully.
    Shutdown,
    /// Disconnect a user (not available yet).
    Kick {
        /// The user to disconnect.
        user: String,
    },
}

#[derive(Subcommand, Debug)]
enum GroupCommand {
    /// Create a group; you become its admin.
    Create {
        /// The group, as #name.
        name: String,
        /// Usernames to add, comma-separated.
        #[arg(long, value_delimiter = ',')]
        members: Vec<String>,
    },
    /// Add users (admins only).
    Add {
        /// The group, as #name.
        name: String,
        /// Usernames.
        #[arg(required = true)]
        users: Vec<String>,
    },
    /// Remove users (admins only).
    Remove {
        /// The group, as #name.
        name: String,
        /// Usernames.
        #[arg(required = true)]
        users: Vec<String>,
    },
    /// Make users admins (admins only).
    Promote {
        /// The group, as #name.
        name: String,
        /// Usernames.
        #[arg(required = true)]
        users: Vec<String>,
    },
    /// Leave a group; its other members see you go. The last admin names a successor.
    Leave {
        /// The group, as #name.
        name: String,
        /// Make this member an admin first (needed when you are the only admin).
        #[arg(long, value_name = "USER")]
        successor: Option<String>,
    },
    /// Show the members, from the group's authenticated state.
    Members {
        /// The group, as #name.
        name: String,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

/// An error with the exit code it maps to.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        let code = match error.downcast_ref::<ClientError>() {
            Some(ClientError::WrongPassword | ClientError::NoAccount) => 3,
            Some(ClientError::Server(e))
                if matches!(
                    e.code,
                    ErrorCode::AuthFailed
                        | ErrorCode::AccountDisabled
                        | ErrorCode::Unauthenticated
                        | ErrorCode::RateLimited
                        | ErrorCode::Forbidden
                ) =>
            {
                3
            }
            Some(ClientError::Server(e))
                if matches!(
                    e.code,
                    ErrorCode::SecondFactorRequired | ErrorCode::SecondFactorInvalid
                ) =>
            {
                8
            }
            Some(
                ClientError::FingerprintChanged { .. }
                | ClientError::FingerprintMismatch { .. }
                | ClientError::UnknownServer { .. },
            ) => 4,
            Some(e) if e.is_transport() => 5,
            Some(ClientError::IdentityChanged { .. }) => 7,
            Some(ClientError::PassphraseNeeded | ClientError::WrongPassphrase) => 11,
            Some(ClientError::Backup(_)) => 12,
            _ => 1,
        };
        Failure { code, error }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        anyhow::Error::new(e).into()
    }
}

/// Whether this run draws the interactive client (which must not log to its terminal).
fn interactive_ui(cli: &Cli) -> bool {
    matches!(cli.command, Some(Command::Tui)) || (cli.command.is_none() && prompt::interactive())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of stdout went away (`| head`): nothing is wrong.
        Err(f) if hush_clidoc::is_broken_pipe(&*f.error) => ExitCode::SUCCESS,
        Err(f) => {
            // One line, as scripts expect.
            let text = format!("{:#}", f.error).replace('\n', " ");
            eprintln!("error: {text}");
            ExitCode::from(f.code)
        }
    }
}

/// Where the library's logs go. A command's stderr carries its one `error:` line and
/// nothing else unless asked: `-v`/`-vv`, or a filter in HUSH_LOG or RUST_LOG, sends
/// logs there; otherwise warnings are appended to HOME/hush.log (if the home exists).
/// The interactive client always logs to the file, never to its own screen.
fn init_logging(cli: &Cli) {
    let asked = std::env::var("HUSH_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok();
    let filter = match (&asked, cli.global.verbose) {
        (Some(f), _) => f.clone(),
        (None, 0) => "warn".to_owned(),
        (None, 1) => "warn,hush_client=info,hush=info".to_owned(),
        (None, _) => "debug,rustls=info,h2=info".to_owned(),
    };
    let to_stderr = (asked.is_some() || cli.global.verbose > 0) && !interactive_ui(cli);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(false);
    if to_stderr {
        let _ = builder.with_writer(std::io::stderr).try_init();
        return;
    }
    let Ok(dir) = home_dir(&cli.global) else {
        return;
    };
    let log = dir.join("hush.log");
    if interactive_ui(cli) {
        // The interactive client's log is there from its start.
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log);
    }
    // Opened per line, and only in a home that exists (a command that makes none,
    // like `completions`, leaves no directory behind); logs are rare at this level.
    let _ = builder
        .with_writer(move || -> Box<dyn std::io::Write> {
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
            {
                Ok(f) if dir.is_dir() => Box::new(f),
                _ => Box::new(std::io::sink()),
            }
        })
        .try_init();
}

fn home_dir(global: &Global) -> anyhow::Result<PathBuf> {
    if let Some(h) = &global.home {
        return Ok(h.clone());
    }
    dirs::data_dir()
        .map(|d| d.join("hush"))
        .context("no home directory: pass --home DIR or set HUSH_HOME")
}

fn first_use(global: &Global) -> Result<FirstUse, Failure> {
    Ok(
        match (&global.server_fingerprint, global.trust_new_server) {
            (Some(fp), _) => FirstUse::Expect(Fingerprint::parse(fp).map_err(|e| Failure {
                // A malformed flag is a usage error.
                code: 2,
                error: anyhow::anyhow!("--server-fingerprint: {e}"),
            })?),
            (None, true) => FirstUse::TrustNew,
            (None, false) => FirstUse::Refuse,
        },
    )
}

/// On a terminal with no trust flag, an unknown server's fingerprint is shown and
/// the user asked before anything else (a password) is asked for: declining wastes
/// nothing (exit 4). Returns the key to expect, when one was accepted here.
async fn trust_first(
    dir: &std::path::Path,
    server: &str,
    global: &Global,
) -> Result<Option<Fingerprint>, Failure> {
    if !matches!(first_use(global)?, FirstUse::Refuse) || !prompt::interactive() {
        return Ok(None);
    }
    let (display, _, _) = hush_client::connection::normalize_server(server)?;
    if hush_client::trust::KnownServers::new(dir)
        .pinned(&display)?
        .is_some()
    {
        return Ok(None);
    }
    let (display, presented) = hush_client::connection::probe(server).await?;
    if prompt::confirm_server(&display, presented)? {
        Ok(Some(presented))
    } else {
        Err(untrusted())
    }
}

fn untrusted() -> Failure {
    Failure {
        code: 4,
        error: anyhow::anyhow!("server key not trusted; nothing was sent"),
    }
}

/// Registers or logs in under the user's trust choice (`trusted`: a key the user
/// accepted already); on a terminal, an unknown server's fingerprint is shown and the
/// user asked (nothing is sent before).
async fn enrol(
    dir: &std::path::Path,
    server: &str,
    global: &Global,
    trusted: Option<Fingerprint>,
    unlock: &hush_client::home::Unlock,
    enrolment: impl Fn() -> Enrolment,
) -> Result<(Client, Account), Failure> {
    let policy = match trusted {
        Some(fp) => FirstUse::Expect(fp),
        None => first_use(global)?,
    };
    let options = || ClientOptions {
        unlock: unlock.clone(),
        ..ClientOptions::default()
    };
    match Client::enrol(dir, server, policy, enrolment(), options()).await {
        Err(ClientError::UnknownServer { server, presented }) if prompt::interactive() => {
            if prompt::confirm_server(&server, presented)? {
                Ok(Client::enrol(
                    dir,
                    &server,
                    FirstUse::Expect(presented),
                    enrolment(),
                    options(),
                )
                .await?)
            } else {
                Err(untrusted())
            }
        }
        other => Ok(other?),
    }
}

/// The username to register or log in with: given (flag or hush.toml), else asked on
/// a terminal with `ask`.
fn enrol_username(
    given: Option<String>,
    ask: impl FnOnce() -> anyhow::Result<String>,
) -> anyhow::Result<Username> {
    match given {
        Some(u) => parse_username(&u),
        None if prompt::interactive() => parse_username(&ask()?),
        None => anyhow::bail!(
            "--username is required when not on a terminal (or `username` in HOME/hush.toml)"
        ),
    }
}

fn parse_username(s: &str) -> anyhow::Result<Username> {
    Username::parse(s).map_err(|e| anyhow::anyhow!("{e}"))
}

fn device_name() -> Option<String> {
    let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty());
    Some(format!(
        "hush on {}",
        host.as_deref().unwrap_or(std::env::consts::OS)
    ))
}

/// The `--json` flag of commands that have one, for `output = "json"` in hush.toml.
fn json_flag(command: &mut Command) -> Option<&mut bool> {
    match command {
        Command::Whoami { json }
        | Command::Recv { json, .. }
        | Command::History { json, .. }
        | Command::Chats { json }
        | Command::Verify { json, .. }
        | Command::Devices { json, .. }
        | Command::Outbox { json, .. }
        | Command::Requests { json }
        | Command::Channel(ChannelCommand::List { json })
        | Command::Files { json, .. }
        | Command::File(FileCommand::Send { json, .. } | FileCommand::Get { json, .. })
        | Command::Group {
            command: GroupCommand::Members { json, .. },
        } => Some(json),
        _ => None,
    }
}

/// `HOME/tui.toml`, or the documented default when there is none; a broken file is
/// a usage error, said before the screen is taken over.
fn tui_config(dir: &std::path::Path) -> Result<hush_tui::config::Config, Failure> {
    hush_tui::config::Config::load(&dir.join("tui.toml")).map_err(|e| Failure {
        code: 2,
        error: anyhow::anyhow!(e),
    })
}

async fn open(dir: &std::path::Path) -> Result<Client, Failure> {
    Ok(Client::open(dir, backup::options(dir)?).await?)
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let global = cli.global;
    let Some(command) = cli.command else {
        if prompt::interactive() {
            let dir = home_dir(&global)?;
            let config = tui_config(&dir)?;
            let client = open(&dir).await?;
            return Ok(hush_tui::run(client, config).await?);
        }
        use clap::CommandFactory;
        Cli::command().print_help().ok();
        return Ok(());
    };
    backup::passphrase_from_stdin(global.passphrase_stdin);
    // From the clap definitions; no home needed.
    match &command {
        Command::Completions { shell } => {
            use clap::CommandFactory;
            hush_clidoc::completions(&Cli::command(), *shell, &mut std::io::stdout())
                .context("writing the completion script")?;
            return Ok(());
        }
        Command::Man { out_dir } => {
            use clap::CommandFactory;
            hush_clidoc::man_command(&Cli::command(), Some(EXIT_CODES), out_dir.as_deref())
                .context("writing the manual page")?;
            return Ok(());
        }
        _ => {}
    }
    let dir = home_dir(&global)?;
    let mut command = command;
    if config::Config::load(&dir)?.json(global.text_output)
        && let Some(json) = json_flag(&mut command)
    {
        *json = true;
    }
    match command {
        Command::Register {
            server,
            username,
            display_name,
            email,
            invite,
            no_passphrase,
        } => {
            let config = config::Config::load(&dir)?;
            let server = config.server(server);
            let username = enrol_username(username.or(config.username), prompt::username)?;
            let trusted = trust_first(&dir, &server, &global).await?;
            let password = prompt::password(global.password_stdin, true)?;
            if password.len() < 8 {
                return Err(anyhow::anyhow!("the password must be at least 8 characters").into());
            }
            let profile = Profile {
                display_name,
                email,
                device_name: device_name(),
            };
            let unlock = backup::unlock_new(&dir, no_passphrase)?;
            let (client, account) = enrol(&dir, &server, &global, trusted, &unlock, || {
                Enrolment::Register {
                    username: username.clone(),
                    password: password.clone(),
                    invite: invite.clone(),
                    profile: profile.clone(),
                }
            })
            .await?;
            let server = client.stored_account().await?.server;
            let recovery = client.take_recovery_key().await;
            // Closing waits for the first sync, which publishes this device's key
            // packages so others can reach it.
            client.close().await;
            println!(
                "registered {} on {server} (device {})",
                account.username, account.device_id
            );
            match &recovery {
                Some(key) => backup::show_recovery_key(key),
                None => eprintln!(
                    "warning: backups are off for this account (the server did not keep the backup key; see the log)"
                ),
            }
            backup::warn_if_plaintext(&dir);
            if account.admin {
                println!(
                    "{} is the first account on this server, so it administers it (`hushd user` manages accounts)",
                    account.username
                );
            }
            println!(
                "next: `hush send USER TEXT` writes to someone, `hush group create '#NAME' --members USER` starts a group, `hush` alone opens the terminal client"
            );
        }
        Command::Login {
            server,
            username,
            code,
            restore,
            no_restore,
            no_passphrase,
        } => {
            let config = config::Config::load(&dir)?;
            let server = config.server(server);
            let username =
                enrol_username(username.or(config.username), || prompt::line("Username: "))?;
            let trusted = trust_first(&dir, &server, &global).await?;
            let password = prompt::password(global.password_stdin, false)?;
            let mut factor = code.as_deref().map(parse_second_factor).transpose()?;
            let unlock = backup::unlock_new(&dir, no_passphrase)?;
            let login = |factor: Option<SecondFactor>| Enrolment::Login {
                username: username.clone(),
                password: password.clone(),
                device_name: device_name(),
                second_factor: factor,
            };
            let (client, account) = loop {
                match enrol(&dir, &server, &global, trusted, &unlock, || {
                    login(factor.clone())
                })
                .await
                {
                    Err(f)
                        if needs_second_factor(&f) && factor.is_none() && prompt::interactive() =>
                    {
                        factor = Some(parse_second_factor(&prompt::line(
                            "Authenticator code (or a recovery code): ",
                        )?)?);
                    }
                    other => break other?,
                }
            };
            let server = client.stored_account().await?.server;
            println!(
                "logged in as {} on {server} (new device {})",
                account.username, account.device_id
            );
            let restored = if restore {
                Some(backup::restore(&client, None).await)
            } else if !no_restore && prompt::interactive() {
                match client.backup_status().await {
                    Ok(s) if s.enabled && s.chunks > 0 => {
                        let answer = prompt::line(&format!(
                            "This account has a backup ({}). Restore its history here? [Y/n] ",
                            hush_client::files::human_size(s.bytes)
                        ))?;
                        if answer.is_empty() || answer.eq_ignore_ascii_case("y") {
                            Some(backup::restore(&client, None).await)
                        } else {
                            None
                        }
                    }
                    _ => None,
                }
            } else {
                None
            };
            client.close().await;
            match restored {
                Some(Ok(r)) => backup::say_restored(&r),
                Some(Err(e)) => {
                    return Err(anyhow::Error::new(e)
                        .context("logged in, but the history was not restored (`hush backup restore` tries again)")
                        .into());
                }
                None => {}
            }
            backup::warn_if_plaintext(&dir);
        }
        Command::Logout { force } => {
            let client = open(&dir).await?;
            let stored = client.stored_account().await?;
            if let Some(warning) = client.logout(force).await? {
                eprintln!("warning: {warning}; forgetting the account locally anyway");
            }
            client.close().await;
            println!("logged out {} from {}", stored.username, stored.server);
        }
        Command::Whoami { json } => {
            let client = open(&dir).await?;
            let me = client.whoami().await?;
            if json {
                println!(
                    "{}",
                    output::whoami_json(&me.account, &me.server, me.fingerprint, &me.warning)
                );
            } else {
                println!("{}", output::whoami_text(&me.account, &me.server));
                if let Some(w) = &me.warning {
                    eprintln!("warning: {w}");
                }
            }
            client.close().await;
        }
        Command::Send { target, text } => {
            let text = if text == "-" { read_stdin()? } else { text };
            if text.is_empty() {
                return Err(anyhow::anyhow!("the message is empty").into());
            }
            let to = Target::parse(&target)?;
            let client = open(&dir).await?;
            let event = match client.send(&to, &text).await {
                Err(ClientError::Server(e))
                    if e.code == ErrorCode::NotFound && !target.starts_with('#') =>
                {
                    // `hush send team x` for the group #team.
                    let group = format!("#{target}");
                    let known = client
                        .chats()
                        .await
                        .map(|chats| chats.iter().any(|c| c.name == group))
                        .unwrap_or(false);
                    client.close().await;
                    let hint = if known {
                        format!("; did you mean {group}?")
                    } else {
                        String::new()
                    };
                    return Err(anyhow::anyhow!("{}{hint}", e.message).into());
                }
                other => other?,
            };
            if let Event::Message { id, .. } = &event {
                println!("sent {id} to {target}");
            }
            client.close().await;
        }
        Command::Group { command } => {
            let client = open(&dir).await?;
            match command {
                GroupCommand::Create { name, members } => {
                    let name = group_name(&name)?;
                    client.create_group(&name, &usernames(&members)?).await?;
                    println!("created {name}");
                }
                GroupCommand::Add { name, users } => {
                    let name = group_name(&name)?;
                    client.add_members(&name, &usernames(&users)?).await?;
                    println!("added {} to {name}", users.join(", "));
                }
                GroupCommand::Remove { name, users } => {
                    let name = group_name(&name)?;
                    client.remove_members(&name, &usernames(&users)?).await?;
                    println!("removed {} from {name}", users.join(", "));
                }
                GroupCommand::Promote { name, users } => {
                    let name = group_name(&name)?;
                    client.promote(&name, &usernames(&users)?).await?;
                    let verb = if users.len() == 1 {
                        "administers"
                    } else {
                        "administer"
                    };
                    println!("{} now {verb} {name}", users.join(", "));
                }
                GroupCommand::Members { name, json } => {
                    let name = group_name(&name)?;
                    let members = client.members(&name).await?;
                    if !json {
                        println!("{}", output::member_count(&name, members.len()));
                    }
                    for member in members {
                        println!("{}", output::member(&member, json));
                    }
                }
                GroupCommand::Leave { name, successor } => {
                    let name = group_name(&name)?;
                    if let Some(s) = successor {
                        client.promote(&name, &[parse_username(&s)?]).await?;
                        println!("{s} now administers {name}");
                    }
                    client.leave(&name).await?;
                    println!("left {name}");
                }
            }
            client.close().await;
        }
        Command::Tui => {
            let config = tui_config(&dir)?;
            hush_tui::run(open(&dir).await?, config).await?;
        }
        Command::Admin { command } => match command {
            AdminCommand::Shutdown => {
                let client = open(&dir).await?;
                let server = client.admin_shutdown().await?;
                client.close().await;
                println!("the server at {server} is shutting down");
            }
            AdminCommand::Kick { .. } => {
                return Err(Failure {
                    code: 6,
                    error: anyhow::anyhow!(
                        "`hush admin kick` is not available in this version of hush yet"
                    ),
                });
            }
        },
        Command::Recv {
            follow,
            json,
            timeout,
        } => {
            let client = open(&dir).await?;
            let result = receive::run(&client, follow, json, timeout).await;
            client.close().await;
            result?;
        }
        Command::History {
            target,
            limit,
            json,
        } => {
            let limit = config::Config::load(&dir)?.history_limit(limit);
            let client = Client::open(
                &dir,
                ClientOptions {
                    unlock: backup::unlock(&dir)?,
                    ..ClientOptions::offline()
                },
            )
            .await?;
            for e in client.history(&target, limit).await? {
                output::event(&e, json).context("writing output")?;
            }
            client.close().await;
        }
        Command::Chats { json } => {
            let client = open(&dir).await?;
            // Fresh unread counts if the server is reachable; the local view otherwise.
            match client.sync().await {
                Ok(_) => {}
                Err(e) if e.is_transport() => {
                    eprintln!("warning: {e}; showing what this home already has");
                }
                Err(e) => return Err(e.into()),
            }
            for chat in client.chats().await? {
                println!("{}", output::chat(&chat, json));
            }
            client.close().await;
        }
        Command::Verify {
            user,
            confirm,
            json,
        } => {
            let user = parse_username(&user)?;
            let client = open(&dir).await?;
            let v = client.verify(&user, confirm).await?;
            client.close().await;
            println!("{}", output::verification(&v, json));
            if !json
                && prompt::interactive()
                && let Some(qr) = output::qr(&v.safety_number)
            {
                println!("{qr}");
            }
        }
        Command::Outbox { command, json } => {
            let client = open(&dir).await?;
            match command {
                None => {
                    let entries = client.outbox().await?;
                    if entries.is_empty() && !json {
                        println!("the outbox is empty");
                    }
                    for e in &entries {
                        println!("{}", output::outbox_entry(e, json));
                    }
                }
                Some(OutboxCommand::Retry { id }) => {
                    client.outbox_retry(&id).await?;
                    println!("sent {id}");
                }
                Some(OutboxCommand::Drop { id }) => {
                    client.outbox_drop(&id).await?;
                    println!("dropped {id}; history keeps it, marked failed");
                }
            }
            client.close().await;
        }
        Command::Devices { command, json } => {
            let client = open(&dir).await?;
            match command {
                None => {
                    for d in client.devices().await? {
                        println!("{}", output::device(&d, json));
                    }
                }
                Some(DevicesCommand::Revoke { device }) => {
                    let id = DeviceId::parse_hex(&device)
                        .map_err(|e| anyhow::anyhow!("DEVICE_ID: {e}"))?;
                    client.revoke_device(id).await?;
                    println!("revoked device {id}");
                }
            }
            client.close().await;
        }
        Command::Requests { json } => {
            let client = open(&dir).await?;
            let pending = client.requests().await;
            client.close().await;
            let pending = pending?;
            if pending.is_empty() && !json {
                println!("no invitations waiting");
            }
            for r in &pending {
                println!("{}", output::request(r, json));
            }
        }
        Command::Invitations { policy } => {
            let client = open(&dir).await?;
            let result = match policy {
                Some(p) => match hush_client::home::InvitationPolicy::parse(&p) {
                    Ok(p) => client.set_invitation_policy(p).await.map(|()| p),
                    Err(e) => Err(e),
                },
                None => client.invitation_policy().await,
            };
            client.close().await;
            println!("invitations: {}", result?.as_str());
        }
        Command::Accept { user } => answer(&dir, &user, true).await?,
        Command::Decline { user } => answer(&dir, &user, false).await?,
        Command::TwoFa(command) => two_factor(&dir, command).await?,
        Command::Channel(command) => channel(&dir, command).await?,
        Command::File(command) => files::file(&dir, command).await?,
        Command::Backup(command) => backup::backup(&dir, command).await?,
        Command::Home(command) => backup::home(&dir, command)?,
        Command::Files { target, json } => files::list(&dir, target, json).await?,
        Command::Completions { .. } | Command::Man { .. } => {}
    }
    Ok(())
}

/// `hush 2fa ...`.
async fn two_factor(dir: &std::path::Path, command: TwoFaCommand) -> Result<(), Failure> {
    match command {
        TwoFaCommand::Enable { uri_only } => {
            if !uri_only && !prompt::interactive() {
                return Err(anyhow::anyhow!(
                    "asking for a code needs a terminal: run `hush 2fa enable --uri-only`, add the URI to the app, then `hush 2fa confirm CODE`"
                )
                .into());
            }
            let client = open(dir).await?;
            let setup = client.two_factor_enable().await?;
            println!("{}", setup.uri);
            if std::io::stdout().is_terminal() {
                if let Some(qr) = output::qr_of(&setup.uri) {
                    println!("{qr}");
                }
                println!(
                    "Scan it with an authenticator app (Aegis, Google Authenticator, ...), or type the secret {}.",
                    setup.secret_base32
                );
            }
            if uri_only {
                client.close().await;
                return Ok(());
            }
            let code = loop {
                match TotpCode::parse(&prompt::line("Code from the app: ")?) {
                    Ok(code) => break code,
                    Err(e) => eprintln!("{e}"),
                }
            };
            let codes = client.two_factor_confirm(code).await;
            client.close().await;
            print_recovery_codes(&codes?);
        }
        TwoFaCommand::Confirm { code } => {
            let code = TotpCode::parse(&code).map_err(|e| anyhow::anyhow!("CODE: {e}"))?;
            let client = open(dir).await?;
            let codes = client.two_factor_confirm(code).await;
            client.close().await;
            print_recovery_codes(&codes?);
        }
        TwoFaCommand::Disable { code } => {
            let factor = match code {
                Some(c) => parse_second_factor(&c)?,
                None if prompt::interactive() => parse_second_factor(&prompt::line(
                    "Authenticator code (or a recovery code): ",
                )?)?,
                None => {
                    return Err(anyhow::anyhow!(
                        "turning two-factor login off needs --code (a current code or a recovery code)"
                    )
                    .into());
                }
            };
            let client = open(dir).await?;
            let done = client.two_factor_disable(factor).await;
            client.close().await;
            done?;
            println!("two-factor login is off");
        }
    }
    Ok(())
}

/// `#name` from `name` or `#name`.
fn channel_name(s: &str) -> anyhow::Result<GroupName> {
    let s = s.trim();
    if s.starts_with('#') {
        group_name(s)
    } else {
        group_name(&format!("#{s}"))
    }
}

/// A channel password from HUSH_CHANNEL_PASSWORD, one line of stdin, or a prompt.
fn channel_password(from_stdin: bool, confirm: bool) -> Result<ChannelPassword, Failure> {
    let pw = prompt::secret(
        "HUSH_CHANNEL_PASSWORD",
        "Channel password",
        from_stdin,
        confirm,
    )?;
    ChannelPassword::parse(&pw).map_err(|e| anyhow::anyhow!("{e}").into())
}

/// Prints a channel's otpauth URI, and its QR code on a terminal.
fn print_channel_totp(setup: &hush_client::account::TotpSetup) {
    println!("{}", setup.uri);
    if std::io::stdout().is_terminal() {
        if let Some(qr) = output::qr_of(&setup.uri) {
            println!("{qr}");
        }
        println!(
            "Members add it to an authenticator app (Aegis, Google Authenticator, ...) by scanning it, or type the secret {}.",
            setup.secret_base32
        );
    }
}

/// Exit codes of a refused join: each reason its own.
fn join_failure(e: ClientError) -> Failure {
    let code = match &e {
        ClientError::Server(s) => match s.code {
            ErrorCode::ChannelPasswordWrong => Some(9),
            ErrorCode::RateLimited => Some(10),
            ErrorCode::NotFound | ErrorCode::AlreadyAMember => Some(1),
            _ => None,
        },
        _ => None,
    };
    match code {
        Some(code) => Failure {
            code,
            error: e.into(),
        },
        None => e.into(),
    }
}

/// `hush channel ...`.
async fn channel(dir: &std::path::Path, command: ChannelCommand) -> Result<(), Failure> {
    match command {
        ChannelCommand::Create {
            name,
            totp,
            open: no_password,
            password_stdin,
        } => {
            let name = channel_name(&name)?;
            let password = if no_password {
                None
            } else {
                Some(channel_password(password_stdin, true)?)
            };
            let client = open(dir).await?;
            let made = client
                .create_channel(
                    &name,
                    hush_client::channels::ChannelAccess { password, totp },
                )
                .await;
            client.close().await;
            let setup = made?;
            println!("created {name}");
            if let Some(setup) = setup {
                print_channel_totp(&setup);
            }
        }
        ChannelCommand::Join {
            name,
            code,
            password_stdin,
        } => {
            let name = channel_name(&name)?;
            let mut code = match code {
                Some(c) => Some(TotpCode::parse(&c).map_err(|e| Failure {
                    code: 8,
                    error: anyhow::anyhow!("--code: {e}"),
                })?),
                None => None,
            };
            let client = open(dir).await?;
            let listed = client.channels().await;
            let needs = listed
                .as_ref()
                .ok()
                .and_then(|l| l.iter().find(|c| c.name == name).cloned());
            if listed.is_ok() && needs.is_none() {
                client.close().await;
                return Err(anyhow::anyhow!("there is no channel called {name}").into());
            }
            let password = match &needs {
                Some(c) if !c.password => None,
                _ => match channel_password(password_stdin, false) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        client.close().await;
                        return Err(e);
                    }
                },
            };
            if code.is_none() && needs.as_ref().is_some_and(|c| c.totp) && prompt::interactive() {
                code = loop {
                    match TotpCode::parse(&prompt::line(&format!("Code for {name}: "))?) {
                        Ok(c) => break Some(c),
                        Err(e) => eprintln!("{e}"),
                    }
                };
            }
            let joined = client.join_channel(&name, password, code).await;
            client.close().await;
            joined.map_err(join_failure)?;
            println!("joined {name}");
        }
        ChannelCommand::List { json } => {
            let client = open(dir).await?;
            let listed = client.channels().await;
            client.close().await;
            for c in listed? {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "name": c.name.to_string(),
                            "members": c.members,
                            "password": c.password,
                            "totp": c.totp,
                            "lobby": c.lobby,
                        })
                    );
                } else {
                    let mut needs = Vec::new();
                    if c.password {
                        needs.push("password");
                    }
                    if c.totp {
                        needs.push("code");
                    }
                    let needs = if needs.is_empty() {
                        "open".to_owned()
                    } else {
                        needs.join(" + ")
                    };
                    let lobby = if c.lobby { ", the lobby" } else { "" };
                    let members = if c.members == 1 { "member" } else { "members" };
                    println!("{}: {} {members}, {needs}{lobby}", c.name, c.members);
                }
            }
        }
        ChannelCommand::Set {
            name,
            password,
            open: no_password,
            rotate_totp,
            no_totp,
            password_stdin,
        } => {
            let name = channel_name(&name)?;
            if !(password || no_password || rotate_totp || no_totp) {
                return Err(anyhow::anyhow!(
                    "say what to change: --password, --open, --rotate-totp or --no-totp"
                )
                .into());
            }
            let password = if password {
                Some(Some(channel_password(password_stdin, true)?))
            } else if no_password {
                Some(None)
            } else {
                None
            };
            let client = open(dir).await?;
            let done = client
                .update_channel(
                    &name,
                    hush_client::channels::ChannelChange {
                        password,
                        rotate_totp,
                        remove_totp: no_totp,
                    },
                )
                .await;
            client.close().await;
            let setup = done?;
            println!("updated {name}");
            if let Some(setup) = setup {
                print_channel_totp(&setup);
            }
        }
        ChannelCommand::Delete { name } => {
            let name = channel_name(&name)?;
            let client = open(dir).await?;
            let done = client.delete_channel(&name).await;
            client.close().await;
            done?;
            println!("deleted {name}");
        }
    }
    Ok(())
}

fn print_recovery_codes(codes: &[RecoveryCode]) {
    println!("two-factor login is on; logins now need a code from the app");
    println!(
        "recovery codes (each works once in place of a code; keep them somewhere safe, they are not shown again):"
    );
    for c in codes {
        println!("  {}", c.display());
    }
}

fn parse_second_factor(s: &str) -> Result<SecondFactor, Failure> {
    SecondFactor::parse(s).map_err(|e| Failure {
        code: 8,
        error: anyhow::anyhow!("{e}"),
    })
}

fn needs_second_factor(f: &Failure) -> bool {
    matches!(
        f.error.downcast_ref::<ClientError>(),
        Some(ClientError::Server(e)) if e.code == ErrorCode::SecondFactorRequired
    )
}

/// `hush accept` / `hush decline`.
async fn answer(dir: &std::path::Path, user: &str, accept: bool) -> Result<(), Failure> {
    let user = parse_username(user)?;
    let client = open(dir).await?;
    let answered = client.answer_request(&user, accept).await;
    client.close().await;
    answered?;
    if accept {
        println!("accepted {user}'s invitations");
    } else {
        println!("declined {user}'s invitations");
    }
    Ok(())
}

fn group_name(s: &str) -> anyhow::Result<GroupName> {
    GroupName::parse(s).map_err(|e| anyhow::anyhow!("{e}"))
}

fn usernames(list: &[String]) -> anyhow::Result<Vec<Username>> {
    list.iter()
        .filter(|u| !u.trim().is_empty())
        .map(|u| parse_username(u.trim()))
        .collect()
}

fn read_stdin() -> anyhow::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("reading the message from standard input")?;
    Ok(text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text)
        .to_owned())
}

#[cfg(test)]
mod cli_tests {
    use clap::CommandFactory;

    /// Every flag and argument of every subcommand says what it is for.
    #[test]
    fn every_argument_has_help_text() {
        hush_clidoc::assert_help(&super::Cli::command());
    }
}
