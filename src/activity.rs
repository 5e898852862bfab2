//! Change notification from ingest (and retention) to standing evaluations: StreamIsActive streams.
//!
//! A stream watches the series its query can match. The watch is keyed by the query's metric and,
//! when the query has one, by one of its equality matchers (`model_name="m-17"`): ingest, after a
//! batch is stored, raises only the watches whose key a stored sample carries, and retention raises
//! those of the series it removes. A watch without an equality matcher is raised by every change to
//! its metric. A raised watch wakes its stream once, however many samples raised it, until the
//! stream starts its next evaluation: never more than one evaluation is queued per stream.
//!
//! Waking is relayed: ingest and retention run on their own threads, and the streams on the
//! scaler's runtime. A raise only flags the watch and files it; the caller then wakes the hub's
//! relay task once ([`ActivityHub::relay`], spawned on the streams' runtime), which wakes the
//! streams it finds filed from their own thread. So a batch that raises 40 watches costs one
//! cross-thread wake, not 40 (each of which, from a low-priority ingest worker, was a context
//! switch to the scaler thread and back: see the fleet-scale report, third session).
//!
//! A watch may be raised by a series its query then filters out (other matchers): waking is a
//! superset of what changes the answer, never a subset. A series that appears after the stream
//! opened raises it like any other, because the watch is keyed by labels, not by series.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::query::MetricQuery;
use crate::store::{DecodedBatch, DecodedSample, LabelRef, SeriesRef};

#[derive(Debug, Default)]
pub struct ActivityHub {
    watches: RwLock<HashMap<String, MetricWatches>>,
    /// Raised watches not yet woken: the relay's work.
    raised: Mutex<Vec<Arc<WatchSignal>>>,
    /// Wakes the relay.
    relay: Notify,
}

/// The watches one notification raised, before they are handed to the relay.
type Raised = Vec<Arc<WatchSignal>>;

/// The watches of one metric.
#[derive(Debug, Default)]
struct MetricWatches {
    /// Watches without an equality matcher: raised by every change to the metric.
    any_series: Vec<Arc<WatchSignal>>,
    /// Watches keyed by one equality matcher: label name, then value.
    by_label: HashMap<String, HashMap<String, Vec<Arc<WatchSignal>>>>,
}

impl MetricWatches {
    fn is_empty(&self) -> bool {
        self.any_series.is_empty() && self.by_label.is_empty()
    }

    /// Raises the watches of a series of this metric with `labels` (in canonical order).
    fn raise_keyed<'k>(&self, labels: impl Iterator<Item = LabelRef<'k>> + Clone, raised: &mut Raised) {
        for (label_name, by_value) in &self.by_label {
            let value = labels.clone().find(|label| label.name == label_name.as_str()).map(|label| label.value);
            if let Some(signals) = value.and_then(|value| by_value.get(value)) {
                signals.iter().for_each(|signal| signal.raise(raised));
            }
        }
    }

    fn raise_any_series(&self, raised: &mut Raised) {
        self.any_series.iter().for_each(|signal| signal.raise(raised));
    }
}

/// Whether a stream has something to re-evaluate, and how it is woken.
#[derive(Debug, Default)]
struct WatchSignal {
    /// Raised and not yet taken by an evaluation: further raises need not wake again.
    pending: AtomicBool,
    notify: Notify,
}

impl WatchSignal {
    /// Flags the watch; the first raise since its evaluation started files it in `raised`, to be
    /// woken by the relay.
    fn raise(self: &Arc<Self>, raised: &mut Raised) {
        // A load first: a raised signal is raised by many samples, and a read keeps the cache
        // line shared.
        if !self.pending.load(Ordering::Acquire) && !self.pending.swap(true, Ordering::AcqRel) {
            raised.push(Arc::clone(self));
        }
    }
}

/// Where a watch is filed in the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WatchKey {
    metric_name: String,
    /// The equality matcher it is keyed by (name, value), if its query has one.
    label: Option<(String, String)>,
}

