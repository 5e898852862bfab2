//! Test harness: the real server on 127.0.0.1:0 with real clients.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use otelscale::config::{Config, IoUringMode};
use otelscale::scaler::proto::external_scaler_client::ExternalScalerClient;
use otelscale::scaler::proto::{GetMetricsRequest, ScaledObjectRef};
use otelscale::server::{self, Listeners};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// How long a test waits for something the server does in the background (becoming ready, a
/// snapshot, a counter reaching a value) before it fails. Generous: a loaded CI machine is slow,
/// and a wait that succeeds returns as soon as the event happens.
pub const WAIT_DEADLINE: Duration = Duration::from_secs(30);

/// How often a wait looks again.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A running server and its addresses; shuts down when dropped.
pub struct TestServer {
    pub otlp_grpc: SocketAddr,
    pub otlp_http: SocketAddr,
    pub scaler: SocketAddr,
    pub admin: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<Result<(), server::ServerError>>>,
}

/// The OTLP/HTTP back-ends every HTTP test runs against: epoll, then io_uring (required, so a
/// machine without io_uring fails loudly instead of testing epoll twice).
pub const HTTP_BACKENDS: [IoUringMode; 2] = [IoUringMode::Off, IoUringMode::On];

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// Starts with OTLP/HTTP on `backend` and the default config changed by `adjust`.
    pub async fn start_http(backend: IoUringMode, adjust: impl FnOnce(&mut Config)) -> TestServer {
        Self::start_with(|config| {
            config.io_uring = backend;
            adjust(config);
        })
        .await
    }

    /// Starts with the default config changed by `adjust`.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = Config::default();
        adjust(&mut config);
        let bind = || async { TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0") };
        let listeners =
            Listeners { otlp_grpc: bind().await, otlp_http: bind().await, scaler: bind().await, admin: bind().await };
        TestServer::start_on(listeners, config).await
    }

    async fn wait_ready(&self) {
        wait_until_ready(self.admin).await;
    }

    /// Stops the server and waits for it to drain.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.await.expect("server task").expect("server ran cleanly");
        }
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.otlp_http)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub async fn otlp_client(&self) -> MetricsServiceClient<Channel> {
        MetricsServiceClient::connect(format!("http://{}", self.otlp_grpc)).await.expect("connect OTLP/gRPC")
    }

    pub async fn scaler_client(&self) -> ExternalScalerClient<Channel> {
        ExternalScalerClient::connect(format!("http://{}", self.scaler)).await.expect("connect scaler")
    }

    /// GetMetrics through the real KEDA gRPC interface.
    pub async fn get_metric_value(&self, metadata: &[(&str, &str)]) -> Result<f64, tonic::Status> {
        let mut client = self.scaler_client().await;
        let response = client
            .get_metrics(GetMetricsRequest {
                scaled_object_ref: Some(scaled_object(metadata)),
                metric_name: "m".into(),
            })
            .await?;
        Ok(response.into_inner().metric_values[0].metric_value_float)
    }

    /// The admin API's `/api/v1/query` answer.
    pub async fn admin_query(&self, params: &[(&str, &str)]) -> serde_json::Value {
        let url = reqwest::Url::parse_with_params(&self.admin_url("/api/v1/query"), params).unwrap();
        reqwest::get(url).await.unwrap().json().await.unwrap()
    }

    /// Polls `/metrics` until `series` reaches `at_least` ([`WAIT_DEADLINE`] at most); returns the
    /// last value.
    pub async fn wait_for_metric(&self, series: &str, at_least: f64) -> f64 {
        wait_for_metric_at(self.admin, series, at_least).await
    }

    /// The value of one line of `/metrics`, e.g. `otelscale_points_rejected_total{reason="nan_value"}`.
    pub async fn metric(&self, series: &str) -> f64 {
        metric_at(self.admin, series).await
    }
}

