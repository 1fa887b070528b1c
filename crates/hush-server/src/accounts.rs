//! Accounts: OPAQUE registration and login (RFC 9807), device sessions, invites.
//!
//! The password never reaches the server: registration uploads an OPAQUE record, login
//! proves knowledge of the password without revealing it. The server stores the
//! record, a random per-device token's SHA-256, and nothing derived from the password
//! that would allow an offline guess without its OPRF key.
use std::net::IpAddr;

use bytes::Bytes;
use hush_proto::ErrorCode;
use hush_proto::auth::OpaqueSuite;
use hush_proto::ids::{
    AccountKeyBytes, DeviceId, InviteCode, SecondFactor, SessionToken, UserId, Username,
};
use hush_proto::response::Account;
use hush_store::{NewDevice, NewInvite, NewUser, Session, Store, StoreError, UserRecord};
use opaque_ke::{
    CredentialFinalization, CredentialRequest, CredentialResponse, RegistrationRequest,
    RegistrationResponse, RegistrationUpload, ServerLogin, ServerLoginParameters,
    ServerRegistration, ServerSetup,
};

use crate::clock::{Entropy, EntropyRng, random};
use crate::config::RegistrationMode;
use crate::limits::{FailureLimiter, SharedLimiter};
use crate::{ServerConfig, ServerError, ServerState};

const OPAQUE_SETUP: &str = "opaque_server_setup";
/// Tracked keys per limiter; past this, expired entries are pruned.
const LIMITER_CAP: usize = 100_000;

/// A request the server turned down, with what the peer is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
    pub retry_after_secs: u32,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
            retry_after_secs: 0,
        }
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UsernameTaken => {
                Refusal::new(ErrorCode::UsernameTaken, "that username is taken")
            }
            StoreError::InviteInvalid => Refusal::new(
                ErrorCode::InviteInvalid,
                "the invite code is unknown, expired or used up",
            ),
            StoreError::UserNotFound => Refusal::new(ErrorCode::AuthFailed, "no such account"),
            StoreError::StaleEpoch { current } => Refusal::new(
                ErrorCode::StaleEpoch,
                format!("the group is at epoch {current}; catch up and retry"),
            ),
            StoreError::GroupExists => {
                Refusal::new(ErrorCode::GroupExists, "that conversation already exists")
            }
            StoreError::GroupNotFound => Refusal::new(ErrorCode::NotFound, "no such conversation"),
            StoreError::NotAMember => Refusal::new(
                ErrorCode::NotAMember,
                "this device is not a member of that conversation",
            ),
            StoreError::DeviceNotFound(d) => {
                Refusal::new(ErrorCode::NotFound, format!("unknown device {d}"))
            }
            StoreError::MailboxFull => Refusal::new(
                ErrorCode::MailboxFull,
                "the recipient's mailbox is full: nothing was sent; they have to come online and catch up first",
            ),
            StoreError::QuotaExceeded {
                quota: hush_store::Quota::GroupsPerHour,
                limit,
            } => Refusal {
                code: ErrorCode::RateLimited,
                message: format!("an account may create at most {limit} groups an hour"),
                retry_after_secs: 600,
            },
            StoreError::QuotaExceeded {
                quota: hush_store::Quota::FileSize,
                limit,
            } => Refusal::new(
                ErrorCode::QuotaExceeded,
                format!(
                    "the file is too large: this server takes files up to {}",
                    crate::files::human_bytes(limit)
                ),
            ),
            StoreError::QuotaExceeded {
                quota: hush_store::Quota::FileBytes,
                limit,
            } => Refusal::new(
                ErrorCode::QuotaExceeded,
                format!(
                    "your files on the server would pass the {} an account may hold; \
                     delete some (hush file delete) or wait until they are fetched",
                    crate::files::human_bytes(limit)
                ),
            ),
            StoreError::QuotaExceeded {
                quota: hush_store::Quota::BackupBytes,
                limit,
            } => Refusal::new(
                ErrorCode::QuotaExceeded,
                format!(
                    "the backup would pass the {} this server keeps per account",
                    crate::files::human_bytes(limit)
                ),
            ),
            StoreError::BackupConflict { count } => Refusal::new(
                ErrorCode::BackupConflict,
                format!("the backup holds {count} chunks now: read its head and append after it"),
            ),
            e @ StoreError::QuotaExceeded { .. } => {
                Refusal::new(ErrorCode::QuotaExceeded, e.to_string())
            }
            StoreError::StorageFull => Refusal::new(
                ErrorCode::StorageFull,
                "the server's storage is full: nothing was stored; reading and acknowledging still work",
            ),
            other if other.is_retryable() => {
                tracing::warn!(error = %other, "passing storage failure");
                Refusal {
                    code: ErrorCode::Unavailable,
                    message: "the server's storage is briefly unavailable; try again".into(),
                    retry_after_secs: 1,
                }
            }
            other => {
                tracing::error!(error = %other, "storage failure");
                Refusal::new(
                    ErrorCode::Internal,
                    "the server could not complete the request",
                )
            }
        }
    }
}

