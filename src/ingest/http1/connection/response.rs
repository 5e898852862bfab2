//! Answers: the status codes, the [`Response`] a receiver hands back, and its serialization
//! (status line, `content-type`, `content-length`, `date`, `allow`, `retry-after`, `connection`,
//! body) with the
//! `date` value cached per second.

use std::time::SystemTime;

/// The status codes this server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    PayloadTooLarge,
    UnsupportedMediaType,
    ExpectationFailed,
    RequestHeaderFieldsTooLarge,
    InternalServerError,
    NotImplemented,
    ServiceUnavailable,
    HttpVersionNotSupported,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::RequestTimeout => 408,
            Status::PayloadTooLarge => 413,
            Status::UnsupportedMediaType => 415,
            Status::ExpectationFailed => 417,
            Status::RequestHeaderFieldsTooLarge => 431,
            Status::InternalServerError => 500,
            Status::NotImplemented => 501,
            Status::ServiceUnavailable => 503,
            Status::HttpVersionNotSupported => 505,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::RequestTimeout => "Request Timeout",
            Status::PayloadTooLarge => "Payload Too Large",
            Status::UnsupportedMediaType => "Unsupported Media Type",
            Status::ExpectationFailed => "Expectation Failed",
            Status::RequestHeaderFieldsTooLarge => "Request Header Fields Too Large",
            Status::InternalServerError => "Internal Server Error",
            Status::NotImplemented => "Not Implemented",
            Status::ServiceUnavailable => "Service Unavailable",
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
    /// The `retry-after` header (seconds) of a 503.
    pub retry_after_s: Option<u64>,
    pub body: Vec<u8>,
}

impl Response {
    /// A plain-text answer.
    pub fn text(status: Status, message: impl Into<String>) -> Response {
        Response {
            status,
            content_type: TEXT_PLAIN,
            allow: None,
            retry_after_s: None,
            body: message.into().into_bytes(),
        }
    }
}

/// Serializes a response (status line, headers, body).
pub(super) fn write_response(
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
    if let Some(retry_after_s) = response.retry_after_s {
        output.extend_from_slice(b"\r\nretry-after: ");
        push_decimal(output, retry_after_s);
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

pub(super) fn push_decimal(output: &mut Vec<u8>, mut value: u64) {
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
pub(super) struct DateCache {
    unix_seconds: u64,
    formatted: String,
}

impl DateCache {
    pub(super) fn header_value(&mut self, now: SystemTime) -> &str {
        let unix_seconds = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |since| since.as_secs());
        if self.formatted.is_empty() || unix_seconds != self.unix_seconds {
            self.unix_seconds = unix_seconds;
            self.formatted = imf_fixdate(unix_seconds);
        }
        &self.formatted
    }
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`, the date format of HTTP (RFC 9110 §5.6.7).
pub(super) fn imf_fixdate(unix_seconds: u64) -> String {
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
