//! Two-factor login (P330–P334): RFC 6238 TOTP with SHA-1, 6 digits and 30-second
//! steps (what every authenticator app expects), ±1 step of clock skew, each step
//! usable once per account, and one-time recovery codes.
//!
//! The TOTP secret has to be on the server, which checks the codes: someone who reads
//! the server's database can compute codes (SECURITY.md). They still need the
//! password, which the server never learns (OPAQUE).
use hush_proto::ErrorCode;
use hush_proto::ids::{RECOVERY_ALPHABET, RECOVERY_LEN, RecoveryCode, SecondFactor, TotpSecret};
use hush_store::TwoFactor;
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};

use crate::ServerState;
use crate::accounts::{Authenticated, Refusal};
use crate::clock::random;

/// Seconds per time step (RFC 6238's X).
pub const STEP_SECS: u64 = 30;
/// Digits per code.
pub const DIGITS: usize = 6;
/// Bytes of a new secret: 160 bits, as RFC 4226 recommends for HMAC-SHA-1.
pub const SECRET_LEN: usize = 20;
/// Recovery codes made when two-factor login is turned on.
pub const RECOVERY_CODES: usize = 10;

/// The code for time step `step` (RFC 6238: HOTP of the step counter).
pub fn code_at(secret: &[u8], step: u64) -> String {
    TOTP::new_unchecked(
        Algorithm::SHA1,
        DIGITS,
        1,
        STEP_SECS,
        secret.to_vec(),
        None,
        String::new(),
    )
    .generate(step.saturating_mul(STEP_SECS))
}

/// The time step within one step of `now` whose code is `code`, the latest if several.
/// Every candidate is compared in constant time.
pub fn matching_step(secret: &[u8], code: &str, now_unix: u64) -> Option<u64> {
    let now = now_unix / STEP_SECS;
    let mut found = None;
    for step in [now.saturating_sub(1), now, now.saturating_add(1)] {
        if bool::from(code_at(secret, step).as_bytes().ct_eq(code.as_bytes())) {
            found = Some(step);
        }
    }
    found
}

fn invalid(message: &str) -> Refusal {
    Refusal::new(ErrorCode::SecondFactorInvalid, message)
}

fn now_unix(st: &ServerState) -> u64 {
    u64::try_from(st.clock.now_unix()).unwrap_or(0)
}

/// P332: checks `factor` for `user` and uses it up (a code's time step, or the
/// recovery code). Failures are counted per account; past the limit even a right
/// code is refused until the window passes.
pub async fn check(
    st: &ServerState,
    user: hush_proto::ids::UserId,
    two_factor: &TwoFactor,
    factor: &SecondFactor,
) -> Result<(), Refusal> {
    let now = st.clock.now_unix();
    let limiter = &st.accounts.second_factor;
    if let Err(wait) = limiter
        .check(st.store.as_ref(), user.as_bytes(), now)
        .await?
    {
        tracing::warn!(user = %user, "second factor refused: too many wrong codes");
        return Err(Refusal {
            code: ErrorCode::RateLimited,
            message: "too many wrong codes for this account; wait before trying again".into(),
            retry_after_secs: wait,
        });
    }
    let outcome = match factor {
        SecondFactor::Code(code) => {
            match matching_step(&two_factor.secret, code.expose(), now_unix(st)) {
                None => Err(invalid(
                    "wrong code: check the authenticator app and the clock",
                )),
                Some(step) => {
                    if st.store.use_totp_step(user, step).await? {
                        Ok(())
                    } else {
                        Err(invalid("that code was already used: wait for the next one"))
                    }
                }
            }
        }
        SecondFactor::Recovery(r) => {
            if st.store.use_recovery_code(user, &r.digest()).await? {
                tracing::info!(user = %user, left = two_factor.recovery_left.saturating_sub(1), "recovery code used");
                Ok(())
            } else {
                Err(invalid("unknown or already used recovery code"))
            }
        }
    };
    if outcome.is_err() {
        limiter
            .record_failure(st.store.as_ref(), user.as_bytes(), now)
            .await?;
        tracing::warn!(user = %user, "wrong second factor");
    } else {
        limiter.clear(st.store.as_ref(), user.as_bytes()).await?;
    }
    outcome
}

