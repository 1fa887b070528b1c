//! Users, devices, sessions, invites, two-factor login and key packages.
use hush_proto::ids::{DeviceId, UserId, Username};
use hush_store::{
    Claimed, DeviceRecord, NewDevice, NewInvite, NewUser, Owner, Quota, Session, StoreError,
    TwoFactor, UserRecord, UserSummary,
};
use sqlx::PgConnection;

use crate::{Outbox, username};

pub(crate) async fn user_exists(c: &mut PgConnection, user: &UserId) -> Result<bool, StoreError> {
    Ok(one!(
        c,
        bool,
        "SELECT EXISTS (SELECT 1 FROM users WHERE user_id = $1)",
        user.as_bytes()
    ))
}

pub(crate) async fn device_exists(
    c: &mut PgConnection,
    device: &DeviceId,
) -> Result<bool, StoreError> {
    Ok(one!(
        c,
        bool,
        "SELECT EXISTS (SELECT 1 FROM devices WHERE device_id = $1)",
        device.as_bytes()
    ))
}

/// The user owning `device`, also after it logged out (P412).
pub(crate) async fn user_of(
    c: &mut PgConnection,
    device: &DeviceId,
) -> Result<Option<[u8; 16]>, StoreError> {
    Ok(opt!(
        c,
        [u8; 16],
        "SELECT user_id FROM device_owners WHERE device_id = $1",
        device.as_bytes()
    ))
}

async fn insert_device(
    c: &mut PgConnection,
    user: &[u8; 16],
    d: &NewDevice,
) -> Result<(), StoreError> {
    exec!(
        c,
        "INSERT INTO devices (device_id, user_id, name, token_digest, created_at)
         VALUES ($1, $2, $3, $4, $5)",
        d.device_id.as_bytes(),
        user,
        d.name.as_deref(),
        d.token_digest.as_slice(),
        d.created_at
    );
    exec!(
        c,
        "INSERT INTO device_owners (device_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        d.device_id.as_bytes(),
        user
    );
    Ok(())
}

pub(crate) async fn secret_or_init(
    c: &mut PgConnection,
    name: &str,
    init: &[u8],
) -> Result<Vec<u8>, StoreError> {
    exec!(
        c,
        "INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        name,
        init
    );
    Ok(one!(
        c,
        Vec<u8>,
        "SELECT value FROM server_secrets WHERE name = $1",
        name
    ))
}

pub(crate) async fn create_user(c: &mut PgConnection, user: &NewUser) -> Result<bool, StoreError> {
    let taken = one!(
        c,
        bool,
        "SELECT EXISTS (SELECT 1 FROM users WHERE username = $1)",
        user.username.as_str()
    );
    if taken {
        return Err(StoreError::UsernameTaken);
    }
    if let Some(digest) = &user.invite {
        let used = exec!(
            c,
            "UPDATE invites SET uses_left = uses_left - 1
             WHERE digest = $1 AND uses_left > 0 AND (expires_at IS NULL OR expires_at > $2)",
            digest.as_slice(),
            user.created_at
        );
        if used != 1 {
            return Err(StoreError::InviteInvalid);
        }
    }
    let first = one!(c, bool, "SELECT NOT EXISTS (SELECT 1 FROM users)");
    let uid = *user.user_id.as_bytes();
    exec!(
        c,
        "INSERT INTO users (user_id, username, display_name, email, password_file, created_at,
                            account_key, sealed_account_key, admin)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        uid,
        user.username.as_str(),
        user.display_name.as_deref(),
        user.email.as_deref(),
        user.password_file.as_slice(),
        user.created_at,
        user.account_key.as_slice(),
        user.sealed_account_key.as_slice(),
        first
    );
    insert_device(c, &uid, &user.device).await?;
    Ok(first)
}

type UserRow = (
    [u8; 16],
    Option<String>,
    Option<String>,
    Vec<u8>,
    bool,
    bool,
    i64,
    Option<[u8; 32]>,
    Option<Vec<u8>>,
);

