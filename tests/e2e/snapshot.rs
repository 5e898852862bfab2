//! Snapshots through the real server: answers after a restart equal those before it, background
//! writes while serving, a damaged newest snapshot, an unusable directory, and `snapshot inspect`.

use std::path::Path;
use std::time::Duration;

use otelscale::config::SnapshotConfig;

use crate::common::*;

const SECOND_NS: u64 = 1_000_000_000;

const TRIGGERS: [&[(&str, &str)]; 3] = [
    &[
        ("metricQuery", "avg(model_training_tokens{model=my_model, job=training})"),
        ("operationOverTime", "rate"),
        ("targetValue", "1"),
    ],
    &[("metricQuery", "sum(gpu_memory_usage{model=~my_.*})"), ("operationOverTime", "max"), ("targetValue", "1")],
    &[("metricQuery", "sum(gpu_memory_usage)"), ("operationOverTime", "count"), ("targetValue", "1")],
];

fn snapshot_config(dir: &Path, interval: Duration) -> SnapshotConfig {
    SnapshotConfig { dir: dir.to_path_buf(), interval, keep: 2 }
}

async fn start_with_snapshots(dir: &Path, interval: Duration) -> TestServer {
    let config = snapshot_config(dir, interval);
    TestServer::start_with(move |server_config| server_config.snapshot = Some(config)).await
}

async fn push_fleet(server: &TestServer, pods: &[&str]) {
    let now = now_unix_nano();
    let t0 = now - 20 * SECOND_NS;
    let mut client = server.otlp_client().await;
    for (pod_idx, pod) in pods.iter().enumerate() {
        let rate = 100.0 * (pod_idx + 1) as f64;
        let tokens =
            (0..=20).map(|s| number_point(&[("model", "my_model")], t0 + s * SECOND_NS, rate * s as f64)).collect();
        let memory = (0..=20)
            .map(|s| {
                number_point(&[("model", "my_model")], t0 + s * SECOND_NS, 500.0 + (pod_idx as u64 * 7 + s) as f64)
            })
            .collect();
        let metrics = vec![cumulative_counter("model_training_tokens", tokens), gauge("gpu_memory_usage", memory)];
        client.export(request(&[("job", "training"), ("k8s.pod.name", pod)], metrics)).await.unwrap();
    }
}

async fn answers(server: &TestServer) -> Vec<f64> {
    let mut values = Vec::new();
    for trigger in TRIGGERS {
        values.push(server.get_metric_value(trigger).await.unwrap());
    }
    values
}

async fn series_listing(server: &TestServer) -> serde_json::Value {
    reqwest::get(server.admin_url("/api/v1/series?limit=1000")).await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn a_restarted_server_answers_exactly_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let first = start_with_snapshots(dir.path(), Duration::from_secs(3600)).await;
    push_fleet(&first, &["pod-a", "pod-b", "pod-c"]).await;
    let before = answers(&first).await;
    let listing_before = series_listing(&first).await;
    assert_eq!(before[2], 3.0 * 21.0, "{before:?}");
    // Graceful shutdown writes the final snapshot after the listeners stop.
    first.stop().await;
    assert_eq!(otelscale::snapshot::list_snapshots(dir.path()).unwrap().len(), 1);

    let second = start_with_snapshots(dir.path(), Duration::from_secs(3600)).await;
    assert_eq!(answers(&second).await, before);
    assert_eq!(series_listing(&second).await, listing_before);
    assert_eq!(second.metric("otelscale_snapshot_restored_series").await, 6.0);
    assert!(second.metric("otelscale_snapshot_restore_duration_seconds").await > 0.0);
    // New points land on top of the restored ones.
    push_fleet(&second, &["pod-d"]).await;
    assert_eq!(second.get_metric_value(TRIGGERS[2]).await.unwrap(), 4.0 * 21.0);
    second.stop().await;
}

#[tokio::test]
async fn snapshots_are_written_in_the_background_while_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_snapshots(dir.path(), Duration::from_millis(100)).await;
    push_fleet(&server, &["pod-a"]).await;
    let written = server.wait_for_metric(SNAPSHOTS_WRITTEN, 2.0).await;
    assert!(written >= 2.0, "{written}");
    assert!(server.metric("otelscale_snapshot_bytes").await > 0.0);
    assert!(server.metric("otelscale_snapshot_last_success_timestamp_seconds").await > 1.7e9);
    assert_eq!(server.metric("otelscale_snapshot_failures_total").await, 0.0);
    // Ingest and queries kept working throughout, and at most `keep` snapshots remain.
    assert_eq!(server.get_metric_value(TRIGGERS[2]).await.unwrap(), 21.0);
    assert!(otelscale::snapshot::list_snapshots(dir.path()).unwrap().len() <= 2);
    server.stop().await;
}

#[tokio::test]
async fn a_damaged_newest_snapshot_is_moved_aside_and_the_older_one_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let first = start_with_snapshots(dir.path(), Duration::from_secs(3600)).await;
    push_fleet(&first, &["pod-a", "pod-b"]).await;
    let before = answers(&first).await;
    first.stop().await;
    let good = otelscale::snapshot::list_snapshots(dir.path()).unwrap().remove(0);
    // A newer file with the right name but the wrong bytes: flipped bytes in the body.
    let mut bytes = std::fs::read(&good).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    let damaged = dir.path().join("snapshot-9999999999999.otss");
    std::fs::write(&damaged, bytes).unwrap();

    let second = start_with_snapshots(dir.path(), Duration::from_secs(3600)).await;
    assert_eq!(answers(&second).await, before);
    assert!(!damaged.exists());
    assert!(dir.path().join("snapshot-9999999999999.otss.rejected").exists());
    second.stop().await;
}

