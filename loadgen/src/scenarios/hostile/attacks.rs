//! The attacks of the hostile scenario, one function each. Every attack ends at its deadline or
//! when the guard trips (server RSS past the limit, server gone), whichever comes first; every
//! client call has a timeout, and the attacker side holds at most a few hundred MB (the bombs'
//! inflated body while it is built, a few MB per overload client).
//!
//! Each returns an [`AttackOutcome`]: a one-line summary for the report's table, whether the
//! signal the attack aims at stayed intact (for the attacks that aim at one), and details.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use prost::Message;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tonic::codegen::http;
use tonic::transport::Channel;

use super::payloads::{self, LEGIT_METRIC};
use super::probes::{status_kind, MIB};
use crate::client::{Compression, OtlpSender, Transport};
use crate::keda;
use crate::payload::PayloadTemplate;
use crate::scenarios::throughput::now_unix_nano;
use crate::stats::{LatencyHistogram, LatencySummary};

/// gRPC path of an OTLP metrics export.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
/// Longest wait for one TCP connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Connects in flight at once when opening many sockets.
const CONNECTS_IN_FLIGHT: usize = 128;
/// Longest wait for one small export or GetMetrics call of an attack's own checks.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// The clock and the guard of one attack.
#[derive(Debug, Clone)]
pub struct AttackContext {
    pub started: Instant,
    pub deadline: Instant,
    guard: watch::Receiver<Option<String>>,
}

impl AttackContext {
    pub fn new(duration: Duration, guard: watch::Receiver<Option<String>>) -> AttackContext {
        let started = Instant::now();
        AttackContext { started, deadline: started + duration, guard }
    }

    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Past the deadline, or the guard tripped.
    pub fn stopped(&self) -> bool {
        self.guard.borrow().is_some() || Instant::now() >= self.deadline
    }

    /// Why the attack was stopped before its deadline, if it was.
    pub fn stop_reason(&self) -> Option<String> {
        self.guard.borrow().clone()
    }

    pub fn elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Waits until the deadline or the guard trips.
    pub async fn until_end(&self) {
        self.sleep(self.remaining()).await;
    }

    /// Sleeps for `duration`, less if the attack ends first.
    pub async fn sleep(&self, duration: Duration) {
        let until = (Instant::now() + duration).min(self.deadline);
        let mut guard = self.guard.clone();
        if guard.borrow_and_update().is_some() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(until.into()) => {}
            changed = guard.changed() => {
                if changed.is_err() {
                    tokio::time::sleep_until(until.into()).await;
                }
            }
        }
    }
}

/// What an attack did and what it got back.
#[derive(Debug, Clone, Serialize)]
pub struct AttackOutcome {
    /// One line for the report's table.
    pub summary: String,
    /// For the attacks aimed at a signal (future-point, series-flood): whether it survived.
    pub signal_intact: Option<bool>,
    pub details: serde_json::Value,
}

impl AttackOutcome {
    fn new(summary: String, signal_intact: Option<bool>, details: &impl Serialize) -> AttackOutcome {
        AttackOutcome { summary, signal_intact, details: serde_json::to_value(details).unwrap_or_default() }
    }

    /// An attack that could not run.
    pub fn not_run(reason: String) -> AttackOutcome {
        AttackOutcome { summary: reason, signal_intact: None, details: serde_json::Value::Null }
    }
}

/// `error sending request: connection closed before message completed`, from the error and its sources.
fn error_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.chars().take(200).collect()
}

fn kib(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / MIB)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// What the server answered one OTLP/HTTP POST.
#[derive(Debug, Clone, Serialize)]
pub struct PostAnswer {
    pub after_s: f64,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub rejected_points: Option<i64>,
    pub message: Option<String>,
}

impl PostAnswer {
    fn short(&self) -> String {
        match (self.http_status, &self.error) {
            (Some(status), _) => {
                let rejected = match self.rejected_points {
                    Some(n) if n > 0 => format!(", {n} points rejected"),
                    _ => String::new(),
                };
                format!("HTTP {status} after {:.2} s{rejected}", self.after_s)
            }
            (None, Some(error)) if error.contains("timed out") || error.contains("timeout") => {
                format!("no answer within {:.1} s", self.after_s)
            }
            (None, Some(error)) => format!("{error} after {:.2} s", self.after_s),
            (None, None) => format!("no answer within {:.1} s", self.after_s),
        }
    }
}

/// POSTs `body` to `/v1/metrics` on a connection of its own, within `timeout`.
pub async fn post_otlp_http(otlp_http: SocketAddr, body: Bytes, encoding: &str, timeout: Duration) -> PostAnswer {
    let started = Instant::now();
    let answer = async {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(timeout.max(Duration::from_millis(1)))
            .build()?;
        let response = client
            .post(format!("http://{otlp_http}/v1/metrics"))
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", encoding)
            .body(body)
            .send()
            .await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        Ok::<_, reqwest::Error>((status, bytes))
    }
    .await;
    let after_s = started.elapsed().as_secs_f64();
    match answer {
        Ok((status, bytes)) => {
            let decoded = ExportMetricsServiceResponse::decode(bytes.clone()).ok().filter(|_| status.is_success());
            let (rejected_points, message) = match decoded.and_then(|response| response.partial_success) {
                Some(partial) => (Some(partial.rejected_data_points), Some(partial.error_message)),
                None if status.is_success() => (Some(0), None),
                None => (None, Some(String::from_utf8_lossy(&bytes).chars().take(200).collect())),
            };
            PostAnswer { after_s, http_status: Some(status.as_u16()), error: None, rejected_points, message }
        }
        Err(err) => {
            let error = if err.is_timeout() { "timed out".to_owned() } else { error_text(&err) };
            PostAnswer { after_s, http_status: None, error: Some(error), rejected_points: None, message: None }
        }
    }
}

