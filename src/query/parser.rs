//! The `metricQuery` parser: turns the text a ScaledObject carries in its `metricQuery` field,
//! e.g. `avg(vllm:num_requests_waiting{model_name=~"llama.*"})`, into a [`MetricQuery`].
//!
//! Grammar (whitespace is allowed around every token):
//!
//! ```text
//! query       = [ aggregation "(" ] metric_name [ matchers ] [ ")" ]   ; ")" if and only if "("
//! aggregation = "sum" | "avg" | "min" | "max" | "count"                ; "sum" when absent
//! matchers    = "{" [ matcher { "," matcher } [ "," ] ] "}"
//! matcher     = label_name ( "=" | "!=" | "=~" | "!~" ) value
//! label_name  = bare_name | quoted_string                              ; bare: A-Z a-z 0-9 _ : . - /
//! metric_name = bare_name
//! value       = bare_value | quoted_string                             ; bare value may be empty
//! ```
//!
//! A bare value runs up to `,`, `}`, `)` or whitespace and may not contain `= ! ~ { ( " '`. A quoted
//! string uses `"` or `'`; inside it `\"`, `\'`, `\\`, `\n` and `\t` are escapes, and a backslash
//! before any other character is kept together with that character, so regexes such as `"\d+\.\d"`
//! mean what they say. An aggregation word not followed by `(` is an ordinary metric name (`count`).
//!
//! Compatibility: every query Kedify's otel-add-on accepts whose label names and values contain no
//! whitespace and whose values do not start with `~` parses here with the same meaning (quotes
//! around names and values are stripped, `a=` means the empty value). On top of that this parser
//! accepts Prometheus's `!=`, `=~` and `!~` (regexes fully anchored, as in Prometheus) and `{}`.
//!
//! The query comes from a client, so the parser never panics, bounds the query length, the matcher
//! count and every regex ([`QueryLimits`]), and answers a bad query with a [`ParseError`] carrying
//! the byte position and a message that names the problem.

use std::fmt::{self, Write as _};

use regex::{Regex, RegexBuilder};

use crate::store::{normalize_metric_name, LabelNarrowing};

/// Limits on what a client may put in a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    /// Longest accepted query, in bytes; checked before any parsing.
    pub query_bytes_max: usize,
    /// Most label matchers in one query.
    pub matchers_max: usize,
    /// Longest accepted regex source (after unquoting), in bytes.
    pub regex_bytes_max: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits { query_bytes_max: 4096, matchers_max: 64, regex_bytes_max: 1024 }
    }
}

/// Cap on the compiled program of one regex (`RegexBuilder::size_limit`): a short source such as
/// `(a{100}){100}` can still compile into something huge.
const REGEX_COMPILED_BYTES_MAX: usize = 1 << 20;
/// Cap on the compiled programs of all the regexes of one query together: each of a query's `n`
/// regexes may use `1/n` of it (and at most [`REGEX_COMPILED_BYTES_MAX`]). Compile time follows
/// program size, so this bounds what parsing one query costs: 64 regexes like `\w{20}` (Unicode
/// word characters) would otherwise take about a second to compile.
const REGEX_COMPILED_BYTES_PER_QUERY_MAX: usize = 2 << 20;
/// Cap on the lazy-DFA cache of one regex (`RegexBuilder::dfa_size_limit`).
const REGEX_DFA_CACHE_BYTES_MAX: usize = 1 << 20;
/// Every regex is compiled as `^(?:source)$`, fully anchored like Prometheus.
const REGEX_ANCHOR_PREFIX: &str = "^(?:";
const REGEX_ANCHOR_SUFFIX: &str = ")$";
/// Longest excerpt of client text quoted in an error message, in chars.
const ERROR_EXCERPT_CHARS_MAX: usize = 40;

/// How the values of all matching series are combined into one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregation {
    Sum,
    Avg,
    Min,
    Max,
    Count,
}

