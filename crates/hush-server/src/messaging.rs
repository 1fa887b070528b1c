//! Key packages, groups and mailboxes: the relay's part of end-to-end encrypted
//! messaging. Application messages are opaque MLS ciphertext; handshakes (commits and
//! proposals) are MLS PublicMessages the server checks against each group's public
//! state before it moves an epoch or changes who receives a group's traffic (P438,
//! `hush_crypto::relay`). The server never sees message content (docs/protocol.md §4).
use std::collections::{BTreeSet, HashSet};

use bytes::Bytes;
use hush_proto::ErrorCode;
use hush_proto::content::GroupName;
use hush_proto::ids::{DeviceId, GroupId, HandshakeKey, MessageId, Username};
use hush_proto::pb::{self, server_frame::Body};
use hush_store::{NewCommit, NewGroup, NewMessage, StoreError};

use crate::ServerState;
use crate::accounts::{Authenticated, Refusal};

/// Most one-time key packages a device may keep on the server (P410).
pub const MAX_STORED_KEY_PACKAGES: u32 = 500;

/// The bytes a fetch answer may spend on entries (payloads plus
/// `ENTRY_OVERHEAD` each) under this server's frame limit (P440).
pub fn answer_budget(st: &ServerState) -> usize {
    st.config
        .limits
        .max_frame_len
        .saturating_sub(hush_proto::frame::ANSWER_ROOM)
}

/// Refuses a payload that could not be fetched again under the frame limit.
fn fits(st: &ServerState, what: &str, len: usize) -> Result<(), Refusal> {
    let max = answer_budget(st).saturating_sub(hush_proto::frame::ENTRY_OVERHEAD);
    if len > max {
        tracing::info!(what, len, max, "refused an oversized payload");
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            format!("the {what} is {len} bytes; this server takes at most {max}"),
        ));
    }
    Ok(())
}

/// P410: stores a device's key packages.
pub async fn publish_key_packages(
    st: &ServerState,
    auth: &Authenticated,
    packages: Vec<Bytes>,
    last_resort: Option<Bytes>,
) -> Result<Body, Refusal> {
    writable(st)?;
    let remaining = st
        .store
        .publish_key_packages(
            auth.device_id,
            packages.into_iter().map(|p| p.to_vec()).collect(),
            last_resort.map(|p| p.to_vec()),
            MAX_STORED_KEY_PACKAGES,
        )
        .await
        .map_err(|e| match e {
            hush_store::StoreError::QuotaExceeded { .. } => Refusal::new(
                ErrorCode::InvalidArgument,
                format!("a device may keep at most {MAX_STORED_KEY_PACKAGES} key packages"),
            ),
            other => other.into(),
        })?;
    Ok(Body::KeyPackageCount(pb::KeyPackageCount { remaining }))
}

pub async fn key_package_status(st: &ServerState, auth: &Authenticated) -> Result<Body, Refusal> {
    let remaining = st.store.key_package_count(auth.device_id).await?;
    Ok(Body::KeyPackageCount(pb::KeyPackageCount { remaining }))
}

