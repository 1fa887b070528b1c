//! P438, ADR 0009: what the relay itself checks of a group's handshakes. Commits and
//! proposals travel as MLS PublicMessages (application messages stay PrivateMessages);
//! the server keeps each group's public state (ratchet tree, group context, transcript
//! hash: an openmls [`PublicGroup`], no secret of any epoch) and moves a group's epoch,
//! adds or removes a device only for a commit that verifies against it: signed by a
//! member (or, for an external commit, by the joiner's new leaf), its proposals valid
//! for the tree. Which devices a commit adds and removes is read from the commit itself,
//! never from a routing claim. What the server cannot check (the confirmation tag, path
//! secrets encrypted to members) stays the members' to check, as in any MLS
//! deployment; a member who signs such a commit is named by it.
//!
//! The state is opaque bytes to the server: [`check_commit`] and [`open_group_info`]
//! return the next state for the caller to store with the commit, in one transaction.
use std::collections::{BTreeSet, HashMap};

use hush_proto::ids::{DeviceId, GroupId};
use openmls::prelude::tls_codec::Deserialize;
use openmls::prelude::{
    GroupId as MlsGroupId, MlsMessageBodyIn, MlsMessageIn, ProcessedMessageContent, ProposalStore,
    ProtocolMessage, PublicGroup, Sender,
};
use openmls_rust_crypto::{MemoryStorage, RustCrypto};

use crate::identity::device_of;
use crate::{CryptoError, Rejection, internal};

/// Bounds on a stored state: what a group of the server's largest size needs, many
/// times over (a corrupt row must not make the server allocate without limit).
const MAX_ENTRIES: usize = 4096;
const MAX_STATE_BYTES: usize = 64 << 20;

/// A group as the server verified it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The epoch the group is at after the change.
    pub epoch: u64,
    /// Every device with a leaf, as their credentials name them.
    pub members: BTreeSet<DeviceId>,
    /// The device that signed the commit (`None` for a GroupInfo: openmls checks
    /// that a leaf of its tree signed it, without saying which).
    pub sender: Option<DeviceId>,
    /// The commit came from a device that was not a member (an external commit).
    pub external: bool,
    /// The public state to keep for the next commit.
    pub state: Vec<u8>,
    /// The devices the commit gave a leaf (none for a GroupInfo).
    pub added: Vec<DeviceId>,
    /// The devices whose every leaf the commit removed.
    pub removed: Vec<DeviceId>,
}

fn refused(reason: Rejection, detail: impl Into<String>) -> CryptoError {
    CryptoError::Rejected {
        reason,
        detail: detail.into(),
    }
}

fn mls_id(group: GroupId) -> MlsGroupId {
    MlsGroupId::from_slice(group.as_bytes())
}

fn save(storage: &MemoryStorage) -> Result<Vec<u8>, CryptoError> {
    let values = storage
        .values
        .read()
        .map_err(|_| internal("saving a group's public state", "poisoned lock"))?;
    let mut entries: Vec<(&Vec<u8>, &Vec<u8>)> = values.iter().collect();
    entries.sort();
    let mut out = Vec::new();
    out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for (k, v) in entries {
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v);
    }
    Ok(out)
}

