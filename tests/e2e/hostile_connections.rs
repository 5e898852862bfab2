//! Hostile clients against the real server: idle floods at the connection limit, silent and
//! dripping connections, a quiet TLS connection, shutdown with connections held open, thousands
//! of half-open HTTP/2 streams, and a listener that dies while serving. Each test asserts that the
//! attack is cut off (sockets closed, streams refused or reset, a clear status) and that
//! `/healthz` and GetMetrics keep answering meanwhile. Limits are set small in each test's
//! config, so the deadlines pass in about a second; waits are bounded by generous deadlines.

use std::net::SocketAddr;
use std::time::Duration;

use otelscale::config::{Config, IoUringMode, SnapshotConfig};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// How long `/healthz` or GetMetrics may take while the server is under attack: loose (a loaded
/// CI machine is slow), but a probe that waits on the attack would exceed it.
const LIVENESS_DEADLINE: Duration = Duration::from_secs(5);

/// A short header deadline, so the deadline tests end in about a second.
const SHORT_DEADLINE: Duration = Duration::from_secs(1);

/// Deadlines no test lasts long enough to reach.
const LONG_DEADLINE: Duration = Duration::from_secs(300);

/// The OTLP/HTTP back-ends of these tests: epoll, and io_uring where the kernel allows it.
const BACKENDS: [IoUringMode; 2] = [IoUringMode::Off, IoUringMode::Auto];

const TRIGGER: &[(&str, &str)] = &[("metricQuery", "sum(hostile_probe)"), ("targetValue", "1")];

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
const STREAM_IS_ACTIVE_PATH: &str = "/externalscaler.ExternalScaler/StreamIsActive";
const GET_METRIC_SPEC_PATH: &str = "/externalscaler.ExternalScaler/GetMetricSpec";

/// `/healthz` on a new connection and GetMetrics on a new channel both answer in time.
async fn assert_live(server: &TestServer, context: &str) {
    let healthz = async {
        let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
        client.get(server.admin_url("/healthz")).send().await.map(|response| response.status())
    };
    let status = tokio::time::timeout(LIVENESS_DEADLINE, healthz).await;
    assert!(matches!(status, Ok(Ok(status)) if status.is_success()), "{context}: /healthz did not answer: {status:?}");
    let value = tokio::time::timeout(LIVENESS_DEADLINE, server.get_metric_value(TRIGGER)).await;
    assert!(matches!(value, Ok(Ok(_))), "{context}: GetMetrics did not answer: {value:?}");
}

async fn connect_all(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        sockets.push(TcpStream::connect(addr).await.expect("connect"));
    }
    sockets
}

fn with_deadlines(config: &mut Config, header_read: Duration, idle: Duration) {
    config.connection_limits.header_read_timeout = header_read;
    config.connection_limits.idle_timeout = idle;
}

/// Writes `bytes` one at a time, `interval` apart, until done or the server closes.
fn drip(
    mut writer: tokio::net::tcp::OwnedWriteHalf,
    bytes: Vec<u8>,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for byte in bytes {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(interval).await;
        }
        // Then hold the connection open.
        std::future::pending::<()>().await;
    })
}

/// Reads until the server closes; returns what it sent.
async fn read_until_closed(reader: &mut tokio::net::tcp::OwnedReadHalf) -> Option<Vec<u8>> {
    let read = async {
        let mut received = Vec::new();
        let _ = reader.read_to_end(&mut received).await;
        received
    };
    tokio::time::timeout(WAIT_DEADLINE, read).await.ok()
}

/// A request head that never ends: a header value that goes on.
fn unfinished_head(request_line: &str) -> Vec<u8> {
    format!("{request_line} HTTP/1.1\r\nHost: otelscale\r\nX-Slow: {}", "a".repeat(1_000)).into_bytes()
}

fn export_head_expecting_continue(content_length: usize) -> String {
    format!(
        "POST /v1/metrics HTTP/1.1\r\nHost: otelscale\r\nContent-Type: application/x-protobuf\r\n\
         Content-Length: {content_length}\r\nExpect: 100-continue\r\n\r\n"
    )
}