pub(crate) async fn user_by_name(
    c: &mut PgConnection,
    name: &Username,
) -> Result<Option<UserRecord>, StoreError> {
    let row = row!(
        c,
        UserRow,
        "SELECT user_id, display_name, email, password_file, admin, disabled, created_at,
                account_key, sealed_account_key
         FROM users WHERE username = $1",
        name.as_str()
    );
    Ok(row.map(
        |(id, display_name, email, password_file, admin, disabled, created_at, key, sealed)| {
            UserRecord {
                user_id: UserId::from_bytes(id),
                username: name.clone(),
                display_name,
                email,
                password_file,
                admin,
                disabled,
                created_at,
                account_key: key,
                sealed_account_key: sealed,
            }
        },
    ))
}

pub(crate) async fn add_device(
    c: &mut PgConnection,
    user: &UserId,
    device: &NewDevice,
    max_devices: u64,
) -> Result<(), StoreError> {
    if !user_exists(c, user).await? {
        return Err(StoreError::UserNotFound);
    }
    let have = one!(
        c,
        i64,
        "SELECT COUNT(*) FROM devices WHERE user_id = $1",
        user.as_bytes()
    );
    if crate::unbig(have) >= max_devices {
        return Err(StoreError::QuotaExceeded {
            quota: Quota::Devices,
            limit: max_devices,
        });
    }
    insert_device(c, user.as_bytes(), device).await
}

type SessionRow = (
    [u8; 16],
    [u8; 16],
    String,
    Option<String>,
    Option<String>,
    bool,
    bool,
    i64,
);

pub(crate) async fn session(
    c: &mut PgConnection,
    digest: &[u8; 32],
) -> Result<Option<Session>, StoreError> {
    let row = row!(
        c,
        SessionRow,
        "SELECT d.device_id, u.user_id, u.username, u.display_name, u.email,
                u.admin, u.disabled, u.created_at
         FROM devices d JOIN users u ON u.user_id = d.user_id
         WHERE d.token_digest = $1",
        digest.as_slice()
    );
    row.map(
        |(d, u, name, display_name, email, admin, disabled, created_at)| {
            Ok(Session {
                device_id: DeviceId::from_bytes(d),
                user_id: UserId::from_bytes(u),
                username: username(name)?,
                display_name,
                email,
                admin,
                disabled,
                created_at,
            })
        },
    )
    .transpose()
}

pub(crate) async fn remove_device(
    c: &mut PgConnection,
    device: &DeviceId,
    out: &mut Outbox,
) -> Result<(), StoreError> {
    let gone = exec!(
        c,
        "DELETE FROM devices WHERE device_id = $1",
        device.as_bytes()
    );
    if gone > 0 {
        out.revoked.push(*device);
    }
    Ok(())
}

pub(crate) async fn create_invite(
    c: &mut PgConnection,
    invite: &NewInvite,
) -> Result<(), StoreError> {
    exec!(
        c,
        "INSERT INTO invites (digest, uses_left, expires_at, created_at) VALUES ($1, $2, $3, $4)",
        invite.digest.as_slice(),
        i64::from(invite.uses),
        invite.expires_at,
        invite.created_at
    );
    Ok(())
}

pub(crate) async fn invite_usable(
    c: &mut PgConnection,
    digest: &[u8; 32],
    now: i64,
) -> Result<bool, StoreError> {
    Ok(one!(
        c,
        bool,
        "SELECT EXISTS (SELECT 1 FROM invites WHERE digest = $1 AND uses_left > 0
                        AND (expires_at IS NULL OR expires_at > $2))",
        digest.as_slice(),
        now
    ))
}

pub(crate) async fn list_users(c: &mut PgConnection) -> Result<Vec<UserSummary>, StoreError> {
    type Row = ([u8; 16], String, Option<String>, bool, bool, i64, i64);
    let rows = rows!(
        c,
        Row,
        "SELECT u.user_id, u.username, u.display_name, u.admin, u.disabled, u.created_at,
                (SELECT COUNT(*) FROM devices d WHERE d.user_id = u.user_id)
         FROM users u ORDER BY u.username"
    );
    rows.into_iter()
        .map(
            |(id, name, display_name, admin, disabled, created_at, devices)| {
                Ok(UserSummary {
                    user_id: UserId::from_bytes(id),
                    username: username(name)?,
                    display_name,
                    admin,
                    disabled,
                    devices: u32::try_from(devices).unwrap_or(u32::MAX),
                    created_at,
                })
            },
        )
        .collect()
}

