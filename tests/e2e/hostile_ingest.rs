//! Hostile ingest, one test per measured attack (the rows of the hardening brief): compressed
//! bodies that inflate to the size limit, huge resource labels over many tiny points, many
//! series of large labels, a storm of CPU-heavy exports with deadlines, points from the future,
//! and a flood of junk series. Each attack gets a clear answer (a status and a message naming
//! the limit) or a bounded result, and while it runs GetMetrics (a real KEDA client) and
//! `/healthz` keep answering within a loose deadline. Limits are small so each test runs in
//! seconds.

use std::cell::Cell;
use std::future::Future;
use std::io::Write;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{number_data_point, NumberDataPoint};
use otelscale::config::Config;
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::Code;

use crate::common::*;

/// How long a probe may take while an attack runs: loose, so a loaded machine passes; an
/// attack that stalls the runtime (seconds of CPU on an async worker) does not.
const PROBE_DEADLINE: Duration = Duration::from_secs(5);

const SECOND_NS: u64 = 1_000_000_000;

const PROBE_TRIGGER: &[(&str, &str)] =
    &[("metricQuery", "probe_value{job=probe}"), ("operationOverTime", "last_one"), ("targetValue", "1")];

/// Starts a server with `adjust`ed limits and the gauge the probes read (`probe_value` = 42).
async fn server_with_probe(adjust: impl FnOnce(&mut Config)) -> TestServer {
    let server = TestServer::start_with(adjust).await;
    let probe =
        request(&[("job", "probe")], vec![gauge("probe_value", vec![number_point(&[], now_unix_nano(), 42.0)])]);
    server.otlp_client().await.export(probe).await.unwrap();
    server
}

/// GetMetrics and `/healthz`, each answered within [`PROBE_DEADLINE`].
async fn probe(server: &TestServer) {
    let value = tokio::time::timeout(PROBE_DEADLINE, server.get_metric_value(PROBE_TRIGGER))
        .await
        .expect("GetMetrics answered within the probe deadline during the attack")
        .expect("GetMetrics succeeded");
    assert_eq!(value, 42.0);
    let health = tokio::time::timeout(PROBE_DEADLINE, reqwest::get(server.admin_url("/healthz")))
        .await
        .expect("/healthz answered within the probe deadline during the attack")
        .unwrap();
    assert!(health.status().is_success());
}

/// Runs `attack` while probing the server (at least once during it, and once after), and
/// returns what the attack returned.
async fn probed<T>(server: &TestServer, attack: impl Future<Output = T>) -> T {
    let finished = Cell::new(false);
    let attack = async {
        let output = attack.await;
        finished.set(true);
        output
    };
    let probes = async {
        let mut probes = 0;
        while !finished.get() || probes == 0 {
            probe(server).await;
            probes += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let (output, ()) = tokio::join!(attack, probes);
    probe(server).await;
    output
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 19).unwrap()
}

/// Posts `body` to OTLP/HTTP as protobuf with `content_encoding`; status and body.
async fn post(server: &TestServer, body: Vec<u8>, content_encoding: &str) -> (u16, Vec<u8>) {
    let response = reqwest::Client::new()
        .post(server.http_url("/v1/metrics"))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", content_encoding)
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.bytes().await.unwrap().to_vec())
}

