//! Channels (P550–P556): named groups whose signed state marks them joinable. The
//! creator's client chooses the TOTP secret and hands the server the password (it
//! keeps only an argon2id hash) and the group's GroupInfo; a joiner proves the
//! password and code to the server, gets the current GroupInfo, checks it (signature,
//! ratchet tree, every leaf vouched for by its account key, the name it asked for) and
//! joins by an external commit, which every member sees as `member_joined`.
use hush_crypto::conversation::Conversation;
use hush_proto::ErrorCode;
use hush_proto::content::GroupName;
use hush_proto::ids::{ChannelPassword, TotpCode};
use hush_proto::pb::{self, client_frame::Body};
use hush_proto::response::{ChannelSummary, Response};
use rand::RngCore;

use crate::ClientError;
use crate::account::{TotpSetup, totp_label};
use crate::connection::unexpected;
use crate::events::MembershipKind;
use crate::handshake::{Effects, Request};
use crate::messaging::{Messenger, random16};

/// Tries of a join across commits that win the channel's epoch first.
const JOIN_ATTEMPTS: usize = 5;

/// What a channel asks of joiners.
#[derive(Clone, Default)]
pub struct ChannelAccess {
    /// `None`: open.
    pub password: Option<ChannelPassword>,
    pub totp: bool,
}

impl std::fmt::Debug for ChannelAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelAccess")
            .field("password", &self.password.is_some())
            .field("totp", &self.totp)
            .finish()
    }
}

/// A change an admin makes to a channel (P555).
#[derive(Clone, Default)]
pub struct ChannelChange {
    /// `Some(None)`: open from now on.
    pub password: Option<Option<ChannelPassword>>,
    pub rotate_totp: bool,
    pub remove_totp: bool,
}

