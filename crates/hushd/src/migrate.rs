//! `hushd migrate --from sqlite:PATH --to postgres://...`: a single-node server's
//! database copied whole into an empty PostgreSQL database, in one transaction, with
//! the data dir's TLS identity, so every client carries on against the cluster.
use std::io::IsTerminal;

use anyhow::{Context, bail};
use hush_server::TlsIdentity;
use hush_server::identity::SHARED_SECRET;
use hush_store::blob::{BlobStore, FsBlobs, MAX_READ};
use hush_store::dump::Value;
use hush_store_postgres::import::TABLES;
use hush_store_postgres::{PgStore, PoolConfig};
use hush_store_sqlite::export::Export;

use crate::config::{Database, DatabaseUrl, parse_database_url};

/// Rows read and written at a time.
const PAGE: u64 = 200;

pub async fn run(from: &DatabaseUrl, to: &DatabaseUrl) -> anyhow::Result<()> {
    let Database::Sqlite(source) = parse_database_url(from)? else {
        bail!("--from must be the single-node database, sqlite:PATH");
    };
    let Database::Postgres(target) = parse_database_url(to)? else {
        bail!("--to must be the cluster's database, postgres://...");
    };
    let export = Export::open(&source)
        .with_context(|| format!("opening {} (stop its server first)", source.display()))?;
    let store = PgStore::connect(target.expose(), PoolConfig::default())
        .await
        .with_context(|| format!("connecting to {target}"))?;
    let mut import = store.import().await?;
    let progress = std::io::stderr().is_terminal();
    let mut counts = Vec::new();
    for table in TABLES {
        let columns = import.columns(table).await?;
        if columns.is_empty() {
            bail!("{target} has no table {table}: not a hush database");
        }
        let names: Vec<String> = columns.iter().map(|(c, _)| c.clone()).collect();
        let total = export.count(table)?;
        let mut done = 0;
        while done < total {
            let rows = export.page(table, &names, done, PAGE)?;
            if rows.is_empty() {
                break;
            }
            done += import.insert(table, &columns, rows).await?;
            if progress {
                eprint!("\r{table}: {done}/{total}");
            }
        }
        if progress && total > 0 {
            eprintln!();
        }
        counts.push((*table, done));
    }
    // The single node's own identity becomes the cluster's: pinned fingerprints hold.
    let data_dir = source.parent().unwrap_or(std::path::Path::new("."));
    let identity = match TlsIdentity::bundle_in(data_dir)? {
        Some(pem) => {
            let names = import.columns("server_secrets").await?;
            let row = names
                .iter()
                .map(|(c, _)| match c.as_str() {
                    "name" => Value::Text(SHARED_SECRET.to_owned()),
                    _ => Value::Bytes(pem.clone()),
                })
                .collect();
            import.insert("server_secrets", &names, vec![row]).await?;
            Some(TlsIdentity::from_pem(&pem)?.fingerprint())
        }
        None => None,
    };
    let usage = vec!["device_id".to_owned(), "missed".to_owned()];
    let mut offset = 0;
    loop {
        let rows = export.page("mailbox_usage", &usage, offset, PAGE)?;
        if rows.is_empty() {
            break;
        }
        offset += rows.len() as u64;
        for row in rows {
            if let [Value::Bytes(device), Value::Int(missed)] = row.as_slice()
                && *missed > 0
            {
                import.set_missed(device, *missed).await?;
            }
        }
    }
    // File bytes before the rows commit: a failed run leaves only blobs no row
    // names (swept by the server, overwritten by the next run).
    let blobs_dir = data_dir.join("blobs");
    let files = if blobs_dir.is_dir() {
        let from = FsBlobs::open(&blobs_dir)
            .with_context(|| format!("opening the file store {}", blobs_dir.display()))?;
        copy_blobs(&from, &store.blobs(), progress).await?
    } else {
        Copied::default()
    };
    import.commit(&export.last_ids()?).await?;
    println!("migrated {} into {target}", source.display());
    for (table, n) in counts {
        println!("{table} {n}");
    }
    println!("file bytes {} ({} files)", files.bytes, files.sealed);
    if files.unfinished > 0 {
        println!(
            "{} unfinished uploads not copied: their senders upload them again",
            files.unfinished
        );
    }
    match identity {
        Some(fp) => println!("fingerprint {fp} (the cluster presents the old server's identity)"),
        None => println!(
            "no TLS identity in {}: the first node makes a new one, and clients will see a changed fingerprint",
            data_dir.display()
        ),
    }
    Ok(())
}

/// What [`copy_blobs`] moved.
#[derive(Default)]
struct Copied {
    sealed: u64,
    bytes: u64,
    unfinished: u64,
}

/// Every sealed blob of `from` copied whole into `to` (replacing one of the same id
/// a failed run left); uploads still under way are counted, not copied.
async fn copy_blobs(
    from: &dyn BlobStore,
    to: &dyn BlobStore,
    progress: bool,
) -> anyhow::Result<Copied> {
    let mut copied = Copied::default();
    let ids = from.list().await?;
    for (n, id) in ids.iter().enumerate() {
        match from.status(*id).await? {
            Some(status) if status.sealed => {
                to.delete(*id).await?;
                let mut at = 0;
                while at < status.len {
                    let piece = from.read(*id, at, MAX_READ).await?;
                    if piece.is_empty() {
                        bail!("file {id} ended at {at} of {} bytes", status.len);
                    }
                    at = to.append(*id, at, &piece).await?;
                }
                if status.len == 0 {
                    to.append(*id, 0, &[]).await?;
                }
                to.seal(*id).await?;
                copied.sealed += 1;
                copied.bytes += status.len;
            }
            Some(_) => copied.unfinished += 1,
            None => {}
        }
        if progress {
            eprint!("\rfiles: {}/{}", n + 1, ids.len());
        }
    }
    if progress && !ids.is_empty() {
        eprintln!();
    }
    Ok(copied)
}
