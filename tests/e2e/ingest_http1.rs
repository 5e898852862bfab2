//! OTLP/HTTP at the byte level, on both back-ends (epoll and io_uring): keep-alive with several
//! requests on one connection, pipelining, chunked bodies, a slow client writing its request in
//! pieces, `Expect: 100-continue`, malformed HTTP, `--max-connections` (with eviction), graceful shutdown.

use std::time::Duration;

use otelscale::config::IoUringMode;
use prost::Message;

use crate::common::raw_http::RawHttp;
use crate::common::*;

const PROTOBUF: &str = "application/x-protobuf";

/// An encoded request with one gauge point `value` of series `probe{pod=<pod>}`.
fn probe_body(pod: &str, value: f64) -> Vec<u8> {
    request(&[("job", "raw")], vec![gauge("probe", vec![number_point(&[("pod", pod)], now_unix_nano(), value)])])
        .encode_to_vec()
}

async fn probe_sum(server: &TestServer) -> serde_json::Value {
    server.admin_query(&[("metricQuery", "sum(probe{job=raw})")]).await["value"].clone()
}

#[tokio::test]
async fn keep_alive_serves_several_requests_on_one_connection() {
    for backend in HTTP_BACKENDS {
        let server = TestServer::start_http(backend, |_| {}).await;
        let mut client = RawHttp::connect(server.otlp_http).await;
        for (pod, value) in [("a", 1.0), ("b", 2.0), ("c", 4.0)] {
            client.send(&RawHttp::post_bytes(PROTOBUF, &probe_body(pod, value), "")).await;
            let response = client.read_response().await;
            assert_eq!(response.status, 200, "{backend:?}");
            assert_eq!(response.header("content-type"), Some(PROTOBUF));
            assert_eq!(response.header("connection"), None, "keep-alive is the HTTP/1.1 default");
            assert!(response.header("date").is_some());
        }
        assert_eq!(probe_sum(&server).await, 7.0, "{backend:?}");

        // Pipelined: three requests in one write (the last one a 404), answered in order.
        let mut pipelined = RawHttp::post_bytes(PROTOBUF, &probe_body("d", 8.0), "");
        pipelined.extend(RawHttp::post_bytes(PROTOBUF, &probe_body("e", 16.0), ""));
        pipelined.extend_from_slice(b"GET /nowhere HTTP/1.1\r\nHost: otelscale\r\n\r\n");
        client.send(&pipelined).await;
        let statuses = [
            client.read_response().await.status,
            client.read_response().await.status,
            client.read_response().await.status,
        ];
        assert_eq!(statuses, [200, 200, 404], "{backend:?}");
        assert_eq!(probe_sum(&server).await, 31.0, "{backend:?}");

        // `Connection: close` is honoured: answered, then closed.
        client.send(&RawHttp::post_bytes(PROTOBUF, &probe_body("f", 32.0), "Connection: close\r\n")).await;
        let response = client.read_response().await;
        assert_eq!((response.status, response.header("connection")), (200, Some("close")));
        assert!(client.is_closed_by_server().await, "{backend:?}");
        assert_eq!(server.metric("otelscale_requests_total{transport=\"http\",outcome=\"ok\"}").await, 6.0);
        server.stop().await;
    }
}

#[tokio::test]
async fn http10_closes_unless_keep_alive() {
    for backend in HTTP_BACKENDS {
        let server = TestServer::start_http(backend, |_| {}).await;
        let body = probe_body("a", 1.0);
        let mut client = RawHttp::connect(server.otlp_http).await;
        let mut request =
            format!("POST /v1/metrics HTTP/1.0\r\nContent-Type: {PROTOBUF}\r\nConnection: keep-alive\r\nContent-Length: {}\r\n\r\n", body.len())
                .into_bytes();
        request.extend_from_slice(&body);
        client.send(&request).await;
        let response = client.read_response().await;
        assert_eq!((response.status, response.header("connection")), (200, Some("keep-alive")), "{backend:?}");
        let mut request =
            format!("POST /v1/metrics HTTP/1.0\r\nContent-Type: {PROTOBUF}\r\nContent-Length: {}\r\n\r\n", body.len())
                .into_bytes();
        request.extend_from_slice(&body);
        client.send(&request).await;
        let response = client.read_response().await;
        assert_eq!((response.status, response.header("connection")), (200, Some("close")), "{backend:?}");
        assert!(client.is_closed_by_server().await, "{backend:?}");
        server.stop().await;
    }
}

