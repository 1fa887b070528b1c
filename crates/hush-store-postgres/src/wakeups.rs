//! The wake-up bus of a cluster, on PostgreSQL's LISTEN/NOTIFY.
//!
//! A write that queued entries, or ended sessions, sends `NOTIFY "hush_wake.SCHEMA"` inside its
//! own transaction ([`Bus::publish`]): PostgreSQL delivers it to every listening node
//! when, and only if, the transaction commits. Each node's LISTEN task hands what it
//! hears to the node's [`CommitListener`] (its hub), which wakes the devices connected
//! there and ignores the others. A node's own writes are reported to its listener
//! directly after the commit ([`Bus::report`]), and its own notifications skipped.
//!
//! Reports carry devices only, never entries: with many writers a node cannot hand
//! entries over in commit order, so followers read them from the store (P443).
//!
//! A payload is `NODE|KIND|HEX,HEX,...` (`w`: mailboxes got entries; `r`: sessions
//! end), at most [`MAX_DEVICES`] devices, well under PostgreSQL's 8,000 bytes; more
//! devices take more notifications. When the LISTEN connection drops, notifications
//! may have been lost: the listener is told to [`CommitListener::resync`] once the
//! connection is back.
use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use hush_proto::ids::DeviceId;
use hush_store::{CommitListener, StoreError};
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};

use crate::{Outbox, pg};

/// The channel every node of one cluster listens on: this prefix and the schema, so
/// clusters in other schemas of the same database do not hear each other.
pub const CHANNEL: &str = "hush_wake";

/// The channel of the cluster whose tables are in `schema` (at most 63 bytes, the
/// longest name PostgreSQL takes).
pub fn channel(schema: &str) -> String {
    let mut name = format!("{CHANNEL}.{schema}");
    while name.len() > 63 {
        name.pop();
    }
    name
}

/// Devices per notification: 33 characters each, so a payload stays near 6,700 bytes.
pub const MAX_DEVICES: usize = 200;

/// One process on the bus (a node, or `hushd user ...` run beside them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeId(u64);

impl NodeId {
    fn random() -> Self {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        NodeId(h.finish())
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// What a notification says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// These devices' mailboxes got entries.
    Woken(Vec<DeviceId>),
    /// These devices' sessions must end.
    Revoked(Vec<DeviceId>),
}

/// The payloads announcing `event` from `node`.
pub fn encode(node: NodeId, event: &Event) -> Vec<String> {
    let (kind, devices) = match event {
        Event::Woken(d) => ('w', d),
        Event::Revoked(d) => ('r', d),
    };
    devices
        .chunks(MAX_DEVICES)
        .map(|chunk| {
            let mut s = format!("{node}|{kind}|");
            for (i, d) in chunk.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                for b in d.as_bytes() {
                    let _ = write!(s, "{b:02x}");
                }
            }
            s
        })
        .collect()
}

