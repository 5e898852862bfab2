//! The `metricQuery` language and what a trigger asks for: parsing ([`parser`]), the
//! `operationOverTime` names ([`operation`]), the query read from trigger metadata ([`spec`]),
//! evaluation against the store ([`eval`]) and the evaluator the scaler and admin API share
//! ([`engine`]).

pub mod engine;
pub mod eval;
pub mod operation;
pub mod parser;
pub mod spec;

pub use engine::{QueryEngine, QueryError};
pub use eval::{evaluate, evaluate_within, Evaluation, QueryBudget, QueryCostError};
pub use operation::OperationOverTime;
pub use parser::{parse_metric_query, Aggregation, LabelMatcher, MatchKind, MetricQuery, ParseError, QueryLimits};
pub use spec::{MetadataError, QuerySpec, DEFAULT_WINDOW_SECONDS};
