//! The threads that own the database connections: one writer that commits every write
//! that arrived while the previous commit's fsync ran in one transaction (group
//! commit), and a few readers on their own WAL connections. A caller's future is
//! answered only after the transaction holding its write has committed, so `Ok` still
//! means durable; each write runs in its own savepoint, so one that fails leaves the
//! others of its batch untouched. A bounded number of threads, whatever the number of
//! callers.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use hush_store::StoreError;
use rusqlite::Connection;
use tokio::sync::oneshot;

/// Most writes committed together.
const MAX_BATCH: usize = 256;

/// How long a batch waits for more writes when the last one was not alone.
const LINGER: std::time::Duration = std::time::Duration::from_micros(250);

/// What a finished write does once its batch committed (or failed to).
type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// A write: runs on the writer's connection (or, given none, does not run at all);
/// says whether it succeeded.
type WriteJob = Box<dyn FnOnce(Option<&mut Connection>) -> (bool, Completion) + Send>;

/// Whether a write must reach the disk before its caller is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Committed and fsynced (`synchronous = FULL`): sends, handshakes, accounts.
    Full,
    /// Committed, fsynced with the next durable batch or checkpoint: a crash may undo
    /// it, never half of it. For acks: an undone ack only means the entry is delivered
    /// again, and clients skip what they already processed (P441).
    Relaxed,
}
type ReadJob = Box<dyn FnOnce(&mut Connection) + Send>;

pub struct Pool {
    writer: mpsc::Sender<(Durability, WriteJob)>,
    readers: Vec<mpsc::Sender<ReadJob>>,
    next: AtomicUsize,
}

fn stopped() -> StoreError {
    StoreError::backend("the storage threads have stopped")
}

/// A failed BEGIN or COMMIT, for every write of the batch.
fn batch_failed(e: &rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) => StoreError::StorageFull,
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            StoreError::backend_from("sqlite commit", clone_error(e), true)
        }
        _ => StoreError::backend_from("sqlite commit", clone_error(e), false),
    }
}

fn clone_error(e: &rusqlite::Error) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl Pool {
    /// Starts the writer on `writer` and one reader per connection in `readers`.
    pub fn start(writer: Connection, readers: Vec<Connection>) -> Result<Pool, StoreError> {
        let (wtx, wrx) = mpsc::channel::<(Durability, WriteJob)>();
        std::thread::Builder::new()
            .name("hush-sqlite-writer".into())
            .spawn(move || write_loop(writer, wrx))
            .map_err(|e| StoreError::backend_from("starting the writer", e, false))?;
        let mut senders = Vec::with_capacity(readers.len());
        for (i, conn) in readers.into_iter().enumerate() {
            let (rtx, rrx) = mpsc::channel::<ReadJob>();
            std::thread::Builder::new()
                .name(format!("hush-sqlite-reader-{i}"))
                .spawn(move || read_loop(conn, rrx))
                .map_err(|e| StoreError::backend_from("starting a reader", e, false))?;
            senders.push(rtx);
        }
        Ok(Pool {
            writer: wtx,
            readers: senders,
            next: AtomicUsize::new(0),
        })
    }

    /// Runs `f` as one durable write, answered after its batch commits.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_with(Durability::Full, f).await
    }

    /// Runs `f` as one write of the given durability, answered after its batch commits.
    pub async fn write_with<T, F>(&self, durability: Durability, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_then(durability, move |conn| f(conn).map(|t| (t, ())), |()| {})
            .await
    }

    /// As [`Pool::write_with`] for a write whose `f` also returns a report; `after`
    /// gets it on the writer's thread once the batch committed, before any later
    /// write's `after` (so in commit order), and only if the write took effect.
    pub async fn write_then<T, R, F, A>(
        &self,
        durability: Durability,
        f: F,
        after: A,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<(T, R), StoreError> + Send + 'static,
        A: FnOnce(R) + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: WriteJob = Box::new(move |conn| {
            let Some(conn) = conn else {
                let done: Completion = Box::new(move |e| {
                    let _ = tx.send(e.and(Err(stopped())));
                });
                return (false, done);
            };
            let result = f(conn);
            let ok = result.is_ok();
            let done: Completion = Box::new(move |committed| {
                let out = committed.and(result).map(|(t, report)| {
                    after(report);
                    t
                });
                let _ = tx.send(out);
            });
            (ok, done)
        });
        self.writer.send((durability, job)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Runs `f` on a reader's connection, in one read transaction (one snapshot).
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let Some(reader) = self
            .readers
            .get(self.next.fetch_add(1, Ordering::Relaxed) % self.readers.len().max(1))
        else {
            return self.write(f).await;
        };
        let (tx, rx) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            let result = match exec_cached(conn, "BEGIN") {
                Ok(()) => {
                    let r = f(conn);
                    let _ = exec_cached(conn, "COMMIT");
                    r
                }
                Err(e) => Err(StoreError::backend_from("sqlite read", e, true)),
            };
            let _ = tx.send(result);
        });
        reader.send(job).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