/// The devices of the user called `name`, or `UserNotFound`.
async fn devices_named(
    c: &mut PgConnection,
    name: &Username,
) -> Result<([u8; 16], Vec<DeviceId>), StoreError> {
    let id = opt!(
        c,
        [u8; 16],
        "SELECT user_id FROM users WHERE username = $1",
        name.as_str()
    )
    .ok_or(StoreError::UserNotFound)?;
    let devices = all!(
        c,
        [u8; 16],
        "SELECT device_id FROM devices WHERE user_id = $1 ORDER BY device_id",
        id
    );
    Ok((id, devices.into_iter().map(DeviceId::from_bytes).collect()))
}

pub(crate) async fn set_disabled(
    c: &mut PgConnection,
    name: &Username,
    disabled: bool,
    out: &mut Outbox,
) -> Result<(), StoreError> {
    let (id, devices) = devices_named(c, name).await?;
    exec!(
        c,
        "UPDATE users SET disabled = $1 WHERE user_id = $2",
        disabled,
        id
    );
    if disabled {
        out.revoked.extend(devices);
    }
    Ok(())
}

pub(crate) async fn set_admin(
    c: &mut PgConnection,
    name: &Username,
    admin: bool,
) -> Result<(), StoreError> {
    let changed = exec!(
        c,
        "UPDATE users SET admin = $1 WHERE username = $2",
        admin,
        name.as_str()
    );
    if changed == 0 {
        return Err(StoreError::UserNotFound);
    }
    Ok(())
}

pub(crate) async fn delete_user(
    c: &mut PgConnection,
    name: &Username,
    out: &mut Outbox,
) -> Result<(), StoreError> {
    let (id, devices) = devices_named(c, name).await?;
    exec!(c, "DELETE FROM devices WHERE user_id = $1", id);
    exec!(c, "DELETE FROM users WHERE user_id = $1", id);
    out.revoked.extend(devices);
    Ok(())
}

pub(crate) async fn two_factor(
    c: &mut PgConnection,
    user: &UserId,
) -> Result<Option<TwoFactor>, StoreError> {
    let row = row!(
        c,
        (Vec<u8>, i64, i64),
        "SELECT t.secret, t.last_step,
                (SELECT COUNT(*) FROM recovery_codes r WHERE r.user_id = t.user_id)
         FROM two_factor t WHERE t.user_id = $1",
        user.as_bytes()
    );
    Ok(row.map(|(secret, step, left)| TwoFactor {
        secret,
        last_step: u64::try_from(step).unwrap_or(0),
        recovery_left: u32::try_from(left).unwrap_or(u32::MAX),
    }))
}

pub(crate) async fn set_pending_totp(
    c: &mut PgConnection,
    user: &UserId,
    secret: &[u8],
) -> Result<(), StoreError> {
    if !user_exists(c, user).await? {
        return Err(StoreError::UserNotFound);
    }
    exec!(
        c,
        "INSERT INTO pending_totp (user_id, secret) VALUES ($1, $2)
         ON CONFLICT (user_id) DO UPDATE SET secret = EXCLUDED.secret",
        user.as_bytes(),
        secret
    );
    Ok(())
}

pub(crate) async fn pending_totp(
    c: &mut PgConnection,
    user: &UserId,
) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(opt!(
        c,
        Vec<u8>,
        "SELECT secret FROM pending_totp WHERE user_id = $1",
        user.as_bytes()
    ))
}

pub(crate) async fn enable_two_factor(
    c: &mut PgConnection,
    user: &UserId,
    secret: &[u8],
    step: u64,
    recovery: &[[u8; 32]],
) -> Result<bool, StoreError> {
    let uid = user.as_bytes();
    let removed = exec!(
        c,
        "DELETE FROM pending_totp WHERE user_id = $1 AND secret = $2",
        uid,
        secret
    );
    if removed == 0 {
        return Ok(false);
    }
    let step = i64::try_from(step).map_err(|_| StoreError::backend("time step out of range"))?;
    exec!(
        c,
        "INSERT INTO two_factor (user_id, secret, last_step) VALUES ($1, $2, $3)
         ON CONFLICT (user_id) DO UPDATE SET secret = EXCLUDED.secret,
                                             last_step = EXCLUDED.last_step",
        uid,
        secret,
        step
    );
    exec!(c, "DELETE FROM recovery_codes WHERE user_id = $1", uid);
    for digest in recovery {
        exec!(
            c,
            "INSERT INTO recovery_codes (user_id, digest) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            uid,
            digest.as_slice()
        );
    }
    Ok(true)
}