/// A standing watch on the series a query can match; unregistered when dropped.
#[derive(Debug)]
pub struct Watch {
    hub: Arc<ActivityHub>,
    key: WatchKey,
    signal: Arc<WatchSignal>,
}

impl Watch {
    /// Call before each evaluation: changes stored from here on wake the watch again (changes
    /// stored before are seen by the evaluation).
    pub fn start_evaluation(&self) {
        self.signal.pending.store(false, Ordering::Release);
    }

    /// Resolves once a change the watch covers was stored since [`Watch::start_evaluation`]
    /// (or, rarely, once more after one the last evaluation already saw).
    pub async fn changed(&self) {
        self.signal.notify.notified().await;
    }

    /// Whether a change is pending (for tests).
    #[cfg(test)]
    fn is_raised(&self) -> bool {
        self.signal.pending.load(Ordering::Acquire)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.hub.unregister(&self.key, &self.signal);
    }
}

impl ActivityHub {
    /// A watch that is raised by every stored change to a series `query` can match.
    pub fn watch(self: &Arc<Self>, query: &MetricQuery) -> Watch {
        // The first equality matcher, as the query's label-index walk may use (any one keeps the
        // wake a superset of the matches).
        let label = query.index_labels().next().map(|(name, value)| (name.to_owned(), value.to_owned()));
        let key = WatchKey { metric_name: query.metric_name.clone(), label };
        let signal = Arc::new(WatchSignal::default());
        let mut watches = self.watches.write();
        let metric = watches.entry(key.metric_name.clone()).or_default();
        match &key.label {
            None => metric.any_series.push(Arc::clone(&signal)),
            Some((name, value)) => metric
                .by_label
                .entry(name.clone())
                .or_default()
                .entry(value.clone())
                .or_default()
                .push(Arc::clone(&signal)),
        }
        Watch { hub: Arc::clone(self), key, signal }
    }

    fn unregister(&self, key: &WatchKey, signal: &Arc<WatchSignal>) {
        let mut watches = self.watches.write();
        let Some(metric) = watches.get_mut(&key.metric_name) else { return };
        let remove = |signals: &mut Vec<Arc<WatchSignal>>| {
            if let Some(position) = signals.iter().position(|held| Arc::ptr_eq(held, signal)) {
                signals.swap_remove(position);
            }
        };
        match &key.label {
            None => remove(&mut metric.any_series),
            Some((name, value)) => {
                if let Some(by_value) = metric.by_label.get_mut(name) {
                    if let Some(signals) = by_value.get_mut(value) {
                        remove(signals);
                        if signals.is_empty() {
                            by_value.remove(value);
                        }
                    }
                    if by_value.is_empty() {
                        metric.by_label.remove(name);
                    }
                }
            }
        }
        if metric.is_empty() {
            watches.remove(&key.metric_name);
        }
    }

