//! The sans-IO HTTP/1.1 server core: received bytes in, parsed requests out; responses in, bytes
//! to send out. No sockets, no async, no clock (the caller passes the time for `date`), so both
//! I/O back-ends drive the same code and the tests drive it byte by byte.
//!
//! One [`Connection`] per TCP connection. The driver loops on [`Connection::next_step`]:
//!
//! - [`Step::Request`]: a complete request; answer it with [`Connection::send_response`].
//! - [`Step::BodyTooLarge`]: the declared or de-chunked body exceeds the limit; answer it too
//!   (413), the connection then closes.
//! - [`Step::NeedInput`]: write out [`Connection::take_output`], then read into
//!   [`Connection::take_read_buffer`] (or call [`Connection::receive_eof`]).
//! - [`Step::Close`]: write out the remaining output, then close (lingering when
//!   [`Close::linger`] says the peer may still be sending).
//!
//! Supported: keep-alive (HTTP/1.1 by default, HTTP/1.0 with `Connection: keep-alive`),
//! `Connection: close`, pipelining (requests are answered in order), `Content-Length` and
//! `Transfer-Encoding: chunked` bodies (extensions and trailers accepted and ignored),
//! `Expect: 100-continue`, `HEAD` (no body in the answer). Malformed framing is answered
//! with 400 (431, 417, 501, 505 where they fit) and closes the connection.

#[cfg(test)]
mod tests;

use std::time::SystemTime;

use bytes::{Buf, Bytes, BytesMut};

/// Most header fields in a request head (and in a chunked body's trailer section).
pub const HEADER_COUNT_MAX: usize = 64;

/// Largest request head (request line plus header fields) by default.
pub const HEAD_BYTES_DEFAULT_MAX: usize = 16 * 1024;

/// The room [`Connection::take_read_buffer`] makes for a read when no body length is known.
const READ_RESERVE_BYTES: usize = 16 * 1024;

/// The most room reserved ahead of received bytes: a client declaring a large body and sending
/// nothing does not get the server to allocate it.
const READ_RESERVE_BYTES_MAX: usize = 1024 * 1024;

/// Longest chunk-size line without extensions: 16 hex digits and CRLF. Bytes beyond the size
/// digits count against the chunk metadata budget.
const CHUNK_SIZE_DIGITS_MAX: usize = 16;

/// Size limits of one connection's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Request line plus header fields; also the budget for chunk extensions plus trailers.
    pub head_bytes_max: usize,
    /// The request body as received (before any `Content-Encoding` is undone).
    pub body_bytes_max: usize,
}

impl Limits {
    pub fn new(body_bytes_max: usize) -> Limits {
        Limits { head_bytes_max: HEAD_BYTES_DEFAULT_MAX, body_bytes_max }
    }
}

/// The status codes this server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    UnsupportedMediaType,
    ExpectationFailed,
    RequestHeaderFieldsTooLarge,
    InternalServerError,
    NotImplemented,
    HttpVersionNotSupported,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::PayloadTooLarge => 413,
            Status::UnsupportedMediaType => 415,
            Status::ExpectationFailed => 417,
            Status::RequestHeaderFieldsTooLarge => 431,
            Status::InternalServerError => 500,
            Status::NotImplemented => 501,
            Status::HttpVersionNotSupported => 505,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::PayloadTooLarge => "Payload Too Large",
            Status::UnsupportedMediaType => "Unsupported Media Type",
            Status::ExpectationFailed => "Expectation Failed",
            Status::RequestHeaderFieldsTooLarge => "Request Header Fields Too Large",
            Status::InternalServerError => "Internal Server Error",
            Status::NotImplemented => "Not Implemented",
            Status::HttpVersionNotSupported => "HTTP Version Not Supported",
        }
    }
}

/// The content type of plain-text answers.
pub const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// An answer to one request. The core adds `content-length`, `date` and `connection`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: Status,
    pub content_type: &'static str,
    /// The `allow` header of a 405.
    pub allow: Option<&'static str>,
    pub body: Vec<u8>,
}

impl Response {
    /// A plain-text answer.
    pub fn text(status: Status, message: impl Into<String>) -> Response {
        Response { status, content_type: TEXT_PLAIN, allow: None, body: message.into().into_bytes() }
    }
}

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

/// A complete request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub head: RequestHead,
    pub body: Bytes,
}

