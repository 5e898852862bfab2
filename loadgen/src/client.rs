//! OTLP senders that ship pre-encoded payload bytes over gRPC or HTTP, optionally gzipped, and
//! read back how many points the server rejected.

use std::io::Write;
use std::net::SocketAddr;

use bytes::{Buf, BufMut, Bytes};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use prost::Message;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Grpc,
    Http,
}

/// How request bodies are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// From the `--gzip` and `--zstd` flags (clap keeps them exclusive).
    pub fn from_flags(gzip: bool, zstd: bool) -> Compression {
        match (gzip, zstd) {
            (true, _) => Compression::Gzip,
            (false, true) => Compression::Zstd,
            (false, false) => Compression::None,
        }
    }
}

/// What the server said about one export.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportAck {
    pub rejected_points: u64,
}

/// A failed export, classified for the error table of a report.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("gRPC status {code:?}: {message}")]
    Grpc { code: tonic::Code, message: String },
    #[error("HTTP status {status}")]
    Http { status: u16 },
    #[error("transport: {0}")]
    Transport(String),
}

impl SendError {
    /// A short, low-cardinality name for counting.
    pub fn kind(&self) -> String {
        match self {
            SendError::Grpc { code, .. } => format!("grpc_{code:?}").to_lowercase(),
            SendError::Http { status } => format!("http_{status}"),
            SendError::Transport(_) => "transport".to_owned(),
        }
    }
}

/// Sends payloads on one connection.
#[derive(Debug)]
pub struct OtlpSender {
    target: SenderTarget,
    compression: Compression,
}

#[derive(Debug)]
enum SenderTarget {
    Grpc(tonic::client::Grpc<Channel>),
    Http { client: reqwest::Client, url: String },
}

impl OtlpSender {
    /// Opens one connection (HTTP/2 for gRPC; an HTTP/1.1 keep-alive pool of one for HTTP).
    pub async fn connect(
        transport: Transport,
        addr: SocketAddr,
        compression: Compression,
    ) -> anyhow::Result<OtlpSender> {
        let target = match transport {
            Transport::Grpc => {
                let channel = Channel::from_shared(format!("http://{addr}"))?.tcp_nodelay(true).connect().await?;
                let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(4 * 1024 * 1024);
                match compression {
                    Compression::None => {}
                    Compression::Gzip => grpc = grpc.send_compressed(CompressionEncoding::Gzip),
                    Compression::Zstd => grpc = grpc.send_compressed(CompressionEncoding::Zstd),
                }
                SenderTarget::Grpc(grpc)
            }
            Transport::Http => {
                let client = reqwest::Client::builder().pool_max_idle_per_host(1).tcp_nodelay(true).build()?;
                SenderTarget::Http { client, url: format!("http://{addr}/v1/metrics") }
            }
        };
        Ok(OtlpSender { target, compression })
    }

    pub async fn send(&mut self, payload: Bytes) -> Result<ExportAck, SendError> {
        self.send_with_deadline(payload, None).await
    }

    /// Sends with a deadline the server is told about: `grpc-timeout` over gRPC, the request
    /// timeout over HTTP. `None` = no deadline.
    pub async fn send_with_deadline(
        &mut self,
        payload: Bytes,
        deadline: Option<std::time::Duration>,
    ) -> Result<ExportAck, SendError> {
        let response = match &mut self.target {
            SenderTarget::Grpc(grpc) => {
                grpc.ready().await.map_err(|err| SendError::Transport(err.to_string()))?;
                let path = tonic::codegen::http::uri::PathAndQuery::from_static(EXPORT_PATH);
                let mut request = tonic::Request::new(payload);
                if let Some(deadline) = deadline {
                    request.set_timeout(deadline);
                }
                grpc.unary(request, path, RawPayloadCodec)
                    .await
                    .map_err(|status| SendError::Grpc { code: status.code(), message: status.message().to_owned() })?
                    .into_inner()
            }
            SenderTarget::Http { client, url } => {
                let mut request = client.post(url.as_str()).header("content-type", "application/x-protobuf");
                if let Some(deadline) = deadline {
                    request = request.timeout(deadline);
                }
                let body = match self.compression {
                    Compression::None => payload,
                    Compression::Gzip => {
                        request = request.header("content-encoding", "gzip");
                        Bytes::from(gzip(&payload))
                    }
                    Compression::Zstd => {
                        request = request.header("content-encoding", "zstd");
                        // Level 1: fast, as a Collector's exporter would use.
                        Bytes::from(zstd::encode_all(&payload[..], 1).unwrap_or_default())
                    }
                };
                let response = request.body(body).send().await.map_err(|err| SendError::Transport(err.to_string()))?;
                let status = response.status();
                let body = response.bytes().await.map_err(|err| SendError::Transport(err.to_string()))?;
                if !status.is_success() {
                    return Err(SendError::Http { status: status.as_u16() });
                }
                ExportMetricsServiceResponse::decode(body)
                    .map_err(|err| SendError::Transport(format!("undecodable response: {err}")))?
            }
        };
        let rejected_points =
            response.partial_success.map_or(0, |partial| u64::try_from(partial.rejected_data_points).unwrap_or(0));
        Ok(ExportAck { rejected_points })
    }
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(bytes.len() / 4), flate2::Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

/// Sends the payload bytes as they are; decodes the response with prost.
#[derive(Debug, Clone, Copy, Default)]
struct RawPayloadCodec;

#[derive(Debug)]
struct RawPayloadEncoder;

#[derive(Debug)]
struct ResponseDecoder;

impl Codec for RawPayloadCodec {
    type Encode = Bytes;
    type Decode = ExportMetricsServiceResponse;
    type Encoder = RawPayloadEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        RawPayloadEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ResponseDecoder
    }
}

impl Encoder for RawPayloadEncoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        buf.put(item);
        Ok(())
    }
}

impl Decoder for ResponseDecoder {
    type Item = ExportMetricsServiceResponse;
    type Error = tonic::Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, tonic::Status> {
        let bytes = buf.copy_to_bytes(buf.remaining());
        ExportMetricsServiceResponse::decode(bytes)
            .map(Some)
            .map_err(|err| tonic::Status::internal(format!("undecodable response: {err}")))
    }
}
