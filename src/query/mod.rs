//! The `metricQuery` language: parsing ([`parser`]) and evaluation against the store ([`eval`]).

pub mod eval;
pub mod parser;

pub use eval::{evaluate, Evaluation};
pub use parser::{parse_metric_query, Aggregation, LabelMatcher, MatchKind, MetricQuery, ParseError, QueryLimits};
