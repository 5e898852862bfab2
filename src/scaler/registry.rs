//! The registry of known triggers: each distinct trigger (its ScaledObject's namespace and its
//! metadata) is parsed and validated once, its regexes compiled once, and every later
//! GetMetrics, IsActive, GetMetricSpec or StreamIsActive call with the same metadata shares the
//! parsed [`TriggerSpec`]. KEDA sends the whole metadata on every call, so without this every
//! poll re-parsed its query.
//!
//! Bounded by `--max-triggers` without a scan: two generations of at most that many entries
//! each. Lookups find a trigger in the current generation, or in the previous one (and move it
//! to the current); when the current one is full it becomes the previous one and the oldest
//! generation is dropped. So a trigger polled at least once per generation stays; a client that
//! sends endless distinct metadata only churns the generations (at most twice the limit held),
//! and each of its calls costs one parse, as without the registry. Metadata that does not parse
//! is not kept: its error is computed again on each call (the query limits bound that cost).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use super::trigger::TriggerSpec;
use crate::query::{MetadataError, QueryLimits};
use crate::telemetry::Telemetry;

/// What identifies a trigger: the ScaledObject's namespace and its metadata, in key order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TriggerKey {
    namespace: Box<str>,
    metadata: Box<[(Box<str>, Box<str>)]>,
}

impl TriggerKey {
    pub fn new(namespace: &str, metadata: &HashMap<String, String>) -> TriggerKey {
        let mut pairs: Vec<(Box<str>, Box<str>)> =
            metadata.iter().map(|(key, value)| (key.as_str().into(), value.as_str().into())).collect();
        pairs.sort_unstable();
        TriggerKey { namespace: namespace.into(), metadata: pairs.into_boxed_slice() }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}

/// A known trigger, shared by every call that names it.
#[derive(Debug)]
pub struct KnownTrigger {
    pub spec: TriggerSpec,
    /// Calls that used it (the first, parsing, call included).
    uses: AtomicU64,
}

impl KnownTrigger {
    pub fn uses(&self) -> u64 {
        self.uses.load(Ordering::Relaxed)
    }
}

type Generation = HashMap<TriggerKey, Arc<KnownTrigger>, foldhash::fast::FixedState>;

#[derive(Debug, Default)]
struct Generations {
    current: Generation,
    previous: Generation,
}

/// See the module documentation.
#[derive(Debug)]
pub struct TriggerRegistry {
    generations: RwLock<Generations>,
    per_generation_max: usize,
    limits: QueryLimits,
    retention_ms: i64,
    /// Counts parses and the triggers held (`otelscale_trigger_parses_total`,
    /// `otelscale_triggers_known`).
    telemetry: Arc<Telemetry>,
}

impl TriggerRegistry {
    /// A registry holding up to `triggers_max` triggers in each of its two generations.
    pub fn new(
        triggers_max: usize,
        limits: QueryLimits,
        retention_ms: i64,
        telemetry: Arc<Telemetry>,
    ) -> TriggerRegistry {
        TriggerRegistry {
            generations: RwLock::default(),
            per_generation_max: triggers_max.max(1),
            limits,
            retention_ms,
            telemetry,
        }
    }

    /// The parsed trigger of `namespace` and `metadata`: the known one, or parsed now (and kept
    /// if it is valid).
    pub fn resolve(
        &self,
        namespace: &str,
        metadata: &HashMap<String, String>,
    ) -> Result<Arc<KnownTrigger>, MetadataError> {
        let key = TriggerKey::new(namespace, metadata);
        let in_previous = {
            let generations = self.generations.read();
            if let Some(known) = generations.current.get(&key) {
                known.uses.fetch_add(1, Ordering::Relaxed);
                return Ok(Arc::clone(known));
            }
            generations.previous.contains_key(&key)
        };
        // The write lock only to move a known trigger up, or (below) to add a new one.
        if let Some(known) = in_previous.then(|| self.promote(&key)).flatten() {
            known.uses.fetch_add(1, Ordering::Relaxed);
            return Ok(known);
        }
        // Parsed outside the lock: a costly query (regexes) does not hold up other callers.
        self.telemetry.trigger_parsed();
        let spec = TriggerSpec::from_metadata(metadata, &self.limits, self.retention_ms)?;
        let parsed = Arc::new(KnownTrigger { spec, uses: AtomicU64::new(1) });
        let mut generations = self.generations.write();
        // Another call may have parsed the same trigger meanwhile: share the first one.
        if let Some(known) = generations.current.get(&key) {
            return Ok(Arc::clone(known));
        }
        self.make_room(&mut generations);
        generations.current.insert(key, Arc::clone(&parsed));
        self.telemetry.set_triggers_known(generations.current.len() + generations.previous.len());
        Ok(parsed)
    }

