//! The conformance suite: one behaviour every [`Store`] backend must show. Each backend
//! runs [`run`] against a fresh, empty store in its own tests.
//!
//! A failed check panics with the name of the check: this module is test support.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hush_proto::ids::{DeviceId, GroupId, HandshakeKey, UserId, Username};
use hush_proto::response::EntryKind;

use crate::{
    ChannelUpdate, Delivered, NewChannel, NewCommit, NewDevice, NewGroup, NewInvite, NewMessage,
    NewUser, Owner, Quota, Quotas, Store, StoreError,
};

/// No byte bound on a fetch.
const ANY: usize = usize::MAX;

fn name(s: &str) -> Username {
    Username::parse(s).expect("valid test username")
}

fn device(n: u8) -> NewDevice {
    NewDevice {
        device_id: DeviceId::from_bytes([n; 16]),
        name: Some(format!("device {n}")),
        token_digest: [n; 32],
        created_at: 1_000,
    }
}

/// A user whose ids, keys and first device are all `n` (for suites elsewhere too).
pub fn user(n: u8, username: &str) -> NewUser {
    NewUser {
        user_id: UserId::from_bytes([n; 16]),
        username: name(username),
        display_name: Some(format!("User {n}")),
        email: None,
        password_file: vec![n; 64],
        created_at: 1_000,
        device: device(n),
        invite: None,
        account_key: [n; 32],
        sealed_account_key: vec![n; 60],
    }
}

/// Runs every check against `store`, which must be empty.
pub async fn run<S: Store + ?Sized>(store: &S) {
    secrets(store).await;
    users_and_sessions(store).await;
    invites(store).await;
    administration(store).await;
    messaging(store).await;
    quotas(store).await;
    consent(store).await;
    listener(store).await;
    two_factor(store).await;
    channels(store).await;
    files(store).await;
    backups(store).await;
    failures(store).await;
    group_infos(store).await;
    public_states(store).await;
    revocations(store).await;
}

/// P547: revocation statements are kept per user, replaced per device, and outlive the
/// device they name.
async fn revocations<S: Store + ?Sized>(store: &S) {
    store.create_user(user(170, "rv_ann")).await.unwrap();
    let ann = UserId::from_bytes([170; 16]);
    assert!(store.revocations(ann).await.unwrap().is_empty());
    store.add_device(ann, device(171), u64::MAX).await.unwrap();
    store
        .add_revocation(ann, dev(171), b"first".to_vec())
        .await
        .unwrap();
    store
        .add_revocation(ann, dev(171), b"signed".to_vec())
        .await
        .unwrap();
    store.remove_device(dev(171)).await.unwrap();
    assert_eq!(
        store.revocations(ann).await.unwrap(),
        vec![(dev(171), b"signed".to_vec())]
    );
    assert!(
        store
            .revocations(UserId::from_bytes([171; 16]))
            .await
            .unwrap()
            .is_empty()
    );
}

/// P438: a group's public MLS state is kept with the group, replaced by each accepted
/// commit in its transaction (forgotten by one that carries none), and a refused commit
/// leaves it as it was.
async fn public_states<S: Store + ?Sized>(store: &S) {
    for (n, name) in [(160, "ps_ann"), (161, "ps_ben")] {
        store.create_user(user(n, name)).await.unwrap();
    }
    let g = GroupId::from_bytes([160; 16]);
    assert_eq!(store.public_state(g).await.unwrap(), None, "no such group");
    store
        .create_group(NewGroup {
            public_state: Some(b"epoch 1".to_vec()),
            ..plain_group(g, dev(160), vec![dev(160), dev(161)], 10_000)
        })
        .await
        .unwrap();
    assert_eq!(
        store.public_state(g).await.unwrap().as_deref(),
        Some(&b"epoch 1"[..])
    );
    let commit = |epoch: u64, state: Option<&[u8]>| NewCommit {
        group_id: g,
        epoch,
        sender: dev(160),
        commit: b"commit".to_vec(),
        welcome: None,
        added: Vec::new(),
        removed: Vec::new(),
        now_ms: 11_000,
        client_key: None,
        quotas: Quotas::UNLIMITED,
        group_info: None,
        external: false,
        public_state: state.map(<[u8]>::to_vec),
    };
    store
        .accept_commit(commit(1, Some(b"epoch 2")))
        .await
        .unwrap();
    assert!(matches!(
        store.accept_commit(commit(1, Some(b"stale"))).await,
        Err(StoreError::StaleEpoch { .. })
    ));
    assert_eq!(
        store.public_state(g).await.unwrap().as_deref(),
        Some(&b"epoch 2"[..]),
        "a refused commit changes nothing"
    );
    store.accept_commit(commit(2, None)).await.unwrap();
    assert_eq!(store.public_state(g).await.unwrap(), None);
}

/// P535, P536: sealed GroupInfos per (user, group), the latest epoch kept, listed for
/// the user's groups; and an external commit by a new device of a member's user.
async fn group_infos<S: Store + ?Sized>(store: &S) {
    for (n, name) in [(150, "gi_ann"), (151, "gi_ben"), (152, "gi_cat")] {
        store.create_user(user(n, name)).await.unwrap();
    }
    let ann = UserId::from_bytes([150; 16]);
    let g = GroupId::from_bytes([150; 16]);
    store
        .create_group(NewGroup {
            group_id: g,
            creator: dev(150),
            direct: None,
            name: None,
            members: vec![dev(150), dev(151)],
            welcome: None,
            now_ms: 10_000,
            client_key: None,
            quotas: Quotas::UNLIMITED,
            channel: None,
            public_state: None,
        })
        .await
        .unwrap();
    assert!(matches!(
        store.put_group_info(dev(152), g, 1, b"cat".to_vec()).await,
        Err(StoreError::NotAMember)
    ));
    store
        .put_group_info(dev(150), g, 1, b"epoch 1".to_vec())
        .await
        .unwrap();
    store
        .put_group_info(dev(150), g, 3, b"epoch 3".to_vec())
        .await
        .unwrap();
    store
        .put_group_info(dev(150), g, 2, b"epoch 2".to_vec())
        .await
        .unwrap();
    assert!(
        store.group_infos(dev(150)).await.unwrap().is_empty(),
        "nothing for a device that is in the group"
    );
    assert!(store.group_infos(dev(152)).await.unwrap().is_empty());

    // A new device of ann joins by an external commit without any grant; a device of
    // a user with no device in the group cannot.
    store.add_device(ann, device(153), u64::MAX).await.unwrap();
    let join = |sender: u8| NewCommit {
        group_id: g,
        epoch: 1,
        sender: dev(sender),
        commit: b"external".to_vec(),
        welcome: None,
        added: vec![dev(sender)],
        removed: Vec::new(),
        now_ms: 11_000,
        client_key: None,
        quotas: Quotas::UNLIMITED,
        group_info: None,
        external: true,
        public_state: None,
    };
    assert!(matches!(
        store.accept_commit(join(152)).await,
        Err(StoreError::NotAMember)
    ));
    store.accept_commit(join(153)).await.unwrap();
    assert!(
        store
            .group(g)
            .await
            .unwrap()
            .unwrap()
            .members
            .contains(&dev(153))
    );
    assert!(
        store.group_infos(dev(153)).await.unwrap().is_empty(),
        "joined: nothing left to join"
    );
    // P537: one group's GroupInfo for its user, and a member's own external commit
    // (its resync) keeps it a member.
    assert_eq!(
        store.group_info(ann, g).await.unwrap(),
        Some((3, b"epoch 3".to_vec()))
    );
    assert_eq!(
        store
            .group_info(UserId::from_bytes([152; 16]), g)
            .await
            .unwrap(),
        None
    );
    assert!(
        matches!(
            store
                .accept_commit(NewCommit {
                    epoch: 2,
                    ..join(151)
                })
                .await,
            Err(StoreError::NotAMember)
        ),
        "a member's external commit must replace its own leaf"
    );
    store
        .accept_commit(NewCommit {
            epoch: 2,
            removed: vec![dev(151)],
            ..join(151)
        })
        .await
        .unwrap();
    let members = store.group(g).await.unwrap().unwrap().members;
    assert!(members.contains(&dev(151)) && members.contains(&dev(153)));
    // Once none of ann's devices is in the group, nothing is listed for her devices.
    store.add_device(ann, device(154), u64::MAX).await.unwrap();
    store.remove_device(dev(150)).await.unwrap();
    store.remove_device(dev(153)).await.unwrap();
    assert!(store.group_infos(dev(154)).await.unwrap().is_empty());
}

/// Failure counts shared by every node (P320, P332, P553): windows, kinds, clearing.
async fn failures<S: Store + ?Sized>(store: &S) {
    let count = |add, now| store.count_failures("login", b"ann", add, now, 60);
    assert_eq!(count(0, 100).await.unwrap().count, 0, "nothing yet");
    assert_eq!(
        count(1, 100).await.unwrap(),
        crate::FailureCount {
            count: 1,
            since: 100
        }
    );
    assert_eq!(
        count(2, 130).await.unwrap(),
        crate::FailureCount {
            count: 3,
            since: 100
        }
    );
    let other = store
        .count_failures("totp", b"ann", 0, 130, 60)
        .await
        .unwrap();
    assert_eq!(other.count, 0, "kinds are separate");
    let ben = store
        .count_failures("login", b"ben", 0, 130, 60)
        .await
        .unwrap();
    assert_eq!(ben.count, 0, "keys are separate");
    assert_eq!(
        count(1, 160).await.unwrap(),
        crate::FailureCount {
            count: 1,
            since: 160
        },
        "a new window once the old one ended"
    );
    store.clear_failures("login", b"ann").await.unwrap();
    assert_eq!(count(0, 161).await.unwrap().count, 0, "cleared");
    // A read starts no window: the window is the first failure's.
    let cat = |add, now| store.count_failures("login", b"cat", add, now, 60);
    assert_eq!(cat(0, 200).await.unwrap().count, 0);
    assert_eq!(cat(1, 250).await.unwrap().since, 250, "not the read's time");
    assert_eq!(
        cat(1, 300).await.unwrap(),
        crate::FailureCount {
            count: 2,
            since: 250
        },
        "still the first failure's window"
    );
}

