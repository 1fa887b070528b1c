//! End-to-end encrypted conversations from the client side: the device's MLS identity
//! and key packages, catching up with the mailbox, and sending through a durable
//! outbox.
//!
//! Every step that changes MLS state also writes history (or the outbox) in the same
//! local transaction, and the server entry is acknowledged only after that commit: a
//! crash loses nothing and processes nothing twice.
use std::collections::{BTreeSet, HashMap};

use hush_crypto::CryptoError;
use hush_crypto::conversation::{Conversation, Incoming};
use hush_crypto::identity::Identity;
use hush_proto::ErrorCode;
use hush_proto::content::Content;
use hush_proto::ids::{DeviceId, GroupId, MessageId, Username};
use hush_proto::pb::{self, client_frame::Body};
use hush_proto::response::{Account, Entry, Response};
use rand::RngCore;
use rusqlite::{OptionalExtension, params};

use crate::ClientError;
use crate::connection::{Connection, unexpected};
use crate::events::Event;
use crate::home::{Home, home_err};
use crate::mls::Provider;

/// Key packages uploaded at a time, and the level that triggers a top-up.
const KEY_PACKAGE_BATCH: usize = 50;
const KEY_PACKAGE_LOW: u32 = 10;
const FETCH_LIMIT: u32 = 200;
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

fn random16() -> [u8; 16] {
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

/// Device → username, from [`Messenger::names`].
pub(crate) struct Names(HashMap<DeviceId, String>);

impl Names {
    pub(crate) fn of(&self, device: &DeviceId) -> String {
        self.0
            .get(device)
            .cloned()
            .unwrap_or_else(|| format!("unknown-device-{device}"))
    }
}

/// A security event about to be written to history.
struct Alert {
    kind: &'static str,
    from: Option<String>,
    device: Option<DeviceId>,
    reason: String,
}

/// Messaging for one authenticated device.
pub struct Messenger<'a> {
    pub(crate) home: &'a Home,
    pub(crate) conn: &'a Connection,
    pub(crate) account: Account,
    pub(crate) identity: Identity,
}

