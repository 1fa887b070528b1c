//! One conversation = one MLS group. Handshake and application messages are
//! PrivateMessages (the server sees neither content nor membership changes in clear);
//! clients keep no past epochs, since the server orders every group (P503). The one
//! exception is a channel's external commit (a joiner is not a member yet, so it cannot
//! encrypt to the group): a PublicMessage, accepted only in joinable groups and only
//! from the joiner itself (P503, P551).
use hush_proto::content::GroupState;
use hush_proto::ids::{DeviceId, GroupId};
use openmls::prelude::tls_codec::Deserialize;
use openmls::prelude::{
    Capabilities, Extension, ExtensionType, Extensions, GroupContext, GroupId as MlsGroupId,
    KeyPackage, LeafNodeIndex, LeafNodeParameters, MIXED_PLAINTEXT_WIRE_FORMAT_POLICY, MlsGroup,
    MlsGroupCreateConfig, MlsGroupJoinConfig, MlsGroupJoinConfig as JoinConfig, MlsMessageBodyIn,
    MlsMessageIn, MlsMessageOut, OpenMlsProvider, ProcessMessageError, ProcessedMessageContent,
    Proposal, ProtocolMessage, QueuedProposal, RequiredCapabilitiesExtension, Sender,
    SenderRatchetConfiguration, StagedCommit, StagedWelcome, UnknownExtension, WireFormatPolicy,
};

use crate::account::AccountPublicKey;
use crate::identity::{Identity, certificate_of, device_of, verify_leaf};
use crate::{CIPHERSUITE, CryptoError, Rejection, internal, rejected};

/// How far ahead of the expected generation a message may be (messages the server
/// dropped); beyond it decryption fails and is reported.
const MAX_FORWARD_DISTANCE: u32 = 10_000;
/// Messages a sender's later message may overtake and still be read (P520): the server
/// delivers in order, so only a reordering server (or a bug) uses this; the client
/// reports it (`message_reordered`). A secret is still usable once only.
const OUT_OF_ORDER_TOLERANCE: u32 = 32;

fn sender_ratchet() -> SenderRatchetConfiguration {
    SenderRatchetConfiguration::new(OUT_OF_ORDER_TOLERANCE, MAX_FORWARD_DISTANCE)
}

/// The group context extension holding a named group's [`GroupState`] (P530).
pub const GROUP_STATE_EXTENSION: u16 = 0xff01;

/// What every hush leaf supports: the group state extension.
pub fn capabilities() -> Capabilities {
    Capabilities::new(
        None,
        None,
        Some(&[ExtensionType::Unknown(GROUP_STATE_EXTENSION)]),
        None,
        None,
    )
}

fn state_extensions(state: &GroupState) -> Result<Extensions<GroupContext>, CryptoError> {
    // Members must support the extension, so that the state can change later.
    let required = RequiredCapabilitiesExtension::new(
        &[ExtensionType::Unknown(GROUP_STATE_EXTENSION)],
        &[],
        &[],
    );
    Extensions::from_vec(vec![
        Extension::RequiredCapabilities(required),
        Extension::Unknown(GROUP_STATE_EXTENSION, UnknownExtension(state.encode())),
    ])
    .map_err(|e| internal("group state extension", e))
}

/// P503, P438: application messages are PrivateMessages; handshakes (commits and
/// proposals) are PublicMessages the relay verifies before it moves an epoch (ADR
/// 0009). A group reads both; [`Conversation::process`] refuses a PublicMessage that is
/// not a handshake.
fn wire_policy() -> WireFormatPolicy {
    MIXED_PLAINTEXT_WIRE_FORMAT_POLICY
}

fn create_config(state: Option<&GroupState>) -> Result<MlsGroupCreateConfig, CryptoError> {
    let mut builder = MlsGroupCreateConfig::builder().capabilities(capabilities());
    if let Some(state) = state {
        builder = builder.with_group_context_extensions(state_extensions(state)?);
    }
    Ok(builder
        .ciphersuite(CIPHERSUITE)
        .use_ratchet_tree_extension(true)
        .wire_format_policy(wire_policy())
        .max_past_epochs(0)
        .sender_ratchet_configuration(sender_ratchet())
        .build())
}

fn join_config() -> JoinConfig {
    MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .wire_format_policy(wire_policy())
        .max_past_epochs(0)
        .sender_ratchet_configuration(sender_ratchet())
        .build()
}

fn storage_err(e: impl std::fmt::Debug) -> CryptoError {
    CryptoError::Storage(format!("{e:?}"))
}

/// Sorts an openmls processing error into the peer's fault (with its reason) or a
/// local one, from openmls's typed errors (P505).
fn classify<E: std::fmt::Debug>(e: ProcessMessageError<E>) -> CryptoError {
    use openmls::framing::errors::{MessageDecryptionError, SecretTreeError};
    use openmls::prelude::ValidationError;
    let reason = match &e {
        ProcessMessageError::StorageError(s) => return storage_err(s),
        ProcessMessageError::LibraryError(l) => return internal("processing a message", l),
        // Traffic for a group this device was removed from: it cannot be read, by design.
        ProcessMessageError::GroupStateError(
            openmls::prelude::MlsGroupStateError::UseAfterEviction,
        ) => {
            return CryptoError::Rejected {
                reason: Rejection::Epoch,
                detail: "this device was removed from the conversation and cannot read it".into(),
            };
        }
        ProcessMessageError::GroupStateError(g) => return internal("processing a message", g),
        // The server delivers each group in order and clients keep no old secrets, so a
        // generation already consumed means the same message came again.
        ProcessMessageError::ValidationError(ValidationError::UnableToDecrypt(
            MessageDecryptionError::SecretTreeError(
                SecretTreeError::TooDistantInThePast | SecretTreeError::SecretReuseError,
            ),
        )) => return CryptoError::Replayed(format!("message: {e:?}")),
        ProcessMessageError::ValidationError(ValidationError::WrongEpoch)
        | ProcessMessageError::ValidationError(ValidationError::NoPastEpochData) => {
            Rejection::Epoch
        }
        ProcessMessageError::ValidationError(
            ValidationError::InvalidSignature | ValidationError::InvalidMembershipTag,
        ) => Rejection::Signature,
        ProcessMessageError::ValidationError(ValidationError::UnableToDecrypt(_)) => {
            Rejection::Decryption
        }
        ProcessMessageError::InvalidCommit(_) => Rejection::InvalidChange,
        _ => Rejection::Malformed,
    };
    CryptoError::Rejected {
        reason,
        detail: format!("message: {e:?}"),
    }
}