/// The message of a `google.rpc.Status` (field 2) or of an `ExportMetricsServiceResponse`'s
/// partial success, as text.
fn text_of(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

/// A valid request of `n_points` identical points of one series: compresses to almost nothing.
fn compressible_request(n_points: usize) -> ExportMetricsServiceRequest {
    let now = now_unix_nano();
    let point = number_point(&[("pod", "bomb")], now, 1.0);
    request(&[("job", "bomb")], vec![gauge("bomb", vec![point; n_points])])
}

/// About how many identical points make a request of `bytes`.
fn points_for(bytes: usize) -> usize {
    let per_point = compressible_request(1_000).encoded_len() / 1_000;
    bytes / per_point
}

/// Row 1: bodies of a few KiB of zstd that inflate to the request limit. They are inflated and
/// decoded on the ingest workers, not the async runtime (nor an io_uring thread): the probes
/// answer, both bodies are stored, and one that inflates past the limit is refused naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row1_compressed_bodies_inflating_to_the_limit_keep_the_scaler_answering() {
    const LIMIT_BYTES: usize = 4 * 1024 * 1024;
    let near_limit = compressible_request(points_for(LIMIT_BYTES) * 95 / 100);
    let near_limit_bytes = near_limit.encode_to_vec();
    assert!(near_limit_bytes.len() <= LIMIT_BYTES);
    let bomb = zstd(&near_limit_bytes);
    assert!(bomb.len() < 64 * 1024, "a bomb: {} bytes on the wire", bomb.len());
    let over_limit = zstd(&compressible_request(points_for(LIMIT_BYTES) * 2).encode_to_vec());
    for backend in HTTP_BACKENDS {
        let server = server_with_probe(|config| {
            config.io_uring = backend;
            config.request_bytes_max = LIMIT_BYTES;
        })
        .await;
        let ((first, second), refused) = probed(&server, async {
            let both = tokio::join!(post(&server, bomb.clone(), "zstd"), post(&server, bomb.clone(), "zstd"));
            (both, post(&server, over_limit.clone(), "zstd").await)
        })
        .await;
        assert_eq!((first.0, second.0), (200, 200), "{backend:?}: {} / {}", text_of(&first.1), text_of(&second.1));
        assert_eq!(refused.0, 413, "{backend:?}");
        assert!(text_of(&refused.1).contains("--max-request-bytes"), "{}", text_of(&refused.1));
        server.stop().await;
    }

    // The same over gRPC: the message is inflated on the workers, under the same limit.
    let server = server_with_probe(|config| config.request_bytes_max = LIMIT_BYTES).await;
    let (stored, refused) = probed(&server, async {
        let mut client = server.otlp_client().await.send_compressed(CompressionEncoding::Zstd);
        let stored = client.export(near_limit.clone()).await;
        let refused = client.export(compressible_request(points_for(LIMIT_BYTES) * 2)).await;
        (stored, refused)
    })
    .await;
    assert!(stored.is_ok(), "{stored:?}");
    let refused = refused.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("--max-request-bytes"), "{}", refused.message());
    server.stop().await;
}

/// Row 2: 63 resource labels of 2 KiB over many tiny points. The labels are stored and hashed
/// once per request, not per point: the export is stored while the probes answer. With the
/// default `--max-series-key-bytes` the whole resource is refused at once, naming the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row2_huge_resource_labels_over_tiny_points_cost_in_proportion_to_the_request() {
    const LIMIT_BYTES: usize = 2 * 1024 * 1024;
    let resource: Vec<(String, String)> =
        (0..63).map(|idx| (format!("label_{idx:02}"), format!("{idx:02}{}", "v".repeat(2_046)))).collect();
    let resource: Vec<(&str, &str)> = resource.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect();
    let tiny = NumberDataPoint { value: Some(number_data_point::Value::AsDouble(1.0)), ..Default::default() };
    let tiny_bytes = tiny.encoded_len() + 2;
    let n_points = (LIMIT_BYTES - 140 * 1024) / tiny_bytes;
    let body = request(&resource, vec![gauge("tiny", vec![tiny; n_points])]).encode_to_vec();
    assert!(body.len() <= LIMIT_BYTES && n_points > 150_000, "{} bytes, {n_points} points", body.len());
    let compressed = gzip(&body);

    let server = server_with_probe(|config| {
        config.request_bytes_max = LIMIT_BYTES;
        config.series_key_bytes_max = 256 * 1024;
    })
    .await;
    let (status, answer) = probed(&server, post(&server, compressed.clone(), "gzip")).await;
    assert_eq!(status, 200, "{}", text_of(&answer));
    assert_eq!(server.metric("otelscale_series").await, 2.0, "the probe's series and the tiny one");
    server.stop().await;

    let server = server_with_probe(|config| config.request_bytes_max = LIMIT_BYTES).await;
    let (status, answer) = probed(&server, post(&server, compressed, "gzip")).await;
    assert_eq!(status, 200);
    let answer = text_of(&answer);
    assert!(answer.contains("series_key_too_large") && answer.contains("--max-series-key-bytes"), "{answer}");
    assert_eq!(
        server.metric("otelscale_points_rejected_total{reason=\"series_key_too_large\"}").await,
        n_points as f64
    );
    server.stop().await;
}

