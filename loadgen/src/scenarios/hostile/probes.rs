//! What the hostile scenario measures in the idle baseline and during each attack: a KEDA-like
//! client polling GetMetrics over its own connection (on a trigger whose series the producer
//! here pushes, so the answer is a real value), GetMetrics on a new connection per probe,
//! `/healthz` on a new connection per probe (like the kubelet), a small export's round trip,
//! and the server's RSS, CPU and open descriptors from `/proc`. The server sampler also trips a
//! guard that ends the attack early when the server's RSS passes a limit (having grown by
//! 512 MiB in the attack) or the server exits.
//!
//! The probes run on a runtime of their own (one thread, [`probe_runtime`]), not on the one the
//! attacks' clients use: an attacker copying and framing 13 MiB requests must not delay the
//! probes on this side, or the figures would measure the load generator, not the server (KEDA
//! and the kubelet are other processes).
//!
//! Every probe has a timeout. A failed probe is recorded in the latency histogram at no less
//! than its timeout, so a p99 under the target means at least 99% of the probes were answered
//! in time.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use otelscale::scaler::proto::ScaledObjectRef;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use super::payloads::one_point;
use crate::keda;
use crate::procstat;
use crate::stats::{LatencyHistogram, LatencySummary};

/// The gauge the probes' producer pushes and the KEDA-like client reads.
pub const SIGNAL_METRIC: &str = "otelscale_loadgen_hostile_signal";
/// The value it always has: any other answer is a wrong value.
pub const SIGNAL_VALUE: f64 = 42.0;
/// Time between two GetMetrics probes on a new connection.
const NEW_CONNECTION_INTERVAL: Duration = Duration::from_secs(1);
/// Time between two exports of the signal.
const EXPORT_INTERVAL: Duration = Duration::from_millis(500);
/// Longest wait for one export of the signal (longer than the probes': a slow export is
/// measured, not cut off).
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// An export still in flight at the end of a phase counts as failed once it waited this long.
const UNFINISHED_COUNTS_AFTER: Duration = Duration::from_secs(1);
/// The guard trips past `rss_stop_bytes` only once the RSS grew this much in the phase, so that
/// series an earlier attack left for the retention do not stop the next attack at its start.
const RSS_GROWTH_BEFORE_STOP: u64 = 512 << 20;
/// Time between two samples of the server's `/proc` figures.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(50);

/// Where and how often to probe.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    pub otlp_grpc: SocketAddr,
    pub scaler: SocketAddr,
    pub admin: SocketAddr,
    pub server_pid: Option<u32>,
    /// Time between two GetMetrics calls of the KEDA-like client.
    pub poll_interval: Duration,
    /// Longest wait for one GetMetrics answer (connection included).
    pub probe_timeout: Duration,
    pub healthz_interval: Duration,
    /// Longest wait for one `/healthz` 200 (connection included).
    pub healthz_timeout: Duration,
    /// The attack ends early when the server's RSS passes this (and grew by 512 MiB in it).
    pub rss_stop_bytes: u64,
    /// Label value that makes the signal series this run's own.
    pub signal_id: String,
}

/// The trigger the KEDA-like client polls.
pub fn signal_trigger(signal_id: &str) -> ScaledObjectRef {
    keda::scaled_object(
        "loadgen-hostile",
        &[("metricQuery", format!("max({SIGNAL_METRIC}{{probe={signal_id}}})")), ("targetValue", "1".to_owned())],
    )
}

/// What one probe saw over a phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProbeFigures {
    pub attempts: u64,
    pub failures: u64,
    pub failures_by_kind: BTreeMap<String, u64>,
    /// Answers with a value other than the one pushed.
    pub wrong_values: u64,
    /// Every attempt; a failed one at no less than the probe's timeout.
    pub latency: LatencySummary,
}

