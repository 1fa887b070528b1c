//! Wake-ups and hand-over of committed entries to connected devices.
//!
//! The store reports every committed write that queued entries, in commit order
//! ([`hush_store::CommitListener`]); the hub turns each report into:
//! - a bump of the device's `watch` channel, which never loses a wake-up even while
//!   a session is busy: sessions that fetch are told `MailboxChanged` (P442);
//! - for connections that follow their mailbox (P443), the entries themselves,
//!   appended in commit order to each such connection's [`Follower`] queue, so they
//!   are pushed without being read back from the store. A report without the
//!   entries, or a queue over its bound, marks the follower to read the store
//!   instead; since reports come in commit order, nothing handed over is ever ahead
//!   of an entry that was not.
//!
//! Across the nodes of a cluster, PostgreSQL LISTEN/NOTIFY feeds the same hub
//! (`hush_store_postgres::wakeups`): devices only, so followers read the store, and
//! revocations, which end the sessions at once.
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use hush_proto::ids::DeviceId;
use hush_proto::response::Entry;
use tokio::sync::{Notify, watch};

/// What a connected device's sessions are told.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Signal {
    /// Bumped when the mailbox gets entries.
    pub wakes: u64,
    /// Set when the device was revoked: its sessions end at once (P546).
    pub revoked: bool,
}

/// Most entries, and payload bytes, a follower's queue holds before it is told to
/// read the store instead.
const QUEUE_ENTRIES: usize = 1_024;
const QUEUE_BYTES: usize = 4 << 20;

/// Entries handed over to one following connection, not yet taken by it.
#[derive(Default)]
struct Queue {
    entries: VecDeque<Entry>,
    bytes: usize,
    /// Something was not handed over (or did not fit): read the store.
    read: bool,
}

/// One following connection's share of the hub (P443).
#[derive(Default)]
pub struct Follower {
    queue: Mutex<Queue>,
    notify: Notify,
}

/// What a follower found since it last looked.
pub struct Taken {
    /// Committed entries, in commit order.
    pub entries: VecDeque<Entry>,
    /// Some entries were not handed over: they are in the store only.
    pub read: bool,
}

impl Follower {
    /// Resolves once something was handed over or marked since the last `take`.
    pub async fn notified(&self) {
        self.notify.notified().await
    }

    pub fn take(&self) -> Taken {
        match self.queue.lock() {
            Ok(mut q) => {
                let q = std::mem::take(&mut *q);
                Taken {
                    entries: q.entries,
                    read: q.read,
                }
            }
            Err(_) => Taken {
                entries: VecDeque::new(),
                read: true,
            },
        }
    }

    fn hand_over(&self, entry: &Entry) {
        if let Ok(mut q) = self.queue.lock()
            && !q.read
        {
            if q.entries.len() >= QUEUE_ENTRIES || q.bytes + entry.payload.len() > QUEUE_BYTES {
                *q = Queue {
                    read: true,
                    ..Queue::default()
                };
            } else {
                q.bytes += entry.payload.len();
                q.entries.push_back(entry.clone());
            }
        }
    }

    fn mark_read(&self) {
        if let Ok(mut q) = self.queue.lock() {
            *q = Queue {
                read: true,
                ..Queue::default()
            };
        }
    }
}

struct Slot {
    signal: watch::Sender<Signal>,
    followers: Vec<Arc<Follower>>,
}

impl Slot {
    fn new() -> Self {
        Slot {
            signal: watch::channel(Signal::default()).0,
            followers: Vec::new(),
        }
    }
}

#[derive(Default)]
pub struct Hub {
    devices: Mutex<HashMap<DeviceId, Slot>>,
}

impl Hub {
    /// A receiver that changes whenever `device`'s mailbox gets new entries.
    pub fn subscribe(&self, device: DeviceId) -> Option<watch::Receiver<Signal>> {
        let mut map = self.devices.lock().ok()?;
        Some(
            map.entry(device)
                .or_insert_with(Slot::new)
                .signal
                .subscribe(),
        )
    }

    /// Starts handing `device`'s committed entries to one more connection. Call
    /// before reading the mailbox: what commits after this call is handed over.
    pub fn follow(&self, device: DeviceId) -> Arc<Follower> {
        let follower = Arc::new(Follower::default());
        if let Ok(mut map) = self.devices.lock() {
            map.entry(device)
                .or_insert_with(Slot::new)
                .followers
                .push(Arc::clone(&follower));
        }
        follower
    }

    /// Stops handing entries to `follower` (and forgets `device` if nothing of it
    /// listens any more).
    pub fn unfollow(&self, device: DeviceId, follower: &Arc<Follower>) {
        if let Ok(mut map) = self.devices.lock()
            && let Some(slot) = map.get_mut(&device)
        {
            slot.followers.retain(|f| !Arc::ptr_eq(f, follower));
            if slot.followers.is_empty() && slot.signal.receiver_count() == 0 {
                map.remove(&device);
            }
        }
    }

