//! Channels (P550–P556): named groups anyone the server admits may join by an MLS
//! external commit. The server keeps an argon2id hash of the password and the TOTP
//! secret, checks both (each code's time step once per user, ±1 step), limits
//! attempts per user and per address, and only then hands out the channel's current
//! GroupInfo and lets the device send one external commit. It never learns what is
//! said in a channel; members see every join in their MLS roster.
use std::net::IpAddr;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use bytes::Bytes;
use hush_proto::ErrorCode;
use hush_proto::content::GroupName;
use hush_proto::ids::{ChannelPassword, TotpCode, Username};
use hush_proto::pb::{self, server_frame::Body};
use hush_proto::request::ChannelSettings;
use hush_store::{ChannelRecord, ChannelUpdate, NewChannel};

use crate::ServerState;
use crate::accounts::{Authenticated, Refusal};
use crate::clock::random;

/// How long an admitted device has to send its external commit.
pub const GRANT_MS: i64 = 10 * 60 * 1000;

/// A place among the Argon2id hashes the server runs at once (19 MiB each,
/// `limits.concurrent_password_hashes`); refused rather than queued when none is free,
/// so a flood of guesses or creations cannot take the server's memory.
fn hashing_permit(st: &ServerState) -> Result<tokio::sync::OwnedSemaphorePermit, Refusal> {
    st.hashing.clone().try_acquire_owned().map_err(|_| {
        tracing::warn!("channel password refused: every hashing slot is busy");
        Refusal {
            code: ErrorCode::RateLimited,
            message: "the server is busy checking channel passwords; try again in a moment".into(),
            retry_after_secs: 1,
        }
    })
}

/// An argon2id (PHC string) hash of a channel password, off the async threads.
async fn hash(st: &ServerState, password: &ChannelPassword) -> Result<String, Refusal> {
    let salt = SaltString::encode_b64(&random::<16>(st.entropy.as_ref()))
        .map_err(|e| internal("salting a channel password", e))?;
    let password = password.clone();
    let permit = hashing_permit(st)?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        Argon2::default()
            .hash_password(password.expose().as_bytes(), &salt)
            .map(|h| h.to_string())
    })
    .await
    .map_err(|e| internal("hashing a channel password", e))?
    .map_err(|e| internal("hashing a channel password", e))
}

async fn verify(st: &ServerState, hash: &str, password: &ChannelPassword) -> Result<bool, Refusal> {
    let hash = hash.to_owned();
    let password = password.clone();
    let permit = hashing_permit(st)?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        PasswordHash::new(&hash).map(|h| {
            Argon2::default()
                .verify_password(password.expose().as_bytes(), &h)
                .is_ok()
        })
    })
    .await
    .map_err(|e| internal("checking a channel password", e))?
    .map_err(|e| internal("a stored channel password hash", e))
}

fn internal(what: &str, e: impl std::fmt::Display) -> Refusal {
    tracing::error!(what, error = %e, "channel");
    Refusal::new(
        ErrorCode::Internal,
        "the server could not do that; try again",
    )
}

fn not_found(name: &GroupName) -> Refusal {
    Refusal::new(
        ErrorCode::NotFound,
        format!("there is no channel called {name}"),
    )
}

fn is_lobby(st: &ServerState, name: &GroupName) -> bool {
    st.config.lobby.as_ref() == Some(name)
}

/// P550, P556: what the store keeps for a new channel. The lobby is open.
pub async fn new_channel(
    st: &ServerState,
    auth: &Authenticated,
    name: &GroupName,
    settings: ChannelSettings,
) -> Result<NewChannel, Refusal> {
    if is_lobby(st, name) && (settings.password.is_some() || settings.totp_secret.is_some()) {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            format!("{name} is this server's lobby: it is open to everyone"),
        ));
    }
    let password_hash = match &settings.password {
        Some(p) => {
            // The groups-per-hour quota, counted before the hash (the store checks it
            // again when the group is made).
            let now = st.clock.now_unix();
            if let Err(wait) = st
                .accounts
                .channel_creations
                .take(st.store.as_ref(), auth.user_id.as_bytes(), now)
                .await?
            {
                return Err(Refusal {
                    code: ErrorCode::RateLimited,
                    message: format!(
                        "an account may create at most {} groups an hour",
                        st.config.limits.groups_per_account_per_hour
                    ),
                    retry_after_secs: wait,
                });
            }
            Some(hash(st, p).await?)
        }
        None => None,
    };
    Ok(NewChannel {
        password_hash,
        totp_secret: settings.totp_secret.map(|t| t.expose().to_vec()),
        group_info: settings.group_info.to_vec(),
    })
}

