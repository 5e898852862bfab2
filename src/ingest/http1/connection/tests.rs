//! Byte-level tables for the HTTP/1.1 core: each input is also fed split at every byte boundary
//! and one byte at a time, and must give the same requests and the same output.

use std::time::{Duration, SystemTime};

use super::head::{find_blank_line, parse_decimal};
use super::response::{imf_fixdate, push_decimal};
use super::*;

/// Sun, 06 Nov 1994 08:49:37 GMT, the example date of RFC 9110.
fn test_now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777)
}

const LIMITS: Limits = Limits { head_bytes_max: 1024, body_bytes_max: 64 };

/// What a connection did with some input.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Transcript {
    /// `METHOD target body` of each request handed out, `too-large METHOD target` for 413s.
    requests: Vec<String>,
    output: Vec<u8>,
    close: Option<Close>,
}

/// Feeds `chunks` one after another (then EOF when `eof`), answering every request with
/// 200 `ok` and every oversize body with 413.
fn run_with(limits: Limits, chunks: &[&[u8]], eof: bool) -> Transcript {
    let mut connection = Connection::new(limits);
    let mut transcript = Transcript { requests: Vec::new(), output: Vec::new(), close: None };
    let mut chunks = chunks.iter();
    loop {
        match connection.next_step(test_now()) {
            Step::Request(request) => {
                transcript.requests.push(format!(
                    "{} {} {}",
                    request.head.method,
                    request.head.target,
                    String::from_utf8_lossy(&request.body)
                ));
                connection.send_response(&Response::text(Status::Ok, "ok"), test_now());
            }
            Step::BodyTooLarge(head) => {
                transcript.requests.push(format!("too-large {} {}", head.method, head.target));
                connection.send_response(&Response::text(Status::PayloadTooLarge, "too large"), test_now());
            }
            Step::NeedInput => {
                transcript.output.extend(connection.take_output());
                match chunks.next() {
                    Some(chunk) => connection.receive(chunk),
                    None if eof => connection.receive_eof(),
                    None => return transcript,
                }
            }
            Step::Close(close) => {
                transcript.output.extend(connection.take_output());
                transcript.close = Some(close);
                return transcript;
            }
        }
    }
}

fn run(input: &[u8], eof: bool) -> Transcript {
    run_with(LIMITS, &[input], eof)
}

/// Runs `input` whole, split in two at every boundary, and byte by byte; all must agree (but for
/// `100 Continue`, sent only when the body has not arrived with the head, and lingering, done
/// only when unread bytes have arrived).
fn run_every_split(limits: Limits, input: &[u8], eof: bool) -> Transcript {
    let whole = without_continue(run_with(limits, &[input], eof));
    for split_idx in 0..=input.len() {
        let (first, second) = input.split_at(split_idx);
        let split = without_continue(run_with(limits, &[first, second], eof));
        assert_eq!(split, whole, "split at byte {split_idx} of {:?}", String::from_utf8_lossy(input));
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    let byte_by_byte = without_continue(run_with(limits, &bytes, eof));
    assert_eq!(byte_by_byte, whole, "byte by byte: {:?}", String::from_utf8_lossy(input));
    whole
}

fn without_continue(mut transcript: Transcript) -> Transcript {
    const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
    if transcript.output.starts_with(CONTINUE) {
        transcript.output.drain(..CONTINUE.len());
    }
    if let Some(close) = &mut transcript.close {
        close.linger = false;
    }
    transcript
}

/// One parsed response of the output.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }
}

/// Splits the output into responses (bodies by content-length, none for 1xx).
fn answers(mut output: &[u8]) -> Vec<Answer> {
    let mut found = Vec::new();
    while !output.is_empty() {
        let mut header_slots = [httparse::EMPTY_HEADER; 16];
        let mut response = httparse::Response::new(&mut header_slots);
        let head_len = match response.parse(output).expect("well-formed response") {
            httparse::Status::Complete(head_len) => head_len,
            httparse::Status::Partial => panic!("truncated response: {:?}", String::from_utf8_lossy(output)),
        };
        let headers: Vec<(String, String)> = response
            .headers
            .iter()
            .map(|header| (header.name.to_owned(), String::from_utf8(header.value.to_vec()).unwrap()))
            .collect();
        let status = response.code.unwrap();
        let body_len = if status < 200 {
            0
        } else {
            headers.iter().find(|(key, _)| key == "content-length").unwrap().1.parse().unwrap()
        };
        found.push(Answer { status, headers, body: output[head_len..head_len + body_len].to_vec() });
        output = &output[head_len + body_len..];
    }
    found
}

