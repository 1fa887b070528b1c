//! Server frames, validated on the client. A hostile or broken server gets a clear
//! error, not a panic.
use std::fmt;

use opaque_ke::{CredentialResponse, RegistrationResponse};

use crate::auth::OpaqueSuite;
use crate::ids::{
    AccountKeyBytes, DeviceId, GroupId, RecoveryCode, SessionToken, TotpSecret, UserId, Username,
};
pub use crate::pb::EntryKind;
use crate::pb::{self, server_frame::Body};
use crate::{ErrorCode, ProtoError, ServerFrameIn};

/// An account as the server describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub user_id: UserId,
    pub username: Username,
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub device_id: DeviceId,
    pub admin: bool,
    /// Unix seconds.
    pub created_at: i64,
}

impl Account {
    /// The wire form.
    pub fn to_pb(&self) -> pb::AccountInfo {
        pb::AccountInfo {
            user_id: self.user_id.as_bytes().to_vec().into(),
            username: self.username.to_string(),
            display_name: self.display_name.clone().unwrap_or_default(),
            email: self.email.clone().unwrap_or_default(),
            device_id: self.device_id.as_bytes().to_vec().into(),
            admin: self.admin,
            created_at: self.created_at,
        }
    }

    fn from_pb(a: Option<pb::AccountInfo>) -> Result<Self, ProtoError> {
        let a = a.ok_or_else(|| ProtoError::invalid("account", "missing"))?;
        Ok(Account {
            user_id: UserId::from_slice(&a.user_id)?,
            username: Username::parse(&a.username)?,
            display_name: crate::ids::parse_display_name(&a.display_name)?,
            email: crate::ids::parse_email(&a.email)?,
            device_id: DeviceId::from_slice(&a.device_id)?,
            admin: a.admin,
            created_at: a.created_at,
        })
    }
}

/// A validated server frame.
#[derive(Debug)]
pub struct ServerResponse {
    pub request_id: u64,
    pub body: Response,
}

/// An error the server reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    pub code: ErrorCode,
    pub message: String,
    pub fatal: bool,
    pub retry_after_secs: u32,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if self.retry_after_secs > 0 {
            write!(f, " (try again in {} s)", self.retry_after_secs)?;
        }
        Ok(())
    }
}

/// A key package the server handed out for one device.
#[derive(Debug, Clone)]
pub struct ClaimedKeyPackage {
    pub device: DeviceId,
    pub username: Username,
    pub key_package: bytes::Bytes,
    /// The account key the server publishes for `username`, if it has one.
    pub account_key: Option<AccountKeyBytes>,
}

/// A device and its owner as the server claims (P412, P543).
#[derive(Debug, Clone)]
pub struct DeviceOwner {
    pub device: DeviceId,
    pub username: Username,
    pub account_key: Option<AccountKeyBytes>,
    /// P547: the account key's revocation of this device (64 bytes), when revoked.
    pub revocation: Option<bytes::Bytes>,
}

/// One of this account's devices (P546).
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    pub device: DeviceId,
    pub name: Option<String>,
    pub created_at: i64,
    pub last_seen: Option<i64>,
    pub current: bool,
}

fn optional_key(raw: &[u8]) -> Result<Option<AccountKeyBytes>, ProtoError> {
    if raw.is_empty() {
        Ok(None)
    } else {
        AccountKeyBytes::from_slice(raw).map(Some)
    }
}

/// One entry of this device's mailbox.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: u64,
    pub group_id: GroupId,
    pub kind: EntryKind,
    pub payload: bytes::Bytes,
    pub sender_device: DeviceId,
    pub group_seq: u64,
    pub stored_at_ms: i64,
}

impl Entry {
    pub fn to_pb(&self) -> pb::MailboxEntry {
        pb::MailboxEntry {
            id: self.id,
            group_id: self.group_id.as_bytes().to_vec().into(),
            kind: self.kind.into(),
            payload: self.payload.clone(),
            sender_device: self.sender_device.as_bytes().to_vec().into(),
            group_seq: self.group_seq,
            stored_at_ms: self.stored_at_ms,
        }
    }