#[derive(Debug, Serialize)]
struct BombDetails {
    encoding: &'static str,
    compressed_bytes: usize,
    inflated_bytes: usize,
    points: usize,
    bodies_planned: usize,
    bodies_sent: usize,
    answers: Vec<PostAnswer>,
    unanswered: usize,
}

/// A compressed body posted `bodies` times, one connection each, a second apart (none after
/// the guard tripped); the answers, and what happens until the deadline.
pub async fn bomb(
    ctx: &AttackContext,
    otlp_http: SocketAddr,
    body: Bytes,
    encoding: &'static str,
    inflated_bytes: usize,
    points: usize,
    bodies: usize,
) -> AttackOutcome {
    let mut posts = Vec::new();
    for body_idx in 0..bodies {
        if ctx.stopped() {
            break;
        }
        posts.push(tokio::spawn(post_otlp_http(otlp_http, body.clone(), encoding, ctx.remaining())));
        if body_idx + 1 < bodies {
            ctx.sleep(Duration::from_secs(1)).await;
        }
    }
    ctx.until_end().await;
    let bodies_sent = posts.len();
    let mut answers = Vec::new();
    let mut unanswered = 0;
    for post in posts {
        if post.is_finished() {
            if let Ok(answer) = post.await {
                answers.push(answer);
            }
        } else {
            post.abort();
            unanswered += 1;
        }
    }
    let mut said: Vec<String> = answers.iter().map(PostAnswer::short).collect();
    if unanswered > 0 {
        said.push(format!("{unanswered} unanswered after {:.1} s", ctx.elapsed_s()));
    }
    let summary = format!(
        "{bodies_sent} × {} {encoding} ({} inflated, {:.2} M points): {}",
        kib(body.len()),
        kib(inflated_bytes),
        points as f64 / 1e6,
        said.join("; ")
    );
    let details = BombDetails {
        encoding,
        compressed_bytes: body.len(),
        inflated_bytes,
        points,
        bodies_planned: bodies,
        bodies_sent,
        answers,
        unanswered,
    };
    AttackOutcome::new(summary, None, &details)
}

/// `otelscale_series` from the server's `/metrics`, within a timeout.
pub async fn series_held(admin: SocketAddr) -> Option<f64> {
    let client = reqwest::Client::builder().timeout(CALL_TIMEOUT).build().ok()?;
    let page = client.get(format!("http://{admin}/metrics")).send().await.ok()?.text().await.ok()?;
    Some(crate::server_metrics::sum_of(&page, "otelscale_series"))
}

/// How many series of `metric` the server holds (`count(metric)` on the admin API).
pub async fn count_series(admin: SocketAddr, metric: &str) -> Option<f64> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().ok()?;
    let url = reqwest::Url::parse_with_params(
        &format!("http://{admin}/api/v1/query"),
        &[("metricQuery", format!("count({metric})"))],
    )
    .ok()?;
    let answer: serde_json::Value = client.get(url).send().await.ok()?.json().await.ok()?;
    answer["value"].as_f64()
}

#[derive(Debug, Serialize)]
struct SeriesBytesDetails {
    compressed_bytes: usize,
    inflated_bytes: usize,
    series: usize,
    label_bytes_per_series: usize,
    answer: PostAnswer,
    series_held_before: Option<f64>,
    series_held_after: Option<f64>,
}

/// One gzip request creating many series that each carry the same large labels.
pub async fn series_bytes(
    ctx: &AttackContext,
    otlp_http: SocketAddr,
    admin: SocketAddr,
    body: Bytes,
    inflated_bytes: usize,
    series: usize,
    label_bytes_per_series: usize,
) -> AttackOutcome {
    let series_held_before = series_held(admin).await;
    let answer = post_otlp_http(otlp_http, body.clone(), "gzip", ctx.remaining()).await;
    ctx.until_end().await;
    let series_held_after = series_held(admin).await;
    let delta = match (series_held_before, series_held_after) {
        (Some(before), Some(after)) => format!("; series held {:+}", after - before),
        _ => String::new(),
    };
    let summary = format!(
        "{} gzip ({} inflated), {series} series × {} of labels: {}{delta}",
        kib(body.len()),
        kib(inflated_bytes),
        kib(label_bytes_per_series),
        answer.short()
    );
    let details = SeriesBytesDetails {
        compressed_bytes: body.len(),
        inflated_bytes,
        series,
        label_bytes_per_series,
        answer,
        series_held_before,
        series_held_after,
    };
    AttackOutcome::new(summary, None, &details)
}

/// How one attacking socket ended.
#[derive(Debug, Clone, PartialEq)]
enum SocketFate {
    ConnectFailed(String),
    /// Closed by the server this long after connecting.
    Closed(f64),
    StillOpen,
}

/// Sockets of one port, tallied.
#[derive(Debug, Default, Serialize)]
struct SocketTally {
    port: String,
    addr: String,
    wanted: usize,
    opened: usize,
    connect_failures: BTreeMap<String, u64>,
    closed_by_server: usize,
    first_close_s: Option<f64>,
    median_close_s: Option<f64>,
    still_open_at_end: usize,
    /// Drip only: bytes of body sent in all, and the answers read back by status.
    #[serde(skip_serializing_if = "Option::is_none")]
    body_bytes_sent: Option<u64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    responses: BTreeMap<String, u64>,
}

impl SocketTally {
    fn new(port: &str, addr: SocketAddr, wanted: usize) -> SocketTally {
        SocketTally { port: port.to_owned(), addr: addr.to_string(), wanted, ..SocketTally::default() }
    }

    fn add(&mut self, fate: SocketFate, close_times: &mut Vec<f64>) {
        match fate {
            SocketFate::ConnectFailed(kind) => *self.connect_failures.entry(kind).or_default() += 1,
            SocketFate::Closed(after_s) => {
                self.opened += 1;
                self.closed_by_server += 1;
                close_times.push(after_s);
            }
            SocketFate::StillOpen => {
                self.opened += 1;
                self.still_open_at_end += 1;
            }
        }
    }

