//! Request bodies → `ExportMetricsServiceRequest`: content type, content encoding with a
//! decompressed-size limit (a gzip or zstd bomb is cut off while inflating), protobuf or OTLP JSON.

use std::io::Read;

use bytes::Bytes;
use flate2::read::MultiGzDecoder;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;

/// How a request body is encoded (and so how the response is encoded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadFormat {
    Protobuf,
    Json,
}

impl PayloadFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            PayloadFormat::Protobuf => "application/x-protobuf",
            PayloadFormat::Json => "application/json",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unsupported Content-Type `{0}`: use application/x-protobuf or application/json")]
    UnsupportedContentType(String),
    #[error("unsupported Content-Encoding `{0}`: use gzip, zstd or none")]
    UnsupportedContentEncoding(String),
    #[error("request body exceeds {limit} bytes (--max-request-bytes, measured after decompression)")]
    TooLarge { limit: usize },
    #[error("compressed body is invalid: {0}")]
    Decompress(std::io::Error),
    #[error("body is not a valid ExportMetricsServiceRequest protobuf: {0}")]
    Protobuf(#[from] super::wire::WireError),
    #[error("body is not a valid OTLP JSON ExportMetricsServiceRequest: {0}")]
    Json(#[from] serde_json::Error),
}

/// The payload format named by a `Content-Type` header (parameters such as charset ignored).
pub fn payload_format(content_type: Option<&str>) -> Result<PayloadFormat, DecodeError> {
    let content_type = content_type.unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if media_type.eq_ignore_ascii_case("application/x-protobuf")
        || media_type.eq_ignore_ascii_case("application/protobuf")
    {
        Ok(PayloadFormat::Protobuf)
    } else if media_type.eq_ignore_ascii_case("application/json") {
        Ok(PayloadFormat::Json)
    } else {
        Err(DecodeError::UnsupportedContentType(content_type.to_owned()))
    }
}

/// Whether a `Content-Encoding` (or `grpc-encoding`) leaves the body as it is.
pub fn is_identity(content_encoding: Option<&str>) -> bool {
    match content_encoding.map(str::trim) {
        None | Some("") => true,
        Some(encoding) => encoding.eq_ignore_ascii_case("identity"),
    }
}

/// Undoes `Content-Encoding`, producing at most `limit` bytes.
pub fn decompress(body: Bytes, content_encoding: Option<&str>, limit: usize) -> Result<Bytes, DecodeError> {
    if is_identity(content_encoding) {
        if body.len() > limit {
            return Err(DecodeError::TooLarge { limit });
        }
        return Ok(body);
    }
    match content_encoding.map(str::trim).unwrap_or("") {
        encoding if encoding.eq_ignore_ascii_case("gzip") => {
            inflate_limited(MultiGzDecoder::new(&body[..]), body.len(), limit)
        }
        encoding if encoding.eq_ignore_ascii_case("zstd") => {
            let decoder = zstd::stream::read::Decoder::with_buffer(&body[..]).map_err(DecodeError::Decompress)?;
            inflate_limited(decoder, body.len(), limit)
        }
        other => Err(DecodeError::UnsupportedContentEncoding(other.to_owned())),
    }
}

/// Reads a decompressor to the end, producing at most `limit` bytes.
fn inflate_limited(decoder: impl Read, compressed_len: usize, limit: usize) -> Result<Bytes, DecodeError> {
    let mut inflated = Vec::with_capacity(compressed_len.saturating_mul(4).min(limit));
    // Reading one byte past the limit tells "exactly at the limit" from "over it".
    let limit_plus_one = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    decoder.take(limit_plus_one).read_to_end(&mut inflated).map_err(DecodeError::Decompress)?;
    if inflated.len() > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    Ok(Bytes::from(inflated))
}

/// Decodes an uncompressed body.
pub fn decode_request(body: &[u8], format: PayloadFormat) -> Result<ExportMetricsServiceRequest, DecodeError> {
    match format {
        PayloadFormat::Protobuf => {
            ExportMetricsServiceRequest::decode(body).map_err(|err| DecodeError::Protobuf(err.into()))
        }
        PayloadFormat::Json => Ok(serde_json::from_slice(body)?),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::write::GzEncoder;

    use super::*;

    fn gzip(data: &[u8]) -> Bytes {
        let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        Bytes::from(encoder.finish().unwrap())
    }

    #[test]
    fn content_types() {
        assert_eq!(payload_format(Some("application/x-protobuf")).unwrap(), PayloadFormat::Protobuf);
        assert_eq!(payload_format(Some("application/json; charset=utf-8")).unwrap(), PayloadFormat::Json);
        assert!(matches!(payload_format(Some("text/plain")), Err(DecodeError::UnsupportedContentType(_))));
        assert!(matches!(payload_format(None), Err(DecodeError::UnsupportedContentType(_))));
    }

    #[test]
    fn gzip_bomb_is_cut_off_at_the_limit() {
        let zeros = vec![0u8; 10 * 1024 * 1024];
        let compressed = gzip(&zeros);
        assert!(compressed.len() < 100 * 1024);
        let err = decompress(compressed.clone(), Some("gzip"), 1024 * 1024).unwrap_err();
        assert!(matches!(err, DecodeError::TooLarge { limit } if limit == 1024 * 1024));
        assert_eq!(decompress(compressed, Some("gzip"), zeros.len()).unwrap().len(), zeros.len());
    }

    #[test]
    fn zstd_bodies_inflate_and_a_zstd_bomb_is_cut_off() {
        let zeros = vec![0u8; 10 * 1024 * 1024];
        let compressed = Bytes::from(zstd::encode_all(&zeros[..], 3).unwrap());
        assert!(compressed.len() < 100 * 1024);
        assert!(matches!(decompress(compressed.clone(), Some("zstd"), 1024 * 1024), Err(DecodeError::TooLarge { .. })));
        assert_eq!(decompress(compressed, Some("zstd"), zeros.len()).unwrap().len(), zeros.len());
        assert!(matches!(
            decompress(Bytes::from_static(b"not zstd"), Some("zstd"), 1024),
            Err(DecodeError::Decompress(_))
        ));
    }

    #[test]
    fn plain_bodies_are_limited_and_bad_gzip_is_an_error() {
        assert!(matches!(decompress(Bytes::from(vec![1u8; 2048]), None, 1024), Err(DecodeError::TooLarge { .. })));
        assert!(matches!(
            decompress(Bytes::from_static(b"not gzip"), Some("gzip"), 1024),
            Err(DecodeError::Decompress(_))
        ));
        assert!(matches!(decompress(Bytes::new(), Some("br"), 1024), Err(DecodeError::UnsupportedContentEncoding(_))));
    }
}