/// Waits until the server whose admin port is `admin` answers `/readyz` with success; panics
/// after [`WAIT_DEADLINE`].
pub async fn wait_until_ready(admin: SocketAddr) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + WAIT_DEADLINE;
    loop {
        if let Ok(response) = client.get(format!("http://{admin}/readyz")).send().await {
            if response.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the server on {admin} did not become ready within {WAIT_DEADLINE:?}");
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Polls `/metrics` on `admin` until `series` reaches `at_least` ([`WAIT_DEADLINE`] at most);
/// returns the last value, for the caller's assertion to show.
pub async fn wait_for_metric_at(admin: SocketAddr, series: &str, at_least: f64) -> f64 {
    let deadline = Instant::now() + WAIT_DEADLINE;
    loop {
        let value = metric_at(admin, series).await;
        if value >= at_least || Instant::now() >= deadline {
            return value;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The value of one line of `/metrics` on `admin`.
pub async fn metric_at(admin: SocketAddr, series: &str) -> f64 {
    let text = reqwest::get(format!("http://{admin}/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{series} not in /metrics:\n{text}"))
        .parse()
        .unwrap()
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

pub fn scaled_object(metadata: &[(&str, &str)]) -> ScaledObjectRef {
    ScaledObjectRef {
        name: "ai-training".into(),
        namespace: "ml".into(),
        scaler_metadata: metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<HashMap<_, _>>(),
    }
}

pub fn now_unix_nano() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

pub fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

pub fn number_point(attributes: &[(&str, &str)], time_unix_nano: u64, value: f64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attributes.iter().map(|(k, v)| string_attribute(k, v)).collect(),
        time_unix_nano,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    }
}

pub fn gauge(name: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric { name: name.into(), data: Some(metric::Data::Gauge(Gauge { data_points: points })), ..Default::default() }
}

pub fn cumulative_counter(name: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

/// One request with the given resource attributes and metrics.
pub fn request(resource: &[(&str, &str)], metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource.iter().map(|(k, v)| string_attribute(k, v)).collect(),
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics { metrics, ..Default::default() }],
            ..Default::default()
        }],
    }
}

/// An OTLP/gRPC client that sends arbitrary bytes as the Export request (for malformed input).
pub mod raw_grpc {
    use bytes::{Buf, BufMut};
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
    use prost::Message;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    #[derive(Debug, Clone, Copy, Default)]
    pub struct RawBytesCodec;

    pub struct RawEncoder;
    pub struct ResponseDecoder;

    impl Codec for RawBytesCodec {
        type Encode = Vec<u8>;
        type Decode = ExportMetricsServiceResponse;
        type Encoder = RawEncoder;
        type Decoder = ResponseDecoder;
        fn encoder(&mut self) -> RawEncoder {
            RawEncoder
        }
        fn decoder(&mut self) -> ResponseDecoder {
            ResponseDecoder
        }
    }

    impl Encoder for RawEncoder {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            buf.put_slice(&item);
            Ok(())
        }
    }

    impl Decoder for ResponseDecoder {
        type Item = ExportMetricsServiceResponse;
        type Error = tonic::Status;
        fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, tonic::Status> {
            let bytes = buf.copy_to_bytes(buf.remaining());
            ExportMetricsServiceResponse::decode(bytes).map(Some).map_err(|e| tonic::Status::internal(e.to_string()))
        }
    }

    /// Sends `body` as the Export message.
    pub async fn export_raw(
        addr: std::net::SocketAddr,
        body: Vec<u8>,
    ) -> Result<ExportMetricsServiceResponse, tonic::Status> {
        let channel =
            tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        );
        grpc.unary(tonic::Request::new(body), path, RawBytesCodec).await.map(tonic::Response::into_inner)
    }
}

/// A raw HTTP/1.1 client over one TCP connection, for what reqwest will not do: several requests
/// on a connection we hold, pipelining, chunked bodies written by hand, partial writes.
pub mod raw_http {
    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    const READ_TIMEOUT: Duration = Duration::from_secs(10);

    /// One parsed response.
    #[derive(Debug)]
    pub struct RawResponse {
        pub status: u16,
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
    }

