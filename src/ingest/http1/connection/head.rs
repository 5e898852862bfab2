//! Request heads: finding the blank line that ends a head, parsing it with `httparse`, and
//! reading out what the receiver and the body framing need (method, target, content type and
//! encoding, `Content-Length` or `Transfer-Encoding: chunked`, keep-alive, `Expect`).

use bytes::{Buf, BytesMut};

use super::{HttpError, HEADER_COUNT_MAX};

/// What the receiver needs of a request's head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// The request-target as sent (origin form `/v1/metrics?x`, or absolute form).
    pub target: String,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
}

impl RequestHead {
    /// The target's path: without the query, and without scheme and authority when the target
    /// is in absolute form.
    pub fn path(&self) -> &str {
        let target = self.target.as_str();
        let without_authority = match target.find("://") {
            Some(scheme_end) if !target.starts_with('/') => {
                let authority_and_path = &target[scheme_end + 3..];
                authority_and_path.find('/').map_or("/", |path_start| &authority_and_path[path_start..])
            }
            _ => target,
        };
        without_authority.split(['?', '#']).next().unwrap_or("")
    }
}

/// How the current request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Exchange {
    pub(super) keep_alive: bool,
    /// HTTP/1.0 with `Connection: keep-alive`: the answer says `connection: keep-alive`.
    pub(super) http10_keep_alive: bool,
    /// A HEAD request: the answer has no body.
    pub(super) is_head: bool,
}

/// The result of looking for a request head in the input.
pub(super) enum HeadParse {
    Partial,
    Complete { head: RequestHead, exchange: Exchange, framing: Framing, expect_continue: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    Length(u64),
    Chunked,
}

/// Parses a request head from the start of `input` and consumes it. `head_scanned_bytes` is how
/// much of `input` earlier calls already searched for the blank line ending the head.
pub(super) fn parse_head(
    input: &mut BytesMut,
    head_scanned_bytes: &mut usize,
    head_bytes_max: usize,
) -> Result<HeadParse, HttpError> {
    // The full parser runs only once the blank line ending the head has arrived, so a client
    // sending its head a byte at a time costs a scan of each byte once, not a parse per read.
    let Some(head_end) = find_blank_line(input, (*head_scanned_bytes).saturating_sub(3)) else {
        *head_scanned_bytes = input.len();
        if input.len() > head_bytes_max {
            return Err(HttpError::HeadTooLarge { limit: head_bytes_max });
        }
        return Ok(HeadParse::Partial);
    };
    if head_end > head_bytes_max {
        return Err(HttpError::HeadTooLarge { limit: head_bytes_max });
    }
    let mut header_slots = [httparse::EMPTY_HEADER; HEADER_COUNT_MAX];
    let mut request = httparse::Request::new(&mut header_slots);
    let head_len = match request.parse(input) {
        Ok(httparse::Status::Complete(head_len)) => head_len,
        Ok(httparse::Status::Partial) => {
            // The blank line was one of the empty lines allowed before a request line.
            *head_scanned_bytes = input.len();
            return Ok(HeadParse::Partial);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError::TooManyHeaders { limit: HEADER_COUNT_MAX });
        }
        Err(httparse::Error::Version) => return Err(HttpError::UnsupportedVersion),
        Err(err) => return Err(HttpError::MalformedHead(err)),
    };
    let parsed = head_from(&request)?;
    input.advance(head_len);
    *head_scanned_bytes = 0;
    Ok(parsed)
}