    fn finish(&mut self, close_times: &mut [f64]) {
        self.first_close_s = close_times.iter().copied().reduce(f64::min);
        self.median_close_s = median(close_times);
    }

    fn short(&self) -> String {
        let failed: u64 = self.connect_failures.values().sum();
        let mut text = format!("{}: {} of {} open", self.port, self.opened, self.wanted);
        if failed > 0 {
            text.push_str(&format!(" ({failed} connects failed)"));
        }
        match (self.closed_by_server, self.first_close_s, self.median_close_s) {
            (0, _, _) => text.push_str(", none closed by the server"),
            (closed, Some(first), Some(median)) => text
                .push_str(&format!(", {closed} closed by the server (first after {first:.1} s, median {median:.1} s)")),
            (closed, _, _) => text.push_str(&format!(", {closed} closed by the server")),
        }
        if !self.responses.is_empty() {
            let responses: Vec<String> = self.responses.iter().map(|(status, n)| format!("{n} × {status}")).collect();
            text.push_str(&format!(", answers {}", responses.join(", ")));
        }
        text
    }
}

async fn connect(addr: SocketAddr, semaphore: &Semaphore, ctx: &AttackContext) -> Result<TcpStream, String> {
    let _permit = semaphore.acquire().await.map_err(|_| "closed".to_owned())?;
    if ctx.stopped() {
        return Err("attack over".to_owned());
    }
    match tokio::time::timeout(CONNECT_TIMEOUT.min(ctx.remaining()), TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(err)) => Err(format!("{:?}", err.kind()).to_lowercase()),
        Err(_) => Err("timeout".to_owned()),
    }
}

/// `wanted` raw TCP connections to each port, held without a byte sent until the end; which the
/// server closed, and when.
pub async fn idle_sockets(ctx: &AttackContext, ports: &[(&str, SocketAddr)], wanted: usize) -> AttackOutcome {
    let (done, done_receiver) = watch::channel(false);
    let semaphore = Arc::new(Semaphore::new(CONNECTS_IN_FLIGHT));
    let mut sockets = Vec::new();
    for (port_idx, &(_, addr)) in ports.iter().enumerate() {
        for _ in 0..wanted {
            let (semaphore, ctx, mut done) = (Arc::clone(&semaphore), ctx.clone(), done_receiver.clone());
            sockets.push((
                port_idx,
                tokio::spawn(async move {
                    let mut stream = match connect(addr, &semaphore, &ctx).await {
                        Ok(stream) => stream,
                        Err(kind) => return SocketFate::ConnectFailed(kind),
                    };
                    let connected = Instant::now();
                    let mut buf = [0u8; 256];
                    loop {
                        tokio::select! {
                            read = stream.read(&mut buf) => match read {
                                // What the server says (an HTTP/2 SETTINGS frame) is read and dropped.
                                Ok(n) if n > 0 => continue,
                                _ => return SocketFate::Closed(connected.elapsed().as_secs_f64()),
                            },
                            _ = done.changed() => return SocketFate::StillOpen,
                        }
                    }
                }),
            ));
        }
    }
    ctx.until_end().await;
    let _ = done.send(true);
    let mut tallies: Vec<SocketTally> =
        ports.iter().map(|&(port, addr)| SocketTally::new(port, addr, wanted)).collect();
    let mut close_times = vec![Vec::new(); ports.len()];
    for (port_idx, socket) in sockets {
        let fate = socket.await.unwrap_or(SocketFate::ConnectFailed("task".to_owned()));
        tallies[port_idx].add(fate, &mut close_times[port_idx]);
    }
    for (tally, times) in tallies.iter_mut().zip(close_times.iter_mut()) {
        tally.finish(times);
    }
    let summary = tallies.iter().map(SocketTally::short).collect::<Vec<_>>().join("; ");
    AttackOutcome::new(summary, None, &tallies)
}

/// The status of an HTTP/1.1 answer in `bytes`, once its status line is complete.
fn http_status(bytes: &[u8]) -> Option<u16> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(bytes) {
        Ok(_) => response.code,
        // Too many headers or a bad header after a valid status line.
        Err(_) => response.code,
    }
}

/// `wanted` OTLP/HTTP POSTs announcing a body of `content_length` bytes, each sending one body
/// byte every `interval` (the sockets' first bytes spread over one interval); which the
/// server closed or answered, and when.
pub async fn drip(
    ctx: &AttackContext,
    otlp_http: SocketAddr,
    wanted: usize,
    interval: Duration,
    content_length: usize,
) -> AttackOutcome {
    let (done, done_receiver) = watch::channel(false);
    let semaphore = Arc::new(Semaphore::new(CONNECTS_IN_FLIGHT));
    let head = format!(
        "POST /v1/metrics HTTP/1.1\r\nHost: {otlp_http}\r\nContent-Type: application/x-protobuf\r\n\
         Content-Length: {content_length}\r\n\r\n"
    );
    let mut sockets = Vec::new();
    for socket_idx in 0..wanted {
        let (semaphore, ctx, mut done, head) =
            (Arc::clone(&semaphore), ctx.clone(), done_receiver.clone(), head.clone());
        let first_byte_after = interval.mul_f64(socket_idx as f64 / wanted.max(1) as f64);
        sockets.push(tokio::spawn(async move {
            let mut stream = match connect(otlp_http, &semaphore, &ctx).await {
                Ok(stream) => stream,
                Err(kind) => return (SocketFate::ConnectFailed(kind), 0u64, None),
            };
            let connected = Instant::now();
            let closed = |sent, status| (SocketFate::Closed(connected.elapsed().as_secs_f64()), sent, status);
            if stream.write_all(head.as_bytes()).await.is_err() {
                return closed(0, None);
            }
            let mut sent = 0u64;
            let mut answer = Vec::new();
            let mut status = None;
            let mut next_byte = connected + first_byte_after;
            let mut buf = [0u8; 512];
            loop {
                tokio::select! {
                    read = stream.read(&mut buf) => match read {
                        Ok(n) if n > 0 => {
                            if answer.len() < 4096 {
                                answer.extend_from_slice(&buf[..n]);
                            }
                            status = status.or_else(|| http_status(&answer));
                        }
                        _ => return closed(sent, status),
                    },
                    _ = tokio::time::sleep_until(next_byte.into()), if (sent as usize) < content_length => {
                        // 0x0a: the tag of field 1, as if a real body were on its way.
                        if stream.write_all(&[0x0a]).await.is_err() {
                            return closed(sent, status);
                        }
                        sent += 1;
                        next_byte += interval;
                    }
                    _ = done.changed() => return (SocketFate::StillOpen, sent, status),
                }
            }
        }));
    }
    ctx.until_end().await;
    let _ = done.send(true);
    let mut tally = SocketTally::new("OTLP/HTTP", otlp_http, wanted);
    let mut close_times = Vec::new();
    let mut body_bytes_sent = 0;
    for socket in sockets {
        let (fate, sent, status) = socket.await.unwrap_or((SocketFate::ConnectFailed("task".to_owned()), 0, None));
        body_bytes_sent += sent;
        if let Some(status) = status {
            *tally.responses.entry(format!("HTTP {status}")).or_default() += 1;
        }
        tally.add(fate, &mut close_times);
    }
    tally.body_bytes_sent = Some(body_bytes_sent);
    tally.finish(&mut close_times);
    let summary =
        format!("1 byte / {:.0} s of a {} body: {}", interval.as_secs_f64(), kib(content_length), tally.short());
    AttackOutcome::new(summary, None, &tally)
}