/// The server process over a phase (from `/proc`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerFigures {
    pub rss_start_bytes: u64,
    /// Highest VmRSS sampled (every 50 ms), or the lifetime peak VmHWM when it grew during the
    /// phase (then the peak happened in it and is exact).
    pub rss_max_bytes: u64,
    pub rss_end_bytes: u64,
    /// VmHWM at the end: the process's lifetime peak.
    pub hwm_end_bytes: u64,
    pub hwm_grew: bool,
    pub cpu_seconds: f64,
    pub cores_busy: f64,
    pub fds_start: usize,
    pub fds_max: usize,
    pub fds_end: usize,
    /// The process was gone before the phase ended.
    pub exited: bool,
}

/// Everything measured over one phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PhaseFigures {
    pub duration_s: f64,
    /// The KEDA-like client, one connection opened at the start of the phase.
    pub get_metrics: ProbeFigures,
    /// GetMetrics on a new connection per probe, every second.
    pub get_metrics_new_connection: ProbeFigures,
    /// `/healthz` on a new connection per probe.
    pub healthz: ProbeFigures,
    /// Export of the one-point signal, every 500 ms, over its own gRPC connection.
    pub small_export: ProbeFigures,
    pub server: Option<ServerFigures>,
}

/// Counts one probe's attempts.
struct Recorder {
    figures: ProbeFigures,
    histogram: LatencyHistogram,
    timeout: Duration,
}

impl Recorder {
    fn new(timeout: Duration) -> Recorder {
        Recorder { figures: ProbeFigures::default(), histogram: LatencyHistogram::default(), timeout }
    }

    fn ok(&mut self, elapsed: Duration) {
        self.figures.attempts += 1;
        self.histogram.record(elapsed);
    }

    fn fail(&mut self, kind: impl Into<String>, elapsed: Duration) {
        self.figures.attempts += 1;
        self.figures.failures += 1;
        *self.figures.failures_by_kind.entry(kind.into()).or_default() += 1;
        self.histogram.record(elapsed.max(self.timeout));
    }

    /// A call still in flight when the phase ended: a failure at its elapsed time once it has
    /// waited longer than [`UNFINISHED_COUNTS_AFTER`]; before that, no evidence either way.
    fn unfinished(&mut self, elapsed: Duration) {
        if elapsed >= UNFINISHED_COUNTS_AFTER {
            self.figures.attempts += 1;
            self.figures.failures += 1;
            *self.figures.failures_by_kind.entry("unfinished".to_owned()).or_default() += 1;
            self.histogram.record(elapsed);
        }
    }

    fn finish(mut self) -> ProbeFigures {
        self.figures.latency = self.histogram.summary();
        self.figures
    }
}

/// `grpc_unavailable`, `grpc_deadlineexceeded`, …
pub fn status_kind(status: &tonic::Status) -> String {
    format!("grpc_{:?}", status.code()).to_lowercase()
}

/// Sleeps until `until`; true when told to stop first (or already told).
async fn sleep_or_stop(until: Instant, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow_and_update() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep_until(until.into()) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// The next tick of a fixed-rate loop; never in the past (a slow call delays, not bunches, the
/// next ones).
fn next_tick(tick: Instant, interval: Duration) -> Instant {
    (tick + interval).max(Instant::now())
}

/// The handle of the probes' own runtime: a current-thread runtime on a thread of its own,
/// started at the first use and kept for the process's life.
fn probe_runtime() -> tokio::runtime::Handle {
    static HANDLE: std::sync::OnceLock<tokio::runtime::Handle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("building the probes' runtime");
            let handle = runtime.handle().clone();
            std::thread::Builder::new()
                .name("loadgen-probes".to_owned())
                .spawn(move || runtime.block_on(std::future::pending::<()>()))
                .expect("spawning the probes' thread");
            handle
        })
        .clone()
}

/// The probes of one phase, running.
pub struct Probes {
    started: Instant,
    stop: watch::Sender<bool>,
    guard: Arc<watch::Sender<Option<String>>>,
    get_metrics: JoinHandle<ProbeFigures>,
    get_metrics_new_connection: JoinHandle<ProbeFigures>,
    healthz: JoinHandle<ProbeFigures>,
    small_export: JoinHandle<ProbeFigures>,
    server: Option<JoinHandle<ServerFigures>>,
}