fn auth_failed() -> Refusal {
    Refusal::new(ErrorCode::AuthFailed, "wrong username or password")
}

/// Server-wide account state: the OPAQUE key and the login limiters.
pub struct Accounts {
    setup: ServerSetup<OpaqueSuite>,
    /// Unproven logins per account: they slow that account's logins down, never lock
    /// it (P320), so nobody can lock a user out by guessing.
    by_account: SharedLimiter,
    /// Unproven logins per source address: past the limit, that address gets no more
    /// login challenges for a while.
    by_address: FailureLimiter<IpAddr>,
    /// Unproven logins of names no account has, per name, in memory only (bounded):
    /// the same slowdown as `by_account` without a row in the store (P320).
    unknown_names: FailureLimiter<String>,
    /// Unknown session tokens per source address; valid token resumes never count.
    bad_tokens: FailureLimiter<IpAddr>,
    /// Accounts created per source address in the last hour (open registration),
    /// counted in the store so that a cluster's nodes share one count.
    registrations: SharedLimiter,
    /// P332: wrong second factors per account; past the limit none is checked until
    /// the window passes.
    pub(crate) second_factor: SharedLimiter,
    /// P553: wrong channel passwords and codes, per user and per source address.
    pub(crate) channel_by_user: SharedLimiter,
    pub(crate) channel_by_address: FailureLimiter<IpAddr>,
    /// P553: channels with a password an account created in the last hour, counted
    /// before the password is hashed.
    pub(crate) channel_creations: SharedLimiter,
    slowdown_after: u32,
}

impl Accounts {
    pub(crate) async fn load(
        store: &dyn Store,
        entropy: &dyn Entropy,
        config: &ServerConfig,
    ) -> Result<Self, ServerError> {
        let fresh = ServerSetup::<OpaqueSuite>::new(&mut EntropyRng(entropy));
        let bytes = store
            .secret_or_init(OPAQUE_SETUP, fresh.serialize().to_vec())
            .await?;
        let setup = ServerSetup::deserialize(&bytes)
            .map_err(|_| ServerError::Internal("stored OPAQUE server setup is corrupt".into()))?;
        let window = config.limits.login_window.as_secs() as i64;
        Ok(Accounts {
            setup,
            // Never refuses (see `login_delay`); the count only sets the slowdown.
            by_account: SharedLimiter::new("login", u32::MAX, window),
            by_address: FailureLimiter::new(
                config.limits.login_failures_per_address,
                window,
                LIMITER_CAP,
            ),
            unknown_names: FailureLimiter::new(u32::MAX, window, LIMITER_CAP),
            bad_tokens: FailureLimiter::new(
                config.limits.login_failures_per_address,
                window,
                LIMITER_CAP,
            ),
            registrations: SharedLimiter::new(
                "registration",
                config.limits.registrations_per_address_per_hour,
                3600,
            ),
            second_factor: SharedLimiter::new(
                "second_factor",
                config.limits.login_failures_per_account,
                window,
            ),
            channel_by_user: SharedLimiter::new(
                "channel",
                config.limits.login_failures_per_account,
                window,
            ),
            channel_by_address: FailureLimiter::new(
                config.limits.login_failures_per_address,
                window,
                LIMITER_CAP,
            ),
            channel_creations: SharedLimiter::new(
                "channel_create",
                u32::try_from(config.limits.groups_per_account_per_hour).unwrap_or(u32::MAX),
                3600,
            ),
            slowdown_after: config.limits.login_failures_per_account,
        })
    }
}