/// One admin API answer.
#[derive(Debug, Clone, Serialize)]
struct AdminAnswer {
    after_s: f64,
    http_status: Option<u16>,
    error: Option<String>,
    body_bytes: u64,
}

#[derive(Debug, Default, Serialize)]
struct QueryStats {
    answers: Vec<AdminAnswer>,
    in_flight: usize,
}

#[derive(Debug, Serialize)]
struct CostlyQueryDetails {
    query: String,
    query_bytes: usize,
    matchers: usize,
    seeded_series: usize,
    /// `None`: the series were already held (from series-bytes), not sent again.
    seed: Option<PostAnswer>,
    #[serde(flatten)]
    requests: AdminRequests,
}

#[derive(Debug, Serialize)]
struct SeriesListDetails {
    limit: usize,
    seeded_series: usize,
    seed: Option<PostAnswer>,
    #[serde(flatten)]
    requests: AdminRequests,
}

/// GET `url`, reading (and counting, not keeping) the whole body within `timeout`.
async fn admin_get(client: &reqwest::Client, url: reqwest::Url, timeout: Duration) -> AdminAnswer {
    let started = Instant::now();
    let answer = async {
        let mut response = client.get(url).timeout(timeout.max(Duration::from_millis(1))).send().await?;
        let status = response.status().as_u16();
        let mut body_bytes = 0u64;
        while let Some(chunk) = response.chunk().await? {
            body_bytes += chunk.len() as u64;
        }
        Ok::<_, reqwest::Error>((status, body_bytes))
    }
    .await;
    let after_s = started.elapsed().as_secs_f64();
    match answer {
        Ok((status, body_bytes)) => AdminAnswer { after_s, http_status: Some(status), error: None, body_bytes },
        Err(err) => AdminAnswer {
            after_s,
            http_status: None,
            error: Some(if err.is_timeout() { "timed out".to_owned() } else { error_text(&err) }),
            body_bytes: 0,
        },
    }
}

/// What back-to-back admin requests got.
#[derive(Debug, Serialize)]
struct AdminRequests {
    clients: usize,
    answered: usize,
    /// In flight at the end, or cut by it.
    unfinished: usize,
    latency: LatencySummary,
    answers: Vec<AdminAnswer>,
}

impl AdminRequests {
    /// `3 answered (3 × HTTP 200), 12.4 MiB each, p50 1.20 s, max 1.31 s; 1 unfinished`
    fn short(&self) -> String {
        if self.answers.is_empty() {
            return format!("none answered; {} unfinished", self.unfinished);
        }
        let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
        for answer in &self.answers {
            *statuses.entry(answer.http_status.unwrap_or(0)).or_default() += 1;
        }
        let statuses: Vec<String> = statuses.iter().map(|(status, n)| format!("{n} × HTTP {status}")).collect();
        let body_bytes = self.answers.iter().map(|answer| answer.body_bytes).max().unwrap_or(0);
        format!(
            "{} answered ({}), up to {} each, p50 {:.2} s, max {:.2} s; {} unfinished",
            self.answered,
            statuses.join(", "),
            kib(body_bytes as usize),
            self.latency.p50_ms / 1e3,
            self.latency.max_ms / 1e3,
            self.unfinished
        )
    }
}

/// `clients` clients sending GET `url` to the admin API back to back until the attack ends.
async fn admin_back_to_back(ctx: &AttackContext, url: reqwest::Url, clients: usize) -> anyhow::Result<AdminRequests> {
    let client = reqwest::Client::builder().build()?;
    let stats = Arc::new(Mutex::new(QueryStats::default()));
    let mut tasks = Vec::new();
    for _ in 0..clients.max(1) {
        let (client, url, stats, ctx) = (client.clone(), url.clone(), Arc::clone(&stats), ctx.clone());
        tasks.push(tokio::spawn(async move {
            while !ctx.stopped() {
                stats.lock().expect("not poisoned").in_flight += 1;
                let answer = admin_get(&client, url.clone(), ctx.remaining()).await;
                let mut stats = stats.lock().expect("not poisoned");
                stats.in_flight -= 1;
                stats.answers.push(answer);
            }
        }));
    }
    ctx.until_end().await;
    for task in &tasks {
        task.abort();
    }
    let stats = std::mem::take(&mut *stats.lock().expect("not poisoned"));
    // An answer cut at the deadline is unfinished too.
    let (answers, cut): (Vec<AdminAnswer>, Vec<AdminAnswer>) =
        stats.answers.into_iter().partition(|answer| answer.http_status.is_some());
    let mut latency = LatencyHistogram::default();
    for answer in &answers {
        latency.record(Duration::from_secs_f64(answer.after_s));
    }
    Ok(AdminRequests {
        clients: clients.max(1),
        answered: answers.len(),
        unfinished: stats.in_flight + cut.len(),
        latency: latency.summary(),
        answers,
    })
}

