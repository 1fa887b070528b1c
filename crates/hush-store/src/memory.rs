//! An in-memory [`Store`]: the reference for the conformance suite and a fast store
//! for server tests. Nothing survives a restart.
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use hush_proto::ids::{DeviceId, GroupId, HandshakeKey, UserId, Username};
use hush_proto::response::{Entry, EntryKind};

use crate::{
    BackupRecord, ChannelRecord, ChannelUpdate, Claimed, Delivered, DeviceRecord, FileRecord,
    GroupRecord, HeldRequest, MailboxPage, NewBackupChunk, NewCommit, NewDevice, NewFile, NewGroup,
    NewInvite, NewMessage, NewUser, Owner, Pruned, Quota, Quotas, Session, Store, StoreError,
    TwoFactor, UserRecord, UserSummary,
};

/// One-time key packages, and the last-resort one.
type KeyPackages = (VecDeque<Vec<u8>>, Option<Vec<u8>>);

#[derive(Clone)]
struct Group {
    epoch: u64,
    next_seq: u64,
    members: BTreeSet<DeviceId>,
    created_by: Option<UserId>,
    created_at: i64,
    /// P438: the public MLS state.
    public_state: Option<Vec<u8>>,
}

/// Where one stored message went.
struct Enqueued {
    seq: u64,
    undelivered: Vec<DeviceId>,
    held: Vec<DeviceId>,
}

#[derive(Clone)]
struct Stored {
    group: GroupId,
    kind: EntryKind,
    sender: DeviceId,
    sender_user: Option<UserId>,
    seq: u64,
    payload: Vec<u8>,
    at: i64,
}

#[derive(Default, Clone)]
struct State {
    secrets: HashMap<String, Vec<u8>>,
    /// (kind, key) → failures in the window that began at the second value.
    failures: HashMap<(String, Vec<u8>), (u32, i64)>,
    users: HashMap<UserId, UserRecord>,
    devices: HashMap<DeviceId, (UserId, NewDevice)>,
    invites: HashMap<[u8; 32], NewInvite>,
    key_packages: HashMap<DeviceId, KeyPackages>,
    groups: HashMap<GroupId, Group>,
    direct: HashMap<(UserId, UserId), GroupId>,
    names: HashMap<String, GroupId>,
    messages: HashMap<u64, Stored>,
    /// Mailbox entry id → (device, message id); ordered, so per-device order holds.
    deliveries: BTreeMap<u64, (DeviceId, u64)>,
    next_id: u64,
    sent: HashMap<(DeviceId, [u8; 16]), Delivered>,
    /// P423, P433: handshake results by (sender, client key).
    handshakes: HashMap<(DeviceId, HandshakeKey), Delivered>,
    /// P412: who owned each device, kept after the device is gone.
    former_owners: HashMap<DeviceId, UserId>,
    last_seen: HashMap<DeviceId, i64>,
    /// P450: messages each device missed and has not noted.
    missed: HashMap<DeviceId, u32>,
    /// P460: (user, peer): user accepts Welcomes from peer.
    consent: std::collections::HashSet<(UserId, UserId)>,
    /// P460: held entry id → (device, group, message id, inviter, time).
    held: BTreeMap<u64, Held>,
    /// P330: (active secret, last step used, recovery digests) and pending secrets.
    two_factor: HashMap<UserId, TwoFactorState>,
    pending_totp: HashMap<UserId, Vec<u8>>,
    /// P550: channels by group.
    channels: HashMap<GroupId, Channel>,
    /// P553: (group, device) → grant expiry.
    channel_grants: HashMap<(GroupId, DeviceId), i64>,
    /// P553: channel code steps used, per (group, user).
    channel_steps: std::collections::HashSet<(GroupId, UserId, u64)>,
    /// P560: files by id.
    files: BTreeMap<hush_proto::ids::FileId, FileRecord>,
    /// P570: backups by user, with their chunks in order.
    backups: BTreeMap<UserId, (BackupRecord, Vec<Vec<u8>>)>,
    /// P535: sealed GroupInfos by (user, group), with their epoch.
    group_infos: BTreeMap<(UserId, GroupId), (u64, Vec<u8>)>,
    revocations: BTreeMap<(UserId, DeviceId), Vec<u8>>,
}

#[derive(Clone)]
struct Channel {
    name: String,
    password_hash: Option<String>,
    totp_secret: Option<Vec<u8>>,
    group_info: Vec<u8>,
    admins: Vec<UserId>,
}

/// An active two-factor login: secret, last step used, recovery code digests.
type TwoFactorState = (Vec<u8>, u64, Vec<[u8; 32]>);

#[derive(Clone, Copy)]
struct Held {
    device: DeviceId,
    group: GroupId,
    message: u64,
    inviter: UserId,
    at: i64,
}

fn pair(a: UserId, b: UserId) -> (UserId, UserId) {
    if a <= b { (a, b) } else { (b, a) }
}

impl State {
    fn channel_record(&self, group: GroupId) -> Option<ChannelRecord> {
        let c = self.channels.get(&group)?;
        let g = self.groups.get(&group)?;
        let users: BTreeSet<UserId> = g.members.iter().filter_map(|d| self.owner(*d)).collect();
        Some(ChannelRecord {
            group_id: group,
            name: c.name.clone(),
            password_hash: c.password_hash.clone(),
            totp_secret: c.totp_secret.clone(),
            group_info: c.group_info.clone(),
            epoch: g.epoch,
            admins: c.admins.clone(),
            members: u32::try_from(users.len()).unwrap_or(u32::MAX),
        })
    }

    fn user_id(&self, name: &Username) -> Result<UserId, StoreError> {
        self.users
            .values()
            .find(|u| &u.username == name)
            .map(|u| u.user_id)
            .ok_or(StoreError::UserNotFound)
    }

    /// Entries and payload bytes in a device's mailbox, held ones included.
    fn usage(&self, device: DeviceId) -> (u64, u64) {
        let delivered = self
            .deliveries
            .values()
            .filter(|(d, _)| *d == device)
            .map(|(_, m)| *m);
        let held = self
            .held
            .values()
            .filter(|h| h.device == device)
            .map(|h| h.message);
        delivered.chain(held).fold((0, 0), |(n, b), m| {
            let size = self.messages.get(&m).map_or(0, |m| m.payload.len() as u64);
            (n + 1, b + size)
        })
    }

    fn owner(&self, device: DeviceId) -> Option<UserId> {
        self.former_owners.get(&device).copied()
    }