/// P411: one key package per device of each user (each user once, however often the
/// request names it), rate limited per claiming device by the packages handed out.
pub async fn claim_key_packages(
    st: &ServerState,
    auth: &Authenticated,
    usernames: Vec<Username>,
) -> Result<Body, Refusal> {
    let now = st.clock.now_unix();
    if let Err(wait) = st.claims.check(&auth.device_id, now) {
        tracing::info!(device = %auth.device_id, "refused a key package claim: rate limit");
        return Err(Refusal {
            code: ErrorCode::RateLimited,
            message: "too many key package requests".into(),
            retry_after_secs: wait,
        });
    }
    let mut seen = HashSet::new();
    let usernames: Vec<Username> = usernames
        .into_iter()
        .filter(|u| seen.insert(u.clone()))
        .collect();
    // Every name is resolved before anything is consumed: an unknown one fails the
    // whole request.
    let mut users = Vec::with_capacity(usernames.len());
    for name in usernames {
        let user = st
            .store
            .user_by_name(&name)
            .await?
            .filter(|u| !u.disabled)
            .ok_or_else(|| Refusal::new(ErrorCode::NotFound, format!("no user named {name}")))?;
        users.push(user);
    }
    // One account may name one other user in a claim a bounded number of times an hour,
    // so it cannot drain that user's one-time packages (its own devices do not count).
    for u in users.iter().filter(|u| u.user_id != auth.user_id) {
        if let Err(wait) = st
            .claims_per_target
            .try_record(&(auth.user_id, u.user_id), now)
        {
            tracing::info!(device = %auth.device_id, target = %u.username, "refused a key package claim: too many for one user");
            return Err(Refusal {
                code: ErrorCode::RateLimited,
                message: format!("too many key package requests for {}", u.username),
                retry_after_secs: wait,
            });
        }
    }
    let ids: Vec<_> = users.iter().map(|u| u.user_id).collect();
    let claimed = st.store.claim_key_packages(&ids).await?;
    let packages: Vec<pb::DeviceKeyPackage> = claimed
        .into_iter()
        .filter_map(|c| {
            let owner = users.iter().find(|u| u.user_id == c.user)?;
            Some(pb::DeviceKeyPackage {
                device_id: c.device.as_bytes().to_vec().into(),
                username: owner.username.to_string(),
                key_package: c.package.into(),
                account_key: key_bytes(owner.account_key),
            })
        })
        .collect();
    st.claims
        .record_many(&auth.device_id, now, packages.len() as u32);
    Ok(Body::KeyPackages(pb::KeyPackages { packages }))
}

/// P413: every device of these users (for a user's devices to adopt new ones), and
/// P547: the devices each revoked, with the account key's statements.
pub async fn list_devices(st: &ServerState, usernames: Vec<Username>) -> Result<Body, Refusal> {
    let mut devices = Vec::new();
    for name in usernames {
        let user =
            st.store.user_by_name(&name).await?.ok_or_else(|| {
                Refusal::new(ErrorCode::NotFound, format!("no user named {name}"))
            })?;
        let account_key = key_bytes(user.account_key);
        for d in st.store.devices_of(user.user_id).await? {
            devices.push(pb::DeviceOwner {
                device_id: d.as_bytes().to_vec().into(),
                username: name.to_string(),
                account_key: account_key.clone(),
                revocation: Bytes::new(),
            });
        }
        for (d, statement) in st.store.revocations(user.user_id).await? {
            devices.push(pb::DeviceOwner {
                device_id: d.as_bytes().to_vec().into(),
                username: name.to_string(),
                account_key: account_key.clone(),
                revocation: statement.into(),
            });
        }
    }
    Ok(Body::Devices(pb::Devices { devices }))
}

pub async fn lookup_devices(st: &ServerState, devices: Vec<DeviceId>) -> Result<Body, Refusal> {
    let owners = st.store.device_owners(&devices).await?;
    Ok(Body::Devices(pb::Devices {
        devices: owners
            .into_iter()
            .map(|o| pb::DeviceOwner {
                device_id: o.device.as_bytes().to_vec().into(),
                username: o.username.to_string(),
                account_key: key_bytes(o.account_key),
                revocation: Bytes::new(),
            })
            .collect(),
    }))
}

/// The wire form of a published account key (empty for accounts without one).
fn key_bytes(key: Option<[u8; 32]>) -> Bytes {
    key.map(|k| Bytes::copy_from_slice(&k)).unwrap_or_default()
}

/// P546: this account's devices.
pub async fn list_my_devices(st: &ServerState, auth: &Authenticated) -> Result<Body, Refusal> {
    let devices = st.store.device_records(auth.user_id).await?;
    Ok(Body::MyDevices(pb::MyDevices {
        devices: devices
            .into_iter()
            .map(|d| pb::DeviceInfo {
                device_id: d.device_id.as_bytes().to_vec().into(),
                name: d.name.unwrap_or_default(),
                created_at: d.created_at,
                last_seen: d.last_seen.unwrap_or(0),
                current: d.device_id == auth.device_id,
            })
            .collect(),
    }))
}

