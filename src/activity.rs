//! Change notification from ingest to StreamIsActive streams.
//!
//! A stream subscribes to the metric its query reads; ingest, after a batch is stored, bumps a
//! per-metric generation for every metric the batch touched. Streams wake on the change and
//! re-evaluate: push, not polling. One read lock and one map lookup per touched metric per batch.

use std::collections::HashMap;

use parking_lot::RwLock;
use tokio::sync::watch;

#[derive(Debug, Default)]
pub struct ActivityHub {
    watched_metrics: RwLock<HashMap<String, watch::Sender<u64>>>,
}

impl ActivityHub {
    /// A receiver that changes after every stored batch that touches `metric_name`.
    pub fn subscribe(&self, metric_name: &str) -> watch::Receiver<u64> {
        let mut watched = self.watched_metrics.write();
        // Forget metrics nobody watches any more.
        watched.retain(|_, sender| sender.receiver_count() > 0);
        watched.entry(metric_name.to_owned()).or_insert_with(|| watch::channel(0).0).subscribe()
    }

    /// Called by ingest after a batch is stored.
    pub fn notify(&self, metric_names: &[&str]) {
        let watched = self.watched_metrics.read();
        if watched.is_empty() {
            return;
        }
        for metric_name in metric_names {
            if let Some(sender) = watched.get(*metric_name) {
                sender.send_modify(|generation| *generation = generation.wrapping_add(1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_wake_only_for_their_metric() {
        let hub = ActivityHub::default();
        let mut tokens = hub.subscribe("tokens");
        let memory = hub.subscribe("memory");
        hub.notify(&["tokens"]);
        assert!(tokens.has_changed().unwrap());
        assert!(!memory.has_changed().unwrap());
        tokens.mark_unchanged();
        hub.notify(&["memory", "other"]);
        assert!(memory.has_changed().unwrap());
        assert!(!tokens.has_changed().unwrap());
        drop(memory);
        let _again = hub.subscribe("tokens");
        assert_eq!(hub.watched_metrics.read().len(), 1);
    }
}
