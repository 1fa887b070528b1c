//! Named groups (`#team`) and membership in every conversation: creating, adding and
//! removing members, leaving, the devices of a user following that user (P534), and
//! the policy every member enforces on commits. The policy lives in the group's
//! signed MLS state (name and admins, P530): a commit that breaks it is refused by
//! every client and reported, whatever the server relays.
//!
//! Every commit goes through [`Messenger::commit`]: recorded, then sent, then settled
//! ([`crate::handshake`]), rebuilt at the new epoch when another commit won.
use std::collections::{BTreeMap, BTreeSet};

use hush_crypto::conversation::{Conversation, PendingCommit, PendingProposal};
use hush_crypto::identity::validate_key_package;
use hush_proto::ErrorCode;
use hush_proto::content::ContentBody;
use hush_proto::content::{GroupName, GroupState};
use hush_proto::ids::{DeviceId, GroupId, Username};
use hush_proto::pb::{self, client_frame::Body};
use hush_proto::response::{Entry, Response};
use rusqlite::{OptionalExtension, params};
use sha2::{Digest, Sha256};

use crate::ClientError;
use crate::connection::unexpected;
use crate::events::{MembershipKind, SecurityKind};
use crate::handshake::{Effects, Request};
use crate::home::home_err;
use crate::identities::Pin;
use crate::messaging::{Alert, Lookup, Messenger, Names, now_ms, random16, stored_group};
use crate::mls::Provider;
use hush_crypto::account::AccountPublicKey;

/// Tries of one commit across concurrent commits by others (P430).
const COMMIT_ATTEMPTS: usize = 5;

/// A member as the MLS roster shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub username: String,
    pub devices: usize,
    pub admin: bool,
}

/// A commit built at the group's current epoch, with what it means locally.
pub(crate) struct Built {
    pub commit: Vec<u8>,
    pub welcome: Option<Vec<u8>>,
    pub added: Vec<DeviceId>,
    pub removed: Vec<DeviceId>,
    pub effects: Effects,
}

type KeyPackage = hush_crypto::openmls::prelude::KeyPackage;

/// Users of a roster (user → devices).
fn roster(conv: &Conversation, names: &Names) -> BTreeMap<String, usize> {
    let mut users = BTreeMap::new();
    for d in conv.members() {
        *users.entry(names.of(&d)).or_insert(0) += 1;
    }
    users
}

