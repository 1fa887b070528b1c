//! End-to-end encrypted conversations from the client side: the device's MLS identity
//! and key packages, catching up with the mailbox, and sending through a durable
//! outbox. The engine ([`crate::engine`]) drives these with its connection.
//!
//! Every step that changes MLS state also writes history (or the outbox) in the same
//! local transaction, and the server entry is acknowledged only after that commit: a
//! crash loses nothing and processes nothing twice. No request goes out while a local
//! transaction is open ([`Home::write`] takes a synchronous closure).
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use hush_crypto::conversation::{Conversation, Incoming};
use hush_crypto::identity::Identity;
use hush_crypto::{CryptoError, Rejection};
use hush_proto::ErrorCode;
use hush_proto::content::{Content, ContentBody};
use hush_proto::ids::{DeviceId, GroupId, MessageId, Username};
use hush_proto::pb::{self, client_frame::Body};
use hush_proto::response::{Account, Entry, EntryKind, Response};
use rand::RngCore;
use rusqlite::{OptionalExtension, params};

use crate::ClientError;
use crate::connection::{Connection, unexpected};
use crate::events::{MembershipKind, MessageState, SecurityKind};
use crate::home::{Home, home_err};
use crate::identities::Pin;
use crate::mls::Provider;
use crate::sequence::Verdict;
use hush_crypto::account::AccountPublicKey;

/// Key packages uploaded at a time, and the level that triggers a top-up.
const KEY_PACKAGE_BATCH: usize = 50;
const KEY_PACKAGE_LOW: u32 = 10;
const FETCH_LIMIT: u32 = 200;

/// Processed mailbox entries remembered (id and digest): ten pages.
const PROCESSED_KEPT: i64 = 10 * FETCH_LIMIT as i64;
/// Tries of one send across concurrent commits (P431).
const SEND_ATTEMPTS: usize = 5;