/// Serializes a GroupInfo for the server to hand to joiners (P552).
fn group_info_bytes(
    info: Option<openmls::messages::group_info::GroupInfo>,
) -> Result<Option<Vec<u8>>, CryptoError> {
    info.map(|gi| {
        MlsMessageOut::from(gi)
            .to_bytes()
            .map_err(|e| internal("serializing a group info", e))
    })
    .transpose()
}

/// What adding members produced: the commit for existing members and the Welcome for
/// the new ones.
pub struct Added {
    pub commit: Vec<u8>,
    pub welcome: Vec<u8>,
}

/// What a relayed message turned out to be, with its authenticated sender.
#[derive(Debug)]
pub enum Incoming {
    Application {
        sender: DeviceId,
        plaintext: Vec<u8>,
    },
    /// A commit, staged: the caller checks it against the group's policy, then
    /// [`Conversation::merge`]s it or drops it (the group stays at its epoch).
    Commit(Box<PendingCommit>),
    /// A standalone proposal, verified but not yet stored: the caller checks it against
    /// the group's policy, then [`Conversation::accept_proposal`]s it or drops it.
    Proposal(Box<PendingProposal>),
}

/// A verified proposal not yet queued. hush uses only removals (members leaving).
#[derive(Debug)]
pub struct PendingProposal {
    pub sender: DeviceId,
    /// The devices it would remove; empty for proposals of other kinds.
    pub removes: Vec<DeviceId>,
    proposal: QueuedProposal,
}

/// A verified commit not yet applied. Every leaf it adds or changes carries a device
/// certificate signed by the account key it names (P541).
#[derive(Debug)]
pub struct PendingCommit {
    pub sender: DeviceId,
    pub added: Vec<DeviceId>,
    /// The account behind each added device.
    pub added_accounts: Vec<(DeviceId, AccountPublicKey)>,
    pub removed: Vec<DeviceId>,
    /// For each removed device, the device that proposed the removal (the committer
    /// for removals made in the commit itself).
    pub removal_proposers: Vec<(DeviceId, DeviceId)>,
    /// The group state after the commit, if the commit changes it.
    pub new_state: Option<GroupState>,
    /// An external commit (P551): the device that joined by it, with its account.
    pub joined: Option<(DeviceId, AccountPublicKey)>,
    staged: StagedCommit,
}

/// What an external commit produced, before the caller's kind of join is settled.
struct ExternalJoin {
    commit: Vec<u8>,
    group_info: Vec<u8>,
    state: Option<GroupState>,
}

/// What joining a conversation of this device's own account produced (P536).
pub struct OwnJoin {
    pub conversation: Conversation,
    /// The external commit, for the members (a PublicMessage).
    pub commit: Vec<u8>,
    /// The GroupInfo of the new epoch.
    pub group_info: Vec<u8>,
    /// A named group's signed state.
    pub state: Option<GroupState>,
}

/// What joining a channel by an external commit produced (P551).
pub struct JoinedExternally {
    pub conversation: Conversation,
    /// The external commit, for the members (a PublicMessage).
    pub commit: Vec<u8>,
    /// The group info of the new epoch, for the next joiner.
    pub group_info: Vec<u8>,
    pub state: GroupState,
}

pub struct Conversation {
    group: MlsGroup,
    /// The signed GroupInfo of the epoch the last commit built here leads to (P552).
    group_info: Option<Vec<u8>>,
    /// The device whose Welcome this device joined by, when it just did.
    welcomed_by: Option<DeviceId>,
}

fn group_id(id: GroupId) -> MlsGroupId {
    MlsGroupId::from_slice(id.as_bytes())
}

impl Conversation {
    /// Creates a group with this device as its only member, at epoch 0.
    pub fn create<P: OpenMlsProvider>(
        provider: &P,
        identity: &Identity,
        id: GroupId,
    ) -> Result<Self, CryptoError> {
        Self::create_with(provider, identity, id, None)
    }

    /// Creates a named group whose signed state (name, admins) every member checks.
    pub fn create_named<P: OpenMlsProvider>(
        provider: &P,
        identity: &Identity,
        id: GroupId,
        state: &GroupState,
    ) -> Result<Self, CryptoError> {
        Self::create_with(provider, identity, id, Some(state))
    }

    fn create_with<P: OpenMlsProvider>(
        provider: &P,
        identity: &Identity,
        id: GroupId,
        state: Option<&GroupState>,
    ) -> Result<Self, CryptoError> {
        let group = MlsGroup::new_with_group_id(
            provider,
            identity.signer(),
            &create_config(state)?,
            group_id(id),
            identity.credential().clone(),
        )
        .map_err(|e| internal("creating a group", e))?;
        Ok(Conversation {
            group,
            group_info: None,
            welcomed_by: None,
        })
    }

    /// Takes the GroupInfo of the epoch the last commit built here leads to: what a
    /// channel's commits publish for joiners (P552).
    pub fn take_group_info(&mut self) -> Option<Vec<u8>> {
        self.group_info.take()
    }

    /// Whether this is a channel (joinable, P550).
    pub fn joinable(&self) -> bool {
        self.state().is_some_and(|s| s.joinable)
    }