    impl RawResponse {
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
        }
    }

    pub struct RawHttp {
        stream: TcpStream,
        received: Vec<u8>,
    }

    impl RawHttp {
        pub async fn connect(addr: SocketAddr) -> RawHttp {
            let stream = TcpStream::connect(addr).await.expect("connect OTLP/HTTP");
            stream.set_nodelay(true).unwrap();
            RawHttp { stream, received: Vec::new() }
        }

        pub async fn send(&mut self, bytes: &[u8]) {
            self.stream.write_all(bytes).await.expect("write to the server");
        }

        /// A POST of `body` to /v1/metrics with Content-Length, as bytes.
        pub fn post_bytes(content_type: &str, body: &[u8], extra_headers: &str) -> Vec<u8> {
            let mut request = format!(
                "POST /v1/metrics HTTP/1.1\r\nHost: otelscale\r\nContent-Type: {content_type}\r\n\
                 Content-Length: {}\r\n{extra_headers}\r\n",
                body.len()
            )
            .into_bytes();
            request.extend_from_slice(body);
            request
        }

        /// Reads one complete response (a 1xx has no body), or panics after a timeout.
        pub async fn read_response(&mut self) -> RawResponse {
            tokio::time::timeout(READ_TIMEOUT, self.read_response_inner()).await.expect("a response in time")
        }

        /// Whether no response arrives within `wait`.
        pub async fn no_response_within(&mut self, wait: Duration) -> bool {
            tokio::time::timeout(wait, self.read_response_inner()).await.is_err()
        }

        async fn read_response_inner(&mut self) -> RawResponse {
            loop {
                if let Some((response, consumed)) = parse_response(&self.received) {
                    self.received.drain(..consumed);
                    return response;
                }
                let mut chunk = [0u8; 16 * 1024];
                let n_bytes = self.stream.read(&mut chunk).await.expect("read from the server");
                assert!(
                    n_bytes > 0,
                    "connection closed before a full response: {:?}",
                    String::from_utf8_lossy(&self.received)
                );
                self.received.extend_from_slice(&chunk[..n_bytes]);
            }
        }

        /// Whether the server closes the connection (EOF or reset) within the timeout, with
        /// nothing more to read.
        pub async fn is_closed_by_server(&mut self) -> bool {
            let mut chunk = [0u8; 1024];
            match tokio::time::timeout(READ_TIMEOUT, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => self.received.is_empty(),
                Ok(Ok(_)) | Err(_) => false,
            }
        }
    }

    fn parse_response(received: &[u8]) -> Option<(RawResponse, usize)> {
        let mut header_slots = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut header_slots);
        let head_len = match response.parse(received).expect("a well-formed response") {
            httparse::Status::Complete(head_len) => head_len,
            httparse::Status::Partial => return None,
        };
        let status = response.code.unwrap();
        let headers: Vec<(String, String)> = response
            .headers
            .iter()
            .map(|header| (header.name.to_ascii_lowercase(), String::from_utf8_lossy(header.value).into_owned()))
            .collect();
        let body_len: usize = if status < 200 {
            0
        } else {
            headers.iter().find(|(key, _)| key == "content-length").map_or(0, |(_, value)| value.parse().unwrap())
        };
        let body = received.get(head_len..head_len + body_len)?.to_vec();
        Some((RawResponse { status, headers, body }, head_len + body_len))
    }
}

impl TestServer {
    /// Starts on `listeners`, bound by the caller (who may keep a handle on one), with `config`.
    pub async fn start_on(listeners: Listeners, config: Config) -> TestServer {
        let addr = |listener: &TcpListener| listener.local_addr().unwrap();
        let (otlp_grpc, otlp_http, scaler, admin) =
            (addr(&listeners.otlp_grpc), addr(&listeners.otlp_http), addr(&listeners.scaler), addr(&listeners.admin));
        let (shutdown_sender, shutdown_receiver) = oneshot::channel::<()>();
        let handle = tokio::spawn(server::run(listeners, config, async {
            let _ = shutdown_receiver.await;
        }));
        let server =
            TestServer { otlp_grpc, otlp_http, scaler, admin, shutdown: Some(shutdown_sender), handle: Some(handle) };
        server.wait_ready().await;
        server
    }

    /// Signals shutdown and returns what `server::run` returned; panics if that takes longer
    /// than `within` (a hang detector: pass the server's own deadline plus a generous margin).
    pub async fn stop_within(mut self, within: Duration) -> Result<(), server::ServerError> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.join_within(within).await
    }

    /// Waits for `server::run` to return by itself (no shutdown signal); panics after `within`.
    pub async fn join_within(mut self, within: Duration) -> Result<(), server::ServerError> {
        let handle = self.handle.take().expect("the server task");
        tokio::time::timeout(within, handle).await.expect("server::run returned in time").expect("server task")
    }

    /// Whether `server::run` has returned.
    pub fn has_ended(&self) -> bool {
        self.handle.as_ref().is_none_or(|handle| handle.is_finished())
    }
}

/// Four listeners on 127.0.0.1:0.
pub async fn bind_listeners() -> Listeners {
    let bind = || async { TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0") };
    Listeners { otlp_grpc: bind().await, otlp_http: bind().await, scaler: bind().await, admin: bind().await }
}

/// Whether the peer closes `stream` (EOF or reset) within [`WAIT_DEADLINE`], discarding whatever
/// it sends before.
pub async fn closed_by_peer<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> bool {
    use tokio::io::AsyncReadExt;
    let closed = async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(WAIT_DEADLINE, closed).await.is_ok()
}

/// A CA and a server certificate for `localhost` and `127.0.0.1` signed by it, as files.
pub mod test_tls {
    use std::sync::Arc;

    use otelscale::config::TlsFiles;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName};
    use tokio::net::TcpStream;

    pub struct TestCertificates {
        pub dir: tempfile::TempDir,
        pub files: TlsFiles,
        pub ca_pem: String,
    }

    pub fn certificates() -> TestCertificates {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "otelscale hostile-test CA");
        let issuer = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert_path, key_path) = (dir.path().join("server.pem"), dir.path().join("server.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        TestCertificates {
            files: TlsFiles { cert: cert_path, key: key_path, client_ca: None },
            ca_pem: issuer.pem(),
            dir,
        }
    }

    /// A TLS client connection to `addr` (handshake done) trusting `ca_pem`, offering `alpn`.
    pub async fn connect(
        addr: std::net::SocketAddr,
        ca_pem: &str,
        alpn: &[&[u8]],
    ) -> tokio_rustls::client::TlsStream<TcpStream> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(addr).await.expect("connect");
        connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.expect("TLS handshake")
    }
}