fn export_head(content_length: usize) -> String {
    format!(
        "POST /v1/metrics HTTP/1.1\r\nHost: otelscale\r\nContent-Type: application/x-protobuf\r\n\
         Content-Length: {content_length}\r\n\r\n"
    )
}

/// Row 4: a connection limit's worth of idle sockets on the admin and scaler ports, and more.
/// New connections evict the least recently active idle ones, so the probe and KEDA get in.
#[tokio::test]
async fn an_idle_flood_at_the_connection_limit_cannot_lock_out_healthz_or_get_metrics() {
    const CONNECTIONS_MAX: usize = 64;
    const EXTRA: usize = 16;
    let server = TestServer::start_with(|config| {
        config.connections_max = CONNECTIONS_MAX;
        // Only eviction can make room while the test runs.
        with_deadlines(config, LONG_DEADLINE, LONG_DEADLINE);
    })
    .await;
    let mut admin_flood = connect_all(server.admin, CONNECTIONS_MAX + EXTRA).await;
    let mut scaler_flood = connect_all(server.scaler, CONNECTIONS_MAX + EXTRA).await;
    assert_live(&server, "idle flood").await;
    // The oldest sockets made room, in the order they came: at least the extra ones are closed.
    for (port, flood) in [("admin", &mut admin_flood), ("scaler", &mut scaler_flood)] {
        for (idx, socket) in flood.iter_mut().take(EXTRA).enumerate() {
            assert!(closed_by_peer(socket).await, "{port}: the idle socket {idx} was not evicted");
        }
    }
    assert_live(&server, "after the flood was evicted").await;
    server.stop().await;
}