/// P333: a new pending secret; two-factor login stays as it was until a code from it
/// is confirmed.
pub async fn enable(st: &ServerState, auth: &Authenticated) -> Result<TotpSecret, Refusal> {
    if st.store.two_factor(auth.user_id).await?.is_some() {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            "two-factor login is already on; turn it off first (hush 2fa disable)",
        ));
    }
    let secret: [u8; SECRET_LEN] = random(st.entropy.as_ref());
    st.store
        .set_pending_totp(auth.user_id, secret.to_vec())
        .await?;
    tracing::debug!(user = %auth.username, "two-factor secret issued, waiting for confirmation");
    TotpSecret::from_slice(&secret)
        .map_err(|_| Refusal::new(ErrorCode::Internal, "could not make a secret"))
}

/// P333: a code from the pending secret turns two-factor login on; the recovery
/// codes are returned once and only their digests kept.
pub async fn confirm(
    st: &ServerState,
    auth: &Authenticated,
    code: &hush_proto::ids::TotpCode,
) -> Result<Vec<RecoveryCode>, Refusal> {
    let now = st.clock.now_unix();
    let limiter = &st.accounts.second_factor;
    let key = auth.user_id.as_bytes();
    if let Err(wait) = limiter.check(st.store.as_ref(), key, now).await? {
        return Err(Refusal {
            code: ErrorCode::RateLimited,
            message: "too many wrong codes for this account; wait before trying again".into(),
            retry_after_secs: wait,
        });
    }
    let Some(secret) = st.store.pending_totp(auth.user_id).await? else {
        return Err(Refusal::new(
            ErrorCode::NotFound,
            "no two-factor setup is waiting for a code; start with hush 2fa enable",
        ));
    };
    let Some(step) = matching_step(&secret, code.expose(), now_unix(st)) else {
        limiter.record_failure(st.store.as_ref(), key, now).await?;
        return Err(invalid(
            "wrong code: check that the app shows the account just added, and the clock",
        ));
    };
    let codes: Vec<RecoveryCode> = (0..RECOVERY_CODES)
        .map(|_| new_recovery_code(st))
        .collect::<Result<_, _>>()?;
    let digests = codes.iter().map(RecoveryCode::digest).collect();
    if !st
        .store
        .enable_two_factor(auth.user_id, &secret, step, digests)
        .await?
    {
        return Err(Refusal::new(
            ErrorCode::NotFound,
            "a newer hush 2fa enable replaced this secret; add the newer one to the app",
        ));
    }
    limiter.clear(st.store.as_ref(), key).await?;
    tracing::debug!(user = %auth.username, "two-factor login turned on");
    Ok(codes)
}

/// P334: turning two-factor login off takes a code or a recovery code.
pub async fn disable(
    st: &ServerState,
    auth: &Authenticated,
    factor: &SecondFactor,
) -> Result<(), Refusal> {
    let Some(two_factor) = st.store.two_factor(auth.user_id).await? else {
        return Err(Refusal::new(
            ErrorCode::NotFound,
            "two-factor login is not on for this account",
        ));
    };
    check(st, auth.user_id, &two_factor, factor).await?;
    st.store.disable_two_factor(auth.user_id).await?;
    tracing::debug!(user = %auth.username, "two-factor login turned off");
    Ok(())
}

fn new_recovery_code(st: &ServerState) -> Result<RecoveryCode, Refusal> {
    let bytes: [u8; RECOVERY_LEN] = random(st.entropy.as_ref());
    // 32 symbols: 5 bits of each random byte.
    let s: String = bytes
        .iter()
        .map(|b| char::from(RECOVERY_ALPHABET[usize::from(b & 31)]))
        .collect();
    RecoveryCode::parse(&s).map_err(|_| Refusal::new(ErrorCode::Internal, "could not make a code"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 rows: the 8-digit values there end in our 6 digits
    /// (the truncation is the same number modulo 10^6).
    #[test]
    fn rfc6238_test_vectors() {
        let secret = b"12345678901234567890";
        for (time, eight) in [
            (59u64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(code_at(secret, time / STEP_SECS), eight[2..], "T = {time}");
        }
    }

    #[test]
    fn codes_match_within_one_step_of_skew_only() {
        let secret = [7u8; SECRET_LEN];
        let now = 1_700_000_000u64;
        let step = now / STEP_SECS;
        for (offset, ok) in [(-2i64, false), (-1, true), (0, true), (1, true), (2, false)] {
            let s = step.checked_add_signed(offset).unwrap();
            let code = code_at(&secret, s);
            let found = matching_step(&secret, &code, now);
            if ok {
                assert_eq!(found, Some(s), "offset {offset}");
            } else {
                assert_ne!(found, Some(s), "offset {offset}");
            }
        }
        assert_eq!(matching_step(&secret, "000000x", now), None);
    }
}