impl Probes {
    pub fn start(config: &ProbeConfig) -> Probes {
        let started = Instant::now();
        let (stop, stop_receiver) = watch::channel(false);
        let guard = Arc::new(watch::Sender::new(None));
        let trigger = signal_trigger(&config.signal_id);
        let runtime = probe_runtime();
        let get_metrics = runtime.spawn(poll_get_metrics(
            config.scaler,
            trigger.clone(),
            config.poll_interval,
            config.probe_timeout,
            false,
            stop_receiver.clone(),
        ));
        let get_metrics_new_connection = runtime.spawn(poll_get_metrics(
            config.scaler,
            trigger,
            NEW_CONNECTION_INTERVAL,
            config.probe_timeout,
            true,
            stop_receiver.clone(),
        ));
        let healthz = runtime.spawn(probe_healthz(
            config.admin,
            config.healthz_interval,
            config.healthz_timeout,
            stop_receiver.clone(),
        ));
        let small_export =
            runtime.spawn(export_signal(config.otlp_grpc, config.signal_id.clone(), stop_receiver.clone()));
        let server = config.server_pid.map(|pid| {
            runtime.spawn(sample_server(pid, config.rss_stop_bytes, Arc::clone(&guard), stop_receiver, started))
        });
        Probes { started, stop, guard, get_metrics, get_metrics_new_connection, healthz, small_export, server }
    }

    /// Trips (`Some(reason)`) when the server's RSS passes the limit or the server exits.
    pub fn guard(&self) -> watch::Receiver<Option<String>> {
        self.guard.subscribe()
    }

    /// Stops every probe (an unfinished export counts as failed) and collects the figures.
    pub async fn finish(self) -> PhaseFigures {
        let duration_s = self.started.elapsed().as_secs_f64();
        let _ = self.stop.send(true);
        let figures = |joined: Result<ProbeFigures, tokio::task::JoinError>| joined.unwrap_or_default();
        PhaseFigures {
            duration_s,
            get_metrics: figures(self.get_metrics.await),
            get_metrics_new_connection: figures(self.get_metrics_new_connection.await),
            healthz: figures(self.healthz.await),
            small_export: figures(self.small_export.await),
            server: match self.server {
                Some(server) => server.await.ok(),
                None => None,
            },
        }
    }
}

/// GetMetrics every `interval`: over one connection opened at the first probe (and again after
/// a failed connect), or over a new connection per probe.
async fn poll_get_metrics(
    scaler: SocketAddr,
    trigger: ScaledObjectRef,
    interval: Duration,
    timeout: Duration,
    new_connection_per_probe: bool,
    mut stop: watch::Receiver<bool>,
) -> ProbeFigures {
    let mut recorder = Recorder::new(timeout);
    let mut client = None;
    let mut tick = Instant::now();
    loop {
        if *stop.borrow() {
            break;
        }
        let started = Instant::now();
        if new_connection_per_probe {
            client = None;
        }
        let answer = tokio::time::timeout(timeout, async {
            if client.is_none() {
                client = Some(keda::connect(scaler).await.map_err(|_| "connect".to_owned())?);
            }
            let client = client.as_mut().expect("connected above");
            keda::metric_value(client, &trigger).await.map_err(|status| status_kind(&status))
        })
        .await;
        match answer {
            Ok(Ok(value)) => {
                recorder.ok(started.elapsed());
                if value != SIGNAL_VALUE {
                    recorder.figures.wrong_values += 1;
                }
            }
            Ok(Err(kind)) => recorder.fail(kind, started.elapsed()),
            Err(_) => recorder.fail("timeout", started.elapsed()),
        }
        tick = next_tick(tick, interval);
        if sleep_or_stop(tick, &mut stop).await {
            break;
        }
    }
    recorder.finish()
}