/// A request the core cannot hand over: the connection is answered and closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("malformed request head: {0}")]
    MalformedHead(httparse::Error),
    #[error("unsupported HTTP version: use HTTP/1.1 or HTTP/1.0")]
    UnsupportedVersion,
    #[error("request head exceeds {limit} bytes")]
    HeadTooLarge { limit: usize },
    #[error("request has more than {limit} header fields")]
    TooManyHeaders { limit: usize },
    #[error("invalid Content-Length")]
    InvalidContentLength,
    #[error("request has both Transfer-Encoding and Content-Length")]
    ConflictingLength,
    #[error("Transfer-Encoding in an HTTP/1.0 request")]
    TransferEncodingInHttp10,
    #[error("Transfer-Encoding must end with chunked, applied once")]
    InvalidTransferEncoding,
    #[error("unsupported Transfer-Encoding: only chunked is implemented")]
    UnsupportedTransferEncoding,
    #[error("unsupported Expect: only 100-continue is understood")]
    UnsupportedExpectation,
    #[error("malformed chunked body: {0}")]
    MalformedChunk(&'static str),
    #[error("chunk extensions and trailer fields exceed {limit} bytes")]
    ChunkMetadataTooLarge { limit: usize },
}

impl HttpError {
    pub fn status(self) -> Status {
        match self {
            HttpError::HeadTooLarge { .. } | HttpError::TooManyHeaders { .. } => Status::RequestHeaderFieldsTooLarge,
            HttpError::ChunkMetadataTooLarge { .. } => Status::RequestHeaderFieldsTooLarge,
            HttpError::UnsupportedVersion => Status::HttpVersionNotSupported,
            HttpError::UnsupportedTransferEncoding => Status::NotImplemented,
            HttpError::UnsupportedExpectation => Status::ExpectationFailed,
            HttpError::MalformedHead(_)
            | HttpError::InvalidContentLength
            | HttpError::ConflictingLength
            | HttpError::TransferEncodingInHttp10
            | HttpError::InvalidTransferEncoding
            | HttpError::MalformedChunk(_) => Status::BadRequest,
        }
    }
}

/// Why a connection closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed its side between requests.
    PeerClosed,
    /// The peer closed its side in the middle of a request (nothing is answered).
    IncompleteRequest,
    /// The request asked for it (`Connection: close`, or HTTP/1.0 without keep-alive).
    NotKeepAlive,
    /// [`Connection::start_closing`] was called (server shutdown).
    ShuttingDown,
    /// A body over the limit was answered with 413.
    BodyTooLarge,
    /// Malformed HTTP, answered with the error's status.
    Protocol(HttpError),
}

/// The connection is done: write out the remaining output, then close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    pub reason: CloseReason,
    /// The peer may still be sending (an unread body, pipelined requests): shut down the write
    /// side and read until the peer closes (bounded), so closing with unread input does not
    /// reset the connection before the peer has read the answer.
    pub linger: bool,
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Request(Request),
    BodyTooLarge(RequestHead),
    NeedInput,
    Close(Close),
}

/// How the current request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Exchange {
    keep_alive: bool,
    /// HTTP/1.0 with `Connection: keep-alive`: the answer says `connection: keep-alive`.
    http10_keep_alive: bool,
    /// A HEAD request: the answer has no body.
    is_head: bool,
}

#[derive(Debug)]
enum State {
    /// Waiting for (the rest of) a request head.
    Head,
    FixedBody {
        exchange: Exchange,
        head: RequestHead,
        body_len: usize,
    },
    ChunkedBody {
        exchange: Exchange,
        head: RequestHead,
        decoder: ChunkedDecoder,
    },
    /// A request was handed out; [`Connection::send_response`] answers it.
    AwaitingResponse(Exchange),
    Closed(Close),
}

/// One HTTP/1.1 server connection's state.
#[derive(Debug)]
pub struct Connection {
    limits: Limits,
    input: BytesMut,
    output: Vec<u8>,
    state: State,
    /// Bytes of `input` already searched for the blank line ending the head.
    head_scanned_bytes: usize,
    peer_eof: bool,
    /// Set when the connection closes after the current exchange, and why.
    closing: Option<CloseReason>,
    date: DateCache,
}