#[tokio::test]
async fn chunked_bodies_with_extensions_and_trailers() {
    for backend in HTTP_BACKENDS {
        let server = TestServer::start_http(backend, |_| {}).await;
        let body = probe_body("chunked", 5.0);
        let (first, rest) = body.split_at(body.len() / 3);
        let mut request =
            format!("POST /v1/metrics HTTP/1.1\r\nHost: otelscale\r\nContent-Type: {PROTOBUF}\r\nTransfer-Encoding: chunked\r\n\r\n")
                .into_bytes();
        request.extend(format!("{:x};note=first\r\n", first.len()).into_bytes());
        request.extend_from_slice(first);
        request.extend(format!("\r\n{:X}\r\n", rest.len()).into_bytes());
        request.extend_from_slice(rest);
        request.extend_from_slice(b"\r\n0\r\nx-checksum: none\r\n\r\n");
        let mut client = RawHttp::connect(server.otlp_http).await;
        client.send(&request).await;
        assert_eq!(client.read_response().await.status, 200, "{backend:?}");
        assert_eq!(probe_sum(&server).await, 5.0, "{backend:?}");

        // Over the limit while de-chunking: 413, then closed.
        let server_small = TestServer::start_http(backend, |config| config.request_bytes_max = 2048).await;
        let mut client = RawHttp::connect(server_small.otlp_http).await;
        let mut request =
            format!("POST /v1/metrics HTTP/1.1\r\nContent-Type: {PROTOBUF}\r\nTransfer-Encoding: chunked\r\n\r\n")
                .into_bytes();
        for _ in 0..3 {
            request.extend_from_slice(b"400\r\n");
            request.extend_from_slice(&[0u8; 0x400]);
            request.extend_from_slice(b"\r\n");
        }
        client.send(&request).await;
        let response = client.read_response().await;
        assert_eq!((response.status, response.header("connection")), (413, Some("close")), "{backend:?}");
        assert!(client.is_closed_by_server().await, "{backend:?}");
        assert_eq!(
            server_small.metric("otelscale_requests_total{transport=\"http\",outcome=\"too_large\"}").await,
            1.0
        );
        drop(client);
        server_small.stop().await;
        server.stop().await;
    }
}