    /// P460: whether `user` takes Welcomes from `sender` for `group` without asking.
    fn accepts_welcomes(&self, user: UserId, sender: UserId, group: GroupId) -> bool {
        if user == sender || self.consent.contains(&(user, sender)) {
            return true;
        }
        let direct: Vec<GroupId> = self.direct.values().copied().collect();
        let joined = |id: &GroupId, d: &DeviceId, who: UserId| {
            self.owner(*d) == Some(who)
                && !self.held.values().any(|h| h.group == *id && h.device == *d)
        };
        self.groups.iter().any(|(id, g)| {
            *id != group
                && !direct.contains(id)
                && g.members.iter().any(|d| joined(id, d, user))
                && g.members.iter().any(|d| joined(id, d, sender))
        })
    }

    fn record_consent(&mut self, user: UserId, peer: UserId) {
        if user != peer {
            self.consent.insert((user, peer));
        }
    }

    fn message_in_use(&self, msg: u64) -> bool {
        self.deliveries.values().any(|(_, m)| *m == msg)
            || self.held.values().any(|h| h.message == msg)
    }

    /// Stores one message for `recipients` within `quotas`, holding it for devices
    /// with an unanswered invitation (see `Store`).
    #[allow(clippy::too_many_arguments)]
    fn enqueue(
        &mut self,
        group: GroupId,
        kind: EntryKind,
        sender: DeviceId,
        payload: Vec<u8>,
        recipients: &[DeviceId],
        at: i64,
        quotas: &Quotas,
    ) -> Result<Enqueued, StoreError> {
        let size = payload.len() as u64;
        let sender_user = self.owner(sender);
        if let Some(user) = sender_user {
            let used: u64 = self
                .messages
                .values()
                .filter(|m| m.sender_user == Some(user))
                .map(|m| m.payload.len() as u64)
                .sum();
            if used.saturating_add(size) > quotas.user_bytes {
                return Err(StoreError::QuotaExceeded {
                    quota: Quota::UserBytes,
                    limit: quotas.user_bytes,
                });
            }
        }
        let (mut room, undelivered): (Vec<DeviceId>, Vec<DeviceId>) =
            if kind == EntryKind::Application {
                recipients.iter().partition(|d| {
                    let (n, b) = self.usage(**d);
                    n.saturating_add(1) <= quotas.mailbox_entries
                        && b.saturating_add(size) <= quotas.mailbox_bytes
                })
            } else {
                (recipients.to_vec(), Vec::new())
            };
        if room.is_empty() && !undelivered.is_empty() {
            return Err(StoreError::MailboxFull);
        }
        let direct = self.direct.values().any(|g| *g == group);
        let mut hold: Vec<(DeviceId, UserId)> = Vec::new();
        let mut invited = Vec::new();
        if kind == EntryKind::Welcome && !direct {
            if let Some(sender_user) = sender_user {
                let mut refusing: Vec<UserId> = Vec::new();
                let mut deliver = Vec::new();
                for d in room {
                    let Some(owner) = self.owner(d) else { continue };
                    if self.accepts_welcomes(owner, sender_user, group) {
                        deliver.push(d);
                    } else {
                        if !refusing.contains(&owner) {
                            refusing.push(owner);
                        }
                        invited.push(d);
                        hold.push((d, sender_user));
                    }
                }
                for owner in refusing {
                    if size > quotas.request_bytes {
                        return Err(StoreError::QuotaExceeded {
                            quota: Quota::RequestBytes,
                            limit: quotas.request_bytes,
                        });
                    }
                    let pending: std::collections::BTreeSet<GroupId> = self
                        .held
                        .values()
                        .filter(|h| self.owner(h.device) == Some(owner))
                        .map(|h| h.group)
                        .collect();
                    if pending.len() as u64 >= quotas.requests_per_user {
                        return Err(StoreError::QuotaExceeded {
                            quota: Quota::Requests,
                            limit: quotas.requests_per_user,
                        });
                    }
                }
                room = deliver;
            }
        } else {
            let mut deliver = Vec::new();
            for d in room {
                match self
                    .held
                    .values()
                    .find(|h| h.device == d && h.group == group)
                {
                    Some(h) => hold.push((d, h.inviter)),
                    None => deliver.push(d),
                }
            }
            room = deliver;
        }
        let g = self
            .groups
            .get_mut(&group)
            .ok_or(StoreError::GroupNotFound)?;
        let seq = g.next_seq;
        g.next_seq += 1;
        for d in &undelivered {
            *self.missed.entry(*d).or_default() += 1;
        }
        let held: Vec<DeviceId> = hold.iter().map(|(d, _)| *d).collect();
        if room.is_empty() && hold.is_empty() {
            return Ok(Enqueued {
                seq,
                undelivered,
                held,
            });
        }
        self.next_id += 1;
        let msg = self.next_id;
        self.messages.insert(
            msg,
            Stored {
                group,
                kind,
                sender,
                sender_user,
                seq,
                payload,
                at,
            },
        );
        for d in room {
            self.next_id += 1;
            self.deliveries.insert(self.next_id, (d, msg));
        }
        for (device, inviter) in hold {
            self.next_id += 1;
            self.held.insert(
                self.next_id,
                Held {
                    device,
                    group,
                    message: msg,
                    inviter,
                    at,
                },
            );
        }
        if let (false, Some(user)) = (invited.is_empty(), sender_user) {
            let name = self
                .users
                .get(&user)
                .map(|u| u.username.to_string())
                .unwrap_or_default();
            self.next_id += 1;
            let notice = self.next_id;
            self.messages.insert(
                notice,
                Stored {
                    group,
                    kind: EntryKind::Request,
                    sender,
                    sender_user: None,
                    seq,
                    payload: name.into_bytes(),
                    at,
                },
            );
            for d in invited {
                self.next_id += 1;
                self.deliveries.insert(self.next_id, (d, notice));
            }
        }
        Ok(Enqueued {
            seq,
            undelivered,
            held,
        })
    }

    /// Deletes one mailbox entry, and its message with its last entry.
    fn remove_delivery(&mut self, id: u64) {
        if let Some((_, msg)) = self.deliveries.remove(&id)
            && !self.message_in_use(msg)
        {
            self.messages.remove(&msg);
        }
    }

    fn remove_held(&mut self, id: u64) {
        if let Some(h) = self.held.remove(&id)
            && !self.message_in_use(h.message)
        {
            self.messages.remove(&h.message);
        }
    }

    fn earlier(&self, sender: DeviceId, key: Option<HandshakeKey>) -> Option<Delivered> {
        let first = self.handshakes.get(&(sender, key?))?;
        Some(Delivered {
            recipients: Vec::new(),
            ..first.clone()
        })
    }

    fn record(&mut self, sender: DeviceId, key: Option<HandshakeKey>, done: &Delivered) {
        if let Some(key) = key {
            self.handshakes.insert((sender, key), done.clone());
        }
    }

