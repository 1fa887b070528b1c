//! Handshakes that survive lost answers (P423, P433). A group creation or commit is
//! recorded in the same local transaction as the staged MLS state it came from (a
//! `pending_handshakes` row holding the exact request and what to record once it is
//! accepted), then sent outside any transaction, then settled:
//! - accepted (first time, or "already accepted" for a retry with the same client
//!   key): the staged commit is merged and the effects recorded, in one transaction;
//! - refused (`STALE_EPOCH`, `GROUP_EXISTS`, ...): the staged state is dropped;
//! - no answer (timeout, lost connection, killed process): the row stays, and the next
//!   sync sends the same request again before it reads the mailbox, so the device
//!   always converges to the server's epoch.
use hush_crypto::conversation::Conversation;
use hush_proto::ErrorCode;
use hush_proto::ids::GroupId;
use hush_proto::pb::{self, client_frame::Body};
use hush_proto::response::Response;
use prost::Message;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::ClientError;
use crate::connection::unexpected;
use crate::events::MembershipKind;
use crate::home::home_err;
use crate::messaging::{Messenger, now_ms, stored_group};

/// The request a handshake sends, exactly as first sent.
pub(crate) enum Request {
    Create(pb::CreateGroup),
    Commit(pb::Commit),
    /// P553: an external commit into a channel; refused, the whole group goes.
    Join(pb::Commit),
}

impl Request {
    fn kind(&self) -> &'static str {
        match self {
            Request::Create(_) => "create",
            Request::Commit(_) => "commit",
            Request::Join(_) => "join",
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            Request::Create(r) => r.encode_to_vec(),
            Request::Commit(r) | Request::Join(r) => r.encode_to_vec(),
        }
    }

    fn decode(kind: &str, bytes: &[u8]) -> Result<Request, ClientError> {
        let damaged =
            |e: prost::DecodeError| home_err(format!("a pending handshake is damaged: {e}"));
        match kind {
            "create" => Ok(Request::Create(
                pb::CreateGroup::decode(bytes).map_err(damaged)?,
            )),
            "commit" => Ok(Request::Commit(pb::Commit::decode(bytes).map_err(damaged)?)),
            "join" => Ok(Request::Join(pb::Commit::decode(bytes).map_err(damaged)?)),
            other => Err(home_err(format!(
                "unknown pending handshake kind {other:?}"
            ))),
        }
    }

    fn body(self) -> Body {
        match self {
            Request::Create(r) => Body::CreateGroup(r),
            Request::Commit(r) | Request::Join(r) => Body::Commit(r),
        }
    }
}

/// What becomes true locally once the server accepts a handshake.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Effects {
    /// The conversation row a creation makes: (name, kind).
    pub conversation: Option<(String, String)>,
    /// Membership events this user caused: (kind, member).
    pub events: Vec<(String, String)>,
    /// Security events to record: (kind, user, device, reason).
    #[serde(default)]
    pub alerts: Vec<(String, String, String, String)>,
    /// What the handshake is for, for logs.
    pub what: String,
}

impl Effects {
    pub(crate) fn conversation(name: &str, kind: &str) -> Effects {
        Effects {
            conversation: Some((name.to_owned(), kind.to_owned())),
            what: format!("creating {name}"),
            ..Effects::default()
        }
    }

    pub(crate) fn events(what: &str, kind: MembershipKind, members: &[String]) -> Effects {
        Effects {
            events: members
                .iter()
                .map(|m| (kind.as_str().to_owned(), m.clone()))
                .collect(),
            what: what.to_owned(),
            ..Effects::default()
        }
    }

    pub(crate) fn with_events(mut self, kind: MembershipKind, members: &[String]) -> Effects {
        self.events.extend(
            members
                .iter()
                .map(|m| (kind.as_str().to_owned(), m.clone())),
        );
        self
    }
}

/// Server refusals that may pass by themselves: the handshake stays recorded.
fn transient(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Internal
            | ErrorCode::Timeout
            | ErrorCode::ShuttingDown
            | ErrorCode::RateLimited
            | ErrorCode::Unavailable
            | ErrorCode::Unauthenticated
            | ErrorCode::Unspecified
    )
}

