//! `otelscale-loadgen`: command line for the scenarios. Prints a human summary; with
//! `--report perf-reports/<name>` also writes `<name>.json` and `<name>.md`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use otelscale_loadgen::client::Transport;
use otelscale_loadgen::keda::HpaPolicy;
use otelscale_loadgen::report::{self, RunContext};
use otelscale_loadgen::scenarios::hostile::{self, payloads::LargeLabels, Attack};
use otelscale_loadgen::scenarios::{fleet, latency, scale_sim, throughput, triggers};
use otelscale_loadgen::shapes::FleetShape;

#[derive(Debug, Parser)]
#[command(name = "otelscale-loadgen", version, about = "Load generator and latency prover for otelscale")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Args)]
struct Common {
    /// OTLP/gRPC address of the server under test.
    #[arg(long, default_value = "127.0.0.1:4317")]
    otlp_grpc: SocketAddr,
    /// OTLP/HTTP address of the server under test.
    #[arg(long, default_value = "127.0.0.1:4318")]
    otlp_http: SocketAddr,
    /// KEDA external scaler address of the server under test.
    #[arg(long, default_value = "127.0.0.1:8090")]
    scaler: SocketAddr,
    /// Admin address, to read what the server counted (optional).
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// Seed for names, phases and probe ids: the same seed gives the same payloads.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write `<path>.json` and `<path>.md`, e.g. `perf-reports/2026-11-30-throughput-grpc`.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
}

impl Common {
    /// The server's OTLP address for `transport`.
    fn otlp_addr(&self, transport: Transport) -> SocketAddr {
        match transport {
            Transport::Grpc => self.otlp_grpc,
            Transport::Http => self.otlp_http,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// A GPU cluster (DCGM exporter + vLLM + training counters) exporting through a Collector.
    GpuFleet {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 50)]
        nodes: usize,
        #[arg(long, default_value_t = 8)]
        gpus_per_node: usize,
        /// Most points per request, like the Collector batch processor's send_batch_size.
        #[arg(long, default_value_t = 8192)]
        batch_points: usize,
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        export_interval: Duration,
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        duration: Duration,
        #[arg(long, default_value_t = 2)]
        connections: usize,
        #[arg(long, value_enum, default_value_t = Transport::Grpc)]
        transport: Transport,
        #[arg(long)]
        gzip: bool,
    },
    /// Push as fast as possible (or at --rate) and measure points/s and server CPU per point.
    Throughput {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_enum, default_value_t = Transport::Grpc)]
        transport: Transport,
        #[arg(long, default_value_t = 2)]
        connections: usize,
        #[arg(long, default_value_t = 1000)]
        points_per_request: usize,
        #[arg(long, default_value_t = 100_000)]
        series: usize,
        #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Points per second across all connections (default: as fast as possible).
        #[arg(long)]
        rate: Option<f64>,
        #[arg(long, conflicts_with = "zstd")]
        gzip: bool,
        /// Compress request bodies with zstd (level 1).
        #[arg(long)]
        zstd: bool,
        /// The server's pid, to read its CPU time and peak RSS from /proc.
        #[arg(long)]
        server_pid: Option<u32>,
        /// Measure payload generation alone (no network): points/s one core can produce.
        #[arg(long)]
        sink: bool,
    },
    /// Push-to-visible and push-to-activation latency under background load.
    Latency {
        #[command(flatten)]
        common: Common,
        /// Background load, points per second (0 for none).
        #[arg(long, default_value_t = 200_000.0)]
        background_rate: f64,
        #[arg(long, default_value_t = 2)]
        background_connections: usize,
        #[arg(long, default_value_t = 100_000)]
        background_series: usize,
        #[arg(long, default_value_t = 1000)]
        background_points_per_request: usize,
        #[arg(long, default_value_t = 500)]
        samples: usize,
        #[arg(long, default_value = "10ms", value_parser = humantime::parse_duration)]
        gap: Duration,
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        probe_timeout: Duration,
        /// Background load before the first probe (0s measures from a cold store).
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        warmup: Duration,
    },
    /// What standing triggers cost: a multi-model fleet's pushes alone, then with one stream per
    /// model and polled triggers; server CPU, GetMetrics latency and push → activation.
    Triggers {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_enum, default_value_t = Transport::Http)]
        transport: Transport,
        /// The server's pid, to measure its CPU in each phase.
        #[arg(long)]
        server_pid: Option<u32>,
        #[arg(long, default_value_t = 2_000)]
        models: usize,
        #[arg(long, default_value_t = 8)]
        pods: usize,
        /// Requests per second the fleet's points are spread over.
        #[arg(long, default_value_t = 50)]
        requests_per_s: usize,
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// StreamIsActive streams, one per model (at most --models).
        #[arg(long, default_value_t = 2_000)]
        streams: usize,
        /// Triggers polled with GetMetrics and IsActive.
        #[arg(long, default_value_t = 0)]
        polled_triggers: usize,
        #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
        poll_interval: Duration,
        /// Models whose gauge this run flips to measure push → activation.
        #[arg(long, default_value_t = 4)]
        probe_models: usize,
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        warmup: Duration,
        /// The pushes-only phase.
        #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
        baseline: Duration,
        /// The phase with the triggers.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    /// Replay a load ramp and compare push (otelscale) and pull (Prometheus + KEDA) decisions.
    ScaleSim {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        idle: Duration,
        #[arg(long, default_value_t = 1000.0)]
        baseline_tokens_per_s: f64,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        warmup: Duration,
        #[arg(long, default_value_t = 3)]
        doublings: u32,
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        double_every: Duration,
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        hold: Duration,
        #[arg(long, default_value_t = 500.0)]
        target_value: f64,
        #[arg(long, default_value_t = 1)]
        min_replicas: u32,
        #[arg(long, default_value_t = 50)]
        max_replicas: u32,
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        export_interval: Duration,
        /// How often the HPA reads the metric (Kubernetes default 15s).
        #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
        hpa_sync_interval: Duration,
        /// The trigger's windowSeconds for `rate`.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        window: Duration,
        #[arg(long, default_value_t = 15.0)]
        pull_scrape_interval_s: f64,
        #[arg(long, default_value_t = 30.0)]
        pull_keda_polling_interval_s: f64,
        #[arg(long, default_value_t = 60.0)]
        pull_rate_window_s: f64,
    },
    /// The hardening issue's attacks against a running server, one after the other: GetMetrics,
    /// /healthz, a small export and the server's RSS and CPU in an idle baseline and during each,
    /// plus what each attacker got back.
    Hostile(Box<HostileArgs>),
}