async fn secrets<S: Store + ?Sized>(store: &S) {
    let first = store.secret_or_init("k", vec![1, 2, 3]).await.unwrap();
    assert_eq!(
        first,
        vec![1, 2, 3],
        "secret_or_init stores the initial value"
    );
    let second = store.secret_or_init("k", vec![9]).await.unwrap();
    assert_eq!(
        second,
        vec![1, 2, 3],
        "secret_or_init keeps the first value"
    );
}

async fn users_and_sessions<S: Store + ?Sized>(store: &S) {
    assert!(
        store.create_user(user(1, "ann")).await.unwrap(),
        "the first user of an empty store administers it"
    );
    assert!(
        store
            .user_by_name(&name("ann"))
            .await
            .unwrap()
            .unwrap()
            .admin,
        "and is stored as an admin"
    );
    let dup = store.create_user(user(2, "ann")).await;
    assert!(
        matches!(dup, Err(StoreError::UsernameTaken)),
        "duplicate username refused: {dup:?}"
    );
    let ann = store
        .user_by_name(&name("ann"))
        .await
        .unwrap()
        .expect("ann exists");
    assert_eq!(ann.user_id, UserId::from_bytes([1; 16]));
    assert_eq!(ann.password_file, vec![1; 64]);
    assert_eq!(ann.display_name.as_deref(), Some("User 1"));
    assert!(ann.admin && !ann.disabled, "the first user is an admin");
    assert_eq!(
        ann.account_key,
        Some([1; 32]),
        "P540: the published account key"
    );
    assert_eq!(
        ann.sealed_account_key,
        Some(vec![1; 60]),
        "P542: kept as given"
    );
    store
        .touch_device(DeviceId::from_bytes([1; 16]), 5_000)
        .await
        .unwrap();
    let records = store.device_records(ann.user_id).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(
        (
            records[0].name.as_deref(),
            records[0].created_at,
            records[0].last_seen
        ),
        (Some("device 1"), 1_000, Some(5_000)),
        "P546: names and times"
    );
    assert_eq!(
        store
            .live_devices(&[
                DeviceId::from_bytes([1; 16]),
                DeviceId::from_bytes([99; 16])
            ])
            .await
            .unwrap(),
        vec![DeviceId::from_bytes([1; 16])],
        "an unknown device is not live"
    );
    assert!(store.user_by_name(&name("nobody")).await.unwrap().is_none());

    let session = store
        .session(&[1; 32])
        .await
        .unwrap()
        .expect("first device session");
    assert_eq!(session.device_id, DeviceId::from_bytes([1; 16]));
    assert_eq!(session.username, name("ann"));

    store
        .add_device(ann.user_id, device(7), u64::MAX)
        .await
        .unwrap();
    let s7 = store
        .session(&[7; 32])
        .await
        .unwrap()
        .expect("second device");
    assert_eq!(s7.user_id, ann.user_id);
    let missing = store
        .add_device(UserId::from_bytes([99; 16]), device(8), u64::MAX)
        .await;
    assert!(matches!(missing, Err(StoreError::UserNotFound)));

    store
        .remove_device(DeviceId::from_bytes([7; 16]))
        .await
        .unwrap();
    assert!(
        store.session(&[7; 32]).await.unwrap().is_none(),
        "logout ends the session"
    );
    assert!(
        store.session(&[1; 32]).await.unwrap().is_some(),
        "other devices stay"
    );
}

async fn invites<S: Store + ?Sized>(store: &S) {
    let digest = [42; 32];
    store
        .create_invite(NewInvite {
            digest,
            uses: 1,
            expires_at: Some(2_000),
            created_at: 1_000,
        })
        .await
        .unwrap();
    assert!(store.invite_usable(&digest, 1_500).await.unwrap());
    assert!(
        !store.invite_usable(&digest, 2_000).await.unwrap(),
        "expired at expiry"
    );
    assert!(
        !store.invite_usable(&[43; 32], 1_500).await.unwrap(),
        "unknown invite"
    );

    let mut expired = user(3, "late");
    expired.invite = Some(digest);
    expired.created_at = 2_500;
    let res = store.create_user(expired).await;
    assert!(
        matches!(res, Err(StoreError::InviteInvalid)),
        "expired invite: {res:?}"
    );
    assert!(
        store.user_by_name(&name("late")).await.unwrap().is_none(),
        "a refused registration leaves no user"
    );

    let mut ok = user(4, "ben");
    ok.invite = Some(digest);
    store.create_user(ok).await.unwrap();
    assert!(
        !store.invite_usable(&digest, 1_500).await.unwrap(),
        "used up"
    );

    let mut again = user(5, "cat");
    again.invite = Some(digest);
    let res = store.create_user(again).await;
    assert!(
        matches!(res, Err(StoreError::InviteInvalid)),
        "used-up invite: {res:?}"
    );

    let mut taken = user(6, "ben");
    taken.invite = Some([44; 32]);
    let res = store.create_user(taken).await;
    assert!(res.is_err(), "duplicate with bad invite refused");

    store
        .create_invite(NewInvite {
            digest: [45; 32],
            uses: 2,
            expires_at: None,
            created_at: 1_000,
        })
        .await
        .unwrap();
    let mut dup = user(9, "ann");
    dup.invite = Some([45; 32]);
    assert!(store.create_user(dup).await.is_err());
    let mut d1 = user(10, "dan");
    d1.invite = Some([45; 32]);
    store.create_user(d1).await.unwrap();
    assert!(
        store.invite_usable(&[45; 32], i64::MAX - 1).await.unwrap(),
        "a failed registration does not consume a use; no expiry means none"
    );
}

async fn administration<S: Store + ?Sized>(store: &S) {
    let users = store.list_users().await.unwrap();
    let names: Vec<_> = users.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names, ["ann", "ben", "dan"], "sorted by username");
    assert_eq!(users[0].devices, 1);

    store.set_disabled(&name("ben"), true).await.unwrap();
    assert!(
        store
            .user_by_name(&name("ben"))
            .await
            .unwrap()
            .unwrap()
            .disabled
    );
    assert!(store.session(&[4; 32]).await.unwrap().unwrap().disabled);
    store.set_disabled(&name("ben"), false).await.unwrap();
    assert!(
        !store
            .user_by_name(&name("ben"))
            .await
            .unwrap()
            .unwrap()
            .disabled
    );

    store.set_admin(&name("ann"), true).await.unwrap();
    assert!(store.session(&[1; 32]).await.unwrap().unwrap().admin);
    store.set_admin(&name("ann"), false).await.unwrap();
    assert!(
        !store
            .user_by_name(&name("ann"))
            .await
            .unwrap()
            .unwrap()
            .admin
    );

    let missing = store.set_admin(&name("ghost"), true).await;
    assert!(matches!(missing, Err(StoreError::UserNotFound)));

    store.delete_user(&name("dan")).await.unwrap();
    assert!(store.user_by_name(&name("dan")).await.unwrap().is_none());
    assert!(
        store.session(&[10; 32]).await.unwrap().is_none(),
        "devices go with the user"
    );
    let again = store.delete_user(&name("dan")).await;
    assert!(matches!(again, Err(StoreError::UserNotFound)));
    assert!(
        !store.create_user(user(11, "dan")).await.unwrap(),
        "only the first user is made an admin"
    );
}

fn packages(claimed: Vec<crate::Claimed>) -> Vec<(DeviceId, Vec<u8>)> {
    claimed.into_iter().map(|c| (c.device, c.package)).collect()
}

fn dev(n: u8) -> DeviceId {
    DeviceId::from_bytes([n; 16])
}

/// A group of `members` made by `creator`: no name, channel, Welcome or quota.
fn plain_group(
    group_id: GroupId,
    creator: DeviceId,
    members: Vec<DeviceId>,
    now_ms: i64,
) -> NewGroup {
    NewGroup {
        channel: None,
        group_id,
        creator,
        direct: None,
        name: None,
        members,
        welcome: None,
        now_ms,
        client_key: None,
        quotas: Quotas::UNLIMITED,
        public_state: None,
    }
}

fn msg(group: GroupId, epoch: u64, sender: u8, id: u8, text: &[u8]) -> NewMessage {
    NewMessage {
        group_id: group,
        epoch,
        sender: dev(sender),
        client_message_id: [id; 16],
        ciphertext: text.to_vec(),
        now_ms: 5_000,
        quotas: Quotas::UNLIMITED,
    }
}