fn seed_said(seed: &Option<PostAnswer>) -> String {
    match seed {
        Some(seed) => format!("seeded: {}", seed.short()),
        None => "held from series-bytes".to_owned(),
    }
}

/// `clients` clients asking the admin API the costly query back to back, over the large series.
pub async fn costly_query(
    ctx: &AttackContext,
    admin: SocketAddr,
    query: String,
    matchers: usize,
    clients: usize,
    seeded_series: usize,
    seed: Option<PostAnswer>,
) -> AnyhowOutcome {
    let url = reqwest::Url::parse_with_params(
        &format!("http://{admin}/api/v1/query"),
        &[("metricQuery", query.as_str()), ("operationOverTime", "last_one")],
    )?;
    let requests = admin_back_to_back(ctx, url, clients).await?;
    let summary = format!(
        "{matchers}-matcher query ({} bytes) over {seeded_series} large series ({}): {}",
        query.len(),
        seed_said(&seed),
        requests.short()
    );
    let details = CostlyQueryDetails { query_bytes: query.len(), query, matchers, seeded_series, seed, requests };
    Ok(AttackOutcome::new(summary, None, &details))
}

/// `/api/v1/series?limit=<limit>` back to back, over the large series.
pub async fn series_list(
    ctx: &AttackContext,
    admin: SocketAddr,
    limit: usize,
    seeded_series: usize,
    seed: Option<PostAnswer>,
) -> AnyhowOutcome {
    let url = reqwest::Url::parse(&format!("http://{admin}/api/v1/series?limit={limit}"))?;
    let requests = admin_back_to_back(ctx, url, 1).await?;
    let summary = format!(
        "/api/v1/series?limit={limit} over {seeded_series} large series ({}): {}",
        seed_said(&seed),
        requests.short()
    );
    let details = SeriesListDetails { limit, seeded_series, seed, requests };
    Ok(AttackOutcome::new(summary, None, &details))
}

/// An attack that may fail to start (an address that does not parse, a client that cannot be built).
pub type AnyhowOutcome = anyhow::Result<AttackOutcome>;

#[derive(Debug, Default, Serialize)]
struct StreamDetails {
    wanted: usize,
    /// Streams whose headers h2 put on the wire.
    opened: usize,
    /// The server's SETTINGS_MAX_CONCURRENT_STREAMS as the client last saw it.
    server_max_concurrent_streams: Option<usize>,
    /// h2 held the next stream back this long after the start: the server's limit was reached.
    blocked_after_s: Option<f64>,
    answered: BTreeMap<String, u64>,
    reset: BTreeMap<String, u64>,
    still_open_at_end: usize,
    first_answer_s: Option<f64>,
    connection_error: Option<String>,
    connection_closed_after_s: Option<f64>,
}

/// One HTTP/2 connection to the OTLP/gRPC port opening `wanted` Export streams: headers sent,
/// no body, never ended. How many the server let open, answered, reset, or left open.
pub async fn half_open_streams(ctx: &AttackContext, otlp_grpc: SocketAddr, wanted: usize) -> AttackOutcome {
    let mut details = StreamDetails { wanted, ..StreamDetails::default() };
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(otlp_grpc)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(err)) => return AttackOutcome::not_run(format!("connect failed: {err}")),
        Err(_) => return AttackOutcome::not_run("connect timed out".to_owned()),
    };
    let handshake = tokio::time::timeout(CONNECT_TIMEOUT, h2::client::Builder::new().handshake::<_, Bytes>(tcp)).await;
    let (mut sender, connection) = match handshake {
        Ok(Ok(pair)) => pair,
        Ok(Err(err)) => return AttackOutcome::not_run(format!("HTTP/2 handshake failed: {err}")),
        Err(_) => return AttackOutcome::not_run("HTTP/2 handshake timed out".to_owned()),
    };
    let started = ctx.started;
    let driver = tokio::spawn(async move {
        let result = connection.await;
        (result.err().map(|err| err.to_string()), started.elapsed().as_secs_f64())
    });
    let (done, done_receiver) = watch::channel(false);
    let mut streams = Vec::new();
    for _ in 0..wanted {
        if ctx.stopped() {
            break;
        }
        // h2 waits here while the server's concurrent-stream limit is reached.
        sender = match tokio::time::timeout(Duration::from_secs(1).min(ctx.remaining()), sender.clone().ready()).await {
            Ok(Ok(ready)) => ready,
            Ok(Err(err)) => {
                details.connection_error = Some(err.to_string());
                break;
            }
            Err(_) => {
                details.blocked_after_s = Some(ctx.elapsed_s());
                break;
            }
        };
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("http://{otlp_grpc}{EXPORT_PATH}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("a valid request head");
        let (response, send_stream) = match sender.send_request(request, false) {
            Ok(pair) => pair,
            Err(err) => {
                details.connection_error = Some(err.to_string());
                break;
            }
        };
        let mut done = done_receiver.clone();
        streams.push(tokio::spawn(async move {
            // Held, so the stream is neither ended nor reset from this side.
            let _send_stream = send_stream;
            tokio::select! {
                answer = response => match answer {
                    Ok(response) => {
                        let grpc_status = response
                            .headers()
                            .get("grpc-status")
                            .and_then(|value| value.to_str().ok())
                            .map_or_else(String::new, |code| format!(" grpc-status {code}"));
                        (Some(format!("HTTP {}{grpc_status}", response.status().as_u16())), None, started.elapsed())
                    }
                    Err(err) => {
                        let reason = err.reason().map_or_else(|| err.to_string(), |reason| format!("{reason:?}"));
                        (None, Some(reason), started.elapsed())
                    }
                },
                _ = done.changed() => (None, None, started.elapsed()),
            }
        }));
    }
    details.opened = streams.len();
    // usize::MAX: the server advertised no limit.
    details.server_max_concurrent_streams = Some(sender.current_max_send_streams()).filter(|&max| max != usize::MAX);
    ctx.until_end().await;
    let _ = done.send(true);
    for stream in streams {
        match stream.await {
            Ok((Some(answer), _, at)) => {
                *details.answered.entry(answer).or_default() += 1;
                let at_s = at.as_secs_f64();
                details.first_answer_s = Some(details.first_answer_s.map_or(at_s, |first| first.min(at_s)));
            }
            Ok((None, Some(reason), at)) => {
                *details.reset.entry(reason).or_default() += 1;
                let at_s = at.as_secs_f64();
                details.first_answer_s = Some(details.first_answer_s.map_or(at_s, |first| first.min(at_s)));
            }
            _ => details.still_open_at_end += 1,
        }
    }
    if driver.is_finished() {
        if let Ok((error, after_s)) = driver.await {
            details.connection_error = details.connection_error.take().or(error);
            details.connection_closed_after_s = Some(after_s);
        }
    } else {
        driver.abort();
    }
    let count = |map: &BTreeMap<String, u64>| map.values().sum::<u64>();
    let allowed = match details.server_max_concurrent_streams {
        Some(usize::MAX) | None => "no stream limit advertised".to_owned(),
        Some(max) => format!("server allows {max} at once"),
    };
    let mut summary = format!("{} of {} streams opened on 1 connection ({allowed})", details.opened, wanted);
    if let Some(blocked) = details.blocked_after_s {
        summary.push_str(&format!(", the next held back by its limit at {blocked:.1} s"));
    }
    summary.push_str(&format!(
        "; {} answered, {} reset, {} still open after {:.1} s",
        count(&details.answered),
        count(&details.reset),
        details.still_open_at_end,
        ctx.elapsed_s()
    ));
    if let Some(first) = details.first_answer_s {
        summary.push_str(&format!(" (first answer or reset at {first:.1} s)"));
    }
    if let Some(after_s) = details.connection_closed_after_s {
        summary.push_str(&format!("; connection closed at {after_s:.1} s"));
    }
    AttackOutcome::new(summary, None, &details)
}