/// Reads what the receiver and the framing need out of a parsed head.
fn head_from(request: &httparse::Request<'_, '_>) -> Result<HeadParse, HttpError> {
    let is_http11 = request.version == Some(1);
    let method = request.method.unwrap_or_default();
    let mut content_length: Option<u64> = None;
    let mut transfer_codings = TransferCodings::default();
    let mut connection_close = false;
    let mut connection_keep_alive = false;
    let mut expect_continue = false;
    let mut content_type = None;
    let mut content_encoding = None;
    for header in request.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            for part in header.value.split(|&byte| byte == b',') {
                let len = parse_decimal(part.trim_ascii()).ok_or(HttpError::InvalidContentLength)?;
                if content_length.is_some_and(|seen| seen != len) {
                    return Err(HttpError::InvalidContentLength);
                }
                content_length = Some(len);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_codings.add(header.value);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in tokens(header.value) {
                connection_close |= token.eq_ignore_ascii_case(b"close");
                connection_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("expect") {
            // HTTP/1.0 clients cannot expect anything (RFC 9110 §10.1.1): ignored.
            if is_http11 {
                if !header.value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                    return Err(HttpError::UnsupportedExpectation);
                }
                expect_continue = true;
            }
        } else if name.eq_ignore_ascii_case("content-type") {
            content_type = content_type.or_else(|| header_text(header.value));
        } else if name.eq_ignore_ascii_case("content-encoding") {
            content_encoding = content_encoding.or_else(|| header_text(header.value));
        }
    }
    let framing = if transfer_codings.seen {
        if !is_http11 {
            return Err(HttpError::TransferEncodingInHttp10);
        }
        if content_length.is_some() {
            return Err(HttpError::ConflictingLength);
        }
        if !transfer_codings.last_is_chunked || transfer_codings.chunked_count > 1 {
            return Err(HttpError::InvalidTransferEncoding);
        }
        if transfer_codings.other_count > 0 {
            return Err(HttpError::UnsupportedTransferEncoding);
        }
        Framing::Chunked
    } else {
        Framing::Length(content_length.unwrap_or(0))
    };
    let keep_alive = if is_http11 { !connection_close } else { connection_keep_alive && !connection_close };
    let exchange = Exchange { keep_alive, http10_keep_alive: !is_http11 && keep_alive, is_head: method == "HEAD" };
    let head = RequestHead {
        method: method.to_owned(),
        target: request.path.unwrap_or_default().to_owned(),
        content_type,
        content_encoding,
    };
    Ok(HeadParse::Complete { head, exchange, framing, expect_continue })
}

/// The codings of `Transfer-Encoding` fields, in order.
#[derive(Debug, Default)]
struct TransferCodings {
    seen: bool,
    chunked_count: usize,
    other_count: usize,
    last_is_chunked: bool,
}

impl TransferCodings {
    fn add(&mut self, value: &[u8]) {
        self.seen = true;
        for token in tokens(value) {
            // A coding may carry parameters (`gzip;q=1`); only its name matters here.
            let name = token.split(|&byte| byte == b';').next().unwrap_or_default().trim_ascii();
            self.last_is_chunked = name.eq_ignore_ascii_case(b"chunked");
            if self.last_is_chunked {
                self.chunked_count += 1;
            } else {
                self.other_count += 1;
            }
        }
    }
}

/// The non-empty comma-separated elements of a field value, trimmed.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&byte| byte == b',').map(<[u8]>::trim_ascii).filter(|token| !token.is_empty())
}

/// A field value as text (trimmed); `None` when it is not UTF-8.
fn header_text(value: &[u8]) -> Option<String> {
    std::str::from_utf8(value.trim_ascii()).ok().map(str::to_owned)
}

/// A non-negative decimal with digits only (no sign, no spaces), at most 19 digits.
pub(super) fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u64, |value, &digit| value * 10 + u64::from(digit - b'0')))
}

/// The end (exclusive) of the first empty line at or after `from`: the byte after `\n\r\n` or
/// `\n\n`.
pub(super) fn find_blank_line(buffer: &[u8], from: usize) -> Option<usize> {
    let mut idx = from;
    while let Some(offset) = buffer.get(idx..)?.iter().position(|&byte| byte == b'\n') {
        let newline = idx + offset;
        match (buffer.get(newline + 1), buffer.get(newline + 2)) {
            (Some(b'\n'), _) => return Some(newline + 2),
            (Some(b'\r'), Some(b'\n')) => return Some(newline + 3),
            _ => idx = newline + 1,
        }
    }
    None
}