/// P535: keeps a member device's sealed GroupInfo for its user's other devices. The
/// server cannot open it; it only checks membership and size.
pub async fn put_group_info(
    st: &ServerState,
    auth: &Authenticated,
    group: GroupId,
    epoch: u64,
    sealed: Bytes,
) -> Result<Body, Refusal> {
    writable(st)?;
    fits(st, "GroupInfo", sealed.len())?;
    st.store
        .put_group_info(auth.device_id, group, epoch, sealed.to_vec())
        .await
        .map_err(|e| refused(st, auth, "group info", e))?;
    Ok(Body::GroupInfoKept(pb::GroupInfoKept {}))
}

/// P537: the user's sealed GroupInfo of one group, for a device that fell behind in it.
pub async fn group_info(
    st: &ServerState,
    auth: &Authenticated,
    group: GroupId,
) -> Result<Body, Refusal> {
    let info = st.store.group_info(auth.user_id, group).await?;
    Ok(Body::GroupInfos(pb::GroupInfos {
        infos: info
            .into_iter()
            .map(|(epoch, sealed)| pb::SealedGroupInfo {
                group_id: group.as_bytes().to_vec().into(),
                epoch,
                sealed: sealed.into(),
            })
            .collect(),
    }))
}

/// P536: the user's sealed GroupInfos of the groups this device is not in yet, for it
/// to join from.
pub async fn group_infos(st: &ServerState, auth: &Authenticated) -> Result<Body, Refusal> {
    let infos = st.store.group_infos(auth.device_id).await?;
    Ok(Body::GroupInfos(pb::GroupInfos {
        infos: infos
            .into_iter()
            .map(|(g, epoch, sealed)| pb::SealedGroupInfo {
                group_id: g.as_bytes().to_vec().into(),
                epoch,
                sealed: sealed.into(),
            })
            .collect(),
    }))
}

/// P546: deletes another device of this account; its open sessions end at once.
pub async fn revoke_device(
    st: &ServerState,
    auth: &Authenticated,
    device: DeviceId,
    revocation: Option<Bytes>,
) -> Result<Body, Refusal> {
    if device == auth.device_id {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            "this is the device you are using; log out instead",
        ));
    }
    let mine = st.store.devices_of(auth.user_id).await?;
    if !mine.contains(&device) {
        return Err(Refusal::new(
            ErrorCode::NotFound,
            format!("this account has no device {device}"),
        ));
    }
    // P547: the account key's statement is kept (before the device goes, so a crash
    // between leaves the safe side) and handed to everyone who lists the devices.
    let account = st
        .store
        .user_by_name(&auth.username)
        .await?
        .and_then(|u| u.account_key)
        .and_then(|k| hush_crypto::account::AccountPublicKey::from_slice(&k).ok());
    if let Some(account) = account {
        let Some(statement) = revocation.filter(|r| account.revoked(device, r)) else {
            tracing::info!(user = %auth.username, %device, "refused a revocation the account key did not sign");
            return Err(Refusal::new(
                ErrorCode::InvalidArgument,
                "a revocation must be signed by this account's key",
            ));
        };
        st.store
            .add_revocation(auth.user_id, device, statement.to_vec())
            .await?;
    }
    st.store.remove_device(device).await?;
    st.hub.revoke(device);
    tracing::debug!(user = %auth.username, %device, "device revoked");
    Ok(Body::DeviceRevoked(pb::DeviceRevoked {}))
}

/// A validated `CreateGroup` request.
pub struct CreateIn {
    pub client_key: Option<HandshakeKey>,
    pub group_id: GroupId,
    pub name: Option<GroupName>,
    pub direct_peer: Option<Username>,
    pub welcome: Option<Bytes>,
    pub members: Vec<DeviceId>,
    pub channel: Option<hush_proto::request::ChannelSettings>,
    pub group_info: Option<Bytes>,
}

/// A refusal of a handshake the server could not verify (P438), logged with its reason.
fn unverified(auth: &Authenticated, group: GroupId, e: hush_crypto::CryptoError) -> Refusal {
    tracing::info!(device = %auth.device_id, %group, reason = %e, "refused a handshake that does not verify");
    Refusal::new(
        ErrorCode::InvalidArgument,
        format!("the handshake does not verify: {e}"),
    )
}

