//! The admin port and the `otelscale query` command against a running server.

use crate::common::*;

#[tokio::test]
async fn health_metrics_and_debug_api() {
    let server = TestServer::start().await;
    let now = now_unix_nano();
    server
        .otlp_client()
        .await
        .export(request(
            &[("k8s.namespace.name", "ml")],
            vec![gauge("gpu.temperature", vec![number_point(&[("gpu", "0")], now, 71.0)])],
        ))
        .await
        .unwrap();

    for (path, expected) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let response = reqwest::get(server.admin_url(path)).await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.text().await.unwrap().contains(expected));
    }
    let metrics = reqwest::get(server.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    for name in [
        "otelscale_points_received_total",
        "otelscale_points_rejected_total{reason=\"series_limit\"}",
        "otelscale_requests_total{transport=\"http\",outcome=\"ok\"}",
        "otelscale_query_duration_seconds_bucket",
        "otelscale_streams_open",
        "otelscale_series 1",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }

    // Names are normalized on both sides; label names keep their dots.
    let answer = server.admin_query(&[("metricQuery", "max(gpu.temperature{k8s.namespace.name=ml})")]).await;
    assert_eq!(answer["value"], 71.0);
    assert_eq!(answer["matchedSeries"], 1);
    assert_eq!(answer["operationOverTime"], "last_one");

    let response = reqwest::get(server.admin_url("/api/v1/query?metricQuery=avg(m{a:1})")).await.unwrap();
    assert_eq!(response.status(), 400);
    let error: serde_json::Value = response.json().await.unwrap();
    assert!(error["error"].as_str().unwrap().contains("metricQuery"), "{error}");

    let series: serde_json::Value =
        reqwest::get(server.admin_url("/api/v1/series?match=gpu_temperature")).await.unwrap().json().await.unwrap();
    assert_eq!(series.as_array().unwrap().len(), 1);
    assert_eq!(series[0]["labels"]["gpu"], "0");
    assert_eq!(series[0]["labels"]["k8s.namespace.name"], "ml");
    assert_eq!(series[0]["kind"], "gauge");
    assert_eq!(reqwest::get(server.admin_url("/nope")).await.unwrap().status(), 404);

    // The CLI prints the value the scaler would return.
    let admin_url = server.admin_url("");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_otelscale"))
        .args(["query", "max(gpu_temperature{gpu=0})", "--op", "max", "--window", "60s", "--admin-url", &admin_url])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "71");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_otelscale"))
        .args(["query", "avg(m{a=1, b=2=2})", "--admin-url", &admin_url])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("metricQuery"));
    server.stop().await;
}