impl Aggregation {
    /// Every aggregation, in the order they are listed in error messages.
    pub const ALL: [Aggregation; 5] =
        [Aggregation::Sum, Aggregation::Avg, Aggregation::Min, Aggregation::Max, Aggregation::Count];

    /// The word for this aggregation in a query: `sum`, `avg`, `min`, `max` or `count`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Aggregation::Sum => "sum",
            Aggregation::Avg => "avg",
            Aggregation::Min => "min",
            Aggregation::Max => "max",
            Aggregation::Count => "count",
        }
    }

    /// The aggregation spelled `word` (case-sensitive, as in Kedify and Prometheus).
    fn from_word(word: &str) -> Option<Aggregation> {
        Aggregation::ALL.into_iter().find(|aggregation| aggregation.as_str() == word)
    }
}

impl fmt::Display for Aggregation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A parsed `metricQuery`.
///
/// Its [`Display`](fmt::Display) form is canonical (`sum(m{a="1"})`, aggregation always written,
/// values always quoted) and parses back to the same query.
#[derive(Debug, Clone)]
pub struct MetricQuery {
    pub aggregation: Aggregation,
    /// Already normalized with [`crate::store::normalize_metric_name`] (`.` and `/` become `_`).
    pub metric_name: String,
    pub matchers: Vec<LabelMatcher>,
}

impl MetricQuery {
    /// The equality matchers a label index can narrow the query by (name, value): those with a
    /// value, as an empty value also matches series without the label.
    pub fn index_labels(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.matchers.iter().filter_map(|matcher| match &matcher.kind {
            MatchKind::Equal(value) if !value.is_empty() => Some((matcher.label_name.as_str(), value.as_str())),
            _ => None,
        })
    }

    /// The matchers a label index can narrow the query by: equalities with a value and regex
    /// matches that fail the empty value (either form that accepts it also matches series
    /// without the label). Negative matchers do not narrow.
    pub fn narrowings(&self) -> impl Iterator<Item = LabelNarrowing<'_>> + '_ {
        self.matchers.iter().filter_map(|matcher| {
            let name = matcher.label_name.as_str();
            match &matcher.kind {
                MatchKind::Equal(value) if !value.is_empty() => Some(LabelNarrowing::Equal { name, value }),
                MatchKind::RegexMatch(matches) if !matches.is_match("") => {
                    Some(LabelNarrowing::Matching { name, matches, prefixes: matcher.value_prefixes.as_deref() })
                }
                _ => None,
            }
        })
    }
}

impl fmt::Display for MetricQuery {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}({}", self.aggregation, self.metric_name)?;
        if !self.matchers.is_empty() {
            formatter.write_char('{')?;
            for (matcher_idx, matcher) in self.matchers.iter().enumerate() {
                if matcher_idx > 0 {
                    formatter.write_str(", ")?;
                }
                write!(formatter, "{matcher}")?;
            }
            formatter.write_char('}')?;
        }
        formatter.write_char(')')
    }
}

/// One `label op value` condition a series must meet to be part of the query.
#[derive(Debug, Clone)]
pub struct LabelMatcher {
    pub label_name: String,
    pub kind: MatchKind,
    /// For `=~`: every value the regex accepts starts with one of these, sorted, none a prefix
    /// of another (from the regex's literal prefixes), so that a label index can run the regex
    /// only on values that start with one. `None` when not known (or not a regex match).
    pub value_prefixes: Option<ValuePrefixes>,
}

/// Literal prefixes of a regex's values (see [`LabelMatcher::value_prefixes`]).
pub type ValuePrefixes = Box<[String]>;

/// The operator of a [`LabelMatcher`] with its value. Regexes are compiled fully anchored.
#[derive(Debug, Clone)]
pub enum MatchKind {
    Equal(String),
    NotEqual(String),
    RegexMatch(Regex),
    RegexNoMatch(Regex),
}