/// A fresh TOTP secret: 160 bits, as RFC 4226 recommends for HMAC-SHA-1.
fn new_totp_secret() -> Vec<u8> {
    let mut secret = vec![0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    secret
}

/// The label of a channel's entry in an authenticator app: `#name@server`.
fn channel_label(name: &GroupName, server: &str) -> String {
    totp_label(&name.to_string(), server)
}

impl Messenger<'_> {
    /// P550: creates `#name` as a channel with this user as its admin; with a code,
    /// returns what authenticator apps need.
    pub(crate) async fn create_channel(
        &self,
        name: &GroupName,
        access: &ChannelAccess,
    ) -> Result<Option<TotpSetup>, ClientError> {
        let secret = access.totp.then(new_totp_secret);
        let settings = pb::ChannelSettings {
            password: access
                .password
                .as_ref()
                .map(|p| p.expose().to_owned())
                .unwrap_or_default(),
            open: access.password.is_none(),
            totp_secret: secret.clone().unwrap_or_default().into(),
            group_info: Default::default(),
        };
        self.create_group(name, &[], Some(settings)).await?;
        Ok(secret.map(|s| TotpSetup::new(&s, &channel_label(name, self.conn.server()))))
    }

    /// P553: joins `#name` by an external commit once the server admitted this device.
    pub(crate) async fn join_channel(
        &self,
        name: &GroupName,
        password: Option<&ChannelPassword>,
        code: Option<&TotpCode>,
    ) -> Result<(), ClientError> {
        self.sync().await?;
        if self.conversation_id(&name.to_string(), "group")?.is_some() {
            return Err(ClientError::Invalid(format!("you are already in {name}")));
        }
        for _ in 0..JOIN_ATTEMPTS {
            let answer = self
                .conn
                .request(Body::JoinChannel(pb::JoinChannel {
                    name: name.bare().to_owned(),
                    password: password.map(|p| p.expose().to_owned()).unwrap_or_default(),
                    code: code.map(|c| c.expose().to_owned()).unwrap_or_default(),
                }))
                .await?;
            let Response::ChannelJoin {
                group_id,
                group_info,
                ..
            } = answer
            else {
                return Err(unexpected(&answer));
            };
            let (Some(group), Some(info)) = (group_id, group_info) else {
                // P556: nobody made the lobby yet; this device does, with no admin in
                // its signed state: the server's admins own it, not its first joiner.
                let settings = pb::ChannelSettings {
                    open: true,
                    ..Default::default()
                };
                return match self
                    .create_group_as(name, &[], Some(settings), Vec::new())
                    .await
                {
                    Err(ClientError::Invalid(_)) => continue,
                    other => other,
                };
            };
            let provider = self.provider();
            let me = self.account.username.to_string();
            self.home.write(|| {
                // A channel this device left before: its old state goes.
                if let Some(old) = Conversation::load(&provider, group)? {
                    old.delete(&provider)?;
                }
                let joined = Conversation::join_external(&provider, self.identity, &info, group)?;
                if joined.state.name != *name {
                    joined.conversation.delete(&provider)?;
                    return Err(ClientError::Invalid(format!(
                        "the server handed out the state of {} when asked for {name}; \
                         nothing was joined",
                        joined.state.name
                    )));
                }
                let epoch = joined.conversation.epoch().saturating_sub(1);
                let request = pb::Commit {
                    group_id: group.as_bytes().to_vec().into(),
                    epoch,
                    commit: joined.commit.into(),
                    welcome: Default::default(),
                    added: vec![self.account.device_id.as_bytes().to_vec().into()],
                    removed: Vec::new(),
                    client_key: random16().to_vec().into(),
                    group_info: joined.group_info.into(),
                    external: true,
                    proposals: Vec::new(),
                    // The server holds the channel's GroupInfo itself (P438, P552).
                    base_group_info: Default::default(),
                };
                self.record_handshake(
                    group,
                    Request::Join(request),
                    &Effects::conversation(&name.to_string(), "group")
                        .with_events(MembershipKind::Joined, std::slice::from_ref(&me)),
                )
            })?;
            match self.settle(group).await {
                Ok(()) => {
                    tracing::info!(channel = %name, "joined a channel");
                    // P534: this user's other devices follow it in.
                    self.sync().await?;
                    return Ok(());
                }
                // Someone's commit took the epoch first: ask for the new GroupInfo.
                Err(ClientError::Server(e)) if e.code == ErrorCode::StaleEpoch => {
                    tracing::info!(channel = %name, "the channel moved on; joining again");
                }
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::Invalid(format!(
            "{name} kept changing while joining; try again"
        )))
    }

    /// P554: the server's channels.
    pub(crate) async fn channels(&self) -> Result<Vec<ChannelSummary>, ClientError> {
        match self
            .conn
            .request(Body::ListChannels(pb::ListChannels {}))
            .await?
        {
            Response::Channels(c) => Ok(c),
            other => Err(unexpected(&other)),
        }
    }

    /// P555: a new password or code secret; returns the new secret's setup.
    pub(crate) async fn update_channel(
        &self,
        name: &GroupName,
        change: &ChannelChange,
    ) -> Result<Option<TotpSetup>, ClientError> {
        let secret = change.rotate_totp.then(new_totp_secret);
        let (set_password, password, open) = match &change.password {
            None => (false, String::new(), false),
            Some(None) => (true, String::new(), true),
            Some(Some(p)) => (true, p.expose().to_owned(), false),
        };
        self.update(pb::UpdateChannel {
            name: name.bare().to_owned(),
            set_password,
            password,
            open,
            totp_secret: secret.clone().unwrap_or_default().into(),
            remove_totp: change.remove_totp,
            admins: Vec::new(),
        })
        .await?;
        Ok(secret.map(|s| TotpSetup::new(&s, &channel_label(name, self.conn.server()))))
    }

    async fn update(&self, request: pb::UpdateChannel) -> Result<(), ClientError> {
        match self.conn.request(Body::UpdateChannel(request)).await? {
            Response::ChannelUpdated => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// P555: after a promotion in a channel, the server learns who may change it.
    pub(crate) async fn publish_channel_admins(
        &self,
        name: &GroupName,
        admins: &[hush_proto::ids::Username],
    ) -> Result<(), ClientError> {
        self.update(pb::UpdateChannel {
            name: name.bare().to_owned(),
            admins: admins.iter().map(|a| a.to_string()).collect(),
            ..pb::UpdateChannel::default()
        })
        .await
    }

    /// P555: removes every other member (each sees `member_removed`), deletes the
    /// channel on the server and leaves it here.
    pub(crate) async fn delete_channel(&self, name: &GroupName) -> Result<(), ClientError> {
        self.sync().await?;
        let group = self.group_id(name)?;
        let conv = self.load_group(&self.provider(), group)?;
        let state = conv
            .state()
            .filter(|s| s.joinable)
            .ok_or_else(|| ClientError::Invalid(format!("{name} is not a channel")))?;
        if !state.is_admin(self.account.username.as_str()) {
            return Err(ClientError::Invalid(format!(
                "only admins of {name} can delete it"
            )));
        }
        // Members first learn it is deleted (signed state), then are removed.
        if !state.deleted {
            let provider = self.provider();
            let bare = vec![name.to_string()];
            self.commit(
                group,
                async || Ok(()),
                |conv, ()| {
                    let Some(mut state) = conv.state().filter(|s| !s.deleted) else {
                        return Ok(None);
                    };
                    state.deleted = true;
                    let commit = conv.set_state(&provider, self.identity, &state)?;
                    Ok(Some(crate::groups::Built {
                        commit,
                        welcome: None,
                        added: Vec::new(),
                        removed: Vec::new(),
                        effects: Effects::events("deleting", MembershipKind::Deleted, &bare),
                    }))
                },
            )
            .await?;
        }
        let others: Vec<hush_proto::ids::Username> = self
            .roster_of(&conv)
            .await?
            .into_keys()
            .filter(|u| u != self.account.username.as_str())
            .filter_map(|u| hush_proto::ids::Username::parse(&u).ok())
            .collect();
        if !others.is_empty() {
            self.remove_members(name, &others).await?;
        }
        match self
            .conn
            .request(Body::DeleteChannel(pb::DeleteChannel {
                name: name.bare().to_owned(),
            }))
            .await?
        {
            Response::ChannelDeleted => {}
            other => return Err(unexpected(&other)),
        }
        self.home.write(|| self.evicted(group))
    }
}
