//! The `Transfer-Encoding: chunked` body decoder: incremental, limited in body bytes and in the
//! bytes of chunk extensions plus trailer fields.

use bytes::{Buf, Bytes, BytesMut};

use super::head::find_blank_line;
use super::{HttpError, Limits, HEADER_COUNT_MAX};

/// Longest chunk-size line without extensions: 16 hex digits and CRLF. Bytes beyond the size
/// digits count against the chunk metadata budget.
const CHUNK_SIZE_DIGITS_MAX: usize = 16;

/// Why de-chunking stopped.
#[derive(Debug)]
pub(super) enum ChunkError {
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
pub(super) struct ChunkedDecoder {
    state: ChunkState,
    body: BytesMut,
    /// Chunk extensions and trailer fields so far, against [`Limits::head_bytes_max`].
    metadata_bytes: usize,
}

impl ChunkedDecoder {
    /// Body bytes decoded so far.
    pub(super) fn decoded_bytes(&self) -> usize {
        self.body.len()
    }

    /// The whole body once the last chunk and the trailers are in; `None` while more is needed.
    pub(super) fn decode(&mut self, input: &mut BytesMut, limits: &Limits) -> Result<Option<Bytes>, ChunkError> {
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