impl MatchKind {
    /// The operator as written in a query: `=`, `!=`, `=~` or `!~`.
    pub fn operator(&self) -> &'static str {
        match self {
            MatchKind::Equal(_) => "=",
            MatchKind::NotEqual(_) => "!=",
            MatchKind::RegexMatch(_) => "=~",
            MatchKind::RegexNoMatch(_) => "!~",
        }
    }

    /// The value as the client wrote it, after unquoting; for a regex, its source without the
    /// anchoring the parser adds.
    pub fn value_source(&self) -> &str {
        match self {
            MatchKind::Equal(value) | MatchKind::NotEqual(value) => value,
            MatchKind::RegexMatch(regex) | MatchKind::RegexNoMatch(regex) => {
                let anchored_source = regex.as_str();
                anchored_source
                    .strip_prefix(REGEX_ANCHOR_PREFIX)
                    .and_then(|source| source.strip_suffix(REGEX_ANCHOR_SUFFIX))
                    .unwrap_or(anchored_source)
            }
        }
    }
}

impl LabelMatcher {
    /// Whether a series whose label `label_name` has `value` meets this matcher.
    ///
    /// Prometheus semantics: `value` is `None` when the series lacks the label, which is treated
    /// as the empty string: `k=v` (v non-empty) does not match a series without k; `k!=v` does;
    /// `k=""` matches a series without k; `k=~re` / `k!~re` test the empty string when the label
    /// is missing.
    pub fn matches(&self, value: Option<&str>) -> bool {
        let value = value.unwrap_or("");
        match &self.kind {
            MatchKind::Equal(expected) => value == expected,
            MatchKind::NotEqual(expected) => value != expected,
            MatchKind::RegexMatch(regex) => regex.is_match(value),
            MatchKind::RegexNoMatch(regex) => !regex.is_match(value),
        }
    }
}

impl fmt::Display for LabelMatcher {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.label_name.is_empty() && self.label_name.chars().all(is_bare_name_char) {
            formatter.write_str(&self.label_name)?;
        } else {
            write_quoted(formatter, &self.label_name)?;
        }
        formatter.write_str(self.kind.operator())?;
        write_quoted(formatter, self.kind.value_source())
    }
}

/// Writes `text` as a double-quoted string that the parser reads back as `text`.
fn write_quoted(formatter: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    formatter.write_char('"')?;
    for character in text.chars() {
        match character {
            '"' => formatter.write_str("\\\"")?,
            '\\' => formatter.write_str("\\\\")?,
            '\n' => formatter.write_str("\\n")?,
            '\t' => formatter.write_str("\\t")?,
            other => formatter.write_char(other)?,
        }
    }
    formatter.write_char('"')
}

/// A query the parser rejected: where (byte offset into the query) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid metricQuery at byte {position}: {message}")]
pub struct ParseError {
    pub position: usize,
    pub message: String,
}

/// Parses a `metricQuery` (see the module docs for the grammar), within `limits`.
pub fn parse_metric_query(query: &str, limits: &QueryLimits) -> Result<MetricQuery, ParseError> {
    if query.len() > limits.query_bytes_max {
        return Err(ParseError {
            position: limits.query_bytes_max,
            message: format!(
                "query is {} bytes long, more than the limit of {} bytes",
                query.len(),
                limits.query_bytes_max
            ),
        });
    }
    // An upper bound of the regex matchers (`=~` or `!~` may also sit inside a quoted value).
    let regex_operators = query.matches("=~").count() + query.matches("!~").count();
    let regex_compiled_bytes_max =
        (REGEX_COMPILED_BYTES_PER_QUERY_MAX / regex_operators.max(1)).min(REGEX_COMPILED_BYTES_MAX);
    let mut parser = QueryParser { query, position: 0, limits: *limits, regex_compiled_bytes_max };
    parser.parse_query()
}

/// Characters of a bare metric or label name.
fn is_bare_name_char(character: char) -> bool {
    character.is_ascii_alphanumeric() || matches!(character, '_' | ':' | '.' | '-' | '/')
}