#[derive(Debug, Default, Serialize)]
struct OverloadDetails {
    clients: usize,
    points_per_request: usize,
    request_bytes: usize,
    grpc_timeout_s: f64,
    outcomes: BTreeMap<String, u64>,
    /// UNAVAILABLE or RESOURCE_EXHAUSTED: the server said "retry later" in time.
    explicit_backpressure: u64,
    points_rejected: u64,
    latency: LatencySummary,
}

/// `clients` clients sending valid, CPU-heavy exports back to back with a `grpc-timeout` of
/// `grpc_timeout`; the status codes they got. Uncompressed: compressing on this side would
/// spend the shared cores on the attacker, not the server. The clients share one template
/// (re-stamped and copied per request), so the attacker holds one request per client in flight.
pub async fn overload(
    ctx: &AttackContext,
    otlp_grpc: SocketAddr,
    template: PayloadTemplate,
    clients: usize,
    grpc_timeout: Duration,
) -> AttackOutcome {
    let (points_per_request, request_bytes) = (template.n_points(), template.bytes().len());
    let shared = Arc::new(Mutex::new(template));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (ctx, shared) = (ctx.clone(), Arc::clone(&shared));
        tasks.push(tokio::spawn(async move {
            let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
            let mut latency = LatencyHistogram::default();
            let mut points_rejected = 0u64;
            let connect = OtlpSender::connect(Transport::Grpc, otlp_grpc, Compression::None);
            let mut sender = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                Ok(Ok(sender)) => sender,
                _ => {
                    outcomes.insert("connect_failed".to_owned(), 1);
                    return (outcomes, latency, points_rejected);
                }
            };
            while !ctx.stopped() {
                let payload = {
                    let mut template = shared.lock().expect("not poisoned");
                    template.restamp(now_unix_nano(), ctx.elapsed_s());
                    Bytes::copy_from_slice(template.bytes())
                };
                let started = Instant::now();
                // The server is told the deadline; the client waits a little longer for its answer.
                let send = sender.send_with_deadline(payload, Some(grpc_timeout));
                let kind = match tokio::time::timeout(grpc_timeout + Duration::from_secs(2), send).await {
                    Ok(Ok(ack)) => {
                        points_rejected += ack.rejected_points;
                        "ok".to_owned()
                    }
                    Ok(Err(err)) => err.kind(),
                    Err(_) => "no_answer_by_deadline".to_owned(),
                };
                latency.record(started.elapsed());
                *outcomes.entry(kind).or_default() += 1;
            }
            (outcomes, latency, points_rejected)
        }));
    }
    let mut details = OverloadDetails {
        clients,
        points_per_request,
        request_bytes,
        grpc_timeout_s: grpc_timeout.as_secs_f64(),
        ..OverloadDetails::default()
    };
    let mut latency = LatencyHistogram::default();
    for task in tasks {
        if let Ok((outcomes, client_latency, points_rejected)) = task.await {
            for (kind, n) in outcomes {
                *details.outcomes.entry(kind).or_default() += n;
            }
            latency.merge(&client_latency);
            details.points_rejected += points_rejected;
        }
    }
    details.latency = latency.summary();
    details.explicit_backpressure = ["grpc_unavailable", "grpc_resourceexhausted"]
        .iter()
        .map(|kind| details.outcomes.get(*kind).copied().unwrap_or(0))
        .sum();
    let outcomes: Vec<String> = details.outcomes.iter().map(|(kind, n)| format!("{n} {kind}")).collect();
    let summary = format!(
        "{clients} clients × {} points ({}), grpc-timeout {:.0} s: {}; {} UNAVAILABLE/RESOURCE_EXHAUSTED; \
         latency p50 {:.2} s, max {:.2} s",
        details.points_per_request,
        kib(details.request_bytes),
        grpc_timeout.as_secs_f64(),
        outcomes.join(", "),
        details.explicit_backpressure,
        details.latency.p50_ms / 1e3,
        details.latency.max_ms / 1e3,
    );
    AttackOutcome::new(summary, None, &details)
}