/// Runs openmls off the async workers: a big group's tree takes a while to check.
async fn checked<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, hush_crypto::CryptoError> + Send + 'static,
) -> Result<Result<T, hush_crypto::CryptoError>, Refusal> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        tracing::error!(error = %e, "a handshake check failed to run");
        Refusal::new(ErrorCode::Internal, "internal error")
    })
}

/// P420–P421: registers a group and queues its Welcome. P438: with the GroupInfo of
/// its first epoch, the group's public state is kept and `members` must be its leaves.
pub async fn create_group(
    st: &ServerState,
    auth: &Authenticated,
    g: CreateIn,
) -> Result<Body, Refusal> {
    let CreateIn {
        client_key,
        group_id,
        name,
        direct_peer,
        welcome,
        members,
        channel,
        group_info,
    } = g;
    writable(st)?;
    crate::channels::check_lobby(st, name.as_ref(), channel.is_some())?;
    if !members.contains(&auth.device_id) {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            "members must include this device",
        ));
    }
    fits(st, "Welcome", welcome.as_ref().map_or(0, |w| w.len()))?;
    // A channel's GroupInfo (P552) is the group's first one: checked like it.
    let group_info = match (group_info, channel.as_ref().map(|c| &c.group_info)) {
        (Some(g), Some(c)) if g != *c => {
            return Err(Refusal::new(
                ErrorCode::InvalidArgument,
                "a channel's GroupInfo is the group's GroupInfo",
            ));
        }
        (None, Some(c)) => Some(c.clone()),
        (g, _) => g,
    };
    let public_state = match group_info {
        None => None,
        Some(info) => {
            let v = checked(move || hush_crypto::relay::open_group_info(&info, group_id))
                .await?
                .map_err(|e| unverified(auth, group_id, e))?;
            let claimed: BTreeSet<DeviceId> = members.iter().copied().collect();
            if v.epoch != 1 || v.members != claimed {
                tracing::info!(device = %auth.device_id, group = %group_id, "refused a group whose GroupInfo does not match the request");
                return Err(Refusal::new(
                    ErrorCode::InvalidArgument,
                    "the GroupInfo must be of epoch 1, with exactly the group's members",
                ));
            }
            Some(v.state)
        }
    };
    let channel = match (&name, channel) {
        (Some(n), Some(c)) => Some(crate::channels::new_channel(st, auth, n, c).await?),
        _ => None,
    };
    let direct = match direct_peer {
        None => None,
        Some(peer) if peer == auth.username => {
            return Err(Refusal::new(
                ErrorCode::InvalidArgument,
                "a direct conversation needs another user",
            ));
        }
        Some(peer) => {
            let peer = st.store.user_by_name(&peer).await?.ok_or_else(|| {
                Refusal::new(ErrorCode::NotFound, format!("no user named {peer}"))
            })?;
            // P421: a direct group holds the devices of its two users only.
            let owners = st.store.device_owners(&members).await?;
            let allowed: HashSet<&str> = [auth.username.as_str(), peer.username.as_str()].into();
            if owners.len() != members.len()
                || owners
                    .iter()
                    .any(|o| !allowed.contains(o.username.as_str()))
            {
                return Err(Refusal::new(
                    ErrorCode::InvalidArgument,
                    "a direct conversation holds only its two users' devices",
                ));
            }
            Some((auth.user_id, peer.user_id))
        }
    };
    let done = st
        .store
        .create_group(NewGroup {
            group_id,
            creator: auth.device_id,
            direct,
            name: name.map(|n| n.bare().to_owned()),
            members,
            welcome: welcome.map(|w| w.to_vec()),
            now_ms: st.clock.now_ms(),
            client_key,
            quotas: st.config.limits.quotas(),
            channel,
            public_state,
        })
        .await
        .map_err(|e| refused(st, auth, "create a group", e))?;
    if !done.held.is_empty() {
        tracing::debug!(group = %group_id, devices = done.held.len(), "invitation held until answered");
    }
    tracing::debug!(device = %auth.device_id, group = %group_id, "group created");
    Ok(Body::GroupCreated(pb::GroupCreated { epoch: done.epoch }))
}