/// `GET /healthz` on a new connection every `interval`: the time to a 200.
async fn probe_healthz(
    admin: SocketAddr,
    interval: Duration,
    timeout: Duration,
    mut stop: watch::Receiver<bool>,
) -> ProbeFigures {
    let mut recorder = Recorder::new(timeout);
    // No idle connections kept: every probe connects, like the kubelet's.
    let Ok(client) = reqwest::Client::builder().pool_max_idle_per_host(0).timeout(timeout).build() else {
        recorder.fail("client", Duration::ZERO);
        return recorder.finish();
    };
    let url = format!("http://{admin}/healthz");
    let mut tick = Instant::now();
    loop {
        if *stop.borrow() {
            break;
        }
        let started = Instant::now();
        let answer = async {
            let response = client.get(&url).send().await?;
            let status = response.status();
            response.bytes().await?;
            Ok::<_, reqwest::Error>(status)
        }
        .await;
        match answer {
            Ok(status) if status == reqwest::StatusCode::OK => recorder.ok(started.elapsed()),
            Ok(status) => recorder.fail(format!("http_{}", status.as_u16()), started.elapsed()),
            Err(err) if err.is_timeout() => recorder.fail("timeout", started.elapsed()),
            Err(err) if err.is_connect() => recorder.fail("connect", started.elapsed()),
            Err(_) => recorder.fail("transport", started.elapsed()),
        }
        tick = next_tick(tick, interval);
        if sleep_or_stop(tick, &mut stop).await {
            break;
        }
    }
    recorder.finish()
}

/// Exports the signal's one point (at the server's receive time) every 500 ms.
async fn export_signal(otlp_grpc: SocketAddr, signal_id: String, mut stop: watch::Receiver<bool>) -> ProbeFigures {
    let mut recorder = Recorder::new(EXPORT_TIMEOUT);
    let mut client: Option<MetricsServiceClient<Channel>> = None;
    let mut tick = Instant::now();
    loop {
        if *stop.borrow() {
            break;
        }
        let started = Instant::now();
        let export = async {
            if client.is_none() {
                let channel = Channel::from_shared(format!("http://{otlp_grpc}"))
                    .map_err(|_| "address".to_owned())?
                    .connect()
                    .await
                    .map_err(|_| "connect".to_owned())?;
                client = Some(MetricsServiceClient::new(channel));
            }
            let client = client.as_mut().expect("connected above");
            let request = one_point(SIGNAL_METRIC, &[("probe", &signal_id)], 0, SIGNAL_VALUE);
            let response = client.export(request).await.map_err(|status| status_kind(&status))?.into_inner();
            match response.partial_success {
                Some(partial) if partial.rejected_data_points > 0 => Err("rejected".to_owned()),
                _ => Ok(()),
            }
        };
        let answer = tokio::select! {
            answer = tokio::time::timeout(EXPORT_TIMEOUT, export) => answer,
            _ = stop.changed() => {
                recorder.unfinished(started.elapsed());
                break;
            }
        };
        match answer {
            Ok(Ok(())) => recorder.ok(started.elapsed()),
            Ok(Err(kind)) => recorder.fail(kind, started.elapsed()),
            Err(_) => recorder.fail("timeout", started.elapsed()),
        }
        tick = next_tick(tick, EXPORT_INTERVAL);
        if sleep_or_stop(tick, &mut stop).await {
            break;
        }
    }
    recorder.finish()
}

