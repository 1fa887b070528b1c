//! Named groups (`#team`): creating, adding and removing members, and the policy every
//! member enforces on commits. The policy lives in the group's signed MLS state
//! (name and admins, P530): a commit that breaks it is refused by every client and
//! reported, whatever the server relays.
use std::collections::{BTreeMap, BTreeSet};

use hush_crypto::conversation::{Conversation, PendingCommit, PendingProposal};
use hush_crypto::identity::validate_key_package;
use hush_proto::ErrorCode;
use hush_proto::content::{GroupName, GroupState};
use hush_proto::ids::{DeviceId, GroupId, Username};
use hush_proto::pb::{self, client_frame::Body};
use hush_proto::response::{Entry, Response};
use rand::RngCore;
use rusqlite::{OptionalExtension, params};

use crate::ClientError;
use crate::connection::unexpected;
use crate::home::home_err;
use crate::messaging::Messenger;
use crate::mls::Provider;

/// Tries of one commit across concurrent commits by others (P430).
const COMMIT_ATTEMPTS: usize = 5;

/// A member as the MLS roster shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub username: String,
    pub devices: usize,
    pub admin: bool,
}

fn group_id16() -> GroupId {
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    GroupId::from_bytes(b)
}

impl Messenger<'_> {
    /// The local group called `name`.
    pub fn group_id(&self, name: &GroupName) -> Result<GroupId, ClientError> {
        self.conversation_id(&name.to_string(), "group")?
            .ok_or_else(|| ClientError::Invalid(format!("you are not in a group called {name}")))
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

    fn membership_event(
        &self,
        group: GroupId,
        at_ms: i64,
        kind: &str,
        member: &str,
        by: &str,
    ) -> Result<usize, ClientError> {
        self.home
            .db()
            .execute(
                "INSERT INTO history (group_id, kind, sender, sent_at, text, state, unread)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'received', 1)",
                params![group.as_bytes().as_slice(), kind, by, at_ms, member],
            )
            .map_err(home_err)?;
        Ok(1)
    }

    /// Users of the roster (device → user), from MLS state.
    async fn roster(&self, conv: &Conversation) -> Result<BTreeMap<String, usize>, ClientError> {
        let owners = self.owners(&conv.members()).await?;
        let mut users = BTreeMap::new();
        for name in owners.values() {
            *users.entry(name.clone()).or_insert(0) += 1;
        }
        Ok(users)
    }

    /// Claims and verifies a key package for every device of `users`, except this one.
    pub(crate) async fn key_packages(
        &self,
        users: &[Username],
    ) -> Result<(Vec<openmls_kp::KeyPackage>, Vec<DeviceId>), ClientError> {
        let answer = self
            .conn
            .request(Body::ClaimKeyPackages(pb::ClaimKeyPackages {
                usernames: users.iter().map(|u| u.to_string()).collect(),
            }))
            .await?;
        let Response::KeyPackages(claimed) = answer else {
            return Err(unexpected(&answer));
        };
        let provider = Provider::new(self.home.db());
        let mut packages = Vec::new();
        let mut devices = Vec::new();
        for c in claimed
            .iter()
            .filter(|c| c.device != self.account.device_id)
        {
            match validate_key_package(&provider, &c.key_package, c.device) {
                Ok(kp) => {
                    packages.push(kp);
                    devices.push(c.device);
                    self.home
                        .db()
                        .execute(
                            "INSERT OR REPLACE INTO peer_devices (device_id, username) VALUES (?1, ?2)",
                            params![c.device.as_bytes().as_slice(), c.username.as_str()],
                        )
                        .map_err(home_err)?;
                }
                Err(e) => {
                    tracing::warn!(device = %c.device, error = %e, "skipping an invalid key package")
                }
            }
        }
        for u in users.iter().filter(|u| **u != self.account.username) {
            if !claimed
                .iter()
                .any(|c| &c.username == u && devices.contains(&c.device))
            {
                return Err(ClientError::Invalid(format!(
                    "{u} has no device that can receive messages yet"
                )));
            }
        }
        Ok((packages, devices))
    }

    /// Creates `#name` with this user as its admin, adding every device of `members` and
    /// this user's other devices in one batched commit (P420, P422).
    pub async fn create_group(
        &self,
        name: &GroupName,
        members: &[Username],
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
            admins: vec![self.account.username.clone()],
        };
        let group = group_id16();
        let provider = Provider::new(self.home.db());
        let now = crate::messaging::now_ms();
        self.home
            .atomically(async || {
                let mut conv = Conversation::create_named(&provider, &self.identity, group, &state)?;
                let welcome = if packages.is_empty() {
                    None
                } else {
                    Some(conv.add(&provider, &self.identity, &packages)?.welcome)
                };
                let mut all = vec![self.account.device_id];
                all.extend(devices.iter().copied());
                let answer = self
                    .conn
                    .request(Body::CreateGroup(pb::CreateGroup {
                        group_id: group.as_bytes().to_vec().into(),
                        direct_peer: String::new(),
                        name: name.bare().to_owned(),
                        welcome: welcome.clone().unwrap_or_default().into(),
                        members: all.iter().map(|d| d.as_bytes().to_vec().into()).collect(),
                    }))
                    .await
                    .map_err(|e| match e {
                        ClientError::Server(se) if se.code == ErrorCode::GroupExists => {
                            ClientError::Invalid(format!("a group called {name} already exists"))
                        }
                        other => other,
                    })?;
                let Response::GroupCreated { .. } = answer else {
                    return Err(unexpected(&answer));
                };
                if welcome.is_some() {
                    conv.merge_pending(&provider)?;
                }
                self.home
                    .db()
                    .execute(
                        "INSERT OR REPLACE INTO conversations (group_id, name, kind, created_at) VALUES (?1, ?2, 'group', ?3)",
                        params![group.as_bytes().as_slice(), name.to_string(), now],
                    )
                    .map_err(home_err)?;
                for u in &users {
                    self.membership_event(group, now, "member_added", u.as_str(), self.account.username.as_str())?;
                }
                Ok(())
            })
            .await
    }

    /// Commits a change built by `build` at the group's current epoch, rebuilding it
    /// after a concurrent commit won (P430). Returns the devices added and removed.
    async fn commit<F>(
        &self,
        group: GroupId,
        mut build: F,
    ) -> Result<(Vec<DeviceId>, Vec<DeviceId>), ClientError>
    where
        F: AsyncFnMut(
            &mut Conversation,
        ) -> Result<
            (Vec<u8>, Option<Vec<u8>>, Vec<DeviceId>, Vec<DeviceId>),
            ClientError,
        >,
    {
        let provider = Provider::new(self.home.db());
        for _ in 0..COMMIT_ATTEMPTS {
            let outcome = self
                .home
                .atomically(async || {
                    let mut conv = self.load_group(&provider, group)?;
                    let epoch = conv.epoch();
                    let (commit, welcome, added, removed) = build(&mut conv).await?;
                    let answer = self
                        .conn
                        .request(Body::Commit(pb::Commit {
                            group_id: group.as_bytes().to_vec().into(),
                            epoch,
                            commit: commit.into(),
                            welcome: welcome.unwrap_or_default().into(),
                            added: added.iter().map(|d| d.as_bytes().to_vec().into()).collect(),
                            removed: removed
                                .iter()
                                .map(|d| d.as_bytes().to_vec().into())
                                .collect(),
                        }))
                        .await?;
                    let Response::CommitAccepted { .. } = answer else {
                        return Err(unexpected(&answer));
                    };
                    conv.merge_pending(&provider)?;
                    Ok((added, removed))
                })
                .await;
            match outcome {
                // Someone else's commit won this epoch: catch up, then rebuild ours.
                Err(ClientError::Server(e)) if e.code == ErrorCode::StaleEpoch => {
                    tracing::info!(group = %group, "another commit won this epoch; rebuilding ours");
                    self.catch_up().await?;
                }
                other => return other,
            }
        }
        Err(ClientError::Invalid(
            "the group kept changing; try again".into(),
        ))
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
        let provider = Provider::new(self.home.db());
        let conv = self.load_group(&provider, group)?;
        self.require_admin(&conv, name)?;
        Ok((group, self.roster(&conv).await?))
    }

    /// Adds every device of `users` to `#name` in one commit.
    pub async fn add_members(
        &self,
        name: &GroupName,
        users: &[Username],
    ) -> Result<(), ClientError> {
        let (group, roster) = self.as_admin(name).await?;
        if let Some(u) = users.iter().find(|u| roster.contains_key(u.as_str())) {
            return Err(ClientError::Invalid(format!("{u} is already in {name}")));
        }
        let provider = Provider::new(self.home.db());
        let (packages, _) = self.key_packages(users).await?;
        let mut packages = Some(packages);
        self.commit(group, async |conv: &mut Conversation| {
            let taken = packages.take();
            let kps = match taken {
                Some(k) => k,
                // A rebuild after a lost race needs fresh packages: those were used.
                None => self.key_packages(users).await?.0,
            };
            let devices: Vec<DeviceId> = kps
                .iter()
                .filter_map(|kp| hush_crypto::identity::device_of(kp.leaf_node().credential()).ok())
                .collect();
            let added = conv.add(&provider, &self.identity, &kps)?;
            Ok((added.commit, Some(added.welcome), devices, Vec::new()))
        })
        .await?;
        let now = crate::messaging::now_ms();
        for u in users {
            self.membership_event(
                group,
                now,
                "member_added",
                u.as_str(),
                self.account.username.as_str(),
            )?;
        }
        Ok(())
    }

    /// Makes `users` admins of `#name` (admins only), in a commit of the signed state.
    pub async fn promote(&self, name: &GroupName, users: &[Username]) -> Result<(), ClientError> {
        let (group, roster) = self.as_admin(name).await?;
        if let Some(u) = users.iter().find(|u| !roster.contains_key(u.as_str())) {
            return Err(ClientError::Invalid(format!("{u} is not in {name}")));
        }
        let provider = Provider::new(self.home.db());
        self.commit(group, async |conv: &mut Conversation| {
            let mut state = self.require_admin(conv, name)?;
            for u in users {
                if !state.is_admin(u.as_str()) {
                    state.admins.push(u.clone());
                }
            }
            let commit = conv.set_state(&provider, &self.identity, &state)?;
            Ok((commit, None, Vec::new(), Vec::new()))
        })
        .await?;
        let now = crate::messaging::now_ms();
        for u in users {
            self.membership_event(
                group,
                now,
                "member_promoted",
                u.as_str(),
                self.account.username.as_str(),
            )?;
        }
        Ok(())
    }

    /// Removes every device of `users` from `#name` in one commit.
    pub async fn remove_members(
        &self,
        name: &GroupName,
        users: &[Username],
    ) -> Result<(), ClientError> {
        self.sync().await?;
        let group = self.group_id(name)?;
        let provider = Provider::new(self.home.db());
        let conv = self.load_group(&provider, group)?;
        self.require_admin(&conv, name)?;
        let owners = self.owners(&conv.members()).await?;
        let targets: Vec<DeviceId> = owners
            .iter()
            .filter(|(_, u)| users.iter().any(|x| x.as_str() == u.as_str()))
            .map(|(d, _)| *d)
            .collect();
        if let Some(u) = users
            .iter()
            .find(|u| !owners.values().any(|o| o == u.as_str()))
        {
            return Err(ClientError::Invalid(format!("{u} is not in {name}")));
        }
        self.remove_devices(group, &targets).await?;
        let now = crate::messaging::now_ms();
        for u in users {
            self.membership_event(
                group,
                now,
                "member_removed",
                u.as_str(),
                self.account.username.as_str(),
            )?;
        }
        Ok(())
    }

    /// Commits the removal of these devices, whoever asks (policy is for receivers).
    pub async fn remove_devices(
        &self,
        group: GroupId,
        devices: &[DeviceId],
    ) -> Result<(), ClientError> {
        let provider = Provider::new(self.home.db());
        self.commit(group, async |conv: &mut Conversation| {
            let current: BTreeSet<DeviceId> = conv.members().into_iter().collect();
            let targets: Vec<DeviceId> = devices
                .iter()
                .copied()
                .filter(|d| current.contains(d))
                .collect();
            let commit = conv.remove(&provider, &self.identity, &targets)?;
            Ok((commit, None, Vec::new(), targets))
        })
        .await?;
        Ok(())
    }

    /// The roster of `#name` from MLS state, with admin flags from the signed state.
    pub async fn members(&self, name: &GroupName) -> Result<Vec<Member>, ClientError> {
        self.sync().await?;
        let group = self.group_id(name)?;
        let provider = Provider::new(self.home.db());
        let conv = self.load_group(&provider, group)?;
        let state = conv.state();
        Ok(self
            .roster(&conv)
            .await?
            .into_iter()
            .map(|(username, devices)| Member {
                admin: state.as_ref().is_some_and(|s| s.is_admin(&username)),
                username,
                devices,
            })
            .collect())
    }

    /// P534: adds this user's devices that are missing from its conversations (a new
    /// login), so every device of a user is in that user's groups.
    pub(crate) async fn adopt_new_devices(&self) -> Result<(), ClientError> {
        let answer = self
            .conn
            .request(Body::ListDevices(pb::ListDevices {
                usernames: vec![self.account.username.to_string()],
            }))
            .await?;
        let Response::Devices(listed) = answer else {
            return Err(unexpected(&answer));
        };
        let mine: BTreeSet<DeviceId> = listed.into_iter().map(|(d, _)| d).collect();
        if mine.len() < 2 {
            return Ok(());
        }
        let groups: Vec<Vec<u8>> = {
            let mut stmt = self
                .home
                .db()
                .prepare("SELECT group_id FROM conversations WHERE kind IN ('direct', 'group')")
                .map_err(home_err)?;
            let rows = stmt.query_map([], |r| r.get(0)).map_err(home_err)?;
            rows.collect::<Result<_, _>>().map_err(home_err)?
        };
        let provider = Provider::new(self.home.db());
        for g in groups {
            let group = GroupId::from_slice(&g).map_err(|e| home_err(e.to_string()))?;
            let Some(conv) = Conversation::load(&provider, group)? else {
                continue;
            };
            let roster: BTreeSet<DeviceId> = conv.members().into_iter().collect();
            if mine.is_subset(&roster) {
                continue;
            }
            let (packages, devices) = self
                .key_packages(std::slice::from_ref(&self.account.username))
                .await?;
            let wanted: Vec<_> = packages
                .into_iter()
                .zip(devices)
                .filter(|(_, d)| !roster.contains(d))
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let mut wanted = Some(wanted);
            let result = self
                .commit(group, async |conv: &mut Conversation| {
                    let now: BTreeSet<DeviceId> = conv.members().into_iter().collect();
                    let (kps, ds): (Vec<_>, Vec<_>) = wanted
                        .take()
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|(_, d)| !now.contains(d))
                        .unzip();
                    if kps.is_empty() {
                        return Err(ClientError::Invalid("already adopted".into()));
                    }
                    let added = conv.add(&provider, &self.identity, &kps)?;
                    Ok((added.commit, Some(added.welcome), ds, Vec::new()))
                })
                .await;
            match result {
                Ok(_) => tracing::info!(group = %group, "added this user's new devices"),
                Err(e) => {
                    tracing::warn!(group = %group, error = %e, "could not add this user's new devices")
                }
            }
        }
        Ok(())
    }

    pub(crate) fn has_left(&self, group: GroupId) -> Result<bool, ClientError> {
        let kind: Option<String> = self
            .home
            .db()
            .query_row(
                "SELECT kind FROM conversations WHERE group_id = ?1",
                [group.as_bytes().as_slice()],
                |r| r.get(0),
            )
            .optional()
            .map_err(home_err)?;
        Ok(kind.as_deref() == Some("left"))
    }

    /// Leaves `#name`: this user's devices propose their removal, which the next commit
    /// by any member applies; this home stops reading the group at once.
    pub async fn leave(&self, name: &GroupName) -> Result<(), ClientError> {
        self.sync().await?;
        let group = self.group_id(name)?;
        let provider = Provider::new(self.home.db());
        for _ in 0..COMMIT_ATTEMPTS {
            let mut conv = self.load_group(&provider, group)?;
            let owners = self.owners(&conv.members()).await?;
            let mine: Vec<DeviceId> = owners
                .iter()
                .filter(|(_, u)| u.as_str() == self.account.username.as_str())
                .map(|(d, _)| *d)
                .collect();
            let epoch = conv.epoch();
            let proposals = conv.propose_removal(&provider, &self.identity, &mine)?;
            let mut stale = false;
            for p in proposals {
                let sent = self
                    .conn
                    .request(Body::Send(pb::Send {
                        group_id: group.as_bytes().to_vec().into(),
                        epoch,
                        ciphertext: p.into(),
                        client_message_id: group_id16().as_bytes().to_vec().into(),
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
            if stale {
                self.sync().await?;
                continue;
            }
            let now = crate::messaging::now_ms();
            self.home
                .db()
                .execute(
                    "UPDATE conversations SET kind = 'left' WHERE group_id = ?1",
                    [group.as_bytes().as_slice()],
                )
                .map_err(home_err)?;
            let me = self.account.username.as_str();
            self.membership_event(group, now, "member_left", me, me)?;
            return Ok(());
        }
        Err(ClientError::Invalid(
            "the group kept changing; try again".into(),
        ))
    }

    /// A member asked to leave (or an admin proposed a removal): checked against the
    /// policy, then queued for the next commit.
    pub(crate) async fn on_proposal(
        &self,
        e: &Entry,
        conv: &mut Conversation,
        p: PendingProposal,
    ) -> Result<usize, ClientError> {
        let provider = Provider::new(self.home.db());
        let mut all = p.removes.clone();
        all.push(p.sender);
        let names = self.names(&all).await?;
        let user = |d: &DeviceId| names.of(d);
        let by = user(&p.sender);
        let removes: BTreeSet<String> = p.removes.iter().map(user).collect();
        let admin = conv.state().is_some_and(|s| s.is_admin(&by));
        if p.removes.is_empty() || (!admin && removes.iter().any(|u| *u != by)) {
            return self.alert_kind(
                e.group_id,
                e.stored_at_ms,
                "proposal_rejected",
                Some(by.clone()),
                Some(p.sender),
                format!("{by} proposed a change the group's policy does not allow"),
            );
        }
        let before = self.roster(conv).await?;
        conv.accept_proposal(&provider, p)?;
        let mut events = 0;
        for u in removes
            .iter()
            .filter(|u| **u == by && before.contains_key(*u))
        {
            events += self.membership_event(e.group_id, e.stored_at_ms, "member_left", u, &by)?;
        }
        Ok(events)
    }

    /// Commits proposals others queued (a member leaving), so messages can be sent.
    async fn commit_pending_proposals(&self, group: GroupId) -> Result<(), ClientError> {
        let provider = Provider::new(self.home.db());
        let pending =
            Conversation::load(&provider, group)?.is_some_and(|c| c.has_pending_proposals());
        if pending {
            self.commit(group, async |conv: &mut Conversation| {
                let (commit, removed) = conv.commit_pending(&provider, &self.identity)?;
                Ok((commit, None, Vec::new(), removed))
            })
            .await?;
        }
        Ok(())
    }

    /// Sends a text to the named group.
    pub async fn send_to_group(
        &self,
        name: &GroupName,
        text: &str,
    ) -> Result<crate::events::Event, ClientError> {
        self.flush_outbox().await?;
        self.sync().await?;
        let group = self.group_id(name)?;
        self.commit_pending_proposals(group).await?;
        let (message_id, row) = self.compose(group, text).await?;
        self.deliver(message_id).await?;
        crate::history::by_row(self.home, row)
    }

    /// P530: checks a relayed commit against the group's signed policy, then applies
    /// it and records who changed what, or refuses it and reports why.
    pub(crate) async fn on_commit(
        &self,
        e: &Entry,
        conv: &mut Conversation,
        commit: Box<PendingCommit>,
    ) -> Result<usize, ClientError> {
        let provider = Provider::new(self.home.db());
        let group = e.group_id;
        let Some(state) = conv.state() else {
            // A 1:1 conversation has no roles.
            conv.merge(&provider, *commit)?;
            return Ok(0);
        };
        let mut all = commit.added.clone();
        all.extend(commit.removed.iter().copied());
        all.extend(commit.removal_proposers.iter().map(|(_, p)| *p));
        all.push(commit.sender);
        let names = self.names(&all).await?;
        let user = |d: &DeviceId| names.of(d);
        let by = user(&commit.sender);
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
        let refusal = if commit
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
            return self.alert_kind(
                group,
                e.stored_at_ms,
                "commit_rejected",
                Some(by),
                Some(commit.sender),
                reason,
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
        let before = self.roster(conv).await?;
        let commit_added_devices = commit.added.clone();
        conv.merge(&provider, *commit)?;
        let after = self.roster(conv).await?;
        let mut events = 0;
        for u in added.iter().filter(|u| !before.contains_key(*u)) {
            events += self.membership_event(group, e.stored_at_ms, "member_added", u, &by)?;
        }
        for u in removed.iter().filter(|u| !after.contains_key(*u)) {
            if left.contains(u) {
                // Reported when the user's own proposal arrived.
                continue;
            }
            events += self.membership_event(group, e.stored_at_ms, "member_removed", u, &by)?;
        }
        for d in &commit_added_devices {
            let owner = user(d);
            if before.contains_key(&owner) {
                events += self.alert_kind(
                    group,
                    e.stored_at_ms,
                    "new_device",
                    Some(owner.clone()),
                    Some(*d),
                    format!("{owner} has a new device {d} in this conversation (added by {by})"),
                )?;
            }
        }
        for u in &promoted {
            events += self.membership_event(group, e.stored_at_ms, "member_promoted", u, &by)?;
        }
        Ok(events)
    }
}

mod openmls_kp {
    pub use hush_crypto::openmls::prelude::KeyPackage;
}