async fn messaging<S: Store + ?Sized>(store: &S) {
    // Users mia (device 20) and max (devices 21 and 22).
    store.create_user(user(20, "mia")).await.unwrap();
    store.create_user(user(21, "max")).await.unwrap();
    let max = UserId::from_bytes([21; 16]);
    let mia = UserId::from_bytes([20; 16]);
    store.add_device(max, device(22), u64::MAX).await.unwrap();

    // Key packages: one-time ones are consumed, the last-resort one is kept.
    let n = store
        .publish_key_packages(
            dev(21),
            vec![b"kp1".to_vec(), b"kp2".to_vec()],
            Some(b"last".to_vec()),
            2,
        )
        .await
        .unwrap();
    assert_eq!(n, 2);
    let over = store
        .publish_key_packages(dev(21), vec![b"kp9".to_vec()], None, 2)
        .await;
    assert!(
        matches!(
            over,
            Err(StoreError::QuotaExceeded {
                quota: Quota::KeyPackages,
                limit: 2
            })
        ),
        "the cap holds: {over:?}"
    );
    store
        .publish_key_packages(dev(22), vec![b"kp3".to_vec()], None, 100)
        .await
        .unwrap();
    let unknown = store
        .publish_key_packages(dev(99), vec![b"x".to_vec()], None, 100)
        .await;
    assert!(
        matches!(unknown, Err(StoreError::DeviceNotFound(_))),
        "{unknown:?}"
    );
    let claimed = packages(store.claim_key_packages(&[max]).await.unwrap());
    assert_eq!(
        claimed,
        vec![(dev(21), b"kp1".to_vec()), (dev(22), b"kp3".to_vec())]
    );
    assert_eq!(store.key_package_count(dev(21)).await.unwrap(), 1);
    let claimed = packages(store.claim_key_packages(&[max]).await.unwrap());
    assert_eq!(
        claimed,
        vec![(dev(21), b"kp2".to_vec())],
        "device 22 has none left"
    );
    for _ in 0..2 {
        let claimed = packages(store.claim_key_packages(&[max]).await.unwrap());
        assert_eq!(
            claimed,
            vec![(dev(21), b"last".to_vec())],
            "last resort is not consumed"
        );
    }
    let both = store
        .claim_key_packages(&[mia, max, UserId::from_bytes([98; 16])])
        .await
        .unwrap();
    assert_eq!(
        both.iter().map(|c| (c.user, c.device)).collect::<Vec<_>>(),
        vec![(max, dev(21))],
        "users in one claim; mia has no packages, an unknown user gets nothing"
    );
    assert_eq!(store.key_package_count(dev(21)).await.unwrap(), 0);

    let owners = store
        .device_owners(&[dev(21), dev(20), dev(99)])
        .await
        .unwrap();
    let owner = |d: u8, n: &str, k: u8| Owner {
        device: dev(d),
        username: name(n),
        account_key: Some([k; 32]),
    };
    assert_eq!(owners, vec![owner(21, "max", 21), owner(20, "mia", 20)]);

    // A direct group: Welcome queued for everyone but the creator.
    let g = GroupId::from_bytes([7; 16]);
    let created = store
        .create_group(NewGroup {
            channel: None,
            group_id: g,
            creator: dev(20),
            direct: Some((mia, max)),
            name: None,
            members: vec![dev(20), dev(21), dev(22)],
            welcome: Some(b"welcome".to_vec()),
            now_ms: 4_000,
            client_key: None,
            quotas: Quotas::UNLIMITED,
            public_state: None,
        })
        .await
        .unwrap();
    assert_eq!(created.epoch, 1);
    assert_eq!(created.recipients, vec![dev(21), dev(22)]);
    assert_eq!(
        store.direct_group(max, mia).await.unwrap(),
        Some(g),
        "either order"
    );
    let again = store
        .create_group(NewGroup {
            channel: None,
            group_id: GroupId::from_bytes([8; 16]),
            creator: dev(21),
            direct: Some((max, mia)),
            name: None,
            members: vec![dev(21), dev(20)],
            welcome: Some(b"w2".to_vec()),
            now_ms: 4_000,
            client_key: None,
            quotas: Quotas::UNLIMITED,
            public_state: None,
        })
        .await;
    assert!(
        matches!(again, Err(StoreError::GroupExists)),
        "one direct group per pair: {again:?}"
    );
    assert!(
        store
            .group(GroupId::from_bytes([8; 16]))
            .await
            .unwrap()
            .is_none(),
        "nothing left behind"
    );
    // Named groups: one per name.
    let team = GroupId::from_bytes([9; 16]);
    let named = |id: GroupId| NewGroup {
        channel: None,
        group_id: id,
        creator: dev(21),
        direct: None,
        name: Some("team".into()),
        members: vec![dev(21)],
        welcome: None,
        now_ms: 4_000,
        client_key: None,
        quotas: Quotas::UNLIMITED,
        public_state: None,
    };
    store.create_group(named(team)).await.unwrap();
    let dup = store
        .create_group(named(GroupId::from_bytes([10; 16])))
        .await;
    assert!(
        matches!(dup, Err(StoreError::GroupExists)),
        "names are unique: {dup:?}"
    );
    assert_eq!(store.named_group("team").await.unwrap(), Some(team));
    assert_eq!(store.named_group("other").await.unwrap(), None);

    let record = store.group(g).await.unwrap().unwrap();
    assert_eq!((record.epoch, record.members.len()), (1, 3));

    let inbox = store
        .fetch_mailbox(dev(21), 0, 100, ANY)
        .await
        .unwrap()
        .entries;
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].kind, EntryKind::Welcome);
    assert_eq!(&inbox[0].payload[..], b"welcome");
    assert_eq!(inbox[0].sender_device, dev(20));
    assert!(
        store
            .fetch_mailbox(dev(20), 0, 100, ANY)
            .await
            .unwrap()
            .entries
            .is_empty(),
        "not to the creator"
    );

    // Application messages: epoch-checked, members only, idempotent.
    let sent = store
        .enqueue_message(msg(g, 1, 20, 1, b"m1"))
        .await
        .unwrap();
    assert_eq!(sent.recipients, vec![dev(21), dev(22)]);
    let retry = store
        .enqueue_message(msg(g, 1, 20, 1, b"m1"))
        .await
        .unwrap();
    assert_eq!(
        retry.group_seq, sent.group_seq,
        "a retry is acknowledged again"
    );
    let stale = store.enqueue_message(msg(g, 0, 20, 2, b"old")).await;
    assert!(
        matches!(stale, Err(StoreError::StaleEpoch { current: 1 })),
        "{stale:?}"
    );
    let outsider = store.enqueue_message(msg(g, 1, 1, 3, b"x")).await;
    assert!(
        matches!(outsider, Err(StoreError::NotAMember)),
        "{outsider:?}"
    );
    let second = store
        .enqueue_message(msg(g, 1, 21, 4, b"m2"))
        .await
        .unwrap();
    assert!(second.group_seq > sent.group_seq, "one sequence per group");

    let inbox = store
        .fetch_mailbox(dev(21), 0, 100, ANY)
        .await
        .unwrap()
        .entries;
    let payloads: Vec<&[u8]> = inbox.iter().map(|e| &e.payload[..]).collect();
    assert_eq!(
        payloads,
        vec![&b"welcome"[..], b"m1"],
        "in order, no duplicate, not own"
    );
    assert!(inbox[0].id < inbox[1].id);
    let limited = store
        .fetch_mailbox(dev(21), inbox[0].id, 1, ANY)
        .await
        .unwrap()
        .entries;
    assert_eq!(limited.len(), 1);
    assert_eq!(&limited[0].payload[..], b"m1");

    // Commits move the epoch; a stale commit is refused.
    let commit = NewCommit {
        group_info: None,
        external: false,
        group_id: g,
        epoch: 1,
        sender: dev(21),
        commit: b"c1".to_vec(),
        welcome: None,
        added: vec![],
        removed: vec![dev(22)],
        now_ms: 6_000,
        client_key: None,
        quotas: Quotas::UNLIMITED,
        public_state: None,
    };
    let done = store.accept_commit(commit.clone()).await.unwrap();
    assert_eq!(done.epoch, 2);
    assert_eq!(
        done.recipients,
        vec![dev(20), dev(22)],
        "the removed device learns it"
    );
    let stale = store.accept_commit(commit).await;
    assert!(
        matches!(stale, Err(StoreError::StaleEpoch { current: 2 })),
        "{stale:?}"
    );
    let gone = store.enqueue_message(msg(g, 2, 22, 5, b"x")).await;
    assert!(
        matches!(gone, Err(StoreError::NotAMember)),
        "removed: {gone:?}"
    );
    assert_eq!(
        store.group(g).await.unwrap().unwrap().members,
        vec![dev(20), dev(21)]
    );

    // Acks delete; another device's ids are ignored.
    let ids: Vec<u64> = inbox.iter().map(|e| e.id).collect();
    store.ack(dev(20), &ids, 0).await.unwrap();
    assert_eq!(
        store
            .fetch_mailbox(dev(21), 0, 100, ANY)
            .await
            .unwrap()
            .entries
            .len(),
        2
    );
    store.ack(dev(21), &ids, 0).await.unwrap();
    assert!(
        store
            .fetch_mailbox(dev(21), 0, 100, ANY)
            .await
            .unwrap()
            .entries
            .is_empty()
    );
    assert_eq!(
        store
            .fetch_mailbox(dev(22), 0, 100, ANY)
            .await
            .unwrap()
            .entries
            .len(),
        4,
        "welcome, m1, m2, commit"
    );

    // Removing a device drops its mailbox.
    store.remove_device(dev(22)).await.unwrap();
    assert!(
        store
            .fetch_mailbox(dev(22), 0, 100, ANY)
            .await
            .unwrap()
            .entries
            .is_empty()
    );
    let mia_inbox = store
        .fetch_mailbox(dev(20), 0, 100, ANY)
        .await
        .unwrap()
        .entries;
    let kinds: Vec<EntryKind> = mia_inbox.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, vec![EntryKind::Application, EntryKind::Handshake]);
    assert_eq!(
        store
            .device_owners(&[dev(22)])
            .await
            .unwrap()
            .into_iter()
            .map(|o| (o.device, o.username))
            .collect::<Vec<_>>(),
        vec![(dev(22), name("max"))],
        "P412: a removed device's owner stays known"
    );
    handshake_retries(store).await;
    fetch_bounded_by_bytes(store).await;
}

/// P440: a fetch stops before its payloads pass the byte bound, but always returns the
/// first entry, so any backlog drains a page at a time.
async fn fetch_bounded_by_bytes<S: Store + ?Sized>(store: &S) {
    let dev = |n: u8| DeviceId::from_bytes([n; 16]);
    let g = GroupId::from_bytes([41; 16]);
    store
        .create_group(NewGroup {
            channel: None,
            group_id: g,
            creator: dev(20),
            direct: None,
            name: Some("bulky".into()),
            members: vec![dev(20), dev(21)],
            welcome: Some(vec![0; 10]),
            now_ms: 9_000,
            client_key: None,
            quotas: Quotas::UNLIMITED,
            public_state: None,
        })
        .await
        .unwrap();
    let before: Vec<u64> = store
        .fetch_mailbox(dev(21), 0, 500, ANY)
        .await
        .unwrap()
        .entries
        .iter()
        .map(|e| e.id)
        .collect();
    store.ack(dev(21), &before, 0).await.unwrap();
    for i in 0..5u8 {
        let mut m = msg(g, 1, 20, 100 + i, b"");
        m.ciphertext = vec![i; 1000];
        store.enqueue_message(m).await.unwrap();
    }
    let page = store
        .fetch_mailbox(dev(21), 0, 500, 2_500)
        .await
        .unwrap()
        .entries;
    assert_eq!(page.len(), 2, "two 1000-byte entries fit in 2500 bytes");
    let tiny = store
        .fetch_mailbox(dev(21), 0, 500, 10)
        .await
        .unwrap()
        .entries;
    assert_eq!(tiny.len(), 1, "the first entry always comes");
    let all = store.fetch_mailbox(dev(21), 0, 500, ANY).await.unwrap();
    assert_eq!(all.entries.len(), 5);
    assert!(!all.more, "the whole mailbox fit: nothing more");
    let cut = store.fetch_mailbox(dev(21), 0, 500, 2_500).await.unwrap();
    assert!(cut.more, "a page cut by bytes says more follow");
    let by_limit = store.fetch_mailbox(dev(21), 0, 5, ANY).await.unwrap();
    assert!(!by_limit.more, "exactly `limit` left: nothing more");
    let by_limit = store.fetch_mailbox(dev(21), 0, 4, ANY).await.unwrap();
    assert!(by_limit.more, "a page cut by `limit` says more follow");

    // P443: a following connection keeps a cursor, so a later entry's id is larger
    // than every earlier one's, even once those were acknowledged.
    let last = all.entries.last().map(|e| e.id).unwrap();
    let ids: Vec<u64> = all.entries.iter().map(|e| e.id).collect();
    store.ack(dev(21), &ids, 0).await.unwrap();
    store
        .enqueue_message(msg(g, 1, 20, 120, b"later"))
        .await
        .unwrap();
    let later = store.fetch_mailbox(dev(21), last, 500, ANY).await.unwrap();
    assert_eq!(later.entries.len(), 1, "the new entry is after the cursor");
    assert!(later.entries[0].id > last);
}