/// Row 3: one small gzip request creating 20,000 series of large labels. The store is bounded
/// in bytes: what does not fit is refused as `store_bytes_limit` naming `--max-store-bytes`,
/// and the store's bytes stay under the limit; existing series keep taking samples.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row3_many_series_of_large_labels_are_bounded_by_the_store_bytes() {
    const STORE_BYTES: usize = 8 * 1024 * 1024;
    let now = now_unix_nano();
    let padding = "x".repeat(1_000);
    let points: Vec<_> =
        (0..20_000).map(|idx| number_point(&[("pod", &format!("{idx:06}{padding}"))], now, 1.0)).collect();
    let body = gzip(&request(&[("job", "wide")], vec![gauge("wide", points)]).encode_to_vec());
    assert!(body.len() < 256 * 1024, "{} bytes on the wire", body.len());
    let server = server_with_probe(|config| {
        config.store_bytes_max = STORE_BYTES;
        config.request_bytes_max = 32 * 1024 * 1024;
    })
    .await;
    let (status, answer) = probed(&server, post(&server, body, "gzip")).await;
    assert_eq!(status, 200);
    let answer = text_of(&answer);
    assert!(answer.contains("store_bytes_limit") && answer.contains("--max-store-bytes"), "{answer}");
    let rejected = server.metric("otelscale_points_rejected_total{reason=\"store_bytes_limit\"}").await;
    let stored = server.metric("otelscale_series").await - 1.0;
    assert!(rejected > 10_000.0 && stored > 100.0, "{rejected} refused, {stored} stored");
    assert_eq!(rejected + stored, 20_000.0);
    assert!(server.metric("otelscale_store_heap_bytes").await <= STORE_BYTES as f64);
    // An existing series still takes samples (its chunk has room).
    let later =
        request(&[("job", "probe")], vec![gauge("probe_value", vec![number_point(&[], now_unix_nano(), 42.0)])]);
    let response = server.otlp_client().await.export(later).await.unwrap().into_inner();
    assert!(response.partial_success.is_none(), "{response:?}");
    server.stop().await;
}

/// A CPU-heavy export: `n_points` points of distinct series of metric `name`.
fn heavy_request(name: &str, n_points: usize) -> ExportMetricsServiceRequest {
    let now = now_unix_nano();
    let points = (0..n_points)
        .map(|idx| number_point(&[("pod", &format!("pod-{idx:06}")), ("gpu", &format!("{}", idx % 8))], now, 1.0))
        .collect();
    request(&[("job", "heavy"), ("node", "n1")], vec![gauge(name, points)])
}