/// HTTP/2 by hand, for what a well-behaved client library will not do: more streams than the
/// server allows, requests left half-open, a connection that stops reading. Request headers are
/// HPACK literals (no indexing, no Huffman); frames coming back are read by their frame header.
pub mod raw_h2 {
    use tokio::io::{AsyncRead, AsyncReadExt};

    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const END_STREAM: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const ACK: u8 = 0x1;
    /// RST_STREAM error code: the server did not process the stream.
    pub const REFUSED_STREAM: u32 = 0x7;

    /// One frame.
    #[derive(Debug, Clone)]
    pub struct Frame {
        pub kind: u8,
        pub flags: u8,
        pub stream_id: u32,
        pub payload: Vec<u8>,
    }

    impl Frame {
        /// The error code of a RST_STREAM or GOAWAY frame.
        pub fn error_code(&self) -> Option<u32> {
            let at = match self.kind {
                RST_STREAM => 0,
                GOAWAY => 4,
                _ => return None,
            };
            Some(u32::from_be_bytes(self.payload.get(at..at + 4)?.try_into().ok()?))
        }
    }

    pub fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).unwrap();
        assert!(len < 1 << 14, "within the default frame size");
        let mut bytes = len.to_be_bytes()[1..].to_vec();
        bytes.extend_from_slice(&[kind, flags]);
        bytes.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    /// The client preface and an empty SETTINGS frame.
    pub fn client_start() -> Vec<u8> {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(SETTINGS, 0, 0, &[]));
        bytes
    }

    fn literal(block: &mut Vec<u8>, name: &str, value: &str) {
        assert!(name.len() < 127 && value.len() < 127, "single-byte HPACK lengths");
        block.push(0x00);
        block.push(name.len() as u8);
        block.extend_from_slice(name.as_bytes());
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }

    /// A HEADERS frame opening a gRPC call of `path` on `stream_id`; the request body follows
    /// in DATA frames (none for a half-open stream).
    pub fn grpc_headers(stream_id: u32, path: &str) -> Vec<u8> {
        let mut block = Vec::new();
        for (name, value) in [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ] {
            literal(&mut block, name, value);
        }
        frame(HEADERS, END_HEADERS, stream_id, &block)
    }

    /// A DATA frame carrying one uncompressed gRPC message, ending the request.
    pub fn grpc_message(stream_id: u32, message: &[u8]) -> Vec<u8> {
        let mut payload = vec![0u8];
        payload.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
        payload.extend_from_slice(message);
        frame(DATA, END_STREAM, stream_id, &payload)
    }

    /// The next frame; `None` at EOF or on a read error.
    pub async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Frame> {
        let mut header = [0u8; 9];
        stream.read_exact(&mut header).await.ok()?;
        let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let stream_id = u32::from_be_bytes(header[5..9].try_into().unwrap()) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).await.ok()?;
        Some(Frame { kind: header[3], flags: header[4], stream_id, payload })
    }
}

/// gRPC over the `h2` crate's client, for streams a tonic client would not leave as they are:
/// a zero flow-control window, a request body that never comes.
pub mod h2_grpc {
    use std::net::SocketAddr;

    use bytes::Bytes;
    use tokio::net::TcpStream;

    /// An HTTP/2 connection to `addr`; `initial_window_size` is the window the client gives the
    /// server's streams (0: the server cannot send a byte of any response body).
    pub async fn connect(addr: SocketAddr, initial_window_size: u32) -> h2::client::SendRequest<Bytes> {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (send, connection) =
            h2::client::Builder::new().initial_window_size(initial_window_size).handshake(tcp).await.expect("h2");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        send.ready().await.expect("h2 ready")
    }

    /// The head of a gRPC call of `path`.
    pub fn request(addr: SocketAddr, path: &str) -> http::Request<()> {
        http::Request::builder()
            .method("POST")
            .uri(format!("http://{addr}{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap()
    }

    /// One uncompressed gRPC message, framed.
    pub fn message(encoded: &[u8]) -> Bytes {
        let mut framed = vec![0u8];
        framed.extend_from_slice(&u32::try_from(encoded.len()).unwrap().to_be_bytes());
        framed.extend_from_slice(encoded);
        Bytes::from(framed)
    }
}
