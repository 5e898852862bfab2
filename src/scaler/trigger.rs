//! Trigger metadata → a validated query and scaling parameters.
//!
//! Keys (Kedify's OTel add-on keys keep their meaning): `metricQuery` (required),
//! `operationOverTime` (default `last_one`) and `windowSeconds` (default 60, at most the
//! retention), read by [`QuerySpec::from_metadata`]; here: `targetValue` (required, > 0),
//! `activationTargetValue` (default 0), `clampMin`, `clampMax`, `metricName` (optional override
//! of the reported metric name).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use crate::query::{MetadataError, QueryLimits, QuerySpec};

/// A KEDA trigger: the query plus how its value turns into scaling decisions.
#[derive(Debug, Clone)]
pub struct TriggerSpec {
    pub query: QuerySpec,
    pub target_value: f64,
    pub activation_target_value: f64,
    pub clamp_min: Option<f64>,
    pub clamp_max: Option<f64>,
    /// Kubernetes-safe metric name reported in GetMetricSpec.
    pub metric_name: String,
}

fn parse_number(key: &'static str, value: &str) -> Result<f64, MetadataError> {
    let invalid = |problem: &str| MetadataError::Invalid { key, value: value.to_owned(), problem: problem.to_owned() };
    let number: f64 = value.trim().parse().map_err(|_| invalid("not a number"))?;
    if !number.is_finite() {
        return Err(invalid("must be a finite number"));
    }
    Ok(number)
}

fn optional_number(metadata: &HashMap<String, String>, key: &'static str) -> Result<Option<f64>, MetadataError> {
    metadata.get(key).map(|value| parse_number(key, value)).transpose()
}

impl TriggerSpec {
    pub fn from_metadata(
        metadata: &HashMap<String, String>,
        limits: &QueryLimits,
        retention_ms: i64,
    ) -> Result<TriggerSpec, MetadataError> {
        let query = QuerySpec::from_metadata(metadata, limits, retention_ms)?;
        let target_text = metadata.get("targetValue").ok_or(MetadataError::Missing { key: "targetValue" })?;
        let target_value = parse_number("targetValue", target_text)?;
        if target_value <= 0.0 {
            return Err(MetadataError::Invalid {
                key: "targetValue",
                value: target_text.clone(),
                problem: "must be greater than 0".to_owned(),
            });
        }
        let activation_target_value = optional_number(metadata, "activationTargetValue")?.unwrap_or(0.0);
        let clamp_min = optional_number(metadata, "clampMin")?;
        let clamp_max = optional_number(metadata, "clampMax")?;
        if let (Some(min), Some(max)) = (clamp_min, clamp_max) {
            if min > max {
                return Err(MetadataError::Invalid {
                    key: "clampMax",
                    value: max.to_string(),
                    problem: format!("must not be below clampMin ({min})"),
                });
            }
        }
        let metric_name = match metadata.get("metricName").map(|name| name.trim()) {
            Some(name) if !name.is_empty() => kubernetes_safe(name),
            _ => generated_metric_name(&query),
        };
        Ok(TriggerSpec { query, target_value, activation_target_value, clamp_min, clamp_max, metric_name })
    }

    /// Applies `clampMin` and `clampMax`.
    pub fn clamp(&self, value: f64) -> f64 {
        let value = self.clamp_min.map_or(value, |min| value.max(min));
        self.clamp_max.map_or(value, |max| value.min(max))
    }
}

/// Lower-case letters, digits and `-`, at most 63 characters, starting and ending alphanumeric.
fn kubernetes_safe(name: &str) -> String {
    let mut safe: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    safe.truncate(63);
    let trimmed = safe.trim_matches('-');
    if trimmed.is_empty() {
        "otelscale".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// `otel-<metric>-<8 hex digits>`: the hash covers the query, the operation and the window,
/// so two triggers of one ScaledObject get distinct names unless they ask the same thing.
fn generated_metric_name(query: &QuerySpec) -> String {
    let mut hasher = foldhash::quality::FixedState::with_seed(0x6b65_6461).build_hasher();
    hasher.write(query.query_text.as_bytes());
    hasher.write(query.operation.name().as_bytes());
    hasher.write_i64(query.window_ms);
    let suffix = format!("{:08x}", hasher.finish() as u32);
    let mut stem = kubernetes_safe(&format!("otel-{}", query.query.metric_name));
    stem.truncate(63 - suffix.len() - 1);
    format!("{}-{suffix}", stem.trim_end_matches('-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::WindowOp;

    fn metadata(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<TriggerSpec, MetadataError> {
        TriggerSpec::from_metadata(&metadata(pairs), &QueryLimits::default(), 120_000)
    }

    #[test]
    fn kedify_trigger_parses_with_defaults() {
        let spec = parse(&[
            ("metricQuery", "avg(model_training_tokens{model=my_model, job=training})"),
            ("operationOverTime", "rate"),
            ("targetValue", "500"),
        ])
        .unwrap();
        assert_eq!(spec.query.operation.window_op(), WindowOp::Rate);
        assert_eq!(spec.target_value, 500.0);
        assert_eq!(spec.activation_target_value, 0.0);
        assert_eq!(spec.query.window_ms, 60_000);
        assert!(spec.metric_name.starts_with("otel-model-training-tokens-"), "{}", spec.metric_name);
        assert!(spec.metric_name.len() <= 63);
        let other = parse(&[("metricQuery", "avg(model_training_tokens{model=other})"), ("targetValue", "5")]).unwrap();
        assert_ne!(spec.metric_name, other.metric_name);
    }

    #[test]
    fn bad_metadata_names_the_key() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("targetValue", "1")], "`metricQuery` is required"),
            (&[("metricQuery", "m")], "`targetValue` is required"),
            (&[("metricQuery", "m"), ("targetValue", "0")], "`targetValue` = `0` is invalid: must be greater than 0"),
            (&[("metricQuery", "m"), ("targetValue", "ten")], "`targetValue` = `ten` is invalid: not a number"),
            (&[("metricQuery", "m{a:1}"), ("targetValue", "1")], "`metricQuery`"),
            (
                &[("metricQuery", "m"), ("targetValue", "1"), ("operationOverTime", "median")],
                "`operationOverTime` = `median`",
            ),
            (&[("metricQuery", "m"), ("targetValue", "1"), ("windowSeconds", "600")], "at most the retention"),
            (&[("metricQuery", "m"), ("targetValue", "1"), ("windowSeconds", "-1")], "greater than 0"),
            (&[("metricQuery", "m"), ("targetValue", "1"), ("clampMin", "5"), ("clampMax", "1")], "`clampMax`"),
            (&[("metricQuery", "m"), ("targetValue", "1"), ("activationTargetValue", "NaN")], "finite"),
        ];
        for (pairs, expected) in cases {
            let err = parse(pairs).unwrap_err().to_string();
            assert!(err.contains(expected), "{pairs:?}: `{err}` does not contain `{expected}`");
        }
    }

    #[test]
    fn clamping_and_name_override() {
        let spec = parse(&[
            ("metricQuery", "m"),
            ("targetValue", "1"),
            ("clampMin", "2"),
            ("clampMax", "10"),
            ("metricName", "My Metric.Name"),
        ])
        .unwrap();
        assert_eq!(spec.clamp(0.5), 2.0);
        assert_eq!(spec.clamp(50.0), 10.0);
        assert_eq!(spec.clamp(5.0), 5.0);
        assert_eq!(spec.metric_name, "my-metric-name");
    }
}