/// P423, P433: a creation or commit retried with its client key is answered with the
/// first result and applied once, even after the group moved on.
async fn handshake_retries<S: Store + ?Sized>(store: &S) {
    let dev = |n: u8| DeviceId::from_bytes([n; 16]);
    let key = |n: u8| Some(HandshakeKey::from_bytes([n; 16]));
    let g = GroupId::from_bytes([40; 16]);
    let create = NewGroup {
        channel: None,
        group_id: g,
        creator: dev(20),
        direct: None,
        name: Some("retried".into()),
        members: vec![dev(20), dev(21)],
        welcome: Some(b"w".to_vec()),
        now_ms: 7_000,
        client_key: key(1),
        quotas: Quotas::UNLIMITED,
        public_state: None,
    };
    let first = store.create_group(create.clone()).await.unwrap();
    let again = store.create_group(create.clone()).await.unwrap();
    assert_eq!(
        (again.epoch, again.group_seq),
        (first.epoch, first.group_seq),
        "a retried creation gets the first answer"
    );
    assert!(again.recipients.is_empty(), "and wakes nobody");
    let welcomes = store
        .fetch_mailbox(dev(21), 0, 100, ANY)
        .await
        .unwrap()
        .entries
        .into_iter()
        .filter(|e| e.group_id == g)
        .count();
    assert_eq!(welcomes, 1, "the Welcome is queued once");
    let other = NewGroup {
        channel: None,
        client_key: key(2),
        ..create
    };
    assert!(
        matches!(
            store.create_group(other).await,
            Err(StoreError::GroupExists)
        ),
        "another key for a taken id is refused"
    );

    let commit = NewCommit {
        group_info: None,
        external: false,
        group_id: g,
        epoch: 1,
        sender: dev(20),
        commit: b"c".to_vec(),
        welcome: None,
        added: vec![],
        removed: vec![],
        now_ms: 8_000,
        client_key: key(3),
        quotas: Quotas::UNLIMITED,
        public_state: None,
    };
    let done = store.accept_commit(commit.clone()).await.unwrap();
    assert_eq!(done.epoch, 2);
    // Someone else commits next; the lost answer's retry still gets the first result.
    store
        .accept_commit(NewCommit {
            group_info: None,
            external: false,
            sender: dev(21),
            epoch: 2,
            client_key: key(4),
            ..commit.clone()
        })
        .await
        .unwrap();
    let retry = store.accept_commit(commit.clone()).await.unwrap();
    assert_eq!(
        (retry.epoch, retry.group_seq),
        (done.epoch, done.group_seq),
        "a retried commit gets the first answer"
    );
    assert_eq!(
        store.group(g).await.unwrap().unwrap().epoch,
        3,
        "applied once"
    );
    let fresh = store
        .accept_commit(NewCommit {
            group_info: None,
            external: false,
            client_key: key(5),
            ..commit
        })
        .await;
    assert!(
        matches!(fresh, Err(StoreError::StaleEpoch { current: 3 })),
        "a new key at an old epoch is stale: {fresh:?}"
    );
}

/// That `r` was refused for `quota`.
#[track_caller]
fn assert_over<T: std::fmt::Debug>(r: &Result<T, StoreError>, quota: Quota, what: &str) {
    assert!(
        matches!(r, Err(StoreError::QuotaExceeded { quota: q, .. }) if *q == quota),
        "{what}: {r:?}"
    );
}

fn uid(n: u8) -> UserId {
    UserId::from_bytes([n; 16])
}

/// Makes users `a` and `b` (one device each, numbered like the user) know each other
/// the way clients do: a 1:1 that both wrote in (P460). Leaves their mailboxes empty.
async fn befriend<S: Store + ?Sized>(store: &S, a: u8, b: u8, group: u8) {
    let g = GroupId::from_bytes([group; 16]);
    store
        .create_group(NewGroup {
            channel: None,
            group_id: g,
            creator: dev(a),
            direct: Some((uid(a), uid(b))),
            name: None,
            members: vec![dev(a), dev(b)],
            welcome: Some(b"hi".to_vec()),
            now_ms: 1,
            client_key: None,
            quotas: Quotas::UNLIMITED,
            public_state: None,
        })
        .await
        .unwrap();
    for (from, id) in [(a, group), (b, group.wrapping_add(1))] {
        store
            .enqueue_message(msg(g, 1, from, id, b"hello"))
            .await
            .unwrap();
    }
    for d in [a, b] {
        let ids: Vec<u64> = store
            .fetch_mailbox(dev(d), 0, 100, ANY)
            .await
            .unwrap()
            .entries
            .iter()
            .map(|e| e.id)
            .collect();
        store.ack(dev(d), &ids, 0).await.unwrap();
    }
}

/// P450–P453: quotas hold inside the store's transaction; retention.
async fn quotas<S: Store + ?Sized>(store: &S) {
    const T: i64 = 10_000_000;
    // quota_a (devices 40, 41), quota_b (42), quota_c (43).
    for (n, name) in [(40, "quota_a"), (42, "quota_b"), (43, "quota_c")] {
        store.create_user(user(n, name)).await.unwrap();
    }
    befriend(store, 40, 42, 210).await;
    befriend(store, 40, 43, 212).await;
    store.add_device(uid(40), device(41), 2).await.unwrap();
    let over = store.add_device(uid(40), device(44), 2).await;
    assert!(
        matches!(
            over,
            Err(StoreError::QuotaExceeded {
                quota: Quota::Devices,
                limit: 2
            })
        ),
        "devices per account: {over:?}"
    );
    assert_eq!(store.devices_of(uid(40)).await.unwrap().len(), 2);

    let g = GroupId::from_bytes([200; 16]);
    let create = NewGroup {
        channel: None,
        group_id: g,
        creator: dev(40),
        direct: None,
        name: None,
        members: vec![dev(40), dev(41), dev(42)],
        welcome: Some(b"welcome".to_vec()),
        now_ms: T,
        client_key: None,
        quotas: Quotas {
            group_members: 2,
            ..Quotas::UNLIMITED
        },
        public_state: None,
    };
    let big = store.create_group(create.clone()).await;
    assert_over(&big, Quota::GroupMembers, "members per group at creation");
    assert!(store.group(g).await.unwrap().is_none(), "nothing created");
    store
        .create_group(NewGroup {
            channel: None,
            quotas: Quotas {
                group_members: 3,
                groups_per_hour: 1,
                ..Quotas::UNLIMITED
            },
            ..create.clone()
        })
        .await
        .unwrap();
    let second = store
        .create_group(NewGroup {
            channel: None,
            group_id: GroupId::from_bytes([201; 16]),
            members: vec![dev(40)],
            welcome: None,
            now_ms: T + 1_000,
            quotas: Quotas {
                groups_per_hour: 1,
                ..Quotas::UNLIMITED
            },
            ..create.clone()
        })
        .await;
    assert_over(&second, Quota::GroupsPerHour, "groups per hour");
    store
        .create_group(NewGroup {
            channel: None,
            group_id: GroupId::from_bytes([201; 16]),
            members: vec![dev(40)],
            welcome: None,
            now_ms: T + 3_600_001,
            quotas: Quotas {
                groups_per_hour: 1,
                ..Quotas::UNLIMITED
            },
            ..create.clone()
        })
        .await
        .expect("an hour later the user may create a group again");

    let add_qc = NewCommit {
        group_info: None,
        external: false,
        group_id: g,
        epoch: 1,
        sender: dev(40),
        commit: b"add".to_vec(),
        welcome: Some(b"w".to_vec()),
        added: vec![dev(43)],
        removed: vec![],
        now_ms: T,
        client_key: None,
        quotas: Quotas {
            group_members: 3,
            ..Quotas::UNLIMITED
        },
        public_state: None,
    };
    let crowded = store.accept_commit(add_qc.clone()).await;
    assert_over(&crowded, Quota::GroupMembers, "members per group on commit");
    assert_eq!(
        store.group(g).await.unwrap().unwrap().epoch,
        1,
        "not applied"
    );

    // Mailboxes of at most 2 entries: 41 and 42 hold the Welcome.
    let two = Quotas {
        mailbox_entries: 2,
        ..Quotas::UNLIMITED
    };
    let send = |id: u8, text: &[u8]| NewMessage {
        now_ms: T,
        quotas: two,
        ..msg(g, 1, 40, id, text)
    };
    let first = store.enqueue_message(send(60, b"one")).await.unwrap();
    assert!(first.undelivered.is_empty());
    let full = store.enqueue_message(send(61, b"two")).await;
    assert!(
        matches!(full, Err(StoreError::MailboxFull)),
        "every recipient full: {full:?}"
    );
    let drained: Vec<u64> = store
        .fetch_mailbox(dev(41), 0, 100, ANY)
        .await
        .unwrap()
        .entries
        .iter()
        .map(|e| e.id)
        .collect();
    store.ack(dev(41), &drained, 0).await.unwrap();
    let partial = store.enqueue_message(send(61, b"two")).await.unwrap();
    assert_eq!(partial.undelivered, vec![dev(42)], "the full one is named");
    assert_eq!(partial.recipients, vec![dev(41)]);
    let page = store.fetch_mailbox(dev(42), 0, 100, ANY).await.unwrap();
    assert_eq!(page.entries.len(), 2, "nothing queued past the quota");
    assert_eq!(page.missed, 1, "the full device is told it missed one");
    let retry = store.enqueue_message(send(61, b"two")).await.unwrap();
    assert_eq!(
        retry.group_seq, partial.group_seq,
        "a retry is not a new message"
    );

    let bytes = Quotas {
        mailbox_bytes: 10,
        ..Quotas::UNLIMITED
    };
    let big = store
        .enqueue_message(NewMessage {
            now_ms: T,
            quotas: bytes,
            ..msg(g, 1, 40, 62, b"eleven byte")
        })
        .await;
    assert!(
        matches!(big, Err(StoreError::MailboxFull)),
        "bytes: {big:?}"
    );

    // Handshakes are never held back by a full mailbox.
    store
        .accept_commit(NewCommit {
            group_info: None,
            external: false,
            quotas: two,
            added: vec![],
            welcome: None,
            ..add_qc.clone()
        })
        .await
        .expect("a commit reaches a full mailbox");
    assert_eq!(
        store
            .fetch_mailbox(dev(42), 0, 100, ANY)
            .await
            .unwrap()
            .entries
            .len(),
        3
    );

    // The sender's stored bytes: "one", "two" and the commit are still queued.
    let tight = store
        .enqueue_message(NewMessage {
            now_ms: T,
            epoch: 2,
            quotas: Quotas {
                user_bytes: 20,
                ..Quotas::UNLIMITED
            },
            ..msg(g, 2, 40, 63, b"this makes it more than 20")
        })
        .await;
    assert_over(&tight, Quota::UserBytes, "user storage");

    // Noting missed messages; acks free the quota.
    store.ack(dev(42), &[], 1).await.unwrap();
    assert_eq!(
        store
            .fetch_mailbox(dev(42), 0, 100, ANY)
            .await
            .unwrap()
            .missed,
        0
    );
    store.ack(dev(42), &[], 5).await.unwrap();
    assert_eq!(
        store
            .fetch_mailbox(dev(42), 0, 100, ANY)
            .await
            .unwrap()
            .missed,
        0,
        "never below zero"
    );

    // A device gone with its mailbox: its messages are collected (qc's quota frees).
    // Retention: entries stored before the cut expire and are counted as missed;
    // idempotency records before theirs are forgotten.
    let kept = store.prune(T, T).await.unwrap();
    assert_eq!(
        store
            .fetch_mailbox(dev(42), 0, 100, ANY)
            .await
            .unwrap()
            .entries
            .len(),
        3,
        "entries stored at the cut are kept: {kept:?}"
    );
    let pruned = store.prune(T + 1, T + 1).await.unwrap();
    assert!(pruned.expired_entries >= 3, "{pruned:?}");
    assert!(pruned.idempotency_records >= 2, "{pruned:?}");
    let page = store.fetch_mailbox(dev(42), 0, 100, ANY).await.unwrap();
    assert!(page.entries.is_empty(), "expired entries are gone");
    assert_eq!(page.missed, 3, "and counted as missed");
    let again = store
        .enqueue_message(NewMessage {
            now_ms: T + 2,
            epoch: 2,
            ..send(60, b"one")
        })
        .await
        .unwrap();
    assert_ne!(
        again.group_seq, first.group_seq,
        "past the idempotency window an id is new again"
    );
    // With every earlier message gone, the sender's storage is free again.
    store
        .enqueue_message(NewMessage {
            now_ms: T + 2,
            epoch: 2,
            quotas: Quotas {
                user_bytes: 20,
                ..Quotas::UNLIMITED
            },
            ..msg(g, 2, 40, 64, b"fits in twenty")
        })
        .await
        .expect("storage is freed when messages go");
}