impl Messenger<'_> {
    /// Records a handshake; call inside the transaction that staged its MLS state.
    pub(crate) fn record_handshake(
        &self,
        group: GroupId,
        request: Request,
        effects: &Effects,
    ) -> Result<(), ClientError> {
        let effects = serde_json::to_string(effects)
            .map_err(|e| home_err(format!("recording a handshake: {e}")))?;
        self.home
            .db()
            .execute(
                "INSERT INTO pending_handshakes (group_id, kind, request, effects, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    group.as_bytes().as_slice(),
                    request.kind(),
                    request.encode(),
                    effects,
                    now_ms()
                ],
            )
            .map_err(home_err)?;
        Ok(())
    }

    fn pending_handshake(
        &self,
        group: GroupId,
    ) -> Result<Option<(String, Vec<u8>, String)>, ClientError> {
        self.home
            .db()
            .query_row(
                "SELECT kind, request, effects FROM pending_handshakes WHERE group_id = ?1",
                [group.as_bytes().as_slice()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(home_err)
    }

    pub(crate) fn has_pending_handshakes(&self) -> Result<bool, ClientError> {
        self.home
            .db()
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM pending_handshakes)",
                [],
                |r| r.get(0),
            )
            .map_err(home_err)
    }

    /// Sends the group's recorded handshake (again) and settles it. `Ok` once it is
    /// accepted and merged (or was settled by another process on this home); a
    /// server refusal comes back as [`ClientError::Server`] after the staged state was
    /// dropped; any other error leaves it recorded for the next try.
    pub(crate) async fn settle(&self, group: GroupId) -> Result<(), ClientError> {
        let Some((kind, request, _)) = self.pending_handshake(group)? else {
            return Ok(());
        };
        let request = Request::decode(&kind, &request)?;
        let mut answer = self.conn.request(request.body()).await;
        if let Err(ClientError::Server(e)) = &answer
            && e.code == ErrorCode::GroupInfoNeeded
            && let Some(again) = self.with_base_group_info(group, &kind)?
        {
            answer = self.conn.request(again.body()).await;
        }
        match answer {
            Ok(Response::GroupCreated { .. } | Response::CommitAccepted { .. }) => {
                self.accepted(group)
            }
            Ok(other) => Err(unexpected(&other)),
            Err(ClientError::Server(e)) if !transient(e.code) => {
                tracing::info!(group = %group, code = ?e.code, "the server refused a handshake");
                self.abandon(group)?;
                Err(ClientError::Server(e))
            }
            Err(e) => Err(e),
        }
    }

    /// P438: the recorded commit again, with the GroupInfo of the epoch it was made
    /// at, for a server that holds no public state of the group yet (one made before
    /// P438). The staged commit is still pending, so the group is at that epoch.
    fn with_base_group_info(
        &self,
        group: GroupId,
        kind: &str,
    ) -> Result<Option<Request>, ClientError> {
        let Some((_, request, _)) = self.pending_handshake(group)? else {
            return Ok(None);
        };
        let Request::Commit(mut commit) = Request::decode(kind, &request)? else {
            return Ok(None);
        };
        let provider = self.provider();
        let conv = self.load_group(&provider, group)?;
        if conv.epoch() != commit.epoch {
            return Ok(None);
        }
        commit.base_group_info = conv.export_group_info(&provider, self.identity)?.into();
        tracing::info!(group = %group, "the server asked for the group's GroupInfo (a group made before P438)");
        Ok(Some(Request::Commit(commit)))
    }

    /// The server holds the handshake: merge it and record its effects, at once.
    fn accepted(&self, group: GroupId) -> Result<(), ClientError> {
        let provider = self.provider();
        let db = self.home.db();
        self.home.write(|| {
            // Settled meanwhile by another process on this home.
            let Some((_, _, effects)) = self.pending_handshake(group)? else {
                return Ok(());
            };
            let effects: Effects = serde_json::from_str(&effects)
                .map_err(|e| home_err(format!("a pending handshake is damaged: {e}")))?;
            let mut conv = self.load_group(&provider, group)?;
            if conv.has_pending_commit() {
                conv.merge_pending(&provider)?;
            }
            let now = now_ms();
            let g = group.as_bytes().as_slice();
            if let Some((name, kind)) = &effects.conversation {
                db.execute(
                    "INSERT OR REPLACE INTO conversations (group_id, name, kind, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![g, name, kind, now],
                )
                .map_err(home_err)?;
            }
            for (kind, member) in &effects.events {
                db.execute(
                    "INSERT INTO history (group_id, kind, sender, sent_at, text, state, unread)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'received', 1)",
                    params![g, kind, self.account.username.as_str(), now, member],
                )
                .map_err(home_err)?;
            }
            for (kind, user, device, reason) in &effects.alerts {
                db.execute(
                    "INSERT INTO history (group_id, kind, sender, device, sent_at, text, state, unread)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'received', 1)",
                    params![g, kind, user, device, now, reason],
                )
                .map_err(home_err)?;
            }
            db.execute("DELETE FROM pending_handshakes WHERE group_id = ?1", [g])
                .map_err(home_err)?;
            Ok(())
        })
    }

    /// Drops a refused handshake's staged state: the commit, or the whole group of a
    /// creation the server never registered.
    fn abandon(&self, group: GroupId) -> Result<(), ClientError> {
        let provider = self.provider();
        let db = self.home.db();
        self.home.write(|| {
            let Some((kind, _, _)) = self.pending_handshake(group)? else {
                return Ok(());
            };
            if let Some(mut conv) = Conversation::load(&provider, group)? {
                if kind == "create" || kind == "join" {
                    conv.delete(&provider)?;
                } else if conv.has_pending_commit() {
                    conv.discard_pending(&provider)?;
                }
            }
            db.execute(
                "DELETE FROM pending_handshakes WHERE group_id = ?1",
                [group.as_bytes().as_slice()],
            )
            .map_err(home_err)?;
            Ok(())
        })
    }

    /// Settles every recorded handshake (after a lost answer or a restart). One the
    /// server refused is dropped and logged: what it was for is no longer wanted at
    /// the group's new epoch, and the user is told by the command that started it.
    pub(crate) async fn settle_all(&self) -> Result<(), ClientError> {
        if !self.has_pending_handshakes()? {
            return Ok(());
        }
        let groups: Vec<Vec<u8>> = {
            let mut stmt = self
                .home
                .db()
                .prepare("SELECT group_id FROM pending_handshakes ORDER BY created_at")
                .map_err(home_err)?;
            let rows = stmt.query_map([], |r| r.get(0)).map_err(home_err)?;
            rows.collect::<Result<_, _>>().map_err(home_err)?
        };
        for g in groups {
            let group = stored_group(&g)?;
            match self.settle(group).await {
                Ok(()) => tracing::info!(group = %group, "a recorded handshake is settled"),
                Err(ClientError::Server(e)) => {
                    tracing::warn!(group = %group, error = %e, "a recorded handshake was refused and dropped")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