/// Runs one statement that returns no rows, prepared once per connection.
fn exec_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn write_loop(mut conn: Connection, jobs: mpsc::Receiver<(Durability, WriteJob)>) {
    // The connection opens with `synchronous = FULL`.
    let mut synced = Durability::Full;
    let mut last_batch = 0usize;
    while let Ok((first_durability, first)) = jobs.recv() {
        let mut durability = first_durability;
        let mut batch = vec![first];
        // Under load (the last batch held several writes), wait a moment for more:
        // a commit's cost is mostly per transaction, not per write. Alone, a write
        // commits at once.
        let linger = (last_batch > 1).then(|| std::time::Instant::now() + LINGER);
        while batch.len() < MAX_BATCH {
            let next = match linger {
                Some(until) => {
                    let left = until.saturating_duration_since(std::time::Instant::now());
                    jobs.recv_timeout(left).ok()
                }
                None => jobs.try_recv().ok(),
            };
            match next {
                Some((d, j)) => {
                    if d == Durability::Full {
                        durability = Durability::Full;
                    }
                    batch.push(j);
                }
                None => break,
            }
        }
        last_batch = batch.len();
        // One durable write makes its whole batch durable (and every relaxed batch
        // before it: the WAL is synced in order).
        if durability != synced {
            let pragma = match durability {
                Durability::Full => "PRAGMA synchronous = FULL",
                Durability::Relaxed => "PRAGMA synchronous = NORMAL",
            };
            match exec_cached(&conn, pragma) {
                Ok(()) => synced = durability,
                Err(e) => tracing::warn!(error = %e, "could not change synchronous mode"),
            }
        }
        if let Err(e) = exec_cached(&conn, "BEGIN IMMEDIATE") {
            tracing::warn!(error = %e, writes = batch.len(), "could not begin a write batch");
            for job in batch {
                // Not run: nothing of it took effect.
                let (_, done) = job(None);
                done(Err(batch_failed(&e)));
            }
            continue;
        }
        let mut done = Vec::with_capacity(batch.len());
        for job in batch {
            if let Err(e) = exec_cached(&conn, "SAVEPOINT write") {
                tracing::warn!(error = %e, "could not open a savepoint");
                let (_, d) = job(None);
                done.push((d, Some(batch_failed(&e))));
                continue;
            }
            let (ok, d) = job(Some(&mut conn));
            let end = if ok {
                exec_cached(&conn, "RELEASE write")
            } else {
                exec_cached(&conn, "ROLLBACK TO write")
                    .and_then(|()| exec_cached(&conn, "RELEASE write"))
            };
            done.push((d, end.err().map(|e| batch_failed(&e))));
        }
        let committed = exec_cached(&conn, "COMMIT");
        if committed.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for (d, own_error) in done {
            let outcome = match (&committed, own_error) {
                (Err(e), _) => Err(batch_failed(e)),
                (Ok(()), Some(e)) => Err(e),
                (Ok(()), None) => Ok(()),
            };
            d(outcome);
        }
    }
}

fn read_loop(mut conn: Connection, jobs: mpsc::Receiver<ReadJob>) {
    while let Ok(job) = jobs.recv() {
        job(&mut conn);
    }
}
