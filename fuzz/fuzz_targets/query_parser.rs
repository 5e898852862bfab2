//! Fuzz target for the `metricQuery` parser: arbitrary bytes (made valid UTF-8, lossily) must
//! never panic it, and every query it accepts must render to a canonical form that parses back
//! to the same rendering.

#![no_main]

use libfuzzer_sys::fuzz_target;
use otelscale::query::{parse_metric_query, QueryLimits};

fuzz_target!(|data: &[u8]| {
    let query = String::from_utf8_lossy(data);
    let Ok(metric_query) = parse_metric_query(&query, &QueryLimits::default()) else {
        return;
    };
    // Escaping can make the rendering longer than the query, so re-parse without the length cap.
    let roomy_limits = QueryLimits { query_bytes_max: usize::MAX, ..QueryLimits::default() };
    let rendered = metric_query.to_string();
    match parse_metric_query(&rendered, &roomy_limits) {
        Ok(reparsed) => assert_eq!(reparsed.to_string(), rendered, "query {query:?}"),
        Err(parse_error) => {
            panic!("rendering {rendered:?} of {query:?} was rejected: {parse_error}")
        }
    }
});
