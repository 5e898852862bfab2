//! Every scenario, briefly, against the real server in-process; the figures each reports must
//! agree with what the server counted.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use otelscale::config::Config;
use otelscale::server::{self, Listeners};
use otelscale_loadgen::client::Transport;
use otelscale_loadgen::keda::HpaPolicy;
use otelscale_loadgen::report::{self, RunContext};
use otelscale_loadgen::scenarios::hostile::{self, payloads::LargeLabels, Attack};
use otelscale_loadgen::scenarios::{fleet, latency, scale_sim, throughput, triggers};
use otelscale_loadgen::server_metrics;
use otelscale_loadgen::shapes::FleetShape;
use tokio::net::TcpListener;

/// How long the in-process server may take to serve (generous: a loaded CI machine is slow).
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// The hostile test takes the CPU on purpose (back-to-back costly queries); the other tests
/// assert rates and timings. It runs alone (write), they run together (read).
static CPU: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

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
    let _shared = CPU.read().await;
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
    let _shared = CPU.read().await;
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
    let _shared = CPU.read().await;
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
    let _shared = CPU.read().await;
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
    let _shared = CPU.read().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_measures_a_baseline_and_each_attack() {
    let _alone = CPU.write().await;
    let server = start_server().await;
    // Three cheap attacks at a small scale. Timings and verdicts are not asserted: the server
    // may or may not be hardened yet; the structure of the result and the report are.
    let config = hostile::HostileConfig {
        otlp_grpc: server.otlp_grpc,
        otlp_http: server.otlp_http,
        scaler: server.scaler,
        admin: server.admin,
        server_pid: Some(std::process::id()),
        // Asked out of order: they run in the order of Attack::ALL.
        attacks: vec![Attack::CostlyQuery, Attack::IdleSockets, Attack::FuturePoint, Attack::IdleSockets],
        duration: Duration::from_secs(1),
        baseline: Duration::from_secs(1),
        settle_timeout: Duration::from_secs(1),
        poll_interval: Duration::from_millis(20),
        probe_timeout: Duration::from_secs(1),
        healthz_interval: Duration::from_millis(100),
        healthz_timeout: Duration::from_secs(1),
        rss_stop_bytes: u64::MAX,
        labels: LargeLabels { resource_labels: 8, value_bytes: 256 },
        bomb_inflated_bytes: 64 * 1024,
        zstd_bodies: 1,
        large_series: 50,
        query_matchers: 16,
        query_clients: 1,
        series_list_limit: 100,
        idle_sockets: 8,
        drip_sockets: 4,
        drip_interval: Duration::from_secs(1),
        drip_content_length: 1024,
        streams: 16,
        overload_clients: 1,
        overload_points: 100,
        overload_grpc_timeout: Duration::from_secs(1),
        future_offset: Duration::from_secs(299),
        flood_series: 100,
        flood_batch: 50,
        flood_metrics: 2,
        seed: 7,
        show_progress: false,
    };
    let result = hostile::run(&config).await.unwrap();
    let baseline = &result.baseline;
    assert!(baseline.get_metrics.attempts >= 5, "{:?}", baseline.get_metrics);
    assert_eq!(baseline.get_metrics.latency.samples, baseline.get_metrics.attempts);
    assert!(baseline.get_metrics.latency.p50_ms > 0.0 && baseline.get_metrics.latency.p99_ms > 0.0);
    assert!(baseline.get_metrics_new_connection.attempts >= 1);
    assert!(baseline.healthz.attempts >= 3 && baseline.healthz.latency.max_ms > 0.0);
    assert!(baseline.small_export.attempts >= 1);
    let server_figures = baseline.server.as_ref().expect("server pid given");
    assert!(server_figures.rss_max_bytes > 0 && server_figures.fds_end > 0);

    let ran: Vec<Attack> = result.attacks.iter().map(|report| report.attack).collect();
    assert_eq!(ran, [Attack::IdleSockets, Attack::FuturePoint, Attack::CostlyQuery]);
    for report in &result.attacks {
        let during = report.during.as_ref().unwrap_or_else(|| panic!("{:?} did not run", report.attack));
        assert!(during.get_metrics.attempts > 0 && during.healthz.attempts > 0, "{:?}", report.attack);
        assert!(during.server.is_some());
        assert!(report.verdicts.get_metrics_p99.is_some() && report.verdicts.healthz.is_some());
        assert!(report.verdicts.peak_rss.is_none(), "RSS is judged for rows 1 to 3 only");
        assert!(!report.outcome.summary.is_empty());
        assert!(report.stopped_early.is_none(), "{:?}", report.stopped_early);
    }
    for report in &result.attacks {
        let aftermath = report.aftermath.as_ref().expect("every attack that ran has an aftermath");
        assert!(aftermath.waited_s > 0.0 && !aftermath.server_exited);
        assert!(report.peak_rss_bytes.is_some() && report.cpu_seconds.is_some());
    }

    let idle = &result.attacks[0].outcome.details;
    assert_eq!(idle[0]["port"], "admin");
    assert_eq!(idle[1]["port"], "scaler");
    assert_eq!(idle[0]["wanted"], 8);
    let future = &result.attacks[1];
    assert!(future.verdicts.signal.is_some());
    assert_eq!(future.outcome.details["future_point"]["ok"], true);
    assert!(future.outcome.details["normal_points_sent"].as_u64().unwrap() >= 1);
    let costly = &result.attacks[2].outcome.details;
    // Run without series-bytes, the costly query seeds its series itself.
    assert_eq!(costly["seed"]["http_status"], 200);
    assert_eq!(costly["seed"]["rejected_points"], 0);
    assert_eq!(costly["matchers"], 16);
    let answers = costly["answers"].as_array().unwrap();
    assert!(answers.len() + costly["unfinished"].as_u64().unwrap() as usize >= 1);
    // The server takes the costly query (it is only slow).
    assert!(answers.iter().all(|answer| answer["http_status"] == 200), "{answers:?}");
    // The seeded large series are held.
    assert!(series_held(server.admin).await >= 50.0);

    let dir = std::env::temp_dir().join(format!("loadgen-hostile-{}", std::process::id()));
    let prefix = dir.join("hostile");
    report::write(&prefix, &RunContext::new("hostile", 7), &result, &result.markdown()).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("hostile.json")).unwrap()).unwrap();
    assert_eq!(json["results"]["attacks"].as_array().unwrap().len(), 3);
    assert!(json["results"]["baseline"]["get_metrics"]["latency"]["p99_ms"].is_number());
    assert_eq!(json["results"]["attacks"][1]["attack"], "future-point");
    assert_eq!(json["results"]["targets"]["get_metrics_p99_ms"], 50.0);
    let markdown = std::fs::read_to_string(dir.join("hostile.md")).unwrap();
    for expected in ["## Idle baseline", "## Attacks", "| idle-sockets (4) |", "| future-point (9) |", "row 6"] {
        assert!(markdown.contains(expected), "{expected} missing from\n{markdown}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_open_every_stream_poll_every_trigger_and_see_probes_activate() {
    let _shared = CPU.read().await;
    let server = start_server().await;
    let config = triggers::TriggersConfig {
        transport: Transport::Http,
        otlp_addr: server.otlp_http,
        scaler_addr: server.scaler,
        // The test runs in this process: its CPU is measured as the "server's".
        server_pid: Some(std::process::id()),
        models: 40,
        pods: 2,
        requests_per_s: 10,
        connections: 2,
        streams: 40,
        polled_triggers: 20,
        poll_interval: Duration::from_millis(500),
        probe_models: 2,
        warmup: Duration::from_millis(300),
        baseline: Duration::from_millis(1_000),
        duration: Duration::from_millis(2_000),
    };
    let result = triggers::run(&config).await.unwrap();
    assert_eq!((result.series, result.streams_failed, result.polled_failures), (160, 0, 0));
    assert_eq!((result.without_triggers.pushes_failed, result.with_triggers.pushes_failed), (0, 0));
    assert!(result.with_triggers.pushes_sent >= 10, "{}", result.with_triggers.pushes_sent);
    // 20 triggers every 0.5 s for 2 s, two calls each: about 160 calls.
    assert!(result.polled_calls.samples >= 80, "{}", result.polled_calls.samples);
    assert!(
        result.push_to_activation.samples >= 2 && result.activation_timeouts == 0,
        "{:?}",
        result.push_to_activation
    );
    assert!(result.with_triggers.get_metrics.samples > 10);
    assert!(result.with_triggers.server_cores.is_some_and(|cores| cores > 0.0));
    assert!(result.markdown().contains("cores the triggers add"));
}