    /// Wakes the streams of raised watches, from the runtime the streams run on, until `cancel`.
    /// The server spawns it there once; without it, raised watches are only flagged.
    pub async fn relay(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.relay.notified() => {}
            }
            let signals = std::mem::take(&mut *self.raised.lock());
            for signal in signals {
                signal.notify.notify_one();
            }
        }
    }

    /// Hands what one notification raised to the relay, with one wake.
    fn hand_to_relay(&self, raised: Raised) {
        if raised.is_empty() {
            return;
        }
        self.raised.lock().extend(raised);
        self.relay.notify_one();
    }

    /// Called by ingest after a batch is stored: raises the watches its samples' series carry.
    pub fn notify_batch(&self, batch: &DecodedBatch<'_>) {
        let raised = self.raise_for_batch(batch);
        self.hand_to_relay(raised);
    }

    fn raise_for_batch(&self, batch: &DecodedBatch<'_>) -> Raised {
        let mut raised = Raised::new();
        let watches = self.watches.read();
        if watches.is_empty() {
            return raised;
        }
        // Samples of one metric are contiguous in a batch: its watches are looked up once a run.
        let mut metric: Option<(u32, Option<&MetricWatches>)> = None;
        let mut previous: Option<&DecodedSample> = None;
        for sample in batch.samples() {
            let metric_watches = match metric {
                Some((metric_idx, metric_watches)) if metric_idx == sample.metric_idx => metric_watches,
                _ => {
                    let metric_watches = watches.get(batch.metric_name(sample));
                    metric_watches.inspect(|metric_watches| metric_watches.raise_any_series(&mut raised));
                    metric = Some((sample.metric_idx, metric_watches));
                    previous = None;
                    metric_watches
                }
            };
            let Some(metric_watches) = metric_watches.filter(|watches| !watches.by_label.is_empty()) else { continue };
            // Points of one label set (a series' points in one request) raise the same watches.
            if previous.is_some_and(|previous| sample.same_labels_as(previous)) {
                continue;
            }
            previous = Some(sample);
            metric_watches.raise_keyed(batch.labels(sample), &mut raised);
        }
        raised
    }

    /// Called when a series is removed (retention): raises the watches that cover it.
    pub fn notify_removed(&self, key: SeriesRef<'_>) {
        let mut raised = Raised::new();
        if let Some(metric_watches) = self.watches.read().get(key.metric_name()) {
            metric_watches.raise_any_series(&mut raised);
            metric_watches.raise_keyed(key.labels(), &mut raised);
        }
        self.hand_to_relay(raised);
    }

    /// Watches registered (for tests).
    #[cfg(test)]
    fn watch_count(&self) -> usize {
        self.watches
            .read()
            .values()
            .map(|metric| {
                metric.any_series.len() + metric.by_label.values().flat_map(|v| v.values()).map(Vec::len).sum::<usize>()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::{parse_metric_query, QueryLimits};
    use crate::store::{BatchSample, LabelPair, SampleBatch, SeriesKey, SeriesKind};

    fn query(text: &str) -> MetricQuery {
        parse_metric_query(text, &QueryLimits::default()).expect("valid query")
    }

    fn batch(points: &[(&str, &[(&str, &str)])]) -> SampleBatch {
        let mut batch = SampleBatch::default();
        for (ts, (metric, labels)) in points.iter().enumerate() {
            let key = SeriesKey::new(metric, labels.iter().map(|&(name, value)| LabelPair::new(name, value)).collect());
            batch.samples.push(BatchSample::new(key, SeriesKind::Gauge, ts as i64, 1.0));
        }
        batch
    }

    fn notify(hub: &ActivityHub, points: &[(&str, &[(&str, &str)])]) {
        let owned = batch(points);
        hub.notify_batch(&DecodedBatch::from_owned(&owned));
    }

    #[test]
    fn a_keyed_watch_is_raised_only_by_series_that_carry_its_label() {
        let hub = Arc::new(ActivityHub::default());
        let model_a = hub.watch(&query(r#"max(waiting{model_name="a"})"#));
        let model_b = hub.watch(&query(r#"max(waiting{model_name="b", pod=~"p.*"})"#));
        let other_metric = hub.watch(&query(r#"max(tokens{model_name="a"})"#));
        notify(&hub, &[("waiting", &[("model_name", "a"), ("pod", "p1")]), ("waiting", &[("pod", "p2")])]);
        assert!(model_a.is_raised());
        assert!(!model_b.is_raised(), "another model's series does not wake the stream");
        assert!(!other_metric.is_raised(), "the same label on another metric does not either");
        model_a.start_evaluation();
        notify(&hub, &[("waiting", &[("model_name", "b"), ("pod", "p9")])]);
        assert!(!model_a.is_raised());
        assert!(model_b.is_raised(), "a series first seen after the watch opened raises it");
    }

    #[test]
    fn a_watch_without_an_equality_matcher_is_raised_by_its_metric() {
        let hub = Arc::new(ActivityHub::default());
        let regex_only = hub.watch(&query(r#"max(waiting{model_name=~"m-.*"})"#));
        let empty_value = hub.watch(&query(r#"max(waiting{model_name=""})"#));
        notify(&hub, &[("tokens", &[("model_name", "m-1")])]);
        assert!(!regex_only.is_raised() && !empty_value.is_raised());
        notify(&hub, &[("waiting", &[("model_name", "x")])]);
        assert!(regex_only.is_raised() && empty_value.is_raised());
    }

    #[test]
    fn a_removed_series_raises_the_watches_that_cover_it() {
        let hub = Arc::new(ActivityHub::default());
        let model_a = hub.watch(&query(r#"max(waiting{model_name="a"})"#));
        let model_b = hub.watch(&query(r#"max(waiting{model_name="b"})"#));
        hub.notify_removed(
            SeriesKey::new("waiting", vec![LabelPair::new("model_name", "b"), LabelPair::new("pod", "p")]).as_ref(),
        );
        assert!(!model_a.is_raised());
        assert!(model_b.is_raised());
    }

    #[tokio::test]
    async fn a_burst_wakes_a_watch_once_per_evaluation() {
        let hub = Arc::new(ActivityHub::default());
        let stop_relay = CancellationToken::new();
        tokio::spawn(Arc::clone(&hub).relay(stop_relay.clone()));
        let watch = hub.watch(&query(r#"max(waiting{model_name="a"})"#));
        watch.start_evaluation();
        for _ in 0..100 {
            notify(&hub, &[("waiting", &[("model_name", "a"), ("pod", "p1")])]);
        }
        // One wake for the burst...
        tokio::time::timeout(std::time::Duration::from_secs(5), watch.changed()).await.expect("woken");
        watch.start_evaluation();
        // ...and none left queued behind it.
        let again = tokio::time::timeout(std::time::Duration::from_millis(50), watch.changed()).await;
        assert!(again.is_err(), "a burst queues at most one evaluation");
        // A change after the evaluation started wakes it again.
        notify(&hub, &[("waiting", &[("model_name", "a"), ("pod", "p2")])]);
        tokio::time::timeout(std::time::Duration::from_secs(5), watch.changed()).await.expect("woken again");
        stop_relay.cancel();
    }

    #[tokio::test]
    async fn one_batch_wakes_every_watch_it_raises_through_one_relay_wake() {
        let hub = Arc::new(ActivityHub::default());
        let watches: Vec<Watch> =
            (0..40).map(|model| hub.watch(&query(&format!(r#"max(waiting{{model_name="m{model}"}})"#)))).collect();
        let other = hub.watch(&query(r#"max(waiting{model_name="elsewhere"})"#));
        watches.iter().chain([&other]).for_each(Watch::start_evaluation);
        let models: Vec<String> = (0..40).map(|model| format!("m{model}")).collect();
        let points: Vec<[(&str, &str); 1]> = models.iter().map(|model| [("model_name", model.as_str())]).collect();
        let points: Vec<(&str, &[(&str, &str)])> = points.iter().map(|labels| ("waiting", &labels[..])).collect();
        notify(&hub, &points);
        // Flagged and filed for the relay, not woken yet: nothing runs the relay.
        assert!(watches.iter().all(Watch::is_raised) && !other.is_raised());
        assert_eq!(hub.raised.lock().len(), 40);
        let stop_relay = CancellationToken::new();
        let relay = tokio::spawn(Arc::clone(&hub).relay(stop_relay.clone()));
        for watch in &watches {
            tokio::time::timeout(std::time::Duration::from_secs(5), watch.changed()).await.expect("woken by the relay");
        }
        assert!(hub.raised.lock().is_empty());
        let woken = tokio::time::timeout(std::time::Duration::from_millis(50), other.changed()).await;
        assert!(woken.is_err(), "a watch the batch did not raise stays asleep");
        stop_relay.cancel();
        relay.await.unwrap();
    }

    #[test]
    fn dropped_watches_are_unregistered() {
        let hub = Arc::new(ActivityHub::default());
        let watches: Vec<Watch> = (0..4)
            .map(|model| hub.watch(&query(&format!(r#"max(waiting{{model_name="m{}"}})"#, model % 2))))
            .chain([hub.watch(&query("max(waiting)"))])
            .collect();
        assert_eq!(hub.watch_count(), 5);
        drop(watches);
        assert_eq!(hub.watch_count(), 0);
        assert!(hub.watches.read().is_empty(), "no empty entry is left behind");
    }
}