fn is_quote(character: char) -> bool {
    matches!(character, '"' | '\'')
}

/// Characters that end a bare value (and are left for the caller to read).
fn ends_bare_value(character: char) -> bool {
    matches!(character, ',' | '}' | ')') || character.is_whitespace()
}

/// Characters that may not appear in a bare value at all: they would make the query ambiguous.
fn is_forbidden_in_bare_value(character: char) -> bool {
    matches!(character, '=' | '!' | '~' | '{' | '(') || is_quote(character)
}

/// `text` between backticks for an error message, shortened and with control characters escaped.
fn quote_for_message(text: &str) -> String {
    let mut quoted = String::from("`");
    for (char_idx, character) in text.chars().enumerate() {
        if char_idx == ERROR_EXCERPT_CHARS_MAX {
            quoted.push('…');
            break;
        }
        if character.is_control() {
            quoted.extend(character.escape_debug());
        } else {
            quoted.push(character);
        }
    }
    quoted.push('`');
    quoted
}

/// The label-matcher operators, before their value is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MatchOperator {
    Equal,
    NotEqual,
    RegexMatch,
    RegexNoMatch,
}

impl MatchOperator {
    fn byte_len(self) -> usize {
        match self {
            MatchOperator::Equal => 1,
            MatchOperator::NotEqual | MatchOperator::RegexMatch | MatchOperator::RegexNoMatch => 2,
        }
    }
}

/// A cursor over the query. `position` is a byte offset that only ever moves by whole chars,
/// so it always sits on a char boundary; slicing still goes through `get` so that a broken
/// invariant is a wrong answer, never a panic.
struct QueryParser<'query> {
    query: &'query str,
    position: usize,
    limits: QueryLimits,
    /// The compiled-size limit of each of this query's regexes: their share of
    /// [`REGEX_COMPILED_BYTES_PER_QUERY_MAX`].
    regex_compiled_bytes_max: usize,
}

impl<'query> QueryParser<'query> {
    fn rest(&self) -> &'query str {
        self.query.get(self.position..).unwrap_or("")
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek_second(&self) -> Option<char> {
        self.rest().chars().nth(1)
    }