#[tokio::test]
async fn slow_client_writing_its_request_in_pieces() {
    for backend in HTTP_BACKENDS {
        let server = TestServer::start_http(backend, |_| {}).await;
        let request = RawHttp::post_bytes(PROTOBUF, &probe_body("slow", 3.0), "User-Agent: slow-client\r\n");
        let mut client = RawHttp::connect(server.otlp_http).await;
        // Split inside the request line, inside a header name, between CR and LF, and in the body.
        let head_end = request.windows(4).position(|window| window == b"\r\n\r\n").unwrap() + 4;
        let splits = [3, 20, head_end - 3, head_end - 1, head_end + 5, request.len()];
        let mut written = 0;
        for split in splits {
            client.send(&request[written..split]).await;
            written = split;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(client.read_response().await.status, 200, "{backend:?}");
        assert_eq!(probe_sum(&server).await, 3.0, "{backend:?}");

        // The same connection then sends a request one byte at a time.
        let request = RawHttp::post_bytes(PROTOBUF, &probe_body("slow", 4.0), "");
        for byte in request.chunks(1) {
            client.send(byte).await;
        }
        assert_eq!(client.read_response().await.status, 200, "{backend:?}");
        server.stop().await;
    }
}

#[tokio::test]
async fn expect_continue_gets_100_before_the_body() {
    for backend in HTTP_BACKENDS {
        let server = TestServer::start_http(backend, |_| {}).await;
        let body = probe_body("expect", 9.0);
        let mut client = RawHttp::connect(server.otlp_http).await;
        let head = format!(
            "POST /v1/metrics HTTP/1.1\r\nContent-Type: {PROTOBUF}\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        client.send(head.as_bytes()).await;
        assert_eq!(client.read_response().await.status, 100, "{backend:?}");
        client.send(&body).await;
        assert_eq!(client.read_response().await.status, 200, "{backend:?}");
        assert_eq!(probe_sum(&server).await, 9.0, "{backend:?}");

        // Declared too large: the final answer comes at once, no 100.
        let server_small = TestServer::start_http(backend, |config| config.request_bytes_max = 2048).await;
        let mut client = RawHttp::connect(server_small.otlp_http).await;
        let head = format!(
            "POST /v1/metrics HTTP/1.1\r\nContent-Type: {PROTOBUF}\r\nExpect: 100-continue\r\nContent-Length: 4096\r\n\r\n"
        );
        client.send(head.as_bytes()).await;
        let response = client.read_response().await;
        assert_eq!(response.status, 413, "{backend:?}");
        let status = otelscale::ingest::http1::otlp::RpcStatus::decode(&response.body[..]).unwrap();
        assert!(status.message.contains("max-request-bytes"), "{}", status.message);
        drop(client);
        server_small.stop().await;
        server.stop().await;
    }
}

#[tokio::test]
async fn malformed_http_is_answered_400_and_closed() {
    for backend in HTTP_BACKENDS {
        let server = TestServer::start_http(backend, |_| {}).await;
        let cases: [(&[u8], u16); 4] = [
            (b"POST /v1/metrics HTTP/1.1\r\nContent-Length: ten\r\n\r\n", 400),
            (b"POST /v1/metrics HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"GET /v1/metrics HTTP/1.1\r\nNot A Header\r\n\r\n", 400),
            (b"POST /v1/metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n", 400),
        ];
        for (request, status) in cases {
            let mut client = RawHttp::connect(server.otlp_http).await;
            client.send(request).await;
            let response = client.read_response().await;
            assert_eq!(response.status, status, "{backend:?}: {:?}", String::from_utf8_lossy(request));
            assert_eq!(response.header("connection"), Some("close"));
            assert!(client.is_closed_by_server().await, "{backend:?}");
        }
        // A head over 16 KiB.
        let mut client = RawHttp::connect(server.otlp_http).await;
        let huge_head = format!("GET /v1/metrics HTTP/1.1\r\nX-Filler: {}\r\n\r\n", "f".repeat(20 * 1024));
        client.send(huge_head.as_bytes()).await;
        assert_eq!(client.read_response().await.status, 431, "{backend:?}");
        // Closed by us, or the server lingers on it (2 s at most) when it stops.
        drop(client);
        assert_eq!(server.metric("otelscale_requests_total{transport=\"http\",outcome=\"invalid\"}").await, 5.0);
        // Still serving.
        let mut client = RawHttp::connect(server.otlp_http).await;
        client.send(&RawHttp::post_bytes(PROTOBUF, &probe_body("after", 1.0), "")).await;
        assert_eq!(client.read_response().await.status, 200, "{backend:?}");
        server.stop().await;
    }
}

#[tokio::test]
async fn max_connections_holds_across_workers_by_closing_the_least_recently_active_idle_connection() {
    for backend in HTTP_BACKENDS {
        let server = TestServer::start_http(backend, |config| config.connections_max = 2).await;
        let mut first = RawHttp::connect(server.otlp_http).await;
        let mut second = RawHttp::connect(server.otlp_http).await;
        for client in [&mut first, &mut second] {
            client.send(&RawHttp::post_bytes(PROTOBUF, &probe_body("limit", 1.0), "")).await;
            assert_eq!(client.read_response().await.status, 200, "{backend:?}");
        }
        // At the limit, a third connection is admitted by closing the connection idle the
        // longest: the first. The limit holds whichever workers the three landed on.
        let mut third = RawHttp::connect(server.otlp_http).await;
        third.send(&RawHttp::post_bytes(PROTOBUF, &probe_body("limit", 2.0), "")).await;
        assert_eq!(third.read_response().await.status, 200, "{backend:?}: the third connection was served");
        assert!(first.is_closed_by_server().await, "{backend:?}: the oldest idle connection was closed");
        second.send(&RawHttp::post_bytes(PROTOBUF, &probe_body("limit", 3.0), "")).await;
        assert_eq!(second.read_response().await.status, 200, "{backend:?}: the second one still serves");
        server.stop().await;
    }
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_finishes_requests_in_progress() {
    for backend in HTTP_BACKENDS {
        let server = TestServer::start_http(backend, |_| {}).await;
        let mut idle = RawHttp::connect(server.otlp_http).await;
        idle.send(&RawHttp::post_bytes(PROTOBUF, &probe_body("idle", 1.0), "")).await;
        assert_eq!(idle.read_response().await.status, 200);

        let mut busy = RawHttp::connect(server.otlp_http).await;
        let request = RawHttp::post_bytes(PROTOBUF, &probe_body("busy", 2.0), "Expect: 100-continue\r\n");
        let head_end = request.windows(4).position(|window| window == b"\r\n\r\n").unwrap() + 4;
        let (head, body) = request.split_at(head_end);
        let (first_part, second_part) = body.split_at(body.len() - 5);
        // The 100 says the server has read the head: a request is in progress on this connection
        // from now on, however soon the shutdown starts.
        busy.send(head).await;
        assert_eq!(busy.read_response().await.status, 100, "{backend:?}");
        busy.send(first_part).await;

        let admin = server.admin;
        let stopping = tokio::spawn(server.stop());
        assert!(idle.is_closed_by_server().await, "{backend:?}: the idle connection is closed at shutdown");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!stopping.is_finished(), "{backend:?}: shutdown waits for the request in progress");
        busy.send(second_part).await;
        let response = busy.read_response().await;
        assert_eq!((response.status, response.header("connection")), (200, Some("close")), "{backend:?}");
        tokio::time::timeout(Duration::from_secs(10), stopping).await.expect("drained in time").unwrap();
        assert!(tokio::net::TcpStream::connect(admin).await.is_err(), "{backend:?}: stopped");
    }
}

#[tokio::test]
async fn auto_serves_otlp_http() {
    let server = TestServer::start_http(IoUringMode::Auto, |_| {}).await;
    let mut client = RawHttp::connect(server.otlp_http).await;
    client.send(&RawHttp::post_bytes(PROTOBUF, &probe_body("auto", 1.0), "")).await;
    assert_eq!(client.read_response().await.status, 200);
    server.stop().await;
}
