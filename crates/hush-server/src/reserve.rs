//! Room kept free on the data dir's disk (P451): a file of `storage_reserve_bytes`
//! that is deleted the moment the disk fills, so acknowledgements (which free space but
//! need a little to do it) and reads go on. Until the file can be made again, requests
//! that would store something are refused with `STORAGE_FULL` without trying.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Least time between two checks for room while full.
const RECHECK_EVERY: Duration = Duration::from_secs(1);

pub struct Reserve {
    path: Option<PathBuf>,
    bytes: u64,
    full: AtomicBool,
    checked: Mutex<Option<Instant>>,
}

/// Bytes an unprivileged writer may still put on the disk holding `path`.
#[cfg(unix)]
fn disk_free(path: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path.parent()?).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

#[cfg(not(unix))]
fn disk_free(_: &Path) -> Option<u64> {
    None
}

impl Reserve {
    /// No reserve (the storage is not a local disk, or the operator turned it off).
    pub fn none() -> Self {
        Reserve {
            path: None,
            bytes: 0,
            full: AtomicBool::new(false),
            checked: Mutex::new(None),
        }
    }

    /// A reserve of `bytes` at `path` (0 bytes: none), made now if it can be.
    pub fn at(path: PathBuf, bytes: u64) -> Self {
        if bytes == 0 {
            return Self::none();
        }
        let r = Reserve {
            path: Some(path),
            bytes,
            full: AtomicBool::new(false),
            checked: Mutex::new(None),
        };
        if !r.make() {
            tracing::warn!("no room for the storage reserve: refusing writes until there is");
            r.full.store(true, Ordering::Relaxed);
        }
        r
    }

    /// Writes the reserve file if it is missing; whether it is there now.
    fn make(&self) -> bool {
        let Some(path) = &self.path else { return true };
        if std::fs::metadata(path).is_ok_and(|m| m.len() >= self.bytes) {
            return true;
        }
        let written = (|| -> std::io::Result<()> {
            let mut f = std::fs::File::create(path)?;
            let chunk = vec![0u8; 64 * 1024];
            let mut left = self.bytes;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                f.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            f.sync_all()
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(path);
        }
        written.is_ok()
    }

    /// Whether writes are refused for want of room.
    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::Relaxed)
    }

    /// The store just reported that it is full. If the disk is (not only the
    /// database's own size limit), the reserve goes back to the disk.
    pub fn on_full(&self) {
        let Some(path) = &self.path else { return };
        if disk_free(path).is_some_and(|free| free >= self.bytes) {
            // The database's size limit, not the disk: acks need no room there.
            return;
        }
        if self.full.swap(true, Ordering::Relaxed) {
            return;
        }
        let _ = std::fs::remove_file(path);
        tracing::error!(
            "the disk is full: released the reserve so reads and acks go on; new messages are refused until there is room"
        );
    }

    /// While full, at most once a second: whether there is room again (twice the
    /// reserve free), then the reserve is made anew and writes resume.
    pub fn recheck(&self) {
        if !self.is_full() {
            return;
        }
        let Some(path) = &self.path else { return };
        if let Ok(mut last) = self.checked.lock() {
            if last.is_some_and(|t| t.elapsed() < RECHECK_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let room = disk_free(path).is_none_or(|free| free >= self.bytes.saturating_mul(2));
        if room && self.make() {
            self.full.store(false, Ordering::Relaxed);
            tracing::info!("storage has room again: writes resume");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p451_a_database_limit_with_room_on_the_disk_keeps_the_reserve() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reserve");
        let r = Reserve::at(path.clone(), 100_000);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 100_000);
        assert!(!r.is_full());
        r.on_full();
        assert!(!r.is_full() && path.exists(), "the disk has room: not full");
    }

    #[test]
    fn p451_no_reserve_is_never_full() {
        let r = Reserve::none();
        r.on_full();
        r.recheck();
        assert!(!r.is_full());
    }
}
