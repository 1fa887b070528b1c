//! A new device writes at once (P535, P536, ADR 0008). Every device keeps, for each
//! conversation it is in, the GroupInfo of the group's current epoch on the server,
//! sealed under a key derived from the account's backup key (which only the account's
//! devices hold): [`Messenger::publish_group_infos`] after each sync that moved an
//! epoch. A device that is in none of its account's conversations (a new login, a
//! restored home) opens them and joins each by an external commit
//! ([`Messenger::join_own_conversations`]), recorded and settled like any handshake. A
//! device that fell behind in a conversation (P537) rejoins it in place the same way
//! ([`Messenger::resync_conversations`]).
//! Members accept such a join only for an account already in the group (the policy in
//! `groups`), and report the device as new, as P534 does.
use std::collections::BTreeSet;

use hush_crypto::conversation::Conversation;
use hush_proto::ErrorCode;
use hush_proto::ids::GroupId;
use hush_proto::pb::{self, client_frame::Body};
use hush_proto::response::Response;
use rusqlite::{OptionalExtension, params};

use crate::ClientError;
use crate::connection::unexpected;
use crate::handshake::{Effects, Request};
use crate::home::home_err;
use crate::messaging::{Lookup, Messenger, random16};

/// A kept GroupInfo opened with the account's key; one that does not open (the server
/// changed it, or another key sealed it) is logged and passed over.
fn opened(
    key: &hush_crypto::backup::BackupKey,
    account: &hush_crypto::account::AccountPublicKey,
    group: GroupId,
    epoch: u64,
    sealed: &[u8],
) -> Option<Vec<u8>> {
    match hush_crypto::backup::open_group_info(key, account, group.as_bytes(), epoch, sealed) {
        Ok(info) => Some(info),
        Err(e) => {
            tracing::warn!(group = %group, error = %e, "a kept group info does not open");
            None
        }
    }
}

