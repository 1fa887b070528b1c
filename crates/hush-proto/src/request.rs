//! Client frames, validated. The server acts only on [`ClientRequest`], never on the
//! raw [`ClientFrameIn`](crate::ClientFrameIn).
use std::fmt;

use bytes::Bytes;
use opaque_ke::{
    CredentialFinalization, CredentialRequest, RegistrationRequest, RegistrationUpload,
};

use crate::auth::OpaqueSuite;
use crate::ids::{
    AccountKeyBytes, DeviceId, FileId, GroupId, HandshakeKey, InviteCode, MessageId, SecondFactor,
    SessionToken, TotpCode, Username, parse_display_name, parse_email,
};
use crate::ids::{ChannelPassword, TotpSecret};
use crate::pb::{self, client_frame::Body};
use crate::{ClientFrameIn, ProtoError};

/// Longest free-form client or device name kept (P306); longer ones are refused.
pub const MAX_LABEL_LEN: usize = 64;
/// Longest ping payload echoed.
pub const MAX_PING_LEN: usize = 1024;

/// Most one-time key packages one upload may carry (P410).
pub const MAX_KEY_PACKAGES_PER_UPLOAD: usize = 100;
/// Largest key package accepted, in bytes (P410).
pub const MAX_KEY_PACKAGE_LEN: usize = 4096;
/// Most users one claim may name (P411).
pub const MAX_CLAIM_USERS: usize = 2000;
/// Most devices in one group (P420).
pub const MAX_GROUP_DEVICES: usize = 2000;
/// Most mailbox entries one fetch returns (P440).
pub const MAX_FETCH: u32 = 500;
/// Most ids one ack or lookup may carry.
pub const MAX_IDS: usize = 2000;
/// Most sealed file bytes one `FileUpload` or `FileDownload` carries (P561, P562).
pub const MAX_FILE_PIECE: usize = 1 << 20;
/// P572: the largest sealed backup chunk.
pub const MAX_BACKUP_CHUNK: usize = 1 << 20;
/// P572: a signed backup head: count, chain digest, time, Ed25519 signature.
pub const BACKUP_HEAD_LEN: usize = 8 + 32 + 8 + 64;
/// P571: the largest wrapped backup key (nonce, key, tag and room to spare).
pub const MAX_WRAPPED_KEY: usize = 256;

/// A validated client frame.
#[derive(Debug)]
pub struct ClientRequest {
    /// Echoed on the answer (P110).
    pub id: u64,
    pub body: Request,
}