#[derive(Debug, Args)]
struct HostileArgs {
    #[command(flatten)]
    common: Common,
    /// An attack to run (repeatable; default: all). They run in the order listed here, the ones
    /// that leave state behind for the retention last.
    #[arg(long = "attack", value_enum)]
    attacks: Vec<Attack>,
    /// The server's pid, for its CPU, RSS and open descriptors from /proc (and the RSS guard).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Length of each attack.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Length of the idle baseline before the first attack.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    baseline: Duration,
    /// Longest wait after each attack for the server to settle (its aftermath counts toward the
    /// attack's peak RSS and CPU).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    settle_timeout: Duration,
    /// Time between two GetMetrics calls of the KEDA-like client.
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    poll_interval: Duration,
    /// Longest wait for one GetMetrics answer.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    probe_timeout: Duration,
    /// Time between two /healthz probes (each on a new connection).
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    healthz_interval: Duration,
    /// Longest wait for one /healthz 200; longer counts as a failure.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    healthz_timeout: Duration,
    /// Stop an attack when the server's RSS passes this many MiB, having grown by 512 MiB in the
    /// attack (needs --server-pid).
    #[arg(long, default_value_t = 4096)]
    rss_stop_mib: u64,
    /// Large resource labels on the bombs and the large series (at most 63).
    #[arg(long, default_value_t = 63)]
    resource_labels: usize,
    /// Bytes of each large label value.
    #[arg(long, default_value_t = 2048)]
    label_value_bytes: usize,
    /// Inflated bytes of a bomb (the server's default --max-request-bytes, 16 MiB, less 4 KiB).
    #[arg(long, default_value_t = 16 * 1024 * 1024 - 4096)]
    bomb_inflated_bytes: usize,
    /// zstd bomb bodies to send, one connection each, a second apart.
    #[arg(long, default_value_t = 2)]
    zstd_bodies: usize,
    /// Series of series-bytes, and the costly query's seed, each carrying every large label.
    #[arg(long, default_value_t = 20_000)]
    large_series: usize,
    /// Matchers of the costly query (the server's default --max-query-matchers is 64).
    #[arg(long, default_value_t = 64)]
    query_matchers: usize,
    /// Clients sending the costly query back to back.
    #[arg(long, default_value_t = 1)]
    query_clients: usize,
    /// `limit` of the series-list attack's /api/v1/series requests (the issue asked for 100000).
    #[arg(long, default_value_t = 100_000)]
    series_list_limit: usize,
    /// Idle sockets to each of the admin and scaler ports.
    #[arg(long, default_value_t = 4096)]
    idle_sockets: usize,
    /// Dripping OTLP/HTTP sockets.
    #[arg(long, default_value_t = 4096)]
    drip_sockets: usize,
    /// Time between two body bytes of a dripping socket.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    drip_interval: Duration,
    /// Content-Length a dripping request announces.
    #[arg(long, default_value_t = 1 << 20)]
    drip_content_length: usize,
    /// Half-open Export streams on one HTTP/2 connection.
    #[arg(long, default_value_t = 20_000)]
    streams: usize,
    /// Concurrent clients of the overload.
    #[arg(long, default_value_t = 16)]
    overload_clients: usize,
    /// Points per overload request (DCGM-like, eight labels each; 50000 make 13.3 MiB).
    #[arg(long, default_value_t = 50_000)]
    overload_points: usize,
    /// grpc-timeout the overload clients send.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    overload_grpc_timeout: Duration,
    /// How far ahead the future point is stamped.
    #[arg(long, default_value = "299s", value_parser = humantime::parse_duration)]
    future_offset: Duration,
    /// Most junk series the flood sends (it stops at the first refused one).
    #[arg(long, default_value_t = 1_000_000)]
    flood_series: usize,
    /// Junk series per flood request.
    #[arg(long, default_value_t = 2_000)]
    flood_batch: usize,
    /// Metric names the junk series are spread over.
    #[arg(long, default_value_t = 16)]
    flood_metrics: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().scenario {
        Scenario::GpuFleet {
            common,
            nodes,
            gpus_per_node,
            batch_points,
            export_interval,
            duration,
            connections,
            transport,
            gzip,
        } => {
            let otlp_addr = common.otlp_addr(transport);
            let config = fleet::FleetConfig {
                transport,
                otlp_addr,
                shape: FleetShape { nodes, gpus_per_node, batch_points, seed: common.seed },
                export_interval,
                duration,
                connections,
                gzip,
                show_progress: !common.quiet,
            };
            let result = fleet::run(&config).await?;
            finish(&common, "gpu-fleet", &result, &result.markdown())
        }
        Scenario::Throughput {
            common,
            transport,
            connections,
            points_per_request,
            series,
            duration,
            rate,
            gzip,
            zstd,
            server_pid,
            sink,
        } => {
            if sink {
                let result = throughput::generation_rate(series, points_per_request, common.seed, duration)?;
                let markdown = format!(
                    "Payload generation alone, one core: {:.0} points/s ({:.0} MB/s of OTLP protobuf).\n",
                    result.points_per_s,
                    result.bytes_per_s / 1e6
                );
                return finish(&common, "throughput-sink", &result, &markdown);
            }
            let otlp_addr = common.otlp_addr(transport);
            let config = throughput::ThroughputConfig {
                transport,
                otlp_addr,
                connections,
                points_per_request,
                series,
                duration,
                rate_points_per_s: rate,
                gzip,
                zstd,
                seed: common.seed,
                server_pid,
                admin_addr: common.admin,
                show_progress: !common.quiet,
            };
            let result = throughput::run(&config).await?;
            finish(&common, "throughput", &result, &result.markdown())
        }
        Scenario::Latency {
            common,
            background_rate,
            background_connections,
            background_series,
            background_points_per_request,
            samples,
            gap,
            probe_timeout,
            warmup,
        } => {
            let config = latency::LatencyConfig {
                otlp_grpc_addr: common.otlp_grpc,
                scaler_addr: common.scaler,
                background_rate,
                background_connections,
                background_series,
                background_points_per_request,
                samples,
                gap,
                probe_timeout,
                warmup,
                seed: common.seed,
                show_progress: !common.quiet,
            };
            let result = latency::run(&config).await?;
            finish(&common, "latency", &result, &result.markdown())
        }
        Scenario::Triggers {
            common,
            transport,
            server_pid,
            models,
            pods,
            requests_per_s,
            connections,
            streams,
            polled_triggers,
            poll_interval,
            probe_models,
            warmup,
            baseline,
            duration,
        } => {
            let config = triggers::TriggersConfig {
                transport,
                otlp_addr: common.otlp_addr(transport),
                scaler_addr: common.scaler,
                server_pid,
                models,
                pods,
                requests_per_s,
                connections,
                streams,
                polled_triggers,
                poll_interval,
                probe_models,
                warmup,
                baseline,
                duration,
            };
            let result = triggers::run(&config).await?;
            finish(&common, "triggers", &result, &result.markdown())
        }
        Scenario::ScaleSim {
            common,
            idle,
            baseline_tokens_per_s,
            warmup,
            doublings,
            double_every,
            hold,
            target_value,
            min_replicas,
            max_replicas,
            export_interval,
            hpa_sync_interval,
            window,
            pull_scrape_interval_s,
            pull_keda_polling_interval_s,
            pull_rate_window_s,
        } => {
            anyhow::ensure!(target_value > 0.0, "--target-value must be greater than 0");
            anyhow::ensure!(min_replicas <= max_replicas, "--min-replicas must not exceed --max-replicas");
            let config = scale_sim::ScaleSimConfig {
                otlp_grpc_addr: common.otlp_grpc,
                scaler_addr: common.scaler,
                idle,
                baseline_tokens_per_s,
                warmup,
                doublings,
                double_every,
                hold,
                policy: HpaPolicy { target_value, min_replicas, max_replicas, tolerance: 0.1 },
                export_interval,
                hpa_sync_interval,
                window,
                pull: scale_sim::PullPipeline {
                    scrape_interval_s: pull_scrape_interval_s,
                    keda_polling_interval_s: pull_keda_polling_interval_s,
                    rate_window_s: pull_rate_window_s,
                },
                seed: common.seed,
                show_progress: !common.quiet,
            };
            let result = scale_sim::run(&config).await?;
            finish(&common, "scale-sim", &result, &result.markdown())
        }
        Scenario::Hostile(args) => {
            let result = hostile::run(&hostile_config(&args)).await?;
            finish(&args.common, "hostile", &result, &result.markdown())
        }
    }
}