/// Row 4: silent connections on every port, idle keep-alive connections (HTTP/1.1, and HTTP/2 not
/// reading any more), and clients dripping
/// an OTLP/HTTP head, an OTLP/HTTP body and an admin head are closed on their deadlines (408
/// where a request was under way on OTLP/HTTP), on both OTLP/HTTP back-ends.
#[tokio::test]
async fn silent_and_dripping_connections_are_closed_on_their_deadlines() {
    for backend in BACKENDS {
        let server = TestServer::start_http(backend, |config| {
            with_deadlines(config, SHORT_DEADLINE, SHORT_DEADLINE);
            config.connection_limits.min_body_bytes_per_second = 1024;
            // How long an idle HTTP/2 connection's graceful close may wait for its ping answer.
            config.connection_limits.http2_keepalive_timeout = SHORT_DEADLINE;
        })
        .await;
        let context = format!("{backend:?}");
        // An HTTP/2 connection that made a call, then stopped reading (no GOAWAY or PING answered).
        let mut idle_scaler = idle_h2_connection(server.scaler).await;
        let mut silent = Vec::new();
        for addr in [server.admin, server.scaler, server.otlp_grpc, server.otlp_http] {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
        // A keep-alive connection that made one request, then went quiet.
        let mut idle = raw_http::RawHttp::connect(server.otlp_http).await;
        idle.send(&raw_http::RawHttp::post_bytes("application/x-protobuf", &[], "")).await;
        assert_eq!(idle.read_response().await.status, 200, "{context}");

        let interval = Duration::from_millis(200);
        let (mut head_reader, head_writer) = TcpStream::connect(server.otlp_http).await.unwrap().into_split();
        let head_drip = drip(head_writer, unfinished_head("POST /v1/metrics"), interval);
        let (mut body_reader, mut body_writer) = TcpStream::connect(server.otlp_http).await.unwrap().into_split();
        body_writer.write_all(export_head(100_000).as_bytes()).await.unwrap();
        let body_drip = drip(body_writer, vec![0; 100_000], interval);
        let (mut admin_reader, admin_writer) = TcpStream::connect(server.admin).await.unwrap().into_split();
        let admin_drip = drip(admin_writer, unfinished_head("GET /healthz"), interval);

        assert_live(&server, &context).await;
        for (idx, socket) in silent.iter_mut().enumerate() {
            assert!(closed_by_peer(socket).await, "{context}: silent socket {idx} was not closed");
        }
        assert!(idle.is_closed_by_server().await, "{context}: the idle keep-alive connection was not closed");
        assert!(closed_by_peer(&mut idle_scaler).await, "{context}: the idle HTTP/2 connection was not closed");
        for (what, reader) in [("head", &mut head_reader), ("body", &mut body_reader)] {
            let answer =
                read_until_closed(reader).await.unwrap_or_else(|| panic!("{context}: dripping {what} not cut off"));
            let answer = String::from_utf8_lossy(&answer);
            assert!(answer.starts_with("HTTP/1.1 408"), "{context}: dripping {what}: {answer}");
        }
        assert!(read_until_closed(&mut admin_reader).await.is_some(), "{context}: dripping admin head not cut off");
        assert_live(&server, &context).await;
        for task in [head_drip, body_drip, admin_drip] {
            task.abort();
        }
        server.stop().await;
    }
}

/// Row 4: a client that completes its TLS handshake and goes quiet is held to the same header
/// deadline as a plaintext one, on the gRPC ports and on OTLP/HTTP.
#[tokio::test]
async fn a_quiet_tls_connection_after_its_handshake_is_closed() {
    let certificates = test_tls::certificates();
    let files = certificates.files.clone();
    let server = TestServer::start_with(|config| {
        with_deadlines(config, SHORT_DEADLINE, SHORT_DEADLINE);
        config.tls.scaler = Some(files.clone());
        config.tls.otlp_grpc = Some(files.clone());
        config.tls.otlp_http = Some(files);
    })
    .await;
    let mut quiet = Vec::new();
    for (addr, alpn) in
        [(server.scaler, &[&b"h2"[..]]), (server.otlp_grpc, &[&b"h2"[..]]), (server.otlp_http, &[&b"http/1.1"[..]])]
    {
        quiet.push(test_tls::connect(addr, &certificates.ca_pem, alpn).await);
    }
    for (idx, connection) in quiet.iter_mut().enumerate() {
        assert!(closed_by_peer(connection).await, "quiet TLS connection {idx} was not closed");
    }
    // Plaintext admin and the TLS scaler (a client that talks) still answer.
    let healthz = tokio::time::timeout(LIVENESS_DEADLINE, reqwest::get(server.admin_url("/healthz"))).await;
    assert!(matches!(healthz, Ok(Ok(ref response)) if response.status().is_success()), "{healthz:?}");
    let get_metrics = async {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&certificates.ca_pem))
            .domain_name("localhost");
        let channel = tonic::transport::Channel::from_shared(format!("https://{}", server.scaler))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .map_err(|err| err.to_string())?;
        let request = otelscale::scaler::proto::GetMetricsRequest {
            scaled_object_ref: Some(scaled_object(TRIGGER)),
            metric_name: "m".into(),
        };
        let mut client = otelscale::scaler::proto::external_scaler_client::ExternalScalerClient::new(channel);
        client.get_metrics(request).await.map(|_| ()).map_err(|status| status.to_string())
    };
    let answered = tokio::time::timeout(LIVENESS_DEADLINE, get_metrics).await;
    assert!(matches!(answered, Ok(Ok(()))), "GetMetrics over TLS: {answered:?}");
    server.stop().await;
}