    fn forget_device(&mut self, device: DeviceId) {
        self.devices.remove(&device);
        self.key_packages.remove(&device);
        let held: Vec<u64> = self
            .held
            .iter()
            .filter(|(_, h)| h.device == device)
            .map(|(id, _)| *id)
            .collect();
        for id in held {
            self.remove_held(id);
        }
        for g in self.groups.values_mut() {
            g.members.remove(&device);
        }
        let gone: Vec<u64> = self
            .deliveries
            .iter()
            .filter(|(_, (d, _))| *d == device)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.remove_delivery(id);
        }
        self.missed.remove(&device);
    }

    fn user_mut(&mut self, name: &Username) -> Result<&mut UserRecord, StoreError> {
        let id = self.user_id(name)?;
        self.users.get_mut(&id).ok_or(StoreError::UserNotFound)
    }
}

#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    listener: Mutex<Option<std::sync::Arc<dyn crate::CommitListener>>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.with_reported(f, |_| Vec::new())
    }

    /// Runs `f` all or nothing, like a transaction. For a write that may queue
    /// entries, the devices `woken` names are
    /// reported to the listener while the state is still locked, so reports keep
    /// commit order (the memory store hands over no entries: they are read back).
    fn with_reported<T>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, StoreError>,
        woken: impl FnOnce(&T) -> Vec<DeviceId>,
    ) -> Result<T, StoreError> {
        let mut guard = self
            .state
            .lock()
            .map_err(|_| StoreError::backend("memory store lock poisoned"))?;
        let before = guard.clone();
        let result = f(&mut guard);
        match &result {
            Err(_) => *guard = before,
            Ok(done) => {
                let devices = woken(done);
                if !devices.is_empty()
                    && let Ok(listener) = self.listener.lock()
                    && let Some(l) = listener.as_ref()
                {
                    l.committed(&[], &devices);
                }
            }
        }
        drop(guard);
        result
    }
}

/// Every device a write's entries went to: recipients, and the held ones told of
/// an invitation (P460).
fn delivered_to(d: &Delivered) -> Vec<DeviceId> {
    let mut all = d.recipients.clone();
    all.extend(d.held.iter().copied());
    all
}

fn invite_ok(invite: &NewInvite, now: i64) -> bool {
    invite.uses > 0 && invite.expires_at.is_none_or(|t| now < t)
}

#[async_trait]
impl Store for MemoryStore {
    fn set_listener(&self, listener: std::sync::Arc<dyn crate::CommitListener>) {
        if let Ok(mut l) = self.listener.lock() {
            *l = Some(listener);
        }
    }

    async fn secret_or_init(&self, name: &str, init: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        self.with(|s| Ok(s.secrets.entry(name.to_owned()).or_insert(init).clone()))
    }

    async fn create_user(&self, user: NewUser) -> Result<bool, StoreError> {
        self.with(|s| {
            if s.users.values().any(|u| u.username == user.username) {
                return Err(StoreError::UsernameTaken);
            }
            if let Some(digest) = user.invite {
                match s.invites.get_mut(&digest) {
                    Some(inv) if invite_ok(inv, user.created_at) => inv.uses -= 1,
                    _ => return Err(StoreError::InviteInvalid),
                }
            }
            let first = s.users.is_empty();
            s.former_owners.insert(user.device.device_id, user.user_id);
            s.devices
                .insert(user.device.device_id, (user.user_id, user.device.clone()));
            s.users.insert(
                user.user_id,
                UserRecord {
                    user_id: user.user_id,
                    username: user.username,
                    display_name: user.display_name,
                    email: user.email,
                    password_file: user.password_file,
                    admin: first,
                    disabled: false,
                    created_at: user.created_at,
                    account_key: Some(user.account_key),
                    sealed_account_key: Some(user.sealed_account_key),
                },
            );
            Ok(first)
        })
    }

    async fn user_by_name(&self, name: &Username) -> Result<Option<UserRecord>, StoreError> {
        self.with(|s| Ok(s.users.values().find(|u| &u.username == name).cloned()))
    }

    async fn add_device(
        &self,
        user: UserId,
        device: NewDevice,
        max_devices: u64,
    ) -> Result<(), StoreError> {
        self.with(|s| {
            if !s.users.contains_key(&user) {
                return Err(StoreError::UserNotFound);
            }
            let have = s.devices.values().filter(|(u, _)| *u == user).count() as u64;
            if have >= max_devices {
                return Err(StoreError::QuotaExceeded {
                    quota: Quota::Devices,
                    limit: max_devices,
                });
            }
            s.former_owners.insert(device.device_id, user);
            s.devices.insert(device.device_id, (user, device));
            Ok(())
        })
    }

    async fn session(&self, token_digest: &[u8; 32]) -> Result<Option<Session>, StoreError> {
        self.with(|s| {
            let Some((user_id, device)) = s
                .devices
                .values()
                .find(|(_, d)| &d.token_digest == token_digest)
            else {
                return Ok(None);
            };
            Ok(s.users.get(user_id).map(|u| Session {
                device_id: device.device_id,
                user_id: u.user_id,
                username: u.username.clone(),
                display_name: u.display_name.clone(),
                email: u.email.clone(),
                admin: u.admin,
                disabled: u.disabled,
                created_at: u.created_at,
            }))
        })
    }

    async fn remove_device(&self, device: DeviceId) -> Result<(), StoreError> {
        self.with(|s| {
            s.forget_device(device);
            Ok(())
        })
    }

    async fn add_revocation(
        &self,
        user: UserId,
        device: DeviceId,
        statement: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.with(|s| {
            s.revocations.insert((user, device), statement);
            Ok(())
        })
    }

    async fn revocations(&self, user: UserId) -> Result<Vec<(DeviceId, Vec<u8>)>, StoreError> {
        self.with(|s| {
            Ok(s.revocations
                .iter()
                .filter(|((u, _), _)| *u == user)
                .map(|((_, d), st)| (*d, st.clone()))
                .collect())
        })
    }

    async fn create_invite(&self, invite: NewInvite) -> Result<(), StoreError> {
        self.with(|s| {
            s.invites.insert(invite.digest, invite);
            Ok(())
        })
    }

    async fn invite_usable(&self, digest: &[u8; 32], now: i64) -> Result<bool, StoreError> {
        self.with(|s| Ok(s.invites.get(digest).is_some_and(|i| invite_ok(i, now))))
    }

    async fn list_users(&self) -> Result<Vec<UserSummary>, StoreError> {
        self.with(|s| {
            let mut out: Vec<UserSummary> = s
                .users
                .values()
                .map(|u| UserSummary {
                    user_id: u.user_id,
                    username: u.username.clone(),
                    display_name: u.display_name.clone(),
                    admin: u.admin,
                    disabled: u.disabled,
                    devices: s
                        .devices
                        .values()
                        .filter(|(id, _)| *id == u.user_id)
                        .count() as u32,
                    created_at: u.created_at,
                })
                .collect();
            out.sort_by(|a, b| a.username.cmp(&b.username));
            Ok(out)
        })
    }

    async fn set_disabled(&self, name: &Username, disabled: bool) -> Result<(), StoreError> {
        self.with(|s| {
            s.user_mut(name)?.disabled = disabled;
            Ok(())
        })
    }