/// Samples the server every 50 ms; trips the guard when its RSS passes `rss_stop_bytes` or it
/// is gone.
async fn sample_server(
    pid: u32,
    rss_stop_bytes: u64,
    guard: Arc<watch::Sender<Option<String>>>,
    mut stop: watch::Receiver<bool>,
    started: Instant,
) -> ServerFigures {
    let trip = |reason: String| {
        guard.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(reason);
                true
            } else {
                false
            }
        });
    };
    let Some(first) = procstat::sample(pid) else {
        trip("the server process is not running".to_owned());
        return ServerFigures { exited: true, ..ServerFigures::default() };
    };
    let fds_start = procstat::open_fds(pid).unwrap_or(0);
    let mut figures = ServerFigures {
        rss_start_bytes: first.rss_bytes,
        rss_max_bytes: first.rss_bytes,
        rss_end_bytes: first.rss_bytes,
        hwm_end_bytes: first.peak_rss_bytes,
        fds_start,
        fds_max: fds_start,
        fds_end: fds_start,
        ..ServerFigures::default()
    };
    let mut last = first;
    let mut tick = Instant::now();
    loop {
        tick = next_tick(tick, SAMPLE_INTERVAL);
        let stopped = sleep_or_stop(tick, &mut stop).await;
        let Some(sample) = procstat::sample(pid) else {
            figures.exited = true;
            trip("the server process exited".to_owned());
            break;
        };
        last = sample;
        figures.rss_max_bytes = figures.rss_max_bytes.max(sample.rss_bytes);
        if let Some(fds) = procstat::open_fds(pid) {
            figures.fds_max = figures.fds_max.max(fds);
            figures.fds_end = fds;
        }
        let growth = sample.rss_bytes.saturating_sub(first.rss_bytes);
        if sample.rss_bytes > rss_stop_bytes && growth > RSS_GROWTH_BEFORE_STOP {
            trip(format!(
                "stopped at {:.1} GiB of server RSS (+{:.1} GiB in this attack)",
                sample.rss_bytes as f64 / GIB,
                growth as f64 / GIB
            ));
        }
        if stopped {
            break;
        }
    }
    figures.rss_end_bytes = last.rss_bytes;
    figures.hwm_end_bytes = last.peak_rss_bytes;
    figures.hwm_grew = last.peak_rss_bytes > first.peak_rss_bytes;
    if figures.hwm_grew {
        figures.rss_max_bytes = figures.rss_max_bytes.max(last.peak_rss_bytes);
    }
    figures.cpu_seconds = last.cpu_seconds - first.cpu_seconds;
    figures.cores_busy = figures.cpu_seconds / started.elapsed().as_secs_f64().max(1e-3);
    figures
}

/// Bytes in a GiB, for printing.
pub const GIB: f64 = (1u64 << 30) as f64;
/// Bytes in a MiB, for printing.
pub const MIB: f64 = (1u64 << 20) as f64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_count_at_least_the_timeout() {
        let mut recorder = Recorder::new(Duration::from_secs(1));
        for _ in 0..98 {
            recorder.ok(Duration::from_millis(2));
        }
        recorder.fail("connect", Duration::from_millis(1));
        recorder.fail("timeout", Duration::from_millis(1_500));
        let figures = recorder.finish();
        assert_eq!((figures.attempts, figures.failures), (100, 2));
        assert_eq!(figures.failures_by_kind["connect"], 1);
        // Two of a hundred failed: the p99 is a failure, at no less than the timeout.
        assert!(figures.latency.p99_ms >= 999.0, "{:?}", figures.latency);
        assert!(figures.latency.p50_ms < 3.0);
        assert!((figures.latency.max_ms - 1_500.0).abs() < 2.0);
        // Cut by the end of the phase: counted only after a second in flight, at its elapsed time.
        let mut recorder = Recorder::new(Duration::from_secs(10));
        recorder.unfinished(Duration::from_millis(3));
        recorder.unfinished(Duration::from_secs(4));
        let figures = recorder.finish();
        assert_eq!((figures.attempts, figures.failures), (1, 1));
        assert!((figures.latency.max_ms - 4_000.0).abs() < 5.0);
    }

    #[test]
    fn ticks_never_fall_behind_now() {
        let long_ago = Instant::now() - Duration::from_secs(5);
        assert!(next_tick(long_ago, Duration::from_millis(20)) >= Instant::now() - Duration::from_millis(1));
        let now = Instant::now();
        assert_eq!(next_tick(now + Duration::from_secs(1), Duration::from_secs(1)), now + Duration::from_secs(2));
    }
}