/// Opens a raw HTTP/2 connection, makes one GetMetricSpec call, and returns the connection idle
/// (the caller stops reading: GOAWAY and PING go unanswered).
async fn idle_h2_connection(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = raw_h2::client_start();
    request.extend(raw_h2::grpc_headers(1, GET_METRIC_SPEC_PATH));
    request.extend(raw_h2::grpc_message(1, &scaled_object(TRIGGER).encode_to_vec()));
    stream.write_all(&request).await.unwrap();
    let answered = async {
        loop {
            let frame = raw_h2::read_frame(&mut stream).await.expect("the call is answered");
            if frame.kind == raw_h2::SETTINGS && frame.flags & raw_h2::ACK == 0 {
                stream.write_all(&raw_h2::frame(raw_h2::SETTINGS, raw_h2::ACK, 0, &[])).await.unwrap();
            }
            let ends_stream_1 = frame.stream_id == 1
                && (frame.kind == raw_h2::RST_STREAM
                    || (frame.kind == raw_h2::HEADERS && frame.flags & raw_h2::END_STREAM != 0));
            if ends_stream_1 {
                return;
            }
        }
    };
    tokio::time::timeout(WAIT_DEADLINE, answered).await.expect("GetMetricSpec answered");
    stream
}

/// Row 6: SIGTERM while clients hold an idle scaler connection that no longer reads, an
/// unfinished admin head, a dripping OTLP/HTTP body and StreamIsActive streams behind a zero
/// flow-control window. The server closes them when its deadline passes, returns, and has
/// written the final snapshot.
#[tokio::test]
async fn shutdown_ends_within_its_deadline_whatever_clients_hold_and_writes_the_final_snapshot() {
    const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = SnapshotConfig { dir: dir.path().to_path_buf(), interval: Duration::from_secs(3600), keep: 2 };
        let server = TestServer::start_http(backend, |config| {
            config.snapshot = Some(snapshot);
            config.shutdown_timeout = SHUTDOWN_TIMEOUT;
            // Only the shutdown deadline can end what the clients hold.
            with_deadlines(config, LONG_DEADLINE, LONG_DEADLINE);
            config.connection_limits.min_body_bytes_per_second = 1;
            config.connection_limits.http2_keepalive_interval = LONG_DEADLINE;
            config.stream_resend_interval = Duration::from_millis(100);
        })
        .await;
        let context = format!("{backend:?}");
        let mut exporter = server.otlp_client().await;
        let points = vec![number_point(&[("pod", "a")], now_unix_nano(), 1.0)];
        exporter.export(request(&[("job", "hostile")], vec![gauge("hostile_probe", points)])).await.unwrap();

        let mut idle_scaler = idle_h2_connection(server.scaler).await;
        let mut unfinished_admin = TcpStream::connect(server.admin).await.unwrap();
        unfinished_admin.write_all(b"GET /healthz HTTP/1.1\r\nHost: adm").await.unwrap();
        let (mut body_reader, mut body_writer) = TcpStream::connect(server.otlp_http).await.unwrap().into_split();
        body_writer.write_all(export_head(1_000_000).as_bytes()).await.unwrap();
        let body_drip = drip(body_writer, vec![0; 1_000_000], Duration::from_millis(200));
        // StreamIsActive behind a zero window: the server cannot send a byte of the answers, so
        // the stream tasks fill their channels and wait on a send.
        let mut blocked = h2_grpc::connect(server.scaler, 0).await;
        let mut streams = Vec::new();
        for _ in 0..3 {
            blocked = blocked.ready().await.unwrap();
            let (response, mut body) =
                blocked.send_request(h2_grpc::request(server.scaler, STREAM_IS_ACTIVE_PATH), false).unwrap();
            body.send_data(h2_grpc::message(&scaled_object(TRIGGER).encode_to_vec()), true).unwrap();
            let response = tokio::time::timeout(WAIT_DEADLINE, response).await.expect("stream opened").unwrap();
            assert_eq!(response.status(), 200, "{context}");
            streams.push(response);
        }
        // The resend timer (every 100 ms) fills each stream's channel (4 messages), since the
        // server cannot send them: from then on each stream task waits on a send.
        let filled = server.wait_for_metric("otelscale_stream_messages_sent_total", 3.0 * 4.0).await;
        assert!(filled >= 12.0, "{context}: the streams' channels did not fill: {filled} messages");

        let stopping = std::time::Instant::now();
        server.stop_within(SHUTDOWN_TIMEOUT + WAIT_DEADLINE).await.expect("a forced close is not an error");
        let stopped_after = stopping.elapsed();
        assert!(
            stopped_after >= SHUTDOWN_TIMEOUT,
            "{context}: the dripping body was not waited for: {stopped_after:?}"
        );
        assert_eq!(otelscale::snapshot::list_snapshots(dir.path()).unwrap().len(), 1, "{context}: final snapshot");
        assert!(closed_by_peer(&mut idle_scaler).await, "{context}: idle scaler connection left open");
        assert!(closed_by_peer(&mut unfinished_admin).await, "{context}: unfinished admin head left open");
        assert!(read_until_closed(&mut body_reader).await.is_some(), "{context}: dripping body left open");
        body_drip.abort();
        for response in streams {
            let mut body = response.into_body();
            let ended =
                tokio::time::timeout(WAIT_DEADLINE, async { while let Some(Ok(_)) = body.data().await {} }).await;
            assert!(ended.is_ok(), "{context}: a StreamIsActive stream outlived the server");
        }
    }
}

