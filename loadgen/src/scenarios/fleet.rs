//! `gpu-fleet`: a GPU cluster exporting through a Collector: every export interval, each batch
//! of nodes is re-stamped and sent, like the batch processor flushing.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;

use super::throughput::now_unix_nano;
use crate::client::{Compression, OtlpSender, Transport};
use crate::payload::PayloadTemplate;
use crate::shapes::FleetShape;
use crate::stats::{LatencyHistogram, LatencySummary};

#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub transport: Transport,
    pub otlp_addr: SocketAddr,
    pub shape: FleetShape,
    pub export_interval: Duration,
    pub duration: Duration,
    pub connections: usize,
    pub gzip: bool,
    pub show_progress: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct FleetResult {
    pub nodes: usize,
    pub gpus_per_node: usize,
    pub series: usize,
    pub points_per_export: usize,
    pub requests_per_export: usize,
    pub bytes_per_export: usize,
    pub exports: u64,
    pub points_sent: u64,
    pub points_rejected: u64,
    pub requests_failed: u64,
    pub points_per_s: f64,
    pub request_latency: LatencySummary,
    /// Time to send one whole export (all batches); must stay below the interval.
    pub export_duration: LatencySummary,
    pub late_exports: u64,
}

pub async fn run(config: &FleetConfig) -> anyhow::Result<FleetResult> {
    anyhow::ensure!(config.connections > 0, "--connections must be at least 1");
    let templates = config.shape.templates()?;
    let points_per_export: usize = templates.iter().map(PayloadTemplate::n_points).sum();
    let bytes_per_export: usize = templates.iter().map(|template| template.bytes().len()).sum();
    let requests_per_export = templates.len();
    let mut per_connection: Vec<Vec<PayloadTemplate>> = vec![Vec::new(); config.connections];
    for (idx, template) in templates.into_iter().enumerate() {
        per_connection[idx % config.connections].push(template);
    }
    let mut senders = Vec::new();
    for _ in 0..config.connections {
        senders.push(
            OtlpSender::connect(config.transport, config.otlp_addr, Compression::from_flags(config.gzip, false))
                .await?,
        );
    }
    let started = Instant::now();
    let progress = crate::progress::bar(config.show_progress, config.duration.as_millis() as u64, "ms");
    let mut request_latency = LatencyHistogram::default();
    let mut export_duration = LatencyHistogram::default();
    let (mut exports, mut points_sent, mut points_rejected, mut requests_failed, mut late_exports) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut next_export = Instant::now();
    while started.elapsed() < config.duration {
        tokio::time::sleep_until(next_export.into()).await;
        let export_started = Instant::now();
        let time_unix_nano = now_unix_nano();
        let elapsed_s = started.elapsed().as_secs_f64();
        // The connections send their batches concurrently, as a Collector's exporter queue does.
        let sends = senders.iter_mut().zip(per_connection.iter_mut()).map(|(sender, templates)| async move {
            let mut outcomes = Vec::with_capacity(templates.len());
            for template in templates.iter_mut() {
                template.restamp(time_unix_nano, elapsed_s);
                let sent_at = Instant::now();
                let result = sender.send(Bytes::copy_from_slice(template.bytes())).await;
                outcomes.push((template.n_points() as u64, sent_at.elapsed(), result));
            }
            outcomes
        });
        for outcomes in futures_util::future::join_all(sends).await {
            for (n_points, latency, result) in outcomes {
                request_latency.record(latency);
                points_sent += n_points;
                match result {
                    Ok(ack) => points_rejected += ack.rejected_points,
                    Err(_) => requests_failed += 1,
                }
            }
        }
        export_duration.record(export_started.elapsed());
        exports += 1;
        next_export += config.export_interval;
        if Instant::now() > next_export {
            late_exports += 1;
            next_export = Instant::now();
        }
        progress.set_message(format!("{exports} exports, {points_sent} points"));
        progress.set_position(started.elapsed().as_millis() as u64);
    }
    progress.finish_and_clear();
    Ok(FleetResult {
        nodes: config.shape.nodes,
        gpus_per_node: config.shape.gpus_per_node,
        series: config.shape.series_count(),
        points_per_export,
        requests_per_export,
        bytes_per_export,
        exports,
        points_sent,
        points_rejected,
        requests_failed,
        points_per_s: points_sent as f64 / started.elapsed().as_secs_f64(),
        request_latency: request_latency.summary(),
        export_duration: export_duration.summary(),
        late_exports,
    })
}

impl FleetResult {
    pub fn markdown(&self) -> String {
        format!(
            "| figure | value |\n|---|---|\n\
             | fleet | {} nodes × {} GPUs ({} series) |\n\
             | per export | {} points in {} requests, {} bytes |\n\
             | exports | {} ({} late) |\n\
             | points / s | {:.0} |\n\
             | rejected points / failed requests | {} / {} |\n\
             | request latency | {} |\n\
             | whole export | {} |\n",
            self.nodes,
            self.gpus_per_node,
            self.series,
            self.points_per_export,
            self.requests_per_export,
            self.bytes_per_export,
            self.exports,
            self.late_exports,
            self.points_per_s,
            self.points_rejected,
            self.requests_failed,
            self.request_latency.one_line(),
            self.export_duration.one_line()
        )
    }
}
