//! `throughput`: push DCGM-like batches as fast as possible (or at `--rate`) over C connections
//! and measure points per second, request latency, errors, and — when given the server's pid —
//! the server's CPU-microseconds per point from the same run.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::watch;

use crate::client::{Compression, OtlpSender, Transport};
use crate::payload::PayloadTemplate;
use crate::procstat::{self, ProcessSample};
use crate::server_metrics;
use crate::shapes::dcgm_templates;
use crate::stats::{LatencyHistogram, LatencySummary};

#[derive(Debug, Clone)]
pub struct ThroughputConfig {
    pub transport: Transport,
    pub otlp_addr: SocketAddr,
    pub connections: usize,
    pub points_per_request: usize,
    pub series: usize,
    pub duration: Duration,
    /// Points per second across all connections; `None` = as fast as possible.
    pub rate_points_per_s: Option<f64>,
    pub gzip: bool,
    pub zstd: bool,
    pub seed: u64,
    pub server_pid: Option<u32>,
    pub admin_addr: Option<SocketAddr>,
    pub show_progress: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerUsage {
    pub cpu_seconds: f64,
    pub cores_busy: f64,
    pub peak_rss_bytes: u64,
    pub cpu_us_per_point: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ThroughputResult {
    pub transport: Transport,
    pub connections: usize,
    pub points_per_request: usize,
    pub series: usize,
    pub compression: Compression,
    pub rate_points_per_s: Option<f64>,
    pub elapsed_s: f64,
    pub requests_ok: u64,
    pub requests_failed: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub points_sent: u64,
    pub points_accepted: u64,
    pub points_rejected: u64,
    pub sent_points_per_s: f64,
    pub accepted_points_per_s: f64,
    pub payload_bytes_per_point: f64,
    pub request_latency: LatencySummary,
    pub server: Option<ServerUsage>,
    pub loadgen_cpu_seconds: f64,
    pub loadgen_cpu_us_per_point: f64,
    /// Change of the server's `otelscale_points_received_total` over the run.
    pub server_counted_points: Option<u64>,
}

/// What one connection task did.
#[derive(Debug, Default)]
struct ConnectionStats {
    requests_ok: u64,
    requests_failed: u64,
    points_sent: u64,
    points_rejected: u64,
    points_failed: u64,
    errors_by_kind: BTreeMap<String, u64>,
    latency: LatencyHistogram,
}

pub fn now_unix_nano() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_nanos() as u64)
}

/// A running load: connection tasks pushing until told to stop.
pub struct LoadEngine {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<ConnectionStats>>,
    points_sent: Arc<AtomicU64>,
    started: Instant,
    payload_bytes_per_point: f64,
}

impl LoadEngine {
    /// Connects every connection and starts pushing.
    pub async fn start(config: &ThroughputConfig) -> anyhow::Result<LoadEngine> {
        anyhow::ensure!(config.connections > 0, "--connections must be at least 1");
        anyhow::ensure!(config.points_per_request > 0, "--points-per-request must be at least 1");
        anyhow::ensure!(config.series > 0, "--series must be at least 1");
        let templates = dcgm_templates(config.series, config.points_per_request, config.seed)?;
        let total_bytes: usize = templates.iter().map(|t| t.bytes().len()).sum();
        let total_points: usize = templates.iter().map(PayloadTemplate::n_points).sum();
        let payload_bytes_per_point = total_bytes as f64 / total_points as f64;
        // Deal the templates out; with fewer templates than connections, they are shared (cloned).
        let mut per_connection: Vec<Vec<PayloadTemplate>> = vec![Vec::new(); config.connections];
        for (idx, template) in templates.iter().enumerate() {
            per_connection[idx % config.connections].push(template.clone());
        }
        for (idx, own) in per_connection.iter_mut().enumerate() {
            if own.is_empty() {
                own.push(templates[idx % templates.len()].clone());
            }
        }
        let (stop, stop_receiver) = watch::channel(false);
        let points_sent = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let per_connection_rate = config.rate_points_per_s.map(|rate| rate / config.connections as f64);
        let mut tasks = Vec::with_capacity(config.connections);
        for own in per_connection {
            let sender = OtlpSender::connect(
                config.transport,
                config.otlp_addr,
                Compression::from_flags(config.gzip, config.zstd),
            )
            .await?;
            let stop = stop_receiver.clone();
            let points_sent = Arc::clone(&points_sent);
            tasks.push(tokio::spawn(push_loop(sender, own, per_connection_rate, started, stop, points_sent)));
        }
        Ok(LoadEngine { stop, tasks, points_sent, started, payload_bytes_per_point })
    }