/// What a client asks for, every field validated.
#[non_exhaustive]
pub enum Request {
    Hello {
        versions: Vec<u32>,
        client: String,
    },
    RegisterStart {
        username: Username,
        request: RegistrationRequest<OpaqueSuite>,
        invite: Option<InviteCode>,
    },
    RegisterFinish {
        upload: Box<RegistrationUpload<OpaqueSuite>>,
        display_name: Option<String>,
        email: Option<String>,
        device_name: Option<String>,
        account_key: AccountKeyBytes,
        sealed_account_key: Bytes,
    },
    LoginStart {
        username: Username,
        request: CredentialRequest<OpaqueSuite>,
    },
    LoginFinish {
        finalization: CredentialFinalization<OpaqueSuite>,
        device_name: Option<String>,
        /// P330: when the account has two-factor login on.
        second_factor: Option<SecondFactor>,
    },
    Authenticate {
        token: SessionToken,
    },
    WhoAmI,
    Logout,
    Ping {
        payload: Bytes,
    },
    PublishKeyPackages {
        key_packages: Vec<Bytes>,
        last_resort: Option<Bytes>,
    },
    ClaimKeyPackages {
        usernames: Vec<Username>,
    },
    KeyPackageStatus,
    CreateGroup {
        group_id: GroupId,
        name: Option<crate::content::GroupName>,
        direct_peer: Option<Username>,
        welcome: Option<Bytes>,
        members: Vec<DeviceId>,
        /// P423: absent for clients that do not retry.
        client_key: Option<HandshakeKey>,
        /// P550: a channel.
        channel: Option<ChannelSettings>,
        /// P438: the GroupInfo of epoch 1 (absent from clients before P438).
        group_info: Option<Bytes>,
    },
    FindDirect {
        peer: Username,
    },
    FindGroup {
        name: crate::content::GroupName,
    },
    Commit {
        group_id: GroupId,
        epoch: u64,
        commit: Bytes,
        welcome: Option<Bytes>,
        added: Vec<DeviceId>,
        removed: Vec<DeviceId>,
        /// P433: absent for clients that do not retry.
        client_key: Option<HandshakeKey>,
        /// P552: a channel's GroupInfo for the new epoch.
        group_info: Option<Bytes>,
        /// P553: the sender joins by this commit (`added` is the sender alone).
        external: bool,
        /// P438: the proposals the commit includes by reference.
        proposals: Vec<Bytes>,
        /// P438: the GroupInfo of `epoch`, for a group the server holds no state of.
        base_group_info: Option<Bytes>,
    },
    Send {
        group_id: GroupId,
        epoch: u64,
        ciphertext: Bytes,
        client_message_id: MessageId,
    },
    Fetch {
        after_id: u64,
        limit: u32,
        /// P443: push what lands later.
        follow: bool,
    },
    Ack {
        ids: Vec<u64>,
        /// P450: missed messages the device has noted.
        missed_seen: u32,
    },
    LookupDevices {
        devices: Vec<DeviceId>,
    },
    ListDevices {
        usernames: Vec<Username>,
    },
    AdminShutdown,
    ListMyDevices,
    RevokeDevice {
        device: DeviceId,
        /// P547: the account key's statement (64 bytes), or none.
        revocation: Option<Bytes>,
    },
    ListRequests,
    AnswerRequest {
        inviter: Username,
        accept: bool,
    },
    TotpEnable,
    TotpConfirm {
        code: TotpCode,
    },
    TotpDisable {
        second_factor: SecondFactor,
    },
    JoinChannel {
        name: crate::content::GroupName,
        password: Option<ChannelPassword>,
        code: Option<TotpCode>,
    },
    ListChannels,
    UpdateChannel {
        name: crate::content::GroupName,
        /// `Some(None)`: no password from now on.
        password: Option<Option<ChannelPassword>>,
        /// `Some(None)`: no code from now on.
        totp_secret: Option<Option<TotpSecret>>,
        admins: Vec<Username>,
    },
    DeleteChannel {
        name: crate::content::GroupName,
    },
    /// P560: `size` is the sealed size, at least one byte.
    FileCreate {
        group_id: GroupId,
        size: u64,
    },
    /// P561: `data` is 1 to [`MAX_FILE_PIECE`] bytes.
    FileUpload {
        file_id: FileId,
        offset: u64,
        data: Bytes,
    },
    FileStatus {
        file_id: FileId,
    },
    /// P562: `len` is 1 to [`MAX_FILE_PIECE`].
    FileDownload {
        file_id: FileId,
        offset: u64,
        len: u32,
    },
    FileFetched {
        file_id: FileId,
    },
    FileDelete {
        file_id: FileId,
    },
    /// P570.
    BackupStatus,
    /// P571: at least one of them; each at most [`MAX_WRAPPED_KEY`] bytes.
    BackupKeys {
        wrapped_password: Option<Bytes>,
        wrapped_recovery: Option<Bytes>,
        /// The account key's signature over both (64 bytes), or none.
        signature: Option<Bytes>,
    },
    /// P572: `chunk` is 1 to [`MAX_BACKUP_CHUNK`] bytes, `head` [`BACKUP_HEAD_LEN`].
    BackupAppend {
        index: u64,
        chunk: Bytes,
        head: Bytes,
    },
    /// P573.
    BackupFetch {
        from: u64,
    },
    /// P535: `sealed` is 1 to `MAX_ENTRY_PAYLOAD` bytes.
    PutGroupInfo {
        group_id: GroupId,
        epoch: u64,
        sealed: Bytes,
    },
    /// P536.
    ListGroupInfos,
    /// P537.
    GetGroupInfo {
        group_id: GroupId,
    },
}

/// P550: what makes a named group a channel.
#[derive(Debug, Clone)]
pub struct ChannelSettings {
    /// `None`: an open channel.
    pub password: Option<ChannelPassword>,
    pub totp_secret: Option<TotpSecret>,
    pub group_info: Bytes,
}