/// Row 8: 16 clients send CPU-heavy exports with a 5 s deadline to one ingest worker. The queue
/// stays full past `--ingest-queue-wait`, so the excess is refused at once as `UNAVAILABLE`
/// naming the flag (the answer OTLP clients retry with backoff), not left to run into the
/// deadline. Then exports whose deadline passes while they wait in the queue are dropped
/// before they are decoded: not stored, counted as abandoned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row8_overload_is_answered_retryable_and_work_of_gone_clients_is_dropped() {
    let server = server_with_probe(|config| {
        config.ingest_worker_count = 1;
        config.ingest_queue_wait = Duration::from_millis(50);
    })
    .await;
    let storm = heavy_request("storm", 4_000);
    let answers = probed(&server, async {
        let exports = (0..16).map(|_| {
            let storm = storm.clone();
            async {
                let mut client = server.otlp_client().await;
                let mut export = tonic::Request::new(storm);
                export.set_timeout(Duration::from_secs(5));
                client.export(export).await
            }
        });
        futures_util::future::join_all(exports).await
    })
    .await;
    let mut unavailable = 0;
    for answer in &answers {
        match answer {
            Ok(_) => {}
            Err(status) if status.code() == Code::Unavailable => {
                assert!(status.message().contains("--ingest-queue-wait"), "{}", status.message());
                unavailable += 1;
            }
            Err(status) => panic!("neither stored nor refused as retryable: {status:?}"),
        }
    }
    assert!(unavailable > 0 && unavailable < 16, "{unavailable} of 16 refused as retryable");
    assert_eq!(
        server.metric("otelscale_requests_total{transport=\"grpc\",outcome=\"overloaded\"}").await,
        unavailable as f64
    );

    // A long export holds the one worker; three short-deadline exports queue behind it and
    // their clients give up. Compressed bodies always go to the workers, so they queue.
    let long = heavy_request("long", 60_000);
    let abandoned_before = server.metric("otelscale_ingest_abandoned_total").await;
    let (long_answer, short_answers) = probed(&server, async {
        let mut client = server.otlp_client().await;
        let long = client.export(long);
        let shorts = async {
            // Sent once the long export holds the worker (decoding 60,000 points takes far
            // longer than the short exports' deadline, even in a release build).
            let queued = server.wait_for_metric("otelscale_ingest_jobs", 1.0).await;
            assert_eq!(queued, 1.0);
            let server = &server;
            let shorts = (0..3).map(|idx| async move {
                let mut client = server.otlp_client().await.send_compressed(CompressionEncoding::Gzip);
                let mut export = tonic::Request::new(heavy_request(&format!("gone_{idx}"), 10));
                export.set_timeout(Duration::from_millis(50));
                client.export(export).await
            });
            futures_util::future::join_all(shorts).await
        };
        tokio::join!(long, shorts)
    })
    .await;
    long_answer.unwrap();
    for answer in &short_answers {
        let status = answer.as_ref().unwrap_err();
        assert!(matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled), "{status:?}");
    }
    let abandoned = server.wait_for_metric("otelscale_ingest_abandoned_total", abandoned_before + 3.0).await;
    assert_eq!(abandoned, abandoned_before + 3.0, "the three queued exports were dropped undecoded");
    for idx in 0..3 {
        let answer = server.admin_query(&[("metricQuery", &format!("sum(gone_{idx})"))]).await;
        assert_eq!(answer["matchedSeries"], 0, "gone_{idx} was stored: {answer}");
    }
    server.stop().await;
}

/// A gauge point of `pod` at `time_unix_nano`.
fn clock_request(time_unix_nano: u64, value: f64) -> ExportMetricsServiceRequest {
    request(&[("job", "clock")], vec![gauge("clock_value", vec![number_point(&[("pod", "p")], time_unix_nano, value)])])
}

const CLOCK_TRIGGER: &[(&str, &str)] =
    &[("metricQuery", "clock_value{job=clock}"), ("operationOverTime", "last_one"), ("targetValue", "1")];