impl Messenger<'_> {
    /// The backup key and this account's public key, which seal GroupInfos for the
    /// account's devices (P535); `None` in a home that holds no backup key.
    fn account_seal(
        &self,
    ) -> Result<
        Option<(
            hush_crypto::backup::BackupKey,
            hush_crypto::account::AccountPublicKey,
        )>,
        ClientError,
    > {
        Ok(
            match (
                crate::backup::stored_key(self.home)?,
                self.home.account_key()?,
            ) {
                (Some(key), Some(account)) => Some((key, account.public())),
                _ => None,
            },
        )
    }

    /// P535: seals and hands over the GroupInfo of every conversation whose epoch
    /// moved since this device last did. Best effort: a refusal is logged, and only a
    /// lost connection stops it.
    pub(crate) async fn publish_group_infos(&self) -> Result<(), ClientError> {
        let Some((key, public)) = self.account_seal()? else {
            return Ok(());
        };
        let provider = self.provider();
        let db = self.home.db();
        for (group, _, _) in self.home.live_conversations()? {
            let Some(conv) = Conversation::load(&provider, group)? else {
                continue;
            };
            if !conv.is_active() || conv.has_pending_commit() {
                continue;
            }
            let epoch = conv.epoch();
            let published: Option<i64> = db
                .query_row(
                    "SELECT epoch FROM published_group_infos WHERE group_id = ?1",
                    [group.as_bytes().as_slice()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(home_err)?;
            if published == Some(epoch as i64) {
                continue;
            }
            let info = conv.export_group_info(&provider, self.identity)?;
            let sealed = hush_crypto::backup::seal_group_info(
                &key,
                &public,
                group.as_bytes(),
                epoch,
                &info,
            )?;
            let answer = self
                .conn
                .request(Body::PutGroupInfo(pb::PutGroupInfo {
                    group_id: group.as_bytes().to_vec().into(),
                    epoch,
                    sealed: sealed.into(),
                }))
                .await;
            match answer {
                Ok(Response::GroupInfoKept) => {
                    self.home.write(|| {
                        db.execute(
                            "INSERT INTO published_group_infos (group_id, epoch) VALUES (?1, ?2)
                             ON CONFLICT (group_id) DO UPDATE SET epoch = excluded.epoch",
                            params![group.as_bytes().as_slice(), epoch as i64],
                        )
                        .map_err(home_err)?;
                        Ok(())
                    })?;
                }
                Ok(other) => return Err(unexpected(&other)),
                Err(e) if e.is_transport() => return Err(e),
                Err(e) => {
                    tracing::debug!(group = %group, error = %e, "a group info was not kept");
                }
            }
        }
        Ok(())
    }

    /// P536: joins, by external commits, the conversations of this account that this
    /// device is not in yet. Returns how many it joined. A conversation whose kept
    /// GroupInfo is out of date (its group moved on while every device of the account
    /// was away) is left to the members, who add this device when they next sync (P534).
    pub(crate) async fn join_own_conversations(&self) -> Result<usize, ClientError> {
        let Some((key, public)) = self.account_seal()? else {
            return Ok(0);
        };
        let answer = self
            .conn
            .request(Body::ListGroupInfos(pb::ListGroupInfos {}))
            .await?;
        let Response::GroupInfos(infos) = answer else {
            return Err(unexpected(&answer));
        };
        let provider = self.provider();
        let mut joined = 0;
        for (group, epoch, sealed) in infos {
            if Conversation::load(&provider, group)?.is_some()
                || self.left_here(group)?
                || self.failed_before(group, epoch)?
            {
                continue;
            }
            let Some(info) = opened(&key, &public, group, epoch, &sealed) else {
                continue;
            };
            match self.join_own(group, &info, &public, false).await {
                Ok(()) => joined += 1,
                Err(e) if e.is_transport() => return Err(e),
                Err(e) => {
                    if matches!(&e, ClientError::Server(s) if s.code == ErrorCode::StaleEpoch) {
                        tracing::info!(group = %group,
                            "a conversation moved on since this account's devices last saw it; \
                             its members add this device when they next sync");
                    } else {
                        tracing::warn!(group = %group, error = %e,
                            "could not join a conversation of this account");
                    }
                    self.failed(group, epoch)?;
                }
            }
        }
        Ok(joined)
    }

    /// Not tried again from the same GroupInfo on every connection.
    fn failed(&self, group: GroupId, epoch: u64) -> Result<(), ClientError> {
        self.home.write(|| {
            self.home
                .db()
                .execute(
                    "INSERT INTO failed_joins (group_id, epoch) VALUES (?1, ?2)
                     ON CONFLICT (group_id) DO UPDATE SET epoch = excluded.epoch",
                    params![group.as_bytes().as_slice(), epoch as i64],
                )
                .map_err(home_err)?;
            Ok(())
        })
    }

    /// P537: rejoins in place, by an external commit that replaces this device's old
    /// leaf, each conversation this device fell behind in (a message of a later epoch
    /// came: its mailbox lost commits), from the GroupInfo another device of its
    /// account kept. What was sent meanwhile stays unreadable (reported as it came);
    /// what follows is read again. Returns how many it rejoined.
    pub(crate) async fn resync_conversations(&self) -> Result<usize, ClientError> {
        let groups: Vec<Vec<u8>> = {
            let mut stmt = self
                .home
                .db()
                .prepare("SELECT group_id FROM resync_needed")
                .map_err(home_err)?;
            let rows = stmt.query_map([], |r| r.get(0)).map_err(home_err)?;
            rows.collect::<Result<_, _>>().map_err(home_err)?
        };
        if groups.is_empty() {
            return Ok(0);
        }
        let Some((key, public)) = self.account_seal()? else {
            return Ok(0);
        };
        let provider = self.provider();
        let mut rejoined = 0;
        for g in groups {
            let group = crate::messaging::stored_group(&g)?;
            let answer = self
                .conn
                .request(Body::GetGroupInfo(pb::GetGroupInfo {
                    group_id: g.clone().into(),
                }))
                .await?;
            let Response::GroupInfos(infos) = answer else {
                return Err(unexpected(&answer));
            };
            let Some((_, epoch, sealed)) = infos.into_iter().find(|(id, _, _)| *id == group) else {
                continue;
            };
            let local = Conversation::load(&provider, group)?.map(|c| c.epoch());
            // Only a GroupInfo past where this device stands can help.
            if local.is_some_and(|l| l >= epoch) || self.failed_before(group, epoch)? {
                continue;
            }
            let Some(info) = opened(&key, &public, group, epoch, &sealed) else {
                continue;
            };
            match self.join_own(group, &info, &public, true).await {
                Ok(()) => {
                    rejoined += 1;
                    self.home.write(|| {
                        self.home
                            .db()
                            .execute("DELETE FROM resync_needed WHERE group_id = ?1", [&g])
                            .map_err(home_err)?;
                        Ok(())
                    })?;
                }
                Err(e) if e.is_transport() => return Err(e),
                Err(e) => {
                    tracing::warn!(group = %group, error = %e, "could not rejoin a conversation this device fell behind in");
                    self.failed(group, epoch)?;
                }
            }
        }
        Ok(rejoined)
    }

    /// Whether joining `group` from its GroupInfo of `epoch` failed here already.
    fn failed_before(&self, group: GroupId, epoch: u64) -> Result<bool, ClientError> {
        self.home
            .db()
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM failed_joins WHERE group_id = ?1 AND epoch = ?2)",
                params![group.as_bytes().as_slice(), epoch as i64],
                |r| r.get(0),
            )
            .map_err(home_err)
    }

    /// Whether this user left `group` on this device (nothing to rejoin).
    fn left_here(&self, group: GroupId) -> Result<bool, ClientError> {
        self.home
            .db()
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM conversations WHERE group_id = ?1 AND kind = 'left')",
                [group.as_bytes().as_slice()],
                |r| r.get(0),
            )
            .map_err(home_err)
    }

    /// Joins one conversation of this account from its GroupInfo: the external commit
    /// is recorded with the conversation it makes, then sent and settled (P433).
    async fn join_own(
        &self,
        group: GroupId,
        info: &[u8],
        account: &hush_crypto::account::AccountPublicKey,
        resync: bool,
    ) -> Result<(), ClientError> {
        let provider = self.provider();
        for last_try in [false, true] {
            let lookup = Lookup::new(self.home, last_try);
            let recorded = self.home.write(|| {
                // P537: the state this device fell behind with goes (it cannot read
                // the group any more); the commit replaces its leaf.
                if resync && let Some(old) = Conversation::load(&provider, group)? {
                    old.delete(&provider)?;
                }
                let hush_crypto::conversation::OwnJoin {
                    conversation: conv,
                    commit,
                    group_info,
                    state,
                } = Conversation::join_own(&provider, self.identity, info, group, account, resync)?;
                self.note_roster(&conv)?;
                let me = self.account.username.as_str();
                let others: Vec<_> = conv
                    .members()
                    .into_iter()
                    .filter(|d| *d != self.account.device_id)
                    .collect();
                let names = lookup.resolve(&others)?;
                lookup.finish()?;
                let users: BTreeSet<String> = others
                    .iter()
                    .map(|d| names.of(d))
                    .filter(|u| u != me)
                    .collect();
                let (name, kind) = match (&state, users.iter().next()) {
                    (Some(state), _) => (state.name.to_string(), "group"),
                    (None, Some(peer)) if users.len() == 1 => (peer.clone(), "direct"),
                    _ => (format!("#{}", &group.to_string()[..8]), "group"),
                };
                let request = pb::Commit {
                    group_id: group.as_bytes().to_vec().into(),
                    epoch: conv.epoch().saturating_sub(1),
                    commit: commit.into(),
                    welcome: Default::default(),
                    added: vec![self.account.device_id.as_bytes().to_vec().into()],
                    // P537: its own old leaf, replaced.
                    removed: if resync {
                        vec![self.account.device_id.as_bytes().to_vec().into()]
                    } else {
                        Vec::new()
                    },
                    client_key: random16().to_vec().into(),
                    // P552: a channel's server keeps the GroupInfo of each new epoch.
                    group_info: if state.as_ref().is_some_and(|s| s.joinable) {
                        group_info.into()
                    } else {
                        Default::default()
                    },
                    external: true,
                    proposals: Vec::new(),
                    // P438: what the server starts its check from, for a group it
                    // holds no state of yet (made before P438).
                    base_group_info: info.to_vec().into(),
                };
                // A rejoin keeps its conversation row (and its sequence numbers, P520).
                let effects = if resync {
                    Effects {
                        what: "rejoining".into(),
                        ..Effects::default()
                    }
                } else {
                    Effects::conversation(&name, kind)
                };
                self.record_handshake(group, Request::Join(request), &effects)
            });
            match recorded {
                Err(ClientError::NeedLookup(devices)) => self.learn_owners(&devices).await?,
                Err(e) => return Err(e),
                Ok(()) => {
                    self.settle(group).await?;
                    tracing::info!(group = %group, "joined a conversation of this account");
                    return Ok(());
                }
            }
        }
        Err(ClientError::Home(
            "internal: device names still unknown on the last try".into(),
        ))
    }
}