/// Row 7: thousands of half-open Export streams on one HTTP/2 connection. Streams beyond
/// `--max-concurrent-streams` are refused (h2 sends GOAWAY after a thousand refusals), and the
/// open ones, which never send their body, are cut off by the body-rate rule with
/// DEADLINE_EXCEEDED; GetMetrics answers meanwhile.
#[tokio::test]
async fn thousands_of_half_open_streams_are_refused_beyond_the_limit_and_cut_off_by_the_body_rate() {
    const STREAMS_MAX: u32 = 16;
    const STREAMS_SENT: u32 = 3_000;
    let server = TestServer::start_with(|config| {
        config.connection_limits.concurrent_streams_max = STREAMS_MAX;
        config.connection_limits.header_read_timeout = SHORT_DEADLINE;
        config.connection_limits.min_body_bytes_per_second = 1024;
    })
    .await;

    // Raw frames: no client library would open more streams than the server allows.
    let (mut reader, mut writer) = TcpStream::connect(server.otlp_grpc).await.unwrap().into_split();
    let sender = tokio::spawn(async move {
        writer.write_all(&raw_h2::client_start()).await.unwrap();
        for idx in 0..STREAMS_SENT {
            if writer.write_all(&raw_h2::grpc_headers(2 * idx + 1, EXPORT_PATH)).await.is_err() {
                return;
            }
        }
        std::future::pending::<()>().await;
    });
    let mut refused = 0u32;
    let mut accepted = std::collections::BTreeSet::new();
    let mut went_away = None;
    let accounted = async {
        while refused + (accepted.len() as u32) < STREAMS_SENT && went_away.is_none() {
            let Some(frame) = raw_h2::read_frame(&mut reader).await else { break };
            match frame.kind {
                raw_h2::RST_STREAM if frame.error_code() == Some(raw_h2::REFUSED_STREAM) => refused += 1,
                raw_h2::HEADERS | raw_h2::RST_STREAM | raw_h2::DATA => {
                    accepted.insert(frame.stream_id);
                }
                raw_h2::GOAWAY => went_away = frame.error_code(),
                _ => {}
            }
        }
    };
    assert_live(&server, "half-open streams").await;
    tokio::time::timeout(WAIT_DEADLINE, accounted).await.expect("every stream refused, answered or gone");
    sender.abort();
    assert!(refused > 0, "no stream was refused");
    assert!(accepted.len() as u32 <= STREAMS_MAX, "{} streams were served, the limit is {STREAMS_MAX}", accepted.len());
    assert!(
        refused + accepted.len() as u32 == STREAMS_SENT || went_away.is_some(),
        "refused {refused}, served {}, no GOAWAY",
        accepted.len()
    );

    // The open streams, with a client that respects the limit: each is cut off.
    let mut client = h2_grpc::connect(server.otlp_grpc, 65_535).await;
    let mut pending = Vec::new();
    for _ in 0..STREAMS_MAX {
        client = client.ready().await.unwrap();
        let (response, body) = client.send_request(h2_grpc::request(server.otlp_grpc, EXPORT_PATH), false).unwrap();
        pending.push((response, body));
    }
    assert_live(&server, "open half-open streams").await;
    for (idx, (response, _body)) in pending.into_iter().enumerate() {
        let answered = tokio::time::timeout(WAIT_DEADLINE, response).await.expect("the stream was cut off");
        match answered {
            Ok(response) => {
                let grpc_status = response.headers().get("grpc-status").map(|value| value.to_str().unwrap().to_owned());
                assert_eq!(grpc_status.as_deref(), Some("4"), "stream {idx}: DEADLINE_EXCEEDED expected");
                let message = response.headers().get("grpc-message").map(|value| value.to_str().unwrap().to_owned());
                assert!(message.unwrap_or_default().contains("min-body-bytes-per-second"), "stream {idx}");
            }
            // Reset instead of answered: cut off all the same.
            Err(err) => assert!(err.is_reset() || err.is_go_away(), "stream {idx}: {err}"),
        }
    }
    assert_live(&server, "after the streams were cut off").await;
    server.stop().await;
}