/// P451, for a backend opened with a small size limit (or on a small disk): writes past
/// it fail with `StorageFull` and change nothing, while fetches and acks still work, and
/// once drained, writes work again. `store` must be empty.
/// Stores `n` messages of 64 KiB for one device, then reads and acknowledges them all
/// (a large drain), for adapters to check what the drain leaves behind.
pub async fn fill_and_drain<S: Store + ?Sized>(store: &S, n: u32) {
    store.create_user(user(3, "drain_sender")).await.unwrap();
    store.create_user(user(4, "drain_reader")).await.unwrap();
    let g = GroupId::from_bytes([3; 16]);
    store
        .create_group(plain_group(g, dev(3), vec![dev(3), dev(4)], 1))
        .await
        .unwrap();
    let payload = vec![7u8; 64 * 1024];
    for i in 0..n {
        let mut m = msg(g, 1, 3, 0, &payload);
        m.client_message_id[..4].copy_from_slice(&i.to_be_bytes());
        store.enqueue_message(m).await.unwrap();
    }
    let mut after = 0;
    loop {
        let page = store.fetch_mailbox(dev(4), after, 500, ANY).await.unwrap();
        let Some(last) = page.entries.last() else {
            break;
        };
        after = last.id;
        let ids: Vec<u64> = page.entries.iter().map(|e| e.id).collect();
        store.ack(dev(4), &ids, 0).await.unwrap();
    }
}

pub async fn drains_when_full<S: Store + ?Sized>(store: &S) {
    store.create_user(user(1, "full_sender")).await.unwrap();
    store.create_user(user(2, "full_reader")).await.unwrap();
    let g = GroupId::from_bytes([1; 16]);
    store
        .create_group(plain_group(g, dev(1), vec![dev(1), dev(2)], 1))
        .await
        .unwrap();
    let payload = vec![7u8; 64 * 1024];
    let mut stored = 0u32;
    let full = loop {
        assert!(stored < 10_000, "the store never filled up");
        let mut m = msg(g, 1, 1, 0, &payload);
        m.client_message_id[..4].copy_from_slice(&stored.to_be_bytes());
        match store.enqueue_message(m).await {
            Ok(_) => stored += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(full, StoreError::StorageFull), "{full:?}");
    assert!(full.is_retryable(), "a full disk may pass");
    let page = store.fetch_mailbox(dev(2), 0, 10_000, ANY).await.unwrap();
    assert_eq!(
        page.entries.len() as u32,
        stored,
        "everything acknowledged is there, the refused one is not"
    );
    let ids: Vec<u64> = page.entries.iter().map(|e| e.id).collect();
    store
        .ack(dev(2), &ids, 0)
        .await
        .expect("acks work on a full store");
    let mut again = msg(g, 1, 1, 0, &payload);
    again.client_message_id = [0xff; 16];
    store
        .enqueue_message(again)
        .await
        .expect("drained, the store takes messages again");
}

/// The concurrency guarantees of [`Store`] (its "Concurrency" section), with many
/// operations in flight at once. `store` must be empty.
pub async fn run_concurrent<S: Store>(store: &S) {
    run_concurrent_pair(store, store).await
}

/// [`run_concurrent`] with the racing calls split between two stores on one
/// database (two nodes of a cluster): the guarantees hold across them.
pub async fn run_concurrent_pair(a: &dyn Store, b: &dyn Store) {
    use futures::future::join_all;
    let store = a;
    let on = |i: u8| if i.is_multiple_of(2) { a } else { b };
    for (n, name) in [
        (70, "race_a"),
        (71, "race_b"),
        (72, "race_c"),
        (73, "race_d"),
    ] {
        store.create_user(user(n, name)).await.unwrap();
    }
    let g = GroupId::from_bytes([70; 16]);
    store
        .create_group(plain_group(g, dev(70), vec![dev(70), dev(71)], 1))
        .await
        .unwrap();

    // Commits racing at one epoch: exactly one wins.
    let commits = (0..10u8).map(|i| {
        on(i).accept_commit(NewCommit {
            group_info: None,
            external: false,
            group_id: g,
            epoch: 1,
            sender: dev(70 + i % 2),
            commit: vec![i],
            welcome: None,
            added: vec![],
            removed: vec![],
            now_ms: 2,
            client_key: Some(HandshakeKey::from_bytes([100 + i; 16])),
            quotas: Quotas::UNLIMITED,
            public_state: None,
        })
    });
    let results = join_all(commits).await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "exactly one commit at an epoch wins: {results:?}");
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, StoreError::StaleEpoch { current: 2 })),
        "the others are stale: {results:?}"
    );
    assert_eq!(store.group(g).await.unwrap().unwrap().epoch, 2);
    let mut handshakes = 0;
    for d in [dev(70), dev(71)] {
        handshakes += store
            .fetch_mailbox(d, 0, 100, ANY)
            .await
            .unwrap()
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::Handshake)
            .count();
    }
    assert_eq!(handshakes, 1, "only the winner is queued");

    // Claims racing for ten one-time packages: none handed out twice.
    let ten: Vec<Vec<u8>> = (0..10u8).map(|i| vec![b'k', i]).collect();
    store
        .publish_key_packages(dev(72), ten, Some(b"last".to_vec()), 100)
        .await
        .unwrap();
    let claimer = [uid(72)];
    let claims = (0..30u8).map(|i| on(i).claim_key_packages(&claimer));
    let mut got: Vec<Vec<u8>> = join_all(claims)
        .await
        .into_iter()
        .flat_map(|r| r.unwrap())
        .map(|c| c.package)
        .collect();
    assert_eq!(got.len(), 30, "every claim gets a package");
    got.retain(|p| p != b"last");
    let distinct: std::collections::BTreeSet<_> = got.iter().cloned().collect();
    assert_eq!(got.len(), 10, "each one-time package once");
    assert_eq!(distinct.len(), 10, "never one twice");

    // Publishes racing for a cap of five.
    let publishes = (0..20u8).map(|i| on(i).publish_key_packages(dev(73), vec![vec![i]], None, 5));
    let ok = join_all(publishes)
        .await
        .iter()
        .filter(|r| r.is_ok())
        .count();
    assert_eq!(ok, 5);
    assert_eq!(
        store.key_package_count(dev(73)).await.unwrap(),
        5,
        "the cap holds"
    );

    // Sends racing for a mailbox of five entries (emptied first).
    let old: Vec<u64> = store
        .fetch_mailbox(dev(71), 0, 100, ANY)
        .await
        .unwrap()
        .entries
        .iter()
        .map(|e| e.id)
        .collect();
    store.ack(dev(71), &old, 0).await.unwrap();
    let five = Quotas {
        mailbox_entries: 5,
        ..Quotas::UNLIMITED
    };
    let sends = (0..20u8).map(|i| {
        on(i).enqueue_message(NewMessage {
            quotas: five,
            ..msg(g, 2, 70, 120 + i, b"m")
        })
    });
    let results = join_all(sends).await;
    let stored = results.iter().filter(|r| r.is_ok()).count();
    let inbox = store.fetch_mailbox(dev(71), 0, 100, ANY).await.unwrap();
    assert_eq!(inbox.entries.len(), 5, "the quota holds under a race");
    assert_eq!(stored, 5);
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, StoreError::MailboxFull))
    );

    // Failures counted from everywhere at once: none lost.
    let fails = (0..20u8).map(|i| on(i).count_failures("race", b"key", 1, 10, 600));
    for r in join_all(fails).await {
        r.unwrap();
    }
    assert_eq!(
        b.count_failures("race", b"key", 0, 11, 600)
            .await
            .unwrap()
            .count,
        20,
        "every failure counted"
    );

    // Retries racing with one client message id: stored once, one answer for all.
    let ids: Vec<u64> = inbox.entries.iter().map(|e| e.id).collect();
    store.ack(dev(71), &ids, 0).await.unwrap();
    let retries = (0..10u8).map(|i| on(i).enqueue_message(msg(g, 2, 70, 200, b"once")));
    let answers: Vec<Delivered> = join_all(retries)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert!(answers.iter().all(|a| a.group_seq == answers[0].group_seq));
    let inbox = store.fetch_mailbox(dev(71), 0, 100, ANY).await.unwrap();
    assert_eq!(inbox.entries.len(), 1, "stored once");
    let ids: Vec<u64> = inbox.entries.iter().map(|e| e.id).collect();
    store.ack(dev(71), &ids, 0).await.unwrap();

    // Acks racing for the last entries of shared messages: each message goes with
    // its last entry, and the room it took in its sender's storage with it.
    let g2 = GroupId::from_bytes([71; 16]);
    store
        .create_group(plain_group(g2, dev(72), vec![dev(72), dev(71), dev(73)], 1))
        .await
        .unwrap();
    for i in 0..20u8 {
        store
            .enqueue_message(msg(g2, 1, 72, i, &[i; 100]))
            .await
            .unwrap();
    }
    let mut acks = Vec::new();
    for (k, d) in [dev(71), dev(73)].into_iter().enumerate() {
        let page = store.fetch_mailbox(d, 0, 100, ANY).await.unwrap();
        assert_eq!(page.entries.len(), 20);
        for (i, e) in page.entries.iter().enumerate() {
            acks.push((on((i + k) as u8), d, e.id));
        }
    }
    let racing = acks
        .iter()
        .map(|(s, d, id)| s.ack(*d, std::slice::from_ref(id), 0));
    for r in join_all(racing).await {
        r.unwrap();
    }
    let room_for_one = Quotas {
        user_bytes: 100,
        ..Quotas::UNLIMITED
    };
    store
        .enqueue_message(NewMessage {
            quotas: room_for_one,
            ..msg(g2, 1, 72, 50, &[0; 100])
        })
        .await
        .expect("every acknowledged message was deleted, its bytes given back");
}

