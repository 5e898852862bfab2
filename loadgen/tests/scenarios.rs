//! Every scenario, briefly, against the real server in-process; the figures each reports must
//! agree with what the server counted.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use otelscale::config::Config;
use otelscale::server::{self, Listeners};
use otelscale_loadgen::client::Transport;
use otelscale_loadgen::keda::HpaPolicy;
use otelscale_loadgen::scenarios::{fleet, latency, scale_sim, throughput};
use otelscale_loadgen::server_metrics;
use otelscale_loadgen::shapes::FleetShape;
use tokio::net::TcpListener;

/// How long the in-process server may take to serve (generous: a loaded CI machine is slow).
const READY_DEADLINE: Duration = Duration::from_secs(30);

struct Server {
    otlp_grpc: SocketAddr,
    otlp_http: SocketAddr,
    scaler: SocketAddr,
    admin: SocketAddr,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

async fn start_server() -> Server {
    let bind = || async { TcpListener::bind("127.0.0.1:0").await.unwrap() };
    let listeners =
        Listeners { otlp_grpc: bind().await, otlp_http: bind().await, scaler: bind().await, admin: bind().await };
    let addr = |listener: &TcpListener| listener.local_addr().unwrap();
    let (otlp_grpc, otlp_http, scaler, admin) =
        (addr(&listeners.otlp_grpc), addr(&listeners.otlp_http), addr(&listeners.scaler), addr(&listeners.admin));
    let (shutdown, shutdown_receiver) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server::run(listeners, Config::default(), async {
        let _ = shutdown_receiver.await;
    }));
    let deadline = Instant::now() + READY_DEADLINE;
    while !reqwest::get(format!("http://{admin}/readyz")).await.is_ok_and(|r| r.status().is_success()) {
        assert!(Instant::now() < deadline, "the server did not become ready within {READY_DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Server { otlp_grpc, otlp_http, scaler, admin, _shutdown: shutdown }
}

async fn series_held(admin: SocketAddr) -> f64 {
    server_metrics::sum_of(&server_metrics::scrape(admin).await.unwrap(), "otelscale_series")
}

fn throughput_config(server: &Server, transport: Transport) -> throughput::ThroughputConfig {
    throughput::ThroughputConfig {
        transport,
        otlp_addr: match transport {
            Transport::Grpc => server.otlp_grpc,
            Transport::Http => server.otlp_http,
        },
        connections: 2,
        points_per_request: 100,
        series: 1_000,
        duration: Duration::from_millis(700),
        rate_points_per_s: None,
        gzip: false,
        zstd: false,
        seed: 5,
        server_pid: Some(std::process::id()),
        admin_addr: Some(server.admin),
        show_progress: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_figures_match_the_server_counts() {
    let server = start_server().await;
    for (transport, gzip) in
        [(Transport::Grpc, false), (Transport::Http, false), (Transport::Http, true), (Transport::Grpc, true)]
    {
        let config = throughput::ThroughputConfig { gzip, ..throughput_config(&server, transport) };
        let result = throughput::run(&config).await.unwrap();
        assert_eq!(result.requests_failed, 0, "{transport:?}: {:?}", result.errors_by_kind);
        assert!(result.points_sent >= 1_000, "{transport:?}: {}", result.points_sent);
        assert_eq!(result.points_rejected, 0);
        assert_eq!(result.points_accepted, result.points_sent);
        // The server counted exactly what the loadgen says it sent.
        assert_eq!(result.server_counted_points, Some(result.points_sent), "{transport:?}");
        assert_eq!(result.requests_ok * 100, result.points_sent);
        let server_usage = result.server.as_ref().expect("server pid given");
        assert!(server_usage.cpu_us_per_point > 0.0 && server_usage.peak_rss_bytes > 0);
        assert!(result.request_latency.samples == result.requests_ok);
        assert!((200.0..300.0).contains(&result.payload_bytes_per_point));
    }
    // Every run re-sent the same 1000 series.
    assert_eq!(series_held(server.admin).await, 1_000.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_holds_a_requested_rate_and_sink_mode_generates() {
    let server = start_server().await;
    let config = throughput::ThroughputConfig {
        rate_points_per_s: Some(5_000.0),
        duration: Duration::from_secs(1),
        ..throughput_config(&server, Transport::Grpc)
    };
    let result = throughput::run(&config).await.unwrap();
    // Open-loop pacing: 5000 points/s for 1 s, sent 100 at a time.
    assert!((4_000..=6_200).contains(&result.points_sent), "{}", result.points_sent);
    let generated = throughput::generation_rate(1_000, 100, 5, Duration::from_millis(200)).unwrap();
    assert!(generated.points > 0 && generated.points_per_s > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_fleet_creates_every_series_it_claims() {
    let server = start_server().await;
    let shape = FleetShape { nodes: 3, gpus_per_node: 2, batch_points: 20, seed: 9 };
    let config = fleet::FleetConfig {
        transport: Transport::Grpc,
        otlp_addr: server.otlp_grpc,
        shape,
        export_interval: Duration::from_millis(200),
        duration: Duration::from_millis(1_000),
        connections: 2,
        gzip: false,
        show_progress: false,
    };
    let received_before = server_metrics::points_received(server.admin).await.unwrap();
    let result = fleet::run(&config).await.unwrap();
    assert!((4..=6).contains(&result.exports), "{}", result.exports);
    assert_eq!(result.points_per_export, 3 * shape.points_per_node());
    assert_eq!(result.points_sent, result.exports * result.points_per_export as u64);
    assert_eq!(result.requests_failed, 0);
    assert_eq!(result.points_rejected, 0);
    // Histograms expand into _count, _sum and buckets: the server holds exactly the series the shape says.
    assert_eq!(series_held(server.admin).await, shape.series_count() as f64);
    let received = server_metrics::points_received(server.admin).await.unwrap() - received_before;
    // One histogram point becomes 2 + 9 samples on the server.
    let samples_per_export = 3 * (6 * 2 + 1 + 11);
    assert_eq!(received, result.exports * samples_per_export);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_probes_are_all_seen_and_activated() {
    let server = start_server().await;
    let config = latency::LatencyConfig {
        otlp_grpc_addr: server.otlp_grpc,
        scaler_addr: server.scaler,
        background_rate: 20_000.0,
        background_connections: 1,
        background_series: 2_000,
        background_points_per_request: 500,
        samples: 20,
        gap: Duration::from_millis(5),
        probe_timeout: Duration::from_secs(5),
        warmup: Duration::from_millis(200),
        seed: 3,
        show_progress: false,
    };
    let result = latency::run(&config).await.unwrap();
    assert_eq!(result.timeouts, 0);
    assert_eq!(result.push_to_visible.samples, 20);
    assert_eq!(result.push_to_activation.samples, 20);
    assert_eq!(result.export_ack.samples, 20);
    // Visible only after the export round trip: the percentiles are ordered that way.
    assert!(result.push_to_visible.p50_ms >= result.export_ack.p50_ms * 0.5);
    assert!(result.push_to_activation.max_ms < 5_000.0);
    assert!(result.background_achieved_points_per_s > 5_000.0, "{}", result.background_achieved_points_per_s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_sim_push_decides_before_pull() {
    let server = start_server().await;
    let config = scale_sim::ScaleSimConfig {
        otlp_grpc_addr: server.otlp_grpc,
        scaler_addr: server.scaler,
        idle: Duration::from_millis(500),
        baseline_tokens_per_s: 1_000.0,
        warmup: Duration::from_millis(1_000),
        doublings: 2,
        double_every: Duration::from_millis(500),
        hold: Duration::from_millis(2_500),
        policy: HpaPolicy { target_value: 500.0, min_replicas: 1, max_replicas: 20, tolerance: 0.1 },
        export_interval: Duration::from_millis(250),
        hpa_sync_interval: Duration::from_millis(500),
        window: Duration::from_secs(1),
        pull: scale_sim::PullPipeline::default(),
        seed: 4,
        show_progress: false,
    };
    let result = scale_sim::run(&config).await.unwrap();
    assert_eq!(result.ideal_final_replicas, 8);
    let activation = result.push_activation_s.expect("the stream activated");
    assert!(activation < 1.0, "{activation}");
    assert!(result.pull_activation_s.unwrap() >= 30.0);
    let push = result.push_reaches_final_s.expect("push reached the final replica count");
    let pull = result.pull_reaches_final_s.expect("pull reaches it eventually");
    assert!(push < pull, "push {push} s, pull {pull} s");
    assert!(result.push_decisions.len() >= 6);
    assert!(result.push_decisions.iter().all(|d| d.replicas >= 1 && d.replicas <= 20));
}
