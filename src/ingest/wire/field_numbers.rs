//! Field numbers of the OTLP messages the zero-copy decoder walks, one module per message, as
//! `opentelemetry/proto/{collector/metrics,metrics,common,resource}/v1/*.proto` define them.

pub mod export_metrics_service_request {
    pub const RESOURCE_METRICS: u32 = 1;
}

pub mod resource_metrics {
    pub const RESOURCE: u32 = 1;
    pub const SCOPE_METRICS: u32 = 2;
    pub const SCHEMA_URL: u32 = 3;
}

pub mod resource {
    pub const ATTRIBUTES: u32 = 1;
    pub const DROPPED_ATTRIBUTES_COUNT: u32 = 2;
    pub const ENTITY_REFS: u32 = 3;
}

pub mod scope_metrics {
    pub const SCOPE: u32 = 1;
    pub const METRICS: u32 = 2;
    pub const SCHEMA_URL: u32 = 3;
}

pub mod metric {
    pub const NAME: u32 = 1;
    pub const DESCRIPTION: u32 = 2;
    pub const UNIT: u32 = 3;
    pub const GAUGE: u32 = 5;
    pub const SUM: u32 = 7;
    pub const HISTOGRAM: u32 = 9;
    pub const EXPONENTIAL_HISTOGRAM: u32 = 10;
    pub const SUMMARY: u32 = 11;
    pub const METADATA: u32 = 12;
}

/// `Gauge`, `Sum`, `Histogram`, `ExponentialHistogram` and `Summary` share their first fields.
pub mod metric_data {
    pub const DATA_POINTS: u32 = 1;
    /// Not in `Gauge` or `Summary`.
    pub const AGGREGATION_TEMPORALITY: u32 = 2;
    /// `Sum` only.
    pub const IS_MONOTONIC: u32 = 3;
}

pub mod number_data_point {
    pub const START_TIME_UNIX_NANO: u32 = 2;
    pub const TIME_UNIX_NANO: u32 = 3;
    pub const AS_DOUBLE: u32 = 4;
    pub const EXEMPLARS: u32 = 5;
    pub const AS_INT: u32 = 6;
    pub const ATTRIBUTES: u32 = 7;
    pub const FLAGS: u32 = 8;
}

pub mod histogram_data_point {
    pub const START_TIME_UNIX_NANO: u32 = 2;
    pub const TIME_UNIX_NANO: u32 = 3;
    pub const COUNT: u32 = 4;
    pub const SUM: u32 = 5;
    pub const BUCKET_COUNTS: u32 = 6;
    pub const EXPLICIT_BOUNDS: u32 = 7;
    pub const EXEMPLARS: u32 = 8;
    pub const ATTRIBUTES: u32 = 9;
    pub const FLAGS: u32 = 10;
    pub const MIN: u32 = 11;
    pub const MAX: u32 = 12;
}

pub mod exponential_histogram_data_point {
    pub const ATTRIBUTES: u32 = 1;
    pub const START_TIME_UNIX_NANO: u32 = 2;
    pub const TIME_UNIX_NANO: u32 = 3;
    pub const COUNT: u32 = 4;
    pub const SUM: u32 = 5;
    pub const SCALE: u32 = 6;
    pub const ZERO_COUNT: u32 = 7;
    pub const POSITIVE: u32 = 8;
    pub const NEGATIVE: u32 = 9;
    pub const FLAGS: u32 = 10;
    pub const EXEMPLARS: u32 = 11;
    pub const MIN: u32 = 12;
    pub const MAX: u32 = 13;
    pub const ZERO_THRESHOLD: u32 = 14;
}

pub mod summary_data_point {
    pub const START_TIME_UNIX_NANO: u32 = 2;
    pub const TIME_UNIX_NANO: u32 = 3;
    pub const COUNT: u32 = 4;
    pub const SUM: u32 = 5;
    pub const QUANTILE_VALUES: u32 = 6;
    pub const ATTRIBUTES: u32 = 7;
    pub const FLAGS: u32 = 8;
}

pub mod value_at_quantile {
    pub const QUANTILE: u32 = 1;
    pub const VALUE: u32 = 2;
}

pub mod key_value {
    pub const KEY: u32 = 1;
    pub const VALUE: u32 = 2;
    /// Profiling signal only; read and ignored.
    pub const KEY_STRINDEX: u32 = 3;
}

pub mod any_value {
    pub const STRING_VALUE: u32 = 1;
    pub const BOOL_VALUE: u32 = 2;
    pub const INT_VALUE: u32 = 3;
    pub const DOUBLE_VALUE: u32 = 4;
    pub const ARRAY_VALUE: u32 = 5;
    pub const KVLIST_VALUE: u32 = 6;
    pub const BYTES_VALUE: u32 = 7;
    /// Profiling signal only; a value with no text here.
    pub const STRING_VALUE_STRINDEX: u32 = 8;
}
