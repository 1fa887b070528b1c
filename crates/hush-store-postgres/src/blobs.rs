//! The blob port (P560) on PostgreSQL: every node of a cluster reads the bytes any
//! node took. A blob is a row (`len`, `sealed`) and its pieces as appended; an append
//! locks the row, checks the offset, adds its piece and moves `len` in one
//! transaction, so a retried append is told where to resume, as on files.
use async_trait::async_trait;
use hush_proto::ids::FileId;
use hush_store::blob::{BlobError, BlobStatus, BlobStore, MAX_READ};
use sqlx::{PgPool, Row};

/// Blobs in the cluster's database (`PgStore::blobs`).
pub struct PgBlobs {
    pub(crate) pool: PgPool,
}

fn io(e: sqlx::Error) -> BlobError {
    BlobError::Io(std::io::Error::other(format!("postgres: {e}")))
}

fn len(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn big(v: u64) -> Result<i64, BlobError> {
    i64::try_from(v).map_err(|_| BlobError::Io(std::io::Error::other("blob offset out of range")))
}

#[async_trait]
impl BlobStore for PgBlobs {
    async fn status(&self, id: FileId) -> Result<Option<BlobStatus>, BlobError> {
        let row = sqlx::query("SELECT len, sealed FROM blobs WHERE file_id = $1")
            .bind(id.as_bytes().as_slice())
            .fetch_optional(&self.pool)
            .await
            .map_err(io)?;
        row.map(|r| {
            Ok(BlobStatus {
                len: len(r.try_get("len").map_err(io)?),
                sealed: r.try_get("sealed").map_err(io)?,
            })
        })
        .transpose()
    }

    async fn append(&self, id: FileId, offset: u64, data: &[u8]) -> Result<u64, BlobError> {
        let key = id.as_bytes().as_slice();
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await
            .map_err(io)?;
        if offset == 0 {
            sqlx::query("INSERT INTO blobs (file_id) VALUES ($1) ON CONFLICT DO NOTHING")
                .bind(key)
                .execute(&mut *tx)
                .await
                .map_err(io)?;
        }
        let row = sqlx::query("SELECT len, sealed FROM blobs WHERE file_id = $1 FOR UPDATE")
            .bind(key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(io)?
            .ok_or(BlobError::NotFound)?;
        let (have, sealed): (i64, bool) = (
            row.try_get("len").map_err(io)?,
            row.try_get("sealed").map_err(io)?,
        );
        if sealed {
            return Err(BlobError::State("sealed"));
        }
        if len(have) != offset {
            return Err(BlobError::Offset { have: len(have) });
        }
        let end = offset.saturating_add(data.len() as u64);
        if !data.is_empty() {
            sqlx::query(
                "INSERT INTO blob_pieces (file_id, start, stop, data) VALUES ($1, $2, $3, $4)",
            )
            .bind(key)
            .bind(big(offset)?)
            .bind(big(end)?)
            .bind(data)
            .execute(&mut *tx)
            .await
            .map_err(io)?;
            sqlx::query("UPDATE blobs SET len = $2 WHERE file_id = $1")
                .bind(key)
                .bind(big(end)?)
                .execute(&mut *tx)
                .await
                .map_err(io)?;
        }
        tx.commit().await.map_err(io)?;
        Ok(end)
    }

    async fn seal(&self, id: FileId) -> Result<(), BlobError> {
        let done = sqlx::query("UPDATE blobs SET sealed = TRUE WHERE file_id = $1")
            .bind(id.as_bytes().as_slice())
            .execute(&self.pool)
            .await
            .map_err(io)?;
        if done.rows_affected() == 0 {
            return Err(BlobError::NotFound);
        }
        Ok(())
    }

    async fn read(&self, id: FileId, offset: u64, want: u64) -> Result<Vec<u8>, BlobError> {
        let key = id.as_bytes().as_slice();
        let sealed: Option<bool> =
            sqlx::query_scalar("SELECT sealed FROM blobs WHERE file_id = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await
                .map_err(io)?;
        match sealed {
            None => return Err(BlobError::NotFound),
            Some(false) => return Err(BlobError::State("still uploading")),
            Some(true) => {}
        }
        let end = offset.saturating_add(want.min(MAX_READ));
        // A sealed blob never changes: the pieces may be read outside a transaction.
        let pieces = sqlx::query(
            "SELECT start, data FROM blob_pieces
             WHERE file_id = $1 AND stop > $2 AND start < $3 ORDER BY start",
        )
        .bind(key)
        .bind(big(offset)?)
        .bind(big(end)?)
        .fetch_all(&self.pool)
        .await
        .map_err(io)?;
        let mut out = Vec::with_capacity(usize::try_from(end - offset).unwrap_or(0));
        for piece in pieces {
            let start = len(piece.try_get("start").map_err(io)?);
            let data: Vec<u8> = piece.try_get("data").map_err(io)?;
            let from = usize::try_from(offset.saturating_sub(start)).unwrap_or(usize::MAX);
            let to = usize::try_from(end.saturating_sub(start)).unwrap_or(usize::MAX);
            if let Some(part) = data.get(from.min(data.len())..to.min(data.len())) {
                out.extend_from_slice(part);
            }
        }
        Ok(out)
    }

    async fn delete(&self, id: FileId) -> Result<(), BlobError> {
        sqlx::query("DELETE FROM blobs WHERE file_id = $1")
            .bind(id.as_bytes().as_slice())
            .execute(&self.pool)
            .await
            .map_err(io)?;
        Ok(())
    }

    async fn list(&self) -> Result<Vec<FileId>, BlobError> {
        let ids: Vec<Vec<u8>> = sqlx::query_scalar("SELECT file_id FROM blobs")
            .fetch_all(&self.pool)
            .await
            .map_err(io)?;
        Ok(ids
            .into_iter()
            .filter_map(|b| <[u8; 16]>::try_from(b.as_slice()).ok())
            .map(FileId::from_bytes)
            .collect())
    }
}