    /// A commit with no change but a fresh leaf, left pending: takes a group whose
    /// creator is alone to epoch 1, where the server registers every group (P420).
    pub fn begin<P: OpenMlsProvider>(
        &mut self,
        provider: &P,
        identity: &Identity,
    ) -> Result<(), CryptoError> {
        let bundle = self
            .group
            .self_update(provider, identity.signer(), LeafNodeParameters::default())
            .map_err(|e| internal("starting a group", e))?;
        let (_, _, info) = bundle.into_contents();
        self.group_info = group_info_bytes(info)?;
        Ok(())
    }

    /// The signed state of a named group; `None` for a 1:1 conversation.
    pub fn state(&self) -> Option<GroupState> {
        self.group
            .extensions()
            .unknown(GROUP_STATE_EXTENSION)
            .and_then(|ext| GroupState::decode(&ext.0).ok())
    }

    /// Removes every leaf of these devices in one commit, left pending.
    pub fn remove<P: OpenMlsProvider>(
        &mut self,
        provider: &P,
        identity: &Identity,
        devices: &[DeviceId],
    ) -> Result<Vec<u8>, CryptoError> {
        self.upgrade_policy(provider)?;
        let leaves: Vec<LeafNodeIndex> = self
            .group
            .members()
            .filter(|m| device_of(&m.credential).is_ok_and(|d| devices.contains(&d)))
            .map(|m| m.index)
            .collect();
        if leaves.is_empty() {
            return Err(CryptoError::Missing(
                "none of those devices is in the group".into(),
            ));
        }
        let (commit, _, info) = self
            .group
            .remove_members(provider, identity.signer(), &leaves)
            .map_err(|e| internal("removing members", e))?;
        self.group_info = group_info_bytes(info)?;
        commit
            .to_bytes()
            .map_err(|e| internal("serializing a commit", e))
    }

    fn device_at(&self, leaf: LeafNodeIndex) -> Option<DeviceId> {
        self.group.member(leaf).and_then(|c| device_of(c).ok())
    }

    /// Proposes removing these devices (the caller's own, when leaving); one proposal
    /// message each, to send as application traffic.
    pub fn propose_removal<P: OpenMlsProvider>(
        &mut self,
        provider: &P,
        identity: &Identity,
        devices: &[DeviceId],
    ) -> Result<Vec<Vec<u8>>, CryptoError> {
        self.upgrade_policy(provider)?;
        let leaves: Vec<LeafNodeIndex> = self
            .group
            .members()
            .filter(|m| device_of(&m.credential).is_ok_and(|d| devices.contains(&d)))
            .map(|m| m.index)
            .collect();
        let mut out = Vec::new();
        for leaf in leaves {
            let msg = if leaf == self.group.own_leaf_index() {
                self.group
                    .leave_group(provider, identity.signer())
                    .map_err(|e| internal("leaving", e))?
            } else {
                self.group
                    .propose_remove_member(provider, identity.signer(), leaf)
                    .map_err(|e| internal("proposing a removal", e))?
                    .0
            };
            out.push(
                msg.to_bytes()
                    .map_err(|e| internal("serializing a proposal", e))?,
            );
        }
        Ok(out)
    }

    /// Queues a proposal the caller accepted; the next commit by anyone includes it.
    pub fn accept_proposal<P: OpenMlsProvider>(
        &mut self,
        provider: &P,
        p: PendingProposal,
    ) -> Result<(), CryptoError> {
        self.group
            .store_pending_proposal(provider.storage(), p.proposal)
            .map_err(storage_err)
    }

    pub fn has_pending_proposals(&self) -> bool {
        self.group.pending_proposals().next().is_some()
    }

