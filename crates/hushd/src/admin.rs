//! `hushd invite ...` and `hushd user ...`: operator commands that act directly on the
//! store, so they work whether or not a server is running.
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Subcommand;
use hush_proto::ids::Username;
use hush_server::OsEntropy;
use hush_store::{Store, StoreError};

#[derive(Subcommand, Debug)]
pub enum InviteCommand {
    /// Create an invite code and print it.
    Create {
        /// How many accounts the code may create.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// How long the code stays valid, e.g. 30m, 24h, 7d [default: never expires].
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// List accounts.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Stop an account from logging in or using its sessions.
    Disable {
        /// The account's username.
        name: String,
    },
    /// Let a disabled account log in again.
    Enable {
        /// The account's username.
        name: String,
    },
    /// Delete an account and its devices.
    Delete {
        /// The account's username.
        name: String,
    },
    /// Make an account an administrator.
    Promote {
        /// The account's username.
        name: String,
    },
    /// Take administrator rights away.
    Demote {
        /// The account's username.
        name: String,
    },
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Checks an invite command's arguments before any store is opened.
pub fn check_invite(command: &InviteCommand) -> anyhow::Result<()> {
    match command {
        InviteCommand::Create { uses, expires } => {
            if *uses == 0 {
                anyhow::bail!("--uses must be at least 1");
            }
            if let Some(d) = expires {
                crate::config::parse_duration(d)?;
            }
            Ok(())
        }
    }
}

pub async fn invite(store: &dyn Store, command: InviteCommand) -> anyhow::Result<()> {
    match command {
        InviteCommand::Create { uses, expires } => {
            if uses == 0 {
                anyhow::bail!("--uses must be at least 1");
            }
            let expires_at = match expires {
                Some(d) => Some(now() + crate::config::parse_duration(&d)?.as_secs() as i64),
                None => None,
            };
            let code =
                hush_server::accounts::create_invite(store, &OsEntropy, now(), uses, expires_at)
                    .await
                    .context("storing the invite")?;
            println!("{code}");
            Ok(())
        }
    }
}

fn username(name: &str) -> anyhow::Result<Username> {
    Username::parse(name).map_err(|e| anyhow::anyhow!("{e}"))
}

fn not_found(name: &str) -> impl FnOnce(StoreError) -> anyhow::Error + '_ {
    move |e| match e {
        StoreError::UserNotFound => anyhow::anyhow!("no user named {name:?}"),
        other => anyhow::Error::new(other),
    }
}

pub async fn user(store: &dyn Store, command: UserCommand) -> anyhow::Result<()> {
    let (name, done) = match &command {
        UserCommand::List { json } => {
            let users = store.list_users().await?;
            if *json {
                for u in users {
                    println!(
                        "{{\"username\":\"{}\",\"user_id\":\"{}\",\"admin\":{},\"disabled\":{},\"devices\":{},\"created_at\":{}}}",
                        u.username, u.user_id, u.admin, u.disabled, u.devices, u.created_at
                    );
                }
            } else if users.is_empty() {
                eprintln!("no users yet");
            } else {
                println!(
                    "{:<32}  {:<5}  {:<8}  {:>7}",
                    "USERNAME", "ADMIN", "DISABLED", "DEVICES"
                );
                for u in users {
                    println!(
                        "{:<32}  {:<5}  {:<8}  {:>7}",
                        u.username,
                        if u.admin { "yes" } else { "no" },
                        if u.disabled { "yes" } else { "no" },
                        u.devices
                    );
                }
            }
            return Ok(());
        }
        UserCommand::Disable { name } => (name, "disabled"),
        UserCommand::Enable { name } => (name, "enabled"),
        UserCommand::Delete { name } => (name, "deleted"),
        UserCommand::Promote { name } => (name, "is now an administrator"),
        UserCommand::Demote { name } => (name, "is no longer an administrator"),
    };
    let u = username(name)?;
    let result = match &command {
        UserCommand::Disable { .. } => store.set_disabled(&u, true).await,
        UserCommand::Enable { .. } => store.set_disabled(&u, false).await,
        UserCommand::Delete { .. } => store.delete_user(&u).await,
        UserCommand::Promote { .. } => store.set_admin(&u, true).await,
        UserCommand::Demote { .. } => store.set_admin(&u, false).await,
        UserCommand::List { .. } => Ok(()),
    };
    result.map_err(not_found(name))?;
    println!("{u} {done}");
    Ok(())
}