    pub fn points_sent(&self) -> u64 {
        self.points_sent.load(Ordering::Relaxed)
    }

    /// Stops every connection and sums their statistics.
    async fn finish(self) -> (ConnectionStats, f64, f64) {
        let _ = self.stop.send(true);
        let mut total = ConnectionStats::default();
        for task in self.tasks {
            if let Ok(stats) = task.await {
                total.requests_ok += stats.requests_ok;
                total.requests_failed += stats.requests_failed;
                total.points_sent += stats.points_sent;
                total.points_rejected += stats.points_rejected;
                total.points_failed += stats.points_failed;
                for (kind, n) in stats.errors_by_kind {
                    *total.errors_by_kind.entry(kind).or_default() += n;
                }
                total.latency.merge(&stats.latency);
            }
        }
        (total, self.started.elapsed().as_secs_f64(), self.payload_bytes_per_point)
    }

    /// Stops and returns (points sent, points accepted, elapsed seconds).
    pub async fn stop(self) -> (u64, u64, f64) {
        let (stats, elapsed_s, _) = self.finish().await;
        (stats.points_sent, stats.points_sent - stats.points_rejected - stats.points_failed, elapsed_s)
    }
}

async fn push_loop(
    mut sender: OtlpSender,
    mut templates: Vec<PayloadTemplate>,
    rate_points_per_s: Option<f64>,
    started: Instant,
    stop: watch::Receiver<bool>,
    points_sent_total: Arc<AtomicU64>,
) -> ConnectionStats {
    let mut stats = ConnectionStats::default();
    let mut template_idx = 0;
    while !*stop.borrow() {
        if let Some(rate) = rate_points_per_s {
            // Open-loop pacing: the n-th point is due at n / rate after the start.
            let due = started + Duration::from_secs_f64(stats.points_sent as f64 / rate);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
                if *stop.borrow() {
                    break;
                }
            }
        }
        let n_templates = templates.len();
        let template = &mut templates[template_idx];
        template_idx = (template_idx + 1) % n_templates;
        template.restamp(now_unix_nano(), started.elapsed().as_secs_f64());
        let n_points = template.n_points() as u64;
        let payload = Bytes::copy_from_slice(template.bytes());
        let request_started = Instant::now();
        let result = sender.send(payload).await;
        stats.latency.record(request_started.elapsed());
        stats.points_sent += n_points;
        points_sent_total.fetch_add(n_points, Ordering::Relaxed);
        match result {
            Ok(ack) => {
                stats.requests_ok += 1;
                stats.points_rejected += ack.rejected_points;
            }
            Err(err) => {
                stats.requests_failed += 1;
                stats.points_failed += n_points;
                *stats.errors_by_kind.entry(err.kind()).or_default() += 1;
            }
        }
    }
    stats
}

pub async fn run(config: &ThroughputConfig) -> anyhow::Result<ThroughputResult> {
    let server_before = config.server_pid.and_then(procstat::sample);
    let loadgen_before = procstat::sample(std::process::id());
    let counted_before = match config.admin_addr {
        Some(admin) => Some(server_metrics::points_received(admin).await?),
        None => None,
    };
    let engine = LoadEngine::start(config).await?;
    let progress = crate::progress::bar(config.show_progress, config.duration.as_millis() as u64, "ms");
    let deadline = Instant::now() + config.duration;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200).min(deadline.saturating_duration_since(Instant::now()))).await;
        progress.set_message(format!("{} points sent", engine.points_sent()));
        progress.set_position(engine.started.elapsed().as_millis() as u64);
    }
    let (stats, elapsed_s, payload_bytes_per_point) = engine.finish().await;
    progress.finish_and_clear();
    let server_after = config.server_pid.and_then(procstat::sample);
    let loadgen_after = procstat::sample(std::process::id());
    let counted_after = match config.admin_addr {
        Some(admin) => Some(server_metrics::points_received(admin).await?),
        None => None,
    };
    let points_accepted = stats.points_sent - stats.points_rejected - stats.points_failed;
    let server = match (server_before, server_after) {
        (Some(before), Some(after)) => Some(server_usage(before, after, elapsed_s, points_accepted)),
        _ => None,
    };
    let loadgen_cpu_seconds = match (loadgen_before, loadgen_after) {
        (Some(before), Some(after)) => after.cpu_seconds - before.cpu_seconds,
        _ => 0.0,
    };
    Ok(ThroughputResult {
        transport: config.transport,
        connections: config.connections,
        points_per_request: config.points_per_request,
        series: config.series,
        compression: Compression::from_flags(config.gzip, config.zstd),
        rate_points_per_s: config.rate_points_per_s,
        elapsed_s,
        requests_ok: stats.requests_ok,
        requests_failed: stats.requests_failed,
        errors_by_kind: stats.errors_by_kind,
        points_sent: stats.points_sent,
        points_accepted,
        points_rejected: stats.points_rejected,
        sent_points_per_s: stats.points_sent as f64 / elapsed_s,
        accepted_points_per_s: points_accepted as f64 / elapsed_s,
        payload_bytes_per_point,
        request_latency: stats.latency.summary(),
        server,
        loadgen_cpu_seconds,
        loadgen_cpu_us_per_point: loadgen_cpu_seconds * 1e6 / (stats.points_sent.max(1)) as f64,
        server_counted_points: counted_before.zip(counted_after).map(|(before, after)| after - before),
    })
}