/// P460–P462: invitations from people a user never reached out to are held.
async fn consent<S: Store + ?Sized>(store: &S) {
    // stranger (80), target (81), friend (82), another stranger (83).
    for (n, name) in [
        (80, "stranger"),
        (81, "target"),
        (82, "friend"),
        (83, "stranger_two"),
    ] {
        store.create_user(user(n, name)).await.unwrap();
    }
    let named = |id: u8, creator: u8, members: &[u8]| NewGroup {
        channel: None,
        group_id: GroupId::from_bytes([id; 16]),
        creator: dev(creator),
        direct: None,
        name: None,
        members: members.iter().map(|m| dev(*m)).collect(),
        welcome: Some(vec![id; 8]),
        now_ms: 100,
        client_key: None,
        quotas: Quotas::UNLIMITED,
        public_state: None,
    };
    let kinds = |page: &crate::MailboxPage| -> Vec<EntryKind> {
        page.entries.iter().map(|e| e.kind).collect()
    };
    let drain = |d: u8| async move {
        let page = store.fetch_mailbox(dev(d), 0, 100, ANY).await.unwrap();
        let ids: Vec<u64> = page.entries.iter().map(|e| e.id).collect();
        store.ack(dev(d), &ids, 0).await.unwrap();
        page
    };

    // A friend the target wrote to in a 1:1 may add it to a group.
    befriend(store, 82, 81, 220).await;
    let done = store.create_group(named(222, 82, &[82, 81])).await.unwrap();
    assert!(done.held.is_empty());
    assert_eq!(kinds(&drain(81).await), [EntryKind::Welcome]);

    // A stranger's invitation is held; the target is told who asked.
    let done = store.create_group(named(224, 80, &[80, 81])).await.unwrap();
    assert_eq!(done.held, vec![dev(81)], "held for the target");
    let page = drain(81).await;
    assert_eq!(kinds(&page), [EntryKind::Request]);
    assert_eq!(
        &page.entries[0].payload[..],
        b"stranger",
        "names the inviter"
    );
    let g = GroupId::from_bytes([224; 16]);
    let sent = store
        .enqueue_message(msg(g, 1, 80, 224, b"are you there"))
        .await
        .unwrap();
    assert_eq!(sent.held, vec![dev(81)], "what follows is held too");
    assert!(drain(81).await.entries.is_empty());
    let pending = store.requests(uid(81)).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (
            pending[0].inviter,
            pending[0].inviter_name.as_str(),
            pending[0].groups
        ),
        (uid(80), "stranger", 1)
    );

    // Caps on pending invitations: their number and size.
    let over = store
        .create_group(NewGroup {
            channel: None,
            quotas: Quotas {
                requests_per_user: 1,
                ..Quotas::UNLIMITED
            },
            ..named(225, 80, &[80, 81])
        })
        .await;
    assert_over(&over, Quota::Requests, "pending invitations per user");
    let big = store
        .create_group(NewGroup {
            channel: None,
            quotas: Quotas {
                request_bytes: 4,
                ..Quotas::UNLIMITED
            },
            ..named(225, 83, &[83, 81])
        })
        .await;
    assert_over(&big, Quota::RequestBytes, "size of an invitation");

    // Accepting releases everything, in order, and the inviter is accepted from now on.
    let wake = store.answer_request(uid(81), uid(80), true).await.unwrap();
    assert_eq!(wake, vec![dev(81)]);
    let page = drain(81).await;
    assert_eq!(kinds(&page), [EntryKind::Welcome, EntryKind::Application]);
    assert_eq!(&page.entries[1].payload[..], b"are you there");
    assert!(store.requests(uid(81)).await.unwrap().is_empty());
    let again = store.create_group(named(226, 80, &[80, 81])).await.unwrap();
    assert!(again.held.is_empty(), "accepted: no more requests");
    drain(81).await;

    // Declining drops the invitation and takes the target out of that group.
    store.create_group(named(228, 83, &[83, 81])).await.unwrap();
    drain(81).await;
    let none = store.answer_request(uid(81), uid(83), false).await.unwrap();
    assert!(none.is_empty());
    assert!(store.requests(uid(81)).await.unwrap().is_empty());
    let record = store
        .group(GroupId::from_bytes([228; 16]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.members, vec![dev(83)], "the decliner left the group");
    let after = store
        .enqueue_message(msg(GroupId::from_bytes([228; 16]), 1, 83, 228, b"hello?"))
        .await
        .unwrap();
    assert!(after.recipients.is_empty() && after.held.is_empty());
    assert!(
        drain(81).await.entries.is_empty(),
        "nothing reaches a decliner"
    );
    let still = store.create_group(named(229, 83, &[83, 81])).await.unwrap();
    assert_eq!(still.held, vec![dev(81)], "declining is not accepting");
}

/// One listener call: the entries handed over, and the devices named.
type Report = (Vec<(DeviceId, hush_proto::response::Entry)>, Vec<DeviceId>);

/// What a [`crate::CommitListener`] was told, call by call.
#[derive(Default)]
struct Recording {
    calls: std::sync::Mutex<Vec<Report>>,
    revoked: std::sync::Mutex<Vec<DeviceId>>,
}

impl crate::CommitListener for Recording {
    fn committed(&self, entries: &[(DeviceId, hush_proto::response::Entry)], woken: &[DeviceId]) {
        if let Ok(mut c) = self.calls.lock() {
            c.push((entries.to_vec(), woken.to_vec()));
        }
    }

    fn revoked(&self, devices: &[DeviceId]) {
        if let Ok(mut r) = self.revoked.lock() {
            r.extend_from_slice(devices);
        }
    }
}

/// Waits up to five seconds for `done` to hold.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{what}: not seen within five seconds");
}

/// Stores that share a database across nodes (PostgreSQL): a listener on `a` hears
/// of what is written through `b` (mailboxes that got entries, sessions that must
/// end), so a node wakes and cuts off the devices connected to it.
pub async fn wakes_across_nodes(a: &dyn Store, b: &dyn Store) {
    let heard = std::sync::Arc::new(Recording::default());
    a.set_listener(heard.clone());
    for (n, name) in [(60, "node_ann"), (61, "node_ben")] {
        b.create_user(user(n, name)).await.unwrap();
    }
    let g = GroupId::from_bytes([60; 16]);
    b.create_group(NewGroup {
        channel: None,
        group_id: g,
        creator: dev(60),
        direct: Some((uid(60), uid(61))),
        name: None,
        members: vec![dev(60), dev(61)],
        welcome: Some(vec![1; 8]),
        now_ms: 100,
        client_key: None,
        quotas: Quotas::UNLIMITED,
        public_state: None,
    })
    .await
    .unwrap();
    let woke = |d: DeviceId| {
        let heard = heard.clone();
        move || {
            heard
                .calls
                .lock()
                .unwrap()
                .iter()
                .any(|(e, w)| w.contains(&d) || e.iter().any(|(to, _)| *to == d))
        }
    };
    eventually("a Welcome written on the other node", woke(dev(61))).await;
    heard.calls.lock().unwrap().clear();
    b.enqueue_message(msg(g, 1, 61, 1, b"hi")).await.unwrap();
    eventually("a message written on the other node", woke(dev(60))).await;
    b.set_disabled(&name("node_ben"), true).await.unwrap();
    eventually("a user disabled on the other node", || {
        heard.revoked.lock().unwrap().contains(&dev(61))
    })
    .await;
    b.remove_device(dev(60)).await.unwrap();
    eventually("a device removed on the other node", || {
        heard.revoked.lock().unwrap().contains(&dev(60))
    })
    .await;
}