    fn from_pb(e: pb::MailboxEntry) -> Result<Self, ProtoError> {
        let kind = EntryKind::try_from(e.kind)
            .ok()
            .filter(|k| *k != EntryKind::Unspecified)
            .ok_or_else(|| ProtoError::invalid("kind", "unknown mailbox entry kind"))?;
        Ok(Entry {
            id: e.id,
            group_id: GroupId::from_slice(&e.group_id)?,
            kind,
            payload: e.payload,
            sender_device: DeviceId::from_slice(&e.sender_device)?,
            group_seq: e.group_seq,
            stored_at_ms: e.stored_at_ms,
        })
    }
}

#[non_exhaustive]
pub enum Response {
    HelloOk {
        version: u32,
        server: String,
        registration: String,
    },
    Error(ServerError),
    RegisterChallenge(RegistrationResponse<OpaqueSuite>),
    Registered {
        account: Account,
        token: SessionToken,
    },
    LoginChallenge(Box<CredentialResponse<OpaqueSuite>>),
    LoggedIn {
        account: Account,
        token: SessionToken,
        account_key: AccountKeyBytes,
        sealed_account_key: bytes::Bytes,
    },
    Authenticated(Account),
    Account(Account),
    LoggedOut,
    Pong(bytes::Bytes),
    KeyPackageCount(u32),
    KeyPackages(Vec<ClaimedKeyPackage>),
    GroupCreated {
        epoch: u64,
    },
    DirectGroup(Option<(GroupId, u64)>),
    CommitAccepted {
        epoch: u64,
        group_seq: u64,
    },
    Sent {
        group_seq: u64,
        stored_at_ms: i64,
        /// P450: recipients whose full mailbox did not take the message.
        undelivered: Vec<DeviceId>,
    },
    Mailbox {
        entries: Vec<Entry>,
        /// P450: messages this device missed (full mailbox, expiry) not yet noted.
        missed: u32,
        /// More entries follow this page.
        more: bool,
    },
    /// P443: entries pushed to a following connection.
    Delivery {
        entries: Vec<Entry>,
        missed: u32,
        more: bool,
    },
    Acked,
    Devices(Vec<DeviceOwner>),
    MyDevices(Vec<DeviceInfo>),
    DeviceRevoked,
    /// P461: held invitations, one per inviter.
    Requests(Vec<PendingRequest>),
    RequestAnswered,
    MailboxChanged,
    ShutdownStarted,
    /// P333: the pending secret for the authenticator app.
    TotpSecret(TotpSecret),
    /// P333: two-factor login is on; each recovery code works once.
    TotpEnabled(Vec<RecoveryCode>),
    TotpDisabled,
    /// P553: the channel's current GroupInfo (none: the lobby is to be created).
    ChannelJoin {
        group_id: Option<GroupId>,
        epoch: u64,
        group_info: Option<bytes::Bytes>,
    },
    /// P554: the server's channels.
    Channels(Vec<ChannelSummary>),
    ChannelUpdated,
    ChannelDeleted,
    /// P560: room for the file is reserved.
    FileCreated {
        file_id: crate::ids::FileId,
        max_piece: u32,
    },
    /// P561: bytes held durably so far.
    FileUploaded {
        received: u64,
        complete: bool,
    },
    FileInfo {
        size: u64,
        received: u64,
        complete: bool,
    },
    /// P562: sealed bytes from `offset`.
    FileData {
        offset: u64,
        data: bytes::Bytes,
    },
    FileFetched,
    FileDeleted,
    /// P570: `head` is `None` when there is no backup yet.
    BackupInfo(BackupSummary),
    BackupKeysSet,
    BackupAppended {
        count: u64,
    },
    /// P573: in the order the server gives them (the client checks it).
    BackupChunks(Vec<(u64, bytes::Bytes)>),
    /// P535.
    GroupInfoKept,
    /// P536: (group, epoch, sealed GroupInfo); the client opens and checks each.
    GroupInfos(Vec<(crate::ids::GroupId, u64, bytes::Bytes)>),
}

