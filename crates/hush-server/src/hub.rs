//! Wake-ups: when a message lands in a device's mailbox, every connection of that
//! device is told to fetch. A `watch` channel per connected device never loses a
//! wake-up, even while its session is busy with a request. (Across nodes, PostgreSQL
//! LISTEN/NOTIFY will feed the same hub.)
use std::collections::HashMap;
use std::sync::Mutex;

use hush_proto::ids::DeviceId;
use tokio::sync::watch;

/// What a connected device's sessions are told.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Signal {
    /// Bumped when the mailbox gets entries.
    pub wakes: u64,
    /// Set when the device was revoked: its sessions end at once (P546).
    pub revoked: bool,
}

#[derive(Default)]
pub struct Hub {
    devices: Mutex<HashMap<DeviceId, watch::Sender<Signal>>>,
}

impl Hub {
    /// A receiver that changes whenever `device`'s mailbox gets new entries.
    pub fn subscribe(&self, device: DeviceId) -> Option<watch::Receiver<Signal>> {
        let mut map = self.devices.lock().ok()?;
        Some(
            map.entry(device)
                .or_insert_with(|| watch::channel(Signal::default()).0)
                .subscribe(),
        )
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
            && let Some(tx) = map.get(&device)
        {
            tx.send_modify(|s| s.revoked = true);
        }
    }

    /// Forgets `device` once no connection of it listens any more.
    pub fn release(&self, device: DeviceId) {
        if let Ok(mut map) = self.devices.lock()
            && map.get(&device).is_some_and(|tx| tx.receiver_count() == 0)
        {
            map.remove(&device);
        }
    }

    /// Wakes the connected ones among `devices`.
    pub fn wake(&self, devices: &[DeviceId]) {
        if let Ok(map) = self.devices.lock() {
            for d in devices {
                if let Some(tx) = map.get(d) {
                    tx.send_modify(|s| s.wakes = s.wakes.wrapping_add(1));
                }
            }
        }
    }

    /// Connected devices (for metrics and tests).
    pub fn connected(&self) -> usize {
        self.devices.lock().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
