//! Accounts from the client side: OPAQUE registration and login (the password never
//! leaves this process), whoami and logout. The engine resumes sessions with the
//! device token.
use hush_proto::auth::OpaqueSuite;
use hush_proto::ids::{RecoveryCode, SecondFactor, SessionToken, TotpCode, TotpSecret, Username};
use hush_proto::pb::{self, client_frame::Body};
use hush_proto::response::{Account, Response};
use opaque_ke::rand::rngs::OsRng;
use opaque_ke::{
    ClientLogin, ClientLoginFinishParameters, ClientRegistration,
    ClientRegistrationFinishParameters,
};
use zeroize::Zeroizing;

use hush_crypto::account::{AccountKey, AccountPublicKey};

use crate::ClientError;
use crate::connection::{Connection, unexpected};
use crate::home::StoredAccount;

/// Profile details given at registration.
#[derive(Debug, Default, Clone)]
pub struct Profile {
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub device_name: Option<String>,
}

/// Runs key stretching (Argon2, tens of milliseconds) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ClientError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ClientError::Invalid(format!("internal: {e}")))
}

fn opaque_err(e: opaque_ke::errors::ProtocolError) -> ClientError {
    ClientError::Protocol(format!("OPAQUE: {e}"))
}

/// A new device's session, with the account key and the OPAQUE export key of the
/// registration or login (the backup key's password wrap, P571).
pub(crate) struct Enrolled {
    pub account: Account,
    pub token: SessionToken,
    pub account_key: AccountKey,
    pub export_key: Zeroizing<Vec<u8>>,
}

/// Creates an account with a fresh account key (P540), sealed for the user's later
/// devices under the OPAQUE export key (P542); this connection becomes its first
/// device's session.
pub(crate) async fn register(
    conn: &Connection,
    username: &Username,
    password: Zeroizing<Vec<u8>>,
    invite: Option<String>,
    profile: &Profile,
) -> Result<Enrolled, ClientError> {
    let start =
        ClientRegistration::<OpaqueSuite>::start(&mut OsRng, &password).map_err(opaque_err)?;
    let challenge = conn
        .request(Body::RegisterStart(pb::RegisterStart {
            username: username.to_string(),
            registration_request: start.message.serialize().to_vec().into(),
            invite: invite.unwrap_or_default(),
        }))
        .await?;
    let Response::RegisterChallenge(response) = challenge else {
        return Err(unexpected(&challenge));
    };
    let state = start.state;
    let finish = blocking(move || {
        state.finish(
            &mut OsRng,
            &password,
            response,
            ClientRegistrationFinishParameters::default(),
        )
    })
    .await?
    .map_err(opaque_err)?;
    let account_key = AccountKey::generate();
    let sealed = account_key.seal(finish.export_key.as_slice(), username.as_str())?;
    let done = conn
        .request(Body::RegisterFinish(pb::RegisterFinish {
            registration_upload: finish.message.serialize().to_vec().into(),
            display_name: profile.display_name.clone().unwrap_or_default(),
            email: profile.email.clone().unwrap_or_default(),
            device_name: profile.device_name.clone().unwrap_or_default(),
            account_key: account_key.public().as_bytes().to_vec().into(),
            sealed_account_key: sealed.into(),
        }))
        .await?;
    match done {
        Response::Registered { account, token } => Ok(Enrolled {
            account,
            token,
            account_key,
            export_key: Zeroizing::new(finish.export_key.to_vec()),
        }),
        other => Err(unexpected(&other)),
    }
}

/// Logs in, creating a new device for this home, and opens the account key the first
/// device sealed (P542): the server never sees it, and only the password opens it.
pub(crate) async fn login(
    conn: &Connection,
    username: &Username,
    password: Zeroizing<Vec<u8>>,
    device_name: Option<String>,
    second_factor: Option<&SecondFactor>,
) -> Result<Enrolled, ClientError> {
    let start = ClientLogin::<OpaqueSuite>::start(&mut OsRng, &password).map_err(opaque_err)?;
    let challenge = conn
        .request(Body::LoginStart(pb::LoginStart {
            username: username.to_string(),
            credential_request: start.message.serialize().to_vec().into(),
        }))
        .await?;
    let Response::LoginChallenge(response) = challenge else {
        return Err(unexpected(&challenge));
    };
    let state = start.state;
    let finish = blocking(move || {
        state.finish(
            &mut OsRng,
            &password,
            *response,
            ClientLoginFinishParameters::default(),
        )
    })
    .await?
    // The envelope does not open: wrong password, or no such user (indistinguishable).
    .map_err(|_| ClientError::WrongPassword)?;
    let done = conn
        .request(Body::LoginFinish(pb::LoginFinish {
            credential_finalization: finish.message.serialize().to_vec().into(),
            device_name: device_name.unwrap_or_default(),
            second_factor: second_factor.map(SecondFactor::expose).unwrap_or_default(),
        }))
        .await?;
    match done {
        Response::LoggedIn {
            account,
            token,
            account_key,
            sealed_account_key,
        } => {
            let opened = AccountPublicKey::from_slice(account_key.as_bytes()).and_then(|public| {
                AccountKey::open(
                    &sealed_account_key,
                    finish.export_key.as_slice(),
                    username.as_str(),
                    &public,
                )
            });
            match opened {
                Ok(key) => Ok(Enrolled {
                    account,
                    token,
                    account_key: key,
                    export_key: Zeroizing::new(finish.export_key.to_vec()),
                }),
                Err(e) => {
                    // The device the server just made would be useless: end it.
                    if let Err(err) = logout(conn).await {
                        tracing::warn!(error = %err, "could not end the unusable device session");
                    }
                    Err(ClientError::Crypto(format!(
                        "the account key from the server does not open ({e}); the server may \
                         be tampering with this account"
                    )))
                }
            }
        }
        other => Err(unexpected(&other)),
    }
}