fn load(bytes: &[u8]) -> Result<MemoryStorage, CryptoError> {
    let damaged = || internal("loading a group's public state", "damaged");
    if bytes.len() > MAX_STATE_BYTES {
        return Err(damaged());
    }
    let mut rest = bytes;
    let mut take = |n: usize| -> Result<&[u8], CryptoError> {
        if rest.len() < n {
            return Err(damaged());
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let count = u32::from_be_bytes(take(4)?.try_into().map_err(|_| damaged())?) as usize;
    if count > MAX_ENTRIES {
        return Err(damaged());
    }
    let mut values = HashMap::with_capacity(count);
    for _ in 0..count {
        let n = u32::from_be_bytes(take(4)?.try_into().map_err(|_| damaged())?) as usize;
        let k = take(n)?.to_vec();
        let n = u32::from_be_bytes(take(4)?.try_into().map_err(|_| damaged())?) as usize;
        let v = take(n)?.to_vec();
        values.insert(k, v);
    }
    let storage = MemoryStorage::default();
    *storage
        .values
        .write()
        .map_err(|_| internal("loading a group's public state", "poisoned lock"))? = values;
    Ok(storage)
}

fn members(group: &PublicGroup) -> Result<BTreeSet<DeviceId>, CryptoError> {
    group
        .members()
        .map(|m| device_of(&m.credential))
        .collect::<Result<_, _>>()
}

/// Starts the server's view of `group` from a GroupInfo a member signed, with its
/// ratchet tree (a new group's first epoch, P420; or the current epoch of a group made
/// before P438). openmls checks the signature against the signer's leaf, the tree's
/// hashes and every leaf's own signature.
pub fn open_group_info(group_info: &[u8], group: GroupId) -> Result<Checked, CryptoError> {
    let msg = MlsMessageIn::tls_deserialize_exact(group_info).map_err(|e| {
        refused(
            Rejection::Malformed,
            format!("the GroupInfo does not parse: {e}"),
        )
    })?;
    let MlsMessageBodyIn::GroupInfo(info) = msg.extract() else {
        return Err(refused(Rejection::Malformed, "expected a GroupInfo"));
    };
    if info.group_id().as_slice() != group.as_bytes() {
        return Err(refused(
            Rejection::Malformed,
            "the GroupInfo is for another group",
        ));
    }
    let tree = info
        .extensions()
        .ratchet_tree()
        .map(|t| t.ratchet_tree().clone())
        .ok_or_else(|| {
            refused(
                Rejection::Malformed,
                "the GroupInfo carries no ratchet tree",
            )
        })?;
    let storage = MemoryStorage::default();
    let (public, _) = PublicGroup::from_external(
        &RustCrypto::default(),
        &storage,
        tree,
        info,
        ProposalStore::new(),
    )
    .map_err(|e| {
        refused(
            Rejection::Signature,
            format!("the GroupInfo does not verify: {e:?}"),
        )
    })?;
    Ok(Checked {
        epoch: public.group_context().epoch().as_u64(),
        members: members(&public)?,
        sender: None,
        external: false,
        state: save(&storage)?,
        added: Vec::new(),
        removed: Vec::new(),
    })
}

/// Checks a commit (a PublicMessage) at `epoch` against the stored state, with the
/// proposals (PublicMessages of that epoch) it may include by reference, and returns
/// the group after it. Refused: a commit in ciphertext, at another epoch, not signed by
/// a member (or by the joiner it adds), or invalid for the tree.
pub fn check_commit(
    state: &[u8],
    group: GroupId,
    commit: &[u8],
    proposals: &[&[u8]],
) -> Result<Checked, CryptoError> {
    let crypto = RustCrypto::default();
    let storage = load(state)?;
    let mut public = PublicGroup::load(&storage, &mls_id(group))
        .map_err(|e| internal("loading a group's public state", e))?
        .ok_or_else(|| internal("loading a group's public state", "no group in it"))?;
    let message = |bytes: &[u8], what: &str| -> Result<ProtocolMessage, CryptoError> {
        let msg = MlsMessageIn::tls_deserialize_exact(bytes).map_err(|e| {
            refused(
                Rejection::Malformed,
                format!("the {what} does not parse: {e}"),
            )
        })?;
        let protocol = msg.try_into_protocol_message().map_err(|e| {
            refused(
                Rejection::Malformed,
                format!("the {what} is not an MLS message: {e}"),
            )
        })?;
        if !matches!(protocol, ProtocolMessage::PublicMessage(_)) {
            return Err(refused(
                Rejection::Malformed,
                format!("a {what} must be an MLS PublicMessage (P438)"),
            ));
        }
        Ok(protocol)
    };
    for p in proposals {
        let processed = public
            .process_message(&crypto, message(p, "proposal")?)
            .map_err(|e| {
                refused(
                    Rejection::InvalidChange,
                    format!("a proposal does not verify: {e:?}"),
                )
            })?;
        let ProcessedMessageContent::ProposalMessage(queued) = processed.into_content() else {
            return Err(refused(
                Rejection::Malformed,
                "what came as a proposal is not one",
            ));
        };
        public
            .add_proposal(&storage, *queued)
            .map_err(|e| internal("queueing a proposal", e))?;
    }
    let before = members(&public)?;
    let protocol = message(commit, "commit")?;
    let external = matches!(
        &protocol,
        ProtocolMessage::PublicMessage(m) if matches!(m.sender(), Sender::NewMemberCommit)
    );
    let processed = public.process_message(&crypto, protocol).map_err(|e| {
        refused(
            Rejection::InvalidChange,
            format!("the commit does not verify: {e:?}"),
        )
    })?;
    let sender = device_of(processed.credential())?;
    let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
        return Err(refused(
            Rejection::Malformed,
            "what came as a commit is not one",
        ));
    };
    public
        .merge_commit(&storage, *staged)
        .map_err(|e| internal("applying a commit", e))?;
    let after = members(&public)?;
    Ok(Checked {
        epoch: public.group_context().epoch().as_u64(),
        added: after.difference(&before).copied().collect(),
        removed: before.difference(&after).copied().collect(),
        members: after,
        sender: Some(sender),
        external,
        state: save(&storage)?,
    })
}

/// The epoch a stored state is at.
pub fn epoch_of(state: &[u8], group: GroupId) -> Result<u64, CryptoError> {
    let storage = load(state)?;
    let public = PublicGroup::load(&storage, &mls_id(group))
        .map_err(|e| internal("loading a group's public state", e))?
        .ok_or_else(|| internal("loading a group's public state", "no group in it"))?;
    Ok(public.group_context().epoch().as_u64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::{Conversation, Incoming};
    use crate::identity::{Identity, validate_key_package};
    use openmls_rust_crypto::OpenMlsRustCrypto;

    fn device(n: u8) -> (OpenMlsRustCrypto, Identity) {
        let p = OpenMlsRustCrypto::default();
        let account = crate::account::AccountKey::generate();
        let id = Identity::generate(&p, DeviceId::from_bytes([n; 16]), &account, 1).unwrap();
        (p, id)
    }

    fn package(
        from: &(OpenMlsRustCrypto, Identity),
        to: &OpenMlsRustCrypto,
    ) -> openmls::prelude::KeyPackage {
        let bytes = from.1.key_packages(&from.0, 1).unwrap().remove(0);
        validate_key_package(to, &bytes, from.1.device()).unwrap().0
    }

    /// Alice creates a group with Bob and Carol; the server's view starts from the
    /// GroupInfo of epoch 1.
    fn group() -> (
        Vec<(OpenMlsRustCrypto, Identity)>,
        Vec<Conversation>,
        Checked,
        GroupId,
    ) {
        let devices: Vec<_> = (1..=3).map(device).collect();
        let gid = GroupId::from_bytes([7; 16]);
        let (ap, alice) = &devices[0];
        let mut a = Conversation::create(ap, alice, gid).unwrap();
        let kps = vec![package(&devices[1], ap), package(&devices[2], ap)];
        let added = a.add(ap, alice, &kps).unwrap();
        a.merge_pending(ap).unwrap();
        let info = a.take_group_info().unwrap();
        let view = open_group_info(&info, gid).unwrap();
        let b = Conversation::join(&devices[1].0, &added.welcome).unwrap();
        let c = Conversation::join(&devices[2].0, &added.welcome).unwrap();
        (devices, vec![a, b, c], view, gid)
    }

    #[test]
    fn p438_the_view_follows_honest_commits_and_names_what_they_change() {
        let (devices, mut convs, view, gid) = group();
        assert_eq!(view.epoch, 1);
        let all: BTreeSet<DeviceId> = devices.iter().map(|d| d.1.device()).collect();
        assert_eq!(view.members, all);
        assert_eq!(epoch_of(&view.state, gid).unwrap(), 1);

        // Alice removes Carol: the server sees exactly that, signed by Alice.
        let (ap, alice) = &devices[0];
        let commit = convs[0]
            .remove(ap, alice, &[devices[2].1.device()])
            .unwrap();
        let after = check_commit(&view.state, gid, &commit, &[]).unwrap();
        assert_eq!(after.epoch, 2);
        assert_eq!(after.sender, Some(alice.device()));
        assert!(!after.external);
        assert!(after.added.is_empty());
        assert_eq!(after.removed, vec![devices[2].1.device()]);
        convs[0].merge_pending(ap).unwrap();
        // Bob processes the same commit: the view and the members agree.
        match convs[1].process(&devices[1].0, &commit).unwrap() {
            Incoming::Commit(c) => convs[1].merge(&devices[1].0, *c).unwrap(),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            convs[1].members().into_iter().collect::<BTreeSet<_>>(),
            after.members
        );
        // The same commit again is for an epoch the view has left.
        assert!(check_commit(&after.state, gid, &commit, &[]).is_err());
    }

    #[test]
    fn p438_junk_and_ciphertext_commits_are_refused() {
        let (devices, mut convs, view, gid) = group();
        for junk in [&b""[..], b"junk", &[0u8; 300]] {
            let e = check_commit(&view.state, gid, junk, &[]).unwrap_err();
            assert!(matches!(e, CryptoError::Rejected { .. }), "{e:?}");
        }
        // An application message (a PrivateMessage) is not a commit.
        let (bp, bob) = &devices[1];
        let ct = convs[1].encrypt(bp, bob, b"hi").unwrap();
        assert!(check_commit(&view.state, gid, &ct, &[]).is_err());
        // A commit with a byte of its signed content changed (the membership tag and
        // confirmation tag at its end are the members' to check, not the server's).
        let (ap, alice) = &devices[0];
        let commit = convs[0].remove(ap, alice, &[bob.device()]).unwrap();
        for at in [commit.len() / 3, commit.len() / 2] {
            let mut forged = commit.clone();
            forged[at] ^= 1;
            assert!(
                check_commit(&view.state, gid, &forged, &[]).is_err(),
                "{at}"
            );
        }
        assert!(check_commit(&view.state, gid, &commit, &[]).is_ok());
        // A damaged stored state is an error, never a panic.
        assert!(check_commit(&view.state[..10], gid, &commit, &[]).is_err());
        assert!(open_group_info(b"junk", gid).is_err());
    }

    #[test]
    fn p438_a_leave_proposal_travels_with_the_commit_that_includes_it() {
        let (devices, mut convs, view, gid) = group();
        let (cp, carol) = &devices[2];
        let proposals = convs[2]
            .propose_removal(cp, carol, &[carol.device()])
            .unwrap();
        let (bp, bob) = &devices[1];
        match convs[1].process(bp, &proposals[0]).unwrap() {
            Incoming::Proposal(p) => convs[1].accept_proposal(bp, *p).unwrap(),
            other => panic!("{other:?}"),
        }
        let (commit, removed) = convs[1].commit_pending(bp, bob).unwrap();
        assert_eq!(removed, vec![carol.device()]);
        // Without the proposal the server cannot check the commit.
        assert!(check_commit(&view.state, gid, &commit, &[]).is_err());
        let refs: Vec<&[u8]> = proposals.iter().map(|p| p.as_slice()).collect();
        let after = check_commit(&view.state, gid, &commit, &refs).unwrap();
        assert_eq!(after.removed, vec![carol.device()]);
    }
}