/// A password, or none when `open` says so explicitly (P550, P555).
fn password_or_open(password: &str, open: bool) -> Result<Option<ChannelPassword>, ProtoError> {
    match (ChannelPassword::optional(password)?, open) {
        (None, true) => Ok(None),
        (Some(p), false) => Ok(Some(p)),
        (None, false) => Err(ProtoError::invalid(
            "password",
            "a channel needs a password, or `open`",
        )),
        (Some(_), true) => Err(ProtoError::invalid(
            "open",
            "an open channel has no password",
        )),
    }
}

fn totp_secret(raw: &[u8]) -> Result<Option<TotpSecret>, ProtoError> {
    if raw.is_empty() {
        Ok(None)
    } else {
        TotpSecret::from_slice(raw).map(Some)
    }
}

impl Request {
    /// A short name for logs; never includes field values.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "hello",
            Request::RegisterStart { .. } => "register_start",
            Request::RegisterFinish { .. } => "register_finish",
            Request::LoginStart { .. } => "login_start",
            Request::LoginFinish { .. } => "login_finish",
            Request::Authenticate { .. } => "authenticate",
            Request::WhoAmI => "whoami",
            Request::Logout => "logout",
            Request::Ping { .. } => "ping",
            Request::PublishKeyPackages { .. } => "publish_key_packages",
            Request::ClaimKeyPackages { .. } => "claim_key_packages",
            Request::KeyPackageStatus => "key_package_status",
            Request::CreateGroup { .. } => "create_group",
            Request::FindDirect { .. } => "find_direct",
            Request::FindGroup { .. } => "find_group",
            Request::Commit { .. } => "commit",
            Request::Send { .. } => "send",
            Request::Fetch { .. } => "fetch",
            Request::Ack { .. } => "ack",
            Request::LookupDevices { .. } => "lookup_devices",
            Request::ListDevices { .. } => "list_devices",
            Request::AdminShutdown => "admin_shutdown",
            Request::ListMyDevices => "list_my_devices",
            Request::RevokeDevice { .. } => "revoke_device",
            Request::ListRequests => "list_requests",
            Request::AnswerRequest { .. } => "answer_request",
            Request::TotpEnable => "totp_enable",
            Request::TotpConfirm { .. } => "totp_confirm",
            Request::TotpDisable { .. } => "totp_disable",
            Request::JoinChannel { .. } => "join_channel",
            Request::ListChannels => "list_channels",
            Request::UpdateChannel { .. } => "update_channel",
            Request::DeleteChannel { .. } => "delete_channel",
            Request::FileCreate { .. } => "file_create",
            Request::FileUpload { .. } => "file_upload",
            Request::FileStatus { .. } => "file_status",
            Request::FileDownload { .. } => "file_download",
            Request::FileFetched { .. } => "file_fetched",
            Request::FileDelete { .. } => "file_delete",
            Request::BackupStatus => "backup_status",
            Request::BackupKeys { .. } => "backup_keys",
            Request::BackupAppend { .. } => "backup_append",
            Request::BackupFetch { .. } => "backup_fetch",
            Request::PutGroupInfo { .. } => "put_group_info",
            Request::ListGroupInfos => "list_group_infos",
            Request::GetGroupInfo { .. } => "get_group_info",
        }
    }
}

// Hand-written: OPAQUE messages and tokens must not reach logs.
impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Request::{}", self.kind())
    }
}

/// A frame that failed validation, with the request id to answer (0 if unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub request_id: u64,
    pub error: ProtoError,
}

fn label(field: &'static str, s: &str) -> Result<Option<String>, ProtoError> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if s.chars().count() > MAX_LABEL_LEN || s.chars().any(char::is_control) {
        return Err(ProtoError::invalid(
            field,
            format!("must be at most {MAX_LABEL_LEN} characters with no control characters"),
        ));
    }
    Ok(Some(s.to_owned()))
}

fn opaque<T>(
    field: &'static str,
    parsed: Result<T, opaque_ke::errors::ProtocolError>,
) -> Result<T, ProtoError> {
    parsed.map_err(|_| ProtoError::invalid(field, "is not a valid OPAQUE message"))
}