    fn bump(&mut self) -> Option<char> {
        let character = self.peek()?;
        self.position += character.len_utf8();
        Some(character)
    }

    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> &'query str {
        let start = self.position;
        while self.peek().is_some_and(&keep) {
            self.bump();
        }
        self.query.get(start..self.position).unwrap_or("")
    }

    fn error_at(&self, position: usize, message: String) -> ParseError {
        ParseError { position, message }
    }

    fn error_here(&self, message: String) -> ParseError {
        self.error_at(self.position, message)
    }

    /// The next char for an error message: "`x`" or "the end of the query".
    fn describe_next_char(&self) -> String {
        match self.peek() {
            None => "the end of the query".to_string(),
            Some(character) => quote_for_message(character.encode_utf8(&mut [0; 4])),
        }
    }

    /// The rest of the query (trailing whitespace dropped) for an error message.
    fn describe_rest(&self) -> String {
        let rest = self.rest().trim_end();
        if rest.is_empty() {
            "the end of the query".to_string()
        } else {
            quote_for_message(rest)
        }
    }

    fn parse_query(&mut self) -> Result<MetricQuery, ParseError> {
        self.skip_whitespace();
        if self.peek().is_none() {
            return Err(self.error_here("empty query".to_string()));
        }

        let first_word_position = self.position;
        let first_word = self.take_while(is_bare_name_char);
        if first_word.is_empty() {
            return Err(self.error_here(format!(
                "expected a metric name or an aggregation (`sum`, `avg`, `min`, `max`, `count`), \
                 found {}",
                self.describe_next_char()
            )));
        }
        self.skip_whitespace();

        let opened_aggregation = match Aggregation::from_word(first_word) {
            Some(aggregation) if self.peek() == Some('(') => {
                self.bump();
                Some(aggregation)
            }
            _ => None,
        };
        if opened_aggregation.is_none() && self.peek() == Some('(') {
            return Err(self.error_at(
                first_word_position,
                format!(
                    "unknown aggregation {}: expected `sum`, `avg`, `min`, `max` or `count`",
                    quote_for_message(first_word)
                ),
            ));
        }

        let metric_name = match opened_aggregation {
            None => first_word,
            Some(aggregation) => {
                self.skip_whitespace();
                let metric_name = self.take_while(is_bare_name_char);
                if metric_name.is_empty() {
                    return Err(self.error_here(format!(
                        "expected a metric name after `{aggregation}(`, found {}",
                        self.describe_next_char()
                    )));
                }
                self.skip_whitespace();
                metric_name
            }
        };

        let matchers = if self.peek() == Some('{') { self.parse_matcher_list()? } else { Vec::new() };
        self.skip_whitespace();

        if let Some(aggregation) = opened_aggregation {
            match self.peek() {
                Some(')') => {
                    self.bump();
                    self.skip_whitespace();
                }
                None => {
                    return Err(self.error_here(format!("missing closing `)` for `{aggregation}(`")));
                }
                Some(_) => {
                    return Err(self.error_here(format!(
                        "missing closing `)` for `{aggregation}(`, found {}",
                        self.describe_rest()
                    )));
                }
            }
        }

        if !self.rest().is_empty() {
            return Err(self.error_here(format!("unexpected trailing input {}", self.describe_rest())));
        }

        Ok(MetricQuery {
            aggregation: opened_aggregation.unwrap_or(Aggregation::Sum),
            metric_name: normalize_metric_name(metric_name),
            matchers,
        })
    }

    /// Parses `{ matcher, ... }`; the cursor is on the `{`.
    fn parse_matcher_list(&mut self) -> Result<Vec<LabelMatcher>, ParseError> {
        self.bump();
        let mut matchers = Vec::new();
        loop {
            self.skip_whitespace();
            match self.peek() {
                None => return Err(self.unclosed_brace_error()),
                Some('}') => {
                    self.bump();
                    return Ok(matchers);
                }
                Some(_) => {}
            }
            if matchers.len() >= self.limits.matchers_max {
                return Err(self
                    .error_here(format!("too many label matchers: at most {} are allowed", self.limits.matchers_max)));
            }
            let matcher = self.parse_matcher()?;
            self.skip_whitespace();
            match self.peek() {
                Some(',') => {
                    self.bump();
                }
                Some('}') => {
                    self.bump();
                    matchers.push(matcher);
                    return Ok(matchers);
                }
                None | Some(')') => return Err(self.unclosed_brace_error()),
                Some(_) => {
                    return Err(self.error_here(format!(
                        "expected `,` or `}}` after the matcher for label {}, found {}",
                        quote_for_message(&matcher.label_name),
                        self.describe_next_char()
                    )));
                }
            }
            matchers.push(matcher);
        }
    }

    fn unclosed_brace_error(&self) -> ParseError {
        match self.peek() {
            None => self.error_here("unclosed `{`: expected `}`".to_string()),
            Some(_) => self.error_here(format!("unclosed `{{`: expected `}}`, found {}", self.describe_next_char())),
        }
    }

    /// Parses `label op value`; the cursor is on the first char of the label name.
    fn parse_matcher(&mut self) -> Result<LabelMatcher, ParseError> {
        let label_name_position = self.position;
        let label_name = if self.peek().is_some_and(is_quote) {
            let label_name = self.parse_quoted_string()?;
            if label_name.is_empty() {
                return Err(self.error_at(label_name_position, "empty label name `\"\"`".to_string()));
            }
            label_name
        } else {
            let label_name = self.take_while(is_bare_name_char);
            if label_name.is_empty() {
                return Err(self.error_here(format!("expected a label name, found {}", self.describe_next_char())));
            }
            label_name.to_string()
        };
        self.skip_whitespace();

        let operator = match (self.peek(), self.peek_second()) {
            (Some('='), Some('~')) => MatchOperator::RegexMatch,
            (Some('='), _) => MatchOperator::Equal,
            (Some('!'), Some('=')) => MatchOperator::NotEqual,
            (Some('!'), Some('~')) => MatchOperator::RegexNoMatch,
            _ => {
                return Err(self.error_here(format!(
                    "expected `=`, `!=`, `=~` or `!~` after label name {}, found {}",
                    quote_for_message(&label_name),
                    self.describe_next_char()
                )));
            }
        };
        self.position += operator.byte_len();
        self.skip_whitespace();

        let value_position = self.position;
        let value = self.parse_value(&label_name)?;
        let mut value_prefixes = None;
        let kind = match operator {
            MatchOperator::Equal => MatchKind::Equal(value),
            MatchOperator::NotEqual => MatchKind::NotEqual(value),
            MatchOperator::RegexMatch => {
                let (regex, prefixes) = self.compile_anchored_regex(&label_name, &value, value_position)?;
                value_prefixes = prefixes;
                MatchKind::RegexMatch(regex)
            }
            MatchOperator::RegexNoMatch => {
                MatchKind::RegexNoMatch(self.compile_anchored_regex(&label_name, &value, value_position)?.0)
            }
        };
        Ok(LabelMatcher { label_name, kind, value_prefixes })
    }

    /// Parses a quoted or bare value. An empty bare value (`a=`, `a=,`) is the empty string, as in
    /// Kedify's otel-add-on.
    fn parse_value(&mut self, label_name: &str) -> Result<String, ParseError> {
        if self.peek().is_some_and(is_quote) {
            return self.parse_quoted_string();
        }
        let start = self.position;
        while let Some(character) = self.peek() {
            if ends_bare_value(character) {
                break;
            }
            if is_forbidden_in_bare_value(character) {
                return Err(self.error_here(format!(
                    "unexpected {} in value of label {}; quote the value to use it",
                    quote_for_message(character.encode_utf8(&mut [0; 4])),
                    quote_for_message(label_name)
                )));
            }
            self.bump();
        }
        Ok(self.query.get(start..self.position).unwrap_or("").to_string())
    }

    /// Parses a string in `"` or `'`; the cursor is on the opening quote.
    fn parse_quoted_string(&mut self) -> Result<String, ParseError> {
        let opening_quote_position = self.position;
        let quote = self.bump().unwrap_or('"');
        let unterminated = |parser: &Self| {
            parser.error_at(opening_quote_position, format!("unterminated quoted string: expected a closing `{quote}`"))
        };
        let mut text = String::new();
        loop {
            match self.bump() {
                None => return Err(unterminated(self)),
                Some(character) if character == quote => return Ok(text),
                Some('\\') => match self.bump() {
                    None => return Err(unterminated(self)),
                    Some('n') => text.push('\n'),
                    Some('t') => text.push('\t'),
                    Some(escaped @ ('"' | '\'' | '\\')) => text.push(escaped),
                    Some(other) => {
                        text.push('\\');
                        text.push(other);
                    }
                },
                Some(character) => text.push(character),
            }
        }
    }

    /// Compiles `regex_source` as `^(?:regex_source)$`.
    fn compile_anchored_regex(
        &self,
        label_name: &str,
        regex_source: &str,
        value_position: usize,
    ) -> Result<(Regex, Option<ValuePrefixes>), ParseError> {
        if regex_source.len() > self.limits.regex_bytes_max {
            return Err(self.error_at(
                value_position,
                format!(
                    "regex for label {} is {} bytes long, more than the limit of {} bytes",
                    quote_for_message(label_name),
                    regex_source.len(),
                    self.limits.regex_bytes_max
                ),
            ));
        }
        let compile = |pattern: &str| {
            RegexBuilder::new(pattern)
                .size_limit(self.regex_compiled_bytes_max)
                .dfa_size_limit(REGEX_DFA_CACHE_BYTES_MAX)
                .build()
        };
        let invalid_regex = |regex_error: regex::Error| {
            self.error_at(
                value_position,
                format!(
                    "invalid regex {} for label {}: {}",
                    quote_for_message(regex_source),
                    quote_for_message(label_name),
                    summarize_regex_error(&regex_error)
                ),
            )
        };
        // The source must be a complete regex on its own: otherwise `a)|(b` would close the
        // anchoring group early and compile into the unanchored `^(?:a)|(b)$`. Parsing it (no
        // compiling) tells; the regex is then compiled once, anchored.
        let hir = match regex_syntax::Parser::new().parse(regex_source) {
            Ok(hir) => hir,
            Err(syntax_error) => {
                return Err(self.error_at(
                    value_position,
                    format!(
                        "invalid regex {} for label {}: {}",
                        quote_for_message(regex_source),
                        quote_for_message(label_name),
                        summarize_regex_syntax_error(&syntax_error.to_string())
                    ),
                ))
            }
        };
        let regex =
            compile(&format!("{REGEX_ANCHOR_PREFIX}{regex_source}{REGEX_ANCHOR_SUFFIX}")).map_err(invalid_regex)?;
        Ok((regex, value_prefixes(&hir)))
    }
}

