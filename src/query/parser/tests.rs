//! Parser tables: accepted queries with their parts, rejected queries with the problem and its
//! byte position, limits, matcher semantics, canonical rendering, and property tests that
//! arbitrary input never panics and rendered queries parse back.

use super::*;
use proptest::prelude::*;

fn parse_with_default_limits(query: &str) -> Result<MetricQuery, ParseError> {
    parse_metric_query(query, &QueryLimits::default())
}

fn rendered_matchers(metric_query: &MetricQuery) -> Vec<String> {
    metric_query.matchers.iter().map(ToString::to_string).collect()
}

/// (query, aggregation, normalized metric name, matchers rendered canonically)
#[rustfmt::skip]
const ACCEPTED_QUERIES: &[(&str, Aggregation, &str, &[&str])] = &[
    // Kedify otel-add-on's own examples.
    ("avg(metric_foo_bar{a=1, b=2})", Aggregation::Avg, "metric_foo_bar", &[r#"a="1""#, r#"b="2""#]),
    ("avg(metric_foo_bar{a=\"1\", b=\"2\"})", Aggregation::Avg, "metric_foo_bar", &[r#"a="1""#, r#"b="2""#]),
    ("metric_foo{a=1, b=2, c=5}", Aggregation::Sum, "metric_foo", &[r#"a="1""#, r#"b="2""#, r#"c="5""#]),
    ("count(metric_foo{ahoj=cau})", Aggregation::Count, "metric_foo", &[r#"ahoj="cau""#]),
    ("min(metric_foo{ahoj=cau})", Aggregation::Min, "metric_foo", &[r#"ahoj="cau""#]),
    ("max(metric_foo)", Aggregation::Max, "metric_foo", &[]),
    ("hello", Aggregation::Sum, "hello", &[]),
    ("  min( m { a = b } )  ", Aggregation::Min, "m", &[r#"a="b""#]),
    ("sum(gpu.temperature{k8s.namespace.name=ml})", Aggregation::Sum, "gpu_temperature", &[r#"k8s.namespace.name="ml""#]),
    ("vllm:num_requests_waiting{model_name=~\"llama.*\"}", Aggregation::Sum, "vllm:num_requests_waiting", &[r#"model_name=~"llama.*""#]),
    ("m{a='single', b=\"double\"}", Aggregation::Sum, "m", &[r#"a="single""#, r#"b="double""#]),
    ("m{a=}", Aggregation::Sum, "m", &[r#"a="""#]),
    ("m{a= , b=2}", Aggregation::Sum, "m", &[r#"a="""#, r#"b="2""#]),
    ("m{\"a\"=1, 'b'=2}", Aggregation::Sum, "m", &[r#"a="1""#, r#"b="2""#]),
    // Aggregation words are metric names unless `(` follows.
    ("count", Aggregation::Sum, "count", &[]),
    ("sum_total", Aggregation::Sum, "sum_total", &[]),
    ("count{a=1}", Aggregation::Sum, "count", &[r#"a="1""#]),
    ("avg(count)", Aggregation::Avg, "count", &[]),
    ("max (m)", Aggregation::Max, "m", &[]),
    ("\tavg\n(\nm\n{\na\n=\n1\n}\n)\n", Aggregation::Avg, "m", &[r#"a="1""#]),
    // Names, normalization and bare values.
    ("http.server/duration", Aggregation::Sum, "http_server_duration", &[]),
    ("m-1:x", Aggregation::Sum, "m-1:x", &[]),
    ("m{url=/path/to-x:8080*, v=1.5e-3}", Aggregation::Sum, "m", &[r#"url="/path/to-x:8080*""#, r#"v="1.5e-3""#]),
    ("m{a=héllo}", Aggregation::Sum, "m", &[r#"a="héllo""#]),
    ("m{a:b=1}", Aggregation::Sum, "m", &[r#"a:b="1""#]),
    ("m{\"with space\"=1}", Aggregation::Sum, "m", &[r#""with space"="1""#]),
    // Matcher lists.
    ("m{}", Aggregation::Sum, "m", &[]),
    ("sum(m{ })", Aggregation::Sum, "m", &[]),
    ("m{a=1,}", Aggregation::Sum, "m", &[r#"a="1""#]),
    ("m{a=1 , b=2 ,}", Aggregation::Sum, "m", &[r#"a="1""#, r#"b="2""#]),
    ("m{a=1, a!=2}", Aggregation::Sum, "m", &[r#"a="1""#, r#"a!="2""#]),
    // Operators and quoting.
    ("m{a!=x, b=~\"re\", c!~'r.*'}", Aggregation::Sum, "m", &[r#"a!="x""#, r#"b=~"re""#, r#"c!~"r.*""#]),
    ("m{a !=x, b =~ re}", Aggregation::Sum, "m", &[r#"a!="x""#, r#"b=~"re""#]),
    ("m{a=\"\"}", Aggregation::Sum, "m", &[r#"a="""#]),
    ("m{a=\"x, y} )\"}", Aggregation::Sum, "m", &[r#"a="x, y} )""#]),
    ("m{a=\"q\\\"q\\'q\\\\q\"}", Aggregation::Sum, "m", &[r#"a="q\"q'q\\q""#]),
    ("m{a='it\\'s \"fine\"'}", Aggregation::Sum, "m", &[r#"a="it's \"fine\"""#]),
    ("m{a=\"tab\\there\\nnewline\"}", Aggregation::Sum, "m", &[r#"a="tab\there\nnewline""#]),
    ("m{re=~\"\\d+\\.\\d\"}", Aggregation::Sum, "m", &[r#"re=~"\\d+\\.\\d""#]),
    ("m{re=~\"\\\\d+\"}", Aggregation::Sum, "m", &[r#"re=~"\\d+""#]),
];

/// (query, substring the error message must contain)
#[rustfmt::skip]
const REJECTED_QUERIES: &[(&str, &str)] = &[
    // Kedify otel-add-on's own examples.
    ("avg(metric_foo_bar{a=1, b=2=2})", "unexpected `=` in value of label `b`"),
    ("avg(metric_foo_bar{a=1, b=2)", "unclosed `{`: expected `}`, found `)`"),
    ("metric_foo_bara=1, b=2})", "unexpected trailing input `=1, b=2})`"),
    ("avg(metric_foo_bar{a:1})", "expected `=`, `!=`, `=~` or `!~` after label name `a:1`, found `}`"),
    // Empty and incomplete queries.
    ("", "empty query"),
    (" \t\n ", "empty query"),
    ("avg()", "expected a metric name after `avg(`, found `)`"),
    ("avg(", "expected a metric name after `avg(`, found the end of the query"),
    ("avg(m", "missing closing `)` for `avg(`"),
    ("avg(m{a=1}", "missing closing `)` for `avg(`"),
    ("avg(m x)", "missing closing `)` for `avg(`, found `x)`"),
    ("m{a=1", "unclosed `{`: expected `}`"),
    ("m{", "unclosed `{`: expected `}`"),
    ("m{a=\"unterminated}", "unterminated quoted string: expected a closing `\"`"),
    ("m{a='x\\'}", "unterminated quoted string: expected a closing `'`"),
    ("m{a=\"x\\", "unterminated quoted string"),
    // Trailing input.
    ("m} ", "unexpected trailing input `}`"),
    ("m{a=1} extra", "unexpected trailing input `extra`"),
    ("avg(m))", "unexpected trailing input `)`"),
    ("m)", "unexpected trailing input `)`"),
    ("avg(m) m", "unexpected trailing input `m`"),
    // Names and aggregations.
    ("{a=1}", "expected a metric name or an aggregation"),
    ("rate(m)", "unknown aggregation `rate`"),
    ("Sum(m)", "unknown aggregation `Sum`"),
    ("m{a}", "after label name `a`, found `}`"),
    ("m{a!b}", "after label name `a`, found `!`"),
    ("m{,}", "expected a label name, found `,`"),
    ("m{a=1,,b=2}", "expected a label name, found `,`"),
    ("m{\"\"=1}", "empty label name"),
    // Values.
    ("m{a=1 b=2}", "expected `,` or `}` after the matcher for label `a`, found `b`"),
    ("m{a=\"x\"y}", "expected `,` or `}` after the matcher for label `a`, found `y`"),
    ("m{a==b}", "unexpected `=` in value of label `a`"),
    ("m{a=b(c)}", "unexpected `(` in value of label `a`"),
    ("m{a=x\"}", "unexpected `\"` in value of label `a`"),
    ("m{a=x{}", "unexpected `{` in value of label `a`"),
    ("m{a=b~c}", "unexpected `~` in value of label `a`"),
    // Regexes.
    ("m{a=~\"(\"}", "invalid regex `(` for label `a`: unclosed group"),
    ("m{a!~\"[z-a]\"}", "invalid regex `[z-a]` for label `a`"),
    ("m{a=~\"a)|(b\"}", "invalid regex `a)|(b` for label `a`"),
    ("m{a=~\"\\\"}", "unterminated quoted string"),
    ("m{a=~\"((a{100}){100}){100}\"}", "larger than the limit"),
];

#[test]
fn accepted_queries_parse_to_expected_parts() {
    for &(query, expected_aggregation, expected_metric_name, expected_matchers) in ACCEPTED_QUERIES {
        let metric_query = parse_with_default_limits(query)
            .unwrap_or_else(|parse_error| panic!("query {query:?} was rejected: {parse_error}"));
        assert_eq!(metric_query.aggregation, expected_aggregation, "aggregation of {query:?}");
        assert_eq!(metric_query.metric_name, expected_metric_name, "metric name of {query:?}");
        assert_eq!(rendered_matchers(&metric_query), expected_matchers, "matchers of {query:?}");
    }
}

#[test]
fn rejected_queries_name_the_problem() {
    for &(query, expected_message_part) in REJECTED_QUERIES {
        match parse_with_default_limits(query) {
            Ok(metric_query) => panic!("query {query:?} was accepted as {metric_query}"),
            Err(parse_error) => {
                assert!(
                    parse_error.message.contains(expected_message_part),
                    "error for {query:?} is {:?}, expected it to contain {expected_message_part:?}",
                    parse_error.message
                );
                assert!(parse_error.position <= query.len(), "position of error for {query:?} is past the end");
            }
        }
    }
}

#[test]
fn errors_point_at_the_offending_byte() {
    let cases: &[(&str, usize)] = &[
        ("avg(metric_foo_bar{a=1, b=2=2})", 27),
        ("avg(metric_foo_bar{a:1})", 22),
        ("m{a=1} extra", 7),
        ("avg(m", 5),
        ("m{a=\"unterminated}", 4),
        ("m{a=~\"(\"}", 5),
        ("rate(m)", 0),
    ];
    for &(query, expected_position) in cases {
        let parse_error = parse_with_default_limits(query).err();
        assert_eq!(parse_error.map(|parse_error| parse_error.position), Some(expected_position), "{query:?}");
    }
}

#[test]
fn error_display_names_position_and_problem() {
    let parse_error = parse_with_default_limits("m{a=1} extra").err();
    assert_eq!(
        parse_error.map(|parse_error| parse_error.to_string()),
        Some("invalid metricQuery at byte 7: unexpected trailing input `extra`".to_string())
    );
}

#[test]
fn limits_are_enforced() {
    let limits = QueryLimits { query_bytes_max: 20, matchers_max: 2, regex_bytes_max: 4 };
    let cases: &[(&str, &str)] = &[
        ("m{a=1, b=2, c=3, d=4}", "query is 21 bytes long, more than the limit of 20 bytes"),
        ("m{a=1, b=2, c=3}", "too many label matchers: at most 2 are allowed"),
        ("m{a=~\"abcde\"}", "regex for label `a` is 5 bytes long, more than the limit of 4 bytes"),
    ];
    for &(query, expected_message_part) in cases {
        let message = parse_metric_query(query, &limits).err().map(|parse_error| parse_error.message);
        assert!(
            message.as_deref().is_some_and(|message| message.contains(expected_message_part)),
            "error for {query:?} is {message:?}, expected it to contain {expected_message_part:?}"
        );
    }
    for query in ["m{a=1, b=2}", "m{a=1, b=2,}", "m{a=~\"abcd\"}", "avg(abcdefghijklmn)"] {
        assert!(parse_metric_query(query, &limits).is_ok(), "{query:?} is within the limits");
    }
    let no_matchers_allowed = QueryLimits { matchers_max: 0, ..QueryLimits::default() };
    assert!(parse_metric_query("m{}", &no_matchers_allowed).is_ok());
    assert!(parse_metric_query("m{a=1}", &no_matchers_allowed).is_err());
}

#[test]
fn default_limits_match_the_documented_values() {
    assert_eq!(QueryLimits::default(), QueryLimits { query_bytes_max: 4096, matchers_max: 64, regex_bytes_max: 1024 });
}

#[test]
fn aggregation_words_round_trip() {
    for aggregation in Aggregation::ALL {
        assert_eq!(Aggregation::from_word(aggregation.as_str()), Some(aggregation));
        let metric_query = parse_with_default_limits(&format!("{aggregation}(m)"));
        assert_eq!(metric_query.map(|metric_query| metric_query.aggregation), Ok(aggregation));
    }
}

fn single_matcher(matcher_text: &str) -> LabelMatcher {
    let metric_query = parse_with_default_limits(&format!("m{{{matcher_text}}}"))
        .unwrap_or_else(|parse_error| panic!("matcher {matcher_text:?} was rejected: {parse_error}"));
    match <[LabelMatcher; 1]>::try_from(metric_query.matchers) {
        Ok([matcher]) => matcher,
        Err(matchers) => panic!("expected one matcher from {matcher_text:?}, got {matchers:?}"),
    }
}

#[test]
fn matchers_follow_prometheus_semantics() {
    // (matcher, label value or None when the series lacks the label, expected)
    let cases: &[(&str, Option<&str>, bool)] = &[
        ("a=v", Some("v"), true),
        ("a=v", Some("w"), false),
        ("a=v", Some(""), false),
        ("a=v", None, false),
        ("a=\"\"", None, true),
        ("a=\"\"", Some(""), true),
        ("a=\"\"", Some("x"), false),
        ("a!=v", None, true),
        ("a!=v", Some("w"), true),
        ("a!=v", Some("v"), false),
        ("a!=\"\"", None, false),
        ("a!=\"\"", Some("x"), true),
        // Regexes are fully anchored.
        ("a=~\"b\"", Some("b"), true),
        ("a=~\"b\"", Some("abc"), false),
        ("a=~\"b\"", Some("bb"), false),
        ("a=~\"b\"", None, false),
        ("a=~\"b|abc\"", Some("abc"), true),
        ("a=~\"a|ab\"", Some("ab"), true),
        ("a=~\"llama.*\"", Some("llama-3-8b"), true),
        ("a=~\"llama.*\"", Some("my-llama"), false),
        ("a=~\".*\"", None, true),
        ("a=~\".+\"", None, false),
        ("a=~\"(?m)x\"", Some("x\ny"), false),
        ("a!~\"b\"", Some("abc"), true),
        ("a!~\"b\"", Some("b"), false),
        ("a!~\"b\"", None, true),
        ("a!~\".*\"", None, false),
        ("a!~\".+\"", None, true),
        ("a!~\".+\"", Some("x"), false),
    ];
    for &(matcher_text, label_value, expected) in cases {
        let matcher = single_matcher(matcher_text);
        assert_eq!(matcher.matches(label_value), expected, "{matcher_text} against {label_value:?}");
    }
}

#[test]
fn regex_value_source_is_the_unanchored_source() {
    let matcher = single_matcher("a=~\"x|y\"");
    assert_eq!(matcher.kind.operator(), "=~");
    assert_eq!(matcher.kind.value_source(), "x|y");
    match &matcher.kind {
        MatchKind::RegexMatch(regex) => assert_eq!(regex.as_str(), "^(?:x|y)$"),
        other => panic!("expected a regex matcher, got {other:?}"),
    }
}

#[test]
fn display_is_canonical() {
    let cases: &[(&str, &str)] = &[
        ("hello", "sum(hello)"),
        ("  min( gpu.temp { a = b, c!~'x\\'y' } )  ", r#"min(gpu_temp{a="b", c!~"x'y"})"#),
        ("m{}", "sum(m)"),
    ];
    for &(query, expected_rendering) in cases {
        let rendered = parse_with_default_limits(query).map(|metric_query| metric_query.to_string());
        assert_eq!(rendered.as_deref(), Ok(expected_rendering), "{query:?}");
    }
}

/// Writes `text` between `quote`, escaping what the parser needs escaped.
fn quote_with_escapes(text: &str, quote: char) -> String {
    let mut quoted = String::new();
    quoted.push(quote);
    for character in text.chars() {
        match character {
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            other if other == quote => {
                quoted.push('\\');
                quoted.push(other);
            }
            other => quoted.push(other),
        }
    }
    quoted.push(quote);
    quoted
}

/// A valid query's parts and the text that spells them.
#[derive(Debug, Clone)]
struct GeneratedQuery {
    text: String,
    aggregation: Aggregation,
    metric_name: String,
    /// (label name, operator, value source: the regex source for `=~`/`!~`, original value)
    matchers: Vec<(String, &'static str, String, String)>,
}

fn label_value_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9\"'\\\\,{}()=!~ \t\n.*é]{0,12}",
        1 => any::<String>(),
    ]
}

fn generated_query_strategy() -> impl Strategy<Value = GeneratedQuery> {
    let aggregation = prop_oneof![Just(None), proptest::sample::select(Aggregation::ALL.to_vec()).prop_map(Some)];
    let metric_name = "[a-zA-Z0-9_:./-]{1,20}";
    let matcher = (
        "[a-zA-Z0-9_:./-]{1,12}",
        any::<bool>(),
        0..4usize,
        label_value_strategy(),
        prop_oneof![Just('"'), Just('\'')],
    );
    let matchers = proptest::collection::vec(matcher, 0..8);
    let whitespace = proptest::collection::vec("[ \t\n]{0,2}", 40);
    (aggregation, metric_name, matchers, whitespace, any::<bool>(), any::<bool>()).prop_map(
        |(aggregation, metric_name, matchers, whitespace, write_braces_when_empty, trailing_comma)| {
            let mut whitespace_fragments = whitespace.into_iter().cycle();
            let mut next_whitespace = move || whitespace_fragments.next().unwrap_or_default();
            let mut text = next_whitespace();
            if let Some(aggregation) = aggregation {
                text.push_str(aggregation.as_str());
                text.push_str(&next_whitespace());
                text.push('(');
                text.push_str(&next_whitespace());
            }
            text.push_str(&metric_name);
            text.push_str(&next_whitespace());
            let mut expected_matchers = Vec::new();
            if !matchers.is_empty() || write_braces_when_empty {
                text.push('{');
                for (matcher_idx, (label_name, quote_label_name, operator_idx, value, quote)) in
                    matchers.into_iter().enumerate()
                {
                    if matcher_idx > 0 {
                        text.push(',');
                    }
                    text.push_str(&next_whitespace());
                    if quote_label_name {
                        text.push_str(&quote_with_escapes(&label_name, quote));
                    } else {
                        text.push_str(&label_name);
                    }
                    text.push_str(&next_whitespace());
                    let operator = ["=", "!=", "=~", "!~"][operator_idx];
                    text.push_str(operator);
                    text.push_str(&next_whitespace());
                    let value_source = if operator.ends_with('~') { regex::escape(&value) } else { value.clone() };
                    text.push_str(&quote_with_escapes(&value_source, quote));
                    text.push_str(&next_whitespace());
                    expected_matchers.push((label_name, operator, value_source, value));
                }
                if trailing_comma && !expected_matchers.is_empty() {
                    text.push(',');
                    text.push_str(&next_whitespace());
                }
                text.push('}');
                text.push_str(&next_whitespace());
            }
            if aggregation.is_some() {
                text.push(')');
                text.push_str(&next_whitespace());
            }
            GeneratedQuery {
                text,
                aggregation: aggregation.unwrap_or(Aggregation::Sum),
                metric_name: normalize_metric_name(&metric_name),
                matchers: expected_matchers,
            }
        },
    )
}

fn roomy_limits() -> QueryLimits {
    QueryLimits { query_bytes_max: 1 << 20, matchers_max: 64, regex_bytes_max: 1 << 16 }
}

/// A parsed query's canonical rendering must parse back to the same rendering.
fn assert_rendering_round_trips(metric_query: &MetricQuery) -> Result<(), TestCaseError> {
    let rendered = metric_query.to_string();
    let reparsed = parse_metric_query(&rendered, &roomy_limits());
    prop_assert!(reparsed.is_ok(), "rendering {rendered:?} was rejected: {reparsed:?}");
    let rerendered = reparsed.map(|reparsed| reparsed.to_string()).unwrap_or_default();
    prop_assert_eq!(rerendered, rendered);
    Ok(())
}

proptest! {
    #[test]
    fn never_panics_on_arbitrary_strings(
        query in any::<String>(),
        query_bytes_max in 0..64usize,
        matchers_max in 0..4usize,
        regex_bytes_max in 0..8usize,
    ) {
        let _ = parse_with_default_limits(&query);
        let tight_limits = QueryLimits { query_bytes_max, matchers_max, regex_bytes_max };
        let _ = parse_metric_query(&query, &tight_limits);
    }

    #[test]
    fn never_panics_on_query_shaped_strings(query in "[ a-z0-9_:./{}()=!~,\"'\\\\\t\n-]{0,48}") {
        if let Ok(metric_query) = parse_with_default_limits(&query) {
            assert_rendering_round_trips(&metric_query)?;
        }
    }

    #[test]
    fn rendered_valid_query_parses_back_to_its_parts(generated in generated_query_strategy()) {
        let parsed = parse_metric_query(&generated.text, &roomy_limits());
        prop_assert!(parsed.is_ok(), "query {:?} was rejected: {:?}", generated.text, parsed);
        let Ok(metric_query) = parsed else { return Ok(()) };
        prop_assert_eq!(metric_query.aggregation, generated.aggregation);
        prop_assert_eq!(&metric_query.metric_name, &generated.metric_name);
        prop_assert_eq!(metric_query.matchers.len(), generated.matchers.len());
        for (matcher, (label_name, operator, value_source, original_value)) in
            metric_query.matchers.iter().zip(&generated.matchers)
        {
            prop_assert_eq!(&matcher.label_name, label_name);
            prop_assert_eq!(matcher.kind.operator(), *operator);
            prop_assert_eq!(matcher.kind.value_source(), value_source.as_str());
            let expected_match_of_original = matches!(*operator, "=" | "=~");
            prop_assert_eq!(matcher.matches(Some(original_value)), expected_match_of_original);
            let longer_value = format!("{original_value}x");
            prop_assert_eq!(matcher.matches(Some(&longer_value)), !expected_match_of_original);
        }
        assert_rendering_round_trips(&metric_query)?;
    }
}

#[test]
fn the_regexes_of_one_query_share_a_compile_budget() {
    // One Unicode-heavy regex compiles; 64 of them would take about a second to compile and are
    // refused at once, with the budget named.
    let one = "m{a=~\"\\w{20}\"}";
    assert!(parse_metric_query(one, &QueryLimits::default()).is_ok());
    let many: Vec<String> = (0..64).map(|idx| format!("l{idx}!~\"\\w{{20}}\"")).collect();
    let query = format!("m{{{}}}", many.join(","));
    let err = parse_metric_query(&query, &QueryLimits::default()).unwrap_err();
    assert!(err.message.contains("the regexes of one query share"), "{}", err.message);
}

#[test]
fn a_regex_match_knows_the_prefixes_its_values_start_with() {
    let prefixes = |matcher_text: &str| single_matcher(matcher_text).value_prefixes.map(|prefixes| prefixes.to_vec());
    let owned = |prefixes: &[&str]| Some(prefixes.iter().map(|prefix| prefix.to_string()).collect::<Vec<_>>());
    assert_eq!(prefixes(r#"model_name=~"model-00(1|2).*""#), owned(&["model-001", "model-002"]));
    assert_eq!(prefixes(r#"m=~"a|ab|b.*""#), owned(&["a", "b"]), "a prefix of another covers it");
    assert_eq!(prefixes(r#"m=~"gpu-[0-3]""#), owned(&["gpu-0", "gpu-1", "gpu-2", "gpu-3"]));
    // No finite, non-empty set: every value is tested.
    assert_eq!(prefixes(r#"m=~".*-prod""#), None);
    assert_eq!(prefixes(r#"m=~"a?b""#).map(|set| set.contains(&"b".to_owned())), Some(true));
    assert_eq!(prefixes(r#"m=~"(x|)y""#), owned(&["xy", "y"]));
    assert_eq!(prefixes(r#"m!~"a.*""#), None, "only a positive regex narrows");
    assert_eq!(prefixes(r#"m="a""#), None);
}
