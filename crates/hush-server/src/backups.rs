//! Backups (P570–P573): each account's encrypted backup, as numbered chunks the server
//! cannot read, the head the account key signed over them, and the backup key wrapped
//! under secrets only the user has. The server keeps them in the store (one
//! transaction moves a chunk and its head together), enforces append order so two
//! devices cannot fork the chain unseen, and learns only sizes and times.
use bytes::Bytes;
use hush_crypto::account::AccountPublicKey;
use hush_proto::ErrorCode;
use hush_proto::pb::{self, server_frame::Body};

use crate::ServerState;
use crate::accounts::{Authenticated, Refusal};

/// Bytes of chunks one `BackupChunks` answer carries at most (plus one chunk).
const FETCH_BYTES: usize = 2 << 20;

/// P570: the account's backup, or an empty answer when there is none.
pub async fn status(st: &ServerState, auth: &Authenticated) -> Result<Body, Refusal> {
    let r = st.store.backup(auth.user_id).await?.unwrap_or_default();
    Ok(Body::BackupInfo(pb::BackupInfo {
        count: r.count,
        head: r.head.into(),
        bytes: r.bytes,
        updated_at_ms: r.updated_ms,
        wrapped_password: r.wrapped_password.unwrap_or_default().into(),
        wrapped_recovery: r.wrapped_recovery.unwrap_or_default().into(),
    }))
}

/// The account key the server published for this user (none for accounts made before
/// account keys).
async fn account_key(
    st: &ServerState,
    auth: &Authenticated,
) -> Result<Option<AccountPublicKey>, Refusal> {
    let user = st.store.user_by_name(&auth.username).await?;
    Ok(user
        .and_then(|u| u.account_key)
        .and_then(|k| AccountPublicKey::from_slice(&k).ok()))
}

fn refused(auth: &Authenticated, what: &str) -> Refusal {
    tracing::info!(user = %auth.username, what, "refused a backup change the account key did not sign");
    Refusal::new(
        ErrorCode::InvalidArgument,
        format!("the {what} is not signed by this account's key"),
    )
}

/// P571: keeps the wrapped backup keys, if the account key signed them.
pub async fn keys(
    st: &ServerState,
    auth: &Authenticated,
    wrapped_password: Option<Bytes>,
    wrapped_recovery: Option<Bytes>,
    signature: Option<Bytes>,
) -> Result<Body, Refusal> {
    crate::messaging::writable(st)?;
    if let Some(account) = account_key(st, auth).await? {
        let signed = signature.as_ref().is_some_and(|sig| {
            hush_crypto::backup::verify_keys(
                &account,
                wrapped_password.as_deref().unwrap_or_default(),
                wrapped_recovery.as_deref().unwrap_or_default(),
                sig,
            )
        });
        if !signed {
            return Err(refused(auth, "wrapped backup key"));
        }
    }
    let (password, recovery) = (wrapped_password.is_some(), wrapped_recovery.is_some());
    st.store
        .set_backup_keys(
            auth.user_id,
            wrapped_password.map(|b| b.to_vec()),
            wrapped_recovery.map(|b| b.to_vec()),
        )
        .await?;
    tracing::debug!(user = %auth.username, password, recovery, "backup keys kept");
    Ok(Body::BackupKeysSet(pb::BackupKeysSet {}))
}

/// P572: the next chunk and its head.
pub async fn append(
    st: &ServerState,
    auth: &Authenticated,
    index: u64,
    chunk: Bytes,
    head: Bytes,
) -> Result<Body, Refusal> {
    crate::messaging::writable(st)?;
    // The head must be the account key's, over the stored chain and this chunk: a
    // session token alone cannot store a head that breaks later appends and restores.
    if let Some(account) = account_key(st, auth).await? {
        let previous = st.store.backup(auth.user_id).await?.map(|b| b.head);
        if let Err(e) =
            hush_crypto::backup::verify_append(&account, previous.as_deref(), &chunk, &head)
        {
            tracing::info!(user = %auth.username, index, reason = %e, "refused a backup head");
            return Err(refused(auth, "backup head"));
        }
    }
    let size = chunk.len();
    let count = st
        .store
        .append_backup(hush_store::NewBackupChunk {
            user: auth.user_id,
            index,
            chunk: chunk.to_vec(),
            head: head.to_vec(),
            now_ms: st.clock.now_ms(),
            max_bytes: st.config.limits.account_backup_bytes,
        })
        .await
        .map_err(|e| {
            tracing::info!(user = %auth.username, index, reason = %e, "refused a backup chunk");
            Refusal::from(e)
        })?;
    tracing::debug!(user = %auth.username, index, size, "backup chunk stored");
    Ok(Body::BackupAppended(pb::BackupAppended { count }))
}

/// P573: chunks from `from` on.
pub async fn fetch(st: &ServerState, auth: &Authenticated, from: u64) -> Result<Body, Refusal> {
    let chunks = st
        .store
        .backup_chunks(auth.user_id, from, FETCH_BYTES)
        .await?;
    Ok(Body::BackupChunks(pb::BackupChunks {
        chunks: chunks
            .into_iter()
            .map(|(index, data)| pb::BackupChunk {
                index,
                data: data.into(),
            })
            .collect(),
    }))
}
