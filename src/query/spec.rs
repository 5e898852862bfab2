//! What to evaluate, read from trigger metadata (KEDA's `scalerMetadata`, or the admin API's
//! query string): `metricQuery`, `operationOverTime` (default `last_one`) and `windowSeconds`
//! (default 60, at most the retention). Errors name the key.

use std::collections::HashMap;

use super::operation::OperationOverTime;
use super::parser::{parse_metric_query, MetricQuery, QueryLimits};

/// Window used when a trigger does not set `windowSeconds`.
pub const DEFAULT_WINDOW_SECONDS: i64 = 60;

/// Bad trigger metadata; answered with `INVALID_ARGUMENT` (or HTTP 400 on the admin API).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata key `{key}` is required")]
    Missing { key: &'static str },
    #[error("metadata key `{key}` = `{value}` is invalid: {problem}")]
    Invalid { key: &'static str, value: String, problem: String },
}

/// What to evaluate: the query, the operation over time and the window.
#[derive(Debug, Clone)]
pub struct QuerySpec {
    pub query_text: String,
    pub query: MetricQuery,
    pub operation: OperationOverTime,
    pub window_ms: i64,
}

impl QuerySpec {
    /// Reads `metricQuery`, `operationOverTime` and `windowSeconds`.
    pub fn from_metadata(
        metadata: &HashMap<String, String>,
        limits: &QueryLimits,
        retention_ms: i64,
    ) -> Result<QuerySpec, MetadataError> {
        let query_text = metadata.get("metricQuery").ok_or(MetadataError::Missing { key: "metricQuery" })?;
        let query = parse_metric_query(query_text, limits).map_err(|err| MetadataError::Invalid {
            key: "metricQuery",
            value: query_text.clone(),
            problem: err.to_string(),
        })?;
        let operation = match metadata.get("operationOverTime").map(|op| op.trim()) {
            None | Some("") => OperationOverTime::default(),
            Some(name) => OperationOverTime::from_name(name).ok_or_else(|| MetadataError::Invalid {
                key: "operationOverTime",
                value: name.to_owned(),
                problem: format!("unknown operation; use one of {}", OperationOverTime::names_listed()),
            })?,
        };
        let retention_s = retention_ms / 1000;
        let window_ms = match metadata.get("windowSeconds") {
            None => DEFAULT_WINDOW_SECONDS.min(retention_s) * 1000,
            Some(value) => {
                let invalid =
                    |problem: String| MetadataError::Invalid { key: "windowSeconds", value: value.clone(), problem };
                let seconds: i64 =
                    value.trim().parse().map_err(|_| invalid("not a whole number of seconds".to_owned()))?;
                if seconds <= 0 {
                    return Err(invalid("must be greater than 0".to_owned()));
                }
                if seconds > retention_s {
                    return Err(invalid(format!("must be at most the retention ({retention_s} s, --retention)")));
                }
                seconds * 1000
            }
        };
        Ok(QuerySpec { query_text: query_text.clone(), query, operation, window_ms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_pairs(pairs: &[(&str, &str)]) -> Result<QuerySpec, MetadataError> {
        let metadata = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        QuerySpec::from_metadata(&metadata, &QueryLimits::default(), 120_000)
    }

    #[test]
    fn an_unknown_operation_lists_the_valid_names() {
        let err = from_pairs(&[("metricQuery", "m"), ("operationOverTime", "median")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "metadata key `operationOverTime` = `median` is invalid: unknown operation; use one of last_one, rate, \
             count, avg, min, max"
        );
    }

    #[test]
    fn operation_and_window_defaults() {
        let spec = from_pairs(&[("metricQuery", "m"), ("operationOverTime", " ")]).unwrap();
        assert_eq!((spec.operation, spec.window_ms), (OperationOverTime::LAST_ONE, 60_000));
        let spec =
            from_pairs(&[("metricQuery", "m"), ("operationOverTime", " max "), ("windowSeconds", "90")]).unwrap();
        assert_eq!((spec.operation, spec.window_ms), (OperationOverTime::MAX, 90_000));
    }
}