/// Literal prefixes of a label-value regex beyond which no more are worth testing one by one.
const VALUE_PREFIXES_MAX: usize = 64;

/// Prefixes one of which starts every string `hir` (matched whole) accepts, sorted, none a
/// prefix of another; `None` when the regex has no such finite, non-empty set (`.*x`, `(?i)…`
/// over long text) or more than [`VALUE_PREFIXES_MAX`].
fn value_prefixes(hir: &regex_syntax::hir::Hir) -> Option<ValuePrefixes> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    let mut extractor = Extractor::new();
    extractor.kind(ExtractKind::Prefix);
    let literals = extractor.extract(hir);
    let mut prefixes: Vec<String> = Vec::new();
    for literal in literals.literals()? {
        // A literal cut at the extractor's length limit may end inside a character: its valid
        // start is still a prefix of every such match.
        let bytes = literal.as_bytes();
        let valid = match std::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(error) => std::str::from_utf8(&bytes[..error.valid_up_to()]).expect("valid up to here"),
        };
        if valid.is_empty() {
            return None;
        }
        prefixes.push(valid.to_owned());
    }
    if prefixes.is_empty() || prefixes.len() > VALUE_PREFIXES_MAX {
        return None;
    }
    prefixes.sort();
    // After sorting, a prefix of another comes right before the strings it starts.
    prefixes.dedup_by(|later, kept| later.starts_with(kept.as_str()));
    Some(prefixes.into_boxed_slice())
}

/// One line out of a `regex::Error`, whose syntax errors span several lines (pattern, carets,
/// then `error: ...`).
fn summarize_regex_error(regex_error: &regex::Error) -> String {
    match regex_error {
        regex::Error::Syntax(full_text) => summarize_regex_syntax_error(full_text),
        regex::Error::CompiledTooBig(bytes_max) => format!(
            "the compiled regex would be larger than the limit of {bytes_max} bytes (the regexes of one query \
             share {REGEX_COMPILED_BYTES_PER_QUERY_MAX} bytes)"
        ),
        other => other.to_string().split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

/// The `error: ...` line of a regex syntax error's text (pattern, carets, then the error).
fn summarize_regex_syntax_error(full_text: &str) -> String {
    let error_line = full_text.lines().filter_map(|line| line.trim().strip_prefix("error:")).next_back();
    match error_line {
        Some(error_line) => error_line.trim().to_string(),
        None => full_text.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

#[cfg(test)]
mod tests;