/// P443: every committed write that queues entries is reported, naming each device
/// that got one (the entry itself, or the device to read from); handed-over
/// entries are what a fetch returns.
async fn listener<S: Store + ?Sized>(store: &S) {
    let recording = std::sync::Arc::new(Recording::default());
    store.set_listener(recording.clone());
    for (n, name) in [(90, "lis_ann"), (91, "lis_ben"), (92, "lis_cat")] {
        store.create_user(user(n, name)).await.unwrap();
    }
    let seen = std::sync::Mutex::new(std::collections::HashMap::<u8, u64>::new());
    // After one operation: the reports it made cover every new entry of `devices`.
    let check = |what: &'static str, from: usize, devices: &'static [u8]| {
        let recording = recording.clone();
        let seen = &seen;
        async move {
            let calls = recording.calls.lock().unwrap()[from..].to_vec();
            assert!(
                calls.len() <= 1,
                "{what}: one report per write, got {}",
                calls.len()
            );
            let mut got_any = false;
            for d in devices {
                let after = seen.lock().unwrap().get(d).copied().unwrap_or(0);
                let page = store.fetch_mailbox(dev(*d), after, 100, ANY).await.unwrap();
                for e in &page.entries {
                    got_any = true;
                    let (entries, woken) = calls.first().unwrap_or_else(|| {
                        panic!("{what}: entry {} of device {d} not reported", e.id)
                    });
                    let handed = entries
                        .iter()
                        .find(|(to, x)| *to == dev(*d) && x.id == e.id);
                    match handed {
                        Some((_, x)) => assert_eq!(
                            x.to_pb(),
                            e.to_pb(),
                            "{what}: the entry handed over is the stored one"
                        ),
                        None => assert!(
                            woken.contains(&dev(*d)),
                            "{what}: device {d} got entry {} but was not named",
                            e.id
                        ),
                    }
                }
                if let Some(last) = page.entries.last() {
                    seen.lock().unwrap().insert(*d, last.id);
                }
            }
            assert!(got_any, "{what}: the operation queued something");
        }
    };
    let reports = || recording.calls.lock().unwrap().len();

    // A stranger's group: the Welcome is held, a REQUEST entry is queued.
    let g = GroupId::from_bytes([95; 16]);
    let at = reports();
    store
        .create_group(NewGroup {
            channel: None,
            group_id: g,
            creator: dev(90),
            direct: None,
            name: None,
            members: vec![dev(90), dev(91)],
            welcome: Some(vec![1; 8]),
            now_ms: 100,
            client_key: None,
            quotas: Quotas::UNLIMITED,
            public_state: None,
        })
        .await
        .unwrap();
    check("an invitation", at, &[91]).await;
    let at = reports();
    store.answer_request(uid(91), uid(90), true).await.unwrap();
    check("accepting releases the Welcome", at, &[91]).await;
    let at = reports();
    store
        .enqueue_message(msg(g, 1, 90, 96, b"hi"))
        .await
        .unwrap();
    check("a message", at, &[91]).await;
    let at = reports();
    store
        .accept_commit(NewCommit {
            group_info: None,
            external: false,
            group_id: g,
            epoch: 1,
            sender: dev(90),
            commit: b"add cat".to_vec(),
            welcome: Some(vec![2; 8]),
            added: vec![dev(92)],
            removed: vec![],
            now_ms: 200,
            client_key: None,
            quotas: Quotas::UNLIMITED,
            public_state: None,
        })
        .await
        .unwrap();
    check("a commit and its Welcome", at, &[91, 92]).await;
}

/// P330–P334: pending secrets, enabling, one use per time step, one use per recovery
/// code, and turning it off.
async fn two_factor<S: Store + ?Sized>(store: &S) {
    for (n, name) in [(100, "tf_ann"), (101, "tf_ben")] {
        store.create_user(user(n, name)).await.unwrap();
    }
    let ann = UserId::from_bytes([100; 16]);
    let ben = UserId::from_bytes([101; 16]);
    let nobody = UserId::from_bytes([199; 16]);
    assert!(store.two_factor(ann).await.unwrap().is_none());
    assert!(store.pending_totp(ann).await.unwrap().is_none());
    assert!(matches!(
        store.set_pending_totp(nobody, vec![1; 20]).await,
        Err(StoreError::UserNotFound)
    ));
    // A second enable replaces the pending secret; confirming the first then fails.
    store.set_pending_totp(ann, vec![1; 20]).await.unwrap();
    store.set_pending_totp(ann, vec![2; 20]).await.unwrap();
    assert_eq!(store.pending_totp(ann).await.unwrap(), Some(vec![2; 20]));
    let codes = vec![[7; 32], [8; 32]];
    assert!(
        !store
            .enable_two_factor(ann, &[1; 20], 100, codes.clone())
            .await
            .unwrap()
    );
    assert!(store.two_factor(ann).await.unwrap().is_none());
    assert!(
        store
            .enable_two_factor(ann, &[2; 20], 100, codes)
            .await
            .unwrap()
    );
    assert!(
        store.pending_totp(ann).await.unwrap().is_none(),
        "no longer pending"
    );
    let tf = store.two_factor(ann).await.unwrap().unwrap();
    assert_eq!(
        (tf.secret, tf.last_step, tf.recovery_left),
        (vec![2; 20], 100, 2)
    );
    assert!(store.two_factor(ben).await.unwrap().is_none(), "per user");

    // Time steps: only later ones, each once.
    assert!(
        !store.use_totp_step(ann, 100).await.unwrap(),
        "the confirming step"
    );
    assert!(!store.use_totp_step(ann, 99).await.unwrap());
    assert!(store.use_totp_step(ann, 101).await.unwrap());
    assert!(!store.use_totp_step(ann, 101).await.unwrap(), "a replay");
    assert!(
        !store.use_totp_step(ben, 500).await.unwrap(),
        "no two-factor login"
    );
    assert_eq!(store.two_factor(ann).await.unwrap().unwrap().last_step, 101);

    // Recovery codes: each once, only the owner's.
    assert!(!store.use_recovery_code(ben, &[7; 32]).await.unwrap());
    assert!(store.use_recovery_code(ann, &[7; 32]).await.unwrap());
    assert!(
        !store.use_recovery_code(ann, &[7; 32]).await.unwrap(),
        "used"
    );
    assert!(
        !store.use_recovery_code(ann, &[9; 32]).await.unwrap(),
        "unknown"
    );
    assert_eq!(
        store.two_factor(ann).await.unwrap().unwrap().recovery_left,
        1
    );

    store.disable_two_factor(ann).await.unwrap();
    assert!(store.two_factor(ann).await.unwrap().is_none());
    assert!(
        !store.use_recovery_code(ann, &[8; 32]).await.unwrap(),
        "gone with it"
    );
    // On again later: a fresh start, old codes do not come back.
    store.set_pending_totp(ann, vec![3; 20]).await.unwrap();
    assert!(
        store
            .enable_two_factor(ann, &[3; 20], 5, vec![])
            .await
            .unwrap()
    );
    assert_eq!(
        store.two_factor(ann).await.unwrap().unwrap().recovery_left,
        0
    );
    assert!(store.use_totp_step(ann, 6).await.unwrap());
    // Deleting the user deletes it all.
    store.set_pending_totp(ben, vec![4; 20]).await.unwrap();
    store.delete_user(&name("tf_ben")).await.unwrap();
    assert!(store.pending_totp(ben).await.unwrap().is_none());
}