pub(crate) async fn disable_two_factor(
    c: &mut PgConnection,
    user: &UserId,
) -> Result<(), StoreError> {
    let uid = user.as_bytes();
    exec!(c, "DELETE FROM two_factor WHERE user_id = $1", uid);
    exec!(c, "DELETE FROM pending_totp WHERE user_id = $1", uid);
    exec!(c, "DELETE FROM recovery_codes WHERE user_id = $1", uid);
    Ok(())
}

pub(crate) async fn use_totp_step(
    c: &mut PgConnection,
    user: &UserId,
    step: i64,
) -> Result<bool, StoreError> {
    let updated = exec!(
        c,
        "UPDATE two_factor SET last_step = $2 WHERE user_id = $1 AND last_step < $2",
        user.as_bytes(),
        step
    );
    Ok(updated == 1)
}

pub(crate) async fn use_recovery_code(
    c: &mut PgConnection,
    user: &UserId,
    digest: &[u8; 32],
) -> Result<bool, StoreError> {
    let removed = exec!(
        c,
        "DELETE FROM recovery_codes WHERE user_id = $1 AND digest = $2",
        user.as_bytes(),
        digest.as_slice()
    );
    Ok(removed == 1)
}

pub(crate) async fn key_package_count(
    c: &mut PgConnection,
    device: &DeviceId,
) -> Result<u32, StoreError> {
    let n = one!(
        c,
        i64,
        "SELECT COUNT(*) FROM key_packages WHERE device_id = $1 AND NOT last_resort",
        device.as_bytes()
    );
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

pub(crate) async fn publish_key_packages(
    c: &mut PgConnection,
    device: &DeviceId,
    packages: &[Vec<u8>],
    last_resort: Option<&[u8]>,
    max: u32,
) -> Result<u32, StoreError> {
    // Locks the device: concurrent publishes count one after the other.
    let exists = opt!(
        c,
        i32,
        "SELECT 1 FROM devices WHERE device_id = $1 FOR UPDATE",
        device.as_bytes()
    );
    if exists.is_none() {
        return Err(StoreError::DeviceNotFound(*device));
    }
    let have = key_package_count(c, device).await?;
    if (have as usize).saturating_add(packages.len()) > max as usize {
        return Err(StoreError::QuotaExceeded {
            quota: Quota::KeyPackages,
            limit: u64::from(max),
        });
    }
    for p in packages {
        exec!(
            c,
            "INSERT INTO key_packages (device_id, package, last_resort) VALUES ($1, $2, FALSE)",
            device.as_bytes(),
            p.as_slice()
        );
    }
    if let Some(p) = last_resort {
        exec!(
            c,
            "DELETE FROM key_packages WHERE device_id = $1 AND last_resort",
            device.as_bytes()
        );
        exec!(
            c,
            "INSERT INTO key_packages (device_id, package, last_resort) VALUES ($1, $2, TRUE)",
            device.as_bytes(),
            p
        );
    }
    key_package_count(c, device).await
}

pub(crate) async fn claim_key_packages(
    c: &mut PgConnection,
    users: &[UserId],
) -> Result<Vec<Claimed>, StoreError> {
    let mut out = Vec::new();
    for user in users {
        let devices = all!(
            c,
            [u8; 16],
            "SELECT device_id FROM devices WHERE user_id = $1 ORDER BY device_id",
            user.as_bytes()
        );
        for d in devices {
            // A one-time package first (oldest), else the last-resort one. The row
            // lock makes a concurrent claim wait, then conflict and retry.
            let row = row!(
                c,
                (i64, Vec<u8>, bool),
                "SELECT id, package, last_resort FROM key_packages WHERE device_id = $1
                 ORDER BY last_resort, id LIMIT 1 FOR UPDATE",
                d
            );
            if let Some((id, package, last_resort)) = row {
                if !last_resort {
                    exec!(c, "DELETE FROM key_packages WHERE id = $1", id);
                }
                out.push(Claimed {
                    user: *user,
                    device: DeviceId::from_bytes(d),
                    package,
                });
            }
        }
    }
    Ok(out)
}

pub(crate) async fn add_revocation(
    c: &mut PgConnection,
    user: &UserId,
    device: &DeviceId,
    statement: &[u8],
) -> Result<(), StoreError> {
    exec!(
        c,
        "INSERT INTO revocations (user_id, device_id, statement) VALUES ($1, $2, $3)
         ON CONFLICT (user_id, device_id) DO UPDATE SET statement = EXCLUDED.statement",
        user.as_bytes(),
        device.as_bytes(),
        statement
    );
    Ok(())
}

pub(crate) async fn revocations(
    c: &mut PgConnection,
    user: &UserId,
) -> Result<Vec<(DeviceId, Vec<u8>)>, StoreError> {
    let rows = rows!(
        c,
        ([u8; 16], Vec<u8>),
        "SELECT device_id, statement FROM revocations WHERE user_id = $1 ORDER BY device_id",
        user.as_bytes()
    );
    Ok(rows
        .into_iter()
        .map(|(d, s)| (DeviceId::from_bytes(d), s))
        .collect())
}

pub(crate) async fn devices_of(
    c: &mut PgConnection,
    user: &UserId,
) -> Result<Vec<DeviceId>, StoreError> {
    let ids = all!(
        c,
        [u8; 16],
        "SELECT device_id FROM devices WHERE user_id = $1 ORDER BY device_id",
        user.as_bytes()
    );
    Ok(ids.into_iter().map(DeviceId::from_bytes).collect())
}

pub(crate) async fn device_owners(
    c: &mut PgConnection,
    devices: &[DeviceId],
) -> Result<Vec<Owner>, StoreError> {
    let mut out = Vec::new();
    for d in devices {
        let row = row!(
            c,
            (String, Option<[u8; 32]>),
            "SELECT u.username, u.account_key FROM device_owners o
             JOIN users u ON u.user_id = o.user_id WHERE o.device_id = $1",
            d.as_bytes()
        );
        if let Some((name, key)) = row {
            out.push(Owner {
                device: *d,
                username: username(name)?,
                account_key: key,
            });
        }
    }
    Ok(out)
}

pub(crate) async fn device_records(
    c: &mut PgConnection,
    user: &UserId,
) -> Result<Vec<DeviceRecord>, StoreError> {
    let rows = rows!(
        c,
        ([u8; 16], Option<String>, i64, Option<i64>),
        "SELECT device_id, name, created_at, last_seen FROM devices
         WHERE user_id = $1 ORDER BY device_id",
        user.as_bytes()
    );
    Ok(rows
        .into_iter()
        .map(|(id, name, created_at, last_seen)| DeviceRecord {
            device_id: DeviceId::from_bytes(id),
            name,
            created_at,
            last_seen,
        })
        .collect())
}

pub(crate) async fn live_devices(
    c: &mut PgConnection,
    devices: &[DeviceId],
) -> Result<Vec<DeviceId>, StoreError> {
    let ids: Vec<[u8; 16]> = devices.iter().map(|d| *d.as_bytes()).collect();
    let live = all!(
        c,
        [u8; 16],
        "SELECT d.device_id FROM devices d JOIN users u ON u.user_id = d.user_id
         WHERE d.device_id = ANY($1) AND NOT u.disabled",
        ids
    );
    Ok(devices
        .iter()
        .filter(|d| live.contains(d.as_bytes()))
        .copied()
        .collect())
}

pub(crate) async fn touch_device(
    c: &mut PgConnection,
    device: &DeviceId,
    now: i64,
) -> Result<(), StoreError> {
    exec!(
        c,
        "UPDATE devices SET last_seen = $2 WHERE device_id = $1",
        device.as_bytes(),
        now
    );
    Ok(())
}
