//! Who is who, decided by account keys, never by the server's word (P540–P546):
//! this account's key, the account key pinned for each contact (trust on first use:
//! the first key seen for a username wins and is never overwritten), keys the server
//! presents later (`identity_changed`, not trusted until the user confirms), verified
//! contacts and safety numbers, and which account each device seen in a conversation
//! belongs to (from its verified certificate).
use hush_crypto::account::{AccountKey, AccountPublicKey, safety_number};
use hush_proto::ids::{DeviceId, GroupId};
use rusqlite::{OptionalExtension, params};

use crate::ClientError;
use crate::events::SecurityKind;
use crate::home::{Home, home_err};
use crate::messaging::{Alert, Messenger, now_ms, stored_group};

/// What this home knows about a contact's account key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub username: String,
    /// The pinned key: the first one seen, or the one the user last confirmed.
    pub account_key: AccountPublicKey,
    pub verified: bool,
    /// Another key the server presented since; not trusted until confirmed.
    pub changed_key: Option<AccountPublicKey>,
}

/// `hush verify USER`: the safety number of this account and a contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub user: String,
    /// 60 digits in 12 groups of 5.
    pub safety_number: String,
    pub verified: bool,
    /// The contact's key changed; the number is for the new key, which is trusted only
    /// once confirmed.
    pub key_changed: bool,
}

/// How a key the server presents for a user compares with the pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pin {
    /// It is the pinned key.
    Trusted,
    /// Nothing was pinned: this key is now (trust on first use).
    New,
    /// Another key is pinned: this one is not trusted.
    Mismatch,
}

fn stored_key(bytes: &[u8]) -> Result<AccountPublicKey, ClientError> {
    AccountPublicKey::from_slice(bytes).map_err(|e| home_err(format!("a stored account key: {e}")))
}