/// The result of looking for a request head in the input.
enum HeadParse {
    Partial,
    Complete { head: RequestHead, exchange: Exchange, framing: Framing, expect_continue: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
}

impl Connection {
    pub fn new(limits: Limits) -> Connection {
        Connection {
            limits,
            input: BytesMut::new(),
            output: Vec::new(),
            state: State::Head,
            head_scanned_bytes: 0,
            peer_eof: false,
            closing: None,
            date: DateCache::default(),
        }
    }

    /// Takes the input buffer for a read that appends to it, with room reserved (the rest of the
    /// body when its length is known, up to 1 MiB, so a large body arrives in few reads). Give it
    /// back with [`Connection::restore_read_buffer`].
    pub fn take_read_buffer(&mut self) -> BytesMut {
        let wanted = match &self.state {
            State::FixedBody { body_len, .. } => {
                body_len.saturating_sub(self.input.len()).clamp(READ_RESERVE_BYTES, READ_RESERVE_BYTES_MAX)
            }
            _ => READ_RESERVE_BYTES,
        };
        if self.input.capacity() - self.input.len() < wanted / 2 {
            self.input.reserve(wanted);
        }
        std::mem::take(&mut self.input)
    }

    /// Puts back the buffer of [`Connection::take_read_buffer`] with the received bytes appended.
    pub fn restore_read_buffer(&mut self, buffer: BytesMut) {
        assert!(self.input.is_empty(), "restore_read_buffer without take_read_buffer");
        self.input = buffer;
    }

    /// Appends received bytes (a copy; the drivers read into [`Connection::take_read_buffer`]).
    pub fn receive(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
    }

    /// The peer closed its sending side.
    pub fn receive_eof(&mut self) {
        self.peer_eof = true;
    }

    /// Closes the connection after the request in progress (at once when there is none).
    pub fn start_closing(&mut self) {
        self.closing.get_or_insert(CloseReason::ShuttingDown);
    }

    /// Between requests: no request is in progress and nothing of the next one has arrived.
    pub fn is_between_requests(&self) -> bool {
        matches!(self.state, State::Head) && self.input.is_empty()
    }

    /// Bytes waiting to be written to the peer.
    pub fn pending_output(&self) -> usize {
        self.output.len()
    }

    /// Takes the bytes to write; give the buffer back with [`Connection::recycle_output`].
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// Returns a written output buffer so its allocation is reused.
    pub fn recycle_output(&mut self, mut written: Vec<u8>) {
        if self.output.is_empty() {
            written.clear();
            self.output = written;
        }
    }

    /// Advances the connection as far as the received bytes allow. `now` dates the answers the
    /// core writes itself (to malformed requests).
    pub fn next_step(&mut self, now: SystemTime) -> Step {
        loop {
            match std::mem::replace(&mut self.state, State::Head) {
                State::Closed(close) => {
                    self.state = State::Closed(close);
                    return Step::Close(close);
                }
                State::AwaitingResponse(exchange) => {
                    self.state = State::AwaitingResponse(exchange);
                    panic!("next_step called before send_response answered the request");
                }
                State::Head => {
                    if let Some(reason) = self.closing {
                        return self.close(reason);
                    }
                    match self.parse_head() {
                        Err(err) => return self.fail(err, now),
                        Ok(HeadParse::Partial) if self.peer_eof => {
                            let reason = if self.input.is_empty() {
                                CloseReason::PeerClosed
                            } else {
                                CloseReason::IncompleteRequest
                            };
                            return self.close(reason);
                        }
                        Ok(HeadParse::Partial) => return Step::NeedInput,
                        Ok(HeadParse::Complete { head, exchange, framing, expect_continue }) => {
                            let body_len = match framing {
                                Framing::Length(len) => {
                                    usize::try_from(len).ok().filter(|&len| len <= self.limits.body_bytes_max)
                                }
                                Framing::Chunked => Some(0),
                            };
                            let Some(body_len) = body_len else {
                                return self.body_too_large(exchange, head);
                            };
                            let body_expected = body_len > 0 || framing == Framing::Chunked;
                            if expect_continue && body_expected && self.input.is_empty() {
                                self.output.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                            }
                            self.state = match framing {
                                Framing::Length(_) => State::FixedBody { exchange, head, body_len },
                                Framing::Chunked => {
                                    State::ChunkedBody { exchange, head, decoder: ChunkedDecoder::default() }
                                }
                            };
                        }
                    }
                }
                State::FixedBody { exchange, head, body_len } => {
                    if self.input.len() >= body_len {
                        let body = self.input.split_to(body_len).freeze();
                        self.state = State::AwaitingResponse(exchange);
                        return Step::Request(Request { head, body });
                    }
                    if self.peer_eof {
                        return self.close(CloseReason::IncompleteRequest);
                    }
                    self.state = State::FixedBody { exchange, head, body_len };
                    return Step::NeedInput;
                }
                State::ChunkedBody { exchange, head, mut decoder } => {
                    match decoder.decode(&mut self.input, &self.limits) {
                        Ok(Some(body)) => {
                            self.state = State::AwaitingResponse(exchange);
                            return Step::Request(Request { head, body });
                        }
                        Ok(None) if self.peer_eof => return self.close(CloseReason::IncompleteRequest),
                        Ok(None) => {
                            self.state = State::ChunkedBody { exchange, head, decoder };
                            return Step::NeedInput;
                        }
                        Err(ChunkError::TooLarge) => return self.body_too_large(exchange, head),
                        Err(ChunkError::Http(err)) => return self.fail(err, now),
                    }
                }
            }
        }
    }

