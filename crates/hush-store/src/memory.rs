//! An in-memory [`Store`]: the reference for the conformance suite and a fast store
//! for server tests. Nothing survives a restart.
use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use hush_proto::ids::{DeviceId, UserId, Username};

use crate::{NewDevice, NewInvite, NewUser, Session, Store, StoreError, UserRecord, UserSummary};

#[derive(Default)]
struct State {
    secrets: HashMap<String, Vec<u8>>,
    users: HashMap<UserId, UserRecord>,
    devices: HashMap<DeviceId, (UserId, NewDevice)>,
    invites: HashMap<[u8; 32], NewInvite>,
}

impl State {
    fn user_id(&self, name: &Username) -> Result<UserId, StoreError> {
        self.users
            .values()
            .find(|u| &u.username == name)
            .map(|u| u.user_id)
            .ok_or(StoreError::UserNotFound)
    }

    fn user_mut(&mut self, name: &Username) -> Result<&mut UserRecord, StoreError> {
        let id = self.user_id(name)?;
        self.users.get_mut(&id).ok_or(StoreError::UserNotFound)
    }
}

#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut guard = self
            .state
            .lock()
            .map_err(|_| StoreError::Backend("memory store lock poisoned".into()))?;
        f(&mut guard)
    }
}

fn invite_ok(invite: &NewInvite, now: i64) -> bool {
    invite.uses > 0 && invite.expires_at.is_none_or(|t| now < t)
}

#[async_trait]
impl Store for MemoryStore {
    async fn secret_or_init(&self, name: &str, init: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        self.with(|s| Ok(s.secrets.entry(name.to_owned()).or_insert(init).clone()))
    }

    async fn create_user(&self, user: NewUser) -> Result<(), StoreError> {
        self.with(|s| {
            if s.users.values().any(|u| u.username == user.username) {
                return Err(StoreError::UsernameTaken);
            }
            if let Some(digest) = user.invite {
                match s.invites.get_mut(&digest) {
                    Some(inv) if invite_ok(inv, user.created_at) => inv.uses -= 1,
                    _ => return Err(StoreError::InviteInvalid),
                }
            }
            s.devices
                .insert(user.device.device_id, (user.user_id, user.device.clone()));
            s.users.insert(
                user.user_id,
                UserRecord {
                    user_id: user.user_id,
                    username: user.username,
                    display_name: user.display_name,
                    email: user.email,
                    password_file: user.password_file,
                    admin: false,
                    disabled: false,
                    created_at: user.created_at,
                },
            );
            Ok(())
        })
    }

    async fn user_by_name(&self, name: &Username) -> Result<Option<UserRecord>, StoreError> {
        self.with(|s| Ok(s.users.values().find(|u| &u.username == name).cloned()))
    }

    async fn add_device(&self, user: UserId, device: NewDevice) -> Result<(), StoreError> {
        self.with(|s| {
            if !s.users.contains_key(&user) {
                return Err(StoreError::UserNotFound);
            }
            s.devices.insert(device.device_id, (user, device));
            Ok(())
        })
    }

    async fn session(&self, token_digest: &[u8; 32]) -> Result<Option<Session>, StoreError> {
        self.with(|s| {
            let Some((user_id, device)) = s
                .devices
                .values()
                .find(|(_, d)| &d.token_digest == token_digest)
            else {
                return Ok(None);
            };
            Ok(s.users.get(user_id).map(|u| Session {
                device_id: device.device_id,
                user_id: u.user_id,
                username: u.username.clone(),
                display_name: u.display_name.clone(),
                email: u.email.clone(),
                admin: u.admin,
                disabled: u.disabled,
                created_at: u.created_at,
            }))
        })
    }

    async fn remove_device(&self, device: DeviceId) -> Result<(), StoreError> {
        self.with(|s| {
            s.devices.remove(&device);
            Ok(())
        })
    }

    async fn create_invite(&self, invite: NewInvite) -> Result<(), StoreError> {
        self.with(|s| {
            s.invites.insert(invite.digest, invite);
            Ok(())
        })
    }

    async fn invite_usable(&self, digest: &[u8; 32], now: i64) -> Result<bool, StoreError> {
        self.with(|s| Ok(s.invites.get(digest).is_some_and(|i| invite_ok(i, now))))
    }

    async fn list_users(&self) -> Result<Vec<UserSummary>, StoreError> {
        self.with(|s| {
            let mut out: Vec<UserSummary> = s
                .users
                .values()
                .map(|u| UserSummary {
                    user_id: u.user_id,
                    username: u.username.clone(),
                    display_name: u.display_name.clone(),
                    admin: u.admin,
                    disabled: u.disabled,
                    devices: s
                        .devices
                        .values()
                        .filter(|(id, _)| *id == u.user_id)
                        .count() as u32,
                    created_at: u.created_at,
                })
                .collect();
            out.sort_by(|a, b| a.username.cmp(&b.username));
            Ok(out)
        })
    }

    async fn set_disabled(&self, name: &Username, disabled: bool) -> Result<(), StoreError> {
        self.with(|s| {
            s.user_mut(name)?.disabled = disabled;
            Ok(())
        })
    }

    async fn set_admin(&self, name: &Username, admin: bool) -> Result<(), StoreError> {
        self.with(|s| {
            s.user_mut(name)?.admin = admin;
            Ok(())
        })
    }

    async fn delete_user(&self, name: &Username) -> Result<(), StoreError> {
        self.with(|s| {
            let id = s.user_id(name)?;
            s.users.remove(&id);
            s.devices.retain(|_, (owner, _)| *owner != id);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_store_passes_conformance() {
        crate::conformance::run(&super::MemoryStore::new()).await;
    }
}