/// The stored form of a fresh account.
pub(crate) fn stored(server: &str, account: &Account, token: SessionToken) -> StoredAccount {
    StoredAccount {
        server: server.to_owned(),
        username: account.username.clone(),
        user_id: account.user_id,
        device_id: account.device_id,
        display_name: account.display_name.clone(),
        email: account.email.clone(),
        token,
        created_at: account.created_at,
    }
}

/// The server's current view of this device's account.
pub(crate) async fn whoami(conn: &Connection) -> Result<Account, ClientError> {
    match conn.request(Body::Whoami(pb::WhoAmI {})).await? {
        Response::Account(a) => Ok(a),
        other => Err(unexpected(&other)),
    }
}

/// Ends this device's session on the server.
pub(crate) async fn logout(conn: &Connection) -> Result<(), ClientError> {
    match conn.request(Body::Logout(pb::Logout {})).await? {
        Response::LoggedOut => Ok(()),
        other => Err(unexpected(&other)),
    }
}

/// Asks the server to shut down gracefully; the server refuses unless this account is
/// a server admin (P601).
pub(crate) async fn admin_shutdown(conn: &Connection) -> Result<(), ClientError> {
    match conn
        .request(Body::AdminShutdown(pb::AdminShutdown {}))
        .await?
    {
        Response::ShutdownStarted => Ok(()),
        other => Err(unexpected(&other)),
    }
}

/// What an authenticator app needs to add an account: the otpauth URI (RFC 6238
/// parameters: SHA-1, 6 digits, 30 s) and the secret in base32 for typing by hand.
#[derive(Clone)]
pub struct TotpSetup {
    pub uri: String,
    pub secret_base32: String,
}

impl std::fmt::Debug for TotpSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSetup(<redacted>)")
    }
}

impl TotpSetup {
    /// The `otpauth://totp/` URI with issuer `hush` and `label` (such as
    /// `alice@chat.example.org`).
    pub fn new(secret: &[u8], label: &str) -> Self {
        let secret_base32 = totp_rs::Secret::Raw(secret.to_vec())
            .to_encoded()
            .to_string();
        let uri = format!(
            "otpauth://totp/hush:{}?secret={secret_base32}&issuer=hush&algorithm=SHA1&digits=6&period=30",
            percent_encode(label)
        );
        TotpSetup { uri, secret_base32 }
    }
}

/// The label an account's two-factor entry gets in the app: `user@host`, with the port
/// when it is not hush's (a colon would split the label).
pub fn totp_label(name: &str, server: &str) -> String {
    let (host, port) = match server.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        _ => (server, None),
    };
    match port {
        Some(p) if p != "5535" => format!("{name}@{host} port {p}"),
        _ => format!("{name}@{host}"),
    }
}

/// RFC 3986 percent-encoding of everything but unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// P333: asks for a new pending secret.
pub(crate) async fn totp_enable(conn: &Connection) -> Result<TotpSecret, ClientError> {
    match conn.request(Body::TotpEnable(pb::TotpEnable {})).await? {
        Response::TotpSecret(secret) => Ok(secret),
        other => Err(unexpected(&other)),
    }
}

/// P333: confirms the pending secret with a code from it.
pub(crate) async fn totp_confirm(
    conn: &Connection,
    code: &TotpCode,
) -> Result<Vec<RecoveryCode>, ClientError> {
    match conn
        .request(Body::TotpConfirm(pb::TotpConfirm {
            code: code.expose().to_owned(),
        }))
        .await?
    {
        Response::TotpEnabled(codes) => Ok(codes),
        other => Err(unexpected(&other)),
    }
}

/// P334: turns two-factor login off.
pub(crate) async fn totp_disable(
    conn: &Connection,
    factor: &SecondFactor,
) -> Result<(), ClientError> {
    match conn
        .request(Body::TotpDisable(pb::TotpDisable {
            second_factor: factor.expose(),
        }))
        .await?
    {
        Response::TotpDisabled => Ok(()),
        other => Err(unexpected(&other)),
    }
}

#[cfg(test)]
mod totp_tests {
    use super::*;

    #[test]
    fn otpauth_uris_carry_the_rfc6238_parameters_and_a_safe_label() {
        let s = TotpSetup::new(
            b"12345678901234567890",
            &totp_label("ann", "chat.example:5535"),
        );
        assert_eq!(s.secret_base32, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(
            s.uri,
            "otpauth://totp/hush:ann@chat.example?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=hush&algorithm=SHA1&digits=6&period=30"
        );
        assert_eq!(
            totp_label("ann", "127.0.0.1:40000"),
            "ann@127.0.0.1 port 40000"
        );
        let odd = TotpSetup::new(&[0; 20], "#te am:x");
        assert!(
            odd.uri.starts_with("otpauth://totp/hush:%23te%20am%3Ax?"),
            "{}",
            odd.uri
        );
    }
}
