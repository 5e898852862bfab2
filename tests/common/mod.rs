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