impl<'a> Messenger<'a> {
    /// Loads this device's MLS identity, creating it (and publishing key packages) on
    /// first use.
    pub async fn open(
        home: &'a Home,
        conn: &'a Connection,
        account: Account,
    ) -> Result<Self, ClientError> {
        let db = home.db();
        let stored: Option<Vec<u8>> = db
            .query_row("SELECT public_key FROM identity WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(home_err)?;
        db.execute(
            "INSERT OR REPLACE INTO peer_devices (device_id, username) VALUES (?1, ?2)",
            params![
                account.device_id.as_bytes().as_slice(),
                account.username.as_str()
            ],
        )
        .map_err(home_err)?;
        let provider = Provider::new(db);
        let (identity, fresh) = match stored {
            Some(pk) => (Identity::load(&provider, account.device_id, &pk)?, false),
            None => {
                let identity = home
                    .atomically(async || {
                        let identity = Identity::generate(&provider, account.device_id)?;
                        db.execute(
                            "INSERT INTO identity (id, public_key) VALUES (1, ?1)",
                            [identity.public_key()],
                        )
                        .map_err(home_err)?;
                        Ok(identity)
                    })
                    .await?;
                (identity, true)
            }
        };
        let me = Messenger {
            home,
            conn,
            account,
            identity,
        };
        if fresh {
            me.publish_key_packages(true).await?;
        }
        Ok(me)
    }

    pub fn account(&self) -> &Account {
        &self.account
    }

    pub fn connection(&self) -> &Connection {
        self.conn
    }

    async fn publish_key_packages(&self, with_last_resort: bool) -> Result<u32, ClientError> {
        let provider = Provider::new(self.home.db());
        let (packages, last_resort) = self
            .home
            .atomically(async || {
                let packages = self.identity.key_packages(&provider, KEY_PACKAGE_BATCH)?;
                let last = if with_last_resort {
                    Some(self.identity.last_resort_key_package(&provider)?)
                } else {
                    None
                };
                Ok((packages, last))
            })
            .await?;
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

    /// Uploads key packages when the server runs low on this device's.
    async fn top_up(&self) -> Result<(), ClientError> {
        match self
            .conn
            .request(Body::KeyPackageStatus(pb::KeyPackageStatus {}))
            .await?
        {
            Response::KeyPackageCount(n) if n < KEY_PACKAGE_LOW => {
                self.publish_key_packages(false).await?;
                Ok(())
            }
            Response::KeyPackageCount(_) => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    fn last_entry(&self) -> Result<u64, ClientError> {
        self.home
            .db()
            .query_row("SELECT last_entry FROM sync_state WHERE id = 1", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|v| v as u64)
            .map_err(home_err)
    }

    /// Fetches, processes and acknowledges everything in this device's mailbox, adds
    /// this user's new devices to its conversations, and tops up key packages.
    /// Returns how many history events it added.
    pub async fn sync(&self) -> Result<usize, ClientError> {
        let added = self.catch_up().await?;
        self.adopt_new_devices().await?;
        self.top_up().await?;
        Ok(added)
    }

    /// Fetches, processes and acknowledges everything in this device's mailbox.
    pub(crate) async fn catch_up(&self) -> Result<usize, ClientError> {
        let mut added = 0;
        loop {
            let answer = self
                .conn
                .request(Body::Fetch(pb::Fetch {
                    after_id: 0,
                    limit: FETCH_LIMIT,
                }))
                .await?;
            let Response::Mailbox(entries) = answer else {
                return Err(unexpected(&answer));
            };
            if entries.is_empty() {
                break;
            }
            let mut ids = Vec::with_capacity(entries.len());
            for e in &entries {
                // Entries at or below the mark were stored before a crash cut the ack.
                if e.id > self.last_entry()? {
                    added += self.process(e).await?;
                }
                ids.push(e.id);
            }
            match self.conn.request(Body::Ack(pb::Ack { ids })).await? {
                Response::Acked => {}
                other => return Err(unexpected(&other)),
            }
            if entries.len() < FETCH_LIMIT as usize {
                break;
            }
        }
        Ok(added)
    }

    /// Processes one entry in one local transaction (P505, P520).
    async fn process(&self, e: &Entry) -> Result<usize, ClientError> {
        self.home
            .atomically(async || {
                let added = match e.kind {
                    hush_proto::response::EntryKind::Welcome => self.on_welcome(e).await?,
                    _ => self.on_message(e).await?,
                };
                self.home
                    .db()
                    .execute(
                        "UPDATE sync_state SET last_entry = ?1 WHERE id = 1",
                        [e.id as i64],
                    )
                    .map_err(home_err)?;
                Ok(added)
            })
            .await
    }

    /// Usernames of devices, from the local cache or else the server.
    pub(crate) async fn owners(
        &self,
        devices: &[DeviceId],
    ) -> Result<HashMap<DeviceId, String>, ClientError> {
        let db = self.home.db();
        let mut out = HashMap::new();
        let mut unknown = Vec::new();
        for d in devices {
            let name: Option<String> = db
                .query_row(
                    "SELECT username FROM peer_devices WHERE device_id = ?1",
                    [d.as_bytes().as_slice()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(home_err)?;
            match name {
                Some(n) => {
                    out.insert(*d, n);
                }
                None => unknown.push(*d),
            }
        }
        if !unknown.is_empty() {
            let answer = self
                .conn
                .request(Body::LookupDevices(pb::LookupDevices {
                    device_ids: unknown
                        .iter()
                        .map(|d| d.as_bytes().to_vec().into())
                        .collect(),
                }))
                .await?;
            let Response::Devices(found) = answer else {
                return Err(unexpected(&answer));
            };
            for (d, name) in found {
                db.execute(
                    "INSERT OR REPLACE INTO peer_devices (device_id, username) VALUES (?1, ?2)",
                    params![d.as_bytes().as_slice(), name.as_str()],
                )
                .map_err(home_err)?;
                out.insert(d, name.to_string());
            }
        }
        Ok(out)
    }

    pub(crate) async fn owner(&self, device: DeviceId) -> Result<String, ClientError> {
        Ok(self.names(&[device]).await?.of(&device))
    }

    /// Usernames of devices, as a lookup that names unknown devices plainly.
    pub(crate) async fn names(&self, devices: &[DeviceId]) -> Result<Names, ClientError> {
        Ok(Names(self.owners(devices).await?))
    }

    pub(crate) fn alert_kind(
        &self,
        group: GroupId,
        at_ms: i64,
        kind: &'static str,
        from: Option<String>,
        device: Option<DeviceId>,
        reason: String,
    ) -> Result<usize, ClientError> {
        self.alert(
            group,
            at_ms,
            Alert {
                kind,
                from,
                device,
                reason,
            },
        )
    }

    fn alert(&self, group: GroupId, at_ms: i64, a: Alert) -> Result<usize, ClientError> {
        tracing::warn!(group = %group, kind = a.kind, reason = %a.reason, "security event");
        self.home
            .db()
            .execute(
                "INSERT INTO history (group_id, kind, sender, device, sent_at, text, state, unread)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'received', 1)",
                params![
                    group.as_bytes().as_slice(),
                    a.kind,
                    a.from,
                    a.device.map(|d| d.to_string()),
                    at_ms,
                    a.reason
                ],
            )
            .map_err(home_err)?;
        Ok(1)
    }

    async fn on_welcome(&self, e: &Entry) -> Result<usize, ClientError> {
        let provider = Provider::new(self.home.db());
        let conv = match Conversation::join(&provider, &e.payload) {
            Ok(c) => c,
            Err(err) => {
                let from = self.owner(e.sender_device).await?;
                return self.alert(
                    e.group_id,
                    e.stored_at_ms,
                    Alert {
                        kind: "message_rejected",
                        from: Some(from),
                        device: Some(e.sender_device),
                        reason: format!("could not join a conversation: {err}"),
                    },
                );
            }
        };
        let group = conv.id()?;
        let others: Vec<DeviceId> = conv
            .members()
            .into_iter()
            .filter(|d| *d != self.account.device_id)
            .collect();
        let owners = self.owners(&others).await?;
        let users: BTreeSet<&str> = owners
            .values()
            .map(String::as_str)
            .filter(|u| *u != self.account.username.as_str())
            .collect();
        let (name, kind) = match (conv.state(), users.iter().next()) {
            // A named group carries its name in its signed state.
            (Some(state), _) => (state.name.to_string(), "group"),
            (None, Some(peer)) if users.len() == 1 => (peer.to_string(), "direct"),
            _ => (format!("#{}", &group.to_string()[..8]), "group"),
        };
        self.home
            .db()
            .execute(
                "INSERT OR REPLACE INTO conversations (group_id, name, kind, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![group.as_bytes().as_slice(), name, kind, e.stored_at_ms],
            )
            .map_err(home_err)?;
        tracing::info!(%name, "joined a conversation");
        Ok(0)
    }

    async fn on_message(&self, e: &Entry) -> Result<usize, ClientError> {
        if self.has_left(e.group_id)? {
            // This device left; traffic until the others commit its removal is ignored.
            return Ok(0);
        }
        let provider = Provider::new(self.home.db());
        let Some(mut conv) = Conversation::load(&provider, e.group_id)? else {
            let from = self.owner(e.sender_device).await?;
            return self.alert(
                e.group_id,
                e.stored_at_ms,
                Alert {
                    kind: "message_rejected",
                    from: Some(from),
                    device: Some(e.sender_device),
                    reason: "a message for a conversation this device is not in".into(),
                },
            );
        };
        let incoming = match conv.process(&provider, &e.payload) {
            Ok(i) => i,
            Err(err) => {
                let replay = matches!(err, CryptoError::Replayed(_));
                let from = self.owner(e.sender_device).await?;
                return self.alert(
                    e.group_id,
                    e.stored_at_ms,
                    Alert {
                        kind: if replay {
                            "message_replayed"
                        } else {
                            "message_rejected"
                        },
                        from: Some(from),
                        device: Some(e.sender_device),
                        reason: if replay {
                            format!("a message was delivered again (replay) and ignored: {err}")
                        } else {
                            format!("a message failed to decrypt or verify: {err}")
                        },
                    },
                );
            }
        };
        match incoming {
            Incoming::Application { sender, plaintext } => {
                self.on_content(e, sender, &plaintext).await
            }
            Incoming::Commit(commit) => self.on_commit(e, &mut conv, commit).await,
            Incoming::Proposal(proposal) => self.on_proposal(e, &mut conv, *proposal).await,
        }
    }

    async fn on_content(
        &self,
        e: &Entry,
        sender: DeviceId,
        plaintext: &[u8],
    ) -> Result<usize, ClientError> {
        let db = self.home.db();
        let from = self.owner(sender).await?;
        let content = match Content::decode(plaintext) {
            Ok(c) => c,
            Err(err) => {
                return self.alert(
                    e.group_id,
                    e.stored_at_ms,
                    Alert {
                        kind: "message_rejected",
                        from: Some(from),
                        device: Some(sender),
                        reason: format!("unreadable message content: {err}"),
                    },
                );
            }
        };
        let g = e.group_id.as_bytes().as_slice();
        let last: u64 = db
            .query_row(
                "SELECT last_seq FROM seen_seqs WHERE group_id = ?1 AND device_id = ?2",
                params![g, sender.as_bytes().as_slice()],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map_err(home_err)?
            .unwrap_or(0) as u64;
        if content.seq <= last {
            return self.alert(
                e.group_id,
                e.stored_at_ms,
                Alert {
                    kind: "message_replayed",
                    from: Some(from),
                    device: Some(sender),
                    reason: format!(
                        "message {} repeats sequence number {} (already at {last})",
                        content.message_id, content.seq
                    ),
                },
            );
        }
        let mut added = 0;
        if content.seq > last + 1 {
            added += self.alert(
                e.group_id,
                e.stored_at_ms,
                Alert {
                    kind: "message_gap",
                    from: Some(from.clone()),
                    device: Some(sender),
                    reason: format!(
                        "{} message(s) from {from} never arrived before this one",
                        content.seq - last - 1
                    ),
                },
            )?;
        }
        db.execute(
            "INSERT OR REPLACE INTO seen_seqs (group_id, device_id, last_seq) VALUES (?1, ?2, ?3)",
            params![g, sender.as_bytes().as_slice(), content.seq as i64],
        )
        .map_err(home_err)?;
        let outgoing = from == self.account.username.as_str();
        db.execute(
            "INSERT INTO history (group_id, kind, message_id, sender, device, sent_at, text, outgoing, state, unread)
             VALUES (?1, 'message', ?2, ?3, ?4, ?5, ?6, ?7, 'received', ?8)",
            params![
                g,
                content.message_id.to_string(),
                from,
                sender.to_string(),
                content.sent_at_ms,
                content.text,
                outgoing,
                !outgoing
            ],
        )
        .map_err(home_err)?;
        Ok(added + 1)
    }

    /// The local conversation called `name` of `kind` (`direct` or `group`).
    pub(crate) fn conversation_id(
        &self,
        name: &str,
        kind: &str,
    ) -> Result<Option<GroupId>, ClientError> {
        let id: Option<Vec<u8>> = self
            .home
            .db()
            .query_row(
                "SELECT group_id FROM conversations WHERE name = ?1 AND kind = ?2",
                [name, kind],
                |r| r.get(0),
            )
            .optional()
            .map_err(home_err)?;
        id.map(|id| GroupId::from_slice(&id).map_err(|e| home_err(format!("stored group id: {e}"))))
            .transpose()
    }

    /// The 1:1 conversation with `peer`, created (with every device of both users) if
    /// there is none yet.
    pub async fn direct(&self, peer: &Username) -> Result<GroupId, ClientError> {
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
                    "a conversation with {peer} exists, but this device was not added to it"
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

    async fn create_direct(&self, peer: &Username) -> Result<GroupId, ClientError> {
        let (packages, others) = self
            .key_packages(&[peer.clone(), self.account.username.clone()])
            .await?;
        let mut devices = vec![self.account.device_id];
        devices.extend(others);
        let provider = Provider::new(self.home.db());
        let group = GroupId::from_bytes(random16());
        self.home
            .atomically(async || {
                let mut conv = Conversation::create(&provider, &self.identity, group)?;
                let added = conv.add(&provider, &self.identity, &packages)?;
                let answer = self
                    .conn
                    .request(Body::CreateGroup(pb::CreateGroup {
                        group_id: group.as_bytes().to_vec().into(),
                        direct_peer: peer.to_string(),
                        name: String::new(),
                        welcome: added.welcome.into(),
                        members: devices.iter().map(|d| d.as_bytes().to_vec().into()).collect(),
                    }))
                    .await?;
                let Response::GroupCreated { .. } = answer else {
                    return Err(unexpected(&answer));
                };
                conv.merge_pending(&provider)?;
                let db = self.home.db();
                db.execute(
                    "INSERT OR REPLACE INTO conversations (group_id, name, kind, created_at) VALUES (?1, ?2, 'direct', ?3)",
                    params![group.as_bytes().as_slice(), peer.as_str(), now_ms()],
                )
                .map_err(home_err)?;
                Ok(group)
            })
            .await
    }

    /// Sends a text to `peer`: catches up, opens the conversation if needed, encrypts
    /// into the outbox, and returns once the server holds it durably.
    pub async fn send_text(&self, peer: &Username, text: &str) -> Result<Event, ClientError> {
        if text.len() > hush_proto::content::MAX_TEXT_LEN {
            return Err(ClientError::Invalid(format!(
                "the message is longer than {} bytes",
                hush_proto::content::MAX_TEXT_LEN
            )));
        }
        self.flush_outbox().await?;
        self.sync().await?;
        let group = self.direct(peer).await?;
        let (message_id, row) = self.compose(group, text).await?;
        self.deliver(message_id).await?;
        crate::history::by_row(self.home, row)
    }

    /// Encrypts a message into the outbox and history, in one transaction.
    pub(crate) async fn compose(
        &self,
        group: GroupId,
        text: &str,
    ) -> Result<(MessageId, i64), ClientError> {
        let provider = Provider::new(self.home.db());
        self.home
            .atomically(async || {
                let db = self.home.db();
                let mut conv = self.load_group(&provider, group)?;
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
                    text: text.to_owned(),
                };
                let encoded = content.encode();
                let ciphertext = conv.encrypt(&provider, &self.identity, &encoded)?;
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
                db.execute(
                    "INSERT INTO history (group_id, kind, message_id, sender, device, sent_at, text, outgoing, state, streamed)
                     VALUES (?1, 'message', ?2, ?3, ?4, ?5, ?6, 1, 'sending', 1)",
                    params![
                        g,
                        content.message_id.to_string(),
                        self.account.username.as_str(),
                        self.account.device_id.to_string(),
                        content.sent_at_ms,
                        content.text
                    ],
                )
                .map_err(home_err)?;
                Ok((content.message_id, db.last_insert_rowid()))
            })
            .await
    }

    /// Hands one outbox message to the server, re-encrypting it if the group moved to
    /// a new epoch meanwhile (P431).
    pub(crate) async fn deliver(&self, message_id: MessageId) -> Result<(), ClientError> {
        let db = self.home.db();
        let id = message_id.as_bytes().as_slice();
        for _ in 0..SEND_ATTEMPTS {
            let (group, epoch, ciphertext): (Vec<u8>, i64, Vec<u8>) = db
                .query_row(
                    "SELECT group_id, epoch, ciphertext FROM outbox WHERE message_id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .map_err(home_err)?;
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
                Ok(Response::Sent { .. }) => {
                    return self
                        .home
                        .atomically(async || {
                            db.execute("DELETE FROM outbox WHERE message_id = ?1", [id])
                                .map_err(home_err)?;
                            db.execute(
                                "UPDATE history SET state = 'sent' WHERE message_id = ?1 AND outgoing = 1",
                                [message_id.to_string()],
                            )
                            .map_err(home_err)?;
                            Ok(())
                        })
                        .await;
                }
                Ok(other) => return Err(unexpected(&other)),
                Err(ClientError::Server(e)) if e.code == ErrorCode::StaleEpoch => {
                    self.sync().await?;
                    self.reencrypt(message_id).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::Invalid(
            "the conversation kept changing; the message stays in the outbox and is retried on the next send".into(),
        ))
    }

    async fn reencrypt(&self, message_id: MessageId) -> Result<(), ClientError> {
        let provider = Provider::new(self.home.db());
        let db = self.home.db();
        let id = message_id.as_bytes().as_slice();
        self.home
            .atomically(async || {
                let (group, content): (Vec<u8>, Vec<u8>) = db
                    .query_row(
                        "SELECT group_id, content FROM outbox WHERE message_id = ?1",
                        [id],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .map_err(home_err)?;
                let group = GroupId::from_slice(&group).map_err(|e| home_err(e.to_string()))?;
                let mut conv = self.load_group(&provider, group)?;
                let ciphertext = conv.encrypt(&provider, &self.identity, &content)?;
                db.execute(
                    "UPDATE outbox SET epoch = ?1, ciphertext = ?2 WHERE message_id = ?3",
                    params![conv.epoch() as i64, ciphertext, id],
                )
                .map_err(home_err)?;
                Ok(())
            })
            .await
    }

    /// Sends whatever an interrupted earlier run left in the outbox.
    pub async fn flush_outbox(&self) -> Result<usize, ClientError> {
        let ids: Vec<Vec<u8>> = {
            let mut stmt = self
                .home
                .db()
                .prepare("SELECT message_id FROM outbox ORDER BY rowid")
                .map_err(home_err)?;
            let rows = stmt.query_map([], |r| r.get(0)).map_err(home_err)?;
            rows.collect::<Result<_, _>>().map_err(home_err)?
        };
        for id in &ids {
            let id = MessageId::from_slice(id).map_err(|e| home_err(e.to_string()))?;
            self.deliver(id).await?;
        }
        Ok(ids.len())
    }
}