fn devices(field: &'static str, raw: &[Bytes], max: usize) -> Result<Vec<DeviceId>, ProtoError> {
    if raw.len() > max {
        return Err(ProtoError::invalid(
            field,
            format!("must list at most {max} devices"),
        ));
    }
    let mut out: Vec<DeviceId> = raw
        .iter()
        .map(|d| DeviceId::from_slice(d))
        .collect::<Result<_, _>>()?;
    let n = out.len();
    out.sort();
    out.dedup();
    if out.len() != n {
        return Err(ProtoError::invalid(field, "lists a device twice"));
    }
    Ok(out)
}

/// An optional idempotency key: empty, or exactly 16 bytes.
fn handshake_key(raw: &[u8]) -> Result<Option<HandshakeKey>, ProtoError> {
    if raw.is_empty() {
        Ok(None)
    } else {
        HandshakeKey::from_slice(raw).map(Some)
    }
}

/// Most bytes a sealed account key may take (P542): a nonce, 32 bytes and a tag.
pub const MAX_SEALED_KEY: usize = 256;

fn blob(field: &'static str, b: Bytes, max: usize) -> Result<Bytes, ProtoError> {
    if b.is_empty() || b.len() > max {
        return Err(ProtoError::invalid(
            field,
            format!("must be 1 to {max} bytes"),
        ));
    }
    Ok(b)
}

/// An optional blob: empty is absent.
fn optional_blob(field: &'static str, b: Bytes) -> Result<Option<Bytes>, ProtoError> {
    if b.is_empty() {
        return Ok(None);
    }
    blob(field, b, crate::frame::MAX_ENTRY_PAYLOAD).map(Some)
}

/// Validates a decoded client frame (P103, P2xx, P3xx).
pub fn validate(frame: ClientFrameIn) -> Result<ClientRequest, Rejected> {
    let id = frame.request_id;
    let reject = |error| Rejected {
        request_id: id,
        error,
    };
    let body = frame.body.ok_or(ProtoError::Empty).map_err(reject)?;
    let body = validate_body(body).map_err(reject)?;
    Ok(ClientRequest { id, body })
}