/// What a connection remembers between `RegisterStart` and `RegisterFinish`.
pub struct PendingRegistration {
    username: Username,
    invite: Option<[u8; 32]>,
}

/// What a connection remembers between `LoginStart` and `LoginFinish`.
pub struct PendingLogin {
    username: Username,
    address: IpAddr,
    state: ServerLogin<OpaqueSuite>,
    user: Option<UserRecord>,
}

/// The identity of an authenticated connection.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub user_id: UserId,
    pub username: Username,
    pub device_id: DeviceId,
}

pub fn account_of_session(s: &Session) -> Account {
    Account {
        user_id: s.user_id,
        username: s.username.clone(),
        display_name: s.display_name.clone(),
        email: s.email.clone(),
        device_id: s.device_id,
        admin: s.admin,
        created_at: s.created_at,
    }
}

fn new_device(st: &ServerState, name: Option<String>) -> (NewDevice, SessionToken) {
    let token = SessionToken::from_bytes(random(st.entropy.as_ref()));
    let device = NewDevice {
        device_id: DeviceId::from_bytes(random(st.entropy.as_ref())),
        name,
        token_digest: token.digest(),
        created_at: st.clock.now_unix(),
    };
    (device, token)
}

/// P310–P313: checks the registration mode, invite and username, and answers the
/// client's OPAQUE registration request.
pub async fn register_start(
    st: &ServerState,
    address: IpAddr,
    username: Username,
    request: RegistrationRequest<OpaqueSuite>,
    invite: Option<InviteCode>,
) -> Result<(RegistrationResponse<OpaqueSuite>, PendingRegistration), Refusal> {
    let invite = match st.config.registration {
        RegistrationMode::Closed => {
            return Err(Refusal::new(
                ErrorCode::RegistrationClosed,
                "this server does not accept new accounts",
            ));
        }
        RegistrationMode::Invite => {
            let code = invite.ok_or_else(|| {
                Refusal::new(
                    ErrorCode::InviteRequired,
                    "this server needs an invite code to register (--invite CODE)",
                )
            })?;
            let digest = code.digest();
            if !st.store.invite_usable(&digest, st.clock.now_unix()).await? {
                return Err(StoreError::InviteInvalid.into());
            }
            Some(digest)
        }
        // An open server ignores an invite rather than spending it.
        // P303: the slot is taken here, atomically, so parallel registrations cannot
        // all pass one check; a registration started and never finished keeps it.
        RegistrationMode::Open => {
            if let Err(wait) = st
                .accounts
                .registrations
                .take(
                    st.store.as_ref(),
                    &address_key(&address),
                    st.clock.now_unix(),
                )
                .await?
            {
                tracing::warn!(%address, "registration refused: too many new accounts from this address");
                return Err(Refusal {
                    code: ErrorCode::RateLimited,
                    message:
                        "too many new accounts from this address in the last hour; try again later"
                            .into(),
                    retry_after_secs: wait,
                });
            }
            None
        }
    };
    if st.store.user_by_name(&username).await?.is_some() {
        return Err(StoreError::UsernameTaken.into());
    }
    let start = ServerRegistration::<OpaqueSuite>::start(
        &st.accounts.setup,
        request,
        username.as_str().as_bytes(),
    )
    .map_err(|_| {
        Refusal::new(
            ErrorCode::InvalidArgument,
            "invalid OPAQUE registration request",
        )
    })?;
    Ok((start.message, PendingRegistration { username, invite }))
}