/// P570: what the server holds of a user's backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    pub count: u64,
    pub head: Option<bytes::Bytes>,
    pub bytes: u64,
    pub updated_at_ms: i64,
    pub wrapped_password: Option<bytes::Bytes>,
    pub wrapped_recovery: Option<bytes::Bytes>,
}

/// One channel as listed (P554).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSummary {
    pub name: crate::content::GroupName,
    pub members: u32,
    pub password: bool,
    pub totp: bool,
    pub lobby: bool,
}

/// Invitations held from one user (P461).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRequest {
    pub inviter: Username,
    pub groups: u32,
    pub since_ms: i64,
}

impl Response {
    pub fn kind(&self) -> &'static str {
        match self {
            Response::HelloOk { .. } => "hello_ok",
            Response::Error(_) => "error",
            Response::RegisterChallenge(_) => "register_challenge",
            Response::Registered { .. } => "registered",
            Response::LoginChallenge(_) => "login_challenge",
            Response::LoggedIn { .. } => "logged_in",
            Response::Authenticated(_) => "authenticated",
            Response::Account(_) => "account",
            Response::LoggedOut => "logged_out",
            Response::Pong(_) => "pong",
            Response::KeyPackageCount(_) => "key_package_count",
            Response::KeyPackages(_) => "key_packages",
            Response::GroupCreated { .. } => "group_created",
            Response::DirectGroup(_) => "direct_group",
            Response::CommitAccepted { .. } => "commit_accepted",
            Response::Sent { .. } => "sent",
            Response::Mailbox { .. } => "mailbox",
            Response::Delivery { .. } => "delivery",
            Response::Acked => "acked",
            Response::Devices(_) => "devices",
            Response::MailboxChanged => "mailbox_changed",
            Response::ShutdownStarted => "shutdown_started",
            Response::MyDevices(_) => "my_devices",
            Response::DeviceRevoked => "device_revoked",
            Response::Requests(_) => "requests",
            Response::RequestAnswered => "request_answered",
            Response::TotpSecret(_) => "totp_secret",
            Response::TotpEnabled(_) => "totp_enabled",
            Response::TotpDisabled => "totp_disabled",
            Response::ChannelJoin { .. } => "channel_join",
            Response::Channels(_) => "channels",
            Response::ChannelUpdated => "channel_updated",
            Response::ChannelDeleted => "channel_deleted",
            Response::FileCreated { .. } => "file_created",
            Response::FileUploaded { .. } => "file_uploaded",
            Response::FileInfo { .. } => "file_info",
            Response::FileData { .. } => "file_data",
            Response::FileFetched => "file_fetched",
            Response::FileDeleted => "file_deleted",
            Response::BackupInfo(_) => "backup_info",
            Response::BackupKeysSet => "backup_keys_set",
            Response::BackupAppended { .. } => "backup_appended",
            Response::BackupChunks(_) => "backup_chunks",
            Response::GroupInfoKept => "group_info_kept",
            Response::GroupInfos(_) => "group_infos",
        }
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Response::Error(e) => write!(f, "Response::Error({e:?})"),
            other => write!(f, "Response::{}", other.kind()),
        }
    }
}

/// A page of mailbox entries, each validated.
fn entries_in(entries: Vec<pb::MailboxEntry>) -> Result<Vec<Entry>, ProtoError> {
    entries.into_iter().map(Entry::from_pb).collect()
}