    /// Answers the request handed out by the last [`Step::Request`] or [`Step::BodyTooLarge`].
    ///
    /// # Panics
    /// When no request is waiting for its answer (a driver bug).
    pub fn send_response(&mut self, response: &Response, now: SystemTime) {
        let exchange = match std::mem::replace(&mut self.state, State::Head) {
            State::AwaitingResponse(exchange) => exchange,
            other => {
                self.state = other;
                panic!("send_response without a request waiting for its answer");
            }
        };
        let keep_alive = exchange.keep_alive && self.closing.is_none();
        let connection_header = match (keep_alive, exchange.http10_keep_alive) {
            (false, _) => Some("close"),
            (true, true) => Some("keep-alive"),
            (true, false) => None,
        };
        let date = self.date.header_value(now);
        write_response(&mut self.output, response, date, connection_header, !exchange.is_head);
        if !keep_alive {
            let reason = self.closing.unwrap_or(CloseReason::NotKeepAlive);
            self.state = State::Closed(self.close_with(reason));
        }
    }

    fn body_too_large(&mut self, exchange: Exchange, head: RequestHead) -> Step {
        self.closing = Some(CloseReason::BodyTooLarge);
        self.state = State::AwaitingResponse(Exchange { keep_alive: false, ..exchange });
        Step::BodyTooLarge(head)
    }

    /// Answers malformed HTTP with the error's status and closes.
    fn fail(&mut self, err: HttpError, now: SystemTime) -> Step {
        let response = Response::text(err.status(), format!("{err}\n"));
        let date = self.date.header_value(now);
        write_response(&mut self.output, &response, date, Some("close"), true);
        self.close(CloseReason::Protocol(err))
    }

    fn close(&mut self, reason: CloseReason) -> Step {
        let close = self.close_with(reason);
        self.state = State::Closed(close);
        Step::Close(close)
    }

    fn close_with(&self, reason: CloseReason) -> Close {
        let peer_may_send = matches!(reason, CloseReason::BodyTooLarge | CloseReason::Protocol(_));
        Close { reason, linger: !self.peer_eof && (peer_may_send || !self.input.is_empty()) }
    }

    /// Parses a request head from the start of the input and consumes it.
    fn parse_head(&mut self) -> Result<HeadParse, HttpError> {
        let head_bytes_max = self.limits.head_bytes_max;
        // The full parser runs only once the blank line ending the head has arrived, so a client
        // sending its head a byte at a time costs a scan of each byte once, not a parse per read.
        let Some(head_end) = find_blank_line(&self.input, self.head_scanned_bytes.saturating_sub(3)) else {
            self.head_scanned_bytes = self.input.len();
            if self.input.len() > head_bytes_max {
                return Err(HttpError::HeadTooLarge { limit: head_bytes_max });
            }
            return Ok(HeadParse::Partial);
        };
        if head_end > head_bytes_max {
            return Err(HttpError::HeadTooLarge { limit: head_bytes_max });
        }
        let mut header_slots = [httparse::EMPTY_HEADER; HEADER_COUNT_MAX];
        let mut request = httparse::Request::new(&mut header_slots);
        let head_len = match request.parse(&self.input) {
            Ok(httparse::Status::Complete(head_len)) => head_len,
            Ok(httparse::Status::Partial) => {
                // The blank line was one of the empty lines allowed before a request line.
                self.head_scanned_bytes = self.input.len();
                return Ok(HeadParse::Partial);
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(HttpError::TooManyHeaders { limit: HEADER_COUNT_MAX });
            }
            Err(httparse::Error::Version) => return Err(HttpError::UnsupportedVersion),
            Err(err) => return Err(HttpError::MalformedHead(err)),
        };
        let parsed = head_from(&request)?;
        self.input.advance(head_len);
        self.head_scanned_bytes = 0;
        Ok(parsed)
    }
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
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u64, |value, &digit| value * 10 + u64::from(digit - b'0')))
}