#[tokio::test]
async fn an_unusable_snapshot_directory_does_not_stop_the_server() {
    // A path below a regular file can be neither created nor written, by any user.
    let parent = tempfile::tempdir().unwrap();
    std::fs::write(parent.path().join("file"), b"").unwrap();
    let dir = parent.path().join("file").join("snapshots");
    let server = start_with_snapshots(&dir, Duration::from_millis(100)).await;
    push_fleet(&server, &["pod-a"]).await;
    let failures = server.wait_for_metric("otelscale_snapshot_failures_total", 1.0).await;
    assert!(failures >= 1.0);
    assert_eq!(server.get_metric_value(TRIGGERS[2]).await.unwrap(), 21.0);
    server.stop().await;
}

#[tokio::test]
async fn a_read_only_snapshot_directory_is_restored_from_and_counted_as_failing_writes() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let first = start_with_snapshots(dir.path(), Duration::from_secs(3600)).await;
    push_fleet(&first, &["pod-a"]).await;
    let before = answers(&first).await;
    first.stop().await;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
    if std::fs::write(dir.path().join("probe"), b"").is_ok() {
        // Running as root: permissions do not stop writes; the unusable-directory test covers
        // failing writes instead.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        return;
    }
    let server = start_with_snapshots(dir.path(), Duration::from_millis(100)).await;
    assert_eq!(answers(&server).await, before);
    assert!(server.wait_for_metric("otelscale_snapshot_failures_total", 1.0).await >= 1.0);
    server.stop().await;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test]
async fn snapshot_inspect_reports_contents_and_validity() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_snapshots(dir.path(), Duration::from_secs(3600)).await;
    push_fleet(&server, &["pod-a", "pod-b"]).await;
    server.stop().await;
    let inspect = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_otelscale"))
            .args(["snapshot", "inspect"])
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let output = inspect();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    for expected in ["format version: 1", "series: 4", "samples: 84", "time range: ", "valid: yes"] {
        assert!(text.contains(expected), "{expected} missing in:\n{text}");
    }
    let newest = otelscale::snapshot::list_snapshots(dir.path()).unwrap().remove(0);
    let length = std::fs::metadata(&newest).unwrap().len();
    std::fs::File::options().write(true).open(&newest).unwrap().set_len(length - 10).unwrap();
    let output = inspect();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    assert!(text.contains("valid: no (section"), "{text}");
}

/// A child server that a failing assertion does not leave running.
struct KilledOnDrop(std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Snapshots completed (file written, synced and renamed into place).
const SNAPSHOTS_WRITTEN: &str = "otelscale_snapshots_written_total";

/// A free port on 127.0.0.1 (bound, then released for the child process to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn kill_9_at_any_moment_leaves_a_loadable_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let templates = otelscale_loadgen::shapes::dcgm_templates(20_000, 1_000, 7).unwrap();
    let http = reqwest::Client::new();
    for round in 0..6u64 {
        let (grpc, otlp_http, scaler, admin) = (free_port(), free_port(), free_port(), free_port());
        let spawned = std::process::Command::new(env!("CARGO_BIN_EXE_otelscale"))
            .args(["serve", "--snapshot-interval", "100ms", "--io-uring", "off", "--log-level", "warn"])
            .arg("--snapshot-dir")
            .arg(dir.path())
            .args([
                "--otlp-grpc-addr",
                &format!("127.0.0.1:{grpc}"),
                "--otlp-http-addr",
                &format!("127.0.0.1:{otlp_http}"),
            ])
            .args(["--scaler-addr", &format!("127.0.0.1:{scaler}"), "--admin-addr", &format!("127.0.0.1:{admin}")])
            .spawn()
            .unwrap();
        let mut child = KilledOnDrop(spawned);
        let admin_addr: std::net::SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
        // A restore of the previous round's snapshot runs before the server is ready.
        wait_until_ready(admin_addr).await;
        // Every round restores the previous round's data and adds newer samples.
        for template in &templates {
            let mut template = template.clone();
            template.restamp(now_unix_nano(), round as f64);
            let response = http
                .post(format!("http://127.0.0.1:{otlp_http}/v1/metrics"))
                .header("content-type", "application/x-protobuf")
                .body(template.bytes().to_vec())
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success());
        }
        // A snapshot under way now may have copied some shards before the last push; the one
        // after it started after every push. Wait for that one to be complete, however long the
        // machine takes to write it.
        let written_after_push = metric_at(admin_addr, SNAPSHOTS_WRITTEN).await;
        let written = wait_for_metric_at(admin_addr, SNAPSHOTS_WRITTEN, written_after_push + 2.0).await;
        assert!(
            written >= written_after_push + 2.0,
            "round {round}: {SNAPSHOTS_WRITTEN} went from {written_after_push} to only {written} in {WAIT_DEADLINE:?}"
        );
        // Killed at a different point of the snapshot cycle each round: writes go on every 100 ms.
        tokio::time::sleep(Duration::from_millis(round * 37)).await;
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        let inspect = std::process::Command::new(env!("CARGO_BIN_EXE_otelscale"))
            .args(["snapshot", "inspect"])
            .arg(dir.path())
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&inspect.stdout);
        assert!(inspect.status.success(), "round {round}: the newest snapshot does not validate:\n{report}");
        assert!(report.contains("series: 20000"), "round {round}:\n{report}");
    }
}