fn server_usage(before: ProcessSample, after: ProcessSample, elapsed_s: f64, points: u64) -> ServerUsage {
    let cpu_seconds = after.cpu_seconds - before.cpu_seconds;
    ServerUsage {
        cpu_seconds,
        cores_busy: cpu_seconds / elapsed_s,
        peak_rss_bytes: after.peak_rss_bytes,
        cpu_us_per_point: cpu_seconds * 1e6 / points.max(1) as f64,
    }
}

/// Generation alone, no network: how fast one core re-stamps and copies payloads.
#[derive(Debug, Clone, Serialize)]
pub struct GenerationResult {
    pub points_per_s: f64,
    pub bytes_per_s: f64,
    pub elapsed_s: f64,
    pub points: u64,
}

pub fn generation_rate(
    series: usize,
    points_per_request: usize,
    seed: u64,
    duration: Duration,
) -> anyhow::Result<GenerationResult> {
    let mut templates = dcgm_templates(series, points_per_request, seed)?;
    let started = Instant::now();
    let (mut points, mut bytes) = (0u64, 0u64);
    let mut template_idx = 0;
    while started.elapsed() < duration {
        let n_templates = templates.len();
        let template = &mut templates[template_idx];
        template_idx = (template_idx + 1) % n_templates;
        template.restamp(now_unix_nano(), started.elapsed().as_secs_f64());
        let payload = Bytes::copy_from_slice(template.bytes());
        std::hint::black_box(&payload);
        points += template.n_points() as u64;
        bytes += payload.len() as u64;
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    Ok(GenerationResult {
        points_per_s: points as f64 / elapsed_s,
        bytes_per_s: bytes as f64 / elapsed_s,
        elapsed_s,
        points,
    })
}

impl ThroughputResult {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        out.push_str("| figure | value |\n|---|---|\n");
        let mut row = |name: &str, value: String| out.push_str(&format!("| {name} | {value} |\n"));
        row("transport", format!("{:?}, compression {:?}", self.transport, self.compression));
        row(
            "connections × points/request × series",
            format!("{} × {} × {}", self.connections, self.points_per_request, self.series),
        );
        row("duration", format!("{:.1} s", self.elapsed_s));
        row("points sent / s", format!("{:.0}", self.sent_points_per_s));
        row("points accepted / s", format!("{:.0}", self.accepted_points_per_s));
        row("requests ok / failed", format!("{} / {}", self.requests_ok, self.requests_failed));
        row("errors", format!("{:?}", self.errors_by_kind));
        row("payload bytes / point", format!("{:.1}", self.payload_bytes_per_point));
        row("request latency", self.request_latency.one_line());
        if let Some(server) = &self.server {
            row("server CPU-µs / point", format!("{:.3}", server.cpu_us_per_point));
            row("server cores busy", format!("{:.2}", server.cores_busy));
            row("server peak RSS", format!("{:.1} MiB", server.peak_rss_bytes as f64 / (1 << 20) as f64));
        }
        row("loadgen CPU-µs / point", format!("{:.3}", self.loadgen_cpu_us_per_point));
        if let Some(counted) = self.server_counted_points {
            row("points the server counted", counted.to_string());
        }
        out
    }
}