/// The hostile scenario's configuration from its flags.
fn hostile_config(args: &HostileArgs) -> hostile::HostileConfig {
    let common = &args.common;
    hostile::HostileConfig {
        otlp_grpc: common.otlp_grpc,
        otlp_http: common.otlp_http,
        scaler: common.scaler,
        // /healthz and /metrics: the default admin port when --admin is not given.
        admin: common.admin.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
        server_pid: args.server_pid,
        attacks: args.attacks.clone(),
        duration: args.duration,
        baseline: args.baseline,
        settle_timeout: args.settle_timeout,
        poll_interval: args.poll_interval,
        probe_timeout: args.probe_timeout,
        healthz_interval: args.healthz_interval,
        healthz_timeout: args.healthz_timeout,
        rss_stop_bytes: args.rss_stop_mib.saturating_mul(1 << 20),
        labels: LargeLabels { resource_labels: args.resource_labels, value_bytes: args.label_value_bytes },
        bomb_inflated_bytes: args.bomb_inflated_bytes,
        zstd_bodies: args.zstd_bodies,
        large_series: args.large_series,
        query_matchers: args.query_matchers,
        query_clients: args.query_clients,
        series_list_limit: args.series_list_limit,
        idle_sockets: args.idle_sockets,
        drip_sockets: args.drip_sockets,
        drip_interval: args.drip_interval,
        drip_content_length: args.drip_content_length,
        streams: args.streams,
        overload_clients: args.overload_clients,
        overload_points: args.overload_points,
        overload_grpc_timeout: args.overload_grpc_timeout,
        future_offset: args.future_offset,
        flood_series: args.flood_series,
        flood_batch: args.flood_batch,
        flood_metrics: args.flood_metrics,
        seed: common.seed,
        show_progress: !common.quiet,
    }
}

/// Prints the summary and writes the report when asked.
fn finish(
    common: &Common,
    scenario: &'static str,
    result: &impl serde::Serialize,
    markdown: &str,
) -> anyhow::Result<()> {
    println!("{markdown}");
    if let Some(prefix) = &common.report {
        let context = RunContext::new(scenario, common.seed);
        report::write(prefix, &context, result, markdown)?;
        eprintln!("report written to {}.json and {}.md", prefix.display(), prefix.display());
    }
    Ok(())
}