/// The answer to one export of the attack's own checks.
#[derive(Debug, Clone, Serialize)]
struct ExportAnswer {
    ok: bool,
    rejected_points: i64,
    message: String,
}

async fn connect_otlp(otlp_grpc: SocketAddr) -> anyhow::Result<MetricsServiceClient<Channel>> {
    let endpoint = Channel::from_shared(format!("http://{otlp_grpc}"))?;
    Ok(MetricsServiceClient::new(tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect()).await??))
}

async fn export(client: &mut MetricsServiceClient<Channel>, request: ExportMetricsServiceRequest) -> ExportAnswer {
    match tokio::time::timeout(CALL_TIMEOUT, client.export(request)).await {
        Ok(Ok(response)) => {
            let partial = response.into_inner().partial_success.unwrap_or_default();
            ExportAnswer { ok: true, rejected_points: partial.rejected_data_points, message: partial.error_message }
        }
        Ok(Err(status)) => ExportAnswer { ok: false, rejected_points: 0, message: status_kind(&status) },
        Err(_) => ExportAnswer { ok: false, rejected_points: 0, message: "timeout".to_owned() },
    }
}

/// What GetMetrics answers for `metricQuery`, on a new connection, within a timeout.
async fn trigger_value(scaler: SocketAddr, query: String) -> Result<f64, String> {
    let trigger = keda::scaled_object("loadgen-hostile-check", &[("metricQuery", query), ("targetValue", "1".into())]);
    let answer = tokio::time::timeout(CALL_TIMEOUT, async {
        let mut client = keda::connect(scaler).await.map_err(|err| format!("connect: {err}"))?;
        keda::metric_value(&mut client, &trigger).await.map_err(|status| status_kind(&status))
    })
    .await;
    answer.unwrap_or_else(|_| Err("timeout".to_owned()))
}

#[derive(Debug, Serialize)]
struct FuturePointDetails {
    offset_s: f64,
    future_point: ExportAnswer,
    normal_points_sent: u64,
    normal_points_rejected: u64,
    normal_exports_failed: u64,
    first_rejection: Option<String>,
    last_normal_value: f64,
    trigger_value: Option<f64>,
    trigger_error: Option<String>,
}

/// One point stamped `offset` in the future, then the producer's normal points (values 1, 2, …
/// every 200 ms, stamped now); whether the later points were taken and the trigger reads the last.
pub async fn future_point(
    ctx: &AttackContext,
    otlp_grpc: SocketAddr,
    scaler: SocketAddr,
    offset: Duration,
    run_id: &str,
) -> AnyhowOutcome {
    const METRIC: &str = "otelscale_loadgen_hostile_future";
    let mut client = connect_otlp(otlp_grpc).await?;
    let labels = [("producer", run_id)];
    let future_ns = now_unix_nano() + u64::try_from(offset.as_nanos()).unwrap_or(u64::MAX / 2);
    let future_point = export(&mut client, payloads::one_point(METRIC, &labels, future_ns, 1e6)).await;
    let mut details = FuturePointDetails {
        offset_s: offset.as_secs_f64(),
        future_point,
        normal_points_sent: 0,
        normal_points_rejected: 0,
        normal_exports_failed: 0,
        first_rejection: None,
        last_normal_value: 0.0,
        trigger_value: None,
        trigger_error: None,
    };
    while !ctx.stopped() {
        let value = (details.normal_points_sent + 1) as f64;
        let answer = export(&mut client, payloads::one_point(METRIC, &labels, now_unix_nano(), value)).await;
        details.normal_points_sent += 1;
        details.last_normal_value = value;
        if !answer.ok {
            details.normal_exports_failed += 1;
        }
        if answer.rejected_points > 0 {
            details.normal_points_rejected += answer.rejected_points as u64;
        }
        if (!answer.ok || answer.rejected_points > 0) && details.first_rejection.is_none() {
            details.first_rejection = Some(answer.message);
        }
        ctx.sleep(Duration::from_millis(200)).await;
    }
    match trigger_value(scaler, format!("max({METRIC}{{producer={run_id}}})")).await {
        Ok(value) => details.trigger_value = Some(value),
        Err(err) => details.trigger_error = Some(err),
    }
    let future = &details.future_point;
    let future_said = match (future.ok, future.rejected_points) {
        (false, _) => format!("failed ({})", future.message),
        (true, 0) => "accepted".to_owned(),
        (true, _) => format!("refused ({})", future.message),
    };
    let intact = details.normal_points_rejected == 0
        && details.normal_exports_failed == 0
        && details.trigger_value == Some(details.last_normal_value);
    let trigger_said = match (&details.trigger_value, &details.trigger_error) {
        (Some(value), _) => format!("{value}"),
        (None, Some(err)) => err.clone(),
        (None, None) => "?".to_owned(),
    };
    let summary = format!(
        "point at now + {:.0} s: {future_said}; then {} normal points: {} rejected{}; trigger reads {trigger_said} \
         (expected {})",
        offset.as_secs_f64(),
        details.normal_points_sent,
        details.normal_points_rejected + details.normal_exports_failed,
        details.first_rejection.as_ref().map_or_else(String::new, |message| format!(" ({message})")),
        details.last_normal_value,
    );
    Ok(AttackOutcome::new(summary, Some(intact), &details))
}