/// Binds the four listeners with a second handle on the socket of `target` (0 OTLP/gRPC,
/// 1 OTLP/HTTP, 2 scaler, 3 admin), through which the test can break it.
async fn listeners_with_a_handle_on(target: usize) -> (otelscale::server::Listeners, socket2::Socket) {
    let mut bound = Vec::new();
    let mut handle = None;
    for idx in 0..4 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        if idx == target {
            handle = Some(socket2::Socket::from(listener.try_clone().unwrap()));
        }
        bound.push(tokio::net::TcpListener::from_std(listener).unwrap());
    }
    let mut bound = bound.into_iter();
    let mut next = || bound.next().unwrap();
    let listeners =
        otelscale::server::Listeners { otlp_grpc: next(), otlp_http: next(), scaler: next(), admin: next() };
    (listeners, handle.unwrap())
}

/// A listening socket that dies while the server runs (shut down under it: accept fails with
/// EINVAL) stops the server with an error naming the port, on the hyper-served scaler port and
/// on OTLP/HTTP on both back-ends; from the failure on the server is not ready.
#[tokio::test]
async fn a_listener_that_fails_while_serving_stops_the_server_with_an_error_naming_it() {
    let cases = [
        (2, "KEDA external scaler", IoUringMode::Off),
        (1, "OTLP/HTTP", IoUringMode::Off),
        (1, "OTLP/HTTP", IoUringMode::Auto),
    ];
    for (target, purpose, backend) in cases {
        let (listeners, handle) = listeners_with_a_handle_on(target).await;
        let config = Config { io_uring: backend, shutdown_timeout: Duration::from_secs(3), ..Config::default() };
        let server = TestServer::start_on(listeners, config).await;
        // A request in progress (the 100 says its head was read) keeps the server draining after
        // the failure.
        let mut in_progress = raw_http::RawHttp::connect(server.otlp_http).await;
        in_progress.send(export_head_expecting_continue(10).as_bytes()).await;
        assert_eq!(in_progress.read_response().await.status, 100);
        let admin = server.admin;
        handle.shutdown(std::net::Shutdown::Both).unwrap();
        let not_ready = async {
            loop {
                match reqwest::get(format!("http://{admin}/readyz")).await {
                    Ok(response) if response.status().is_success() => {}
                    _ => return,
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(WAIT_DEADLINE, not_ready).await.expect("not ready after the failure");
        assert!(!server.has_ended(), "{purpose}: ended before the drain");
        let err = server.join_within(WAIT_DEADLINE).await.expect_err("the failure is an error");
        let message = err.to_string();
        assert!(
            message.starts_with(purpose) && message.contains("stopped serving"),
            "{purpose} {backend:?}: {message}"
        );
    }
}