/// Validates a decoded server frame.
pub fn validate(frame: ServerFrameIn) -> Result<ServerResponse, ProtoError> {
    let body = match frame.body.ok_or(ProtoError::Empty)? {
        Body::HelloOk(pb::HelloOk {
            version,
            server,
            registration,
        }) => Response::HelloOk {
            version,
            server,
            registration,
        },
        Body::Error(pb::Error {
            code,
            message,
            fatal,
            retry_after_secs,
        }) => Response::Error(ServerError {
            code: ErrorCode::try_from(code).unwrap_or(ErrorCode::Unspecified),
            message: message
                .chars()
                .filter(|c| !c.is_control())
                .take(512)
                .collect(),
            fatal,
            retry_after_secs,
        }),
        Body::RegisterChallenge(pb::RegisterChallenge {
            registration_response,
        }) => Response::RegisterChallenge(
            RegistrationResponse::deserialize(&registration_response).map_err(|_| {
                ProtoError::invalid("registration_response", "is not a valid OPAQUE message")
            })?,
        ),
        Body::Registered(pb::Registered {
            account,
            session_token,
        }) => Response::Registered {
            account: Account::from_pb(account)?,
            token: SessionToken::from_slice(&session_token)?,
        },
        Body::LoginChallenge(pb::LoginChallenge {
            credential_response,
        }) => Response::LoginChallenge(Box::new(
            CredentialResponse::deserialize(&credential_response).map_err(|_| {
                ProtoError::invalid("credential_response", "is not a valid OPAQUE message")
            })?,
        )),
        Body::LoggedIn(pb::LoggedIn {
            account,
            session_token,
            account_key,
            sealed_account_key,
        }) => Response::LoggedIn {
            account: Account::from_pb(account)?,
            token: SessionToken::from_slice(&session_token)?,
            account_key: AccountKeyBytes::from_slice(&account_key)?,
            sealed_account_key: if sealed_account_key.is_empty()
                || sealed_account_key.len() > crate::request::MAX_SEALED_KEY
            {
                return Err(ProtoError::invalid(
                    "sealed_account_key",
                    "must be 1 to 256 bytes",
                ));
            } else {
                sealed_account_key
            },
        },
        Body::Authenticated(pb::Authenticated { account }) => {
            Response::Authenticated(Account::from_pb(account)?)
        }
        Body::Account(a) => Response::Account(Account::from_pb(Some(a))?),
        Body::LoggedOut(pb::LoggedOut {}) => Response::LoggedOut,
        Body::Pong(pb::Pong { payload }) => Response::Pong(payload),
        Body::KeyPackageCount(pb::KeyPackageCount { remaining }) => {
            Response::KeyPackageCount(remaining)
        }
        Body::KeyPackages(pb::KeyPackages { packages }) => Response::KeyPackages(
            packages
                .into_iter()
                .map(|p| {
                    Ok(ClaimedKeyPackage {
                        device: DeviceId::from_slice(&p.device_id)?,
                        username: Username::parse(&p.username)?,
                        key_package: p.key_package,
                        account_key: optional_key(&p.account_key)?,
                    })
                })
                .collect::<Result<_, ProtoError>>()?,
        ),
        Body::GroupCreated(pb::GroupCreated { epoch }) => Response::GroupCreated { epoch },
        Body::DirectGroup(pb::DirectGroup { group_id, epoch }) => {
            Response::DirectGroup(if group_id.is_empty() {
                None
            } else {
                Some((GroupId::from_slice(&group_id)?, epoch))
            })
        }
        Body::CommitAccepted(pb::CommitAccepted { epoch, group_seq }) => {
            Response::CommitAccepted { epoch, group_seq }
        }
        Body::Sent(pb::Sent {
            group_seq,
            stored_at_ms,
            undelivered,
        }) => Response::Sent {
            group_seq,
            stored_at_ms,
            undelivered: undelivered
                .iter()
                .map(|d| DeviceId::from_slice(d))
                .collect::<Result<_, _>>()?,
        },
        Body::Mailbox(pb::Mailbox {
            entries,
            missed,
            more,
        }) => Response::Mailbox {
            entries: entries_in(entries)?,
            missed,
            more,
        },
        Body::Delivery(pb::Mailbox {
            entries,
            missed,
            more,
        }) => Response::Delivery {
            entries: entries_in(entries)?,
            missed,
            more,
        },
        Body::Acked(pb::Acked {}) => Response::Acked,
        Body::Devices(pb::Devices { devices }) => Response::Devices(
            devices
                .into_iter()
                .map(|d| {
                    Ok(DeviceOwner {
                        device: DeviceId::from_slice(&d.device_id)?,
                        username: Username::parse(&d.username)?,
                        account_key: optional_key(&d.account_key)?,
                        revocation: match d.revocation.len() {
                            0 => None,
                            64 => Some(d.revocation),
                            _ => {
                                return Err(ProtoError::invalid("revocation", "must be 64 bytes"));
                            }
                        },
                    })
                })
                .collect::<Result<_, ProtoError>>()?,
        ),
        Body::MyDevices(pb::MyDevices { devices }) => Response::MyDevices(
            devices
                .into_iter()
                .map(|d| {
                    Ok(DeviceInfo {
                        device: DeviceId::from_slice(&d.device_id)?,
                        name: (!d.name.is_empty()).then_some(d.name),
                        created_at: d.created_at,
                        last_seen: (d.last_seen > 0).then_some(d.last_seen),
                        current: d.current,
                    })
                })
                .collect::<Result<_, ProtoError>>()?,
        ),
        Body::DeviceRevoked(pb::DeviceRevoked {}) => Response::DeviceRevoked,
        Body::Requests(pb::Requests { requests }) => Response::Requests(
            requests
                .into_iter()
                .map(|r| {
                    Ok(PendingRequest {
                        inviter: Username::parse(&r.inviter)?,
                        groups: r.groups,
                        since_ms: r.since_ms,
                    })
                })
                .collect::<Result<_, ProtoError>>()?,
        ),
        Body::RequestAnswered(pb::RequestAnswered {}) => Response::RequestAnswered,
        Body::MailboxChanged(pb::MailboxChanged {}) => Response::MailboxChanged,
        Body::ShutdownStarted(pb::ShutdownStarted {}) => Response::ShutdownStarted,
        Body::TotpSecret(pb::TotpSecret { secret }) => {
            Response::TotpSecret(TotpSecret::from_slice(&secret)?)
        }
        Body::TotpEnabled(pb::TotpEnabled { recovery_codes }) => {
            if recovery_codes.len() > 64 {
                return Err(ProtoError::invalid("recovery_codes", "at most 64"));
            }
            Response::TotpEnabled(
                recovery_codes
                    .iter()
                    .map(|c| RecoveryCode::parse(c))
                    .collect::<Result<_, _>>()?,
            )
        }
        Body::TotpDisabled(pb::TotpDisabled {}) => Response::TotpDisabled,
        Body::ChannelJoin(pb::ChannelJoin {
            group_id,
            epoch,
            group_info,
            create,
        }) => {
            if create {
                Response::ChannelJoin {
                    group_id: None,
                    epoch: 0,
                    group_info: None,
                }
            } else {
                if group_info.is_empty() || group_info.len() > crate::frame::MAX_ENTRY_PAYLOAD {
                    return Err(ProtoError::invalid("group_info", "missing or too large"));
                }
                Response::ChannelJoin {
                    group_id: Some(GroupId::from_slice(&group_id)?),
                    epoch,
                    group_info: Some(group_info),
                }
            }
        }
        Body::Channels(pb::Channels { channels }) => {
            if channels.len() > 10_000 {
                return Err(ProtoError::invalid("channels", "at most 10,000"));
            }
            Response::Channels(
                channels
                    .into_iter()
                    .map(|c| {
                        Ok(ChannelSummary {
                            name: crate::content::GroupName::parse(&c.name)?,
                            members: c.members,
                            password: c.password,
                            totp: c.totp,
                            lobby: c.lobby,
                        })
                    })
                    .collect::<Result<_, ProtoError>>()?,
            )
        }
        Body::ChannelUpdated(pb::ChannelUpdated {}) => Response::ChannelUpdated,
        Body::ChannelDeleted(pb::ChannelDeleted {}) => Response::ChannelDeleted,
        Body::FileCreated(pb::FileCreated { file_id, max_piece }) => {
            if max_piece == 0 || max_piece as usize > crate::request::MAX_FILE_PIECE {
                return Err(ProtoError::invalid("max_piece", "out of range"));
            }
            Response::FileCreated {
                file_id: crate::ids::FileId::from_slice(&file_id)?,
                max_piece,
            }
        }
        Body::FileUploaded(pb::FileUploaded { received, complete }) => {
            Response::FileUploaded { received, complete }
        }
        Body::FileInfo(pb::FileInfo {
            size,
            received,
            complete,
        }) => {
            if received > size {
                return Err(ProtoError::invalid("received", "more than the size"));
            }
            Response::FileInfo {
                size,
                received,
                complete,
            }
        }
        Body::FileData(pb::FileData { offset, data }) => {
            if data.len() > crate::request::MAX_FILE_PIECE {
                return Err(ProtoError::invalid("data", "longer than a piece"));
            }
            Response::FileData { offset, data }
        }
        Body::FileFetched(pb::FileFetchedOk {}) => Response::FileFetched,
        Body::FileDeleted(pb::FileDeleted {}) => Response::FileDeleted,
        Body::BackupInfo(pb::BackupInfo {
            count,
            head,
            bytes,
            updated_at_ms,
            wrapped_password,
            wrapped_recovery,
        }) => {
            use crate::request::{BACKUP_HEAD_LEN, MAX_WRAPPED_KEY};
            let head = match (count, head.len()) {
                (0, 0) => None,
                (_, BACKUP_HEAD_LEN) => Some(head),
                _ => return Err(ProtoError::invalid("head", "malformed backup head")),
            };
            let wrapped = |field, b: bytes::Bytes| {
                if b.len() > MAX_WRAPPED_KEY {
                    Err(ProtoError::invalid(field, "too long"))
                } else {
                    Ok((!b.is_empty()).then_some(b))
                }
            };
            Response::BackupInfo(BackupSummary {
                count,
                head,
                bytes,
                updated_at_ms,
                wrapped_password: wrapped("wrapped_password", wrapped_password)?,
                wrapped_recovery: wrapped("wrapped_recovery", wrapped_recovery)?,
            })
        }
        Body::BackupKeysSet(pb::BackupKeysSet {}) => Response::BackupKeysSet,
        Body::BackupAppended(pb::BackupAppended { count }) => Response::BackupAppended { count },
        Body::BackupChunks(pb::BackupChunks { chunks }) => Response::BackupChunks(
            chunks
                .into_iter()
                .map(|c| {
                    if c.data.is_empty() || c.data.len() > crate::request::MAX_BACKUP_CHUNK {
                        Err(ProtoError::invalid("chunks", "a chunk out of range"))
                    } else {
                        Ok((c.index, c.data))
                    }
                })
                .collect::<Result<_, _>>()?,
        ),
        Body::GroupInfoKept(pb::GroupInfoKept {}) => Response::GroupInfoKept,
        Body::GroupInfos(pb::GroupInfos { infos }) => Response::GroupInfos(
            infos
                .into_iter()
                .map(|i| {
                    if i.sealed.is_empty() || i.sealed.len() > crate::frame::MAX_ENTRY_PAYLOAD {
                        return Err(ProtoError::invalid(
                            "infos",
                            "a sealed GroupInfo out of range",
                        ));
                    }
                    Ok((
                        crate::ids::GroupId::from_slice(&i.group_id)?,
                        i.epoch,
                        i.sealed,
                    ))
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    Ok(ServerResponse {
        request_id: frame.request_id,
        body,
    })
}