/// An account's published key and its client-sealed secret (P540, P542).
pub struct AccountKeys {
    pub public: AccountKeyBytes,
    pub sealed: Bytes,
}

/// How long an unproven login waits once an account has had `failures` of them in the
/// window: nothing up to `after`, then half a second more per failure, at most 5 s.
pub fn login_delay(failures: u32, after: u32) -> Option<std::time::Duration> {
    let over = failures.checked_sub(after).filter(|n| *n > 0)?;
    Some(std::time::Duration::from_millis(
        (u64::from(over) * 500).min(5_000),
    ))
}

/// P314: stores the OPAQUE record and the first device, consuming the invite.
pub async fn register_finish(
    st: &ServerState,
    pending: PendingRegistration,
    upload: RegistrationUpload<OpaqueSuite>,
    display_name: Option<String>,
    email: Option<String>,
    device_name: Option<String>,
    keys: AccountKeys,
) -> Result<(Account, SessionToken, Authenticated), Refusal> {
    let password_file = ServerRegistration::finish(upload).serialize().to_vec();
    let (device, token) = new_device(st, device_name);
    let user_id = UserId::from_bytes(random(st.entropy.as_ref()));
    let created_at = st.clock.now_unix();
    let device_id = device.device_id;
    let admin = st
        .store
        .create_user(NewUser {
            user_id,
            username: pending.username.clone(),
            display_name: display_name.clone(),
            email: email.clone(),
            password_file,
            created_at,
            device,
            invite: pending.invite,
            account_key: *keys.public.as_bytes(),
            sealed_account_key: keys.sealed.to_vec(),
        })
        .await?;
    tracing::debug!(user = %pending.username, device = %device_id, admin, "registered a new account");
    let account = Account {
        user_id,
        username: pending.username.clone(),
        display_name,
        email,
        device_id,
        admin,
        created_at,
    };
    let auth = Authenticated {
        user_id,
        username: pending.username,
        device_id,
    };
    Ok((account, token, auth))
}