pub async fn find_direct(
    st: &ServerState,
    auth: &Authenticated,
    peer: Username,
) -> Result<Body, Refusal> {
    let peer = st
        .store
        .user_by_name(&peer)
        .await?
        .ok_or_else(|| Refusal::new(ErrorCode::NotFound, format!("no user named {peer}")))?;
    let found = match st.store.direct_group(auth.user_id, peer.user_id).await? {
        Some(g) => st.store.group(g).await?,
        None => None,
    };
    Ok(Body::DirectGroup(match found {
        Some(g) => pb::DirectGroup {
            group_id: g.group_id.as_bytes().to_vec().into(),
            epoch: g.epoch,
        },
        None => pb::DirectGroup::default(),
    }))
}

/// P422: the named group, for members and would-be members.
pub async fn find_group(st: &ServerState, name: GroupName) -> Result<Body, Refusal> {
    let found = match st.store.named_group(name.bare()).await? {
        Some(g) => st.store.group(g).await?,
        None => None,
    };
    Ok(Body::DirectGroup(match found {
        Some(g) => pb::DirectGroup {
            group_id: g.group_id.as_bytes().to_vec().into(),
            epoch: g.epoch,
        },
        None => pb::DirectGroup::default(),
    }))
}

/// A validated `Commit` request.
pub struct CommitIn {
    pub group_id: GroupId,
    pub epoch: u64,
    pub commit: Bytes,
    pub welcome: Option<Bytes>,
    pub added: Vec<DeviceId>,
    pub removed: Vec<DeviceId>,
    pub client_key: Option<HandshakeKey>,
    pub group_info: Option<Bytes>,
    pub external: bool,
    pub proposals: Vec<Bytes>,
    pub base_group_info: Option<Bytes>,
}

/// P438: checks a commit at the group's current epoch against the group's public
/// state (started from `base_group_info`, or a channel's GroupInfo, for a group made
/// before P438): the state after it, and the devices it really adds and removes, which
/// must be the ones the request names. `None` when the commit is for an epoch the
/// group has left: the store answers a retry of an accepted commit, or refuses it as
/// stale (epochs only grow, so it is never applied).
async fn verify_commit(
    st: &ServerState,
    auth: &Authenticated,
    c: &CommitIn,
) -> Result<Option<Vec<u8>>, Refusal> {
    let Some(group) = st.store.group(c.group_id).await? else {
        return Err(StoreError::GroupNotFound.into());
    };
    if c.epoch < group.epoch {
        return Ok(None);
    }
    if c.epoch > group.epoch {
        return Err(StoreError::StaleEpoch {
            current: group.epoch,
        }
        .into());
    }
    if !c.external && !group.members.contains(&auth.device_id) {
        return Err(StoreError::NotAMember.into());
    }
    let gid = c.group_id;
    let before: BTreeSet<DeviceId> = group.members.iter().copied().collect();
    let state = match st.store.public_state(gid).await? {
        Some(state) => state,
        None => {
            let base = match &c.base_group_info {
                Some(b) => b.to_vec(),
                // A channel's server holds its current GroupInfo already (P552).
                None if group.channel => {
                    channel_group_info(st, gid).await?.ok_or_else(needs_info)?
                }
                None => return Err(needs_info()),
            };
            let v = checked(move || hush_crypto::relay::open_group_info(&base, gid))
                .await?
                .map_err(|e| unverified(auth, gid, e))?;
            // Devices the server dropped (revoked) may still have leaves.
            if v.epoch != c.epoch || !before.is_subset(&v.members) {
                tracing::info!(device = %auth.device_id, group = %gid, "refused a GroupInfo that is not the group's current one");
                return Err(Refusal::new(
                    ErrorCode::InvalidArgument,
                    "the base GroupInfo must be of the group's current epoch, with exactly its members",
                ));
            }
            v.state
        }
    };
    let commit = c.commit.clone();
    let proposals = c.proposals.clone();
    let v = checked(move || {
        let proposals: Vec<&[u8]> = proposals.iter().map(|p| p.as_ref()).collect();
        hush_crypto::relay::check_commit(&state, gid, &commit, &proposals)
    })
    .await?
    .map_err(|e| unverified(auth, gid, e))?;
    let (added, removed) = (&v.added, &v.removed);
    let claimed = |l: &[DeviceId]| l.iter().copied().collect::<BTreeSet<_>>();
    // P537: a rejoin in place removes and adds its sender; the tree shows neither.
    let rejoin = c.external && c.removed == [auth.device_id];
    let routing = if rejoin {
        added.is_empty() && removed.is_empty() && v.members.contains(&auth.device_id)
    } else {
        claimed(added) == claimed(&c.added) && claimed(removed) == claimed(&c.removed)
    };
    let honest = v.sender == Some(auth.device_id)
        && v.external == c.external
        && v.epoch == c.epoch + 1
        && routing;
    if !honest {
        tracing::info!(device = %auth.device_id, group = %gid, "refused a commit whose routing header differs from what it does");
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            "the commit's added and removed devices (or its sender) are not what the commit does",
        ));
    }
    Ok(Some(v.state))
}