fn statuses(transcript: &Transcript) -> Vec<u16> {
    answers(&transcript.output).iter().map(|answer| answer.status).collect()
}

/// The table: input, whether the peer closes after it, the requests handed out, the statuses
/// answered, and how the connection ends (`None`: still open, waiting for more).
struct Case {
    name: &'static str,
    input: &'static [u8],
    eof: bool,
    requests: &'static [&'static str],
    statuses: &'static [u16],
    close: Option<CloseReason>,
}

const CASES: &[Case] = &[
    Case {
        name: "content-length body, keep-alive",
        input: b"POST /v1/metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        eof: false,
        requests: &["POST /v1/metrics hello"],
        statuses: &[200],
        close: None,
    },
    Case {
        name: "no body, then the peer closes",
        input: b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n",
        eof: true,
        requests: &["GET /healthz "],
        statuses: &[200],
        close: Some(CloseReason::PeerClosed),
    },
    Case {
        name: "bare LF line ends and a blank line before the request line",
        input: b"\r\nPOST /x HTTP/1.1\nContent-Length: 2\n\nab",
        eof: false,
        requests: &["POST /x ab"],
        statuses: &[200],
        close: None,
    },
    Case {
        name: "pipelined requests are answered in order",
        input: b"POST /a HTTP/1.1\r\nContent-Length: 1\r\n\r\nxPOST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nyyGET /c HTTP/1.1\r\n\r\n",
        eof: true,
        requests: &["POST /a x", "POST /b yy", "GET /c "],
        statuses: &[200, 200, 200],
        close: Some(CloseReason::PeerClosed),
    },
    Case {
        name: "connection: close ends after the answer",
        input: b"POST /a HTTP/1.1\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
        eof: false,
        requests: &["POST /a x"],
        statuses: &[200],
        close: Some(CloseReason::NotKeepAlive),
    },
    Case {
        name: "connection: close stops a pipeline",
        input: b"GET /a HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
        eof: false,
        requests: &["GET /a "],
        statuses: &[200],
        close: Some(CloseReason::NotKeepAlive),
    },
    Case {
        name: "HTTP/1.0 closes by default",
        input: b"POST /a HTTP/1.0\r\nContent-Length: 1\r\n\r\nx",
        eof: false,
        requests: &["POST /a x"],
        statuses: &[200],
        close: Some(CloseReason::NotKeepAlive),
    },
    Case {
        name: "HTTP/1.0 keep-alive stays open",
        input: b"POST /a HTTP/1.0\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\nxGET /b HTTP/1.0\r\n\r\n",
        eof: false,
        requests: &["POST /a x", "GET /b "],
        statuses: &[200, 200],
        close: Some(CloseReason::NotKeepAlive),
    },
    Case {
        name: "chunked with extensions and trailers",
        input: b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n1 ; x\r\n,\r\n6\r\n world\r\n0;last\r\nTrailer-One: 1\r\nTrailer-Two: 2\r\n\r\n",
        eof: false,
        requests: &["POST /c hello, world"],
        statuses: &[200],
        close: None,
    },
    Case {
        name: "chunked, upper-case hex and no trailers, then a pipelined request",
        input: b"POST /c HTTP/1.1\r\ntransfer-encoding: Chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\nGET /d HTTP/1.1\r\n\r\n",
        eof: false,
        requests: &["POST /c 0123456789", "GET /d "],
        statuses: &[200, 200],
        close: None,
    },
    Case {
        name: "identical content-length values are one length",
        input: b"POST /a HTTP/1.1\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\nabc",
        eof: false,
        requests: &["POST /a abc"],
        statuses: &[200],
        close: None,
    },
    Case {
        name: "content-length over the limit is refused before the body",
        input: b"POST /v1/metrics HTTP/1.1\r\nContent-Length: 65\r\n\r\n",
        eof: false,
        requests: &["too-large POST /v1/metrics"],
        statuses: &[413],
        close: Some(CloseReason::BodyTooLarge),
    },
    Case {
        name: "content-length at the limit is fine",
        input: b"POST /a HTTP/1.1\r\nContent-Length: 64\r\n\r\n0123456789012345678901234567890123456789012345678901234567890123",
        eof: false,
        requests: &["POST /a 0123456789012345678901234567890123456789012345678901234567890123"],
        statuses: &[200],
        close: None,
    },
    Case {
        name: "chunked body over the limit is refused while de-chunking",
        input: b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n20\r\n01234567890123456789012345678901\r\n21\r\n",
        eof: false,
        requests: &["too-large POST /a"],
        statuses: &[413],
        close: Some(CloseReason::BodyTooLarge),
    },
    Case {
        name: "huge content-length",
        input: b"POST /a HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
        eof: false,
        requests: &[],
        statuses: &[400],
        close: Some(CloseReason::Protocol(HttpError::InvalidContentLength)),
    },
    Case {
        name: "signed content-length",
        input: b"POST /a HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello",
        eof: false,
        requests: &[],
        statuses: &[400],
        close: Some(CloseReason::Protocol(HttpError::InvalidContentLength)),
    },
    Case {
        name: "conflicting content-length values",
        input: b"POST /a HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        eof: false,
        requests: &[],
        statuses: &[400],
        close: Some(CloseReason::Protocol(HttpError::InvalidContentLength)),
    },
    Case {
        name: "content-length and transfer-encoding together",
        input: b"POST /a HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        eof: false,
        requests: &[],
        statuses: &[400],
        close: Some(CloseReason::Protocol(HttpError::ConflictingLength)),
    },
    Case {
        name: "chunked is not the final coding",
        input: b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        eof: false,
        requests: &[],
        statuses: &[400],
        close: Some(CloseReason::Protocol(HttpError::InvalidTransferEncoding)),
    },
    Case {
        name: "a transfer coding other than chunked",
        input: b"POST /a HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
        eof: false,
        requests: &[],
        statuses: &[501],
        close: Some(CloseReason::Protocol(HttpError::UnsupportedTransferEncoding)),
    },
    Case {
        name: "transfer-encoding in HTTP/1.0",
        input: b"POST /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        eof: false,
        requests: &[],
        statuses: &[400],
        close: Some(CloseReason::Protocol(HttpError::TransferEncodingInHttp10)),
    },
    Case {
        name: "bad chunk size",
        input: b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        eof: false,
        requests: &[],
        statuses: &[400],
        close: Some(CloseReason::Protocol(HttpError::MalformedChunk("chunk size is not a hexadecimal number"))),
    },
    Case {
        name: "empty chunk size",
        input: b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n;ext\r\n",
        eof: false,
        requests: &[],
        statuses: &[400],
        close: Some(CloseReason::Protocol(HttpError::MalformedChunk("chunk size is not a hexadecimal number"))),
    },
    Case {
        name: "chunk data without its CRLF",
        input: b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n0\r\n\r\n",
        eof: false,
        requests: &[],
        statuses: &[400],
        close: Some(CloseReason::Protocol(HttpError::MalformedChunk("chunk data not followed by CRLF"))),
    },
    Case {
        name: "malformed trailer",
        input: b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nno colon here\r\n\r\n",
        eof: false,
        requests: &[],
        statuses: &[400],
        close: Some(CloseReason::Protocol(HttpError::MalformedChunk("malformed trailer field"))),
    },
    Case {
        name: "garbage request line",
        input: b"HELLO THERE\r\n\r\n",
        eof: false,
        requests: &[],
        statuses: &[400],
        close: Some(CloseReason::Protocol(HttpError::MalformedHead(httparse::Error::Token))),
    },
    Case {
        name: "space in a header name",
        input: b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        eof: false,
        requests: &[],
        statuses: &[400],
        close: Some(CloseReason::Protocol(HttpError::MalformedHead(httparse::Error::HeaderName))),
    },
    Case {
        name: "HTTP/2 prior knowledge",
        input: b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        eof: false,
        requests: &[],
        statuses: &[505],
        close: Some(CloseReason::Protocol(HttpError::UnsupportedVersion)),
    },
    Case {
        name: "unknown expectation",
        input: b"POST /a HTTP/1.1\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\nx",
        eof: false,
        requests: &[],
        statuses: &[417],
        close: Some(CloseReason::Protocol(HttpError::UnsupportedExpectation)),
    },
    Case {
        name: "expectations of HTTP/1.0 clients are ignored",
        input: b"POST /a HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
        eof: false,
        requests: &["POST /a x"],
        statuses: &[200],
        close: Some(CloseReason::NotKeepAlive),
    },
    Case {
        name: "expect 100-continue with the body already sent: no 100",
        input: b"POST /a HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
        eof: false,
        requests: &["POST /a x"],
        statuses: &[200],
        close: None,
    },
    Case {
        name: "expect 100-continue with an oversize body: 413, no 100",
        input: b"POST /a HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1000\r\n\r\n",
        eof: false,
        requests: &["too-large POST /a"],
        statuses: &[413],
        close: Some(CloseReason::BodyTooLarge),
    },
    Case {
        name: "peer closes in the middle of the head",
        input: b"POST /a HTTP/1.1\r\nContent-Len",
        eof: true,
        requests: &[],
        statuses: &[],
        close: Some(CloseReason::IncompleteRequest),
    },
    Case {
        name: "peer closes in the middle of the body",
        input: b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhel",
        eof: true,
        requests: &[],
        statuses: &[],
        close: Some(CloseReason::IncompleteRequest),
    },
    Case {
        name: "peer closes in the middle of a chunked body",
        input: b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        eof: true,
        requests: &[],
        statuses: &[],
        close: Some(CloseReason::IncompleteRequest),
    },
    Case {
        name: "partial request waits for more",
        input: b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhel",
        eof: false,
        requests: &[],
        statuses: &[],
        close: None,
    },
];