    /// Moves `key` from the previous generation to the current one, if it is there.
    fn promote(&self, key: &TriggerKey) -> Option<Arc<KnownTrigger>> {
        let mut generations = self.generations.write();
        if let Some(known) = generations.current.get(key) {
            return Some(Arc::clone(known));
        }
        let (key, known) = generations.previous.remove_entry(key)?;
        self.make_room(&mut generations);
        generations.current.insert(key, Arc::clone(&known));
        self.telemetry.set_triggers_known(generations.current.len() + generations.previous.len());
        Some(known)
    }

    /// Starts a new generation when the current one is full.
    fn make_room(&self, generations: &mut Generations) {
        if generations.current.len() >= self.per_generation_max {
            generations.previous = std::mem::take(&mut generations.current);
        }
    }

    /// Triggers held (both generations).
    pub fn len(&self) -> usize {
        let generations = self.generations.read();
        generations.current.len() + generations.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(query: &str) -> HashMap<String, String> {
        [("metricQuery", query), ("targetValue", "10"), ("operationOverTime", "avg")]
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect()
    }

    fn registry(triggers_max: usize) -> TriggerRegistry {
        TriggerRegistry::new(triggers_max, QueryLimits::default(), 300_000, Arc::new(Telemetry::default()))
    }

    impl TriggerRegistry {
        fn parses(&self) -> u64 {
            self.telemetry.trigger_parses()
        }
    }

    #[test]
    fn the_same_trigger_is_parsed_once_and_shared() {
        let registry = registry(100);
        let first = registry.resolve("ns", &metadata("avg(m{model=~\"a.*\"})")).unwrap();
        // The same pairs in a map of another capacity (so another iteration order): the same trigger.
        let mut again = HashMap::with_capacity(64);
        let mut pairs: Vec<_> = metadata("avg(m{model=~\"a.*\"})").into_iter().collect();
        pairs.sort_unstable_by(|a, b| b.cmp(a));
        again.extend(pairs);
        let second = registry.resolve("ns", &again).unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!((registry.parses(), second.uses(), registry.len()), (1, 2, 1));
        // Another namespace or another value is another trigger.
        let other_namespace = registry.resolve("other", &metadata("avg(m{model=~\"a.*\"})")).unwrap();
        assert!(!Arc::ptr_eq(&first, &other_namespace));
        registry.resolve("ns", &metadata("avg(m{model=\"b\"})")).unwrap();
        assert_eq!((registry.parses(), registry.len()), (3, 3));
    }

    #[test]
    fn invalid_metadata_is_refused_every_time_and_not_kept() {
        let registry = registry(100);
        for _ in 0..3 {
            let err = registry.resolve("ns", &metadata("avg(m{")).unwrap_err();
            assert!(err.to_string().contains("metricQuery"), "{err}");
        }
        assert_eq!((registry.parses(), registry.len()), (3, 0));
    }

    #[test]
    fn held_triggers_are_bounded_and_a_polled_one_survives_a_flood_of_new_ones() {
        let registry = registry(10);
        let polled = metadata("avg(polled)");
        registry.resolve("ns", &polled).unwrap();
        for flood_idx in 0..1_000 {
            registry.resolve("ns", &metadata(&format!("avg(junk_{flood_idx})"))).unwrap();
            assert!(registry.len() <= 20, "{} held", registry.len());
            // Polled once per five new triggers: well within a generation of ten.
            if flood_idx % 5 == 0 {
                registry.resolve("ns", &polled).unwrap();
            }
        }
        assert_eq!(registry.parses(), 1 + 1_000, "the polled trigger was never parsed again");
    }
}
