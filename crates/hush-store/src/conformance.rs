//! The conformance suite: one behaviour every [`Store`] backend must show. Each backend
//! runs [`run`] against a fresh, empty store in its own tests.
//!
//! A failed check panics with the name of the check: this module is test support.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hush_proto::ids::{DeviceId, UserId, Username};

use crate::{NewDevice, NewInvite, NewUser, Store, StoreError};

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

fn user(n: u8, username: &str) -> NewUser {
    NewUser {
        user_id: UserId::from_bytes([n; 16]),
        username: name(username),
        display_name: Some(format!("User {n}")),
        email: None,
        password_file: vec![n; 64],
        created_at: 1_000,
        device: device(n),
        invite: None,
    }
}

/// Runs every check against `store`, which must be empty.
pub async fn run<S: Store + ?Sized>(store: &S) {
    secrets(store).await;
    users_and_sessions(store).await;
    invites(store).await;
    administration(store).await;
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
    store.create_user(user(1, "ann")).await.unwrap();
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
    assert!(!ann.admin && !ann.disabled);
    assert!(store.user_by_name(&name("nobody")).await.unwrap().is_none());

    let session = store
        .session(&[1; 32])
        .await
        .unwrap()
        .expect("first device session");
    assert_eq!(session.device_id, DeviceId::from_bytes([1; 16]));
    assert_eq!(session.username, name("ann"));

    store.add_device(ann.user_id, device(7)).await.unwrap();
    let s7 = store
        .session(&[7; 32])
        .await
        .unwrap()
        .expect("second device");
    assert_eq!(s7.user_id, ann.user_id);
    let missing = store
        .add_device(UserId::from_bytes([99; 16]), device(8))
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
    store.create_user(user(11, "dan")).await.unwrap();
}