#[derive(Debug, Default, Serialize)]
struct FloodDetails {
    junk_sent: u64,
    junk_rejected: u64,
    junk_requests_failed: u64,
    /// The first junk request with rejected points, this long after the start: the store is full.
    full_after_s: Option<f64>,
    first_junk_rejection: Option<String>,
    series_held_before: Option<f64>,
    series_held_after_flood: Option<f64>,
    pods_tried: u64,
    pods_accepted: u64,
    first_pod_rejection: Option<String>,
    first_pod_trigger_value: Option<f64>,
    first_pod_trigger_error: Option<String>,
}

/// Junk series in batches until the server refuses new ones (or `flood_series_max` were sent,
/// or half the duration passed); then a new legitimate pod every second exports its first
/// point of a new series. Were the pods' series taken, and does the first pod's trigger read it?
#[allow(clippy::too_many_arguments)]
pub async fn series_flood(
    ctx: &AttackContext,
    otlp_grpc: SocketAddr,
    scaler: SocketAddr,
    admin: SocketAddr,
    flood_series_max: usize,
    batch: usize,
    junk_metrics: usize,
    run_id: &str,
) -> AnyhowOutcome {
    const POD_VALUE: f64 = 7.0;
    let mut client = connect_otlp(otlp_grpc).await?;
    let mut details = FloodDetails { series_held_before: series_held(admin).await, ..FloodDetails::default() };
    let fill_until = ctx.started + (ctx.deadline - ctx.started) / 2;
    let batch = batch.max(1);
    while !ctx.stopped() && Instant::now() < fill_until && (details.junk_sent as usize) < flood_series_max {
        let n = batch.min(flood_series_max - details.junk_sent as usize);
        let request = payloads::junk_series(details.junk_sent, n, junk_metrics, run_id);
        let answer = export(&mut client, request).await;
        details.junk_sent += n as u64;
        if !answer.ok {
            details.junk_requests_failed += 1;
            continue;
        }
        if answer.rejected_points > 0 {
            details.junk_rejected += answer.rejected_points as u64;
            details.full_after_s = Some(ctx.elapsed_s());
            details.first_junk_rejection = Some(answer.message);
            break;
        }
    }
    details.series_held_after_flood = series_held(admin).await;
    let mut first_pod = None;
    while !ctx.stopped() {
        let pod = format!("legit-{run_id}-{}", details.pods_tried);
        let answer = export(&mut client, payloads::one_point(LEGIT_METRIC, &[("pod", &pod)], 0, POD_VALUE)).await;
        details.pods_tried += 1;
        if answer.ok && answer.rejected_points == 0 {
            details.pods_accepted += 1;
        } else if details.first_pod_rejection.is_none() {
            details.first_pod_rejection = Some(answer.message);
        }
        if first_pod.is_none() {
            first_pod = Some(pod);
        }
        ctx.sleep(Duration::from_secs(1)).await;
    }
    if let Some(pod) = &first_pod {
        match trigger_value(scaler, format!("max({LEGIT_METRIC}{{pod={pod}}})")).await {
            Ok(value) => details.first_pod_trigger_value = Some(value),
            Err(err) => details.first_pod_trigger_error = Some(err),
        }
    }
    let flood_said = match (details.full_after_s, &details.first_junk_rejection) {
        (Some(after_s), Some(message)) => format!(
            "store full after {} junk series in {after_s:.1} s ({message})",
            details.junk_sent - details.junk_rejected
        ),
        _ => format!("store not full after {} junk series", details.junk_sent),
    };
    let intact = details.pods_tried > 0
        && details.pods_accepted == details.pods_tried
        && details.first_pod_trigger_value == Some(POD_VALUE);
    let trigger_said = match (&details.first_pod_trigger_value, &details.first_pod_trigger_error) {
        (Some(value), _) => format!("{value}"),
        (None, Some(err)) => err.clone(),
        (None, None) => "?".to_owned(),
    };
    let summary = format!(
        "{flood_said}; new pods' series: {} of {} accepted{}; the first pod's trigger reads {trigger_said} \
         (expected {POD_VALUE})",
        details.pods_accepted,
        details.pods_tried,
        details.first_pod_rejection.as_ref().map_or_else(String::new, |message| format!(" ({message})")),
    );
    Ok(AttackOutcome::new(summary, Some(intact), &details))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_status_from_a_partial_answer() {
        assert_eq!(http_status(b"HTTP/1.1 408 Request Timeout\r\n"), Some(408));
        assert_eq!(http_status(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n"), Some(413));
        assert_eq!(http_status(b"HTTP/1.1 2"), None);
    }

    #[test]
    fn tallies_count_fates() {
        let mut tally = SocketTally::new("admin", "127.0.0.1:8080".parse().unwrap(), 4);
        let mut times = Vec::new();
        tally.add(SocketFate::Closed(3.0), &mut times);
        tally.add(SocketFate::Closed(1.0), &mut times);
        tally.add(SocketFate::StillOpen, &mut times);
        tally.add(SocketFate::ConnectFailed("timeout".into()), &mut times);
        tally.finish(&mut times);
        assert_eq!((tally.opened, tally.closed_by_server, tally.still_open_at_end), (3, 2, 1));
        assert_eq!(tally.first_close_s, Some(1.0));
        assert_eq!(tally.median_close_s, Some(3.0));
        assert_eq!(
            tally.short(),
            "admin: 3 of 4 open (1 connects failed), 2 closed by the server (first after 1.0 s, median 3.0 s)"
        );
    }

    #[test]
    fn post_answers_read_short() {
        let answer =
            PostAnswer { after_s: 0.25, http_status: Some(413), error: None, rejected_points: None, message: None };
        assert_eq!(answer.short(), "HTTP 413 after 0.25 s");
        let answer = PostAnswer { error: Some("timed out".into()), http_status: None, after_s: 20.0, ..answer };
        assert_eq!(answer.short(), "no answer within 20.0 s");
    }
}