/// Row 9: a point stamped far ahead (now + 299 s) is refused as `future_timestamp`; the real
/// producer's points go on and the trigger reads them. A point within the skew holds the
/// series' later points back for at most the skew. A snapshot holding future samples does not
/// bring them back on restore.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row9_points_from_the_future_cannot_hold_a_series_back() {
    const SKEW: Duration = Duration::from_millis(1_500);
    let server = server_with_probe(|config| config.future_skew_ms_max = SKEW.as_millis() as i64).await;
    let mut client = server.otlp_client().await;
    let answer = client.export(clock_request(now_unix_nano() + 299 * SECOND_NS, 999.0)).await.unwrap().into_inner();
    let message = answer.partial_success.expect("refused").error_message;
    assert!(message.contains("future_timestamp") && message.contains("--max-future-skew"), "{message}");
    let answer = client.export(clock_request(now_unix_nano(), 7.0)).await.unwrap().into_inner();
    assert!(answer.partial_success.is_none(), "the real producer's point is stored: {answer:?}");
    assert_eq!(probed(&server, server.get_metric_value(CLOCK_TRIGGER)).await.unwrap(), 7.0);

    // Within the skew: stored, and the producer's points at the real time are out of order
    // until the clock passes it, no longer than the skew.
    let ahead = now_unix_nano() + SKEW.as_nanos() as u64 * 2 / 3;
    client.export(clock_request(ahead, 8.0)).await.unwrap();
    let held_back_from = Instant::now();
    loop {
        let answer = client.export(clock_request(now_unix_nano(), 9.0)).await.unwrap().into_inner();
        match answer.partial_success {
            None => break,
            Some(partial) => assert!(partial.error_message.contains("out_of_order"), "{partial:?}"),
        }
        assert!(held_back_from.elapsed() < SKEW + Duration::from_secs(2), "held back longer than the skew");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.get_metric_value(CLOCK_TRIGGER).await.unwrap(), 9.0);
    server.stop().await;

    // A snapshot written by a server whose samples ran 5 minutes ahead of this one's clock.
    let dir = tempfile::tempdir().unwrap();
    let ahead_store = otelscale::store::Store::new(otelscale::store::StoreConfig::new(2, 100, 600_000));
    let now_ms = (now_unix_nano() / 1_000_000) as i64;
    let key = otelscale::store::SeriesKey::new(
        "clock_value",
        vec![otelscale::store::LabelPair::new("job", "clock"), otelscale::store::LabelPair::new("pod", "p")],
    );
    let samples = [(now_ms - 2_000, 5.0), (now_ms + 300_000, 999.0)];
    ahead_store.restore_series(key, otelscale::store::SeriesKind::Gauge, &samples);
    otelscale::snapshot::write_snapshot(&ahead_store, dir.path(), 1, now_ms).unwrap();
    let snapshot = otelscale::config::SnapshotConfig {
        dir: dir.path().to_path_buf(),
        interval: Duration::from_secs(3_600),
        keep: 1,
    };
    let restored = TestServer::start_with(|config| {
        config.snapshot = Some(snapshot);
        config.future_skew_ms_max = SKEW.as_millis() as i64;
    })
    .await;
    assert_eq!(restored.get_metric_value(CLOCK_TRIGGER).await.unwrap(), 5.0, "the future sample was dropped");
    let answer = restored.otlp_client().await.export(clock_request(now_unix_nano(), 6.0)).await.unwrap().into_inner();
    assert!(answer.partial_success.is_none(), "the producer's next point is not held back: {answer:?}");
    assert_eq!(restored.get_metric_value(CLOCK_TRIGGER).await.unwrap(), 6.0);
    restored.stop().await;
}

/// Row 10: a flood of junk series of one metric. It is refused past `--max-series-per-metric`
/// (`metric_series_limit`, naming the flag) while the store has room: a new legitimate pod's
/// series of another metric is stored and its trigger answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row10_a_junk_metric_cannot_starve_the_other_metrics_of_series() {
    let server = server_with_probe(|config| {
        config.series_count_max = 1_000;
        config.series_per_metric_max = 300;
    })
    .await;
    let junk = heavy_request("junk", 2_000);
    let answer = probed(&server, async { server.otlp_client().await.export(junk).await }).await;
    let message = answer.unwrap().into_inner().partial_success.expect("refused in part").error_message;
    assert!(message.contains("1700 metric_series_limit") && message.contains("--max-series-per-metric"), "{message}");
    let now = now_unix_nano();
    let legit =
        request(&[("job", "train")], vec![gauge("legit_tokens", vec![number_point(&[("pod", "new-pod")], now, 5.0)])]);
    let answer = server.otlp_client().await.export(legit).await.unwrap().into_inner();
    assert!(answer.partial_success.is_none(), "the new pod's series is stored: {answer:?}");
    let trigger =
        [("metricQuery", "legit_tokens{pod=new-pod}"), ("operationOverTime", "last_one"), ("targetValue", "1")];
    assert_eq!(server.get_metric_value(&trigger).await.unwrap(), 5.0);
    assert_eq!(server.metric("otelscale_series").await, 302.0, "probe, 300 junk, the new pod");
    server.stop().await;
}