/// The end (exclusive) of the first empty line at or after `from`: the byte after `\n\r\n` or
/// `\n\n`.
fn find_blank_line(buffer: &[u8], from: usize) -> Option<usize> {
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

/// Why de-chunking stopped.
#[derive(Debug)]
enum ChunkError {
    TooLarge,
    Http(HttpError),
}

impl From<HttpError> for ChunkError {
    fn from(err: HttpError) -> Self {
        ChunkError::Http(err)
    }
}

#[derive(Debug, Default)]
enum ChunkState {
    #[default]
    SizeLine,
    Data {
        remaining: u64,
    },
    DataEnd,
    Trailers {
        scanned_bytes: usize,
    },
}

/// Decodes a chunked body incrementally, consuming the input it has decoded.
#[derive(Debug, Default)]
struct ChunkedDecoder {
    state: ChunkState,
    body: BytesMut,
    /// Chunk extensions and trailer fields so far, against [`Limits::head_bytes_max`].
    metadata_bytes: usize,
}

impl ChunkedDecoder {
    /// The whole body once the last chunk and the trailers are in; `None` while more is needed.
    fn decode(&mut self, input: &mut BytesMut, limits: &Limits) -> Result<Option<Bytes>, ChunkError> {
        let metadata_limit = limits.head_bytes_max;
        loop {
            match self.state {
                ChunkState::SizeLine => {
                    let Some(&first) = input.first() else { return Ok(None) };
                    if !first.is_ascii_hexdigit() {
                        return Err(HttpError::MalformedChunk("chunk size is not a hexadecimal number").into());
                    }
                    let (line_len, chunk_len) = match httparse::parse_chunk_size(input) {
                        Ok(httparse::Status::Complete(parsed)) => parsed,
                        Ok(httparse::Status::Partial) => {
                            let pending_extension = input.len().saturating_sub(CHUNK_SIZE_DIGITS_MAX + 2);
                            if self.metadata_bytes + pending_extension > metadata_limit {
                                return Err(HttpError::ChunkMetadataTooLarge { limit: metadata_limit }.into());
                            }
                            return Ok(None);
                        }
                        Err(httparse::InvalidChunkSize) => {
                            return Err(HttpError::MalformedChunk("invalid chunk size line").into());
                        }
                    };
                    if let Some(extension_start) = input[..line_len].iter().position(|&byte| byte == b';') {
                        self.metadata_bytes += line_len - extension_start;
                        if self.metadata_bytes > metadata_limit {
                            return Err(HttpError::ChunkMetadataTooLarge { limit: metadata_limit }.into());
                        }
                    }
                    input.advance(line_len);
                    if chunk_len == 0 {
                        self.state = ChunkState::Trailers { scanned_bytes: 0 };
                        continue;
                    }
                    let body_len = u64::try_from(self.body.len()).unwrap_or(u64::MAX);
                    let body_limit = u64::try_from(limits.body_bytes_max).unwrap_or(u64::MAX);
                    if body_len.saturating_add(chunk_len) > body_limit {
                        return Err(ChunkError::TooLarge);
                    }
                    self.state = ChunkState::Data { remaining: chunk_len };
                }
                ChunkState::Data { remaining } => {
                    if input.is_empty() {
                        return Ok(None);
                    }
                    let take = usize::try_from(remaining).unwrap_or(usize::MAX).min(input.len());
                    self.body.extend_from_slice(&input[..take]);
                    input.advance(take);
                    let remaining = remaining - take as u64;
                    self.state = if remaining == 0 { ChunkState::DataEnd } else { ChunkState::Data { remaining } };
                }
                ChunkState::DataEnd => match input.get(..2) {
                    Some(b"\r\n") => {
                        input.advance(2);
                        self.state = ChunkState::SizeLine;
                    }
                    None if input.first().is_none_or(|&byte| byte == b'\r') => return Ok(None),
                    _ => return Err(HttpError::MalformedChunk("chunk data not followed by CRLF").into()),
                },
                ChunkState::Trailers { scanned_bytes } => {
                    if input.starts_with(b"\r\n") {
                        input.advance(2);
                        return Ok(Some(self.body.split().freeze()));
                    }
                    if input.len() < 2 && input.first().is_none_or(|&byte| byte == b'\r') {
                        return Ok(None);
                    }
                    let Some(trailers_end) = find_blank_line(input, scanned_bytes.saturating_sub(3)) else {
                        if self.metadata_bytes + input.len() > metadata_limit {
                            return Err(HttpError::ChunkMetadataTooLarge { limit: metadata_limit }.into());
                        }
                        self.state = ChunkState::Trailers { scanned_bytes: input.len() };
                        return Ok(None);
                    };
                    self.metadata_bytes += trailers_end;
                    if self.metadata_bytes > metadata_limit {
                        return Err(HttpError::ChunkMetadataTooLarge { limit: metadata_limit }.into());
                    }
                    let mut trailer_slots = [httparse::EMPTY_HEADER; HEADER_COUNT_MAX];
                    match httparse::parse_headers(&input[..trailers_end], &mut trailer_slots) {
                        Ok(httparse::Status::Complete(_)) => {}
                        Err(httparse::Error::TooManyHeaders) => {
                            return Err(HttpError::TooManyHeaders { limit: HEADER_COUNT_MAX }.into());
                        }
                        Ok(httparse::Status::Partial) | Err(_) => {
                            return Err(HttpError::MalformedChunk("malformed trailer field").into());
                        }
                    }
                    input.advance(trailers_end);
                    return Ok(Some(self.body.split().freeze()));
                }
            }
        }
    }
}

/// Serializes a response (status line, headers, body).
fn write_response(
    output: &mut Vec<u8>,
    response: &Response,
    date: &str,
    connection_header: Option<&str>,
    include_body: bool,
) {
    output.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(output, u64::from(response.status.code()));
    output.push(b' ');
    output.extend_from_slice(response.status.reason().as_bytes());
    output.extend_from_slice(b"\r\ncontent-type: ");
    output.extend_from_slice(response.content_type.as_bytes());
    output.extend_from_slice(b"\r\ncontent-length: ");
    push_decimal(output, response.body.len() as u64);
    output.extend_from_slice(b"\r\ndate: ");
    output.extend_from_slice(date.as_bytes());
    if let Some(allow) = response.allow {
        output.extend_from_slice(b"\r\nallow: ");
        output.extend_from_slice(allow.as_bytes());
    }
    if let Some(connection) = connection_header {
        output.extend_from_slice(b"\r\nconnection: ");
        output.extend_from_slice(connection.as_bytes());
    }
    output.extend_from_slice(b"\r\n\r\n");
    if include_body {
        output.extend_from_slice(&response.body);
    }
}

fn push_decimal(output: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    output.extend_from_slice(&digits[start..]);
}

/// The `date` header value, formatted once per second.
#[derive(Debug, Default)]
struct DateCache {
    unix_seconds: u64,
    formatted: String,
}

impl DateCache {
    fn header_value(&mut self, now: SystemTime) -> &str {
        let unix_seconds = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |since| since.as_secs());
        if self.formatted.is_empty() || unix_seconds != self.unix_seconds {
            self.unix_seconds = unix_seconds;
            self.formatted = imf_fixdate(unix_seconds);
        }
        &self.formatted
    }
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`, the date format of HTTP (RFC 9110 §5.6.7).
fn imf_fixdate(unix_seconds: u64) -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let days = unix_seconds / 86_400;
    let second_of_day = unix_seconds % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian, eras of 400 years).
    let shifted_days = days + 719_468;
    let era = shifted_days / 146_097;
    let day_of_era = shifted_days % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day_of_month = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month_idx = if month_from_march < 10 { month_from_march + 2 } else { month_from_march - 10 };
    let year = year_of_era + era * 400 + u64::from(month_idx <= 1);
    format!(
        "{}, {day_of_month:02} {} {year} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[month_idx as usize],
        second_of_day / 3_600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}