    async fn set_admin(&self, name: &Username, admin: bool) -> Result<(), StoreError> {
        self.with(|s| {
            s.user_mut(name)?.admin = admin;
            Ok(())
        })
    }

    async fn delete_user(&self, name: &Username) -> Result<(), StoreError> {
        self.with(|s| {
            let id = s.user_id(name)?;
            s.users.remove(&id);
            let owned: Vec<DeviceId> = s
                .devices
                .iter()
                .filter(|(_, (owner, _))| *owner == id)
                .map(|(d, _)| *d)
                .collect();
            for d in owned {
                s.forget_device(d);
            }
            s.direct.retain(|(a, b), _| *a != id && *b != id);
            s.former_owners.retain(|_, owner| *owner != id);
            s.two_factor.remove(&id);
            s.pending_totp.remove(&id);
            s.files.retain(|_, f| f.uploader_user != id);
            s.backups.remove(&id);
            s.group_infos.retain(|(u, _), _| *u != id);
            s.revocations.retain(|(u, _), _| *u != id);
            Ok(())
        })
    }

    async fn two_factor(&self, user: UserId) -> Result<Option<TwoFactor>, StoreError> {
        self.with(|s| {
            Ok(s.two_factor
                .get(&user)
                .map(|(secret, step, codes)| TwoFactor {
                    secret: secret.clone(),
                    last_step: *step,
                    recovery_left: codes.len() as u32,
                }))
        })
    }

    async fn set_pending_totp(&self, user: UserId, secret: Vec<u8>) -> Result<(), StoreError> {
        self.with(|s| {
            if !s.users.contains_key(&user) {
                return Err(StoreError::UserNotFound);
            }
            s.pending_totp.insert(user, secret);
            Ok(())
        })
    }