#[test]
fn table_at_every_split() {
    for case in CASES {
        let transcript = run_every_split(LIMITS, case.input, case.eof);
        assert_eq!(transcript.requests, case.requests, "{}", case.name);
        assert_eq!(statuses(&transcript), case.statuses, "{}", case.name);
        assert_eq!(transcript.close.map(|close| close.reason), case.close, "{}", case.name);
    }
}

#[test]
fn answers_carry_length_date_and_connection() {
    let transcript = run(b"POST /a HTTP/1.1\r\nContent-Length: 1\r\n\r\nx", false);
    assert_eq!(
        String::from_utf8(transcript.output).unwrap(),
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 2\r\n\
         date: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\nok"
    );
    let transcript = run(b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\n", false);
    assert_eq!(answers(&transcript.output)[0].header("connection"), Some("close"));
    let transcript = run(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", false);
    assert_eq!(answers(&transcript.output)[0].header("connection"), Some("keep-alive"));
    assert_eq!(transcript.close, None);
}

#[test]
fn expect_continue_is_answered_before_the_body_is_read() {
    let head = b"POST /v1/metrics HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 5\r\n\r\n";
    let transcript = run_with(LIMITS, &[head], false);
    assert_eq!(transcript.output, b"HTTP/1.1 100 Continue\r\n\r\n");
    assert!(transcript.requests.is_empty());
    let transcript = run_with(LIMITS, &[head, b"hello"], false);
    assert_eq!(transcript.requests, ["POST /v1/metrics hello"]);
    assert_eq!(statuses(&transcript), [100, 200]);
    // Chunked bodies too.
    let head = b"POST /a HTTP/1.1\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n";
    let transcript = run_with(LIMITS, &[head, b"3\r\nabc\r\n0\r\n\r\n"], false);
    assert_eq!(statuses(&transcript), [100, 200]);
    // No body, nothing to continue.
    let transcript = run(b"POST /a HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n", false);
    assert_eq!(statuses(&transcript), [200]);
}

#[test]
fn head_requests_get_no_body() {
    let transcript = run(b"HEAD /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n", false);
    let text = String::from_utf8(transcript.output).unwrap();
    // The HEAD answer declares the length of the body it leaves out; the GET answer follows.
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert_eq!(text.matches("content-length: 2\r\n").count(), 2, "{text}");
    assert_eq!(text.matches("\r\n\r\nok").count(), 1, "{text}");
    assert!(text.ends_with("\r\n\r\nok"), "{text}");
    assert_eq!(transcript.requests, ["HEAD /a ", "GET /b "]);
}

#[test]
fn head_and_header_count_limits() {
    let limits = Limits { head_bytes_max: 64, body_bytes_max: 64 };
    let long_head = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(64));
    let transcript = run_with(limits, &[long_head.as_bytes()], false);
    assert_eq!(statuses(&transcript), [431]);
    assert_eq!(transcript.close.unwrap().reason, CloseReason::Protocol(HttpError::HeadTooLarge { limit: 64 }));
    // Refused as soon as the limit is crossed, without waiting for the end of the head.
    let endless = format!("GET /{}", "a".repeat(100));
    let transcript = run_with(limits, &[endless.as_bytes()], false);
    assert_eq!(statuses(&transcript), [431]);

    let mut many_headers = String::from("GET / HTTP/1.1\r\n");
    for header_idx in 0..=HEADER_COUNT_MAX {
        many_headers.push_str(&format!("x-{header_idx}: v\r\n"));
    }
    many_headers.push_str("\r\n");
    let transcript =
        run_with(Limits { head_bytes_max: 16 * 1024, body_bytes_max: 64 }, &[many_headers.as_bytes()], false);
    assert_eq!(statuses(&transcript), [431]);
    assert_eq!(
        transcript.close.unwrap().reason,
        CloseReason::Protocol(HttpError::TooManyHeaders { limit: HEADER_COUNT_MAX })
    );
}

#[test]
fn chunk_extensions_and_trailers_are_bounded() {
    let limits = Limits { head_bytes_max: 64, body_bytes_max: 1024 };
    let long_extension =
        format!("POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(100));
    let transcript = run_with(limits, &[long_extension.as_bytes()], false);
    assert_eq!(statuses(&transcript), [431]);
    // Without an end of line in sight, too.
    let transcript = run_with(limits, &[&long_extension.as_bytes()[..long_extension.len() - 20]], false);
    assert_eq!(statuses(&transcript), [431]);
    // Many small extensions add up.
    let mut many = String::from("POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    for _ in 0..20 {
        many.push_str("1;abcdef\r\nx\r\n");
    }
    let transcript = run_with(limits, &[many.as_bytes()], false);
    assert_eq!(statuses(&transcript), [431]);
    let long_trailer =
        format!("POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nx-trailer: {}\r\n\r\n", "t".repeat(100));
    let transcript = run_with(limits, &[long_trailer.as_bytes()], false);
    assert_eq!(statuses(&transcript), [431]);
}

#[test]
fn malformed_requests_are_answered_then_closed_with_linger() {
    let transcript = run(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", false);
    let answer = &answers(&transcript.output)[0];
    assert_eq!(answer.status, 400);
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(String::from_utf8_lossy(&answer.body).contains("Content-Length"));
    assert!(transcript.close.unwrap().linger, "the peer may still be sending");
    // The peer already closed: nothing to linger for.
    let mut connection = Connection::new(LIMITS);
    connection.receive(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n");
    connection.receive_eof();
    let Step::Close(close) = connection.next_step(test_now()) else { panic!("malformed requests close") };
    assert!(!close.linger);
}

#[test]
fn oversize_answer_closes_with_linger() {
    let transcript = run(b"POST /a HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc", false);
    let close = transcript.close.unwrap();
    assert_eq!(close.reason, CloseReason::BodyTooLarge);
    assert!(close.linger);
    assert_eq!(answers(&transcript.output)[0].header("connection"), Some("close"));
}

#[test]
fn start_closing_closes_idle_connections_at_once_and_busy_ones_after_the_answer() {
    let mut connection = Connection::new(LIMITS);
    assert_eq!(connection.next_step(test_now()), Step::NeedInput);
    assert!(connection.is_between_requests());
    connection.start_closing();
    assert_eq!(
        connection.next_step(test_now()),
        Step::Close(Close { reason: CloseReason::ShuttingDown, linger: false })
    );

    let mut connection = Connection::new(LIMITS);
    connection.receive(b"POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\na");
    assert_eq!(connection.next_step(test_now()), Step::NeedInput);
    assert!(!connection.is_between_requests());
    connection.start_closing();
    connection.receive(b"b");
    let Step::Request(request) = connection.next_step(test_now()) else { panic!("the request completes") };
    assert_eq!(&request.body[..], b"ab");
    connection.send_response(&Response::text(Status::Ok, "ok"), test_now());
    let output = connection.take_output();
    assert_eq!(answers(&output)[0].header("connection"), Some("close"));
    assert_eq!(
        connection.next_step(test_now()),
        Step::Close(Close { reason: CloseReason::ShuttingDown, linger: false })
    );
}

#[test]
fn read_buffer_round_trip_and_body_reservation() {
    let mut connection = Connection::new(Limits { head_bytes_max: 1024, body_bytes_max: 1 << 20 });
    let mut buffer = connection.take_read_buffer();
    buffer.extend_from_slice(b"POST /a HTTP/1.1\r\nContent-Length: 100000\r\n\r\n");
    connection.restore_read_buffer(buffer);
    assert_eq!(connection.next_step(test_now()), Step::NeedInput);
    let mut buffer = connection.take_read_buffer();
    let room = buffer.capacity() - buffer.len();
    assert!((8 * 1024..=64 * 1024).contains(&room), "room for the first bytes only: {room}");
    // As bytes arrive the room ahead doubles: the rest of the body once half of it is here.
    buffer.extend_from_slice(&[b'x'; 50_000]);
    connection.restore_read_buffer(buffer);
    assert_eq!(connection.next_step(test_now()), Step::NeedInput);
    let buffer = connection.take_read_buffer();
    assert!(buffer.capacity() - buffer.len() >= 50_000, "room for the rest of the body in one read");
    connection.restore_read_buffer(buffer);

    // A large declared body is not allocated ahead of its bytes.
    let mut connection = Connection::new(Limits { head_bytes_max: 1024, body_bytes_max: 64 << 20 });
    connection.receive(b"POST /a HTTP/1.1\r\nContent-Length: 60000000\r\n\r\n");
    assert_eq!(connection.next_step(test_now()), Step::NeedInput);
    let buffer = connection.take_read_buffer();
    assert!(buffer.capacity() <= 4 * READ_RESERVE_BYTES, "reserved {} bytes ahead of none", buffer.capacity());
    connection.restore_read_buffer(buffer);
}

#[test]
fn progress_tells_the_driver_how_far_a_request_has_come() {
    let mut connection = Connection::new(LIMITS);
    assert_eq!(connection.progress(), Progress::BetweenRequests);
    connection.receive(b"POST /a HTTP/1.1\r\nContent-");
    assert_eq!(connection.next_step(test_now()), Step::NeedInput);
    assert_eq!(connection.progress(), Progress::Head);
    connection.receive(b"Length: 10\r\n\r\nabc");
    assert_eq!(connection.next_step(test_now()), Step::NeedInput);
    assert_eq!(connection.progress(), Progress::Body { received_bytes: 3 });
    // Bytes of a pipelined request do not count for this body.
    connection.receive(b"defghijGET /b HTTP/1.1\r\n");
    assert!(matches!(connection.next_step(test_now()), Step::Request(_)));
    assert_eq!(connection.progress(), Progress::Answering);
    connection.send_response(&Response::text(Status::Ok, "ok"), test_now());
    assert_eq!(connection.next_step(test_now()), Step::NeedInput);
    assert_eq!(connection.progress(), Progress::Head);

    let mut chunked = Connection::new(LIMITS);
    chunked.receive(b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\nab");
    assert_eq!(chunked.next_step(test_now()), Step::NeedInput);
    assert_eq!(chunked.progress(), Progress::Body { received_bytes: 7 });
}

#[test]
fn a_timed_out_request_is_answered_408_and_closed_an_idle_connection_just_closed() {
    for partial in [&b"POST /v1/metrics HTTP/1.1\r\nHost"[..], b"POST /a HTTP/1.1\r\nContent-Length: 10\r\n\r\nab"] {
        let mut connection = Connection::new(LIMITS);
        connection.receive(partial);
        assert_eq!(connection.next_step(test_now()), Step::NeedInput);
        connection.time_out(test_now());
        let output = connection.take_output();
        let answer = &answers(&output)[0];
        assert_eq!((answer.status, answer.header("connection")), (408, Some("close")));
        assert_eq!(
            connection.next_step(test_now()),
            Step::Close(Close { reason: CloseReason::TimedOut, linger: true }),
            "the peer may still be sending: linger"
        );
    }
    let mut idle = Connection::new(LIMITS);
    assert_eq!(idle.next_step(test_now()), Step::NeedInput);
    idle.time_out(test_now());
    assert_eq!(idle.pending_output(), 0);
    assert_eq!(idle.next_step(test_now()), Step::Close(Close { reason: CloseReason::TimedOut, linger: false }));
}

#[test]
fn output_buffers_are_recycled() {
    let mut connection = Connection::new(LIMITS);
    connection.receive(b"GET /a HTTP/1.1\r\n\r\n");
    assert!(matches!(connection.next_step(test_now()), Step::Request(_)));
    connection.send_response(&Response::text(Status::Ok, "ok"), test_now());
    let written = connection.take_output();
    let capacity = written.capacity();
    connection.recycle_output(written);
    assert_eq!(connection.pending_output(), 0);
    assert_eq!(connection.take_output().capacity(), capacity);
}

#[test]
fn http_dates() {
    let cases = [
        (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
        (784_111_777, "Sun, 06 Nov 1994 08:49:37 GMT"),
        (951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT"),
        (1_796_083_199, "Mon, 30 Nov 2026 23:59:59 GMT"),
        (4_107_542_400, "Mon, 01 Mar 2100 00:00:00 GMT"),
    ];
    for (unix_seconds, expected) in cases {
        assert_eq!(imf_fixdate(unix_seconds), expected, "{unix_seconds}");
    }
}

#[test]
fn blank_line_search() {
    let cases: &[(&[u8], usize, Option<usize>)] = &[
        (b"GET / HTTP/1.1\r\n\r\n", 0, Some(18)),
        (b"GET / HTTP/1.1\n\n", 0, Some(16)),
        (b"GET / HTTP/1.1\r\nA: b\r\n", 0, None),
        (b"GET / HTTP/1.1\r\nA: b\r\n\r", 0, None),
        (b"A\r\n\r\nB\r\n\r\n", 4, Some(10)),
        (b"", 0, None),
        (b"\n", 5, None),
    ];
    for &(buffer, from, expected) in cases {
        assert_eq!(find_blank_line(buffer, from), expected, "{:?} from {from}", String::from_utf8_lossy(buffer));
    }
}

#[test]
fn request_paths() {
    let cases = [
        ("/v1/metrics", "/v1/metrics"),
        ("/v1/metrics?a=b", "/v1/metrics"),
        ("/v1/metrics#frag", "/v1/metrics"),
        ("http://host:4318/v1/metrics?x", "/v1/metrics"),
        ("https://host", "/"),
        ("*", "*"),
        ("/a?b=http://c/d", "/a"),
    ];
    for (target, path) in cases {
        let head =
            RequestHead { method: "POST".into(), target: target.into(), content_type: None, content_encoding: None };
        assert_eq!(head.path(), path, "{target}");
    }
}

#[test]
fn decimal_and_status_tables() {
    assert_eq!(parse_decimal(b"0"), Some(0));
    assert_eq!(parse_decimal(b"18446744073709551615"), None);
    assert_eq!(parse_decimal(b"9999999999999999999"), Some(9_999_999_999_999_999_999));
    assert_eq!(parse_decimal(b""), None);
    assert_eq!(parse_decimal(b"1 2"), None);
    let mut output = Vec::new();
    for value in [0, 7, 10, 12345, u64::MAX] {
        output.clear();
        push_decimal(&mut output, value);
        assert_eq!(output, value.to_string().as_bytes());
    }
    for status in [Status::Ok, Status::BadRequest, Status::RequestHeaderFieldsTooLarge, Status::HttpVersionNotSupported]
    {
        assert!(!status.reason().is_empty());
        assert!((200..600).contains(&status.code()));
    }
}

#[test]
#[should_panic(expected = "before send_response")]
fn next_step_before_answering_is_a_driver_bug() {
    let mut connection = Connection::new(LIMITS);
    connection.receive(b"GET /a HTTP/1.1\r\n\r\n");
    assert!(matches!(connection.next_step(test_now()), Step::Request(_)));
    connection.next_step(test_now());
}