    /// Every device with an open session.
    pub fn connected_devices(&self) -> Vec<DeviceId> {
        self.devices
            .lock()
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Ends every open session of `device` (P546).
    pub fn revoke(&self, device: DeviceId) {
        if let Ok(map) = self.devices.lock()
            && let Some(slot) = map.get(&device)
        {
            slot.signal.send_modify(|s| s.revoked = true);
        }
    }

    /// Forgets `device` once no connection of it listens any more.
    pub fn release(&self, device: DeviceId) {
        if let Ok(mut map) = self.devices.lock()
            && map
                .get(&device)
                .is_some_and(|slot| slot.signal.receiver_count() == 0 && slot.followers.is_empty())
        {
            map.remove(&device);
        }
    }

    /// Wakes the connected ones among `devices`; their followers read the store.
    pub fn wake(&self, devices: &[DeviceId]) {
        hush_store::CommitListener::committed(self, &[], devices);
    }

    /// Connected devices (for metrics and tests).
    pub fn connected(&self) -> usize {
        self.devices.lock().map(|m| m.len()).unwrap_or(0)
    }
}

impl hush_store::CommitListener for Hub {
    fn revoked(&self, devices: &[DeviceId]) {
        for d in devices {
            self.revoke(*d);
        }
    }

    fn resync(&self) {
        self.wake(&self.connected_devices());
    }

    fn committed(&self, entries: &[(DeviceId, Entry)], woken: &[DeviceId]) {
        let Ok(map) = self.devices.lock() else {
            return;
        };
        let mut touched: Vec<&Slot> = Vec::new();
        for (device, entry) in entries {
            if let Some(slot) = map.get(device) {
                for f in &slot.followers {
                    f.hand_over(entry);
                }
                if !touched.iter().any(|s| std::ptr::eq(*s, slot)) {
                    touched.push(slot);
                }
            }
        }
        for device in woken {
            if let Some(slot) = map.get(device) {
                for f in &slot.followers {
                    f.mark_read();
                }
                if !touched.iter().any(|s| std::ptr::eq(*s, slot)) {
                    touched.push(slot);
                }
            }
        }
        for slot in touched {
            slot.signal
                .send_modify(|s| s.wakes = s.wakes.wrapping_add(1));
            for f in &slot.followers {
                f.notify.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hush_proto::ids::GroupId;
    use hush_proto::response::EntryKind;
    use hush_store::CommitListener;

    fn entry(id: u64) -> Entry {
        Entry {
            id,
            group_id: GroupId::from_bytes([1; 16]),
            kind: EntryKind::Application,
            payload: vec![id as u8; 10].into(),
            sender_device: DeviceId::from_bytes([3; 16]),
            group_seq: id,
            stored_at_ms: 0,
        }
    }

    #[tokio::test]
    async fn wakes_are_not_lost_while_busy() {
        let hub = Hub::default();
        let d = DeviceId::from_bytes([1; 16]);
        let mut rx = hub.subscribe(d).unwrap();
        hub.wake(&[d, DeviceId::from_bytes([2; 16])]);
        hub.wake(&[d]);
        // The session was busy; the change is still there when it looks.
        rx.changed().await.unwrap();
        assert!(!rx.has_changed().unwrap(), "two wakes fold into one fetch");
        drop(rx);
        hub.release(d);
        assert_eq!(hub.connected(), 0);
    }

    #[tokio::test]
    async fn followers_get_entries_in_order_or_are_told_to_read() {
        let hub = Hub::default();
        let d = DeviceId::from_bytes([1; 16]);
        let other = DeviceId::from_bytes([2; 16]);
        let f = hub.follow(d);
        hub.committed(&[(d, entry(1)), (other, entry(2))], &[]);
        hub.committed(&[(d, entry(3))], &[]);
        f.notified().await;
        let t = f.take();
        assert!(!t.read);
        assert_eq!(
            t.entries.iter().map(|e| e.id).collect::<Vec<_>>(),
            [1, 3],
            "its own entries, in commit order"
        );
        // A report without the entries: read the store, whatever was queued.
        hub.committed(&[(d, entry(4))], &[]);
        hub.committed(&[], &[d]);
        hub.committed(&[(d, entry(6))], &[]);
        let t = f.take();
        assert!(t.read, "an entry was not handed over");
        assert!(t.entries.is_empty(), "what was queued is in the store too");
        // Too much waiting: read the store.
        for id in 10..10 + QUEUE_ENTRIES as u64 + 1 {
            hub.committed(&[(d, entry(id))], &[]);
        }
        assert!(f.take().read, "an overflowing queue reads the store");
        hub.unfollow(d, &f);
        hub.committed(&[(d, entry(99))], &[]);
        assert!(f.take().entries.is_empty(), "no more after unfollow");
        hub.release(d);
        assert_eq!(hub.connected(), 0);
    }
}