fn needs_info() -> Refusal {
    Refusal::new(
        ErrorCode::GroupInfoNeeded,
        "the server holds no public state of this group yet: send the commit again with the GroupInfo of its epoch",
    )
}

async fn channel_group_info(st: &ServerState, group: GroupId) -> Result<Option<Vec<u8>>, Refusal> {
    Ok(st
        .store
        .channels()
        .await?
        .into_iter()
        .find(|ch| ch.group_id == group)
        .map(|ch| ch.group_info))
}

/// P430, P433: a commit for the group's current epoch; a retry with the same client
/// key gets the first answer. P438: checked against the group's public state first.
pub async fn commit(st: &ServerState, auth: &Authenticated, c: CommitIn) -> Result<Body, Refusal> {
    writable(st)?;
    fits(st, "commit", c.commit.len())?;
    fits(st, "Welcome", c.welcome.as_ref().map_or(0, |w| w.len()))?;
    fits(
        st,
        "GroupInfo",
        c.group_info.as_ref().map_or(0, |w| w.len()),
    )?;
    if c.external && c.added != [auth.device_id] {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            "an external commit adds its sender alone",
        ));
    }
    // P552: a channel's commits keep its GroupInfo current for joiners.
    if c.group_info.is_none() && st.store.group(c.group_id).await?.is_some_and(|g| g.channel) {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            "a commit to a channel carries the GroupInfo of its new epoch",
        ));
    }
    let public_state = verify_commit(st, auth, &c).await?;
    let done = st
        .store
        .accept_commit(NewCommit {
            group_id: c.group_id,
            epoch: c.epoch,
            sender: auth.device_id,
            commit: c.commit.to_vec(),
            welcome: c.welcome.map(|w| w.to_vec()),
            added: c.added,
            removed: c.removed,
            now_ms: st.clock.now_ms(),
            client_key: c.client_key,
            quotas: st.config.limits.quotas(),
            group_info: c.group_info.map(|g| g.to_vec()),
            external: c.external,
            public_state,
        })
        .await
        .map_err(|e| refused(st, auth, "commit", e))?;
    Ok(Body::CommitAccepted(pb::CommitAccepted {
        epoch: done.epoch,
        group_seq: done.group_seq,
    }))
}

/// P431: an application message, durable in every recipient's mailbox before the
/// answer.
pub async fn send(
    st: &ServerState,
    auth: &Authenticated,
    group_id: GroupId,
    epoch: u64,
    ciphertext: Bytes,
    client_message_id: MessageId,
) -> Result<Body, Refusal> {
    writable(st)?;
    let max = st.config.limits.max_message_bytes;
    if ciphertext.len() > max {
        tracing::info!(device = %auth.device_id, len = ciphertext.len(), max, "refused an oversized message");
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            format!(
                "the message is {} bytes; this server takes at most {max}",
                ciphertext.len()
            ),
        ));
    }
    let done = st
        .store
        .enqueue_message(NewMessage {
            group_id,
            epoch,
            sender: auth.device_id,
            client_message_id: *client_message_id.as_bytes(),
            ciphertext: ciphertext.to_vec(),
            now_ms: st.clock.now_ms(),
            quotas: st.config.limits.quotas(),
        })
        .await
        .map_err(|e| refused(st, auth, "send", e))?;
    if !done.undelivered.is_empty() {
        tracing::info!(
            device = %auth.device_id,
            group = %group_id,
            skipped = done.undelivered.len(),
            "message not queued for devices with a full mailbox"
        );
    }
    Ok(Body::Sent(pb::Sent {
        group_seq: done.group_seq,
        stored_at_ms: done.stored_at_ms,
        undelivered: done
            .undelivered
            .iter()
            .map(|d| Bytes::copy_from_slice(d.as_bytes()))
            .collect(),
    }))
}