impl Home {
    /// The conversations this home is in (not left): group, name and kind.
    pub(crate) fn live_conversations(&self) -> Result<Vec<(GroupId, String, String)>, ClientError> {
        let mut stmt = self
            .db()
            .prepare(
                "SELECT group_id, name, kind FROM conversations WHERE kind IN ('direct', 'group')",
            )
            .map_err(home_err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(home_err)?;
        let mut out = Vec::new();
        for row in rows {
            let (g, name, kind) = row.map_err(home_err)?;
            out.push((stored_group(&g)?, name, kind));
        }
        Ok(out)
    }

    /// This account's key, if this home has one.
    pub(crate) fn account_key(&self) -> Result<Option<AccountKey>, ClientError> {
        let secret: Option<Vec<u8>> = self
            .db()
            .query_row("SELECT secret FROM account_key WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(home_err)?;
        secret
            .map(|s| {
                AccountKey::from_secret(&zeroize::Zeroizing::new(s))
                    .map_err(|e| home_err(e.to_string()))
            })
            .transpose()
    }

    /// Stores this account's key and pins it for this account's username.
    pub(crate) fn save_account_key(
        &self,
        username: &str,
        key: &AccountKey,
    ) -> Result<(), ClientError> {
        let db = self.db();
        self.write(|| {
            db.execute(
                "INSERT OR REPLACE INTO account_key (id, secret, public) VALUES (1, ?1, ?2)",
                params![key.secret().as_slice(), key.public().as_bytes().as_slice()],
            )
            .map_err(home_err)?;
            db.execute("DELETE FROM contacts WHERE username = ?1", [username])
                .map_err(home_err)?;
            db.execute(
                "INSERT INTO contacts (username, account_key, first_seen, verified) VALUES (?1, ?2, ?3, 1)",
                params![username, key.public().as_bytes().as_slice(), now_ms()],
            )
            .map_err(home_err)?;
            Ok(())
        })
    }

    pub(crate) fn contact(&self, username: &str) -> Result<Option<Contact>, ClientError> {
        let row: Option<(Vec<u8>, bool, Option<Vec<u8>>)> = self
            .db()
            .query_row(
                "SELECT account_key, verified, changed_key FROM contacts WHERE username = ?1",
                [username],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(home_err)?;
        row.map(|(key, verified, changed)| {
            Ok(Contact {
                username: username.to_owned(),
                account_key: stored_key(&key)?,
                verified,
                changed_key: changed.as_deref().map(stored_key).transpose()?,
            })
        })
        .transpose()
    }

    /// Pins `key` for `username` if nothing is pinned (inside the caller's
    /// transaction), and says how `key` compares with the pin. A different key is
    /// remembered as the contact's changed key; the pin stays.
    pub(crate) fn pin(
        &self,
        username: &str,
        key: &AccountPublicKey,
    ) -> Result<(Pin, bool), ClientError> {
        let db = self.db();
        match self.contact(username)? {
            Some(c) if c.account_key == *key => Ok((Pin::Trusted, false)),
            Some(c) => {
                let fresh = c.changed_key != Some(*key);
                if fresh {
                    db.execute(
                        "UPDATE contacts SET changed_key = ?2 WHERE username = ?1",
                        params![username, key.as_bytes().as_slice()],
                    )
                    .map_err(home_err)?;
                }
                Ok((Pin::Mismatch, fresh))
            }
            None => {
                // A key already pinned for another username is not taken over.
                let other: Option<String> = db
                    .query_row(
                        "SELECT username FROM contacts WHERE account_key = ?1",
                        [key.as_bytes().as_slice()],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(home_err)?;
                if other.is_some() {
                    return Ok((Pin::Mismatch, false));
                }
                db.execute(
                    "INSERT INTO contacts (username, account_key, first_seen) VALUES (?1, ?2, ?3)",
                    params![username, key.as_bytes().as_slice(), now_ms()],
                )
                .map_err(home_err)?;
                Ok((Pin::New, false))
            }
        }
    }

    /// Remembers which account a verified device belongs to (inside the caller's
    /// transaction). A device's certificate never changes, so the first one stays.
    pub(crate) fn note_device(
        &self,
        device: DeviceId,
        key: &AccountPublicKey,
    ) -> Result<(), ClientError> {
        self.db()
            .execute(
                "INSERT OR IGNORE INTO device_accounts (device_id, account_key) VALUES (?1, ?2)",
                params![device.as_bytes().as_slice(), key.as_bytes().as_slice()],
            )
            .map_err(home_err)?;
        Ok(())
    }

    /// The username whose pinned key vouches for `device`, if known.
    pub(crate) fn owner_of(&self, device: &DeviceId) -> Result<Option<String>, ClientError> {
        self.db()
            .prepare_cached(
                "SELECT c.username FROM device_accounts a JOIN contacts c ON c.account_key = a.account_key
                 WHERE a.device_id = ?1",
            )
            .map_err(home_err)?
            .query_row([device.as_bytes().as_slice()], |r| r.get(0))
            .optional()
            .map_err(home_err)
    }

    /// The account key a device was seen with.
    pub(crate) fn account_of(
        &self,
        device: &DeviceId,
    ) -> Result<Option<AccountPublicKey>, ClientError> {
        let key: Option<Vec<u8>> = self
            .db()
            .query_row(
                "SELECT account_key FROM device_accounts WHERE device_id = ?1",
                [device.as_bytes().as_slice()],
                |r| r.get(0),
            )
            .optional()
            .map_err(home_err)?;
        key.as_deref().map(stored_key).transpose()
    }

    /// Every pinned contact, by username.
    pub(crate) fn contacts(&self) -> Result<Vec<Contact>, ClientError> {
        let names: Vec<String> = {
            let mut stmt = self
                .db()
                .prepare("SELECT username FROM contacts ORDER BY username")
                .map_err(home_err)?;
            let rows = stmt.query_map([], |r| r.get(0)).map_err(home_err)?;
            rows.collect::<Result<_, _>>().map_err(home_err)?
        };
        names
            .iter()
            .filter_map(|n| self.contact(n).transpose())
            .collect()
    }

    /// Marks a contact verified, accepting its changed key if there is one.
    pub(crate) fn confirm(&self, username: &str) -> Result<(), ClientError> {
        let db = self.db();
        self.write(|| {
            let c = self.contact(username)?.ok_or_else(|| {
                ClientError::Invalid(format!("no key is known for {username} yet"))
            })?;
            if let Some(new) = c.changed_key {
                // Another username pinned to the new key cannot keep it.
                db.execute(
                    "DELETE FROM contacts WHERE account_key = ?1 AND username <> ?2",
                    params![new.as_bytes().as_slice(), username],
                )
                .map_err(home_err)?;
                db.execute(
                    "UPDATE contacts SET account_key = ?2, changed_key = NULL WHERE username = ?1",
                    params![username, new.as_bytes().as_slice()],
                )
                .map_err(home_err)?;
            }
            db.execute(
                "UPDATE contacts SET verified = 1 WHERE username = ?1",
                [username],
            )
            .map_err(home_err)?;
            // Devices refused under the old key are judged again under the accepted one.
            db.execute(
                "DELETE FROM refused_devices WHERE username = ?1",
                [username],
            )
            .map_err(home_err)?;
            Ok(())
        })
    }
}

impl Messenger<'_> {
    /// P544: the server presented a key for `user` other than the pinned one. Reported
    /// once per new key in every conversation with that user.
    pub(crate) fn identity_changed(
        &self,
        user: &str,
        presented: &AccountPublicKey,
    ) -> Result<usize, ClientError> {
        let groups = self.conversations_with(user)?;
        let mut n = 0;
        for g in &groups {
            n += self.alert(
                *g,
                now_ms(),
                Alert {
                    kind: SecurityKind::IdentityChanged,
                    rejection: None,
                    from: Some(user.to_owned()),
                    device: None,
                    reason: format!(
                        "the server presented another account key for {user} ({presented}); \
                         nothing is encrypted to it until you check the new safety number \
                         with {user} and run `hush verify {user} --confirm`"
                    ),
                },
            )?;
        }
        tracing::warn!(%user, "identity changed");
        Ok(n)
    }

    /// The conversations `user` is in: the 1:1 and every group with one of its devices.
    pub(crate) fn conversations_with(&self, user: &str) -> Result<Vec<GroupId>, ClientError> {
        let rows = self.home.live_conversations()?;
        let provider = self.provider();
        let mut out = Vec::new();
        for (group, name, kind) in rows {
            let member = if kind == "direct" {
                name == user
            } else {
                match hush_crypto::conversation::Conversation::load(&provider, group)? {
                    Some(conv) => conv.members().iter().try_fold(false, |found, d| {
                        Ok::<_, ClientError>(
                            found || self.home.owner_of(d)?.as_deref() == Some(user),
                        )
                    })?,
                    None => false,
                }
            };
            if member {
                out.push(group);
            }
        }
        Ok(out)
    }

    /// The safety number with `user` (P545); with `confirm`, marks the contact verified
    /// (accepting a changed key).
    pub(crate) async fn verify(
        &self,
        user: &hush_proto::ids::Username,
        confirm: bool,
    ) -> Result<Verification, ClientError> {
        if user == &self.account.username {
            return Err(ClientError::Invalid(
                "a safety number is between you and someone else".into(),
            ));
        }
        if self.home.contact(user.as_str())?.is_none() {
            // Learn the key (trust on first use) from the server's published one.
            self.list_devices(&[user.to_string()]).await?;
        }
        let contact = self.home.contact(user.as_str())?.ok_or_else(|| {
            ClientError::Invalid(format!("{user} has no account key on this server yet"))
        })?;
        if confirm {
            self.home.confirm(user.as_str())?;
        }
        let theirs = contact.changed_key.unwrap_or(contact.account_key);
        let mine = self.identity.certificate().account;
        Ok(Verification {
            user: user.to_string(),
            safety_number: safety_number(
                self.account.username.as_str(),
                &mine,
                user.as_str(),
                &theirs,
            ),
            verified: confirm || (contact.verified && contact.changed_key.is_none()),
            key_changed: contact.changed_key.is_some() && !confirm,
        })
    }

    /// P544: sending to a verified contact whose key changed is refused until the user
    /// confirms the new key.
    pub(crate) fn check_not_blocked(&self, users: &[String]) -> Result<(), ClientError> {
        for u in users {
            if let Some(c) = self.home.contact(u)?
                && c.verified
                && c.changed_key.is_some()
            {
                return Err(ClientError::IdentityChanged { user: u.clone() });
            }
        }
        Ok(())
    }
}