    /// Commits the queued proposals, left pending; returns the commit and the devices
    /// it removes.
    pub fn commit_pending<P: OpenMlsProvider>(
        &mut self,
        provider: &P,
        identity: &Identity,
    ) -> Result<(Vec<u8>, Vec<DeviceId>), CryptoError> {
        self.upgrade_policy(provider)?;
        let removed: Vec<DeviceId> = self
            .group
            .pending_proposals()
            .filter_map(|p| match p.proposal() {
                Proposal::Remove(r) => Some(r.removed()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .into_iter()
            .filter_map(|leaf| self.device_at(leaf))
            .collect();
        let (commit, _, info) = self
            .group
            .commit_to_pending_proposals(provider, identity.signer())
            .map_err(|e| internal("committing proposals", e))?;
        self.group_info = group_info_bytes(info)?;
        Ok((
            commit
                .to_bytes()
                .map_err(|e| internal("serializing a commit", e))?,
            removed,
        ))
    }

    /// Replaces the group's signed state in a commit, left pending.
    pub fn set_state<P: OpenMlsProvider>(
        &mut self,
        provider: &P,
        identity: &Identity,
        state: &GroupState,
    ) -> Result<Vec<u8>, CryptoError> {
        self.upgrade_policy(provider)?;
        let (commit, _, info) = self
            .group
            .update_group_context_extensions(provider, state_extensions(state)?, identity.signer())
            .map_err(|e| internal("updating the group state", e))?;
        self.group_info = group_info_bytes(info)?;
        commit
            .to_bytes()
            .map_err(|e| internal("serializing a commit", e))
    }

    /// Applies a commit the caller accepted.
    pub fn merge<P: OpenMlsProvider>(
        &mut self,
        provider: &P,
        commit: PendingCommit,
    ) -> Result<(), CryptoError> {
        self.group
            .merge_staged_commit(provider, commit.staged)
            .map_err(|e| internal("merging a commit", e))
    }

    /// Forgets this group's local state (a creation the server refused).
    pub fn delete<P: OpenMlsProvider>(mut self, provider: &P) -> Result<(), CryptoError> {
        self.group.delete(provider.storage()).map_err(storage_err)
    }

    /// The devices this device's pending commit adds and removes, as the commit does
    /// it: proposals it includes by reference (a member leaving) count as well (the
    /// server checks the routing header against the commit, P438).
    pub fn pending_changes(&self) -> Option<(Vec<DeviceId>, Vec<DeviceId>)> {
        let staged = self.group.pending_commit()?;
        let added = staged
            .add_proposals()
            .filter_map(|p| device_of(p.add_proposal().key_package().leaf_node().credential()).ok())
            .collect();
        let removed = staged
            .remove_proposals()
            .filter_map(|p| self.device_at(p.remove_proposal().removed()))
            .collect();
        Some((added, removed))
    }

    /// Whether this device has a commit of its own waiting for the server's answer.
    pub fn has_pending_commit(&self) -> bool {
        self.group.pending_commit().is_some()
    }

    /// Loads a group from local storage.
    pub fn load<P: OpenMlsProvider>(
        provider: &P,
        id: GroupId,
    ) -> Result<Option<Self>, CryptoError> {
        Ok(MlsGroup::load(provider.storage(), &group_id(id))
            .map_err(storage_err)?
            .map(|group| Conversation {
                group,
                group_info: None,
                welcomed_by: None,
            }))
    }

    /// Joins a group from a Welcome (P504). A Welcome for a group this device holds
    /// state of replaces that state only if this device is no longer in it (removed,
    /// left, deleted) or the Welcome is for a later epoch (this device was removed and
    /// added back while it could not read the removal); the new group is checked whole
    /// before the old state is dropped, so a Welcome that does not verify leaves it.
    pub fn join<P: OpenMlsProvider>(provider: &P, welcome: &[u8]) -> Result<Self, CryptoError> {
        let msg =
            MlsMessageIn::tls_deserialize_exact(welcome).map_err(|e| rejected("welcome", e))?;
        let MlsMessageBodyIn::Welcome(welcome) = msg.extract() else {
            return Err(crate::malformed("expected a Welcome message"));
        };
        let builder = StagedWelcome::build_from_welcome(provider, &join_config(), welcome)
            .map_err(|e| rejected("welcome", e))?;
        let info = builder.processed_welcome().unverified_group_info();
        let (id, epoch) = (info.group_id().clone(), info.epoch());
        let old = MlsGroup::load(provider.storage(), &id).map_err(storage_err)?;
        if let Some(old) = &old
            && old.is_active()
            && old.epoch() >= epoch
        {
            return Err(CryptoError::Rejected {
                reason: Rejection::Duplicate,
                detail: format!(
                    "a Welcome to epoch {} of a conversation this device is in at epoch {}",
                    epoch.as_u64(),
                    old.epoch().as_u64()
                ),
            });
        }
        let staged = builder
            .replace_old_group()
            .build()
            .map_err(|e| rejected("welcome", e))?;
        // P541: every leaf of the group must be vouched for by its account key; a group
        // with a forged leaf is not joined (nothing would be safe to say in it).
        if let Some(err) = staged
            .members()
            .find_map(|m| verify_leaf(&m.credential, &m.signature_key).err())
        {
            return Err(err);
        }
        let welcomed_by = staged
            .welcome_sender()
            .ok()
            .and_then(|leaf| device_of(leaf.credential()).ok());
        if let Some(mut old) = old {
            old.delete(provider.storage()).map_err(storage_err)?;
        }
        let group = staged
            .into_group(provider)
            .map_err(|e| rejected("welcome", e))?;
        let conv = Conversation {
            group,
            group_info: None,
            welcomed_by,
        };
        if conv.joinable() {
            let mut conv = conv;
            conv.group
                .set_configuration(provider.storage(), &join_config())
                .map_err(storage_err)?;
            return Ok(conv);
        }
        Ok(conv)
    }

    /// The device whose Welcome this conversation was joined by (only right after
    /// [`Conversation::join`]).
    pub fn welcomed_by(&self) -> Option<DeviceId> {
        self.welcomed_by
    }

    /// P537: whether `bytes` is a message of a later epoch than this device's: it
    /// missed commits (its mailbox lost them) and cannot read the group any more.
    pub fn is_ahead(&self, bytes: &[u8]) -> bool {
        MlsMessageIn::tls_deserialize_exact(bytes)
            .ok()
            .and_then(|m| m.try_into_protocol_message().ok())
            .is_some_and(|p| p.epoch() > self.group.epoch())
    }

    /// Whether this device is still a member (false once a merged commit removed it).
    pub fn is_active(&self) -> bool {
        self.group.is_active()
    }

    /// Joins a channel by an external commit from its GroupInfo as the server handed
    /// it out (P551). The GroupInfo must be signed by a member whose leaf is in the
    /// ratchet tree it carries (openmls checks the signature and the tree's hashes),
    /// every leaf must be vouched for by its account key (P541), the group must be
    /// `expected` and joinable. The group is stored at the new epoch; if the server
    /// refuses the commit, [`Conversation::delete`] it and join again.
    pub fn join_external<P: OpenMlsProvider>(
        provider: &P,
        identity: &Identity,
        group_info: &[u8],
        expected: GroupId,
    ) -> Result<JoinedExternally, CryptoError> {
        let (conv, joined) = Self::external(provider, identity, group_info, expected, |conv| {
            conv.state()
                .filter(|s| s.joinable)
                .map(Some)
                .ok_or_else(|| crate::malformed("the group is not a channel anyone may join"))
        })?;
        let state = joined
            .state
            .ok_or_else(|| internal("joining a channel", "no state"))?;
        Ok(JoinedExternally {
            conversation: conv,
            commit: joined.commit,
            group_info: joined.group_info,
            state,
        })
    }

    /// P536: joins a conversation of this device's own account by an external commit,
    /// from a GroupInfo an account device kept sealed on the server. Checked as
    /// [`Conversation::join_external`] checks a channel's, except that instead of a
    /// channel it must be a group in which another device of `account` (this device's
    /// own account) is. With `resync` (P537) this device rejoins a group it is in but
    /// fell behind in: its old leaf goes in the same commit (openmls removes the leaf
    /// with this device's signature key), so the check is that this device was in it. Returns the group, the commit, the GroupInfo of the new
    /// epoch (for a channel's server, P552) and the group's state (a named group's).
    pub fn join_own<P: OpenMlsProvider>(
        provider: &P,
        identity: &Identity,
        group_info: &[u8],
        expected: GroupId,
        account: &AccountPublicKey,
        resync: bool,
    ) -> Result<OwnJoin, CryptoError> {
        let me = identity.device();
        let (conv, joined) = Self::external(provider, identity, group_info, expected, |conv| {
            if resync || conv.roster().iter().any(|(d, a)| a == account && *d != me) {
                Ok(conv.state())
            } else {
                Err(crate::malformed(
                    "no device of this account is in the group it was to join",
                ))
            }
        })?;
        Ok(OwnJoin {
            conversation: conv,
            commit: joined.commit,
            group_info: joined.group_info,
            state: joined.state,
        })
    }

    /// The external commit both joins share: builds it from `group_info`, checks every
    /// leaf (P541) and then `allow` on the group it leads to, which yields the group's
    /// state. A refused group is deleted again.
    fn external<P: OpenMlsProvider>(
        provider: &P,
        identity: &Identity,
        group_info: &[u8],
        expected: GroupId,
        allow: impl FnOnce(&Conversation) -> Result<Option<GroupState>, CryptoError>,
    ) -> Result<(Conversation, ExternalJoin), CryptoError> {
        let msg = MlsMessageIn::tls_deserialize_exact(group_info)
            .map_err(|e| rejected("group info", e))?;
        let MlsMessageBodyIn::GroupInfo(info) = msg.extract() else {
            return Err(crate::malformed("expected a GroupInfo"));
        };
        if info.group_id().as_slice() != expected.as_bytes() {
            return Err(crate::malformed(
                "the group info the server handed out is for another group",
            ));
        }
        let tampered = |e: &dyn std::fmt::Debug| CryptoError::Rejected {
            reason: Rejection::Signature,
            detail: format!("the group info does not verify: {e:?}"),
        };
        let (group, bundle) = MlsGroup::external_commit_builder()
            .with_config(join_config())
            .build_group(provider, info, identity.credential().clone())
            .map_err(|e| tampered(&e))?
            .leaf_node_parameters(
                LeafNodeParameters::builder()
                    .with_capabilities(capabilities())
                    .build(),
            )
            .load_psks(provider.storage())
            .map_err(storage_err)?
            .build(
                provider.rand(),
                provider.crypto(),
                identity.signer(),
                |_| true,
            )
            .map_err(|e| tampered(&e))?
            .finalize(provider)
            .map_err(|e| internal("joining by an external commit", e))?;
        let mut conv = Conversation {
            group,
            group_info: None,
            welcomed_by: None,
        };
        let checked = match conv
            .group
            .members()
            .find_map(|m| verify_leaf(&m.credential, &m.signature_key).err())
        {
            Some(forged) => Err(forged),
            None => allow(&conv),
        };
        match checked {
            Ok(state) => {
                let (commit, _, info) = bundle.into_contents();
                let commit = commit
                    .to_bytes()
                    .map_err(|e| internal("serializing a commit", e))?;
                let group_info = group_info_bytes(info)?
                    .ok_or_else(|| internal("joining by an external commit", "no group info"))?;
                Ok((
                    conv,
                    ExternalJoin {
                        commit,
                        group_info,
                        state,
                    },
                ))
            }
            Err(refusal) => {
                conv.group.delete(provider.storage()).map_err(storage_err)?;
                Err(refusal)
            }
        }
    }

    /// P535: the signed GroupInfo of the current epoch, with the ratchet tree and the
    /// external public key, for this account's devices to join from (sealed by the
    /// caller, never given to the server in the clear unless the group is a channel).
    pub fn export_group_info<P: OpenMlsProvider>(
        &self,
        provider: &P,
        identity: &Identity,
    ) -> Result<Vec<u8>, CryptoError> {
        self.group
            .export_group_info(provider.crypto(), identity.signer(), true)
            .map_err(|e| internal("exporting the group info", e))?
            .to_bytes()
            .map_err(|e| internal("serializing the group info", e))
    }

    pub fn id(&self) -> Result<GroupId, CryptoError> {
        GroupId::from_slice(self.group.group_id().as_slice()).map_err(|e| internal("group id", e))
    }

    pub fn epoch(&self) -> u64 {
        self.group.epoch().as_u64()
    }

    /// The devices in the group with the accounts that vouch for them (each leaf was
    /// verified when it entered, P541).
    pub fn roster(&self) -> Vec<(DeviceId, AccountPublicKey)> {
        self.group
            .members()
            .filter_map(|m| certificate_of(&m.credential).ok())
            .map(|c| (c.device, c.account))
            .collect()
    }

    /// The devices in the group, from the authenticated MLS roster.
    pub fn members(&self) -> Vec<DeviceId> {
        self.group
            .members()
            .filter_map(|m| device_of(&m.credential).ok())
            .collect()
    }

    /// Adds every key package's device in one commit (batched: openmls adds are
    /// quadratic one by one). The commit stays pending until [`Self::merge_pending`].
    pub fn add<P: OpenMlsProvider>(
        &mut self,
        provider: &P,
        identity: &Identity,
        key_packages: &[KeyPackage],
    ) -> Result<Added, CryptoError> {
        self.upgrade_policy(provider)?;
        let (commit, welcome, info) = self
            .group
            .add_members(provider, identity.signer(), key_packages)
            .map_err(|e| internal("adding members", e))?;
        self.group_info = group_info_bytes(info)?;
        Ok(Added {
            commit: commit
                .to_bytes()
                .map_err(|e| internal("serializing a commit", e))?,
            welcome: welcome
                .to_bytes()
                .map_err(|e| internal("serializing a welcome", e))?,
        })
    }

    /// Applies this device's pending commit after the server accepted it.
    pub fn merge_pending<P: OpenMlsProvider>(&mut self, provider: &P) -> Result<(), CryptoError> {
        self.group
            .merge_pending_commit(provider)
            .map_err(|e| internal("merging a commit", e))
    }

    /// Drops this device's pending commit after the server refused it.
    pub fn discard_pending<P: OpenMlsProvider>(&mut self, provider: &P) -> Result<(), CryptoError> {
        self.group
            .clear_pending_commit(provider.storage())
            .map_err(storage_err)
    }

    /// Encrypts an application message for the current epoch.
    pub fn encrypt<P: OpenMlsProvider>(
        &mut self,
        provider: &P,
        identity: &Identity,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let out = self
            .group
            .create_message(provider, identity.signer(), plaintext)
            .map_err(|e| internal("encrypting", e))?;
        out.to_bytes()
            .map_err(|e| internal("serializing a message", e))
    }

    /// Groups made before P438 send handshakes in ciphertext (and before P536 read
    /// ciphertext only): from now on they follow [`wire_policy`].
    fn upgrade_policy<P: OpenMlsProvider>(&mut self, provider: &P) -> Result<(), CryptoError> {
        if self.group.configuration().wire_format_policy() != wire_policy() {
            self.group
                .set_configuration(provider.storage(), &join_config())
                .map_err(storage_err)?;
        }
        Ok(())
    }

    /// Decrypts and verifies a relayed handshake or application message (P505). A
    /// commit is merged before this returns.
    pub fn process<P: OpenMlsProvider>(
        &mut self,
        provider: &P,
        bytes: &[u8],
    ) -> Result<Incoming, CryptoError> {
        let msg = MlsMessageIn::tls_deserialize_exact(bytes).map_err(|e| rejected("message", e))?;
        let protocol = msg
            .try_into_protocol_message()
            .map_err(|e| rejected("message", e))?;
        if protocol.group_id() != self.group.group_id() {
            return Err(crate::malformed("message belongs to another group"));
        }
        // P503, P438: a PublicMessage is a handshake (a member's commit or proposal, or
        // an external commit the caller's policy decides on); never application data.
        if let ProtocolMessage::PublicMessage(m) = &protocol
            && m.content_type() == openmls::prelude::ContentType::Application
        {
            return Err(CryptoError::Rejected {
                reason: Rejection::Malformed,
                detail: "an application message in the clear".into(),
            });
        }
        self.upgrade_policy(provider)?;
        let external = matches!(
            &protocol,
            ProtocolMessage::PublicMessage(m) if matches!(m.sender(), Sender::NewMemberCommit)
        );
        let processed = self
            .group
            .process_message(provider, protocol)
            .map_err(classify)?;
        let sender = device_of(processed.credential())?;
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(app) => Ok(Incoming::Application {
                sender,
                plaintext: app.into_bytes(),
            }),
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                // P541: a commit that brings in or changes a leaf not vouched for by
                // its account key is refused whole.
                let mut added_accounts = Vec::new();
                for p in staged.add_proposals() {
                    let leaf = p.add_proposal().key_package().leaf_node();
                    let cert = verify_leaf(leaf.credential(), leaf.signature_key().as_slice())?;
                    added_accounts.push((cert.device, cert.account));
                }
                let mut changed: Vec<openmls::prelude::LeafNode> = staged
                    .update_proposals()
                    .map(|p| p.update_proposal().leaf_node().clone())
                    .collect();
                changed.extend(staged.update_path_leaf_node().cloned());
                let mut joined = None;
                for leaf in &changed {
                    let cert = verify_leaf(leaf.credential(), leaf.signature_key().as_slice())?;
                    if external {
                        joined = Some((cert.device, cert.account));
                    }
                    let before = self.roster().into_iter().find(|(d, _)| *d == cert.device);
                    if before.is_some_and(|(_, a)| a != cert.account) {
                        return Err(CryptoError::Rejected {
                            reason: Rejection::Identity,
                            detail: format!(
                                "a commit moves device {} to another account",
                                cert.device
                            ),
                        });
                    }
                }
                let added = added_accounts.iter().map(|(d, _)| *d).collect();
                let mut removed = Vec::new();
                let mut removal_proposers = Vec::new();
                for p in staged.remove_proposals() {
                    let Some(gone) = self.device_at(p.remove_proposal().removed()) else {
                        continue;
                    };
                    let proposer = match p.sender() {
                        Sender::Member(leaf) => self.device_at(*leaf).unwrap_or(sender),
                        _ => sender,
                    };
                    removed.push(gone);
                    removal_proposers.push((gone, proposer));
                }
                let after = staged
                    .group_context()
                    .extensions()
                    .unknown(GROUP_STATE_EXTENSION)
                    .map(|ext| GroupState::decode(&ext.0))
                    .transpose()
                    .map_err(|e| rejected("group state", e))?;
                let new_state = after.filter(|s| Some(s) != self.state().as_ref());
                Ok(Incoming::Commit(Box::new(PendingCommit {
                    sender,
                    added,
                    added_accounts,
                    removed,
                    removal_proposers,
                    new_state,
                    joined,
                    staged: *staged,
                })))
            }
            ProcessedMessageContent::ProposalMessage(proposal) => {
                let removes = match proposal.proposal() {
                    Proposal::Remove(r) => self.device_at(r.removed()).into_iter().collect(),
                    _ => Vec::new(),
                };
                Ok(Incoming::Proposal(Box::new(PendingProposal {
                    sender,
                    removes,
                    proposal: *proposal,
                })))
            }
            _ => Err(crate::malformed("an unexpected kind of MLS message")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::validate_key_package;
    use openmls_rust_crypto::OpenMlsRustCrypto;

    fn device(n: u8) -> (OpenMlsRustCrypto, Identity) {
        let p = OpenMlsRustCrypto::default();
        let account = crate::account::AccountKey::generate();
        let id = Identity::generate(&p, DeviceId::from_bytes([n; 16]), &account, 1).unwrap();
        (p, id)
    }

    #[test]
    fn p505_two_devices_talk_and_replays_are_rejected() {
        let (ap, alice) = device(1);
        let (bp, bob) = device(2);
        let kp_bytes = bob.key_packages(&bp, 1).unwrap().remove(0);
        let (kp, cert) = validate_key_package(&ap, &kp_bytes, bob.device()).unwrap();
        assert_eq!(cert.account, bob.certificate().account);
        assert!(
            validate_key_package(&ap, &kp_bytes, alice.device()).is_err(),
            "P502"
        );

        let gid = GroupId::from_bytes([9; 16]);
        let mut a = Conversation::create(&ap, &alice, gid).unwrap();
        let added = a.add(&ap, &alice, &[kp]).unwrap();
        a.merge_pending(&ap).unwrap();
        let mut b = Conversation::join(&bp, &added.welcome).unwrap();
        assert_eq!(b.id().unwrap(), gid);
        assert_eq!(a.epoch(), b.epoch());
        let mut members = b.members();
        members.sort();
        assert_eq!(members, vec![alice.device(), bob.device()]);

        let ct = a.encrypt(&ap, &alice, b"hello bob").unwrap();
        match b.process(&bp, &ct).unwrap() {
            Incoming::Application { sender, plaintext } => {
                assert_eq!(sender, alice.device());
                assert_eq!(plaintext, b"hello bob");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(b.process(&bp, &ct), Err(CryptoError::Replayed(_))),
            "replay"
        );
        assert!(b.process(&bp, b"garbage").is_err());

        let back = b.encrypt(&bp, &bob, b"hi alice").unwrap();
        assert!(matches!(
            a.process(&ap, &back).unwrap(),
            Incoming::Application { .. }
        ));

        // State survives a reload from storage.
        let mut b2 = Conversation::load(&bp, gid).unwrap().unwrap();
        let ct2 = a.encrypt(&ap, &alice, b"again").unwrap();
        assert!(matches!(
            b2.process(&bp, &ct2).unwrap(),
            Incoming::Application { .. }
        ));
    }

    #[test]
    fn p541_a_forged_leaf_is_refused_in_key_packages_commits_and_welcomes() {
        use openmls::prelude::tls_codec::Deserialize;
        let (ap, alice) = device(1);
        let (bp, bob) = device(2);
        // mallory's device claims bob's account, but bob's key never signed it.
        let mp = OpenMlsRustCrypto::default();
        let mallory_account = crate::account::AccountKey::generate();
        let mut cert = mallory_account
            .certify(DeviceId::from_bytes([3; 16]), b"whatever", 1)
            .encode();
        cert[17..49].copy_from_slice(bob.certificate().account.as_bytes());
        let forged_cert = crate::account::DeviceCertificate::decode(&cert).unwrap();
        let mallory = Identity::forged(&mp, forged_cert);
        let forged_kp = mallory.key_packages(&mp, 1).unwrap().remove(0);
        assert!(
            matches!(
                validate_key_package(&ap, &forged_kp, mallory.device()),
                Err(CryptoError::Rejected {
                    reason: Rejection::Identity,
                    ..
                })
            ),
            "a claimed key package with a forged certificate is refused"
        );

        let gid = GroupId::from_bytes([5; 16]);
        let mut a = Conversation::create(&ap, &alice, gid).unwrap();
        let (bob_kp, _) =
            validate_key_package(&ap, &bob.key_packages(&bp, 1).unwrap()[0], bob.device()).unwrap();
        let added = a.add(&ap, &alice, &[bob_kp]).unwrap();
        a.merge_pending(&ap).unwrap();
        let mut b = Conversation::join(&bp, &added.welcome).unwrap();
        // A (modified) alice adds mallory's leaf without checking: bob refuses the commit.
        let raw = openmls::prelude::KeyPackageIn::tls_deserialize_exact(&forged_kp[..])
            .unwrap()
            .validate(ap.crypto(), openmls::prelude::ProtocolVersion::Mls10)
            .unwrap();
        let ghost = a.add(&ap, &alice, &[raw]).unwrap();
        assert!(
            matches!(
                b.process(&bp, &ghost.commit),
                Err(CryptoError::Rejected {
                    reason: Rejection::Identity,
                    ..
                })
            ),
            "a commit adding a forged leaf is refused"
        );
        assert_eq!(b.members().len(), 2, "and not merged");
        // A Welcome into a group holding a forged leaf is not joined.
        let (cp, carol) = device(4);
        a.merge_pending(&ap).unwrap();
        let (carol_kp, _) =
            validate_key_package(&ap, &carol.key_packages(&cp, 1).unwrap()[0], carol.device())
                .unwrap();
        let invite = a.add(&ap, &alice, &[carol_kp]).unwrap();
        assert!(matches!(
            Conversation::join(&cp, &invite.welcome),
            Err(CryptoError::Rejected {
                reason: Rejection::Identity,
                ..
            })
        ));
        assert!(
            Conversation::load(&cp, gid).unwrap().is_none(),
            "nothing stored"
        );
    }

    fn channel_state(joinable: bool) -> GroupState {
        GroupState {
            name: hush_proto::content::GroupName::parse("lobby").unwrap(),
            admins: Vec::new(),
            joinable,
            deleted: false,
        }
    }

    #[test]
    fn p551_a_joiner_enters_by_external_commit_and_reads_only_what_follows() {
        let (ap, alice) = device(1);
        let (bp, bob) = device(2);
        let gid = GroupId::from_bytes([7; 16]);
        let mut a = Conversation::create_named(&ap, &alice, gid, &channel_state(true)).unwrap();
        a.begin(&ap, &alice).unwrap();
        a.merge_pending(&ap).unwrap();
        let info = a.take_group_info().expect("a commit yields a group info");
        let before = a.encrypt(&ap, &alice, b"before bob").unwrap();

        // A tampered GroupInfo (one byte flipped anywhere in it) is refused.
        for at in [info.len() / 3, info.len() / 2, info.len() - 10] {
            let mut bad = info.clone();
            bad[at] ^= 0x01;
            let (tp, t) = device(9);
            assert!(
                Conversation::join_external(&tp, &t, &bad, gid).is_err(),
                "byte {at} flipped"
            );
        }
        assert!(
            Conversation::join_external(&bp, &bob, &info, GroupId::from_bytes([8; 16])).is_err(),
            "a group info for another group"
        );

        let joined = Conversation::join_external(&bp, &bob, &info, gid).unwrap();
        assert!(joined.state.joinable);
        let mut b = joined.conversation;
        match a.process(&ap, &joined.commit).unwrap() {
            Incoming::Commit(c) => {
                assert_eq!(c.joined.map(|(d, _)| d), Some(bob.device()));
                a.merge(&ap, *c).unwrap();
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(a.epoch(), b.epoch());
        assert_eq!(a.members().len(), 2);
        assert!(
            b.process(&bp, &before).is_err(),
            "nothing from before the join"
        );
        let after = a.encrypt(&ap, &alice, b"welcome bob").unwrap();
        match b.process(&bp, &after).unwrap() {
            Incoming::Application { plaintext, .. } => assert_eq!(plaintext, b"welcome bob"),
            other => panic!("{other:?}"),
        }
        // The joiner's group info lets the next one in.
        let (cp, carol) = device(3);
        let joined = Conversation::join_external(&cp, &carol, &joined.group_info, gid).unwrap();
        assert!(matches!(
            b.process(&bp, &joined.commit).unwrap(),
            Incoming::Commit(_)
        ));
    }

    #[test]
    fn p503_a_group_that_is_no_channel_refuses_external_commits() {
        let (ap, alice) = device(1);
        let (bp, bob) = device(2);
        let gid = GroupId::from_bytes([6; 16]);
        let mut a = Conversation::create_named(&ap, &alice, gid, &channel_state(false)).unwrap();
        a.begin(&ap, &alice).unwrap();
        a.merge_pending(&ap).unwrap();
        let info = a.take_group_info().unwrap();
        // The joiner refuses a group that is not joinable ...
        assert!(Conversation::join_external(&bp, &bob, &info, gid).is_err());
        // ... and members refuse an external commit into it, whoever built it.
        let mut open = channel_state(true);
        open.name = hush_proto::content::GroupName::parse("other").unwrap();
        let (cp, carol) = device(3);
        let mut c = Conversation::create_named(&cp, &carol, gid, &open).unwrap();
        c.begin(&cp, &carol).unwrap();
        c.merge_pending(&cp).unwrap();
        let foreign =
            Conversation::join_external(&bp, &bob, &c.take_group_info().unwrap(), gid).unwrap();
        assert!(matches!(
            a.process(&ap, &foreign.commit),
            Err(CryptoError::Rejected { .. })
        ));
    }

    #[test]
    fn p536_a_new_device_of_a_member_joins_from_its_accounts_group_info() {
        let (ap, alice) = device(1);
        let (bp, bob) = device(2);
        // alice's second device: same account key as her first.
        let laptop_p = OpenMlsRustCrypto::default();
        let alice_account = crate::account::AccountKey::generate();
        let alice = {
            let _ = alice;
            Identity::generate(&ap, DeviceId::from_bytes([1; 16]), &alice_account, 1).unwrap()
        };
        let laptop =
            Identity::generate(&laptop_p, DeviceId::from_bytes([7; 16]), &alice_account, 2)
                .unwrap();
        let gid = GroupId::from_bytes([8; 16]);
        let mut a = Conversation::create(&ap, &alice, gid).unwrap();
        let kp = bob.key_packages(&bp, 1).unwrap().remove(0);
        let (kp, _) = validate_key_package(&ap, &kp, bob.device()).unwrap();
        let added = a.add(&ap, &alice, &[kp]).unwrap();
        a.merge_pending(&ap).unwrap();
        let mut b = Conversation::join(&bp, &added.welcome).unwrap();
        let info = a.export_group_info(&ap, &alice).unwrap();

        // Someone of another account cannot use it to come in.
        let (cp, carol) = device(3);
        let carol_account = carol.certificate().account;
        assert!(Conversation::join_own(&cp, &carol, &info, gid, &carol_account, false).is_err());
        assert!(
            Conversation::load(&cp, gid).unwrap().is_none(),
            "nothing kept"
        );

        let account = laptop.certificate().account;
        let own = Conversation::join_own(&laptop_p, &laptop, &info, gid, &account, false).unwrap();
        let (mut l, commit) = (own.conversation, own.commit);
        assert!(own.state.is_none());
        assert_eq!(l.epoch(), a.epoch() + 1);
        // Members see the external commit and who it brings in.
        for (conv, p) in [(&mut a, &ap), (&mut b, &bp)] {
            match conv.process(p, &commit).unwrap() {
                Incoming::Commit(c) => {
                    assert_eq!(c.joined, Some((laptop.device(), account)));
                    conv.merge(p, *c).unwrap();
                }
                other => panic!("{other:?}"),
            }
        }
        // The new device writes at once, and both read it.
        let ct = l.encrypt(&laptop_p, &laptop, b"from the laptop").unwrap();
        for (conv, p) in [(&mut a, &ap), (&mut b, &bp)] {
            match conv.process(p, &ct).unwrap() {
                Incoming::Application { sender, plaintext } => {
                    assert_eq!(
                        (sender, plaintext.as_slice()),
                        (laptop.device(), &b"from the laptop"[..])
                    );
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