/// Refuses a would-be lobby that is not open, and a channel by a name that is the
/// lobby's but not a channel.
pub fn check_lobby(
    st: &ServerState,
    name: Option<&GroupName>,
    channel: bool,
) -> Result<(), Refusal> {
    match name {
        Some(n) if is_lobby(st, n) && !channel => Err(Refusal::new(
            ErrorCode::GroupExists,
            format!("{n} is this server's lobby; join it with `hush channel join {n}`"),
        )),
        _ => Ok(()),
    }
}

/// A wrong guess (counted before it was checked, [`count_guess`]), logged.
fn failed(auth: &Authenticated, ip: IpAddr, code: ErrorCode, message: String) -> Refusal {
    tracing::info!(user = %auth.username, %ip, ?code, "channel join refused");
    Refusal::new(code, message)
}

fn too_many(auth: &Authenticated, ip: IpAddr, wait: u32) -> Refusal {
    tracing::warn!(user = %auth.username, %ip, "channel join refused: too many attempts");
    Refusal {
        code: ErrorCode::RateLimited,
        message: "too many wrong channel passwords or codes; wait before trying again".into(),
        retry_after_secs: wait,
    }
}

/// P553: counts a guess at a channel's password or code per user (in the store, for
/// every node) and per address before it is checked, atomically, so parallel guesses
/// cannot all pass one check; past either limit nothing is checked (or hashed).
async fn count_guess(
    st: &ServerState,
    auth: &Authenticated,
    ip: IpAddr,
    now: i64,
) -> Result<(), Refusal> {
    let by_user = st
        .accounts
        .channel_by_user
        .take(st.store.as_ref(), auth.user_id.as_bytes(), now)
        .await?;
    let by_address = st.accounts.channel_by_address.try_record(&ip, now);
    by_user
        .and(by_address)
        .map_err(|wait| too_many(auth, ip, wait))
}

/// P553: checks the password and code, then hands out the GroupInfo and a grant.
pub async fn join(
    st: &ServerState,
    auth: &Authenticated,
    ip: IpAddr,
    name: GroupName,
    password: Option<ChannelPassword>,
    code: Option<TotpCode>,
) -> Result<Body, Refusal> {
    crate::messaging::writable(st)?;
    let now = st.clock.now_unix();
    let limited = st
        .accounts
        .channel_by_user
        .check(st.store.as_ref(), auth.user_id.as_bytes(), now)
        .await?
        .and(st.accounts.channel_by_address.check(&ip, now));
    if let Err(wait) = limited {
        return Err(too_many(auth, ip, wait));
    }
    let Some(channel) = st.store.channel(name.bare()).await? else {
        if is_lobby(st, &name) && st.store.named_group(name.bare()).await?.is_none() {
            // P556: the first to join creates the lobby.
            return Ok(Body::ChannelJoin(pb::ChannelJoin {
                create: true,
                ..pb::ChannelJoin::default()
            }));
        }
        return Err(not_found(&name));
    };
    let member = st
        .store
        .group(channel.group_id)
        .await?
        .is_some_and(|g| g.members.contains(&auth.device_id));
    if member {
        return Err(Refusal::new(
            ErrorCode::AlreadyAMember,
            format!("this device is already in {name}"),
        ));
    }
    // What is missing is said before anything is counted.
    if channel.password_hash.is_some() && password.is_none() {
        return Err(Refusal::new(
            ErrorCode::ChannelPasswordWrong,
            format!("{name} needs its password"),
        ));
    }
    if channel.totp_secret.is_some() && code.is_none() {
        return Err(Refusal::new(
            ErrorCode::SecondFactorRequired,
            format!("{name} needs the current code from its authenticator"),
        ));
    }
    let guarded = channel.password_hash.is_some() || channel.totp_secret.is_some();
    if guarded {
        count_guess(st, auth, ip, now).await?;
    }
    if let (Some(hash), Some(password)) = (&channel.password_hash, &password)
        && !verify(st, hash, password).await?
    {
        return Err(failed(
            auth,
            ip,
            ErrorCode::ChannelPasswordWrong,
            format!("that is not the password of {name}"),
        ));
    }
    let step = match (&channel.totp_secret, &code) {
        (Some(secret), Some(code)) => {
            let unix = u64::try_from(now).unwrap_or(0);
            match crate::two_factor::matching_step(secret, code.expose(), unix) {
                Some(step) => Some((auth.user_id, step)),
                None => {
                    return Err(failed(
                        auth,
                        ip,
                        ErrorCode::SecondFactorInvalid,
                        format!("that is not the current code of {name}"),
                    ));
                }
            }
        }
        _ => None,
    };
    let expires = st.clock.now_ms().saturating_add(GRANT_MS);
    if !st
        .store
        .grant_channel_join(channel.group_id, auth.device_id, step, expires)
        .await?
    {
        return Err(failed(
            auth,
            ip,
            ErrorCode::SecondFactorInvalid,
            "that code was used already; wait for the next one".into(),
        ));
    }
    // A right answer gives its address's count back (the user's stays: a right
    // password elsewhere must not buy more guesses here).
    if guarded {
        st.accounts.channel_by_address.forgive_one(&ip);
    }
    tracing::debug!(user = %auth.username, device = %auth.device_id, channel = %name, "admitted to a channel");
    Ok(Body::ChannelJoin(pb::ChannelJoin {
        group_id: Bytes::copy_from_slice(channel.group_id.as_bytes()),
        epoch: channel.epoch,
        group_info: channel.group_info.into(),
        create: false,
    }))
}

