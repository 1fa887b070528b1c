//! Files (P560–P564): the server keeps sealed bytes it cannot read in the blob store
//! and, in the store, who may fetch them: the devices of the conversation when the
//! upload began. Quotas are checked before any byte is accepted; uploads append from
//! the last confirmed byte, so an interrupted one resumes; a file goes once every
//! recipient fetched it, when its uploader deletes it, or at `file_retention`.
use bytes::Bytes;
use hush_proto::ErrorCode;
use hush_proto::ids::{FileId, GroupId};
use hush_proto::pb::{self, server_frame::Body};
use hush_proto::request::MAX_FILE_PIECE;
use hush_store::FileRecord;
use hush_store::blob::BlobError;

use crate::ServerState;
use crate::accounts::{Authenticated, Refusal};
use crate::clock::random;

pub use hush_proto::human_bytes;

fn blob_failed(st: &ServerState, what: &str, id: FileId, e: BlobError) -> Refusal {
    if let BlobError::Io(io) = &e
        && io.kind() == std::io::ErrorKind::StorageFull
    {
        // P451: the disk is full; the reserve is given back so acks go on.
        tracing::error!(file = %id, what, "refused: the disk holding the files is full");
        st.reserve.on_full();
        return hush_store::StoreError::StorageFull.into();
    }
    tracing::error!(file = %id, what, error = %e, "blob store");
    Refusal::new(
        ErrorCode::Internal,
        "the server could not store or read that file; try again",
    )
}

fn not_found() -> Refusal {
    Refusal::new(
        ErrorCode::NotFound,
        "no such file (deleted, expired or never uploaded)",
    )
}

/// The record, if this device may see it: its uploader or a recipient. Others are
/// told it does not exist.
async fn visible(
    st: &ServerState,
    auth: &Authenticated,
    id: FileId,
) -> Result<FileRecord, Refusal> {
    let f = st.store.file(id).await?.ok_or_else(not_found)?;
    if f.uploader == auth.device_id || f.recipients.contains(&auth.device_id) {
        Ok(f)
    } else {
        tracing::info!(device = %auth.device_id, file = %id, "refused a file to a device that is not a recipient");
        Err(Refusal::new(
            ErrorCode::Forbidden,
            "this device was not a member of the conversation when the file was sent",
        ))
    }
}

/// P560: reserves a file for the members of `group`.
pub async fn create(
    st: &ServerState,
    auth: &Authenticated,
    group: GroupId,
    size: u64,
) -> Result<Body, Refusal> {
    crate::messaging::writable(st)?;
    let limits = &st.config.limits;
    let id = FileId::from_bytes(random::<16>(st.entropy.as_ref()));
    let f = st
        .store
        .create_file(hush_store::NewFile {
            file_id: id,
            group_id: group,
            uploader: auth.device_id,
            size,
            now_ms: st.clock.now_ms(),
            max_file_bytes: limits.max_file_bytes,
            user_file_bytes: limits.account_file_bytes,
        })
        .await
        .map_err(|e| {
            if matches!(e, hush_store::StoreError::QuotaExceeded { .. }) {
                tracing::info!(user = %auth.username, size, reason = %e, "refused a file: limit reached");
            }
            Refusal::from(e)
        })?;
    tracing::debug!(file = %id, device = %auth.device_id, size, recipients = f.recipients.len(), "file created");
    Ok(Body::FileCreated(pb::FileCreated {
        file_id: Bytes::copy_from_slice(id.as_bytes()),
        max_piece: MAX_FILE_PIECE as u32,
    }))
}