/// A source address as a store key.
fn address_key(address: &IpAddr) -> Vec<u8> {
    match address {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn rate_limited(retry_after_secs: u32) -> Refusal {
    Refusal {
        code: ErrorCode::RateLimited,
        message: "too many failed logins".into(),
        retry_after_secs,
    }
}

/// P320–P321: rate limits, then answers the OPAQUE credential request. For an unknown
/// username the answer is indistinguishable from a real one (RFC 9807 §10.9).
pub async fn login_start(
    st: &ServerState,
    address: IpAddr,
    username: Username,
    request: CredentialRequest<OpaqueSuite>,
) -> Result<(CredentialResponse<OpaqueSuite>, PendingLogin), Refusal> {
    let now = st.clock.now_unix();
    let acc = &st.accounts;
    // Counted as a failure until LoginFinish proves the password (a client that learns
    // it has the wrong password never sends LoginFinish); checked and counted at once,
    // so parallel attempts cannot all pass the check.
    if let Err(wait) = acc.by_address.try_record(&address, now) {
        tracing::warn!(%address, "login refused: too many failures from this address");
        return Err(rate_limited(wait));
    }
    let user = st.store.user_by_name(&username).await?;
    // Counted in the store for a real account, so the slowdown holds across a
    // cluster's nodes; for a name nobody has, in bounded memory only (junk names must
    // not grow the store), with the same slowdown, so the answer does not say which.
    let failures = match &user {
        Some(_) => {
            acc.by_account
                .record_failure(st.store.as_ref(), username.as_str().as_bytes(), now)
                .await?
        }
        None => {
            let key = username.as_str().to_owned();
            let before = acc.unknown_names.count(&key, now);
            acc.unknown_names.record_failure(&key, now);
            before
        }
    };
    // P320: past the threshold, each unproven login of this account costs the asker
    // time, so guessing stays slow while the real user still gets in.
    if let Some(delay) = login_delay(failures, acc.slowdown_after) {
        tracing::info!(user = %username, failures, delay_ms = delay.as_millis() as u64,
            "slowing down logins for an account with many unproven attempts");
        tokio::time::sleep(delay).await;
    }

    let password_file = match &user {
        Some(u) => Some(
            ServerRegistration::deserialize(&u.password_file).map_err(|_| {
                tracing::error!(user = %username, "stored OPAQUE record is corrupt");
                Refusal::new(
                    ErrorCode::Internal,
                    "the server could not complete the request",
                )
            })?,
        ),
        None => None,
    };
    let start = ServerLogin::start(
        &mut EntropyRng(st.entropy.as_ref()),
        &acc.setup,
        password_file,
        request,
        username.as_str().as_bytes(),
        ServerLoginParameters::default(),
    )
    .map_err(|_| {
        Refusal::new(
            ErrorCode::InvalidArgument,
            "invalid OPAQUE credential request",
        )
    })?;
    Ok((
        start.message,
        PendingLogin {
            username,
            address,
            state: start.state,
            user,
        },
    ))
}

/// P322–P323: checks the client's proof and creates a device for this login.
pub async fn login_finish(
    st: &ServerState,
    pending: PendingLogin,
    finalization: CredentialFinalization<OpaqueSuite>,
    device_name: Option<String>,
    second_factor: Option<SecondFactor>,
) -> Result<(Account, SessionToken, Authenticated, AccountKeys), Refusal> {
    let proved = pending
        .state
        .finish(finalization, ServerLoginParameters::default())
        .is_ok();
    let Some(user) = pending.user.filter(|_| proved) else {
        tracing::warn!(user = %pending.username, address = %pending.address, "login failed");
        return Err(auth_failed());
    };
    let acc = &st.accounts;
    acc.by_account
        .clear(st.store.as_ref(), pending.username.as_str().as_bytes())
        .await?;
    acc.by_address.forgive_one(&pending.address);
    // P330–P332: the password is proven; an account with two-factor login on also
    // needs a code or a recovery code (asked only now, so nobody learns whether an
    // account has it without the password).
    if let Some(two_factor) = st.store.two_factor(user.user_id).await? {
        let Some(factor) = second_factor else {
            tracing::info!(user = %user.username, "login needs a second factor");
            return Err(Refusal::new(
                ErrorCode::SecondFactorRequired,
                "this account has two-factor login on: give the code from your authenticator app (--code), or a recovery code",
            ));
        };
        crate::two_factor::check(st, user.user_id, &two_factor, &factor).await?;
    }
    if user.disabled {
        tracing::warn!(user = %user.username, "login refused: account disabled");
        return Err(Refusal::new(
            ErrorCode::AccountDisabled,
            "this account is disabled",
        ));
    }
    let (Some(public), Some(sealed)) = (user.account_key, user.sealed_account_key.clone()) else {
        tracing::warn!(user = %user.username, "login refused: account made before account keys");
        return Err(Refusal::new(
            ErrorCode::AuthFailed,
            "this account was made by an older hush without an account key; register a new account",
        ));
    };
    let keys = AccountKeys {
        public: AccountKeyBytes::from_bytes(public),
        sealed: Bytes::from(sealed),
    };
    let (device, token) = new_device(st, device_name);
    let device_id = device.device_id;
    let max = st.config.limits.devices_per_account;
    match st.store.add_device(user.user_id, device, max).await {
        Ok(()) => {}
        Err(StoreError::QuotaExceeded { .. }) => {
            tracing::info!(user = %user.username, max, "login refused: too many devices");
            return Err(Refusal::new(
                ErrorCode::QuotaExceeded,
                format!(
                    "this account has {max} devices, the most this server allows; revoke one from another device (hush devices revoke)"
                ),
            ));
        }
        Err(e) => return Err(e.into()),
    }
    tracing::debug!(user = %user.username, device = %device_id, "logged in on a new device");
    let account = Account {
        user_id: user.user_id,
        username: user.username.clone(),
        display_name: user.display_name,
        email: user.email,
        device_id,
        admin: user.admin,
        created_at: user.created_at,
    };
    let auth = Authenticated {
        user_id: user.user_id,
        username: user.username,
        device_id,
    };
    Ok((account, token, auth, keys))
}

/// P324: resumes a device's session from its token.
pub async fn authenticate(
    st: &ServerState,
    address: IpAddr,
    token: &SessionToken,
) -> Result<Session, Refusal> {
    let now = st.clock.now_unix();
    // P320: a valid token is looked up first and always works; only unknown ones
    // count against their address (so junk from one NAT cannot lock out its users).
    let Some(session) = st.store.session(&token.digest()).await? else {
        if let Err(wait) = st.accounts.bad_tokens.try_record(&address, now) {
            return Err(rate_limited(wait));
        }
        tracing::warn!(%address, "unknown session token");
        return Err(Refusal::new(
            ErrorCode::Unauthenticated,
            "this device's session is no longer valid; log in again",
        ));
    };
    if session.disabled {
        return Err(Refusal::new(
            ErrorCode::AccountDisabled,
            "this account is disabled",
        ));
    }
    // P547: a device its account revoked stays out, even if its rows came back.
    if st
        .store
        .revocations(session.user_id)
        .await?
        .iter()
        .any(|(d, _)| *d == session.device_id)
    {
        tracing::warn!(device = %session.device_id, "a revoked device tried to resume");
        return Err(Refusal::new(
            ErrorCode::Unauthenticated,
            "this device was revoked; log in again",
        ));
    }
    // P546: "last seen" for the owner's device list; best effort.
    if let Err(e) = st.store.touch_device(session.device_id, now).await {
        tracing::warn!(device = %session.device_id, error = %e, "could not record last seen");
    }
    Ok(session)
}

/// A fresh view of the connection's account, or why it is gone.
pub async fn current(
    st: &ServerState,
    auth: &Authenticated,
    token_digest: &[u8; 32],
) -> Result<Session, Refusal> {
    match st.store.session(token_digest).await? {
        Some(s) if s.device_id == auth.device_id && !s.disabled => Ok(s),
        Some(s) if s.disabled => Err(Refusal::new(
            ErrorCode::AccountDisabled,
            "this account is disabled",
        )),
        _ => Err(Refusal::new(
            ErrorCode::Unauthenticated,
            "this device's session is no longer valid; log in again",
        )),
    }
}

/// Creates an invite and returns its code, shown once: only its digest is stored.
pub async fn create_invite(
    store: &dyn Store,
    entropy: &dyn Entropy,
    now: i64,
    uses: u32,
    expires_at: Option<i64>,
) -> Result<String, StoreError> {
    let bytes: [u8; 15] = random(entropy);
    // 24 characters of unpadded base32 (120 bits), grouped for reading aloud.
    const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut bits = 0u32;
    let mut nbits = 0;
    let mut raw = String::new();
    for b in bytes {
        bits = (bits << 8) | u32::from(b);
        nbits += 8;
        while nbits >= 5 {
            nbits -= 5;
            raw.push(char::from(ALPHABET[((bits >> nbits) & 31) as usize]));
        }
    }
    let code = raw
        .as_bytes()
        .chunks(6)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-");
    let parsed = InviteCode::parse(&code).map_err(|e| StoreError::backend(e.to_string()))?;
    store
        .create_invite(NewInvite {
            digest: parsed.digest(),
            uses,
            expires_at,
            created_at: now,
        })
        .await?;
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hush_store::memory::MemoryStore;

    #[tokio::test]
    async fn invite_codes_are_readable_and_stored_only_as_digests() {
        let store = MemoryStore::new();
        let code = create_invite(&store, &crate::OsEntropy, 0, 1, None)
            .await
            .unwrap();
        assert_eq!(code.len(), 24 + 3, "{code}");
        assert!(
            code.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        let digest = InviteCode::parse(&code).unwrap().digest();
        assert!(store.invite_usable(&digest, 0).await.unwrap());
    }
}