impl Messenger<'_> {
    /// The local group called `name`.
    pub(crate) fn group_id(&self, name: &GroupName) -> Result<GroupId, ClientError> {
        if let Some(group) = self.conversation_id(&name.to_string(), "group")? {
            return Ok(group);
        }
        if self.conversation_id(&name.to_string(), "left")?.is_some() {
            return Err(ClientError::Invalid(format!("you are no longer in {name}")));
        }
        Err(ClientError::Invalid(format!(
            "you are not in a group called {name}"
        )))
    }

    /// The conversation leaves `chats`, its history kept (inside the caller's
    /// transaction).
    fn set_left(&self, group: GroupId) -> Result<(), ClientError> {
        self.home
            .db()
            .execute(
                "UPDATE conversations SET kind = 'left' WHERE group_id = ?1",
                [group.as_bytes().as_slice()],
            )
            .map_err(home_err)?;
        Ok(())
    }

    /// This device is no longer in `group` (a commit removed it, or its group was
    /// deleted): its MLS state is dropped, so a later Welcome or join works, and the
    /// conversation is kept as left (inside the caller's transaction).
    pub(crate) fn evicted(&self, group: GroupId) -> Result<(), ClientError> {
        if let Some(conv) = Conversation::load(&self.provider(), group)? {
            conv.delete(&self.provider())?;
        }
        self.set_left(group)?;
        // What waited in the outbox can never go: shown as failed, not lost silently.
        self.home
            .db()
            .execute(
                "UPDATE history SET state = 'failed' WHERE outgoing = 1 AND message_id IN
                   (SELECT lower(hex(message_id)) FROM outbox WHERE group_id = ?1)",
                [group.as_bytes().as_slice()],
            )
            .map_err(home_err)?;
        self.home
            .db()
            .execute(
                "DELETE FROM outbox WHERE group_id = ?1",
                [group.as_bytes().as_slice()],
            )
            .map_err(home_err)?;
        tracing::info!(group = %group, "this device is no longer in a conversation");
        Ok(())
    }

    /// A conversation's MLS group from this home's storage.
    pub(crate) fn load_group(
        &self,
        provider: &Provider<'_>,
        group: GroupId,
    ) -> Result<Conversation, ClientError> {
        Conversation::load(provider, group)?.ok_or_else(|| {
            ClientError::Invalid("the conversation is missing from this home".into())
        })
    }

    /// Writes a membership event (inside the caller's transaction).
    pub(crate) fn membership_event(
        &self,
        group: GroupId,
        at_ms: i64,
        kind: MembershipKind,
        member: &str,
        by: &str,
    ) -> Result<usize, ClientError> {
        self.home
            .db()
            .execute(
                "INSERT INTO history (group_id, kind, sender, sent_at, text, state, unread)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'received', 1)",
                params![
                    group.as_bytes().as_slice(),
                    kind.as_str(),
                    by,
                    at_ms,
                    member
                ],
            )
            .map_err(home_err)?;
        Ok(1)
    }

    /// Users of the roster (user → devices), from MLS state.
    pub(crate) async fn roster_of(
        &self,
        conv: &Conversation,
    ) -> Result<BTreeMap<String, usize>, ClientError> {
        Ok(roster(conv, &self.names(&conv.members()).await?))
    }

    /// Claims and verifies a key package for every device of `users`, except this one.
    /// A device is kept only if its certificate is signed by the account key pinned for
    /// its user (trust on first use when none is pinned and the server's published key
    /// agrees, P543). Others are refused and reported once (`device_refused`, or
    /// `identity_changed` when the server presents another key for the user).
    pub(crate) async fn key_packages(
        &self,
        users: &[Username],
    ) -> Result<(Vec<KeyPackage>, Vec<DeviceId>), ClientError> {
        let answer = self
            .conn
            .request(Body::ClaimKeyPackages(pb::ClaimKeyPackages {
                usernames: users.iter().map(|u| u.to_string()).collect(),
            }))
            .await?;
        let Response::KeyPackages(claimed) = answer else {
            return Err(unexpected(&answer));
        };
        let provider = self.provider();
        let mut checked = Vec::new();
        let mut refused: Vec<(DeviceId, String, String)> = Vec::new();
        for c in claimed
            .iter()
            .filter(|c| c.device != self.account.device_id)
        {
            // P547: a device its account revoked is never added, whatever is claimed.
            if self.revoked(&c.device)? {
                tracing::warn!(device = %c.device, user = %c.username, "the server handed out a key package of a revoked device");
                continue;
            }
            match validate_key_package(&provider, &c.key_package, c.device) {
                Ok((kp, cert)) => checked.push((kp, c, cert)),
                Err(e) => refused.push((c.device, c.username.to_string(), e.to_string())),
            }
        }
        let (packages, devices) = self.home.write(|| {
            let mut packages = Vec::new();
            let mut devices = Vec::new();
            for (kp, c, cert) in checked {
                let user = c.username.as_str();
                let published = c
                    .account_key
                    .and_then(|k| AccountPublicKey::from_slice(k.as_bytes()).ok());
                if let Some(p) = published
                    && p != cert.account
                {
                    refused.push((
                        c.device,
                        user.to_owned(),
                        format!(
                            "device {} is not signed by {user}'s published account key",
                            c.device
                        ),
                    ));
                    continue;
                }
                match self.home.pin(user, &cert.account)? {
                    (Pin::Trusted | Pin::New, _) => {
                        self.home.note_device(c.device, &cert.account)?;
                        packages.push(kp);
                        devices.push(c.device);
                    }
                    (Pin::Mismatch, fresh) => {
                        if fresh {
                            self.identity_changed(user, &cert.account)?;
                        }
                        refused.push((
                            c.device,
                            user.to_owned(),
                            format!(
                                "device {} is signed by an account key that is not the one \
                                 pinned for {user}",
                                c.device
                            ),
                        ));
                    }
                }
            }
            for (device, user, reason) in &refused {
                self.device_refused(*device, user, reason)?;
            }
            Ok((packages, devices))
        })?;
        for u in users.iter().filter(|u| **u != self.account.username) {
            if !claimed
                .iter()
                .any(|c| &c.username == u && devices.contains(&c.device))
            {
                return Err(ClientError::Invalid(format!(
                    "{u} has no device this client can trust to receive messages yet"
                )));
            }
        }
        Ok((packages, devices))
    }

    /// Reports a refused device once, in every conversation with its claimed user.
    fn device_refused(
        &self,
        device: DeviceId,
        user: &str,
        reason: &str,
    ) -> Result<(), ClientError> {
        let first = self
            .home
            .db()
            .execute(
                "INSERT OR IGNORE INTO refused_devices (device_id, username, reason, at) VALUES (?1, ?2, ?3, ?4)",
                params![device.as_bytes().as_slice(), user, reason, now_ms()],
            )
            .map_err(home_err)?
            == 1;
        tracing::warn!(%device, %user, %reason, "refused a device");
        if first {
            for g in self.conversations_with(user)? {
                self.alert(
                    g,
                    now_ms(),
                    Alert {
                        kind: SecurityKind::DeviceRefused,
                        rejection: Some(hush_crypto::Rejection::Identity),
                        from: Some(user.to_owned()),
                        device: Some(device),
                        reason: format!("{reason}; it is not added or encrypted to"),
                    },
                )?;
            }
        }
        Ok(())
    }

    /// Devices refused before: not claimed again.
    fn refused(&self, device: &DeviceId) -> Result<bool, ClientError> {
        Ok(self
            .home
            .db()
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM refused_devices WHERE device_id = ?1)",
                [device.as_bytes().as_slice()],
                |r| r.get(0),
            )
            .map_err(home_err)?
            || self.revoked(device)?)
    }

    /// P547: whether the device's account revoked it (this home saw the statement).
    pub(crate) fn revoked(&self, device: &DeviceId) -> Result<bool, ClientError> {
        self.home
            .db()
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM revoked_devices WHERE device_id = ?1)",
                [device.as_bytes().as_slice()],
                |r| r.get(0),
            )
            .map_err(home_err)
    }

    /// P547: remembers a revocation once it verifies against the account key this home
    /// trusts for `user` (its own, for this account); others are ignored.
    fn note_revocation(
        &self,
        user: &str,
        device: DeviceId,
        statement: &[u8],
    ) -> Result<(), ClientError> {
        let trusted = if user == self.account.username.as_str() {
            self.home.account_key()?.map(|k| k.public())
        } else {
            self.home.contact(user)?.map(|c| c.account_key)
        };
        let Some(key) = trusted.filter(|k| k.revoked(device, statement)) else {
            tracing::warn!(user, %device, "ignored a revocation that does not verify");
            return Ok(());
        };
        let fresh = self
            .home
            .db()
            .execute(
                "INSERT OR IGNORE INTO revoked_devices (device_id, username, account_key, statement)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    device.as_bytes().as_slice(),
                    user,
                    key.as_bytes().as_slice(),
                    statement
                ],
            )
            .map_err(home_err)?;
        if fresh > 0 {
            tracing::info!(user, %device, "a device was revoked by its account");
        }
        Ok(())
    }

    /// Creates `#name` with this user as its admin, adding every device of `members` and
    /// this user's other devices in one batched commit (P420, P422, P423).
    pub(crate) async fn create_group(
        &self,
        name: &GroupName,
        members: &[Username],
        channel: Option<pb::ChannelSettings>,
    ) -> Result<(), ClientError> {
        let admins = vec![self.account.username.clone()];
        self.create_group_as(name, members, channel, admins).await
    }

    /// [`Messenger::create_group`] with the signed state's admins given: none for the
    /// server's lobby (P556), which the server's admins own, not its first joiner.
    pub(crate) async fn create_group_as(
        &self,
        name: &GroupName,
        members: &[Username],
        channel: Option<pb::ChannelSettings>,
        admins: Vec<Username>,
    ) -> Result<(), ClientError> {
        self.sync().await?;
        let mut users: Vec<Username> = members
            .iter()
            .filter(|m| **m != self.account.username)
            .cloned()
            .collect();
        users.sort();
        users.dedup();
        let mut claim = users.clone();
        claim.push(self.account.username.clone());
        let (packages, devices) = self.key_packages(&claim).await?;
        let state = GroupState {
            name: name.clone(),
            admins,
            joinable: channel.is_some(),
            deleted: false,
        };
        let group = GroupId::from_bytes(random16());
        let provider = self.provider();
        let added: Vec<String> = users.iter().map(|u| u.to_string()).collect();
        self.home.write(|| {
            let mut conv = Conversation::create_named(&provider, self.identity, group, &state)?;
            let welcome = if packages.is_empty() {
                // P420: the server registers the group at epoch 1.
                conv.begin(&provider, self.identity)?;
                None
            } else {
                Some(conv.add(&provider, self.identity, &packages)?.welcome)
            };
            // P438: the server checks every later commit against the state this
            // GroupInfo starts; P552: a channel's first joiner joins from it.
            let info = conv
                .take_group_info()
                .ok_or_else(|| ClientError::Invalid("no group info to publish".into()))?;
            let channel = channel.clone().map(|c| pb::ChannelSettings {
                group_info: info.clone().into(),
                ..c
            });
            let mut all = vec![self.account.device_id];
            all.extend(devices.iter().copied());
            let request = pb::CreateGroup {
                group_id: group.as_bytes().to_vec().into(),
                direct_peer: String::new(),
                name: name.bare().to_owned(),
                welcome: welcome.unwrap_or_default().into(),
                members: all.iter().map(|d| d.as_bytes().to_vec().into()).collect(),
                client_key: random16().to_vec().into(),
                channel,
                group_info: info.into(),
            };
            self.record_handshake(
                group,
                Request::Create(request),
                &Effects::conversation(&name.to_string(), "group")
                    .with_events(MembershipKind::Added, &added),
            )
        })?;
        self.settle(group).await.map_err(|e| match e {
            ClientError::Server(se) if se.code == ErrorCode::GroupExists => {
                ClientError::Invalid(format!("a group or channel called {name} already exists"))
            }
            other => other,
        })
    }

    /// Commits a change at the group's current epoch: `prepare` gathers what the change
    /// needs from the network, `build` stages it (or returns `None` when nothing is left
    /// to do), and the commit is recorded, sent and settled; after a concurrent commit
    /// won, it is built again (P430, P532). Returns whether a commit was made.
    pub(crate) async fn commit<P>(
        &self,
        group: GroupId,
        mut prepare: impl AsyncFnMut() -> Result<P, ClientError>,
        mut build: impl FnMut(&mut Conversation, P) -> Result<Option<Built>, ClientError>,
    ) -> Result<bool, ClientError> {
        let provider = self.provider();
        for _ in 0..COMMIT_ATTEMPTS {
            // Ours from an earlier try must be settled before a new one is built.
            self.settle(group).await?;
            let input = prepare().await?;
            let recorded = self.home.write(|| {
                let mut conv = self.load_group(&provider, group)?;
                let epoch = conv.epoch();
                let Some(mut b) = build(&mut conv, input)? else {
                    return Ok(false);
                };
                // P438: the routing header is what the commit does, proposals it
                // includes by reference too.
                if let Some((added, removed)) = conv.pending_changes() {
                    b.added = added;
                    b.removed = removed;
                }
                // P552: a channel's server keeps the GroupInfo of each new epoch for
                // joiners; other groups' never leaves this device.
                let info = conv.take_group_info().filter(|_| conv.joinable());
                // P438: the proposals it includes by reference, for the server's check.
                let proposals = self.proposal_messages(group, epoch)?;
                let request = pb::Commit {
                    group_id: group.as_bytes().to_vec().into(),
                    epoch,
                    commit: b.commit.into(),
                    welcome: b.welcome.unwrap_or_default().into(),
                    added: b
                        .added
                        .iter()
                        .map(|d| d.as_bytes().to_vec().into())
                        .collect(),
                    removed: b
                        .removed
                        .iter()
                        .map(|d| d.as_bytes().to_vec().into())
                        .collect(),
                    client_key: random16().to_vec().into(),
                    group_info: info.unwrap_or_default().into(),
                    external: false,
                    proposals: proposals.into_iter().map(Into::into).collect(),
                    base_group_info: Default::default(),
                };
                self.record_handshake(group, Request::Commit(request), &b.effects)?;
                Ok(true)
            })?;
            if !recorded {
                return Ok(false);
            }
            match self.settle(group).await {
                Ok(()) => return Ok(true),
                // Someone else's commit won this epoch: catch up, then build ours again.
                Err(ClientError::Server(e)) if e.code == ErrorCode::StaleEpoch => {
                    tracing::info!(group = %group, "another commit won this epoch; rebuilding ours");
                    self.catch_up().await?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::Invalid(
            "the group kept changing; try again".into(),
        ))
    }

    /// P438: keeps a proposal of `epoch` as relayed, for a commit that includes it;
    /// proposals of earlier epochs go (a commit ends their epoch).
    pub(crate) fn keep_proposal(
        &self,
        group: GroupId,
        epoch: u64,
        payload: &[u8],
    ) -> Result<(), ClientError> {
        let db = self.home.db();
        let g = group.as_bytes().as_slice();
        db.execute(
            "DELETE FROM proposal_messages WHERE group_id = ?1 AND epoch < ?2",
            params![g, epoch as i64],
        )
        .map_err(home_err)?;
        db.execute(
            "INSERT OR IGNORE INTO proposal_messages (group_id, epoch, payload) VALUES (?1, ?2, ?3)",
            params![g, epoch as i64, payload],
        )
        .map_err(home_err)?;
        Ok(())
    }

    /// The kept proposals of `group` at `epoch`.
    fn proposal_messages(&self, group: GroupId, epoch: u64) -> Result<Vec<Vec<u8>>, ClientError> {
        let mut stmt = self
            .home
            .db()
            .prepare(
                "SELECT payload FROM proposal_messages WHERE group_id = ?1 AND epoch = ?2 ORDER BY rowid",
            )
            .map_err(home_err)?;
        let rows = stmt
            .query_map(params![group.as_bytes().as_slice(), epoch as i64], |r| {
                r.get(0)
            })
            .map_err(home_err)?;
        rows.collect::<Result<_, _>>().map_err(home_err)
    }

    fn require_admin(
        &self,
        conv: &Conversation,
        name: &GroupName,
    ) -> Result<GroupState, ClientError> {
        let state = conv
            .state()
            .ok_or_else(|| ClientError::Invalid(format!("{name} is not a named group")))?;
        if !state.is_admin(self.account.username.as_str()) {
            return Err(ClientError::Invalid(format!(
                "only admins of {name} can do that ({})",
                state
                    .admins
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(state)
    }

    /// Catches up, then checks this user administers `#name`; returns the group and
    /// its roster (user → devices) for the change about to be made.
    async fn as_admin(
        &self,
        name: &GroupName,
    ) -> Result<(GroupId, BTreeMap<String, usize>), ClientError> {
        self.sync().await?;
        let group = self.group_id(name)?;
        let conv = self.load_group(&self.provider(), group)?;
        self.require_admin(&conv, name)?;
        Ok((group, self.roster_of(&conv).await?))
    }

    /// Adds every device of `users` to `#name` in one commit.
    pub(crate) async fn add_members(
        &self,
        name: &GroupName,
        users: &[Username],
    ) -> Result<(), ClientError> {
        let (group, roster) = self.as_admin(name).await?;
        if let Some(u) = users.iter().find(|u| roster.contains_key(u.as_str())) {
            return Err(ClientError::Invalid(format!("{u} is already in {name}")));
        }
        let provider = self.provider();
        let added: Vec<String> = users.iter().map(|u| u.to_string()).collect();
        self.commit(
            group,
            async || Ok(self.key_packages(users).await?.0),
            |conv, kps: Vec<KeyPackage>| {
                let devices: Vec<DeviceId> = kps
                    .iter()
                    .filter_map(|kp| {
                        hush_crypto::identity::device_of(kp.leaf_node().credential()).ok()
                    })
                    .collect();
                let a = conv.add(&provider, self.identity, &kps)?;
                Ok(Some(Built {
                    commit: a.commit,
                    welcome: Some(a.welcome),
                    added: devices,
                    removed: Vec::new(),
                    effects: Effects::events("adding members", MembershipKind::Added, &added),
                }))
            },
        )
        .await?;
        Ok(())
    }

    /// Makes `users` admins of `#name` (admins only), in a commit of the signed state.
    pub(crate) async fn promote(
        &self,
        name: &GroupName,
        users: &[Username],
    ) -> Result<(), ClientError> {
        let (group, roster) = self.as_admin(name).await?;
        if let Some(u) = users.iter().find(|u| !roster.contains_key(u.as_str())) {
            return Err(ClientError::Invalid(format!("{u} is not in {name}")));
        }
        let provider = self.provider();
        let promoted: Vec<String> = users.iter().map(|u| u.to_string()).collect();
        self.commit(
            group,
            async || Ok(()),
            |conv, ()| {
                let mut state = self.require_admin(conv, name)?;
                let new: Vec<String> = users
                    .iter()
                    .filter(|u| !state.is_admin(u.as_str()))
                    .map(|u| u.to_string())
                    .collect();
                if new.is_empty() {
                    return Ok(None);
                }
                for u in users {
                    if !state.is_admin(u.as_str()) {
                        state.admins.push(u.clone());
                    }
                }
                let commit = conv.set_state(&provider, self.identity, &state)?;
                Ok(Some(Built {
                    commit,
                    welcome: None,
                    added: Vec::new(),
                    removed: Vec::new(),
                    effects: Effects::events("promoting", MembershipKind::Promoted, &promoted),
                }))
            },
        )
        .await?;
        // P555: the server learns a channel's admins from the members' signed state.
        let conv = self.load_group(&provider, group)?;
        if let Some(state) = conv.state().filter(|s| s.joinable) {
            self.publish_channel_admins(name, &state.admins).await?;
        }
        Ok(())
    }

    /// Removes every device of `users` from `#name` in one commit.
    pub(crate) async fn remove_members(
        &self,
        name: &GroupName,
        users: &[Username],
    ) -> Result<(), ClientError> {
        self.sync().await?;
        let group = self.group_id(name)?;
        let conv = self.load_group(&self.provider(), group)?;
        self.require_admin(&conv, name)?;
        let owners = self.names(&conv.members()).await?;
        let targets: Vec<DeviceId> = conv
            .members()
            .into_iter()
            .filter(|d| users.iter().any(|x| x.as_str() == owners.of(d)))
            .collect();
        if let Some(u) = users
            .iter()
            .find(|u| !conv.members().iter().any(|d| owners.of(d) == u.as_str()))
        {
            return Err(ClientError::Invalid(format!("{u} is not in {name}")));
        }
        let removed: Vec<String> = users.iter().map(|u| u.to_string()).collect();
        self.remove_devices(
            group,
            &targets,
            Effects::events("removing members", MembershipKind::Removed, &removed),
        )
        .await?;
        Ok(())
    }

    /// Commits the removal of these devices, whoever asks (policy is for receivers).
    pub(crate) async fn remove_devices(
        &self,
        group: GroupId,
        devices: &[DeviceId],
        effects: Effects,
    ) -> Result<bool, ClientError> {
        let provider = self.provider();
        let mut effects = Some(effects);
        self.commit(
            group,
            async || Ok(()),
            |conv, ()| {
                let current: BTreeSet<DeviceId> = conv.members().into_iter().collect();
                let targets: Vec<DeviceId> = devices
                    .iter()
                    .copied()
                    .filter(|d| current.contains(d))
                    .collect();
                if targets.is_empty() {
                    return Ok(None);
                }
                let commit = conv.remove(&provider, self.identity, &targets)?;
                Ok(Some(Built {
                    commit,
                    welcome: None,
                    added: Vec::new(),
                    removed: targets,
                    effects: effects.take().unwrap_or_default(),
                }))
            },
        )
        .await
    }

    /// The roster of `#name` from MLS state, with admin flags from the signed state.
    pub(crate) async fn members(&self, name: &GroupName) -> Result<Vec<Member>, ClientError> {
        self.sync().await?;
        let group = self.group_id(name)?;
        let conv = self.load_group(&self.provider(), group)?;
        let state = conv.state();
        Ok(self
            .roster_of(&conv)
            .await?
            .into_iter()
            .map(|(username, devices)| Member {
                admin: state.as_ref().is_some_and(|s| s.is_admin(&username)),
                username,
                devices,
            })
            .collect())
    }

    /// Every device of `users` as the server lists them (P413), with the account keys it
    /// publishes for them checked against the pins.
    pub(crate) async fn list_devices(
        &self,
        users: &[String],
    ) -> Result<BTreeMap<String, BTreeSet<DeviceId>>, ClientError> {
        Ok(self.list_devices_and_keys(users).await?.0)
    }

    /// P547, P543: whether the server publishes for this account a key that is not the
    /// one this home holds (someone could pose as this user to everyone who meets it
    /// next): a warning to show, checked even before the first conversation. Learns
    /// this account's revocations on the way.
    pub(crate) async fn own_identity_warning(&self) -> Result<Option<String>, ClientError> {
        let me = self.account.username.to_string();
        let (listed, published) = self
            .list_devices_and_keys(std::slice::from_ref(&me))
            .await?;
        let Some(mine) = self.home.account_key()?.map(|k| k.public()) else {
            return Ok(None);
        };
        if let Some(p) = published.get(&me).filter(|p| **p != mine) {
            return Ok(Some(format!(
                "the server publishes account key {p} for you, but this account's key is \
                 {mine}: someone may be posing as you to others; tell your server's operator"
            )));
        }
        // A device listed for this account that this home never saw certified: its key
        // package's certificate decides (a ghost is refused and remembered, P543).
        let mut unknown = Vec::new();
        for d in listed.get(&me).into_iter().flatten() {
            if *d != self.account.device_id
                && self.home.account_of(d)?.is_none()
                && !self.refused(d)?
            {
                unknown.push(*d);
            }
        }
        if !unknown.is_empty()
            && let Err(e) = self
                .key_packages(std::slice::from_ref(&self.account.username))
                .await
        {
            tracing::warn!(error = %e, "could not check this account's listed devices");
        }
        // Said for as long as the server lists it (revoked devices are left out above).
        let mut ghosts = Vec::new();
        for d in listed.get(&me).into_iter().flatten() {
            if *d != self.account.device_id && self.refused(d)? {
                ghosts.push(d.to_string());
            }
        }
        Ok((!ghosts.is_empty()).then(|| {
            format!(
                "the server lists device {} for you, which your account key never \
                 certified: it is never added to your conversations; tell your server's operator",
                ghosts.join(", ")
            )
        }))
    }

    /// [`Messenger::list_devices`], with the account keys the server published.
    #[allow(clippy::type_complexity)]
    async fn list_devices_and_keys(
        &self,
        users: &[String],
    ) -> Result<
        (
            BTreeMap<String, BTreeSet<DeviceId>>,
            BTreeMap<String, AccountPublicKey>,
        ),
        ClientError,
    > {
        let answer = self
            .conn
            .request(Body::ListDevices(pb::ListDevices {
                usernames: users.to_vec(),
            }))
            .await?;
        let Response::Devices(listed) = answer else {
            return Err(unexpected(&answer));
        };
        let mut out: BTreeMap<String, BTreeSet<DeviceId>> = BTreeMap::new();
        let mut published: BTreeMap<String, AccountPublicKey> = BTreeMap::new();
        let mut revocations = Vec::new();
        for o in listed {
            if let Some(k) = o
                .account_key
                .and_then(|k| AccountPublicKey::from_slice(k.as_bytes()).ok())
            {
                published.insert(o.username.to_string(), k);
            }
            match o.revocation {
                Some(r) => revocations.push((o.username.to_string(), o.device, r)),
                None => {
                    out.entry(o.username.to_string())
                        .or_default()
                        .insert(o.device);
                }
            }
        }
        let me = self.account.username.as_str();
        // P543, P544: the published key is pinned on first sight; another one later is
        // an identity change (never trusted by itself). This account's own key is not
        // pinned from the server: it is the one this home holds (see
        // `own_identity_warning`).
        self.home.write(|| {
            for (user, key) in published.iter().filter(|(u, _)| u.as_str() != me) {
                if let (Pin::Mismatch, true) = self.home.pin(user, key)? {
                    self.identity_changed(user, key)?;
                }
            }
            for (user, device, statement) in &revocations {
                self.note_revocation(user, *device, statement)?;
            }
            Ok(())
        })?;
        // P547: a device revoked once stays out, whatever the server lists now.
        for devices in out.values_mut() {
            devices.retain(|d| !self.revoked(d).unwrap_or(true));
        }
        Ok((out, published))
    }

    /// P534: every device of a user belongs to that user's conversations. Adds this
    /// user's devices missing from its conversations, and in 1:1 conversations the
    /// peer's too (a new login on either side), in one commit per conversation.
    pub(crate) async fn reconcile_devices(&self) -> Result<(), ClientError> {
        let convs = self.home.live_conversations()?;
        if convs.is_empty() {
            return Ok(());
        }
        let me = self.account.username.to_string();
        let mut users: BTreeSet<String> = convs
            .iter()
            .filter(|(_, _, kind)| kind == "direct")
            .map(|(_, name, _)| name.clone())
            .collect();
        users.insert(me.clone());
        let users: Vec<String> = users.into_iter().collect();
        let listed = match self.list_devices(&users).await {
            Ok(l) => l,
            // A peer whose account is gone: reconcile this user's own devices only.
            Err(ClientError::Server(e)) if e.code == ErrorCode::NotFound => {
                self.list_devices(std::slice::from_ref(&me)).await?
            }
            Err(e) => return Err(e),
        };
        let provider = self.provider();
        for (group, name, kind) in convs {
            let Some(conv) = Conversation::load(&provider, group)? else {
                continue;
            };
            if !conv.is_active() {
                // Removed while an older version of hush kept the dead state.
                self.home.write(|| self.evicted(group))?;
                continue;
            }
            let roster: BTreeSet<DeviceId> = conv.members().into_iter().collect();
            let mut wanted: Vec<String> = vec![me.clone()];
            if kind == "direct" {
                wanted.push(name.clone());
            }
            let missing: BTreeMap<DeviceId, String> = wanted
                .iter()
                .flat_map(|u| {
                    listed
                        .get(u)
                        .into_iter()
                        .flatten()
                        .filter(|d| !roster.contains(d))
                        .filter(|d| !self.refused(d).unwrap_or(false))
                        .map(move |d| (*d, u.clone()))
                })
                .collect();
            if missing.is_empty() {
                continue;
            }
            let owners: Vec<Username> = missing
                .values()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .filter_map(|u| Username::parse(u).ok())
                .collect();
            let result = self
                .commit(
                    group,
                    async || self.key_packages(&owners).await,
                    |conv, (kps, devices): (Vec<KeyPackage>, Vec<DeviceId>)| {
                        let now: BTreeSet<DeviceId> = conv.members().into_iter().collect();
                        let (kps, ds): (Vec<_>, Vec<_>) = kps
                            .into_iter()
                            .zip(devices)
                            .filter(|(_, d)| missing.contains_key(d) && !now.contains(d))
                            .unzip();
                        if kps.is_empty() {
                            return Ok(None);
                        }
                        let a = conv.add(&provider, self.identity, &kps)?;
                        let alerts = ds
                            .iter()
                            .filter_map(|d| {
                                let owner = missing.get(d)?;
                                Some((
                                    SecurityKind::NewDevice.as_str().to_owned(),
                                    owner.clone(),
                                    d.to_string(),
                                    format!(
                                        "{owner} has a new device {d} in this conversation (added by {me})"
                                    ),
                                ))
                            })
                            .collect();
                        Ok(Some(Built {
                            commit: a.commit,
                            welcome: Some(a.welcome),
                            added: ds,
                            removed: Vec::new(),
                            effects: Effects {
                                alerts,
                                what: "adding new devices".into(),
                                ..Effects::default()
                            },
                        }))
                    },
                )
                .await;
            match result {
                Ok(true) => tracing::info!(group = %group, "added new devices"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(group = %group, error = %e, "could not add new devices")
                }
            }
        }
        Ok(())
    }

    /// Whether this home left the group and told the others already; traffic for it is
    /// then ignored. While the leave is still pending, traffic is processed, so the
    /// removal proposals can follow the group's epoch.
    pub(crate) fn has_left(&self, group: GroupId) -> Result<bool, ClientError> {
        let g = group.as_bytes().as_slice();
        let kind: Option<String> = self
            .home
            .db()
            .query_row(
                "SELECT kind FROM conversations WHERE group_id = ?1",
                [g],
                |r| r.get(0),
            )
            .optional()
            .map_err(home_err)?;
        if kind.as_deref() != Some("left") {
            return Ok(false);
        }
        let pending: bool = self
            .home
            .db()
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM pending_leaves WHERE group_id = ?1)",
                [g],
                |r| r.get(0),
            )
            .map_err(home_err)?;
        Ok(!pending)
    }

    /// Leaves `#name`: recorded at once (the group leaves `chats`), then this user's
    /// devices propose their removal, which the next commit by any member applies.
    /// The last admin must promote a successor first, so no group is orphaned.
    pub(crate) async fn leave(&self, name: &GroupName) -> Result<(), ClientError> {
        self.sync().await?;
        let group = self.group_id(name)?;
        let conv = self.load_group(&self.provider(), group)?;
        let names = self.names(&conv.members()).await?;
        let users = roster(&conv, &names);
        let me = self.account.username.as_str();
        if let Some(state) = conv.state()
            && state.is_admin(me)
        {
            let other_admins = users.keys().any(|u| u != me && state.is_admin(u));
            let others = users.keys().any(|u| u != me);
            if others && !other_admins {
                return Err(ClientError::Invalid(format!(
                    "you are the only admin of {name}; name a successor \
                     (`hush group leave {name} --successor USER`) or make someone else \
                     an admin first (`hush group promote {name} USER`)"
                )));
            }
        }
        let db = self.home.db();
        let g = group.as_bytes().as_slice();
        self.home.write(|| {
            self.mark_left(group)?;
            db.execute(
                "INSERT OR IGNORE INTO pending_leaves (group_id) VALUES (?1)",
                [g],
            )
            .map_err(home_err)?;
            Ok(())
        })?;
        self.send_leave(group).await
    }

    /// The group leaves this user's chats, with a `member_left` of its own (inside the
    /// caller's transaction).
    pub(crate) fn mark_left(&self, group: GroupId) -> Result<(), ClientError> {
        self.set_left(group)?;
        let me = self.account.username.as_str();
        self.membership_event(group, now_ms(), MembershipKind::Left, me, me)?;
        Ok(())
    }

    /// Sends this user's removal proposals for a left group, following the group's
    /// epoch; done when the server holds them.
    async fn send_leave(&self, group: GroupId) -> Result<(), ClientError> {
        let conv = self.load_group(&self.provider(), group)?;
        let names = self.names(&conv.members()).await?;
        let mine: Vec<DeviceId> = conv
            .members()
            .into_iter()
            .filter(|d| names.of(d) == self.account.username.as_str())
            .collect();
        self.propose_removal(group, &mine).await?;
        self.home.write(|| {
            self.home
                .db()
                .execute(
                    "DELETE FROM pending_leaves WHERE group_id = ?1",
                    [group.as_bytes().as_slice()],
                )
                .map_err(home_err)?;
            Ok(())
        })
    }

    /// Finishes leaves an interrupted run left pending.
    pub(crate) async fn flush_leaves(&self) -> Result<(), ClientError> {
        let groups: Vec<Vec<u8>> = {
            let mut stmt = self
                .home
                .db()
                .prepare("SELECT group_id FROM pending_leaves")
                .map_err(home_err)?;
            let rows = stmt.query_map([], |r| r.get(0)).map_err(home_err)?;
            rows.collect::<Result<_, _>>().map_err(home_err)?
        };
        for g in groups {
            self.send_leave(stored_group(&g)?).await?;
        }
        Ok(())
    }

    /// Sends Remove proposals for these devices of this user as group traffic (P533).
    /// Each proposal's message id is derived from the group, epoch and device, so a
    /// retry after a lost answer is stored once.
    pub(crate) async fn propose_removal(
        &self,
        group: GroupId,
        devices: &[DeviceId],
    ) -> Result<(), ClientError> {
        let provider = self.provider();
        for _ in 0..COMMIT_ATTEMPTS {
            let (epoch, proposals) = self.home.write(|| {
                let mut conv = self.load_group(&provider, group)?;
                let epoch = conv.epoch();
                let proposals = conv.propose_removal(&provider, self.identity, devices)?;
                // Its own proposals go with a commit this device makes (P438).
                for p in &proposals {
                    self.keep_proposal(group, epoch, p)?;
                }
                Ok((epoch, proposals))
            })?;
            let mut stale = false;
            for (i, p) in proposals.into_iter().enumerate() {
                let id = Sha256::new()
                    .chain_update(b"hush leave proposal")
                    .chain_update(group.as_bytes())
                    .chain_update(epoch.to_be_bytes())
                    .chain_update(self.account.device_id.as_bytes())
                    .chain_update((i as u64).to_be_bytes())
                    .finalize();
                let sent = self
                    .conn
                    .request(Body::Send(pb::Send {
                        group_id: group.as_bytes().to_vec().into(),
                        epoch,
                        ciphertext: p.into(),
                        client_message_id: id[..16].to_vec().into(),
                    }))
                    .await;
                match sent {
                    Ok(Response::Sent { .. }) => {}
                    Ok(other) => return Err(unexpected(&other)),
                    Err(ClientError::Server(e)) if e.code == ErrorCode::StaleEpoch => {
                        stale = true;
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if !stale {
                return Ok(());
            }
            self.catch_up().await?;
        }
        Err(ClientError::Invalid(
            "the group kept changing; try again".into(),
        ))
    }

    /// P546: removes another device of this account from every conversation it is in
    /// (commits from this device), then deletes it on the server, which ends its
    /// sessions at once.
    pub(crate) async fn revoke(&self, device: DeviceId) -> Result<(), ClientError> {
        if device == self.account.device_id {
            return Err(ClientError::Invalid(
                "that is this device; use `hush logout`".into(),
            ));
        }
        self.sync().await?;
        let answer = self
            .conn
            .request(Body::ListMyDevices(pb::ListMyDevices {}))
            .await?;
        let Response::MyDevices(mine) = answer else {
            return Err(unexpected(&answer));
        };
        if !mine.iter().any(|d| d.device == device) {
            return Err(ClientError::Invalid(format!(
                "this account has no device {device}"
            )));
        }
        // P547: the account key says so, and this home remembers it first: no later
        // sync adds the device back, whatever the server lists.
        let key = self
            .home
            .account_key()?
            .ok_or_else(|| home_err("this home has no account key"))?;
        let statement = key.revoke(device);
        let me = self.account.username.to_string();
        self.home
            .write(|| self.note_revocation(&me, device, &statement))?;
        let groups = self.home.live_conversations()?;
        for (group, _, _) in groups {
            let has = Conversation::load(&self.provider(), group)?
                .is_some_and(|c| c.members().contains(&device));
            if has {
                let effects = Effects {
                    alerts: vec![(
                        SecurityKind::DeviceRemoved.as_str().to_owned(),
                        me.clone(),
                        device.to_string(),
                        format!("{me}'s device {device} was revoked and left this conversation"),
                    )],
                    what: "revoking a device".into(),
                    ..Effects::default()
                };
                self.remove_devices(group, &[device], effects).await?;
            }
        }
        match self
            .conn
            .request(Body::RevokeDevice(pb::RevokeDevice {
                device_id: device.as_bytes().to_vec().into(),
                revocation: statement.into(),
            }))
            .await?
        {
            Response::DeviceRevoked => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// This account's devices (P546).
    pub(crate) async fn my_devices(
        &self,
    ) -> Result<Vec<hush_proto::response::DeviceInfo>, ClientError> {
        match self
            .conn
            .request(Body::ListMyDevices(pb::ListMyDevices {}))
            .await?
        {
            Response::MyDevices(d) => Ok(d),
            other => Err(unexpected(&other)),
        }
    }

    /// Before this device logs out: it proposes its own removal from every
    /// conversation with anyone else in it, so members stop encrypting to a dead leaf
    /// once the next of them commits. Best effort: a conversation that fails is logged.
    pub(crate) async fn leave_all_for_logout(&self) -> Result<(), ClientError> {
        self.sync().await?;
        let groups = self.home.live_conversations()?;
        let provider = self.provider();
        let me = self.account.device_id;
        for (group, _, _) in groups {
            let Some(conv) = Conversation::load(&provider, group)? else {
                continue;
            };
            if conv.members().iter().all(|d| *d == me) {
                continue;
            }
            if let Err(e) = self.propose_removal(group, &[me]).await {
                tracing::warn!(group = %group, error = %e, "could not propose this device's removal");
            }
        }
        Ok(())
    }

    /// A member asked to leave (or an admin proposed a removal): checked against the
    /// policy, then queued for the next commit.
    pub(crate) fn on_proposal(
        &self,
        e: &Entry,
        lookup: &Lookup<'_>,
        conv: &mut Conversation,
        p: PendingProposal,
    ) -> Result<usize, ClientError> {
        let provider = self.provider();
        let mut all = conv.members();
        all.push(p.sender);
        let names = lookup.resolve(&all)?;
        let user = |d: &DeviceId| names.of(d);
        let by = user(&p.sender);
        let removes: BTreeSet<String> = p.removes.iter().map(user).collect();
        let state = conv.state();
        let admin = state.as_ref().is_some_and(|s| s.is_admin(&by));
        if p.removes.is_empty() || (!admin && removes.iter().any(|u| *u != by)) {
            return self.alert(
                e.group_id,
                e.stored_at_ms,
                Alert {
                    kind: SecurityKind::ProposalRejected,
                    rejection: None,
                    from: Some(by.clone()),
                    device: Some(p.sender),
                    reason: format!("{by} proposed a change the group's policy does not allow"),
                },
            );
        }
        // A user has left once none of its devices would remain.
        let remaining: BTreeSet<String> = conv
            .members()
            .iter()
            .filter(|d| !p.removes.contains(d))
            .map(user)
            .collect();
        let gone: Vec<String> = removes
            .iter()
            .filter(|u| **u == by && !remaining.contains(*u))
            .cloned()
            .collect();
        let epoch = conv.epoch();
        conv.accept_proposal(&provider, p)?;
        self.keep_proposal(e.group_id, epoch, &e.payload)?;
        let mut events = 0;
        if state.is_some() {
            for u in &gone {
                events += self.membership_event(
                    e.group_id,
                    e.stored_at_ms,
                    MembershipKind::Left,
                    u,
                    &by,
                )?;
            }
        }
        Ok(events)
    }

    /// Commits proposals others queued (a member leaving), so messages can be sent.
    pub(crate) async fn commit_pending_proposals(&self, group: GroupId) -> Result<(), ClientError> {
        let provider = self.provider();
        let pending =
            Conversation::load(&provider, group)?.is_some_and(|c| c.has_pending_proposals());
        if pending {
            self.commit(
                group,
                async || Ok(()),
                |conv, ()| {
                    if !conv.has_pending_proposals() {
                        return Ok(None);
                    }
                    let (commit, removed) = conv.commit_pending(&provider, self.identity)?;
                    Ok(Some(Built {
                        commit,
                        welcome: None,
                        added: Vec::new(),
                        removed,
                        effects: Effects {
                            what: "committing departures".into(),
                            ..Effects::default()
                        },
                    }))
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Sends a text to the named group; returns the history row.
    pub(crate) async fn send_to_group(
        &self,
        name: &GroupName,
        text: &str,
    ) -> Result<i64, ClientError> {
        crate::messaging::check_text(text)?;
        self.send_group_body(name, &ContentBody::Text(text.to_owned()))
            .await
    }

    /// Sends `body` to the named group, after catching up and checking that no
    /// verified member's key changed.
    pub(crate) async fn send_group_body(
        &self,
        name: &GroupName,
        body: &ContentBody,
    ) -> Result<i64, ClientError> {
        self.flush_outbox().await?;
        self.sync().await?;
        let group = self.group_id(name)?;
        let conv = self.load_group(&self.provider(), group)?;
        let users: Vec<String> = self.roster_of(&conv).await?.into_keys().collect();
        self.check_not_blocked(&users)?;
        self.send_in(group, body).await
    }

    /// A commit refused because of who it brings in (P543, P547), reported.
    fn identity_refusal(
        &self,
        e: &Entry,
        by: String,
        sender: DeviceId,
        reason: String,
    ) -> Result<usize, ClientError> {
        self.alert(
            e.group_id,
            e.stored_at_ms,
            Alert {
                kind: SecurityKind::CommitRejected,
                rejection: Some(hush_crypto::Rejection::Identity),
                from: Some(by),
                device: Some(sender),
                reason,
            },
        )
    }

    /// P530: checks a relayed commit against the group's signed policy, then applies
    /// it and records who changed what, or refuses it and reports why. In a 1:1
    /// conversation (no policy) it is applied, and a known user's new device reported.
    pub(crate) fn on_commit(
        &self,
        e: &Entry,
        lookup: &Lookup<'_>,
        conv: &mut Conversation,
        commit: Box<PendingCommit>,
    ) -> Result<usize, ClientError> {
        let provider = self.provider();
        let group = e.group_id;
        // P547: no commit brings back a device its account revoked.
        if let Some(d) = commit
            .added
            .iter()
            .copied()
            .chain(commit.joined.iter().map(|(d, _)| *d))
            .find(|d| self.revoked(d).unwrap_or(false))
        {
            let by = lookup.resolve(&[commit.sender])?.of(&commit.sender);
            return self.identity_refusal(
                e,
                by,
                commit.sender,
                format!("a commit adds device {d}, which its account revoked"),
            );
        }
        for (d, key) in commit.added_accounts.iter().chain(commit.joined.iter()) {
            self.home.note_device(*d, key)?;
        }
        let mut all = conv.members();
        all.extend(commit.added.iter().copied());
        all.extend(commit.joined.iter().map(|(d, _)| *d));
        all.extend(commit.removal_proposers.iter().map(|(_, p)| *p));
        all.push(commit.sender);
        let names = lookup.resolve(&all)?;
        let user = |d: &DeviceId| names.of(d);
        let by = user(&commit.sender);
        let before = roster(conv, &names);
        let members_before: BTreeSet<DeviceId> = conv.members().into_iter().collect();
        let added_devices = commit.added.clone();
        // P537: a device rejoining in place removes its own old leaf: no departure.
        let rejoined = commit.joined.as_ref().map(|(d, _)| *d);
        let removed_devices: Vec<DeviceId> = commit
            .removed
            .iter()
            .copied()
            .filter(|d| Some(*d) != rejoined)
            .collect();
        let commit_joined = commit.joined;
        let Some(state) = conv.state() else {
            // P543: a 1:1 conversation holds the devices of its two accounts only.
            let mut allowed: BTreeSet<AccountPublicKey> =
                conv.roster().into_iter().map(|(_, k)| k).collect();
            if let Some(peer) = self.direct_peer(group)?
                && let Some(c) = self.home.contact(&peer)?
            {
                allowed.insert(c.account_key);
            }
            // P536: an external commit brings in a new device of an account that is
            // in the conversation already, and nothing else.
            let stranger = commit.joined.as_ref().filter(|(d, k)| {
                !conv.roster().iter().any(|(_, a)| a == k)
                    || !commit.added_accounts.is_empty()
                    || commit.removed.iter().any(|r| r != d)
            });
            let foreign = commit
                .added_accounts
                .iter()
                .find(|(_, k)| !allowed.contains(k));
            let refusal = match (stranger, foreign) {
                (Some((d, _)), _) => Some(format!(
                    "device {d} tried to join this conversation, but its account is not in it"
                )),
                (None, Some((d, _))) => Some(format!(
                    "a commit adds device {d}, which belongs to neither account of this conversation"
                )),
                (None, None) => None,
            };
            if let Some(reason) = refusal {
                return self.identity_refusal(e, by, commit.sender, reason);
            }
            let joined_device: Vec<DeviceId> = commit
                .joined
                .iter()
                .map(|(d, _)| *d)
                .filter(|d| !members_before.contains(d))
                .collect();
            conv.merge(&provider, *commit)?;
            let after = roster(conv, &names);
            if !conv.is_active() {
                // This device was revoked by another of its account's devices.
                self.evicted(group)?;
            }
            return Ok(self.new_devices(
                group,
                e.stored_at_ms,
                &[added_devices, joined_device].concat(),
                &before,
                &names,
                &by,
            )? + self.removed_devices(
                group,
                e.stored_at_ms,
                &removed_devices,
                &after,
                &names,
                &by,
            )?);
        };
        let added: BTreeSet<String> = commit.added.iter().map(user).collect();
        let removed: BTreeSet<String> = commit.removed.iter().map(user).collect();
        // A removal proposed by the removed user's own device is that user leaving:
        // anyone may commit it.
        let left: BTreeSet<String> = commit
            .removal_proposers
            .iter()
            .filter(|(gone, proposer)| user(gone) == user(proposer))
            .map(|(gone, _)| user(gone))
            .collect();
        let touches_others = added
            .iter()
            .chain(removed.iter().filter(|u| !left.contains(*u)))
            .any(|u| *u != by);
        let admin = state.is_admin(&by);
        // P555: an admin deleting the group marks its signed state first.
        let deleting = !state.deleted && commit.new_state.as_ref().is_some_and(|s| s.deleted);
        // P551: an external commit brings in its sender alone, into a channel; P536: or
        // a new device of an account already in the group, into any named group.
        let joiner = commit.joined.as_ref().map(|(d, _)| user(d));
        // (P537: or the same device rejoining in place, its old leaf removed.)
        let own_device = commit
            .joined
            .as_ref()
            .is_some_and(|(_, k)| conv.roster().iter().any(|(_, a)| a == k));
        let refusal = if joiner.is_some() && !state.joinable && !own_device {
            Some(format!(
                "{by} tried to join {} by an external commit, but it is not a channel",
                state.name
            ))
        } else if joiner.is_some()
            && (commit.new_state.is_some() || removed.iter().any(|u| Some(u) != joiner.as_ref()))
        {
            Some(format!(
                "{by}'s join of {} changes more than its own membership",
                state.name
            ))
        } else if commit
            .new_state
            .as_ref()
            .is_some_and(|s| s.name != state.name)
        {
            Some("a commit tried to rename the group".to_owned())
        } else if !admin && (touches_others || commit.new_state.is_some()) {
            Some(format!(
                "{by} is not an admin of {}, so may not change its members or roles",
                state.name
            ))
        } else {
            None
        };
        if let Some(reason) = refusal {
            // Not merged: this device stays at the epoch the policy allows.
            return self.alert(
                group,
                e.stored_at_ms,
                Alert {
                    kind: SecurityKind::CommitRejected,
                    rejection: None,
                    from: Some(by),
                    device: Some(commit.sender),
                    reason,
                },
            );
        }
        let promoted: Vec<String> = commit
            .new_state
            .as_ref()
            .map(|s| {
                s.admins
                    .iter()
                    .filter(|a| !state.is_admin(a.as_str()))
                    .map(|a| a.to_string())
                    .collect()
            })
            .unwrap_or_default();
        conv.merge(&provider, *commit)?;
        let after = roster(conv, &names);
        let mut events = 0;
        if deleting {
            events += self.membership_event(
                group,
                e.stored_at_ms,
                MembershipKind::Deleted,
                &state.name.to_string(),
                &by,
            )?;
        }
        for u in added.iter().filter(|u| !before.contains_key(*u)) {
            events +=
                self.membership_event(group, e.stored_at_ms, MembershipKind::Added, u, &by)?;
        }
        if let (Some(u), Some((d, _))) = (&joiner, &commit_joined) {
            if members_before.contains(d) {
                // P537: a device that fell behind rejoined in place: nothing new.
            } else if before.contains_key(u) {
                events += self.new_devices(group, e.stored_at_ms, &[*d], &before, &names, &by)?;
            } else {
                events +=
                    self.membership_event(group, e.stored_at_ms, MembershipKind::Joined, u, u)?;
            }
        }
        for u in removed.iter().filter(|u| !after.contains_key(*u)) {
            if left.contains(u) || state.deleted {
                // Reported when the user's own proposal arrived, or when the group was
                // deleted (its members are then removed).
                continue;
            }
            events +=
                self.membership_event(group, e.stored_at_ms, MembershipKind::Removed, u, &by)?;
        }
        events += self.new_devices(group, e.stored_at_ms, &added_devices, &before, &names, &by)?;
        events +=
            self.removed_devices(group, e.stored_at_ms, &removed_devices, &after, &names, &by)?;
        for u in &promoted {
            events +=
                self.membership_event(group, e.stored_at_ms, MembershipKind::Promoted, u, &by)?;
        }
        if !conv.is_active() {
            self.evicted(group)?;
        }
        Ok(events)
    }

    /// The peer of a 1:1 conversation (its name).
    fn direct_peer(&self, group: GroupId) -> Result<Option<String>, ClientError> {
        self.home
            .db()
            .query_row(
                "SELECT name FROM conversations WHERE group_id = ?1 AND kind = 'direct'",
                [group.as_bytes().as_slice()],
                |r| r.get(0),
            )
            .optional()
            .map_err(home_err)
    }

    /// P546: a device removed while its user stays (revoked, logged out) is reported.
    fn removed_devices(
        &self,
        group: GroupId,
        at_ms: i64,
        removed: &[DeviceId],
        after: &BTreeMap<String, usize>,
        names: &Names,
        by: &str,
    ) -> Result<usize, ClientError> {
        self.device_notices(group, at_ms, removed, after, names, |owner, d| {
            (
                SecurityKind::DeviceRemoved,
                format!("{owner}'s device {d} left this conversation (removed by {by})"),
            )
        })
    }

    /// A notice for each device (not this one) of a user found in `users`.
    fn device_notices(
        &self,
        group: GroupId,
        at_ms: i64,
        devices: &[DeviceId],
        users: &BTreeMap<String, usize>,
        names: &Names,
        notice: impl Fn(&str, &DeviceId) -> (SecurityKind, String),
    ) -> Result<usize, ClientError> {
        let mut events = 0;
        for d in devices.iter().filter(|d| **d != self.account.device_id) {
            let owner = names.of(d);
            if users.contains_key(&owner) {
                let (kind, reason) = notice(&owner, d);
                events += self.alert(
                    group,
                    at_ms,
                    Alert {
                        kind,
                        rejection: None,
                        from: Some(owner.clone()),
                        device: Some(*d),
                        reason,
                    },
                )?;
            }
        }
        Ok(events)
    }

    /// P534: a device added for a user already in the conversation is reported.
    fn new_devices(
        &self,
        group: GroupId,
        at_ms: i64,
        added: &[DeviceId],
        before: &BTreeMap<String, usize>,
        names: &Names,
        by: &str,
    ) -> Result<usize, ClientError> {
        self.device_notices(group, at_ms, added, before, names, |owner, d| {
            (
                SecurityKind::NewDevice,
                format!("{owner} has a new device {d} in this conversation (added by {by})"),
            )
        })
    }
}
