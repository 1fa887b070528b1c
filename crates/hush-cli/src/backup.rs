//! `hush backup now|status|restore|recovery-key`, `hush home encrypt|status`, and how
//! a home's passphrase is found for every command (ADR 0005, ADR 0006).
use std::io::IsTerminal;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::OnceLock;

use hush_client::backup::RecoveryKey;
use hush_client::backup::Restored;
use hush_client::files::Progress;
use hush_client::home::Unlock;
use hush_client::{Client, ClientError, ClientOptions};
use indicatif::{ProgressBar, ProgressStyle};
use zeroize::Zeroizing;

use super::{BackupCommand, Failure, HomeCommand, open, prompt};

/// `--passphrase-stdin`, as given on the command line (set once by `run`).
static PASSPHRASE_STDIN: OnceLock<bool> = OnceLock::new();

pub(crate) fn passphrase_from_stdin(yes: bool) {
    let _ = PASSPHRASE_STDIN.set(yes);
}

fn from_stdin() -> bool {
    PASSPHRASE_STDIN.get().copied().unwrap_or(false)
}

/// How to open the existing home at `dir`: an encrypted one with its passphrase; a
/// plaintext one as it is, or encrypted now when a passphrase is given by
/// `HUSH_PASSPHRASE` or `--passphrase-stdin` (never asked for).
pub(crate) fn unlock(dir: &Path) -> Result<Unlock, Failure> {
    let encrypted = hush_client::home::is_encrypted(dir);
    let given = std::env::var_os("HUSH_PASSPHRASE").is_some() || from_stdin();
    if !encrypted && !given {
        return Ok(Unlock::None);
    }
    match prompt::passphrase(from_stdin(), "Passphrase for this home", false, false)? {
        Some(p) => Ok(Unlock::Passphrase(p)),
        None => Err(ClientError::PassphraseNeeded.into()),
    }
}

/// How to create the home of a registration or login: encrypted under a passphrase
/// (asked on a terminal, empty for none), or plaintext with `--no-passphrase` or when
/// nothing can give one; a plaintext home is said to be one.
pub(crate) fn unlock_new(dir: &Path, no_passphrase: bool) -> Result<Unlock, Failure> {
    if hush_client::home::exists(dir) {
        return unlock(dir);
    }
    if no_passphrase {
        return Ok(Unlock::None);
    }
    match prompt::passphrase(
        from_stdin(),
        "Passphrase to encrypt this home (empty: none)",
        true,
        true,
    )? {
        Some(p) => Ok(Unlock::Passphrase(p)),
        None => Ok(Unlock::None),
    }
}

/// The warning a plaintext home gets, once it exists.
pub(crate) fn warn_if_plaintext(dir: &Path) {
    if hush_client::home::exists(dir) && !hush_client::home::is_encrypted(dir) {
        eprintln!(
            "note: this home is not encrypted at rest (only file permissions protect it); \
             `hush home encrypt` encrypts it under a passphrase"
        );
    }
}

pub(crate) fn options(dir: &Path) -> Result<ClientOptions, Failure> {
    Ok(ClientOptions {
        unlock: unlock(dir)?,
        ..ClientOptions::default()
    })
}

fn bar(json: bool) -> Option<ProgressBar> {
    if json || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(0);
    let style = ProgressStyle::with_template("restoring history [{bar:30}] chunk {pos}/{len}")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    Some(bar)
}

/// Restores the backup, with a progress bar on a terminal.
pub(crate) async fn restore(
    client: &Client,
    recovery: Option<RecoveryKey>,
) -> Result<Restored, ClientError> {
    let bar = bar(false);
    let mut tick = |p: Progress| {
        if let Some(b) = &bar {
            b.set_length(p.total);
            b.set_position(p.done);
        }
        ControlFlow::Continue(())
    };
    let restored = client.restore_backup(recovery, &mut tick).await;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    restored
}

pub(crate) fn say_restored(r: &Restored) {
    println!(
        "restored {} history entries and {} conversations from {} backup chunks (marked as restored)",
        r.rows, r.conversations, r.chunks
    );
}

/// Prints a recovery key with what it is for.
pub(crate) fn show_recovery_key(key: &RecoveryKey) {
    println!("recovery key: {}", key.display());
    eprintln!(
        "Write the recovery key down and keep it safe: with it (and your password) \
         `hush backup restore --recovery-key` restores your history. It is shown only now."
    );
}