/// Reads a payload: who sent it and what it says; `None` for anything malformed
/// (another program on the channel), which is ignored.
pub fn decode(payload: &str) -> Option<(NodeId, Event)> {
    let mut parts = payload.splitn(3, '|');
    let node = u64::from_str_radix(parts.next()?, 16).ok()?;
    let kind = parts.next()?;
    let list = parts.next()?;
    let mut devices = Vec::new();
    for hex in list.split(',').filter(|h| !h.is_empty()) {
        if hex.len() != 32 || !hex.is_ascii() {
            return None;
        }
        let mut id = [0u8; 16];
        for (i, b) in id.iter_mut().enumerate() {
            *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        devices.push(DeviceId::from_bytes(id));
    }
    let event = match kind {
        "w" => Event::Woken(devices),
        "r" => Event::Revoked(devices),
        _ => return None,
    };
    Some((NodeId(node), event))
}

/// This node's end of the bus.
pub struct Bus {
    node: NodeId,
    channel: String,
    listener: RwLock<Option<Arc<dyn CommitListener>>>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Bus {
    fn drop(&mut self) {
        if let Ok(mut t) = self.task.lock()
            && let Some(t) = t.take()
        {
            t.abort();
        }
    }
}

impl Bus {
    /// Starts listening (a connection of its own, outside the pool's count).
    pub(crate) async fn start(pool: PgPool) -> Result<Arc<Self>, StoreError> {
        let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
            .fetch_one(&pool)
            .await
            .map_err(pg)?;
        let channel = channel(&schema);
        let mut listen = PgListener::connect_with(&pool).await.map_err(pg)?;
        listen.listen(&channel).await.map_err(pg)?;
        let bus = Arc::new(Bus {
            node: NodeId::random(),
            channel,
            listener: RwLock::new(None),
            task: std::sync::Mutex::new(None),
        });
        let task = tokio::spawn(run(Arc::downgrade(&bus), listen));
        if let Ok(mut t) = bus.task.lock() {
            *t = Some(task);
        }
        Ok(bus)
    }

    pub fn node(&self) -> NodeId {
        self.node
    }

    pub(crate) fn set_listener(&self, listener: Arc<dyn CommitListener>) {
        if let Ok(mut l) = self.listener.write() {
            *l = Some(listener);
        }
    }

    fn listener(&self) -> Option<Arc<dyn CommitListener>> {
        self.listener.read().ok().and_then(|l| l.clone())
    }

    /// Queues the notifications of `outbox` on the transaction `tx`: sent when it
    /// commits, dropped if it does not.
    pub(crate) async fn publish(
        &self,
        tx: &mut PgConnection,
        outbox: &Outbox,
    ) -> Result<(), StoreError> {
        for event in [
            Event::Woken(outbox.woken.clone()),
            Event::Revoked(outbox.revoked.clone()),
        ] {
            for payload in encode(self.node, &event) {
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(&self.channel)
                    .bind(payload)
                    .execute(&mut *tx)
                    .await
                    .map_err(pg)?;
            }
        }
        Ok(())
    }

    /// Tells this node's listener what a committed write of its own did.
    pub(crate) fn report(&self, outbox: &Outbox) {
        let Some(l) = self.listener() else { return };
        if !outbox.woken.is_empty() {
            l.committed(&[], &outbox.woken);
        }
        if !outbox.revoked.is_empty() {
            l.revoked(&outbox.revoked);
        }
    }

    fn heard(&self, payload: &str) {
        let Some((node, event)) = decode(payload) else {
            tracing::debug!(channel = %self.channel, "ignoring a malformed notification");
            return;
        };
        if node == self.node {
            return;
        }
        let Some(l) = self.listener() else { return };
        match event {
            Event::Woken(d) => l.committed(&[], &d),
            Event::Revoked(d) => l.revoked(&d),
        }
    }
}

/// The LISTEN loop: hands notifications to the bus until the store is dropped.
async fn run(bus: Weak<Bus>, mut listen: PgListener) {
    let mut lost = false;
    loop {
        let got = listen.try_recv().await;
        let Some(bus) = bus.upgrade() else { return };
        match got {
            Ok(Some(n)) => {
                if lost {
                    // Back after a drop: whatever was said meanwhile is lost.
                    lost = false;
                    tracing::info!("wake-up bus reconnected; re-checking connected devices");
                    if let Some(l) = bus.listener() {
                        l.resync();
                    }
                }
                bus.heard(n.payload());
            }
            Ok(None) => {
                tracing::warn!("wake-up bus connection lost; reconnecting");
                lost = true;
                // try_recv reconnects on its next call; it says so by returning.
                if let Some(l) = bus.listener() {
                    l.resync();
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "wake-up bus: cannot listen; retrying in 1 s");
                lost = true;
                drop(bus);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> DeviceId {
        DeviceId::from_bytes([n; 16])
    }

    #[test]
    fn payloads_round_trip_and_stay_under_the_limit() {
        let node = NodeId(0xdead_beef);
        let many: Vec<DeviceId> = (0..=250u8).map(d).collect();
        let payloads = encode(node, &Event::Woken(many.clone()));
        assert_eq!(payloads.len(), 2, "251 devices take two notifications");
        let mut back = Vec::new();
        for p in &payloads {
            assert!(p.len() < 8000, "{} bytes", p.len());
            let (from, event) = decode(p).unwrap();
            assert_eq!(from, node);
            let Event::Woken(ds) = event else {
                panic!("kind changed")
            };
            back.extend(ds);
        }
        assert_eq!(back, many);
        let (_, e) = decode(&encode(node, &Event::Revoked(vec![d(7)]))[0]).unwrap();
        assert_eq!(e, Event::Revoked(vec![d(7)]));
    }

    #[test]
    fn each_schema_has_its_channel_within_the_name_limit() {
        assert_eq!(channel("public"), "hush_wake.public");
        assert_ne!(channel("a"), channel("b"));
        assert_eq!(channel(&"x".repeat(100)).len(), 63);
    }

    #[test]
    fn nothing_to_say_sends_nothing() {
        assert!(encode(NodeId(1), &Event::Woken(Vec::new())).is_empty());
    }

    #[test]
    fn malformed_payloads_are_ignored() {
        for p in [
            "",
            "zz|w|",
            "1|x|",
            "1|w|abc",
            "1|w|0101010101010101010101010101010g",
            "1|w|ééééééééééééééééé",
        ] {
            assert_eq!(decode(p), None, "{p:?}");
        }
    }
}