impl From<CryptoError> for ClientError {
    fn from(e: CryptoError) -> Self {
        ClientError::Crypto(e.to_string())
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn random16() -> [u8; 16] {
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

pub(crate) fn stored_group(id: &[u8]) -> Result<GroupId, ClientError> {
    GroupId::from_slice(id).map_err(|e| home_err(format!("stored group id: {e}")))
}

/// Device → username, as far as this home knows.
pub(crate) struct Names(HashMap<DeviceId, String>);

impl Names {
    pub(crate) fn of(&self, device: &DeviceId) -> String {
        self.0
            .get(device)
            .cloned()
            .unwrap_or_else(|| format!("unknown-device-{device}"))
    }
}

/// Name lookups inside a local transaction: devices this home does not know yet are
/// noted, so the caller can roll back, ask the server outside the transaction, and
/// process again (no network I/O inside a transaction).
pub(crate) struct Lookup<'a> {
    home: &'a Home,
    /// Unknown devices, with the account their certificate names (if seen).
    misses: RefCell<BTreeMap<DeviceId, Option<AccountPublicKey>>>,
    /// Set on the try after the server was asked: unknown devices stay unknown.
    last_try: bool,
}

impl<'a> Lookup<'a> {
    pub(crate) fn new(home: &'a Home, last_try: bool) -> Self {
        Lookup {
            home,
            misses: RefCell::new(BTreeMap::new()),
            last_try,
        }
    }

    /// Names devices by the account key their certificate carries and the username
    /// pinned for that key (P543); never by the server's word alone.
    pub(crate) fn resolve(&self, devices: &[DeviceId]) -> Result<Names, ClientError> {
        let mut out = HashMap::new();
        for d in devices {
            match self.home.owner_of(d)? {
                Some(n) => {
                    out.insert(*d, n);
                }
                None if !self.last_try => {
                    let key = self.home.account_of(d)?;
                    self.misses.borrow_mut().insert(*d, key);
                }
                None => {}
            }
        }
        Ok(Names(out))
    }

    /// Fails with [`ClientError::NeedLookup`] (rolling the transaction back) if a
    /// device was unknown on a try that may still ask the server.
    pub(crate) fn finish(&self) -> Result<(), ClientError> {
        let misses = self.misses.borrow();
        if misses.is_empty() {
            Ok(())
        } else {
            Err(ClientError::NeedLookup(
                misses.iter().map(|(d, k)| (*d, *k)).collect(),
            ))
        }
    }
}

/// A security event about to be written to history.
pub(crate) struct Alert {
    pub kind: SecurityKind,
    pub rejection: Option<Rejection>,
    pub from: Option<String>,
    pub device: Option<DeviceId>,
    pub reason: String,
}

/// Messaging for one authenticated device over one connection.
pub(crate) struct Messenger<'a> {
    pub(crate) home: &'a Home,
    pub(crate) conn: &'a Connection,
    pub(crate) account: &'a Account,
    pub(crate) identity: &'a Identity,
    /// For what is not history: messages the server could not keep for us.
    pub(crate) events: &'a tokio::sync::broadcast::Sender<crate::events::Event>,
}

/// Loads this device's MLS identity, creating it on first use. Key packages follow on
/// the first sync ([`Messenger::top_up`]), so a lost answer cannot leave a device
/// unreachable.
pub(crate) fn load_identity(home: &Home, account: &Account) -> Result<Identity, ClientError> {
    let db = home.db();
    let provider = Provider::new(db);
    let key = home.account_key()?.ok_or_else(|| {
        ClientError::Home(
            "this home was made before account keys; log in again with a new --home".into(),
        )
    })?;
    home.write(|| {
        let stored: Option<(Vec<u8>, Option<Vec<u8>>)> = db
            .query_row(
                "SELECT public_key, certificate FROM identity WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(home_err)?;
        let identity = match stored {
            Some((pk, Some(cert))) => Identity::load(&provider, &pk, &cert)?,
            Some((_, None)) => {
                return Err(ClientError::Home(
                    "this home was made before account keys; log in again with a new --home".into(),
                ));
            }
            None => {
                let created = (now_ms() / 1000).max(0) as u64;
                let identity = Identity::generate(&provider, account.device_id, &key, created)?;
                db.execute(
                    "INSERT INTO identity (id, public_key, certificate) VALUES (1, ?1, ?2)",
                    params![identity.public_key(), identity.certificate().encode()],
                )
                .map_err(home_err)?;
                identity
            }
        };
        if identity.certificate().account != key.public() {
            return Err(ClientError::Home(
                "this device's certificate is not signed by this account's key".into(),
            ));
        }
        home.note_device(account.device_id, &key.public())?;
        Ok(identity)
    })
}

impl<'a> Messenger<'a> {
    pub(crate) fn provider(&self) -> Provider<'a> {
        Provider::new(self.home.db())
    }

    async fn publish_key_packages(&self, with_last_resort: bool) -> Result<u32, ClientError> {
        let provider = self.provider();
        let (packages, last_resort) = self.home.write(|| {
            let packages = self.identity.key_packages(&provider, KEY_PACKAGE_BATCH)?;
            let last = if with_last_resort {
                Some(self.identity.last_resort_key_package(&provider)?)
            } else {
                None
            };
            Ok((packages, last))
        })?;
        let answer = self
            .conn
            .request(Body::PublishKeyPackages(pb::PublishKeyPackages {
                key_packages: packages.into_iter().map(Into::into).collect(),
                last_resort: last_resort.unwrap_or_default().into(),
            }))
            .await?;
        match answer {
            Response::KeyPackageCount(n) => Ok(n),
            other => Err(unexpected(&other)),
        }
    }

    /// Uploads key packages when the server runs low on this device's; with none left
    /// (a new device, or one whose first upload was lost) the last-resort one too.
    pub(crate) async fn top_up(&self) -> Result<(), ClientError> {
        match self
            .conn
            .request(Body::KeyPackageStatus(pb::KeyPackageStatus {}))
            .await?
        {
            Response::KeyPackageCount(n) if n < KEY_PACKAGE_LOW => {
                self.publish_key_packages(n == 0).await?;
                Ok(())
            }
            Response::KeyPackageCount(_) => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Fetches, processes and acknowledges everything in this device's mailbox, adds
    /// missing devices to its conversations, and tops up key packages. Returns how many
    /// history events it added.
    pub(crate) async fn sync(&self) -> Result<usize, ClientError> {
        let added = self.catch_up().await?;
        self.flush_leaves().await?;
        self.reconcile_devices().await?;
        self.top_up().await?;
        self.publish_group_infos().await?;
        Ok(added)
    }

    /// Settles recorded handshakes, then fetches, processes and acknowledges
    /// everything in this device's mailbox.
    pub(crate) async fn catch_up(&self) -> Result<usize, ClientError> {
        // A commit of ours the server may have accepted decides the epoch the next
        // entries are at: settle it first.
        self.settle_all().await?;
        let policy = self.home.invitation_policy()?;
        let mut added = 0;
        loop {
            let mut accept: Vec<Username> = Vec::new();
            let answer = self
                .conn
                .request(Body::Fetch(pb::Fetch {
                    after_id: 0,
                    limit: FETCH_LIMIT,
                    follow: false,
                }))
                .await?;
            let Response::Mailbox {
                entries,
                missed,
                more,
            } = answer
            else {
                return Err(unexpected(&answer));
            };
            if entries.is_empty() && missed == 0 {
                break;
            }
            let mut ids = Vec::with_capacity(entries.len());
            for e in &entries {
                if e.kind == EntryKind::Request {
                    // P460: not MLS; the server says who invited us. Told (or accepted
                    // at once, P463), then acked.
                    match Username::parse(&String::from_utf8_lossy(&e.payload)) {
                        Ok(by) if policy == crate::home::InvitationPolicy::Everyone => {
                            if !accept.contains(&by) {
                                accept.push(by);
                            }
                        }
                        Ok(by) => {
                            let _ = self
                                .events
                                .send(crate::events::Event::Invited { by: by.to_string() });
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "an invitation notice names no valid user")
                        }
                    }
                    ids.push(e.id);
                    continue;
                }
                // A local failure stops here: this entry and the rest stay on the
                // server, unacknowledged, and are tried again (P441).
                added += self.process(e).await?;
                ids.push(e.id);
            }
            if missed > 0 {
                // Told before the ack: a lost ack means being told again, not never.
                tracing::warn!(
                    missed,
                    "the server could not keep some messages for this device"
                );
                let _ = self
                    .events
                    .send(crate::events::Event::Missed { count: missed });
            }
            let ack = pb::Ack {
                ids,
                missed_seen: missed,
            };
            match self.conn.request(Body::Ack(ack)).await? {
                Response::Acked => {}
                other => return Err(unexpected(&other)),
            }
            for by in &accept {
                // What was held comes in the next pages.
                self.send_answer(by, true).await?;
                tracing::info!(%by, "accepted a group invitation (invitations: everyone)");
            }
            // Answers are bounded by bytes as well as entries (P440): the server says
            // whether more wait. What accepting released comes in the next pages.
            if !more && accept.is_empty() {
                break;
            }
        }
        Ok(added)
    }

    /// Processes one entry in one local transaction (P505, P520), asking the server
    /// for unknown devices' owners between tries.
    async fn process(&self, e: &Entry) -> Result<usize, ClientError> {
        for last_try in [false, true] {
            let db = self.home.db();
            let lookup = Lookup::new(self.home, last_try);
            let outcome = self.home.write(|| {
                let mark: i64 = db
                    .query_row("SELECT last_entry FROM sync_state WHERE id = 1", [], |r| {
                        r.get(0)
                    })
                    .map_err(home_err)?;
                // At or below the mark: stored before a crash cut the ack, or by
                // another process on this home: the same entry again. An entry there
                // that this home never processed means the server's ids went back (a
                // restored or badly migrated server): it is processed, not dropped.
                let digest = <sha2::Sha256 as sha2::Digest>::digest(&e.payload).to_vec();
                if e.id as i64 <= mark {
                    let seen: bool = db
                        .query_row(
                            "SELECT EXISTS (SELECT 1 FROM processed_entries
                             WHERE id = ?1 AND digest = ?2)",
                            params![e.id as i64, digest],
                            |r| r.get(0),
                        )
                        .map_err(home_err)?;
                    if seen {
                        return Ok(0);
                    }
                    tracing::warn!(entry = e.id, mark,
                        "the server's mailbox ids went back; processing an entry this home never saw");
                }
                let added = match e.kind {
                    EntryKind::Welcome => self.on_welcome(e, &lookup)?,
                    _ => self.on_message(e, &lookup)?,
                };
                lookup.finish()?;
                db.execute(
                    "UPDATE sync_state SET last_entry = ?1 WHERE id = 1",
                    [e.id as i64],
                )
                .map_err(home_err)?;
                // What was processed, for telling an entry that comes again from one
                // the server numbered anew; the last PROCESSED_KEPT are enough (a
                // crash loses at most one page's acknowledgement).
                db.execute(
                    "INSERT INTO processed_entries (id, digest) VALUES (?1, ?2)",
                    params![e.id as i64, digest],
                )
                .map_err(home_err)?;
                db.execute(
                    "DELETE FROM processed_entries
                     WHERE n <= (SELECT MAX(n) FROM processed_entries) - ?1",
                    [PROCESSED_KEPT],
                )
                .map_err(home_err)?;
                Ok(added)
            });
            match outcome {
                Err(ClientError::NeedLookup(devices)) => self.learn_owners(&devices).await?,
                other => return other,
            }
        }
        Err(ClientError::Home(
            "internal: device names still unknown on the last try".into(),
        ))
    }

    /// Asks the server who owns these devices (P412) and pins that username to the
    /// account key the device's certificate names, if the server publishes the same
    /// key for it and nothing else is pinned (P543).
    pub(crate) async fn learn_owners(
        &self,
        devices: &[(DeviceId, Option<AccountPublicKey>)],
    ) -> Result<(), ClientError> {
        let known: Vec<(DeviceId, AccountPublicKey)> = devices
            .iter()
            .filter_map(|(d, k)| k.map(|k| (*d, k)))
            .collect();
        if known.is_empty() {
            return Ok(());
        }
        let answer = self
            .conn
            .request(Body::LookupDevices(pb::LookupDevices {
                device_ids: known
                    .iter()
                    .map(|(d, _)| d.as_bytes().to_vec().into())
                    .collect(),
            }))
            .await?;
        let Response::Devices(found) = answer else {
            return Err(unexpected(&answer));
        };
        // The server only names the user; the device's certificate says which account
        // it is, and a username is pinned to an account key on first sight (P543).
        self.home.write(|| {
            for o in &found {
                let Some(seen) = known.iter().find(|(d, _)| *d == o.device).map(|(_, k)| *k)
                else {
                    continue;
                };
                self.home.note_device(o.device, &seen)?;
                let published = o
                    .account_key
                    .and_then(|k| AccountPublicKey::from_slice(k.as_bytes()).ok());
                if published != Some(seen) {
                    tracing::warn!(device = %o.device, user = %o.username,
                        "the server names a device's owner whose published key is not the device's");
                    continue;
                }
                if let (Pin::Mismatch, true) = self.home.pin(o.username.as_str(), &seen)? {
                    self.identity_changed(o.username.as_str(), &seen)?;
                }
            }
            Ok(())
        })
    }

    /// Usernames of devices, from this home or else the server.
    pub(crate) async fn names(&self, devices: &[DeviceId]) -> Result<Names, ClientError> {
        let first = Lookup::new(self.home, false);
        let names = first.resolve(devices)?;
        let misses: Vec<(DeviceId, Option<AccountPublicKey>)> = first
            .misses
            .borrow()
            .iter()
            .map(|(d, k)| (*d, *k))
            .collect();
        if misses.is_empty() {
            return Ok(names);
        }
        self.learn_owners(&misses).await?;
        Lookup::new(self.home, true).resolve(devices)
    }

    /// Remembers the account of every leaf of `conv` (each verified when it entered).
    pub(crate) fn note_roster(&self, conv: &Conversation) -> Result<(), ClientError> {
        for (d, key) in conv.roster() {
            self.home.note_device(d, &key)?;
        }
        Ok(())
    }

    /// Writes a security event to history (inside the caller's transaction).
    pub(crate) fn alert(&self, group: GroupId, at_ms: i64, a: Alert) -> Result<usize, ClientError> {
        tracing::warn!(group = %group, kind = a.kind.as_str(), reason = %a.reason, "security event");
        self.home
            .db()
            .execute(
                "INSERT INTO history (group_id, kind, sender, device, sent_at, text, state, unread, rejection)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'received', 1, ?7)",
                params![
                    group.as_bytes().as_slice(),
                    a.kind.as_str(),
                    a.from,
                    a.device.map(|d| d.to_string()),
                    at_ms,
                    a.reason,
                    a.rejection.map(|r| r.as_str())
                ],
            )
            .map_err(home_err)?;
        Ok(1)
    }

    /// A peer's bytes were refused: reported with the typed reason, never dropped.
    fn rejected(
        &self,
        e: &Entry,
        lookup: &Lookup<'_>,
        rejection: Rejection,
        reason: String,
    ) -> Result<usize, ClientError> {
        let from = lookup.resolve(&[e.sender_device])?.of(&e.sender_device);
        let kind = match (rejection, e.kind) {
            (Rejection::Duplicate, _) => SecurityKind::MessageReplayed,
            // P541: a commit bringing in a leaf its account key did not sign.
            (Rejection::Identity, EntryKind::Handshake) => SecurityKind::CommitRejected,
            _ => SecurityKind::MessageRejected,
        };
        self.alert(
            e.group_id,
            e.stored_at_ms,
            Alert {
                kind,
                rejection: Some(rejection),
                from: Some(from),
                device: Some(e.sender_device),
                reason,
            },
        )
    }

    fn on_welcome(&self, e: &Entry, lookup: &Lookup<'_>) -> Result<usize, ClientError> {
        let provider = self.provider();
        let conv = match Conversation::join(&provider, &e.payload) {
            Ok(c) => c,
            Err(err) => match err.peer_fault() {
                Some(r) => {
                    return self.rejected(
                        e,
                        lookup,
                        r,
                        format!("could not join a conversation: {err}"),
                    );
                }
                None => return Err(err.into()),
            },
        };
        let group = conv.id()?;
        self.note_roster(&conv)?;
        let others: Vec<DeviceId> = conv
            .members()
            .into_iter()
            .filter(|d| *d != self.account.device_id)
            .collect();
        let owners = lookup.resolve(&others)?;
        let users: BTreeSet<String> = others
            .iter()
            .map(|d| owners.of(d))
            .filter(|u| u != self.account.username.as_str())
            .collect();
        let state = conv.state();
        let (name, kind) = match (state.as_ref(), users.iter().next()) {
            // A named group carries its name in its signed state.
            (Some(state), _) => (state.name.to_string(), "group"),
            (None, Some(peer)) if users.len() == 1 => (peer.to_string(), "direct"),
            _ => (format!("#{}", &group.to_string()[..8]), "group"),
        };
        let db = self.home.db();
        let g = group.as_bytes().as_slice();
        // Another conversation of that name gives way (as a replace would); this one,
        // if this device was in it before, keeps its sequence numbers (P520: members
        // remember the last one seen from this device).
        db.execute(
            "DELETE FROM conversations WHERE name = ?1 AND group_id <> ?2",
            params![name, g],
        )
        .map_err(home_err)?;
        db.execute(
            "INSERT INTO conversations (group_id, name, kind, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (group_id) DO UPDATE SET name = excluded.name, kind = excluded.kind",
            params![g, name, kind, e.stored_at_ms],
        )
        .map_err(home_err)?;
        // Back in a group it was removed from: what was sent meanwhile is no gap (P520).
        self.home
            .db()
            .execute(
                "DELETE FROM seen_seqs WHERE group_id = ?1",
                [group.as_bytes().as_slice()],
            )
            .map_err(home_err)?;
        tracing::debug!(%name, "joined a conversation");
        // A named group says who brought this user in ("you were added to #team by
        // alice"); a new device of a user already in it is no news.
        let me = self.account.username.as_str();
        if state.is_some()
            && let Some(by) = conv.welcomed_by().map(|d| owners.of(&d))
            && by != me
        {
            return self.membership_event(group, e.stored_at_ms, MembershipKind::Added, me, &by);
        }
        Ok(0)
    }

    fn on_message(&self, e: &Entry, lookup: &Lookup<'_>) -> Result<usize, ClientError> {
        let provider = self.provider();
        if self.has_left(e.group_id)? && Conversation::load(&provider, e.group_id)?.is_some() {
            // This device left; traffic until the others commit its removal is ignored.
            // (A device that was removed has no state left: traffic is refused below.)
            return Ok(0);
        }
        let Some(mut conv) = Conversation::load(&provider, e.group_id)? else {
            return self.rejected(
                e,
                lookup,
                Rejection::Malformed,
                "a message for a conversation this device is not in".into(),
            );
        };
        self.note_roster(&conv)?;
        let incoming = match conv.process(&provider, &e.payload) {
            Ok(i) => i,
            Err(err) => match err.peer_fault() {
                Some(Rejection::Duplicate) => {
                    return self.rejected(
                        e,
                        lookup,
                        Rejection::Duplicate,
                        format!("a replayed message (delivered again) was dropped: {err}"),
                    );
                }
                Some(r) => {
                    if r == Rejection::Epoch && conv.is_ahead(&e.payload) {
                        // P537: this device missed commits; it rejoins after the sync.
                        self.home
                            .db()
                            .execute(
                                "INSERT OR IGNORE INTO resync_needed (group_id) VALUES (?1)",
                                [e.group_id.as_bytes().as_slice()],
                            )
                            .map_err(home_err)?;
                    }
                    return self.rejected(
                        e,
                        lookup,
                        r,
                        format!("a message failed to decrypt or verify: {err}"),
                    );
                }
                // Our storage or code failed: not the sender's fault, and not acked.
                None => return Err(err.into()),
            },
        };
        match incoming {
            Incoming::Application { sender, plaintext } => {
                self.on_content(e, lookup, sender, &plaintext)
            }
            Incoming::Commit(commit) => self.on_commit(e, lookup, &mut conv, commit),
            Incoming::Proposal(proposal) => self.on_proposal(e, lookup, &mut conv, *proposal),
        }
    }

    fn on_content(
        &self,
        e: &Entry,
        lookup: &Lookup<'_>,
        sender: DeviceId,
        plaintext: &[u8],
    ) -> Result<usize, ClientError> {
        let db = self.home.db();
        let from = lookup.resolve(&[sender])?.of(&sender);
        let content = match Content::decode(plaintext) {
            Ok(c) => c,
            Err(err) => {
                return self.alert(
                    e.group_id,
                    e.stored_at_ms,
                    Alert {
                        kind: SecurityKind::MessageRejected,
                        rejection: Some(Rejection::Malformed),
                        from: Some(from),
                        device: Some(sender),
                        reason: format!("unreadable message content: {err}"),
                    },
                );
            }
        };
        let g = e.group_id.as_bytes().as_slice();
        let seen: Option<(u64, u64)> = db
            .query_row(
                "SELECT last_seq, window FROM seen_seqs WHERE group_id = ?1 AND device_id = ?2",
                params![g, sender.as_bytes().as_slice()],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
            .optional()
            .map_err(home_err)?;
        // P520: the first message seen from a sender sets the baseline (this device may
        // have joined after that sender's earlier messages); later jumps are gaps, and
        // one that overtook another is delivered and reported as reordered.
        let (verdict, (last, window)) = crate::sequence::judge(seen, content.seq);
        let mut added = 0;
        let note = |kind, rejection, reason: String| Alert {
            kind,
            rejection,
            from: Some(from.clone()),
            device: Some(sender),
            reason,
        };
        match verdict {
            Verdict::Replay => {
                return self.alert(
                    e.group_id,
                    e.stored_at_ms,
                    note(
                        SecurityKind::MessageReplayed,
                        Some(Rejection::Duplicate),
                        format!(
                            "message {} repeats sequence number {} (a replay)",
                            content.message_id, content.seq
                        ),
                    ),
                );
            }
            Verdict::Gap(n) => {
                added += self.alert(
                    e.group_id,
                    e.stored_at_ms,
                    note(
                        SecurityKind::MessageGap,
                        None,
                        format!("{n} message(s) from {from} never arrived before this one"),
                    ),
                )?;
            }
            Verdict::Reordered => {
                added += self.alert(
                    e.group_id,
                    e.stored_at_ms,
                    note(
                        SecurityKind::MessageReordered,
                        None,
                        format!(
                            "this message from {from} arrived after a later one (the server \
                             reordered them); it is shown now"
                        ),
                    ),
                )?;
            }
            Verdict::First | Verdict::Next => {}
        }
        db.execute(
            "INSERT OR REPLACE INTO seen_seqs (group_id, device_id, last_seq, window) VALUES (?1, ?2, ?3, ?4)",
            params![g, sender.as_bytes().as_slice(), last as i64, window as i64],
        )
        .map_err(home_err)?;
        let outgoing = from == self.account.username.as_str();
        // A message from this account's other device is history here, not news.
        let how = Stored {
            outgoing,
            state: MessageState::Received,
            unread: !outgoing,
            streamed: false,
        };
        store_content(self.home, e.group_id, &content, &from, sender, how)?;
        Ok(added + 1)
    }

    /// The local conversation called `name` of `kind` (`direct` or `group`).
    pub(crate) fn conversation_id(
        &self,
        name: &str,
        kind: &str,
    ) -> Result<Option<GroupId>, ClientError> {
        local_conversation(self.home, name, kind)
    }

    /// The 1:1 conversation with `peer`, created (with every device of both users) if
    /// there is none yet.
    pub(crate) async fn direct(&self, peer: &Username) -> Result<GroupId, ClientError> {
        if peer == &self.account.username {
            return Err(ClientError::Invalid(
                "you cannot start a conversation with yourself".into(),
            ));
        }
        for attempt in 0..3 {
            if let Some(g) = self.conversation_id(peer.as_str(), "direct")? {
                return Ok(g);
            }
            let answer = self
                .conn
                .request(Body::FindDirect(pb::FindDirect {
                    peer: peer.to_string(),
                }))
                .await?;
            let Response::DirectGroup(found) = answer else {
                return Err(unexpected(&answer));
            };
            if found.is_some() {
                if attempt == 0 {
                    // Its Welcome may be waiting in the mailbox.
                    self.sync().await?;
                    continue;
                }
                return Err(ClientError::Invalid(format!(
                    "a conversation with {peer} exists, but this device is not in it yet; \
                     it is added when one of {peer}'s devices or your other devices is next online"
                )));
            }
            match self.create_direct(peer).await {
                Ok(g) => return Ok(g),
                // Both sides created it at once; the server kept the other one.
                Err(ClientError::Server(e)) if e.code == ErrorCode::GroupExists => {
                    self.sync().await?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::Invalid(format!(
            "could not open a conversation with {peer}"
        )))
    }

    /// Creates the 1:1 group: recorded locally first, then registered (P420, P423).
    async fn create_direct(&self, peer: &Username) -> Result<GroupId, ClientError> {
        let (packages, others) = self
            .key_packages(&[peer.clone(), self.account.username.clone()])
            .await?;
        let mut devices = vec![self.account.device_id];
        devices.extend(others);
        let provider = self.provider();
        let group = GroupId::from_bytes(random16());
        self.home.write(|| {
            let mut conv = Conversation::create(&provider, self.identity, group)?;
            let added = conv.add(&provider, self.identity, &packages)?;
            let request = pb::CreateGroup {
                group_id: group.as_bytes().to_vec().into(),
                direct_peer: peer.to_string(),
                name: String::new(),
                welcome: added.welcome.into(),
                members: devices
                    .iter()
                    .map(|d| d.as_bytes().to_vec().into())
                    .collect(),
                client_key: random16().to_vec().into(),
                channel: None,
                // P438: the state the server checks later commits against.
                group_info: conv.take_group_info().unwrap_or_default().into(),
            };
            self.record_handshake(
                group,
                crate::handshake::Request::Create(request),
                &crate::handshake::Effects::conversation(peer.as_str(), "direct"),
            )
        })?;
        self.settle(group).await?;
        Ok(group)
    }

    /// Sends a text to `peer`: catches up, opens the conversation if needed, encrypts
    /// into the outbox, and returns the history row once the server holds it durably.
    pub(crate) async fn send_text(&self, peer: &Username, text: &str) -> Result<i64, ClientError> {
        check_text(text)?;
        self.send_direct(peer, &ContentBody::Text(text.to_owned()))
            .await
    }

    /// Sends `body` in the 1:1 conversation with `peer` (created if there is none).
    pub(crate) async fn send_direct(
        &self,
        peer: &Username,
        body: &ContentBody,
    ) -> Result<i64, ClientError> {
        self.flush_outbox().await?;
        self.sync().await?;
        self.check_not_blocked(&[peer.to_string()])?;
        let group = self.direct(peer).await?;
        self.send_in(group, body).await
    }

    /// Commits what others queued, encrypts into the outbox, and delivers.
    pub(crate) async fn send_in(
        &self,
        group: GroupId,
        body: &ContentBody,
    ) -> Result<i64, ClientError> {
        self.commit_pending_proposals(group).await?;
        let (message_id, row) = self.compose(group, body)?;
        self.deliver(message_id).await?;
        Ok(row)
    }

    /// Encrypts a message into the outbox and history, in one transaction.
    fn compose(&self, group: GroupId, body: &ContentBody) -> Result<(MessageId, i64), ClientError> {
        compose(
            self.home,
            self.identity,
            &self.account.username,
            self.account.device_id,
            group,
            body,
        )
    }

    /// Hands one outbox message to the server, re-encrypting it if the group moved to
    /// a new epoch meanwhile (P431). A retry after a lost answer carries the same
    /// message id, so the server stores it once.
    pub(crate) async fn deliver(&self, message_id: MessageId) -> Result<(), ClientError> {
        let db = self.home.db();
        let id = message_id.as_bytes().as_slice();
        for _ in 0..SEND_ATTEMPTS {
            let row: Option<(Vec<u8>, i64, Vec<u8>)> = db
                .query_row(
                    "SELECT group_id, epoch, ciphertext FROM outbox WHERE message_id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(home_err)?;
            // Delivered already, by another process on this home.
            let Some((group, epoch, ciphertext)) = row else {
                return Ok(());
            };
            let sent = self
                .conn
                .request(Body::Send(pb::Send {
                    group_id: group.clone().into(),
                    epoch: epoch as u64,
                    ciphertext: ciphertext.into(),
                    client_message_id: id.to_vec().into(),
                }))
                .await;
            match sent {
                Ok(Response::Sent { undelivered, .. }) => {
                    let state = if undelivered.is_empty() {
                        MessageState::Sent
                    } else {
                        tracing::warn!(
                            devices = undelivered.len(),
                            "some recipient devices have a full mailbox and will not get the message"
                        );
                        MessageState::Partial
                    };
                    return self.settle_outgoing(message_id, state);
                }
                Ok(other) => return Err(unexpected(&other)),
                Err(ClientError::Server(e)) if e.code == ErrorCode::StaleEpoch => {
                    self.catch_up().await?;
                    self.reencrypt(message_id)?;
                }
                Err(ClientError::Server(e)) if refused_for_good(e.code) => {
                    // Retrying cannot help: the message leaves the outbox, marked failed.
                    self.settle_outgoing(message_id, MessageState::Failed)?;
                    return Err(ClientError::Server(e));
                }
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::Invalid(
            "the conversation kept changing; the message stays in the outbox and is retried on the next send".into(),
        ))
    }

    /// Takes a message out of the outbox with its final state, in one transaction.
    fn settle_outgoing(
        &self,
        message_id: MessageId,
        state: MessageState,
    ) -> Result<(), ClientError> {
        let db = self.home.db();
        self.home.write(|| {
            db.execute(
                "DELETE FROM outbox WHERE message_id = ?1",
                [message_id.as_bytes().as_slice()],
            )
            .map_err(home_err)?;
            db.execute(
                "UPDATE history SET state = ?1 WHERE message_id = ?2 AND outgoing = 1",
                params![state.as_str(), message_id.to_string()],
            )
            .map_err(home_err)?;
            Ok(())
        })?;
        self.publish_delivery(message_id)
    }

    /// Front ends showing an outgoing message learn its new state.
    fn publish_delivery(&self, message_id: MessageId) -> Result<(), ClientError> {
        let db = self.home.db();
        let row: Option<(i64, String)> = db
            .query_row(
                "SELECT id, state FROM history WHERE message_id = ?1 AND outgoing = 1",
                [message_id.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(home_err)?;
        if let Some((row, state)) = row
            && let Ok(
                crate::events::Event::Message {
                    id, conversation, ..
                }
                | crate::events::Event::File {
                    id, conversation, ..
                },
            ) = crate::history::by_row(self.home, row)
        {
            let _ = self.events.send(crate::events::Event::Delivery {
                row,
                id,
                conversation,
                state: MessageState::parse(&state),
            });
        }
        Ok(())
    }

    fn reencrypt(&self, message_id: MessageId) -> Result<(), ClientError> {
        let provider = self.provider();
        let db = self.home.db();
        let id = message_id.as_bytes().as_slice();
        self.home.write(|| {
            let row: Option<(Vec<u8>, Vec<u8>)> = db
                .query_row(
                    "SELECT group_id, content FROM outbox WHERE message_id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(home_err)?;
            let Some((group, content)) = row else {
                return Ok(());
            };
            let mut conv = self.load_group(&provider, stored_group(&group)?)?;
            let ciphertext = conv.encrypt(&provider, self.identity, &content)?;
            db.execute(
                "UPDATE outbox SET epoch = ?1, ciphertext = ?2 WHERE message_id = ?3",
                params![conv.epoch() as i64, ciphertext, id],
            )
            .map_err(home_err)?;
            Ok(())
        })
    }

    /// How many messages wait in the outbox.
    pub(crate) fn outbox_len(&self) -> Result<usize, ClientError> {
        let n: i64 = self
            .home
            .db()
            .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
            .map_err(home_err)?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Sends whatever an interrupted earlier run left in the outbox (P457). Each entry
    /// stands alone: one that fails is counted and, after [`OUTBOX_ATTEMPTS`] runs
    /// (or at once when no retry can help), set aside with its error and reported,
    /// while the rest still go. Only a lost link to the server stops the flush.
    pub(crate) async fn flush_outbox(&self) -> Result<usize, ClientError> {
        let ids: Vec<(Vec<u8>, Vec<u8>)> = {
            let mut stmt = self
                .home
                .db()
                .prepare(
                    "SELECT message_id, group_id FROM outbox WHERE set_aside = 0 ORDER BY rowid",
                )
                .map_err(home_err)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(home_err)?;
            rows.collect::<Result<_, _>>().map_err(home_err)?
        };
        // Messages written while offline were not checked against what the catch-up
        // just learned: a verified contact whose key changed blocks them (P544).
        let mut blocked: HashMap<Vec<u8>, Option<String>> = HashMap::new();
        for (id, group) in &ids {
            let id = MessageId::from_slice(id).map_err(|e| home_err(e.to_string()))?;
            if !blocked.contains_key(group) {
                let why = match self.outbox_check(group).await {
                    Ok(()) => None,
                    Err(e) if link_lost(&e) => return Err(e),
                    Err(e) => Some(e.to_string()),
                };
                blocked.insert(group.clone(), why);
            }
            if let Some(Some(why)) = blocked.get(group) {
                tracing::warn!(error = %why, "an outbox message was not sent");
                self.outbox_failed(id, why, true)?;
                continue;
            }
            match self.deliver(id).await {
                Ok(()) => {}
                // Marked failed already; the rest of the outbox may still go.
                Err(ClientError::Server(e)) if refused_for_good(e.code) => {
                    tracing::warn!(error = %e.message, "an outbox message was refused");
                }
                Err(ClientError::Server(e)) if e.code == ErrorCode::StorageFull => {
                    // The server cannot store anything now; the outbox waits.
                    tracing::warn!(error = %e.message, "the server's storage is full; the outbox waits");
                    break;
                }
                Err(e) if link_lost(&e) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "an outbox message failed; the others still go");
                    self.outbox_failed(id, &e.to_string(), false)?;
                }
            }
        }
        Ok(ids.len())
    }

    /// Whether an outbox entry of `group` may go: the conversation is still ours and
    /// no verified member's key changed.
    async fn outbox_check(&self, group: &[u8]) -> Result<(), ClientError> {
        let conv = self.load_group(&self.provider(), stored_group(group)?)?;
        let users: Vec<String> = self.roster_of(&conv).await?.into_keys().collect();
        self.check_not_blocked(&users)
    }

    /// Counts a failed try of an outbox entry; sets it aside (history: failed, a
    /// `message_not_sent` event) once it failed [`OUTBOX_ATTEMPTS`] times, or at once.
    fn outbox_failed(&self, id: MessageId, error: &str, now: bool) -> Result<(), ClientError> {
        let db = self.home.db();
        let key = id.as_bytes().as_slice();
        let aside = self.home.write(|| {
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?2,
                    set_aside = CASE WHEN ?3 OR attempts + 1 >= ?4 THEN 1 ELSE 0 END
                 WHERE message_id = ?1",
                params![key, error, now, OUTBOX_ATTEMPTS],
            )
            .map_err(home_err)?;
            let row: Option<(bool, Vec<u8>)> = db
                .query_row(
                    "SELECT set_aside, group_id FROM outbox WHERE message_id = ?1",
                    [key],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(home_err)?;
            let Some((true, group)) = row else {
                return Ok(false);
            };
            db.execute(
                "UPDATE history SET state = ?1 WHERE message_id = ?2 AND outgoing = 1",
                params![MessageState::Failed.as_str(), id.to_string()],
            )
            .map_err(home_err)?;
            self.alert(
                stored_group(&group)?,
                now_ms(),
                Alert {
                    kind: SecurityKind::MessageNotSent,
                    rejection: None,
                    from: Some(self.account.username.to_string()),
                    device: Some(self.account.device_id),
                    reason: format!(
                        "a message could not be sent and was set aside ({error}); \
                         `hush outbox retry {id}` tries again, `hush outbox drop {id}` drops it"
                    ),
                },
            )?;
            Ok(true)
        })?;
        if aside {
            tracing::warn!(message = %id, error, "an outbox message was set aside");
            self.publish_delivery(id)?;
        }
        Ok(())
    }

    /// P457: a set-aside outbox entry goes back in line (history: sending) and is tried
    /// at once.
    pub(crate) async fn outbox_retry(&self, id: MessageId) -> Result<(), ClientError> {
        let db = self.home.db();
        let key = id.as_bytes().as_slice();
        let found = self.home.write(|| {
            let n = db
                .execute(
                    "UPDATE outbox SET set_aside = 0, attempts = 0, last_error = NULL WHERE message_id = ?1",
                    [key],
                )
                .map_err(home_err)?;
            db.execute(
                "UPDATE history SET state = ?1 WHERE message_id = ?2 AND outgoing = 1",
                params![MessageState::Sending.as_str(), id.to_string()],
            )
            .map_err(home_err)?;
            Ok(n > 0)
        })?;
        if !found {
            return Err(ClientError::Invalid(format!(
                "no message {id} waits in the outbox"
            )));
        }
        let group: Vec<u8> = db
            .query_row(
                "SELECT group_id FROM outbox WHERE message_id = ?1",
                [key],
                |r| r.get(0),
            )
            .map_err(home_err)?;
        let sent = match self.outbox_check(&group).await {
            Ok(()) => self.deliver(id).await,
            Err(e) => Err(e),
        };
        match sent {
            Ok(()) => Ok(()),
            Err(e) if link_lost(&e) => Err(e),
            Err(e) => {
                self.outbox_failed(id, &e.to_string(), true)?;
                Err(e)
            }
        }
    }
}

/// How many runs may fail to send an outbox entry before it is set aside (P457).
pub(crate) const OUTBOX_ATTEMPTS: i64 = 3;

/// Errors that say nothing about the entry: the link to the server is gone, so the
/// flush stops and the entry is tried again on the next connection.
fn link_lost(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Unreachable { .. }
            | ClientError::Disconnected(_)
            | ClientError::Timeout(_)
            | ClientError::Tls(_)
            | ClientError::FingerprintChanged { .. }
            | ClientError::FingerprintMismatch { .. }
            | ClientError::UnknownServer { .. }
    ) || matches!(e, ClientError::Server(s) if s.code == ErrorCode::Unavailable
        || s.code == ErrorCode::ShuttingDown
        || s.code == ErrorCode::RateLimited
        || s.code == ErrorCode::Unauthenticated)
}

/// Server refusals of a message that no retry can change (P450, P452).
fn refused_for_good(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::MailboxFull
            | ErrorCode::QuotaExceeded
            | ErrorCode::InvalidArgument
            | ErrorCode::NotAMember
            | ErrorCode::NotFound
    )
}

/// The local conversation called `name` of `kind` (`direct` or `group`).
pub(crate) fn local_conversation(
    home: &Home,
    name: &str,
    kind: &str,
) -> Result<Option<GroupId>, ClientError> {
    let id: Option<Vec<u8>> = home
        .db()
        .query_row(
            "SELECT group_id FROM conversations WHERE name = ?1 AND kind = ?2",
            [name, kind],
            |r| r.get(0),
        )
        .optional()
        .map_err(home_err)?;
    id.map(|id| stored_group(&id)).transpose()
}

/// Encrypts a message into the outbox and history, in one transaction, with no need
/// of the server: the outbox delivers it (online now, or once connected).
pub(crate) fn compose(
    home: &Home,
    identity: &Identity,
    username: &Username,
    device: DeviceId,
    group: GroupId,
    body: &ContentBody,
) -> Result<(MessageId, i64), ClientError> {
    let provider = Provider::new(home.db());
    home.write(|| {
        let db = home.db();
        let mut conv = Conversation::load(&provider, group)?.ok_or_else(|| {
            ClientError::Invalid("the conversation is missing from this home".into())
        })?;
        let g = group.as_bytes().as_slice();
        let seq: i64 = db
            .query_row(
                "UPDATE conversations SET next_seq = next_seq + 1 WHERE group_id = ?1 RETURNING next_seq - 1",
                [g],
                |r| r.get(0),
            )
            .map_err(home_err)?;
        let content = Content {
            message_id: MessageId::from_bytes(random16()),
            seq: seq as u64,
            sent_at_ms: now_ms(),
            body: body.clone(),
        };
        let encoded = content.encode();
        let ciphertext = conv.encrypt(&provider, identity, &encoded)?;
        db.execute(
            "INSERT INTO outbox (message_id, group_id, epoch, ciphertext, content) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                content.message_id.as_bytes().as_slice(),
                g,
                conv.epoch() as i64,
                ciphertext,
                encoded
            ],
        )
        .map_err(home_err)?;
        let how = Stored {
            outgoing: true,
            state: MessageState::Sending,
            unread: false,
            streamed: true,
        };
        let row = store_content(home, group, &content, username.as_str(), device, how)?;
        Ok((content.message_id, row))
    })
}

/// How a message enters history.
struct Stored {
    outgoing: bool,
    state: MessageState,
    unread: bool,
    /// Already shown (what this device sent is not news for `recv`).
    streamed: bool,
}

/// Writes a message (text or file offer) to history, inside the caller's
/// transaction; returns its row.
fn store_content(
    home: &Home,
    group: GroupId,
    content: &Content,
    from: &str,
    device: DeviceId,
    how: Stored,
) -> Result<i64, ClientError> {
    let db = home.db();
    let g = group.as_bytes().as_slice();
    let (kind, text) = match &content.body {
        ContentBody::Text(t) => ("message", t.as_str()),
        ContentBody::File(f) => ("file", f.name.as_str()),
    };
    db.execute(
        "INSERT INTO history (group_id, kind, message_id, sender, device, sent_at, text, outgoing, state, unread, streamed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            g,
            kind,
            content.message_id.to_string(),
            from,
            device.to_string(),
            content.sent_at_ms,
            text,
            how.outgoing,
            how.state.as_str(),
            how.unread,
            how.streamed
        ],
    )
    .map_err(home_err)?;
    let row = db.last_insert_rowid();
    if let ContentBody::File(f) = &content.body {
        crate::files::remember_offer(home, group, &content.message_id.to_string(), f)?;
    }
    Ok(row)
}

pub(crate) fn check_text(text: &str) -> Result<(), ClientError> {
    if text.is_empty() {
        return Err(ClientError::Invalid("the message is empty".into()));
    }
    if text.len() > hush_proto::content::MAX_TEXT_LEN {
        return Err(ClientError::Invalid(format!(
            "the message is longer than {} bytes",
            hush_proto::content::MAX_TEXT_LEN
        )));
    }
    Ok(())
}

impl Messenger<'_> {
    /// P461: invitations waiting for this account, one per inviter.
    pub(crate) async fn requests(
        &self,
    ) -> Result<Vec<hush_proto::response::PendingRequest>, ClientError> {
        match self
            .conn
            .request(Body::ListRequests(pb::ListRequests {}))
            .await?
        {
            Response::Requests(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    /// P462: accepts (then joins what was held, at once) or declines `inviter`'s
    /// invitations.
    pub(crate) async fn answer_request(
        &self,
        inviter: &Username,
        accept: bool,
    ) -> Result<(), ClientError> {
        let answer = pb::AnswerRequest {
            inviter: inviter.to_string(),
            accept,
        };
        match self.conn.request(Body::AnswerRequest(answer)).await? {
            Response::RequestAnswered => {}
            other => return Err(unexpected(&other)),
        }
        if accept {
            self.catch_up().await?;
        }
        Ok(())
    }

    /// Accepts by policy (P463); nothing waiting (another device of ours answered) is
    /// fine.
    async fn send_answer(&self, inviter: &Username, accept: bool) -> Result<(), ClientError> {
        let answer = pb::AnswerRequest {
            inviter: inviter.to_string(),
            accept,
        };
        match self.conn.request(Body::AnswerRequest(answer)).await {
            Ok(Response::RequestAnswered) => Ok(()),
            // Answered already (by another device of ours): nothing is waiting.
            Err(ClientError::Server(e)) if e.code == ErrorCode::NotFound => Ok(()),
            Ok(other) => Err(unexpected(&other)),
            Err(e) => Err(e),
        }
    }
}