/// P561: the next piece of an upload.
pub async fn upload(
    st: &ServerState,
    auth: &Authenticated,
    id: FileId,
    offset: u64,
    data: Bytes,
) -> Result<Body, Refusal> {
    crate::messaging::writable(st)?;
    let f = st.store.file(id).await?.ok_or_else(not_found)?;
    if f.uploader != auth.device_id {
        return Err(Refusal::new(
            ErrorCode::Forbidden,
            "only the device that began an upload continues it",
        ));
    }
    if f.complete {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            "the file is complete already",
        ));
    }
    let end = offset.saturating_add(data.len() as u64);
    if end > f.size {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            format!(
                "the piece ends at byte {end}, past the file's {} bytes",
                f.size
            ),
        ));
    }
    let received = match st.blobs.append(id, offset, &data).await {
        Ok(n) => n,
        Err(BlobError::Offset { have }) => {
            return Err(Refusal::new(
                ErrorCode::InvalidArgument,
                format!("the server holds {have} bytes of this file; resume from there"),
            ));
        }
        // Nothing held yet and a piece past the start: the client's mistake, not ours.
        Err(BlobError::NotFound) => {
            tracing::info!(file = %id, offset, "refused an upload piece past an empty file's start");
            return Err(Refusal::new(
                ErrorCode::InvalidArgument,
                "the server holds 0 bytes of this file; resume from there",
            ));
        }
        Err(e) => return Err(blob_failed(st, "append", id, e)),
    };
    let complete = received == f.size;
    if complete {
        st.blobs
            .seal(id)
            .await
            .map_err(|e| blob_failed(st, "seal", id, e))?;
        st.store.complete_file(id).await?;
        tracing::debug!(file = %id, size = f.size, "file upload complete");
    }
    Ok(Body::FileUploaded(pb::FileUploaded { received, complete }))
}

/// P561: how far a file got.
pub async fn status(st: &ServerState, auth: &Authenticated, id: FileId) -> Result<Body, Refusal> {
    let f = visible(st, auth, id).await?;
    let received = match st.blobs.status(id).await {
        Ok(s) => s.map_or(0, |s| s.len),
        Err(e) => return Err(blob_failed(st, "status", id, e)),
    };
    Ok(Body::FileInfo(pb::FileInfo {
        size: f.size,
        received: received.min(f.size),
        complete: f.complete,
    }))
}

/// P562: sealed bytes of a complete file, for its recipients.
pub async fn download(
    st: &ServerState,
    auth: &Authenticated,
    id: FileId,
    offset: u64,
    len: u32,
) -> Result<Body, Refusal> {
    let f = visible(st, auth, id).await?;
    if !f.complete {
        return Err(Refusal::new(
            ErrorCode::NotFound,
            "the file is still being uploaded; try again later",
        ));
    }
    if offset >= f.size {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            format!("the file has {} bytes", f.size),
        ));
    }
    let data = st
        .blobs
        .read(id, offset, u64::from(len))
        .await
        .map_err(|e| blob_failed(st, "read", id, e))?;
    Ok(Body::FileData(pb::FileData {
        offset,
        data: data.into(),
    }))
}

/// P562: a recipient has the whole file; the last one ends it.
pub async fn fetched(st: &ServerState, auth: &Authenticated, id: FileId) -> Result<Body, Refusal> {
    visible(st, auth, id).await?;
    if st.store.file_fetched(id, auth.device_id).await? {
        st.blobs
            .delete(id)
            .await
            .map_err(|e| blob_failed(st, "delete", id, e))?;
        tracing::debug!(file = %id, "every recipient fetched the file; deleted");
    }
    Ok(Body::FileFetched(pb::FileFetchedOk {}))
}

/// P562: the uploader's user withdraws the file.
pub async fn delete(st: &ServerState, auth: &Authenticated, id: FileId) -> Result<Body, Refusal> {
    let f = st.store.file(id).await?.ok_or_else(not_found)?;
    if f.uploader_user != auth.user_id {
        return Err(Refusal::new(
            ErrorCode::Forbidden,
            "only its uploader deletes a file",
        ));
    }
    st.store.delete_file(id).await?;
    st.blobs
        .delete(id)
        .await
        .map_err(|e| blob_failed(st, "delete", id, e))?;
    tracing::debug!(file = %id, user = %auth.username, "file deleted by its uploader");
    Ok(Body::FileDeleted(pb::FileDeleted {}))
}

/// P564: deletes files past `file_retention` and blobs the store no longer knows
/// (left by a crash between forgetting a file and deleting its bytes). Returns how
/// many blobs went.
pub async fn expire(st: &ServerState) -> Result<usize, hush_store::StoreError> {
    let ms = i64::try_from(st.config.limits.file_retention.as_millis()).unwrap_or(i64::MAX);
    let before = st.clock.now_ms().saturating_sub(ms);
    let mut gone = st.store.expire_files(before).await?;
    match st.blobs.list().await {
        Ok(all) => {
            for id in all {
                if !gone.contains(&id) && st.store.file(id).await?.is_none() {
                    gone.push(id);
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not list blobs to sweep"),
    }
    for id in &gone {
        if let Err(e) = st.blobs.delete(*id).await {
            tracing::warn!(file = %id, error = %e, "could not delete an expired blob");
        }
    }
    Ok(gone.len())
}