fn validate_body(body: Body) -> Result<Request, ProtoError> {
    Ok(match body {
        Body::Hello(pb::Hello { versions, client }) => {
            if versions.is_empty() || versions.len() > 16 {
                return Err(ProtoError::invalid(
                    "versions",
                    "must list 1 to 16 versions",
                ));
            }
            let client = label("client", &client)?.unwrap_or_default();
            Request::Hello { versions, client }
        }
        Body::RegisterStart(pb::RegisterStart {
            username,
            registration_request,
            invite,
        }) => Request::RegisterStart {
            username: Username::parse(&username)?,
            request: opaque(
                "registration_request",
                RegistrationRequest::deserialize(&registration_request),
            )?,
            invite: if invite.trim().is_empty() {
                None
            } else {
                Some(InviteCode::parse(&invite)?)
            },
        },
        Body::RegisterFinish(pb::RegisterFinish {
            registration_upload,
            display_name,
            email,
            device_name,
            account_key,
            sealed_account_key,
        }) => Request::RegisterFinish {
            account_key: AccountKeyBytes::from_slice(&account_key)?,
            sealed_account_key: blob("sealed_account_key", sealed_account_key, MAX_SEALED_KEY)?,
            upload: Box::new(opaque(
                "registration_upload",
                RegistrationUpload::deserialize(&registration_upload),
            )?),
            display_name: parse_display_name(&display_name)?,
            email: parse_email(&email)?,
            device_name: label("device_name", &device_name)?,
        },
        Body::LoginStart(pb::LoginStart {
            username,
            credential_request,
        }) => Request::LoginStart {
            username: Username::parse(&username)?,
            request: opaque(
                "credential_request",
                CredentialRequest::deserialize(&credential_request),
            )?,
        },
        Body::LoginFinish(pb::LoginFinish {
            credential_finalization,
            device_name,
            second_factor,
        }) => Request::LoginFinish {
            second_factor: if second_factor.trim().is_empty() {
                None
            } else {
                Some(SecondFactor::parse(&second_factor)?)
            },
            finalization: opaque(
                "credential_finalization",
                CredentialFinalization::deserialize(&credential_finalization),
            )?,
            device_name: label("device_name", &device_name)?,
        },
        Body::Authenticate(pb::Authenticate { session_token }) => Request::Authenticate {
            token: SessionToken::from_slice(&session_token)?,
        },
        Body::Whoami(pb::WhoAmI {}) => Request::WhoAmI,
        Body::Logout(pb::Logout {}) => Request::Logout,
        Body::Ping(pb::Ping { payload }) => {
            if payload.len() > MAX_PING_LEN {
                return Err(ProtoError::invalid(
                    "payload",
                    format!("must be at most {MAX_PING_LEN} bytes"),
                ));
            }
            Request::Ping { payload }
        }
        Body::PublishKeyPackages(pb::PublishKeyPackages {
            key_packages,
            last_resort,
        }) => {
            if key_packages.len() > MAX_KEY_PACKAGES_PER_UPLOAD {
                return Err(ProtoError::invalid(
                    "key_packages",
                    format!("at most {MAX_KEY_PACKAGES_PER_UPLOAD} per upload"),
                ));
            }
            Request::PublishKeyPackages {
                key_packages: key_packages
                    .into_iter()
                    .map(|k| blob("key_packages", k, MAX_KEY_PACKAGE_LEN))
                    .collect::<Result<_, _>>()?,
                last_resort: if last_resort.is_empty() {
                    None
                } else {
                    Some(blob("last_resort", last_resort, MAX_KEY_PACKAGE_LEN)?)
                },
            }
        }
        Body::ClaimKeyPackages(pb::ClaimKeyPackages { usernames }) => {
            if usernames.is_empty() || usernames.len() > MAX_CLAIM_USERS {
                return Err(ProtoError::invalid(
                    "usernames",
                    format!("must name 1 to {MAX_CLAIM_USERS} users"),
                ));
            }
            Request::ClaimKeyPackages {
                usernames: usernames
                    .iter()
                    .map(|u| Username::parse(u))
                    .collect::<Result<_, _>>()?,
            }
        }
        Body::KeyPackageStatus(pb::KeyPackageStatus {}) => Request::KeyPackageStatus,
        Body::CreateGroup(pb::CreateGroup {
            group_id,
            direct_peer,
            welcome,
            members,
            name,
            client_key,
            channel,
            group_info,
        }) => {
            let members = devices("members", &members, MAX_GROUP_DEVICES)?;
            let channel = match channel {
                None => None,
                Some(_) if name.is_empty() => {
                    return Err(ProtoError::invalid("channel", "a channel is a named group"));
                }
                Some(c) => Some(ChannelSettings {
                    password: password_or_open(&c.password, c.open)?,
                    totp_secret: totp_secret(&c.totp_secret)?,
                    group_info: blob("group_info", c.group_info, crate::frame::MAX_ENTRY_PAYLOAD)?,
                }),
            };
            if members.is_empty() {
                return Err(ProtoError::invalid("members", "must include the creator"));
            }
            if !name.is_empty() && !direct_peer.is_empty() {
                return Err(ProtoError::invalid(
                    "name",
                    "a group is either named or direct",
                ));
            }
            Request::CreateGroup {
                group_id: GroupId::from_slice(&group_id)?,
                name: if name.is_empty() {
                    None
                } else {
                    Some(crate::content::GroupName::parse(&name)?)
                },
                direct_peer: if direct_peer.is_empty() {
                    None
                } else {
                    Some(Username::parse(&direct_peer)?)
                },
                welcome: match (welcome.is_empty(), members.len()) {
                    (true, 1) => None,
                    (true, _) => {
                        return Err(ProtoError::invalid(
                            "welcome",
                            "a group with other members needs their Welcome",
                        ));
                    }
                    (false, _) => Some(blob("welcome", welcome, crate::frame::MAX_ENTRY_PAYLOAD)?),
                },
                members,
                client_key: handshake_key(&client_key)?,
                channel,
                group_info: optional_blob("group_info", group_info)?,
            }
        }
        Body::FindDirect(pb::FindDirect { peer }) => Request::FindDirect {
            peer: Username::parse(&peer)?,
        },
        Body::FindGroup(pb::FindGroup { name }) => Request::FindGroup {
            name: crate::content::GroupName::parse(&name)?,
        },
        Body::Commit(pb::Commit {
            group_id,
            epoch,
            commit,
            welcome,
            added,
            removed,
            client_key,
            group_info,
            external,
            proposals,
            base_group_info,
        }) => {
            let added = devices("added", &added, MAX_GROUP_DEVICES)?;
            if proposals.len() > MAX_GROUP_DEVICES {
                return Err(ProtoError::invalid(
                    "proposals",
                    format!("at most {MAX_GROUP_DEVICES}"),
                ));
            }
            let proposals = proposals
                .into_iter()
                .map(|p| blob("proposals", p, crate::frame::MAX_ENTRY_PAYLOAD))
                .collect::<Result<Vec<_>, _>>()?;
            // P537: an external commit may remove the sender's own old leaf (a resync).
            let resync = removed.len() == 1
                && added.len() == 1
                && removed[0].as_ref() == added[0].as_bytes().as_slice();
            if external
                && (added.len() != 1 || !welcome.is_empty() || !(removed.is_empty() || resync))
            {
                return Err(ProtoError::invalid(
                    "external",
                    "an external commit adds its sender alone (and removes at most its own old leaf), with no Welcome",
                ));
            }
            if !external && added.is_empty() != welcome.is_empty() {
                return Err(ProtoError::invalid(
                    "welcome",
                    "a commit that adds devices carries a Welcome, and only then",
                ));
            }
            Request::Commit {
                group_id: GroupId::from_slice(&group_id)?,
                epoch,
                commit: blob("commit", commit, crate::frame::MAX_ENTRY_PAYLOAD)?,
                welcome: if welcome.is_empty() {
                    None
                } else {
                    Some(blob("welcome", welcome, crate::frame::MAX_ENTRY_PAYLOAD)?)
                },
                added,
                removed: devices("removed", &removed, MAX_GROUP_DEVICES)?,
                client_key: handshake_key(&client_key)?,
                group_info: optional_blob("group_info", group_info)?,
                external,
                proposals,
                base_group_info: optional_blob("base_group_info", base_group_info)?,
            }
        }
        Body::Send(pb::Send {
            group_id,
            epoch,
            ciphertext,
            client_message_id,
        }) => Request::Send {
            group_id: GroupId::from_slice(&group_id)?,
            epoch,
            ciphertext: blob("ciphertext", ciphertext, crate::frame::MAX_ENTRY_PAYLOAD)?,
            client_message_id: MessageId::from_slice(&client_message_id)?,
        },
        Body::Fetch(pb::Fetch {
            after_id,
            limit,
            follow,
        }) => Request::Fetch {
            after_id,
            follow,
            limit: if limit == 0 {
                100
            } else {
                limit.min(MAX_FETCH)
            },
        },
        Body::Ack(pb::Ack { ids, missed_seen }) => {
            if ids.len() > MAX_IDS {
                return Err(ProtoError::invalid("ids", format!("at most {MAX_IDS}")));
            }
            Request::Ack { ids, missed_seen }
        }
        Body::LookupDevices(pb::LookupDevices { device_ids }) => Request::LookupDevices {
            devices: devices("device_ids", &device_ids, MAX_IDS)?,
        },
        Body::AdminShutdown(pb::AdminShutdown {}) => Request::AdminShutdown,
        Body::ListMyDevices(pb::ListMyDevices {}) => Request::ListMyDevices,
        Body::RevokeDevice(pb::RevokeDevice {
            device_id,
            revocation,
        }) => Request::RevokeDevice {
            device: DeviceId::from_slice(&device_id)?,
            revocation: match revocation.len() {
                0 => None,
                64 => Some(revocation),
                _ => return Err(ProtoError::invalid("revocation", "must be 64 bytes")),
            },
        },
        Body::ListRequests(pb::ListRequests {}) => Request::ListRequests,
        Body::TotpEnable(pb::TotpEnable {}) => Request::TotpEnable,
        Body::TotpConfirm(pb::TotpConfirm { code }) => Request::TotpConfirm {
            code: TotpCode::parse(&code)?,
        },
        Body::TotpDisable(pb::TotpDisable { second_factor }) => Request::TotpDisable {
            second_factor: SecondFactor::parse(&second_factor)?,
        },
        Body::JoinChannel(pb::JoinChannel {
            name,
            password,
            code,
        }) => Request::JoinChannel {
            name: crate::content::GroupName::parse(&name)?,
            password: ChannelPassword::optional(&password)?,
            code: if code.is_empty() {
                None
            } else {
                Some(TotpCode::parse(&code)?)
            },
        },
        Body::ListChannels(pb::ListChannels {}) => Request::ListChannels,
        Body::UpdateChannel(pb::UpdateChannel {
            name,
            set_password,
            password,
            open,
            totp_secret: secret,
            remove_totp,
            admins,
        }) => {
            if remove_totp && !secret.is_empty() {
                return Err(ProtoError::invalid(
                    "remove_totp",
                    "either a new secret or none",
                ));
            }
            if admins.len() > MAX_CLAIM_USERS {
                return Err(ProtoError::invalid("admins", "too many admins"));
            }
            Request::UpdateChannel {
                name: crate::content::GroupName::parse(&name)?,
                password: if set_password {
                    Some(password_or_open(&password, open)?)
                } else {
                    None
                },
                totp_secret: if remove_totp {
                    Some(None)
                } else {
                    totp_secret(&secret)?.map(Some)
                },
                admins: admins
                    .iter()
                    .map(|a| Username::parse(a))
                    .collect::<Result<_, _>>()?,
            }
        }
        Body::DeleteChannel(pb::DeleteChannel { name }) => Request::DeleteChannel {
            name: crate::content::GroupName::parse(&name)?,
        },
        Body::FileCreate(pb::FileCreate { group_id, size }) => {
            if size == 0 {
                return Err(ProtoError::invalid("size", "must be at least 1"));
            }
            Request::FileCreate {
                group_id: GroupId::from_slice(&group_id)?,
                size,
            }
        }
        Body::FileUpload(pb::FileUpload {
            file_id,
            offset,
            data,
        }) => Request::FileUpload {
            file_id: FileId::from_slice(&file_id)?,
            offset,
            data: blob("data", data, MAX_FILE_PIECE)?,
        },
        Body::FileStatus(pb::FileStatus { file_id }) => Request::FileStatus {
            file_id: FileId::from_slice(&file_id)?,
        },
        Body::FileDownload(pb::FileDownload {
            file_id,
            offset,
            len,
        }) => {
            if len == 0 || len as usize > MAX_FILE_PIECE {
                return Err(ProtoError::invalid(
                    "len",
                    format!("must be 1 to {MAX_FILE_PIECE}"),
                ));
            }
            Request::FileDownload {
                file_id: FileId::from_slice(&file_id)?,
                offset,
                len,
            }
        }
        Body::FileFetched(pb::FileFetched { file_id }) => Request::FileFetched {
            file_id: FileId::from_slice(&file_id)?,
        },
        Body::FileDelete(pb::FileDelete { file_id }) => Request::FileDelete {
            file_id: FileId::from_slice(&file_id)?,
        },
        Body::BackupStatus(pb::BackupStatus {}) => Request::BackupStatus,
        Body::BackupKeys(pb::BackupKeys {
            wrapped_password,
            wrapped_recovery,
            signature,
        }) => {
            if !signature.is_empty() && signature.len() != 64 {
                return Err(ProtoError::invalid("signature", "must be 64 bytes"));
            }
            let optional = |field, b: Bytes| -> Result<Option<Bytes>, ProtoError> {
                if b.is_empty() {
                    Ok(None)
                } else {
                    blob(field, b, MAX_WRAPPED_KEY).map(Some)
                }
            };
            let wrapped_password = optional("wrapped_password", wrapped_password)?;
            let wrapped_recovery = optional("wrapped_recovery", wrapped_recovery)?;
            if wrapped_password.is_none() && wrapped_recovery.is_none() {
                return Err(ProtoError::invalid(
                    "wrapped_password",
                    "give a wrapped key to keep",
                ));
            }
            Request::BackupKeys {
                wrapped_password,
                wrapped_recovery,
                signature: (!signature.is_empty()).then_some(signature),
            }
        }
        Body::BackupAppend(pb::BackupAppend { index, chunk, head }) => {
            if head.len() != BACKUP_HEAD_LEN {
                return Err(ProtoError::invalid(
                    "head",
                    format!("must be {BACKUP_HEAD_LEN} bytes"),
                ));
            }
            Request::BackupAppend {
                index,
                chunk: blob("chunk", chunk, MAX_BACKUP_CHUNK)?,
                head,
            }
        }
        Body::BackupFetch(pb::BackupFetch { from }) => Request::BackupFetch { from },
        Body::PutGroupInfo(pb::PutGroupInfo {
            group_id,
            epoch,
            sealed,
        }) => Request::PutGroupInfo {
            group_id: GroupId::from_slice(&group_id)?,
            epoch,
            sealed: blob("sealed", sealed, crate::frame::MAX_ENTRY_PAYLOAD)?,
        },
        Body::ListGroupInfos(pb::ListGroupInfos {}) => Request::ListGroupInfos,
        Body::GetGroupInfo(pb::GetGroupInfo { group_id }) => Request::GetGroupInfo {
            group_id: GroupId::from_slice(&group_id)?,
        },
        Body::AnswerRequest(pb::AnswerRequest { inviter, accept }) => Request::AnswerRequest {
            inviter: Username::parse(&inviter)?,
            accept,
        },
        Body::ListDevices(pb::ListDevices { usernames }) => {
            if usernames.is_empty() || usernames.len() > MAX_CLAIM_USERS {
                return Err(ProtoError::invalid(
                    "usernames",
                    format!("must name 1 to {MAX_CLAIM_USERS} users"),
                ));
            }
            Request::ListDevices {
                usernames: usernames
                    .iter()
                    .map(|u| Username::parse(u))
                    .collect::<Result<_, _>>()?,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: Body) -> ClientFrameIn {
        ClientFrameIn {
            request_id: 9,
            body: Some(body),
        }
    }

    #[test]
    fn p103_rejects_frame_without_body() {
        let err = validate(ClientFrameIn {
            request_id: 3,
            body: None,
        })
        .unwrap_err();
        assert_eq!(err.request_id, 3);
        assert_eq!(err.error, ProtoError::Empty);
    }

    #[test]
    fn p301_register_start_checks_username() {
        let err = validate(frame(Body::RegisterStart(pb::RegisterStart {
            username: "BAD".into(),
            registration_request: Bytes::new(),
            invite: String::new(),
        })))
        .unwrap_err();
        assert_eq!(err.request_id, 9);
        assert!(err.error.to_string().contains("username"));
    }

    #[test]
    fn p307_rejects_garbage_opaque_messages() {
        let err = validate(frame(Body::LoginStart(pb::LoginStart {
            username: "ann".into(),
            credential_request: Bytes::from_static(b"not an opaque message"),
        })))
        .unwrap_err();
        assert!(err.error.to_string().contains("credential_request"));
    }

    #[test]
    fn p304_rejects_short_token() {
        let err = validate(frame(Body::Authenticate(pb::Authenticate {
            session_token: Bytes::from_static(b"short"),
        })))
        .unwrap_err();
        assert!(err.error.to_string().contains("session_token"));
    }

    #[test]
    fn p201_hello_needs_versions() {
        assert!(
            validate(frame(Body::Hello(pb::Hello {
                versions: vec![],
                client: String::new()
            })))
            .is_err()
        );
        let ok = validate(frame(Body::Hello(pb::Hello {
            versions: vec![1],
            client: "hush".into(),
        })))
        .unwrap();
        assert_eq!(ok.body.kind(), "hello");
    }

    #[test]
    fn p560_file_frames_check_ids_sizes_and_pieces() {
        let id = Bytes::from_static(&[3; 16]);
        assert!(
            validate(frame(Body::FileCreate(pb::FileCreate {
                group_id: Bytes::from_static(&[1; 16]),
                size: 0,
            })))
            .is_err()
        );
        assert!(
            validate(frame(Body::FileUpload(pb::FileUpload {
                file_id: id.clone(),
                offset: 0,
                data: Bytes::from(vec![0; MAX_FILE_PIECE + 1]),
            })))
            .is_err()
        );
        assert!(
            validate(frame(Body::FileDownload(pb::FileDownload {
                file_id: Bytes::from_static(b"short"),
                offset: 0,
                len: 10,
            })))
            .is_err()
        );
        assert!(
            validate(frame(Body::FileDownload(pb::FileDownload {
                file_id: id.clone(),
                offset: 0,
                len: MAX_FILE_PIECE as u32 + 1,
            })))
            .is_err()
        );
        let ok = validate(frame(Body::FileUpload(pb::FileUpload {
            file_id: id,
            offset: 5,
            data: Bytes::from_static(b"sealed"),
        })))
        .unwrap();
        assert_eq!(ok.body.kind(), "file_upload");
    }
}