/// P550-P555: channel records, join grants, code steps once per user, updates, and
/// deletion with everything queued for the channel.
async fn channels<S: Store + ?Sized>(store: &S) {
    for (n, name) in [(110, "ch_ann"), (111, "ch_ben"), (112, "ch_cat")] {
        store.create_user(user(n, name)).await.unwrap();
    }
    let ann = UserId::from_bytes([110; 16]);
    let ben = UserId::from_bytes([111; 16]);
    let g = GroupId::from_bytes([110; 16]);
    assert!(store.channel("chan").await.unwrap().is_none());
    store
        .create_group(NewGroup {
            group_id: g,
            creator: dev(110),
            direct: None,
            name: Some("chan".into()),
            members: vec![dev(110)],
            welcome: None,
            now_ms: 10_000,
            client_key: None,
            quotas: Quotas::UNLIMITED,
            channel: Some(NewChannel {
                password_hash: Some("$argon2id$hash".into()),
                totp_secret: Some(vec![3; 20]),
                group_info: b"info-1".to_vec(),
            }),
            public_state: None,
        })
        .await
        .unwrap();
    let c = store.channel("chan").await.unwrap().expect("the channel");
    assert_eq!(c.group_id, g);
    assert_eq!(c.password_hash.as_deref(), Some("$argon2id$hash"));
    assert_eq!(c.totp_secret, Some(vec![3; 20]));
    assert_eq!(c.group_info, b"info-1");
    assert_eq!((c.epoch, c.members, c.admins.clone()), (1, 1, vec![ann]));
    assert!(store.group(g).await.unwrap().unwrap().channel);
    let listed = store.channels().await.unwrap();
    assert!(listed.iter().any(|c| c.name == "chan"));

    // An external commit needs a grant, which it uses up.
    let join = |sender: u8, epoch: u64, now_ms: i64| NewCommit {
        group_id: g,
        epoch,
        sender: dev(sender),
        commit: b"external".to_vec(),
        welcome: None,
        added: vec![dev(sender)],
        removed: Vec::new(),
        now_ms,
        client_key: None,
        quotas: Quotas::UNLIMITED,
        group_info: Some(format!("info-{}", epoch + 1).into_bytes()),
        external: true,
        public_state: None,
    };
    assert!(matches!(
        store.accept_commit(join(111, 1, 11_000)).await,
        Err(StoreError::NotAMember)
    ));
    assert!(
        store
            .grant_channel_join(g, dev(111), Some((ben, 500)), 20_000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .grant_channel_join(g, dev(111), Some((ben, 500)), 20_000)
            .await
            .unwrap(),
        "a code's step is used once per user"
    );
    assert!(
        store
            .grant_channel_join(
                g,
                dev(112),
                Some((UserId::from_bytes([112; 16]), 500)),
                12_000
            )
            .await
            .unwrap(),
        "another user may use the same step"
    );
    let done = store.accept_commit(join(111, 1, 11_000)).await.unwrap();
    assert_eq!(done.recipients, vec![dev(110), dev(111)]);
    let c = store.channel("chan").await.unwrap().unwrap();
    assert_eq!((c.epoch, c.members), (2, 2));
    assert_eq!(c.group_info, b"info-2", "the commit's GroupInfo is kept");
    let entries = store
        .fetch_mailbox(dev(110), 0, 100, 1 << 20)
        .await
        .unwrap();
    assert_eq!(entries.entries.len(), 1, "members get the external commit");
    assert!(
        matches!(
            store.accept_commit(join(111, 2, 11_000)).await,
            Err(StoreError::NotAMember)
        ),
        "a grant is used up, and a member cannot join again"
    );
    assert!(
        matches!(
            store.accept_commit(join(112, 2, 13_000)).await,
            Err(StoreError::NotAMember)
        ),
        "an expired grant admits nobody"
    );

    // Updates.
    store
        .update_channel(
            g,
            ChannelUpdate {
                password_hash: Some(None),
                totp_secret: Some(Some(vec![4; 20])),
                admins: Some(vec![ann, ben]),
            },
        )
        .await
        .unwrap();
    let c = store.channel("chan").await.unwrap().unwrap();
    assert_eq!(c.password_hash, None);
    assert_eq!(c.totp_secret, Some(vec![4; 20]));
    assert_eq!(c.admins, vec![ann, ben]);
    assert!(
        store
            .grant_channel_join(g, dev(111), Some((ben, 500)), 20_000)
            .await
            .unwrap(),
        "a new secret starts the used steps afresh"
    );
    let plain = GroupId::from_bytes([111; 16]);
    assert!(matches!(
        store.update_channel(plain, ChannelUpdate::default()).await,
        Err(StoreError::GroupNotFound)
    ));
    assert!(matches!(
        store.grant_channel_join(plain, dev(111), None, 1).await,
        Err(StoreError::GroupNotFound)
    ));

    // Deletion takes the group and its name; what was queued still arrives.
    store.delete_channel(g).await.unwrap();
    assert!(store.channel("chan").await.unwrap().is_none());
    assert!(store.group(g).await.unwrap().is_none());
    assert!(store.named_group("chan").await.unwrap().is_none());
    let left = store
        .fetch_mailbox(dev(110), 0, 100, 1 << 20)
        .await
        .unwrap();
    assert_eq!(left.entries.len(), 1, "queued entries are still delivered");
    assert!(matches!(
        store.delete_channel(g).await,
        Err(StoreError::GroupNotFound)
    ));
}

/// P560–P564: file records, their recipients, quotas and expiry.
async fn files<S: Store + ?Sized>(store: &S) {
    use crate::NewFile;
    use hush_proto::ids::FileId;
    for (n, name) in [(120, "fi_ann"), (121, "fi_ben"), (122, "fi_cat")] {
        store.create_user(user(n, name)).await.unwrap();
    }
    let ann = UserId::from_bytes([120; 16]);
    let g = GroupId::from_bytes([120; 16]);
    store
        .create_group(NewGroup {
            group_id: g,
            creator: dev(120),
            direct: None,
            name: Some("files".into()),
            members: vec![dev(120), dev(121)],
            welcome: None,
            now_ms: 10_000,
            client_key: None,
            quotas: Quotas::UNLIMITED,
            channel: None,
            public_state: None,
        })
        .await
        .unwrap();
    let new = |n: u8, uploader: u8, size: u64, now_ms: i64| NewFile {
        file_id: FileId::from_bytes([n; 16]),
        group_id: g,
        uploader: dev(uploader),
        size,
        now_ms,
        max_file_bytes: 1_000,
        user_file_bytes: 1_500,
    };
    let f = store.create_file(new(1, 120, 600, 20_000)).await.unwrap();
    assert_eq!(f.uploader_user, ann);
    assert_eq!(f.recipients, vec![dev(121)], "the group's other devices");
    assert!(!f.complete);
    assert_eq!(store.file(f.file_id).await.unwrap(), Some(f.clone()));
    assert!(
        matches!(
            store.create_file(new(2, 122, 10, 20_000)).await,
            Err(StoreError::NotAMember)
        ),
        "only a member offers files to a group"
    );
    assert!(matches!(
        store.create_file(new(2, 120, 1_001, 20_000)).await,
        Err(StoreError::QuotaExceeded {
            quota: Quota::FileSize,
            limit: 1_000
        })
    ));
    assert!(
        matches!(
            store.create_file(new(2, 120, 901, 20_000)).await,
            Err(StoreError::QuotaExceeded {
                quota: Quota::FileBytes,
                limit: 1_500
            })
        ),
        "incomplete files count towards the quota"
    );
    assert!(
        store
            .file(FileId::from_bytes([2; 16]))
            .await
            .unwrap()
            .is_none()
    );
    store.create_file(new(2, 120, 900, 30_000)).await.unwrap();

    store.complete_file(f.file_id).await.unwrap();
    assert!(store.file(f.file_id).await.unwrap().unwrap().complete);
    assert!(
        !store.file_fetched(f.file_id, dev(122)).await.unwrap(),
        "a stranger fetching counts for nothing"
    );
    assert!(
        store.file_fetched(f.file_id, dev(121)).await.unwrap(),
        "the last recipient's fetch ends the file"
    );
    assert!(store.file(f.file_id).await.unwrap().is_none());
    assert!(!store.file_fetched(f.file_id, dev(121)).await.unwrap());
    // Room freed by the fetch is usable again; expiry and deletion free the rest.
    store.create_file(new(3, 120, 600, 40_000)).await.unwrap();
    assert_eq!(
        store.expire_files(35_000).await.unwrap(),
        vec![FileId::from_bytes([2; 16])]
    );
    assert!(
        store
            .delete_file(FileId::from_bytes([3; 16]))
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_file(FileId::from_bytes([3; 16]))
            .await
            .unwrap()
    );
    assert!(store.expire_files(i64::MAX).await.unwrap().is_empty());
}

/// P570–P573: a backup is appended to in order only, its head moves with its chunks in
/// one step, its keys are kept field by field, and it goes with its user.
async fn backups<S: Store + ?Sized>(store: &S) {
    use crate::NewBackupChunk;
    store.create_user(user(130, "bk_ann")).await.unwrap();
    store.create_user(user(131, "bk_ben")).await.unwrap();
    let ann = UserId::from_bytes([130; 16]);
    let ben = UserId::from_bytes([131; 16]);
    assert_eq!(store.backup(ann).await.unwrap(), None, "none yet");
    assert!(
        store
            .backup_chunks(ann, 0, 1 << 20)
            .await
            .unwrap()
            .is_empty()
    );
    let chunk = |index: u64, len: usize, now_ms: i64| NewBackupChunk {
        user: ann,
        index,
        chunk: vec![index as u8 + 1; len],
        head: vec![index as u8; 112],
        now_ms,
        max_bytes: 1_000,
    };
    assert_eq!(store.append_backup(chunk(0, 300, 10)).await.unwrap(), 1);
    assert_eq!(store.append_backup(chunk(1, 300, 20)).await.unwrap(), 2);
    assert!(matches!(
        store.append_backup(chunk(1, 10, 30)).await,
        Err(StoreError::BackupConflict { count: 2 })
    ));
    assert!(matches!(
        store.append_backup(chunk(3, 10, 30)).await,
        Err(StoreError::BackupConflict { count: 2 })
    ));
    assert!(matches!(
        store.append_backup(chunk(2, 401, 30)).await,
        Err(StoreError::QuotaExceeded {
            quota: Quota::BackupBytes,
            limit: 1_000
        })
    ));
    let r = store.backup(ann).await.unwrap().unwrap();
    assert_eq!(
        (r.count, r.bytes, r.updated_ms),
        (2, 600, 20),
        "refusals changed nothing"
    );
    assert_eq!(r.head, vec![1; 112], "the head of the last append");
    assert_eq!(
        (r.wrapped_password.clone(), r.wrapped_recovery.clone()),
        (None, None)
    );
    store
        .set_backup_keys(ann, Some(b"pw".to_vec()), Some(b"rk".to_vec()))
        .await
        .unwrap();
    store
        .set_backup_keys(ann, None, Some(b"rk2".to_vec()))
        .await
        .unwrap();
    let r = store.backup(ann).await.unwrap().unwrap();
    assert_eq!(r.wrapped_password.as_deref(), Some(&b"pw"[..]));
    assert_eq!(r.wrapped_recovery.as_deref(), Some(&b"rk2"[..]));
    assert_eq!(r.count, 2, "keys leave the chunks alone");
    let all = store.backup_chunks(ann, 0, 1 << 20).await.unwrap();
    assert_eq!(all, vec![(0, vec![1; 300]), (1, vec![2; 300])], "in order");
    assert_eq!(
        store.backup_chunks(ann, 0, 400).await.unwrap().len(),
        1,
        "bounded"
    );
    assert_eq!(
        store.backup_chunks(ann, 0, 10).await.unwrap().len(),
        1,
        "at least one"
    );
    assert_eq!(
        store.backup_chunks(ann, 1, 1 << 20).await.unwrap(),
        vec![(1, vec![2; 300])]
    );
    assert!(
        store
            .backup_chunks(ann, 2, 1 << 20)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .backup_chunks(ann, u64::MAX, 1 << 20)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.backup(ben).await.unwrap(),
        None,
        "one user's backup only"
    );
    assert!(matches!(
        store
            .set_backup_keys(UserId::from_bytes([139; 16]), Some(vec![1]), None)
            .await,
        Err(StoreError::UserNotFound)
    ));
    store
        .delete_user(&Username::parse("bk_ann").unwrap())
        .await
        .unwrap();
    assert_eq!(store.backup(ann).await.unwrap(), None, "gone with the user");
    assert!(
        store
            .backup_chunks(ann, 0, 1 << 20)
            .await
            .unwrap()
            .is_empty()
    );
}