/// P440: this device's mailbox, oldest first.
pub async fn fetch(
    st: &ServerState,
    auth: &Authenticated,
    after_id: u64,
    limit: u32,
) -> Result<Body, Refusal> {
    Ok(Body::Mailbox(
        page(st, auth.device_id, after_id, limit).await?,
    ))
}

/// One page of `device`'s mailbox after `after_id`, as answered (P440) or pushed (P443).
pub async fn page(
    st: &ServerState,
    device: DeviceId,
    after_id: u64,
    limit: u32,
) -> Result<pb::Mailbox, Refusal> {
    let page = st
        .store
        .fetch_mailbox(device, after_id, limit, answer_budget(st))
        .await?;
    Ok(pb::Mailbox {
        entries: page.entries.iter().map(|e| e.to_pb()).collect(),
        missed: page.missed,
        more: page.more,
    })
}

/// P441: the device has stored these entries durably; the server forgets them.
pub async fn ack(
    st: &ServerState,
    auth: &Authenticated,
    ids: Vec<u64>,
    missed_seen: u32,
) -> Result<Body, Refusal> {
    st.store.ack(auth.device_id, &ids, missed_seen).await?;
    // P451: acks free room; a full disk may have enough again.
    st.reserve.recheck();
    Ok(Body::Acked(pb::Acked {}))
}

/// Logs why the store refused a write (a quota, a full disk) and turns it into the
/// answer; other failures are logged where they become refusals.
fn refused(
    st: &ServerState,
    auth: &Authenticated,
    what: &str,
    e: hush_store::StoreError,
) -> Refusal {
    use hush_store::StoreError as E;
    match &e {
        E::MailboxFull | E::QuotaExceeded { .. } => {
            tracing::info!(user = %auth.username, device = %auth.device_id, what, reason = %e, "refused: limit reached");
        }
        E::StorageFull => {
            tracing::error!(user = %auth.username, what, "refused: the server's storage is full");
            st.reserve.on_full();
        }
        _ => {}
    }
    e.into()
}

/// P451: while the disk is full, requests that store something are refused at once.
pub(crate) fn writable(st: &ServerState) -> Result<(), Refusal> {
    if st.reserve.is_full() {
        return Err(hush_store::StoreError::StorageFull.into());
    }
    Ok(())
}

/// P461: invitations held for this account.
pub async fn list_requests(st: &ServerState, auth: &Authenticated) -> Result<Body, Refusal> {
    let held = st.store.requests(auth.user_id).await?;
    Ok(Body::Requests(pb::Requests {
        requests: held
            .into_iter()
            .map(|r| pb::Request {
                inviter: r.inviter_name.to_string(),
                groups: r.groups,
                since_ms: r.since_ms,
            })
            .collect(),
    }))
}

/// P462: accepts or declines every invitation from `inviter`.
pub async fn answer_request(
    st: &ServerState,
    auth: &Authenticated,
    inviter: Username,
    accept: bool,
) -> Result<Body, Refusal> {
    let from = st
        .store
        .user_by_name(&inviter)
        .await?
        .ok_or_else(|| Refusal::new(ErrorCode::NotFound, format!("no user named {inviter}")))?;
    let pending = st.store.requests(auth.user_id).await?;
    if !pending.iter().any(|r| r.inviter == from.user_id) {
        return Err(Refusal::new(
            ErrorCode::NotFound,
            format!("{inviter} has no invitation waiting for you"),
        ));
    }
    // The store wakes the devices that got entries (P443).
    let woken = st
        .store
        .answer_request(auth.user_id, from.user_id, accept)
        .await?;
    tracing::debug!(user = %auth.username, %inviter, accept, devices = woken.len(), "answered an invitation");
    Ok(Body::RequestAnswered(pb::RequestAnswered {}))
}