/// P554: every channel, and the lobby before anyone created it.
pub async fn list(st: &ServerState) -> Result<Body, Refusal> {
    let all = st.store.channels().await?;
    let mut channels: Vec<pb::ChannelSummary> = all
        .iter()
        .map(|c| pb::ChannelSummary {
            name: c.name.clone(),
            members: c.members,
            password: c.password_hash.is_some(),
            totp: c.totp_secret.is_some(),
            lobby: st.config.lobby.as_ref().is_some_and(|l| l.bare() == c.name),
        })
        .collect();
    if let Some(lobby) = &st.config.lobby
        && !all.iter().any(|c| c.name == lobby.bare())
        && st.store.named_group(lobby.bare()).await?.is_none()
    {
        channels.insert(
            0,
            pb::ChannelSummary {
                name: lobby.bare().to_owned(),
                lobby: true,
                ..pb::ChannelSummary::default()
            },
        );
    }
    Ok(Body::Channels(pb::Channels { channels }))
}

/// The channel `name`, if `auth` administers it (P555).
async fn administered(
    st: &ServerState,
    auth: &Authenticated,
    name: &GroupName,
) -> Result<ChannelRecord, Refusal> {
    let channel = st
        .store
        .channel(name.bare())
        .await?
        .ok_or_else(|| not_found(name))?;
    // P556: the lobby belongs to the server's admins, not to whoever joined it first.
    let allowed = if is_lobby(st, name) {
        st.store
            .user_by_name(&auth.username)
            .await?
            .is_some_and(|u| u.admin)
    } else {
        channel.admins.contains(&auth.user_id)
    };
    if !allowed {
        tracing::info!(user = %auth.username, channel = %name, "refused: not a channel admin");
        return Err(Refusal::new(
            ErrorCode::Forbidden,
            format!("only admins of {name} can do that"),
        ));
    }
    Ok(channel)
}

/// P555: new password, code secret or admins.
pub async fn update(
    st: &ServerState,
    auth: &Authenticated,
    name: GroupName,
    password: Option<Option<ChannelPassword>>,
    totp_secret: Option<Option<hush_proto::ids::TotpSecret>>,
    admins: Vec<Username>,
) -> Result<Body, Refusal> {
    crate::messaging::writable(st)?;
    let channel = administered(st, auth, &name).await?;
    if is_lobby(st, &name)
        && (matches!(password, Some(Some(_))) || matches!(totp_secret, Some(Some(_))))
    {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            format!("{name} is this server's lobby: it stays open"),
        ));
    }
    let password_hash = match password {
        None => None,
        Some(None) => Some(None),
        Some(Some(p)) => Some(Some(hash(st, &p).await?)),
    };
    let admins = if admins.is_empty() {
        None
    } else {
        let mut ids = Vec::new();
        for a in &admins {
            let user =
                st.store.user_by_name(a).await?.ok_or_else(|| {
                    Refusal::new(ErrorCode::NotFound, format!("no user named {a}"))
                })?;
            ids.push(user.user_id);
        }
        Some(ids)
    };
    st.store
        .update_channel(
            channel.group_id,
            ChannelUpdate {
                password_hash,
                totp_secret: totp_secret.map(|t| t.map(|t| t.expose().to_vec())),
                admins,
            },
        )
        .await?;
    tracing::debug!(user = %auth.username, channel = %name, "channel updated");
    Ok(Body::ChannelUpdated(pb::ChannelUpdated {}))
}

/// P555: the channel, its group and its queued traffic go.
pub async fn delete(
    st: &ServerState,
    auth: &Authenticated,
    name: GroupName,
) -> Result<Body, Refusal> {
    let channel = administered(st, auth, &name).await?;
    st.store.delete_channel(channel.group_id).await?;
    tracing::debug!(user = %auth.username, channel = %name, "channel deleted");
    Ok(Body::ChannelDeleted(pb::ChannelDeleted {}))
}