fn recovery_key(given: Option<String>) -> Result<RecoveryKey, Failure> {
    let text = match given {
        Some(k) => Zeroizing::new(k),
        None => {
            let k = if let Ok(k) = std::env::var("HUSH_RECOVERY_KEY") {
                Some(Zeroizing::new(k))
            } else if prompt::interactive() {
                Some(Zeroizing::new(
                    rpassword::prompt_password("Recovery key: ")
                        .map_err(|e| anyhow::anyhow!("reading the recovery key: {e}"))?,
                ))
            } else {
                let mut line = Zeroizing::new(String::new());
                std::io::stdin()
                    .read_line(&mut line)
                    .map_err(|e| anyhow::anyhow!("reading the recovery key: {e}"))?;
                Some(line)
            };
            k.unwrap_or_default()
        }
    };
    RecoveryKey::parse(text.trim()).map_err(|e| Failure {
        code: 2,
        error: anyhow::anyhow!("{e}"),
    })
}

fn when(ms: Option<i64>) -> String {
    ms.map(hush_client::events::rfc3339)
        .unwrap_or_else(|| "never".into())
}

pub(crate) async fn backup(dir: &Path, command: BackupCommand) -> Result<(), Failure> {
    match command {
        BackupCommand::Now => {
            let client = open(dir).await?;
            let done = client.backup_now().await;
            client.close().await;
            let done = done?;
            if done.chunks == 0 {
                println!("the backup is up to date");
            } else {
                println!(
                    "backed up {} history entries in {} chunks ({})",
                    done.rows,
                    done.chunks,
                    hush_client::files::human_size(done.bytes)
                );
            }
        }
        BackupCommand::Status { json } => {
            let client = open(dir).await?;
            let s = client.backup_status().await;
            client.close().await;
            let s = s?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "enabled": s.enabled,
                        "chunks": s.chunks,
                        "bytes": s.bytes,
                        "last_backup": s.last_backup_ms.map(|_| when(s.last_backup_ms)),
                        "last_backup_ms": s.last_backup_ms,
                        "waiting": s.waiting,
                        "complete": s.complete(),
                        "recovery_key": s.recovery_key_set,
                        "restored_ms": s.restored_ms,
                    })
                );
            } else if !s.enabled {
                println!(
                    "backups are off on this home (no backup key); log in again to turn them on"
                );
            } else {
                println!(
                    "last backup: {}; {} in {} chunks; {}",
                    when(s.last_backup_ms),
                    hush_client::files::human_size(s.bytes),
                    s.chunks,
                    if s.complete() {
                        "complete".to_owned()
                    } else {
                        format!("{} history entries wait (`hush backup now`)", s.waiting)
                    }
                );
                if !s.recovery_key_set {
                    println!("no recovery key is set: `hush backup recovery-key` makes one");
                }
            }
        }
        BackupCommand::Restore { recovery_key: key } => {
            let recovery = key.map(recovery_key).transpose()?;
            let client = open(dir).await?;
            let restored = restore(&client, recovery).await;
            client.close().await;
            say_restored(&restored?);
        }
        BackupCommand::RecoveryKey => {
            let client = open(dir).await?;
            let key = client.new_recovery_key().await;
            client.close().await;
            show_recovery_key(&key?);
            eprintln!("Any earlier recovery key no longer opens the backup.");
        }
    }
    Ok(())
}

pub(crate) fn home(dir: &Path, command: HomeCommand) -> Result<(), Failure> {
    match command {
        HomeCommand::Encrypt => {
            if !hush_client::home::exists(dir) {
                return Err(anyhow::anyhow!(
                    "there is no home at {} yet: `hush register` or `hush login` create one",
                    dir.display()
                )
                .into());
            }
            if hush_client::home::is_encrypted(dir) {
                return Err(anyhow::anyhow!("this home is encrypted already").into());
            }
            let Some(p) =
                prompt::passphrase(from_stdin(), "New passphrase for this home", true, false)?
            else {
                return Err(anyhow::anyhow!(
                    "no passphrase given: set HUSH_PASSPHRASE, pass --passphrase-stdin, or run on a terminal"
                )
                .into());
            };
            hush_client::home::Home::open_with(dir, &Unlock::Passphrase(p))?;
            println!(
                "this home is now encrypted at rest; hush asks for its passphrase from now on \
                 (or reads HUSH_PASSPHRASE, or --passphrase-stdin)"
            );
        }
        HomeCommand::Status { json } => {
            let encrypted = hush_client::home::is_encrypted(dir);
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "home": dir.display().to_string(),
                        "exists": hush_client::home::exists(dir),
                        "encrypted": encrypted,
                    })
                );
            } else if encrypted {
                println!(
                    "{}: encrypted at rest (SQLCipher, key sealed under a passphrase)",
                    dir.display()
                );
            } else {
                println!(
                    "{}: not encrypted at rest (only file permissions protect it)",
                    dir.display()
                );
            }
        }
    }
    Ok(())
}
