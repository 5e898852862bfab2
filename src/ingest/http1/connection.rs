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
//! The core keeps no time, but says how far the current request has come ([`Connection::progress`]:
//! between requests, in the head, in the body with so many bytes received), so the driver can
//! apply the connection deadlines; when one passes, [`Connection::time_out`] answers 408 (when part
//! of a request has arrived) and closes.
//!
//! Supported: keep-alive (HTTP/1.1 by default, HTTP/1.0 with `Connection: keep-alive`),
//! `Connection: close`, pipelining (requests are answered in order), `Content-Length` and
//! `Transfer-Encoding: chunked` bodies (extensions and trailers accepted and ignored),
//! `Expect: 100-continue`, `HEAD` (no body in the answer). Malformed framing is answered
//! with 400 (431, 417, 501, 505 where they fit) and closes the connection.
//!
//! This file is the connection state machine. The request head parser is in `head.rs`, the
//! chunked-body decoder in `chunked.rs` and the response writer in `response.rs`.

mod chunked;
mod head;
mod response;
#[cfg(test)]
mod tests;

use std::time::SystemTime;

use bytes::{Bytes, BytesMut};

use chunked::{ChunkError, ChunkedDecoder};
pub use head::RequestHead;
use head::{Exchange, Framing, HeadParse};
use response::{write_response, DateCache};
pub use response::{Response, Status, TEXT_PLAIN};

/// Most header fields in a request head (and in a chunked body's trailer section).
pub const HEADER_COUNT_MAX: usize = 64;

/// The room [`Connection::take_read_buffer`] makes for a read when no body length is known.
const READ_RESERVE_BYTES: usize = 16 * 1024;

/// The most room reserved ahead of received bytes. Below it, the room ahead is at most the
/// bytes already received (and at least [`READ_RESERVE_BYTES`]): the buffer grows by doubling
/// as the body arrives, so a large body still comes in few reads, but a client that declares a
/// large body and drips it holds the server to about twice what it has sent (4,096 dripping
/// connections once held 1 MiB each).
const READ_RESERVE_BYTES_MAX: usize = 1024 * 1024;

/// Size limits of one connection's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Request line plus header fields (`--max-header-bytes`); also the budget for chunk
    /// extensions plus trailers.
    pub head_bytes_max: usize,
    /// The request body as received, before any `Content-Encoding` is undone
    /// (`--max-request-bytes`).
    pub body_bytes_max: usize,
}

/// How far the request being received has come, for the driver's deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// No byte of a next request has arrived (or the connection is closing).
    BetweenRequests,
    /// Part of a request head has arrived.
    Head,
    /// The head is complete; so many body bytes have arrived (chunked: decoded plus pending).
    Body { received_bytes: u64 },
    /// A request was handed out and waits for its answer.
    Answering,
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
    /// A deadline the driver keeps passed ([`Connection::time_out`]); answered with 408 when part
    /// of a request had arrived.
    TimedOut,
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

    /// Takes the input buffer for a read that appends to it, with room reserved (when the body's
    /// length is known, the rest of it, but no more than the bytes already buffered or 1 MiB:
    /// see [`READ_RESERVE_BYTES_MAX`]). Give it back with [`Connection::restore_read_buffer`].
    pub fn take_read_buffer(&mut self) -> BytesMut {
        let wanted = match &self.state {
            State::FixedBody { body_len, .. } => {
                let ahead_max = self.input.len().clamp(READ_RESERVE_BYTES, READ_RESERVE_BYTES_MAX);
                body_len.saturating_sub(self.input.len()).clamp(READ_RESERVE_BYTES, ahead_max)
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

    /// How far the request being received has come.
    pub fn progress(&self) -> Progress {
        match &self.state {
            State::Head if self.input.is_empty() => Progress::BetweenRequests,
            State::Head => Progress::Head,
            State::FixedBody { body_len, .. } => {
                Progress::Body { received_bytes: self.input.len().min(*body_len) as u64 }
            }
            State::ChunkedBody { decoder, .. } => {
                Progress::Body { received_bytes: (decoder.decoded_bytes() + self.input.len()) as u64 }
            }
            State::AwaitingResponse(_) => Progress::Answering,
            State::Closed(_) => Progress::BetweenRequests,
        }
    }

    /// The request being received (or the wait for one) ran out of time: when part of a request
    /// has arrived, answers 408 and closes; otherwise just closes. The next step is
    /// [`Step::Close`].
    ///
    /// # Panics
    /// While a request waits for its answer (a driver bug: answer it first).
    pub fn time_out(&mut self, now: SystemTime) {
        match self.progress() {
            Progress::Answering => panic!("time_out while a request waits for its answer"),
            _ if matches!(self.state, State::Closed(_)) => {}
            Progress::BetweenRequests => {
                self.close(CloseReason::TimedOut);
            }
            Progress::Head | Progress::Body { .. } => {
                let response =
                    Response::text(Status::RequestTimeout, "request timed out: the request arrived too slowly\n");
                let date = self.date.header_value(now);
                write_response(&mut self.output, &response, date, Some("close"), true);
                // The peer is still sending: linger so it reads the 408 before the close.
                self.state = State::Closed(Close { reason: CloseReason::TimedOut, linger: !self.peer_eof });
            }
        }
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
                    match head::parse_head(&mut self.input, &mut self.head_scanned_bytes, self.limits.head_bytes_max) {
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
}