    async fn pending_totp(&self, user: UserId) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|s| Ok(s.pending_totp.get(&user).cloned()))
    }

    async fn enable_two_factor(
        &self,
        user: UserId,
        secret: &[u8],
        step: u64,
        recovery: Vec<[u8; 32]>,
    ) -> Result<bool, StoreError> {
        self.with(|s| {
            if s.pending_totp.get(&user).map(Vec::as_slice) != Some(secret) {
                return Ok(false);
            }
            s.pending_totp.remove(&user);
            s.two_factor.insert(user, (secret.to_vec(), step, recovery));
            Ok(true)
        })
    }

    async fn disable_two_factor(&self, user: UserId) -> Result<(), StoreError> {
        self.with(|s| {
            s.two_factor.remove(&user);
            s.pending_totp.remove(&user);
            Ok(())
        })
    }

    async fn use_totp_step(&self, user: UserId, step: u64) -> Result<bool, StoreError> {
        self.with(|s| match s.two_factor.get_mut(&user) {
            Some((_, last, _)) if step > *last => {
                *last = step;
                Ok(true)
            }
            _ => Ok(false),
        })
    }

    async fn use_recovery_code(&self, user: UserId, digest: &[u8; 32]) -> Result<bool, StoreError> {
        self.with(|s| match s.two_factor.get_mut(&user) {
            Some((_, _, codes)) => {
                let before = codes.len();
                codes.retain(|c| c != digest);
                Ok(codes.len() < before)
            }
            None => Ok(false),
        })
    }

    async fn publish_key_packages(
        &self,
        device: DeviceId,
        packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
        max: u32,
    ) -> Result<u32, StoreError> {
        self.with(|s| {
            if !s.devices.contains_key(&device) {
                return Err(StoreError::DeviceNotFound(device));
            }
            let entry = s.key_packages.entry(device).or_default();
            if entry.0.len().saturating_add(packages.len()) > max as usize {
                return Err(StoreError::QuotaExceeded {
                    quota: Quota::KeyPackages,
                    limit: u64::from(max),
                });
            }
            entry.0.extend(packages);
            if last_resort.is_some() {
                entry.1 = last_resort;
            }
            Ok(entry.0.len() as u32)
        })
    }

    async fn key_package_count(&self, device: DeviceId) -> Result<u32, StoreError> {
        self.with(|s| Ok(s.key_packages.get(&device).map_or(0, |k| k.0.len() as u32)))
    }

    async fn claim_key_packages(&self, users: &[UserId]) -> Result<Vec<Claimed>, StoreError> {
        self.with(|s| {
            let mut out = Vec::new();
            for &user in users {
                let mut devices: Vec<DeviceId> = s
                    .devices
                    .iter()
                    .filter(|(_, (owner, _))| *owner == user)
                    .map(|(d, _)| *d)
                    .collect();
                devices.sort();
                for d in devices {
                    if let Some((one_time, last)) = s.key_packages.get_mut(&d)
                        && let Some(kp) = one_time.pop_front().or_else(|| last.clone())
                    {
                        out.push(Claimed {
                            user,
                            device: d,
                            package: kp,
                        });
                    }
                }
            }
            Ok(out)
        })
    }

    async fn devices_of(&self, user: UserId) -> Result<Vec<DeviceId>, StoreError> {
        self.with(|s| {
            let mut out: Vec<DeviceId> = s
                .devices
                .iter()
                .filter(|(_, (owner, _))| *owner == user)
                .map(|(d, _)| *d)
                .collect();
            out.sort();
            Ok(out)
        })
    }

    async fn device_owners(&self, devices: &[DeviceId]) -> Result<Vec<Owner>, StoreError> {
        self.with(|s| {
            Ok(devices
                .iter()
                .filter_map(|d| {
                    let user = s.users.get(s.former_owners.get(d)?)?;
                    Some(Owner {
                        device: *d,
                        username: user.username.clone(),
                        account_key: user.account_key,
                    })
                })
                .collect())
        })
    }

    async fn device_records(&self, user: UserId) -> Result<Vec<DeviceRecord>, StoreError> {
        self.with(|s| {
            let mut out: Vec<DeviceRecord> = s
                .devices
                .iter()
                .filter(|(_, (owner, _))| *owner == user)
                .map(|(d, (_, nd))| DeviceRecord {
                    device_id: *d,
                    name: nd.name.clone(),
                    created_at: nd.created_at,
                    last_seen: s.last_seen.get(d).copied(),
                })
                .collect();
            out.sort_by_key(|r| r.device_id);
            Ok(out)
        })
    }

    async fn live_devices(&self, devices: &[DeviceId]) -> Result<Vec<DeviceId>, StoreError> {
        self.with(|s| {
            Ok(devices
                .iter()
                .copied()
                .filter(|d| {
                    s.devices
                        .get(d)
                        .and_then(|(u, _)| s.users.get(u))
                        .is_some_and(|u| !u.disabled)
                })
                .collect())
        })
    }

    async fn touch_device(&self, device: DeviceId, now: i64) -> Result<(), StoreError> {
        self.with(|s| {
            if s.devices.contains_key(&device) {
                s.last_seen.insert(device, now);
            }
            Ok(())
        })
    }

    async fn create_group(&self, g: NewGroup) -> Result<Delivered, StoreError> {
        self.with_reported(
            |s| {
                if let Some(first) = s.earlier(g.creator, g.client_key) {
                    return Ok(first);
                }
                if s.groups.contains_key(&g.group_id) {
                    return Err(StoreError::GroupExists);
                }
                if let Some((a, b)) = g.direct
                    && s.direct.contains_key(&pair(a, b))
                {
                    return Err(StoreError::GroupExists);
                }
                if let Some(name) = &g.name
                    && s.names.contains_key(name)
                {
                    return Err(StoreError::GroupExists);
                }
                if !g.members.contains(&g.creator) {
                    return Err(StoreError::NotAMember);
                }
                if g.members.len() as u64 > g.quotas.group_members {
                    return Err(StoreError::QuotaExceeded {
                        quota: Quota::GroupMembers,
                        limit: g.quotas.group_members,
                    });
                }
                if let Some(d) = g.members.iter().find(|d| !s.devices.contains_key(d)) {
                    return Err(StoreError::DeviceNotFound(*d));
                }
                let creator = s.devices.get(&g.creator).map(|(u, _)| *u);
                if let Some(user) = creator {
                    let recent = s
                        .groups
                        .values()
                        .filter(|x| {
                            x.created_by == Some(user) && x.created_at > g.now_ms - 3_600_000
                        })
                        .count() as u64;
                    if recent >= g.quotas.groups_per_hour {
                        return Err(StoreError::QuotaExceeded {
                            quota: Quota::GroupsPerHour,
                            limit: g.quotas.groups_per_hour,
                        });
                    }
                }
                // Checked before anything changes: a refusal leaves no trace.
                if let (Some(w), Some(user)) = (&g.welcome, creator) {
                    let used: u64 = s
                        .messages
                        .values()
                        .filter(|m| m.sender_user == Some(user))
                        .map(|m| m.payload.len() as u64)
                        .sum();
                    if used.saturating_add(w.len() as u64) > g.quotas.user_bytes {
                        return Err(StoreError::QuotaExceeded {
                            quota: Quota::UserBytes,
                            limit: g.quotas.user_bytes,
                        });
                    }
                }
                s.groups.insert(
                    g.group_id,
                    Group {
                        epoch: 1,
                        next_seq: 1,
                        members: g.members.iter().copied().collect(),
                        created_by: creator,
                        created_at: g.now_ms,
                        public_state: g.public_state.clone(),
                    },
                );
                if let Some((a, b)) = g.direct {
                    s.direct.insert(pair(a, b), g.group_id);
                }
                if let Some(name) = &g.name {
                    s.names.insert(name.clone(), g.group_id);
                    if let Some(c) = &g.channel {
                        s.channels.insert(
                            g.group_id,
                            Channel {
                                name: name.clone(),
                                password_hash: c.password_hash.clone(),
                                totp_secret: c.totp_secret.clone(),
                                group_info: c.group_info.clone(),
                                admins: creator.into_iter().collect(),
                            },
                        );
                    }
                }
                let recipients: Vec<DeviceId> = g
                    .members
                    .iter()
                    .copied()
                    .filter(|d| *d != g.creator)
                    .collect();
                let seq = match g.welcome {
                    Some(w) => s.enqueue(
                        g.group_id,
                        EntryKind::Welcome,
                        g.creator,
                        w,
                        &recipients,
                        g.now_ms,
                        &g.quotas,
                    )?,
                    None => Enqueued {
                        seq: 0,
                        undelivered: Vec::new(),
                        held: Vec::new(),
                    },
                };
                if let Some(creator) = creator {
                    for d in &recipients {
                        if let Some(owner) = s.owner(*d) {
                            s.record_consent(creator, owner);
                        }
                    }
                }
                let done = Delivered {
                    epoch: 1,
                    group_seq: seq.seq,
                    stored_at_ms: g.now_ms,
                    recipients,
                    undelivered: Vec::new(),
                    held: seq.held,
                };
                s.record(g.creator, g.client_key, &done);
                Ok(done)
            },
            delivered_to,
        )
    }

    async fn group(&self, group: GroupId) -> Result<Option<GroupRecord>, StoreError> {
        self.with(|s| {
            Ok(s.groups.get(&group).map(|g| GroupRecord {
                group_id: group,
                epoch: g.epoch,
                members: g.members.iter().copied().collect(),
                channel: s.channels.contains_key(&group),
            }))
        })
    }

    async fn public_state(&self, group: GroupId) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|s| Ok(s.groups.get(&group).and_then(|g| g.public_state.clone())))
    }

    async fn channel(&self, name: &str) -> Result<Option<ChannelRecord>, StoreError> {
        self.with(|s| Ok(s.names.get(name).and_then(|g| s.channel_record(*g))))
    }

    async fn channels(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        self.with(|s| {
            let mut all: Vec<ChannelRecord> = s
                .channels
                .keys()
                .filter_map(|g| s.channel_record(*g))
                .collect();
            all.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(all)
        })
    }

    async fn grant_channel_join(
        &self,
        group: GroupId,
        device: DeviceId,
        totp_step: Option<(UserId, u64)>,
        expires_ms: i64,
    ) -> Result<bool, StoreError> {
        self.with(|s| {
            if !s.channels.contains_key(&group) {
                return Err(StoreError::GroupNotFound);
            }
            if let Some((user, step)) = totp_step {
                if !s.channel_steps.insert((group, user, step)) {
                    return Ok(false);
                }
                s.channel_steps.retain(|(g, u, st)| {
                    !(*g == group && *u == user && st.saturating_add(2) < step)
                });
            }
            s.channel_grants.insert((group, device), expires_ms);
            Ok(true)
        })
    }

    async fn update_channel(&self, group: GroupId, u: ChannelUpdate) -> Result<(), StoreError> {
        self.with(|s| {
            let c = s
                .channels
                .get_mut(&group)
                .ok_or(StoreError::GroupNotFound)?;
            if let Some(p) = u.password_hash {
                c.password_hash = p;
            }
            if let Some(t) = u.totp_secret {
                c.totp_secret = t;
                s.channel_steps.retain(|(g, _, _)| *g != group);
            }
            if let Some(a) = u.admins {
                c.admins = a;
            }
            Ok(())
        })
    }

    async fn delete_channel(&self, group: GroupId) -> Result<(), StoreError> {
        self.with(|s| {
            let c = s.channels.remove(&group).ok_or(StoreError::GroupNotFound)?;
            s.names.remove(&c.name);
            s.groups.remove(&group);
            s.group_infos.retain(|(_, g), _| *g != group);
            s.channel_grants.retain(|(g, _), _| *g != group);
            s.channel_steps.retain(|(g, _, _)| *g != group);
            Ok(())
        })
    }

    async fn named_group(&self, name: &str) -> Result<Option<GroupId>, StoreError> {
        self.with(|s| Ok(s.names.get(name).copied()))
    }

    async fn direct_group(&self, a: UserId, b: UserId) -> Result<Option<GroupId>, StoreError> {
        self.with(|s| Ok(s.direct.get(&pair(a, b)).copied()))
    }

    async fn accept_commit(&self, c: NewCommit) -> Result<Delivered, StoreError> {
        self.with_reported(
            |s| {
                if let Some(first) = s.earlier(c.sender, c.client_key) {
                    return Ok(first);
                }
                let g = s.groups.get(&c.group_id).ok_or(StoreError::GroupNotFound)?;
                // P553: a channel's grant; P536: a new device of a member's user.
                let user = s.devices.get(&c.sender).map(|(u, _)| *u);
                let own_user_in = g.members.iter().any(|d| {
                    *d != c.sender && user.is_some() && s.devices.get(d).map(|(u, _)| *u) == user
                });
                let granted = c.external
                    && !g.members.contains(&c.sender)
                    && (own_user_in
                        || s.channel_grants
                            .get(&(c.group_id, c.sender))
                            .is_some_and(|exp| *exp > c.now_ms));
                let member = g.members.contains(&c.sender);
                let resync = member && c.added == [c.sender] && c.removed == [c.sender];
                if !(granted || resync || (!c.external && member)) {
                    return Err(StoreError::NotAMember);
                }
                if g.epoch != c.epoch {
                    return Err(StoreError::StaleEpoch { current: g.epoch });
                }
                if let Some(d) = c.added.iter().find(|d| !s.devices.contains_key(d)) {
                    return Err(StoreError::DeviceNotFound(*d));
                }
                let mut after = g.members.clone();
                after.extend(c.added.iter().copied());
                for r in &c.removed {
                    after.remove(r);
                }
                if after.len() as u64 > c.quotas.group_members {
                    return Err(StoreError::QuotaExceeded {
                        quota: Quota::GroupMembers,
                        limit: c.quotas.group_members,
                    });
                }
                let bytes = (c.commit.len() + c.welcome.as_ref().map_or(0, |w| w.len())) as u64;
                if let Some(user) = s.former_owners.get(&c.sender) {
                    let used: u64 = s
                        .messages
                        .values()
                        .filter(|m| m.sender_user == Some(*user))
                        .map(|m| m.payload.len() as u64)
                        .sum();
                    if used.saturating_add(bytes) > c.quotas.user_bytes {
                        return Err(StoreError::QuotaExceeded {
                            quota: Quota::UserBytes,
                            limit: c.quotas.user_bytes,
                        });
                    }
                }
                let recipients: Vec<DeviceId> = g
                    .members
                    .iter()
                    .copied()
                    .filter(|d| *d != c.sender)
                    .collect();
                let commit = s.enqueue(
                    c.group_id,
                    EntryKind::Handshake,
                    c.sender,
                    c.commit,
                    &recipients,
                    c.now_ms,
                    &c.quotas,
                )?;
                let seq = commit.seq;
                let mut held = commit.held;
                if let Some(w) = c.welcome {
                    let welcome = s.enqueue(
                        c.group_id,
                        EntryKind::Welcome,
                        c.sender,
                        w,
                        &c.added,
                        c.now_ms,
                        &c.quotas,
                    )?;
                    held.extend(welcome.held);
                }
                if let Some(sender) = s.owner(c.sender) {
                    for d in &c.added {
                        if let Some(owner) = s.owner(*d) {
                            s.record_consent(sender, owner);
                        }
                    }
                }
                let g = s
                    .groups
                    .get_mut(&c.group_id)
                    .ok_or(StoreError::GroupNotFound)?;
                for r in c.removed.iter().filter(|r| !c.added.contains(r)) {
                    g.members.remove(r);
                }
                g.members.extend(c.added.iter().copied());
                g.epoch += 1;
                g.public_state = c.public_state;
                if c.external {
                    s.channel_grants.remove(&(c.group_id, c.sender));
                }
                if let (Some(info), Some(ch)) = (c.group_info, s.channels.get_mut(&c.group_id)) {
                    ch.group_info = info;
                }
                let mut wake = recipients;
                wake.extend(c.added);
                let done = Delivered {
                    epoch: g.epoch,
                    group_seq: seq,
                    stored_at_ms: c.now_ms,
                    recipients: wake,
                    undelivered: Vec::new(),
                    held,
                };
                s.record(c.sender, c.client_key, &done);
                Ok(done)
            },
            delivered_to,
        )
    }

    async fn enqueue_message(&self, m: NewMessage) -> Result<Delivered, StoreError> {
        self.with_reported(
            |s| {
                if let Some(done) = s.sent.get(&(m.sender, m.client_message_id)) {
                    return Ok(Delivered {
                        recipients: Vec::new(),
                        undelivered: Vec::new(),
                        held: Vec::new(),
                        ..done.clone()
                    });
                }
                let g = s.groups.get(&m.group_id).ok_or(StoreError::GroupNotFound)?;
                if !g.members.contains(&m.sender) {
                    return Err(StoreError::NotAMember);
                }
                if g.epoch != m.epoch {
                    return Err(StoreError::StaleEpoch { current: g.epoch });
                }
                let epoch = g.epoch;
                let recipients: Vec<DeviceId> = g
                    .members
                    .iter()
                    .copied()
                    .filter(|d| *d != m.sender)
                    .collect();
                let out = s.enqueue(
                    m.group_id,
                    EntryKind::Application,
                    m.sender,
                    m.ciphertext,
                    &recipients,
                    m.now_ms,
                    &m.quotas,
                )?;
                // P460: writing in a 1:1 accepts the other's invitations.
                if let (Some(sender), Some((pair, _))) = (
                    s.owner(m.sender),
                    s.direct.iter().find(|(_, g)| **g == m.group_id),
                ) {
                    let other = if pair.0 == sender { pair.1 } else { pair.0 };
                    s.record_consent(sender, other);
                }
                let done = Delivered {
                    epoch,
                    group_seq: out.seq,
                    stored_at_ms: m.now_ms,
                    recipients: recipients
                        .into_iter()
                        .filter(|d| !out.undelivered.contains(d) && !out.held.contains(d))
                        .collect(),
                    undelivered: out.undelivered,
                    held: out.held,
                };
                s.sent.insert((m.sender, m.client_message_id), done.clone());
                Ok(done)
            },
            delivered_to,
        )
    }

    async fn fetch_mailbox(
        &self,
        device: DeviceId,
        after_id: u64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<MailboxPage, StoreError> {
        self.with(|s| {
            let mut out = Vec::new();
            let mut bytes = 0usize;
            let mine = s
                .deliveries
                .range(after_id.saturating_add(1)..)
                .filter(|(_, (d, _))| *d == device)
                .take(limit as usize + 1);
            let mut more = false;
            for (id, (_, msg)) in mine {
                let Some(m) = s.messages.get(msg) else {
                    continue;
                };
                bytes = bytes
                    .saturating_add(m.payload.len())
                    .saturating_add(hush_proto::frame::ENTRY_OVERHEAD);
                if out.len() == limit as usize || (bytes > max_bytes && !out.is_empty()) {
                    more = true;
                    break;
                }
                out.push(Entry {
                    id: *id,
                    group_id: m.group,
                    kind: m.kind,
                    payload: m.payload.clone().into(),
                    sender_device: m.sender,
                    group_seq: m.seq,
                    stored_at_ms: m.at,
                });
            }
            Ok(MailboxPage {
                entries: out,
                missed: s.missed.get(&device).copied().unwrap_or(0),
                more,
            })
        })
    }

    async fn ack(&self, device: DeviceId, ids: &[u64], missed_seen: u32) -> Result<(), StoreError> {
        self.with(|s| {
            for id in ids {
                if s.deliveries.get(id).is_some_and(|(d, _)| *d == device) {
                    s.remove_delivery(*id);
                }
            }
            if let Some(m) = s.missed.get_mut(&device) {
                *m = m.saturating_sub(missed_seen);
            }
            Ok(())
        })
    }

    async fn requests(&self, user: UserId) -> Result<Vec<HeldRequest>, StoreError> {
        self.with(|s| {
            let mut by_inviter: BTreeMap<UserId, (BTreeSet<GroupId>, i64)> = BTreeMap::new();
            for h in s.held.values() {
                if s.owner(h.device) == Some(user) {
                    let e = by_inviter
                        .entry(h.inviter)
                        .or_insert((BTreeSet::new(), h.at));
                    e.0.insert(h.group);
                    e.1 = e.1.min(h.at);
                }
            }
            let mut out: Vec<HeldRequest> = by_inviter
                .into_iter()
                .filter_map(|(inviter, (groups, since))| {
                    Some(HeldRequest {
                        inviter,
                        inviter_name: s.users.get(&inviter)?.username.clone(),
                        groups: groups.len() as u32,
                        since_ms: since,
                    })
                })
                .collect();
            out.sort_by_key(|r| r.since_ms);
            Ok(out)
        })
    }

    async fn answer_request(
        &self,
        user: UserId,
        inviter: UserId,
        accept: bool,
    ) -> Result<Vec<DeviceId>, StoreError> {
        self.with_reported(
            |s| {
                let mine =
                    |s: &State, d: DeviceId| s.devices.get(&d).is_some_and(|(u, _)| *u == user);
                let groups: BTreeSet<GroupId> = s
                    .held
                    .values()
                    .filter(|h| h.inviter == inviter && mine(s, h.device))
                    .map(|h| h.group)
                    .collect();
                let ids: Vec<u64> = s
                    .held
                    .iter()
                    .filter(|(_, h)| groups.contains(&h.group) && mine(s, h.device))
                    .map(|(id, _)| *id)
                    .collect();
                let mut wake = Vec::new();
                if accept {
                    s.record_consent(user, inviter);
                    for id in ids {
                        if let Some(h) = s.held.get(&id).copied() {
                            s.next_id += 1;
                            s.deliveries.insert(s.next_id, (h.device, h.message));
                            s.remove_held(id);
                            if !wake.contains(&h.device) {
                                wake.push(h.device);
                            }
                        }
                    }
                } else {
                    for id in ids {
                        s.remove_held(id);
                    }
                    let devices: Vec<DeviceId> = s
                        .devices
                        .iter()
                        .filter(|(_, (u, _))| *u == user)
                        .map(|(d, _)| *d)
                        .collect();
                    for g in &groups {
                        if let Some(group) = s.groups.get_mut(g) {
                            for d in &devices {
                                group.members.remove(d);
                            }
                        }
                    }
                }
                Ok(wake)
            },
            |wake| wake.clone(),
        )
    }

    async fn create_file(&self, f: NewFile) -> Result<FileRecord, StoreError> {
        self.with(|s| {
            let g = s.groups.get(&f.group_id).ok_or(StoreError::GroupNotFound)?;
            if !g.members.contains(&f.uploader) {
                return Err(StoreError::NotAMember);
            }
            let user = s
                .devices
                .get(&f.uploader)
                .map(|(u, _)| *u)
                .ok_or(StoreError::DeviceNotFound(f.uploader))?;
            if f.size > f.max_file_bytes {
                return Err(StoreError::QuotaExceeded {
                    quota: Quota::FileSize,
                    limit: f.max_file_bytes,
                });
            }
            let held: u64 = s
                .files
                .values()
                .filter(|r| r.uploader_user == user)
                .map(|r| r.size)
                .sum();
            if held.saturating_add(f.size) > f.user_file_bytes {
                return Err(StoreError::QuotaExceeded {
                    quota: Quota::FileBytes,
                    limit: f.user_file_bytes,
                });
            }
            let record = FileRecord {
                file_id: f.file_id,
                group_id: f.group_id,
                uploader: f.uploader,
                uploader_user: user,
                size: f.size,
                created_ms: f.now_ms,
                complete: false,
                recipients: g
                    .members
                    .iter()
                    .filter(|d| **d != f.uploader)
                    .copied()
                    .collect(),
                fetched: Vec::new(),
            };
            s.files.insert(f.file_id, record.clone());
            Ok(record)
        })
    }

    async fn file(&self, id: hush_proto::ids::FileId) -> Result<Option<FileRecord>, StoreError> {
        self.with(|s| Ok(s.files.get(&id).cloned()))
    }

    async fn complete_file(&self, id: hush_proto::ids::FileId) -> Result<(), StoreError> {
        self.with(|s| {
            if let Some(f) = s.files.get_mut(&id) {
                f.complete = true;
            }
            Ok(())
        })
    }

    async fn file_fetched(
        &self,
        id: hush_proto::ids::FileId,
        device: DeviceId,
    ) -> Result<bool, StoreError> {
        self.with(|s| {
            let Some(f) = s.files.get_mut(&id) else {
                return Ok(false);
            };
            if f.recipients.contains(&device) && !f.fetched.contains(&device) {
                f.fetched.push(device);
                f.fetched.sort();
            }
            if f.fetched.len() == f.recipients.len() {
                s.files.remove(&id);
                return Ok(true);
            }
            Ok(false)
        })
    }

    async fn delete_file(&self, id: hush_proto::ids::FileId) -> Result<bool, StoreError> {
        self.with(|s| Ok(s.files.remove(&id).is_some()))
    }

    async fn expire_files(
        &self,
        before_ms: i64,
    ) -> Result<Vec<hush_proto::ids::FileId>, StoreError> {
        self.with(|s| {
            let old: Vec<_> = s
                .files
                .values()
                .filter(|f| f.created_ms < before_ms)
                .map(|f| f.file_id)
                .collect();
            for id in &old {
                s.files.remove(id);
            }
            Ok(old)
        })
    }

    async fn put_group_info(
        &self,
        device: DeviceId,
        group: GroupId,
        epoch: u64,
        sealed: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.with(|s| {
            let g = s.groups.get(&group).ok_or(StoreError::GroupNotFound)?;
            if !g.members.contains(&device) {
                return Err(StoreError::NotAMember);
            }
            let Some((user, _)) = s.devices.get(&device) else {
                return Err(StoreError::DeviceNotFound(device));
            };
            let key = (*user, group);
            if s.group_infos.get(&key).is_none_or(|(e, _)| *e <= epoch) {
                s.group_infos.insert(key, (epoch, sealed));
            }
            Ok(())
        })
    }

    async fn group_info(
        &self,
        user: UserId,
        group: GroupId,
    ) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        self.with(|s| {
            let member = s.groups.get(&group).is_some_and(|g| {
                g.members
                    .iter()
                    .any(|d| s.devices.get(d).is_some_and(|(u, _)| *u == user))
            });
            Ok(member
                .then(|| s.group_infos.get(&(user, group)).cloned())
                .flatten())
        })
    }

    async fn group_infos(
        &self,
        device: DeviceId,
    ) -> Result<Vec<(GroupId, u64, Vec<u8>)>, StoreError> {
        self.with(|s| {
            let Some((user, _)) = s.devices.get(&device) else {
                return Ok(Vec::new());
            };
            let user = *user;
            Ok(s.group_infos
                .range((user, GroupId::from_bytes([0; 16]))..)
                .take_while(|((u, _), _)| *u == user)
                .filter(|((_, g), _)| {
                    s.groups.get(g).is_some_and(|g| {
                        !g.members.contains(&device)
                            && g.members
                                .iter()
                                .any(|d| s.devices.get(d).is_some_and(|(u, _)| *u == user))
                    })
                })
                .map(|((_, g), (e, sealed))| (*g, *e, sealed.clone()))
                .collect())
        })
    }

    async fn backup(&self, user: UserId) -> Result<Option<BackupRecord>, StoreError> {
        self.with(|s| Ok(s.backups.get(&user).map(|(r, _)| r.clone())))
    }

    async fn set_backup_keys(
        &self,
        user: UserId,
        wrapped_password: Option<Vec<u8>>,
        wrapped_recovery: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        self.with(|s| {
            if !s.users.contains_key(&user) {
                return Err(StoreError::UserNotFound);
            }
            let (r, _) = s.backups.entry(user).or_default();
            if wrapped_password.is_some() {
                r.wrapped_password = wrapped_password;
            }
            if wrapped_recovery.is_some() {
                r.wrapped_recovery = wrapped_recovery;
            }
            Ok(())
        })
    }

    async fn append_backup(&self, c: NewBackupChunk) -> Result<u64, StoreError> {
        self.with(|s| {
            if !s.users.contains_key(&c.user) {
                return Err(StoreError::UserNotFound);
            }
            let (r, chunks) = s.backups.entry(c.user).or_default();
            if c.index != r.count {
                return Err(StoreError::BackupConflict { count: r.count });
            }
            let bytes = r.bytes + c.chunk.len() as u64;
            if bytes > c.max_bytes {
                return Err(StoreError::QuotaExceeded {
                    quota: Quota::BackupBytes,
                    limit: c.max_bytes,
                });
            }
            chunks.push(c.chunk);
            r.count += 1;
            r.bytes = bytes;
            r.head = c.head;
            r.updated_ms = c.now_ms;
            Ok(r.count)
        })
    }

    async fn backup_chunks(
        &self,
        user: UserId,
        from: u64,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.with(|s| {
            let mut out = Vec::new();
            let mut total = 0usize;
            if let Some((_, chunks)) = s.backups.get(&user) {
                for (i, c) in chunks.iter().enumerate().skip(from as usize) {
                    if !out.is_empty() && total + c.len() > max_bytes {
                        break;
                    }
                    total += c.len();
                    out.push((i as u64, c.clone()));
                }
            }
            Ok(out)
        })
    }

    async fn count_failures(
        &self,
        kind: &str,
        key: &[u8],
        add: u32,
        now: i64,
        window_secs: i64,
    ) -> Result<crate::FailureCount, StoreError> {
        self.with(|s| {
            let id = (kind.to_owned(), key.to_vec());
            if add == 0 {
                // A read: no window begins.
                let (count, since) = match s.failures.get(&id) {
                    Some(&(c, since)) if now < since.saturating_add(window_secs) => (c, since),
                    _ => (0, now),
                };
                return Ok(crate::FailureCount { count, since });
            }
            let entry = s.failures.entry(id).or_insert((0, now));
            if now >= entry.1.saturating_add(window_secs) {
                *entry = (0, now);
            }
            entry.0 = entry.0.saturating_add(add);
            Ok(crate::FailureCount {
                count: entry.0,
                since: entry.1,
            })
        })
    }

    async fn clear_failures(&self, kind: &str, key: &[u8]) -> Result<(), StoreError> {
        self.with(|s| {
            s.failures.remove(&(kind.to_owned(), key.to_vec()));
            Ok(())
        })
    }

    async fn prune(
        &self,
        expire_before_ms: i64,
        idempotency_before_ms: i64,
    ) -> Result<Pruned, StoreError> {
        self.with(|s| {
            let old: Vec<u64> = s
                .held
                .iter()
                .filter(|(_, h)| h.at < expire_before_ms)
                .map(|(id, _)| *id)
                .collect();
            for id in old {
                s.remove_held(id);
            }
            let expired: Vec<(u64, DeviceId)> = s
                .deliveries
                .iter()
                .filter(|(_, (_, m))| s.messages.get(m).is_some_and(|m| m.at < expire_before_ms))
                .map(|(id, (d, _))| (*id, *d))
                .collect();
            for (id, device) in &expired {
                s.remove_delivery(*id);
                *s.missed.entry(*device).or_default() += 1;
            }
            let before = s.sent.len() + s.handshakes.len();
            s.sent
                .retain(|_, d| d.stored_at_ms >= idempotency_before_ms);
            s.handshakes
                .retain(|_, d| d.stored_at_ms >= idempotency_before_ms);
            Ok(Pruned {
                expired_entries: expired.len() as u64,
                idempotency_records: (before - s.sent.len() - s.handshakes.len()) as u64,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_store_passes_conformance() {
        crate::conformance::run(&super::MemoryStore::new()).await;
    }

    #[tokio::test]
    async fn memory_store_keeps_its_guarantees_under_concurrency() {
        crate::conformance::run_concurrent(&super::MemoryStore::new()).await;
    }
}
